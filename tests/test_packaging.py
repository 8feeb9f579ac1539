"""What a user installs: the wheel carries the data, `serve` never imports torch, the console
script and the version answer."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from tests.jackutil import ROOT

SERVE_MODULES = ["cli.main", "cli.serve", "cli.core_commands", "cli.doctor", "bridge.session", "engines",
                 "engines.rule", "engines.thru", "onnx_models", "midi_maps"]


def test_serving_never_imports_torch():
    modules = list(SERVE_MODULES)
    if (ROOT / "engines/harmonizer/runtime.py").exists():
        modules.append("engines.harmonizer.runtime")
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules) + "print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_wheel_carries_models_maps_and_splits(tmp_path: Path):
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                           "-q", "-w", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    wheel = next(tmp_path.glob("scorebridge-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {p.relative_to(ROOT).as_posix() for p in (ROOT / "onnx_models").glob("*")
               if p.suffix in (".onnx", ".json", ".npz")}
    shipped |= {p.relative_to(ROOT).as_posix() for p in (ROOT / "midi_maps").glob("*.toml")}
    shipped |= {p.relative_to(ROOT).as_posix() for p in ROOT.glob("engines/*/splits/*.txt")}
    shipped |= {p.relative_to(ROOT).as_posix() for p in ROOT.glob("core/tunings/*.scl")}
    assert shipped <= names, sorted(shipped - names)
    assert "cli/main.py" in names and "engines/rule/theory.py" in names
    assert not [n for n in names if n.startswith(("training/", "benchmarks/", "tests/"))]
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "scorebridge = cli.main:main" in text and "[scorebridge.engines]" in text


def test_version_and_engine_listing():
    out = subprocess.run([sys.executable, "-m", "bridge", "--version"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("scorebridge ")
    listing = subprocess.run([sys.executable, "-m", "bridge", "engines"], cwd=ROOT, capture_output=True, text=True)
    assert "rule:" in listing.stdout and "sevenths (bool" in listing.stdout


def test_bad_config_exits_non_zero_naming_the_file(tmp_path: Path):
    bad = tmp_path / "bridge.toml"
    bad.write_text("[[slots]]\nengine = \"rule\"\nout_channel = 99\n")
    out = subprocess.run([sys.executable, "-m", "bridge", "serve", "--config", str(bad)], cwd=ROOT,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert "bridge.toml" in out.stderr and "out_channel must be 1..16" in out.stderr


def test_unknown_backend_lists_valid_names():
    out = subprocess.run([sys.executable, "-m", "bridge", "serve", "--backend", "coreaudio"], cwd=ROOT,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert "valid: auto, alsa, jack, coremidi, winmm" in out.stderr

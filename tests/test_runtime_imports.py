"""The runtime (what the wheel installs) never reaches torch or training/: no such import in its
source, and no command loads torch while it runs."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.jackutil import ROOT

RUNTIME = ("bridge", "cli", "core", "engines", "onnx_models")


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_runtime_source_imports_neither_torch_nor_training() -> None:
    offenders = [f"{path.relative_to(ROOT)}: {sorted(found)}"
                 for package in RUNTIME for path in sorted((ROOT / package).rglob("*.py"))
                 if (found := _imports(path) & {"torch", "training"})]
    assert offenders == []


@pytest.mark.slow
def test_commands_run_without_loading_torch(tmp_path: Path) -> None:
    """Every offline command, run for real on a small input in one process, then sys.modules."""
    from tests.test_continuation_cli import write_phrase

    source = tmp_path / "phrase.mid"
    write_phrase(source, bars=8)
    script = f"""
import json, sys
from cli.main import main
runs = {{}}
for argv in (
    ["serve", "--help"], ["harmonize", "--help"], ["continue", "--help"], ["eval", "harmony", "--help"],
    ["eval", "noise-injection", "--help"], ["models", "verify"],
    ["harmonize", {str(source)!r}, "-o", {str(tmp_path / "harmonized.mid")!r}, "--seed", "1"],
    ["continue", {str(source)!r}, "-o", {str(tmp_path / "continued.mid")!r}, "--bars", "1", "--seed", "1"],
    ["eval", "noise-injection", "-o", {str(tmp_path / "noise")!r}, "--midi", {str(source)!r},
     "--model", "smart", "--context", "48", "--start", "12", "--lengths", "4", "--contexts", "2"],
    ["eval", "harmony", "--set", "chorales", "--models", "harmonizer_midpoint", "--strategies", "start",
     "--pieces", "1", "--windows", "1", "--no-folk", "--no-rule", "--quiet", "--cache", {str(tmp_path / "cache")!r}],
):
    try:
        code = main(argv)
    except SystemExit as done:
        code = done.code
    runs[" ".join(argv)] = code
print(json.dumps({{"runs": runs, "torch": "torch" in sys.modules, "training": "training" in sys.modules}}))
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(report["runs"].values()) == {0}, report
    assert not report["torch"] and not report["training"]

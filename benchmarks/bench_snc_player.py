"""SNC player figures: CPU load for 8 stems at 48 kHz, gain-change latency, seek latency, and
the click measure for fast gain sweeps (BENCHMARKS.md, section "SNC player").

    .venv/bin/python benchmarks/bench_snc_player.py [--seconds 20] [--period 256]

Starts a private JACK server (dummy driver, 48 kHz), plays an 8-stem song (generated here and
encoded with ``scorebridge snc encode``, Opus and lossless FLAC) through the real player, and
writes benchmarks/results/snc_player-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.paths import cache_dir  # noqa: E402
from engines.snc.mastering import MasteringModel  # noqa: E402
from engines.snc.reader import SncReader  # noqa: E402
from engines.snc_player.mixer import Mixer  # noqa: E402
from engines.snc_player.player import Player  # noqa: E402
from engines.snc_player.render import MixRequest  # noqa: E402

RATE = 48000
STEMS = ("vocals", "drums", "bass", "keys", "guitar", "strings", "brass", "fx")


def make_song(folder: Path, seconds: float, mode: str) -> Path:
    """8 stereo stems of tones and shaped noise, a saturating master, encoded by the CLI."""
    out = folder / f"bench8-{mode}.snc"
    if out.exists():
        return out
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(11)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    args = []
    total = np.zeros((n, 2))
    for index, name in enumerate(STEMS):
        freq = 110.0 * (1.5**index)
        tone = 0.08 * np.sin(2 * np.pi * freq * t + rng.uniform(0, 6))[:, None] * np.array([[1.0, 0.7]])
        noise = (
            0.02 * rng.standard_normal((n, 2)) * (0.5 + 0.5 * np.sin(2 * np.pi * (0.5 + index) * t))[:, None]
        )
        stem = tone + noise
        total += stem
        path = folder / f"bench8-{name}.wav"
        sf.write(path, stem, RATE, subtype="PCM_24")
        args += ["--stem", f"{name}={path}"]
    sf.write(folder / "bench8-master.wav", 0.9 * np.tanh(1.2 * total), RATE, subtype="PCM_24")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "bridge",
            "snc",
            "encode",
            "--master",
            str(folder / "bench8-master.wav"),
            *args,
            "-o",
            str(out),
            "--mode",
            mode,
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return out


def start_jack(name: str, period: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        ["jackd", "-n", name, "-R", "-d", "dummy", "-r", str(RATE), "-p", str(period)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.environ["JACK_DEFAULT_SERVER"] = name
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if subprocess.run(["jack_lsp"], capture_output=True).returncode == 0:
            return proc
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("jackd -d dummy did not start")


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentiles_ms(values: list[float]) -> dict[str, float]:
    data = np.asarray(values) * 1000.0
    return {
        "n": len(values),
        "p50": round(float(np.percentile(data, 50)), 3),
        "p99": round(float(np.percentile(data, 99)), 3),
        "max": round(float(data.max()), 3),
    }


def live(song: Path, seconds: float, context: str = "default") -> dict:
    """Play ``song`` for ``seconds`` (looping), then gain changes and seeks, all on JACK."""
    player = Player(song, MixRequest(context=context), client_name=f"bench{os.getpid()}", autoconnect=False)
    player.open()
    try:
        duration = player.reader.manifest.duration_s
        player.set_loop(0.0, duration)
        player.seek(0.0)
        player.play()
        time.sleep(1.0)
        wall0, cpu0, callbacks0, underruns0 = (
            time.perf_counter(),
            cpu_s(),
            player.callbacks,
            player.stream.underruns,
        )
        rss0 = rss_mib()
        time.sleep(seconds)
        wall, cpu = time.perf_counter() - wall0, cpu_s() - cpu0
        load = {
            "wall_s": round(wall, 2),
            "cpu_s": round(cpu, 3),
            "cores": round(cpu / wall, 4),
            "callbacks": player.callbacks - callbacks0,
            "buffer_frames": player.buffer_frames,
            "mean_callback_ms": player.stats()["mean_callback_ms"],
            "max_callback_ms": player.stats()["max_callback_ms"],
            "underruns": player.stream.underruns - underruns0,
            "rss_mib_start": round(rss0, 1),
            "rss_mib_end": round(rss_mib(), 1),
        }
        rng = random.Random(5)
        changes = []
        for _ in range(60):
            player.last_change_latency_s = None
            player.set_stem(rng.choice(player.pipeline.names), gain_db=rng.uniform(-20.0, 0.0))
            deadline = time.monotonic() + 1.0
            while player.last_change_latency_s is None and time.monotonic() < deadline:
                time.sleep(0.001)
            if player.last_change_latency_s is not None:
                changes.append(player.last_change_latency_s)
            time.sleep(rng.uniform(0.01, 0.05))
        player.set_loop(None, None)
        seeks = []
        for _ in range(25):
            player.last_seek_latency_s = None
            player.seek(rng.uniform(0.0, duration - 1.0))
            deadline = time.monotonic() + 3.0
            while player.last_seek_latency_s is None and time.monotonic() < deadline:
                time.sleep(0.001)
            if player.last_seek_latency_s is not None:
                seeks.append(player.last_seek_latency_s)
            time.sleep(0.2)
        period_ms = player.buffer_frames / RATE * 1000.0
        return {
            "song": song.name,
            "context": context,
            "load": load,
            "buffer_ms": round(period_ms, 3),
            "gain_change_latency_ms": percentiles_ms(changes),
            "gain_changes_within_one_buffer": round(
                float(np.mean(np.asarray(changes) * 1000 <= period_ms)), 3
            ),
            "seek_latency_ms": percentiles_ms(seeks),
            "error": player.stats()["error"],
        }
    finally:
        player.close()


def render_speed(song: Path, folder: Path) -> list[dict]:
    from engines.snc_player.render import render

    found = []
    for context, via in (("default", "numpy"), ("default", "pyo"), ("night", "numpy"), ("headphones", "pyo")):
        started = time.process_time()
        result = render(song, folder / "bench-render.wav", MixRequest(context=context), via=via)
        result["cpu_s"] = round(time.process_time() - started, 3)
        found.append({k: result[k] for k in ("context", "via", "seconds", "speed_x_real_time", "cpu_s")})
    (folder / "bench-render.wav").unlink(missing_ok=True)
    return found


def decode_cost(song: Path) -> dict:
    reader = SncReader(song)
    started = time.process_time()
    for _ in reader.blocks(4096):
        pass
    spent = time.process_time() - started
    return {
        "song": song.name,
        "cpu_s": round(spent, 3),
        "cores_at_real_time": round(spent / reader.manifest.duration_s, 4),
    }


def click_measure(ramp_s: float, toggle_s: float = 0.025, seconds: float = 2.0, buffer: int = 256) -> dict:
    """A 1 kHz stem muted and unmuted every ``toggle_s``: energy above 4 kHz relative to the
    whole output (a pure 1 kHz sine has none; clicks put energy there), and the largest
    sample-to-sample step relative to the sine's own largest step."""
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    sine = (0.5 * np.sin(2 * np.pi * 1000.0 * t))[:, None].astype(np.float32)
    mixer = Mixer(["a"], 1, MasteringModel.gain_only(np.array([1.0])), RATE, ramp_s=max(ramp_s, 1.0 / RATE))
    out = []
    muted = False
    next_toggle = int(toggle_s * RATE)
    for first in range(0, n, buffer):
        if first >= next_toggle:
            muted = not muted
            mixer.set("a", mute=muted)
            next_toggle += int(toggle_s * RATE)
        block = {"a": sine[first : first + buffer], "master": sine[first : first + buffer]}
        out.append(mixer.process(block, first))
    y = np.concatenate(out)[:, 0].astype(np.float64)
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y)))) ** 2
    freqs = np.fft.rfftfreq(len(y), 1.0 / RATE)
    high = spectrum[freqs > 4000.0].sum() / spectrum.sum()
    step = np.abs(np.diff(y)).max() / np.abs(np.diff(sine[:, 0])).max()
    return {
        "ramp_ms": round(ramp_s * 1000, 3),
        "toggle_every_ms": toggle_s * 1000,
        "energy_above_4khz_db": round(10 * np.log10(high + 1e-30), 1),
        "max_step_vs_sine": round(float(step), 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0, help="measured playback time per case")
    parser.add_argument(
        "--period", type=int, action="append", help="JACK period(s) in frames (default 256 and 64)"
    )
    parser.add_argument("--work", type=Path, default=cache_dir("benchmarks", "snc_player"),
                        help="folder for the generated songs (default: the user cache folder)")
    args = parser.parse_args()
    periods = args.period or [256, 64]
    songs = {mode: make_song(args.work, 12.0, mode) for mode in ("transparent", "lossless")}
    loadavg_before = os.getloadavg()
    result: dict = {
        "date": dt.date.today().isoformat(),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "processor": _cpu_name(),
        },
        "loadavg_before": loadavg_before,
        "decode": [decode_cost(s) for s in songs.values()],
        "render": render_speed(songs["transparent"], args.work),
        "live": [],
        "clicks": [click_measure(0.0), click_measure(0.005), click_measure(0.02)],
    }
    for period in periods:
        jack = start_jack(f"benchsnc{os.getpid()}p{period}", period)
        try:
            for mode, song in songs.items():
                case = live(song, args.seconds)
                case["jack_period"] = period
                result["live"].append(case)
                print(json.dumps(case), flush=True)
            for context in ("night", "headphones"):
                case = live(songs["transparent"], args.seconds / 2, context=context)
                case["jack_period"] = period
                result["live"].append(case)
                print(json.dumps(case), flush=True)
        finally:
            jack.terminate()
            jack.wait(timeout=10)
    result["loadavg_after"] = os.getloadavg()
    out = ROOT / "benchmarks" / "results" / f"snc_player-{result['date']}.json"
    out.write_text(json.dumps(result, indent=2))
    print(
        json.dumps(
            {"decode": result["decode"], "render": result["render"], "clicks": result["clicks"]}, indent=1
        )
    )
    print(f"wrote {out}")
    return 0


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    raise SystemExit(main())

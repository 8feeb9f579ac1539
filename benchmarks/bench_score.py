"""Wall time of `scorebridge score` on a minute of synthetic 720p video, cold and warm.

    python -m benchmarks.bench_score [--seconds 60] [--repeats 2] [--video FILE]
        [--cache DIR] [--out benchmarks/results/score-DATE.json]

The video (made once and kept in --cache): 1280x720, 25 fps, H.264 (x264 "medium", CRF 23, fine
grain so it does not compress to nothing), AAC track, shots of 4-9 s alternating calm (dark,
still, quiet) and intense (bright, fast, loud). Each repeat runs the command as a user does, in a
fresh process (`python -m cli.main score VIDEO -o OUT.mkv`): once with an empty stage cache
(cold: every stage computed) and once more with the same options (warm: every stage reused).
Reports wall seconds per run, the CPU seconds it used (user + system, the command and the
FluidSynth and ffmpeg processes it ran: on a loaded machine, what an idle one needs at most, as
each second of wall time then gets at least one core), each stage's seconds (from the command's
own lines), the load average and the busiest processes; prints JSON and writes it to --out.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from core.paths import cache_dir
from engines.va.synthetic import Shot, write_video

ROOT = Path(__file__).resolve().parent.parent
CALM = dict(colour=(0.25, 0.3, 0.55), brightness=0.2, speed=0.0, texture=0.15, loudness_dbfs=-45.0)
INTENSE = dict(colour=(0.95, 0.55, 0.2), brightness=0.85, speed=0.9, texture=0.5, loudness_dbfs=-18.0)


def _shots(seconds: float) -> list[Shot]:
    shots, total, index = [], 0.0, 0
    while total < seconds - 1e-9:
        length = min([6.0, 8.0, 5.0, 9.0, 4.0][index % 5], seconds - total)
        shots.append(Shot(length, seed=index, grain=0.3, **(INTENSE if index % 2 else CALM)))
        total += length
        index += 1
    return shots


def _video(cache: Path, seconds: float) -> Path:
    path = cache / f"arc-1280x720-25fps-{seconds:g}s.mp4"
    if not path.exists():
        started = time.perf_counter()
        write_video(path, _shots(seconds), 1280, 720, 25, audio=True, preset="medium", crf=23, threads=2)
        print(f"made {path.name} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return path


def _load() -> dict[str, object]:
    top = subprocess.run(["ps", "-eo", "pcpu,args", "--sort=-pcpu"], capture_output=True, text=True, check=False).stdout
    return {"loadavg": os.getloadavg(), "top": [line.strip()[:120] for line in top.splitlines()[1:6]]}


def _run(video: Path, output: Path, cache: Path) -> dict[str, object]:
    environment = {**os.environ, "SCOREBRIDGE_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "cli.main", "score", str(video), "-o", str(output)], cwd=ROOT,
                          env=environment, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the command and every process it waited for
    cpu = (after.ru_utime - used.ru_utime) + (after.ru_stime - used.ru_stime)
    if done.returncode != 0:
        raise SystemExit(f"score failed: {done.stderr[-2000:]}")
    stages = {m.group(1): float(m.group(2)) for m in re.finditer(r"^(\w+): done in ([\d.]+) s", done.stderr, re.M)}
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "stages_s": stages, "summary": done.stdout.strip()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the 720p video")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--video", type=Path, help="score this video instead of the synthetic one")
    parser.add_argument("--cache", type=Path, default=cache_dir("benchmarks", "score"),
                        help="folder for the synthetic video (default: the user cache folder)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    video = args.video or _video(args.cache, args.seconds)
    load_before = _load()
    runs = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="bench-score-") as folder:
            output, stage_cache = Path(folder) / "out.mkv", Path(folder) / "cache"
            runs.append({"cold": _run(video, output, stage_cache), "warm": _run(video, output, stage_cache)})
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="minutes")
    result = {"date": now, "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
              f"Python {platform.python_version()}", "video": video.name, "bytes": video.stat().st_size,
              "runs": runs, "median_cold_s": statistics.median(r["cold"]["wall_s"] for r in runs),
              "median_warm_s": statistics.median(r["warm"]["wall_s"] for r in runs),
              "median_cold_cpu_s": statistics.median(r["cold"]["cpu_s"] for r in runs),
              "load_before": load_before, "load_after": _load()}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()

"""Speed and memory of `va analyze` (built-in sensor) on synthetic videos.

    python -m benchmarks.bench_va [--seconds 60] [--long-minutes 20] [--repeats 3]
        [--cache DIR] [--out benchmarks/results/va-DATE.json]

- Speed: a 1280x720, 30 fps H.264 video (x264 "medium" preset, CRF 23: B-frames and CABAC, like
  common files; fine grain so it does not compress to nothing) with cuts every 2-6 s and an AAC
  track, analysed at 10 Hz; median over ``--repeats`` runs of seconds of video per wall second,
  and CPU seconds per video second. For scale, a naive pass (every frame decoded and converted
  to full-size RGB, no skipping) is timed once.
- Memory: peak RSS (``VmHWM``) of a fresh process analysing a short and a long video
  (320x180, 25 fps), and the 720p one, minus the same process's peak after its imports: if
  the analysis streams, the long video costs about as much as the short one.
Prints JSON and writes it to --out, with the load average and the busiest processes.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from core.paths import cache_dir
from engines.va.analyze import analyze_video
from engines.va.synthetic import Shot, write_video

ROOT = Path(__file__).resolve().parent.parent
PALETTE = [(0.9, 0.6, 0.3), (0.3, 0.5, 0.85), (0.5, 0.8, 0.4), (0.85, 0.3, 0.4), (0.6, 0.6, 0.6)]


def _shots(seconds: float, grain: float) -> list[Shot]:
    shots, total, index = [], 0.0, 0
    while total < seconds - 1e-9:
        length = min([2.0, 4.0, 6.0, 3.0][index % 4], seconds - total)
        shots.append(Shot(length, PALETTE[index % 5], 0.3 + 0.1 * (index % 5), speed=0.1 * (index % 4),
                          texture=0.3, loudness_dbfs=-40 + 6 * (index % 5), seed=index, grain=grain))
        total += length
        index += 1
    return shots


def _video(cache: Path, name: str, seconds: float, width: int, height: int, fps: int, preset: str,
           crf: int, grain: float) -> Path:
    path = cache / f"{name}-{width}x{height}-{fps}fps-{seconds:g}s-{preset}.mp4"
    if not path.exists():
        started = time.perf_counter()
        write_video(path, _shots(seconds, grain), width, height, fps, audio=True, preset=preset, crf=crf)
        print(f"made {path.name} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return path


def _naive_pass(path: Path) -> dict[str, float]:
    import av

    started, cpu = time.perf_counter(), time.process_time()
    frames = 0
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frame.to_ndarray(format="rgb24")
            frames += 1
    return {"frames": frames, "wall_s": time.perf_counter() - started, "cpu_s": time.process_time() - cpu}


# VmHWM (this process's own peak RSS): ru_maxrss would include the parent's peak at fork time.
_MEMORY_PROBE = """
import json, sys
from engines.va.analyze import analyze_video

def hwm_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

after_imports = hwm_mib()
result = analyze_video(sys.argv[1])
peak = hwm_mib()
print(json.dumps({"after_imports_mib": after_imports, "peak_mib": peak, "analysis_mib": peak - after_imports,
                  "video_s": result.curve.duration_s, "frames_analysed": result.frames, "speed_x": result.speed}))
"""


def _memory(path: Path) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(path)], cwd=ROOT, capture_output=True,
                         text=True, check=True, timeout=3600)
    return json.loads(out.stdout)


def _load() -> dict[str, object]:
    top = subprocess.run(["ps", "-eo", "pcpu,args", "--sort=-pcpu"], capture_output=True, text=True, check=False).stdout
    return {"loadavg": os.getloadavg(), "top": [line.strip()[:120] for line in top.splitlines()[1:6]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the 720p video")
    parser.add_argument("--long-minutes", type=float, default=20.0, help="length of the long video")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=cache_dir("benchmarks", "va"),
                        help="folder for the synthetic videos (default: the user cache folder)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--no-naive", action="store_true", help="skip the naive full-decode pass")
    parser.add_argument("--no-memory", action="store_true", help="speed only (no long video, no memory runs)")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)

    hd = _video(args.cache, "hd", args.seconds, 1280, 720, 30, "medium", 23, grain=0.3)
    load_before = _load()
    runs = []
    for _ in range(args.repeats):
        cpu = time.process_time()
        result = analyze_video(hd)
        runs.append({"wall_s": result.elapsed_s, "cpu_s": time.process_time() - cpu, "speed_x": result.speed,
                     "frames_analysed": result.frames, "cuts": len(result.cuts_s)})
    video_s = result.curve.duration_s
    speed = {"video": hd.name, "bytes": hd.stat().st_size,
             "bitrate_kbps": round(hd.stat().st_size * 8 / video_s / 1000), "video_s": video_s, "runs": runs,
             "median_speed_x": statistics.median(r["speed_x"] for r in runs),
             "median_cpu_s_per_video_s": statistics.median(r["cpu_s"] for r in runs) / video_s}
    if not args.no_naive:
        naive = _naive_pass(hd)
        speed["naive_full_decode"] = {**naive, "speed_x": video_s / naive["wall_s"]}
    memory = {}
    if not args.no_memory:
        short = _video(args.cache, "small", 120.0, 320, 180, 25, "ultrafast", 28, grain=0.0)
        long = _video(args.cache, "small", args.long_minutes * 60, 320, 180, 25, "ultrafast", 28, grain=0.0)
        memory = {path.name: _memory(path) for path in (short, long, hd)}
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="minutes")
    result = {"date": now, "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
              f"Python {platform.python_version()}", "speed_720p": speed, "memory": memory,
              "load_before": load_before, "load_after": _load()}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()

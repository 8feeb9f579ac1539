"""Throughput of the batch layer: 1 and 2 local workers and Ray with 2 actors, side by side.

    python benchmarks/batch_throughput.py [--melodies 40] [--bars 64] [--songs 8] [--song-seconds 10]
        [--eval-songs 3] [--repeats 3] [--out benchmarks/results/batch-DATE.json]

Three workloads, each run by the real command in a fresh process (so every figure includes process
start, model load and, for Ray, connecting and starting the actors: what a user waits for):
- ``harmonize`` on a folder of generated melodies (``--melodies`` files of ``--bars`` 4/4 bars);
- ``snc encode --manifest`` on generated songs (``--songs`` of ``--song-seconds``, three stems,
  transparent mode): real-time factor = seconds of audio encoded per wall second;
- ``eval harmony --songs N`` (the first N held-out lead sheets of each data set and style, both
  default models; an item is a song under a model; its one worker runs in the command's own
  process). It reads the held-out songs from the user cache, or parses them from the data sets
  on its first run (``--eval-songs 0`` leaves it out). Its wall time also holds the baselines and
  the scoring, which the driver does alike in every set-up.
Ray runs on a one-node cluster of 2 CPUs this script starts (``ray start --head --block``).
For each run: wall seconds, items/min, the mean per-item work the workers measured, and the
overhead per item = (wall x workers - work) / items, which holds start-up, scheduling and idle
time; Ray's extra per-item cost is its overhead minus the 2-worker local pool's. The three set-ups
run in turn, ``--repeats`` rounds (so a change in the machine's load hits all three alike), and
each figure is from the round with the median wall time.
Prints JSON and writes it to --out, with the load average before and after.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import mido  # noqa: I001 - after the path: the script runs from a checkout
import numpy as np
import soundfile as sf

RATE = 48000


def melodies(folder: Path, count: int, bars: int) -> None:
    folder.mkdir(parents=True)
    scale = [60, 62, 64, 65, 67, 69, 71, 72]
    for number in range(count):
        track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=500000)])
        for index in range(bars * 4):
            pitch = scale[(index * 3 + number) % 8] + 12 * ((index // 16) % 2)
            track += [mido.Message("note_on", note=pitch, velocity=80, time=0),
                      mido.Message("note_off", note=pitch, time=480)]
        midi = mido.MidiFile(ticks_per_beat=480)
        midi.tracks.append(track)
        midi.save(folder / f"m{number:03d}.mid")


def songs(folder: Path, count: int, seconds: float) -> Path:
    """``count`` songs of three stems and a soft-clipped master; returns their JSON-lines manifest."""
    rows = []
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    for number in range(count):
        rng = np.random.default_rng(number)
        song = folder / f"song{number}"
        song.mkdir(parents=True)
        melody = 0.25 * np.sin(2 * np.pi * (330 + 20 * number) * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t))
        drums = 0.15 * rng.standard_normal(n) * (np.sin(2 * np.pi * 4 * t) > 0.6)
        bass = 0.3 * np.sin(2 * np.pi * 55 * t)
        stems = {"vocals": np.stack([melody, 0.7 * melody], 1), "drums": np.stack([drums, drums], 1),
                 "bass": np.stack([bass, bass], 1)}
        for name, data in {**stems, "master": np.tanh(1.2 * sum(stems.values())) * 0.7}.items():
            sf.write(song / f"{name}.wav", data, RATE, subtype="PCM_16")
        rows.append({"master": f"{song.name}/master.wav", "output": f"{song.name}.snc",
                     "stems": {name: f"{song.name}/{name}.wav" for name in stems}})
    manifest = folder / "songs.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return manifest


def start_ray(log: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    with open(log, "w") as output:
        head = subprocess.Popen([str(Path(sys.executable).with_name("ray")), "start", "--head", "--block",
                                 "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "2",
                                 "--include-dashboard=false", "--no-monitor", "--include-log-monitor=false",
                                 "--disable-usage-stats",
                                 "--object-store-memory", str(80 * 2**20)],
                                env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    started = time.monotonic()
    while "Ray runtime started" not in log.read_text():
        if head.poll() is not None or time.monotonic() - started > 120:
            raise SystemExit(f"ray start failed:\n{log.read_text()[-2000:]}")
        time.sleep(0.2)
    return head, f"127.0.0.1:{port}"


def run(argv: list[str], out: Path, workers: int, audio_s: float | None) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    evaluation = argv[0] == "eval"
    if evaluation:
        out.mkdir(parents=True)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "cli.main", *argv, *(("--out", str(out / "report.json"))
                                                                     if evaluation else ("-o", str(out)))],
                          cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{argv} failed:\n{done.stderr[-2000:]}")
    if evaluation:  # items: songs x models; work: the models' decoding seconds, summed over the songs
        report = json.loads((out / "report.json").read_text())
        models = [model["name"] for model in report["models"]]
        items = report["groups"]["all"]["songs"] * len(models)
        work = sum(report["systems"][name]["seconds"] for name in models)
    else:
        records = [json.loads(line) for line in (out / "batch-results.jsonl").read_text().splitlines()]
        work = sum(record["seconds"] for record in records)
        items = len(records)
    result = {"wall_s": round(wall, 2), "items": items, "items_per_min": round(60 * items / wall, 1),
              "work_per_item_s": round(work / items, 3),
              "overhead_per_item_s": round((wall * workers - work) / items, 3)}
    if audio_s is not None:
        result["real_time_factor"] = round(audio_s / wall, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--melodies", type=int, default=40)
    parser.add_argument("--bars", type=int, default=64)
    parser.add_argument("--songs", type=int, default=8)
    parser.add_argument("--song-seconds", type=float, default=10.0)
    parser.add_argument("--eval-songs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks" / "results" / f"batch-{datetime.date.today()}.json")
    args = parser.parse_args()
    os.environ["RAY_AUTH_MODE"] = "disabled"  # the script's own cluster and drivers (see tests/test_batch_ray.py)
    work = Path(tempfile.mkdtemp(prefix="scorebridge-batch-bench-"))
    report: dict = {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                    "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
                    "load_before": os.getloadavg(), "settings": vars(args) | {"out": str(args.out)}}
    head = None
    try:
        melodies(work / "melodies", args.melodies, args.bars)
        manifest = songs(work / "songs", args.songs, args.song_seconds)
        head, address = start_ray(work / "ray.log")
        audio_s = args.songs * args.song_seconds
        workloads = {"harmonize": (["harmonize", str(work / "melodies"), "--seed", "1"], None),
                     "snc encode": (["snc", "encode", "--manifest", str(manifest)], audio_s)}
        if args.eval_songs:
            workloads["eval harmony"] = (["eval", "harmony", "--songs", str(args.eval_songs), "--quiet"], None)
        setups = (("local, 1 worker", ["--workers", "1"], 1), ("local, 2 workers", ["--workers", "2"], 2),
                  ("Ray, 2 actors", ["--ray-address", address], 2))
        for name, (argv, audio) in workloads.items():
            rounds: dict[str, list[dict]] = {label: [] for label, _, _ in setups}
            for _ in range(args.repeats):
                for label, extra, workers in setups:
                    out = work / f"out-{name.replace(' ', '-')}-{workers}-{label[0]}"
                    rounds[label].append(run(argv + extra, out, workers, audio))
                    print(name, label, rounds[label][-1], flush=True)
            report[name] = {label: sorted(found, key=lambda r: r["wall_s"])[len(found) // 2] | {
                "wall_s_all": [r["wall_s"] for r in found]} for label, found in rounds.items()}
            local, ray = report[name]["local, 2 workers"], report[name]["Ray, 2 actors"]
            report[name]["ray_extra_overhead_per_item_s"] = round(ray["overhead_per_item_s"]
                                                                  - local["overhead_per_item_s"], 3)
    finally:
        if head is not None:
            head.send_signal(signal.SIGTERM)
            head.wait(60)
        shutil.rmtree(work, ignore_errors=True)
    report["load_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

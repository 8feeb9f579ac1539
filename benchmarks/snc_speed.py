"""SNC encode and decode speed with one thread and with every core, beside ``flac -8``, in one run.

    .venv/bin/python benchmarks/snc_speed.py [--song FOLDER | --corpus FOLDER] [--modes transparent]
        [--threads 1,2] [--baseline CHECKOUT] [--repeats 3] [--json OUT]

``--song`` is a folder of ``master.wav`` and one WAV per stem (default: the 60 s, 3-stem song
of ``benchmarks/bench_hardening_cost.py``, rendered into a temporary folder); ``--corpus`` a
folder of such folders (the 12 tracks of ``benchmarks/snc/corpus.py``), each measured with
``flac -8`` right before it, so the ratio to ``flac -8`` compares runs under the same load;
``--baseline CHECKOUT`` measures that checkout's SNC code (run by this script) beside this one. Each
measurement is a fresh process (``SCOREBRIDGE_SNC_THREADS`` = 1, then the cores this process may use)
that first codes a 2 s cut untimed, then times ``encode``, a full ``SncReader.blocks()`` decode
("decode") and ``decode_to_dir`` ("wav": what ``snc decode`` does, WAV files written).
``flac -8`` codes the same master in the same repeat. Speeds are audio seconds per wall-clock
second (what a user waits) and per CPU second of every thread (the work, less moved by the
load); the load average is recorded at every measurement, as the machine is shared.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODES = ("transparent", "lossless")


def child(spec: dict) -> dict:
    """One measurement, in its own process (the environment sets the threads), of the SNC code
    in the checkout ``spec["tree"]``."""
    sys.path.insert(0, spec["tree"])
    import soundfile as sf

    from engines.snc import SncReader, encode

    song = Path(spec["song"])
    stems = {p.stem: p for p in sorted(song.glob("*.wav")) if p.stem != "master"}
    with tempfile.TemporaryDirectory() as tmp:
        warm = Path(tmp) / "warm"
        warm.mkdir()
        cut = {}
        for name, path in {"master": song / "master.wav", **stems}.items():
            data, rate = sf.read(path, dtype="int16", frames=2 * 48000, always_2d=True)
            cut[name] = warm / f"{name}.wav"
            sf.write(cut[name], data, rate, subtype="PCM_16")
        encode(cut["master"], {k: v for k, v in cut.items() if k != "master"}, warm / "w.snc", spec["mode"])
        list(SncReader(warm / "w.snc").blocks())
        out = Path(tmp) / "song.snc"
        result = {}
        for what, run in (("encode", lambda: encode(song / "master.wav", stems, out, spec["mode"])),
                          ("decode", lambda: list(SncReader(out).blocks())),
                          ("wav", lambda: SncReader(out).decode_to_dir(Path(tmp) / "decoded"))):
            wall, cpu = time.perf_counter(), time.process_time()
            run()
            result[f"{what}_wall_s"] = round(time.perf_counter() - wall, 4)
            result[f"{what}_cpu_s"] = round(time.process_time() - cpu, 4)
        result["bytes"] = out.stat().st_size
        result["audio_s"] = sf.info(song / "master.wav").duration
    return result


def measure(song: Path, mode: str, threads: int, tree: Path = ROOT) -> dict:
    """One child measurement (this script) of the SNC code in ``tree`` (this or another checkout)."""
    env = {**os.environ, "PYTHONPATH": str(tree), "SCOREBRIDGE_SNC_THREADS": str(threads)}
    spec = json.dumps({"song": str(song), "mode": mode, "tree": str(tree)})
    load = os.getloadavg()[0]
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", spec], env=env,
                          cwd=tree, capture_output=True, text=True, check=True)
    return {"mode": mode, "threads": threads, "load_1min": round(load, 2),
            **json.loads(done.stdout.strip().splitlines()[-1])}


def flac(song: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        load = os.getloadavg()[0]
        wall = time.perf_counter()
        before = os.times()
        subprocess.run(["flac", "-8", "-f", "-s", "-o", str(Path(tmp) / "m.flac"), str(song / "master.wav")],
                       check=True)
        after = os.times()
        return {"wall_s": round(time.perf_counter() - wall, 4), "load_1min": round(load, 2),
                "cpu_s": round((after.children_user - before.children_user)
                               + (after.children_system - before.children_system), 4),
                "bytes": (Path(tmp) / "m.flac").stat().st_size}


def _songs(args: argparse.Namespace, tmp: str) -> list[Path]:
    if args.corpus is not None:
        songs = sorted(p for p in args.corpus.iterdir() if (p / "master.wav").is_file())
        if not songs:
            sys.exit(f"{args.corpus}: no track folders with a master.wav (build them with benchmarks/snc/corpus.py)")
        return songs
    if args.song is not None:
        return [args.song]
    from benchmarks.bench_hardening_cost import make_song

    paths, _ = make_song(Path(tmp))
    return [paths["master"].parent]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--song", type=Path, help="folder of master.wav and the stem WAVs")
    parser.add_argument("--corpus", type=Path, help="folder of such folders (benchmarks/snc/corpus.py): every track")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated: transparent,lossless")
    parser.add_argument("--threads", help="comma-separated thread counts (default: 1 and every core)")
    parser.add_argument("--baseline", type=Path, help="another checkout (e.g. of main) measured beside this one")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    if shutil.which("flac") is None:
        sys.exit("flac is not installed (apt-get install flac)")
    cores = len(os.sched_getaffinity(0))
    modes = [m for m in args.modes.split(",") if m]
    threads = sorted({int(t) for t in args.threads.split(",")}) if args.threads else sorted({1, cores})
    runs, flacs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        songs = _songs(args, tmp)
        for _ in range(args.repeats):
            for song in songs:  # flac -8 and SNC on the same track back to back: the same load
                flacs.append({"song": song.name, **flac(song)})
                for mode in modes:
                    for count in threads:
                        if args.baseline:
                            runs.append({"song": song.name, "tree": "baseline",
                                         **measure(song, mode, count, args.baseline.resolve())})
                        runs.append({"song": song.name, "tree": "this", **measure(song, mode, count)})
                if args.json:  # the raw measurements so far, in case a long run is cut short
                    args.json.write_text(json.dumps({"partial": True, "flac": flacs, "runs": runs}, indent=1))
    print(f"{len(songs)} track(s), {cores} cores, {args.repeats} repeat(s) (median; min-max), audio s / wall s; "
          f"load {min(r['load_1min'] for r in runs)}-{max(r['load_1min'] for r in runs)}")
    summary = {}
    trees = ["this", "baseline"] if args.baseline else ["this"]
    for song, tree in ((song, tree) for song in songs for tree in trees):
        mine = [r for r in runs if r["song"] == song.name and r["tree"] == tree]
        audio = mine[0]["audio_s"]
        flac_speed = statistics.median(audio / f["wall_s"] for f in flacs if f["song"] == song.name)
        row = {"audio_s": round(audio, 2), "flac -8 encode": round(flac_speed, 1)}
        for mode in modes:
            for count in threads:
                chosen = [r for r in mine if r["mode"] == mode and r["threads"] == count]
                for what in ("encode", "decode", "wav"):
                    speeds = [audio / r[f"{what}_wall_s"] for r in chosen]
                    median = statistics.median(speeds)
                    row[f"{mode} {what} {count}t"] = [round(median, 1), round(min(speeds), 1), round(max(speeds), 1),
                                                      round(median / flac_speed, 3)]
                    # The work: audio seconds per CPU second (every thread's), less moved by the load.
                    row[f"{mode} {what} {count}t per cpu s"] = round(
                        statistics.median(audio / r[f"{what}_cpu_s"] for r in chosen), 1)
        row["bytes"] = sorted({r["bytes"] for r in mine})
        summary[song.name if tree == "this" else f"{song.name} (baseline)"] = row
        print(f"{song.name} ({audio:.0f} s, {tree}): flac -8 {flac_speed:.1f}x; " + "; ".join(
            f"{key} {value[0]}x ({value[3]} of flac, {row[key + ' per cpu s']}x per CPU s)"
            for key, value in row.items() if key.endswith("t")))
    out = args.json or ROOT / "benchmarks" / "results" / f"snc-speed-{datetime.date.today()}.json"
    out.write_text(json.dumps({"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                               "cores": cores, "baseline": str(args.baseline) if args.baseline else None,
                               "songs": [str(s) for s in songs] if args.corpus or args.song
                               else "bench_hardening_cost song", "summary": summary, "flac": flacs, "runs": runs},
                              indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

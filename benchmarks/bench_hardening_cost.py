"""What the hardening work cost or gained in speed: an old checkout against this one, in one run.

    git worktree add /tmp/old-bench 792dd0b   # the old code (SNC format 2)
    .venv/bin/python benchmarks/bench_hardening_cost.py --old /tmp/old-bench [--repeats 5] [--json OUT]

1. SNC format 3 (a CRC32 per group of every track, a scan before ``snc decode``): encode and
   decode speed of one 60 s, 3-stem + master song (``benchmarks/snc/corpus.py``'s renderer and
   mastering chain; bach/bwv26.6 without its tenor), transparent and lossless modes. Each
   measurement is a fresh process importing the checkout's ``engines.snc``; it first codes a
   2 s cut (untimed: lazy imports and codec set-up), then times ``encode``, ``decode_to_dir``
   (what ``snc decode`` runs: the scan in format 3, then the WAVs) and ``list(blocks())`` (the
   decode ``benchmarks/snc/bench_snc.py`` times). Speeds are audio seconds / CPU seconds of that
   process (one thread: one core), as in bench_snc; wall-clock speeds are in the JSON too.
2. The lead-sheet writer: wall time of ``python -m bridge harmonize IN.mid -o OUT.mid --musicxml
   OUT.musicxml`` (process start and model load included) on the melodies the attack module's
   scaling probe writes (``benchmarks/attack/offline.py``), old and new at --notes, new alone at
   --new-only-notes (the old writer is super-linear there); the old run is killed at --old-timeout.

Old and new alternate, the order flipping every repeat (old new, new old, ...), so drift in
the machine's load falls on both. Every raw timing, the load at each run, the machine and the
commits go to --json; the table printed gives median (min-max) and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODES = ("transparent", "lossless")
# (name, music21 corpus path, tempo BPM, GM program per kept part, parts kept): soprano, alto, bass
SONG = ("bwv26-6-3-stems", "bach/bwv26.6", 80, [0, 0, 32], [0, 1, 3])
SONG_SECONDS = 60.0
WARM_SECONDS = 2.0


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _git(path: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True, check=True).stdout.strip()


def _checkout(path: Path) -> dict:
    dirty = _git(path, "status", "--porcelain", "--", "engines", "bridge")
    return {"path": str(path), "commit": _git(path, "rev-parse", "--short", "HEAD"), "code_dirty": bool(dirty)}


def _machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown")
    uname = subprocess.run(["uname", "-a"], capture_output=True, text=True, check=True).stdout.strip()
    return {"uname": uname, "nproc": os.cpu_count(), "cpu": cpu,
            "python": platform.python_version()}


# -- SNC ---------------------------------------------------------------------------------------
def make_song(folder: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """The song cut to SONG_SECONDS, and a WARM_SECONDS cut of it: {"master": ..., stem: ...}."""
    import soundfile as sf

    from benchmarks.snc.corpus import build_track

    name, work, tempo, programs, keep = SONG
    build_track(name, work, tempo, programs, keep, folder)
    cuts: list[dict[str, Path]] = []
    for seconds, label in ((SONG_SECONDS, "song"), (WARM_SECONDS, "warm")):
        (folder / label).mkdir()
        paths = {}
        for wav in sorted((folder / name).glob("*.wav")):
            audio, rate = sf.read(wav, dtype="int16", always_2d=True)
            if audio.shape[0] < seconds * rate:
                raise RuntimeError(f"{wav} is {audio.shape[0] / rate:.1f} s, shorter than {seconds} s")
            paths[wav.stem] = folder / label / wav.name
            sf.write(paths[wav.stem], audio[: int(seconds * rate)], rate, subtype="PCM_16")
        cuts.append(paths)
    return cuts[0], cuts[1]


def _timed(function: Callable[[], object]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.process_time() - cpu, time.perf_counter() - wall


def snc_child(mode: str, song: dict[str, str], warm: dict[str, str]) -> dict:
    """Runs inside the checkout measured (its engines.snc on PYTHONPATH)."""
    import soundfile as sf

    import engines.snc
    from engines.snc import SncReader, encode

    def code(paths: dict[str, str], folder: Path) -> tuple[tuple[float, float], ...]:
        out = folder / "song.snc"
        stems = {k: Path(v) for k, v in paths.items() if k != "master"}
        return (_timed(lambda: encode(Path(paths["master"]), stems, out, mode)),
                _timed(lambda: SncReader(out).decode_to_dir(folder / "decoded")),
                _timed(lambda: list(SncReader(out).blocks())))

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "warm").mkdir()
        code(warm, Path(tmp) / "warm")
        timings = code(song, Path(tmp))
        snc = Path(tmp) / "song.snc"
        result = {"bytes": snc.stat().st_size, "format_version": SncReader(snc).manifest.version,
                  "module": engines.snc.__file__, "audio_s": sf.info(song["master"]).duration}
    for what, (cpu, wall) in zip(("encode", "decode", "blocks"), timings):
        result[f"{what}_cpu_s"], result[f"{what}_wall_s"] = round(cpu, 4), round(wall, 4)
    return result


def snc_run(checkout: Path, mode: str, song: dict[str, Path], warm: dict[str, Path]) -> dict:
    spec = json.dumps({"mode": mode, "song": {k: str(v) for k, v in song.items()},
                       "warm": {k: str(v) for k, v in warm.items()}})
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--snc-child", spec], cwd=checkout,
                          env={**os.environ, "PYTHONPATH": str(checkout)}, capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- lead sheet --------------------------------------------------------------------------------
def write_melody(folder: Path, notes: int) -> Path:
    from benchmarks.attack.offline import METER, TEMPO, _melody_events, _midi

    path = folder / f"melody-{notes}.mid"
    path.write_bytes(_midi(_melody_events(notes, (TEMPO, METER))))
    return path


def harmonize_run(checkout: Path, melody: Path, folder: Path, timeout_s: float) -> dict:
    out, xml = folder / "out.mid", folder / "out.musicxml"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-m", "bridge", "harmonize", str(melody), "-o", str(out),
                               "--musicxml", str(xml)], check=False, cwd=checkout,
                              env={**os.environ, "PYTHONPATH": str(checkout)},
                              capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"wall_s": None, "timed_out_after_s": timeout_s}
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"harmonize in {checkout} failed: {done.stderr.strip()[-300:]}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "musicxml_bytes": xml.stat().st_size,
            "reported": done.stdout.strip().splitlines()[-1]}


# -- the run -----------------------------------------------------------------------------------
def alternate(repeat: int, old: Path, new: Path) -> list[tuple[str, Path]]:
    pair = [("old", old), ("new", new)]
    return pair if repeat % 2 == 0 else pair[::-1]


def summarize(runs: list[dict], key: str, value: Callable[[dict], float | None]) -> list[dict]:
    """Median, min and max of value(run) per (key, side), and new/old of the medians."""
    rows = []
    for case in dict.fromkeys(r[key] for r in runs):
        row: dict = {key: case}
        for side in ("old", "new"):
            chosen = [r for r in runs if r[key] == case and r["side"] == side]
            values = [v for r in chosen if (v := value(r)) is not None]
            if values:
                row[side] = {"median": statistics.median(values), "min": min(values), "max": max(values),
                             "n": len(values)}
            if len(values) < len(chosen):
                row.setdefault(side, {})["killed"] = len(chosen) - len(values)
        if "median" in row.get("old", {}) and "median" in row.get("new", {}):
            row["new_over_old"] = round(row["new"]["median"] / row["old"]["median"], 3)
        rows.append(row)
    return rows


def _cell(stats: dict | None, unit: str) -> str:
    if not stats:
        return "-"
    if "median" not in stats:
        return f"killed ({stats['killed']} runs)"
    return f"{stats['median']:.1f}{unit} ({stats['min']:.1f}-{stats['max']:.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", type=Path, help="the old checkout (see the docstring: git worktree add)")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each side per case (at least 3)")
    parser.add_argument("--json", type=Path, help="default benchmarks/results/hardening-cost-<date>.json")
    parser.add_argument("--notes", default="2000,5000", help="melody lengths timed old and new")
    parser.add_argument("--new-only-notes", default="20000", help="melody lengths timed on the new code only")
    parser.add_argument("--old-timeout", type=float, default=600.0, help="seconds before an old harmonize is killed")
    parser.add_argument("--snc-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.snc_child:
        spec = json.loads(args.snc_child)
        print(json.dumps(snc_child(spec["mode"], spec["song"], spec["warm"])))
        return
    if args.old is None or not (args.old / "bridge" / "__main__.py").is_file():
        parser.error("--old must name an old checkout (git worktree add, see --help)")
    if args.repeats < 3:
        parser.error("--repeats must be at least 3")
    sys.path.insert(0, str(ROOT))
    old, new = args.old.resolve(), ROOT
    date = time.strftime("%Y-%m-%d", time.gmtime())
    out_path = args.json or ROOT / f"benchmarks/results/hardening-cost-{date}.json"
    result: dict = {"command": " ".join(["benchmarks/bench_hardening_cost.py", *sys.argv[1:]]),
                    "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": _machine(),
                    "load_before": _load(), "old": _checkout(old), "new": _checkout(new)}
    snc_runs: list[dict] = []
    sheet_runs: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        song, warm = make_song(work / "song")
        for repeat in range(args.repeats):
            for mode in MODES:
                for side, checkout in alternate(repeat, old, new):
                    run = {"repeat": repeat, "mode": mode, "side": side, "load": _load(),
                           **snc_run(checkout, mode, song, warm)}
                    snc_runs.append(run)
                    print(f"snc {mode} {side} #{repeat}: encode {run['encode_cpu_s']:.2f} s, "
                          f"decode {run['decode_cpu_s']:.2f} s CPU (load {run['load'][0]})", flush=True)
        for notes in [int(n) for n in (args.notes + "," + args.new_only_notes).split(",") if n]:
            melody = write_melody(work, notes)
            sides = None if str(notes) in args.notes.split(",") else [("new", new)]
            for repeat in range(args.repeats):
                for side, checkout in sides or alternate(repeat, old, new):
                    run = {"repeat": repeat, "notes": notes, "side": side, "load": _load(),
                           **harmonize_run(checkout, melody, work, args.old_timeout)}
                    sheet_runs.append(run)
                    print(f"harmonize {notes} {side} #{repeat}: {run['wall_s']} s (load {run['load'][0]})", flush=True)
    result["load_after"] = _load()
    audio_s = snc_runs[0]["audio_s"]
    snc_summary = {f"{what}_x_realtime_{clock}": summarize(snc_runs, "mode", lambda r, k=f"{what}_{clock}_s":
                                                           round(r["audio_s"] / r[k], 1))
                   for what in ("encode", "decode", "blocks") for clock in ("cpu", "wall")}
    result["snc"] = {"song": {"source": SONG[1], "parts_kept": SONG[4], "audio_s": audio_s, "stems": len(song) - 1},
                     "summary": snc_summary, "runs": snc_runs}
    result["lead_sheet"] = {"summary": summarize(sheet_runs, "notes", lambda r: r["wall_s"]), "runs": sheet_runs}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")

    print(f"\nSNC, {audio_s:.0f} s, {len(song) - 1} stems + master: x real time on CPU time, median (min-max)")
    print(f"{'mode':12} {'step':7} {'old':>22} {'new':>22}  new/old")
    for what in ("encode", "decode", "blocks"):
        for row in snc_summary[f"{what}_x_realtime_cpu"]:
            print(f"{row['mode']:12} {what:7} {_cell(row.get('old'), 'x'):>22} {_cell(row.get('new'), 'x'):>22}"
                  f"  {row.get('new_over_old', '-')}")
    print("\nharmonize --musicxml: wall seconds, median (min-max)")
    for row in result["lead_sheet"]["summary"]:
        print(f"{row['notes']:>6} notes {_cell(row.get('old'), ' s'):>24} {_cell(row.get('new'), ' s'):>24}"
              f"  {row.get('new_over_old', '-')}")
    print(f"\nload {result['load_before']} -> {result['load_after']}; wrote {out_path}")


if __name__ == "__main__":
    main()

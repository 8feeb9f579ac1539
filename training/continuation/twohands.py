"""Two-hand (lead + accompaniment) corpus from POP909 and music21's piano scores, in beats.

    python -m training.continuation.twohands build [--datasets DIR] [--cache DIR] [--limit N] [--no-music21]
    python -m training.continuation.twohands stats [--cache DIR] [--grids]

``build`` reads every POP909 song (``POP909/NNN/NNN.mid`` + ``beat_midi.txt`` + ``key_audio.txt``)
and the keyboard scores of music21's corpus, writes ``twohands_v1.npz`` (notes: pitch,
start/end in beats from the song's first bar, velocity, hand 0 = upper / 1 = lower, song index;
per song: id, source, key, time signature, split) and ``twohands_build.json`` (counters, skipped
songs) under the cache folder, and rewrites the committed lists
``engines/continuation/splits/twohands_{train,val,test}.txt``. A song that cannot be read is
skipped and listed, never ends the build. ``stats`` prints the per-hand checks and, with
``--grids``, how many onsets and offsets each candidate time grid moves.

Time: a note's beat is its MIDI tick / ticks per quarter, counted from the first annotated
downbeat (``beat_midi.txt`` gives seconds; they become ticks through the file's tempo map), moved
back by whole bars before the first note. A song whose annotated beats are not the file's quarter
notes (median beat outside 0.95-1.05 quarters) is skipped. Bars: ``beat_midi.txt``'s second
column marks every 2nd or 3rd beat, its third every 4th: 3/4 when the second groups in threes.

Hands (POP909 has none; see ``assign_hands``): MELODY -> upper; BRIDGE -> upper where no upper
note sounds at its onset or it lies at most an octave below the tune, else lower; PIANO -> lower,
except a unison of a sounding upper note (dropped), a note at or above the lowest sounding upper
note (upper: the accompaniment's doubling of the tune or a line over it), and, while the tune
rests, a note more than an octave above the accompaniment's bass (upper: a hand spans an octave).
music21 scores: top staff -> upper, the staves below -> lower (``engines.continuation.corpus``).

Split: POP909 songs by a seeded hash of their id (80/10/10); music21 pieces keep the split of the
continuation corpus (``engines.continuation.corpus.split_of``) so a held-out piece stays held out.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np

from engines.continuation.corpus import DEFAULT_CACHE, SPLITS_DIR, save_arrays
from engines.continuation.pieces import (
    LOWER,
    UPPER,
    Song,
    assign_hands,
    read_music21,
    read_pop909,
    seconds_to_ticks,
    split_of_song,
)
from engines.harmonizer.leadsheet_corpus import default_datasets

__all__ = [
    "GRIDS",
    "Song",
    "assign_hands",
    "build",
    "grid_moves",
    "hand_checks",
    "main",
    "read_pop909",
    "seconds_to_ticks",
    "split_of_song",
]

CACHE_FILE = "twohands_v1.npz"
BUILD_FILE = "twohands_build.json"
# beats: 2.5 ticks of POP909's 480 per quarter. The annotated downbeat that places the grid is
# given in seconds to about a millisecond, so a whole song can sit a tick or two off its grid.
TOLERANCE = 1 / 192
# Candidate grids: steps per beat, or a union of grids ("12|16": every 16th and every triplet 8th).
GRIDS: tuple[str, ...] = ("4", "12", "16", "24", "12|16", "48")


def music21_piano_sources() -> list[str]:
    """Corpus paths of the keyboard scores among the continuation corpus's sources: a file whose
    MusicXML names staves (a grand staff) or a Humdrum file, confirmed when read."""
    from music21 import corpus

    from training.continuation.data import corpus_sources

    chosen = []
    root = Path(str(corpus.getComposer("bach")[0]).split("/corpus/")[0]) / "corpus"
    for relative in corpus_sources():
        path = root / relative
        if relative.endswith(".krn"):
            chosen.append(relative)
            continue
        if relative.endswith(".mxl"):
            with zipfile.ZipFile(path) as archive:
                text = "".join(archive.read(n).decode("utf8", "ignore") for n in archive.namelist()
                               if not n.startswith("META"))
        else:
            text = path.read_text(errors="ignore")
        if "<staves>" in text:
            chosen.append(relative)
    return chosen


# ---------------------------------------------------------------- build and checks


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def build(datasets: Path, cache: Path = DEFAULT_CACHE, limit: int | None = None, music21: bool = True,
          splits_dir: Path | None = None) -> dict:
    """Read every song, write the cache, its build record and the split lists (default: the
    committed ones, ``SPLITS_DIR``, looked up when called); return the record."""
    splits_dir = SPLITS_DIR if splits_dir is None else splits_dir
    started = time.monotonic()
    root = datasets / "pop909" / "POP909"
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder (POP909 is looked for under DATASETS/pop909/POP909)")
    jobs = [(f.name, read_pop909, f) for f in sorted(root.iterdir()) if f.is_dir()]
    if limit:
        jobs = jobs[:limit]
    if music21:
        jobs += [(p, read_music21, p) for p in music21_piano_sources()]
    songs, skipped, counters = [], [], Counter()
    for number, (label, reader, argument) in enumerate(jobs, 1):
        try:
            song = reader(argument)
            if not len(song.notes):
                raise ValueError("no notes")
        except Exception as error:  # noqa: BLE001 - a bad song is listed and skipped, never ends the build
            skipped.append(f"{label}: {type(error).__name__}: {error}")
            continue
        songs.append(song)
        counters.update(song.counters)
        if number % 50 == 0 or number == len(jobs):
            _progress(f"[{number}/{len(jobs)}] {time.monotonic() - started:.0f}s {label}")
    if not songs:
        raise ValueError(f"no readable song under {root}")
    notes = np.concatenate([np.column_stack([s.notes, np.full(len(s.notes), i)]) for i, s in enumerate(songs)])
    ids = [s.song_id for s in songs]
    splits = [split_of_song(i) for i in ids]
    save_arrays(
        cache / CACHE_FILE,
        pitch=notes[:, 0].astype(np.int16), start=notes[:, 1], end=notes[:, 2],
        velocity=notes[:, 3].astype(np.int16), hand=notes[:, 4].astype(np.int8), song=notes[:, 5].astype(np.int32),
        song_ids=np.array(ids), sources=np.array([s.source for s in songs]), keys=np.array([s.key for s in songs]),
        time_signatures=np.array([s.time_signature for s in songs]), splits=np.array(splits),
    )
    splits_dir.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val", "test"):
        (splits_dir / f"twohands_{split}.txt").write_text("".join(f"{i}\n" for i, s in zip(ids, splits) if s == split))
    record = {"songs": len(songs), "notes": len(notes), "counters": dict(counters), "skipped": skipped,
              "splits": dict(Counter(splits)), "seconds": round(time.monotonic() - started, 1)}
    (cache / BUILD_FILE).write_text(json.dumps(record, indent=1))
    _progress(f"{len(songs)} songs, {len(notes)} notes, {len(skipped)} skipped in {record['seconds']} s")
    return record


def load(cache: Path = DEFAULT_CACHE) -> dict[str, np.ndarray]:
    path = cache / CACHE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; run `python -m training.continuation.twohands build`")
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def _grid_points(grid: str) -> list[int]:
    return [int(g) for g in grid.split("|")]


def grid_moves(times: np.ndarray, grid: str, tolerance: float = TOLERANCE) -> dict[str, float]:
    """How many times (beats) rounding to ``grid`` moves: share moved (by more than ``tolerance``),
    mean and largest distance of a moved time in beats. A union "a|b" rounds to the nearer point."""
    times = np.asarray(times, dtype=np.float64)
    if not len(times):
        return {"moved": 0.0, "mean_beats": 0.0, "max_beats": 0.0, "count": 0}
    distance = np.full(len(times), np.inf)
    for steps in _grid_points(grid):
        distance = np.minimum(distance, np.abs(times * steps - np.round(times * steps)) / steps)
    moved = distance > tolerance
    return {"moved": float(moved.mean()), "mean_beats": float(distance[moved].mean()) if moved.any() else 0.0,
            "max_beats": float(distance.max()), "count": int(len(times))}


def shift_tokens(grid: str, longest_beats: int = 4) -> int:
    """TIME_SHIFT tokens for shifts up to ``longest_beats`` on the grid (a union's differences)."""
    steps = math.lcm(*_grid_points(grid))
    points = sorted({k * steps // g for g in _grid_points(grid) for k in range(g * longest_beats + 1)})
    return len({b - a for a in points for b in points if b > a})


def hand_checks(data: dict[str, np.ndarray], songs: np.ndarray | None = None) -> dict:
    """Per hand: notes, median pitch, onsets per beat, share of beats with an onset; and how often
    the hands overlap (the same pitch sounding in both) or cross (a lower-hand onset above a
    sounding upper note)."""
    keep = np.ones(len(data["pitch"]), bool) if songs is None else np.isin(data["song"], songs)
    pitch, start, end = data["pitch"][keep], data["start"][keep], data["end"][keep]
    hand, song = data["hand"][keep], data["song"][keep]
    result: dict = {}
    total_beats = 0.0
    spans = {}
    for s in np.unique(song):
        mask = song == s
        spans[int(s)] = (math.floor(start[mask].min()), math.ceil(end[mask].max()))
        total_beats += spans[int(s)][1] - spans[int(s)][0]
    for name, h in (("upper", UPPER), ("lower", LOWER)):
        mask = hand == h
        busy = 0
        for s, (lo, _) in spans.items():
            beats = np.floor(start[mask & (song == s)]).astype(np.int64) - lo
            busy += len(np.unique(beats))
        onsets = len(np.unique(np.column_stack([song[mask], np.round(start[mask] * 960)]), axis=0)) if mask.any() else 0
        result[name] = {"notes": int(mask.sum()), "median_pitch": float(np.median(pitch[mask])) if mask.any() else None,
                        "onsets_per_beat": round(onsets / max(total_beats, 1), 3),
                        "beats_with_onsets": round(busy / max(total_beats, 1), 3)}
    overlaps = crossings = 0
    for s in np.unique(song):
        mask = song == s
        upper = np.flatnonzero(mask & (hand == UPPER))
        for i in np.flatnonzero(mask & (hand == LOWER)):
            on = upper[(start[upper] <= start[i] + 1e-9) & (end[upper] > start[i] + 1e-9)]
            if not len(on):
                continue
            overlaps += bool(np.any(pitch[on] == pitch[i]))
            crossings += bool(pitch[i] > pitch[on].min())
    lower_notes = max(1, result["lower"]["notes"])
    result["overlap_notes"] = overlaps
    result["crossing_notes"] = crossings
    result["crossing_share_of_lower"] = round(crossings / lower_notes, 4)
    result["beats"] = round(total_beats)
    return result


def stats(cache: Path = DEFAULT_CACHE, grids: bool = False) -> dict:
    data = load(cache)
    sources = data["sources"]
    result: dict = {"songs": len(data["song_ids"]), "notes": len(data["pitch"]),
                    "splits": dict(Counter(data["splits"].tolist())),
                    "time_signatures": dict(Counter(data["time_signatures"].tolist()))}
    for source in np.unique(sources):
        songs = np.flatnonzero(sources == source)
        result[str(source)] = hand_checks(data, songs)
        if grids:
            mask = np.isin(data["song"], songs)
            result[str(source)]["grids"] = {
                grid: {"onsets": grid_moves(data["start"][mask], grid), "offsets": grid_moves(data["end"][mask], grid),
                       "shift_tokens_4_beats": shift_tokens(grid)}
                for grid in GRIDS
            }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.continuation.twohands",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("build", "stats"))
    parser.add_argument("--datasets", type=Path, default=None, help="datasets folder (default: $SCOREBRIDGE_DATASETS "
                        "or ../shared/datasets beside the clone)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--limit", type=int, default=None, help="read only the first N POP909 songs")
    parser.add_argument("--no-music21", action="store_true", help="leave music21's piano scores out")
    parser.add_argument("--grids", action="store_true", help="stats: measure the candidate time grids")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            record = build(args.datasets or default_datasets(), args.cache, args.limit, not args.no_music21)
            print(json.dumps({k: v for k, v in record.items() if k != "skipped"} | {"skipped": len(record["skipped"])}))
            for line in record["skipped"]:
                print(f"skipped {line}", file=sys.stderr)
        else:
            print(json.dumps(stats(args.cache, args.grids), indent=1))
    except (FileNotFoundError, ValueError) as error:
        print(f"twohands: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

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
import hashlib
import json
import math
import sys
import time
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from engines.continuation.corpus import DEFAULT_CACHE, SPLITS_DIR, save_arrays, split_of
from engines.harmonizer.leadsheet_corpus import default_datasets
from engines.harmonizer.pop909 import TempoMap

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
SPLIT_SEED = "scorebridge-twohands-v1"
UPPER, LOWER = 0, 1
# beats: 2.5 ticks of POP909's 480 per quarter. The annotated downbeat that places the grid is
# given in seconds to about a millisecond, so a whole song can sit a tick or two off its grid.
TOLERANCE = 1 / 192
# Candidate grids: steps per beat, or a union of grids ("12|16": every 16th and every triplet 8th).
GRIDS: tuple[str, ...] = ("4", "12", "16", "24", "12|16", "48")
UNISON_WINDOW = 0.125  # beats: a PIANO unison of the tune starting this close is a doubling


@dataclass
class Song:
    """One song's notes in beats: rows (pitch, start, end, velocity, hand)."""

    song_id: str
    source: str
    key: str
    time_signature: str
    notes: np.ndarray  # float64 (n, 5)
    counters: dict[str, int] = field(default_factory=dict)


# ---------------------------------------------------------------- time


def seconds_to_ticks(midi, seconds) -> np.ndarray:
    """MIDI ticks (float) at the given seconds of the file's timeline, through its tempo map."""
    return TempoMap(midi).ticks_at(seconds)


# ---------------------------------------------------------------- POP909


def _track_notes(track) -> list[tuple[int, int, int, int]]:
    """(start tick, end tick, pitch, velocity); a re-struck sounding pitch ends the held one."""
    notes, sounding, tick = [], {}, 0
    for message in track:
        tick += message.time
        if message.type not in ("note_on", "note_off"):
            continue
        if message.note in sounding:
            start, velocity = sounding.pop(message.note)
            if tick > start:
                notes.append((start, tick, message.note, velocity))
        if message.type == "note_on" and message.velocity > 0:
            sounding[message.note] = (tick, message.velocity)
    return notes


def _rows(path: Path, columns: int) -> list[list[str]]:
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    bad = next((r for r in rows if len(r) < columns), None)
    if not rows or bad is not None:
        raise ValueError(f"{path.name}: expected rows of {columns} fields")
    return rows


def read_pop909(folder: Path) -> Song:
    """One POP909 folder -> a Song with hands assigned (``assign_hands``)."""
    import mido

    name = folder.name
    midi_path, beat_path = folder / f"{name}.mid", folder / "beat_midi.txt"
    for path in (midi_path, beat_path):
        if not path.is_file():
            raise ValueError(f"missing {path.name}")
    try:
        midi = mido.MidiFile(midi_path)
    except Exception as error:  # noqa: BLE001 - mido raises several types for a damaged file
        raise ValueError(f"{midi_path.name} is not a readable MIDI file ({type(error).__name__}: {error})") from None
    beats = _rows(beat_path, 3)
    beat_ticks = seconds_to_ticks(midi, [float(r[0]) for r in beats])
    resolution = midi.ticks_per_beat
    if len(beat_ticks) < 2 or not 0.95 <= float(np.median(np.diff(beat_ticks))) / resolution <= 1.05:
        raise ValueError("beat_midi.txt's beats are not the MIDI file's quarter notes")
    duple = np.array([float(r[1]) > 0.5 for r in beats])
    quad = np.array([float(r[2]) > 0.5 for r in beats])
    groups = np.diff(np.flatnonzero(duple))
    triple = len(groups) > 0 and Counter(groups.tolist()).most_common(1)[0][0] == 3
    downbeats = np.flatnonzero(duple if triple else quad)
    beats_per_bar = 3 if triple else 4
    tracks = {t.name.strip().upper(): t for t in midi.tracks}
    if "MELODY" not in tracks or "PIANO" not in tracks:
        raise ValueError(f"{midi_path.name} lacks a MELODY or PIANO track")
    parts = {role: np.array(_track_notes(tracks[role]) if role in tracks else [], dtype=np.float64).reshape(-1, 4)
             for role in ("MELODY", "BRIDGE", "PIANO")}
    if not len(parts["MELODY"]) and not len(parts["PIANO"]):
        raise ValueError(f"{midi_path.name} has no notes")
    # the first annotated downbeat, on the file's tick grid, moved back by whole bars before the first note
    origin = round(float(beat_ticks[downbeats[0] if len(downbeats) else 0]))
    first = min(float(p[:, 0].min()) for p in parts.values() if len(p))
    bar = beats_per_bar * resolution
    if first < origin:
        origin -= math.ceil((origin - first) / bar) * bar
    for role, array in parts.items():
        parts[role] = np.column_stack([array[:, 2], (array[:, :2] - origin) / resolution, array[:, 3]])
    notes, counters = assign_hands(parts["MELODY"], parts.get("BRIDGE", np.zeros((0, 4))), parts["PIANO"])
    key = "unknown"
    key_path = folder / "key_audio.txt"
    if key_path.is_file():
        spans = [(float(r[1]) - float(r[0]), r[2]) for r in _rows(key_path, 3)]
        key = max(spans)[1]
    return Song(f"pop909/{name}", "pop909", key, f"{beats_per_bar}/4", notes, counters)


def assign_hands(melody: np.ndarray, bridge: np.ndarray, piano: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
    """Rows (pitch, start, end, velocity) of the three POP909 tracks -> rows
    (pitch, start, end, velocity, hand) sorted by start, and what each rule did.

    MELODY -> upper. BRIDGE (secondary melody): upper when no upper note sounds at its onset or
    it is at most 12 semitones below the lowest sounding one (the right hand reaches it), else
    lower. PIANO: a unison of a sounding upper note whose onset is within 1/8 beat is dropped
    (the accompaniment doubles the tune on the same key); at or above the lowest sounding upper
    note -> upper (a doubling an octave up, or a line over the tune: the lower hand does not
    cross over it); while no upper note sounds, more than 12 semitones above the accompaniment's
    bass (its lowest note starting within the last beat) -> upper (a hand spans an octave, so the
    intro's or interlude's tune and top voices go to the upper hand); else lower."""
    counters = Counter()
    upper = [tuple(row) for row in melody]
    counters["melody"] = len(upper)

    def sounding(rows, at: float) -> list:
        return [r for r in rows if r[1] <= at + 1e-9 and r[2] > at + 1e-9]

    lower = []
    melody_sorted = sorted(upper, key=lambda r: r[1])
    for row in sorted(map(tuple, bridge), key=lambda r: r[1]):
        over = sounding(melody_sorted, row[1])
        if not over or row[0] >= min(r[0] for r in over) - 12:
            upper.append(row)
            counters["bridge_upper"] += 1
        else:
            lower.append(row)
            counters["bridge_lower"] += 1
    upper.sort(key=lambda r: r[1])
    piano_rows = sorted(map(tuple, piano), key=lambda r: (r[1], r[0]))
    piano_starts = np.array([r[1] for r in piano_rows])
    upper_starts = np.array([r[1] for r in upper])
    longest = max((r[2] - r[1] for r in upper), default=0.0)
    for row in piano_rows:
        pitch, start = row[0], row[1]
        lo = np.searchsorted(upper_starts, start - longest - 1e-9)
        hi = np.searchsorted(upper_starts, start + 1e-9, side="right")
        over = sounding(upper[lo:hi], start)
        if over:
            if any(r[0] == pitch and abs(r[1] - start) <= UNISON_WINDOW for r in over):
                counters["piano_unison_dropped"] += 1
                continue
            if pitch >= min(r[0] for r in over):
                upper.append(row)
                counters["piano_upper_over_tune"] += 1
                continue
            lower.append(row)
            counters["piano_lower"] += 1
            continue
        recent = piano_rows[np.searchsorted(piano_starts, start - 1.0):np.searchsorted(piano_starts, start, "right")]
        bass = min(r[0] for r in recent)
        if pitch > bass + 12:
            upper.append(row)
            counters["piano_upper_tune_rests"] += 1
        else:
            lower.append(row)
            counters["piano_lower"] += 1
    rows = [(*r, UPPER) for r in upper] + [(*r, LOWER) for r in lower]
    rows.sort(key=lambda r: (r[1], r[4], r[0]))
    return np.array(rows, dtype=np.float64).reshape(-1, 5), dict(counters)


def split_of_song(song_id: str, seed: str = SPLIT_SEED) -> str:
    """POP909: seeded 80/10/10 by the song id; music21 pieces: the continuation corpus's split."""
    if not song_id.startswith("pop909/"):
        return split_of(song_id)
    bucket = int.from_bytes(hashlib.sha256(f"{seed}:{song_id}".encode()).digest()[:4], "big") % 100
    return "train" if bucket < 80 else ("val" if bucket < 90 else "test")


# ---------------------------------------------------------------- music21 piano scores


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


def read_music21(piece_id: str) -> Song:
    """A keyboard score of music21's corpus: top staff -> upper, the staves below -> lower."""
    from music21 import corpus, meter

    from engines.continuation.corpus import _hands

    score = corpus.parse(piece_id)
    right, left, style = _hands(score, piece_id)
    if style != "piano":
        raise ValueError(f"{piece_id}: not a keyboard score")
    rows = []
    for hand, parts in ((UPPER, right), (LOWER, left)):
        for part in parts:
            for element in part.flatten().notes:
                length = Fraction(element.quarterLength)
                if length <= 0:
                    continue
                start = Fraction(element.offset)
                for member in element.notes if element.isChord else (element,):
                    if member.tie is not None and member.tie.type in ("stop", "continue"):
                        continue
                    rows.append((member.pitch.midi, float(start), float(start + length), 72, hand))
    signatures = score.flatten().getElementsByClass(meter.TimeSignature)
    signature = signatures[0].ratioString if len(signatures) else "4/4"
    try:
        analysed = score.analyze("key")
        key = f"{analysed.tonic.name.replace('-', 'b')}:{'min' if analysed.mode == 'minor' else 'maj'}"
    except Exception:  # noqa: BLE001 - a key is metadata; a score without one still counts
        key = "unknown"
    notes = np.array(sorted(rows, key=lambda r: (r[1], r[4], r[0])), dtype=np.float64).reshape(-1, 5)
    return Song(piece_id, "music21", key, signature, notes, {"notes": len(rows)})


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

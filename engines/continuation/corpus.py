"""Two-hand piano corpus from music21's bundled scores -> tokens + valence/arousal labels.

The full training cache (``corpus_v1.npz``) and the committed split lists are built by
``python -m training.continuation.data build``. Evaluation needs one split only:
``load_split_corpus`` reads the training cache when the cache folder holds one, else parses the
split's pieces on first use (music21) and keeps them in the user cache folder
(``core.paths.cache_dir("continuation")``).

Hands: keyboard music (a score with two or more PartStaffs, or two parts named Piano) maps
its top staff to the right hand and the staves below to the left; other parts (voice,
violin) of such scores are left out. Part music (chorales, string quartets, madrigals) is
reduced to two hands: the upper ceil(n/2) parts in score order -> right, the rest -> left.
Notes outside 21..108 and grace notes are dropped and counted. Velocity follows the last
dynamic marking of the part (volumeScalar * 127; 72 when unmarked). Pieces are split 80/10/10
by work (movements of one work together) with a seeded hash; the lists are committed in splits/.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.atomic import atomic_output
from core.paths import cache_dir

from .affect import token_va, valence_arousal
from .tokens import (
    HIGH_PITCH,
    LEFT,
    LOW_PITCH,
    RIGHT,
    STEPS_PER_QUARTER,
    NoteEvent,
    canonicalize,
    encode,
)

__all__ = [
    "CACHE_FILE",
    "CORPORA",
    "DEFAULT_CACHE",
    "SPLITS_DIR",
    "STYLES",
    "Corpus",
    "extract",
    "load_corpus",
    "load_split_corpus",
    "load_split_ids",
    "split_of",
    "tokenize_notes",
    "tokenize_piece",
]

STYLES: tuple[str, ...] = ("piano", "chorale", "quartet", "part")
DEFAULT_CACHE = cache_dir("continuation")
SPLITS_DIR = Path(__file__).resolve().parent / "splits"
SPLIT_SEED = "scorebridge-continuation-v1"
CACHE_FILE = "corpus_v1.npz"
SPLIT_CACHE_FILE = "corpus_{split}_v1.npz"  # one split, parsed on first use
# training corpora: name -> (cache file, split-list prefix in SPLITS_DIR, the command that builds it)
CORPORA: dict[str, tuple[str, str, str]] = {
    "music21": (CACHE_FILE, "", "python -m training.continuation.data build"),
    "twohands": ("corpus_twohands_v1.npz", "twohands_", "python -m training.continuation.twohands_tokens"),
}
DEFAULT_VELOCITY = 72


@dataclass
class Corpus:
    """All pieces' tokens concatenated; piece i is tokens[offsets[i]:offsets[i+1]]."""

    tokens: np.ndarray
    va: np.ndarray
    offsets: np.ndarray
    piece_ids: list[str]
    styles: np.ndarray
    splits: list[str]
    valence_lead: int = 0  # quarters the valence labels look ahead (affect.valence_arousal)

    def piece_indices(self, split: str) -> np.ndarray:
        return np.array([i for i, s in enumerate(self.splits) if s == split], dtype=np.int64)


def _group_of(piece_id: str) -> str:
    parent, _, name = piece_id.rpartition("/")
    return parent if name.startswith("movement") else piece_id.rsplit(".", 1)[0]


def split_of(piece_id: str, seed: str = SPLIT_SEED) -> str:
    """Seeded, stable 80/10/10 assignment of a piece (by its work group)."""
    bucket = (
        int.from_bytes(hashlib.sha256(f"{seed}:{_group_of(piece_id)}".encode()).digest()[:4], "big") % 100
    )
    return "train" if bucket < 80 else ("val" if bucket < 90 else "test")


def _hands(score, piece_id: str) -> tuple[list, list, str]:
    from music21 import stream

    parts = list(score.parts)
    staffs = [p for p in parts if isinstance(p, stream.PartStaff)]
    if len(staffs) >= 2:
        return staffs[:1], staffs[1:], "piano"
    if len(parts) == 2 and all("piano" in (p.partName or "").lower() for p in parts):
        return parts[:1], parts[1:], "piano"
    if len(parts) < 2:
        raise ValueError(f"{piece_id}: {len(parts)} part(s); two hands need at least two")
    upper = math.ceil(len(parts) / 2)
    style = (
        "chorale"
        if piece_id.startswith("bach/")
        else (
            "quartet"
            if piece_id.split("/")[0] in ("beethoven", "haydn", "mozart") and len(parts) == 4
            else "part"
        )
    )
    return parts[:upper], parts[upper:], style


def extract(piece_id: str) -> tuple[list[NoteEvent], list[int], str, dict[str, int]]:
    """(notes, bar starts in steps, style, counters) of one corpus score."""
    from music21 import corpus, dynamics, stream

    score = corpus.parse(piece_id)
    right, left, style = _hands(score, piece_id)
    counters = {"out_of_range": 0, "grace": 0, "off_grid": 0}
    notes: list[NoteEvent] = []
    for hand, parts in ((RIGHT, right), (LEFT, left)):
        for part in parts:
            flat = part.flatten()
            marks = sorted(
                (float(d.offset), d.volumeScalar) for d in flat.getElementsByClass(dynamics.Dynamic)
            )
            notes.extend(_part_notes(flat, hand, marks, counters))
    measures = score.parts[0].getElementsByClass(stream.Measure)
    bars = sorted({round(float(m.offset) * STEPS_PER_QUARTER) for m in measures})
    return notes, bars, style, counters


def _part_notes(
    flat, hand: int, marks: list[tuple[float, float]], counters: dict[str, int]
) -> list[NoteEvent]:
    """Notes of one flattened part with tied notes merged (music21's stripTies is ~7 s a part)."""
    spans: list[list] = []  # [start, end, pitch, velocity]
    open_ties: dict[int, list] = {}
    for element in flat.notes:
        length = float(element.quarterLength)
        if length <= 0:
            counters["grace"] += len(element.pitches)
            continue
        start = float(element.offset)
        scalar = next((v for o, v in reversed(marks) if o <= start), None)
        velocity = DEFAULT_VELOCITY if scalar is None else int(min(127, max(1, round(scalar * 127))))
        members = element.notes if element.isChord else (element,)
        for member in members:
            midi = member.pitch.midi
            tie = member.tie.type if member.tie is not None else None
            if tie in ("stop", "continue") and midi in open_ties:
                span = open_ties[midi]
                span[1] = max(span[1], start + length)
                if tie == "stop":
                    del open_ties[midi]
                continue
            span = [start, start + length, midi, velocity]
            spans.append(span)
            if tie in ("start", "continue"):
                open_ties[midi] = span
    events: list[NoteEvent] = []
    for start, end, midi, velocity in spans:
        if not LOW_PITCH <= midi <= HIGH_PITCH:
            counters["out_of_range"] += 1
            continue
        onset = round(start * STEPS_PER_QUARTER)
        if abs(start * STEPS_PER_QUARTER - onset) > 1e-6:
            counters["off_grid"] += 1
        duration = max(1, round(end * STEPS_PER_QUARTER) - onset)
        events.append(NoteEvent(max(0, onset), hand, midi, duration, velocity))
    return events


def load_split_ids(split: str, corpus: str = "music21") -> list[str]:
    _, prefix, command = CORPORA[corpus]
    path = SPLITS_DIR / f"{prefix}{split}.txt"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; run `{command}`")
    return [line for line in path.read_text().splitlines() if line]


def load_corpus(cache_dir: Path = DEFAULT_CACHE, corpus: str = "music21") -> Corpus:
    """The cached corpus (a name in ``CORPORA``) with each piece's split from its committed lists."""
    name, _, command = CORPORA[corpus]
    path = cache_dir / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; run `{command}`")
    data = np.load(path)
    membership = {p: s for s in ("train", "val", "test") for p in load_split_ids(s, corpus)}
    ids = [str(p) for p in data["piece_ids"]]
    unknown = [p for p in ids if p not in membership]
    if unknown:
        raise ValueError(
            f"{len(unknown)} cached pieces are in no split list (first: {unknown[0]}); rebuild the cache"
        )
    return Corpus(
        data["tokens"].astype(np.int64),
        data["va"].astype(np.float32),
        data["offsets"],
        ids,
        data["styles"],
        [membership[p] for p in ids],
        int(data["valence_lead"]) if "valence_lead" in data.files else 0,
    )


def tokenize_piece(piece_id: str) -> tuple[np.ndarray, np.ndarray, str, dict[str, int]]:
    """(tokens int16 with SOS/EOS, per-token valence/arousal float16, style, dropped-note counters)
    of one corpus score; ValueError when nothing in range is left."""
    notes, bars, style, counters = extract(piece_id)
    tokens, va, stats = tokenize_notes(notes, bars, piece_id)
    return tokens, va, style, counters | stats


def tokenize_notes(notes: list[NoteEvent], bars: list[int], piece_id: str) -> tuple[np.ndarray, np.ndarray,
                                                                                     dict[str, int]]:
    """(tokens int16 with SOS/EOS, per-token valence/arousal float16, what canonicalize changed) of
    one piece's notes and bar starts (steps); bars after the last note are dropped."""
    canonical, stats = canonicalize(notes)
    if not canonical:
        raise ValueError(f"{piece_id}: no notes in range")
    end = max(n.end_steps for n in canonical)
    bars = [b for b in bars if b <= end]
    tokens = np.array(encode(canonical, bars, add_sos=True, add_eos=True), dtype=np.int16)
    va = token_va(tokens, valence_arousal(canonical, end)).astype(np.float16)
    return tokens, va, {"shortened": stats.shortened, "duplicates": stats.duplicates}


def save_arrays(path: Path, **arrays: np.ndarray) -> None:
    """A cache file written whole or not at all (a reader never sees half of one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as temporary, open(temporary, "wb") as handle:
        np.savez_compressed(handle, **arrays)


def load_split_corpus(split: str, cache: Path | None = None,
                      progress: Callable[[str], None] | None = None) -> Corpus:
    """One split's pieces: from the training cache when ``cache`` holds one, else from the split
    cache, parsed with music21 on first use (with progress) and reused afterwards."""
    folder = Path(cache) if cache is not None else DEFAULT_CACHE
    if (folder / CACHE_FILE).is_file():
        return load_corpus(folder)
    ids = load_split_ids(split)
    path = folder / SPLIT_CACHE_FILE.format(split=split)
    if path.is_file():
        with np.load(path) as data:
            if [str(p) for p in data["piece_ids"]] == ids:
                return Corpus(data["tokens"].astype(np.int64), data["va"].astype(np.float32), data["offsets"],
                              ids, data["styles"], [split] * len(ids))
    tokens, labels, offsets, styles = [], [], [0], []
    for number, piece_id in enumerate(ids, 1):
        if progress is not None:
            progress(f"parsing {split} piece {number}/{len(ids)}: {piece_id}")
        piece_tokens, piece_va, style, _ = tokenize_piece(piece_id)
        tokens.append(piece_tokens)
        labels.append(piece_va)
        offsets.append(offsets[-1] + len(piece_tokens))
        styles.append(STYLES.index(style))
    arrays = {"tokens": np.concatenate(tokens), "va": np.concatenate(labels),
              "offsets": np.array(offsets, dtype=np.int64), "piece_ids": np.array(ids),
              "styles": np.array(styles, dtype=np.int64)}
    save_arrays(path, **arrays)
    if progress is not None:
        progress(f"cached the {split} split ({len(ids)} pieces) in {path}")
    return Corpus(arrays["tokens"].astype(np.int64), arrays["va"].astype(np.float32), arrays["offsets"], ids,
                  arrays["styles"], [split] * len(ids))

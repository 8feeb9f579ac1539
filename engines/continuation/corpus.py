"""Two-hand piano corpus from music21's bundled scores -> token cache (music21 only to build).

    python -m engines.continuation.corpus build [--cache DIR] [--limit N]
    python -m engines.continuation.corpus stats [--cache DIR]
    python -m engines.continuation.corpus relabel --valence-lead 4 --out DIR [--cache DIR]

Hands: keyboard music (a score with two or more PartStaffs, or two parts named Piano) maps
its top staff to the right hand and the staves below to the left; other parts (voice,
violin) of such scores are left out. Part music (chorales, string quartets, madrigals) is
reduced to two hands: the upper ceil(n/2) parts in score order -> right, the rest -> left.
Notes outside 21..108 and grace notes are dropped and counted. Velocity follows the last
dynamic marking of the part (volumeScalar * 127; 72 when unmarked). Pieces are split 80/10/10
by work (movements of one work together) with a seeded hash; the lists are committed in splits/.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .affect import token_va, valence_arousal
from .tokens import (
    HIGH_PITCH,
    LEFT,
    LOW_PITCH,
    NOTE_BASE,
    NOTE_ON,
    NUM_PITCHES,
    RIGHT,
    STEPS_PER_QUARTER,
    NoteEvent,
    canonicalize,
    decode,
    encode,
)

__all__ = [
    "DEFAULT_CACHE",
    "SPLITS_DIR",
    "STYLES",
    "Corpus",
    "build_cache",
    "corpus_sources",
    "extract",
    "load_corpus",
    "load_split_ids",
    "pitch_hand_nmi",
    "split_of",
    "summary",
]

STYLES: tuple[str, ...] = ("piano", "chorale", "quartet", "part")
DEFAULT_CACHE = Path("/work/runs/continuation/cache")
SPLITS_DIR = Path(__file__).resolve().parent / "splits"
SPLIT_SEED = "scorebridge-continuation-v1"
CACHE_FILE = "corpus_v1.npz"
DEFAULT_VELOCITY = 72
_PART_MUSIC = ("bach", "beethoven", "haydn", "mozart", "monteverdi")
_KEYBOARD_AND_MIXED = (
    "beach",
    "chopin",
    "cpebach",
    "handel",
    "joplin",
    "johnson_j_r",
    "liliuokalani",
    "schoenberg",
    "schubert",
    "schumann_clara",
    "schumann_robert",
    "weber",
    "corelli",
    "webern",
)
_SCORE_SUFFIXES = (".mxl", ".xml", ".musicxml", ".krn")


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


def corpus_sources() -> list[str]:
    """Corpus-relative paths to parse, one file per work (.mxl preferred over .krn)."""
    from music21 import corpus  # build time only

    chosen: dict[str, str] = {}
    for composer in _PART_MUSIC + _KEYBOARD_AND_MIXED:
        for path in sorted(map(str, corpus.getComposer(composer))):
            if not path.endswith(_SCORE_SUFFIXES):
                continue
            relative = path.split("/corpus/", 1)[-1]
            stem = relative.rsplit(".", 1)[0]
            if stem not in chosen or chosen[stem].endswith(".krn"):
                chosen[stem] = relative
    return sorted(chosen.values())


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


def build_cache(cache_dir: Path = DEFAULT_CACHE, limit: int | None = None) -> Path:
    """Parse, tokenize and label every source; write the cache and the split lists."""
    sources = corpus_sources()[:limit] if limit else corpus_sources()
    all_tokens, all_va, offsets, ids, styles, skipped = [], [], [0], [], [], []
    totals = {"out_of_range": 0, "grace": 0, "off_grid": 0, "shortened": 0, "duplicates": 0}
    started = time.monotonic()
    for number, piece_id in enumerate(sources, 1):
        try:
            notes, bars, style, counters = extract(piece_id)
        except Exception as error:  # noqa: BLE001 - a bad score is reported and skipped, never ends the build
            skipped.append(f"{piece_id}: {type(error).__name__}: {error}")
            continue
        canonical, stats = canonicalize(notes)
        if not canonical:
            skipped.append(f"{piece_id}: no notes in range")
            continue
        for key, value in counters.items():
            totals[key] += value
        totals["shortened"] += stats.shortened
        totals["duplicates"] += stats.duplicates
        end = max(n.end_steps for n in canonical)
        tokens = np.array(
            encode(canonical, [b for b in bars if b <= end], add_sos=True, add_eos=True), dtype=np.int16
        )
        all_tokens.append(tokens)
        all_va.append(token_va(tokens, valence_arousal(canonical, end)).astype(np.float16))
        offsets.append(offsets[-1] + len(tokens))
        ids.append(piece_id)
        styles.append(STYLES.index(style))
        if number % 25 == 0 or number == len(sources):
            print(
                f"[{number}/{len(sources)}] {time.monotonic() - started:.0f}s "
                f"{piece_id} ({style}, {len(tokens)} tokens)",
                flush=True,
            )
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / CACHE_FILE
    np.savez_compressed(
        path,
        tokens=np.concatenate(all_tokens),
        va=np.concatenate(all_va),
        offsets=np.array(offsets, dtype=np.int64),
        piece_ids=np.array(ids),
        styles=np.array(styles, dtype=np.int64),
    )
    SPLITS_DIR.mkdir(exist_ok=True)
    for split in ("train", "val", "test"):
        (SPLITS_DIR / f"{split}.txt").write_text("".join(f"{p}\n" for p in ids if split_of(p) == split))
    (cache_dir / "build.json").write_text(
        json.dumps(
            {"dropped": totals, "skipped": skipped, "seconds": round(time.monotonic() - started, 1)}, indent=1
        )
    )
    print(json.dumps({"dropped": totals, "skipped": len(skipped)}), flush=True)
    return path


def relabel(cache_dir: Path, out_dir: Path, valence_lead: int) -> Path:
    """A copy of the cache with every piece's labels recomputed from its tokens (same tokens,
    offsets, ids and styles; no music21), the valence looking ``valence_lead`` quarters ahead."""
    source = np.load(cache_dir / CACHE_FILE)
    tokens, offsets = source["tokens"], source["offsets"]
    labels = []
    for piece in range(len(offsets) - 1):
        piece_tokens = tokens[offsets[piece] : offsets[piece + 1]].astype(np.int64)
        notes = decode(piece_tokens)[0]
        end = max((n.end_steps for n in notes), default=1)
        labels.append(token_va(piece_tokens, valence_arousal(notes, end, valence_lead=valence_lead)))
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / CACHE_FILE
    partial = out_dir / (CACHE_FILE + ".partial.npz")
    np.savez_compressed(
        partial,
        **{key: source[key] for key in ("tokens", "offsets", "piece_ids", "styles")},
        va=np.concatenate(labels).astype(np.float16),
        valence_lead=np.array(valence_lead, dtype=np.int64),
    )
    partial.replace(path)
    return path


def load_split_ids(split: str) -> list[str]:
    path = SPLITS_DIR / f"{split}.txt"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; run `python -m engines.continuation.corpus build`")
    return [line for line in path.read_text().splitlines() if line]


def load_corpus(cache_dir: Path = DEFAULT_CACHE) -> Corpus:
    """The cached corpus with each piece's split from the committed lists."""
    path = cache_dir / CACHE_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; run `python -m engines.continuation.corpus build`")
    data = np.load(path)
    membership = {p: s for s in ("train", "val", "test") for p in load_split_ids(s)}
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


def pitch_hand_nmi(tokens: np.ndarray) -> float:
    """NMI(pitch, hand) over all NOTE_ON tokens: I / mean(H(pitch), H(hand)) (arithmetic)."""
    tokens = np.asarray(tokens, dtype=np.int64)
    offset = tokens - NOTE_BASE
    group, pitch = offset // NUM_PITCHES, offset % NUM_PITCHES
    on = (offset >= 0) & (group < 4) & (group % 2 == NOTE_ON)
    joint = np.zeros((NUM_PITCHES, 2))
    np.add.at(joint, (pitch[on], group[on] // 2), 1.0)
    if joint.sum() == 0:
        raise ValueError("no NOTE_ON tokens")
    joint /= joint.sum()
    p_pitch, p_hand = joint.sum(1), joint.sum(0)

    def entropy(p: np.ndarray) -> float:
        p = p[p > 0]
        return float(-(p * np.log(p)).sum())

    nz = joint > 0
    mutual = float((joint[nz] * np.log(joint[nz] / np.outer(p_pitch, p_hand)[nz])).sum())
    return mutual / max(1e-12, 0.5 * (entropy(p_pitch) + entropy(p_hand)))


def summary(data: Corpus) -> dict:
    """Pieces, tokens and styles per split, and NMI(pitch, hand) of all NOTE_ONs."""
    result: dict = {"nmi_pitch_hand": round(pitch_hand_nmi(data.tokens), 4), "paper_nmi": 0.167}
    for split in ("train", "val", "test"):
        index = data.piece_indices(split)
        lengths = data.offsets[index + 1] - data.offsets[index]
        result[split] = {
            "pieces": len(index),
            "tokens": int(lengths.sum()),
            "styles": {STYLES[s]: int((data.styles[index] == s).sum()) for s in range(len(STYLES))},
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m engines.continuation.corpus", description=__doc__.split("\n")[0]
    )
    parser.add_argument("command", choices=("build", "stats", "relabel"))
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--valence-lead", type=int, default=4, help="relabel: quarters the valence looks ahead")
    parser.add_argument("--out", type=Path, help="relabel: the new cache directory")
    parser.add_argument("--limit", type=int, default=None, help="parse only the first N sources")
    args = parser.parse_args(argv)
    if args.command == "build":
        build_cache(args.cache, args.limit)
    if args.command == "relabel":
        if args.out is None:
            parser.error("relabel needs --out DIR")
        relabel(args.cache, args.out, args.valence_lead)
        args.cache = args.out
    print(json.dumps(summary(load_corpus(args.cache)), indent=1), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

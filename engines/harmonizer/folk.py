"""Out-of-domain melodies: folk songs from music21's corpus (Essen collection, Ryan's Mammoth).

Melody only (no chords to compare with): each song becomes a key-normalized raw piece with an
empty texture, so `dataset.make_windows` cuts it like the chorales. The set is fixed and
ordered: round-robin over the Essen files (song 1 of each file, then song 2, ...), interleaved
with every 10th Ryan's Mammoth tune. `load_folk` keeps the parsed set in the cache folder.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from core.atomic import atomic_output

from .affect import detect_key, normalizing_shift
from .dataset import DEFAULT_CACHE, first_pieces, pieces_to_arrays
from .extract import STEPS_PER_QUARTER_Q16, PieceSkipped, RawPiece, _part_notes, _to_steps
from .vocab import NC

__all__ = ["FOLK_SPLIT", "folk_sources", "melody_piece", "load_folk"]

FOLK_SPLIT = "folk"
RYAN_EVERY = 10
MAX_SONG_NUMBER = 6


def folk_sources(count: int) -> list[tuple[str, int | None]]:
    """(corpus path, song number in an opus file or None) of the first `count` candidates."""
    from music21 import corpus  # offline only

    def relative(path) -> str:
        return str(path).split("/corpus/", 1)[-1]

    essen = sorted(relative(p) for p in corpus.getComposer("essenFolksong"))
    ryan = sorted(relative(p) for p in corpus.getComposer("ryansMammoth"))[::RYAN_EVERY]
    essen_order = [(path, number) for number in range(1, MAX_SONG_NUMBER + 1) for path in essen]
    sources: list[tuple[str, int | None]] = []
    for index in range(max(len(essen_order), len(ryan))):
        if index < len(essen_order):
            sources.append(essen_order[index])
        if index < len(ryan):
            sources.append((ryan[index], None))
    return sources[: count * 2]  # extra candidates for songs that fail to parse


def melody_piece(score, piece_id: str) -> RawPiece:
    """Top voice of a (melody-only) score on the 16th grid, key-normalized, empty texture."""
    parts = list(score.parts) or [score]
    events = _part_notes(parts[0])
    if len(events) < 8:
        raise PieceSkipped(f"{piece_id}: {len(events)} notes")
    steps = int(math.ceil(max(end for _, end, _ in events) * STEPS_PER_QUARTER_Q16))
    pitch = np.full(steps, -1, dtype=np.int64)
    onset = np.zeros(steps, dtype=np.uint8)
    histogram = np.zeros(12)
    for start_q, end_q, midi in events:
        start = _to_steps(start_q, STEPS_PER_QUARTER_Q16)
        end = min(steps, max(_to_steps(end_q, STEPS_PER_QUARTER_Q16), start + 1))
        pitch[start:end] = np.maximum(pitch[start:end], midi)
        onset[start] = 1
        histogram[midi % 12] += end_q - start_q
    tonic, mode, _ = detect_key(histogram)
    shift = normalizing_shift(tonic, mode)
    bar_start = np.zeros(steps, dtype=np.uint8)
    for measure in parts[0].getElementsByClass("Measure"):
        step = _to_steps(float(measure.offset), STEPS_PER_QUARTER_Q16)
        if 0 <= step < steps:
            bar_start[step] = 1
    bar_start[0] = 1
    signatures = list(parts[0].recurse().getElementsByClass("TimeSignature"))
    signature = (int(signatures[0].numerator), int(signatures[0].denominator)) if signatures else (4, 4)
    return RawPiece(
        piece_id=piece_id,
        style=0,
        melody_pitch=np.where(pitch >= 0, pitch + shift, -1).astype(np.int16),
        melody_onset=onset,
        texture=np.zeros((steps, 12), np.uint8),
        voices=np.zeros((steps, 12), np.uint8),
        struck=np.zeros((steps, 12), np.uint8),
        bass=np.full(steps, -1, np.int8),
        chord=np.full(steps, NC, np.int16),
        bar_start=bar_start,
        va=np.zeros((steps, 2), np.float32),
        time_signature=signature,
        shift=shift,
        mode=mode,
    )


def _parse(count: int, progress: Callable[[str], None] | None) -> dict[str, np.ndarray]:
    from music21 import corpus  # offline only

    pieces: list[RawPiece] = []
    for path, number in folk_sources(count):
        if len(pieces) == count:
            break
        piece_id = path if number is None else f"{path}#{number}"
        try:
            score = corpus.parse(path, number=number, forceSource=True)
            pieces.append(melody_piece(score, piece_id))
        except (PieceSkipped, ValueError, KeyError, IndexError, AttributeError, TypeError):
            continue
        if progress is not None and len(pieces) % 10 == 0:
            progress(f"folk melodies: {len(pieces)}/{count}")
    if not pieces:
        raise ValueError("no folk melody could be parsed from music21's corpus")
    arrays = pieces_to_arrays(pieces)
    arrays["split"] = np.array([FOLK_SPLIT] * len(pieces))
    return arrays


def load_folk(count: int, cache_dir: Path | None = DEFAULT_CACHE,
              progress: Callable[[str], None] | None = None) -> dict[str, np.ndarray]:
    """The first `count` folk melodies as raw arrays (split 'folk'); parsed once and kept in
    `cache_dir` when one is given (a larger cached set serves a smaller request)."""
    if count < 1:
        raise ValueError(f"folk melody count must be at least 1, got {count}")
    if cache_dir is not None:
        for path in sorted(Path(cache_dir).glob("folk_q16_*.npz"), key=_cached_count):
            have = _cached_count(path)
            if have >= count:
                with np.load(path) as data:
                    arrays = {key: data[key] for key in data.files}
                return arrays if have == count else first_pieces(arrays, count)
    arrays = _parse(count, progress)
    if cache_dir is not None:
        path = Path(cache_dir) / f"folk_q16_{count}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as temporary, open(temporary, "wb") as handle:
            np.savez_compressed(handle, **arrays)
        if progress is not None:
            progress(f"cached {count} folk melodies in {path}")
    return arrays


def _cached_count(path: Path) -> int:
    try:
        return int(path.stem.rsplit("_", 1)[1])
    except ValueError:
        return 0

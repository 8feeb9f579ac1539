"""Harmonizer data: music21 corpus -> key-normalized raw arrays -> fixed-length windows.

The full training cache (``raw_q16.npz``) and the committed split lists are built by
``python -m training.harmonizer.data build``. Evaluation needs only one split's first pieces:
``load_split`` parses them on first use (music21) and keeps them in the user cache folder
(``core.paths.cache_dir("harmonizer")``), so later runs read numpy arrays only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.atomic import atomic_output
from core.paths import cache_dir

from .grid import GridConfig, build_sequence, downsample_q16, time_signature_vector
from .vocab import PAD

__all__ = [
    "STYLES",
    "DEFAULT_CACHE",
    "SPLITS_DIR",
    "RAW_FILE",
    "Windows",
    "corpus_sources",
    "split_of",
    "pieces_to_arrays",
    "parse_split",
    "load_split",
    "load_raw",
    "make_windows",
    "load_split_ids",
]

STYLES: tuple[str, ...] = ("chorale", "classical", "renaissance")
DEFAULT_CACHE = cache_dir("harmonizer")
SPLITS_DIR = Path(__file__).resolve().parent / "splits"
SPLIT_SEED = "scorebridge-harmonizer-v1"
PALESTRINA_EVERY = 8  # every 8th of the 1,318 Palestrina files keeps parsing time in minutes
RAW_FILE = "raw_q16.npz"
SPLIT_FILE = "{split}_q16_v1.npz"  # the first pieces of one split, grown as more are asked for
PIECE_FIELDS = ("piece_id", "style", "time_signature", "shift", "mode", "split")


def corpus_sources() -> list[tuple[str, int]]:
    """(corpus-relative path, style id) of every score to try, in a fixed order."""
    from music21 import corpus  # offline only

    def relative(path) -> str:
        return str(path).split("/corpus/", 1)[-1]

    scores = (".mxl", ".xml", ".musicxml", ".krn")
    sources: list[tuple[str, int]] = []
    for path in sorted(corpus.getComposer("bach"), key=str):
        if str(path).endswith(scores):
            sources.append((relative(path), STYLES.index("chorale")))
    for composer in ("haydn", "mozart", "beethoven"):
        for path in sorted(corpus.getComposer(composer), key=str):
            if str(path).endswith(scores):
                sources.append((relative(path), STYLES.index("classical")))
    for path in sorted(corpus.getComposer("monteverdi"), key=str):
        if str(path).endswith(scores):
            sources.append((relative(path), STYLES.index("renaissance")))
    palestrina = [p for p in sorted(corpus.getComposer("palestrina"), key=str) if str(p).endswith(scores)]
    for path in palestrina[::PALESTRINA_EVERY]:
        sources.append((relative(path), STYLES.index("renaissance")))
    return sources


def _group_of(piece_id: str) -> str:
    """Movements of one work share a group, so a work never straddles two splits."""
    parent, _, name = piece_id.rpartition("/")
    return parent if name.startswith("movement") else piece_id.rsplit(".", 1)[0]


def split_of(piece_id: str, seed: str = SPLIT_SEED) -> str:
    """Seeded, stable 80/10/10 assignment of a piece (by its work group)."""
    digest = hashlib.sha256(f"{seed}:{_group_of(piece_id)}".encode()).digest()
    bucket = int.from_bytes(digest[:4], "big") % 100
    return "train" if bucket < 80 else ("val" if bucket < 90 else "test")


def pieces_to_arrays(pieces: list) -> dict[str, np.ndarray]:
    """Concatenate extracted pieces into the raw-cache layout (offsets index the Q16 arrays)."""
    lengths = np.array([len(p.chord) for p in pieces], dtype=np.int64)
    arrays = {
        "piece_id": np.array([p.piece_id for p in pieces]),
        "style": np.array([p.style for p in pieces], dtype=np.int64),
        "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        "time_signature": np.array([p.time_signature for p in pieces], dtype=np.int64),
        "shift": np.array([p.shift for p in pieces], dtype=np.int64),
        "mode": np.array([p.mode for p in pieces]),
        "split": np.array([split_of(p.piece_id) for p in pieces]),
    }
    fields = ("melody_pitch", "melody_onset", "texture", "voices", "struck", "bass", "chord", "bar_start", "va")
    for field in fields:
        arrays[field] = np.concatenate([getattr(p, field) for p in pieces])
    return arrays


def parse_split(split: str, count: int | None = None, first: int = 0,
                progress: Callable[[str], None] | None = None) -> dict[str, np.ndarray]:
    """Raw arrays of pieces ``first..count-1`` of a committed split, parsed now (music21)."""
    from music21 import corpus  # offline only

    from .extract import extract_piece

    styles = dict(corpus_sources())
    ids = load_split_ids(split)[first:count]
    pieces = []
    for number, piece_id in enumerate(ids, first + 1):
        if progress is not None:
            progress(f"parsing {split} piece {number}/{first + len(ids)}: {piece_id}")
        score = corpus.parse(piece_id, forceSource=True)
        pieces.append(extract_piece(score, piece_id, styles.get(piece_id, 0)))
    return pieces_to_arrays(pieces)


def first_pieces(raw: dict[str, np.ndarray], count: int) -> dict[str, np.ndarray]:
    """The first ``count`` pieces of raw arrays."""
    end = int(raw["offsets"][count])
    return {key: (value[:count] if key in PIECE_FIELDS else value[: count + 1] if key == "offsets"
                  else value[:end]) for key, value in raw.items()}


def _join(head: dict[str, np.ndarray], tail: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    offsets = np.concatenate([head["offsets"], tail["offsets"][1:] + head["offsets"][-1]])
    return {key: offsets if key == "offsets" else np.concatenate([head[key], tail[key]]) for key in head}


def load_split(split: str, count: int | None, cache: Path | None = None,
               progress: Callable[[str], None] | None = None) -> dict[str, np.ndarray]:
    """Raw arrays of the first ``count`` pieces (all when None) of a committed split.

    Read from the cache folder's ``SPLIT_FILE``; pieces it lacks are parsed now (music21, with
    progress) and added to it, so each piece is parsed once per machine.
    """
    ids = load_split_ids(split)
    wanted = len(ids) if count is None else min(count, len(ids))
    path = Path(cache if cache is not None else DEFAULT_CACHE) / SPLIT_FILE.format(split=split)
    cached: dict[str, np.ndarray] | None = None
    if path.is_file():
        with np.load(path) as data:
            cached = {key: data[key] for key in data.files}
        have = [str(p) for p in cached["piece_id"]]
        if have != ids[: len(have)]:  # the split lists were rebuilt: start again
            cached = None
    done = 0 if cached is None else len(cached["piece_id"])
    if done >= wanted:
        return first_pieces(cached, wanted)
    parsed = parse_split(split, wanted, done, progress)
    arrays = parsed if cached is None else _join(cached, parsed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as temporary, open(temporary, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    if progress is not None:
        progress(f"cached {len(arrays['piece_id'])} {split} pieces in {path}")
    return arrays


def load_raw(cache_dir: Path = DEFAULT_CACHE) -> dict[str, np.ndarray]:
    """Load the raw cache; raises FileNotFoundError naming the build command."""
    path = Path(cache_dir) / RAW_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} missing; run `python -m training.harmonizer.data build`")
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def load_split_ids(split: str) -> list[str]:
    """Piece ids of a committed split list."""
    path = SPLITS_DIR / f"{split}.txt"
    if not path.exists():
        raise FileNotFoundError(f"{path} missing; build the dataset first")
    return [line for line in path.read_text().splitlines() if line]


@dataclass
class Windows:
    """Fixed-length training windows of one split (W windows of L positions)."""

    melody: np.ndarray  # uint8 [W, L, R]
    harmony: np.ndarray  # int64 [W, L]
    va: np.ndarray  # float32 [W, L, 2]
    style: np.ndarray  # int64 [W]
    condition: np.ndarray  # float32 [W, 16]
    melody_pitch: np.ndarray  # int16 [W, L], -1 = rest / bar / pad
    melody_onset: np.ndarray  # uint8 [W, L]
    piece: np.ndarray  # int64 [W], index into piece_ids
    piece_ids: list[str]

    def __len__(self) -> int:
        return len(self.harmony)


def _window_starts(total: int, length: int, stride: int, bar_positions: np.ndarray) -> list[int]:
    starts, start = [], 0
    while True:
        starts.append(start)
        if start + length >= total:
            return starts
        target = start + stride
        later = bar_positions[(bar_positions >= target) & (bar_positions < start + length)]
        start = int(later[0]) if len(later) else target


def make_windows(
    raw: dict[str, np.ndarray], config: GridConfig, split: str, stride: int | None = None
) -> Windows:
    """Cut every piece of `split` into windows of config.length; training strides by L/2."""
    if stride is None:
        stride = config.length // 2 if split == "train" else config.length
    length = config.length
    rows: dict[str, list[np.ndarray]] = {k: [] for k in ("melody", "harmony", "va", "pitch", "onset")}
    styles, conditions, pieces, piece_ids = [], [], [], []
    for index in np.flatnonzero(raw["split"] == split):
        lo, hi = raw["offsets"][index], raw["offsets"][index + 1]
        names = ("melody_pitch", "melody_onset", "texture", "bass", "bar_start", "va", "voices")
        fields = {k: raw[k][lo:hi] for k in names if k in raw}
        if config.grid == "q4":
            q4 = downsample_q16(**fields)
            sequence = build_sequence(
                config, q4["melody_pitches"], q4["melody_onset"], q4["chord"], q4["bar_start"], q4["va"]
            )
        else:
            fields.pop("voices", None)
            sequence = build_sequence(
                config,
                fields["melody_pitch"],
                fields["melody_onset"],
                raw["chord"][lo:hi],
                fields["bar_start"],
                fields["va"],
            )
        total = len(sequence.harmony)
        bar_positions = np.flatnonzero(sequence.step < 0)
        piece_ids.append(str(raw["piece_id"][index]))
        condition = time_signature_vector(*raw["time_signature"][index])
        for start in _window_starts(total, length, stride, bar_positions):
            end = min(total, start + length)
            if end - start < 8:
                continue
            used = end - start
            melody = np.zeros((length, config.roll_dim), dtype=np.uint8)
            melody[:used] = sequence.melody_roll[start:end]
            harmony = np.full(length, PAD, dtype=np.int64)
            harmony[:used] = sequence.harmony[start:end]
            va = np.zeros((length, 2), dtype=np.float32)
            va[:used] = sequence.va[start:end]
            pitch = np.full(length, -1, dtype=np.int16)
            pitch[:used] = sequence.melody_pitch[start:end]
            onset = np.zeros(length, dtype=np.uint8)
            onset[:used] = sequence.melody_onset[start:end]
            for key, value in zip(
                ("melody", "harmony", "va", "pitch", "onset"), (melody, harmony, va, pitch, onset)
            ):
                rows[key].append(value)
            styles.append(int(raw["style"][index]))
            conditions.append(condition)
            pieces.append(len(piece_ids) - 1)
    if not styles:
        raise ValueError(f"split {split!r} has no windows for {config.name}")
    return Windows(
        melody=np.stack(rows["melody"]),
        harmony=np.stack(rows["harmony"]),
        va=np.stack(rows["va"]),
        style=np.array(styles, dtype=np.int64),
        condition=np.stack(conditions).astype(np.float32),
        melody_pitch=np.stack(rows["pitch"]),
        melody_onset=np.stack(rows["onset"]),
        piece=np.array(pieces, dtype=np.int64),
        piece_ids=piece_ids,
    )

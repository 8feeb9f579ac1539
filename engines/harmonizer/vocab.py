"""Chord vocabulary of the learned harmonizer (numpy only).

Seven specials, then 12 roots x 33 qualities (mir_eval's 29 plus 7(b9) 7(#9) 7(#11) 7(b13)),
403 tokens in all. Token id = 7 + root * 33 + quality_index. Arbitrary pitch-class sets are
mapped to the nearest token by pitch-class bitmap (Hamming distance).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = [
    "SPECIALS",
    "UNK",
    "PAD",
    "BOS",
    "EOS",
    "NC",
    "MASK",
    "BAR",
    "ROOT_NAMES",
    "QUALITIES",
    "VOCAB_SIZE",
    "NUM_SPECIALS",
    "token_name",
    "token_id",
    "token_pitch_classes",
    "token_bitmaps",
    "is_chord_token",
    "nearest_token",
    "nearest_tokens",
    "pcs_to_bitmap",
    "transpose_tokens",
]

SPECIALS: tuple[str, ...] = ("<unk>", "<pad>", "<s>", "</s>", "<nc>", "<mask>", "<bar>")
UNK, PAD, BOS, EOS, NC, MASK, BAR = range(7)
NUM_SPECIALS = len(SPECIALS)

ROOT_NAMES: tuple[str, ...] = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")

# Intervals above the root. mir_eval's '' quality is the empty bitmap (root only after rooting);
# here it sounds the root alone, like '1'. Duplicated sets ('b9' == '7(b9)', '#9' == '7(#9)',
# '' == '1') are kept for vocabulary fidelity; nearest-token mapping always picks the earlier one.
QUALITIES: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("maj", (0, 4, 7)),
    ("min", (0, 3, 7)),
    ("aug", (0, 4, 8)),
    ("dim", (0, 3, 6)),
    ("sus4", (0, 5, 7)),
    ("sus2", (0, 2, 7)),
    ("7", (0, 4, 7, 10)),
    ("maj7", (0, 4, 7, 11)),
    ("min7", (0, 3, 7, 10)),
    ("minmaj7", (0, 3, 7, 11)),
    ("maj6", (0, 4, 7, 9)),
    ("min6", (0, 3, 7, 9)),
    ("dim7", (0, 3, 6, 9)),
    ("hdim7", (0, 3, 6, 10)),
    ("maj9", (0, 2, 4, 7, 11)),
    ("min9", (0, 2, 3, 7, 10)),
    ("9", (0, 2, 4, 7, 10)),
    ("b9", (0, 1, 4, 7, 10)),
    ("#9", (0, 3, 4, 7, 10)),
    ("min11", (0, 2, 3, 5, 7, 10)),
    ("11", (0, 2, 4, 5, 7, 10)),
    ("#11", (0, 2, 4, 6, 7, 10)),
    ("maj13", (0, 2, 4, 7, 9, 11)),
    ("min13", (0, 2, 3, 5, 7, 9, 10)),
    ("13", (0, 2, 4, 7, 9, 10)),
    ("b13", (0, 2, 4, 7, 8, 10)),
    ("1", (0,)),
    ("5", (0, 7)),
    ("", (0,)),
    ("7(b9)", (0, 1, 4, 7, 10)),
    ("7(#9)", (0, 3, 4, 7, 10)),
    ("7(#11)", (0, 4, 6, 7, 10)),
    ("7(b13)", (0, 4, 7, 8, 10)),
)
NUM_QUALITIES = len(QUALITIES)
VOCAB_SIZE = NUM_SPECIALS + 12 * NUM_QUALITIES

# Tie-break among equally distant chords: common qualities first, then the listed order.
_PREFERRED = ("maj", "min", "7", "min7", "dim", "hdim7", "dim7", "maj7", "sus4", "aug", "5", "1")
_QUALITY_RANK = np.array(
    [
        _PREFERRED.index(name) if name in _PREFERRED else len(_PREFERRED) + index
        for index, (name, _) in enumerate(QUALITIES)
    ],
    dtype=np.int64,
)


def _build_bitmaps() -> np.ndarray:
    bitmaps = np.zeros((12 * NUM_QUALITIES, 12), dtype=np.int8)
    for root in range(12):
        for quality_index, (_, intervals) in enumerate(QUALITIES):
            for interval in intervals:
                bitmaps[root * NUM_QUALITIES + quality_index, (root + interval) % 12] = 1
    return bitmaps


_CHORD_BITMAPS = _build_bitmaps()
_CHORD_ROOTS = np.repeat(np.arange(12), NUM_QUALITIES)
_CHORD_RANK = np.tile(_QUALITY_RANK, 12)


def token_bitmaps() -> np.ndarray:
    """Return a [VOCAB_SIZE, 12] int8 pitch-class bitmap per token (zeros for specials)."""
    full = np.zeros((VOCAB_SIZE, 12), dtype=np.int8)
    full[NUM_SPECIALS:] = _CHORD_BITMAPS
    return full


def is_chord_token(token: int) -> bool:
    """True for the 396 root/quality tokens."""
    return NUM_SPECIALS <= int(token) < VOCAB_SIZE


def token_name(token: int) -> str:
    """Name of a token, e.g. 'C:maj', 'F#:7(b9)', '<bar>'."""
    token = int(token)
    if 0 <= token < NUM_SPECIALS:
        return SPECIALS[token]
    if not is_chord_token(token):
        raise ValueError(f"token {token} outside the vocabulary [0, {VOCAB_SIZE})")
    root, quality_index = divmod(token - NUM_SPECIALS, NUM_QUALITIES)
    return f"{ROOT_NAMES[root]}:{QUALITIES[quality_index][0]}"


def token_id(name: str) -> int:
    """Inverse of token_name."""
    if name in SPECIALS:
        return SPECIALS.index(name)
    root_name, separator, quality = name.partition(":")
    if not separator or root_name not in ROOT_NAMES:
        raise ValueError(f"bad chord name {name!r}; expected 'Root:quality' such as 'C:maj'")
    names = [q for q, _ in QUALITIES]
    if quality not in names:
        raise ValueError(f"unknown quality {quality!r} in {name!r}; known: {names}")
    return NUM_SPECIALS + ROOT_NAMES.index(root_name) * NUM_QUALITIES + names.index(quality)


def token_pitch_classes(token: int) -> tuple[int, ...]:
    """Sorted pitch classes of a chord token; empty tuple for specials."""
    if not is_chord_token(token):
        if 0 <= int(token) < NUM_SPECIALS:
            return ()
        raise ValueError(f"token {token} outside the vocabulary [0, {VOCAB_SIZE})")
    return tuple(int(pc) for pc in np.flatnonzero(_CHORD_BITMAPS[int(token) - NUM_SPECIALS]))


def pcs_to_bitmap(pitch_classes: Iterable[int]) -> np.ndarray:
    """12-element int8 bitmap of the given pitch classes (any integers, taken mod 12)."""
    bitmap = np.zeros(12, dtype=np.int8)
    for pc in pitch_classes:
        bitmap[int(pc) % 12] = 1
    return bitmap


def nearest_tokens(bitmaps: np.ndarray, bass: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """Map [N, 12] pitch-class bitmaps to chord tokens (vectorized).

    Distance is the Hamming distance between bitmaps; ties prefer a root equal to the bass
    pitch class (bass < 0 means unknown), then common qualities. Empty sets map to `<nc>`.
    """
    bitmaps = np.asarray(bitmaps)
    if bitmaps.ndim != 2 or bitmaps.shape[1] != 12:
        raise ValueError(f"bitmaps must have shape [N, 12], got {bitmaps.shape}")
    binary = (bitmaps > 0).astype(np.int64)
    count = len(binary)
    bass_array = np.full(count, -1, dtype=np.int64) if bass is None else np.asarray(bass, dtype=np.int64)
    if bass_array.shape != (count,):
        raise ValueError(f"bass must have shape [{count}], got {bass_array.shape}")
    chords = _CHORD_BITMAPS.astype(np.int64)
    overlap = binary @ chords.T
    distance = binary.sum(1, keepdims=True) + chords.sum(1)[None, :] - 2 * overlap
    root_mismatch = (_CHORD_ROOTS[None, :] != bass_array[:, None]).astype(np.int64)
    cost = distance * 10_000 + root_mismatch * 1_000 + _CHORD_RANK[None, :]
    tokens = NUM_SPECIALS + cost.argmin(axis=1)
    tokens[binary.sum(1) == 0] = NC
    return tokens.astype(np.int64)


def nearest_token(pitch_classes: Iterable[int], bass: int | None = None) -> int:
    """Nearest chord token for one pitch-class set (with optional bass pitch class)."""
    bitmap = pcs_to_bitmap(pitch_classes)[None, :]
    bass_pc = np.array([-1 if bass is None else int(bass) % 12])
    return int(nearest_tokens(bitmap, bass_pc)[0])


def _transpositions() -> np.ndarray:
    """[12, VOCAB_SIZE]: row s maps every token to the token moved up s semitones."""
    tokens = np.arange(VOCAB_SIZE, dtype=np.int64)
    root, quality = np.divmod(tokens - NUM_SPECIALS, NUM_QUALITIES)
    table = np.array([NUM_SPECIALS + ((root + s) % 12) * NUM_QUALITIES + quality for s in range(12)])
    table[:, :NUM_SPECIALS] = tokens[:NUM_SPECIALS]
    return table


_TRANSPOSITIONS = _transpositions()


def transpose_tokens(tokens: np.ndarray, semitones: int) -> np.ndarray:
    """Move every chord token's root by `semitones`; specials (and values outside the
    vocabulary) are unchanged. One table lookup: the live harmonizer does this twice a decision."""
    tokens = np.asarray(tokens, dtype=np.int64)
    inside = (tokens >= 0) & (tokens < VOCAB_SIZE)
    if inside.all():
        return _TRANSPOSITIONS[int(semitones) % 12][tokens]
    return np.where(inside, _TRANSPOSITIONS[int(semitones) % 12][np.where(inside, tokens, 0)], tokens)

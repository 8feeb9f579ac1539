"""Grid and sequence encoding shared by training and runtime (numpy only).

A piece on the 16th grid (melody pitch per step, texture, bars) becomes a sequence of
positions on the Q4 or Q16 grid, optionally with intertwined bar positions (bar flag in the
melody roll, `<bar>` in the harmony), then fixed-length windows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .vocab import BAR, PAD, nearest_tokens

__all__ = [
    "GridConfig",
    "Sequence",
    "TIME_SIGNATURE_DIM",
    "time_signature_vector",
    "downsample_q16",
    "build_sequence",
    "melody_roll",
]

TIME_SIGNATURE_DIM = 16
LOWEST_KEY = 21  # A0, first of 88 keys


@dataclass(frozen=True)
class GridConfig:
    """Tokenization choices: grid ('q4' | 'q16'), intertwined bars, roll ('pc' | 'pc_fr'), length L."""

    grid: str = "q4"
    bars: bool = True
    roll: str = "pc"
    length: int = 80

    def __post_init__(self) -> None:
        if self.grid not in ("q4", "q16"):
            raise ValueError(f"grid must be 'q4' or 'q16', got {self.grid!r}")
        if self.roll not in ("pc", "pc_fr"):
            raise ValueError(f"roll must be 'pc' or 'pc_fr', got {self.roll!r}")
        if self.length < 8:
            raise ValueError(f"length must be at least 8, got {self.length}")

    @property
    def steps_per_quarter(self) -> int:
        return 1 if self.grid == "q4" else 4

    @property
    def roll_dim(self) -> int:
        return 12 + (88 if self.roll == "pc_fr" else 0) + (1 if self.bars else 0)

    @property
    def name(self) -> str:
        return f"{self.grid}_L{self.length}_{'bar' if self.bars else 'ts'}_{self.roll}"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Sequence:
    """One piece as grid positions. step = index on the grid, -1 for bar positions."""

    melody_roll: np.ndarray  # uint8 [P, roll_dim]
    melody_pitch: np.ndarray  # int16 [P], top melody pitch sounding, -1 rest / bar
    melody_onset: np.ndarray  # uint8 [P]
    harmony: np.ndarray  # int64 [P] chord tokens, BAR at bar positions
    va: np.ndarray  # float32 [P, 2]
    step: np.ndarray  # int32 [P]


def time_signature_vector(numerator: int, denominator: int) -> np.ndarray:
    """16-dim condition: one-hot numerator 1..14 (clipped), then flags for denominator 4 and 8.

    Denominator 2 (and others) leave both flags at zero.
    """
    vector = np.zeros(TIME_SIGNATURE_DIM, dtype=np.float32)
    vector[min(max(int(numerator), 1), 14) - 1] = 1.0
    if int(denominator) == 4:
        vector[14] = 1.0
    elif int(denominator) == 8:
        vector[15] = 1.0
    return vector


def downsample_q16(
    melody_pitch: np.ndarray,
    melody_onset: np.ndarray,
    texture: np.ndarray,
    bass: np.ndarray,
    bar_start: np.ndarray,
    va: np.ndarray,
) -> dict[str, np.ndarray]:
    """Q16 arrays -> Q4 arrays. A beat's chord is the texture at its onset plus pitch classes
    sounding for at least 3 of its 4 sixteenths; its melody is every pitch sounding in it."""
    steps = len(melody_pitch)
    beats = -(-steps // 4)
    pad = beats * 4 - steps

    def padded(array: np.ndarray, value) -> np.ndarray:
        widths = [(0, pad)] + [(0, 0)] * (array.ndim - 1)
        return np.pad(array, widths, constant_values=value)

    pitch4 = padded(melody_pitch, -1).reshape(beats, 4)
    texture4 = padded(texture, 0).reshape(beats, 4, 12)
    chord_pcs = (texture4[:, 0] > 0) | ((texture4 > 0).sum(1) >= 3)
    bass4 = padded(bass, -1).reshape(beats, 4)[:, 0]
    return {
        "melody_pitches": pitch4,  # [B, 4] every sounding pitch in the beat
        "melody_pitch": pitch4.max(1).astype(np.int16),
        "melody_onset": padded(melody_onset, 0).reshape(beats, 4).max(1).astype(np.uint8),
        "chord": nearest_tokens(chord_pcs.astype(np.int8), bass4).astype(np.int64),
        "bar_start": padded(bar_start, 0).reshape(beats, 4).max(1).astype(np.uint8),
        "va": padded(va, 0).reshape(beats, 4, 2).mean(1).astype(np.float32),
    }


def melody_roll(pitches: np.ndarray, roll: str) -> np.ndarray:
    """[P, K] MIDI pitches (-1 = none) -> [P, 12 or 100] binary roll (pitch classes, then 88 keys)."""
    pitches = np.asarray(pitches)
    if pitches.ndim == 1:
        pitches = pitches[:, None]
    width = 12 + (88 if roll == "pc_fr" else 0)
    out = np.zeros((len(pitches), width), dtype=np.uint8)
    rows, cols = np.nonzero(pitches >= 0)
    values = pitches[rows, cols].astype(np.int64)
    out[rows, values % 12] = 1
    if roll == "pc_fr":
        keys = values - LOWEST_KEY
        inside = (keys >= 0) & (keys < 88)
        out[rows[inside], 12 + keys[inside]] = 1
    return out


def build_sequence(
    config: GridConfig,
    melody_pitches: np.ndarray,
    melody_onset: np.ndarray,
    chord: np.ndarray,
    bar_start: np.ndarray,
    va: np.ndarray,
) -> Sequence:
    """Grid arrays (melody_pitches [S] or [S, K]) -> positions, with bar positions if configured."""
    pitches = np.asarray(melody_pitches)
    top = pitches if pitches.ndim == 1 else pitches.max(1)
    roll = melody_roll(pitches, config.roll)
    steps = len(top)
    if not config.bars:
        return Sequence(
            roll,
            top.astype(np.int16),
            np.asarray(melody_onset, np.uint8),
            np.asarray(chord, np.int64),
            np.asarray(va, np.float32),
            np.arange(steps, dtype=np.int32),
        )
    bar_positions = np.flatnonzero(bar_start)
    total = steps + len(bar_positions)
    is_bar = np.zeros(total, dtype=bool)
    is_bar[bar_positions + np.arange(len(bar_positions))] = True
    step_of = np.full(total, -1, dtype=np.int32)
    step_of[~is_bar] = np.arange(steps, dtype=np.int32)
    full_roll = np.zeros((total, config.roll_dim), dtype=np.uint8)
    full_roll[~is_bar, : roll.shape[1]] = roll
    full_roll[is_bar, -1] = 1
    melody_top = np.full(total, -1, dtype=np.int16)
    melody_top[~is_bar] = top
    onset = np.zeros(total, dtype=np.uint8)
    onset[~is_bar] = melody_onset
    harmony = np.full(total, BAR, dtype=np.int64)
    harmony[~is_bar] = chord
    full_va = np.zeros((total, 2), dtype=np.float32)
    full_va[~is_bar] = va
    # a bar position carries the affect of the step it announces
    full_va[is_bar] = np.asarray(va, np.float32)[np.minimum(bar_positions, steps - 1)]
    return Sequence(full_roll, melody_top, onset, harmony, full_va, step_of)


def pad_harmony(length: int) -> np.ndarray:
    """A harmony row of `<pad>` tokens."""
    return np.full(length, PAD, dtype=np.int64)

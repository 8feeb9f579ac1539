"""Harmonize a melody of any length with the exported model (numpy + onnxruntime only).

The melody is given on the model's grid (one MIDI pitch per step, -1 for rests) with bar starts.
It is key-normalized like the training data, cut into windows of L positions that overlap by
half (the chords of the overlap are given to the next window as context), decoded, and the
chords are transposed back to the melody's key.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .affect import detect_key, normalizing_shift
from .decode import fill_masks
from .grid import build_sequence, time_signature_vector
from .runtime import HarmonizerModel
from .vocab import MASK, NC, PAD, transpose_tokens

__all__ = ["Harmonization", "harmonize", "bar_starts_for"]


@dataclass
class Harmonization:
    """Chord token per melody step (original key), the key found and the model calls used."""

    chords: np.ndarray  # int64 [steps]
    tonic: int
    mode: str
    calls: int


def _melody_key(melody_pitch: np.ndarray) -> tuple[int, str]:
    sounding = melody_pitch[melody_pitch >= 0]
    histogram = np.bincount(sounding % 12, minlength=12).astype(np.float64)
    tonic, mode, _ = detect_key(histogram)
    return tonic, mode


def harmonize(
    model: HarmonizerModel,
    melody_pitch: np.ndarray,
    bar_start: np.ndarray,
    time_signature: tuple[int, int] = (4, 4),
    va: np.ndarray | None = None,
    style: str = "chorale",
    strategy: str = "entropic",
    calls: int = 10,
    rng: np.random.Generator | None = None,
) -> Harmonization:
    """Chords for `melody_pitch` [steps] on the model's grid; `va` [steps, 2] defaults to zeros."""
    melody_pitch = np.asarray(melody_pitch, dtype=np.int64)
    bar_start = np.asarray(bar_start, dtype=np.uint8)
    steps = len(melody_pitch)
    if steps == 0 or bar_start.shape != (steps,):
        raise ValueError(f"melody has {steps} steps, bar_start shape {bar_start.shape}; need equal, non-zero")
    if style not in model.styles:
        raise ValueError(f"unknown style {style!r}; this model knows {model.styles}")
    va = np.zeros((steps, 2), np.float32) if va is None else np.asarray(va, np.float32)
    if va.shape != (steps, 2):
        raise ValueError(f"va must have shape ({steps}, 2), got {va.shape}")
    rng = rng if rng is not None else np.random.default_rng()
    tonic, mode = _melody_key(melody_pitch)
    shift = normalizing_shift(tonic, mode)
    shifted = np.where(melody_pitch >= 0, melody_pitch + shift, -1)
    onset = np.r_[1, (shifted[1:] != shifted[:-1]).astype(np.uint8)]
    placeholder = np.full(steps, MASK, dtype=np.int64)
    sequence = build_sequence(model.grid, shifted, onset, placeholder, bar_start, va)
    harmony = sequence.harmony.copy()  # MASK everywhere but BAR positions
    condition = time_signature_vector(*time_signature)
    style_id = model.styles.index(style)
    length, total_calls = model.length, 0
    start = 0
    while True:
        end = min(len(harmony), start + length)
        window = np.full(length, PAD, dtype=np.int64)
        window[: end - start] = harmony[start:end]
        melody = np.zeros((length, model.grid.roll_dim), np.float32)
        melody[: end - start] = sequence.melody_roll[start:end]
        window_va = np.zeros((length, 2), np.float32)
        window_va[: end - start] = sequence.va[start:end]
        sounding = np.flatnonzero(sequence.melody_pitch[start:end] >= 0)
        last_melody = int(sounding[-1]) if len(sounding) else -1

        def logits_fn(tokens: np.ndarray, m=melody, v=window_va) -> np.ndarray:
            return model.logits(m, tokens, v, style_id, condition)

        result = fill_masks(logits_fn, window, last_melody, strategy, rng, calls=calls)
        harmony[start:end] = result.harmony[: end - start]
        total_calls += result.calls
        if end == len(harmony):
            break
        start += length // 2
    chords = harmony[sequence.step >= 0]
    chords = np.where(chords == PAD, NC, chords)  # inside the melody a window's padding means "no chord"
    return Harmonization(chords=transpose_tokens(chords, -shift), tonic=tonic, mode=mode, calls=total_calls)


def bar_starts_for(steps: int, steps_per_bar: int, pickup_steps: int = 0) -> np.ndarray:
    """Bar-start flags for a regular meter (with an optional pickup)."""
    flags = np.zeros(steps, dtype=np.uint8)
    flags[pickup_steps % steps_per_bar :: steps_per_bar] = 1
    flags[0] = 1
    return flags

"""Valence/arousal labels computed from two-hand notes, and the time of every token (numpy only).

Per quarter-note frame, smoothed over a window (8 quarters by default):

- arousal = 0.5 * density + 0.25 * dynamics + 0.25 * register, where density =
  tanh((onsets per quarter - 2) / 2) (two onsets per beat is neutral), dynamics =
  (mean velocity - 64) / 40 and register = (mean pitch - 60) / 12 (middle C neutral), each
  clipped to [-1, 1];
- valence = tanh(4 * (best major-key correlation - best minor-key correlation)) of the
  duration-weighted pitch-class histogram (Krumhansl-Kessler profiles): major > 0, minor < 0.
  With ``valence_lead`` L > 0 the valence window is moved L quarters later, so a token's valence
  describes the music that is coming (L = window / 2: the next ``window_quarters`` quarters), not
  the music the context already shows (a label that only repeats the context is a label
  the model learns to ignore).

Fixed formulas (no per-piece normalization), so the same labels can be computed live from
what the player just played.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from core.keys import MAJOR_PROFILE, MINOR_PROFILE, key_correlations

from .tokens import STEPS_PER_QUARTER, NoteEvent, is_shift, shift_steps

__all__ = ["MAJOR_PROFILE", "MINOR_PROFILE", "key_correlations", "mode_score", "token_steps", "token_va",
           "valence_arousal"]


def mode_score(histograms: np.ndarray) -> np.ndarray:
    """Best major minus best minor key correlation of [..., 12] histograms (0 when flat)."""
    correlations = key_correlations(histograms)
    return correlations[..., :12].max(-1) - correlations[..., 12:].max(-1)


def _smooth(values: np.ndarray, width: int) -> np.ndarray:
    if width <= 1 or len(values) == 0:
        return values
    kernel = np.ones(width) / width
    padded = np.pad(
        values, [(width // 2, width - 1 - width // 2)] + [(0, 0)] * (values.ndim - 1), mode="edge"
    )
    if values.ndim == 1:
        return np.convolve(padded, kernel, mode="valid")
    return np.stack([np.convolve(padded[:, i], kernel, mode="valid") for i in range(values.shape[1])], axis=1)


def valence_arousal(
    notes: Sequence[NoteEvent], total_steps: int, window_quarters: int = 8, valence_lead: int = 0
) -> np.ndarray:
    """[frames, 2] float32 (valence, arousal) in [-1, 1], one frame per quarter note; the valence
    window is centred ``valence_lead`` quarters after each frame (the last frame's at the end)."""
    if total_steps < 0:
        raise ValueError(f"total_steps must be >= 0, got {total_steps}")
    if valence_lead < 0:
        raise ValueError(f"valence_lead must be >= 0, got {valence_lead}")
    frames = max(1, -(-total_steps // STEPS_PER_QUARTER))
    onsets = np.zeros(frames)
    velocity_sum = np.zeros(frames)
    pitch_sum = np.zeros(frames)
    histogram = np.zeros((frames, 12))
    for note in notes:
        frame = min(frames - 1, note.onset_steps // STEPS_PER_QUARTER)
        onsets[frame] += 1
        velocity_sum[frame] += note.velocity
        pitch_sum[frame] += note.pitch
        last = min(frames - 1, (note.end_steps - 1) // STEPS_PER_QUARTER)
        histogram[frame : last + 1, note.pitch % 12] += 1.0
    onsets_s, velocity_s, pitch_s = (_smooth(a, window_quarters) for a in (onsets, velocity_sum, pitch_sum))
    has = onsets_s > 1e-9
    density = np.tanh((onsets_s - 2.0) / 2.0)
    dynamics = np.clip(np.where(has, velocity_s / np.maximum(onsets_s, 1e-9) - 64.0, 0.0) / 40.0, -1, 1)
    register = np.clip(np.where(has, pitch_s / np.maximum(onsets_s, 1e-9) - 60.0, 0.0) / 12.0, -1, 1)
    arousal = 0.5 * density + 0.25 * dynamics + 0.25 * register
    valence = np.tanh(4.0 * mode_score(_smooth(histogram, window_quarters)))
    if valence_lead:
        valence = valence[np.minimum(np.arange(frames) + valence_lead, frames - 1)]
    return np.clip(np.stack([valence, arousal], axis=1), -1.0, 1.0).astype(np.float32)


def token_steps(tokens: Sequence[int] | np.ndarray) -> np.ndarray:
    """Grid step at which each token occurs (a TIME_SHIFT carries the time before it)."""
    tokens = np.asarray(tokens, dtype=np.int64)
    advance = np.zeros(len(tokens), dtype=np.int64)
    for index, token in enumerate(tokens):
        if is_shift(int(token)):
            advance[index] = shift_steps(int(token))
    return np.concatenate([[0], np.cumsum(advance)[:-1]]) if len(tokens) else advance


def token_va(tokens: Sequence[int] | np.ndarray, frames_va: np.ndarray) -> np.ndarray:
    """[len(tokens), 2] valence/arousal of each token from per-quarter frames."""
    frames = np.minimum(token_steps(tokens) // STEPS_PER_QUARTER, len(frames_va) - 1)
    return np.asarray(frames_va, dtype=np.float32)[frames]

"""Key detection and per-step valence/arousal labels computed from the music (numpy only).

Arousal: melodic note density, melodic register and dynamics. Valence: local mode (correlation
with the major vs minor Krumhansl-Kessler profiles of the best key) and consonance of the
sounding texture. Both are fixed formulas (no per-piece normalization), clipped to [-1, 1],
so the same labels can be computed live from a user's melody and chords.
"""

from __future__ import annotations

import numpy as np

from core.keys import MAJOR_PROFILE, MINOR_PROFILE, best_key, key_correlations

__all__ = [
    "MAJOR_PROFILE",
    "MINOR_PROFILE",
    "detect_key",
    "normalizing_shift",
    "texture_consonance",
    "valence_arousal",
]

# Interval-class consonance (0..6 semitones, folded): unison/octave, m2, M2, m3, M3, P4, tritone.
_INTERVAL_CONSONANCE = np.array([1.0, -1.0, -0.5, 0.7, 0.7, 0.3, -0.8])


def detect_key(pc_histogram: np.ndarray) -> tuple[int, str, float]:
    """Krumhansl-Schmuckler key from a duration-weighted pitch-class histogram.

    Returns (tonic pitch class, 'major' | 'minor', correlation).
    """
    tonic, minor, correlation = best_key(pc_histogram)
    return tonic, ("minor" if minor else "major"), correlation


def normalizing_shift(tonic: int, mode: str) -> int:
    """Semitone shift in [-6, 5] that moves the key to C major or A minor."""
    if mode not in ("major", "minor"):
        raise ValueError(f"mode must be 'major' or 'minor', got {mode!r}")
    target = 0 if mode == "major" else 9
    return int((target - tonic + 6) % 12 - 6)


def texture_consonance(bitmaps: np.ndarray) -> np.ndarray:
    """Mean pairwise interval-class consonance in [-1, 1] of each [N, 12] pitch-class set."""
    bitmaps = (np.asarray(bitmaps) > 0).astype(np.float64)
    scores = np.zeros(len(bitmaps))
    pair_counts = np.zeros(len(bitmaps))
    for interval in range(1, 12):
        both = bitmaps * np.roll(bitmaps, -interval, axis=1)
        pairs = both.sum(1) / 2.0  # each unordered pair is seen at +i and +(12-i)
        scores += pairs * _INTERVAL_CONSONANCE[min(interval, 12 - interval)]
        pair_counts += pairs
    return np.where(pair_counts > 0, scores / np.maximum(pair_counts, 1e-9), 1.0)


def _smooth(values: np.ndarray, width: int) -> np.ndarray:
    if width <= 1 or len(values) == 0:
        return values.astype(np.float64)
    kernel = np.ones(width) / width
    padded = np.pad(values.astype(np.float64), (width // 2, width - 1 - width // 2), mode="edge")
    return np.convolve(padded, kernel, mode="valid")


def valence_arousal(
    melody_pitch: np.ndarray,
    melody_onset: np.ndarray,
    texture_bitmaps: np.ndarray,
    dynamics: np.ndarray,
    steps_per_quarter: int,
    window_quarters: int = 8,
) -> np.ndarray:
    """Per-step [N, 2] float32 (valence, arousal) in [-1, 1].

    melody_pitch: MIDI pitch per step (-1 = rest); melody_onset: 1 where a melody note starts;
    texture_bitmaps: [N, 12] sounding pitch classes; dynamics: level per step in [-1, 1]
    (pp = -1, ff = +1, 0 when unmarked).
    """
    width = max(1, window_quarters * steps_per_quarter)
    onsets_per_quarter = _smooth(np.asarray(melody_onset, dtype=np.float64), width) * steps_per_quarter
    density = np.tanh(onsets_per_quarter - 1.0)  # one note per beat is neutral
    sounding = np.asarray(melody_pitch) >= 0
    pitch_filled = np.where(sounding, melody_pitch, 0).astype(np.float64)
    local_sum = _smooth(pitch_filled, width)
    local_count = _smooth(sounding.astype(np.float64), width)
    mean_pitch = np.where(local_count > 0, local_sum / np.maximum(local_count, 1e-9), 67.0)
    register = np.clip((mean_pitch - 67.0) / 12.0, -1.0, 1.0)  # G4 is neutral
    arousal = 0.55 * density + 0.25 * register + 0.20 * np.asarray(dynamics, dtype=np.float64)

    bitmaps = (np.asarray(texture_bitmaps) > 0).astype(np.float64)
    local_histogram = np.stack([_smooth(bitmaps[:, pc], width) for pc in range(12)], axis=1)
    correlations = key_correlations(local_histogram)
    mode_score = correlations[:, :12].max(1) - correlations[:, 12:].max(1)
    consonance = _smooth(texture_consonance(bitmaps), max(1, steps_per_quarter))
    valence = 0.7 * np.tanh(4.0 * mode_score) + 0.3 * consonance
    return np.clip(np.stack([valence, arousal], axis=1), -1.0, 1.0).astype(np.float32)

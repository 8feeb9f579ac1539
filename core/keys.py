"""Key finding: the Krumhansl-Kessler key profiles and the Krumhansl-Schmuckler correlation of a
pitch-class histogram with the 24 keys, the global key of a melody, and its key per section
(``section_keys``). The one copy the rule engine, the learned engines and their evaluation share.

Key codes: tonic pitch class 0..11 for the major keys, tonic + 12 for the minor keys (the index
order of ``key_correlations``)."""

from __future__ import annotations

import numpy as np

__all__ = [
    "MAJOR_PROFILE", "MINOR_PROFILE", "MELODY_MAJOR_PROFILE", "MELODY_MINOR_PROFILE",
    "key_correlations", "best_key", "melody_key", "section_keys",
]

# Krumhansl and Kessler (1982), probe-tone ratings of the twelve degrees from the tonic.
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])

# How often a lead-sheet melody sounds each degree from the annotated tonic (duration-weighted,
# each song counting once): the mean over the train split of the OpenEWLD + POP909 lead sheets
# (training/harmonizer/leadsheets.py). Sharper than the probe-tone ratings: a melody rarely
# leaves its scale, and natural minor dominates, which is what tells a key from its relative.
MELODY_MAJOR_PROFILE = np.array(
    [0.2245, 0.0030, 0.1561, 0.0070, 0.1767, 0.0519, 0.0055, 0.1781, 0.0069, 0.1265, 0.0060, 0.0579])
MELODY_MINOR_PROFILE = np.array(
    [0.2492, 0.0012, 0.0746, 0.1458, 0.0030, 0.1585, 0.0023, 0.2126, 0.0281, 0.0033, 0.1158, 0.0056])


def _profiles() -> np.ndarray:
    """[24, 12]: the major keys on tonics 0..11, then the minor keys; centred, unit length."""
    stacked = np.array([np.roll(MAJOR_PROFILE, t) for t in range(12)] + [np.roll(MINOR_PROFILE, t) for t in range(12)])
    centred = stacked - stacked.mean(1, keepdims=True)
    return centred / np.linalg.norm(centred, axis=1, keepdims=True)


_PROFILES = _profiles()


def key_correlations(histograms: np.ndarray) -> np.ndarray:
    """Pearson correlations [..., 24] of [..., 12] pitch-class histograms with the 12 major keys
    (tonic 0..11), then the 12 minor keys; 0 for a flat histogram."""
    histograms = np.asarray(histograms, dtype=np.float64)
    centred = histograms - histograms.mean(-1, keepdims=True)
    norms = np.linalg.norm(centred, axis=-1, keepdims=True)
    normalized = np.where(norms > 1e-12, centred / np.maximum(norms, 1e-12), 0.0)
    return normalized @ _PROFILES.T


def best_key(histogram: np.ndarray) -> tuple[int, bool, float]:
    """(tonic pitch class, minor, correlation) of the key that best fits one histogram."""
    correlations = key_correlations(histogram)
    best = int(np.argmax(correlations))
    return best % 12, best >= 12, float(correlations[best])


def melody_key(pitch: np.ndarray) -> int:
    """Key code of a whole melody by Krumhansl-Schmuckler: every sounding position of ``pitch``
    (MIDI pitch, -1 rest; [N] or [N, K]) counts once. A melody without notes gives 0 (C major)."""
    pitch = np.asarray(pitch)
    sounding = pitch[pitch >= 0].astype(np.int64)
    histogram = np.bincount(sounding % 12, minlength=12).astype(np.float64)
    return int(np.argmax(key_correlations(histogram)))


def _log_profiles(floor: float = 0.05) -> np.ndarray:
    """[24, 12] log-probabilities of each pitch class in each key (a floor keeps chromatic notes
    from vetoing a key)."""
    rows = []
    for profile in (MELODY_MAJOR_PROFILE, MELODY_MINOR_PROFILE):
        smoothed = (1 - floor) * profile / profile.sum() + floor / 12
        rows += [np.roll(np.log(smoothed), tonic) for tonic in range(12)]
    return np.array(rows)


_LOG_PROFILES = _log_profiles()


def section_keys(
    pitch: np.ndarray,
    bar_start: np.ndarray,
    weight: np.ndarray | None = None,
    *,
    min_bars: int = 4,
    switch_cost: float = 5.0,
    final_weight: float = 4.0,
    home_weight: float = 0.05,
) -> np.ndarray:
    """Key code per position, constant over sections of whole bars.

    pitch: [N] or [N, K] MIDI pitches (-1 rest), one row per grid position (a metric beat or a
    grid step). bar_start: [N] truthy where a bar begins; positions before the first bar start
    form a pickup bar. weight: [N] duration of each position (default 1 each: equal steps).
    Returns int [N] key codes (tonic pitch class, +12 for minor).

    Each bar scores each key by the log-likelihood of its pitch classes under the lead-sheet
    melody profiles, in units of an average bar with notes. A dynamic programme over bars picks
    sections of at least ``min_bars`` bars (the whole piece if shorter), paying ``switch_cost``
    bars of evidence at each key change, so the key changes only where a new key fits clearly
    better for several bars; a melody that never modulates comes out as one key. The last note's
    pitch class votes ``final_weight`` bars for the keys on that tonic (it settles relative
    major/minor), and every bar gives ``home_weight`` to the key of the whole piece.
    Rest-only melodies give 0 (C major) throughout, as ``melody_key`` does.
    """
    pitch = np.asarray(pitch)
    if pitch.ndim == 1:
        pitch = pitch[:, None]
    if pitch.ndim != 2:
        raise ValueError(f"pitch must be [N] or [N, K], got shape {pitch.shape}")
    count = len(pitch)
    if count == 0:
        raise ValueError("section_keys needs at least one position, got an empty melody")
    bar_start = np.asarray(bar_start).astype(bool)
    if bar_start.shape != (count,):
        raise ValueError(f"bar_start must have shape ({count},), got {bar_start.shape}")
    weight = np.ones(count) if weight is None else np.asarray(weight, dtype=np.float64)
    if weight.shape != (count,) or not np.all(np.isfinite(weight)) or np.any(weight < 0):
        raise ValueError(f"weight must be {count} finite non-negative durations, got shape {weight.shape}")
    if min_bars < 1:
        raise ValueError(f"min_bars must be at least 1, got {min_bars}")

    bar_of = np.cumsum(bar_start) - (1 if bar_start[0] else 0)
    bars = int(bar_of[-1]) + 1
    rows, columns = np.nonzero(pitch >= 0)
    if len(rows) == 0:
        return np.zeros(count, dtype=np.int64)
    histograms = np.zeros((bars, 12))
    np.add.at(histograms, (bar_of[rows], pitch[rows, columns].astype(np.int64) % 12), weight[rows])
    sounding_bars = int((histograms.sum(1) > 0).sum())
    bar_mass = max(histograms.sum() / sounding_bars, 1e-12)
    evidence = histograms @ _LOG_PROFILES.T / bar_mass  # [bars, 24]
    last = int(rows[-1])
    tonic_of_key = np.arange(24) % 12
    evidence[bar_of[last]] += final_weight * (tonic_of_key == int(pitch[last].max()) % 12)
    home = int(np.argmax(evidence.sum(0)))
    evidence[:, home] += home_weight
    return _best_sections(evidence, min(min_bars, bars), switch_cost)[bar_of]


def _best_sections(evidence: np.ndarray, min_bars: int, switch_cost: float) -> np.ndarray:
    """Key per bar maximizing the summed evidence minus ``switch_cost`` per change, every
    section at least ``min_bars`` long: a semi-Markov Viterbi where a section either grows by a
    bar or starts ``min_bars`` bars back after the best ending of any key."""
    bars, keys = evidence.shape
    running = np.vstack([np.zeros(keys), np.cumsum(evidence, 0)])
    score = np.full((bars + 1, keys), -np.inf)
    started = np.zeros((bars + 1, keys), dtype=bool)  # a section of min_bars ends here
    came_from = np.zeros(bars + 1, dtype=np.int64)  # best key ending at a bar, for a switch
    best_end = np.full(bars + 1, -np.inf)
    best_end[0] = switch_cost  # the first section pays nothing
    for end in range(1, bars + 1):
        grow = score[end - 1] + evidence[end - 1]
        if end >= min_bars:
            begin = end - min_bars
            fresh = best_end[begin] - switch_cost + running[end] - running[begin]
            started[end] = fresh > grow
            score[end] = np.where(started[end], fresh, grow)
        else:
            score[end] = grow
        came_from[end] = int(np.argmax(score[end]))
        best_end[end] = score[end, came_from[end]]
    per_bar = np.zeros(bars, dtype=np.int64)
    end, key = bars, came_from[bars]
    while end > 0:
        if started[end, key]:
            per_bar[end - min_bars:end] = key
            end -= min_bars
            key = came_from[end]
        else:
            per_bar[end - 1] = key
            end -= 1
    return per_bar

"""Key finding: the Krumhansl-Kessler key profiles and the Krumhansl-Schmuckler correlation of a
pitch-class histogram with the 24 keys. The one copy the rule engine, the learned engines and
their evaluation share."""

from __future__ import annotations

import numpy as np

__all__ = ["MAJOR_PROFILE", "MINOR_PROFILE", "key_correlations", "best_key"]

# Krumhansl and Kessler (1982), probe-tone ratings of the twelve degrees from the tonic.
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


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

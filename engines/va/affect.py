"""Features -> valence and arousal time curves, shot-aware, after Hanjalic & Xu (2005).

Hanjalic & Xu model arousal as a smoothed weighted sum of motion activity, a shot-rhythm term
``exp((1 - (n(k) - p(k))) / delta)`` (``p``, ``n``: the cuts around frame ``k``) and sound
energy, each smoothed with a Kaiser window. The built-in sensor follows that shape with fixed
constants (no per-video normalisation, so a calm video stays calm and curves from different
videos compare), and replaces their pitch-based valence with colour, after Valdez & Mehrabian
(1994: pleasure rises with brightness and saturation) and the cinematographic warm/cold palette
convention. Every component is in [0, 1] (arousal) or [-1, 1] (valence):

- motion ``m = 1 - exp(-motion / 0.04)`` (mean luminance change per 0.1 s, see features.py);
- rhythm ``c = exp(-(L - 0.3) / 6)`` with ``L`` the length in seconds of the shot around ``k``;
  a shot that touches the start or end of the video counts as at least 8 s long, since its true
  length is unknown;
- sound ``e = clip((dBFS + 50) / 40, 0, 1)`` (-50 dBFS silent .. -10 dBFS loud);
- colour arousal ``s = clip(saturation / 0.6, 0, 1)``;
- arousal ``= 2 * (0.40 m + 0.25 c + 0.25 e + 0.10 s) - 1`` with audio,
  ``2 * (0.50 m + 0.35 c + 0.15 s) - 1`` without;
- valence ``= 0.5 clip((brightness - 0.4) / 0.3) + 0.2 clip((saturation - 0.25) / 0.35)
  + 0.3 warmth``, clipped to [-1, 1].

Smoothing is shot-aware: motion and valence are smoothed only within each shot (a Kaiser
window, beta 5, ``smooth_s`` long, renormalised at shot edges), so one shot's look never
bleeds into the next; the arousal sum is then smoothed across cuts (arousal builds and decays
over cuts, as in Hanjalic & Xu) and valence gets a short (0.5 s) crossfade at each cut.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .curve import VACurve

__all__ = ["builtin_curves", "grid", "shot_ids", "smooth", "smoothed_sensor_curves"]

MOTION_SCALE = 0.04
RHYTHM_DELTA_S = 6.0
BOUNDARY_SHOT_S = 8.0
CROSSFADE_S = 0.5


def grid(duration_s: float, rate_hz: float) -> np.ndarray:
    """Uniform output times 0, 1/rate, ... up to the last analysed time."""
    return np.arange(int(np.floor(duration_s * rate_hz + 1e-6)) + 1) / rate_hz


def shot_ids(times_s: np.ndarray, cuts_s: Sequence[float]) -> np.ndarray:
    """Index of the shot each time falls in (a cut starts a new shot)."""
    return np.searchsorted(np.asarray(cuts_s, dtype=np.float64), times_s, side="right")


def smooth(values: np.ndarray, width_samples: int, segments: np.ndarray | None = None) -> np.ndarray:
    """Kaiser-window (beta 5) moving average, renormalised at the edges of each segment."""
    values = np.asarray(values, dtype=np.float64)
    if width_samples <= 1 or len(values) == 0:
        return values.copy()
    window = np.kaiser(width_samples | 1, 5.0)
    if segments is None:
        segments = np.zeros(len(values), dtype=np.int64)
    result = np.empty_like(values)
    boundaries = np.flatnonzero(np.diff(segments)) + 1
    half = len(window) // 2
    for part in np.split(np.arange(len(values)), boundaries):
        piece = values[part]
        weights = np.convolve(np.ones(len(piece)), window)[half : half + len(piece)]
        result[part] = np.convolve(piece, window)[half : half + len(piece)] / weights
    return result


def _shot_lengths(times_s: np.ndarray, cuts_s: Sequence[float], duration_s: float) -> np.ndarray:
    edges = np.concatenate([[0.0], np.asarray(cuts_s, dtype=np.float64), [duration_s]])
    lengths = np.diff(edges)
    lengths[0] = max(lengths[0], BOUNDARY_SHOT_S)
    lengths[-1] = max(lengths[-1], BOUNDARY_SHOT_S)
    return lengths[shot_ids(times_s, cuts_s)]


def _on_grid(times: np.ndarray, source_times: np.ndarray, values: np.ndarray) -> np.ndarray:
    return np.interp(times, source_times, values)


def _crossfade(values: np.ndarray, rate_hz: float) -> np.ndarray:
    return smooth(values, max(1, round(CROSSFADE_S * rate_hz)))


def builtin_curves(features: dict[str, np.ndarray], cuts_s: Sequence[float], rate_hz: float,
                   audio_dbfs: np.ndarray | None = None, smooth_s: float = 3.0) -> VACurve:
    """The built-in sensor's VA curve on a ``1/rate_hz`` grid from per-frame features."""
    source = features["time_s"]
    times = grid(source[-1], rate_hz)
    shots = shot_ids(times, cuts_s)
    width = max(1, round(smooth_s * rate_hz))

    def feature(name: str) -> np.ndarray:
        return _on_grid(times, source, features[name])

    motion = 1.0 - np.exp(-smooth(feature("motion"), width, shots) / MOTION_SCALE)
    rhythm = np.exp(-(_shot_lengths(times, cuts_s, float(times[-1])) - 0.3) / RHYTHM_DELTA_S)
    saturation = feature("saturation")
    colour_arousal = np.clip(saturation / 0.6, 0.0, 1.0)
    if audio_dbfs is not None and len(audio_dbfs):
        bins = np.minimum((times * rate_hz).astype(np.int64), len(audio_dbfs) - 1)
        sound = np.clip((smooth(audio_dbfs, width)[bins] + 50.0) / 40.0, 0.0, 1.0)
        level = 0.40 * motion + 0.25 * rhythm + 0.25 * sound + 0.10 * colour_arousal
    else:
        level = 0.50 * motion + 0.35 * rhythm + 0.15 * colour_arousal
    arousal = smooth(2.0 * level - 1.0, width)

    brightness = np.clip((feature("brightness") - 0.4) / 0.3, -1.0, 1.0)
    colourful = np.clip((saturation - 0.25) / 0.35, -1.0, 1.0)
    valence = 0.5 * brightness + 0.2 * colourful + 0.3 * feature("warmth")
    valence = _crossfade(smooth(valence, width, shots), rate_hz)
    return VACurve(times, np.clip(valence, -1, 1), np.clip(arousal, -1, 1))


def smoothed_sensor_curves(source_times: np.ndarray, values: np.ndarray, cuts_s: Sequence[float],
                           rate_hz: float, smooth_s: float = 3.0) -> VACurve:
    """A learned sensor's per-frame [N, 2] (valence, arousal) on the grid, smoothed the same way."""
    times = grid(source_times[-1], rate_hz)
    shots = shot_ids(times, cuts_s)
    width = max(1, round(smooth_s * rate_hz))
    valence = _crossfade(smooth(_on_grid(times, source_times, values[:, 0]), width, shots), rate_hz)
    arousal = smooth(_on_grid(times, source_times, values[:, 1]), width)
    return VACurve(times, np.clip(valence, -1, 1), np.clip(arousal, -1, 1))

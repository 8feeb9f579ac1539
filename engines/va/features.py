"""Per-frame visual features for the built-in sensor, computed one frame at a time (numpy only).

For each analysed frame (RGB scaled to [0, 1]; luminance Y = (77 R + 150 G + 29 B) / 256, Rec. 601
weights in integer arithmetic):

- ``brightness``: mean Y.
- ``saturation``: sum(max - min) / sum(max) over pixels, i.e. HSV saturation weighted by value,
  so dark noisy pixels do not read as colourful.
- ``warmth``: mean(R - B) / max(mean(max - min), 0.1), in [-1, 1]: the red-versus-blue direction
  of the chroma, shrunk towards 0 for nearly grey frames.
- ``motion``: mean |Y - Y_prev| on a 2x2-pooled luminance image, per 0.1 s (the difference is
  divided by the time since the previous analysed frame over 0.1 s, clamped to [0.02 s, 1 s]).
- ``cut``: a shot change between the previous frame and this one, at least ``min_shot_s`` after
  the previous cut. With ``h`` the L1 distance of 64-bin RGB histograms (halved, in [0, 1]) and
  ``b`` the mean change of 4x4 block luminances: ``h > 0.35 and b > 0.04`` (a clear cut), or a
  spike over the shot's recent frames (medians of up to 10): ``h > max(0.12, 4 median(h))
  and b > max(0.02, 2 median(b))`` (a cut between shots of similar palette). Motion is not measured across a cut
  (it is carried over from the previous frame), since the change there is the cut, not movement.
"""

from __future__ import annotations

from array import array
from collections import deque
from dataclasses import dataclass, field

import numpy as np

__all__ = ["FeatureTrack", "FrameFeatures"]

HISTOGRAM_THRESHOLD = 0.35
BLOCK_THRESHOLD = 0.04
SPIKE_HISTOGRAM = (0.12, 4.0)
SPIKE_BLOCK = (0.02, 2.0)
RECENT = 10


@dataclass
class FeatureTrack:
    """The features of every analysed frame so far (six doubles, 48 bytes, per frame)."""

    time_s: array = field(default_factory=lambda: array("d"))
    brightness: array = field(default_factory=lambda: array("d"))
    saturation: array = field(default_factory=lambda: array("d"))
    warmth: array = field(default_factory=lambda: array("d"))
    motion: array = field(default_factory=lambda: array("d"))
    cut_score: array = field(default_factory=lambda: array("d"))
    cuts_s: list[float] = field(default_factory=list)

    def arrays(self) -> dict[str, np.ndarray]:
        """Each per-frame feature as a float64 array."""
        names = ("time_s", "brightness", "saturation", "warmth", "motion", "cut_score")
        return {name: np.frombuffer(getattr(self, name), dtype=np.float64).copy() for name in names}


def _pool(image: np.ndarray, factor: int) -> np.ndarray:
    height = image.shape[0] // factor * factor
    width = image.shape[1] // factor * factor
    trimmed = image[:height, :width]
    return trimmed.reshape(height // factor, factor, width // factor, factor).mean(axis=(1, 3))


def _blocks(luma: np.ndarray, count: int = 4) -> np.ndarray:
    """Mean of each cell of a count x count grid (the last rows/columns that do not fit are left out)."""
    height, width = luma.shape[0] // count, luma.shape[1] // count
    if height == 0 or width == 0:
        return np.full((count, count), float(luma.mean()))
    return luma[: height * count, : width * count].reshape(count, height, count, width).mean(axis=(1, 3))


class FrameFeatures:
    """Turns successive frames into features; keeps only the previous frame's summaries."""

    def __init__(self, min_shot_s: float = 0.3) -> None:
        self.min_shot_s = min_shot_s
        self.track = FeatureTrack()
        self._previous_luma: np.ndarray | None = None
        self._previous_histogram: np.ndarray | None = None
        self._previous_blocks: np.ndarray | None = None
        self._previous_time = 0.0
        self._last_cut = -np.inf
        self._recent_histogram: deque[float] = deque(maxlen=RECENT)
        self._recent_block: deque[float] = deque(maxlen=RECENT)

    def _is_cut(self, time_s: float, histogram_change: float, block_change: float) -> bool:
        if time_s - self._last_cut < self.min_shot_s:
            return False
        if histogram_change > HISTOGRAM_THRESHOLD and block_change > BLOCK_THRESHOLD:
            return True
        if len(self._recent_histogram) < 3:
            return False
        floor_h, factor_h = SPIKE_HISTOGRAM
        floor_b, factor_b = SPIKE_BLOCK
        return (histogram_change > max(floor_h, factor_h * float(np.median(self._recent_histogram)))
                and block_change > max(floor_b, factor_b * float(np.median(self._recent_block))))

    def add(self, time_s: float, rgb: np.ndarray) -> bool:
        """Add one RGB uint8 frame; returns True when it starts a new shot."""
        red, green, blue = rgb[:, :, 0], rgb[:, :, 1], rgb[:, :, 2]
        count = red.size * 255.0
        highest = np.maximum(np.maximum(red, green), blue)
        chroma_sum = float(highest.sum(dtype=np.int64) - np.minimum(np.minimum(red, green), blue).sum(dtype=np.int64))
        mean_chroma = chroma_sum / count
        warmth = (float(red.sum(dtype=np.int64)) - float(blue.sum(dtype=np.int64))) / count / max(mean_chroma, 0.1)
        # integer luma (weights 77/150/29 of 256 = 0.301/0.586/0.113), then scaled to [0, 1]
        luma16 = red.astype(np.uint16) * 77 + green.astype(np.uint16) * 150 + blue.astype(np.uint16) * 29
        luma = luma16.astype(np.float32) * (1.0 / (255.0 * 256.0))
        codes = (red >> 6) * 16 + (green >> 6) * 4 + (blue >> 6)
        histogram = np.bincount(codes.ravel(), minlength=64) / codes.size
        pooled = _pool(luma, 2) if min(luma.shape) >= 4 else luma
        blocks = _blocks(luma)

        cut = False
        score = 0.0
        motion = 0.0
        if self._previous_luma is not None:
            score = 0.5 * float(np.abs(histogram - self._previous_histogram).sum())
            block_change = float(np.abs(blocks - self._previous_blocks).mean())
            cut = self._is_cut(time_s, score, block_change)
            interval = min(1.0, max(0.02, time_s - self._previous_time))
            if cut:
                motion = self.track.motion[-1]
                self._last_cut = time_s
                self.track.cuts_s.append(time_s)
                self._recent_histogram.clear()
                self._recent_block.clear()
            else:
                self._recent_histogram.append(score)
                self._recent_block.append(block_change)
                motion = float(np.abs(pooled - self._previous_luma).mean()) * (0.1 / interval)
        track = self.track
        track.time_s.append(time_s)
        track.brightness.append(float(luma16.sum(dtype=np.int64)) / (count * 256.0))
        track.saturation.append(chroma_sum / max(float(highest.sum(dtype=np.int64)), 1e-6))
        track.warmth.append(float(np.clip(warmth, -1.0, 1.0)))
        track.motion.append(motion)
        track.cut_score.append(score)
        self._previous_luma, self._previous_histogram, self._previous_blocks = pooled, histogram, blocks
        self._previous_time = time_s
        return cut

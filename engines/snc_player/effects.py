"""Output-stage processing for listening contexts: level, shelving/peaking EQ, compressor-limiter.

Block-based and stateful (filters keep their state, the compressor its envelope), so a
stream processed in blocks of any size gives the same result as one long block.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.signal import sosfilt

from core.errors import ParameterError

__all__ = ["EqBand", "DynamicsSpec", "Equalizer", "Dynamics", "Chain"]

_EQ_KINDS = ("lowshelf", "highshelf", "peak")


@dataclass(frozen=True)
class EqBand:
    """One RBJ-cookbook biquad: kind lowshelf/highshelf/peak, centre or corner in Hz, gain in dB, Q."""

    kind: str
    freq_hz: float
    gain_db: float
    q: float = 0.707

    def __post_init__(self) -> None:
        if self.kind not in _EQ_KINDS:
            raise ParameterError(f"EQ band kind {self.kind!r} is not one of {', '.join(_EQ_KINDS)}")
        if (
            not 10.0 <= self.freq_hz <= 20000.0
            or not -24.0 <= self.gain_db <= 24.0
            or not 0.1 <= self.q <= 10.0
        ):
            raise ParameterError(f"EQ band {self}: frequency 10..20000 Hz, gain -24..24 dB, Q 0.1..10")

    def sos(self, sample_rate: int) -> np.ndarray:
        a_gain = 10.0 ** (self.gain_db / 40.0)
        w0 = 2.0 * math.pi * self.freq_hz / sample_rate
        cos_w, alpha = math.cos(w0), math.sin(w0) / (2.0 * self.q)
        if self.kind == "peak":
            b = [1 + alpha * a_gain, -2 * cos_w, 1 - alpha * a_gain]
            a = [1 + alpha / a_gain, -2 * cos_w, 1 - alpha / a_gain]
        else:
            sign = 1.0 if self.kind == "lowshelf" else -1.0
            root = 2.0 * math.sqrt(a_gain) * alpha
            ap, am = a_gain + 1.0, a_gain - 1.0
            b = [
                a_gain * (ap - sign * am * cos_w + root),
                sign * 2 * a_gain * (am - sign * ap * cos_w),
                a_gain * (ap - sign * am * cos_w - root),
            ]
            a = [
                ap + sign * am * cos_w + root,
                -sign * 2 * (am + sign * ap * cos_w),
                ap + sign * am * cos_w - root,
            ]
        return np.array([[b[0] / a[0], b[1] / a[0], b[2] / a[0], 1.0, a[1] / a[0], a[2] / a[0]]])


@dataclass(frozen=True)
class DynamicsSpec:
    """A feed-forward compressor with a limiter ceiling: above ``threshold_db`` (RMS over
    ``window_ms``) the level rises 1/``ratio`` as fast; ``makeup_db`` is added; peaks are held
    under ``ceiling_db`` (1 ms attack, then a hard clip at the ceiling as the last resort)."""

    threshold_db: float = -24.0
    ratio: float = 3.0
    attack_ms: float = 10.0
    release_ms: float = 200.0
    makeup_db: float = 6.0
    ceiling_db: float = -1.0
    window_ms: float = 0.67

    def __post_init__(self) -> None:
        if not (
            -80.0 <= self.threshold_db <= 0.0
            and 1.0 <= self.ratio <= 50.0
            and 0.1 <= self.attack_ms <= 500.0
            and 1.0 <= self.release_ms <= 5000.0
            and -24.0 <= self.makeup_db <= 24.0
            and -40.0 <= self.ceiling_db <= 0.0
        ):
            raise ParameterError(
                f"dynamics {self}: threshold -80..0 dB, ratio 1..50, attack 0.1..500 ms, "
                "release 1..5000 ms, makeup -24..24 dB, ceiling -40..0 dB"
            )


class Equalizer:
    def __init__(self, bands: Sequence[EqBand], channels: int, sample_rate: int) -> None:
        self.sos = np.concatenate([b.sos(sample_rate) for b in bands]) if bands else None
        self.state = None if self.sos is None else np.zeros((self.sos.shape[0], 2, channels))

    def process(self, block: np.ndarray) -> np.ndarray:
        if self.sos is None:
            return block
        out, self.state = sosfilt(self.sos, block, axis=0, zi=self.state)
        return out


class Dynamics:
    """Linked-channel compressor-limiter on sub-blocks of ``window_ms``; the gain is
    interpolated linearly between sub-blocks so it never steps."""

    def __init__(self, spec: DynamicsSpec, sample_rate: int) -> None:
        self.spec = spec
        self.step = max(8, int(round(spec.window_ms * sample_rate / 1000.0)))
        per_s = sample_rate / self.step
        self.attack = 1.0 - math.exp(-1.0 / (spec.attack_ms / 1000.0 * per_s))
        self.release = 1.0 - math.exp(-1.0 / (spec.release_ms / 1000.0 * per_s))
        self.peak_attack = 1.0 - math.exp(-1.0 / (0.001 * per_s))
        self.envelope_db = -120.0
        self.limit_db = 0.0
        self.gain_db = spec.makeup_db
        self.pending = np.zeros((0, 0))
        self.ceiling = 10.0 ** (spec.ceiling_db / 20.0)

    def process(self, block: np.ndarray) -> np.ndarray:
        frames = block.shape[0]
        gains = np.empty(frames)
        s = self.spec
        for first in range(0, frames, self.step):
            part = block[first : first + self.step]
            rms_db = 10.0 * math.log10(float(np.mean(np.square(part))) + 1e-12)
            rate = self.attack if rms_db > self.envelope_db else self.release
            self.envelope_db += rate * (rms_db - self.envelope_db)
            over = self.envelope_db - s.threshold_db
            compressed = s.makeup_db - (over * (1.0 - 1.0 / s.ratio) if over > 0 else 0.0)
            peak_db = 20.0 * math.log10(float(np.max(np.abs(part))) + 1e-12) + compressed
            needed = min(0.0, s.ceiling_db - peak_db)
            rate = self.peak_attack if needed < self.limit_db else self.release
            self.limit_db += rate * (needed - self.limit_db)
            target = compressed + self.limit_db
            n = part.shape[0]
            gains[first : first + n] = self.gain_db + (target - self.gain_db) * np.arange(1, n + 1) / n
            self.gain_db = target
        out = block * (10.0 ** (gains / 20.0))[:, None]
        return np.clip(out, -self.ceiling, self.ceiling)


class Chain:
    """Level, then EQ, then dynamics: the output stage of one context."""

    def __init__(
        self,
        level_db: float,
        bands: Sequence[EqBand],
        dynamics: DynamicsSpec | None,
        channels: int,
        sample_rate: int,
    ) -> None:
        self.level = 10.0 ** (level_db / 20.0)
        self.eq = Equalizer(bands, channels, sample_rate)
        self.dynamics = Dynamics(dynamics, sample_rate) if dynamics else None
        self.is_identity = level_db == 0.0 and not bands and dynamics is None

    def process(self, block: np.ndarray) -> np.ndarray:
        if self.is_identity:
            return block
        out = self.eq.process(block.astype(np.float64) * self.level)
        if self.dynamics is not None:
            out = self.dynamics.process(out)
        return out.astype(np.float32)

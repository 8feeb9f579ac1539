"""Video -> valence-arousal curve: decode, extract features or run a sensor, map, smooth.

Streaming: frames are decoded, summarised and dropped one at a time (a learned sensor holds at
most one batch of 16). What grows with the video's length is the per-frame summaries, 48 bytes
per analysed frame plus 16 per audio bin (4.6 MB for two hours at 10 Hz), and, at the end, the
mapping's arrays (about 20 doubles per output sample, 12 MB for two hours at 10 Hz); nothing
grows with resolution.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .affect import builtin_curves, smoothed_sensor_curves
from .curve import VACurve
from .decode import AudioEnergy, DecodeStats, VideoInfo, decode_samples, probe
from .errors import VideoError
from .features import FrameFeatures
from .sensor_onnx import OnnxSensor

__all__ = ["Analysis", "analyze_video"]

MAX_RATE_HZ = 100.0


@dataclass
class Analysis:
    """The curve and what it was computed from."""

    curve: VACurve
    cuts_s: list[float]
    info: VideoInfo
    frames: int
    elapsed_s: float
    sensor: str
    used_audio: bool
    notes: list[str] = field(default_factory=list)

    @property
    def speed(self) -> float:
        """Seconds of video analysed per second of wall time."""
        return self.curve.duration_s / max(self.elapsed_s, 1e-9)


def _check(rate_hz: float, smooth_s: float) -> None:
    if not (isinstance(rate_hz, (int, float)) and math.isfinite(rate_hz) and 0 < rate_hz <= MAX_RATE_HZ):
        raise VideoError(f"--rate must be between 0 and {MAX_RATE_HZ:g} samples per second, got {rate_hz}")
    if not (math.isfinite(smooth_s) and 0 <= smooth_s <= 60):
        raise VideoError(f"--smooth must be between 0 and 60 seconds, got {smooth_s}")


def analyze_video(path: str | os.PathLike[str], rate_hz: float = 10.0, smooth_s: float = 3.0,
                  sensor: OnnxSensor | None = None, width: int = 160,
                  progress: Callable[[float], None] | None = None) -> Analysis:
    """Analyse a video into a VA curve sampled every ``1/rate_hz`` s (see affect.py for the maps)."""
    _check(rate_hz, smooth_s)
    source = Path(path)
    info = probe(source)
    started = time.perf_counter()
    features = FrameFeatures()
    audio = AudioEnergy(rate_hz) if sensor is None and info.has_audio else None
    pending_frames: list[np.ndarray] = []
    pending_times: list[float] = []
    sensor_times: list[float] = []
    sensor_values: list[np.ndarray] = []

    def flush() -> None:
        if pending_frames:
            sensor_values.append(sensor(pending_frames))
            sensor_times.extend(pending_times)
            pending_frames.clear()
            pending_times.clear()

    size = sensor.size if sensor is not None else None
    stats = DecodeStats()
    for frame in decode_samples(source, rate_hz, width=width, audio=audio, size=size, stats=stats):
        features.add(frame.time_s, frame.rgb)
        if sensor is not None:
            pending_frames.append(frame.rgb)
            pending_times.append(frame.time_s)
            if len(pending_frames) >= sensor.batch:
                flush()
        if progress is not None and info.duration_s:
            progress(min(1.0, frame.time_s / info.duration_s))
    track = features.track
    if len(track.time_s) < 2:
        raise VideoError(f"{source}: too short to analyse ({len(track.time_s)} frame(s) at {rate_hz:g} Hz); "
                         "it needs at least two analysed frames")
    notes = []
    if stats.damaged:
        notes.append(f"{stats.damaged} damaged video packet(s) of {stats.packets} skipped")
    if sensor is None:
        dbfs = audio.dbfs() if audio is not None and audio.sums else None
        if info.has_audio and dbfs is None:
            notes.append("the audio track held no decodable samples; arousal uses picture only")
        curve = builtin_curves(track.arrays(), track.cuts_s, rate_hz, dbfs, smooth_s)
        name = "builtin"
    else:
        flush()
        curve = smoothed_sensor_curves(np.asarray(sensor_times), np.concatenate(sensor_values),
                                       track.cuts_s, rate_hz, smooth_s)
        name = f"onnx:{sensor.path}"
        if sensor.clipped:
            notes.append(f"the sensor gave values outside [-1, 1] on {sensor.clipped} of {sensor.frames} "
                         "frames (clipped)")
    return Analysis(curve, list(track.cuts_s), info, len(track.time_s), time.perf_counter() - started, name,
                    audio is not None and bool(audio.sums), notes)

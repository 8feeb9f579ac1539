"""Synthetic videos with known structure, for tests, benchmarks and demos (PyAV + numpy).

A video is a list of shots. Each shot has a palette colour, a brightness, an amount of motion
(a textured background scrolling and bright blocks moving at ``speed`` frame-widths per second)
and, when the video has audio, a loudness. Cuts fall exactly at shot boundaries, so a test knows
where the cuts are and which way valence and arousal should move.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from core.atomic import atomic_output

__all__ = ["Shot", "shot_times", "write_video"]


@dataclass(frozen=True)
class Shot:
    """One shot: ``colour`` is RGB in [0, 1]; ``speed`` in frame widths per second."""

    duration_s: float
    colour: tuple[float, float, float] = (0.5, 0.5, 0.5)
    brightness: float = 0.5
    speed: float = 0.0
    texture: float = 0.25
    loudness_dbfs: float = -60.0
    seed: int = 0
    grain: float = 0.0


def shot_times(shots: Sequence[Shot]) -> list[float]:
    """Times of the cuts (starts of every shot after the first)."""
    return [float(t) for t in np.cumsum([shot.duration_s for shot in shots])[:-1]]


def _texture(height: int, width: int, seed: int, grain: float = 0.0) -> np.ndarray:
    """Blocky noise (8x8 cells), plus per-pixel detail of relative amplitude ``grain``."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((max(2, -(-height // 8)), max(2, -(-width // 8))))
    pattern = np.kron(coarse, np.ones((8, 8)))[:height, :width] - 0.5
    if grain > 0:
        pattern = pattern + grain * (rng.random((height, width)) - 0.5)
    return pattern.astype(np.float32)


def _frame(shot: Shot, texture: np.ndarray, local_s: float, width: int, height: int) -> np.ndarray:
    shift = round(shot.speed * width * local_s)
    pattern = np.roll(texture, shift, axis=1) if shift else texture
    colour = np.asarray(shot.colour, dtype=np.float32) * shot.brightness * 2.0
    image = colour[None, None, :] * (1.0 + shot.texture * 2.0 * pattern[:, :, None])
    if shot.speed > 0:  # blocks moving across the frame, each at its own height and phase
        size = max(2, height // 6)
        for index in range(3):
            x = int((shot.speed * width * local_s * (1 + 0.5 * index) + index * width / 3) % width)
            y = (index * height) // 3 + size // 2
            image[y : y + size, x : x + size, :] = np.minimum(1.0, colour * 1.6 + 0.2)
    return (np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)


def _tone(shots: Sequence[Shot], sample_rate: int) -> np.ndarray:
    pieces = []
    rng = np.random.default_rng(1)
    for shot in shots:
        count = round(shot.duration_s * sample_rate)
        t = np.arange(count) / sample_rate
        amplitude = 10 ** (shot.loudness_dbfs / 20)  # RMS of the unit-RMS signal below
        signal = np.sin(2 * np.pi * 220 * t) * 0.7 + rng.standard_normal(count) * 0.3
        pieces.append((amplitude * signal / np.sqrt(0.7**2 / 2 + 0.3**2)).astype(np.float32))
    return np.clip(np.concatenate(pieces), -1.0, 1.0)


def write_video(path: str | os.PathLike[str], shots: Sequence[Shot], width: int = 160, height: int = 90,
                fps: int = 25, audio: bool = False, codec: str = "libx264", sample_rate: int = 16000,
                preset: str = "ultrafast", crf: int = 28, threads: int = 1) -> Path:
    """Encode the shots to ``path`` (MP4/MKV by extension), atomically; returns the path.

    ``preset``/``crf``/``threads`` are libx264's (the default is fast to encode; benchmarks use
    x264's default "medium" preset, with B-frames and CABAC, like common real-world files)."""
    import av

    target = Path(path)
    with atomic_output(target) as temporary:
        container = av.open(str(temporary), "w", format=target.suffix.lstrip(".").replace("mkv", "matroska"))
        try:
            video = container.add_stream(codec, rate=fps)
            video.width, video.height, video.pix_fmt = width, height, "yuv420p"
            if codec == "libx264":
                video.options = {"preset": preset, "crf": str(crf), "threads": str(threads)}
            sound = container.add_stream("aac", rate=sample_rate, layout="mono") if audio else None
            for index, shot in enumerate(shots):
                texture = _texture(height, width, shot.seed + 7 * index, shot.grain)
                for number in range(round(shot.duration_s * fps)):
                    image = _frame(shot, texture, number / fps, width, height)
                    frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                    for packet in video.encode(frame):
                        container.mux(packet)
            for packet in video.encode():
                container.mux(packet)
            if sound is not None:
                samples = _tone(shots, sample_rate)
                block = 1024
                for start in range(0, len(samples), block):
                    chunk = samples[start : start + block][None, :]
                    frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
                    frame.sample_rate = sample_rate
                    frame.pts = start
                    frame.time_base = Fraction(1, sample_rate)
                    for packet in sound.encode(frame):
                        container.mux(packet)
                for packet in sound.encode():
                    container.mux(packet)
        finally:
            container.close()
    return target

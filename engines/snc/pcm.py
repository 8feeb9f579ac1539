"""PCM helpers shared by the SNC encoder and reader: block-wise input, fixed-size blocks from
a decoder's variable-size frames, and the integer/float conventions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf

from bridge.errors import CodecError

__all__ = ["INT_SCALE", "InputTrack", "Rechunker"]

INT_SCALE = {"s16": 32768.0, "s24": 8388608.0}


class InputTrack:
    """A WAV/FLAC/AIFF input read block by block, with the conversions users expect: a mono
    stem under a multichannel master is copied to every channel; a stem shorter than the master
    is padded with silence."""

    def __init__(self, path: Path, name: str) -> None:
        self.path = Path(path)
        self.name = name
        try:
            self.info = sf.info(str(self.path))
        except (RuntimeError, sf.LibsndfileError) as exc:
            raise CodecError(f"{name}: cannot read {self.path}: {exc}") from None
        self.sample_rate = int(self.info.samplerate)
        self.channels = int(self.info.channels)
        self.frames = int(self.info.frames)
        subtype = self.info.subtype
        self.sample_format = {"PCM_16": "s16", "PCM_24": "s24"}.get(subtype, "float")

    def blocks(self, block_frames: int, channels: int, total_frames: int, integer: bool,
               float_type: type = np.float64) -> Iterator[np.ndarray]:
        """Blocks of shape (frames, channels); int32 samples when ``integer`` else ``float_type``."""
        dtype = "int32" if integer else np.dtype(float_type).name
        # libsndfile left-aligns integer PCM in int32: shift back to the file's own width.
        shift = 16 if self.sample_format == "s16" else 8
        with sf.SoundFile(str(self.path)) as handle:
            done = 0
            while done < total_frames:
                want = min(block_frames, total_frames - done)
                data = handle.read(want, dtype=dtype, always_2d=True)
                if integer:
                    data = data >> shift
                if data.shape[0] < want:
                    data = np.concatenate([data, np.zeros((want - data.shape[0], data.shape[1]), data.dtype)])
                if data.shape[1] == 1 and channels > 1:
                    data = np.repeat(data, channels, axis=1)
                done += want
                yield data


class Rechunker:
    """Turns a stream of (frames, channels) arrays of any size into fixed-size blocks."""

    def __init__(self, channels: int, dtype: np.dtype) -> None:
        self.parts: list[np.ndarray] = []
        self.size = 0
        self.channels = channels
        self.dtype = dtype

    def push(self, data: np.ndarray) -> None:
        if data.size:
            self.parts.append(data)
            self.size += data.shape[0]

    def peek(self, frames: int) -> np.ndarray:
        """The next ``frames`` frames without removing them (zeros past what is held)."""
        if frames <= 0:
            return np.zeros((0, self.channels), self.dtype)
        if self.parts and self.parts[0].shape[0] >= frames:
            return self.parts[0][:frames].copy()
        joined = np.concatenate(self.parts) if self.parts else np.zeros((0, self.channels), self.dtype)
        self.parts = [joined] if joined.size else []
        out = joined[:frames]
        if out.shape[0] < frames:
            out = np.concatenate([out, np.zeros((frames - out.shape[0], self.channels), self.dtype)])
        return out.copy()

    def pop(self, frames: int, pad: bool = False) -> np.ndarray | None:
        if self.size < frames and not pad:
            return None
        taken, count = [], 0
        while self.parts and count < frames:  # copy only what the block needs; the rest stays a view
            part = self.parts.pop(0)
            want = frames - count
            if part.shape[0] > want:
                self.parts.insert(0, part[want:])
                part = part[:want]
            taken.append(part)
            count += part.shape[0]
        self.size -= count
        if count < frames:
            taken.append(np.zeros((frames - count, self.channels), self.dtype))
        return np.concatenate(taken) if len(taken) > 1 else np.ascontiguousarray(taken[0])

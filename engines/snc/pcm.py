"""PCM helpers shared by the SNC encoder and reader: block-wise input and the integer/float
conventions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf

from core.errors import CodecError

__all__ = ["INT_SCALE", "InputTrack"]

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

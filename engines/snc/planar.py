"""Planar (channels, frames) buffers for the SNC decoders: decoded frames are copied plane by
plane into one preallocated array per track, and blocks are read out as views, so a block
costs no rechunking, no transposition and no per-frame concatenation."""

from __future__ import annotations

import av
import numpy as np

__all__ = ["TrackBuffer", "frame_planes"]


def frame_planes(frame: av.AudioFrame, channels: int, integer: bool) -> list[np.ndarray] | np.ndarray:
    """The samples of a decoded frame, planar: a list of 1-D arrays (one per channel) for
    planar float frames (Opus), else a (channels, samples) array. ``integer``: 24-bit values
    stored left-aligned in s32 (SNC's FLAC tracks) come back as int64 in their own scale."""
    samples = frame.samples
    if frame.format.is_planar and frame.format.name == "fltp" and not integer:
        return [np.frombuffer(plane, np.float32, samples) for plane in frame.planes[:channels]]
    data = frame.to_ndarray()
    if frame.format.is_planar:
        data = data.reshape(channels, samples)
    else:
        data = data.reshape(samples, channels).T
    return (data.astype(np.int64) >> 8) if integer else data


class TrackBuffer:
    """The frames of one track from ``begin`` on, planar. ``push`` appends decoded samples,
    ``view(n)`` gives the next ``n`` frames without copying, ``advance(n)`` drops them. Space
    is reused: memory stays at a few blocks whatever the length of the file."""

    def __init__(self, channels: int, dtype: type, lead: int = 0, capacity: int = 1 << 17) -> None:
        self.channels = channels
        self.data = np.zeros((channels, max(capacity, 2 * lead + 1)), dtype)
        self.begin = 0
        self.fill = lead  # ``lead`` frames of silence first (the filter's history at the start)
        self._layout: str | None = None  # the decoder's sample layout, known at the first frame

    @property
    def size(self) -> int:
        return self.fill - self.begin

    def _room(self, frames: int) -> None:
        if self.fill + frames <= self.data.shape[1]:
            return
        kept = self.fill - self.begin
        if kept + frames > self.data.shape[1] // 2:
            grown = np.zeros((self.channels, 2 * (kept + frames)), self.data.dtype)
            grown[:, :kept] = self.data[:, self.begin:self.fill]
            self.data = grown
        else:
            self.data[:, :kept] = self.data[:, self.begin:self.fill].copy() if kept > self.begin else \
                self.data[:, self.begin:self.fill]
        self.begin, self.fill = 0, kept

    def push(self, planes: list[np.ndarray] | np.ndarray, skip: int = 0) -> None:
        """Append planar samples (see ``frame_planes``), leaving out the first ``skip``."""
        frames = (planes[0].shape[0] if isinstance(planes, list) else planes.shape[1]) - skip
        if frames <= 0:
            return
        self._room(frames)
        end = self.fill + frames
        if isinstance(planes, list):
            for channel, plane in enumerate(planes):
                self.data[channel, self.fill:end] = plane[skip:]
        else:
            self.data[:, self.fill:end] = planes[:, skip:]
        self.fill = end

    def push_frame(self, frame: av.AudioFrame, skip: int, integer: bool) -> None:
        """Append a decoded frame, leaving out its first ``skip`` samples. The decoders' usual
        layouts, planar float32 (Opus) and packed s32 (SNC's 24-bit FLAC), are read straight
        from the frame's buffer; anything else goes through ``frame_planes``."""
        samples = frame.samples
        if samples <= skip:
            return
        if self._layout is None:
            name = frame.format.name
            self._layout = "fltp" if name == "fltp" and not integer else "s32" if name == "s32" and integer else "other"
        if self._layout == "other":
            self.push(frame_planes(frame, self.channels, integer), skip)
            return
        frames = samples - skip
        if self.fill + frames > self.data.shape[1]:
            self._room(frames)
        end = self.fill + frames
        data = self.data
        if self._layout == "fltp":
            for channel, plane in enumerate(frame.planes[:self.channels]):
                data[channel, self.fill:end] = np.frombuffer(plane, np.float32, samples)[skip:]
        else:
            packed = np.frombuffer(frame.planes[0], np.int32, samples * self.channels).reshape(samples, self.channels)
            data[:, self.fill:end] = packed[skip:].T
            data[:, self.fill:end] >>= 8
        self.fill = end

    def pad(self, frames: int) -> None:
        """Append ``frames`` frames of silence."""
        if frames > 0:
            self._room(frames)
            self.data[:, self.fill:self.fill + frames] = 0
            self.fill += frames

    def view(self, frames: int, offset: int = 0) -> np.ndarray:
        """Frames [begin + offset, begin + offset + frames) as a (channels, frames) view."""
        return self.data[:, self.begin + offset:self.begin + offset + frames]

    def advance(self, frames: int) -> None:
        self.begin += frames

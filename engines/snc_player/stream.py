"""Progressive decoding for playback: a thread decodes ahead into a bounded queue, the audio
callback takes buffer-sized slices without ever waiting (an empty queue is an underrun, counted,
played as silence). Seeking restarts the decoder; loops decode their region again and again,
so the loop point is gapless. Memory is bounded by ``queue_blocks * block_frames`` frames."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import numpy as np

from core.errors import CodecError
from engines.snc.reader import SncReader

__all__ = ["Slicer", "StemStream"]

_END = "end"


class Slicer:
    """Cuts an iterator of decoded blocks into slices of any size."""

    def __init__(self, blocks: Iterator[dict[str, np.ndarray]]) -> None:
        self.blocks = blocks
        self.current: dict[str, np.ndarray] | None = None
        self.offset = 0

    def take(self, frames: int) -> dict[str, np.ndarray] | None:
        """Up to ``frames`` frames (fewer at the end), None when nothing is left."""
        parts: list[dict[str, np.ndarray]] = []
        need = frames
        while need > 0:
            if self.current is None or self.offset >= next(iter(self.current.values())).shape[0]:
                self.current = next(self.blocks, None)
                self.offset = 0
                if self.current is None:
                    break
            length = next(iter(self.current.values())).shape[0]
            n = min(need, length - self.offset)
            parts.append({k: v[self.offset : self.offset + n] for k, v in self.current.items()})
            self.offset += n
            need -= n
        if not parts:
            return None
        if len(parts) == 1:
            return parts[0]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


class StemStream:
    """Decodes ``reader`` ahead of the audio thread. ``read(frames)`` never blocks."""

    def __init__(
        self, reader: SncReader, buffer_frames: int, block_frames: int = 4096, queue_blocks: int = 12
    ) -> None:
        self.reader = reader
        self.rate = reader.manifest.sample_rate
        self.buffer_frames = buffer_frames
        self.block_frames = block_frames
        self.queue_blocks = queue_blocks
        self.loop: tuple[float, float] | None = None
        self.underruns = 0
        self.error: str | None = None
        self.ended = False
        self._queue: queue.Queue = queue.Queue(maxsize=queue_blocks)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._pending: list[tuple[int, dict[str, np.ndarray]]] = []
        self._lock = threading.Lock()
        self._delivered = False  # underruns count only once a (re)start has delivered audio
        self.position_frames = 0

    def start(self, start_s: float = 0.0) -> None:
        """(Re)start decoding at ``start_s``; what was decoded before is dropped. Never waits
        for the previous decoder (it sees its stop flag and ends on its own)."""
        start_s = min(max(0.0, start_s), max(0.0, self.reader.manifest.duration_s - 1.0 / self.rate))
        stop, out = threading.Event(), queue.Queue(maxsize=self.queue_blocks)
        thread = threading.Thread(
            target=self._decode, args=(start_s, stop, out), name="snc-decode", daemon=True
        )
        with self._lock:
            self._stop.set()
            self._stop, self._queue, self._thread = stop, out, thread
            self._pending = []
            self.ended = False
            self._delivered = False
            self.position_frames = int(round(start_s * self.rate))
        thread.start()

    def stop(self) -> None:
        with self._lock:
            self._stop.set()
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=5)

    def _segments(self, start_s: float) -> Iterator[tuple[float, float | None]]:
        loop = self.loop
        if loop is None or start_s >= loop[1]:
            yield start_s, None
            return
        yield start_s, loop[1] - start_s
        while True:
            yield loop[0], loop[1] - loop[0]

    def _decode(self, start_s: float, stop: threading.Event, out: queue.Queue) -> None:
        try:
            for seg_start, duration in self._segments(start_s):
                frame = int(round(seg_start * self.rate))
                for block in self.reader.blocks(self.block_frames, seg_start, duration, cancel=stop):
                    while not stop.is_set():
                        try:
                            out.put((frame, block), timeout=0.05)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
                    frame += block["master"].shape[0]
                if stop.is_set():  # (the reader saw it first and ended early)
                    return
        except CodecError as exc:
            self.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - the decoder thread's boundary: report, end the stream
            self.error = f"decoder failed: {type(exc).__name__}: {exc}"
        while not stop.is_set():
            try:
                out.put((-1, _END), timeout=0.05)
                return
            except queue.Full:
                continue

    def skip_to(self, frame: int) -> bool:
        """Drop the decoded audio before ``frame`` without waiting, so the next ``read`` starts
        there; False while the decoder has not reached it yet (what was dropped stays dropped:
        ask again). A frame at or before the next one changes nothing. Not for a looping stream,
        whose frames wrap around."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            while True:
                if self._pending:
                    start, block = self._pending[0]
                    n = block["master"].shape[0]
                    if start + n <= frame:
                        self._pending.pop(0)
                        self.position_frames = start + n
                        continue
                    if start < frame:
                        cut = frame - start
                        self._pending[0] = (frame, {k: v[cut:] for k, v in block.items()})
                        self.position_frames = frame
                    return True
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    return self.ended
                if item[1] is _END:
                    self.ended = True
                    return True
                self._pending.append(item)
        finally:
            self._lock.release()

    def read(self, frames: int) -> tuple[int, dict[str, np.ndarray]] | None:
        """(first_frame, block) of exactly ``frames`` frames (zero-padded at the end), or None
        when the decoder is behind (underrun) or the stream has ended."""
        if not self._lock.acquire(blocking=False):
            self.underruns += 1
            return None
        try:
            return self._read(frames)
        finally:
            self._lock.release()

    def _read(self, frames: int) -> tuple[int, dict[str, np.ndarray]] | None:
        have = sum(b["master"].shape[0] for _, b in self._pending)
        while have < frames:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                if not self.ended:
                    self.underruns += int(self._delivered)
                    return None
                break
            if item[1] is _END:
                self.ended = True
                break
            self._pending.append(item)
            have += item[1]["master"].shape[0]
        if have == 0:
            return None
        taken: list[dict[str, np.ndarray]] = []
        first = self._pending[0][0]
        need = frames
        while need > 0 and self._pending:
            start, block = self._pending[0]
            n = block["master"].shape[0]
            if n <= need:
                taken.append(block)
                self._pending.pop(0)
                need -= n
            else:
                taken.append({k: v[:need] for k, v in block.items()})
                self._pending[0] = (start + need, {k: v[need:] for k, v in block.items()})
                need = 0
        out = {k: np.concatenate([t[k] for t in taken]) if len(taken) > 1 else taken[0][k] for k in taken[0]}
        if need > 0:
            out = {k: np.concatenate([v, np.zeros((need, v.shape[1]), v.dtype)]) for k, v in out.items()}
        self.position_frames = first + frames
        self._delivered = True
        return first, out

"""The output side: note tracking for note safety, and the scheduler for timed output.

Every note-on the bridge sends is recorded with its port, channel and owner (the engine slot);
releasing a slot, a port or everything sends note-offs for exactly those notes.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import mido

from bridge.ports.base import OutputPort
from core.errors import PortError

__all__ = ["NoteTracker", "Scheduler", "all_notes_off"]

log = logging.getLogger(__name__)


def all_notes_off() -> list[mido.Message]:
    """All Notes Off (CC 123) and sustain pedal up (CC 64) on all 16 channels."""
    messages = []
    for channel in range(16):
        messages.append(mido.Message("control_change", channel=channel, control=64, value=0))
        messages.append(mido.Message("control_change", channel=channel, control=123, value=0))
    return messages


class NoteTracker:
    """Sends messages to ports and remembers which notes are sounding and who owns them."""

    def __init__(self) -> None:
        # Held by the engine host across its check that a slot's output is still current and
        # the send, so that a release can never fall between the two (``bridge.host``).
        self.lock = threading.RLock()
        # (port, channel, note) -> [owner, how many note-ons are stacked on it]
        self._sounding: dict[tuple[OutputPort, int, int], list] = {}
        self.sent = 0
        self.send_errors = 0
        self.stacked = 0

    def emit(self, port: OutputPort, message: mido.Message, owner: str) -> None:
        """Send ``message`` on ``port`` for ``owner``, keeping the sounding-note table exact."""
        self.emit_bytes(port, message.bytes(), owner)

    def emit_bytes(self, port: OutputPort, data: list[int], owner: str) -> None:
        """``emit`` for the bytes of a validated message (the engines' hot path)."""
        kind = data[0] & 0xF0
        with self.lock:
            if kind == 0x90 and data[2] > 0:
                key = (port, data[0] & 0x0F, data[1])
                entry = self._sounding.get(key)
                if entry is None:
                    self._sounding[key] = [owner, 1]
                else:
                    # Passed on as sent; released later with as many note-offs as note-ons.
                    entry[0] = owner
                    entry[1] += 1
                    self.stacked += 1
            elif kind in (0x80, 0x90) and data[0] < 0xF0:
                key = (port, data[0] & 0x0F, data[1])
                entry = self._sounding.get(key)
                if entry is not None:
                    entry[1] -= 1
                    if entry[1] <= 0:
                        del self._sounding[key]
            self._send(port, data)

    def _send(self, port: OutputPort, data: list[int]) -> None:
        try:
            port.send_bytes(data)
            self.sent += 1
        except (PortError, OSError, RuntimeError) as exc:
            self.send_errors += 1
            log.warning("could not send on %s: %s", port.name, exc)

    def release(self, owner: str | None = None, port: OutputPort | None = None) -> int:
        """Note-offs for the notes of ``owner`` (and/or on ``port``); None matches all.
        Returns how many notes were released."""
        with self.lock:
            keys = [k for k, (who, _) in self._sounding.items()
                    if (owner is None or who == owner) and (port is None or k[0] is port)]
            for key in keys:
                _, stacked = self._sounding.pop(key)
                out_port, channel, note = key
                if not out_port.closed:
                    for _ in range(stacked):
                        self._send(out_port, [0x80 | channel, note, 0])
            return len(keys)

    def sounding_on(self, port: OutputPort) -> list[tuple[int, int]]:
        """(channel, note) of every note sounding on ``port``."""
        with self.lock:
            return [(c, n) for (p, c, n) in self._sounding if p is port]

    def forget_port(self, port: OutputPort) -> list[tuple[int, int]]:
        """The port is gone: its notes cannot be released there now. Returns their
        (channel, note) pairs so they can be released if the port comes back."""
        with self.lock:
            keys = [k for k in self._sounding if k[0] is port]
            for key in keys:
                del self._sounding[key]
            return [(channel, note) for _, channel, note in keys]

    def sounding(self, owner: str | None = None) -> list[tuple[str, int, int]]:
        with self.lock:
            return [(p.name, c, n) for (p, c, n), (who, _) in self._sounding.items() if owner in (None, who)]


@dataclass(order=True)
class _Job:
    due_s: float
    seq: int
    action: Callable[[], None] = field(compare=False)
    owner: str | None = field(compare=False, default=None)
    cancelled: bool = field(compare=False, default=False)


class Scheduler:
    """One thread that runs actions at their due time on the bridge clock (perf_counter).

    Nothing else in the bridge waits for time: engines, the router and the OSC server hand
    timed work to this thread. Lateness is measured for every job."""

    def __init__(self) -> None:
        self._heap: list[_Job] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._running = False
        self._thread: threading.Thread | None = None
        self.ran = 0
        self.max_late_s = 0.0
        self.errors = 0
        self.high_water = 0  # most jobs ever waiting (cancelled ones included until due)

    def start(self) -> None:
        self._running = True
        self._thread = threading.Thread(target=self._run, name="scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._running = False
            self._heap.clear()
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def at(self, due_s: float, action: Callable[[], None], owner: str | None = None) -> _Job:
        job = _Job(due_s, next(self._seq), action, owner)
        with self._cond:
            heapq.heappush(self._heap, job)
            if len(self._heap) > self.high_water:
                self.high_water = len(self._heap)
            if self._heap[0] is job:
                self._cond.notify()
        return job

    def cancel_owner(self, owner: str) -> int:
        """Cancel every pending job of ``owner``; returns how many."""
        with self._cond:
            count = 0
            for job in self._heap:
                if job.owner == owner and not job.cancelled:
                    job.cancelled = True
                    count += 1
            return count

    def pending(self, owner: str | None = None) -> int:
        with self._cond:
            return sum(1 for j in self._heap if not j.cancelled and owner in (None, j.owner))

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._running and (not self._heap or self._heap[0].due_s > time.perf_counter()):
                    timeout = self._heap[0].due_s - time.perf_counter() if self._heap else None
                    self._cond.wait(timeout)
                if not self._running:
                    return
                job = heapq.heappop(self._heap)
            if job.cancelled:
                continue
            late = time.perf_counter() - job.due_s
            self.max_late_s = max(self.max_late_s, late)
            try:
                job.action()
                self.ran += 1
            except Exception:  # one failing job must not stop every timed note-off
                self.errors += 1
                log.exception("scheduled action of %s failed", job.owner or "the bridge")

"""Native libraries' stderr, read by the bridge so that a slow reader never stops the music.

rtmidi writes a line to C++'s ``std::cerr`` for every message its input queue drops ("message
queue limit reached"), from JACK's real-time thread. Where stderr is a pipe that is read late
or not at all (a parent that reads only at the end, a paused terminal, a full service-manager
buffer) that write blocks, and with it JACK's input: the bridge stops hearing the player and
never sees the note-offs. ``NativeStderr`` points file descriptor 2 at a pipe whose writing end
never blocks (a native line that does not fit is lost, not waited for) and drains it on a
thread of its own: rtmidi's drops are counted (``status`` shows them) and reported at most once
a second; every other line goes on to the real stderr. Python's ``sys.stderr`` (logging,
faulthandler) writes to the real stderr directly.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import Counter

__all__ = ["NativeStderr", "QUEUE_FULL_MARK", "REPORT_INTERVAL_S"]

log = logging.getLogger("scorebridge")

# What rtmidi prints when its input queue drops a message (every API: "MidiInJack: message
# queue limit reached!!", "MidiInAlsa: ...").
QUEUE_FULL_MARK = b"message queue limit reached"
# The drops are summed into one log line at most this often.
REPORT_INTERVAL_S = 1.0
_CHUNK = 65536


class NativeStderr:
    """Install with ``start()`` in the serving process only (it changes process-wide file
    descriptors); ``stop()`` puts them back."""

    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()
        self._real_fd: int | None = None
        self._read_fd: int | None = None
        self._saved_stderr = sys.stderr
        self._thread: threading.Thread | None = None
        self._reported = 0
        self._last_report_s = 0.0

    def start(self) -> None:
        sys.stderr.flush()
        self._real_fd = os.dup(2)
        self._read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        os.dup2(write_fd, 2)
        os.close(write_fd)
        real = open(self._real_fd, "w", buffering=1, encoding=getattr(self._saved_stderr, "encoding", None) or "utf-8",
                    errors="backslashreplace", closefd=False)
        self._repoint(self._saved_stderr, real)
        sys.stderr = real
        self._thread = threading.Thread(target=self._drain, name="native-stderr", daemon=True)
        self._thread.start()

    @staticmethod
    def _repoint(old: object, new: object) -> None:
        """Logging handlers made before ``start`` write to the real stderr too."""
        for handler in logging.getLogger().handlers + log.handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is old:
                handler.setStream(new)

    def _drain(self) -> None:
        pending = b""
        while True:
            try:
                chunk = os.read(self._read_fd, _CHUNK)
            except OSError:
                return
            if not chunk:
                return  # every writing end is closed: stopped
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            if len(pending) > _CHUNK:  # a line without an end: pass it on as it is
                lines.append(pending)
                pending = b""
            passed = []
            for line in lines:
                if QUEUE_FULL_MARK in line:
                    self.counters["rtmidi_queue_full"] += 1
                elif line.strip():
                    passed.append(line)
            if passed:
                self._write(b"\n".join(passed) + b"\n")
            self._report()

    def _write(self, data: bytes) -> None:
        try:
            os.write(self._real_fd, data)
        except OSError:
            self.counters["lines_lost"] += data.count(b"\n")

    def _report(self) -> None:
        now = time.monotonic()
        dropped = self.counters["rtmidi_queue_full"]
        if dropped > self._reported and now - self._last_report_s >= REPORT_INTERVAL_S:
            log.warning("rtmidi's input queue was full: it dropped %d messages (%d in all) before the "
                        "bridge could read them", dropped - self._reported, dropped)
            self._reported, self._last_report_s = dropped, now

    def stop(self) -> None:
        """Put stderr back; what native code wrote until now is still passed on."""
        if self._real_fd is None:
            return
        sys.stderr.flush()
        os.dup2(self._real_fd, 2)  # closes the pipe's last writing end: the drain ends
        if self._thread is not None:
            self._thread.join(timeout=2)
        self._repoint(sys.stderr, self._saved_stderr)
        sys.stderr = self._saved_stderr
        os.close(self._read_fd)
        os.close(self._real_fd)
        self._real_fd = self._read_fd = None
        self._report_final()

    def _report_final(self) -> None:
        dropped = self.counters["rtmidi_queue_full"]
        if dropped > self._reported:
            log.warning("rtmidi's input queue was full: it dropped %d messages in all", dropped)
            self._reported = dropped

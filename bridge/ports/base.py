"""The port interface. Public methods check and lock; backends implement only ``_send``,
``_close`` and the delivery of raw input bytes (mido's ports.py template)."""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable

import mido

from core.errors import PortError

__all__ = ["InputHandler", "InputPort", "OutputPort", "FanOutPort"]

# handler(raw_bytes, arrival_time_s); called on the backend's thread, must only enqueue.
InputHandler = Callable[[list[int], float], None]


class OutputPort(ABC):
    """A MIDI output. ``send`` is safe to call from any thread."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = False
        self.sent = 0
        self.errors = 0
        self._lock = threading.Lock()

    def send(self, message: mido.Message) -> None:
        if not isinstance(message, mido.Message):
            raise TypeError(f"send() takes a mido.Message, not {type(message).__name__}")
        self.send_bytes(message.bytes())

    def send_bytes(self, data: list[int]) -> None:
        """Send the bytes of one complete, already validated message (``mido.Message.bytes()``
        or the bridge's own note-offs): the hot path skips building message objects."""
        with self._lock:
            if self.closed:
                raise PortError(f"port {self.name!r} is closed")
            self._send(data)
            self.sent += 1

    def close(self) -> None:
        with self._lock:
            if not self.closed:
                self.closed = True
                self._close()

    @abstractmethod
    def _send(self, data: list[int]) -> None:
        """Write one complete message's bytes."""

    @abstractmethod
    def _close(self) -> None:
        """Release the backend's resources."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}{' closed' if self.closed else ''}>"


class InputPort(ABC):
    """A MIDI input. The backend calls ``_deliver`` with each raw message."""

    def __init__(self, name: str, handler: InputHandler) -> None:
        self.name = name
        self.closed = False
        self.received = 0
        self._handler = handler
        self._lock = threading.Lock()

    def after_input_before(self, cutoff_s: float, action: Callable[[], None]) -> None:
        """Call ``action`` once every message that reached the port before ``cutoff_s`` (the
        bridge clock, now or past) has been handed to the handler, before anything later is. A
        backend that delivers as messages come (a callback) has handed them all over: ``action``
        runs now. One that queues them (``RtMidiInput`` on JACK) runs it from its reading
        thread once that queue is read past ``cutoff_s``, which under a flood is long after."""
        action()

    def _deliver(self, data: list[int]) -> None:
        # Timestamp first, then hand over: this runs on the backend's (possibly real-time) thread.
        arrival_s = time.perf_counter()
        self.received += 1
        self._handler(data, arrival_s)

    def close(self) -> None:
        with self._lock:
            if not self.closed:
                self.closed = True
                self._close()

    @abstractmethod
    def _close(self) -> None:
        """Release the backend's resources."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}{' closed' if self.closed else ''}>"


class FanOutPort(OutputPort):
    """One logical output: the bridge's own virtual port plus the existing ports it was asked
    to connect to (``--connect-out``). A failing extra port is counted, not fatal."""

    def __init__(self, primary: OutputPort) -> None:
        super().__init__(primary.name)
        self.primary = primary
        self.extra: dict[str, OutputPort] = {}

    def _send(self, data: list[int]) -> None:
        self.primary.send_bytes(data)
        for port in list(self.extra.values()):
            try:
                port.send_bytes(data)
            except (PortError, OSError, RuntimeError):
                self.errors += 1

    def _close(self) -> None:
        self.primary.close()
        for port in self.extra.values():
            port.close()
        self.extra.clear()

"""The router thread: takes raw MIDI from the input callbacks' queue, drops and counts what is
malformed, feeds the transport, and fans musical events out to the engine slots.

Input callbacks only timestamp and enqueue (``InputRouter.enqueue``); everything else happens
here, so a backend thread is never blocked by the bridge.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import Counter
from collections.abc import Callable

from bridge.clock import CLOCK, CONTINUE, SONG_POSITION, START, STOP, Transport
from bridge.events import ControlChange, EngineInput, NoteOff, NoteOn
from bridge.host import EngineHost

__all__ = ["InputRouter"]

log = logging.getLogger(__name__)

_TRANSPORT_STATUS = {CLOCK, START, CONTINUE, STOP, SONG_POSITION}
# Data bytes each channel-message type carries (status high nibble -> count).
_CHANNEL_LENGTH = {0x80: 2, 0x90: 2, 0xA0: 2, 0xB0: 2, 0xC0: 1, 0xD0: 1, 0xE0: 2}
_STOP = object()

TransportListener = Callable[[list[EngineInput]], None]


class InputRouter:
    def __init__(self, host: EngineHost, transport: Transport) -> None:
        self.host = host
        self.transport = transport
        self.queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self.counters: Counter[str] = Counter()
        self.per_port: dict[str, Counter[str]] = {}
        self._thread = threading.Thread(target=self._run, name="router", daemon=True)
        self._transport_listeners: list[TransportListener] = []

    def on_transport(self, listener: TransportListener) -> None:
        self._transport_listeners.append(listener)

    def handler_for(self, port_name: str) -> Callable[[list[int], float], None]:
        """The input callback for one port: enqueue only."""
        self.per_port.setdefault(port_name, Counter())
        put = self.queue.put

        def handler(data: list[int], arrival_s: float) -> None:
            put((port_name, data, arrival_s))

        return handler

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self.queue.put(_STOP)
            self._thread.join(timeout=2)

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is _STOP:
                return
            if callable(item):  # internal work posted by other threads (clock ticks)
                item()
                continue
            port_name, data, arrival_s = item  # type: ignore[misc]
            self.route(port_name, data, arrival_s)

    def _drop(self, port_name: str, reason: str) -> None:
        self.counters[reason] += 1
        self.per_port.setdefault(port_name, Counter())[reason] += 1

    def route(self, port_name: str, data: list[int], arrival_s: float) -> None:
        """Validate and route one raw message (called on the router thread, or by tests)."""
        if not data:
            self._drop(port_name, "empty")
            return
        status = data[0]
        if status < 0x80:
            self._drop(port_name, "stray_data")  # running status or stray data bytes
            return
        if status == 0xF0:
            self._drop(port_name, "sysex")
            # Some backends deliver a SysEx glued to what followed it in the same cycle:
            # route whatever comes after the End-of-Exclusive byte on its own.
            if 0xF7 in data and data.index(0xF7) < len(data) - 1:
                self.route(port_name, data[data.index(0xF7) + 1:], arrival_s)
            return
        if status >= 0xF0:
            if status in _TRANSPORT_STATUS:
                self.counters["transport"] += 1
                events = self.transport.on_midi(status, data[1:], arrival_s)
                self.publish_transport(events)
            elif status != 0xFE:
                self._drop(port_name, "system_other")
            return
        kind = status & 0xF0
        channel = status & 0x0F
        payload = data[1:]
        if len(payload) != _CHANNEL_LENGTH[kind] or any(b > 0x7F for b in payload):
            self._drop(port_name, "malformed")
            return
        self.counters["accepted"] += 1
        self.per_port[port_name]["accepted"] += 1
        if kind == 0x90 and payload[1] > 0:
            event: EngineInput = NoteOn(payload[0], payload[1], channel, arrival_s,
                                        self.transport.beats_at(arrival_s), self.transport.playing)
        elif kind in (0x80, 0x90):
            event = NoteOff(payload[0], channel, arrival_s, self.transport.beats_at(arrival_s),
                            self.transport.playing)
        elif kind == 0xB0:
            event = ControlChange(payload[0], payload[1], channel, arrival_s)
        else:
            self.counters["ignored"] += 1
            return
        self.host.dispatch(event, channel)

    def publish_transport(self, events: list[EngineInput]) -> None:
        for event in events:
            self.host.dispatch(event)
        if events:
            for listener in self._transport_listeners:
                listener(events)

"""The router thread: takes raw MIDI from the input callbacks' queue, drops and counts what is
malformed, feeds the transport, and fans musical events out to the engine slots.

Input callbacks only timestamp and enqueue (``InputRouter.handler_for``); everything else
happens here, so a backend thread is never blocked by the bridge. The queue is bounded
(``ROUTER_QUEUE_CAPACITY``) with the drop policy of ``bridge.inbox``: under a flood, repeated
controller values are merged and dropped before notes, and no note-off whose note-on passed
is ever lost.

The router remembers which notes each input port has started and not yet stopped, so that
when a source goes away (``release_port``) the engines hear their note-offs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable
from typing import Any

from bridge.clock import CLOCK, CONTINUE, SONG_POSITION, START, STOP, Transport
from bridge.host import EngineHost
from bridge.inbox import CLOSED, BoundedInbox, Policy
from core.events import ControlChange, EngineInput, NoteOff, NoteOn

__all__ = ["InputRouter", "ROUTER_QUEUE_CAPACITY", "classify_raw"]

log = logging.getLogger(__name__)

_TRANSPORT_STATUS = {CLOCK, START, CONTINUE, STOP, SONG_POSITION}
# Data bytes each channel-message type carries (status high nibble -> count).
_CHANNEL_LENGTH = {0x80: 2, 0x90: 2, 0xA0: 2, 0xB0: 2, 0xC0: 1, 0xD0: 1, 0xE0: 2}
# Raw messages waiting for the router thread. It validates and fans out a message in tens of
# microseconds, so this many is a fraction of a second of backlog: only a flood fills it.
ROUTER_QUEUE_CAPACITY = 8192
# Controllers whose order against the notes matters (sustain, portamento, sostenuto, soft,
# legato, hold 2) and the channel mode messages (all notes off...): merged only with a value
# queued after the last note.
_ORDERED_CONTROLLERS = frozenset(range(64, 70)) | frozenset(range(120, 128))

TransportListener = Callable[[list[EngineInput]], None]


class InputRouter:
    def __init__(self, host: EngineHost, transport: Transport) -> None:
        self.host = host
        self.transport = transport
        self.queue = BoundedInbox(ROUTER_QUEUE_CAPACITY, classify_raw)
        self.counters: Counter[str] = Counter()
        # port -> (channel, pitch) -> arrival time of the note-on routed and not yet released
        self.held: dict[str, dict[tuple[int, int], float]] = {}
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
        """Stop at once: input still waiting is discarded (the session releases every note)."""
        self.queue.close()
        if self._thread.is_alive():
            self._thread.join(timeout=2)

    def post(self, work: Callable[[], None]) -> None:
        """Run ``work`` on the router thread, after the input already queued."""
        self.queue.put(work)

    def release_port(self, port_name: str) -> None:
        """The source(s) behind ``port_name`` went away: the engines hear a note-off for every
        note started there and not stopped. Runs after the input already queued, so it follows
        what the source sent (``InputPort.after_input_before`` says when all of it is queued)."""
        self.post(lambda: self._release(port_name))

    def _release(self, port_name: str) -> None:
        held = self.held.get(port_name)
        if not held:
            return
        keys = list(held)
        now = time.perf_counter()
        beats, playing = self.transport.beats_at(now), self.transport.playing
        held.clear()
        for channel, pitch in keys:
            self.host.dispatch(NoteOff(pitch, channel, now, beats, playing), channel)
        self.counters["released_on_disconnect"] += len(keys)
        log.info("input %s lost its sender holding %d notes: released", port_name, len(keys))

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is CLOSED:
                return
            if callable(item):  # work posted by other threads (transport changes, releases)
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
                self._publish_transport(self.transport.on_midi(status, data[1:], arrival_s))
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
        self.per_port.setdefault(port_name, Counter())["accepted"] += 1
        if kind == 0x90 and payload[1] > 0:
            event: EngineInput = NoteOn(payload[0], payload[1], channel, arrival_s,
                                        self.transport.beats_at(arrival_s), self.transport.playing)
            self.held.setdefault(port_name, {})[(channel, payload[0])] = arrival_s
        elif kind in (0x80, 0x90):
            event = NoteOff(payload[0], channel, arrival_s, self.transport.beats_at(arrival_s),
                            self.transport.playing)
            held = self.held.get(port_name)
            if held is not None:
                held.pop((channel, payload[0]), None)
        elif kind == 0xB0:
            event = ControlChange(payload[0], payload[1], channel, arrival_s)
        else:
            self.counters["ignored"] += 1
            return
        self.host.dispatch(event, channel)

    def transport_change(self, change: Callable[[], list[EngineInput]]) -> None:
        """Apply a transport change from another thread (the internal clock, OSC play, stop
        and locate) on the router thread, in order with the DAW's messages, and publish it
        from there: every transport event reaches the engines from this one thread."""
        self.post(lambda: self._publish_transport(change()))

    def _publish_transport(self, events: list[EngineInput]) -> None:
        for event in events:
            self.host.dispatch(event)
        if events:
            for listener in self._transport_listeners:
                listener(events)


def classify_raw(item: Any) -> tuple[Policy, Hashable, str]:
    """The drop policy of the router queue: (port, bytes, time) tuples and internal work."""
    if callable(item):
        return Policy.KEEP, None, "internal"
    port, data, _ = item
    if not data:
        return Policy.DROPPABLE, None, "other"
    status = data[0]
    kind = status & 0xF0
    if kind == 0x90 and len(data) == 3:
        key = (port, status & 0x0F, data[1])
        return (Policy.NOTE_ON, key, "note_on") if data[2] else (Policy.NOTE_OFF, key, "note_off")
    if kind == 0x80 and len(data) == 3:
        return Policy.NOTE_OFF, (port, status & 0x0F, data[1]), "note_off"
    if kind == 0xB0 and len(data) == 3:
        ordered = data[1] in _ORDERED_CONTROLLERS
        return (Policy.LATEST_IN_ORDER if ordered else Policy.LATEST), (port, status, data[1]), "cc"
    if kind == 0xA0 and len(data) == 3:
        return Policy.LATEST, (port, status, data[1]), "aftertouch"
    if kind == 0xD0:
        return Policy.LATEST, (port, status), "aftertouch"
    if kind == 0xE0:
        return Policy.LATEST, (port, status), "pitch_bend"
    if kind == 0xC0:
        return Policy.LATEST_IN_ORDER, (port, status), "program"
    if status in (START, CONTINUE, STOP, SONG_POSITION):
        return Policy.LATEST_IN_ORDER, (port, "transport"), "transport"
    if status == CLOCK:
        return Policy.DROPPABLE, None, "clock"
    return Policy.DROPPABLE, None, "other"

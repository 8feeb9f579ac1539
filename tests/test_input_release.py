"""A sender that leaves while the bridge is still reading what it sent: the release of its held
notes must come after all of it. Under a flood (or a starved reading thread) rtmidi's JACK input
queue holds seconds of messages; a note-on read after the release would sound for ever.

rtmidi's queue is faked here (pure logic): ``get_message`` returns (bytes, delta_s) as rtmidi
does, and the reading thread can be held back, as the scheduler holds back a starved thread."""

from __future__ import annotations

import threading
import time
from collections import deque

from bridge.clock import Transport
from bridge.config import BridgeConfig
from bridge.host import EngineHost
from bridge.output import NoteTracker, Scheduler
from bridge.ports.rtmidi_backend import RtMidiInput
from bridge.router import InputRouter
from bridge.session_ports import SENDER_GONE_GRACE_S, SessionPorts
from core.events import NoteOff, NoteOn

PORT = "sb:in"


class _Queue:
    """rtmidi's input queue: ``backlog`` first, then ``then`` (None: empty) for ever; every
    ``get_message`` waits while ``reader_held`` is clear."""

    def __init__(self, backlog: list[tuple[list[int], float]], then: tuple[list[int], float] | None = None) -> None:
        self.backlog = deque(backlog)
        self.then = then
        self.reader_held = threading.Event()
        self.read = 0
        self.first_read_s: float | None = None  # when the reader first asked (then held)

    def ignore_types(self, **_: bool) -> None:
        pass

    def get_message(self) -> tuple[list[int], float] | None:
        if self.first_read_s is None:
            self.first_read_s = time.perf_counter()
        self.reader_held.wait()
        event = self.backlog.popleft() if self.backlog else self.then
        self.read += event is not None
        return event

    def close_port(self) -> None:
        pass

    def delete(self) -> None:
        pass


def test_a_waiter_runs_once_the_queue_is_read_past_its_cutoff_from_the_time_deltas():
    # 1,000 messages 1 ms apart wait in the queue: the reader learns when each reached the port
    # from rtmidi's deltas, and runs the waiter between the last before its cutoff and the next
    queue = _Queue([([0xB0, 1, i % 128], 0.001) for i in range(1000)])
    delivered: list[int] = []
    before_s = time.perf_counter()
    port = RtMidiInput(PORT, queue, lambda data, _t: delivered.append(data[2]), poll_interval_s=0.0002)
    seen_at_run: list[int] = []
    cutoff_s = before_s + 0.3
    port.after_input_before(cutoff_s, lambda: seen_at_run.append(len(delivered)))
    deadline = time.monotonic() + 5
    while queue.first_read_s is None and time.monotonic() < deadline:
        time.sleep(0.001)
    queue.reader_held.set()
    while len(delivered) < 1000 and time.monotonic() < deadline:
        time.sleep(0.01)
    port.close()
    assert len(delivered) == 1000
    # The reader took the queue for empty when it started (between ``before_s`` and its first
    # read), so message k reached the port at least k ms after that: the waiter ran after the
    # messages before the cutoff by that reckoning, not after all 1,000.
    earliest = (cutoff_s - queue.first_read_s) * 1000 - 1
    latest = (cutoff_s - before_s) * 1000 + 1
    assert seen_at_run and earliest <= seen_at_run[0] <= latest, (seen_at_run, earliest, latest)


def test_a_waiter_never_runs_before_a_message_that_reached_the_port_before_its_cutoff():
    queue = _Queue([([0x90, 60, 100], 0.0)])
    order: list[str] = []
    port = RtMidiInput(PORT, queue, lambda data, _t: order.append("note"), poll_interval_s=0.0002)
    port.after_input_before(time.perf_counter(), lambda: order.append("waiter"))
    time.sleep(0.1)  # the reader is held: the waiter waits however late it gets
    assert order == []
    queue.reader_held.set()
    deadline = time.monotonic() + 5
    while len(order) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    port.close()
    assert order == ["note", "waiter"]


def test_a_closed_input_runs_its_waiters():
    queue = _Queue([([0x90, 60, 100], 0.0)])
    ran: list[bool] = []
    port = RtMidiInput(PORT, queue, lambda data, _t: None, poll_interval_s=0.0002)
    port.after_input_before(time.perf_counter(), lambda: ran.append(True))
    queue.reader_held.set()
    port.close()
    assert ran == [True]
    port.after_input_before(time.perf_counter(), lambda: ran.append(True))  # nothing more comes
    assert ran == [True, True]


def _session_ports(queue: _Queue) -> tuple[SessionPorts, list, Scheduler, InputRouter]:
    transport = Transport(120.0, "internal")
    scheduler = Scheduler()
    host = EngineHost(transport, NoteTracker(), scheduler)
    dispatched: list = []
    host.dispatch = lambda event, channel=None: dispatched.append(event)  # type: ignore[method-assign]
    router = InputRouter(host, transport)
    ports = SessionPorts(BridgeConfig(), transport=transport, tracker=host.tracker, scheduler=scheduler,
                         host=host, router=router, controls=None)  # type: ignore[arg-type]
    ports.main_in = RtMidiInput(PORT, queue, router.handler_for(PORT), poll_interval_s=0.0002)
    scheduler.start()
    router.start()
    return ports, dispatched, scheduler, router


def _notes(dispatched: list) -> list[tuple[str, int]]:
    return [("on" if isinstance(e, NoteOn) else "off", e.pitch) for e in list(dispatched)
            if isinstance(e, (NoteOn, NoteOff))]


def _run_sender_left(queue: _Queue) -> list[tuple[str, int]]:
    ports, dispatched, scheduler, router = _session_ports(queue)
    try:
        ports._sender_left(PORT, time.perf_counter())
        time.sleep(SENDER_GONE_GRACE_S + 0.15)  # the grace is over, the reader still behind
        queue.reader_held.set()
        deadline = time.monotonic() + 3
        while ("off", 60) not in _notes(dispatched) and time.monotonic() < deadline:
            time.sleep(0.01)
        return _notes(dispatched)
    finally:
        ports.main_in.close()
        router.stop()
        scheduler.stop()


def test_a_sender_that_left_has_its_note_released_though_the_note_on_is_read_late():
    # the sender's last note-on reached the port before it left; the reader gets to it only
    # after the grace (a starved thread): it is released all the same
    notes = _run_sender_left(_Queue([([0x90, 60, 100], 0.0)]))
    assert notes == [("on", 60), ("off", 60)]


def test_a_sender_that_left_has_its_note_released_while_another_floods_the_input():
    # the queue is never found empty (another sender keeps sending, 1 ms apart): the reader
    # knows from the time deltas when it has read past the moment the sender left
    queue = _Queue([([0x90, 60, 100], 0.0)] + [([0xB0, 1, 0], 0.001)] * 400, then=([0xB0, 1, 0], 0.001))
    notes = _run_sender_left(queue)
    assert notes == [("on", 60), ("off", 60)]

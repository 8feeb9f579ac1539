"""The engine host's side of the engine contract and its threading, with a recording port."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from types import SimpleNamespace

import mido

from bridge.affect_follow import AffectFollower
from bridge.clock import START, STOP, Transport
from bridge.host import EngineHost, SlotConfig
from bridge.output import NoteTracker, Scheduler
from bridge.router import InputRouter
from core.engine import Engine, EngineContext
from core.errors import ModelLoadError
from core.events import Beat, EngineInput, EngineOutput, NoteOn, Send, TransportChange
from tests.test_router_and_tracker import RecordingPort

CALLS: list[tuple[str, str, str]] = []  # (engine, call, thread) of the engines below


class Recorder(Engine):
    """Records every contract call and the thread it came on; answers a note-on with a note."""

    name = "recorder"

    def prepare(self, context: EngineContext) -> None:
        CALLS.append((context.slot, "prepare", threading.current_thread().name))
        super().prepare(context)

    def process(self, event: EngineInput) -> Sequence[EngineOutput]:
        kind = event.reason if isinstance(event, TransportChange) else type(event).__name__
        CALLS.append((self.context.slot, f"process {kind}", threading.current_thread().name))
        if isinstance(event, NoteOn):
            return (Send(mido.Message("note_on", note=event.pitch, velocity=event.velocity)),)
        return ()

    def reset(self) -> None:
        CALLS.append((self.context.slot, "reset", threading.current_thread().name))

    def release(self) -> None:
        CALLS.append((self.context.slot, "release", threading.current_thread().name))


class FailsToLoad(Recorder):
    name = "fails-to-load"

    def prepare(self, context: EngineContext) -> None:
        raise ModelLoadError("model.onnx: sha256 does not match its card")


class Gate(Recorder):
    """Holds its worker inside ``process`` of a note-on until the test opens the gate."""

    name = "gate"
    entered = threading.Event()
    gate = threading.Event()

    def process(self, event: EngineInput) -> Sequence[EngineOutput]:
        if isinstance(event, NoteOn):
            Gate.entered.set()
            Gate.gate.wait(5)
            return (Send(mido.Message("note_on", note=event.pitch, velocity=event.velocity)),
                    Send(mido.Message("note_on", note=event.pitch + 1, velocity=90), at_beats=0.0))
        return super().process(event)


class Affect(Recorder):
    name = "mood"
    provides = frozenset({"affect"})

    def current(self) -> tuple[float, float]:
        return (0.5, -0.25)


def make_host(*slots: tuple[str, str]) -> tuple[EngineHost, RecordingPort]:
    transport, tracker, scheduler = Transport(), NoteTracker(), Scheduler()
    host = EngineHost(transport, tracker, scheduler)
    port = RecordingPort()
    for name, engine in slots:
        host.add_slot(SlotConfig(name, f"tests.test_host:{engine}"), port)
    scheduler.start()
    host.start()
    return host, port


def settle(host: EngineHost, timeout_s: float = 2.0) -> None:
    deadline = time.monotonic() + timeout_s
    while any(slot.inbox.qsize() for slot in host.slots.values()) and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.02)


def shut(host: EngineHost) -> None:
    host.stop()
    host.scheduler.stop()


def test_a_model_that_cannot_load_disables_its_slot_only_and_shows_in_status():
    CALLS.clear()
    host, port = make_host(("bad", "FailsToLoad"), ("good", "Recorder"))
    status = host.status()
    assert not status["bad"]["enabled"] and "sha256 does not match" in status["bad"]["error"]
    assert status["good"]["enabled"] and status["good"]["error"] is None
    host.dispatch(NoteOn(60, 90, 0, time.perf_counter(), 0.0))
    settle(host)
    assert port.data == [[0x91, 60, 90]]  # the good slot plays; the bad one hears nothing
    shut(host)
    assert ("good", "prepare", "engine-good") in CALLS  # on the slot's own worker


def test_reset_before_every_stop_and_locate_and_release_on_swap_and_shutdown():
    CALLS.clear()
    host, _ = make_host(("a", "Recorder"))
    now = time.perf_counter()
    for event in (TransportChange(True, 0.0, now, "start"), Beat(0, now, 120.0),
                  TransportChange(True, 8.0, now, "locate"), TransportChange(False, 9.0, now, "stop")):
        host.dispatch(event)
        settle(host)  # one at a time: a transport change waiting is replaced by a newer one
    host.swap("a", "tests.test_host:Recorder")
    settle(host)
    shut(host)
    calls = [call for _, call, _ in CALLS]
    assert calls == ["prepare", "process start", "process Beat", "reset", "process locate", "reset",
                     "process stop", "release", "prepare", "release"]
    assert {thread for _, _, thread in CALLS} == {"engine-a"}


def test_a_stop_replaced_in_the_inbox_by_a_start_still_resets_the_engine():
    CALLS.clear()
    Gate.entered.clear()
    Gate.gate.clear()
    host, _ = make_host(("g", "Gate"))
    host.dispatch(NoteOn(60, 90, 0, time.perf_counter(), 0.0))
    assert Gate.entered.wait(2)  # the worker is busy: what follows waits in the inbox
    host.dispatch(TransportChange(False, 1.0, time.perf_counter(), "stop"))
    host.dispatch(TransportChange(True, 0.0, time.perf_counter(), "start"))  # takes the stop's place
    Gate.gate.set()
    settle(host)
    shut(host)
    calls = [call for _, call, _ in CALLS]
    assert calls[:3] == ["prepare", "reset", "process start"]


def test_no_note_on_follows_a_stop_that_came_while_the_engine_was_computing():
    Gate.entered.clear()
    Gate.gate.clear()
    host, port = make_host(("g", "Gate"))
    host.dispatch(TransportChange(True, 0.0, time.perf_counter(), "start"))
    host.dispatch(NoteOn(60, 90, 0, time.perf_counter(), 0.0))
    assert Gate.entered.wait(2)
    host.dispatch(NoteOn(62, 90, 0, time.perf_counter(), 0.0))  # queued behind: computed after
    host.dispatch(TransportChange(False, 1.0, time.perf_counter(), "stop"))
    Gate.gate.set()
    settle(host)
    time.sleep(0.05)  # the timed note-on would be due by now
    assert port.data == [] and host.slots["g"].dropped_stale == 4
    shut(host)


def test_stop_waits_past_its_timeout_for_a_worker_inside_a_slow_call(caplog):
    """A worker still computing after STOP_TIMEOUT_S is waited for (a process must not exit
    under a native call), with a warning, and its late output is dropped."""
    from bridge.host import STOP_TIMEOUT_S

    CALLS.clear()
    Gate.entered.clear()
    Gate.gate.clear()
    host, port = make_host(("g", "Gate"))
    host.dispatch(NoteOn(60, 90, 0, time.perf_counter(), 0.0))
    assert Gate.entered.wait(2)
    threading.Timer(STOP_TIMEOUT_S + 0.5, Gate.gate.set).start()  # the call ends after the timeout
    started = time.monotonic()
    with caplog.at_level("WARNING", logger="bridge.host"):
        shut(host)
    assert time.monotonic() - started >= STOP_TIMEOUT_S + 0.4
    assert host.busy_slots() == []
    assert "slot(s) g to finish" in caplog.text
    assert [call for _, call, _ in CALLS][-1] == "release"
    assert port.data == []


def test_the_scheduler_survives_any_exception_in_a_job(caplog):
    scheduler = Scheduler()
    scheduler.start()
    ran: list[str] = []
    now = time.perf_counter()
    scheduler.at(now + 0.01, lambda: None + 1, "x")  # a TypeError
    scheduler.at(now + 0.02, lambda: {}["missing"], "x")  # a KeyError
    scheduler.at(now + 0.03, lambda: ran.append("note-off"), "x")
    time.sleep(0.1)
    scheduler.stop()
    assert ran == ["note-off"] and scheduler.errors == 2
    assert "TypeError" in caplog.text and "KeyError" in caplog.text


def test_transport_changes_from_other_threads_are_published_from_the_router_thread():
    threads: list[str] = []
    host = SimpleNamespace(dispatch=lambda event, channel=None: threads.append(threading.current_thread().name))
    transport = Transport(mode="external")
    router = InputRouter(host, transport)
    router.start()
    handler = router.handler_for("daw")

    def published(count: int) -> bool:
        deadline = time.monotonic() + 10  # a loaded CI machine can starve the router thread for a while
        while len(threads) < count and time.monotonic() < deadline:
            time.sleep(0.005)
        return len(threads) >= count

    # the START is published before more transport input is sent: the router's queue keeps only
    # the latest of a port's queued transport messages, so a STOP queued behind an unprocessed
    # START would replace it (by design, under a flood)
    handler([START], time.perf_counter())
    assert published(1)
    done = threading.Event()

    def osc() -> None:
        router.transport_change(lambda: transport.locate(4.0, time.perf_counter()))
        router.transport_change(lambda: transport.set_playing(False, time.perf_counter()))
        done.set()

    threading.Thread(target=osc, name="osc-in").start()
    assert done.wait(10) and published(3)
    handler([STOP], time.perf_counter())  # already stopped: no event
    behind = threading.Event()
    router.post(behind.set)  # runs after the STOP: the queue is in order
    assert behind.wait(10)
    router.stop()
    assert threads == ["router"] * 3


def test_the_affect_follower_finds_its_source_by_capability_not_by_name():
    host, _ = make_host(("plain", "Recorder"), ("video", "Affect"))
    applied: list[tuple[str, object]] = []
    follower = AffectFollower(host, host.scheduler.at, lambda path, value, origin=None: applied.append((path, value)),
                              lambda: True)
    follower.follow()
    assert follower.source == "video"
    assert applied == [("affect/override", 1), ("affect/valence", 0.5), ("affect/arousal", -0.25)]
    host.set_enabled("video", False)
    follower.follow()
    assert follower.source is None
    shut(host)

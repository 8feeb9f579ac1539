"""The internal clock ticks from a start or a locate: its first tick marks the position the
change reported, at the time it reported, and its beats fall whole beats after it. (On the old
grid, the ticks kept their phase from boot, so every beat after an OSC start came up to a tick,
20.8 ms at 120 BPM, after the time the start reported.)

A real Session with its real scheduler and router threads; no MIDI ports are opened."""

from __future__ import annotations

import threading
import time

import pytest

from bridge.config import BridgeConfig
from bridge.session import Session
from core.events import TICKS_PER_BEAT, Beat, TransportChange


@pytest.fixture
def session():
    session = Session(BridgeConfig(clock_mode="internal", tempo_bpm=120.0, osc_port=0))
    events: list = []
    lock = threading.Lock()

    def listen(batch) -> None:
        with lock:
            events.extend(batch)

    session.router.on_transport(listen)
    session.scheduler.start()
    session.router.start()
    session.state = session.state.ONLINE  # only the clock runs: no ports, no engines
    session._schedule_internal_tick(time.perf_counter() + 0.01)

    def seen() -> list:
        with lock:
            return list(events)

    session.seen = seen
    yield session
    session.state = session.state.STOPPING
    session.router.stop()
    session.scheduler.stop()
    session.osc.stop()  # its sending socket is made with it


def _wait_for(predicate, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def _half_a_tick_after_the_last(session) -> None:
    """Sleep until halfway between two ticks of the running chain (the worst phase for the old grid)."""
    interval = 60.0 / (120.0 * TICKS_PER_BEAT)
    last = max(e.time_s for e in session.seen() if isinstance(e, Beat))
    now = time.perf_counter()
    time.sleep((last - now) % interval + interval / 2)


@pytest.mark.parametrize("change", ["start", "locate"])
def test_beats_after_a_start_or_locate_fall_whole_beats_after_it(session, change: str) -> None:
    _wait_for(lambda: sum(isinstance(e, Beat) for e in session.seen()) >= 2)
    if change == "start":
        session.set_playing(False)
        _wait_for(lambda: any(isinstance(e, TransportChange) and not e.playing for e in session.seen()))
    _half_a_tick_after_the_last(session)
    before = len(session.seen())
    if change == "start":
        session.set_playing(True)
    else:
        session.locate(8.0)
    _wait_for(lambda: sum(isinstance(e, Beat) for e in session.seen()[before:]) >= 3)
    after = session.seen()[before:]
    [started] = [e for e in after if isinstance(e, TransportChange)]
    beats = [e for e in after if isinstance(e, Beat)][:3]
    first = round(started.beats)
    assert [b.index for b in beats] == [first, first + 1, first + 2], (started, beats)
    for k, beat in enumerate(beats):
        # The ticks are due at the start's own time plus whole tick intervals: exact up to rounding.
        assert beat.time_s == pytest.approx(started.time_s + k * 0.5, abs=1e-6), (started, beats)

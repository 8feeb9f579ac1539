"""Input validation in the router and note safety in the tracker, with fakes for pure logic."""

from __future__ import annotations

import time

import mido
import pytest

from bridge.clock import Transport
from bridge.config import load_config, parse_slot_flag
from bridge.host import EngineHost, SlotConfig
from bridge.output import NoteTracker, Scheduler, all_notes_off
from bridge.ports.base import OutputPort
from bridge.router import InputRouter
from core.errors import ConfigError
from core.events import NoteOn


class RecordingPort(OutputPort):
    def __init__(self, name: str = "fake") -> None:
        super().__init__(name)
        self.data: list[list[int]] = []

    def _send(self, data: list[int]) -> None:
        self.data.append(data)

    def _close(self) -> None:
        pass


class RecordingHost:
    def __init__(self) -> None:
        self.events: list[tuple[object, int | None]] = []

    def dispatch(self, event, channel=None):
        self.events.append((event, channel))


def test_router_drops_and_counts_bad_input_but_keeps_good_input():
    host = RecordingHost()
    router = InputRouter(host, Transport())
    for data in ([], [0x40, 0x40], [0x90, 60], [0x90, 200, 1], [0xF0, 1, 2, 0xF7], [0xF4], [0xFE],
                 [0xF0, 1, 0xF7, 0x91, 64, 90], [0x90, 60, 100], [0x80, 60, 0], [0xE0, 0, 64]):
        router.route("p", data, time.perf_counter())
    c = router.counters
    assert (c["empty"], c["stray_data"], c["malformed"], c["sysex"], c["system_other"]) == (1, 1, 2, 2, 1)
    notes = [e for e, ch in host.events if isinstance(e, NoteOn)]
    assert [(n.pitch, n.channel) for n in notes] == [(64, 1), (60, 0)]
    assert c["accepted"] == 4 and c["ignored"] == 1
    assert router.per_port["p"]["malformed"] == 2


def test_tracker_releases_exactly_what_an_owner_sounds():
    tracker = NoteTracker()
    a, b = RecordingPort("a"), RecordingPort("b")
    tracker.emit(a, mido.Message("note_on", note=60, velocity=90, channel=1), "rule")
    tracker.emit(a, mido.Message("note_on", note=64, velocity=90, channel=1), "rule")
    tracker.emit(b, mido.Message("note_on", note=40, velocity=90, channel=2), "other")
    tracker.emit(a, mido.Message("note_off", note=64, channel=1), "rule")
    assert tracker.release(owner="rule") == 1
    assert a.data[-1][:2] == [0x81, 60]
    assert tracker.sounding() == [("b", 2, 40)]
    tracker.emit(b, mido.Message("note_on", note=40, velocity=90, channel=2), "other")
    assert tracker.stacked == 1 and b.data[-1][:2] == [0x92, 40]  # passed on as sent
    assert tracker.release() == 1 and tracker.sounding() == []
    assert [d[:2] for d in b.data[-2:]] == [[0x82, 40], [0x82, 40]]  # one note-off per note-on


def test_all_notes_off_covers_every_channel():
    messages = all_notes_off()
    assert {m.channel for m in messages if m.control == 123} == set(range(16))


def test_scheduler_runs_in_time_order_and_cancels_by_owner():
    scheduler = Scheduler()
    scheduler.start()
    ran: list[str] = []
    now = time.perf_counter()
    scheduler.at(now + 0.06, lambda: ran.append("late"), "x")
    scheduler.at(now + 0.02, lambda: ran.append("early"), "y")
    scheduler.at(now + 0.04, lambda: ran.append("cancelled"), "x")
    scheduler.cancel_owner("x")
    scheduler.at(now + 0.05, lambda: ran.append("kept"), "y")
    time.sleep(0.15)
    scheduler.stop()
    assert ran == ["early", "kept"]


def test_host_releases_notes_on_transport_stop_even_while_an_engine_is_busy():
    transport, tracker, scheduler = Transport(), NoteTracker(), Scheduler()
    host = EngineHost(transport, tracker, scheduler)
    port = RecordingPort()
    host.add_slot(SlotConfig("rule", "rule"), port)
    tracker.emit(port, mido.Message("note_on", note=50, velocity=80, channel=1), "rule")
    from core.events import TransportChange

    host.dispatch(TransportChange(False, 4.0, time.perf_counter(), "stop"))
    assert tracker.sounding() == [] and port.data[-1][:2] == [0x81, 50]


def test_notes_played_from_the_inbox_after_a_stop_released_the_slot_are_released_too():
    transport, tracker, scheduler = Transport(), NoteTracker(), Scheduler()
    host = EngineHost(transport, tracker, scheduler)
    port = RecordingPort()
    slot = host.add_slot(SlotConfig("rule", "rule"), port)
    from core.events import TransportChange

    now = time.perf_counter()
    host.dispatch(NoteOn(60, 100, 0, now, 0.0, False), 0)  # still waiting in the inbox...
    host.dispatch(TransportChange(False, 0.0, now, "stop"))  # ...when the stop releases the slot
    while slot.inbox.qsize():  # the worker catches up with what was queued before the stop
        item = slot.inbox.get(0)
        if isinstance(item, tuple):
            slot._process(item[1], item[0])
    assert tracker.sounding() == []
    sounding: set[tuple[int, int]] = set()  # what a synth on the port would still play
    for data in port.data:
        if data[0] & 0xF0 == 0x90 and data[2]:
            sounding.add((data[0] & 0x0F, data[1]))
        elif data[0] & 0xF0 in (0x80, 0x90):
            sounding.discard((data[0] & 0x0F, data[1]))
    assert not sounding


def test_config_file_and_slot_flags(tmp_path):
    path = tmp_path / "bridge.toml"
    path.write_text('[midi]\nbackend = "jack"\n[[slots]]\nengine = "rule"\nin_channels = [1, 2]\n'
                    'out_channel = 3\n[slots.params]\nkey = "Am"\n')
    config = load_config(path)
    assert config.backend == "jack"
    assert config.slots[0].in_channels == frozenset({0, 1}) and config.slots[0].out_channel == 2
    bad = tmp_path / "bad.toml"
    bad.write_text("[[slots]]\nengine = \"rule\"\nout_channel = 17\n")
    with pytest.raises(ConfigError, match="bad.toml.*out_channel must be 1..16"):
        load_config(bad)
    broken = tmp_path / "broken.toml"
    broken.write_text("[midi\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(broken)
    assert parse_slot_flag("mon=thru@all/3").out_channel == 2
    with pytest.raises(ConfigError, match="NAME=ENGINE"):
        parse_slot_flag("rule")

"""The live bridge under hostile or careless MIDI: floods, senders that vanish, a private JACK
server left behind by a killed bridge, and what ``status`` may show.

Fuzzing: the inbox property test runs ``SCOREBRIDGE_FUZZ_EXAMPLES`` examples (default 200).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import rtmidi
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.jack_tools import connect, flood_pattern, midiseq
from core.children import TiedPopen
from core.events import ControlChange, NoteOff, NoteOn
from tests.jackutil import ROOT
from tests.peer import Bridge, Listener, lost_by_peers, sounding_for_all
from tests.test_bridge_live import output_state

# The bounded queues are imported inside the tests, so that the live tests also run (and
# fail) on a bridge that has none.

FUZZ_EXAMPLES = int(os.environ.get("SCOREBRIDGE_FUZZ_EXAMPLES", "200"))
NOTE_KEYS = 16 * 128  # most note-offs an inbox may hold past its capacity


def status(bridge: Bridge) -> dict:
    out = subprocess.run([sys.executable, "-m", "bridge", "status", "--osc-port", str(bridge.osc_port)],
                         cwd=ROOT, capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


# -- the bounded inbox: pure logic ----------------------------------------------------------
def _on(pitch: int, channel: int = 0) -> NoteOn:
    return NoteOn(pitch, 100, channel, 0.0, 0.0)


def _off(pitch: int, channel: int = 0) -> NoteOff:
    return NoteOff(pitch, channel, 0.0, 0.0)


def _drain(inbox) -> list:
    items = []
    while inbox.qsize():
        items.append(inbox.get(0))
    return items


def test_controller_values_coalesce_to_the_latest_per_controller():
    from bridge.host import classify_event
    from bridge.inbox import BoundedInbox

    inbox = BoundedInbox(16, classify_event)
    for value in range(100):
        inbox.put(ControlChange(1, value, 0, 0.0))
        inbox.put(ControlChange(7, 127 - value, 3, 0.0))
    got = _drain(inbox)
    assert [(e.control, e.value) for e in got] == [(1, 99), (7, 28)]
    assert inbox.coalesced["cc"] == 198 and not inbox.dropped


def test_sustain_pedal_keeps_its_order_with_the_notes():
    from bridge.host import classify_event
    from bridge.inbox import BoundedInbox

    inbox = BoundedInbox(16, classify_event)
    for event in (_on(60), ControlChange(64, 127, 0, 0.0), _off(60), ControlChange(64, 0, 0, 0.0)):
        inbox.put(event)
    kinds = [(type(e).__name__, getattr(e, "value", None)) for e in _drain(inbox)]
    assert kinds == [("NoteOn", None), ("ControlChange", 127), ("NoteOff", None), ("ControlChange", 0)]


def test_a_full_inbox_evicts_controllers_for_notes_then_drops_note_ons_with_their_note_offs():
    from bridge.host import classify_event
    from bridge.inbox import BoundedInbox

    inbox = BoundedInbox(4, classify_event)
    for control in range(4):
        inbox.put(ControlChange(control, 1, 0, 0.0))
    assert inbox.put(_on(60))  # a controller makes room
    assert inbox.dropped["cc"] == 1
    for pitch in (61, 62, 63):
        assert inbox.put(_on(pitch))  # each one evicts another controller
    assert not inbox.put(_on(64))  # nothing left to evict: the new note goes
    assert not inbox.put(_off(64))  # and its note-off with it
    for pitch in (60, 61, 62, 63):
        assert inbox.put(_off(pitch))  # past the capacity: their note-ons were queued
    assert inbox.qsize() == 8 and inbox.high_water == 8
    assert inbox.dropped == {"cc": 4, "note_on": 1, "note_off": 1}


def test_parameter_sets_are_merged_but_never_dropped():
    from bridge.host import _SetParam, classify_event
    from bridge.inbox import BoundedInbox

    inbox = BoundedInbox(2, classify_event)
    inbox.put(_on(60))
    inbox.put(_on(61))
    for value in range(50):
        assert inbox.put(_SetParam("temperature", value / 10))
    assert inbox.put(_SetParam("velocity", 90))
    got = _drain(inbox)
    params = [(p.name, p.value) for p in got if isinstance(p, _SetParam)]
    assert params == [("temperature", 4.9), ("velocity", 90)]
    assert not inbox.dropped


def test_beats_are_never_evicted_by_a_flood_of_notes():
    """An engine that never hears a beat never forgets its past (the learned harmonizer
    grew by 4 MB a minute in the soak when notes evicted every beat)."""
    from bridge.host import classify_event
    from bridge.inbox import BoundedInbox
    from core.events import Beat

    inbox = BoundedInbox(4, classify_event)
    for index in range(10):
        inbox.put(Beat(index, 0.0, 120.0))
        for pitch in range(8):
            inbox.put(_on(pitch + 10 * index))
            inbox.put(_off(pitch + 10 * index))
    beats = [e.index for e in _drain(inbox) if isinstance(e, Beat)]
    assert beats == [9] and "beat" not in inbox.dropped


def test_close_wakes_the_consumer_at_once_and_discards_the_backlog():
    from bridge.host import classify_event
    from bridge.inbox import CLOSED, BoundedInbox

    inbox = BoundedInbox(8, classify_event)
    inbox.put(_on(60))
    inbox.close()
    assert inbox.get(0) is CLOSED and inbox.qsize() == 0
    assert not inbox.put(_on(61))


events = st.lists(st.one_of(
    st.tuples(st.just("on"), st.integers(0, 1), st.integers(60, 64)),
    st.tuples(st.just("off"), st.integers(0, 1), st.integers(60, 64)),
    st.tuples(st.just("cc"), st.integers(0, 1), st.sampled_from([1, 7, 64])),
    st.tuples(st.just("get"), st.just(0), st.just(0)),
), max_size=300)


@settings(derandomize=True, max_examples=FUZZ_EXAMPLES, deadline=None)
@given(events, st.integers(1, 6))
def test_fuzz_inbox_never_hangs_a_note_and_stays_bounded(script, capacity):
    """Whatever the producer sends and however slowly the engine reads, a note whose note-on
    reached the engine gets its note-off there if the producer sent one, and the inbox never
    holds more than its capacity plus one note-off per key."""
    from bridge.host import classify_event
    from bridge.inbox import BoundedInbox

    inbox = BoundedInbox(capacity, classify_event)
    sent_held: set[tuple[int, int]] = set()
    seen_held: set[tuple[int, int]] = set()

    def consume(event: object) -> None:
        if isinstance(event, NoteOn):
            seen_held.add((event.channel, event.pitch))
        elif isinstance(event, NoteOff):
            seen_held.discard((event.channel, event.pitch))

    for kind, channel, number in script:
        if kind == "get":
            if inbox.qsize():
                consume(inbox.get(0))
            continue
        if kind == "on":
            inbox.put(_on(number, channel))
            sent_held.add((channel, number))
        elif kind == "off":
            inbox.put(_off(number, channel))
            sent_held.discard((channel, number))
        else:
            inbox.put(ControlChange(number, 5, channel, 0.0))
        assert inbox.qsize() <= capacity + NOTE_KEYS
    for event in _drain(inbox):
        consume(event)
    # Every note the engine still holds is one the producer still holds.
    assert seen_held <= sent_held


def test_router_classifies_raw_messages_like_the_slots():
    from bridge.host import SLOT_INBOX_CAPACITY
    from bridge.router import ROUTER_QUEUE_CAPACITY, classify_raw

    port = "p"
    assert classify_raw((port, [0x90, 60, 1], 0.0))[0].value == "note_on"
    assert classify_raw((port, [0x90, 60, 0], 0.0))[0].value == "note_off"
    assert classify_raw((port, [0x80, 60, 0], 0.0))[0].value == "note_off"
    assert classify_raw((port, [0xB0, 1, 5], 0.0))[0].value == "latest"
    assert classify_raw((port, [0xB0, 64, 5], 0.0))[0].value == "latest_in_order"
    assert classify_raw((port, [0xE0, 0, 64], 0.0))[0].value == "latest"
    assert classify_raw((port, [0xF8], 0.0))[0].value == "droppable"
    assert classify_raw((port, [], 0.0))[0].value == "droppable"
    assert classify_raw(lambda: None)[0].value == "keep"
    assert ROUTER_QUEUE_CAPACITY >= 1024 and SLOT_INBOX_CAPACITY >= 256


def test_router_releases_what_a_port_held_when_it_goes_away():
    from bridge.clock import Transport
    from bridge.host import EngineHost
    from bridge.output import NoteTracker, Scheduler
    from bridge.router import InputRouter

    host = EngineHost(Transport(120.0, "internal"), NoteTracker(), Scheduler())
    dispatched: list = []
    host.dispatch = lambda event, channel=None: dispatched.append(event)  # type: ignore[method-assign]
    router = InputRouter(host, host.transport)
    for data in ([0x90, 60, 100], [0x91, 64, 100], [0x90, 67, 100], [0x80, 67, 0]):
        router.route("keys", data, 0.0)
    dispatched.clear()
    router._release("keys")
    assert sorted((e.channel, e.pitch) for e in dispatched) == [(0, 60), (1, 64)]
    assert all(isinstance(e, NoteOff) for e in dispatched)
    assert router.counters["released_on_disconnect"] == 2


def test_connection_listings_parse():
    from bridge.jack import parse_alsa_connections, parse_jack_connections

    jack = "sb:in\n   peer-send:out\n   other:out\nsb-out:out\n"
    assert parse_jack_connections(jack) == {"sb:in": {"peer-send:out", "other:out"}, "sb-out:out": set()}
    alsa = ('Client 128 : "sb" [User Legacy]\n  Port   0 : "in" (-We-)\n    Connected From: 129:0, 130:1[real:0]\n'
            'Client 129 : "keys" [User Legacy]\n  Port   0 : "out" (R-e-)\n    Connecting To: 128:0\n')
    assert parse_alsa_connections(alsa) == {"sb:in": {"129:0", "130:1"}, "keys:out": set()}


# -- the live bridge ---------------------------------------------------------------------------


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@pytest.mark.jack
def test_midi_flood_is_bounded_counted_and_sigterm_stops_within_two_seconds(start_bridge, peer_for):
    bridge = start_bridge("--slot", "thru=thru@all/1", "--slot", "slow=tests.flood_engines:SlowThru@all/2")
    peer = peer_for(bridge)
    seq_name = f"flood{os.getpid()}"
    loop, notes = flood_pattern(20000)
    seq = midiseq(seq_name, loop, notes)
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and seq_name not in subprocess.run(
                ["jack_lsp"], capture_output=True, text=True).stdout:
            time.sleep(0.05)
        connect(f"{seq_name}:out", f"{bridge.client}:in")
        time.sleep(2.0)
        st = status(bridge)
        slow = st["engines"]["slow"]["inbox"]
        assert slow["dropped_total"] > 0, slow  # the slow engine fell behind: input was dropped...
        assert slow["high_water"] <= slow["capacity"] + NOTE_KEYS, slow  # ...and the queue stayed bounded
        assert st["engines"]["slow"]["queued"] <= slow["capacity"] + NOTE_KEYS
        assert {"queued", "capacity", "high_water", "dropped", "coalesced"} <= set(st["midi_in_queue"])
        assert peer.received  # the bridge kept playing through the flood
        started = time.monotonic()
        bridge.proc.send_signal(signal.SIGTERM)
        bridge.proc.wait(timeout=15)
        assert time.monotonic() - started < 2.5
        assert bridge.proc.returncode == 0
    finally:
        seq.terminate()
        seq.wait(timeout=5)


@pytest.mark.jack
def test_after_a_flood_no_note_hangs(start_bridge, peer_for, capfd):
    bridge = start_bridge("--slot", "thru=thru@all/1", "--slot", "slow=tests.flood_engines:SlowThru@all/2")
    peer = peer_for(bridge)
    second = Listener(f"second{os.getpid()}", bridge.client)  # a note-off the peer misses in a late cycle
    seq_name = f"floodb{os.getpid()}"
    loop, notes = flood_pattern(20000)
    seq = midiseq(seq_name, loop, notes)
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and seq_name not in subprocess.run(
                ["jack_lsp"], capture_output=True, text=True).stdout:
            time.sleep(0.05)
        connect(f"{seq_name}:out", f"{bridge.client}:in")
        time.sleep(2.0)
        subprocess.run(["jack_disconnect", f"{seq_name}:out", f"{bridge.client}:in"], check=True)
    finally:
        seq.terminate()
        seq.wait(timeout=5)
    try:
        # The slow engine works off what it queued (a second or two at most), then nothing sounds.
        quiet = peer.wait_for(lambda: not sounding_for_all(peer, second), 6.0)
        lost = lost_by_peers(capfd.readouterr().err)
        assert lost == 0, f"the test's listeners dropped {lost} messages (a full queue): they cannot tell a hung note"
        assert quiet, (sorted(sounding_for_all(peer, second))[:10], sorted(peer.sounding())[:10],
                       sorted(second.sounding())[:10], len(second.messages()), output_state(bridge, peer))
    finally:
        second.close()


@pytest.mark.jack
def test_a_sender_that_disappears_leaves_no_note_sounding(start_bridge, peer_for):
    bridge = start_bridge("--slot", "rule=rule@all/2", "--slot", "thru=thru@all/1")
    peer = peer_for(bridge)
    for pitch in (60, 64, 67):
        peer.send([0x90, pitch, 100])
    assert peer.wait_for(lambda: len(peer.sounding()) >= 6, 3.0), peer.sounding()
    peer.close_sender()  # the DAW quits with its chord held
    assert peer.wait_for(lambda: not peer.sounding(), 1.5), peer.sounding()
    st = status(bridge)
    assert st["notes_sounding"] == 0
    assert st["midi_in"]["released_on_disconnect"] == 3


@pytest.mark.jack
def test_a_sender_that_leaves_while_another_stays_releases_its_notes(start_bridge, peer_for):
    bridge = start_bridge("--slot", "thru=thru@all/1")
    peer = peer_for(bridge)
    other = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, f"other{os.getpid()}")
    other.open_port(other.get_ports().index(f"{bridge.client}:in"), "out")
    try:
        time.sleep(1.2)  # both senders listed
        peer.send([0x90, 60, 100])
        assert peer.wait_for(lambda: peer.sounding() == {(0, 60)}, 3.0)
        peer.close_sender()
        if not peer.wait_for(lambda: not peer.sounding(), 1.5):  # (once in CI: say what the bridge saw)
            st = status(bridge)
            pytest.fail(f"still sounding {peer.sounding()}; port events {st['ports']['events']}; "
                        f"midi in {st['midi_in']}; {output_state(bridge)}")
        assert any(e.startswith("sender left") for e in status(bridge)["ports"]["events"])
    finally:
        other.close_port()
        other.delete()


@pytest.mark.jack
def test_status_shows_the_web_url_without_its_token(start_bridge):
    bridge = start_bridge("--web-port", "0", "--web-allow-remote", "--web-token", "s3cret-token")
    st = status(bridge)
    assert st["web"].startswith("http://") and st["web"].endswith("/")
    assert "s3cret-token" not in json.dumps(st) and "token" not in st["web"]
    # the surface's refusals and drops are counted where the user looks
    assert {"malformed", "refused", "refused_busy", "dropped_slow"} <= set(st["web_counters"])


@pytest.mark.jack
def test_an_impossible_web_port_is_an_error_never_announced(jack_server):
    done = subprocess.run([sys.executable, "-m", "bridge", "serve", "--backend", "jack", "--client",
                           f"sbweb{os.getpid()}", "--osc-port", "0", "--web-port", "-1", "--duration", "2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=30,
                          env=dict(os.environ, XDG_CONFIG_HOME=tempfile.mkdtemp()))
    assert done.returncode != 0
    assert "online" not in done.stdout
    assert "Traceback" not in done.stderr and "error" in done.stderr and "-1" in done.stderr


# -- a private JACK server left behind ----------------------------------------------------------
def _jackd_pids(server: str) -> list[int]:
    """jackd processes serving ``server`` (named on the command line or by the environment)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
            if not cmd or not cmd[0].endswith(b"jackd"):
                continue
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if server.encode() in cmd or f"JACK_DEFAULT_SERVER={server}".encode() in env:
            pids.append(int(entry.name))
    return pids


def _wait_gone(server: str, timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _jackd_pids(server):
        time.sleep(0.1)
    return _jackd_pids(server)


needs_auto_jack = pytest.mark.skipif(os.path.exists("/dev/snd/seq"),
                                     reason="--backend auto picks the ALSA sequencer here")


@pytest.mark.jack
@needs_auto_jack
def test_a_killed_bridges_private_jack_server_is_not_left_running(tmp_path):
    # A fixed name: jackd reclaims a dead server's registry entry only under the same name,
    # and its registry holds eight servers at most.
    server = "sborphantest"
    env = dict(os.environ, JACK_DEFAULT_SERVER=server, XDG_RUNTIME_DIR=str(tmp_path))
    try:
        first = Bridge(f"sbk{os.getpid()}a", "--backend", "auto", env=env)
        assert "private JACK server" in first.online_line
        first.proc.kill()  # SIGKILL: no chance to stop its server
        first.proc.communicate(timeout=10)
        second = Bridge(f"sbk{os.getpid()}b", "--backend", "auto", env=env)
        assert "private JACK server" in second.online_line  # its own, not the orphan adopted
        code, _, err = second.stop()
        assert code == 0, err
        assert _wait_gone(server, 5.0) == []
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):  # SIGTERM first: jackd leaves the registry
            for pid in _jackd_pids(server):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            _wait_gone(server, 5.0)


def _mark_as_left_by_a_dead_bridge(proc: subprocess.Popen, server: str) -> Path:
    from bridge.jack import pid_file_for

    dead = TiedPopen(["true"])
    dead.wait()

    def read(pid: int, what: str) -> Path:
        return Path(f"/proc/{pid}/{what}")

    stat = read(proc.pid, "stat").read_text()
    mark = {"pid": proc.pid, "start_ticks": int(stat[stat.rfind(")") + 2:].split()[19]),
            "cmdline": [p.decode() for p in read(proc.pid, "cmdline").read_bytes().split(b"\0") if p],
            "server": server, "owner_pid": dead.pid, "owner_start_ticks": 1}
    path = pid_file_for(server)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(mark))
    return path


def test_an_orphan_proven_ours_is_stopped_and_a_users_server_never(tmp_path, monkeypatch):
    """The proof is the pid file's pid, start time and command line; a process stands in
    for the server (the SIGKILL test above runs the real one)."""
    from bridge.jack import reap_orphaned_private_jack

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    server = f"sbreap{os.getpid()}"
    users = TiedPopen(["sleep", "60"])
    orphan = TiedPopen(["sleep", "61"])
    try:
        assert not reap_orphaned_private_jack(server)  # no mark: nothing is ours
        path = _mark_as_left_by_a_dead_bridge(orphan, server)
        assert reap_orphaned_private_jack(server)
        assert orphan.wait(timeout=10) is not None and not path.exists()
        # A mark whose pid now belongs to another process is stale: removed, nothing stopped.
        path = _mark_as_left_by_a_dead_bridge(users, server)
        mark = json.loads(path.read_text())
        path.write_text(json.dumps({**mark, "start_ticks": mark["start_ticks"] + 1}))
        assert not reap_orphaned_private_jack(server)
        assert users.poll() is None and not path.exists()
        # A server whose bridge still runs is that bridge's (here the stand-in owns itself).
        path = _mark_as_left_by_a_dead_bridge(users, server)
        mark = json.loads(path.read_text())
        path.write_text(json.dumps({**mark, "owner_pid": users.pid, "owner_start_ticks": mark["start_ticks"]}))
        assert not reap_orphaned_private_jack(server)
        assert users.poll() is None and path.exists()
    finally:
        for proc in (users, orphan):
            proc.kill()
            proc.wait(timeout=10)

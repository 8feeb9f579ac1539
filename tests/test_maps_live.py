"""Control maps on a running bridge over the JACK dummy server: a second rtmidi client is the
controller (it sends to scorebridge-ctl:in and reads the feedback output), liblo's
oscsend/oscdump and a UDP listener are OSC surfaces."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import rtmidi
from pythonosc.osc_packet import OscPacket, ParseError

from bridge.osc import build_message
from core.children import TiedPopen
from core.engine import Engine, Param
from core.events import EngineInput, EngineOutput
from tests.peer import Listener, sounding_for_all

pytestmark = pytest.mark.jack


class Controller:
    """A MIDI controller: sends to a bridge input, records what a bridge output sends it."""

    def __init__(self, name: str, send_to: str, read_from: str) -> None:
        self.out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, f"{name}-send")
        self.out.open_port(self.out.get_ports().index(send_to), "out")
        self.inp = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, f"{name}-recv", queue_size_limit=8192)
        self.inp.open_port(self.inp.get_ports().index(read_from), "in")
        self.received: list[tuple[float, list[int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    @classmethod
    def for_bridge(cls, bridge, name: str = "knobs") -> Controller:
        return cls(f"{name}{bridge.client}", f"{bridge.client}-ctl:in", f"{bridge.client}-ctl-out:out")

    def _poll(self) -> None:
        while not self._stop.is_set():
            event = self.inp.get_message()
            if event is None:
                time.sleep(0.0005)
                continue
            self.received.append((time.perf_counter(), event[0]))

    def send(self, *data: int) -> None:
        self.out.send_message(list(data))

    def got(self, status: int, number: int) -> list[int]:
        """Values received for one control (CC or note) so far."""
        return [m[2] for _, m in list(self.received) if m[0] == status and m[1] == number]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1)
        for port in (self.out, self.inp):
            port.close_port()
            port.delete()


class OscListener:
    """A subscribed OSC surface that records every message it is sent."""

    def __init__(self, bridge_port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.bridge_port = bridge_port
        self.messages: list[tuple[str, list[Any]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self.send("/scorebridge/subscribe", self.port)
        # The bridge handles OSC in arrival order: once the status reply is back, the
        # subscription is in place (a knob moved right after would otherwise race it).
        self.send("/scorebridge/status")
        if not wait_until(lambda: self.values("/scorebridge/status"), timeout_s=10.0):
            raise TimeoutError("the bridge did not answer /scorebridge/status after subscribe")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, _ = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            try:
                for timed in OscPacket(data).messages:
                    self.messages.append((timed.message.address, list(timed.message.params)))
            except ParseError:
                continue

    def send(self, address: str, *args: Any) -> None:
        self.sock.sendto(build_message(address, *args), ("127.0.0.1", self.bridge_port))

    def values(self, address: str) -> list[Any]:
        return [args[0] for a, args in list(self.messages) if a == address and args]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1)
        self.sock.close()


def wait_until(predicate: Callable[[], Any], timeout_s: float = 3.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.01)
    return predicate()


def oscsend(bridge, *args: str) -> None:
    subprocess.run(["oscsend", "localhost", str(bridge.osc_port), *args], check=True)


@pytest.fixture
def surfaces():
    made: list[Any] = []

    def make(kind: type, *args: Any) -> Any:
        made.append(kind(*args))
        return made[-1]

    yield make
    for item in made:
        item.close()


def test_a_knob_sets_a_parameter_and_controller_notes_never_reach_the_engines(start_bridge, peer_for, surfaces):
    bridge = start_bridge("--map", "generic_8knob", "--no-web")
    peer = peer_for(bridge)
    second = surfaces(Listener, f"second{bridge.client}", bridge.client)  # what the peer may miss
    knobs = surfaces(Controller.for_bridge, bridge)
    osc = surfaces(OscListener, bridge.osc_port)
    knobs.send(0x90, 72, 100)  # a pad/key on the controller is control, not melody
    time.sleep(0.4)
    assert peer.notes() == []
    knobs.send(0xF0, 0x7D, 1, 0xF7)  # SysEx and a clock from the controller: counted, ignored
    knobs.send(0xF8)
    knobs.send(0xB0, 70, 127)  # knob 1 -> rule/velocity 127
    assert wait_until(lambda: 127 in osc.values("/scorebridge/rule/velocity"))
    from tests.test_bridge_live import output_state, status

    counters = status(bridge)["control"]["counters"]
    assert counters["ignored"] == 2 and counters["applied"] == 1 and counters["unmapped"] == 1
    peer.send([0x90, 76, 100])
    assert peer.wait_for(lambda: len(peer.sounding()) >= 3, 2.0)
    assert {m[2] for _, m in peer.notes() if m[0] == 0x91} == {127}
    peer.send([0x80, 76, 0])
    knobs.send(0xB0, 70, 0)  # -> velocity 1 (the declared minimum)
    assert wait_until(lambda: 1 in osc.values("/scorebridge/rule/velocity"))
    # released after a beat of silence (the message says what the bridge was doing if not)
    assert peer.wait_for(lambda: not sounding_for_all(peer, second), 3.0), (
        peer.sounding(), second.sounding(), peer.notes()[-8:], second.notes()[-8:], output_state(bridge, peer),
        status(bridge)["engines"]["rule"])
    before = len(peer.notes())
    peer.send([0x90, 76, 100])  # the same melody note again: the chord now has the new velocity
    assert peer.wait_for(lambda: len(peer.notes()) - before >= 3, 2.0), peer.notes()
    assert {m[2] for _, m in peer.notes()[before:] if m[0] == 0x91} == {1}


def test_feedback_reaches_controllers_and_surfaces_but_not_the_control_that_moved(start_bridge, surfaces):
    bridge = start_bridge("--map", "generic_8knob", "--no-web")
    knobs = surfaces(Controller.for_bridge, bridge)
    osc = surfaces(OscListener, bridge.osc_port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        dump_port = probe.getsockname()[1]  # a free port for oscdump
    dump = TiedPopen(["oscdump", "-L", str(dump_port)], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.3)
        oscsend(bridge, "/scorebridge/subscribe", "i", str(dump_port))
        knobs.send(0xB0, 70, 100)  # from the controller: OSC surfaces see it, the knob is not echoed
        assert wait_until(lambda: 100 in osc.values("/scorebridge/rule/velocity"))
        time.sleep(0.3)
        assert knobs.got(0xB0, 70) == []
        oscsend(bridge, "/scorebridge/rule/velocity", "i", "64")  # from OSC: the knob's LED ring follows
        assert wait_until(lambda: knobs.got(0xB0, 70) == [64])
        knobs.send(0x99, 39, 127)  # pad 4 toggles sevenths on: a pad does not know the state, it is lit
        assert wait_until(lambda: True in osc.values("/scorebridge/rule/sevenths")
                          or 1 in osc.values("/scorebridge/rule/sevenths"))
        assert wait_until(lambda: knobs.got(0x99, 39) == [127])
        oscsend(bridge, "/scorebridge/rule/sevenths", "i", "0")  # turned off elsewhere: the pad goes dark
        assert wait_until(lambda: knobs.got(0x99, 39) == [127, 0])
        knobs.send(0xC0, 1)  # program change 1 selects the thru engine; pad 8 ("thru") lights up
        assert wait_until(lambda: "thru" in osc.values("/scorebridge/rule/engine"))
        assert wait_until(lambda: knobs.got(0x99, 43) == [127])
        time.sleep(0.3)
    finally:
        dump.terminate()
        text = dump.communicate(timeout=5)[0]
    assert "/scorebridge/rule/velocity i 100" in text and '/scorebridge/rule/engine s "thru"' in text


def test_feedback_is_rate_limited_and_ends_on_the_newest_value(start_bridge, surfaces):
    bridge = start_bridge("--map", "generic_8knob", "--no-web")
    knobs = surfaces(Controller.for_bridge, bridge)
    osc = surfaces(OscListener, bridge.osc_port)
    started = time.perf_counter()
    for i in range(300):  # a fast OSC fader: 300 values in about 0.3 s
        osc.send("/scorebridge/rule/velocity", 1 + (i * 7) % 120)
        time.sleep(0.001)
    osc.send("/scorebridge/rule/velocity", 127)
    sending_s = time.perf_counter() - started
    assert wait_until(lambda: knobs.got(0xB0, 70)[-1:] == [127]), knobs.got(0xB0, 70)
    time.sleep(0.2)
    sent = knobs.got(0xB0, 70)
    # At most one CC per 20 ms interval (plus the first and last), not one per OSC message.
    assert len(sent) <= (time.perf_counter() - started) / 0.02 + 2, (len(sent), sending_s)
    assert len(sent) < 100


def test_connect_control_reads_and_lights_an_existing_controller(start_bridge, surfaces):
    hardware_out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, "fakectl")
    hardware_out.open_virtual_port("out")
    hardware_in = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, "fakectl-leds")
    hardware_in.open_virtual_port("in")
    lights: list[list[int]] = []
    hardware_in.set_callback(lambda event, data=None: lights.append(event[0]))
    try:
        bridge = start_bridge("--map", "generic_8knob", "--connect-control", "fakectl", "--no-web")
        osc = surfaces(OscListener, bridge.osc_port)
        from tests.test_bridge_live import status

        assert wait_until(lambda: len(status(bridge)["control"]["inputs"]) == 2 and
                          len(status(bridge)["control"]["feedback_out"]) == 2, 5.0)
        hardware_out.send_message([0xB0, 74, 127])  # knob 5 -> voices 4
        assert wait_until(lambda: 4 in osc.values("/scorebridge/rule/voices"))
        oscsend(bridge, "/scorebridge/rule/voices", "i", "3")
        assert wait_until(lambda: [0xB0, 74, 0] in lights)
    finally:
        for port in (hardware_out, hardware_in):
            port.close_port()
            port.delete()


class AffectListener(Engine):
    """An engine that declares valence and arousal (as the learned engines do), and where its
    affect comes from (as the continuation does), and plays nothing."""

    name = "affect_listener"
    params = (
        Param("valence", "float", 0.0, -1.0, 1.0),
        Param("arousal", "float", 0.0, -1.0, 1.0),
        Param("va_source", "choice", "music", choices=("music", "params")),
    )

    def process(self, event: EngineInput) -> Sequence[EngineOutput]:
        return ()


def test_valence_arousal_override_reaches_engines_that_declare_them(start_bridge, surfaces):
    bridge = start_bridge("--slot", "rule=rule@all/2", "--slot", "va=tests.test_maps_live:AffectListener@all/3",
                          "--map", "generic_8knob", "--no-web")
    knobs = surfaces(Controller.for_bridge, bridge)
    osc = surfaces(OscListener, bridge.osc_port)
    knobs.send(0xB0, 76, 127)  # knob 7: valence +1, shown on surfaces, engines untouched
    assert wait_until(lambda: 1.0 in osc.values("/scorebridge/affect/valence"))
    time.sleep(0.2)
    assert osc.values("/scorebridge/va/valence") == []
    assert osc.values("/scorebridge/va/va_source") == []
    knobs.send(0x99, 42, 100)  # pad 7: override on -> the engine gets the current values
    assert wait_until(lambda: 1.0 in osc.values("/scorebridge/va/valence"))
    assert wait_until(lambda: "params" in osc.values("/scorebridge/va/va_source"))
    knobs.send(0xB0, 77, 0)  # knob 8: arousal -1 goes straight to the engine now
    assert wait_until(lambda: -1.0 in osc.values("/scorebridge/va/arousal"))
    surfaces(OscListener, bridge.osc_port).send("/scorebridge/affect/override", 0)  # another surface: off
    assert wait_until(lambda: "music" in osc.values("/scorebridge/va/va_source")), "va_source is restored"


def test_an_osc_surface_is_not_sent_back_its_own_change(start_bridge, surfaces):
    bridge = start_bridge("--no-web")
    mover = surfaces(OscListener, bridge.osc_port)  # subscribed, and sends from the same port
    watcher = surfaces(OscListener, bridge.osc_port)
    time.sleep(0.2)
    mover.send("/scorebridge/rule/velocity", 99)
    assert wait_until(lambda: 99 in watcher.values("/scorebridge/rule/velocity"))
    time.sleep(0.2)
    assert 99 not in mover.values("/scorebridge/rule/velocity")
    watcher.send("/scorebridge/rule/velocity", 98)
    assert wait_until(lambda: 98 in mover.values("/scorebridge/rule/velocity"))


def test_a_bad_map_stops_serve_naming_file_and_line(tmp_path):
    import sys

    from tests.jackutil import ROOT

    bad = tmp_path / "mine.toml"
    bad.write_text('[[bind]]\ncc = 1\ntarget = "rule/velocity"\n\n[[bind]]\ncc = 2\ntarget = "rule/volume"\n')
    out = subprocess.run([sys.executable, "-m", "bridge", "serve", "--backend", "jack", "--map", str(bad)],
                         cwd=ROOT, capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 1
    assert f"{bad}:7: " in out.stderr and "no parameter 'volume'" in out.stderr and "velocity" in out.stderr

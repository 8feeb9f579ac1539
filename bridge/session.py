"""The bridge session: brings every part up in order, keeps it healthy, and takes it down
with every sounding note released.

States: OFFLINE -> BOOTING -> ONLINE -> STOPPING -> OFFLINE (supriya's server lifecycle).
"""

from __future__ import annotations

import enum
import itertools
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import mido

from bridge import __version__
from bridge import addresses as A
from bridge.affect_follow import AffectFollower
from bridge.clock import Transport
from bridge.config import BridgeConfig
from bridge.control import Controls
from bridge.host import EngineHost
from bridge.jack import JackConnectionWatcher, PrivateJackServer, alsa_connections, jack_connections
from bridge.osc import OscServer
from bridge.output import NoteTracker, Scheduler, all_notes_off
from bridge.ports import InputPort, OutputPort, RtMidiBackend, select_backend
from bridge.ports.base import FanOutPort
from bridge.ports.retuned import RetunedPort
from bridge.router import InputRouter
from bridge.session_osc import install_osc_routes, surface_values
from core.errors import ConfigError, PortError, ScoreBridgeError
from core.events import TICKS_PER_BEAT, NoteOff
from core.tuning import Tuning, load_tuning, preset_names

if TYPE_CHECKING:
    from bridge.web import WebSurface
    from bridge.web.live import LiveView

__all__ = ["Session", "SessionState"]

log = logging.getLogger(__name__)

# After a sender disconnects, its last messages may still be on their way through the input
# thread: the release waits this long and covers what arrived until then.
SENDER_GONE_GRACE_S = 0.05
# The JACK server is taken for gone after this many failed listings in a row (one every
# half second): a loaded server sometimes refuses a single listing client.
JACK_LOST_AFTER_MISSES = 3
# Port events (connections, senders leaving, JACK lost) remembered for ``status``.
PORT_EVENTS_KEPT = 100


class SessionState(enum.Enum):
    OFFLINE = "offline"
    BOOTING = "booting"
    ONLINE = "online"
    STOPPING = "stopping"


class Session:
    def __init__(self, config: BridgeConfig) -> None:
        self.config = config
        self.state = SessionState.OFFLINE
        # Counters of what native libraries reported on stderr (``serve`` sets them:
        # bridge/ports/native_stderr.py), e.g. messages rtmidi's full input queue dropped.
        self.native_counters: Mapping[str, int] = {}
        self.backend: RtMidiBackend | None = None
        self.private_jack: PrivateJackServer | None = None
        self.transport = Transport(config.tempo_bpm, config.clock_mode)
        self.tracker = NoteTracker()
        self.scheduler = Scheduler()
        self.host = EngineHost(self.transport, self.tracker, self.scheduler)
        self.router = InputRouter(self.host, self.transport)
        self.osc = OscServer(config.osc_host, config.osc_port, config.osc_allow_remote,
                             tuple(config.osc_allow))
        # Loads and validates the control maps before anything opens.
        self.controls = Controls(config, self.host, self.transport, self)
        self.affect_follower = AffectFollower(self.host, self.scheduler.at, self.controls.apply, self.running)
        self.controls.bus.add_sink(self.to_surfaces)
        self.web: WebSurface | None = None
        self.live: LiveView | None = None
        self.main_in: InputPort | None = None
        self.main_out: FanOutPort | None = None
        # The main output in the tuning (--tuning-output mts|mpe|none); None in plain 12-TET.
        self.tuned_out: RetunedPort | None = None
        self.tuning = load_tuning(config.tuning, config.kbm) if config.tuning else None
        self.slot_ports: dict[str, OutputPort] = {}
        self.connected_in: dict[str, InputPort] = {}
        self.connected_out: dict[str, OutputPort] = {}
        self.port_events: deque[str] = deque(maxlen=PORT_EVENTS_KEPT)
        self._links = itertools.count()
        self._orphaned: dict[str, list[tuple[int, int]]] = {}
        # Who sends to the main input (JACK/ALSA port names); None until first listed.
        self._in_sources: set[str] | None = None
        self._connection_watcher: JackConnectionWatcher | None = None
        self._jack_misses = 0  # JACK listings in a row that found no server
        self.started_s = 0.0
        self._watch_stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        if self.state is not SessionState.OFFLINE:
            raise ScoreBridgeError(f"session is {self.state.value}, not offline")
        self.state = SessionState.BOOTING
        try:
            self._boot()
        except BaseException:
            self.stop()
            raise
        self.state = SessionState.ONLINE
        self.started_s = time.perf_counter()

    def running(self) -> bool:
        """Booting or online: timed work of the session goes on."""
        return self.state in (SessionState.BOOTING, SessionState.ONLINE)

    def _boot(self) -> None:
        self.backend, self.private_jack = select_backend(self.config.backend)
        self._open_own_ports()
        self.controls.open_ports(self.backend)
        for slot_config in self.config.slots:
            self.host.add_slot(slot_config, self._slot_port(slot_config.out_port))
        if self.config.tuning in preset_names() and self.config.kbm is None:
            self._tune_engines(self.config.tuning)  # a .scl file or a .kbm reaches the output only
        self.router.start()
        self.scheduler.start()
        self.host.start()
        self.host.add_listener(self._param_feedback)
        self.router.on_transport(self._transport_feedback)
        self._open_input()
        install_osc_routes(self.osc, self.controls, self.status)
        self.controls.start()
        self.affect_follower.start()
        self.osc.start()
        self._start_web()
        self._schedule_internal_tick(time.perf_counter() + 0.01)
        self._scan_connections()
        self._watcher = threading.Thread(target=self._watch, name="port-watch", daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        if self.state in (SessionState.OFFLINE, SessionState.STOPPING):
            return
        self.state = SessionState.STOPPING
        self._watch_stop.set()
        self._close_connection_watcher()
        self.router.stop()  # no new input
        released = self.host.panic()  # pending output cancelled, every sounding note released
        self.host.stop()  # workers finish; anything they computed before the panic is dropped
        released += self.tracker.release()
        if released:
            log.info("released %d sounding notes", released)
        self.scheduler.stop()
        if self.live is not None:
            self.live.stop()
        if self.web is not None:
            self.web.stop()
        self.controls.stop()
        self.osc.stop()
        for port in [self.main_in, *self.connected_in.values()]:
            if port is not None:
                port.close()
        for port in [self.main_out, *self.slot_ports.values()]:
            if port is not None:
                port.close()
        if self.private_jack is not None:
            self.private_jack.stop()
        self.state = SessionState.OFFLINE

    def _open_own_ports(self) -> None:
        """The virtual output ports: the main one and one per slot that asks for its own."""
        backend, client = self.backend, self.config.client
        if backend is None:
            return
        self.main_out = FanOutPort(backend.open_virtual_output(f"{client}-out", "out"))
        if self.tuning is not None:
            self.tuned_out = RetunedPort(self.main_out, self.tuning, self.config.tuning_output)
        for slot_config in self.config.slots:
            if slot_config.out_port and slot_config.out_port not in self.slot_ports:
                port = backend.open_virtual_output(f"{client}-{slot_config.out_port}", "out")
                self.slot_ports[slot_config.out_port] = port

    def _slot_port(self, out_port: str | None) -> OutputPort:
        port = self.slot_ports.get(out_port) if out_port else (self.tuned_out or self.main_out)
        if port is None:
            raise PortError(f"output port {out_port or 'main'} is not open")
        return port

    def _open_input(self) -> None:
        if self.backend is not None:
            client = self.config.client
            self.main_in = self.backend.open_virtual_input(client, "in", self.router.handler_for(f"{client}:in"))
            self._watch_jack_connections()

    def _watch_jack_connections(self) -> None:
        """On JACK, hear every sender leave the main input at once (the port listing of the
        watcher thread stays as a fallback, and is all there is on ALSA)."""
        self._close_connection_watcher()
        if self.backend is None or self.backend.name != "jack":
            return
        try:
            self._connection_watcher = JackConnectionWatcher(
                f"{self.config.client}-watch",
                lambda: {self.main_in.name} if self.main_in is not None else set(),
                self._sender_left)
        except (ScoreBridgeError, OSError) as exc:
            log.info("JACK connections are listed every half second only: %s", exc)

    def _close_connection_watcher(self) -> None:
        watcher, self._connection_watcher = self._connection_watcher, None
        if watcher is not None:
            watcher.close()

    def _sender_left(self, port_name: str, when_s: float) -> None:
        """A connection to the main input ended (libjack's notification thread)."""
        self.port_events.append(f"sender left {port_name}")
        until_s = when_s + SENDER_GONE_GRACE_S
        self.scheduler.at(until_s, lambda: self.router.release_port(port_name, before_s=until_s))

    def _jack_lost(self) -> None:
        """The JACK server went away: forget what sounded there, close our ports."""
        log.error("the JACK server went away: every port is closed until it returns")
        self.port_events.append("lost JACK server")
        for port in self.outputs():
            self.tracker.forget_port(port)
        self._release_player_notes()
        for port in [self.main_in, *self.connected_in.values()]:
            if port is not None:
                self.router.release_port(port.name)
        self._in_sources = None
        self._close_connection_watcher()
        self.host.panic()
        for port in [self.main_in, *self.connected_in.values(), *self.outputs()]:
            if port is not None:
                port.close()  # the main output closes its connected ports with it
        self.connected_in.clear()
        self.connected_out.clear()
        self.slot_ports.clear()
        self.main_in = self.main_out = self.tuned_out = None
        self.controls.close_ports()

    def _jack_back(self) -> None:
        self._open_own_ports()
        self.controls.open_ports(self.backend)
        for slot in self.host.slots.values():
            slot.port = self._slot_port(slot.config.out_port)
        self._open_input()
        self.port_events.append("reopened ports on the JACK server")
        log.warning("the JACK server is back: ports reopened")

    def _check_jack(self) -> None:
        """On JACK, notice the server going away and coming back (restarting a private one),
        and senders leaving the main input."""
        if self.backend is None or self.backend.name != "jack":
            return
        listed_s = time.perf_counter()
        try:
            connections = jack_connections()
        except TimeoutError as exc:
            # A slow listing on a loaded machine is not a lost server: closing every port
            # for it would cut every connection the user made.
            log.debug("JACK check skipped: %s", exc)
            return
        up = connections is not None
        if connections is not None:
            self._jack_misses = 0
            # On JACK every sender is a connection: none listed means no one can send note-offs.
            self._check_input_sources(connections, listed_s, release_when_none=True)
        else:
            self._jack_misses += 1
            private_died = self.private_jack is not None and not self.private_jack.running()
            if self._jack_misses < JACK_LOST_AFTER_MISSES and not private_died:
                return  # a busy server can refuse one listing client: not yet a lost one
        if not up and self.main_out is not None:
            self._jack_lost()
        if not up and self.private_jack is not None:
            try:
                self.private_jack.start()
            except ScoreBridgeError as exc:
                log.error("could not restart the private JACK server: %s", exc)
                return
            up = True
        if up and self.main_out is None:
            try:
                self._jack_back()
            except ScoreBridgeError as exc:
                log.warning("JACK is back but the ports could not be reopened yet: %s", exc)

    def _check_input_sources(self, connections: dict[str, set[str]], listed_s: float,
                             release_when_none: bool) -> None:
        """A sender that disconnects from the main input can never send its note-offs: when
        the set of senders shrinks, every note started on the main input before the listing
        and still held is released (rtmidi does not say which sender an event came from).
        With ``release_when_none``, no sender at all also releases them: one that connected
        and left between two listings is never seen."""
        port = self.main_in
        if port is None or port.closed:
            return
        sources = connections.get(port.name)
        if sources is None:
            return  # the port is not listed (yet): nothing to compare
        previous, self._in_sources = self._in_sources, set(sources)
        gone = sorted((previous or set()) - sources)
        if gone:
            self.port_events.append(f"sender left {port.name}: {', '.join(gone)}")
            log.info("%s stopped sending to %s: releasing the notes held there", ", ".join(gone), port.name)
        if gone or (release_when_none and not sources):
            self.router.release_port(port.name, before_s=listed_s)

    def _check_alsa(self) -> None:
        if self.backend is None or self.backend.name != "alsa":
            return
        listed_s = time.perf_counter()
        connections = alsa_connections()
        if connections is not None:
            # An ALSA program may send to the port without subscribing: an empty list proves
            # nothing, only a subscription that ends does.
            self._check_input_sources(connections, listed_s, release_when_none=False)

    # -- internal clock --------------------------------------------------------------
    def _schedule_internal_tick(self, due_s: float) -> None:
        self.scheduler.at(due_s, lambda: self._internal_tick(due_s))

    def _internal_tick(self, due_s: float) -> None:
        if self.state is SessionState.STOPPING:
            return
        self.router.transport_change(lambda: self._clock_tick(due_s))
        interval_s = 60.0 / (self.transport.internal_tempo_bpm * TICKS_PER_BEAT)
        self._schedule_internal_tick(due_s + interval_s)

    def _clock_tick(self, due_s: float) -> list[Any]:
        """One tick of the internal clock (on the router thread), sent as MIDI clock if asked."""
        events = self.transport.internal_tick(due_s)
        out = self.main_out
        if self.config.clock_out and self.transport.source == "internal" and out is not None and not out.closed:
            self.tracker.emit(out, mido.Message("clock"), "clock")
        return events

    # -- connections to existing ports ---------------------------------------------------
    def _own(self, name: str) -> bool:
        return name.startswith(self.config.client) or "scorebridge-list" in name or "scorebridge-probe" in name

    def _scan_connections(self) -> None:
        """Connect to ports matching the configured patterns; notice ports that went away."""
        config = self.config
        if self.backend is None or not (config.connect_in or config.connect_out or config.connect_control):
            return
        with self._lock:
            inputs, outputs = self.backend.list_inputs(), self.backend.list_outputs()
            self._scan(inputs, config.connect_in, self.connected_in, True)
            self._scan(outputs, config.connect_out, self.connected_out, False)
            self.controls.scan(self.backend, inputs, outputs, self._own)

    def _scan(self, present: list[str], patterns: list[str], connected: dict[str, Any], is_input: bool) -> None:
        backend = self.backend
        if backend is None:
            return
        for name in list(connected):
            if name not in present:
                port = connected.pop(name)
                if is_input:
                    # The player's source is gone and can never send its note-offs.
                    self.router.release_port(name)
                elif self.main_out is not None:
                    self.main_out.extra.pop(name, None)
                    self._orphaned[name] = self.tracker.sounding_on(self.main_out)
                    log.warning("output %s disappeared with %d notes sounding; they are released "
                                "if it returns", name, len(self._orphaned[name]))
                port.close()
                self.port_events.append(f"lost {name}")
        for name in present:
            if name in connected or self._own(name):
                continue
            if not any(re.search(p, name, re.IGNORECASE) for p in patterns):
                continue
            client = f"{self.config.client}-link{next(self._links)}"
            try:
                if is_input:
                    connected[name] = backend.connect_input(client, name, self.router.handler_for(name))
                else:
                    connected[name] = backend.connect_output(client, name)
            except (PortError, ScoreBridgeError) as exc:
                log.warning("could not connect to %s: %s", name, exc)
                continue
            self.port_events.append(f"connected {name}")
            if not is_input:
                for channel, note in self._orphaned.pop(name, []):
                    connected[name].send_bytes([0x80 | channel, note, 0])
                if self.main_out is not None:
                    self.main_out.extra[name] = connected[name]
                if self.tuned_out is not None:  # a synth that comes later hears the tuning too
                    for message in self.tuned_out.retuner.start():
                        connected[name].send_bytes(message.bytes())
            log.info("connected %s %s", "from" if is_input else "to", name)

    def _watch(self) -> None:
        while not self._watch_stop.wait(0.5):
            try:
                self._check_jack()
                self._check_alsa()
                if self.main_out is not None:
                    self._scan_connections()
            except ScoreBridgeError as exc:
                log.warning("port scan failed: %s", exc)

    def _release_player_notes(self) -> None:
        """Every key the player holds is let go (an input went away): engines hear note-offs."""
        now = time.perf_counter()
        beats = self.transport.beats_at(now)
        for slot in self.host.slots.values():
            for channel, pitch in slot.held.copy():
                slot.put(NoteOff(pitch, channel, now, beats, self.transport.playing))

    def outputs(self) -> list[OutputPort]:
        """The logical outputs (the main one carries the connected ports with it)."""
        ports = [self.tuned_out or self.main_out, *self.slot_ports.values()]
        return [p for p in ports if p is not None and not p.closed]

    # -- control (the actions of bridge.control.BridgeActions) ----------------------------
    def set_playing(self, playing: bool) -> None:
        now = time.perf_counter()
        self.router.transport_change(lambda: self.transport.set_playing(playing, now))

    def locate(self, beats: float) -> None:
        now = time.perf_counter()
        self.router.transport_change(lambda: self.transport.locate(beats, now))

    def set_tuning(self, name: str) -> None:
        """Play in the preset ``name`` (off: 12-TET) from now on: the main output retunes
        (``RetunedPort.set_tuning``) and every slot whose engine declares ``tuning`` follows."""
        tuning = Tuning.equal() if name == "off" else load_tuning(name)
        if self.tuned_out is not None:
            self.tuned_out.set_tuning(tuning)
        self._tune_engines(name)

    def _tune_engines(self, name: str) -> None:
        for slot_name, slot in self.host.slots.items():
            if any(p.name == "tuning" and name in p.choices for p in slot.engine.params):
                self.controls.apply(f"{slot_name}/tuning", name)

    def to_surfaces(self, address: str, args: tuple[Any, ...], origin: Any) -> None:
        """A change for the OSC subscribers and browsers, not back to the one that made it."""
        exclude = (origin[1], origin[2]) if origin and origin[0] == "osc" else None
        self.osc.feedback(address, *args, exclude=exclude)
        if self.web is not None:
            self.web.feedback(address, args, origin)

    def panic(self) -> int:
        """Release tracked notes, then All Notes Off and sustain off on every channel and port."""
        released = self.host.panic()
        for port in self.outputs():
            for message in all_notes_off():
                self.tracker.emit(port, message, "panic")
        if self.tuned_out is not None:
            self.tuned_out.announce()  # a synth connected since the start hears the tuning
        return released

    def _param_feedback(self, slot: str, name: str, value: Any, origin: Any = None) -> None:
        if name == A.ENGINE:
            self.controls.rebuild()  # targets resolve against the new engine's declarations
            if self.web is not None:
                self.web.describe_changed()
        self.controls.bus.publish(A.address(f"{slot}/{name}"), (value,), origin)

    def _transport_feedback(self, events: list[Any]) -> None:
        bus = self.controls.bus
        bus.publish(A.address(A.PLAYING), (int(self.transport.playing),))
        bus.publish(A.address(A.TEMPO), (float(round(self.transport.tempo_bpm, 2)),))

    def _start_web(self) -> None:
        config = self.config
        if config.web_port is None:
            return
        from bridge.web import WebSurface
        from bridge.web.live import LiveView
        from bridge.web.live import describe as describe_for_web

        if not 0 <= config.web_port <= 65535:
            raise ConfigError(f"web port {config.web_port} is outside 0..65535 (0 = any free port)")
        controls = self.controls
        self.web = WebSurface(self.osc.dispatch, lambda: surface_values(controls), lambda: describe_for_web(controls),
                              config.web_host, config.web_port, config.web_allow_remote, config.web_token)
        try:
            self.web.start()
            if not self.web.running:
                raise ScoreBridgeError(f"the browser surface on {config.web_host}:{config.web_port} "
                                       "stopped at start; choose another port with --web-port")
        except ScoreBridgeError as exc:
            if config.web_port_explicit:
                raise
            log.warning("browser surface not started: %s", exc)
            self.web = None
            return
        self.live = LiveView(self.web, host=self.host, router=self.router, transport=self.transport,
                             tracker=self.tracker, controls=self.controls, affect=self.affect_follower)
        self.live.start()

    def status(self) -> dict[str, Any]:
        now = time.perf_counter()
        return {
            "version": __version__,
            "state": self.state.value,
            "uptime_s": round(now - self.started_s, 1) if self.started_s else 0.0,
            "backend": self.backend.name if self.backend else None,
            "private_jack": self.private_jack is not None,
            "ports": {
                "in": self.main_in.name if self.main_in else None,
                "out": [p.name for p in self.outputs()],
                "connected_in": sorted(self.connected_in),
                "connected_out": sorted(self.connected_out),
                "events": list(self.port_events)[-20:],
            },
            "transport": {
                "source": self.transport.source,
                "playing": self.transport.playing,
                "tempo_bpm": round(self.transport.tempo_bpm, 2),
                "beats": round(self.transport.beats_at(now), 3),
            },
            "osc": dict(self.osc.counters),
            "control": self.controls.status(),
            "web": _without_query(self.web.url) if self.web is not None else None,
            "web_counters": dict(self.web.counters) if self.web is not None else None,
            "osc_subscribers": len(self.osc.subscribers),
            "midi_in": {**self.router.counters,
                        "rtmidi_queue_full": self.native_counters.get("rtmidi_queue_full", 0)},
            "midi_in_queue": self.router.queue.status(),
            "midi_in_per_port": {k: dict(v) for k, v in self.router.per_port.items()},
            "engines": self.host.status(),
            "engine_errors": self.host.engine_errors,
            "notes_sounding": len(self.tracker.sounding()),
            "midi_out": {"sent": self.tracker.sent, "send_errors": self.tracker.send_errors,
                         "stacked_note_ons": self.tracker.stacked},
            "scheduler": {"ran": self.scheduler.ran, "pending": self.scheduler.pending(),
                          "high_water": self.scheduler.high_water,
                          "max_late_ms": round(self.scheduler.max_late_s * 1000, 3)},
        }


def _without_query(url: str) -> str:
    """The URL without its query: a token in it must never reach status replies or logs."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", "", ""))

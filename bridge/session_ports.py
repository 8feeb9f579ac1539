"""The session's MIDI ports: its own virtual ports, the ports it connects to by name pattern,
and the watch that notices senders leaving, ports going away and the JACK server going and
coming back (every half second, and at once through libjack where it can)."""

from __future__ import annotations

import itertools
import logging
import re
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from bridge.jack import JackConnectionWatcher, PrivateJackServer, alsa_connections, jack_connections
from bridge.ports import InputPort, OutputPort, RtMidiBackend, select_backend
from bridge.ports.base import FanOutPort
from bridge.ports.retuned import RetunedPort
from core.errors import PortError, ScoreBridgeError
from core.events import NoteOff
from core.tuning import load_tuning

if TYPE_CHECKING:
    from bridge.clock import Transport
    from bridge.config import BridgeConfig
    from bridge.control import Controls
    from bridge.host import EngineHost
    from bridge.output import NoteTracker, Scheduler
    from bridge.router import InputRouter

__all__ = ["SessionPorts"]

log = logging.getLogger(__name__)

# After a sender disconnects, its last messages may still be on their way into the input's
# queue: the release covers what reached the port until this long after.
SENDER_GONE_GRACE_S = 0.05
# The JACK server is taken for gone after this many failed listings in a row (one every
# half second): a loaded server sometimes refuses a single listing client.
JACK_LOST_AFTER_MISSES = 3
# Port events (connections, senders leaving, JACK lost) remembered for ``status``.
PORT_EVENTS_KEPT = 100


class SessionPorts:
    """The ports of a session and their watch. The session opens them (``open``, then
    ``open_input`` once the router runs), starts the watch, and closes them last."""

    def __init__(self, config: BridgeConfig, *, transport: Transport, tracker: NoteTracker, scheduler: Scheduler,
                 host: EngineHost, router: InputRouter, controls: Controls) -> None:
        self.config = config
        self.transport, self.tracker, self.scheduler = transport, tracker, scheduler
        self.host, self.router, self.controls = host, router, controls
        self.backend: RtMidiBackend | None = None
        self.private_jack: PrivateJackServer | None = None
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
        self._watch_stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- opening and closing -------------------------------------------------------------
    def open(self) -> None:
        """Choose the backend (``--backend``), open the output ports and the control ports."""
        self.backend, self.private_jack = select_backend(self.config.backend)
        self._open_outputs()

    def _open_outputs(self) -> None:
        self._open_own_ports()
        self.controls.open_ports(self.backend)

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

    def slot_port(self, out_port: str | None) -> OutputPort:
        port = self.slot_ports.get(out_port) if out_port else (self.tuned_out or self.main_out)
        if port is None:
            raise PortError(f"output port {out_port or 'main'} is not open")
        return port

    def open_input(self) -> None:
        if self.backend is not None:
            client = self.config.client
            self.main_in = self.backend.open_virtual_input(client, "in", self.router.handler_for(f"{client}:in"))
            self._watch_jack_connections()

    def watch(self) -> None:
        """Connect to the ports the configuration names, then watch every half second."""
        self._scan_connections()
        self._watcher = threading.Thread(target=self._watch, name="port-watch", daemon=True)
        self._watcher.start()

    def stop_watching(self) -> None:
        self._watch_stop.set()
        self._close_connection_watcher()

    def close(self) -> None:
        """Close every port, then the private JACK server if there is one."""
        for port in [self.main_in, *self.connected_in.values()]:
            if port is not None:
                port.close()
        for port in [self.main_out, *self.slot_ports.values()]:
            if port is not None:
                port.close()
        if self.private_jack is not None:
            self.private_jack.stop()

    # -- the watch ------------------------------------------------------------------------
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
        self.scheduler.at(until_s, lambda: self._release_input(port_name, until_s))

    def _release_input(self, port_name: str, cutoff_s: float) -> None:
        """Release the notes held on an input whose sender left (at ``cutoff_s`` or before),
        once all it sent until then is routed: under a flood the input's queue holds seconds
        of it, and a note-on read after the release would sound for ever."""
        port = self.main_in if self.main_in is not None and self.main_in.name == port_name \
            else self.connected_in.get(port_name)
        if port is None or port.closed:
            self.router.release_port(port_name)
        else:
            port.after_input_before(cutoff_s, lambda: self.router.release_port(port_name))

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

    def _jack_serves_us(self) -> bool:
        """Whether the JACK server still serves the bridge's own watching client: libjack tells
        that client when the server goes away."""
        watcher = self._connection_watcher
        return watcher is not None and not watcher.server_gone.is_set()

    def _jack_back(self) -> None:
        self._open_outputs()
        for slot in self.host.slots.values():
            slot.port = self.slot_port(slot.config.out_port)
        self.open_input()
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
            if not private_died and (self._jack_misses < JACK_LOST_AFTER_MISSES or self._jack_serves_us()):
                # A busy server can refuse listing clients, several in a row on a loaded
                # machine: taking it for lost would close every port and cut the connections
                # the user made, with the notes sounding there.
                return
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
        the set of senders shrinks, every note held on the main input once what reached it
        before the listing is routed is released (rtmidi does not say which sender an event
        came from).
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
            self._release_input(port.name, listed_s)

    def _check_alsa(self) -> None:
        if self.backend is None or self.backend.name != "alsa":
            return
        listed_s = time.perf_counter()
        connections = alsa_connections()
        if connections is not None:
            # An ALSA program may send to the port without subscribing: an empty list proves
            # nothing, only a subscription that ends does.
            self._check_input_sources(connections, listed_s, release_when_none=False)

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


    def status(self) -> dict[str, Any]:
        """The ports part of the session's ``status``."""
        return {
            "in": self.main_in.name if self.main_in else None,
            "out": [p.name for p in self.outputs()],
            "connected_in": sorted(self.connected_in),
            "connected_out": sorted(self.connected_out),
            "events": list(self.port_events)[-20:],
        }

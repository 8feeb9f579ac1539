"""The bridge session: brings every part up in order, keeps it healthy, and takes it down
with every sounding note released.

States: OFFLINE -> BOOTING -> ONLINE -> STOPPING -> OFFLINE (supriya's server lifecycle).
"""

from __future__ import annotations

import enum
import logging
import time
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
from bridge.osc import OscServer
from bridge.output import NoteTracker, Scheduler, all_notes_off
from bridge.router import InputRouter
from bridge.session_osc import install_osc_routes, surface_values
from bridge.session_ports import SessionPorts
from core.errors import ConfigError, ScoreBridgeError
from core.events import TICKS_PER_BEAT
from core.tuning import Tuning, load_tuning, preset_names

if TYPE_CHECKING:
    from bridge.web import WebSurface
    from bridge.web.live import LiveView

__all__ = ["Session", "SessionState"]

log = logging.getLogger(__name__)


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
        self.transport = Transport(config.tempo_bpm, config.clock_mode)
        self.tracker = NoteTracker()
        self.scheduler = Scheduler()
        self._tick_chain = 0  # the internal clock's current chain of ticks (_realign_internal_ticks)
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
        # The MIDI ports and their watch (the tuning file is read here, before anything opens).
        self.ports = SessionPorts(config, transport=self.transport, tracker=self.tracker, scheduler=self.scheduler,
                                  host=self.host, router=self.router, controls=self.controls)
        self.started_s = 0.0

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
        self.ports.open()
        for slot_config in self.config.slots:
            self.host.add_slot(slot_config, self.ports.slot_port(slot_config.out_port))
        if self.config.tuning in preset_names() and self.config.kbm is None:
            self._tune_engines(self.config.tuning)  # a .scl file or a .kbm reaches the output only
        self.router.start()
        self.scheduler.start()
        self.host.start()
        self.host.add_listener(self._param_feedback)
        self.router.on_transport(self._transport_feedback)
        self.ports.open_input()
        install_osc_routes(self.osc, self.controls, self.status)
        self.controls.start()
        self.affect_follower.start()
        self.osc.start()
        self._start_web()
        self._schedule_internal_tick(time.perf_counter() + 0.01)
        self.ports.watch()

    def stop(self) -> None:
        if self.state in (SessionState.OFFLINE, SessionState.STOPPING):
            return
        self.state = SessionState.STOPPING
        self.ports.stop_watching()
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
        self.ports.close()
        self.state = SessionState.OFFLINE

    # -- internal clock --------------------------------------------------------------
    def _schedule_internal_tick(self, due_s: float, chain: int = 0) -> None:
        self.scheduler.at(due_s, lambda: self._internal_tick(due_s, chain))

    def _internal_tick(self, due_s: float, chain: int) -> None:
        if self.state is SessionState.STOPPING or chain != self._tick_chain:
            return  # a start or locate began a new chain of ticks: this one ends here
        self.router.transport_change(lambda: self._clock_tick(due_s))
        interval_s = 60.0 / (self.transport.internal_tempo_bpm * TICKS_PER_BEAT)
        self._schedule_internal_tick(due_s + interval_s, chain)

    def _realign_internal_ticks(self, now_s: float) -> None:
        """After a start or locate, the internal clock ticks from that moment: its first tick
        marks the position it starts from at the time the change reported, and its beats fall
        whole beats after it (on the old grid they came up to a tick late)."""
        self._tick_chain += 1
        self._schedule_internal_tick(now_s, self._tick_chain)

    def _clock_tick(self, due_s: float) -> list[Any]:
        """One tick of the internal clock (on the router thread), sent as MIDI clock if asked."""
        events = self.transport.internal_tick(due_s)
        out = self.ports.main_out
        if self.config.clock_out and self.transport.source == "internal" and out is not None and not out.closed:
            self.tracker.emit(out, mido.Message("clock"), "clock")
        return events

    # -- control (the actions of bridge.control.BridgeActions) ----------------------------
    def set_playing(self, playing: bool) -> None:
        now = time.perf_counter()
        self.router.transport_change(lambda: self.transport.set_playing(playing, now))
        if playing and not self.transport.playing:
            self._realign_internal_ticks(now)

    def locate(self, beats: float) -> None:
        now = time.perf_counter()
        self.router.transport_change(lambda: self.transport.locate(beats, now))
        self._realign_internal_ticks(now)

    def set_tuning(self, name: str) -> None:
        """Play in the preset ``name`` (off: 12-TET) from now on: the main output retunes
        (``RetunedPort.set_tuning``) and every slot whose engine declares ``tuning`` follows."""
        tuning = Tuning.equal() if name == "off" else load_tuning(name)
        if self.ports.tuned_out is not None:
            self.ports.tuned_out.set_tuning(tuning)
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
        for port in self.ports.outputs():
            for message in all_notes_off():
                self.tracker.emit(port, message, "panic")
        if self.ports.tuned_out is not None:
            self.ports.tuned_out.announce()  # a synth connected since the start hears the tuning
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
            "backend": self.ports.backend.name if self.ports.backend else None,
            "private_jack": self.ports.private_jack is not None,
            "ports": self.ports.status(),
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

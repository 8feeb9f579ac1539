"""Control from every source, applied one way: OSC, control maps (MIDI controllers and mapped
OSC addresses), the browser surface and MIDI learn all end in ``Controls.apply``, and every
change is published on the feedback bus with its origin.

Controllers have their own MIDI ports (``scorebridge-ctl:in`` and the feedback output
``scorebridge-ctl:out``, plus ``--connect-control PATTERN``), so their CCs and pads never reach
the engines as notes. Their messages are matched against the loaded maps on the ``control``
thread; the player's input never waits for it.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from bridge import addresses as A
from bridge.feedback import ControlFeedback, FeedbackBus, Origin
from bridge.maps import Binding, ControlMap, Target, load_map, resolve_target
from bridge.ports.base import FanOutPort, InputPort, OutputPort
from core.errors import MappingError, PortError, ScoreBridgeError
from core.files import DEFAULT_MAX_FILE_BYTES, check_file, check_folder
from engines import Engine, Param, engine_class, swappable
from midi_maps import maps_dir

if TYPE_CHECKING:
    from bridge.clock import Transport
    from bridge.config import BridgeConfig
    from bridge.host import EngineHost
    from bridge.ports import RtMidiBackend

__all__ = ["MAX_LOCATE_BEATS", "BridgeActions", "Controls", "allowed_folders", "default_learn_map",
           "find_map"]

log = logging.getLogger(__name__)
_STOP = object()
_AFFECT = ("valence", "arousal")
# The furthest song position a locate may ask for: about 5.8 days at 120 BPM, far past any
# song, and small enough that the clock's tick arithmetic stays exact.
MAX_LOCATE_BEATS = 1_000_000.0
_LOCATE = Param("locate", "float", 0.0, 0.0, MAX_LOCATE_BEATS, unit="beats")
_ENABLED = Param("enabled", "bool", True)
_PATH_UNITS = ("file", "folder")


def find_map(name: str) -> Path:
    """A map by path, or a shipped map by name (``generic_8knob`` -> midi_maps/generic_8knob.toml)."""
    path = Path(name)
    if path.exists() or path.suffix or os.sep in name:
        return path
    shipped = maps_dir() / f"{name}.toml"
    if shipped.exists():
        return shipped
    names = sorted(p.stem for p in maps_dir().glob("*.toml"))
    raise MappingError(f"no map file {name!r}; shipped maps: {', '.join(names)}")


def _path_root(param: Param, value: Any) -> Path | None:
    """The folder a path parameter's value stands for: itself (a folder) or its parent (a file)."""
    if param.kind != "text" or param.unit not in _PATH_UNITS or not isinstance(value, str):
        return None
    if not value.strip() or value.strip() == "none":
        return None
    path = Path(os.path.expanduser(value.strip()))
    return path if param.unit == "folder" else path.parent


def allowed_folders(extra: list[Path], slots: list[Any], classes: dict[str, type[Engine]]) -> list[Path]:
    """Where file and folder parameters set from outside may point: ``extra`` (the config
    file's folder, ``--allow-dir``, the ``--va`` curve's folder), ``$SCOREBRIDGE_SNC_DIR`` when
    set, and the folders of the paths the slots were started with (config file, command line)."""
    roots = [Path(p) for p in extra]
    if os.environ.get("SCOREBRIDGE_SNC_DIR"):
        roots.append(Path(os.environ["SCOREBRIDGE_SNC_DIR"]))
    for slot in slots:
        cls = classes.get(slot.name)
        for param in cls.params if cls is not None else ():
            root = _path_root(param, (slot.params or {}).get(param.name, param.default))
            if root is not None:
                roots.append(root)
    resolved: list[Path] = []
    for root in roots:
        try:
            path = root.expanduser().resolve()
        except (OSError, RuntimeError):
            continue  # a folder that cannot be resolved allows nothing
        if path not in resolved:
            resolved.append(path)
    return resolved


def default_learn_map() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "scorebridge" / "learned.toml"


class BridgeActions(Protocol):
    """What control does to the bridge as a whole, beyond its slots (the session implements it)."""

    def panic(self) -> int:
        """Release every sounding note, then All Notes Off everywhere; the notes released."""

    def set_playing(self, playing: bool) -> None:
        """Start or stop the internal transport (on the router thread, as every transport change)."""

    def locate(self, beats: float) -> None:
        """Move the song position (on the router thread)."""

    def to_surfaces(self, address: str, args: tuple[Any, ...], origin: Origin) -> None:
        """A value for the OSC subscribers and browsers, not back to the one in ``origin``."""

    def set_tuning(self, name: str) -> None:
        """Retune the output and every engine that declares ``tuning`` (a preset, or off)."""


class Controls:
    """Applies control to the slots (``host``), the transport and the bridge's actions, and keeps
    the map bindings, affect values and control ports."""

    def __init__(self, config: BridgeConfig, host: EngineHost, transport: Transport,
                 bridge: BridgeActions) -> None:
        from bridge.learn import Learner

        self.config, self.host, self.transport, self.bridge = config, host, transport, bridge
        self.bus = FeedbackBus()
        self.counters: Counter[str] = Counter()
        self.affect: dict[str, Any] = {"valence": 0.0, "arousal": 0.0, "override": False}
        self.tuning = "off" if config.tuning is None else Path(config.tuning).stem
        self._va_source_before: dict[str, Any] = {}  # slot -> its va_source before the override
        slots = {s.name: engine_class(s.engine) for s in config.slots}
        # Engines a live swap may load: the registered ones and those the user named at start.
        self.configured_engines = frozenset(s.engine for s in config.slots)
        self.folders = allowed_folders(list(config.allow_dirs), config.slots, slots)
        self.maps: list[ControlMap] = [load_map(find_map(str(m)), slots) for m in config.control_maps]
        self.learner = Learner(self, config.learn_map or default_learn_map(), slots)
        self._index: dict[tuple[str, int | str], list[Binding]] = {}
        self._targets: dict[str, Target] = {}
        self._lock = threading.Lock()
        self.rebuild()
        self.feedback = ControlFeedback(self.bindings_for, self._feedback_port, self._osc_out,
                                        config.control_feedback_interval_s)
        self.bus.add_sink(self.feedback)
        self.inputs: dict[str, InputPort] = {}
        self.out: FanOutPort | None = None
        self.queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="control", daemon=True)

    # -- bindings ------------------------------------------------------------------------
    def all_maps(self) -> list[ControlMap]:
        return [*self.maps, self.learner.map]

    def rebuild(self) -> None:
        """Index every binding by its control; a learned control overrides the maps' bindings."""
        learned = {b.key for b in self.learner.map.bindings}
        index: dict[tuple[str, int | str], list[Binding]] = {}
        for control_map in self.all_maps():
            for binding in control_map.bindings:
                if binding.key in learned and control_map is not self.learner.map:
                    continue
                index.setdefault((binding.source, binding.number), []).append(binding)
        with self._lock:
            self._index = index
            self._targets = {}

    def slot_engines(self) -> dict[str, type[Engine]]:
        return {name: type(slot.engine) for name, slot in self.host.slots.items()}

    def target(self, path: str) -> Target:
        """The resolved declaration of a target (cached until an engine swap)."""
        cached = self._targets.get(path)
        if cached is None:
            cached = resolve_target(path, self.slot_engines())
            self._targets[path] = cached
        return cached

    def bindings_for(self, path: str) -> list[tuple[Binding, Target]]:
        """Bindings that drive ``path`` (for feedback), with its declaration."""
        found = []
        with self._lock:
            bindings = [b for group in self._index.values() for b in group if b.target == path]
        for binding in bindings:
            try:
                found.append((binding, self.target(path)))
            except MappingError:
                continue  # the slot's engine was swapped for one without that parameter
        return found

    def surface_values(self) -> list[tuple[str, float]]:
        """The value each map-bound OSC address shows now (for a surface that just connected)."""
        with self._lock:
            bindings = [b for group in self._index.values() for b in group if b.source == "osc"]
        values = []
        for binding in bindings:
            try:
                target = self.target(binding.target)
                raw = None if target.is_trigger else binding.raw_for(target, self.current(binding.target))
            except ScoreBridgeError:
                continue
            if raw is not None:
                values.append((str(binding.number), binding.in_min + (binding.in_max - binding.in_min) * raw / 127))
        return values

    # -- applying control ----------------------------------------------------------------
    def current(self, path: str) -> Any:
        if path == A.PLAYING:
            return self.transport.playing
        if path == A.TEMPO:
            return self.transport.internal_tempo_bpm
        if path == A.TUNING:
            return self.tuning
        if path.startswith("affect/"):
            return self.affect.get(path.partition("/")[2])
        slot_name, _, name = path.partition("/")
        slot = self.host.slot(slot_name)
        if name == A.ENGINE:
            return slot.engine.name
        if name == A.ENABLED:
            return slot.enabled
        return slot.values.get(name)

    def apply(self, path: str, value: Any, origin: Origin = None) -> Any:
        """Apply one change from any source; raises ScoreBridgeError/ValueError when refused."""
        if path == A.PANIC:
            released = self.bridge.panic()
            self.bus.publish(A.address(A.PANIC_DONE), (released,), origin)
            return released
        actions = A.actions()
        if path in (A.START, A.STOP, A.PLAYING):
            playing = path == A.START or (path == A.PLAYING and actions[path].coerce(value))
            self.bridge.set_playing(playing)
            return playing
        if path == A.TEMPO:
            tempo = float(actions[path].coerce(value))
            self.transport.set_tempo(tempo)
            self.bus.publish(A.address(A.TEMPO), (tempo,), origin)
            return tempo
        if path == A.TUNING:
            name = actions[path].coerce(value)
            self.bridge.set_tuning(name)
            self.tuning = name
            self.bus.publish(A.address(A.TUNING), (name,), origin)
            return name
        if path == A.LOCATE:
            beats = float(_LOCATE.coerce(value))
            self.bridge.locate(beats)
            return beats
        if path.startswith("affect/"):
            return self._set_affect(path, value, origin)
        slot_name, sep, name = path.partition("/")
        if not sep or not name or "/" in name:
            raise ScoreBridgeError(f"{A.address(path)} is not an address of this bridge")
        host = self.host
        if name == A.ENGINE:
            engine = swappable(value, self.configured_engines)  # before anything is imported
            host.swap(slot_name, engine, origin)
            return engine
        if name == A.ENABLED:
            enabled = _ENABLED.coerce(value)
            host.set_enabled(slot_name, enabled, origin)
            return enabled
        return host.set_param(slot_name, name, self._checked_path(slot_name, name, value), origin)

    def _checked_path(self, slot_name: str, name: str, value: Any) -> Any:
        """A file or folder parameter's value, resolved and checked against the allowed
        folders (ParameterError if refused); any other value as it is."""
        param = type(self.host.slot(slot_name).engine).declaration(name)
        if param.kind != "text" or param.unit not in _PATH_UNITS:
            return value
        text = param.coerce(value)
        if text == "none":
            return text
        default_root = _path_root(param, param.default)
        folders = [*self.folders, *([default_root.expanduser().resolve()] if default_root else [])]
        if param.unit == "folder":
            return str(check_folder(text, folders, name))
        return str(check_file(text, folders, param.max_bytes or DEFAULT_MAX_FILE_BYTES, name))

    def _set_affect(self, path: str, value: Any, origin: Origin) -> Any:
        name = path.partition("/")[2]
        param = resolve_target(path, {}).param
        if param is None:
            raise ScoreBridgeError(f"{A.address(path)}: unknown affect value; valid: valence, arousal, override")
        coerced = param.coerce(value)
        self.affect[name] = coerced
        self.bus.publish(A.address(path), (float(coerced) if name in _AFFECT else int(coerced),), origin)
        if self.affect["override"]:
            # An engine that leads the affect (a va slot) is not written back into: its own
            # valence/arousal parameters are its hand override, not a copy of what it plays.
            leader = origin[1] if origin and origin[0] == "engine" else None
            for slot_name, slot in self.host.slots.items():
                if slot_name == leader:
                    continue
                declared = {p.name for p in type(slot.engine).params}
                for key in _AFFECT:
                    if key in declared and (name == "override" or name == key):
                        self.host.set_param(slot_name, key, self.affect[key], origin)
                if name == "override" and "va_source" in declared and slot_name not in self._va_source_before:
                    # an engine that can take its affect from the player's notes (the continuation)
                    # follows the bridge's affect while the override is on
                    self._va_source_before[slot_name] = slot.engine.param("va_source")
                    self.host.set_param(slot_name, "va_source", "params", origin)
        elif name == "override":  # off: engines switched above go back to where they took it from
            for slot_name, before in self._va_source_before.items():
                if slot_name in self.host.slots:
                    self.host.set_param(slot_name, "va_source", before, origin)
            self._va_source_before.clear()
        return coerced

    def fire(self, binding: Binding, raw: int, norm: float, pressed: bool, origin: Origin) -> None:
        """Apply one control input through one binding (errors are counted, never raised)."""
        try:
            target = self.target(binding.target)
            current = None if target.is_trigger else self.current(binding.target)
            value = binding.value_for(target, raw, norm, pressed, current)
            if value is None:
                return
            if not target.is_trigger and value == current:
                self.counters["unchanged"] += 1  # no change, no feedback: keeps motor faders still
                return
            self.apply(binding.target, value, origin)
            self.counters["applied"] += 1
        except (ScoreBridgeError, ValueError, TypeError) as exc:
            self.counters["rejected"] += 1
            log.warning("%s -> %s refused: %s", binding.describe_source(), binding.target, exc)

    # -- MIDI control input (the control thread) ------------------------------------------
    def handler_for(self, port_name: str) -> Callable[[list[int], float], None]:
        put = self.queue.put

        def handler(data: list[int], arrival_s: float) -> None:
            put((port_name, data))

        return handler

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is _STOP:
                return
            _port_name, data = item  # type: ignore[misc]
            self.on_midi(data)

    def on_midi(self, data: list[int]) -> None:
        """Match one raw message from a controller against the maps (or learn it)."""
        if len(data) < 2 or data[0] < 0x80 or data[0] >= 0xF0 or any(b > 0x7F for b in data[1:]):
            self.counters["ignored"] += 1
            return
        kind, channel = data[0] & 0xF0, data[0] & 0x0F
        if kind == 0xB0 and len(data) == 3:
            source, number, raw, pressed = "cc", data[1], data[2], data[2] > 0
        elif kind in (0x80, 0x90) and len(data) == 3:
            source, number, raw = "note", data[1], data[2] if kind == 0x90 else 0
            pressed = raw > 0
        elif kind == 0xC0:
            source, number, raw, pressed = "program", data[1], data[1], True
        else:
            self.counters["ignored"] += 1
            return
        self.counters["midi_in"] += 1
        if self.learner.armed and pressed:
            self.learner.capture(source, channel, number, raw)
            return
        origin = ("midi", source, channel, number)
        with self._lock:
            bindings = [b for b in self._index.get((source, number), ()) if b.channel in (None, channel)]
        if source != "program":
            absolute = any(b.scale in ("linear", "log") for b in bindings)
            self.feedback.control_moved((source, channel, number), raw, absolute)
        for binding in bindings:
            self.fire(binding, raw, raw / 127, pressed, origin)
        if not bindings:
            self.counters["unmapped"] += 1

    def on_osc(self, address: str, args: list[Any], origin: Origin) -> bool:
        """An OSC (or browser) message outside /scorebridge/: a map-bound address, or learn."""
        if self.learner.armed:
            self.learner.capture("osc", None, address, 127)
            return True
        with self._lock:
            bindings = list(self._index.get(("osc", address), ()))
        if not bindings:
            return False
        for binding in bindings:
            value = float(args[0]) if args and isinstance(args[0], (int, float)) else 1.0
            norm = min(1.0, max(0.0, (value - binding.in_min) / (binding.in_max - binding.in_min)))
            self.fire(binding, round(norm * 127), norm, norm > 0, origin)
        return True

    # -- ports ---------------------------------------------------------------------------
    def open_ports(self, backend: RtMidiBackend | None) -> None:
        client = self.config.client
        if backend is None:
            return
        name = f"{client}-ctl"
        self.inputs[f"{name}:in"] = backend.open_virtual_input(name, "in", self.handler_for(f"{name}:in"))
        self.out = FanOutPort(backend.open_virtual_output(f"{name}-out", "out"))

    def close_ports(self) -> None:
        for port in self.inputs.values():
            port.close()
        self.inputs.clear()
        if self.out is not None:
            self.out.close()
            self.out = None

    def scan(self, backend: RtMidiBackend | None, present_inputs: list[str], present_outputs: list[str],
             own: Callable[[str], bool]) -> None:
        """Connect to controllers matching ``--connect-control`` (both directions)."""
        patterns = self.config.connect_control
        if backend is None or not patterns:
            return
        main = f"{self.config.client}-ctl:in"
        for name in list(self.inputs):
            if name != main and name not in present_inputs:
                self.inputs.pop(name).close()
        if self.out is not None:
            for name in list(self.out.extra):
                if name not in present_outputs:
                    self.out.extra.pop(name).close()
        for name in present_inputs:
            if name not in self.inputs and not own(name) and _matches(name, patterns):
                try:
                    self.inputs[name] = backend.connect_input(f"{self.config.client}-ctl-link",
                                                              name, self.handler_for(name))
                    log.info("control input from %s", name)
                except (PortError, ScoreBridgeError) as exc:
                    log.warning("could not connect to controller %s: %s", name, exc)
        for name in present_outputs:
            if self.out is not None and name not in self.out.extra and not own(name) and _matches(name, patterns):
                try:
                    self.out.extra[name] = backend.connect_output(f"{self.config.client}-ctl-link", name)
                    log.info("control feedback to %s", name)
                except (PortError, ScoreBridgeError) as exc:
                    log.warning("could not connect to controller %s: %s", name, exc)

    def _feedback_port(self) -> OutputPort | None:
        return self.out

    def _osc_out(self, address: str, value: float, origin: Origin) -> None:
        self.bridge.to_surfaces(address, (value,), origin)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self.feedback.start()
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self.queue.put(_STOP)
            self._thread.join(timeout=2)
        self.feedback.stop()
        self.close_ports()

    def status(self) -> dict[str, Any]:
        return {
            "maps": [str(m.path) for m in self.maps],
            "learn_map": str(self.learner.path),
            "learn_armed": self.learner.armed,
            "bindings": sum(len(m.bindings) for m in self.all_maps()),
            "inputs": sorted(self.inputs),
            "feedback_out": [self.out.name, *sorted(self.out.extra)] if self.out is not None else [],
            "counters": dict(self.counters),
            "feedback": dict(self.feedback.counters),
            "affect": dict(self.affect),
        }


def _matches(name: str, patterns: list[str]) -> bool:
    return any(re.search(p, name, re.IGNORECASE) for p in patterns)

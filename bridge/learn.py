"""MIDI learn: arm a target (``/scorebridge/learn slot/param`` over OSC or from the browser),
move a control, and the binding is added to the user's learn map and saved atomically.

What is learned depends on the control and the target: a knob or fader (CC, or a mapped OSC
address) drives a numeric or choice target linearly and toggles an on/off one; a pad (note) or
a program change toggles an on/off target, fires an action, or recalls the value the target
has when it is learned (a snapshot, e.g. "this pad selects the thru engine"). A control that is
learned again replaces its old binding. Edit the file to change the scaling (docs/control.md).
The file is written atomically (a temporary file in its folder, then a rename) and holds at most
MAX_BINDINGS bindings, those kept for other configurations included.
"""

from __future__ import annotations

import glob
import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.addresses import LEARN, LEARN_DONE, LEARN_ERROR, address
from bridge.maps import (
    MAX_BINDINGS,
    Binding,
    ControlMap,
    parse_binding,
    parse_map,
    parse_toml,
    read_map_text,
    resolve_target,
    save_map,
)
from core.errors import MappingError
from engines import Engine

if TYPE_CHECKING:
    from bridge.control import Controls

__all__ = ["Learner"]

log = logging.getLogger(__name__)

# A save takes milliseconds: a temporary file this old was left by a bridge that was killed.
_STALE_TEMPORARY_S = 60.0


class Learner:
    """The armed target and the learn map (loaded at start if the file exists)."""

    def __init__(self, controls: Controls, path: Path, slots: dict[str, type[Engine]]) -> None:
        self.controls = controls
        self.path = Path(path)
        self.armed: str | None = None
        self.learned = 0
        self._lock = threading.Lock()
        # Bindings learned under another slot configuration: kept in the file, not used.
        self.unused_tables: list[dict[str, Any]] = []
        self._remove_stale_temporaries()
        if self.path.exists():
            self.map = self._load(slots)
        else:
            self.map = ControlMap(self.path, name="learned", description="Bindings made with MIDI learn")

    def _remove_stale_temporaries(self) -> None:
        """Temporary files of a save that a killed bridge never finished (save_map's names);
        recent ones may belong to another bridge saving the same map right now."""
        now = time.time()
        for leftover in self.path.parent.glob(f".{glob.escape(self.path.name)}.*.tmp"):
            try:
                if now - leftover.stat().st_mtime > _STALE_TEMPORARY_S:
                    leftover.unlink()
                    log.info("removed %s, left by an interrupted save of the learn map", leftover)
            except OSError as exc:
                log.warning("cannot remove %s (left by an interrupted save): %s", leftover, exc.strerror or exc)

    def _load(self, slots: dict[str, type[Engine]]) -> ControlMap:
        """The learn map, tolerant of bindings for slots or engines this session does not run:
        the file is the user's record of every session, so those are warned about and kept."""
        text = read_map_text(self.path)  # unreadable, too large or not UTF-8: the user's to fix
        try:
            return parse_map(text, self.path, slots)
        except MappingError as exc:
            first_problem = exc
        try:
            data = parse_toml(text, self.path)
        except MappingError:
            raise first_problem from None  # a broken file is the user's to fix: say where
        header = data.get("map", {}) if isinstance(data.get("map"), dict) else {}
        bindings = []
        tables = data.get("bind", []) if isinstance(data.get("bind"), list) else []
        if len(tables) > MAX_BINDINGS:
            raise first_problem  # parse_map's message: too many bindings
        for table in (t for t in tables if isinstance(t, dict)):
            try:
                bindings.append(parse_binding(table, slots, self.path, 0))
            except MappingError:
                self.unused_tables.append(table)
        log.warning("%s; %d learned binding(s) that do not fit this configuration are kept in the "
                    "file but not used", first_problem, len(self.unused_tables))
        return ControlMap(self.path, str(header.get("name", "learned")),
                          str(header.get("description", "Bindings made with MIDI learn")),
                          bool(header.get("feedback", True)), bindings)

    def arm(self, target: str) -> None:
        """Arm ``target`` (validated against the running engines); the next control binds to it."""
        resolve_target(target, self.controls.slot_engines())
        with self._lock:
            self.armed = target
        self.controls.bus.publish(address(LEARN), (target,), None)
        log.info("learn: move a control to bind it to %s", target)

    def cancel(self) -> None:
        with self._lock:
            self.armed = None
        self.controls.bus.publish(address(LEARN), ("",), None)

    def capture(self, source: str, channel: int | None, number: int | str, raw: int) -> Binding | None:
        """Bind the control that just moved to the armed target and save the learn map."""
        with self._lock:
            target, self.armed = self.armed, None
        if target is None:
            return None
        table = self._table(source, channel, number, target)
        try:
            binding = parse_binding(table, self.controls.slot_engines(), self.path, 0)
            kept = [b for b in self.map.bindings if b.key != binding.key]
            if len(kept) + len(self.unused_tables) >= MAX_BINDINGS:
                raise MappingError(f"{self.path} already holds {MAX_BINDINGS} bindings, the most a map may "
                                   "hold: remove some from the file (or learn onto a control bound before)")
            updated = ControlMap(self.path, self.map.name, self.map.description, self.map.feedback,
                                 [*kept, binding])
            save_map(updated, self.path, self.unused_tables)
        except (MappingError, OSError) as exc:
            log.error("learn %s -> %s failed: %s", source, target, exc)
            self.controls.bus.publish(address(LEARN_ERROR), (f"{target}: {exc}",), None)
            return None
        self.map = updated
        self.learned += 1
        self.controls.rebuild()
        log.info("learned %s -> %s (saved to %s)", binding.describe_source(), target, self.path)
        self.controls.bus.publish(address(LEARN_DONE), (target, binding.describe_source()), None)
        self.controls.bus.publish(address(LEARN), ("",), None)
        return binding

    def _table(self, source: str, channel: int | None, number: int | str, target_path: str) -> dict[str, Any]:
        table: dict[str, Any] = {source: number, "target": target_path}
        if channel is not None:
            table["channel"] = channel + 1
        target = resolve_target(target_path, self.controls.slot_engines())
        param = target.param
        if param is None:
            table["scale"] = "trigger"
        elif param.kind == "bool":
            table["scale"] = "toggle"
        elif source in ("note", "program"):
            table["scale"] = "fixed"
            table["value"] = self.controls.current(target_path)
        else:
            table["scale"] = "linear"
        return table

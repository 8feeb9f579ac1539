"""What a control can drive: engine parameters of a slot and the bridge's own actions, each
with a declaration (``core.engine.Param``) that maps, learn and surfaces validate against.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bridge.addresses import ENABLED, ENGINE
from bridge.addresses import actions as bridge_actions
from core.engine import Engine, Param
from core.errors import MappingError, ParameterError

__all__ = ["Target", "resolve_target"]


@dataclass(frozen=True)
class Target:
    """What a binding drives: a parameter-like declaration, or a trigger (``param`` None)."""

    path: str  # the OSC address after /scorebridge/, e.g. "rule/velocity", "panic"
    param: Param | None

    @property
    def is_trigger(self) -> bool:
        return self.param is None


def resolve_target(path: str, slots: Mapping[str, type[Engine]]) -> Target:
    """The declaration behind ``path`` (``slot/param`` or a bridge action), or MappingError."""
    actions = bridge_actions()
    if path in actions:
        return Target(path, actions[path])
    slot, sep, name = path.partition("/")
    if not sep or "/" in name or not name:
        raise MappingError(f"target {path!r} is neither SLOT/PARAM nor a bridge action; "
                           f"actions: {', '.join(actions)}; slots: {', '.join(slots) or 'none'}")
    if slot not in slots:
        raise MappingError(f"target {path!r}: no slot {slot!r}; slots: {', '.join(slots) or 'none'}")
    engine = slots[slot]
    if name == ENGINE:
        from engines import available_engines

        choices = tuple(sorted(available_engines()))
        if engine.name and engine.name not in choices:
            choices += (engine.name,)
        return Target(path, Param(ENGINE, "choice", engine.name or choices[0], choices=choices))
    if name == ENABLED:
        return Target(path, Param(ENABLED, "bool", True))
    try:
        return Target(path, engine.declaration(name))
    except ParameterError:
        valid = ", ".join([ENGINE, ENABLED, *(p.name for p in engine.params)])
        raise MappingError(f"target {path!r}: engine {engine.name!r} in slot {slot!r} has no "
                           f"parameter {name!r}; valid: {valid}") from None

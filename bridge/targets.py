"""What a control can drive: engine parameters of a slot and the bridge's own actions, each
with a declaration (``core.engine.Param``) that maps, learn and surfaces validate against.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from core.errors import MappingError, ParameterError
from core.engine import Engine, Param

__all__ = ["Target", "bridge_targets", "resolve_target"]


@dataclass(frozen=True)
class Target:
    """What a binding drives: a parameter-like declaration, or a trigger (``param`` None)."""

    path: str  # the OSC address after /scorebridge/, e.g. "rule/velocity", "panic"
    param: Param | None

    @property
    def is_trigger(self) -> bool:
        return self.param is None


def bridge_targets() -> dict[str, Param | None]:
    """Bridge actions that are not engine parameters (None = a trigger)."""
    return {
        "panic": None,
        "transport/start": None,
        "transport/stop": None,
        "transport/playing": Param("playing", "bool", False, doc="Internal transport running"),
        "transport/tempo": Param("tempo", "float", 120.0, 20.0, 400.0, unit="BPM"),
        "affect/valence": Param("valence", "float", 0.0, -1.0, 1.0, doc="Valence override"),
        "affect/arousal": Param("arousal", "float", 0.0, -1.0, 1.0, doc="Arousal override"),
        "affect/override": Param("override", "bool", False, doc="Send the valence/arousal override "
                                 "to every engine that declares valence/arousal parameters"),
    }


def resolve_target(path: str, slots: Mapping[str, type[Engine]]) -> Target:
    """The declaration behind ``path`` (``slot/param`` or a bridge action), or MappingError."""
    actions = bridge_targets()
    if path in actions:
        return Target(path, actions[path])
    slot, sep, name = path.partition("/")
    if not sep or "/" in name or not name:
        raise MappingError(f"target {path!r} is neither SLOT/PARAM nor a bridge action; "
                           f"actions: {', '.join(actions)}; slots: {', '.join(slots) or 'none'}")
    if slot not in slots:
        raise MappingError(f"target {path!r}: no slot {slot!r}; slots: {', '.join(slots) or 'none'}")
    engine = slots[slot]
    if name == "engine":
        from engines import available_engines

        choices = tuple(sorted(available_engines()))
        if engine.name and engine.name not in choices:
            choices += (engine.name,)
        return Target(path, Param("engine", "choice", engine.name or choices[0], choices=choices))
    if name == "enabled":
        return Target(path, Param("enabled", "bool", True))
    try:
        return Target(path, engine.declaration(name))
    except ParameterError:
        valid = ", ".join(["engine", "enabled", *(p.name for p in engine.params)])
        raise MappingError(f"target {path!r}: engine {engine.name!r} in slot {slot!r} has no "
                           f"parameter {name!r}; valid: {valid}") from None

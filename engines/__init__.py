"""Engines and their registry.

Built-in engines are listed here; third-party engines register under the entry-point group
``scorebridge.engines`` (``name = "package.module:EngineClass"``), and a config file may also
name a class directly as ``"package.module:EngineClass"``. A running bridge swaps a slot's
engine only to one of those (``swappable``): a name that arrives from outside is checked
before anything is imported, since importing a module runs its code.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable
from importlib.metadata import entry_points

from core.engine import Engine, EngineContext, Param
from core.errors import EngineError

__all__ = ["Engine", "EngineContext", "Param", "available_engines", "engine_class", "swappable",
           "ENTRY_POINT_GROUP", "MAX_ENGINE_NAME"]

ENTRY_POINT_GROUP = "scorebridge.engines"
_BUILTIN = {
    "rule": "engines.rule:RuleHarmonizer",
    "harmonizer": "engines.harmonizer.engine:LearnedHarmonizer",
    "continuation": "engines.continuation.engine:ContinuationEngine",
    "thru": "engines.thru:Thru",
    "snc": "engines.snc_player.engine:SncEngine",
    "va": "engines.va.live:VAAutomation",
}
log = logging.getLogger(__name__)
# The longest engine name or 'module:Class' reference accepted from outside.
MAX_ENGINE_NAME = 200


def _load(spec: str) -> type[Engine]:
    module_name, _, attr = spec.partition(":")
    if not attr:
        raise EngineError(f"engine reference {spec!r} must look like 'package.module:Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EngineError(f"cannot import engine module {module_name!r}: {exc}") from exc
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, Engine)):
        raise EngineError(f"{spec!r} is not an Engine subclass")
    return cls


def available_engines() -> dict[str, str]:
    """Engine name -> 'module:Class' for built-ins and installed entry points."""
    found = dict(_BUILTIN)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _BUILTIN:
            continue
        found[ep.name] = ep.value
    return found


def engine_class(name: str) -> type[Engine]:
    """Resolve an engine by registered name or by 'package.module:Class'."""
    if ":" in name:
        return _load(name)
    registry = available_engines()
    if name not in registry:
        raise EngineError(f"unknown engine {name!r}; available: {', '.join(sorted(registry))}")
    return _load(registry[name])


def swappable(name: object, configured: Iterable[str] = ()) -> str:
    """``name`` if a running slot may switch to it: a registered engine (built-in or entry point)
    or one of the ``configured`` references (the ``--slot`` and config-file engines the user
    named at start). Raises EngineError otherwise, before anything is imported."""
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_ENGINE_NAME:
        raise EngineError(f"an engine is named by a text of 1..{MAX_ENGINE_NAME} characters, not "
                          f"{str(name)[:60]!r}")
    name = name.strip()
    allowed = set(available_engines()) | set(configured)
    if name not in allowed:
        raise EngineError(f"{name[:80]!r} is not a registered engine; a slot can switch to "
                          f"{', '.join(sorted(allowed))} (register an engine under the entry-point "
                          f"group {ENTRY_POINT_GROUP} or name it with --slot / in the config file)")
    return name

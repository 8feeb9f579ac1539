"""Listening contexts: named mixes plus an output stage and a layout (docs/snc_player.md).

A context comes from (later wins) the built-in presets below, the file's manifest
(``contexts``: karaoke/focus written by the encoder), then a user TOML file::

    [contexts.night]
    gains_db = { "@vocals" = 2.0 }          # a stem name, or @role for every stem of that role
    level_db = 0.0
    eq = [ { kind = "lowshelf", freq_hz = 200, gain_db = 3 } ]
    dynamics = { threshold_db = -30, ratio = 4, makeup_db = 8, ceiling_db = -3 }

Keys: ``gains_db``, ``pans``, ``mute`` (list), ``level_db``, ``eq`` (list of bands),
``dynamics``, ``layout`` (stereo, binaural, multichannel), ``positions`` (azimuth in degrees
for binaural), ``outputs`` and ``routes`` (multichannel: stem or @role -> 1-based ports).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import ConfigError, ParameterError
from engines.snc.manifest import StemInfo
from engines.snc_player.effects import DynamicsSpec, EqBand
from engines.snc_player.mixer import SILENCE_DB

__all__ = ["Context", "BUILTIN", "LAYOUTS", "load_contexts", "parse_context"]

LAYOUTS = ("stereo", "binaural", "multichannel")
_KEYS = {
    "gains_db",
    "pans",
    "mute",
    "level_db",
    "eq",
    "dynamics",
    "layout",
    "positions",
    "outputs",
    "routes",
    "description",
}


@dataclass(frozen=True)
class Context:
    name: str
    description: str = ""
    gains_db: Mapping[str, float] = field(default_factory=dict)
    pans: Mapping[str, float] = field(default_factory=dict)
    mute: tuple[str, ...] = ()
    level_db: float = 0.0
    eq: tuple[EqBand, ...] = ()
    dynamics: DynamicsSpec | None = None
    layout: str = "stereo"
    positions: Mapping[str, float] = field(default_factory=dict)
    outputs: int = 2
    routes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    def stems_matching(self, key: str, stems: Sequence[StemInfo]) -> list[str]:
        """``name`` -> that stem; ``@role`` -> every stem of that role."""
        if key.startswith("@"):
            return [s.name for s in stems if s.role == key[1:]]
        return [s.name for s in stems if s.name == key]

    def mix_for(self, stems: Sequence[StemInfo]) -> dict[str, dict[str, float | bool]]:
        """Per-stem settings this context gives (stems it does not name stay at the default)."""
        mix: dict[str, dict[str, float | bool]] = {
            s.name: {"gain_db": 0.0, "pan": 0.0, "mute": False, "solo": False} for s in stems
        }
        for key, value in self.gains_db.items():
            for name in self.stems_matching(key, stems):
                mix[name]["gain_db"] = max(SILENCE_DB, min(24.0, float(value)))
        for key, value in self.pans.items():
            for name in self.stems_matching(key, stems):
                mix[name]["pan"] = float(value)
        for key in self.mute:
            for name in self.stems_matching(key, stems):
                mix[name]["mute"] = True
        return mix


def _night() -> Context:
    return Context(
        "night",
        "quiet listening: loudness held down, dynamic range reduced (4:1 above -30 dBFS)",
        dynamics=DynamicsSpec(
            threshold_db=-30.0, ratio=4.0, attack_ms=10.0, release_ms=250.0, makeup_db=4.0, ceiling_db=-6.0
        ),
        level_db=-6.0,
    )


def _car() -> Context:
    return Context(
        "car",
        "road noise: +3 dB, low-mid lift (+4 dB shelf under 200 Hz, +2 dB at 400 Hz), limiter",
        level_db=3.0,
        eq=(EqBand("lowshelf", 200.0, 4.0), EqBand("peak", 400.0, 2.0, 0.9)),
        dynamics=DynamicsSpec(threshold_db=-18.0, ratio=2.0, makeup_db=0.0, ceiling_db=-1.0),
    )


BUILTIN: dict[str, Context] = {
    "default": Context("default", "the master as mastered"),
    "karaoke": Context("karaoke", "lead vocal out", gains_db={"@vocals": SILENCE_DB}),
    "focus": Context("focus", "vocals 12 dB down", gains_db={"@vocals": -12.0}),
    "night": _night(),
    "car": _car(),
    "headphones": Context(
        "headphones", "stems placed around the listener (pyo HRTF, binaural)", layout="binaural"
    ),
    "multichannel": Context(
        "multichannel", "one stereo pair of outputs per stem", layout="multichannel", outputs=8
    ),
}


def parse_context(
    name: str, table: Mapping[str, Any], base: Context | None = None, where: str = ""
) -> Context:
    """Build a context from a TOML/JSON table, on top of ``base`` (same name) when given."""
    where = where or f"context {name!r}"
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: must be a table")
    unknown = set(table) - _KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}; valid: {', '.join(sorted(_KEYS))}")
    values: dict[str, Any] = {} if base is None else dict(base.__dict__)
    values["name"] = name
    try:
        for key in ("gains_db", "pans", "positions"):
            if key in table:
                values[key] = {str(k): float(v) for k, v in dict(table[key]).items()}
        if "mute" in table:
            values["mute"] = tuple(str(v) for v in table["mute"])
        if "level_db" in table:
            values["level_db"] = float(table["level_db"])
        if "eq" in table:
            values["eq"] = tuple(EqBand(**dict(band)) for band in table["eq"])
        if "dynamics" in table:
            values["dynamics"] = DynamicsSpec(**dict(table["dynamics"])) if table["dynamics"] else None
        if "layout" in table:
            values["layout"] = str(table["layout"])
        if "outputs" in table:
            values["outputs"] = int(table["outputs"])
        if "routes" in table:
            values["routes"] = {
                str(k): tuple(int(p) for p in (v if isinstance(v, list) else [v]))
                for k, v in dict(table["routes"]).items()
            }
        if "description" in table:
            values["description"] = str(table["description"])
    except (TypeError, ValueError, ParameterError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    context = Context(**values)
    if context.layout not in LAYOUTS:
        raise ConfigError(f"{where}: layout {context.layout!r} is not one of {', '.join(LAYOUTS)}")
    if not 1 <= context.outputs <= 64:
        raise ConfigError(f"{where}: outputs {context.outputs} is outside 1..64")
    for key, ports in context.routes.items():
        if not ports or any(not 1 <= p <= context.outputs for p in ports):
            raise ConfigError(f"{where}: route {key!r} -> {list(ports)} must name ports 1..{context.outputs}")
    for key, value in {**context.gains_db}.items():
        if not SILENCE_DB <= value <= 24.0:
            raise ConfigError(f"{where}: gain of {key!r} {value} dB is outside {SILENCE_DB}..24")
    for key, value in {**context.pans}.items():
        if not -1.0 <= value <= 1.0:
            raise ConfigError(f"{where}: pan of {key!r} {value} is outside -1..1")
    return context


def load_contexts(
    manifest_contexts: Mapping[str, Any] | None = None, user_file: Path | None = None
) -> dict[str, Context]:
    """Built-ins, overridden by the manifest's contexts, overridden by the user's TOML file."""
    contexts = dict(BUILTIN)
    for name, table in (manifest_contexts or {}).items():
        contexts[name] = parse_context(name, table, contexts.get(name), f"manifest context {name!r}")
    if user_file is not None:
        try:
            data = tomllib.loads(Path(user_file).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{user_file}: cannot read ({exc.strerror})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{user_file}: not valid TOML ({exc})") from None
        tables = data.get("contexts", {})
        if not isinstance(tables, dict) or not tables:
            raise ConfigError(f"{user_file}: expected [contexts.NAME] tables")
        for name, table in tables.items():
            contexts[name] = parse_context(name, table, contexts.get(name), f"{user_file} [contexts.{name}]")
    return contexts

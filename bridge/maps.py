"""Control maps: TOML files that bind MIDI controls and OSC addresses to engine parameters and
bridge actions, with value scaling (docs/control.md has the format).

A map is validated when it is loaded, against the parameters declared by the engine configured
in each slot it names: an unknown slot, parameter or action, a value out of range or a scaling
that does not fit its target raises MappingError naming the file, the line and the valid
choices. tomllib gives no positions, so each ``[[bind]]`` table's line is found in the text.

A map comes from outside (a download, a shared file), so reading it is bounded: its size, its
nesting and its number of bindings have limits, and every number must be finite.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import tomli_w

from bridge.addresses import PREFIX, path_of
from bridge.map_files import MAX_MAP_BYTES, MAX_MAP_NESTING, parse_toml, read_map_text
from bridge.targets import Target, resolve_target
from core.engine import Engine, Param
from core.errors import MappingError, ParameterError

__all__ = [
    "MAX_BINDINGS",
    "MAX_MAP_BYTES",
    "MAX_MAP_NESTING",
    "SCALES",
    "SOURCES",
    "Binding",
    "ControlMap",
    "Target",
    "dumps_map",
    "load_map",
    "map_to_dict",
    "parse_map",
    "parse_toml",
    "read_map_text",
    "resolve_target",
    "save_map",
    "without_lines",
]

SOURCES = ("cc", "note", "program", "osc")
SCALES = ("linear", "log", "toggle", "momentary", "trigger", "fixed",
          "relative_twos", "relative_signed", "relative_offset")
_RELATIVE = ("relative_twos", "relative_signed", "relative_offset")
_BIND_KEYS = ("cc", "note", "program", "osc", "channel", "target", "scale", "min", "max", "value",
              "values", "step", "in_min", "in_max", "feedback", "label")
_TOP_KEYS = ("map", "bind")

# Bindings in one map: every CC, note and program change of 16 channels is 6,144 controls, but
# no controller has them all; MIDI learn stops adding bindings at this count.
MAX_BINDINGS = 4096


@dataclass(frozen=True)
class Binding:
    """One control -> one target. ``channel`` is 0-based (None = any channel)."""

    source: str  # cc, note, program or osc
    number: int | str  # controller/note/program number, or the OSC address
    target: str
    scale: str = "linear"
    channel: int | None = None
    minimum: float | None = None
    maximum: float | None = None
    value: Any = None
    values: tuple[Any, ...] = ()
    step: float | None = None
    in_min: float = 0.0
    in_max: float = 1.0
    feedback: bool = True
    label: str = ""
    line: int = 0

    @property
    def key(self) -> tuple[str, int | None, int | str]:
        """What identifies the physical control (for lookups and loop suppression)."""
        return (self.source, self.channel, self.number)

    def describe_source(self) -> str:
        if self.source == "osc":
            return f"osc {self.number}"
        return f"{self.source} {self.number}" + (f" ch{self.channel + 1}" if self.channel is not None else "")

    # -- scaling: control -> value -------------------------------------------------------
    def _range(self, param: Param) -> tuple[float, float]:
        low = self.minimum if self.minimum is not None else param.minimum
        high = self.maximum if self.maximum is not None else param.maximum
        return float(low if low is not None else 0.0), float(high if high is not None else 127.0)

    def _choices(self, param: Param) -> tuple[Any, ...]:
        if self.values:
            return self.values
        return param.choices if param.kind == "choice" else (False, True)

    def value_for(self, target: Target, raw: int, norm: float, pressed: bool, current: Any) -> Any:
        """The target value for one control input, or None for no change. ``raw`` is the MIDI
        data value (0..127), ``norm`` the same in 0..1, ``pressed`` whether it is a press."""
        param = target.param
        if self.scale == "trigger":
            return True if pressed else None
        if self.scale == "fixed":
            return self.value if pressed else None
        if param is None:
            return None
        if self.scale == "toggle":
            return (not bool(current)) if pressed else None
        if self.scale == "momentary":
            return pressed
        if self.scale in _RELATIVE:
            delta = _relative_delta(self.scale, raw)
            if param.kind in ("choice", "bool"):
                choices = self._choices(param)
                index = choices.index(current) if current in choices else 0
                return choices[max(0, min(len(choices) - 1, index + delta))]
            low, high = sorted(self._range(param))
            step = self.step or (1.0 if param.kind == "int" else (high - low) / 100)
            number = min(high, max(low, float(current) + delta * step))
            return round(number) if param.kind == "int" else number
        if param.kind in ("choice", "bool"):
            choices = self._choices(param)
            return choices[min(len(choices) - 1, int(norm * len(choices)))]
        low, high = self._range(param)
        if self.scale == "log":
            number = low * (high / low) ** norm
        else:
            number = low + (high - low) * norm
        return round(number) if param.kind == "int" else number

    # -- scaling: value -> control (feedback to LEDs and motor faders) ----------------------
    def raw_for(self, target: Target, value: Any) -> int | None:
        """The 0..127 value that shows ``value`` on this control, or None for no feedback."""
        param = target.param
        if param is None or self.scale == "trigger" or self.source == "program":
            return None
        if self.scale == "fixed":
            return 127 if value == self.value else 0
        if self.scale in ("toggle", "momentary"):
            return 127 if value else 0
        if param.kind in ("choice", "bool"):
            choices = self._choices(param)
            if value not in choices:
                return 0
            return round(choices.index(value) * 127 / max(1, len(choices) - 1))
        low, high = self._range(param)
        number = float(value)
        if high == low:
            return 0
        if self.scale == "log":
            norm = math.log(number / low) / math.log(high / low) if number > 0 else 0.0
        else:
            norm = (number - low) / (high - low)
        return max(0, min(127, round(norm * 127)))


def _relative_delta(scale: str, raw: int) -> int:
    """Relative encoder value -> signed step count."""
    if scale == "relative_twos":  # 1..63 up, 127..65 down (-1..-63)
        return raw - 128 if raw >= 64 else raw
    if scale == "relative_signed":  # bit 6 is the sign: 1..63 up, 65..127 down
        return -(raw - 64) if raw >= 64 else raw
    return raw - 64  # binary offset: 64 = no change


@dataclass
class ControlMap:
    """A loaded map: its bindings in file order."""

    path: Path | None
    name: str = ""
    description: str = ""
    feedback: bool = True
    bindings: list[Binding] = field(default_factory=list)


# -- loading -------------------------------------------------------------------------------
def _bind_lines(text: str) -> list[int]:
    """1-based line of each ``[[bind]]`` header, in order."""
    return [i + 1 for i, line in enumerate(text.splitlines()) if re.match(r"\s*\[\[\s*bind\s*\]\]", line)]


def _key_line(text: str, start: int, key: str) -> int:
    """The line of ``key = ...`` inside the table whose header is at line ``start``; with
    ``start`` 0, the first line that defines ``key`` or opens a ``[key]`` table (else 1)."""
    lines = text.splitlines()
    for index in range(start, len(lines)):
        line = lines[index]
        if start == 0 and re.match(rf"\s*\[+\s*{re.escape(key)}\s*\]", line):
            return index + 1
        if start > 0 and re.match(r"\s*\[", line):
            break
        if re.match(rf"\s*{re.escape(key)}\s*=", line):
            return index + 1
    return max(start, 1)


class _Bad(Exception):
    """A validation failure inside one binding table: the key at fault and the reason."""

    def __init__(self, key: str | None, message: str) -> None:
        super().__init__(message)
        self.key = key


def _number(value: Any, key: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _Bad(key, f"{key} must be an integer {low}..{high} (got {_shown(value)})")
    return value


def _float(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value):
        raise _Bad(key, f"{key} must be a finite number (got {_shown(value)})")
    return float(value)


def _finite(value: float) -> bool:
    """A number a float can hold (TOML integers are unbounded in tomllib)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _shown(value: Any) -> str:
    """``value`` for an error message, cut short (a map value can be a long string or list)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _scalar(value: Any, key: str) -> Any:
    """A map value given to a parameter: a string, a boolean or a finite number."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not _finite(value):
        raise _Bad(key, f"{key} must be a finite number (got {_shown(value)})")
    if not isinstance(value, (str, bool, int, float)):
        raise _Bad(key, f"{key} must be a number, a string or true/false (got {_shown(value)})")
    return value


def parse_binding(table: dict[str, Any], slots: Mapping[str, type[Engine]], path: Path | str = "<map>",
                  line: int = 0, key_line: Callable[[str], int] | None = None) -> Binding:
    """One ``[[bind]]`` table -> a validated Binding. ``key_line(key)`` gives a key's line."""
    try:
        return _parse_binding(table, slots, line)
    except _Bad as exc:
        at = key_line(exc.key) if key_line is not None and exc.key else line
        raise MappingError(f"{path}:{at}: {exc}") from None


def _parse_binding(table: dict[str, Any], slots: Mapping[str, type[Engine]], line: int) -> Binding:
    unknown = sorted(set(table) - set(_BIND_KEYS))
    if unknown:
        raise _Bad(unknown[0], f"unknown key {_shown(unknown[0])}; valid: {', '.join(_BIND_KEYS)}")
    sources = [s for s in SOURCES if s in table]
    if len(sources) != 1:
        raise _Bad(None, f"a binding needs exactly one source of {', '.join(SOURCES)} "
                   f"(got {', '.join(sources) or 'none'})")
    source = sources[0]
    if source == "osc":
        number: int | str = str(table["osc"])
        if not number.startswith("/") or path_of(number) is not None:
            raise _Bad("osc", f"osc = {_shown(number)} must be an address like \"/1/fader1\" "
                       f"(the {PREFIX}/ addresses are the bridge's own)")
    else:
        number = _number(table[source], source, 0, 127)
    channel = None
    if "channel" in table and table["channel"] != "all":
        channel = _number(table["channel"], "channel", 1, 16) - 1
    if "target" not in table:
        raise _Bad(None, "a binding needs target = \"SLOT/PARAM\" or a bridge action")
    try:
        target = resolve_target(str(table["target"]), slots)
    except MappingError as exc:
        raise _Bad("target", str(exc)) from None
    param = target.param
    scale = table.get("scale")
    if scale is None:
        scale = "trigger" if target.is_trigger else "fixed" if "value" in table else (
            "toggle" if param is not None and param.kind == "bool" and source in ("note", "program")
            else "linear")
    if scale not in SCALES:
        raise _Bad("scale", f"scale {_shown(scale)} is not one of {', '.join(SCALES)}")
    fields: dict[str, Any] = {}
    _check_scale(scale, source, target, table, fields)
    if "feedback" in table and not isinstance(table["feedback"], bool):
        raise _Bad("feedback", f"feedback must be true or false (got {_shown(table['feedback'])})")
    return Binding(source=source, number=number, target=target.path, scale=scale, channel=channel,
                   feedback=table.get("feedback", True), label=str(table.get("label", "")),
                   line=line, **fields)


def _takes(param: Param | None) -> str:
    return param.describe_range() if param is not None else "no value (it is an action)"


def _check_scale(scale: str, source: str, target: Target, table: dict[str, Any], fields: dict[str, Any]) -> None:
    """Validate the scaling keys against the target's declaration and fill ``fields``."""
    param = target.param
    if target.is_trigger and scale != "trigger":
        raise _Bad("scale", f"scale {scale!r}: {target.path} is an action: use scale = \"trigger\"")
    if scale == "trigger" and not target.is_trigger:
        raise _Bad("scale", f"scale \"trigger\" is only for actions; {target.path} takes {_takes(param)}")
    if scale in ("toggle", "momentary") and (param is None or param.kind != "bool"):
        raise _Bad("scale", f"scale {scale!r} needs an on/off parameter; {target.path} takes {_takes(param)}")
    if param is not None and param.kind not in ("int", "float", "bool", "choice") and scale != "fixed":
        raise _Bad("scale", f"{target.path} takes {_takes(param)}: a control can only set it to a fixed "
                   "value (scale = \"fixed\", value = ...)")
    if scale in _RELATIVE and source != "cc":
        raise _Bad("scale", f"scale {scale!r} (a relative encoder) needs a cc source, not {source}")
    if scale == "fixed":
        if "value" not in table:
            raise _Bad("scale", "scale \"fixed\" needs value = ...")
        if param is not None:
            try:
                fields["value"] = param.coerce(_scalar(table["value"], "value"))
            except ParameterError as exc:
                raise _Bad("value", f"value for {target.path}: {exc}") from None
    elif "value" in table:
        raise _Bad("value", f"value is only used with scale = \"fixed\" (got scale {scale!r})")
    for key, attr in (("min", "minimum"), ("max", "maximum")):
        if key not in table:
            continue
        if param is None or param.kind not in ("int", "float"):
            raise _Bad(key, f"{key} only applies to numeric targets; {target.path} takes {_takes(param)}")
        number = _float(table[key], key)
        low = -math.inf if param.minimum is None else param.minimum
        high = math.inf if param.maximum is None else param.maximum
        if not low <= number <= high:
            raise _Bad(key, f"{key} = {_shown(table[key])} is outside {target.path}'s range {param.describe_range()}")
        fields[attr] = number
    if scale == "log":
        low = fields.get("minimum", param.minimum if param else None)
        high = fields.get("maximum", param.maximum if param else None)
        if param is None or param.kind not in ("int", "float") or low is None or high is None \
                or low <= 0 or high <= 0:
            raise _Bad("scale", f"scale \"log\" needs a numeric target with min > 0 and max > 0 "
                       f"(set min = ... and max = ...); {target.path} takes {_takes(param)}")
    if "values" in table:
        if param is None or param.kind != "choice":
            raise _Bad("values", f"values only applies to choice targets; {target.path} takes {_takes(param)}")
        if not isinstance(table["values"], list) or not table["values"]:
            raise _Bad("values", f"values must be a non-empty list of {param.describe_range()}")
        try:
            fields["values"] = tuple(param.coerce(_scalar(v, "values")) for v in table["values"])
        except ParameterError as exc:
            raise _Bad("values", f"values for {target.path}: {exc}") from None
    if "step" in table:
        step = _float(table["step"], "step")
        if step <= 0 or scale not in _RELATIVE:
            raise _Bad("step", "step must be > 0 and only applies to relative scales")
        fields["step"] = step
    for key in ("in_min", "in_max"):
        if key in table:
            if source != "osc":
                raise _Bad(key, f"{key} only applies to osc sources")
            fields[key] = _float(table[key], key)
    if fields.get("in_min", 0.0) == fields.get("in_max", 1.0):
        raise _Bad("in_max", "in_min and in_max must differ")


def parse_map(text: str, path: Path | str, slots: Mapping[str, type[Engine]]) -> ControlMap:
    """Parse and validate a map's text; ``slots`` maps slot names to their engine classes."""
    data = parse_toml(text, path)
    unknown = sorted(set(data) - set(_TOP_KEYS))
    if unknown:
        line = _key_line(text, 0, unknown[0])
        raise MappingError(f"{path}:{line}: unknown section {_shown(unknown[0])}; valid: map, bind")
    header = data.get("map", {})
    if not isinstance(header, dict) or set(header) - {"name", "description", "feedback"}:
        raise MappingError(f"{path}:{_key_line(text, 0, 'map')}: [map] takes name, description, feedback")
    for key, kind, what in (("name", str, "a string"), ("description", str, "a string"),
                            ("feedback", bool, "true or false")):
        if key in header and not isinstance(header[key], kind):
            raise MappingError(f"{path}:{_key_line(text, 0, key)}: [map] {key} must be {what} "
                               f"(got {_shown(header[key])})")
    tables = data.get("bind", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise MappingError(f"{path}:{_key_line(text, 0, 'bind')}: write bindings as [[bind]] tables")
    if len(tables) > MAX_BINDINGS:
        raise MappingError(f"{path}: {len(tables)} bindings is more than a map may hold (at most "
                           f"{MAX_BINDINGS}); split it into several maps (--map may be given more than once)")
    lines = _bind_lines(text)
    fallback = _key_line(text, 0, "bind") if len(lines) != len(tables) else 0
    bindings = []
    for index, table in enumerate(tables):
        line = lines[index] if fallback == 0 else fallback
        bindings.append(parse_binding(table, slots, path, line,
                                      lambda key, start=line: _key_line(text, start, key)))
    return ControlMap(Path(path), str(header.get("name", Path(path).stem)), str(header.get("description", "")),
                      bool(header.get("feedback", True)), bindings)


def load_map(path: Path | str, slots: Mapping[str, type[Engine]]) -> ControlMap:
    return parse_map(read_map_text(path), path, slots)


# -- saving --------------------------------------------------------------------------------
def _binding_table(binding: Binding) -> dict[str, Any]:
    table: dict[str, Any] = {binding.source: binding.number}
    if binding.channel is not None:
        table["channel"] = binding.channel + 1
    table["target"] = binding.target
    table["scale"] = binding.scale
    defaults = Binding(source="cc", number=0, target="")
    for name, key in (("minimum", "min"), ("maximum", "max"), ("value", "value"), ("step", "step"),
                      ("in_min", "in_min"), ("in_max", "in_max"), ("feedback", "feedback"), ("label", "label")):
        value = getattr(binding, name)
        if value != getattr(defaults, name):
            table[key] = value
    if binding.values:
        table["values"] = list(binding.values)
    return table


def map_to_dict(control_map: ControlMap) -> dict[str, Any]:
    header: dict[str, Any] = {"name": control_map.name}
    if control_map.description:
        header["description"] = control_map.description
    if not control_map.feedback:
        header["feedback"] = False
    return {"map": header, "bind": [_binding_table(b) for b in control_map.bindings]}


def dumps_map(control_map: ControlMap) -> str:
    """The map as TOML, one ``[[bind]]`` table per binding (so errors can name their lines)."""
    data = map_to_dict(control_map)
    parts = ["[map]\n" + tomli_w.dumps(data["map"])]
    parts += ["[[bind]]\n" + tomli_w.dumps(table) for table in data["bind"]]
    return "\n".join(parts)


def save_map(control_map: ControlMap, path: Path | str, extra_tables: list[dict[str, Any]] = ()) -> None:
    """Write the map atomically (temporary file in the same folder, then rename);
    ``extra_tables`` are written after its bindings as further ``[[bind]]`` tables, verbatim."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join([dumps_map(control_map), *("[[bind]]\n" + tomli_w.dumps(t) for t in extra_tables)])
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def without_lines(bindings: list[Binding]) -> list[Binding]:
    """The bindings with their line numbers cleared (for comparing maps)."""
    return [replace(b, line=0) for b in bindings]

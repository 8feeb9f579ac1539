"""Bridge configuration: a TOML file, overridden by command-line flags.

Channels are written 1..16 in files and flags (as musicians count them) and held 0..15 inside.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.clock import MAX_TEMPO_BPM, MIN_TEMPO_BPM
from bridge.host import SlotConfig
from bridge.options import check_port
from core.errors import ConfigError

__all__ = ["BridgeConfig", "load_config", "DEFAULT_SLOTS", "RESERVED_SLOT_NAMES", "DEFAULT_WEB_PORT",
           "check_port", "check_tempo"]

DEFAULT_SLOTS = (SlotConfig(name="rule", engine="rule", in_channels=None, out_channel=1),)
# OSC addresses of the bridge itself: a slot cannot be called like one.
RESERVED_SLOT_NAMES = ("transport", "affect", "learn", "panic", "status", "dump", "describe",
                       "subscribe", "unsubscribe", "error", "surface")
DEFAULT_WEB_PORT = 9080


@dataclass
class BridgeConfig:
    backend: str = "auto"
    client: str = "scorebridge"
    connect_in: list[str] = field(default_factory=list)
    connect_out: list[str] = field(default_factory=list)
    clock_mode: str = "follow"
    tempo_bpm: float = 120.0
    clock_out: bool = False
    osc_host: str = "127.0.0.1"
    osc_port: int = 9000
    osc_allow_remote: bool = False
    osc_allow: list[str] = field(default_factory=list)
    slots: list[SlotConfig] = field(default_factory=lambda: list(DEFAULT_SLOTS))
    control_maps: list[str] = field(default_factory=list)  # paths or shipped map names
    connect_control: list[str] = field(default_factory=list)
    learn_map: Path | None = None  # None = $XDG_CONFIG_HOME/scorebridge/learned.toml
    control_feedback_interval_s: float = 0.02
    web_host: str = "127.0.0.1"
    web_port: int | None = DEFAULT_WEB_PORT  # None = no browser surface; 0 = any free port
    web_port_explicit: bool = False  # a busy port is then an error, not a warning
    web_allow_remote: bool = False
    web_token: str | None = None
    # Folders that file and folder parameters set from outside may point into (besides the
    # folders of the paths the slots start with): the config file's folder and --allow-dir.
    allow_dirs: list[Path] = field(default_factory=list)
    # The main output's tuning: a preset or .scl path (None: 12-TET), its .kbm, and how it is
    # carried (core.retune: mts, mpe or none).
    tuning: str | None = None
    kbm: Path | None = None
    tuning_output: str = "mts"


def check_tempo(value: Any, what: str) -> float:
    """A tempo in BPM within the internal clock's range, or ValueError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not MIN_TEMPO_BPM <= value <= MAX_TEMPO_BPM:
        raise ValueError(f"{what} must be a number of BPM in {MIN_TEMPO_BPM:g}..{MAX_TEMPO_BPM:g}, "
                         f"not {value!r}")
    return float(value)


def _checked(check: Any, value: Any, where: str) -> Any:
    try:
        return check(value, where)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _channels(value: Any, where: str) -> frozenset[int] | None:
    if value in (None, "all"):
        return None
    items = [value] if isinstance(value, int) else value
    if not isinstance(items, list) or not all(isinstance(c, int) and 1 <= c <= 16 for c in items):
        raise ConfigError(f"{where}: channels must be 1..16, a list of them, or \"all\" (got {value!r})")
    return frozenset(c - 1 for c in items)


def _channel(value: Any, where: str) -> int:
    if not isinstance(value, int) or not 1 <= value <= 16:
        raise ConfigError(f"{where}: out_channel must be 1..16 (got {value!r})")
    return value - 1


def parse_slot(table: dict[str, Any], where: str) -> SlotConfig:
    unknown = set(table) - {"name", "engine", "in_channels", "out_channel", "out_port", "params"}
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}; valid: name, engine, "
                          "in_channels, out_channel, out_port, params")
    if "engine" not in table:
        raise ConfigError(f"{where}: every [[slots]] entry needs engine = \"rule\" (or another engine)")
    engine = str(table["engine"])
    name = str(table.get("name", engine))
    if name in RESERVED_SLOT_NAMES or not name or "/" in name:
        raise ConfigError(f"{where}: a slot cannot be called {name!r} (no '/', and not one of the "
                          f"bridge's own addresses: {', '.join(RESERVED_SLOT_NAMES)})")
    params = table.get("params", {})
    if not isinstance(params, dict):
        raise ConfigError(f"{where}: params must be a table")
    return SlotConfig(
        name=name,
        engine=engine,
        in_channels=_channels(table.get("in_channels", "all"), where),
        out_channel=_channel(table.get("out_channel", 2), where),
        out_port=table.get("out_port") or None,
        params=params,
    )


def parse_slot_flag(text: str) -> SlotConfig:
    """``--slot NAME=ENGINE[@IN/OUT]``, e.g. ``harm=rule@1/2``, ``mon=thru@all/3``,
    ``two=rule@1,2/4`` (``/`` rather than ``>`` so shells leave it alone)."""
    name, sep, rest = text.partition("=")
    if not sep or not name:
        raise ConfigError(f"--slot {text!r}: write NAME=ENGINE or NAME=ENGINE@IN/OUT, e.g. rule=rule@1/2")
    engine, _, routing = rest.partition("@")
    slot = {"name": name, "engine": engine}
    if routing:
        ins, slash, out = routing.partition("/")
        if not slash:
            raise ConfigError(f"--slot {text!r}: routing must be IN/OUT, e.g. 1/2 or all/2")
        try:
            slot["in_channels"] = "all" if ins == "all" else [int(c) for c in ins.split(",")]
            slot["out_channel"] = int(out)
        except ValueError:
            raise ConfigError(f"--slot {text!r}: channels must be numbers 1..16 or all") from None
    return parse_slot(slot, f"--slot {text}")


def load_config(path: Path | None) -> BridgeConfig:
    config = BridgeConfig()
    if path is None:
        return config
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid TOML: nested too deeply") from None
    unknown = set(data) - {"midi", "clock", "osc", "slots", "control", "web"}
    if unknown:
        raise ConfigError(f"{path}: unknown sections {sorted(unknown)}; valid: midi, clock, osc, slots, "
                          "control, web")
    for section in ("midi", "clock", "osc", "control", "web"):
        if not isinstance(data.get(section, {}), dict):
            raise ConfigError(f"{path}: [{section}] must be a table")
    slots = data.get("slots", [])
    if not isinstance(slots, list) or not all(isinstance(t, dict) for t in slots):
        raise ConfigError(f"{path}: slots must be [[slots]] tables")
    try:
        _read_sections(config, data, Path(path))
    except (TypeError, ValueError, AttributeError) as exc:  # a value of the wrong type
        raise ConfigError(f"{path}: {exc}") from None
    config.allow_dirs.append(Path(path).resolve().parent)
    return config


def _read_sections(config: BridgeConfig, data: dict[str, Any], path: Path) -> None:
    midi, clock, osc = data.get("midi", {}), data.get("clock", {}), data.get("osc", {})
    config.backend = str(midi.get("backend", config.backend))
    config.client = str(midi.get("client", config.client))
    config.connect_in = [str(p) for p in midi.get("connect_in", [])]
    config.connect_out = [str(p) for p in midi.get("connect_out", [])]
    config.clock_mode = str(clock.get("mode", config.clock_mode))
    if config.clock_mode not in ("follow", "internal", "external"):
        raise ConfigError(f"{path} [clock] mode must be follow, internal or external, "
                          f"not {config.clock_mode!r}")
    config.tempo_bpm = _checked(check_tempo, clock.get("tempo_bpm", config.tempo_bpm),
                                f"{path} [clock] tempo_bpm")
    config.clock_out = bool(clock.get("clock_out", False))
    config.osc_host = str(osc.get("host", config.osc_host))
    config.osc_port = _checked(check_port, osc.get("port", config.osc_port), f"{path} [osc] port")
    config.osc_allow_remote = bool(osc.get("allow_remote", False))
    config.osc_allow = [str(a) for a in osc.get("allow", [])]
    if "slots" in data:
        config.slots = [parse_slot(t, f"{path} [[slots]] #{i + 1}") for i, t in enumerate(data["slots"])]
    _control_and_web(config, data.get("control", {}), data.get("web", {}), path)


def _control_and_web(config: BridgeConfig, control: dict[str, Any], web: dict[str, Any], path: Path) -> None:
    """``[control]`` maps, connect, learn_map, feedback_interval_ms; ``[web]`` enabled, host,
    port, allow_remote, token. Relative map paths are relative to the config file."""
    unknown = set(control) - {"maps", "connect", "learn_map", "feedback_interval_ms"}
    if unknown:
        raise ConfigError(f"{path} [control]: unknown keys {sorted(unknown)}; valid: maps, connect, "
                          "learn_map, feedback_interval_ms")
    base = path.parent
    for name in control.get("maps", []):
        candidate = base / str(name)
        config.control_maps.append(str(candidate) if candidate.exists() else str(name))
    config.connect_control = [str(p) for p in control.get("connect", [])]
    if "learn_map" in control:
        config.learn_map = base / str(control["learn_map"])
    interval_ms = control.get("feedback_interval_ms", 20)
    if not isinstance(interval_ms, (int, float)) or not 1 <= interval_ms <= 1000:
        raise ConfigError(f"{path} [control]: feedback_interval_ms must be 1..1000 (got {interval_ms!r})")
    config.control_feedback_interval_s = interval_ms / 1000
    unknown = set(web) - {"enabled", "host", "port", "allow_remote", "token"}
    if unknown:
        raise ConfigError(f"{path} [web]: unknown keys {sorted(unknown)}; valid: enabled, host, port, "
                          "allow_remote, token")
    config.web_host = str(web.get("host", config.web_host))
    if "port" in web:
        config.web_port = _checked(check_port, web["port"], f"{path} [web] port")
        config.web_port_explicit = True
    if not web.get("enabled", True):
        config.web_port = None
    config.web_allow_remote = bool(web.get("allow_remote", False))
    config.web_token = str(web["token"]) if web.get("token") else None

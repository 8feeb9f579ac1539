"""The one contract every engine implements, owned by the host.

An engine declares typed parameters and implements ``process``; the host owns threads,
timing, routing, parameter validation and note safety. Engines never parse CC numbers or OSC:
maps and the OSC server convert to the declarations below.
"""

from __future__ import annotations

import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from core.errors import ParameterError
from core.events import EngineInput, EngineOutput

__all__ = ["Engine", "EngineContext", "Param", "LazyParams"]

_KINDS = ("float", "int", "bool", "choice", "text")
_MAX_TEXT = 4096


@dataclass(frozen=True)
class Param:
    """A typed engine parameter: name, kind, default, range or choices, and unit.

    A text parameter with unit ``"file"`` or ``"folder"`` names a path: a value set from
    outside (OSC, the browser, a map) must lie in the folders the user allowed and, for a file,
    be a regular file of at most ``max_bytes`` (``core.files``).
    """

    name: str
    kind: str
    default: Any
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    unit: str = ""
    doc: str = ""
    # unit "file": the largest file the engine reads (None: core.files.DEFAULT_MAX_FILE_BYTES)
    max_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"Param {self.name!r}: kind must be one of {_KINDS}, not {self.kind!r}")
        if self.kind == "choice" and not self.choices:
            raise ValueError(f"Param {self.name!r}: a choice parameter needs choices")
        self.coerce(self.default)

    def coerce(self, value: Any) -> Any:
        """Convert ``value`` (from OSC, a map or a config file) to this parameter's type,
        or raise ParameterError naming the parameter and what it accepts."""
        if self.kind == "text":
            # A name or a path (a clip folder, a song file): a string from OSC, a map or a file.
            if not isinstance(value, str) or not value.strip():
                raise ParameterError(f"{self.name}: {value!r} is not a non-empty text")
            if len(value) > _MAX_TEXT or any(ord(c) < 32 for c in value):
                raise ParameterError(f"{self.name}: text must be one line of at most {_MAX_TEXT} characters")
            return value.strip()
        if self.kind == "choice":
            text = str(value)
            if text not in self.choices:
                raise ParameterError(
                    f"{self.name}: {value!r} is not one of {', '.join(self.choices)}"
                )
            return text
        if self.kind == "bool":
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered in ("1", "true", "on", "yes"):
                    return True
                if lowered in ("0", "false", "off", "no"):
                    return False
                raise ParameterError(f"{self.name}: {value!r} is not a boolean (use 0/1, true/false)")
            if isinstance(value, (bool, int)):
                return bool(value)
            if isinstance(value, float) and math.isfinite(value):
                return bool(value)
            raise ParameterError(f"{self.name}: {value!r} is not a boolean (use 0/1, true/false)")
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):  # OverflowError: an int beyond any float
            raise ParameterError(f"{self.name}: {str(value)[:40]!r} is not a number") from None
        if math.isnan(number):
            raise ParameterError(f"{self.name}: NaN is not a valid value")
        if math.isinf(number):
            raise ParameterError(f"{self.name}: {number} is not a valid value (a finite number is needed)")
        low = -math.inf if self.minimum is None else self.minimum
        high = math.inf if self.maximum is None else self.maximum
        if not low <= number <= high:
            raise ParameterError(f"{self.name}: {value!r} is outside {self.describe_range()}")
        if self.kind == "int":
            if number != int(number):
                raise ParameterError(f"{self.name}: {value!r} is not an integer")
            return int(number)
        return number

    def describe_range(self) -> str:
        """A human-readable statement of what this parameter accepts."""
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        if self.kind == "bool":
            return "0 or 1"
        if self.kind == "text":
            return f"text{' (' + self.unit + ')' if self.unit else ''}"
        unit = f" {self.unit}" if self.unit else ""
        return f"{self.minimum}..{self.maximum}{unit}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "default": self.default,
            "minimum": self.minimum,
            "maximum": self.maximum,
            "choices": list(self.choices),
            "unit": self.unit,
            "doc": self.doc,
            "max_bytes": self.max_bytes,
        }


class LazyParams:
    """An engine's parameters built on first use, not when its module is imported: for choices
    or defaults read from files (the shipped model cards, a song folder), so that importing an
    engine (the registry, ``scorebridge engines``) reads nothing it does not need."""

    def __init__(self, build: Callable[[], Iterable[Param]]) -> None:
        self._build = build
        self._params: tuple[Param, ...] | None = None
        self._lock = threading.Lock()

    def __get__(self, instance: object, owner: type | None = None) -> tuple[Param, ...]:
        if self._params is None:
            with self._lock:
                if self._params is None:
                    self._params = tuple(self._build())
        return self._params


@dataclass
class EngineContext:
    """What the host tells an engine in ``prepare``: where its output goes and the tempo."""

    slot: str
    out_channel: int
    tempo_bpm: float


class Engine(ABC):
    """Base class of all engines.

    Subclasses set ``name``, ``params`` and ``latency_beats`` (look-ahead the engine needs;
    0 = it answers at once) and implement ``process``. Parameter values are read with
    ``self.param(name)``; the host validates every change against ``params`` first.

    The host drives an engine through its life on the slot's own worker thread, one call at a
    time: ``prepare`` once (load models, open devices; an exception here disables the slot and
    shows in ``status``, the bridge keeps serving), then ``process`` for every input, ``reset``
    on every transport stop and locate, and ``release`` once when the engine leaves its slot
    (a swap, the bridge shutting down). ``process`` may take as long as it needs without
    delaying the input, the clock or other engines. The constructor only sets up state: it runs
    on whatever thread asked for the engine (an OSC swap) and must neither block nor load.

    ``provides`` names what an engine offers the rest of the bridge beyond its output:
    ``"affect"`` = it has ``current() -> (valence, arousal)``, the values it plays now, safe to
    read from another thread (the affect follower drives the bridge's affect from it).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()
    latency_beats: ClassVar[float] = 0.0
    provides: ClassVar[frozenset[str]] = frozenset()

    def __init__(self) -> None:
        self._values: dict[str, Any] = {p.name: p.default for p in self.params}
        self.context: EngineContext | None = None

    @classmethod
    def declaration(cls, name: str) -> Param:
        for param in cls.params:
            if param.name == name:
                return param
        valid = ", ".join(p.name for p in cls.params) or "(none)"
        raise ParameterError(f"engine {cls.name!r} has no parameter {name!r}; valid: {valid}")

    def param(self, name: str) -> Any:
        return self._values[name]

    def values(self) -> dict[str, Any]:
        return dict(self._values)

    def set_param(self, name: str, value: Any) -> Any:
        """Validate and store a parameter; returns the coerced value. Called by the host."""
        coerced = self.declaration(name).coerce(value)
        self._values[name] = coerced
        self.on_param_change(name, coerced)
        return coerced

    def on_param_change(self, name: str, value: Any) -> None:
        """Hook for engines that derive state from a parameter. Before ``prepare`` (the values
        a config file sets) it runs on the thread that built the engine: resources a parameter
        names are loaded in ``prepare``, and here only once ``prepared``."""

    @property
    def prepared(self) -> bool:
        return self.context is not None

    def prepare(self, context: EngineContext) -> None:
        """Called once, on the slot's worker, before the first ``process``: load what the
        engine needs (raise ModelLoadError or any error to refuse the slot)."""
        self.context = context

    @abstractmethod
    def process(self, event: EngineInput) -> Sequence[EngineOutput]:
        """Turn one input event into zero or more outputs."""

    def status(self) -> dict[str, Any]:
        """Engine-specific state for ``scorebridge status`` (JSON-serialisable); called from the
        OSC thread, so read, don't change. Default: nothing."""
        return {}

    def reset(self) -> None:
        """Forget the musical state of the song position left behind: called on every
        transport stop and locate, before the engine hears the ``TransportChange``. The host has
        already released every note of the slot and cancelled its timed output."""

    def release(self) -> None:
        """Let go of what ``prepare`` took (audio devices, threads, model sessions): called
        once when the engine leaves its slot (a swap, shutdown); the engine is not used again."""

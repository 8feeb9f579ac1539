"""Vertical re-orchestration: stem gains from valence and arousal (docs/snc_player.md).

Each stem's gain offset is linear in valence and arousal (both in -1..1, 0 neutral)::

    gain_db(stem) = arousal * arousal_db[stem] + valence * valence_db[stem]

clamped to ``floor_db``..``ceiling_db``. Keys are stem names or ``@role``; a stem matching
several keys takes the name before the role. The default mapping: arousal raises drums
(+6 dB at arousal 1, -9 dB at -1 via ``negative_scale``) and bass (+4 dB); valence moves the
balance toward bright stems (keys, guitar, vocals +3 dB) and away from dark ones (bass -2 dB).
Edit it with a TOML file (``[arousal_db]``, ``[valence_db]``, ``negative_scale``, ``floor_db``,
``ceiling_db``).
"""

from __future__ import annotations

import csv
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import ConfigError
from engines.snc.manifest import StemInfo

__all__ = ["VAMapping", "VATrajectory", "DEFAULT_MAPPING", "load_mapping", "read_trajectory"]


@dataclass(frozen=True)
class VAMapping:
    arousal_db: Mapping[str, float] = field(default_factory=dict)
    valence_db: Mapping[str, float] = field(default_factory=dict)
    negative_scale: float = 1.5  # low arousal takes drums down harder than high arousal raises them
    floor_db: float = -30.0
    ceiling_db: float = 9.0

    def _coefficient(self, table: Mapping[str, float], stem: StemInfo) -> float:
        if stem.name in table:
            return float(table[stem.name])
        return float(table.get(f"@{stem.role}", 0.0))

    def gains_db(self, valence: float, arousal: float, stems: Sequence[StemInfo]) -> dict[str, float]:
        """Gain offset in dB for every stem at this (valence, arousal)."""
        valence = max(-1.0, min(1.0, float(valence)))
        arousal = max(-1.0, min(1.0, float(arousal)))
        out = {}
        for stem in stems:
            a = self._coefficient(self.arousal_db, stem) * arousal
            v = self._coefficient(self.valence_db, stem) * valence
            a = a * self.negative_scale if a < 0 else a
            out[stem.name] = max(self.floor_db, min(self.ceiling_db, a + v))
        return out


DEFAULT_MAPPING = VAMapping(
    arousal_db={"@drums": 6.0, "@bass": 4.0, "@keys": -1.0},
    valence_db={"@keys": 3.0, "@guitar": 3.0, "@vocals": 2.0, "@bass": -2.0},
)


def load_mapping(path: Path) -> VAMapping:
    """A mapping from TOML; keys it leaves out keep the default's values."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    unknown = set(data) - {"arousal_db", "valence_db", "negative_scale", "floor_db", "ceiling_db"}
    if unknown:
        raise ConfigError(f"{path}: unknown keys {sorted(unknown)}")
    try:
        values = {
            k: ({str(n): float(x) for n, x in v.items()} if isinstance(v, dict) else float(v))
            for k, v in data.items()
        }
    except (TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    merged = {
        "arousal_db": DEFAULT_MAPPING.arousal_db,
        "valence_db": DEFAULT_MAPPING.valence_db,
        "negative_scale": DEFAULT_MAPPING.negative_scale,
        "floor_db": DEFAULT_MAPPING.floor_db,
        "ceiling_db": DEFAULT_MAPPING.ceiling_db,
        **values,
    }
    return VAMapping(**merged)


@dataclass(frozen=True)
class VATrajectory:
    """(valence, arousal) over time, linearly interpolated, held beyond both ends."""

    time_s: np.ndarray
    valence: np.ndarray
    arousal: np.ndarray

    def at(self, time_s: float) -> tuple[float, float]:
        return (
            float(np.interp(time_s, self.time_s, self.valence)),
            float(np.interp(time_s, self.time_s, self.arousal)),
        )


def read_trajectory(path: Path) -> VATrajectory:
    """CSV with a header ``time_s,valence,arousal`` (the VA curve format of ``engines/va``)."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"{path}: not a CSV text file ({exc})") from None
    if not rows:
        raise ConfigError(f"{path}: empty; expected a header time_s,valence,arousal")
    header = [h.strip() for h in rows[0]]
    try:
        columns = [header.index(c) for c in ("time_s", "valence", "arousal")]
    except ValueError:
        raise ConfigError(f"{path}: header {header} must name time_s, valence and arousal") from None
    values = []
    for line, row in enumerate(rows[1:], start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        try:
            t, v, a = (float(row[c]) for c in columns)
        except (ValueError, IndexError):
            raise ConfigError(f"{path} line {line}: {row} is not three numbers") from None
        if not all(math.isfinite(x) for x in (t, v, a)) or not (-1 <= v <= 1 and -1 <= a <= 1):
            raise ConfigError(f"{path} line {line}: valence and arousal must lie in -1..1, time be finite")
        if values and t <= values[-1][0]:
            raise ConfigError(f"{path} line {line}: time {t} s does not increase")
        values.append((t, v, a))
    if not values:
        raise ConfigError(f"{path}: no samples")
    data = np.array(values)
    return VATrajectory(data[:, 0], data[:, 1], data[:, 2])

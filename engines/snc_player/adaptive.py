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

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import ConfigError
from engines.snc.manifest import StemInfo

__all__ = ["DEFAULT_MAPPING", "VAMapping", "load_mapping"]


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

"""Control maps (TOML) shipped as package data."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["maps_dir"]


def maps_dir() -> Path:
    return Path(str(files(__name__)))

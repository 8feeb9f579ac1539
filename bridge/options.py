"""Checks of option values shared by the command line and the config file. Imports nothing
heavy: ``scorebridge status`` and ``panic`` parse their ports with it."""

from __future__ import annotations

from typing import Any

__all__ = ["check_port"]


def check_port(value: Any, what: str) -> int:
    """A UDP/TCP port 0..65535 (0 = any free port), or ValueError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ValueError(f"{what} must be a whole number 0..65535 (0 = any free port), not {value!r}")
    return value

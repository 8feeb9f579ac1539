"""How deeply parsed data (TOML, JSON) nests lists and tables, counted without recursion, so a
hostile document cannot exhaust the stack of the code that checks it."""

from __future__ import annotations

from typing import Any

__all__ = ["nesting_depth"]


def nesting_depth(value: Any, limit: int) -> int:
    """Levels of lists and dicts in ``value`` (the value itself is level 1); the walk stops
    descending past ``limit``, so a deeper document reports ``limit + 1``."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if level <= limit:
            stack.extend((child, level + 1) for child in children)
    return deepest

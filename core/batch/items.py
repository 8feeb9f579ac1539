"""What a batch is made of: items (one input set, one output set each) and the job that turns an
item into its outputs. Items come from a folder (every file with the command's suffixes) or from
a manifest: CSV with a header row, or JSON lines, one item per row."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from core.errors import ConfigError

__all__ = ["MANIFEST_SUFFIXES", "Item", "Job", "folder_items", "is_manifest", "manifest_rows"]

MANIFEST_SUFFIXES = (".csv", ".jsonl")


@dataclass(frozen=True)
class Item:
    """One unit of work: ``key`` names it in the results manifest (unique in a batch),
    ``inputs`` is what the job reads (paths as strings: an item crosses process and machine
    boundaries as a few hundred bytes, never as audio), ``outputs`` the files it writes."""

    key: str
    outputs: tuple[str, ...]
    inputs: dict[str, Any] = field(default_factory=dict)


class Job(Protocol):
    """A command's work on one item. A job object is pickled to every worker process or Ray
    actor, so it holds options only; ``setup`` loads what is costly (a model) once per worker."""

    def settings(self) -> dict[str, Any]:
        """The options that shape the outputs: a resumed run redoes items made with others."""

    def setup(self, threads: int) -> Any:
        """Load the model(s) with ``threads`` intra-op threads; the result is passed to ``process``."""

    def process(self, state: Any, item: Item) -> Any:
        """Write the item's outputs (atomically) and return a one-line summary, or, for a job
        whose items go back to the driver (``core.batch.pool.gather``: the eval harnesses),
        return the item's value; raise a ScoreBridgeError (or ValueError/OSError) naming the
        problem for a bad input."""

    # A job whose work leaves more than core.atomic's temporaries when its worker is killed (a
    # scratch folder) also has ``sweep(items)``: remove what dead workers left for ``items``,
    # never what a live one uses. The batch command calls it before and after every run.


def is_manifest(path: Path) -> bool:
    """A CSV or JSON-lines file given where a folder or one input could be."""
    return path.suffix.lower() in MANIFEST_SUFFIXES and path.is_file()


def folder_items(root: Path, suffixes: Iterable[str]) -> list[tuple[str, Path]]:
    """(key, path) for every file under ``root`` with one of ``suffixes`` (any case), sorted; the
    key is the path relative to ``root`` (POSIX spelling, so it is the same on every node)."""
    wanted = {s.lower() for s in suffixes}
    found = sorted(p for p in root.rglob("*") if p.suffix.lower() in wanted and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    return [(path.relative_to(root).as_posix(), path) for path in found]


def manifest_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line, row) for every row of a CSV (header row first) or JSON-lines manifest; blank lines
    are skipped. Errors name the file and the line."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the manifest ({exc})") from None
    rows: list[tuple[int, dict[str, Any]]] = []
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        if not reader.fieldnames:
            raise ConfigError(f"{path}: an empty manifest (a CSV manifest starts with a header row)")
        for row in reader:
            if None in row:
                raise ConfigError(f"{path}:{reader.line_num}: more cells than the header names")
            cleaned = {k.strip(): (v or "").strip() for k, v in row.items() if k}
            if any(cleaned.values()):
                rows.append((reader.line_num, cleaned))
    else:
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{number}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise ConfigError(f"{path}:{number}: each line must be a JSON object")
            rows.append((number, row))
    if not rows:
        raise ConfigError(f"{path}: the manifest lists no item")
    return rows

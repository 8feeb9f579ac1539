"""The results manifest: one JSON line per finished item (item, status, output, seconds, error,
attempts, settings), appended as items finish, so a run stopped anyhow (Ctrl-C, a killed driver)
loses at most the items in flight. A second run reads it to resume: items done with the same
settings and whose outputs exist are skipped, failed ones are retried only when asked. At the
end of a run the file is rewritten in item order, one line per item, whatever ran where."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from core.atomic import TEMPORARY_SUFFIX, atomic_output
from core.batch.items import Item, Job
from core.errors import ScoreBridgeError

__all__ = ["DONE", "FAILED", "Plan", "Result", "Results", "execute", "fingerprint", "plan", "sweep_temporaries"]

DONE = "done"
FAILED = "failed"


@dataclass
class Result:
    item: str
    status: str
    output: str
    seconds: float
    error: str = ""
    message: str = ""
    attempts: int = 1
    settings: str = ""
    node: str = ""  # the Ray node that ran the item ("" on the local pool)
    value: Any = None  # what a gathering job (the eval harnesses) hands back; never written to the manifest

    def row(self) -> str:
        """The item's line in the results manifest (JSON, sorted keys, no ``value``)."""
        return json.dumps({f.name: getattr(self, f.name) for f in fields(self) if f.name != "value"}, sort_keys=True)


def fingerprint(settings: dict[str, Any]) -> str:
    """A short hash of a job's output-shaping options (JSON with sorted keys)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def execute(job: Job, state: Any, item: Item) -> Result:
    """Run one item where the worker is; a bad input becomes a failed Result naming the
    problem, so it never ends the worker nor the batch. Stops (KeyboardInterrupt, SystemExit)
    pass through: the item stays unrecorded and the next run does it."""
    started = time.perf_counter()
    output = item.outputs[0] if item.outputs else ""
    try:
        for path in item.outputs:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        returned = job.process(state, item)
    except (ScoreBridgeError, ValueError, OSError) as exc:
        return Result(item.key, FAILED, output, round(time.perf_counter() - started, 3), error=str(exc))
    except Exception as exc:  # noqa: BLE001 - a bug on one input must not end the other items
        where = traceback.extract_tb(exc.__traceback__)[-1]
        error = f"internal error {type(exc).__name__}: {exc} ({Path(where.filename).name}:{where.lineno})"
        return Result(item.key, FAILED, output, round(time.perf_counter() - started, 3), error=error)
    seconds = round(time.perf_counter() - started, 3)
    if isinstance(returned, str):
        return Result(item.key, DONE, output, seconds, message=returned)
    return Result(item.key, DONE, output, seconds, value=returned)


class Results:
    """The results manifest at ``path`` (JSON lines)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: dict[str, Result] = {}
        self.unreadable = 0
        self._journal = None

    def load(self) -> Results:
        if not self.path.exists():
            return self
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ScoreBridgeError(f"{self.path}: cannot read the results manifest ({exc}); move it "
                                   "away to start over") from None
        fields = set(Result.__dataclass_fields__)
        for line in lines:
            try:
                record = json.loads(line)
                self.records[record["item"]] = Result(**{k: v for k, v in record.items() if k in fields})
            except (json.JSONDecodeError, KeyError, TypeError):
                # the last line of a run killed while writing it; that item is simply done again
                self.unreadable += 1
        return self

    def record(self, result: Result) -> None:
        """Append one finished item (flushed, so a killed driver keeps it)."""
        if self._journal is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._journal = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._journal.write(result.row() + "\n")
        self._journal.flush()
        self.records[result.item] = result

    def close(self, order: Sequence[str] | None = None) -> None:
        """Stop appending; with ``order`` (the batch's item keys) rewrite the file atomically with
        one line per item in that order, then the records of items no longer in the batch."""
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        if order is None or not self.records:
            return
        known = [key for key in order if key in self.records]
        rest = sorted(set(self.records) - set(known))
        with atomic_output(self.path) as temporary:
            temporary.write_text("".join(self.records[key].row() + "\n" for key in (*known, *rest)),
                                 encoding="utf-8")


@dataclass
class Plan:
    """What a run does: ``todo`` runs; the rest is skipped and counted."""

    todo: list[Item] = field(default_factory=list)
    done: int = 0
    failed_before: int = 0
    changed: int = 0


def plan(items: Iterable[Item], results: Results, settings: str, retry_failed: bool) -> Plan:
    chosen = Plan()
    for item in items:
        record = results.records.get(item.key)
        if record is None:
            chosen.todo.append(item)
        elif record.settings != settings:
            chosen.changed += 1
            chosen.todo.append(item)
        elif record.status == DONE and all(Path(p).exists() for p in item.outputs):
            chosen.done += 1
        elif record.status == FAILED and not retry_failed:
            chosen.failed_before += 1
        else:
            chosen.todo.append(item)
    return chosen


def sweep_temporaries(items: Iterable[Item]) -> int:
    """Remove temporary files (core.atomic's ``.NAME.XXXXXXXX.part``) that a killed worker left
    beside the outputs of ``items``; one listing per output folder. Returns how many."""
    names: dict[Path, set[str]] = {}
    for item in items:
        for output in item.outputs:
            path = Path(output)
            names.setdefault(path.parent, set()).add(path.name)
    removed = 0
    for folder, wanted in names.items():
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            with os.scandir(folder) as entries:
                for entry in entries:
                    name = entry.name
                    if name.startswith(".") and name.endswith(TEMPORARY_SUFFIX) \
                            and name[1:-len(TEMPORARY_SUFFIX)].rpartition(".")[0] in wanted:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(entry.path)
                            removed += 1
    return removed

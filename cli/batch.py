"""The batch options every offline command shares, and the one call that runs a batch.

``add_batch_arguments(parser)`` adds ``--workers``, ``--ray-address``, ``--results`` and
``--retry-failed``; ``run_batch(args, job, items, output)`` resumes from the results manifest,
runs what is left on the local process pool (default) or on Ray, shows a progress bar with an
ETA, and ends with a non-zero exit naming how many items failed. docs/batch.md has the details.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from core.batch import Item, Job, folder_items, is_manifest, manifest_rows
from core.errors import ConfigError, ScoreBridgeError

__all__ = ["BATCH_OPTIONS", "RESULTS_NAME", "add_batch_arguments", "add_pool_arguments", "is_batch_input", "item_key",
           "items_from", "run_batch"]

# The results manifest's default name, in the output folder.
RESULTS_NAME = "batch-results.jsonl"
# Failures named in the closing error; the rest are counted there and each has its error in the
# results manifest (a catalogue run can fail thousands of items).
FAILURES_SHOWN = 20
# Options that say how a batch runs, not what it writes: left out of the resume fingerprint.
BATCH_OPTIONS = ("workers", "ray_address", "results", "retry_failed", "input", "output", "run", "command",
                 "verbose", "manifest")


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of workers (1 or more)")
    return value


def add_pool_arguments(group: argparse._ActionsContainer, one: str = "") -> None:
    """``--workers`` and ``--ray-address``: where the items run. ``one``: what ``--workers 1`` does
    when it is not the one-process pool."""
    group.add_argument("--workers", type=_workers,
                       help="worker processes (default: one per core; with --ray-address: the cluster's CPUs)" + one)
    group.add_argument("--ray-address", default=os.environ.get("RAY_ADDRESS") or None, metavar="ADDRESS",
                       help="run on a Ray cluster: auto, HOST:PORT, ray://HOST:10001 or local (default: "
                       "$RAY_ADDRESS if set, else this machine's process pool); needs scorebridge[ray]")


def add_batch_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("batch (a folder or a manifest as input; docs/batch.md)")
    add_pool_arguments(group)
    group.add_argument("--results", type=Path, metavar="FILE",
                       help=f"results manifest, read to resume and rewritten (default OUT/{RESULTS_NAME})")
    group.add_argument("--retry-failed", action="store_true",
                       help="also redo the items the results manifest lists as failed")


def items_from(source: Path, output: Path, suffixes: Iterable[str],
               outputs: Callable[[str, Path], tuple[Path, ...]]) -> list[Item]:
    """The items of a folder (every file with ``suffixes``) or of a manifest (a column/key
    ``input``, relative to the manifest's folder, and an optional ``output`` relative to
    ``output``). ``outputs(key, source)`` names an item's outputs from its key."""
    if output.exists() and not output.is_dir():
        raise ConfigError(f"-o {output}: a batch writes into a folder, and this is a file")
    items = []
    if source.is_dir():
        pairs = folder_items(source, suffixes)
        if not pairs:
            raise ScoreBridgeError(f"{source}: no {' or '.join(sorted(set(suffixes)))} file in this folder")
        for key, path in pairs:
            items.append(Item(key, tuple(str(p) for p in outputs(key, path)), {"input": str(path)}))
        return items
    for line, row in manifest_rows(source):
        if not row.get("input"):
            raise ConfigError(f"{source}:{line}: no 'input' (each row names its input file)")
        path = source.parent / str(row["input"])
        key = item_key(row.get("output") or row["input"], f"{source}:{line}")
        items.append(Item(key, tuple(str(p) for p in outputs(key, path)), {"input": str(path)}))
    return _unique(items, source)


def item_key(value: Any, where: str) -> str:
    """A manifest row's name, which is also its output's place under -o: a relative path that
    stays inside the folder."""
    key = Path(str(value))
    if key.is_absolute() or ".." in key.parts:
        raise ConfigError(f"{where}: {str(value)!r} would write outside -o; give the row an 'output' "
                          "relative to the output folder")
    return key.as_posix()


def _unique(items: list[Item], source: Path) -> list[Item]:
    seen: dict[str, int] = {}
    for item in items:
        seen[item.key] = seen.get(item.key, 0) + 1
    twice = [key for key, count in seen.items() if count > 1]
    if twice:
        raise ConfigError(f"{source}: {len(twice)} item(s) listed twice, e.g. {twice[0]!r}")
    return items


def is_batch_input(path: Path) -> bool:
    return path.is_dir() or is_manifest(path)


def run_batch(args: argparse.Namespace, job: Job, items: list[Item], output: Path) -> int:
    """Resume, run, report. Raises ScoreBridgeError (exit 1) when any item failed."""
    from core.batch import Results, plan, sweep_temporaries
    from core.batch.local import cpu_count
    from core.batch.pool import placement
    from core.batch.results import fingerprint

    output.mkdir(parents=True, exist_ok=True)
    results = Results(args.results or output / RESULTS_NAME).load()
    settings = fingerprint(job.settings())
    chosen = plan(items, results, settings, args.retry_failed)
    sweep = getattr(job, "sweep", None)  # a job's own leftovers (core.batch.items.Job)

    def sweep_leftovers() -> None:
        sweep_temporaries(chosen.todo)
        if sweep is not None:
            sweep(chosen.todo)

    sweep_leftovers()
    skipped = []
    if chosen.done:
        skipped.append(f"{chosen.done} done earlier")
    if chosen.failed_before:
        skipped.append(f"{chosen.failed_before} failed earlier (--retry-failed redoes them)")
    if chosen.changed:
        skipped.append(f"{chosen.changed} made with other options, done again")
    if skipped:
        print(f"{results.path}: {', '.join(skipped)}")
    where, _, _ = placement(args.workers, args.ray_address, len(chosen.todo), cpu_count())
    failed: list[str] = []
    started = time.perf_counter()
    try:
        if chosen.todo:
            _run(args, job, chosen.todo, where, results, settings, failed)
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C, SIGTERM: what finished is recorded, the rest runs next time
        finished = sum(1 for i in chosen.todo if (r := results.records.get(i.key)) and r.settings == settings)
        print(f"stopped: {finished} of {len(chosen.todo)} items finished and recorded in {results.path}; "
              "the same command resumes", file=sys.stderr)
        raise
    finally:
        results.close([item.key for item in items])
        sweep_leftovers()  # what a worker killed mid-item left (Ray retries in place; a stop kills actors)
    elapsed = time.perf_counter() - started
    ran = len(chosen.todo)
    rate = f", {ran / elapsed:.2f} items/s" if ran and elapsed > 0 else ""
    if ran:
        print(f"{ran - len(failed)} of {ran} items done{rate} on {where}; results in {results.path}")
    else:
        print(f"nothing left to do; results in {results.path}")
    failed_total = len(failed) + chosen.failed_before
    if failed_total:
        shown = "\n  ".join(failed[:FAILURES_SHOWN])
        if len(failed) > FAILURES_SHOWN:
            shown += f"\n  ... and {len(failed) - FAILURES_SHOWN} more, each with its error in {results.path.name}"
        raise ScoreBridgeError(f"{failed_total} of {len(items)} items failed (see {results.path})"
                               + (f":\n  {shown}" if failed else ""))
    return 0


def _relative(path: str, folder: Path) -> str:
    """``path`` relative to the results manifest's folder when inside it, so that two runs into
    two folders (local and Ray) write the same manifest."""
    try:
        return Path(path).resolve().relative_to(folder.resolve()).as_posix()
    except ValueError:
        return path


def _failure(item: Item, error: str) -> str:
    """The error as the single-file command would show it: naming the input."""
    source = str(item.inputs.get("input") or item.inputs.get("master") or item.key)
    return error if source in error else f"{source}: {error}"


def _run(args: argparse.Namespace, job: Job, todo: list[Item], where: str, results: Any, settings: str,
         failed: list[str]) -> None:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from core.batch.pool import run_items

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("ETA"), TimeRemainingColumn())
    if args.ray_address:
        from core.batch.ray_pool import connect

        connect(args.ray_address)  # before the progress bar: a bad address is one line, not a stalled bar
    by_key = {item.key: item for item in todo}
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task(f"{args.command} on {where}", total=len(todo))

        def finished(result) -> None:
            result.settings = settings
            result.output = _relative(result.output, results.path.parent)
            results.record(result)
            if result.status == "done":
                line = result.message or f"{result.item}: done"
            else:
                failed.append(_failure(by_key[result.item], result.error))
                line = f"failed: {failed[-1]}"
            progress.console.print(line, soft_wrap=True, highlight=False, markup=False)
            progress.advance(task)

        run_items(job, todo, finished, args.workers, args.ray_address)

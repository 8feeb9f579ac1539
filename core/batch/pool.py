"""Where a batch runs, for every caller: ``run_items`` sends the items to this machine's process
pool (default), to a Ray cluster (``ray_address``) or, for one worker when the caller allows it,
through this process; ``gather`` is the same run for jobs whose items come back to the driver as
values (the eval harnesses), in item order whatever ran where."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from core.batch.items import Item, Job
from core.batch.results import DONE, Result
from core.errors import ScoreBridgeError

__all__ = ["gather", "placement", "run_items"]


def placement(workers: int | None, ray_address: str | None, count: int, cores: int) -> tuple[str, int | None, int]:
    """(where, in words; workers, None for Ray's own count; threads per worker) for ``count``
    items: locally one worker per core unless told, never more workers than items, and the
    cores shared out so that workers x threads stays within them."""
    if ray_address:
        return f"Ray at {ray_address}", workers, 1
    workers = max(1, min(workers or cores, count or 1))
    threads = max(1, cores // workers)
    return (f"{workers} local worker{'s' if workers > 1 else ''} x {threads} thread{'s' if threads > 1 else ''}",
            workers, threads)


def run_items(job: Job, items: Sequence[Item], on_result: Callable[[Result], None], workers: int | None = None,
              ray_address: str | None = None, in_process: bool = False) -> str:
    """Run ``items``; ``on_result`` gets each finished one in the driver. ``in_process``: one
    worker runs here instead of in a process of its own. Returns where they ran, in words."""
    from core.batch.local import cpu_count

    where, workers, threads = placement(workers, ray_address, len(items), cpu_count())
    if ray_address:
        from core.batch.ray_pool import run_ray

        run_ray(job, items, ray_address, workers, threads, on_result)
    elif in_process and workers == 1:
        from core.batch.local import run_here

        run_here(job, items, threads, on_result)
        where = "this process"
    else:
        from core.batch.local import run_local

        run_local(job, items, workers or 1, threads, on_result)
    return where


def gather(job: Job, items: Sequence[Item], workers: int | None = None, ray_address: str | None = None,
           on_result: Callable[[Result], None] = lambda result: None) -> tuple[list[Result], str]:
    """Every item's Result (its ``value`` and ``seconds``) in the order of ``items``, and where
    they ran; one worker runs in this process. A failed item ends the run with its error."""
    found: dict[str, Result] = {}

    def finished(result: Result) -> None:
        found[result.item] = result
        on_result(result)

    where = run_items(job, items, finished, workers, ray_address, in_process=True)
    failed = [r for r in found.values() if r.status != DONE]
    if failed:
        raise ScoreBridgeError(f"{len(failed)} of {len(items)} items failed, e.g. {failed[0].item}: "
                               f"{failed[0].error}")
    return [found[item.key] for item in items], where


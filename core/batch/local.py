"""The local backend: a pool of worker processes on this machine, one item at a time each.

Each worker loads the job's model once and gets its share of the cores: ONNX Runtime's intra-op
pool and the BLAS/OpenMP pools (OMP_NUM_THREADS and friends, set before the worker imports
numpy) are sized to ``threads``, so N workers never run N x cores threads. The pool is ours, not
``concurrent.futures``: a worker that dies (SIGKILL, a crash in native code) costs only the item
it held, which is known exactly, retried on a fresh worker, and failed after ``attempts`` deaths.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from core.batch.items import Item, Job
from core.batch.results import FAILED, Result, execute, sweep_temporaries
from core.errors import ScoreBridgeError

__all__ = ["THREAD_VARIABLES", "cpu_count", "pinned_environment", "run_here", "run_local", "setup_failure"]

# The thread pools of numpy's BLAS (OpenBLAS, MKL, Accelerate), OpenMP and numexpr.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
                    "NUMEXPR_NUM_THREADS")
# How long a stopped worker gets to remove its temporary files before it is killed.
_STOP_GRACE_S = 5.0


def cpu_count() -> int:
    """The cores this process may run on (its affinity mask, not the host's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


@contextlib.contextmanager
def pinned_environment(threads: int) -> Iterator[None]:
    """The thread-pool variables set to ``threads`` for processes started in the block."""
    saved = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    os.environ.update({name: str(threads) for name in THREAD_VARIABLES})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def setup_failure(exc: BaseException) -> str:
    """A worker's failed set-up (a model that does not load) in one line, for the driver."""
    return f"{exc}" if isinstance(exc, ScoreBridgeError) else f"{type(exc).__name__}: {exc}"


def _stop(_signum: int, _frame: object) -> None:
    raise SystemExit(1)  # unwinds through core.atomic's cleanup, so no temporary stays behind


def _worker(connection: Connection, job: Job, threads: int) -> None:
    """A worker process: load once, then run the items the driver sends until it sends None."""
    # Ctrl-C reaches the whole process group: the driver alone decides, and stops us by SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _stop)
    try:
        state = job.setup(threads)
    except Exception as exc:  # noqa: BLE001 - any setup failure ends the batch with its message
        connection.send(("setup", setup_failure(exc)))
        return
    while True:
        item = connection.recv()
        if item is None:
            return
        connection.send(("result", execute(job, state, item)))


def run_here(job: Job, items: Sequence[Item], threads: int, on_result: Callable[[Result], None]) -> None:
    """Run ``items`` in this process, one after the other: one worker without a process to
    start (the eval harnesses' ``--workers 1``), so nothing guards against a crash in native code."""
    try:
        state = job.setup(threads)
    except Exception as exc:  # noqa: BLE001 - as a worker process's failed set-up ends the batch
        raise ScoreBridgeError(setup_failure(exc)) from None
    for item in items:
        on_result(execute(job, state, item))


@dataclass
class _Slot:
    process: Any
    connection: Connection
    item: Item | None = None


def run_local(job: Job, items: Sequence[Item], workers: int, threads: int, on_result: Callable[[Result], None],
              attempts: int = 3) -> None:
    """Run ``items`` on ``workers`` processes; ``on_result`` gets every finished item in the
    driver. An item whose worker dies is retried; after ``attempts`` deaths it fails."""
    context = multiprocessing.get_context("spawn")  # no fork of a driver that runs threads
    queue = deque(items)
    tries: dict[str, int] = {}
    slots: list[_Slot] = []

    def start() -> _Slot:
        ours, theirs = context.Pipe()
        process = context.Process(target=_worker, args=(theirs, job, threads), daemon=True,
                                  name="scorebridge-batch")
        with pinned_environment(threads):
            process.start()
        theirs.close()
        return _Slot(process, ours)

    try:
        slots = [start() for _ in range(min(workers, len(queue)))]
        while queue or any(slot.item for slot in slots):
            for slot in slots:
                if slot.item is None and queue:
                    slot.item = queue.popleft()
                    slot.connection.send(slot.item)
            ready = set(wait([s.connection for s in slots] + [s.process.sentinel for s in slots]))
            for index, slot in enumerate(slots):
                if slot.connection not in ready and slot.process.sentinel not in ready:
                    continue
                message = None
                with contextlib.suppress(EOFError, OSError):
                    if slot.connection.poll():
                        message = slot.connection.recv()
                if message is not None and message[0] == "setup":
                    raise ScoreBridgeError(message[1])
                if message is not None:
                    result = message[1]
                    result.attempts = tries.get(result.item, 0) + 1
                    slot.item = None
                    on_result(result)
                    continue
                slot.process.join(1.0)
                if slot.process.exitcode is None:
                    continue  # the pipe woke us, the process has not ended yet
                lost = slot.item
                slots[index] = start()
                slot.connection.close()
                if lost is None:
                    continue
                sweep_temporaries([lost])
                tries[lost.key] = tries.get(lost.key, 0) + 1
                if tries[lost.key] >= attempts:
                    code = slot.process.exitcode
                    how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
                    on_result(Result(lost.key, FAILED, lost.outputs[0] if lost.outputs else "", 0.0,
                                     error=f"the worker died on this item {tries[lost.key]} times (last: {how})",
                                     attempts=tries[lost.key]))
                else:
                    queue.appendleft(lost)
    finally:
        _shut_down(slots, on_result)


def _shut_down(slots: list[_Slot], on_result: Callable[[Result], None]) -> None:
    """Idle workers are told to end; busy ones (a stop) get SIGTERM, which unwinds their item's
    temporary files, then SIGKILL after a grace period. A result already sent is still recorded."""
    for slot in slots:
        with contextlib.suppress(EOFError, OSError):
            if slot.item is not None and slot.connection.poll():
                kind, result = slot.connection.recv()
                if kind == "result":
                    slot.item = None
                    on_result(result)
    for slot in slots:
        with contextlib.suppress(OSError, ValueError):
            if slot.item is None:
                slot.connection.send(None)
            else:
                slot.process.terminate()
    for slot in slots:
        slot.process.join(_STOP_GRACE_S)
        if slot.process.exitcode is None:
            slot.process.kill()
            slot.process.join()
        slot.connection.close()
    sweep_temporaries([slot.item for slot in slots if slot.item is not None])

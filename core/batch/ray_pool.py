"""The Ray backend: the same items as the local pool, run by a pool of Ray actors.

Each actor loads the job's model once (its constructor) and runs one item at a time; items
travel as paths (a few hundred bytes), never as audio, so the driver holds no catalogue data and
every node reads its inputs and writes its outputs itself: input and output folders must be on
storage every node sees under the same path. Actors are restarted when their process dies and
the item they held is retried on the restarted actor (``max_restarts``/``max_task_retries``).
At the end of a run, a stop included, the actors are killed (a running item cannot be
interrupted otherwise) and the driver waits until those on this machine are gone, so that the
caller's sweep of what a killed item left behind runs after the last write; what an actor on
another machine leaves is swept at the start of the next run. Ray is imported only here, and
this module only when ``--ray-address`` is given.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from core.batch.items import Item, Job
from core.batch.local import THREAD_VARIABLES, setup_failure
from core.batch.results import FAILED, Result, execute
from core.errors import ConfigError, ScoreBridgeError

__all__ = ["INSTALL_HINT", "connect", "import_ray", "run_ray"]

INSTALL_HINT = "--ray-address needs Ray, an optional extra: pip install 'scorebridge[ray]'"
_PROBE_TIMEOUT_S = 5.0
# At the end of a run: how long the actors get to say which process they are, and how long the
# driver waits for those on this machine to end once killed.
_WHEREABOUTS_TIMEOUT_S = 10.0
_EXIT_TIMEOUT_S = 10.0


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    return ray


class _Worker:
    """A Ray actor's body: the model is loaded once, in the constructor (rerun on a restart)."""

    def __init__(self, job: Job, threads: int) -> None:
        # Ray sets OMP_NUM_THREADS from num_cpus; the BLAS pools and ORT get the same share.
        os.environ.update({name: str(threads) for name in THREAD_VARIABLES})
        import ray

        self.node = ray.get_runtime_context().get_node_id()
        self.job = job
        self.state = None
        self.error = ""
        try:
            self.state = job.setup(threads)
        except Exception as exc:  # noqa: BLE001 - reported to the driver, which ends the batch
            self.error = setup_failure(exc)

    def whereabouts(self) -> tuple[str, int]:
        """(host name, process id): answered while ``run`` works (a second thread), so that the
        driver can wait for this very process to end after killing it."""
        return socket.gethostname(), os.getpid()

    def run(self, item: Item) -> tuple[str, Any]:
        if self.error:
            return "setup", self.error
        result = execute(self.job, self.state, item)
        result.node = self.node
        return "result", result


def _probe(address: str) -> None:
    """A HOST:PORT where nothing listens fails now, not after Ray's minutes of retries. ``auto``
    is resolved as Ray resolves it (the last cluster ``ray start`` recorded on this machine,
    which may be long gone)."""
    shown = address
    if address == "auto":
        try:
            from ray._private.services import canonicalize_bootstrap_address
        except ImportError:  # a Ray that moved its private helper: let ray.init resolve it
            return
        try:
            address = canonicalize_bootstrap_address(address) or ""
        except ConnectionError:
            raise ConfigError("--ray-address auto: no Ray cluster runs on this machine; start one with "
                              "`ray start --head` or give its address") from None
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or "://" in address:
        return
    try:
        socket.create_connection((host, int(port)), timeout=_PROBE_TIMEOUT_S).close()
    except OSError as exc:
        where = shown if shown == address else f"{shown} ({address})"
        raise ConfigError(f"--ray-address {where}: no Ray cluster answers there ({exc.strerror or exc}); "
                          "start one with `ray start --head` or give its address") from None


def connect(address: str) -> Any:
    """Connect this process to the cluster at ``address``; returns the ray module."""
    ray = import_ray()
    if ray.is_initialized():
        return ray
    _probe(address)
    # ray.init installs its own SIGTERM handler; the CLI's (stop through cleanup) stays in force.
    handler = signal.getsignal(signal.SIGTERM)
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        raise ConfigError(f"--ray-address {address}: cannot connect to a Ray cluster ({exc}); start one "
                          "with `ray start --head` or give its address (HOST:PORT, ray://HOST:10001, auto); a "
                          "cluster with token authentication needs RAY_AUTH_MODE=token here too") from None
    finally:
        if handler is not None:
            signal.signal(signal.SIGTERM, handler)
    return ray


def run_ray(job: Job, items: Sequence[Item], address: str, workers: int | None, threads: int,
            on_result: Callable[[Result], None], attempts: int = 3) -> int:
    """Run ``items`` on Ray actors at ``address``; ``on_result`` gets every finished item in the
    driver. Returns the number of actors used (``workers``, default the cluster's CPUs / threads)."""
    ray = connect(address)
    from ray.exceptions import RayError

    actors: list[Any] = []
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        count = min(workers or max(1, cpus // threads), len(items))
        # two threads: ``run`` (one item at a time, the driver sends no more) and ``whereabouts``
        actor_class = ray.remote(_Worker).options(num_cpus=threads, max_restarts=attempts,
                                                  max_task_retries=attempts, max_concurrency=2)
        actors = [actor_class.remote(job, threads) for _ in range(count)]
        queue = deque(items)
        running: dict[Any, tuple[Any, Item]] = {}
        idle = list(actors)
        while queue or running:
            while idle and queue:
                actor, item = idle.pop(), queue.popleft()
                running[actor.run.remote(item)] = (actor, item)
            ready, _ = ray.wait(list(running), num_returns=1)
            for reference in ready:
                actor, item = running.pop(reference)
                idle.append(actor)
                try:
                    kind, payload = ray.get(reference)
                except RayError as exc:
                    lines = str(exc).strip().splitlines()
                    on_result(Result(item.key, FAILED, item.outputs[0] if item.outputs else "", 0.0,
                                     attempts=attempts + 1,
                                     error=f"Ray lost this item: {type(exc).__name__}: {lines[0] if lines else ''}"))
                    continue
                if kind == "setup":
                    raise ScoreBridgeError(payload)
                on_result(payload)
        return count
    finally:
        _stop(ray, actors)
        ray.shutdown()


def _stop(ray: Any, actors: list[Any]) -> None:
    """Kill ``actors`` (their running items too) and wait until those on this machine have ended."""
    from ray.exceptions import RayError

    asked = [actor.whereabouts.remote() for actor in actors]
    answered, _ = ray.wait(asked, num_returns=len(asked), timeout=_WHEREABOUTS_TIMEOUT_S) if asked else ([], [])
    processes = []
    for reference in answered:
        with contextlib.suppress(RayError):
            host, pid = ray.get(reference)
            if host == socket.gethostname():
                processes.append(pid)
    for actor in actors:
        with contextlib.suppress(RayError):
            ray.kill(actor)
    deadline = time.monotonic() + _EXIT_TIMEOUT_S
    while (alive := [pid for pid in processes if _running(pid)]) and time.monotonic() < deadline:
        processes = alive
        time.sleep(0.02)


def _running(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie, ended but not yet reaped by its raylet, does not)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (macOS): ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

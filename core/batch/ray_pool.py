"""The Ray backend: the same items as the local pool, run by a pool of Ray actors.

Each actor loads the job's model once (its constructor) and runs one item at a time; items
travel as paths (a few hundred bytes), never as audio, so the driver holds no catalogue data and
every node reads its inputs and writes its outputs itself: input and output folders must be on
storage every node sees under the same path. Actors are restarted when their process dies and
the item they held is retried on the restarted actor (``max_restarts``/``max_task_retries``).
Ray is imported only here, and this module only when ``--ray-address`` is given.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
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
        actor_class = ray.remote(_Worker).options(num_cpus=threads, max_restarts=attempts,
                                                  max_task_retries=attempts)
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
        for actor in actors:
            with contextlib.suppress(RayError):
                ray.kill(actor)
        ray.shutdown()

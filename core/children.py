"""Child processes that do not outlive the process that started them.

On Linux a child can ask the kernel for a signal when its parent dies
(``prctl(PR_SET_PDEATHSIG)``), which covers the deaths no ``finally`` sees: SIGKILL, a crash,
an out-of-memory kill. The kernel sends it when the *thread* that forked the child ends, so
``TiedPopen`` forks from a thread that lasts as long as the process: the calling thread when
it is the main one, else one spawning thread kept for the purpose. Elsewhere (macOS, Windows)
it is a plain ``Popen``.
"""

from __future__ import annotations

import ctypes
import functools
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["TiedPopen", "die_with_parent"]

_PR_SET_PDEATHSIG = 1


@functools.cache
def _prctl() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def die_with_parent(death_signal: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the child sent ``death_signal`` when the thread that forks it
    ends (Linux); None where that cannot be asked."""
    prctl = _prctl()
    if prctl is None:
        return None
    parent_pid = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, ctypes.c_ulong(int(death_signal)))
        if os.getppid() != parent_pid:  # the parent died before the request took hold
            os.kill(os.getpid(), death_signal)

    return preexec


class _Spawner:
    """One daemon thread that forks children for threads that may end before them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[tuple[Callable[[], None], queue.SimpleQueue]] | None = None

    def call(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._jobs is None:
                self._jobs = queue.SimpleQueue()
                threading.Thread(target=self._run, args=(self._jobs,), name="child-spawner", daemon=True).start()
            jobs = self._jobs
        done: queue.SimpleQueue[BaseException | None] = queue.SimpleQueue()
        jobs.put((job, done))
        error = done.get()
        if error is not None:
            raise error

    @staticmethod
    def _run(jobs: queue.SimpleQueue) -> None:
        while True:
            job, done = jobs.get()
            try:
                job()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller, raised there
                done.put(exc)
            else:
                done.put(None)


_SPAWNER = _Spawner()


class TiedPopen(subprocess.Popen):
    """``subprocess.Popen`` whose child gets ``death_signal`` (SIGKILL by default) when this
    process ends, however it ends. A ``preexec_fn`` of the caller's own runs after the tie."""

    def __init__(self, args: Any, *, death_signal: int = signal.SIGKILL, **kwargs: Any) -> None:
        tie = die_with_parent(death_signal)
        if tie is not None:
            own = kwargs.pop("preexec_fn", None)
            kwargs["preexec_fn"] = tie if own is None else lambda: (tie(), own())
        if tie is None or threading.current_thread() is threading.main_thread():
            super().__init__(args, **kwargs)
        else:
            _SPAWNER.call(lambda: subprocess.Popen.__init__(self, args, **kwargs))

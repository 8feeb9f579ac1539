"""Atomic output files: write to a temporary sibling, rename over the target on success.

Every offline command writes its files through here, so an error, Ctrl-C or SIGTERM (which the
CLI turns into an exception in the main thread) leaves the target as it was and no temporary
file behind. The data is flushed to disk before the rename, and the file gets the permissions
any new file of this process would get (mkstemp's private 0600 would surprise the user).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = ["TEMPORARY_SUFFIX", "atomic_output", "atomic_outputs", "new_file_mode", "signals_deferred",
           "temporary_folder"]

# The signals the CLI turns into an exception (a stop): held back while a temporary is
# created and not yet known to the code that removes it.
_STOP_SIGNALS = tuple(s for s in (getattr(signal, n, None) for n in ("SIGTERM", "SIGINT", "SIGHUP")) if s)

# Temporary files are ``.NAME.XXXXXXXX.part`` beside their target.
TEMPORARY_SUFFIX = ".part"


def new_file_mode() -> int:
    """Permissions a plain new file gets under this process's umask (mkstemp makes 0600).
    Read from /proc (no umask() round trip, which would briefly change it for every thread)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        return 0o644  # no /proc (macOS): the usual umask 022
    return 0o644


def _folder(target: Path) -> Path:
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise FileNotFoundError(f"{target}: the folder {directory} does not exist")
    return directory


def _sync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold stop signals back for the block, then deliver them to their own handlers.

    A signal handler that raises can strike between creating a temporary (``mkstemp``,
    ``mkdtemp``) and recording it for cleanup; the temporary would stay behind. Only the main
    thread can change handlers (Python runs them there); elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {}
    for signum in _STOP_SIGNALS:
        handler = signal.getsignal(signum)
        if handler is None:  # installed outside Python: leave it alone
            continue
        previous[signum] = handler
        signal.signal(signum, lambda number, _frame: caught.append(number))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in caught:
            signal.raise_signal(signum)


@contextlib.contextmanager
def temporary_folder(parent: str | os.PathLike[str], prefix: str) -> Iterator[Path]:
    """A private folder in ``parent`` for a command's work files, removed when the block ends
    however it ends (a stop signal included, even one that arrives as it is created)."""
    folder: Path | None = None
    try:
        with signals_deferred():
            folder = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
        yield folder
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def atomic_outputs(paths: Sequence[str | os.PathLike[str]]) -> Iterator[list[Path]]:
    """Yield a temporary path next to each of ``paths``; rename them all to their targets only
    if the block succeeds (all or none of a command's outputs appear).

    On any exception, KeyboardInterrupt and SystemExit included, every temporary file is
    removed and the targets are left untouched.
    """
    targets = [Path(path) for path in paths]
    temporaries: list[Path] = []
    try:
        for target in targets:
            with signals_deferred():
                handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TEMPORARY_SUFFIX,
                                                dir=_folder(target))
                temporaries.append(Path(name))
            os.close(handle)
        yield list(temporaries)
        mode = new_file_mode()
        for temporary in temporaries:
            os.chmod(temporary, mode)
            _sync(temporary)
        for temporary, target in zip(temporaries, targets, strict=True):
            os.replace(temporary, target)
        for folder in {_folder(target) for target in targets}:
            # the renames reach the disk with the folder's entry; some file systems cannot
            # fsync a folder, and the files themselves are already synced
            with contextlib.suppress(OSError):
                _sync(folder)
    finally:
        for temporary in temporaries:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` only if the block succeeds.

    On any exception the temporary file is removed and ``path`` is left untouched, so a
    failed command never leaves a half-written file.
    """
    with atomic_outputs([path]) as (temporary,):
        yield temporary

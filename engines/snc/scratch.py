"""Scratch folders of the SNC commands that a killed process cannot leave behind for good.

An encoder needs room beside its output (scratch PCM files of the track's length and the
merged file before it is renamed into place: the same file system, so the rename is atomic).
A ``finally`` block removes that room on an error or a stop signal, but nothing runs on
SIGKILL (the out-of-memory killer, a batch layer ending a worker). So each folder is named
``.snc-[KIND-]PID-XXXXXXXX`` and holds a lock (``flock``) for its owner's whole life, which the
kernel releases when the owner dies however it dies; the next command that makes a scratch
folder in the same place first removes every sibling whose owner PID is gone and whose lock it
can take. Both conditions are checked: a PID alone may be reused, or belong to another PID
namespace sharing the folder, and a lock alone is not yet taken in the instant after the
folder is created. The final files are written inside the scratch folder too (the encoder's
.snc, the decoder's WAVs), so a killed command leaves no partial output either.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from core.atomic import new_file_mode, signals_deferred

try:
    import fcntl
except ImportError:  # (not POSIX: only the owner's PID is checked)
    fcntl = None  # type: ignore[assignment]

__all__ = ["SCRATCH_PREFIX", "publish", "publish_all", "scratch_folder", "sweep_scratch"]

SCRATCH_PREFIX = ".snc-"
_LOCK_NAME = ".owner.lock"
_NAME = re.compile(r"^\.snc-(?:[a-z]+-)?(\d+)-[A-Za-z0-9_]+$")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _lock(path: Path, block: bool) -> int | None:
    """An exclusive lock on ``path``: its descriptor, or None when another process holds it
    (or, with ``block`` False, the file is gone: nothing to lock)."""
    try:
        descriptor = os.open(path, os.O_RDWR | (os.O_CREAT if block else 0), 0o600)
    except FileNotFoundError:
        return None
    if fcntl is not None:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(descriptor)
            return None
    return descriptor


def sweep_scratch(parent: str | os.PathLike[str]) -> list[Path]:
    """Remove the scratch folders in ``parent`` left by dead SNC commands; returns them."""
    removed = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    for entry in entries:
        match = _NAME.match(entry.name)
        if match is None or not entry.is_dir(follow_symlinks=False) or _alive(int(match.group(1))):
            continue
        folder = Path(entry.path)
        lock = _lock(folder / _LOCK_NAME, block=False)
        if lock is None and (folder / _LOCK_NAME).exists():
            continue  # its owner lives (in another PID namespace)
        try:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        finally:
            if lock is not None:
                os.close(lock)
    return removed


@contextlib.contextmanager
def scratch_folder(parent: str | os.PathLike[str], kind: str = "") -> Iterator[Path]:
    """A locked scratch folder in ``parent`` (after sweeping the dead ones there), removed when
    the block ends however it ends; what SIGKILL leaves, the next call sweeps."""
    if kind and not re.fullmatch(r"[a-z]+", kind):
        raise ValueError(f"scratch kind {kind!r} must be lower-case letters")
    sweep_scratch(parent)
    folder: Path | None = None
    lock: int | None = None
    try:
        with signals_deferred():
            folder = Path(tempfile.mkdtemp(dir=parent, prefix=f"{SCRATCH_PREFIX}{kind + '-' if kind else ''}"
                                                              f"{os.getpid()}-"))
        lock = _lock(folder / _LOCK_NAME, block=True)
        yield folder
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        if lock is not None:
            os.close(lock)


@contextlib.contextmanager
def publish(folder: Path, target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a path inside the scratch ``folder`` (beside ``target``); when the block succeeds,
    sync it and rename it onto ``target`` in one step (a reader sees the old file or the whole
    new one, never a part). On failure the file goes with the folder."""
    with publish_all(folder, [target]) as (partial,):
        yield partial


@contextlib.contextmanager
def publish_all(folder: Path, targets: list[str | os.PathLike[str]]) -> Iterator[list[Path]]:
    """``publish`` for several files: a path inside ``folder`` for each target; when the block
    succeeds, every file is synced, then each renamed onto its target (all or none appear)."""
    targets = [Path(target) for target in targets]
    partials = [folder / f"output{index}{''.join(target.suffixes[-1:])}" for index, target in enumerate(targets)]
    yield list(partials)
    mode = new_file_mode()
    for partial in partials:
        os.chmod(partial, mode)
        descriptor = os.open(partial, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
    for partial, target in zip(partials, targets, strict=True):
        os.replace(partial, target)
    for parent in {target.parent for target in targets}:
        with contextlib.suppress(OSError):  # (some file systems cannot sync a folder)
            descriptor = os.open(parent, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)

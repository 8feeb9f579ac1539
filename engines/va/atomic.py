"""Atomic output files: write to a temporary sibling, rename over the target on success."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_output"]


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` only if the block succeeds.

    On any exception the temporary file is removed and ``path`` is left untouched, so a
    failed command never leaves a half-written file.
    """
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise FileNotFoundError(f"{target}: the folder {directory} does not exist")
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=directory)
    os.close(handle)
    temporary_path = Path(temporary)
    try:
        yield temporary_path
        os.replace(temporary_path, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary_path.unlink()

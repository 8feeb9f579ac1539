"""Checks for file and folder parameters (``Param(unit="file")`` / ``unit="folder"``).

A path that arrives from outside (OSC, the browser, a control map) may name only a regular file
of bounded size inside the folders the user allowed: never a device (``/dev/zero`` grows the
reader without end), a FIFO (blocks the reader forever), a pseudo-file (``/proc/self/environ``)
or a symlink that leads out of those folders. Errors name the path and the reason, never the
file's content.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from core.errors import ParameterError

__all__ = ["DEFAULT_MAX_FILE_BYTES", "PSEUDO_FILESYSTEMS", "check_file", "check_folder", "inside",
           "regular_file"]

# A file parameter without its own ``max_bytes``: the size of the largest curve or table an
# engine reads whole into memory.
DEFAULT_MAX_FILE_BYTES = 64 * 1024 * 1024
# Kernel and device trees: never a file parameter, whatever folder was allowed.
PSEUDO_FILESYSTEMS = (Path("/proc"), Path("/sys"), Path("/dev"))


def _resolve(value: str | os.PathLike[str], name: str) -> Path:
    try:
        return Path(os.path.expanduser(os.fspath(value))).resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop, a NUL byte
        raise ParameterError(f"{name}: {os.fspath(value)!r} cannot be resolved ({exc})") from None


def inside(path: Path, roots: Iterable[Path]) -> bool:
    """Is the resolved ``path`` one of ``roots`` or below one of them?"""
    return any(path == root or root in path.parents for root in roots)


def _check_place(path: Path, shown: str, roots: Iterable[Path], name: str) -> None:
    if inside(path, PSEUDO_FILESYSTEMS):
        raise ParameterError(f"{name}: {shown} is in /{path.parts[1]}, which holds no files a "
                             "parameter may name")
    roots = [Path(r).resolve() for r in roots]
    if not inside(path, roots):
        allowed = ", ".join(str(r) for r in roots) or "none"
        raise ParameterError(f"{name}: {shown} is outside the allowed folders ({allowed}); "
                             "start serve with --allow-dir FOLDER to allow another")


def regular_file(path: str | os.PathLike[str], max_bytes: int, name: str = "file") -> Path:
    """``path`` resolved, if it is a regular file of at most ``max_bytes`` (ParameterError if not)."""
    resolved = _resolve(path, name)
    try:
        info = os.stat(resolved)
    except FileNotFoundError:
        raise ParameterError(f"{name}: {os.fspath(path)} does not exist") from None
    except OSError as exc:
        raise ParameterError(f"{name}: {os.fspath(path)} cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise ParameterError(f"{name}: {os.fspath(path)} is not a regular file")
    if info.st_size > max_bytes:
        raise ParameterError(f"{name}: {os.fspath(path)} is {info.st_size} bytes, more than the "
                             f"{max_bytes} a {name} may have")
    return resolved


def check_file(value: str, roots: Iterable[Path], max_bytes: int, name: str = "file") -> Path:
    """The resolved path of a file parameter's value, checked (ParameterError if refused)."""
    resolved = _resolve(value, name)
    _check_place(resolved, value, roots, name)
    return regular_file(resolved, max_bytes, name)


def check_folder(value: str, roots: Iterable[Path], name: str = "folder") -> Path:
    """The resolved path of a folder parameter's value (it may not exist yet), checked."""
    resolved = _resolve(value, name)
    _check_place(resolved, value, roots, name)
    if resolved.exists() and not resolved.is_dir():
        raise ParameterError(f"{name}: {value} exists and is not a folder")
    return resolved

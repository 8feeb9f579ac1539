"""Reading a control map file safely: a regular UTF-8 file of bounded size whose TOML nests
a bounded number of levels (``bridge.maps`` validates what it holds). A map comes from outside (a
download, a shared file), so nothing here reads more than MAX_MAP_BYTES or lets tomllib recurse
without limit; MappingError names the file, the line where known, and the problem.
"""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path
from typing import Any

from core.errors import MappingError
from core.nesting import nesting_depth

__all__ = ["MAX_MAP_BYTES", "MAX_MAP_NESTING", "parse_toml", "read_map_text"]

# The shipped maps are under 4 KB and a map at MAX_BINDINGS about 400 KB: anything larger is
# not a control map, and reading it whole would only cost memory.
MAX_MAP_BYTES = 1024 * 1024
# Levels of arrays and tables a map may nest (the document is level 1, a [[bind]] table's
# ``values`` list level 4);
# tomllib parses nesting by recursion, so a deeper file is refused instead of parsed.
MAX_MAP_NESTING = 8

def _deep_line(text: str) -> int:
    """The line where brackets first nest deeper than MAX_MAP_NESTING (comments skipped; a
    guess, since brackets inside strings count too), else 1."""
    level = 0
    for number, line in enumerate(text.splitlines(), start=1):
        code = line.split("#", 1)[0]
        if level == 0 and code.lstrip().startswith("["):
            continue  # a [table] or [[array]] header
        for char in code:
            level += char in "[{"
            level -= char in "]}"
            if level > MAX_MAP_NESTING - 3:  # the document, [[bind]] and its table are three levels
                return number
    return 1


def parse_toml(text: str, path: Path | str) -> dict[str, Any]:
    """A map file's TOML as data, bounded in size and nesting; MappingError names the problem."""
    if len(text) > MAX_MAP_BYTES:
        raise MappingError(f"{path}: {len(text)} characters is more than a control map holds "
                           f"(at most {MAX_MAP_BYTES} bytes)")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MappingError(f"{path}: invalid TOML: {exc}") from None
    except RecursionError:
        data = None
    if data is None or nesting_depth(data, MAX_MAP_NESTING) > MAX_MAP_NESTING:
        raise MappingError(f"{path}:{_deep_line(text)}: nesting too deep: a control map nests arrays and "
                           f"tables at most {MAX_MAP_NESTING} levels")
    return data


def read_map_text(path: Path | str) -> str:
    """A map file's text: a regular file of at most MAX_MAP_BYTES, in UTF-8. MappingError says
    why not (a FIFO or a device is refused without reading from it)."""
    try:
        # Non-blocking, so opening a FIFO returns at once and is refused below.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise MappingError(f"map file {path} does not exist") from None
    except OSError as exc:
        raise MappingError(f"map file {path} cannot be read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise MappingError(f"map file {path} is not a regular file")
    with os.fdopen(fd, "rb") as handle:
        try:
            data = handle.read(MAX_MAP_BYTES + 1)
        except OSError as exc:
            raise MappingError(f"map file {path} cannot be read: {exc.strerror or exc}") from None
    if len(data) > MAX_MAP_BYTES:
        raise MappingError(f"map file {path} is larger than {MAX_MAP_BYTES} bytes: not a control map")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise MappingError(f"{path}:{line}: not UTF-8 text (byte {exc.start}): save the map as UTF-8") from None

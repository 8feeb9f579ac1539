"""Stage outputs of ``scorebridge score`` kept in the user cache folder (``core.paths``) and reused.

A stage's folder is named by the SHA-256 of everything that decides its output (the inputs'
contents, the options, the program's version and code, the previous stage's key). It is filled under a
temporary name and renamed into place when complete, so an interrupted run leaves no stage that
a later run would take for finished.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from core.atomic import temporary_folder
from core.paths import cache_dir

__all__ = ["StageCache", "code_digest"]

# The packages whose code decides a stage's output (the program's version alone does not
# change while it is developed or patched in place).
_CODE = ("core", "engines/score", "engines/va", "engines/continuation", "engines/harmonizer", "engines/snc",
         "engines/snc_player")


def code_digest() -> str:
    """SHA-256 of the Python sources of the packages in ``_CODE`` (under a megabyte)."""
    root = Path(__file__).resolve().parent.parent.parent
    digest = hashlib.sha256()
    for package in _CODE:
        for path in sorted((root / package).glob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


class StageCache:
    """``find`` a finished stage or ``fill`` a new one under ``root/STAGE/KEY``."""

    def __init__(self, root: Path | None = None, salt: str = "") -> None:
        self.root = Path(root) if root is not None else cache_dir("score")
        self.salt = salt

    def key(self, stage: str, *parts: object) -> str:
        text = json.dumps([self.salt, stage, *parts], sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def find(self, stage: str, key: str) -> Path | None:
        folder = self.root / stage / key
        return folder if folder.is_dir() else None

    @contextlib.contextmanager
    def fill(self, stage: str, key: str) -> Iterator[Path]:
        """A temporary folder to write the stage into; published as ``root/stage/key`` on success."""
        parent = self.root / stage
        parent.mkdir(parents=True, exist_ok=True)
        with temporary_folder(parent, ".filling-") as work:
            yield work
            final = parent / key
            try:
                os.replace(work, final)
            except OSError:  # another run finished the same stage first: keep its copy
                if not final.is_dir():
                    raise
            work.mkdir(exist_ok=True)  # for temporary_folder's clean-up

    def clear(self, stage: str, key: str) -> None:
        shutil.rmtree(self.root / stage / key, ignore_errors=True)

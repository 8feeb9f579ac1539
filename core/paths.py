"""Where scorebridge keeps what it builds for itself: one user cache folder.

``$XDG_CACHE_HOME/scorebridge`` (default ``~/.cache/scorebridge``; ``$SCOREBRIDGE_CACHE``
overrides both). Parsed corpora and evaluation sets go there on first use and are reused;
deleting the folder only costs the time to rebuild them.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir(*parts: str) -> Path:
    """The cache folder (or a subfolder of it); not created here, writers create what they fill."""
    override = os.environ.get("SCOREBRIDGE_CACHE")
    if override:
        root = Path(override).expanduser()
    else:
        base = os.environ.get("XDG_CACHE_HOME") or ""
        # the XDG spec says a relative value is invalid and must be ignored
        root = (Path(base) if os.path.isabs(base) else Path.home() / ".cache") / "scorebridge"
    return root.joinpath(*parts)

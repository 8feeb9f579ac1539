"""The browser control surface (``scorebridge serve`` serves it; see docs/control.md)."""

from __future__ import annotations

from bridge.web.server import WebSurface

__all__ = ["WebSurface"]

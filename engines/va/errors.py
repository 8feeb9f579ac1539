"""Errors of the video valence-arousal path (subclasses of the scorebridge hierarchy)."""

from __future__ import annotations

from core.errors import ScoreBridgeError

__all__ = ["CurveError", "VideoError"]


class VideoError(ScoreBridgeError):
    """A video cannot be opened, decoded or analysed (or a sensor model is unusable)."""


class CurveError(ScoreBridgeError, ValueError):
    """A valence-arousal curve file, a score to automate, or an option is invalid."""

"""An engine that provides affect (the ``va`` engine: ``provides = {"affect"}``) drives the
bridge's affect: the valence and arousal its curve plays (or its hand-set values) become
``/scorebridge/affect/valence`` and ``/arousal``, with the affect override on, so every engine that
declares ``valence``/``arousal`` parameters (the harmonizer, the continuation, the ``snc`` player)
follows the video, and every surface shows the curve.

Polled on the scheduler ten times a second (an engine never calls the host); only changes of at
least 0.01 are published. Such a slot that is disabled, or swapped for another engine, stops
driving; values set by hand on ``/scorebridge/affect/*`` then stay as they are.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bridge import addresses as A
from core.errors import ScoreBridgeError

if TYPE_CHECKING:
    from bridge.feedback import Origin
    from bridge.host import EngineHost

__all__ = ["AffectFollower"]

log = logging.getLogger(__name__)

INTERVAL_S = 0.1
STEP = 0.01  # smaller changes are not worth a message to every engine and surface


class AffectFollower:
    """Reads the slots of ``host``; ``at(due_s, job)`` schedules its polls, ``apply(path, value,
    origin)`` sets the bridge's affect (``Controls.apply``), and it polls while ``running()``."""

    def __init__(self, host: EngineHost, at: Callable[[float, Callable[[], None]], Any],
                 apply: Callable[[str, Any, Origin], Any], running: Callable[[], bool]) -> None:
        self.host, self._at, self._apply, self._running = host, at, apply, running
        self.published: tuple[float, float] | None = None
        self.source: str | None = None

    def start(self) -> None:
        self._schedule(time.perf_counter() + INTERVAL_S)

    def _schedule(self, due_s: float) -> None:
        self._at(due_s, lambda: self._tick(due_s))

    def _leader(self) -> tuple[str, tuple[float, float]] | None:
        """The first enabled slot whose engine provides affect, and what it plays now."""
        for name, slot in self.host.slots.items():
            engine = slot.engine
            if "affect" in engine.provides and slot.enabled:
                valence, arousal = engine.current()  # type: ignore[attr-defined]
                return name, (float(valence), float(arousal))
        return None

    def _tick(self, due_s: float) -> None:
        if not self._running():
            return
        try:
            self.follow()
        except (ScoreBridgeError, ValueError) as exc:  # a refused value is logged, never fatal
            log.warning("affect follower: %s", exc)
        self._schedule(max(due_s + INTERVAL_S, time.perf_counter()))

    def follow(self) -> None:
        """Publish the leading affect slot's values if they moved (called on the scheduler)."""
        leader = self._leader()
        if leader is None:
            self.source = None
            return
        name, values = leader
        origin = ("engine", name)
        if self.source != name:  # an affect slot takes the lead: its curve overrides the engines
            self.source, self.published = name, None
            self._apply(A.OVERRIDE, 1, origin)
        if self.published is not None and all(abs(a - b) < STEP for a, b in zip(values, self.published)):
            return
        self.published = values
        self._apply(A.VALENCE, round(values[0], 3), origin)
        self._apply(A.AROUSAL, round(values[1], 3), origin)

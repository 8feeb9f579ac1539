"""Engines that misbehave on purpose, loaded by the live tests as 'tests.engines_for_tests:X'."""

from __future__ import annotations

import time
from collections.abc import Sequence

import mido

from core.engine import Engine, Param
from core.events import EngineInput, EngineOutput, NoteOn, Send


class Exploding(Engine):
    """Plays one note, then raises on the second note-on."""

    name = "exploding"
    params = (Param("after", "int", 1, 0, 100),)

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    def process(self, event: EngineInput) -> Sequence[EngineOutput]:
        if isinstance(event, NoteOn):
            self.seen += 1
            if self.seen > self.param("after"):
                raise RuntimeError("deliberate engine failure")
            return (Send(mido.Message("note_on", note=event.pitch + 12, velocity=90)),)
        return ()


class Slow(Engine):
    """Takes ``delay_ms`` per note, then echoes it: busy in Python (holding the GIL, the worst
    case) or waiting with the GIL released (like an ONNX Runtime call)."""

    name = "slow"
    params = (Param("delay_ms", "float", 300.0, 0.0, 5000.0, unit="ms"),
              Param("busy", "bool", True))

    def process(self, event: EngineInput) -> Sequence[EngineOutput]:
        if not isinstance(event, NoteOn):
            return ()
        if not self.param("busy"):
            time.sleep(self.param("delay_ms") / 1000)
            return (Send(mido.Message("note_on", note=event.pitch, velocity=event.velocity)),)
        deadline = time.perf_counter() + self.param("delay_ms") / 1000
        while time.perf_counter() < deadline:
            sum(range(200))
        return (Send(mido.Message("note_on", note=event.pitch, velocity=event.velocity)),)

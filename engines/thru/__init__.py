"""The ``thru`` engine: the player's notes, unchanged, on the engine's output channel.

Use it to monitor or record the melody beside the generated parts; the benchmarks use it to
measure the bridge's own overhead on every event.
"""

from __future__ import annotations

from collections.abc import Sequence

import mido

from core.engine import Engine, Param
from core.events import ControlChange, EngineInput, EngineOutput, NoteOff, NoteOn, Send

__all__ = ["Thru"]


class Thru(Engine):
    name = "thru"
    description = "Passes the player's notes (and optionally controllers) through unchanged."
    params = (
        Param("transpose", "int", 0, -48, 48, unit="semitones"),
        Param("controllers", "bool", False, doc="Also pass control changes"),
    )

    def process(self, event: EngineInput) -> Sequence[EngineOutput]:
        if isinstance(event, NoteOn):
            pitch = event.pitch + self.param("transpose")
            if 0 <= pitch <= 127:
                return (Send(mido.Message("note_on", note=pitch, velocity=event.velocity)),)
        elif isinstance(event, NoteOff):
            pitch = event.pitch + self.param("transpose")
            if 0 <= pitch <= 127:
                return (Send(mido.Message("note_off", note=pitch, velocity=0)),)
        elif isinstance(event, ControlChange) and self.param("controllers"):
            return (Send(mido.Message("control_change", control=event.control, value=event.value)),)
        return ()

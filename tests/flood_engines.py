"""An engine slower than a flood, loaded by the hardening tests as 'tests.flood_engines:SlowThru'."""

from __future__ import annotations

import time
from collections.abc import Sequence

import mido

from core.engine import Engine, Param
from core.events import EngineInput, EngineOutput, NoteOff, NoteOn, Send


class SlowThru(Engine):
    """The player's notes, each after ``delay_ms`` with the GIL released (like a model call):
    note-ons and note-offs both, so a note left sounding is the bridge's fault."""

    name = "slowthru"
    params = (Param("delay_ms", "float", 2.0, 0.0, 1000.0, unit="ms"),)

    def process(self, event: EngineInput) -> Sequence[EngineOutput]:
        if isinstance(event, NoteOn):
            time.sleep(self.param("delay_ms") / 1000)
            return (Send(mido.Message("note_on", note=event.pitch, velocity=event.velocity)),)
        if isinstance(event, NoteOff):
            time.sleep(self.param("delay_ms") / 1000)
            return (Send(mido.Message("note_off", note=event.pitch, velocity=0)),)
        return ()

"""The canonical event types that travel between ports, the router, engines and the scheduler.

Time units are part of every name: ``_s`` (seconds on the bridge's monotonic clock,
``time.perf_counter``), ``_beats`` (quarter notes from song position zero) and ``_ticks``
(MIDI clock ticks, 24 per quarter note).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import mido

__all__ = [
    "TICKS_PER_BEAT",
    "NoteOn",
    "NoteOff",
    "ControlChange",
    "Beat",
    "TransportChange",
    "EngineInput",
    "Note",
    "Send",
    "Silence",
    "EngineOutput",
]

TICKS_PER_BEAT = 24


@dataclass(frozen=True, slots=True)
class NoteOn:
    """A note started by the player. ``beats`` is the song position when it arrived."""

    pitch: int
    velocity: int
    channel: int
    time_s: float
    beats: float
    playing: bool = True


@dataclass(frozen=True, slots=True)
class NoteOff:
    """A note released by the player."""

    pitch: int
    channel: int
    time_s: float
    beats: float
    playing: bool = True


@dataclass(frozen=True, slots=True)
class ControlChange:
    """A controller message from the player's input (not a mapped bridge control)."""

    control: int
    value: int
    channel: int
    time_s: float


@dataclass(frozen=True, slots=True)
class Beat:
    """The transport crossed the start of beat ``index`` (0 = song start) at ``time_s``."""

    index: int
    time_s: float
    tempo_bpm: float


@dataclass(frozen=True, slots=True)
class TransportChange:
    """Start, stop, continue or locate. ``beats`` is the position after the change."""

    playing: bool
    beats: float
    time_s: float
    reason: str


EngineInput = NoteOn | NoteOff | ControlChange | Beat | TransportChange


@dataclass(frozen=True, slots=True)
class Note:
    """A note at a beat: it starts at ``at_beats`` (None = now) and lasts ``duration_beats``.
    When an engine returns one, the scheduler sends both the note-on and the note-off."""

    pitch: int
    velocity: int
    duration_beats: float
    at_beats: float | None = None
    channel: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.pitch <= 127:
            raise ValueError(f"Note pitch {self.pitch} is outside 0..127")
        if not 1 <= self.velocity <= 127:
            raise ValueError(f"Note velocity {self.velocity} is outside 1..127")
        if not self.duration_beats > 0:
            raise ValueError(f"Note duration {self.duration_beats} beats must be positive")


@dataclass(frozen=True, slots=True)
class Send:
    """A raw message an engine wants sent at ``at_beats`` (None = now). Open-ended notes
    (a held chord) are sent this way; the bridge still tracks them for note safety. A channel
    message goes out on the slot's channel unless ``channel`` (0-based) names another one."""

    message: mido.Message
    at_beats: float | None = None
    channel: int | None = None

    def __post_init__(self) -> None:
        if self.channel is not None and not 0 <= self.channel <= 15:
            raise ValueError(f"Send channel {self.channel} is outside 0..15")


@dataclass(frozen=True, slots=True)
class Silence:
    """Stop at once: the host cancels everything this engine has handed over for later and
    releases every note it sounds (note-offs now), before the outputs that follow it. For an
    engine interrupted mid-phrase (the continuation when the player plays again)."""

    at_beats: ClassVar[None] = None


EngineOutput = Note | Send | Silence

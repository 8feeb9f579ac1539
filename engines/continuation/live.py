"""Pure logic of the live continuation: what the player played, and a continuation as timed notes.

``PlayerHistory`` keeps the player's notes on the model's grid (12 steps per beat) in
performance time: song position plus an offset that grows at every jump back (a loop), so a
phrase played across a loop boundary stays one phrase. ``NoteStream`` turns a sampling
``Stream`` into timed note-on/note-off events as the tokens come, generating only as far ahead
as asked, so the worker spends about one beat's worth of model steps per beat.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from .sample import Stream
from .tokens import (
    HIGH_PITCH,
    LEFT,
    LOW_PITCH,
    NOTE_BASE,
    NOTE_ON,
    NUM_PITCHES,
    RIGHT,
    SHIFT_BASE,
    STEPS_PER_QUARTER,
    VELOCITY_BASE,
    NoteEvent,
    canonicalize,
    velocity_of_bin,
)

__all__ = ["LiveEvent", "NoteStream", "PlayerHistory"]


class PlayerHistory:
    """The player's recent notes, split into hands at ``split`` (below -> left hand)."""

    def __init__(self, keep: int = 512) -> None:
        self.notes: deque[NoteEvent] = deque(maxlen=keep)
        self.open: dict[int, tuple[int, int]] = {}  # pitch -> (onset step, velocity)
        self.offset_steps = 0
        self.last_song_steps = 0
        self.last_activity_beats = float("-inf")
        self.fresh = False  # played since the last continuation started

    def steps(self, beats: float) -> int:
        """Performance time in grid steps of a song position."""
        return round(beats * STEPS_PER_QUARTER) + self.offset_steps

    def jumped(self, from_beats: float, to_beats: float, bar_steps: int) -> None:
        """The song position jumped (a loop or a locate): keep performance time running on,
        whole bars, so the grid and the bar lines stay where they were."""
        back = round((from_beats - to_beats) * STEPS_PER_QUARTER)
        if back > 0:
            self.offset_steps += -(-back // bar_steps) * bar_steps
        self.last_activity_beats = min(self.last_activity_beats, to_beats)

    def note_on(self, pitch: int, velocity: int, beats: float) -> None:
        self.note_off(pitch, beats)  # a re-struck key ends the earlier note
        if LOW_PITCH <= pitch <= HIGH_PITCH:
            self.open[pitch] = (self.steps(beats), velocity)
        self.last_activity_beats, self.fresh = beats, True

    def note_off(self, pitch: int, beats: float) -> None:
        if pitch not in self.open:
            return
        onset, velocity = self.open.pop(pitch)
        duration = max(1, self.steps(beats) - onset)
        self.notes.append(NoteEvent(onset, RIGHT, pitch, duration, velocity))  # hand set in split_hands
        self.last_activity_beats = max(self.last_activity_beats, beats)

    def split_hands(self, split: int) -> list[NoteEvent]:
        """Canonical notes with the hands assigned at ``split`` (below -> left)."""
        notes = [
            NoteEvent(
                n.onset_steps, LEFT if n.pitch < split else RIGHT, n.pitch, n.duration_steps, n.velocity
            )
            for n in self.notes
        ]
        return canonicalize(notes)[0]

    def clear(self) -> None:
        self.notes.clear()
        self.open.clear()
        self.fresh = False


@dataclass(frozen=True)
class LiveEvent:
    """A generated note-on (velocity > 0) or note-off (velocity 0), in beats from the start of
    the continuation."""

    at_beats: float
    hand: int
    pitch: int
    velocity: int


class NoteStream:
    """The note-ons and note-offs of a continuation, generated on demand: ``take(b)`` generates
    until the model's time passes ``b`` beats, so each call costs only the tokens of the span
    asked for (a note held for bars does not make it generate bars ahead)."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self._tokens = iter(stream)
        self.origin_steps = stream.state.now_steps  # the prompt's end = the continuation's start
        self.now_steps = self.origin_steps
        self.velocity = 64
        self.pending: list[LiveEvent] = []
        self.done = False
        self.tokens = 0

    @property
    def generated_beats(self) -> float:
        """How far the model has written, in beats from the start."""
        return (self.now_steps - self.origin_steps) / STEPS_PER_QUARTER

    @property
    def finished(self) -> bool:
        """Everything generated and handed out."""
        return self.done and not self.pending

    def take(self, beats: float) -> list[LiveEvent]:
        """Every event before ``beats``, in order, once; generates as far as needed."""
        while not self.done and self.generated_beats < beats:
            token = next(self._tokens, None)
            if token is None:
                self.done = True
                break
            self._advance(token)
        ready = [e for e in self.pending if e.at_beats < beats]
        self.pending = self.pending[len(ready) :]  # events are appended in time order
        return ready

    def _advance(self, token: int) -> None:
        self.tokens += 1
        if token >= SHIFT_BASE:
            self.now_steps += token - SHIFT_BASE + 1
        elif token >= VELOCITY_BASE:
            self.velocity = velocity_of_bin(token - VELOCITY_BASE)
        elif token >= NOTE_BASE:
            index = token - NOTE_BASE
            hand, kind = index // (2 * NUM_PITCHES), (index // NUM_PITCHES) % 2
            at = (self.now_steps - self.origin_steps) / STEPS_PER_QUARTER
            velocity = self.velocity if kind == NOTE_ON else 0
            self.pending.append(LiveEvent(at, hand, index % NUM_PITCHES + LOW_PITCH, velocity))

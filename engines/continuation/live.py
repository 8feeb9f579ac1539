"""Pure logic of the live continuation: what the player played, and a continuation as timed notes.

``PlayerHistory`` keeps the player's notes on the model's grid (12 steps per beat) in
performance time: song position plus an offset that grows at every jump back (a loop), so a
phrase played across a loop boundary stays one phrase. ``NoteStream`` turns a sampling
``Stream`` into complete notes (onset, duration, hand, pitch, velocity) as the tokens come,
generating only as far ahead as asked, so the worker spends a few milliseconds per beat.
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

__all__ = ["LiveNote", "NoteStream", "PlayerHistory"]


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
class LiveNote:
    """A generated note; onset and duration in beats from the start of the continuation."""

    onset_beats: float
    duration_beats: float
    hand: int
    pitch: int
    velocity: int


class NoteStream:
    """Complete notes of a continuation, generated on demand."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self._tokens = iter(stream)
        self.origin_steps = stream.state.now_steps  # the prompt's end = the continuation's start
        self.now_steps = self.origin_steps
        self.velocity = 64
        self.open: dict[tuple[int, int], tuple[int, int]] = {}
        self.completed: list[LiveNote] = []
        self.done = False
        self.tokens = 0

    @property
    def generated_beats(self) -> float:
        """How far the model has written, in beats from the start."""
        return (self.now_steps - self.origin_steps) / STEPS_PER_QUARTER

    def take(self, beats: float) -> list[LiveNote]:
        """Generate until every note that starts before ``beats`` is complete (or the end);
        returns those notes (by onset) once; later notes wait for a later call."""
        while not self.done:
            earliest_open = min((onset for onset, _ in self.open.values()), default=self.now_steps)
            if (earliest_open - self.origin_steps) / STEPS_PER_QUARTER >= beats:
                break
            token = next(self._tokens, None)
            if token is None:
                self.done = True
                break
            self._advance(token)
        ready = sorted((n for n in self.completed if n.onset_beats < beats), key=lambda n: n.onset_beats)
        self.completed = [n for n in self.completed if n.onset_beats >= beats]
        return ready

    @property
    def finished(self) -> bool:
        """Everything generated and handed out."""
        return self.done and not self.open and not self.completed

    def _advance(self, token: int) -> None:
        self.tokens += 1
        if token >= SHIFT_BASE:
            self.now_steps += token - SHIFT_BASE + 1
        elif token >= VELOCITY_BASE:
            self.velocity = velocity_of_bin(token - VELOCITY_BASE)
        elif token >= NOTE_BASE:
            index = token - NOTE_BASE
            hand, kind = index // (2 * NUM_PITCHES), (index // NUM_PITCHES) % 2
            pitch = index % NUM_PITCHES + LOW_PITCH
            if kind == NOTE_ON:
                self.open[(hand, pitch)] = (self.now_steps, self.velocity)
            elif (hand, pitch) in self.open:
                onset, velocity = self.open.pop((hand, pitch))
                self.completed.append(
                    LiveNote(
                        (onset - self.origin_steps) / STEPS_PER_QUARTER,
                        (self.now_steps - onset) / STEPS_PER_QUARTER,
                        hand,
                        pitch,
                        velocity,
                    )
                )

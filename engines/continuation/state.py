"""Sampling settings, the time/held-note state of a token sequence and the grammar mask built on
it (numpy only). The mask: NOTE_ONs only within each hand's range and scale, at most
``max_polyphony`` held per hand, a NOTE_OFF only for a note held at least one step, no
TIME_SHIFT that would hold a note longer than ``max_note_steps`` or cross a bar line (BAR is
forced there and allowed nowhere else), shifts landing on ``time_grid`` when one is set (where
none lands within a held note's room, the note is released first, not moved off the grid), no
PAD/SOS/EOS/UNK, and a VELOCITY only when a NOTE_ON may follow (and then only a NOTE_ON).
With ``chord_velocity`` (``shared_chord_velocity``), a hand's notes struck at one step share one
velocity: fewer tokens, so fewer model steps, for the same notes and timing.

Bars follow the meter (``bar_steps``) from the sequence's first BAR.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .tokens import (
    BAR,
    LEFT,
    LOW_PITCH,
    NOTE_BASE,
    NOTE_OFF,
    NOTE_ON,
    NUM_PITCHES,
    RIGHT,
    SHIFT_BASE,
    VELOCITY_BASE,
    VOCAB_SIZE,
)

__all__ = ["SCALES", "Masker", "SamplingConfig", "State", "scale_pitch_classes", "shared_chord_velocity",
           "steps_to_bar_line"]

SCALES: dict[str, tuple[int, ...]] = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "harmonic_minor": (0, 2, 3, 5, 7, 8, 11),
    "chromatic": tuple(range(12)),
}


def scale_pitch_classes(tonic: int, scale: str) -> frozenset[int]:
    """Pitch classes of a scale on a tonic (0 = C)."""
    if scale not in SCALES:
        raise ValueError(f"scale {scale!r} is not one of {', '.join(SCALES)}")
    return frozenset((tonic + step) % 12 for step in SCALES[scale])


@dataclass
class SamplingConfig:
    """Sampling and constraint settings; ``pitch_classes`` None = any pitch class."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    pitch_classes: frozenset[int] | None = None
    right_range: tuple[int, int] = (48, 108)
    left_range: tuple[int, int] = (21, 72)
    max_polyphony: int = 5
    max_note_steps: int = 96
    bar_steps: int = 48
    mode_steer: float = 0.0
    key_bias: float = 0.0
    time_grid: frozenset[int] | None = None  # steps into the bar where time may stop; None = any
    pattern_bias: float = 0.0
    motif_bias: float = 0.0
    density_bias: float = 0.0
    # each hand's prompt median (right, left; None: the hand did not play): its new notes keep their
    # median within an octave of it (``biases.MedianKeeper``); None = no keeper
    register_medians: tuple[float | None, float | None] | None = None
    # a hand's notes struck at one step share one velocity (``shared_chord_velocity``)
    chord_velocity: bool = False

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.top_k < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"top_k must be >= 0 and top_p in (0, 1], got {self.top_k}, {self.top_p}")
        for name in ("mode_steer", "key_bias", "pattern_bias", "motif_bias", "density_bias"):
            if not 0.0 <= getattr(self, name) <= 8.0:
                raise ValueError(f"{name} must be in [0, 8], got {getattr(self, name)}")
        if self.max_polyphony < 1 or self.max_note_steps < 1 or self.bar_steps < 1:
            raise ValueError("max_polyphony, max_note_steps and bar_steps must be >= 1")
        for name, (low, high) in (("right_range", self.right_range), ("left_range", self.left_range)):
            if not 21 <= low <= high <= 108:
                raise ValueError(f"{name} {low}..{high} must lie within 21..108")


class State:
    """Time and held notes while scanning or generating tokens (onsets[hand, pitch - 21], -1 = not
    held); ``last_on[hand]``: the step of the hand's latest NOTE_ON (-1 before any);
    ``held_count[hand]``: the notes the hand holds; ``velocity_mark``: (step, right struck, left
    struck) at the latest VELOCITY."""

    def __init__(self) -> None:
        self.now_steps = 0
        self.onsets = np.full((2, NUM_PITCHES), -1, dtype=np.int64)
        self.bars = 0
        self.last_token = -1
        self.first_bar_steps: int | None = None
        self.last_bar_steps = -1
        self.last_on = [-1, -1]
        self.held_count = [0, 0]
        # the step of the latest VELOCITY and which hands had struck at that step before it
        self.velocity_mark: tuple[int, bool, bool] = (-1, False, False)

    @property
    def held(self) -> dict[tuple[int, int], int]:
        """(hand, pitch) -> onset step of every held note."""
        hands, indices = np.nonzero(self.onsets >= 0)
        return {(int(h), int(i) + LOW_PITCH): int(self.onsets[h, i]) for h, i in zip(hands, indices)}

    def advance(self, token: int) -> None:
        self.last_token = token
        if token == BAR:
            self.bars += 1
            self.last_bar_steps = self.now_steps
            if self.first_bar_steps is None:
                self.first_bar_steps = self.now_steps
        elif SHIFT_BASE <= token:
            self.now_steps += token - SHIFT_BASE + 1
        elif VELOCITY_BASE <= token:
            now = self.now_steps
            self.velocity_mark = (now, self.last_on[RIGHT] == now, self.last_on[LEFT] == now)
        elif NOTE_BASE <= token < VELOCITY_BASE:
            index = token - NOTE_BASE
            hand, kind, pitch = index // (2 * NUM_PITCHES), (index // NUM_PITCHES) % 2, index % NUM_PITCHES
            held = bool(self.onsets[hand, pitch] >= 0)
            if kind == NOTE_ON:
                self.held_count[hand] += not held
                self.onsets[hand, pitch] = self.now_steps
                self.last_on[hand] = self.now_steps
            else:
                self.held_count[hand] -= held
                self.onsets[hand, pitch] = -1


def steps_to_bar_line(state: State, bar_steps: int) -> int:
    """Steps from now to the next bar line (0 on one), counted from the first BAR."""
    origin = 0 if state.first_bar_steps is None else state.first_bar_steps
    return (origin - state.now_steps) % bar_steps


class Masker:
    """The allowed-token mask of a state under one config (per-hand pitch masks and, with a time
    grid, which shift lands on it from each step of the bar, precomputed)."""

    def __init__(self, config: SamplingConfig) -> None:
        self.config = config
        pitches = np.arange(LOW_PITCH, LOW_PITCH + NUM_PITCHES)
        in_scale = (
            np.ones(NUM_PITCHES, dtype=bool)
            if config.pitch_classes is None
            else np.isin(pitches % 12, list(config.pitch_classes))
        )
        self.playable = np.stack(
            [
                in_scale & (pitches >= low) & (pitches <= high)
                for low, high in (config.right_range, config.left_range)
            ]
        )
        self.shift_limit = VOCAB_SIZE - SHIFT_BASE
        self.only_bar = np.zeros(VOCAB_SIZE, dtype=bool)
        self.only_bar[BAR] = True
        self.only_bar.flags.writeable = False
        # on_grid[position, k]: a shift of k + 1 steps from ``position`` in the bar lands on the grid
        self.on_grid: np.ndarray | None = None
        if config.time_grid is not None:
            landing = (np.arange(config.bar_steps)[:, None] + np.arange(1, self.shift_limit + 1)) % config.bar_steps
            self.on_grid = np.isin(landing, sorted(config.time_grid))

    def __call__(self, state: State) -> np.ndarray:
        """True where a token is allowed next (read-only when only BAR is)."""
        config = self.config
        to_bar_line = steps_to_bar_line(state, config.bar_steps)
        now = state.now_steps
        if to_bar_line == 0 and state.last_bar_steps != now:
            return self.only_bar  # forced: a bar line is reached
        allowed = np.zeros(VOCAB_SIZE, dtype=bool)
        notes = allowed[NOTE_BASE:VELOCITY_BASE].reshape(2, 2, NUM_PITCHES)  # [hand, kind, pitch], a view
        onsets = state.onsets
        held = onsets >= 0
        counts = state.held_count
        np.logical_and(self.playable, ~held, out=notes[:, NOTE_ON])
        for hand in (RIGHT, LEFT):
            if counts[hand] >= config.max_polyphony:
                notes[hand, NOTE_ON] = False
        if VELOCITY_BASE <= state.last_token < SHIFT_BASE:
            return allowed  # grammar: VELOCITY -> NOTE_ON
        if counts[RIGHT] or counts[LEFT]:
            np.logical_and(held, onsets < now, out=notes[:, NOTE_OFF])
            longest = now - int(onsets[held].min())
        else:
            longest = 0
        if notes[:, NOTE_ON].any():
            allowed[VELOCITY_BASE:SHIFT_BASE] = True  # a velocity must lead to a NOTE_ON
        room = min(config.max_note_steps - longest, to_bar_line if to_bar_line > 0 else config.bar_steps)
        room = max(0, min(room, self.shift_limit))
        if room:
            shifts = allowed[SHIFT_BASE : SHIFT_BASE + room]
            shifts[:] = True
            if self.on_grid is not None:
                # none on the grid within the room: a held note must end first (its NOTE_OFF is allowed)
                shifts[:] = self.on_grid[(config.bar_steps - to_bar_line) % config.bar_steps, :room]
        return allowed


_ON_RANGES = tuple(slice(NOTE_BASE + hand * 2 * NUM_PITCHES, NOTE_BASE + hand * 2 * NUM_PITCHES + NUM_PITCHES)
                   for hand in (RIGHT, LEFT))


def shared_chord_velocity(allowed: np.ndarray, state: State) -> np.ndarray:
    """``allowed`` (the final mask; a copy when anything changes) such that a hand's notes struck at
    one step share one velocity. A VELOCITY token sets the one current velocity for both hands, so
    at a step where a hand has struck: a VELOCITY is allowed only when a hand that has not struck
    yet may strike, it is followed by such a hand's NOTE_ON, and a hand that struck before it
    strikes no more at this step (its next note would carry the other hand's velocity). A mask
    that this would leave empty is returned unchanged."""
    if allowed[BAR]:
        return allowed
    now = state.now_steps
    struck = (state.last_on[RIGHT] == now, state.last_on[LEFT] == now)
    if not (struck[RIGHT] or struck[LEFT]):
        return allowed  # no note at this step yet: the first one may set its velocity
    mark_now = state.velocity_mark[0] == now
    if VELOCITY_BASE <= state.last_token < SHIFT_BASE:
        closed = struck  # a velocity written mid-chord: for a hand that has not struck yet
    else:
        closed = (mark_now and state.velocity_mark[1 + RIGHT], mark_now and state.velocity_mark[1 + LEFT])
    out = allowed
    for hand in (RIGHT, LEFT):
        if closed[hand] and out[_ON_RANGES[hand]].any():
            out = out.copy() if out is allowed else out
            out[_ON_RANGES[hand]] = False
    if not (VELOCITY_BASE <= state.last_token < SHIFT_BASE) and out[VELOCITY_BASE:SHIFT_BASE].any() and not any(
            not struck[hand] and out[_ON_RANGES[hand]].any() for hand in (RIGHT, LEFT)):
        out = out.copy() if out is allowed else out
        out[VELOCITY_BASE:SHIFT_BASE] = False  # no hand left to set a velocity for
    return out if out.any() else allowed

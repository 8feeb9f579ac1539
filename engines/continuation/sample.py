"""Constrained sampling of a two-hand continuation (numpy + onnxruntime only, never torch).

Sampling: temperature, top-k, top-p (nucleus) and a seed. Constraints, applied as a mask on
the logits before sampling: a key/scale (NOTE_ONs outside the scale's pitch classes are
forbidden), a pitch range per hand, a maximum polyphony per hand, a NOTE_OFF only for a note
held at least one step, no TIME_SHIFT that would hold a note longer than ``max_note_steps``,
no PAD/SOS/EOS/UNK, and a VELOCITY only when a NOTE_ON may follow (and then only a NOTE_ON).
Bars follow the meter (``bar_steps``, from the prompt's first BAR): a shift never crosses a bar
line, BAR is forced at every bar line and allowed nowhere else. Generation stops at the bar line
after ``bars`` bars (or after ``max_tokens``) and closes every held note, so every NOTE_ON of the
output has its NOTE_OFF.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .runtime import ContinuationModel
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
    is_note,
    is_shift,
    note_token,
    parse_note_token,
    shift_steps,
)

__all__ = ["SCALES", "Generation", "SamplingConfig", "generate", "sample_token", "scale_pitch_classes"]

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

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.top_k < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"top_k must be >= 0 and top_p in (0, 1], got {self.top_k}, {self.top_p}")
        if self.max_polyphony < 1 or self.max_note_steps < 1 or self.bar_steps < 1:
            raise ValueError("max_polyphony, max_note_steps and bar_steps must be >= 1")
        for name, (low, high) in (("right_range", self.right_range), ("left_range", self.left_range)):
            if not 21 <= low <= high <= 108:
                raise ValueError(f"{name} {low}..{high} must lie within 21..108")


@dataclass
class _State:
    """Time and held notes while scanning or generating tokens."""

    now_steps: int = 0
    held: dict[tuple[int, int], int] = field(default_factory=dict)
    bars: int = 0
    last_token: int = -1
    first_bar_steps: int | None = None
    last_bar_steps: int = -1

    def advance(self, token: int) -> None:
        self.last_token = token
        if token == BAR:
            self.bars += 1
            self.last_bar_steps = self.now_steps
            if self.first_bar_steps is None:
                self.first_bar_steps = self.now_steps
        elif is_shift(token):
            self.now_steps += shift_steps(token)
        elif is_note(token):
            hand, kind, pitch = parse_note_token(token)
            if kind == NOTE_ON:
                self.held[(hand, pitch)] = self.now_steps
            else:
                self.held.pop((hand, pitch), None)


def _steps_to_bar_line(state: _State, bar_steps: int) -> int:
    origin = 0 if state.first_bar_steps is None else state.first_bar_steps
    return (origin - state.now_steps) % bar_steps


def _mask(state: _State, config: SamplingConfig) -> np.ndarray:
    """True where a token is allowed next."""
    allowed = np.zeros(VOCAB_SIZE, dtype=bool)
    to_bar_line = _steps_to_bar_line(state, config.bar_steps)
    if to_bar_line == 0 and state.last_bar_steps != state.now_steps:
        allowed[BAR] = True  # forced: a bar line is reached
        return allowed
    allowed[VELOCITY_BASE:SHIFT_BASE] = True
    pitches = np.arange(LOW_PITCH, LOW_PITCH + NUM_PITCHES)
    in_scale = (
        np.ones(NUM_PITCHES, dtype=bool)
        if config.pitch_classes is None
        else np.isin(pitches % 12, list(config.pitch_classes))
    )
    onsets = np.full((2, NUM_PITCHES), -1, dtype=np.int64)
    for (hand, pitch), onset in state.held.items():
        onsets[hand, pitch - LOW_PITCH] = onset
    for hand, (low, high) in ((RIGHT, config.right_range), (LEFT, config.left_range)):
        held = onsets[hand] >= 0
        on = (
            in_scale & (pitches >= low) & (pitches <= high) & ~held & (int(held.sum()) < config.max_polyphony)
        )
        base_on = NOTE_BASE + (hand * 2 + NOTE_ON) * NUM_PITCHES
        base_off = NOTE_BASE + (hand * 2 + NOTE_OFF) * NUM_PITCHES
        allowed[base_on : base_on + NUM_PITCHES] = on
        allowed[base_off : base_off + NUM_PITCHES] = held & (
            onsets[hand] < state.now_steps
        )  # no zero-length notes
    longest = max((state.now_steps - onset for onset in state.held.values()), default=0)
    room = config.max_note_steps - longest
    room = min(room, to_bar_line if to_bar_line > 0 else config.bar_steps)
    allowed[SHIFT_BASE : SHIFT_BASE + max(0, min(room, VOCAB_SIZE - SHIFT_BASE))] = True
    note_ons = np.zeros(VOCAB_SIZE, dtype=bool)
    for hand in (RIGHT, LEFT):
        base_on = NOTE_BASE + (hand * 2 + NOTE_ON) * NUM_PITCHES
        note_ons[base_on : base_on + NUM_PITCHES] = allowed[base_on : base_on + NUM_PITCHES]
    if not note_ons.any():
        allowed[VELOCITY_BASE:SHIFT_BASE] = False  # a velocity must lead to a NOTE_ON
    elif VELOCITY_BASE <= state.last_token < SHIFT_BASE:
        allowed = note_ons  # grammar: VELOCITY is always followed by a NOTE_ON
    return allowed


def sample_token(
    logits: np.ndarray, allowed: np.ndarray, config: SamplingConfig, rng: np.random.Generator
) -> int:
    """One token from masked logits with temperature, top-k and top-p."""
    scores = np.where(allowed, logits.astype(np.float64) / config.temperature, -np.inf)
    if not np.isfinite(scores).any():
        raise ValueError("no token is allowed by the constraints")
    order = np.argsort(-scores)
    order = order[np.isfinite(scores[order])]
    if config.top_k:
        order = order[: config.top_k]
    probabilities = np.exp(scores[order] - scores[order[0]])
    probabilities /= probabilities.sum()
    if config.top_p < 1.0:
        keep = int(np.searchsorted(np.cumsum(probabilities), config.top_p) + 1)
        order, probabilities = order[:keep], probabilities[:keep] / probabilities[:keep].sum()
    return int(rng.choice(order, p=probabilities))


@dataclass
class Generation:
    """Generated tokens (prompt excluded) and how many notes were force-closed at the end."""

    tokens: list[int]
    forced_offs: int
    bars: int


def generate(
    model: ContinuationModel,
    prompt: Sequence[int],
    bars: int,
    config: SamplingConfig,
    style: int = 0,
    va: tuple[float, float] = (0.0, 0.0),
    max_tokens: int = 2048,
) -> Generation:
    """Continue ``prompt`` for ``bars`` bars of ``config.bar_steps`` (the prompt's bar grid)."""
    if not prompt:
        raise ValueError("the prompt needs at least one token (e.g. SOS)")
    if bars < 1:
        raise ValueError(f"bars must be >= 1, got {bars}")
    rng = np.random.default_rng(config.seed)
    state = _State()
    for token in prompt:
        state.advance(int(token))
    state.bars = 0
    va_row = np.asarray(va, dtype=np.float32).reshape(1, 2)
    logits, cache = model.run(
        np.asarray(prompt), np.repeat(va_row, len(prompt), 0), style, model.empty_cache()
    )
    next_logits = logits[-1]
    output: list[int] = []
    while len(output) < max_tokens:
        token = sample_token(next_logits, _mask(state, config), config, rng)
        if token == BAR and state.bars + 1 > bars:
            break
        output.append(token)
        state.advance(token)
        logits, cache = model.run(np.array([token]), va_row, style, cache)
        next_logits = logits[-1]
    older = [
        note_token(h, NOTE_OFF, p) for (h, p), onset in sorted(state.held.items()) if onset < state.now_steps
    ]
    newest = [
        note_token(h, NOTE_OFF, p) for (h, p), onset in sorted(state.held.items()) if onset == state.now_steps
    ]
    closing = older + ([SHIFT_BASE] + newest if newest else [])  # one step: no zero-length note
    return Generation(output + closing, len(state.held), state.bars)

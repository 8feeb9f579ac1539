"""Constrained sampling of a two-hand continuation (numpy + onnxruntime only, never torch).

Sampling: temperature, top-k, top-p (nucleus) and a seed. Constraints, applied as a mask on
the logits before sampling: a key/scale (NOTE_ONs outside the scale's pitch classes are
forbidden), a pitch range per hand, a maximum polyphony per hand, a NOTE_OFF only for a note
held at least one step, no TIME_SHIFT that would hold a note longer than ``max_note_steps``,
no PAD/SOS/EOS/UNK, and a VELOCITY only when a NOTE_ON may follow (and then only a NOTE_ON).
Mode steering (``mode_steer`` S > 0): for the three degrees that tell major from minor
(third, sixth, seventh above the prompt's tonic, ``modal.window_key``), each pair of NOTE_ONs a
semitone apart (minor, major) keeps the probability the model gives the pair, and only its split
moves: the log-odds of the major one rise by S x valence. So a negative valence turns the music
toward the parallel minor and a positive one toward the parallel major, while where the music
goes (which degree, which register, how often) stays the model's. The shift is applied to the
logits before the temperature, so at temperature T it is S x valence / T; with a scale mask
(``pitch_classes``) only the pairs the scale allows both notes of are steered. A decoding prior
on top of the model's learned valence adapter, off by default. Key bias (``key_bias`` B > 0): a
NOTE_ON outside the scale of the prompt's key (``modal.window_key``) loses B from its logit, a
soft form of the ``pitch_classes`` mask (the pairs mode steering splits are exempt). Register:
``prompt_register`` sets each hand's range from the prompt's notes.
Bars follow the meter (``bar_steps``, from the prompt's first BAR): a shift never crosses a bar
line, BAR is forced at every bar line and allowed nowhere else. Generation stops at the bar line
after ``bars`` bars (or after ``max_tokens``) and closes every held note, so every NOTE_ON of the
output has its NOTE_OFF.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np

from .modal import MAJOR_TO_MINOR, window_key
from .runtime import ContinuationModel
from .tokens import (
    BAR,
    HIGH_PITCH,
    LEFT,
    LOW_PITCH,
    NOTE_BASE,
    NOTE_OFF,
    NOTE_ON,
    NUM_PITCHES,
    RIGHT,
    SHIFT_BASE,
    STEPS_PER_QUARTER,
    VELOCITY_BASE,
    VOCAB_SIZE,
    note_token,
)

__all__ = [
    "MODE_STEER",
    "REGISTERS",
    "GRIDS",
    "REGISTER_MARGIN",
    "SCALES",
    "Generation",
    "SamplingConfig",
    "Stream",
    "closing_tokens",
    "generate",
    "key_penalty",
    "mode_pairs",
    "prompt_grid",
    "prompt_onsets",
    "prompt_register",
    "sample_token",
    "scale_pitch_classes",
    "steer_mode",
]

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

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.top_k < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"top_k must be >= 0 and top_p in (0, 1], got {self.top_k}, {self.top_p}")
        if not 0.0 <= self.mode_steer <= 8.0:
            raise ValueError(f"mode_steer must be in [0, 8], got {self.mode_steer}")
        if not 0.0 <= self.key_bias <= 8.0:
            raise ValueError(f"key_bias must be in [0, 8], got {self.key_bias}")
        for name in ("pattern_bias", "motif_bias", "density_bias"):
            if not 0.0 <= getattr(self, name) <= 8.0:
                raise ValueError(f"{name} must be in [0, 8], got {getattr(self, name)}")
        if self.max_polyphony < 1 or self.max_note_steps < 1 or self.bar_steps < 1:
            raise ValueError("max_polyphony, max_note_steps and bar_steps must be >= 1")
        for name, (low, high) in (("right_range", self.right_range), ("left_range", self.left_range)):
            if not 21 <= low <= high <= 108:
                raise ValueError(f"{name} {low}..{high} must lie within 21..108")


class _State:
    """Time and held notes while scanning or generating tokens (onsets[hand, pitch - 21], -1 = not held)."""

    def __init__(self) -> None:
        self.now_steps = 0
        self.onsets = np.full((2, NUM_PITCHES), -1, dtype=np.int64)
        self.bars = 0
        self.last_token = -1
        self.first_bar_steps: int | None = None
        self.last_bar_steps = -1

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
        elif NOTE_BASE <= token < VELOCITY_BASE:
            index = token - NOTE_BASE
            hand, kind, pitch = index // (2 * NUM_PITCHES), (index // NUM_PITCHES) % 2, index % NUM_PITCHES
            self.onsets[hand, pitch] = self.now_steps if kind == NOTE_ON else -1


def _steps_to_bar_line(state: _State, bar_steps: int) -> int:
    origin = 0 if state.first_bar_steps is None else state.first_bar_steps
    return (origin - state.now_steps) % bar_steps


class _Masker:
    """The allowed-token mask of a state under one config (per-hand pitch masks precomputed)."""

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
        self.on_slices = [slice(b, b + NUM_PITCHES) for b in (NOTE_BASE, NOTE_BASE + 2 * NUM_PITCHES)]
        self.off_slices = [
            slice(b + NUM_PITCHES, b + 2 * NUM_PITCHES) for b in (NOTE_BASE, NOTE_BASE + 2 * NUM_PITCHES)
        ]
        self.shift_limit = VOCAB_SIZE - SHIFT_BASE
        self.grid = np.array(sorted(config.time_grid or ()), dtype=np.int64)

    def __call__(self, state: _State) -> np.ndarray:
        """True where a token is allowed next."""
        config = self.config
        allowed = np.zeros(VOCAB_SIZE, dtype=bool)
        to_bar_line = _steps_to_bar_line(state, config.bar_steps)
        if to_bar_line == 0 and state.last_bar_steps != state.now_steps:
            allowed[BAR] = True  # forced: a bar line is reached
            return allowed
        held = state.onsets >= 0
        any_on = False
        for hand in (RIGHT, LEFT):
            if int(held[hand].sum()) < config.max_polyphony:
                on = self.playable[hand] & ~held[hand]
                allowed[self.on_slices[hand]] = on
                any_on = any_on or bool(on.any())
            allowed[self.off_slices[hand]] = held[hand] & (state.onsets[hand] < state.now_steps)
        if VELOCITY_BASE <= state.last_token < SHIFT_BASE:
            allowed[: self.on_slices[RIGHT].start] = False  # grammar: VELOCITY -> NOTE_ON
            allowed[self.off_slices[RIGHT]] = False
            allowed[self.off_slices[LEFT]] = False
            return allowed
        if any_on:
            allowed[VELOCITY_BASE:SHIFT_BASE] = True  # a velocity must lead to a NOTE_ON
        longest = state.now_steps - int(state.onsets[held].min()) if held.any() else 0
        room = min(config.max_note_steps - longest, to_bar_line if to_bar_line > 0 else config.bar_steps)
        room = max(0, min(room, self.shift_limit))
        shifts = allowed[SHIFT_BASE : SHIFT_BASE + room]
        shifts[:] = True
        if config.time_grid is not None and room:
            position = (config.bar_steps - to_bar_line) % config.bar_steps
            landing = (position + np.arange(1, room + 1)) % config.bar_steps
            on_grid = np.isin(landing, self.grid)
            if on_grid.any():  # else (a note must end off the grid) any shift within the room
                shifts[:] = on_grid
        return allowed


MODE_STEER = 5.0  # the engine's and `scorebridge continue`'s default (docs/continuation.md)
_MAJOR_DEGREES = tuple(sorted(MAJOR_TO_MINOR))  # each a semitone above its minor counterpart


def mode_pairs(tonic: int, pitch_classes: frozenset[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Token ids (major, minor) of the NOTE_ON pairs, both hands, that mode steering splits; with
    ``pitch_classes`` (a scale mask) only the pairs whose two notes it allows."""
    major, minor = [], []
    for hand in (RIGHT, LEFT):
        for pitch in range(LOW_PITCH + 1, LOW_PITCH + NUM_PITCHES):
            if pitch_classes is not None and not {pitch % 12, (pitch - 1) % 12} <= pitch_classes:
                continue
            if (pitch - tonic) % 12 in _MAJOR_DEGREES:
                major.append(note_token(hand, NOTE_ON, pitch))
                minor.append(note_token(hand, NOTE_ON, pitch - 1))
    return np.array(major, dtype=np.int64), np.array(minor, dtype=np.int64)


def steer_mode(logits: np.ndarray, pairs: tuple[np.ndarray, np.ndarray], shift: float) -> np.ndarray:
    """Logits with each (major, minor) pair's log-odds moved by ``shift``, the pair's total kept."""
    major, minor = pairs
    out = np.array(logits, dtype=np.float64)
    a, b = out[major], out[minor]
    total, odds = np.logaddexp(a, b), a - b + shift
    out[major] = total - np.logaddexp(0.0, -odds)
    out[minor] = total - np.logaddexp(0.0, odds)
    return out


REGISTERS = ("prompt", "free")  # the engine's and `scorebridge continue`'s choice; prompt is the default
REGISTER_MARGIN = 5  # semitones each hand may go past the prompt's lowest and highest note
GRIDS = ("prompt", "free")  # the engine's and `scorebridge continue`'s choice; prompt is the default
# Candidate onset grids in grid steps (1/12 beat): 16ths, then eighth triplets, then both.
GRID_CANDIDATES: tuple[tuple[int, ...], ...] = ((3,), (4,), (3, 4))
PATTERN_BARS = 2  # the rhythm pattern is that of the prompt's last bars: what a player goes on with
PATTERN_PULL = 0.5  # share of pattern_bias a hand's notes gain at a step where it struck in the prompt
GRID_COVER = 0.95  # share of the prompt's note times a grid must hold to be the prompt's


def key_penalty(tonic: int, major: bool, strength: float) -> np.ndarray:
    """[VOCAB_SIZE] logit offsets: -``strength`` for a NOTE_ON (either hand) outside the key's
    scale (a minor key's holds the natural minor and the raised sixth and seventh), 0 elsewhere."""
    scale = scale_pitch_classes(tonic, "major") if major else (
        scale_pitch_classes(tonic, "minor") | {(tonic + 9) % 12, (tonic + 11) % 12})
    outside = ~np.isin(np.arange(LOW_PITCH, LOW_PITCH + NUM_PITCHES) % 12, list(scale))
    penalty = np.zeros(VOCAB_SIZE)
    for hand in (RIGHT, LEFT):
        start = note_token(hand, NOTE_ON, LOW_PITCH)
        penalty[start : start + NUM_PITCHES][outside] = -strength
    return penalty


def prompt_register(
    prompt: Sequence[int], config: SamplingConfig, margin: int = REGISTER_MARGIN
) -> SamplingConfig:
    """``config`` with each hand's range set to the prompt's lowest..highest NOTE_ON of that hand,
    widened by ``margin`` semitones and kept on the keyboard (21..108); a hand the prompt does not
    play keeps its range. The continuation then stays where the player's hands are."""
    tokens = np.asarray(prompt, dtype=np.int64)
    index = tokens[(tokens >= NOTE_BASE) & (tokens < VELOCITY_BASE)] - NOTE_BASE
    hands, kinds, pitches = index // (2 * NUM_PITCHES), (index // NUM_PITCHES) % 2, index % NUM_PITCHES + LOW_PITCH
    ranges = [config.right_range, config.left_range]
    for hand in (RIGHT, LEFT):
        played = pitches[(hands == hand) & (kinds == NOTE_ON)]
        if len(played):
            ranges[hand] = (max(LOW_PITCH, int(played.min()) - margin),
                            min(LOW_PITCH + NUM_PITCHES - 1, int(played.max()) + margin))
    return replace(config, right_range=ranges[RIGHT], left_range=ranges[LEFT])


def prompt_grid(prompt: Sequence[int], config: SamplingConfig, cover: float = GRID_COVER,
                cap_notes: bool = True) -> SamplingConfig:
    """``config`` with ``time_grid`` set to the prompt's rhythmic grid: the first of 16ths, eighth
    triplets or their union (``GRID_CANDIDATES``) that holds ``cover`` of the prompt's onsets,
    measured from its bar lines; any step when none does, as in played timing (unchanged with
    fewer than 8 onsets). New notes then start and end on the grid (note ends are not measured:
    sources often leave them unquantized): straight stays straight, a shuffle stays a shuffle.
    With ``cap_notes``, ``max_note_steps`` becomes the prompt's longest note (at least a beat)."""
    note_ons, longest, origin, _ = _prompt_note_ons(prompt)
    times = [(time - origin) % config.bar_steps for time, _, _ in note_ons]
    if len(times) < 8:
        return config
    # no note longer than the prompt's longest (at least a beat): a held note must not outlast
    # the player's own, or the hand fills up and stops striking
    if cap_notes:
        config = replace(config, max_note_steps=min(config.max_note_steps, max(STEPS_PER_QUARTER, longest)))
    times_array = np.array(times)
    for divisors in GRID_CANDIDATES:
        if np.mean(np.any([times_array % d == 0 for d in divisors], axis=0)) >= cover:
            grid = frozenset(p for p in range(config.bar_steps) if any(p % d == 0 for d in divisors))
            return replace(config, time_grid=grid)
    return config


def prompt_onsets(prompt: Sequence[int], bar_steps: int, last_bars: int = 0) -> tuple[frozenset[int], frozenset[int]]:
    """Steps into the bar (from the prompt's first bar line) where each hand strikes a note, in
    the prompt's last ``last_bars`` bars (0: all of it)."""
    note_ons, _, origin, end = _prompt_note_ons(prompt)
    since = end - last_bars * bar_steps if last_bars else -1
    return tuple(frozenset((time - origin) % bar_steps for time, h, _ in note_ons if h == hand and time >= since)
                 for hand in (RIGHT, LEFT))


def _prompt_note_ons(prompt: Sequence[int]) -> tuple[list[tuple[int, int, int]], int, int, int]:
    """(step, hand, pitch) of every NOTE_ON from the prompt's first bar line on, the longest of
    those notes in steps, the first bar line's step (0 without one) and the prompt's last step."""
    state, note_ons, longest = _State(), [], 0
    for token in prompt:
        token = int(token)
        if NOTE_BASE <= token < VELOCITY_BASE and state.first_bar_steps is not None:
            index = token - NOTE_BASE
            hand, pitch = index // (2 * NUM_PITCHES), index % NUM_PITCHES
            if index // NUM_PITCHES % 2 == NOTE_ON:
                note_ons.append((state.now_steps, hand, pitch + LOW_PITCH))
            elif state.onsets[hand, pitch] >= 0:
                longest = max(longest, state.now_steps - int(state.onsets[hand, pitch]))
        state.advance(token)
    return note_ons, longest, state.first_bar_steps or 0, state.now_steps


class _DensityKeeper:
    """Each hand's onsets (distinct onset times) against the prompt's rate: a hand ahead of it by
    half a bar's worth loses ``density_bias`` on its NOTE_ONs, one behind by as much gains it
    (linear in between), so each hand keeps about the prompt's density."""

    def __init__(self, prompt: Sequence[int], origin: int) -> None:
        note_ons, _, first_bar, _ = _prompt_note_ons(prompt)
        span = max(1, origin - first_bar)
        self.rate = [len({t for t, h, _ in note_ons if h == hand}) / span for hand in (RIGHT, LEFT)]  # per step
        self.origin, self.count, self.last = origin, [0, 0], [-1, -1]

    def advance(self, token: int, now: int) -> None:
        if NOTE_BASE <= token < VELOCITY_BASE:
            index = token - NOTE_BASE
            hand = index // (2 * NUM_PITCHES)
            if index // NUM_PITCHES % 2 == NOTE_ON and self.last[hand] != now:
                self.count[hand] += 1
                self.last[hand] = now

    def shift(self, hand: int, now: int, bias: float, bar_steps: int) -> float:
        """The logit shift of ``hand``'s NOTE_ONs at step ``now`` (0 once it struck at ``now``)."""
        if self.rate[hand] <= 0 or self.last[hand] == now:
            return 0.0
        half_bar = max(self.rate[hand] * bar_steps / 2, 1.0)
        excess = (self.count[hand] - self.rate[hand] * (now - self.origin)) / half_bar
        return -bias * float(np.clip(excess, -1.0, 1.0))


class _MotifEcho:
    """The right hand's melodic line (the highest note of each onset) and what the prompt's line
    does next after each pair and each single interval: the pitches that would echo the prompt's
    motifs at the next onset."""

    def __init__(self, prompt: Sequence[int]) -> None:
        self.line: list[int] = []
        self.top_time, self.top_pitch = -1, -1
        self.keep = 0  # the whole prompt's line; then only the last onsets
        state = _State()
        for token in prompt:
            state.advance(int(token))
            self.advance(int(token), state.now_steps)
        line = self.line + ([self.top_pitch] if self.top_pitch >= 0 else [])
        steps = np.diff(line).astype(int).tolist()
        self.after_pair: dict[tuple[int, int], set[int]] = {}
        self.after_one: dict[int, set[int]] = {}
        for i in range(len(steps) - 1):
            self.after_one.setdefault(steps[i], set()).add(steps[i + 1])
            if i >= 1:
                self.after_pair.setdefault((steps[i - 1], steps[i]), set()).add(steps[i + 1])
        self.keep = 4

    def advance(self, token: int, now: int) -> None:
        if not NOTE_BASE <= token < VELOCITY_BASE:
            return
        index = token - NOTE_BASE
        if index // (2 * NUM_PITCHES) != RIGHT or index // NUM_PITCHES % 2 != NOTE_ON:
            return
        pitch = index % NUM_PITCHES + LOW_PITCH
        if now != self.top_time:
            if self.top_pitch >= 0:
                self.line.append(self.top_pitch)
                if self.keep:
                    del self.line[:-self.keep]
            self.top_time, self.top_pitch = now, pitch
        else:
            self.top_pitch = max(self.top_pitch, pitch)

    def next_pitches(self, now: int) -> list[int]:
        """Pitches of a new onset at ``now`` that continue a prompt motif ([] mid-onset or unknown)."""
        if now == self.top_time or self.top_pitch < 0:
            return []
        line = self.line[-2:] + [self.top_pitch]
        steps = np.diff(line).astype(int).tolist()
        nexts = self.after_pair.get(tuple(steps[-2:])) if len(steps) >= 2 else None
        if not nexts and steps:
            nexts = self.after_one.get(steps[-1])
        return [self.top_pitch + x for x in sorted(nexts or ()) if LOW_PITCH <= self.top_pitch + x <= HIGH_PITCH]


def sample_token(
    logits: np.ndarray, allowed: np.ndarray, config: SamplingConfig, rng: np.random.Generator
) -> int:
    """One token from masked logits with temperature, top-k and top-p."""
    candidates = np.flatnonzero(allowed)
    if not len(candidates):
        raise ValueError("no token is allowed by the constraints")
    scores = logits[candidates].astype(np.float64) / config.temperature
    if config.top_k and config.top_k < len(candidates):
        keep = np.argpartition(-scores, config.top_k - 1)[: config.top_k]
        candidates, scores = candidates[keep], scores[keep]
    order = np.argsort(-scores, kind="stable")
    candidates, scores = candidates[order], scores[order]
    cumulative = np.cumsum(np.exp(scores - scores[0]))
    total = cumulative[-1]
    if config.top_p < 1.0:
        keep = min(len(cumulative), int(np.searchsorted(cumulative, config.top_p * total)) + 1)
        total = cumulative[keep - 1]
    return int(
        candidates[
            min(int(np.searchsorted(cumulative, rng.random() * total, side="right")), len(candidates) - 1)
        ]
    )


@dataclass
class Generation:
    """Generated tokens (prompt excluded) and how many notes were force-closed at the end."""

    tokens: list[int]
    forced_offs: int
    bars: int


def closing_tokens(state: _State) -> list[int]:
    """NOTE_OFFs for every held note (one extra step first if a note started at this instant)."""
    held = sorted(state.held.items())
    older = [note_token(h, NOTE_OFF, p) for (h, p), onset in held if onset < state.now_steps]
    newest = [note_token(h, NOTE_OFF, p) for (h, p), onset in held if onset == state.now_steps]
    return older + ([SHIFT_BASE] + newest if newest else [])  # one step: no zero-length note


class Stream:
    """The continuation of a prompt, token by token (iterate it), then the closing NOTE_OFFs.

    The prompt is cut to the model's context (its last ``slots + 1`` tokens) and fed at
    construction; generation slides over the ring-buffer cache. It stops before the (bars+1)-th
    generated BAR or after ``max_tokens``. ``state`` is the time/held-note state after the last
    yielded token; ``forced_offs`` counts the notes closed at the end.
    """

    def __init__(
        self,
        model: ContinuationModel,
        prompt: Sequence[int],
        bars: int,
        config: SamplingConfig,
        style: int = 0,
        va: tuple[float, float] | Callable[[float], Sequence[float]] = (0.0, 0.0),
        max_tokens: int = 2048,
        prompt_va: np.ndarray | None = None,
    ) -> None:
        if not len(prompt):
            raise ValueError("the prompt needs at least one token (e.g. SOS)")
        if bars < 1:
            raise ValueError(f"bars must be >= 1, got {bars}")
        self.bars, self.config, self.max_tokens = bars, config, max_tokens
        self.rng = np.random.default_rng(config.seed)
        self.masker = _Masker(config)
        self.state = _State()
        for token in prompt:
            self.state.advance(int(token))
        self.state.bars = 0
        self.forced_offs = 0
        self.origin_steps = self.state.now_steps
        self.va_curve = va if callable(va) else None
        self.va = self._va_now() if self.va_curve else np.asarray(va, dtype=np.float32).reshape(2)
        self.decoder = model.decoder(style)
        keep = self.decoder.slots + 1
        context = np.asarray(prompt, dtype=np.int64)[-keep:]
        if prompt_va is None:
            rows = np.repeat(self.va[None], len(context), 0)
        else:
            rows = np.asarray(prompt_va, dtype=np.float32).reshape(-1, 2)
            if len(rows) != len(prompt):
                raise ValueError(f"prompt_va has {len(rows)} rows for {len(prompt)} tokens")
            rows = rows[-keep:]
        self.logits = self.decoder.prefill(context, rows)
        self.pairs: tuple[np.ndarray, np.ndarray] | None = None
        if config.mode_steer > 0:
            key = window_key(np.asarray(prompt, dtype=np.int64))
            if key is not None:  # no key, no steering
                self.pairs = mode_pairs(key[0], config.pitch_classes)
        self.key_penalty: np.ndarray | None = None
        if config.key_bias > 0:
            key = window_key(np.asarray(prompt, dtype=np.int64))
            if key is not None:
                self.key_penalty = key_penalty(key[0], key[1], config.key_bias)
                if self.pairs is not None:  # steering picks between the modes' degrees: no penalty there
                    self.key_penalty[np.concatenate(self.pairs)] = 0.0

        self.pattern_steps = (frozenset(), frozenset())
        if config.pattern_bias > 0:
            self.pattern_steps = prompt_onsets(prompt, config.bar_steps, PATTERN_BARS)
        self.motif = _MotifEcho(prompt) if config.motif_bias > 0 else None
        self.density = _DensityKeeper(prompt, self.origin_steps) if config.density_bias > 0 else None

    def _scores(self) -> np.ndarray:
        """The model's logits with the key penalty, the hands' rhythm and density shifts and the
        motif echo, mode-steered at the current valence."""
        logits = self.logits if self.key_penalty is None else self.logits + self.key_penalty
        shifts = self._hand_shifts()
        if any(shifts):
            logits = np.array(logits, dtype=np.float64)
            for hand in (RIGHT, LEFT):
                start = note_token(hand, NOTE_ON, LOW_PITCH)
                logits[start : start + NUM_PITCHES] += shifts[hand]
            # a VELOCITY commits to a NOTE_ON of either hand: it moves as the likelier hand's notes do
            logits[VELOCITY_BASE:SHIFT_BASE] += max(shifts)
        if self.motif is not None:
            pitches = self.motif.next_pitches(self.state.now_steps)
            if pitches:
                logits = np.array(logits, dtype=np.float64)
                logits[[note_token(RIGHT, NOTE_ON, p) for p in pitches]] += self.config.motif_bias
        if self.pairs is None:
            return logits
        return steer_mode(logits, self.pairs, self.config.mode_steer * float(self.va[0]))

    def _hand_shifts(self) -> list[float]:
        """Logit shifts of each hand's NOTE_ONs now: the rhythm pattern (off the prompt's onset
        steps -pattern_bias; on one, until the hand strikes, +PATTERN_PULL x pattern_bias) and the
        density keeper's."""
        shifts = [0.0, 0.0]
        now = self.state.now_steps
        if self.config.pattern_bias > 0:
            step = (now - (self.state.first_bar_steps or 0)) % self.config.bar_steps
            for hand in (RIGHT, LEFT):
                if not self.pattern_steps[hand]:
                    continue  # a hand the prompt does not play is free
                if step not in self.pattern_steps[hand]:
                    shifts[hand] -= self.config.pattern_bias
                elif not (self.state.onsets[hand] == now).any():
                    shifts[hand] += PATTERN_PULL * self.config.pattern_bias
        if self.density is not None:
            for hand in (RIGHT, LEFT):
                shifts[hand] += self.density.shift(hand, now, self.config.density_bias, self.config.bar_steps)
        return shifts

    def _va_now(self) -> np.ndarray:
        """The VA curve at the current time (beats after the prompt's end)."""
        beats = (self.state.now_steps - self.origin_steps) / STEPS_PER_QUARTER
        return np.clip(np.asarray(self.va_curve(beats), dtype=np.float32).reshape(2), -1.0, 1.0)

    def __iter__(self) -> Iterator[int]:
        state = self.state
        for _ in range(self.max_tokens):
            token = sample_token(self._scores(), self.masker(state), self.config, self.rng)
            if token == BAR and state.bars + 1 > self.bars:
                break
            state.advance(token)
            if self.motif is not None:
                self.motif.advance(token, state.now_steps)
            if self.density is not None:
                self.density.advance(token, state.now_steps)
            yield token
            if self.va_curve is not None:
                self.va = self._va_now()
            self.logits = self.decoder.step(token, self.va)
        closing = closing_tokens(state)
        self.forced_offs = sum(1 for t in closing if t != SHIFT_BASE)
        for token in closing:
            state.advance(token)
            yield token


def generate(
    model: ContinuationModel,
    prompt: Sequence[int],
    bars: int,
    config: SamplingConfig,
    style: int = 0,
    va: tuple[float, float] | Callable[[float], Sequence[float]] = (0.0, 0.0),
    max_tokens: int = 2048,
    prompt_va: np.ndarray | None = None,
) -> Generation:
    """Continue ``prompt`` for ``bars`` bars of ``config.bar_steps`` (the prompt's bar grid).
    ``va``: a constant (valence, arousal) or a function of the beats after the prompt's end;
    ``prompt_va``: per-token labels of the prompt (default: ``va`` throughout)."""
    stream = Stream(model, prompt, bars, config, style, va, max_tokens, prompt_va)
    tokens = list(stream)
    return Generation(tokens, stream.forced_offs, stream.state.bars)

"""Soft logit shifts that keep a continuation close to its prompt (numpy only), each measured
from the prompt and applied by ``Scorer`` to the model's logits before sampling:

- key bias (``key_bias`` B): a NOTE_ON outside the scale of the prompt's key
  (``modal.window_key``) loses B, a soft form of the ``pitch_classes`` mask;
- rhythm pattern (``pattern_bias``): the prompt's last ``PATTERN_BARS`` bars, repeated: in each
  new bar, each hand's onset steps in the prompt bar it repeats (the union of those bars where
  the hand rests in it); a NOTE_ON elsewhere loses the bias, and at a pattern step the hand's
  notes gain ``PATTERN_PULL`` of it until the hand strikes there. In the first
  ``PATTERN_HOLD_BARS`` new bars a hand may start an onset only on its pattern (the density
  keeper's bounds aside): the accompaniment goes on as the player left it;
- density keeper (``density_bias``): a hand ahead of the prompt's onset rate by half a bar's worth
  loses the bias, one behind gains it (linear in between); and hard bounds (``DensityKeeper``)
  hold each hand's onsets per bar within ``DENSITY_BOUNDS`` x the prompt's;
- motif echo (``motif_bias``): at a new right-hand onset, the pitches that continue one of the
  prompt's melodic interval patterns gain the bias;
- mode steering (``mode_steer`` S): for the degrees that tell major from minor (third, sixth,
  seventh above the prompt's tonic), each pair of NOTE_ONs a semitone apart keeps the probability
  the model gives it and only its split moves: the major one's log-odds rise by S x valence. With
  a scale mask (``pitch_classes``) only the pairs whose two notes it allows are steered; the key
  bias leaves the steered pairs alone.

A VELOCITY commits to a NOTE_ON, so it moves with the likelier hand's notes.

With ``register_medians`` (the prompt register), ``MedianKeeper`` bounds each hand's notes so that
their median pitch ends within an octave of the prompt's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

import numpy as np

from .modal import MAJOR_TO_MINOR, window_key
from .prompt_style import PATTERN_BARS, prompt_bar_onsets, prompt_note_ons, prompt_onsets
from .state import SamplingConfig, State, scale_pitch_classes
from .tokens import (
    BAR,
    HIGH_PITCH,
    LEFT,
    LOW_PITCH,
    MAX_SHIFT_STEPS,
    NOTE_BASE,
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
    "DENSITY_BOUNDS",
    "MODE_STEER",
    "PATTERN_PULL",
    "DensityKeeper",
    "MedianKeeper",
    "MotifEcho",
    "Scorer",
    "key_penalty",
    "mode_pairs",
    "steer_mode",
]

MODE_STEER = 5.0  # the engine's and `scorebridge continue`'s default (docs/continuation.md)
PATTERN_PULL = 0.5  # share of pattern_bias a hand's notes gain at a step where it struck in the prompt
PATTERN_HOLD_BARS = 2  # new bars in which a hand may start an onset only on its pattern (unless the keeper forces)
DENSITY_BOUNDS = (0.5, 2.0)  # each hand's onsets per bar, x the prompt's, that the density keeper holds
_MAJOR_DEGREES = tuple(sorted(MAJOR_TO_MINOR))  # each a semitone above its minor counterpart
_ON_STARTS = (note_token(RIGHT, NOTE_ON, LOW_PITCH), note_token(LEFT, NOTE_ON, LOW_PITCH))


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


def key_penalty(tonic: int, major: bool, strength: float) -> np.ndarray:
    """[VOCAB_SIZE] logit offsets: -``strength`` for a NOTE_ON (either hand) outside the key's
    scale (a minor key's holds the natural minor and the raised sixth and seventh), 0 elsewhere."""
    scale = scale_pitch_classes(tonic, "major") if major else (
        scale_pitch_classes(tonic, "minor") | {(tonic + 9) % 12, (tonic + 11) % 12})
    outside = ~np.isin(np.arange(LOW_PITCH, LOW_PITCH + NUM_PITCHES) % 12, list(scale))
    penalty = np.zeros(VOCAB_SIZE)
    for start in _ON_STARTS:
        penalty[start : start + NUM_PITCHES][outside] = -strength
    return penalty


class DensityKeeper:
    """Each hand's onsets (distinct onset times) against the prompt's rate.

    Soft: a hand ahead of the rate by half a bar's worth loses ``density_bias`` on its NOTE_ONs,
    one behind by as much gains it (linear in between), so each hand keeps about the prompt's
    density. Hard (``bound``), over the ``horizon`` steps to be generated: a hand never starts
    more than ``DENSITY_BOUNDS[1]`` x the prompt's onsets for the time so far (plus half a bar)
    nor for the whole horizon; one that falls a whole onset behind ``DENSITY_BOUNDS[0]`` x the
    rate, or could reach that by the end only at the prompt's full pace, must strike before time
    moves on; and time never jumps past the grid steps (``time_grid``) it still needs to reach
    it. So every continuation's per-hand density ends within the bounds of the prompt's."""

    def __init__(self, prompt: Sequence[int], origin: int, horizon: int = 0, bar_steps: int = 48,
                 time_grid: frozenset[int] | None = None) -> None:
        note_ons, _, first_bar, _ = prompt_note_ons(prompt)
        span = max(1, origin - first_bar)
        self.rate = [len({t for t, h, _ in note_ons if h == hand}) / span for hand in (RIGHT, LEFT)]  # per step
        self.origin, self.count, self.last = origin, [0, 0], [-1, -1]
        self.horizon, self.bar_steps = horizon, bar_steps
        low, high = DENSITY_BOUNDS
        self.ceiling = [math.floor(high * rate * horizon + 1e-9) for rate in self.rate]
        self.floor = [math.ceil(low * rate * horizon - 1e-9) for rate in self.rate]
        prompt_bars = set(range(span // bar_steps))
        # a hand that struck in every bar of the prompt must sound in every new bar
        self.every_bar = [bool(prompt_bars) and prompt_bars <= {(t - first_bar) // bar_steps for t, h, _ in note_ons
                                                                if h == hand} for hand in (RIGHT, LEFT)]
        self.released = [-1, -1]  # the step of each hand's latest NOTE_OFF
        self.forced = [0, 0]  # times a hand was made to strike (``bound``)
        # chances[x]: steps at or after origin + x, before the end, where a note may start
        starts = np.ones(horizon, dtype=np.int64) if time_grid is None else np.isin(
            (np.arange(origin, origin + horizon) - first_bar) % bar_steps, sorted(time_grid)).astype(np.int64)
        self.chances = np.append(np.cumsum(starts[::-1])[::-1], 0)

    def advance(self, token: int, now: int) -> None:
        if NOTE_BASE <= token < VELOCITY_BASE:
            index = token - NOTE_BASE
            hand = index // (2 * NUM_PITCHES)
            if index // NUM_PITCHES % 2 != NOTE_ON:
                self.released[hand] = now
            elif self.last[hand] != now:
                self.count[hand] += 1
                self.last[hand] = now

    def shift(self, hand: int, now: int, bias: float, bar_steps: int) -> float:
        """The logit shift of ``hand``'s NOTE_ONs at step ``now`` (0 once it struck at ``now``)."""
        if self.rate[hand] <= 0 or self.last[hand] == now:
            return 0.0
        half_bar = max(self.rate[hand] * bar_steps / 2, 1.0)
        excess = (self.count[hand] - self.rate[hand] * (now - self.origin)) / half_bar
        return -bias * min(1.0, max(-1.0, excess))

    def bound(self, allowed: np.ndarray, state: State, hold: Sequence[bool] = (False, False)) -> np.ndarray:
        """``allowed`` (the grammar's mask) with the density bounds applied: a hand over its
        ceiling cannot start a new onset; while a hand is under its floor, or would leave a bar
        silent that it played in every prompt bar, time cannot pass (the hand strikes first).
        ``hold``: hands that may not start an onset now unless the bounds make them (the rhythm
        pattern's first bars). Returns ``allowed`` itself when nothing changes."""
        if allowed[BAR]:
            return allowed  # a bar line is due: nothing else may come
        now = state.now_steps
        elapsed, low, high = now - self.origin, DENSITY_BOUNDS[0], DENSITY_BOUNDS[1]
        bar_start = now - elapsed % self.bar_steps
        silenced, force, longest_jump = [], False, MAX_SHIFT_STEPS
        for hand in (RIGHT, LEFT):
            rate, count = self.rate[hand], self.count[hand]
            if not self.horizon or rate <= 0:
                if hold[hand]:
                    silenced.append(hand)
                continue
            struck = self.last[hand] == now  # one that struck now may add to its chord
            if not struck and count + 1 > min(self.ceiling[hand], high * rate * (elapsed + self.bar_steps / 2)):
                silenced.append(hand)
                continue
            deficit, jump = self.floor[hand] - count, MAX_SHIFT_STEPS
            if deficit > 0 and self.chances[min(elapsed + MAX_SHIFT_STEPS, self.horizon)] < deficit:
                # the longest jump that leaves as many steps to strike on as the hand still needs
                reach = self.chances[elapsed + 1 : elapsed + 1 + MAX_SHIFT_STEPS]
                jump = int(np.count_nonzero(reach >= deficit))
            if struck:
                longest_jump = min(longest_jump, jump or MAX_SHIFT_STEPS)  # 0: out of reach whatever comes
                continue
            behind = count + 1 <= low * rate * elapsed or deficit >= rate * (self.horizon - elapsed)
            silent = (self.every_bar[hand] and self.last[hand] < bar_start and self.released[hand] <= bar_start
                      and not state.held_count[hand]
                      and bar_start + self.bar_steps - now <= STEPS_PER_QUARTER)  # the bar's last beat
            # its NOTE_ONs and NOTE_OFFs (a hand at its polyphony frees a key first)
            if (behind or silent or not jump) and allowed[_ON_STARTS[hand] : _ON_STARTS[hand] + 2 * NUM_PITCHES].any():
                force = True
                self.forced[hand] += 1
                continue
            longest_jump = min(longest_jump, jump or MAX_SHIFT_STEPS)
            if hold[hand]:
                silenced.append(hand)
        if not force and longest_jump == MAX_SHIFT_STEPS:
            return without_onsets(allowed, silenced)
        out = without_onsets(allowed, silenced, copy=True)
        # the hand strikes (or first frees a key) before time moves on, or moves on by at most longest_jump
        out[SHIFT_BASE + (0 if force else longest_jump) :] = False
        return out


def without_onsets(allowed: np.ndarray, hands: Sequence[int], copy: bool = False) -> np.ndarray:
    """``allowed`` (a copy when anything changes, or with ``copy``) without the NOTE_ONs of
    ``hands``, and without VELOCITY when no NOTE_ON is left to follow one."""
    if not hands and not copy:
        return allowed
    out = allowed.copy()
    for hand in hands:
        out[_ON_STARTS[hand] : _ON_STARTS[hand] + NUM_PITCHES] = False
    if hands and not (out[_ON_STARTS[RIGHT] : _ON_STARTS[RIGHT] + NUM_PITCHES].any()
                      or out[_ON_STARTS[LEFT] : _ON_STARTS[LEFT] + NUM_PITCHES].any()):
        out[VELOCITY_BASE:SHIFT_BASE] = False  # a velocity must lead to a NOTE_ON
    return out


class MedianKeeper:
    """Each hand's new notes keep their median pitch within ``OCTAVE`` semitones of the median of
    the hand's notes in the prompt: a NOTE_ON further than that above (below) the prompt's median
    is allowed only while, with it, fewer than half of the hand's new notes lie that far above
    (below). The median of the new notes is then never further than the octave, whatever comes
    after; a hand that keeps near the prompt's register is never held back (its first note must be
    within the octave, the second may already leave it)."""

    OCTAVE = 12

    def __init__(self, medians: Sequence[float | None]) -> None:
        """``medians``: the prompt's median pitch of the right and the left hand (None: free)."""
        self.median: list[float | None] = list(medians)
        self.far: list[tuple[slice, slice]] = []  # each hand's NOTE_ON tokens above and below the octave
        for hand in (RIGHT, LEFT):
            median = self.median[hand]
            if median is None:
                self.far.append((slice(0, 0), slice(0, 0)))
                continue
            above = max(0, min(NUM_PITCHES, math.floor(median + self.OCTAVE) + 1 - LOW_PITCH))
            below = max(0, min(NUM_PITCHES, math.ceil(median - self.OCTAVE) - LOW_PITCH))
            start = _ON_STARTS[hand]
            self.far.append((slice(start + above, start + NUM_PITCHES), slice(start, start + below)))
        self.count, self.above, self.below = [0, 0], [0, 0], [0, 0]

    def advance(self, token: int) -> None:
        if not NOTE_BASE <= token < VELOCITY_BASE:
            return
        index = token - NOTE_BASE
        hand = index // (2 * NUM_PITCHES)
        median = self.median[hand]
        if index // NUM_PITCHES % 2 != NOTE_ON or median is None:
            return
        pitch = index % NUM_PITCHES + LOW_PITCH
        self.count[hand] += 1
        if pitch > median + self.OCTAVE:
            self.above[hand] += 1
        elif pitch < median - self.OCTAVE:
            self.below[hand] += 1

    def bound(self, allowed: np.ndarray) -> np.ndarray:
        """``allowed`` without the far NOTE_ONs that would make half of a hand's new notes far on
        one side (a copy when anything changes). A hand left with no NOTE_ON at all keeps its own:
        the other constraints decide then (never seen: the octave around the median holds notes
        of every scale)."""
        out = allowed
        for hand in (RIGHT, LEFT):
            if self.median[hand] is None:
                continue
            # a far note must leave fewer than half of the hand's new notes far on its side
            cut = [side for side, far in zip(self.far[hand], (self.above[hand], self.below[hand]), strict=True)
                   if not 2 * (far + 1) < self.count[hand] + 1 and out[side].any()]
            if not cut:
                continue
            start = _ON_STARTS[hand]
            trial = out.copy()
            for side in cut:
                trial[side] = False
            if trial[start : start + NUM_PITCHES].any():
                out = trial
        return out


class MotifEcho:
    """The right hand's melodic line (the highest note of each onset) and what the prompt's line
    does next after each pair and each single interval: the pitches that would echo the prompt's
    motifs at the next onset."""

    def __init__(self, prompt: Sequence[int]) -> None:
        self.line: list[int] = []
        self.top_time, self.top_pitch = -1, -1
        self.keep = 0  # the whole prompt's line; then only the last onsets
        state = State()
        for token in prompt:
            state.advance(int(token))
            self.advance(int(token), state.now_steps)
        line = self.line + ([self.top_pitch] if self.top_pitch >= 0 else [])
        steps = [b - a for a, b in pairwise(line)]
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
        steps = [b - a for a, b in pairwise(line)]
        nexts = self.after_pair.get(tuple(steps[-2:])) if len(steps) >= 2 else None
        if not nexts and steps:
            nexts = self.after_one.get(steps[-1])
        return [self.top_pitch + x for x in sorted(nexts or ()) if LOW_PITCH <= self.top_pitch + x <= HIGH_PITCH]


class Scorer:
    """Every bias of one config, measured from one prompt; ``scores`` shifts the model's logits
    for the state the sequence is in (``advance`` it with each new token)."""

    def __init__(self, prompt: Sequence[int], config: SamplingConfig, origin_steps: int, horizon: int = 0) -> None:
        self.config, self.origin = config, origin_steps
        tokens = np.asarray(prompt, dtype=np.int64)
        key = window_key(tokens) if config.mode_steer > 0 or config.key_bias > 0 else None
        self.pairs: tuple[np.ndarray, np.ndarray] | None = None
        if config.mode_steer > 0 and key is not None:  # no key, no steering
            self.pairs = mode_pairs(key[0], config.pitch_classes)
        self.key_penalty: np.ndarray | None = None
        if config.key_bias > 0 and key is not None:
            self.key_penalty = key_penalty(key[0], key[1], config.key_bias)
            if self.pairs is not None:  # steering picks between the modes' degrees: no penalty there
                self.key_penalty[np.concatenate(self.pairs)] = 0.0
        self.pattern_steps: tuple[frozenset[int], ...] = (frozenset(), frozenset())
        self.pattern_bars: dict[int, tuple[frozenset[int], ...]] = {}  # bar index % PATTERN_BARS -> steps
        if config.pattern_bias > 0:
            self.pattern_steps = prompt_onsets(prompt, config.bar_steps, PATTERN_BARS)
            self.pattern_bars = {phase: tuple(bar[hand] or self.pattern_steps[hand] for hand in (RIGHT, LEFT))
                                 for phase, bar in prompt_bar_onsets(prompt, config.bar_steps, PATTERN_BARS).items()}
        self.motif = MotifEcho(prompt) if config.motif_bias > 0 else None
        self.density = (DensityKeeper(prompt, origin_steps, horizon, config.bar_steps, config.time_grid)
                        if config.density_bias > 0 else None)
        self.median = MedianKeeper(config.register_medians) if config.register_medians is not None else None

    def advance(self, token: int, now: int) -> None:
        if self.motif is not None:
            self.motif.advance(token, now)
        if self.density is not None:
            self.density.advance(token, now)
        if self.median is not None:
            self.median.advance(token)

    def allowed(self, allowed: np.ndarray, state: State) -> np.ndarray:
        """The grammar's mask with the density keeper's bounds (``DensityKeeper.bound``) and, in
        the first ``PATTERN_HOLD_BARS`` new bars, no new onset of a hand off its rhythm pattern, and
        the median keeper's bound (``MedianKeeper.bound``)."""
        hold = self.off_pattern(state) if self.config.pattern_bias > 0 else (False, False)
        if self.density is not None:
            allowed = self.density.bound(allowed, state, hold)
        elif not allowed[BAR]:
            allowed = without_onsets(allowed, [h for h in (RIGHT, LEFT) if hold[h]])
        return allowed if self.median is None or allowed[BAR] else self.median.bound(allowed)

    def off_pattern(self, state: State) -> tuple[bool, bool]:
        """Hands held back now: off their pattern step in the first ``PATTERN_HOLD_BARS`` new bars,
        not in the middle of a chord."""
        now = state.now_steps
        if now - self.origin >= PATTERN_HOLD_BARS * self.config.bar_steps:
            return (False, False)
        steps = self.pattern_now(state)
        return tuple(bool(steps[hand]) and state.last_on[hand] != now
                     and (now - (state.first_bar_steps or 0)) % self.config.bar_steps not in steps[hand]
                     for hand in (RIGHT, LEFT))

    def pattern_now(self, state: State) -> tuple[frozenset[int], ...]:
        """Each hand's pattern steps for the bar the state is in (empty: the hand is free)."""
        bar = (state.now_steps - (state.first_bar_steps or 0)) // self.config.bar_steps
        return self.pattern_bars.get(bar % PATTERN_BARS, self.pattern_steps)

    def scores(self, logits: np.ndarray, state: State, valence: float) -> np.ndarray:
        """The model's logits with the key penalty, the hands' rhythm and density shifts and the
        motif echo, mode-steered at ``valence``; ``logits`` itself is never written."""
        owned = self.key_penalty is not None
        if owned:
            logits = logits + self.key_penalty
        shifts = self.hand_shifts(state)
        if shifts[RIGHT] or shifts[LEFT]:
            if not owned:
                logits, owned = np.array(logits, dtype=np.float64), True
            for hand in (RIGHT, LEFT):
                logits[_ON_STARTS[hand] : _ON_STARTS[hand] + NUM_PITCHES] += shifts[hand]
            # a VELOCITY commits to a NOTE_ON of either hand: it moves as the likelier hand's notes do
            logits[VELOCITY_BASE:SHIFT_BASE] += max(shifts)
        if self.motif is not None:
            pitches = self.motif.next_pitches(state.now_steps)
            if pitches:
                if not owned:
                    logits, owned = np.array(logits, dtype=np.float64), True
                logits[[note_token(RIGHT, NOTE_ON, p) for p in pitches]] += self.config.motif_bias
        if self.pairs is None:
            return logits
        return steer_mode(logits, self.pairs, self.config.mode_steer * valence)

    def hand_shifts(self, state: State) -> list[float]:
        """Logit shifts of each hand's NOTE_ONs now: the rhythm pattern (off the prompt's onset
        steps -pattern_bias; on one, until the hand strikes, +PATTERN_PULL x pattern_bias) and the
        density keeper's."""
        config = self.config
        shifts = [0.0, 0.0]
        now = state.now_steps
        if config.pattern_bias > 0:
            step = (now - (state.first_bar_steps or 0)) % config.bar_steps
            pattern = self.pattern_now(state)
            for hand in (RIGHT, LEFT):
                steps = pattern[hand]
                if not steps:
                    continue  # a hand the prompt does not play is free
                if step not in steps:
                    shifts[hand] -= config.pattern_bias
                elif state.last_on[hand] != now:  # a NOTE_ON struck now is held at least until the next step
                    shifts[hand] += PATTERN_PULL * config.pattern_bias
        if self.density is not None:
            for hand in (RIGHT, LEFT):
                shifts[hand] += self.density.shift(hand, now, config.density_bias, config.bar_steps)
        return shifts

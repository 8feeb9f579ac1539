"""What the prompt says about how to go on, read from its tokens (numpy only): each hand's
register, its rhythmic grid, each hand's onset steps in the bar (the rhythm pattern), and every
NOTE_ON with the prompt's longest note. ``sample.Stream`` and the commands turn these into
constraints (``SamplingConfig``) and biases (``biases``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from .state import SamplingConfig, State
from .tokens import (
    LEFT,
    LOW_PITCH,
    NOTE_BASE,
    NOTE_ON,
    NUM_PITCHES,
    RIGHT,
    STEPS_PER_QUARTER,
    VELOCITY_BASE,
    NoteEvent,
)

__all__ = [
    "GRIDS",
    "GRID_CANDIDATES",
    "GRID_COVER",
    "PATTERN_BARS",
    "REGISTERS",
    "REGISTER_MARGIN",
    "prompt_bar_onsets",
    "prompt_grid",
    "prompt_note_ons",
    "prompt_onsets",
    "prompt_register",
]

REGISTERS = ("prompt", "free")  # the engine's and `scorebridge continue`'s choice; prompt is the default
REGISTER_MARGIN = 5  # semitones each hand may go past the prompt's lowest and highest note
GRIDS = ("prompt", "free")  # the engine's and `scorebridge continue`'s choice; prompt is the default
# Candidate onset grids in grid steps (1/12 beat): 16ths, then eighth triplets, then both.
GRID_CANDIDATES: tuple[tuple[int, ...], ...] = ((3,), (4,), (3, 4))
PATTERN_BARS = 2  # the rhythm pattern is that of the prompt's last bars: what a player goes on with
GRID_COVER = 0.95  # share of the prompt's note times a grid must hold to be the prompt's


def prompt_register(
    prompt: Sequence[int], config: SamplingConfig, margin: int = REGISTER_MARGIN,
    played: Sequence[NoteEvent] | None = None,
) -> SamplingConfig:
    """``config`` with each hand's range set to the prompt's lowest..highest NOTE_ON of that hand,
    widened by ``margin`` semitones and kept on the keyboard (21..108); a hand the prompt does not
    play keeps its range; and ``register_medians`` set to each hand's median pitch, so that its new
    notes keep their median within an octave of it (``biases.MedianKeeper``): the median of
    ``played`` (the prompt's notes as the player played them, before tokenizing merges doubled
    notes) when given, else of the prompt's NOTE_ONs. The continuation then stays where the
    player's hands are."""
    tokens = np.asarray(prompt, dtype=np.int64)
    index = tokens[(tokens >= NOTE_BASE) & (tokens < VELOCITY_BASE)] - NOTE_BASE
    hands, kinds, pitches = index // (2 * NUM_PITCHES), (index // NUM_PITCHES) % 2, index % NUM_PITCHES + LOW_PITCH
    ranges = [config.right_range, config.left_range]
    medians: list[float | None] = [None, None]
    for hand in (RIGHT, LEFT):
        ons = pitches[(hands == hand) & (kinds == NOTE_ON)]
        if len(ons):
            ranges[hand] = (max(LOW_PITCH, int(ons.min()) - margin),
                            min(LOW_PITCH + NUM_PITCHES - 1, int(ons.max()) + margin))
        heard = ons if played is None else [n.pitch for n in played if n.hand == hand]
        medians[hand] = float(np.median(heard)) if len(heard) else None
    return replace(config, right_range=ranges[RIGHT], left_range=ranges[LEFT],
                   register_medians=(medians[RIGHT], medians[LEFT]))


def prompt_grid(prompt: Sequence[int], config: SamplingConfig, cover: float = GRID_COVER,
                cap_notes: bool = True) -> SamplingConfig:
    """``config`` with ``time_grid`` set to the prompt's rhythmic grid: the first of 16ths, eighth
    triplets or their union (``GRID_CANDIDATES``) that holds ``cover`` of the prompt's onsets,
    measured from its bar lines; any step when none does, as in played timing (unchanged with
    fewer than 8 onsets). New notes then start and end on the grid (note ends are not measured:
    sources often leave them unquantized): straight stays straight, a shuffle stays a shuffle.
    With ``cap_notes``, ``max_note_steps`` becomes the prompt's longest note (at least a beat)."""
    note_ons, longest, origin, _ = prompt_note_ons(prompt)
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
    note_ons, _, origin, end = prompt_note_ons(prompt)
    since = end - last_bars * bar_steps if last_bars else -1
    return tuple(frozenset((time - origin) % bar_steps for time, h, _ in note_ons if h == hand and time >= since)
                 for hand in (RIGHT, LEFT))


def prompt_bar_onsets(prompt: Sequence[int], bar_steps: int, last_bars: int) -> dict[int, tuple[frozenset[int], ...]]:
    """Each hand's onset steps in the bar for each of the prompt's last ``last_bars`` bars, keyed
    by the bar's index modulo ``last_bars`` (bars counted from the prompt's first bar line): what
    repeating those bars would play in a later bar of the same index modulo ``last_bars``."""
    note_ons, _, origin, end = prompt_note_ons(prompt)
    bars = max(1, -(-(end - origin) // bar_steps))
    out = {}
    for bar in range(max(0, bars - last_bars), bars):
        start = origin + bar * bar_steps
        out[bar % last_bars] = tuple(frozenset(t - start for t, h, _ in note_ons
                                               if h == hand and start <= t < start + bar_steps)
                                     for hand in (RIGHT, LEFT))
    return out


def prompt_note_ons(prompt: Sequence[int]) -> tuple[list[tuple[int, int, int]], int, int, int]:
    """(step, hand, pitch) of every NOTE_ON from the prompt's first bar line on, the longest of
    those notes in steps, the first bar line's step (0 without one) and the prompt's last step."""
    state, note_ons, longest = State(), [], 0
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

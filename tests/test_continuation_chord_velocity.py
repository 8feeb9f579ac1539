"""A hand's chord shares one velocity (``state.shared_chord_velocity``, `continue`'s default since
issue 17's speed work), every other constraint kept (pure logic; the seeded fake model of
test_continuation_sample.py). How many tokens it saves with the real model:
``benchmarks/bench_continuation.py``."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

import pytest

from engines.continuation import tokens as tk
from engines.continuation.sample import SamplingConfig, generate, prompt_grid, prompt_register
from tests.test_continuation_golden import golden_prompt
from tests.test_continuation_sample import RandomLogitsModel, _check

BIASES = dict(key_bias=4.0, pattern_bias=4.0, motif_bias=3.0, density_bias=4.0)


def _same_hand_velocity_changes(tokens: list[int]) -> int:
    """VELOCITY tokens written between two NOTE_ONs of one hand at one step."""
    struck: set[int] = set()
    pending, count = False, 0
    for token in tokens:
        if tk.is_shift(token) or token == tk.BAR:
            struck = set()
        if tk.is_velocity(token):
            pending = True
            continue
        if tk.is_note(token):
            hand, kind, _ = tk.parse_note_token(token)
            if kind == tk.NOTE_ON:
                count += pending and hand in struck
                struck.add(hand)
        pending = False
    return count


def _configs(prompt: list[int]) -> dict[str, SamplingConfig]:
    user = prompt_grid(prompt, prompt_register(prompt, SamplingConfig(top_p=0.95, **BIASES)))
    return {
        "user": user,
        "alone": SamplingConfig(top_p=0.95),
        "strict": SamplingConfig(temperature=1.2, top_k=40, top_p=0.9, right_range=(60, 84), left_range=(36, 59),
                                 max_polyphony=3, max_note_steps=24, **BIASES),
    }


@pytest.mark.parametrize("name", ["user", "alone", "strict"])
def test_each_hands_chord_shares_one_velocity_and_every_constraint_holds(name: str) -> None:
    prompt = golden_prompt()
    config = _configs(prompt)[name]
    changes = {True: 0, False: 0}
    for seed in range(4):
        for shared in (True, False):
            chosen = replace(config, seed=seed, chord_velocity=shared)
            result = generate(RandomLogitsModel(seed), prompt, bars=4, config=chosen, max_tokens=1500)
            notes, _ = _check(prompt[1:] + result.tokens, chosen)
            assert result.bars == 4
            changes[shared] += _same_hand_velocity_changes(result.tokens)
            if shared:
                velocities = defaultdict(set)
                start = sum(tk.shift_steps(t) for t in prompt if tk.is_shift(t))  # the prompt's end
                for note in notes:
                    if note.onset_steps >= start:
                        velocities[(note.hand, note.onset_steps)].add(note.velocity)
                assert all(len(v) == 1 for v in velocities.values()), "a hand's chord changed velocity"
    assert changes[True] == 0
    assert changes[False] > 0, "the fake model must write chords with velocity changes, or this tests nothing"

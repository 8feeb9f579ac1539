"""Speed work must not change what is played: fixed-seed continuations under every sampling
constraint and bias, token for token as the sampler produced them before (pure logic; the seeded
fake model of test_continuation_sample.py, whose logits are the same on any machine).

The digests were computed with the sampler of commit 15c9322 (before the per-token work was made
incremental); ``python -m tests.test_continuation_golden`` prints them for the code at hand.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import replace

import pytest

from engines.continuation import tokens as tk
from engines.continuation.sample import SamplingConfig, generate, prompt_grid, prompt_register, scale_pitch_classes
from tests.test_continuation_sample import RandomLogitsModel


def golden_prompt() -> list[int]:
    """Four bars of 4/4: right-hand eighth-note arpeggios (a dotted rhythm in the last bar) over
    left-hand half-note roots, starting a 16th after a pickup."""
    notes = [tk.NoteEvent(45, tk.RIGHT, 79, 3, 70)]
    for bar, (root, third, fifth) in enumerate(((60, 64, 67), (57, 60, 64), (53, 57, 60), (55, 59, 62))):
        start = 48 + bar * 48
        rhythm = (0, 9, 12, 21, 24, 33, 36, 45) if bar == 3 else tuple(range(0, 48, 6))
        for index, pitch in enumerate((root, third, fifth, root + 12) * 2):
            notes.append(tk.NoteEvent(start + rhythm[index], tk.RIGHT, pitch + 12, 3 if bar == 3 else 6, 72 + index))
        notes += [tk.NoteEvent(start, tk.LEFT, root - 12, 24, 64),
                  tk.NoteEvent(start + 24, tk.LEFT, fifth - 24, 24, 60)]
    notes, _ = tk.canonicalize(notes)
    return [tk.SOS, *tk.encode(notes, [0, 48, 96, 144, 192])]


def _configs(prompt: list[int]) -> dict[str, tuple[SamplingConfig, object]]:
    """name -> (config without its seed, the va setting)."""
    biases = dict(key_bias=4.0, pattern_bias=4.0, motif_bias=3.0, density_bias=4.0)
    user = prompt_grid(prompt, prompt_register(prompt, SamplingConfig(top_p=0.95, **biases)))
    return {
        "alone": (SamplingConfig(top_p=0.95), (0.0, 0.0)),
        "user": (user, (0.2, 0.4)),
        "steered": (
            replace(user, temperature=0.9, top_k=30, mode_steer=5.0, density_bias=0.0, pattern_bias=0.0),
            lambda beats: (0.8 * math.cos(beats / 3), 0.3),
        ),
        "strict": (
            SamplingConfig(temperature=1.2, top_k=40, top_p=0.9, pitch_classes=scale_pitch_classes(2, "major"),
                           right_range=(60, 84), left_range=(36, 59), max_polyphony=3, max_note_steps=24,
                           mode_steer=3.0, **biases),
            (-0.6, 0.0),
        ),
    }


def digests() -> dict[str, str]:
    prompt = golden_prompt()
    out = {}
    for name, (config, va) in _configs(prompt).items():
        for seed in range(4):
            tokens = generate(RandomLogitsModel(seed), prompt, 4, replace(config, seed=seed), va=va).tokens
            out[f"{name}-{seed}"] = hashlib.sha256(str(tokens).encode()).hexdigest()[:16] + f"/{len(tokens)}"
    return out


GOLDEN: dict[str, str] = {
    "alone-0": "ac614f6bb266ebd1/119",
    "alone-1": "403a981870300a2e/215",
    "alone-2": "dc1264109e93ebed/143",
    "alone-3": "6e9a05a5f8f63f2d/187",
    "user-0": "b12372799ed11687/363",
    "user-1": "4c291b609537a6f1/301",
    "user-2": "abfbf79daa848212/383",
    "user-3": "6155bdaae37d53fa/388",
    "steered-0": "976585bcde26994e/418",
    "steered-1": "30d1918df4613ce0/332",
    "steered-2": "cbc014233b514389/374",
    "steered-3": "f83b329e1d377579/417",
    "strict-0": "5ea2d683a8dc40ec/186",
    "strict-1": "b07ab420dad464fa/215",
    "strict-2": "d5561d874821161d/197",
    "strict-3": "2f992e09daa9422b/228",
}


@pytest.mark.parametrize("key", sorted(GOLDEN))
def test_fixed_seed_continuation_is_unchanged(key: str) -> None:
    assert digests_cache()[key] == GOLDEN[key]


_CACHE: dict[str, str] = {}


def digests_cache() -> dict[str, str]:
    if not _CACHE:
        _CACHE.update(digests())
    return _CACHE


if __name__ == "__main__":
    for key, value in digests().items():
        print(f'    "{key}": "{value}",')

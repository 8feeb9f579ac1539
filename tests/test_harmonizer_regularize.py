"""Training regularizers (engines/harmonizer/regularize.py) on hand-made cases, and the exact
equivalence of the model's harmony-half-only last block with the full computation."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from engines.harmonizer.vocab import PAD, VOCAB_SIZE, token_id
from training.harmonizer.model import Harmonizer, ModelConfig
from training.harmonizer.regularize import (
    consistency_penalty,
    crop_length,
    expected_fit,
    melody_fit_table,
)


def test_melody_fit_table_scores_hand_made_cases() -> None:
    table = melody_fit_table()
    assert table.shape == (VOCAB_SIZE, 12)
    c_major, a_minor = token_id("C:maj"), token_id("A:min")
    assert table[c_major, 4] == pytest.approx(1.0)  # E over C E G: 4, 0, 9 -> all consonant
    assert table[c_major, 5] == pytest.approx(-2 / 3)  # F over C E G: 5 (0), 1 (-1), 10 (-1)
    assert table[a_minor, 0] == pytest.approx(1.0)  # C over A C E: 3, 0, 8
    assert table[token_id("C:min"), 4] == pytest.approx(1 / 3)  # E over C Eb G: 4, 1, 9
    assert not table[PAD].any()


def test_crop_length_bounds() -> None:
    rng = np.random.default_rng(0)
    lengths = [crop_length(80, rng, 0.5, 16) for _ in range(400)]
    assert min(lengths) >= 16 and max(lengths) == 80
    assert 0.35 < np.mean([n == 80 for n in lengths]) < 0.65
    assert {crop_length(80, rng, 0.0, 16) for _ in range(20)} == {80}


def test_consistency_penalty_only_punishes_a_worse_fit() -> None:
    fit = torch.from_numpy(melody_fit_table())
    pitch = torch.tensor([[64, -1, 64]])  # E, rest, E
    mask = torch.tensor([[True, True, True]])
    logits = torch.full((1, 3, VOCAB_SIZE), -20.0)
    logits[..., token_id("C:maj")] = 20.0
    clashing = torch.full((1, 3, VOCAB_SIZE), -20.0)
    clashing[..., token_id("F:maj")] = 20.0  # E over F A C: 11, 7, 4 -> (-1 + 1 + 1) / 3
    assert expected_fit(logits, fit, pitch)[0].tolist() == pytest.approx([1.0, 0.0, 1.0], abs=1e-6)
    assert float(consistency_penalty(logits, logits, fit, pitch, mask)) == pytest.approx(0.0, abs=1e-6)
    assert float(consistency_penalty(logits, clashing, fit, pitch, mask)) == pytest.approx(2 / 3, abs=1e-5)
    assert float(consistency_penalty(clashing, logits, fit, pitch, mask)) == pytest.approx(0.0, abs=1e-6)


def test_harmony_half_last_block_equals_the_full_block() -> None:
    torch.manual_seed(0)
    model = Harmonizer(ModelConfig(d_model=16, heads=2, layers=2, feedforward=32, length=12)).eval()
    length = 9
    inputs = (torch.rand(2, length, 13).round(), torch.randint(7, VOCAB_SIZE, (2, length)),
              torch.randn(2, length, 2), torch.tensor([0, 2]), torch.zeros(2, 16))
    with torch.no_grad():
        logits = model(*inputs)
        melody, harmony, va, style, condition = inputs
        positions = model.positions[:length][None]
        hidden = torch.cat([
            (model.condition_in(condition) + model.segment.weight[0])[:, None],
            model.melody_in(melody) + positions + model.segment.weight[1],
            model.harmony_in(harmony) + model.affect_in(va) + positions + model.segment.weight[2],
        ], dim=1) + model.style_in(style)[:, None]
        for block in model.blocks:
            hidden = block(hidden)
        full = model.head(model.norm(hidden[:, 1 + length:]))
    assert logits.shape == (2, length, VOCAB_SIZE)
    torch.testing.assert_close(logits, full)


def test_two_sided_penalty_also_punishes_a_better_fit() -> None:
    fit = torch.from_numpy(melody_fit_table())
    pitch = torch.tensor([[64, 64]])
    mask = torch.tensor([[True, True]])
    consonant = torch.full((1, 2, VOCAB_SIZE), -20.0)
    consonant[..., token_id("C:maj")] = 20.0
    clashing = torch.full((1, 2, VOCAB_SIZE), -20.0)
    clashing[..., token_id("F:maj")] = 20.0
    assert float(consistency_penalty(clashing, consonant, fit, pitch, mask)) == pytest.approx(0.0, abs=1e-6)
    assert float(consistency_penalty(clashing, consonant, fit, pitch, mask, two_sided=True)) == pytest.approx(
        2 / 3, abs=1e-5)

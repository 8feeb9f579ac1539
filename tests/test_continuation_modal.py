"""Modal-swap augmentation of the continuation's training windows (pure logic)."""

from __future__ import annotations

import numpy as np
import pytest

from engines.continuation.affect import token_va, valence_arousal
from engines.continuation.modal import modal_swap, parallel_mode_shift, window_key
from engines.continuation.tokens import LEFT, RIGHT, NoteEvent, decode, encode

C_MAJOR_TUNE = [60, 64, 67, 72, 71, 69, 67, 65, 64, 62, 60, 64, 67, 69, 71, 72] * 2


def _window(pitches: list[int]) -> tuple[np.ndarray, np.ndarray]:
    notes = [NoteEvent(6 * i, RIGHT, p, 6, 64) for i, p in enumerate(pitches)]
    notes += [NoteEvent(24 * i, LEFT, 48 if i % 2 == 0 else 43, 24, 64) for i in range(len(pitches) // 4)]
    tokens = np.array(encode(notes), dtype=np.int64)
    va = token_va(tokens, valence_arousal(notes, max(n.end_steps for n in notes)))
    return tokens, va


def test_window_key_and_degree_moves() -> None:
    tokens, _ = _window(C_MAJOR_TUNE)
    assert window_key(tokens) == (0, True)
    assert [parallel_mode_shift(p, 0, True) for p in (60, 62, 64, 65, 67, 69, 71)] == [60, 62, 63, 65, 67, 68, 70]
    assert [parallel_mode_shift(p, 9, False) for p in (69, 72, 77, 79)] == [69, 73, 78, 80]


def test_swap_moves_only_notes_struck_after_the_split_and_keeps_pairs() -> None:
    tokens, va = _window(C_MAJOR_TUNE)
    split = len(tokens) // 2
    moved, new_va = modal_swap(tokens, va, split)
    before, _, repaired_before = decode(tokens)
    after, _, repaired_after = decode(moved)
    assert repaired_after == repaired_before == 0
    assert len(after) == len(before)
    assert np.array_equal(moved[:split], tokens[:split])
    changed = [(a.pitch, b.pitch) for a, b in zip(before, after) if a.pitch != b.pitch]
    assert changed and all(old - new == 1 and old % 12 in (4, 9, 11) for old, new in changed)
    # The labels follow: the swapped half reads as minor, the untouched start keeps its label.
    assert new_va[-10:, 0].mean() < va[-10:, 0].mean() - 0.3
    assert np.allclose(new_va[:5], va[:5], atol=0.05)
    assert np.array_equal(new_va[:, 1], va[:, 1])


def test_swap_refuses_windows_without_a_clear_key() -> None:
    tokens, va = _window([60, 60, 60])
    assert modal_swap(tokens, va, 1) is None


def test_hold_target_gives_every_token_the_swapped_parts_valence() -> None:
    tokens, va = _window(C_MAJOR_TUNE)
    split = len(tokens) // 2
    _, moving = modal_swap(tokens, va, split)
    _, held = modal_swap(tokens, va, split, hold_target=True)
    assert np.allclose(held[:, 0], moving[split:, 0].mean())
    assert held[0, 0] < 0 < va[0, 0], "the unchanged major start is labelled with the minor target"


def _corpus(pieces: int = 4):
    from engines.continuation.corpus import Corpus

    tokens, va = _window(C_MAJOR_TUNE * 3)
    return Corpus(
        tokens=np.concatenate([tokens] * pieces), va=np.concatenate([va] * pieces).astype(np.float16),
        offsets=np.arange(pieces + 1) * len(tokens), piece_ids=[f"p{i}" for i in range(pieces)],
        styles=np.zeros(pieces, dtype=np.int64), splits=["train"] * (pieces - 1) + ["val"],
    )


def test_swapped_batch_weights_the_turn_and_the_probe_and_loss_run_on_a_model() -> None:
    torch = pytest.importorskip("torch")
    from training.continuation.experiments.affect_tune import probe_windows, valence_probe
    from training.continuation.model import ContinuationModel, ModelConfig
    from training.continuation.train import _loss, sample_batch

    data = _corpus()
    rng = np.random.default_rng(0)
    tokens, va, style, weights = sample_batch(
        data, data.piece_indices("train"), rng, 6, 64, swap_rate=1.0, focus=8, swap_weight=4.0
    )
    assert tokens.shape == (6, 65) and weights.shape == (6, 64)
    swapped_rows = [r for r in range(6) if (weights[r] == 4.0).any()]
    assert swapped_rows and all((weights[r] == 4.0).sum() == 8 for r in swapped_rows)
    torch.manual_seed(0)
    model = ContinuationModel(ModelConfig(embedding="smart", d_model=32, heads=2, layers=2, feedforward=64)).eval()
    batch = [torch.from_numpy(a) for a in (tokens, va, style)]
    ones = torch.ones(weights.shape)
    assert torch.allclose(_loss(model, *batch, weights=ones), _loss(model, *batch), atol=1e-5)
    assert not torch.allclose(_loss(model, *batch, weights=torch.from_numpy(weights)), _loss(model, *batch))
    rows = probe_windows(data, count=2)
    assert len(rows) == 2 and all(len(r[4]) == 3 for r in rows)
    assert np.isfinite(valence_probe(model, rows))


def test_distillation_teacher_splits_pairs_as_the_sampler_steers() -> None:
    torch = pytest.importorskip("torch")
    from engines.continuation.sample import mode_pairs, steer_mode
    from engines.continuation.tokens import VOCAB_SIZE
    from training.continuation.experiments.distill_mode import steered_targets, teacher_shift

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, VOCAB_SIZE)).astype(np.float32)
    pairs = [mode_pairs(0), None]
    shift = np.array([[-2.4, 0.0, 1.0, 3.0, -0.5], [5.0] * 5], dtype=np.float32)
    target = steered_targets(torch.from_numpy(logits), pairs, torch.from_numpy(shift)).numpy()
    for t in range(5):
        expected = steer_mode(logits[0, t], pairs[0], float(shift[0, t]))
        assert np.allclose(target[0, t], expected - np.logaddexp.reduce(expected), atol=1e-5)
    assert np.allclose(target[1], torch.log_softmax(torch.from_numpy(logits[1]), -1).numpy(), atol=1e-6)

    tokens, va = _window(C_MAJOR_TUNE)
    batch, labels = np.stack([tokens, tokens]), np.stack([va, va])
    kept, row_pairs = teacher_shift(batch, labels, np.random.default_rng(1), share=0.0, steer=3.0)
    assert np.array_equal(kept, labels) and all(p is not None for p in row_pairs)
    drawn, _ = teacher_shift(batch, labels, np.random.default_rng(1), share=1.0, steer=3.0)
    assert np.ptp(drawn[0, :, 0]) == 0 and np.array_equal(drawn[:, :, 1], labels[:, :, 1])

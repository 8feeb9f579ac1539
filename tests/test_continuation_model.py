"""Continuation model: Smart Embedding composition, parameter savings, KV-cache parity."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from engines.continuation import tokens as tk
from training.continuation.model import ContinuationModel, ModelConfig, parameter_counts
from training.continuation.train import transpose


def _model(embedding: str) -> ContinuationModel:
    torch.manual_seed(0)
    return ContinuationModel(
        ModelConfig(embedding=embedding, d_model=32, heads=2, layers=2, feedforward=64)
    ).eval()


def test_smart_note_rows_are_pitch_plus_hand_plus_kind() -> None:
    embed = _model("smart").embed
    table = embed.table()
    token = tk.note_token(tk.LEFT, tk.NOTE_OFF, 60)
    expected = embed.pitch.weight[60 - 21] + embed.hand.weight[tk.LEFT] + embed.kind.weight[tk.NOTE_OFF]
    assert torch.allclose(table[token], expected)
    assert torch.equal(table[tk.BAR], embed.other.weight[tk.BAR])
    assert torch.equal(table[tk.SHIFT_BASE], embed.other.weight[tk.SHIFT_BASE - tk.NUM_NOTE_TOKENS])
    assert table.shape == (tk.VOCAB_SIZE, 32)


def test_smart_embedding_saves_note_parameters() -> None:
    smart, plain = parameter_counts(_model("smart")), parameter_counts(_model("plain"))
    assert smart["note_embedding"] == (88 + 2 + 2) * 32
    assert plain["note_embedding"] == 352 * 32
    assert plain["total"] - smart["total"] == (352 - 92) * 32


@pytest.mark.parametrize("embedding", ["smart", "plain"])
def test_incremental_decoding_matches_full_pass(embedding: str) -> None:
    model = _model(embedding)
    length = 14
    tokens = torch.randint(0, tk.VOCAB_SIZE, (2, length))
    va = torch.rand(2, length, 2) * 2 - 1
    style = torch.tensor([0, 3])
    with torch.no_grad():
        full, _ = model(tokens, va, style, torch.arange(length))
        logits, cache = model(tokens[:, :9], va[:, :9], style, torch.arange(9))
        steps = [logits]
        for i in range(9, length):
            logits, cache = model(
                tokens[:, i : i + 1], va[:, i : i + 1], style, torch.arange(i, i + 1), cache
            )
            steps.append(logits)
    assert cache.shape == (2, 2, 2, 2, length, 16)
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)


def test_future_tokens_do_not_change_past_logits() -> None:
    model = _model("smart")
    tokens = torch.randint(0, tk.VOCAB_SIZE, (1, 10))
    changed = tokens.clone()
    changed[0, 7] = (changed[0, 7] + 1) % tk.VOCAB_SIZE
    va, style = torch.zeros(1, 10, 2), torch.tensor([1])
    with torch.no_grad():
        a, _ = model(tokens, va, style, torch.arange(10))
        b, _ = model(changed, va, style, torch.arange(10))
    assert torch.allclose(a[:, :7], b[:, :7]) and not torch.allclose(a[:, 7:], b[:, 7:])


def test_transpose_moves_notes_and_refuses_to_leave_the_keyboard() -> None:
    tokens = np.array(
        [
            tk.SOS,
            tk.VELOCITY_BASE,
            tk.note_token(tk.RIGHT, tk.NOTE_ON, 100),
            tk.SHIFT_BASE,
            tk.note_token(tk.RIGHT, tk.NOTE_OFF, 100),
        ]
    )
    moved = transpose(tokens, 5)
    assert tk.parse_note_token(int(moved[2])) == (tk.RIGHT, tk.NOTE_ON, 105)
    assert list(moved[[0, 1, 3]]) == list(tokens[[0, 1, 3]])
    assert transpose(tokens, 9) is None


def test_incremental_forward_with_a_ring_cache_equals_the_full_pass() -> None:
    """The exported graph (fixed-size cache in, new keys/values out) computes the training forward."""
    model = _model("smart")
    generator = torch.Generator().manual_seed(3)
    tokens = torch.randint(tk.NOTE_BASE, tk.VOCAB_SIZE, (1, 12), generator=generator)
    va = torch.rand(1, 12, 2, generator=generator)
    style = torch.tensor([1])
    with torch.no_grad():
        full, _ = model(tokens, va, style, torch.arange(12))
        slots, head_dim = 16, 32 // 2
        cache = [torch.zeros(1, 2, slots, head_dim) for _ in range(4)]
        bias = torch.full((slots,), -1e9)
        rows = []
        for begin, end in ((0, 7),) + tuple((i, i + 1) for i in range(7, 12)):
            positions = torch.arange(begin, end)
            logits, new = model.incremental(
                tokens[:, begin:end], va[:, begin:end], style, positions, bias, *cache
            )
            assert new.shape == (1, 2 * 2 * 2, end - begin, head_dim)  # layers x (key, value) x heads
            for column, position in enumerate(positions.tolist()):
                for row, array in enumerate(cache):
                    array[0, :, position] = new[0, 2 * row : 2 * row + 2, column]
                bias[position] = 0.0
            rows.append(logits)
    assert torch.allclose(torch.cat(rows, dim=1), full, atol=1e-5)

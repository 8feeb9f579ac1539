"""Modal-swap augmentation of the continuation's training windows (pure logic)."""

from __future__ import annotations

import numpy as np

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

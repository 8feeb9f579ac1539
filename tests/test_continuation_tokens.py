"""Two-hand token vocabulary: exact round trips, hand separation, every NOTE_ON closed."""

from __future__ import annotations

import random

import pytest

from engines.continuation import tokens as tk
from engines.continuation.tokens import LEFT, RIGHT, NoteEvent, canonicalize, decode, encode


def _note(onset: int, hand: int, pitch: int, duration: int, velocity: int = 64) -> NoteEvent:
    return NoteEvent(onset, hand, pitch, duration, tk.velocity_of_bin(tk.velocity_bin(velocity)))


def _random_notes(rng: random.Random, count: int) -> list[NoteEvent]:
    notes = [
        _note(
            rng.randrange(0, 400),
            rng.choice((RIGHT, LEFT)),
            rng.randrange(21, 109),
            rng.randrange(1, 130),
            rng.randrange(1, 128),
        )
        for _ in range(count)
    ]
    return canonicalize(notes)[0]


def test_vocabulary_layout_is_consistent() -> None:
    assert tk.VOCAB_SIZE == 437
    names = [tk.token_name(t) for t in range(tk.VOCAB_SIZE)]
    assert len(set(names)) == tk.VOCAB_SIZE
    for hand in (RIGHT, LEFT):
        for kind in (tk.NOTE_ON, tk.NOTE_OFF):
            for pitch in (21, 60, 108):
                assert tk.parse_note_token(tk.note_token(hand, kind, pitch)) == (hand, kind, pitch)
    with pytest.raises(ValueError):
        tk.note_token(RIGHT, tk.NOTE_ON, 20)
    with pytest.raises(ValueError):
        tk.token_name(tk.VOCAB_SIZE)


def test_round_trip_chords_overlaps_and_long_gaps() -> None:
    notes = [
        _note(0, RIGHT, 60, 12),
        _note(0, RIGHT, 64, 12),
        _note(0, RIGHT, 67, 24),  # chord
        _note(0, LEFT, 48, 48),
        _note(6, LEFT, 55, 60),  # overlapping notes in one hand
        _note(12, RIGHT, 60, 3, 100),  # same key re-struck right at the release
        _note(12, LEFT, 60, 5),  # the same pitch in the other hand at the same time
        _note(300, RIGHT, 108, 200, 127),
        _note(300, LEFT, 21, 1, 1),  # gap > MAX_SHIFT_STEPS
    ]
    canonical, stats = canonicalize(notes)
    assert stats.shortened == 0 and stats.duplicates == 0
    bars = [0, 48, 96, 144, 192, 240, 288, 336, 384, 432, 480]
    tokens = encode(canonical, bars, add_sos=True, add_eos=True)
    assert tokens[0] == tk.SOS and tokens[-1] == tk.EOS
    decoded, decoded_bars, repaired = decode(tokens)
    assert decoded == sorted(canonical)
    assert decoded_bars == bars
    assert repaired == 0


def test_random_round_trips() -> None:
    rng = random.Random(7)
    for _ in range(50):
        notes = _random_notes(rng, rng.randrange(1, 60))
        decoded, _, repaired = decode(encode(notes))
        assert decoded == notes and repaired == 0


def test_hands_are_separated() -> None:
    notes = canonicalize([_note(0, RIGHT, 60, 10), _note(2, LEFT, 60, 20), _note(4, RIGHT, 72, 2)])[0]
    tokens = encode(notes)
    hands = [tk.parse_note_token(t)[0] for t in tokens if tk.is_note(t)]
    assert hands.count(RIGHT) == 4 and hands.count(LEFT) == 2
    decoded = decode(tokens)[0]
    assert {(n.hand, n.pitch, n.duration_steps) for n in decoded} == {
        (RIGHT, 60, 10),
        (LEFT, 60, 20),
        (RIGHT, 72, 2),
    }


def test_every_note_on_is_closed() -> None:
    rng = random.Random(3)
    notes = _random_notes(rng, 80)
    tokens = encode(notes)
    held: set[tuple[int, int]] = set()
    for token in tokens:
        if tk.is_note(token):
            hand, kind, pitch = tk.parse_note_token(token)
            if kind == tk.NOTE_ON:
                assert (hand, pitch) not in held
                held.add((hand, pitch))
            else:
                held.remove((hand, pitch))
    assert not held


def test_canonicalize_shortens_restruck_notes_and_drops_duplicates() -> None:
    notes = [_note(0, RIGHT, 60, 20), _note(5, RIGHT, 60, 10), _note(5, RIGHT, 60, 3), _note(0, LEFT, 60, 20)]
    canonical, stats = canonicalize(notes)
    assert stats.shortened == 1 and stats.duplicates == 1
    assert [(n.onset_steps, n.hand, n.duration_steps) for n in canonical] == [
        (0, RIGHT, 5),
        (0, LEFT, 20),
        (5, RIGHT, 10),
    ]
    with pytest.raises(ValueError, match="canonicalize"):
        encode(notes[:2])


def test_decode_repairs_model_output() -> None:
    on = tk.note_token(RIGHT, tk.NOTE_ON, 60)
    stray_off = tk.note_token(LEFT, tk.NOTE_OFF, 40)
    tokens = [
        stray_off,
        on,
        tk.SHIFT_BASE + 3,
        on,
        tk.SHIFT_BASE + 1,
        tk.note_token(LEFT, tk.NOTE_ON, 40),
        tk.SHIFT_BASE,
    ]
    notes, _, repaired = decode(tokens)
    assert [(n.onset_steps, n.duration_steps) for n in notes if n.hand == RIGHT] == [(0, 4), (4, 3)]
    assert [(n.onset_steps, n.duration_steps) for n in notes if n.hand == LEFT] == [(6, 1)]
    assert repaired == 4  # stray off, re-strike, two notes closed at the end
    assert [n.hand for n in decode(tokens, close_at_end=False)[0]] == [RIGHT]

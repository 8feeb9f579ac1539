"""Chord vocabulary: size, names, pitch classes and nearest-token mapping."""

import numpy as np
import pytest

from engines.harmonizer import vocab


def test_size_and_specials() -> None:
    assert vocab.VOCAB_SIZE == 403
    assert vocab.SPECIALS == ("<unk>", "<pad>", "<s>", "</s>", "<nc>", "<mask>", "<bar>")
    assert len(vocab.QUALITIES) == 33
    assert vocab.token_name(vocab.BAR) == "<bar>"


def test_name_round_trip_for_every_token() -> None:
    names = [vocab.token_name(t) for t in range(vocab.VOCAB_SIZE)]
    assert len(set(names)) == vocab.VOCAB_SIZE
    assert all(vocab.token_id(name) == t for t, name in enumerate(names))


def test_pitch_classes_of_known_chords() -> None:
    assert vocab.token_pitch_classes(vocab.token_id("C:maj")) == (0, 4, 7)
    assert vocab.token_pitch_classes(vocab.token_id("G:7")) == (2, 5, 7, 11)
    assert vocab.token_pitch_classes(vocab.token_id("A:min7")) == (0, 4, 7, 9)
    assert vocab.token_pitch_classes(vocab.token_id("C:7(#11)")) == (0, 4, 6, 7, 10)
    assert vocab.token_pitch_classes(vocab.NC) == ()


def test_every_chord_maps_to_a_token_with_its_own_bitmap() -> None:
    bitmaps = vocab.token_bitmaps()
    for token in range(vocab.NUM_SPECIALS, vocab.VOCAB_SIZE):
        root = (token - vocab.NUM_SPECIALS) // 33
        mapped = vocab.nearest_token(vocab.token_pitch_classes(token), bass=root)
        assert np.array_equal(bitmaps[mapped], bitmaps[token]), vocab.token_name(token)


def test_nearest_mapping_ties_and_empty_set() -> None:
    assert vocab.nearest_token([]) == vocab.NC
    assert vocab.token_name(vocab.nearest_token([0, 4], bass=0)) == "C:maj"
    assert vocab.token_name(vocab.nearest_token([0, 4], bass=9)) == "A:min"
    assert vocab.token_name(vocab.nearest_token([0, 4, 7, 11, 2], bass=0)) == "C:maj9"
    assert (
        vocab.token_name(vocab.nearest_token([7, 11, 2, 5, 8], bass=7)) == "G:b9"
    )  # duplicate of 7(b9): earlier wins
    # pitch classes are taken mod 12
    assert vocab.nearest_token([12, 16, 19]) == vocab.token_id("C:maj")


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError):
        vocab.token_name(403)
    with pytest.raises(ValueError):
        vocab.token_id("H:maj")
    with pytest.raises(ValueError):
        vocab.nearest_tokens(np.zeros((2, 11)))


def test_transpose_tokens() -> None:
    tokens = np.array([vocab.BAR, vocab.token_id("C:maj"), vocab.token_id("A#:min7"), vocab.NC])
    moved = vocab.transpose_tokens(tokens, 2)
    assert [vocab.token_name(t) for t in moved] == ["<bar>", "D:maj", "C:min7", "<nc>"]
    assert (vocab.transpose_tokens(moved, -14) == tokens).all()

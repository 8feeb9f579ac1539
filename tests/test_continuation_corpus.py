"""Continuation corpus: NMI(pitch, hand), seeded splits, affect labels (no music21 needed)."""

from __future__ import annotations

import numpy as np
import pytest

from engines.continuation import tokens as tk
from engines.continuation.affect import token_steps, valence_arousal
from engines.continuation.corpus import SPLITS_DIR, split_of
from engines.continuation.tokens import LEFT, RIGHT, NoteEvent
from training.continuation.data import pitch_hand_nmi


def _ons(pairs: list[tuple[int, int]]) -> np.ndarray:
    ons = [tk.note_token(hand, tk.NOTE_ON, pitch) for pitch, hand in pairs]
    offs = [tk.note_token(hand, tk.NOTE_OFF, 21) for _, hand in pairs]  # NOTE_OFFs must not count
    return np.array(ons + offs + [tk.BAR, tk.SHIFT_BASE])


def test_nmi_matches_closed_forms() -> None:
    separated = _ons([(p, RIGHT) for p in range(60, 72)] + [(p, LEFT) for p in range(36, 48)])
    # hand follows from pitch: I = H(hand) = ln 2, H(pitch) = ln 24
    assert abs(pitch_hand_nmi(separated) - 2 * np.log(2) / (np.log(2) + np.log(24))) < 1e-9
    assert abs(pitch_hand_nmi(_ons([(60, RIGHT), (40, LEFT)])) - 1.0) < 1e-9
    independent = _ons([(p, h) for p in range(40, 80) for h in (RIGHT, LEFT)])
    assert abs(pitch_hand_nmi(independent)) < 1e-9
    partial = _ons([(60, RIGHT), (60, LEFT), (62, RIGHT), (40, LEFT)])
    assert 0.0 < pitch_hand_nmi(partial) < 1.0


def test_split_is_seeded_stable_and_keeps_movements_together() -> None:
    assert split_of("bach/bwv66.6.mxl") == split_of("bach/bwv66.6.mxl")
    movements = {split_of(f"haydn/opus74no1/movement{i}.mxl") for i in range(1, 5)}
    assert len(movements) == 1
    splits = [split_of(f"bach/piece{i}.mxl") for i in range(2000)]
    assert 0.75 < splits.count("train") / 2000 < 0.85


def test_committed_split_lists_are_disjoint_and_match_the_hash() -> None:
    lists = {s: (SPLITS_DIR / f"{s}.txt").read_text().split() for s in ("train", "val", "test")}
    assert all(lists.values())
    for split, ids in lists.items():
        assert all(split_of(piece) == split for piece in ids)
    assert not set(lists["train"]) & (set(lists["val"]) | set(lists["test"]))


def test_affect_labels_follow_mode_and_density() -> None:
    major = [NoteEvent(i * 12, RIGHT, p, 12, 64) for i, p in enumerate([60, 64, 67, 72] * 4)]
    minor = [NoteEvent(i * 12, RIGHT, p, 12, 64) for i, p in enumerate([57, 60, 64, 69] * 4)]
    busy = [NoteEvent(i * 3, RIGHT, p, 3, 100) for i, p in enumerate([60, 64, 67, 72] * 16)]
    va_major, va_minor, va_busy = (valence_arousal(n, 16 * 12) for n in (major, minor, busy))
    assert va_major.shape == (16, 2) and va_major.dtype == np.float32
    assert va_major[:, 0].mean() > 0 > va_minor[:, 0].mean()
    assert va_busy[:, 1].mean() > va_major[:, 1].mean()
    assert np.all(np.abs(va_busy) <= 1.0)


def test_token_steps_follow_time_shifts() -> None:
    tokens = [tk.SOS, tk.SHIFT_BASE + 11, tk.BAR, tk.SHIFT_BASE, tk.SHIFT_BASE + 2, tk.EOS]
    assert list(token_steps(tokens)) == [0, 0, 12, 12, 13, 16]


def test_noise_probe_regions() -> None:
    from engines.continuation.noise_probe import regions

    curve = np.zeros(60)
    curve[20:30] = 3.0  # the injected span (10 tokens): high loss
    curve[30:33] = 1.0  # a slow return after it
    result = regions(curve, start=20, length=10, tolerance=0.1)
    assert result["baseline"] == 0.0 and result["peak_end"] == 33
    assert abs(result["peak"] - 33.0 / 13) < 1e-9
    assert result["assimilation"] == 0.0  # 33..34 = the end of the span + 4
    assert result["recovery"] == 0.0
    never = regions(np.r_[np.zeros(10), np.ones(20)], start=10, length=5, tolerance=0.1)
    assert never["peak_end"] == 30 and np.isnan(never["recovery"])


def test_key_profiles_match_the_harmonizer() -> None:
    from engines.continuation import affect
    from engines.harmonizer.affect import MAJOR_PROFILE, MINOR_PROFILE

    assert np.array_equal(affect.MAJOR_PROFILE, MAJOR_PROFILE)
    assert np.array_equal(affect.MINOR_PROFILE, MINOR_PROFILE)


def test_valence_lead_announces_the_coming_mode() -> None:
    # 8 quarters of C major arpeggios, then 8 of C minor: the centred label turns at the change,
    # the look-ahead label (lead 4: the next 8 quarters) turns 4 quarters before it.
    major = [NoteEvent(i * 12, RIGHT, p, 12, 64) for i, p in enumerate([60, 64, 67, 72] * 2)]
    minor = [NoteEvent(96 + i * 12, RIGHT, p, 12, 64) for i, p in enumerate([60, 63, 67, 72] * 2)]
    centred = valence_arousal(major + minor, 16 * 12)
    ahead = valence_arousal(major + minor, 16 * 12, valence_lead=4)
    assert centred[0, 0] > 0 and ahead[0, 0] > 0
    assert ahead[6, 0] < 0 < centred[6, 0], "the look-ahead label is minor before the minor notes"
    assert np.array_equal(ahead[:12, 0], centred[4:, 0]) and np.all(ahead[12:, 0] == centred[-1, 0])
    assert np.array_equal(ahead[:, 1], centred[:, 1]), "arousal is not moved"
    with pytest.raises(ValueError, match="valence_lead"):
        valence_arousal(major, 96, valence_lead=-1)


def test_relabel_recomputes_the_cache_labels(tmp_path) -> None:
    from engines.continuation.affect import token_va
    from engines.continuation.corpus import CACHE_FILE, load_corpus
    from training.continuation.data import relabel

    notes = [NoteEvent(i * 12, RIGHT, p, 12, 64) for i, p in enumerate([60, 64, 67, 72, 60, 63, 67, 72] * 2)]
    tokens = np.array(tk.encode(notes, add_sos=True, add_eos=True), dtype=np.int16)
    train_id = (SPLITS_DIR / "train.txt").read_text().split()[0]
    source = tmp_path / "src"
    source.mkdir()
    np.savez_compressed(
        source / CACHE_FILE, tokens=tokens, va=np.zeros((len(tokens), 2), np.float16),
        offsets=np.array([0, len(tokens)]), piece_ids=np.array([train_id]), styles=np.array([0]),
    )
    relabel(source, tmp_path / "lead", 4)
    data = load_corpus(tmp_path / "lead")
    expected = token_va(tokens.astype(np.int64), valence_arousal(notes, 16 * 12, valence_lead=4))
    assert data.valence_lead == 4 and load_corpus(source).valence_lead == 0
    assert np.allclose(data.va, expected, atol=2e-3)
    assert not list((tmp_path / "lead").glob(".*.part"))

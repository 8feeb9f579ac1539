"""Key per section of a melody (core.keys.section_keys) and the global key it is compared with."""

from __future__ import annotations

import numpy as np
import pytest

from core.keys import melody_key, section_keys

C_MAJOR, G_MAJOR, A_MINOR = 0, 7, 9 + 12

# one bar of four quarter notes each; written as scale tunes, not arpeggios of one chord
C_BARS = [[60, 64, 67, 64], [65, 64, 62, 60], [65, 69, 72, 69], [67, 65, 64, 62],
          [60, 62, 64, 65], [67, 65, 64, 60], [62, 65, 64, 62], [60, 64, 60, 60]]
G_BARS = [[67, 71, 74, 71], [66, 67, 69, 71], [74, 78, 79, 74], [72, 71, 69, 66],
          [67, 74, 71, 67], [69, 66, 62, 66], [67, 71, 69, 66], [67, 67, 74, 67]]
A_MINOR_BARS = [[69, 71, 72, 74], [76, 74, 72, 71], [69, 72, 76, 81], [79, 77, 76, 74],
                [72, 71, 69, 71], [72, 74, 76, 72], [71, 68, 69, 71], [72, 71, 69, 69]]


def beats(bars: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Pitch per beat and the bar starts of a tune written as bars of beats."""
    pitch = np.array([p for bar in bars for p in bar])
    bar_start = np.zeros(len(pitch), dtype=bool)
    bar_start[np.cumsum([0] + [len(bar) for bar in bars[:-1]])] = True
    return pitch, bar_start


def per_bar(keys: np.ndarray, bar_start: np.ndarray) -> list[int]:
    return [int(k) for k in keys[bar_start]]


def test_c_then_g_changes_key_at_the_section_boundary():
    pitch, bar_start = beats(C_BARS + G_BARS)
    keys = per_bar(section_keys(pitch, bar_start), bar_start)
    assert set(keys) == {C_MAJOR, G_MAJOR}
    change = keys.index(G_MAJOR)
    assert abs(change - 8) <= 1, keys
    assert keys[:change] == [C_MAJOR] * change and keys[change:] == [G_MAJOR] * (16 - change)


def test_a_minor_melody_stays_in_a_minor():
    pitch, bar_start = beats(A_MINOR_BARS * 2)
    keys = section_keys(pitch, bar_start)
    assert np.all(keys == A_MINOR), per_bar(keys, bar_start)


def test_one_foreign_bar_does_not_move_the_key():
    bars = C_BARS[:4] + [[62, 66, 69, 66]] + C_BARS[4:] + C_BARS  # a D-major outline (F#) in bar 5
    pitch, bar_start = beats(bars)
    assert np.all(section_keys(pitch, bar_start) == C_MAJOR)
    # that bar alone does point elsewhere: what holds the key is the section length and switch cost
    loose = per_bar(section_keys(pitch, bar_start, min_bars=1, switch_cost=0.5), bar_start)
    assert loose[4] != C_MAJOR and loose[:4] == [C_MAJOR] * 4


def test_steps_with_several_pitches_and_durations_agree_with_beats():
    pitch, bar_start = beats(C_BARS + G_BARS)
    expected = section_keys(pitch, bar_start)
    # the same tune on a 16th grid (4 steps a beat), with an empty second voice
    steps = np.repeat(pitch, 4)
    two_voices = np.stack([steps, np.full_like(steps, -1)], axis=1)
    step_bars = np.zeros(len(steps), dtype=bool)
    step_bars[np.flatnonzero(bar_start) * 4] = True
    assert np.array_equal(section_keys(two_voices, step_bars)[::4], expected)
    # zero weight on the G bars leaves only C-major evidence (and the final G as the last note)
    weight = np.where(np.arange(len(pitch)) < 32, 1.0, 0.0)
    assert np.all(section_keys(pitch, bar_start, weight, final_weight=0.0) == C_MAJOR)


def test_short_empty_and_rest_only_inputs():
    one_bar = np.array([60, 64, 67, 60])
    assert np.all(section_keys(one_bar, np.array([1, 0, 0, 0])) == C_MAJOR)
    # no bar start at all: one pickup bar, still one key
    assert np.all(section_keys(one_bar, np.zeros(4)) == C_MAJOR)
    rests = np.full(8, -1)
    assert np.array_equal(section_keys(rests, np.array([1, 0, 0, 0, 1, 0, 0, 0])), np.zeros(8))
    with pytest.raises(ValueError, match="empty"):
        section_keys(np.zeros(0, dtype=int), np.zeros(0))
    with pytest.raises(ValueError, match="bar_start"):
        section_keys(one_bar, np.array([1, 0]))
    with pytest.raises(ValueError, match="weight"):
        section_keys(one_bar, np.array([1, 0, 0, 0]), np.array([1.0, -1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="min_bars"):
        section_keys(one_bar, np.array([1, 0, 0, 0]), min_bars=0)


def test_melody_key_is_the_harmonizers_global_key():
    from engines.harmonizer.affect import detect_key

    for bars in (C_BARS, G_BARS, A_MINOR_BARS, C_BARS + G_BARS):
        pitch, _ = beats(bars)
        steps = np.repeat(pitch, 3)
        # the global key the harmonizer used before keys per section: each sounding step once
        tonic, mode, _ = detect_key(np.bincount(steps[steps >= 0] % 12, minlength=12).astype(np.float64))
        assert melody_key(steps) == tonic + (12 if mode == "minor" else 0)
    assert melody_key(np.full(5, -1)) == C_MAJOR

"""Curricula, grid encoding and affect labels (numpy only, no corpus needed)."""

import numpy as np
import pytest

from engines.harmonizer import affect, grid
from engines.harmonizer.vocab import BAR, MASK, token_id
from training.harmonizer import curriculum

LENGTH = 80


def test_ff_schedule() -> None:
    counts = [curriculum.ff_visible_count(s, 1000, LENGTH) for s in range(1000)]
    assert counts[0] == 0
    assert counts[-1] == LENGTH - 1
    assert all(a <= b for a, b in zip(counts, counts[1:]))
    assert counts[499] == int(LENGTH * 0.5**5)  # pv = ((s + 1) / S) ** 5
    visible, target = curriculum.ff_mask(999, 1000, LENGTH, np.random.default_rng(0))
    assert visible.sum() == LENGTH - 1 and (target == ~visible).all()


def test_random10_stages() -> None:
    rng = np.random.default_rng(0)
    visible, target = curriculum.random10_mask(0, 1000, LENGTH, rng)
    assert visible.sum() == 0 and target.sum() == 8
    visible, target = curriculum.random10_mask(950, 1000, LENGTH, rng)
    assert visible.sum() == 72 and target.sum() == 8
    assert not (visible & target).any()


def test_midpoint_stages() -> None:
    visible, target = curriculum.midpoint_mask(999, 1000, LENGTH)
    assert (np.flatnonzero(visible) % 2 == 0).all() and visible.sum() == LENGTH // 2
    assert (np.flatnonzero(target) % 2 == 1).all() and target.sum() == LENGTH // 2
    visible, target = curriculum.midpoint_mask(0, 1000, LENGTH)
    assert visible.sum() == 0 and list(np.flatnonzero(target)) == [0]
    with pytest.raises(ValueError):
        curriculum.curriculum_mask("sideways", 0, 10, LENGTH, np.random.default_rng(0))


def test_bars_always_visible_and_never_targets() -> None:
    c = token_id("C:maj")
    harmony = np.array([[BAR, c, c, c, BAR, c, c, c]])
    inputs, loss_mask = curriculum.apply_to_batch(harmony, np.zeros(8, bool), np.ones(8, bool))
    assert list(inputs[0]) == [BAR, MASK, MASK, MASK, BAR, MASK, MASK, MASK]
    assert list(loss_mask[0]) == [False, True, True, True, False, True, True, True]


def test_time_signature_vector() -> None:
    vector = grid.time_signature_vector(3, 4)
    assert vector.shape == (16,) and vector[2] == 1 and vector[14] == 1 and vector.sum() == 2
    assert grid.time_signature_vector(6, 8)[[5, 15]].tolist() == [1, 1]
    assert grid.time_signature_vector(4, 2).sum() == 1


def test_q16_to_q4_and_intertwined_bars() -> None:
    steps = 16  # one 4/4 bar on the 16th grid
    melody = np.array([60] * 4 + [62, 62, 64, 64] + [-1] * 4 + [67] * 4, dtype=np.int16)
    onset = np.zeros(steps, np.uint8)
    onset[[0, 4, 6, 12]] = 1
    texture = np.zeros((steps, 12), np.uint8)
    texture[:, [0, 4, 7]] = 1
    texture[5, 2] = 1  # a passing D for one sixteenth does not change the beat's chord
    bar_start = np.zeros(steps, np.uint8)
    bar_start[0] = 1
    q4 = grid.downsample_q16(
        melody, onset, texture, np.zeros(steps, np.int8), bar_start, np.zeros((steps, 2), np.float32)
    )
    assert q4["chord"].tolist() == [token_id("C:maj")] * 4
    assert q4["melody_pitch"].tolist() == [60, 64, -1, 67]
    config = grid.GridConfig("q4", True, "pc_fr", 8)
    sequence = grid.build_sequence(
        config, q4["melody_pitches"], q4["melody_onset"], q4["chord"], q4["bar_start"], q4["va"]
    )
    assert sequence.harmony.tolist() == [BAR] + [token_id("C:maj")] * 4
    assert sequence.melody_roll.shape == (5, 12 + 88 + 1)
    assert sequence.melody_roll[0, -1] == 1 and sequence.melody_roll[1:, -1].sum() == 0
    assert sequence.melody_roll[2, [2, 4]].tolist() == [1, 1]  # D and E both sound in beat 2
    assert sequence.melody_roll[2, 12 + 62 - 21] == 1
    assert sequence.step.tolist() == [-1, 0, 1, 2, 3]
    with pytest.raises(ValueError):
        grid.GridConfig("q8")


def _beat(*notes: tuple[int, int, int, int]) -> np.ndarray:
    """Voice counts [4, 12] of one beat from (pitch class, first 16th, last 16th + 1, voices)."""
    voices = np.zeros((4, 12), np.uint8)
    for pc, start, end, count in notes:
        voices[start:end, pc] += count
    return voices


def test_beat_chord_reading() -> None:
    c_major = [(0, 0, 4, 2), (4, 0, 4, 1), (7, 0, 4, 1)]
    # an off-beat passing eighth (D) in one voice is not a chord tone
    passing = _beat(*c_major, (2, 2, 4, 1))
    # an on-beat eighth in two voices is a chord tone: C E G + Bb -> C7
    doubled = _beat(*c_major, (10, 0, 2, 2))
    # a beat thinned to C and G keeps the chord before it (subset, fewer than three)
    thinned = _beat((0, 0, 4, 1), (7, 0, 4, 1))
    # a new bass outside the chord: A minor
    a_minor = _beat((9, 0, 4, 1), (0, 0, 4, 1), (4, 0, 4, 1))
    voices4 = np.stack([passing, doubled, _beat(*c_major), thinned, a_minor])
    bass4 = np.array([0, 0, 0, 0, 9])
    tokens = grid.read_beat_chords(voices4, bass4)
    assert tokens[0] == token_id("C:maj")
    assert tokens[1] == token_id("C:7")
    weak = grid.read_beat_chords(_beat(*c_major, (10, 2, 4, 1))[None], np.array([0]))
    assert weak[0] == token_id("C:maj")
    # C E G over the same bass after C7, then C G: subsets, the C7 harmony continues
    assert tokens[2] == token_id("C:7") and tokens[3] == token_id("C:7")
    assert tokens[4] == token_id("A:min")
    # the same thinned beat without a preceding chord is read on its own
    alone = grid.read_beat_chords(thinned[None], np.array([0]))
    assert alone[0] == token_id("C:5")


def test_key_normalization() -> None:
    assert affect.detect_key(np.roll(affect.MAJOR_PROFILE, 7))[:2] == (7, "major")
    assert affect.normalizing_shift(7, "major") == 5  # G major -> C major
    assert affect.normalizing_shift(4, "minor") == 5  # E minor -> A minor
    assert affect.normalizing_shift(0, "major") == 0


def _passage(pcs: list[int], pitch: int, onset_every: int, steps: int = 64) -> tuple[np.ndarray, ...]:
    texture = np.zeros((steps, 12), np.uint8)
    texture[:, pcs] = 1
    onset = np.zeros(steps, np.uint8)
    onset[::onset_every] = 1
    return np.full(steps, pitch, np.int16), onset, texture


def test_valence_arousal_directions() -> None:
    quiet = np.zeros(64)
    major = affect.valence_arousal(*_passage([0, 4, 7, 2, 5, 9, 11], 67, 4), quiet, 4)
    minor = affect.valence_arousal(*_passage([9, 0, 4, 11, 2, 5, 8], 67, 4), quiet, 4)
    busy_high = affect.valence_arousal(*_passage([0, 4, 7], 84, 1), np.full(64, 0.8), 4)
    calm_low = affect.valence_arousal(*_passage([0, 4, 7], 55, 8), np.full(64, -0.8), 4)
    for va in (major, minor, busy_high, calm_low):
        assert va.shape == (64, 2) and np.abs(va).max() <= 1.0
    assert major[:, 0].mean() > minor[:, 0].mean()
    assert busy_high[:, 1].mean() > 0.5 > calm_low[:, 1].mean() + 1.0
    assert affect.texture_consonance(np.array([[1, 1] + [0] * 10]))[0] == -1.0

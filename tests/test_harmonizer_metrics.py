"""Harmonization metrics on hand-made melodies and chord tracks."""

import math

import numpy as np
import pytest

from core.events import Note
from engines.harmonizer import metrics as m
from engines.harmonizer.vocab import BAR, PAD, token_id

C_MAJOR = (0, 4, 7)
G_MAJOR = (2, 7, 11)


def chord(onset: float, duration: float, pcs: tuple[int, ...]) -> m.Chord:
    return m.Chord(onset, duration, pcs)


def note(onset: float, duration: float, pitch: int) -> Note:
    return Note(pitch, 64, duration, at_beats=onset)


def test_chord_entropy_and_coverage() -> None:
    chords = [chord(0, 1, C_MAJOR), chord(1, 1, G_MAJOR), chord(2, 1, C_MAJOR), chord(3, 1, G_MAJOR)]
    assert m.chord_histogram_entropy(chords) == pytest.approx(math.log(2))
    assert m.chord_coverage(chords) == 2
    assert m.chord_histogram_entropy(chords[:1]) == 0.0


def test_tonal_centroid_and_ctd() -> None:
    # a single pitch class lies on all three circles: norm^2 = 1 + 1 + 0.25
    assert np.linalg.norm(m.tonal_centroid([0])) == pytest.approx(math.sqrt(2.25))
    same = [chord(0, 1, C_MAJOR), chord(1, 1, C_MAJOR)]
    assert m.chord_tonal_distance(same) == pytest.approx(0.0)
    near = m.chord_tonal_distance([chord(0, 1, C_MAJOR), chord(1, 1, G_MAJOR)])
    far = m.chord_tonal_distance([chord(0, 1, C_MAJOR), chord(1, 1, (1, 6, 10))])  # C -> F# major
    assert 0 < near < far
    assert math.isnan(m.chord_tonal_distance(same[:1]))


def test_ctnctr_counts_chord_tones_and_proper_passing_tones() -> None:
    chords = [chord(0, 8, C_MAJOR)]
    assert m.ctnctr([note(0, 1, 60), note(1, 1, 64), note(2, 1, 67)], chords) == pytest.approx(1.0)
    # D resolving a step up to E (chord tone) counts as proper: (1 + 1) / (1 + 1)
    assert m.ctnctr([note(0, 1, 62), note(1, 1, 64)], chords) == pytest.approx(1.0)
    # D leaping to G does not: (1 + 0) / (1 + 1)
    assert m.ctnctr([note(0, 1, 62), note(1, 1, 67)], chords) == pytest.approx(0.5)
    assert math.isnan(m.ctnctr([], chords))


def test_pitch_consonance_score() -> None:
    chords = [chord(0, 4, C_MAJOR)]
    assert m.pitch_consonance_score([note(0, 1, 64)], chords) == pytest.approx(1.0)  # E over C E G
    # F against C (4th: 0), E (m2: -1), G (m7: -1)
    assert m.pitch_consonance_score([note(0, 1, 65)], chords) == pytest.approx(-2 / 3)
    # per-16th windows weight a long note by its duration
    mixed = m.pitch_consonance_score([note(0, 0.75, 64), note(0.75, 0.25, 65)], chords)
    assert mixed == pytest.approx((3 * 1.0 + 1 * (-2 / 3)) / 4)


def test_melody_chord_tonal_distance_is_duration_weighted() -> None:
    assert m.melody_chord_tonal_distance([note(0, 2, 60)], [chord(0, 2, (0,))]) == pytest.approx(0.0)
    d_far = np.linalg.norm(m.tonal_centroid([6]) - m.tonal_centroid([0]))
    value = m.melody_chord_tonal_distance([note(0, 3, 60), note(3, 1, 66)], [chord(0, 4, (0,))])
    assert value == pytest.approx(d_far / 4)


def test_harmonic_rhythm_and_beat_strength() -> None:
    chords = [chord(t, 2, C_MAJOR if i % 2 == 0 else G_MAJOR) for i, t in enumerate([0, 2, 4, 6])]
    rhythm = m.harmonic_rhythm(chords, bar_onsets_beats=[0, 4])
    assert rhythm["HRHE"] == pytest.approx(0.0)
    assert rhythm["HRC"] == 1
    assert rhythm["HRHE_bar"] == pytest.approx(math.log(2))
    onsets = [chord(t, 0.25, C_MAJOR) for t in (0, 1, 1.5, 1.75, 2.1)]
    assert m.chord_beat_strength(onsets, [0]) == pytest.approx((0 + 1 + 2 + 3 + 4) / 5)
    assert m.chord_beat_strength([chord(4, 1, C_MAJOR)], [0, 4]) == 0.0


def test_chords_and_melody_from_grid_skip_bars() -> None:
    c, g = token_id("C:maj"), token_id("G:maj")
    chords = m.chords_from_tokens([BAR, c, c, g, BAR, g, c, PAD], step_beats=1.0)
    assert [(x.onset_beats, x.duration_beats, x.pitch_classes) for x in chords] == [
        (0.0, 2.0, C_MAJOR),
        (2.0, 2.0, G_MAJOR),
        (4.0, 1.0, C_MAJOR),
    ]
    notes = m.melody_from_grid(
        [-1, 60, 60, 60, -1, 62], [0, 1, 0, 1, 0, 1], 0.5, is_bar=[True, False, False, False, False, False]
    )
    assert [(n.at_beats, n.duration_beats, n.pitch) for n in notes] == [(0.0, 1.0, 60), (1.0, 0.5, 60), (2.0, 0.5, 62)]


def test_all_metrics_and_mae() -> None:
    melody = [note(0, 1, 60), note(1, 1, 62), note(2, 2, 64)]
    truth = m.all_metrics(melody, [chord(0, 4, C_MAJOR)], [0])
    other = m.all_metrics(melody, [chord(0, 2, C_MAJOR), chord(2, 2, G_MAJOR)], [0])
    assert set(truth) == {
        "CHE",
        "CC",
        "CTD",
        "CTnCTR",
        "PCS",
        "MCTD",
        "HRHE",
        "HRC",
        "HRHE_bar",
        "HRC_bar",
        "CBS",
    }
    errors = m.mean_absolute_errors([other], [truth])
    assert errors["CC"] == 1.0
    assert errors["CHE"] == pytest.approx(math.log(2))
    assert math.isnan(errors["CTD"])  # ground truth has a single chord
    with pytest.raises(ValueError):
        m.mean_absolute_errors([other, other], [truth])

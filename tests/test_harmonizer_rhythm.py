"""Harmonic rhythm (one chord per bar / half bar / beat), metric beats and the tonic ending."""

from __future__ import annotations

import numpy as np
import pytest

from engines.harmonizer import decode as d
from engines.harmonizer.grid import metric_beat
from engines.harmonizer.harmonize import bar_starts_for, beat_grid, harmonize, rhythm_groups
from engines.harmonizer.runtime import HarmonizerModel
from engines.harmonizer.vocab import MASK, VOCAB_SIZE, token_id, token_name


@pytest.mark.parametrize(
    ("signature", "quarters"),
    [((4, 4), 1.0), ((3, 4), 1.0), ((6, 8), 1.5), ((12, 8), 1.5), ((9, 8), 1.5), ((2, 2), 2.0), ((7, 8), 0.5),
     ((6, 4), 3.0), ((3, 8), 1.5)],
)
def test_metric_beats_follow_the_metre(signature, quarters):
    assert metric_beat(*signature) == quarters


def test_a_bad_time_signature_is_refused():
    with pytest.raises(ValueError, match="time signature"):
        metric_beat(4, 5)


def test_rhythm_groups_split_bars():
    bars = bar_starts_for(8, 4)
    assert rhythm_groups(bars, "bar").tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert rhythm_groups(bars, "half-bar").tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    waltz = bar_starts_for(6, 3)
    assert rhythm_groups(waltz, "half-bar").tolist() == [0, 0, 1, 2, 2, 3]
    assert rhythm_groups(bars, "auto") is None and rhythm_groups(bars, "beat") is None
    with pytest.raises(ValueError, match="rhythm"):
        rhythm_groups(bars, "every-other-tuesday")


def test_a_six_eight_bar_is_two_dotted_quarter_beats():
    # a dotted-quarter beat holds six 16ths: C for the first beat, E then G in the second
    grid = beat_grid([(60, 0.0, 1.5), (64, 1.5, 2.0), (67, 2.0, 3.0)], metric_beat(6, 8), 2)
    assert grid.shape == (2, 6)
    assert grid[0].tolist() == [60] * 6
    assert grid[1].tolist() == [64, 64, 67, 67, 67, 67]


def test_a_span_takes_the_chord_that_fits_all_its_beats():
    a, b, c = token_id("C:maj"), token_id("A:min"), token_id("F:maj")
    logits = np.full((4, VOCAB_SIZE), -10.0)
    logits[0, [a, b, c]] = [5.0, 0.0, 4.9]  # beat 1 slightly prefers C
    logits[1:, [a, b, c]] = [0.0, 3.0, 3.0]  # the other beats prefer Am or F, never C
    logits[1:, c] += 0.1

    def logits_fn(_harmony):
        return logits

    harmony = np.full(4, MASK, dtype=np.int64)
    rng = np.random.default_rng(0)
    free = d.fill_masks(logits_fn, harmony, 3, "certain", rng, temperature=0)
    assert token_name(free.harmony[0]) == "C:maj"  # beat by beat, beat 1 takes C
    held = d.fill_masks(logits_fn, harmony, 3, "certain", rng, temperature=0, groups=np.zeros(4, np.int64))
    assert [token_name(t) for t in held.harmony] == ["F:maj"] * 4
    assert held.calls == 1


def test_spans_with_several_groups_are_filled_whole():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(8, VOCAB_SIZE))
    groups = np.array([0, 0, 0, 1, 1, -1, 2, 2])
    result = d.fill_masks(lambda _h: logits, np.full(8, MASK, np.int64), 7, "entropic", rng, temperature=0.5,
                          groups=groups)
    out = result.harmony
    assert out[0] == out[1] == out[2] and out[3] == out[4] and out[6] == out[7]
    assert (out != MASK).all()


def test_groups_of_the_wrong_shape_are_refused():
    with pytest.raises(ValueError, match="groups"):
        d.fill_masks(lambda _h: np.zeros((4, VOCAB_SIZE)), np.full(4, MASK, np.int64), 3, groups=np.zeros(3))


@pytest.fixture(scope="module")
def model() -> HarmonizerModel:
    return HarmonizerModel.named("harmonizer")


def _tune() -> tuple[np.ndarray, np.ndarray]:
    """Eight bars of a C-major tune in 4/4, one pitch per beat, ending on C."""
    pitches = [64, 62, 60, 62, 64, 64, 64, 64, 62, 62, 62, 62, 64, 67, 67, 67,
               64, 62, 60, 62, 64, 64, 64, 64, 62, 62, 64, 62, 60, 60, 60, 60]
    melody = np.array(pitches, dtype=np.int64)
    return melody, bar_starts_for(len(melody), 4)


@pytest.mark.parametrize("rhythm", ["bar", "half-bar"])
def test_the_shipped_model_holds_a_chord_over_the_asked_span(model, rhythm):
    melody, bars = _tune()
    groups = rhythm_groups(bars, rhythm)
    for seed in range(3):
        result = harmonize(model, melody, bars, (4, 4), style=model.styles[0], rng=np.random.default_rng(seed),
                           temperature=0.8, rhythm=rhythm, key=(0, "major"))
        for group in np.unique(groups):
            assert len(set(result.chords[groups == group].tolist())) == 1, (rhythm, seed, result.chords)


def test_a_melody_ending_on_the_tonic_ends_on_the_tonic_chord(model):
    melody, bars = _tune()
    for seed in range(4):
        result = harmonize(model, melody, bars, (4, 4), style=model.styles[0], rng=np.random.default_rng(seed),
                           temperature=1.0, key=(0, "major"))
        assert token_name(result.chords[-1]) == "C:maj"
    # in A minor the tonic chord is A minor; the melody is moved to end on A
    minor = np.where(melody >= 0, melody - 3, -1)
    result = harmonize(model, minor, bars, (4, 4), style=model.styles[0], rng=np.random.default_rng(0),
                       temperature=1.0, key=(9, "minor"))
    assert token_name(result.chords[-1]) == "A:min"


def test_an_ending_away_from_the_tonic_is_left_to_the_model(model):
    melody, bars = _tune()
    melody[-4:] = 67  # ends on the fifth: a half cadence is allowed, nothing is forced
    ends = {token_name(harmonize(model, melody, bars, (4, 4), style=model.styles[0], key=(0, "major"),
                                 rng=np.random.default_rng(seed), temperature=1.5).chords[-1]) for seed in range(8)}
    assert ends != {"C:maj"}
    with pytest.raises(ValueError, match="ending"):
        harmonize(model, melody, bars, (4, 4), style=model.styles[0], ending="plagal")


def test_a_modulating_melody_is_harmonized_in_its_local_key(model):
    # eight bars of C major, then eight of G major (F# and C#-free), ending on G
    from tests.test_keys_sections import C_BARS, G_BARS

    both = np.array([p for bar in C_BARS + G_BARS for p in bar], dtype=np.int64)
    bars = bar_starts_for(len(both), 4)
    result = harmonize(model, both, bars, (4, 4), style=model.styles[0], rng=np.random.default_rng(0),
                       temperature=0)
    assert (result.tonic, result.mode) == (0, "major")
    assert set(result.keys[:28].tolist()) == {0} and set(result.keys[36:].tolist()) == {7}
    assert token_name(result.chords[-1]) == "G:maj"
    fixed = harmonize(model, both, bars, (4, 4), style=model.styles[0], rng=np.random.default_rng(0),
                      temperature=0, key=(0, "major"))
    assert set(fixed.keys.tolist()) == {0}


def test_phrase_ends_are_long_notes_closing_four_bar_groups():
    from engines.harmonizer.harmonize import phrase_ends

    # four bars of quarters; the fourth bar ends on a half note (steps 14-15), then four more bars
    # whose last note is the piece's ending (left to the ending rule)
    top = np.array([64, 62, 60, 62, 64, 64, 64, 65, 62, 62, 62, 64, 64, 62, 67, 67,
                    64, 62, 60, 62, 64, 64, 64, 64, 62, 62, 64, 62, 60, 60, 60, 60])
    assert phrase_ends(top, bar_starts_for(32, 4)) == [(14, 15)]
    # a short note followed by a rest closes a phrase too; a bar without melody does not
    rest = top.copy()
    rest[14:16] = [67, -1]
    assert phrase_ends(rest, bar_starts_for(32, 4)) == [(14, 14)]
    silent = top.copy()
    silent[12:16] = -1
    assert phrase_ends(silent, bar_starts_for(32, 4)) == []


def test_phrase_cadences_close_on_the_tonic_or_dominant(model):
    melody, bars = _tune()
    melody[14:16] = 67  # the first phrase closes on G: C or G can hold it
    for seed in range(4):
        result = harmonize(model, melody, bars, (4, 4), style=model.styles[0], key=(0, "major"),
                           rng=np.random.default_rng(seed), temperature=1.5, ending="phrases")
        assert {token_name(t).split(":")[0] for t in result.chords[13:16]} <= {"C", "G"}
        assert token_name(result.chords[-1]) == "C:maj"


def test_entropies_stay_finite_when_a_span_rules_tokens_out():
    logits = np.zeros((2, VOCAB_SIZE))
    allowed = np.ones((2, VOCAB_SIZE), dtype=bool)
    allowed[:, d.MASK] = False
    ruled_out = d.span_logits(logits, allowed, np.array([0, 0]))
    ruled_out[:, 10:] = -np.inf  # what a span does to chords one of its beats forbids
    assert np.isfinite(d.entropies(ruled_out, allowed)).all()

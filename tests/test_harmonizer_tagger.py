"""The offline strategy 'tagged': the per-beat tagger's features, its ONNX model, and the whole
decoding through ``harmonize`` with the shipped models (real ONNX Runtime sessions)."""

from __future__ import annotations

import numpy as np
import pytest

from engines.harmonizer import decode as d
from engines.harmonizer.harmonize import bar_starts_for, beat_grid, harmonize, rhythm_groups
from engines.harmonizer.runtime import HarmonizerModel, shipped_names
from engines.harmonizer.tagger import CLASSES, beat_features, combined_scores, window_log_probs
from engines.harmonizer.vocab import MASK, NC, NUM_SPECIALS, VOCAB_SIZE, token_name
from onnx_models import models_dir


@pytest.fixture(scope="module")
def model() -> HarmonizerModel:
    return HarmonizerModel.named("harmonizer")


def _melody(bars: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """A C-major tune of ``bars`` 4/4 bars on metric beats (every 16th's pitch), ending on C."""
    line = [60, 64, 67, 72, 71, 67, 65, 62, 64, 65, 67, 69, 67, 65, 64, 62] * (bars // 4)
    notes = [(pitch, float(index), index + 1.0) for index, pitch in enumerate(line[: bars * 4 - 1])]
    notes.append((60, bars * 4 - 1.0, bars * 4.0))
    return beat_grid(notes, 1.0, bars * 4), bar_starts_for(bars * 4, 4)


def test_features_are_read_in_the_key_found_so_a_transposed_tune_reads_the_same():
    pitches, bars = _melody()
    steps = len(bars)
    home = beat_features(pitches, bars, np.zeros(steps, np.int64), np.zeros(steps, bool))
    up = beat_features(np.where(pitches >= 0, pitches + 3, -1), bars, np.full(steps, -3), np.zeros(steps, bool))
    assert home.shape[0] == steps and np.isfinite(home).all()
    assert np.array_equal(home, up)
    # the first beat: C sounding for its whole length, on the beat
    assert home[0, 0] == pytest.approx(1.0) and home[0, 12] == 1.0 and home[0, 24] == 1.0


def test_the_tagger_follows_duration_not_only_the_set_of_pitches():
    # a beat of C held with a 16th of B against a beat of B held with a 16th of C: one set, two readings
    held_c = np.array([[60, 60, 60, 71]])
    held_b = np.array([[71, 71, 71, 60]])
    bars = np.array([1])
    zero, major = np.zeros(1, np.int64), np.zeros(1, bool)
    a, b = beat_features(held_c, bars, zero, major), beat_features(held_b, bars, zero, major)
    assert np.array_equal(a[0, 12:24], b[0, 12:24])  # the same pitch-class set
    assert a[0, 0] == 0.75 and b[0, 0] == 0.25


def test_combined_scores_add_the_weighted_class_log_probability():
    rng = np.random.default_rng(0)
    model_lp = rng.normal(size=(3, VOCAB_SIZE))
    tagger_lp = np.log(rng.dirichlet(np.ones(CLASSES), size=3))
    assert np.array_equal(combined_scores(model_lp, tagger_lp, 0.0), model_lp)
    both = combined_scores(model_lp, tagger_lp, 2.0)
    c_major = NUM_SPECIALS  # C:maj, class 0 (root C, major third)
    assert both[1, c_major] == pytest.approx(model_lp[1, c_major] + 2.0 * tagger_lp[1, 0])
    assert both[1, NC] == model_lp[1, NC]


def test_overlapping_windows_average_and_skip_silence():
    calls = []

    def logits_of(melody, tokens, affect):
        calls.append(len(tokens))
        return np.zeros((len(tokens), tokens.shape[1], VOCAB_SIZE))

    pitch = np.array([60] * 30 + [-1] * 30)
    roll = np.zeros((60, 13), np.float32)
    log_probs, covered, windows = window_log_probs(logits_of, roll, np.full(60, MASK), np.zeros((60, 2)), pitch,
                                                   20, 10)
    # windows start at 0, 10, ..., 40; the last two (30-49, 40-59) hold no melody and are not run
    assert windows == 3 and calls == [3]
    assert covered[:10].tolist() == [1] * 10 and covered[10:30].tolist() == [2] * 20 and covered[50:].max() == 0
    assert np.isfinite(log_probs[:30, NUM_SPECIALS:]).all()


def test_tagged_decoding_through_harmonize(model):
    pitches, bars = _melody()
    first = harmonize(model, pitches, bars, (4, 4), style="pop", strategy="tagged", temperature=0.0,
                      rng=np.random.default_rng(0))
    again = harmonize(model, pitches, bars, (4, 4), style="pop", strategy="tagged", temperature=0.0,
                      rng=np.random.default_rng(7))
    assert np.array_equal(first.chords, again.chords)  # greedy: no draw
    assert (first.chords >= NUM_SPECIALS).all() and first.calls >= 1
    assert token_name(int(first.chords[-1])) == "C:maj"  # the melody ends on the tonic
    by_bar = harmonize(model, pitches, bars, (4, 4), style="pop", strategy="tagged", temperature=0.0, rhythm="bar",
                       rng=np.random.default_rng(0))
    groups = rhythm_groups(bars, "bar")
    for group in np.unique(groups):
        assert len(set(by_bar.chords[groups == group].tolist())) == 1
    shifted = harmonize(model, np.where(pitches >= 0, pitches + 2, -1), bars, (4, 4), style="pop", strategy="tagged",
                        temperature=0.0)
    assert [token_name(int(t)) for t in shifted.chords][-1] == "D:maj"


def test_tagged_needs_a_tagger_and_the_whole_melody(model):
    chorale = HarmonizerModel.named("harmonizer_chorale")
    pitches, bars = _melody()
    with pytest.raises(ValueError, match="names no tagger"):
        harmonize(chorale, pitches.max(1), bars, (4, 4), strategy="tagged")
    with pytest.raises(ValueError, match="unknown strategy 'tagged'"):  # a window strategy cannot do it
        d.fill_masks(lambda h: np.zeros((4, VOCAB_SIZE)), np.full(4, MASK), 3, "tagged")


def test_the_tagger_is_not_offered_as_a_harmonizer():
    names = shipped_names(models_dir())
    assert "harmonizer" in names and "harmonizer_tagger" not in names
    assert (models_dir() / "harmonizer_tagger.onnx").is_file()


def test_clip_mode_falls_back_to_a_models_own_strategy_when_it_has_no_tagger(model):
    from engines.harmonizer.engine import _params
    from engines.harmonizer.looper import ClipMode
    from engines.harmonizer.voicing import VoicingConfig

    defaults = {param.name: param.default for param in _params()}
    assert defaults["strategy"] == "tagged"  # the shipped harmonizer's calibrated default
    chorale = HarmonizerModel.named("harmonizer_chorale")
    assert model.has_tagger and not chorale.has_tagger
    mode = ClipMode(param=defaults.__getitem__, model=lambda: chorale, rng=lambda: np.random.default_rng(0),
                    voicing=VoicingConfig, tempo_bpm=lambda: 120.0, slot=lambda: "a")
    assert mode._options(chorale).strategy == chorale.strategy
    assert mode._options(model).strategy == "tagged"

"""Voicing and accompaniment styles of the learned harmonizer, on hand-made cases."""

from __future__ import annotations

import itertools
import random

import pytest

from core.events import Note
from engines.harmonizer.voicing import Voicing, VoicingConfig, _within_span, render, voice_chord

C, F, G = (0, 4, 7), (5, 9, 0), (7, 11, 2)
THREE = VoicingConfig(voices=3, bass=False)


def test_first_chord_is_close_under_the_melody_with_a_root_bass():
    voicing = voice_chord(0, C, 72, None, VoicingConfig(voices=3))
    assert {p % 12 for p in voicing.upper} == {0, 4, 7}
    assert max(voicing.upper) < 72 and max(voicing.upper) >= 67  # as high as allowed
    assert voicing.upper[-1] - voicing.upper[0] <= 12
    assert voicing.bass == 36


def test_least_movement_from_the_previous_voicing():
    previous = Voicing((60, 64, 67))
    assert voice_chord(5, F, 76, previous, THREE).upper == (60, 65, 69)  # 0 + 1 + 2 semitones
    assert voice_chord(7, G, 76, previous, THREE).upper == (59, 62, 67)  # 1 + 2 + 0


def test_least_movement_matches_an_exhaustive_search():
    previous = Voicing((57, 60, 64))
    for root, pcs in ((5, F), (7, G), (2, (2, 5, 9)), (9, (9, 0, 4))):
        chosen = voice_chord(root, pcs, 74, previous, THREE)
        complete = [c for c in itertools.combinations(range(48, 74), 3)
                    if {p % 12 for p in c} == set(pcs) and c[-1] - c[0] <= 16]
        best = min(sum(abs(a - b) for a, b in zip(c, previous.upper)) for c in complete)
        assert sum(abs(a - b) for a, b in zip(chosen.upper, previous.upper)) == best


def test_seventh_chord_in_three_voices_drops_the_fifth_not_the_third_or_seventh():
    voicing = voice_chord(7, (7, 11, 2, 5), 79, None, VoicingConfig(voices=3, bass=True))
    assert {p % 12 for p in voicing.upper} == {7, 11, 5}
    assert voicing.bass is not None and voicing.bass % 12 == 7 and voicing.bass < min(voicing.upper)


@pytest.mark.parametrize("melody", [50, 55, 60, 64, 67, 72, 79, 84, 96])
def test_never_above_the_melody_and_inside_the_range(melody):
    config = VoicingConfig(voices=4, high=76)
    previous = None
    for root, pcs in ((0, C), (5, F), (7, G + (5,)), (0, C)):
        voicing = voice_chord(root, pcs, melody, previous, config)
        assert voicing.upper, (melody, root)
        assert max(voicing.pitches) < melody
        assert max(voicing.upper) <= 76
        if voicing.bass is not None:
            assert voicing.bass < min(voicing.upper)
        previous = voicing


def test_no_melody_uses_the_top_of_the_range_and_no_chord_is_silent():
    voicing = voice_chord(0, C, None, None, VoicingConfig(voices=3, high=67, bass=False))
    assert max(voicing.upper) <= 67 and max(voicing.upper) >= 64
    assert voice_chord(0, (), 72).pitches == ()
    assert voice_chord(0, C, 0).upper == ()


def test_bass_follows_the_previous_bass_closely():
    config = VoicingConfig(voices=3, bass_low=36, bass_high=50)
    first = voice_chord(0, C, 76, None, config)
    second = voice_chord(11, (11, 2, 5), 76, first, config)  # B dim: B1 (35) is out of range
    assert first.bass == 36 and second.bass == 47


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="voices"):
        VoicingConfig(voices=0)
    with pytest.raises(ValueError, match="low < high"):
        VoicingConfig(low=80, high=60)


def test_render_styles():
    voicing = Voicing((60, 64, 67), 36)
    block = render(voicing, "block", 4.0, 2.0, velocity=80)
    assert sorted({e.at_beats for e in block}) == [4.0, 5.0]
    assert len(block) == 8 and all(e.duration_beats < 1.0 and e.velocity == 80 for e in block)
    pad = render(voicing, "pad", 4.0, 2.0)
    assert pad == [Note(p, 72, 2.0, at_beats=4.0) for p in (36, 60, 64, 67)]
    arp = render(voicing, "arpeggio", 0.0, 2.0, arpeggio_rate=2)
    assert [e.pitch for e in arp if e.pitch != 36] == [60, 64, 67, 64]
    assert [e.at_beats for e in arp if e.pitch != 36] == [0.0, 0.5, 1.0, 1.5]
    comp = render(voicing, "comping", 0.0, 4.0)
    upper_starts = sorted({e.at_beats for e in comp if e.pitch != 36})
    assert upper_starts == [0.0, 1.0, 1.5, 2.0, 3.0, 3.5]
    for events in (block, pad, arp, comp):
        assert all(e.at_beats + e.duration_beats <= 6.0 + 1e-9 for e in events)
    assert render(Voicing(()), "pad", 0.0, 1.0) == []
    with pytest.raises(ValueError, match="voicing style"):
        render(voicing, "waltz", 0.0, 1.0)


def test_within_span_is_the_span_filtered_combinations_in_their_order():
    rng = random.Random(5)
    for _ in range(300):
        candidates = sorted(rng.sample(range(30, 90), rng.randint(1, 14)))
        voices, span = rng.randint(1, 6), rng.randint(0, 24)
        expected = [c for c in itertools.combinations(candidates, voices) if voices == 1 or c[-1] - c[0] <= span]
        assert list(_within_span(candidates, voices, span)) == expected

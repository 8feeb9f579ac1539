"""The rule harmonizer's music logic on hand-made cases."""

from __future__ import annotations

import pytest

from core.events import Beat, NoteOff, NoteOn
from engines.rule import RuleHarmonizer
from engines.rule.theory import Key, KeyFinder, choose_chord, diatonic_chords, parse_key, voice_chord


@pytest.mark.parametrize("melody, expected", [
    ([72, 74, 76, 77, 79, 77, 76, 74, 72], "C major"),
    ([67, 69, 71, 72, 74, 76, 78, 79, 78, 74, 71, 67], "G major"),
    ([69, 71, 72, 74, 76, 77, 80, 81, 80, 76, 71, 69], "A minor"),
    ([65, 67, 69, 70, 72, 74, 76, 77, 72, 69, 65], "F major"),
])
def test_key_finder(melody, expected):
    finder = KeyFinder()
    for pitch in melody:
        key = finder.add(pitch)
    assert str(key) == expected


def test_parse_key_and_errors():
    assert parse_key("Am") == Key(9, True)
    assert parse_key("F# minor") == Key(6, True)
    assert parse_key("Eb major") == Key(3, False)
    assert parse_key("Db") == Key(1, False)
    with pytest.raises(ValueError, match="cannot read key 'H'"):
        parse_key("H")


def test_diatonic_chords_in_c_and_a_minor():
    labels = [c.label() for c in diatonic_chords(Key(0, False))]
    assert labels == ["C", "Dm", "Em", "F", "G", "Am", "Bdim"]
    minor = diatonic_chords(Key(9, True))
    assert minor[4].label() == "E"  # harmonic minor: a major dominant
    assert diatonic_chords(Key(0, False), sevenths=True)[4].label() == "G7"


def test_choose_chord_covers_the_melody_and_prefers_cadences():
    c_major = Key(0, False)
    assert choose_chord({0: 2.0}, c_major, None).label() == "C"
    assert choose_chord({11: 2.0, 2: 1.0}, c_major, None).label() == "G"
    g = choose_chord({11: 2.0}, c_major, None)
    assert choose_chord({0: 2.0}, c_major, g).label() == "C"  # V -> I
    assert choose_chord({9: 2.0, 5: 1.0}, c_major, None).label() in ("F", "Dm")


def test_voicing_stays_below_the_melody_and_moves_little():
    first = voice_chord((0, 4, 7), 72, None, low=48)
    assert max(first) < 72 and {p % 12 for p in first} == {0, 4, 7}
    second = voice_chord((7, 11, 2), 74, first, low=48)
    assert max(second) < 74
    movement = sum(abs(a - b) for a, b in zip(sorted(first), second))
    assert movement <= 6  # C -> G by common tone and steps, not by leaps


def test_engine_holds_common_tones_and_releases_after_silence():
    engine = RuleHarmonizer()
    first = engine.process(NoteOn(72, 100, 0, 0.0, 0.0))
    ons = {m.message.note for m in first if m.message.type == "note_on"}
    assert len(ons) == 4 and max(ons) < 72
    engine.process(NoteOff(72, 0, 0.4, 0.9))
    change = engine.process(NoteOn(71, 100, 0, 0.5, 1.0))  # G under B: C -> G
    offs = {m.message.note for m in change if m.message.type == "note_off"}
    new = {m.message.note for m in change if m.message.type == "note_on"}
    assert offs and new and not (offs & new)
    assert len(set(engine.sounding)) == 4
    engine.process(NoteOff(71, 0, 0.9, 1.9))
    released = engine.process(Beat(3, 1.5, 120.0))
    assert {m.message.note for m in released} == set(engine_sounding_before := new | (ons - offs))
    assert engine.sounding == ()
    del engine_sounding_before


def test_engine_with_a_set_key_ignores_detection():
    engine = RuleHarmonizer()
    engine.set_param("key", "Am")
    out = engine.process(NoteOn(76, 100, 0, 0.0, 0.0))  # E: in A minor, Am or E rather than C
    pcs = {m.message.note % 12 for m in out}
    assert 9 in pcs or 8 in pcs


def test_stopped_transport_releases_when_the_player_lets_go():
    engine = RuleHarmonizer()
    engine.process(NoteOn(72, 100, 0, 0.0, 0.0, playing=False))
    out = engine.process(NoteOff(72, 0, 0.2, 0.0, playing=False))
    assert out and all(m.message.type == "note_off" for m in out)

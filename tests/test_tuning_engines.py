"""Engines that respect the scale: the rule harmonizer stacks the tuning's own scale steps; the
learned harmonizer and the continuation emit no note outside the scale's pitch classes."""

from __future__ import annotations

import random

import mido
import pytest

from cli.main import main
from core.events import Beat, NoteOff, NoteOn
from core.tuning import load_tuning
from engines.rule import RuleHarmonizer
from engines.rule.theory import scale_chords


def test_scale_chords_stack_every_other_degree():
    pentatonic = (0, 2, 4, 7, 9)
    chords = scale_chords(pentatonic)
    assert [c.pitch_classes for c in chords] == [(0, 4, 9), (2, 7, 0), (4, 9, 2), (7, 0, 4), (9, 2, 7)]
    assert len(scale_chords(pentatonic, sevenths=True)[0].pitch_classes) == 4
    assert scale_chords((0, 7))[0].label() == "C-G"


@pytest.mark.parametrize("name", ["pentatonic_major", "kamale_ngoni", "mande_balafon", "kora_tomora_ba"])
def test_rule_harmonizer_plays_only_scale_degrees(name):
    engine = RuleHarmonizer()
    engine.set_param("tuning", name)
    scale = load_tuning(name).pitch_classes()
    assert len(scale) < 12
    rng = random.Random(7)
    played: set[int] = set()
    chords: set[frozenset[int]] = set()
    beats = 0.0
    for _ in range(120):
        pitch = rng.randrange(55, 84)  # in-scale and out-of-scale melody notes alike
        outputs = [*engine.process(NoteOn(pitch, 100, 0, beats, beats)),
                   *engine.process(NoteOff(pitch, 0, beats + 0.9, beats + 0.9))]
        played |= {o.message.note for o in outputs if o.message.type == "note_on"}
        if engine.sounding:
            chords.add(frozenset(p % 12 for p in engine.sounding))
        beats += 1.0
        engine.process(Beat(int(beats), beats, 120.0))
    assert played and {p % 12 for p in played} <= scale
    assert len(chords) >= 3  # several of the scale's own chords, not one drone


def test_a_temperament_keeps_the_keys_diatonic_chords():
    engine = RuleHarmonizer()
    engine.set_param("tuning", "werckmeister_iii")
    engine.set_param("key", "C")
    out = engine.process(NoteOn(72, 100, 0, 0.0, 0.0))
    assert {o.message.note % 12 for o in out} <= {0, 4, 7}


def test_changing_the_tuning_while_a_chord_sounds_leaves_no_old_note_behind():
    engine = RuleHarmonizer()
    engine.set_param("tuning", "kora_silaba")
    first = engine.process(NoteOn(71, 100, 0, 0.0, 0.0))  # B: in Silaba (F major on C: ... B)
    started = {o.message.note for o in first if o.message.type == "note_on"}
    engine.set_param("tuning", "kamale_ngoni")
    engine.process(NoteOff(71, 0, 0.5, 0.5))
    change = engine.process(NoteOn(70, 100, 0, 1.0, 1.0))
    stopped = {o.message.note for o in change if o.message.type == "note_off"}
    assert {p % 12 for p in engine.sounding} <= load_tuning("kamale_ngoni").pitch_classes()
    assert started - set(engine.sounding) <= stopped


def _melody(path, pitches):
    midi = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    for pitch in pitches:
        track += [mido.Message("note_on", note=pitch, velocity=90), mido.Message("note_off", note=pitch, time=480)]
    midi.tracks.append(track)
    midi.save(path)


def _pitch_classes(path):
    return {m.note % 12 for t in mido.MidiFile(path).tracks for m in t if m.type == "note_on" and m.velocity}


@pytest.mark.parametrize("name", ["kamale_ngoni", "pentatonic_minor", "kora_tomora_mesengo"])
def test_learned_harmonizer_chords_stay_in_the_scale(tmp_path, name):
    scale = load_tuning(name).pitch_classes()
    melody = sorted(scale)
    _melody(tmp_path / "in.mid", [60 + pc for pc in melody + melody[::-1]] * 2)
    for seed in (0, 1):
        out = tmp_path / f"out{seed}.mid"
        assert main(["harmonize", str(tmp_path / "in.mid"), "-o", str(out), "--tuning", name,
                     "--tuning-output", "none", "--temperature", "1.0", "--seed", str(seed)]) == 0
        chords = [t for t in mido.MidiFile(out).tracks if t.name == "chords"][0]
        played = {m.note % 12 for m in chords if m.type == "note_on" and m.velocity}
        assert played and played <= scale, played  # an empty chords track proves nothing


def test_continuation_notes_stay_in_the_scale(tmp_path):
    scale = load_tuning("kamale_ngoni").pitch_classes()
    _melody(tmp_path / "in.mid", [60, 62, 65, 67, 70, 67, 65, 62] * 2)
    out = tmp_path / "out.mid"
    assert main(["continue", str(tmp_path / "in.mid"), "-o", str(out), "--bars", "2", "--seed", "5",
                 "--tuning", "kamale_ngoni", "--tuning-output", "none"]) == 0
    assert _pitch_classes(out) <= scale


def test_tuning_options_are_checked(tmp_path, capsys):
    _melody(tmp_path / "in.mid", [60, 62])
    assert main(["harmonize", str(tmp_path / "in.mid"), "-o", str(tmp_path / "o.mid"), "--tuning", "nope"]) != 0
    assert "presets:" in capsys.readouterr().err
    assert main(["continue", str(tmp_path / "in.mid"), "-o", str(tmp_path / "o.mid"),
                 "--tuning-output", "mts"]) != 0
    assert "need --tuning" in capsys.readouterr().err
    bad = tmp_path / "bad.scl"
    bad.write_text("bad\n 2\n100.0\n")
    assert main(["harmonize", str(tmp_path / "in.mid"), "-o", str(tmp_path / "o.mid"), "--tuning", str(bad)]) != 0
    assert "bad.scl:2: says 2 notes but 1" in capsys.readouterr().err
    assert not (tmp_path / "o.mid").exists()


@pytest.mark.parametrize("name", ["kamale_ngoni", "mande_balafon"])
def test_live_learned_harmonizer_plays_only_scale_degrees(name):
    from core.engine import EngineContext
    from core.events import Send, TransportChange
    from engines.harmonizer.engine import LearnedHarmonizer

    engine = LearnedHarmonizer()
    engine.prepare(EngineContext("harm", 1, 120.0))
    engine.set_param("seed", 4)
    engine.set_param("temperature", 1.0)
    engine.set_param("tuning", name)
    scale = load_tuning(name).pitch_classes()
    melody = [60 + pc for pc in sorted(scale)] * 3
    played = set()
    engine.process(TransportChange(True, 0.0, 0.0, "start"))
    for beat, pitch in enumerate(melody):
        outputs = [*engine.process(Beat(beat, beat * 0.5, 120.0)),
                   *engine.process(NoteOn(pitch, 100, 0, beat * 0.5, beat + 0.002)),
                   *engine.process(NoteOff(pitch, 0, beat * 0.5 + 0.4, beat + 0.8))]
        played |= {o.message.note % 12 for o in outputs
                   if isinstance(o, Send) and o.message.type == "note_on" and o.message.velocity}
    engine.release()
    assert played and played <= scale


def test_live_continuation_plays_only_scale_degrees():
    from core.engine import EngineContext
    from core.events import Send, TransportChange
    from engines.continuation.engine import ContinuationEngine

    engine = ContinuationEngine()
    engine.prepare(EngineContext("cont", 0, 120.0))
    for name, value in (("bars", 2), ("seed", 7), ("tuning", "kamale_ngoni"), ("silence_beats", 2.0)):
        engine.set_param(name, value)
    scale = load_tuning("kamale_ngoni").pitch_classes()
    engine.process(TransportChange(True, 0.0, 0.0, "start"))
    melody = [72, 74, 77, 79, 82, 79, 77, 74]
    for beat, pitch in enumerate(melody):
        engine.process(Beat(beat, beat * 0.5, 120.0))
        engine.process(NoteOn(pitch, 90, 0, beat * 0.5, float(beat)))
        engine.process(NoteOff(pitch, 0, beat * 0.5 + 0.4, beat + 0.8))
    played = {o.message.note % 12 for b in range(8, 30) for o in engine.process(Beat(b, b * 0.5, 120.0))
              if isinstance(o, Send) and o.message.type == "note_on" and o.message.velocity}
    engine.release()
    assert played and played <= scale

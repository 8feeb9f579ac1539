"""The MusicXML lead sheet as a musician reads it (key and time signature, part name, a symbol
where the chord changes, lead-sheet spellings) and greedy decoding at temperature 0."""

from __future__ import annotations

import mido
import numpy as np
import pytest

from core.events import Note
from engines.harmonizer.clip import ChordSpan
from engines.harmonizer.leadsheet import (
    SPELLINGS,
    chord_figure,
    chord_symbol,
    chord_symbols,
    key_sharps,
    lead_sheet,
    root_names,
    write_lead_sheet,
)
from engines.harmonizer.vocab import QUALITIES, ROOT_NAMES, token_id, token_name, token_pitch_classes
from tests.test_harmonizer_cli import chord_markers as markers


def reparsed(path):
    """(offset in beats, figure, root pitch class, bass pitch class, pitch classes) of each
    chord symbol music21 reads back from a MusicXML file, and the part."""
    from music21 import converter

    part = converter.parse(path).parts[0]
    chords = []
    for symbol in part.flatten().getElementsByClass("ChordSymbol"):
        if symbol.chordKind == "none":
            chords.append((float(symbol.offset), "N.C.", None, None, ()))
            continue
        chords.append((float(symbol.offset), symbol.figure, symbol.root().pitchClass, symbol.bass().pitchClass,
                       tuple(sorted({p.pitchClass for p in symbol.pitches}))))
    return chords, part


def test_spellings_are_lead_sheet_figures():
    assert chord_figure("E", "hdim7") == "Em7b5"
    assert chord_figure("C#", "dim7") == "C#dim7"
    assert chord_figure("D", "sus4") == "Dsus4"
    assert chord_figure("C", "maj", "E") == "C/E"
    assert chord_figure("A", "min7", "G") == "Am7/G"
    assert chord_figure("G", "7", "G") == "G7"  # a root-position bass is not written
    assert chord_figure("Bb", "maj7") == "Bbmaj7"
    # the MusicXML kind, not a minor seventh with an added flat fifth
    assert chord_symbol("Em7b5").chordKind.startswith("half-diminished")
    assert chord_symbol("Em7b5").chordKindStr == "m7b5"
    assert chord_symbol("C#dim7").chordKind == "diminished-seventh"
    assert chord_symbol("Dsus4").chordKind == "suspended-fourth"
    slash = chord_symbol("Bbmaj7/D")
    assert (slash.root().name, slash.bass().name, slash.chordKind) == ("B-", "D", "major-seventh")


def test_keys_and_roots_are_spelled_with_the_fewest_accidentals():
    assert [key_sharps(t, "major") for t in (0, 7, 5, 10, 3, 6, 1)] == [0, 1, -1, -2, -3, 6, -5]
    assert [key_sharps(t, "minor") for t in (9, 4, 2, 0, 6)] == [0, 1, -1, -3, 3]
    assert root_names(5, "major")[10] == "Bb"  # F major: B flat, not A sharp
    assert root_names(9, "minor")[8] == "G#"  # A minor: the raised seventh, not A flat
    assert root_names(7, "major")[6] == "F#"


def test_every_spelling_reparses_to_the_same_chord(tmp_path):
    notes = [Note(72, 80, 1.0, at_beats=float(beat)) for beat in range(4 * len(QUALITIES))]
    spans, expected = [], []
    for index, (quality, _) in enumerate(QUALITIES):
        token = token_id(f"A#:{quality}")
        spans.append(ChordSpan(token, 4.0 * index, 4.0))
        expected.append(tuple(sorted(token_pitch_classes(token))))
    path = tmp_path / "all.musicxml"
    write_lead_sheet(lead_sheet(notes, chord_symbols(spans, (5, "major")), (4, 4), 100.0, "all", (5, "major")), path)
    chords, _ = reparsed(path)
    # repeated spellings ('7(b9)' is spelled like 'b9') are written once
    figures = [chord_figure("Bb", q) for q, _ in QUALITIES]
    kept = [i for i, f in enumerate(figures) if i == 0 or f != figures[i - 1]]
    assert [c[0] for c in chords] == [4.0 * i for i in kept]
    for (_, figure, root, bass, pcs), index in zip(chords, kept, strict=True):
        written = chord_symbol(figures[index])
        assert (root, bass) == (10, 10), figure
        # what was written comes back; it holds the token's notes (MusicXML's 13th chords add the 11th)
        assert pcs == tuple(sorted({p.pitchClass for p in written.pitches})), (figure, QUALITIES[index][0])
        quality = QUALITIES[index][0]
        if SPELLINGS[quality][1] in ("major-13th", "minor-13th", "dominant-13th"):
            assert set(expected[index]) <= set(pcs), (figure, quality)
        else:
            assert pcs == expected[index], (figure, quality)
        assert "add b5" not in figure
    assert all(SPELLINGS[q][0] in ("", "pedal") or SPELLINGS[q][0] in f for q, f in
               zip((q for q, _ in QUALITIES), figures, strict=True))


def test_a_repeated_chord_is_written_once_and_a_gap_says_no_chord(tmp_path):
    notes = [Note(67, 80, 1.0, at_beats=float(beat)) for beat in range(16)]
    chords = [(0.0, "C"), (1.0, "C"), (2.0, "C/E"), (4.0, "F"), (5.0, "F"), (8.0, "N.C."), (10.0, "F"),
              (12.0, "G7"), (12.0, "Dm7b5")]
    path = tmp_path / "sheet.musicxml"
    write_lead_sheet(lead_sheet(notes, chords, (4, 4), 90.0, "t", (0, "major"), "Voice"), path)
    got, part = reparsed(path)
    assert [(offset, figure) for offset, figure, *_ in got] == [
        (0.0, "C"), (2.0, "C/E"), (4.0, "F"), (8.0, "N.C."), (10.0, "F"), (12.0, "Dø7")]
    assert part.partName == "Voice"


def spans_with_gap():
    return [ChordSpan(token_id("C:maj"), 0.0, 2.0), ChordSpan(token_id("A#:maj"), 2.0, 2.0),
            ChordSpan(token_id("A#:maj"), 6.0, 2.0)]


def test_chord_symbols_spell_in_the_key_and_mark_gaps():
    assert chord_symbols(spans_with_gap(), (5, "major")) == [(0.0, "C"), (2.0, "Bb"), (4.0, "N.C."), (6.0, "Bb")]
    assert chord_symbols(spans_with_gap(), (11, "major"))[1] == (2.0, "A#")


def test_temperature_zero_takes_the_most_likely_allowed_token():
    from engines.harmonizer.decode import nucleus_sample

    logits = np.array([5.0, 1.0, 3.0, 4.0])
    allowed = np.array([False, True, True, True])
    picks = {nucleus_sample(logits, allowed, np.random.default_rng(seed), temperature=0.0) for seed in range(20)}
    assert picks == {3}


# -- the command ---------------------------------------------------------------------------


def waltz(path):
    """A 3/4 tune in F major on a track named 'Flute', written with mido: eight bars of
    F, Bb and C7 arpeggios (I, IV, V7), so a harmonizer has several chords to write."""
    tune = [65, 69, 72, 70, 74, 77, 69, 72, 74, 72, 70, 67, 64, 67, 70, 69, 67, 64, 65, 67, 69, 67, 64, 65]
    track = mido.MidiTrack([mido.MetaMessage("track_name", name="Flute"),
                            mido.MetaMessage("time_signature", numerator=3, denominator=4),
                            mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(120))])
    for pitch in tune:
        track += [mido.Message("note_on", note=pitch, velocity=80, time=0),
                  mido.Message("note_off", note=pitch, time=480)]
    midi = mido.MidiFile(ticks_per_beat=480)
    midi.tracks.append(track)
    midi.save(path)


@pytest.mark.slow
def test_greedy_harmonize_is_deterministic_and_its_lead_sheet_reparses(tmp_path):
    from music21 import converter

    from tests.test_harmonizer_cli import harmonize

    source = tmp_path / "waltz.mid"
    waltz(source)
    runs, reports = [], []
    for seed in (1, 2):
        out, xml = tmp_path / f"{seed}.mid", tmp_path / f"{seed}.musicxml"
        result = harmonize(source, "-o", out, "--musicxml", xml, "--temperature", 0, "--seed", seed)
        assert result.returncode == 0, result.stderr
        runs.append(markers(out))
        reports.append(result.stdout)
    assert runs[0] == runs[1] and len(runs[0]) >= 4  # greedy: the seed changes nothing

    chords, part = reparsed(tmp_path / "1.musicxml")
    assert part.partName == "Flute"
    score = converter.parse(tmp_path / "1.musicxml")
    signatures = list(score.recurse().getElementsByClass("TimeSignature"))
    assert [s.ratioString for s in signatures] == ["3/4"]
    keys = list(score.recurse().getElementsByClass("KeySignature"))
    tonic, mode = reports[0].split(" key ")[1].split()[:2]  # "... key F major, ..."
    assert [k.sharps for k in keys] == [key_sharps(ROOT_NAMES.index(tonic), mode.rstrip(","))]
    figures = [figure for _, figure, *_ in chords]
    assert all(a != b for a, b in zip(figures, figures[1:]))
    assert not any("add b5" in figure for figure in figures)
    # the same chords as the MIDI file's markers, a repeated one written once
    expected = []
    for beats, name in runs[0]:
        token = token_id(name)
        root = ROOT_NAMES.index(token_name(token).split(":")[0])
        chord = (beats, root, tuple(sorted(token_pitch_classes(token))))
        if not expected or expected[-1][1:] != chord[1:]:
            expected.append(chord)
    assert [(o, r, p) for o, _, r, _, p in chords if r is not None] == expected


@pytest.mark.slow
def test_temperature_below_zero_is_refused(tmp_path):
    from tests.test_harmonizer_cli import harmonize

    source = tmp_path / "waltz.mid"
    waltz(source)
    result = harmonize(source, "-o", tmp_path / "o.mid", "--temperature", -0.1)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "--temperature" in result.stderr and "0..2" in result.stderr

"""`scorebridge harmonize` on real MIDI files (made with mido/pretty_midi here, and a folk song
from music21's corpus), run as the real command in a subprocess with the shipped model."""

from __future__ import annotations

import subprocess
import sys

import mido
import numpy as np
import pretty_midi
import pytest

from cli.harmonize import read_melody
from engines.va import song_curve_per_step as read_va
from tests.jackutil import ROOT

pytestmark = pytest.mark.slow


def harmonize(*args: str) -> subprocess.CompletedProcess:
    """The real command; fails the test if torch was imported on the way."""
    code = ("import sys; from cli.main import main; code = main(sys.argv[1:]); "
            "sys.exit(97 if 'torch' in sys.modules else code)")
    return subprocess.run([sys.executable, "-c", code, "harmonize", *map(str, args)], cwd=ROOT,
                          check=False, capture_output=True, text=True, timeout=120)


def folk_song(path, number=6) -> list[tuple[int, float, float]]:
    """'Roland und Godelinde' (Essen folk song collection, 3/4) from music21's corpus, written
    with mido; returns its (pitch, start, end) in beats."""
    from music21 import corpus

    flat = corpus.parse("essenFolksong/altdeu10", number=number).flatten()
    signature = flat.getElementsByClass("TimeSignature")[0]
    notes = [(n.pitch.midi, float(n.offset), float(n.offset + n.quarterLength)) for n in flat.notes]
    events = []
    for pitch, start, end in notes:
        events += [(round(start * 480), 1, mido.Message("note_on", note=pitch, velocity=80)),
                   (round(end * 480), 0, mido.Message("note_off", note=pitch))]
    track = mido.MidiTrack([mido.MetaMessage("time_signature", numerator=signature.numerator,
                                             denominator=signature.denominator),
                            mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(96))])
    now = 0
    for tick, _, message in sorted(events, key=lambda e: (e[0], e[1])):
        track.append(message.copy(time=tick - now))
        now = tick
    midi = mido.MidiFile(ticks_per_beat=480)
    midi.tracks.append(track)
    midi.save(path)
    return notes


def tune_with_chords(path, tempo=100.0):
    """A pretty_midi file: one piano track whose top line is the tune, with lower notes under it
    (held across the tune's notes, so the top-line reading has overlaps to resolve)."""
    pm = pretty_midi.PrettyMIDI(initial_tempo=tempo)
    piano = pretty_midi.Instrument(0, name="piano")
    beat = 60.0 / tempo
    tune = [67, 72, 74, 76, 77, 76, 74, 72, 71, 72, 74, 72, 67, 69, 71, 72]
    for i, pitch in enumerate(tune):
        piano.notes.append(pretty_midi.Note(90, pitch, i * beat, (i + 0.9) * beat))
        if i % 2 == 0:
            piano.notes.append(pretty_midi.Note(70, pitch - 12, i * beat, (i + 1.8) * beat))
    pm.instruments.append(piano)
    pm.write(str(path))
    return tune


def notes_of(track):
    now, open_, out = 0, {}, []
    for message in track:
        now += message.time
        if message.type == "note_on" and message.velocity:
            open_[message.note] = now
        elif message.type in ("note_on", "note_off") and message.note in open_:
            out.append((message.note, open_.pop(message.note), now))
    return out


def test_folk_song_gets_chords_below_the_melody_and_a_lead_sheet(tmp_path):
    source = tmp_path / "folk.mid"
    notes = folk_song(source)
    out, xml = tmp_path / "out.mid", tmp_path / "out.musicxml"
    result = harmonize(source, "-o", out, "--musicxml", xml, "--seed", 1)
    assert result.returncode == 0, result.stderr
    assert "chords" in result.stdout and "key" in result.stdout
    midi = mido.MidiFile(out)
    assert [t.name for t in midi.tracks] == ["melody", "chords"]
    melody, chords = notes_of(midi.tracks[0]), notes_of(midi.tracks[1])
    assert [p for p, _, _ in sorted(melody, key=lambda n: n[1])] == [p for p, _, _ in notes]
    signature = next(m for m in midi.tracks[0] if m.type == "time_signature")
    assert (signature.numerator, signature.denominator) == (3, 4)
    for pitch, start, end in chords:  # never above a melody note sounding at the same time
        over = [p for p, s, e in melody if s < end and e > start]
        assert all(pitch < p for p in over), (pitch, start, over)
    names = [m.text for m in midi.tracks[1] if m.type == "marker"]
    bars = notes[-1][2] / 3
    assert len(set(names)) >= 3 and len(names) / bars * 16 >= 3  # no collapse out of domain
    from music21 import converter

    symbols = [s for s in converter.parse(xml).recurse().getElementsByClass("ChordSymbol") if s.chordKind != "none"]
    assert len(symbols) == len(names)  # spans are runs of distinct chords: one symbol each


def test_top_line_of_the_first_track_with_notes_and_same_seed_same_output(tmp_path):
    source = tmp_path / "tune.mid"
    tune = tune_with_chords(source)
    melody = read_melody(source)
    assert [n.pitch for n in melody.notes] == tune
    outputs = []
    for name in ("a.mid", "b.mid"):
        result = harmonize(source, "-o", tmp_path / name, "--seed", 5, "--voicing", "arpeggio",
                           "--valence", -0.5, "--arousal", 0.6, "--strategy", "midpoint")
        assert result.returncode == 0, result.stderr
        outputs.append((tmp_path / name).read_bytes())
    assert outputs[0] == outputs[1]


def test_drums_are_not_a_melody(tmp_path):
    track = mido.MidiTrack()
    for pitch in (72, 74, 76):
        track += [mido.Message("note_on", channel=9, note=81, velocity=100, time=0),
                  mido.Message("note_on", note=pitch, velocity=90, time=0),
                  mido.Message("note_off", channel=9, note=81, time=240),
                  mido.Message("note_off", note=pitch, time=240)]
    midi = mido.MidiFile(type=0)
    midi.tracks.append(track)
    midi.save(tmp_path / "drums.mid")
    assert [(n.pitch, n.at_beats) for n in read_melody(tmp_path / "drums.mid").notes] == \
        [(72, 0.0), (74, 1.0), (76, 2.0)]


def test_va_curve_in_beats_and_in_seconds_is_averaged_per_step(tmp_path):
    beats = tmp_path / "va_beats.csv"
    beats.write_text("beats,valence,arousal\n0,-1,0\n4,1,0.5\n")
    va = read_va(beats, 6, 1, [(0.0, 500_000)])
    assert np.allclose(va[:, 0], [-0.75, -0.25, 0.25, 0.75, 1, 1])
    assert np.allclose(va[:, 1], [0.0625, 0.1875, 0.3125, 0.4375, 0.5, 0.5])
    seconds = tmp_path / "va_seconds.csv"  # the format `scorebridge va analyze` writes
    seconds.write_text("time_s,valence,arousal\n0,0,0\n2,1,1\n")
    # 120 BPM for 2 beats (1 s), then 60 BPM: beat 3 is at 2 s
    va = read_va(seconds, 4, 1, [(0.0, 500_000), (2.0, 1_000_000)])
    assert np.allclose(va[:, 0], [0.125, 0.375, 0.75, 1.0])
    source = tmp_path / "tune.mid"
    tune_with_chords(source)
    result = harmonize(source, "-o", tmp_path / "out.mid", "--va", seconds)
    assert result.returncode == 0, result.stderr


def test_folder_harmonizes_every_file_and_reports_the_broken_one(tmp_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    (folder / "sub").mkdir(parents=True)
    tune_with_chords(folder / "one.mid")
    folk_song(folder / "sub" / "two.mid")
    (folder / "broken.mid").write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0MTrk\xff\xff")
    result = harmonize(folder, "-o", out, "--musicxml", tmp_path / "xml")
    assert result.returncode == 1
    assert "broken.mid" in result.stderr and "2 of 3" in result.stdout
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["batch-results.jsonl", "one.mid", "sub",
                                                                             "sub/two.mid"]
    assert (tmp_path / "xml" / "sub" / "two.musicxml").exists()
    for path in out.rglob("*.mid"):
        assert [t.name for t in mido.MidiFile(path).tracks] == ["melody", "chords"]


@pytest.mark.parametrize(
    "make_input, extra, message",
    [
        (lambda p: p.write_bytes(b"not a midi file at all"), (), "not a readable MIDI file"),
        (lambda p: mido.MidiFile(tracks=[mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=500000)])]).save(p),
         (), "no melody"),
        (tune_with_chords, ("--valence", "0.5"), "--valence and --arousal go together"),
        (tune_with_chords, ("--steps", "0"), "--steps"),
        (tune_with_chords, ("--style", "bebop"), "--style 'bebop'"),
        (tune_with_chords, ("--key", "H"), "bad key"),
        (tune_with_chords, ("--track", "7"), "--track 7"),
        (tune_with_chords, ("--arousal", "2", "--valence", "0"), "--arousal 2.0"),
    ],
)
def test_bad_input_is_a_clear_error_without_output(tmp_path, make_input, extra, message):
    source = tmp_path / "in.mid"
    make_input(source)
    out, xml = tmp_path / "out.mid", tmp_path / "out.musicxml"
    result = harmonize(source, "-o", out, "--musicxml", xml, *extra)
    assert result.returncode == 1, result.stdout
    assert "scorebridge harmonize: error:" in result.stderr and message in result.stderr, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mid"]


def test_an_output_that_cannot_be_written_is_a_clear_error(tmp_path):
    source = tmp_path / "in.mid"
    tune_with_chords(source)
    (tmp_path / "file").write_text("not a folder")
    result = harmonize(source, "-o", tmp_path / "file" / "out.mid")
    assert result.returncode == 1 and "cannot write it" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_bad_va_csv_is_refused(tmp_path):
    source = tmp_path / "in.mid"
    tune_with_chords(source)
    for text, message in (("time,v,a\n0,0,0\n", "missing column"),
                          ("beats,valence,arousal\n0,0,5\n", "outside [-1, 1]"),
                          ("beats,valence,arousal\n2,0,0\n1,0,0\n", "strictly increasing"),
                          ("time_s,valence,arousal\n", "no samples")):
        csv = tmp_path / "va.csv"
        csv.write_text(text)
        result = harmonize(source, "-o", tmp_path / "out.mid", "--va", csv)
        assert result.returncode == 1 and message in result.stderr, (text, result.stderr)
        assert not (tmp_path / "out.mid").exists()


def chord_markers(path) -> list[tuple[float, str]]:
    """(beat, chord name) of every marker on the output's chords track."""
    midi = mido.MidiFile(path)
    now, out = 0, []
    for message in midi.tracks[1]:
        now += message.time
        if message.type == "marker":
            out.append((now / midi.ticks_per_beat, message.text))
    return out


def six_eight_tune(path) -> None:
    """Eight bars of a 6/8 jig in G, one note per eighth, written with mido."""
    line = [67, 71, 74, 71, 74, 79, 78, 74, 71, 72, 74, 72, 71, 69, 67, 66, 67, 69, 71, 67, 71, 74, 72, 69]
    pitches = (line * 2)[:47] + [67]
    track = mido.MidiTrack([mido.MetaMessage("time_signature", numerator=6, denominator=8),
                            mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(90))])
    for pitch in pitches:
        track += [mido.Message("note_on", note=pitch, velocity=80, time=0),
                  mido.Message("note_off", note=pitch, time=240)]
    midi = mido.MidiFile(ticks_per_beat=480)
    midi.tracks.append(track)
    midi.save(path)


def test_six_eight_chords_sit_on_dotted_quarters_and_bar_rhythm_holds_a_bar(tmp_path):
    source = tmp_path / "jig.mid"
    six_eight_tune(source)
    auto = tmp_path / "auto.mid"
    assert harmonize(source, "-o", auto).returncode == 0
    starts = [beat for beat, _ in chord_markers(auto)]
    assert starts and all(abs(b / 1.5 - round(b / 1.5)) < 1e-6 for b in starts), starts  # dotted quarters
    per_bar = tmp_path / "bar.mid"
    result = harmonize(source, "-o", per_bar, "--rhythm", "bar")
    assert result.returncode == 0, result.stderr
    starts = [beat for beat, _ in chord_markers(per_bar)]
    assert all(abs(b / 3 - round(b / 3)) < 1e-6 for b in starts), starts  # a 6/8 bar is 3 quarters
    assert chord_markers(per_bar)[-1][1] == "G:maj"  # the jig ends on G: the tonic chord
    half = tmp_path / "half.mid"
    assert harmonize(source, "-o", half, "--rhythm", "half-bar", "--temperature", "0").returncode == 0
    assert all(abs(b / 1.5 - round(b / 1.5)) < 1e-6 for b, _ in chord_markers(half))
    assert harmonize(source, "-o", tmp_path / "x.mid", "--rhythm", "sometimes").returncode != 0

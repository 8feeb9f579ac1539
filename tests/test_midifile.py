"""The one MIDI-file note reader (core/midifile.py): pairing, meter and tempo, the top line, and
the commands that read through it agreeing on the notes."""

from __future__ import annotations

import mido
import pytest

from core.midifile import FileNote, MidiFileError, read_notes, top_line


def _file(path, tracks, ticks_per_beat=480, kind=1):
    midi = mido.MidiFile(type=kind, ticks_per_beat=ticks_per_beat)
    for messages in tracks:
        midi.tracks.append(mido.MidiTrack(messages))
    midi.save(path)
    return path


def test_notes_are_paired_first_on_first_off_with_meter_and_tempo_by_time(tmp_path):
    conductor = [mido.MetaMessage("set_tempo", tempo=600_000, time=960),
                 mido.MetaMessage("time_signature", numerator=3, denominator=4, time=0)]
    melody = [mido.MetaMessage("track_name", name="Right hand"),
              mido.MetaMessage("time_signature", numerator=6, denominator=8, time=0),
              mido.Message("note_on", note=60, velocity=80, time=0),
              mido.Message("note_on", note=60, velocity=90, time=240),  # the same key again
              mido.Message("note_off", note=60, time=240),  # ends the first
              mido.Message("note_on", note=60, velocity=0, time=240),  # ends the second
              mido.Message("note_on", note=64, velocity=70, time=0)]  # never ends: dropped
    source = read_notes(_file(tmp_path / "a.mid", [conductor, melody]))
    assert source.tracks[0] == []
    assert source.tracks[1] == [FileNote(60, 0, 480, 80, 0), FileNote(60, 240, 720, 90, 0)]
    assert source.track_names == ["", "Right hand"]
    assert source.time_signature == (6, 8)  # the first in time (beat 0), not the first track's
    assert source.tempo_changes == [(2.0, 600_000)]
    assert source.beats(720) == 1.5


def test_a_file_without_tempo_or_meter_is_120_bpm_in_4_4(tmp_path):
    source = read_notes(_file(tmp_path / "b.mid", [[mido.Message("note_on", note=60, velocity=1),
                                                   mido.Message("note_off", note=60, time=10)]], kind=0))
    assert source.time_signature == (4, 4) and source.tempo_changes == [(0.0, 500_000)]


def test_type_2_is_refused_naming_the_file(tmp_path):
    path = _file(tmp_path / "c.mid", [[mido.Message("note_on", note=60, velocity=1)]], kind=2)
    with pytest.raises(MidiFileError, match=r"c\.mid: MIDI type 2"):
        read_notes(path)


def test_the_top_line_keeps_the_highest_note_sounding():
    notes = [FileNote(60, 0, 960, 80, 0),  # cut at 480 by the higher 67
             FileNote(67, 480, 960, 80, 0),
             FileNote(64, 600, 700, 80, 0),  # under the 67: dropped
             FileNote(81, 0, 2000, 80, 9),  # percussion: never a melody
             FileNote(72, 960, 960, 80, 0),  # no length: ignored
             FileNote(62, 960, 1200, 80, 0),
             FileNote(65, 960, 1100, 80, 0)]  # starts with the 62 and is higher: the 62 goes
    assert [(n.pitch, n.start_ticks, n.end_ticks) for n in top_line(notes)] == \
        [(60, 0, 480), (67, 480, 960), (65, 960, 1100)]


def test_harmonize_and_continue_read_the_same_notes(tmp_path):
    from cli.harmonize import read_melody
    from engines.continuation.offline import read_midi

    track = []
    for pitch in (60, 62, 64, 65):
        track += [mido.Message("note_on", note=pitch, velocity=90, time=0),
                  mido.Message("note_off", note=pitch, time=480)]
    path = _file(tmp_path / "d.mid", [track])
    melody = read_melody(path)
    notes, bar_steps, tempo = read_midi(path)
    assert [(n.pitch, n.at_beats, n.duration_beats) for n in melody.notes] == \
        [(60, 0.0, 1.0), (62, 1.0, 1.0), (64, 2.0, 1.0), (65, 3.0, 1.0)]
    assert sorted(n.pitch for n in notes) == [60, 62, 64, 65] and tempo == 500_000

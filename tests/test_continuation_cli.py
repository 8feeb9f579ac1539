"""``scorebridge continue``: a real MIDI file in, the shipped ONNX model, a MIDI file out; bad
input gives a clear error, exit 1 and no output file."""

from __future__ import annotations

import subprocess
import sys

import mido
import pytest

from cli.main import main
from tests.jackutil import ROOT


def write_phrase(path, bars: int = 2) -> list[tuple[int, int, int]]:
    """Two tracks named right/left in 4/4 at 100 BPM; returns (track, start tick, pitch) of every note."""
    midi = mido.MidiFile(type=1, ticks_per_beat=96)
    conductor = mido.MidiTrack(
        [
            mido.MetaMessage("set_tempo", tempo=600000),
            mido.MetaMessage("time_signature", numerator=4, denominator=4),
        ]
    )
    right = mido.MidiTrack([mido.MetaMessage("track_name", name="Right hand")])
    left = mido.MidiTrack([mido.MetaMessage("track_name", name="Left hand")])
    notes = []
    for beat in range(4 * bars):
        pitch = (72, 76, 79, 76)[beat % 4]
        right += [
            mido.Message("note_on", note=pitch, velocity=80, time=0),
            mido.Message("note_off", note=pitch, time=96),
        ]
        notes.append((1, beat * 96, pitch))
    for half in range(2 * bars):
        pitch = (48, 43)[half % 2]
        left += [
            mido.Message("note_on", note=pitch, velocity=64, time=0),
            mido.Message("note_off", note=pitch, time=192),
        ]
        notes.append((2, half * 192, pitch))
    midi.tracks += [conductor, right, left]
    midi.save(path)
    return notes


def read_notes(path) -> dict[str, list[tuple[float, int]]]:
    """Track name -> (onset in beats, pitch) of every note-on."""
    midi = mido.MidiFile(path)
    found = {}
    for track in midi.tracks[1:]:
        now, onsets = 0, []
        for message in track:
            now += message.time
            if message.type == "note_on" and message.velocity > 0:
                onsets.append((now / midi.ticks_per_beat, message.note))
        found[track.name] = onsets
    return found


def test_continue_writes_the_prompt_then_two_hands(tmp_path, capsys) -> None:
    source, out = tmp_path / "in.mid", tmp_path / "out.mid"
    write_phrase(source)
    assert main(["continue", str(source), "-o", str(out), "--bars", "2", "--seed", "4", "--key", "C"]) == 0
    assert "generated" in capsys.readouterr().out
    tracks = read_notes(out)
    assert list(tracks) == ["right", "left"]
    prompt = {name: [n for n in notes if n[0] < 8] for name, notes in tracks.items()}
    assert prompt["right"] == [(float(b), (72, 76, 79, 76)[b % 4]) for b in range(8)]
    assert prompt["left"] == [(float(2 * h), (48, 43)[h % 2]) for h in range(4)]
    generated = [n for notes in tracks.values() for n in notes if n[0] >= 8]
    assert generated, "nothing was generated"
    assert all(8 <= beat < 16 and pitch % 12 in {0, 2, 4, 5, 7, 9, 11} for beat, pitch in generated)
    again = tmp_path / "again.mid"
    assert main(["continue", str(source), "-o", str(again), "--bars", "2", "--seed", "4", "--key", "C"]) == 0
    assert read_notes(again) == tracks  # the same seed gives the same continuation


def test_va_curve_and_the_installed_command(tmp_path) -> None:
    source, out, curve = tmp_path / "in.mid", tmp_path / "out.mid", tmp_path / "va.csv"
    write_phrase(source)
    curve.write_text("seconds,valence,arousal\n0,-0.5,0.2\n10,0.8,0.9\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bridge",
            "continue",
            str(source),
            "-o",
            str(out),
            "--bars",
            "1",
            "--seed",
            "1",
            "--va",
            str(curve),
            "--temperature",
            "0.8",
            "--top-p",
            "0.9",
            "--style",
            "chorale",
        ],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert [n for notes in read_notes(out).values() for n in notes if n[0] >= 8]


@pytest.mark.parametrize(
    ("setup", "arguments", "message"),
    [
        ("garbage", [], "not a readable MIDI file"),
        ("empty", [], "no notes"),
        ("phrase", ["--top-p", "0"], "--top-p"),
        ("phrase", ["--style", "jazz"], "--style 'jazz'"),
        ("phrase", ["--valence", "0.5"], "go together"),
        ("phrase", ["--va", "missing.csv"], "no such file"),
        ("phrase", ["--va", "BAD"], "line 2"),
        ("phrase", ["--key", "H"], "--key 'H'"),
        ("phrase", ["--bars", "0"], "--bars 0"),
        ("phrase", ["--key-bias", "9"], "--key-bias 9"),
    ],
)
def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, capsys, setup, arguments, message) -> None:
    source, out = tmp_path / "in.mid", tmp_path / "out.mid"
    if setup == "garbage":
        source.write_bytes(b"MThd\x00\x00\x00\x06\x00\x01garbage")
    elif setup == "empty":
        midi = mido.MidiFile()
        midi.tracks.append(mido.MidiTrack([mido.MetaMessage("track_name", name="nothing")]))
        midi.save(source)
    else:
        write_phrase(source)
    if "BAD" in arguments:
        (tmp_path / "bad.csv").write_text("beats,valence,arousal\n0,0.5\n")
        arguments = ["--va", str(tmp_path / "bad.csv")]
    elif "missing.csv" in arguments:
        arguments = ["--va", str(tmp_path / "missing.csv")]
    assert main(["continue", str(source), "-o", str(out), *arguments]) == 1
    error = capsys.readouterr().err
    assert error.startswith("scorebridge continue: error:") and message in error, error
    assert not out.exists() and not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_a_curve_written_by_va_analyze_conditions_the_continuation(tmp_path) -> None:
    import numpy as np

    from engines.va import VACurve, song_curve_at, write_curve

    curve = tmp_path / "va.csv"
    write_curve(VACurve(np.array([0.0, 6.0]), np.array([-0.5, 0.5]), np.array([0.0, 1.0])), curve)
    assert curve.read_text().splitlines()[0].startswith("time_s,valence,arousal")
    at = song_curve_at(curve, [(0.0, 600_000)])  # 100 BPM: 6 s = 10 beats
    assert np.allclose(at(np.array([0.0, 5.0, 10.0, 12.0])), [[-0.5, 0.0], [0.0, 0.5], [0.5, 1.0], [0.5, 1.0]])
    source, out = tmp_path / "in.mid", tmp_path / "out.mid"
    write_phrase(source)
    assert main(["continue", str(source), "-o", str(out), "--bars", "1", "--seed", "2", "--va", str(curve)]) == 0
    assert [n for notes in read_notes(out).values() for n in notes if n[0] >= 8]


def test_the_prompt_comes_back_at_its_exact_ticks(tmp_path) -> None:
    """A dotted 16th + 32nd (off the model's 1/12-beat grid) keeps its times; the model reads it
    rounded, OUT.mid copies it as written."""
    from fractions import Fraction

    source, out = tmp_path / "in.mid", tmp_path / "out.mid"
    midi = mido.MidiFile(type=1, ticks_per_beat=96)
    right = mido.MidiTrack([mido.MetaMessage("track_name", name="Right hand")])
    # (pitch, start, end) in ticks: quarters, then a dotted 16th (36) + 32nd (12) at beat 3
    written = [(72, 0, 96), (74, 96, 192), (76, 192, 288), (72, 288, 324), (75, 324, 336), (74, 336, 384)]
    now = 0
    for pitch, start, end in written:
        right += [
            mido.Message("note_on", note=pitch, velocity=70 + pitch - 72, time=start - now),
            mido.Message("note_off", note=pitch, time=end - start),
        ]
        now = end
    left = mido.MidiTrack([mido.MetaMessage("track_name", name="Left hand")])
    left += [mido.Message("note_on", note=48, velocity=50, time=0), mido.Message("note_off", note=48, time=384)]
    midi.tracks += [right, left]
    midi.save(source)
    assert main(["continue", str(source), "-o", str(out), "--bars", "1", "--seed", "3"]) == 0
    result = mido.MidiFile(out)
    found = {}
    for track in result.tracks[1:]:
        now, sounding, notes = 0, {}, []
        for message in track:
            now += message.time
            if message.type == "note_on" and message.velocity > 0:
                sounding[message.note] = (now, message.velocity)
            elif message.type in ("note_on", "note_off") and message.note in sounding:
                start, velocity = sounding.pop(message.note)
                beats = Fraction(start, result.ticks_per_beat), Fraction(now, result.ticks_per_beat)
                notes.append((beats[0], beats[1], message.note, velocity))
        found[track.name] = sorted(notes)
    prompt = [n for n in found["right"] if n[0] < 4]
    assert prompt == [(Fraction(s, 96), Fraction(e, 96), p, 70 + p - 72) for p, s, e in written]
    assert (Fraction(27, 8), Fraction(7, 2), 75, 73) in prompt  # E-flat5 at beat 3.375, not 3.333
    assert [n for n in found["left"] if n[0] < 4] == [(0, 4, 48, 50)]
    assert [n for notes in found.values() for n in notes if n[0] >= 4], "nothing was generated"


def test_register_prompt_keeps_each_hand_near_the_prompt(tmp_path) -> None:
    source = tmp_path / "in.mid"
    write_phrase(source)  # right 72..79, left 43..48
    for seed in (5, 6):
        out = tmp_path / f"out{seed}.mid"
        assert main(["continue", str(source), "-o", str(out), "--bars", "2", "--seed", str(seed)]) == 0
        tracks = read_notes(out)
        right = [p for beat, p in tracks["right"] if beat >= 8]
        left = [p for beat, p in tracks["left"] if beat >= 8]
        assert right + left, "nothing was generated"
        assert all(67 <= p <= 84 for p in right) and all(38 <= p <= 53 for p in left), (right, left)

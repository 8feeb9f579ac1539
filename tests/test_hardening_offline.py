"""Hostile files for the offline commands (harmonize, continue, va import/apply): each is refused
with ``scorebridge CMD: error: FILE: reason`` (exit 1, no traceback, no output left), runs in
time that follows the notes, and a signal leaves no temporary file."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mido
import numpy as np
import pytest

from cli.main import main
from core.children import TiedPopen
from tests.jackutil import ROOT


def melody_file(path: Path, ticks: int = 480, gap: int = 0, tempo: int = 500_000, meter=(4, 4),
                notes: int = 5) -> Path:
    """A one-track melody; ``gap`` ticks of silence before the third note."""
    track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=tempo),
                            mido.MetaMessage("time_signature", numerator=meter[0], denominator=meter[1])])
    for index in range(notes):
        pitch = (60, 62, 64, 65, 67, 69, 71, 72)[index % 8]
        track.append(mido.Message("note_on", note=pitch, velocity=80, time=gap if index == 2 else 0))
        track.append(mido.Message("note_off", note=pitch, velocity=0, time=ticks // (1 + index % 3)))
    midi = mido.MidiFile(ticks_per_beat=ticks)
    midi.tracks.append(track)
    midi.save(path)
    return path


def _patch_division(path: Path, division: bytes) -> Path:
    data = bytearray(path.read_bytes())
    data[12:14] = division
    path.write_bytes(bytes(data))
    return path


def _meter_bytes(path: Path, numerator: int, denominator_power: int) -> Path:
    """Rewrite the time signature's raw bytes (mido refuses to build 0/1 itself)."""
    data = bytearray(path.read_bytes())
    at = data.index(b"\xff\x58\x04") + 3
    data[at:at + 2] = bytes([numerator, denominator_power])
    path.write_bytes(bytes(data))
    return path


HOSTILE_MIDI = {
    "division 0": (lambda p: _patch_division(melody_file(p), b"\x00\x00"), "time division of 0"),
    "SMPTE division": (lambda p: _patch_division(melody_file(p), b"\xe8\x28"), "SMPTE time division"),
    "time signature 0/1": (lambda p: _meter_bytes(melody_file(p), 0, 0), "time signature 0/1"),
    "time signature 4/2^200": (lambda p: _meter_bytes(melody_file(p), 4, 200), "the denominator 1..64"),
    "tempo 0": (lambda p: melody_file(p, tempo=0), "tempo 0"),
    "gap of 2^28 ticks": (lambda p: melody_file(p, gap=2**28), "track 0, tick 268436"),
    "header with 65535 tracks": (lambda p: p.write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\xff\xff\x01\xe0"),
                                 "65535 tracks"),
}


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_refused(code: int, err: str, command: str, source: Path, reason: str) -> None:
    assert code == 1, err
    assert "Traceback" not in err
    assert err.startswith(f"scorebridge {command}: error: {source}: "), err
    assert reason in err, err
    assert len(err.strip().splitlines()) == 1, err


# -- MIDI files: every command refuses them cleanly ------------------------------------------

@pytest.mark.parametrize("case", sorted(HOSTILE_MIDI))
def test_the_midi_reader_refuses_hostile_files_naming_the_reason(tmp_path, case):
    from core.midifile import MidiFileError, read_midi_file

    make, reason = HOSTILE_MIDI[case]
    source = tmp_path / "in.mid"
    make(source)
    with pytest.raises(MidiFileError, match=re.escape(reason)) as error:
        read_midi_file(source)
    assert str(error.value).startswith(f"{source}: ")


@pytest.mark.parametrize("case", ["division 0", "SMPTE division", "time signature 0/1", "tempo 0",
                                  "gap of 2^28 ticks"])
def test_harmonize_with_a_lead_sheet_refuses_hostile_midi(tmp_path, capsys, case):
    make, reason = HOSTILE_MIDI[case]
    source = tmp_path / "in.mid"
    make(source)
    started = time.monotonic()
    code, _, err = run_cli(capsys, "harmonize", source, "-o", tmp_path / "out.mid",
                           "--musicxml", tmp_path / "out.musicxml")
    assert time.monotonic() - started < 60
    assert_refused(code, err, "harmonize", source, reason)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mid"]


@pytest.mark.parametrize("case", ["division 0", "SMPTE division", "time signature 0/1", "gap of 2^28 ticks"])
def test_continue_refuses_hostile_midi(tmp_path, capsys, case):
    make, reason = HOSTILE_MIDI[case]
    source = tmp_path / "in.mid"
    make(source)
    code, _, err = run_cli(capsys, "continue", source, "-o", tmp_path / "out.mid", "--seed", "1")
    assert_refused(code, err, "continue", source, reason)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mid"]


@pytest.mark.parametrize("case", ["division 0", "SMPTE division", "tempo 0", "gap of 2^28 ticks"])
def test_va_apply_refuses_hostile_midi(tmp_path, capsys, case):
    make, reason = HOSTILE_MIDI[case]
    source = tmp_path / "in.mid"
    make(source)
    curve = tmp_path / "va.csv"
    curve.write_text("time_s,valence,arousal\n0,0,0\n10,0.5,0.5\n")
    code, _, err = run_cli(capsys, "va", "apply", source, curve, "-o", tmp_path / "out.mid")
    assert_refused(code, err, "va", source, reason)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mid", "va.csv"]


def test_continue_refuses_a_bar_shorter_than_its_grid(tmp_path, capsys):
    source = _meter_bytes(melody_file(tmp_path / "in.mid"), 1, 6)  # 1/64
    code, _, err = run_cli(capsys, "continue", source, "-o", tmp_path / "out.mid")
    assert_refused(code, err, "continue", source, "1/64")


def test_va_apply_refuses_a_lane_step_that_would_flood_the_score(tmp_path, capsys):
    source = melody_file(tmp_path / "in.mid")
    curve = tmp_path / "va.csv"
    curve.write_text("time_s,valence,arousal\n0,0,0\n10,0.5,0.5\n")
    code, _, err = run_cli(capsys, "va", "apply", source, curve, "-o", tmp_path / "out.mid",
                           "--lane-step", "1e-9")
    assert code == 1 and "lane and tempo steps must be at least 1/64 beat" in err, err


def test_a_harmonize_folder_goes_on_past_bad_files_and_lists_them(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    melody_file(folder / "good.mid")
    bad = {}
    for name, case in (("a_div0.mid", "division 0"), ("b_smpte.mid", "SMPTE division"),
                       ("c_meter.mid", "time signature 0/1"), ("d_tempo.mid", "tempo 0")):
        make, reason = HOSTILE_MIDI[case]
        make(folder / name)
        bad[name] = reason
    code, out, err = run_cli(capsys, "harmonize", folder, "-o", tmp_path / "out",
                             "--musicxml", tmp_path / "xml")
    assert code == 1 and "Traceback" not in err
    assert "1 of 5 items done" in out
    assert err.startswith("scorebridge harmonize: error: 4 of 5 items failed"), err
    for name, reason in bad.items():
        line = next(line for line in err.splitlines() if name in line)
        assert line.strip().startswith(f"{folder / name}: ") and reason in line, line
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["batch-results.jsonl", "good.mid"]
    assert [p.name for p in (tmp_path / "xml").iterdir()] == ["good.musicxml"]


def test_harmonize_work_follows_the_notes_not_a_long_silence(tmp_path, capsys):
    """50,000 beats of rest between two phrases: only the windows with melody call the model."""
    source = melody_file(tmp_path / "in.mid", gap=50_000 * 480)
    code, out, err = run_cli(capsys, "harmonize", source, "-o", tmp_path / "out.mid")
    assert code == 0, err
    calls = int(re.search(r"(\d+) model calls", out).group(1))
    assert calls <= 60, out


def test_harmonize_refuses_a_midi_file_over_the_size_limit(tmp_path, capsys, monkeypatch):
    from core import midifile

    monkeypatch.setattr(midifile, "MAX_MIDI_BYTES", 64)
    source = melody_file(tmp_path / "in.mid", notes=40)
    code, _, err = run_cli(capsys, "harmonize", source, "-o", tmp_path / "out.mid")
    assert_refused(code, err, "harmonize", source, "MIDI files are limited to")


def test_a_fifo_is_refused_without_blocking(tmp_path, capsys):
    fifo = tmp_path / "in.mid"
    os.mkfifo(fifo)
    code, _, err = run_cli(capsys, "harmonize", fifo, "-o", tmp_path / "out.mid")
    assert_refused(code, err, "harmonize", fifo, "not a regular file")


# -- the lead sheet --------------------------------------------------------------------------

def _notes(count: int, seed: int = 0):
    from core.events import Note

    rng = np.random.default_rng(seed)
    notes, now = [], 0.0
    for _ in range(count):
        length = float(rng.choice([0.25, 1 / 3, 0.5, 0.75, 1.0, 1.5, 2.0, 5 / 12, 2.5]))
        now += float(rng.choice([0.0, 0.0, 0.5, 1 / 3]))
        notes.append(Note(int(rng.integers(55, 80)), 80, length, at_beats=now))
        now += length
    return notes


@pytest.mark.parametrize("meter", [(4, 4), (3, 4), (6, 8), (5, 4), (7, 16)])
def test_the_lead_sheet_is_valid_musicxml_with_every_note_and_chord(tmp_path, meter):
    from music21 import converter

    from engines.harmonizer.leadsheet import lead_sheet, write_lead_sheet

    notes = _notes(120, seed=sum(meter))
    figures = ["C", "Am7", "F#dim", "G7", "A#maj7"] * 40
    chords = [(float(beat), figure) for beat, figure in zip(range(0, 200, 3), figures)]
    chords = [c for c in chords if c[0] < notes[-1].at_beats]
    path = tmp_path / "sheet.musicxml"
    write_lead_sheet(lead_sheet(notes, chords, meter, 96.0, "test"), path)
    part = converter.parse(path).parts[0]
    flat = part.flatten()
    assert len(flat.getElementsByClass("ChordSymbol")) == len(chords)
    # every note is one tie chain; its pieces add up to the note's length on the 1/12 grid
    chains, current = [], None
    for item in flat.getElementsByClass("Note"):
        if item.tie is None or item.tie.type == "start":
            current = [item.pitch.midi, float(item.offset), 0.0]
            chains.append(current)
        current[2] += float(item.quarterLength)
    assert [c[0] for c in chains] == [n.pitch for n in notes]
    for chain, note in zip(chains, notes, strict=True):
        assert chain[1] == pytest.approx(round(note.at_beats * 12) / 12, abs=1e-6)
    bar = meter[0] * 4 / meter[1]
    assert all(float(m.duration.quarterLength) == pytest.approx(bar) for m in part.getElementsByClass("Measure"))


def test_the_lead_sheet_takes_time_in_proportion_to_the_notes():
    """music21's makeNotation on one long part was quadratic (2,000 notes 13 s, 5,000 notes 65 s)."""
    from engines.harmonizer.leadsheet import lead_sheet

    def seconds(count: int) -> float:
        notes = _notes(count)
        chords = [(float(beat), "C") for beat in range(0, int(notes[-1].at_beats), 2)]
        started = time.perf_counter()
        score = lead_sheet(notes, chords, (4, 4), 120.0, "t")
        from music21.musicxml.m21ToXml import GeneralObjectExporter

        exporter = GeneralObjectExporter(score)
        exporter.makeNotation = False
        exporter.parse()
        return time.perf_counter() - started

    seconds(50)  # imports and music21's caches
    small, large = seconds(300), seconds(1200)
    assert large < 8 * small + 1.0, (small, large)


# -- VA curves -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("time_s,valence,arousal\n0,0,0\n100000000,0.5,0.5\n", "line 3: time_s 1e+08 is past the longest curve"),
        ("time_s,valence,arousal\n0,0,0\n5,nan,0\n", "line 3: valence is nan"),
        ("time_s,valence,arousal\n0,0,0\n5,0,inf\n", "line 3: arousal is inf"),
        ("time_s,valence,arousal\n5,0,0\n1,0,0\n", "line 3: time_s 1.0 does not come after 5.0"),
        ("time_s,valence,arousal\n0,1e308,0\n", "line 2: valence 1e+308 is outside"),
        ('time_s,valence,arousal\n0,"' + "9" * 200_000 + '",0\n', "line 2: not a CSV row"),
    ],
)
def test_hostile_csv_curves_are_refused_with_the_line(tmp_path, capsys, text, reason):
    source = tmp_path / "va.csv"
    source.write_text(text)
    code, _, err = run_cli(capsys, "va", "import", source, "-o", tmp_path / "out.csv", "--rate", "10")
    assert_refused(code, err, "va", source, reason)
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"time_s": [0, 1], "valence": [0, NaN], "arousal": [0, 0]}', "sample 1: valence is nan"),
        ('{"time_s": [0, 1e999], "valence": [0, 0], "arousal": [0, 0]}', "sample 1: time_s is inf"),
        ('[{"time_s": 0, "valence": 0, "arousal": ' + "9" * 5000 + "}]", "invalid JSON"),
        ('{"time_s": [0, 1], "valence": [0, [[0]]], "arousal": [0, 0]}', "sample 1: valence '[[0]]' is not a number"),
    ],
)
def test_hostile_json_curves_are_refused(tmp_path, capsys, text, reason):
    source = tmp_path / "va.json"
    source.write_text(text)
    code, _, err = run_cli(capsys, "va", "import", source, "-o", tmp_path / "out.csv")
    assert_refused(code, err, "va", source, reason)


def test_resampling_is_bounded(tmp_path, capsys):
    source = tmp_path / "va.csv"
    source.write_text("time_s,valence,arousal\n0,0,0\n86000,0.5,0.5\n")
    code, _, err = run_cli(capsys, "va", "import", source, "-o", tmp_path / "out.csv", "--rate", "100")
    assert_refused(code, err, "va", source, "--rate 100: resampling 86000 s at 100 Hz gives 8,600,001 samples")


def test_a_curve_with_too_many_rows_is_refused_at_the_row(tmp_path, monkeypatch):
    from engines.va import CurveError, curve, read_curve

    monkeypatch.setattr(curve, "MAX_CURVE_SAMPLES", 10)
    source = tmp_path / "va.csv"
    source.write_text("time_s,valence,arousal\n" + "".join(f"{i},0,0\n" for i in range(20)))
    with pytest.raises(CurveError, match="line 12: more than 10 samples"):
        read_curve(source)


def test_curve_files_must_be_regular_and_bounded(tmp_path, monkeypatch):
    from engines.va import CurveError, curve, read_curve, read_song_curve

    fifo = tmp_path / "va.csv"
    os.mkfifo(fifo)
    for reader in (read_curve, read_song_curve):
        with pytest.raises(CurveError, match="not a regular file"):
            reader(fifo)
    monkeypatch.setattr(curve, "MAX_CURVE_BYTES", 10)
    big = tmp_path / "big.csv"
    big.write_text("time_s,valence,arousal\n0,0,0\n")
    with pytest.raises(CurveError, match="at most 0 MiB|at most"):
        read_curve(big)


def test_harmonize_refuses_a_hostile_va_curve_with_its_line(tmp_path, capsys):
    source = melody_file(tmp_path / "in.mid")
    curve = tmp_path / "va.csv"
    curve.write_text("beats,valence,arousal\n0,0,0\n1e300,0,0\n")
    code, _, err = run_cli(capsys, "harmonize", source, "-o", tmp_path / "out.mid", "--va", curve)
    assert_refused(code, err, "harmonize", curve, "line 3")


# -- atomic output ---------------------------------------------------------------------------

@pytest.mark.parametrize("interruption", [KeyboardInterrupt, SystemExit, RuntimeError])
def test_atomic_output_leaves_nothing_on_any_exception(tmp_path, interruption):
    from core.atomic import atomic_output, atomic_outputs

    target = tmp_path / "out.mid"
    target.write_text("before")
    with pytest.raises(interruption):
        with atomic_outputs([target, tmp_path / "lead.musicxml"]) as temporaries:
            for temporary in temporaries:
                temporary.write_text("half")
            raise interruption()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mid"] and target.read_text() == "before"
    with pytest.raises(interruption):
        with atomic_output(target) as temporary:
            temporary.write_text("half")
            raise interruption()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mid"]


def test_atomic_output_gives_the_umask_permissions(tmp_path):
    from core.atomic import atomic_output

    previous = os.umask(0o027)
    try:
        with atomic_output(tmp_path / "out.csv") as temporary:
            temporary.write_text("x")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "out.csv").stat().st_mode) == 0o640


@pytest.mark.slow
def test_sigterm_during_a_harmonize_folder_leaves_no_temporary_file(tmp_path):
    """SIGTERM while a lead sheet is being written: exit 143, no ``.NAME.*`` file anywhere."""
    folder = tmp_path / "in"
    folder.mkdir()
    for index in range(6):
        melody_file(folder / f"g{index:03d}.mid", notes=600)
    out, xml = tmp_path / "out", tmp_path / "xml"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = TiedPopen([sys.executable, "-m", "bridge", "harmonize", str(folder), "-o", str(out),
                         "--musicxml", str(xml)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if any(p.name.startswith(".") for d in (out, xml) if d.exists() for p in d.iterdir()):
                break
            time.sleep(0.005)
        assert process.poll() is None, "finished before a temporary file was seen"
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    left = [p for d in (out, xml) if d.exists() for p in d.iterdir() if p.name.startswith(".")]
    assert left == []


def test_va_apply_names_the_file_it_cannot_automate(tmp_path, capsys):
    """Found by the MIDI fuzzer: the type-2 refusal did not say which file."""
    source = tmp_path / "in.mid"
    source.write_bytes(b"MThd\x00\x00\x00\x06\x00\x02\x00\x01\x00\x01MTrk\x00\x00\x00\x04\x00\xff\x2f\x00")
    curve = tmp_path / "va.csv"
    curve.write_text("time_s,valence,arousal\n0,0,0\n10,0.5,0.5\n")
    code, _, err = run_cli(capsys, "va", "apply", source, curve, "-o", tmp_path / "out.mid")
    assert_refused(code, err, "va", source, "type 2")


def test_a_format_0_file_with_two_tracks_is_refused(tmp_path, capsys):
    """Found by the MIDI structure fuzzer: read fine, then va apply could not save it (ValueError)."""
    track = b"MTrk\x00\x00\x00\x04\x00\xff\x2f\x00"
    source = tmp_path / "in.mid"
    source.write_bytes(b"MThd\x00\x00\x00\x06\x00\x00\x00\x02\x00\x01" + track + track)
    curve = tmp_path / "va.csv"
    curve.write_text("time_s,valence,arousal\n0,0,0\n10,0.5,0.5\n")
    code, _, err = run_cli(capsys, "va", "apply", source, curve, "-o", tmp_path / "out.mid")
    assert_refused(code, err, "va", source, "format 0 holds exactly one track")


def test_a_stop_signal_as_a_temporary_is_created_leaves_nothing_behind(tmp_path):
    """The handler raises at the first instruction after the folder or file exists: the
    temporary is still removed (the signal waits until cleanup knows about it)."""
    from core.atomic import atomic_output, temporary_folder

    class Stopped(BaseException):
        pass

    def stop(_signum, _frame):
        raise Stopped

    previous = signal.signal(signal.SIGTERM, stop)
    real_mkdtemp, real_mkstemp = tempfile.mkdtemp, tempfile.mkstemp

    def mkdtemp_then_signal(*args, **kwargs):
        made = real_mkdtemp(*args, **kwargs)
        signal.raise_signal(signal.SIGTERM)  # arrives the moment the folder exists
        return made

    def mkstemp_then_signal(*args, **kwargs):
        made = real_mkstemp(*args, **kwargs)
        signal.raise_signal(signal.SIGTERM)
        return made

    try:
        tempfile.mkdtemp = mkdtemp_then_signal
        with pytest.raises(Stopped), temporary_folder(tmp_path, ".work-"):
            pass
        tempfile.mkdtemp = real_mkdtemp
        tempfile.mkstemp = mkstemp_then_signal
        with pytest.raises(Stopped), atomic_output(tmp_path / "out.mid") as partial:
            partial.write_bytes(b"x")
    finally:
        tempfile.mkdtemp, tempfile.mkstemp = real_mkdtemp, real_mkstemp
        signal.signal(signal.SIGTERM, previous)
    assert list(tmp_path.iterdir()) == []

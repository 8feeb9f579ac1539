"""`va apply`: velocities, CC lanes and tempo map follow the curve on the video's time line."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import mido
import numpy as np
import pytest

from engines.va import VACurve, write_curve
from engines.va.apply import ApplySettings, apply_curve
from engines.va.errors import CurveError
from tests.jackutil import ROOT

SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
PPQ = 480


def _score(kind: int = 1, beats: int = 16, velocity: int = 80) -> mido.MidiFile:
    """One note per beat at 120 BPM on channels 1 and 3, plus a CC11 the lanes must replace."""
    midi = mido.MidiFile(type=kind, ticks_per_beat=PPQ)
    events = [(0, mido.MetaMessage("set_tempo", tempo=500_000)), (0, mido.Message("control_change", control=11,
                                                                                   value=100))]
    for beat in range(beats):
        for channel in (0, 2):
            events.append((beat * PPQ, mido.Message("note_on", channel=channel, note=60 + channel, velocity=velocity)))
            events.append((beat * PPQ + PPQ // 2, mido.Message("note_on", channel=channel, note=60 + channel,
                                                               velocity=0)))
    events.sort(key=lambda e: e[0])
    if kind == 1:
        conductor = mido.MidiTrack([events[0][1].copy(time=0)])
        events = events[1:]
        midi.tracks.append(conductor)
    track = mido.MidiTrack()
    previous = 0
    for tick, message in events:
        track.append(message.copy(time=tick - previous))
        previous = tick
    midi.tracks.append(track)
    return midi


def _step_curve() -> VACurve:
    """Calm and negative for 4 s, then excited and positive (a 0.1 s ramp at 4 s)."""
    times = np.array([0.0, 3.95, 4.05, 12.0])
    return VACurve(times, np.array([-0.5, -0.5, 0.5, 0.5]), np.array([-1.0, -1.0, 1.0, 1.0]))


def _timed(midi: mido.MidiFile) -> list[tuple[float, mido.Message]]:
    now, out = 0.0, []
    for message in midi:  # mido yields delta times in seconds under the file's tempo map
        now += message.time
        out.append((now, message))
    return out


def test_velocities_follow_arousal_at_each_note():
    midi = _score()
    report = apply_curve(midi, _step_curve(), ApplySettings())
    notes = [(t, m.velocity) for t, m in _timed(midi) if m.type == "note_on" and m.velocity > 0]
    assert report.notes == len(notes) == 32
    for time_s, velocity in notes:  # 80 * 2**(-0.5), 80 at the ramp's middle, 80 * 2**0.5
        assert velocity == (57 if time_s < 3.9 else 80 if time_s < 4.1 else 113)
    assert report.mean_velocity_before == 80 and report.channels == [0, 2]


def test_lanes_follow_the_curve_on_every_playing_channel_and_replace_old_events():
    midi = _score()
    report = apply_curve(midi, _step_curve(), ApplySettings())
    assert report.replaced_events == 1
    assert [t.name for t in midi.tracks][-1] == "va automation"
    for channel in (0, 2):
        for control, low, high in ((11, 32, 127), (1, 56, 103)):  # arousal -1/+1; valence -0.5/+0.5
            lane = [(t, m.value) for t, m in _timed(midi)
                    if m.type == "control_change" and m.channel == channel and m.control == control]
            assert lane[0] == (0.0, low)
            assert lane[-1][1] == high
            assert all(value == low for t, value in lane if t < 3.9)
            assert all(value == high for t, value in lane if t > 4.1)
            assert len(lane) <= 4  # sent only when the value changes
    assert not any(m.type == "control_change" and m.value == 100 for _, m in _timed(midi))


def test_offset_aligns_the_score_start_with_a_video_time():
    midi = _score(beats=4)
    apply_curve(midi, _step_curve(), ApplySettings(offset_s=4.5, lanes={}))
    assert {m.velocity for _, m in _timed(midi) if m.type == "note_on" and m.velocity > 0} == {113}


def test_tempo_map_speeds_up_with_arousal_and_stays_aligned():
    midi = _score()
    report = apply_curve(midi, _step_curve(), ApplySettings(tempo_map=True, tempo_depth=0.15))
    tempi = [m.tempo for m in midi.tracks[0] if m.type == "set_tempo"]
    assert report.tempo_events == len(tempi) and 2 <= len(tempi) <= 16  # one per beat at most, changes only
    assert tempi[0] == round(500_000 * 2**0.15) and tempi[-1] == round(500_000 / 2**0.15)
    timed = _timed(midi)
    onsets = [t for t, m in timed if m.type == "note_on" and m.velocity > 0 and m.channel == 0]
    gaps = np.diff(onsets)
    assert gaps[0] > 0.55 and gaps[-1] < 0.46  # slower while calm, faster when excited
    # each note's velocity reflects the curve at the note's time in the re-timed output
    for time_s, message in timed:
        if message.type == "note_on" and message.velocity > 0 and abs(time_s - 4.0) > 0.6:
            assert message.velocity == (57 if time_s < 4 else 113)


def test_type_0_files_get_their_lanes_in_the_only_track():
    midi = _score(kind=0)
    apply_curve(midi, _step_curve(), ApplySettings())
    assert len(midi.tracks) == 1
    controls = [m for m in midi.tracks[0] if m.type == "control_change"]
    assert {m.control for m in controls} == {1, 11}
    assert midi.tracks[0][-1].type == "end_of_track"


def test_type_2_and_bad_settings_are_refused():
    with pytest.raises(CurveError, match="type 2"):
        apply_curve(mido.MidiFile(type=2), _step_curve(), ApplySettings())
    with pytest.raises(CurveError, match="no tracks"):
        apply_curve(mido.MidiFile(type=1), _step_curve(), ApplySettings(tempo_map=True))
    for settings in (ApplySettings(lanes={11: "joy"}), ApplySettings(lanes={120: "arousal"}),
                     ApplySettings(velocity_depth=-1), ApplySettings(lane_step_beats=0),
                     ApplySettings(offset_s=float("nan"))):
        with pytest.raises(CurveError):
            apply_curve(_score(), _step_curve(), settings)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "bridge", "va", "apply", *map(str, args)], cwd=ROOT,
                          check=False, capture_output=True, text=True, timeout=60)


@pytest.fixture()
def files(tmp_path):
    score = tmp_path / "score.mid"
    _score().save(score)
    curve = tmp_path / "va.csv"
    write_curve(_step_curve(), curve)
    return tmp_path, score, curve


def test_cli_writes_the_automated_score(files):
    folder, score, curve = files
    out = folder / "out.mid"
    run = _cli(score, curve, "-o", out, "--tempo-map", "--lane", "7=valence")
    assert run.returncode == 0, run.stderr
    assert "32 notes" in run.stdout and "tempo events" in run.stdout
    controls = {m.control for m in mido.MidiFile(out).tracks[-1] if m.type == "control_change"}
    assert controls == {7}


@pytest.mark.parametrize("case", ["corrupt", "bad_curve", "bad_lane", "no_folder"])
def test_cli_errors_exit_1_and_write_nothing(files, case):
    folder, score, curve = files
    out = folder / "out.mid"
    args = [score, curve, "-o", out]
    if case == "corrupt":
        score.write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0MTrk\x00\x00\x10\x00\x00\x90")
        expected = "not a readable MIDI file"
    elif case == "bad_curve":
        curve.write_text("time_s,valence,arousal\n0,0,0\n0,0,0\n")
        expected = "line 3"
    elif case == "bad_lane":
        args += ["--lane", "eleven=arousal"]
        expected = "write CC=SOURCE"
    else:
        args[3] = folder / "nope" / "out.mid"
        expected = "does not exist"
    before = set(folder.iterdir())
    run = _cli(*args)
    assert run.returncode == 1 and expected in run.stderr, run.stderr
    assert set(folder.iterdir()) == before


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("fluidsynth") is None or not SOUNDFONT.exists(), reason="needs FluidSynth + GM font")
def test_rendered_audio_gets_louder_where_the_video_excites(files):
    import soundfile

    folder, score, curve = files
    out = folder / "out.mid"
    assert _cli(score, curve, "-o", out).returncode == 0

    def halves(midi: Path) -> tuple[float, float]:
        wav = midi.with_suffix(".wav")
        subprocess.run(["fluidsynth", "-ni", "-q", "-g", "0.5", "-r", "22050", "-F", str(wav), str(SOUNDFONT),
                        str(midi)], check=True, capture_output=True, timeout=60)
        audio, rate = soundfile.read(wav)
        mono = audio.mean(axis=1) if audio.ndim > 1 else audio
        first, second = mono[: int(3.8 * rate)], mono[int(4.2 * rate): int(7.8 * rate)]
        return (float(np.sqrt(np.mean(first**2))), float(np.sqrt(np.mean(second**2))))

    plain_first, plain_second = halves(score)
    first, second = halves(out)
    assert abs(20 * np.log10(plain_second / plain_first)) < 1.0  # the source is even
    assert 20 * np.log10(second / first) > 10.0  # velocity x2 and CC11 32 -> 127


def test_cli_retunes_the_automated_score(files):
    folder, score, curve = files
    plain, tuned = folder / "plain.mid", folder / "tuned.mid"
    assert _cli(score, curve, "-o", plain).returncode == 0
    run = _cli(score, curve, "-o", tuned, "--tuning", "mande_balafon", "--tuning-output", "mts")
    assert run.returncode == 0, run.stderr

    def notes_and_controls(path):
        messages = list(mido.merge_tracks(mido.MidiFile(path).tracks))
        return ([(m.type, m.note, m.velocity) for m in messages if m.type in ("note_on", "note_off")],
                [m for m in messages if m.type == "sysex"],
                sorted((m.channel, m.control, m.value) for m in messages if m.type == "control_change"))

    plain_notes, plain_sysex, plain_cc = notes_and_controls(plain)
    tuned_notes, tuned_sysex, tuned_cc = notes_and_controls(tuned)
    assert not plain_sysex and tuned_sysex  # MIDI Tuning Standard single-note tuning changes
    assert all(m.data[:1] == (0x7F,) and m.data[2:4] == (0x08, 0x02) for m in tuned_sysex)
    assert len(tuned_notes) == len(plain_notes)
    assert not Counter(plain_cc) - Counter(tuned_cc)  # every automation event is kept (tuning adds RPNs)
    bad = _cli(score, curve, "-o", folder / "bad.mid", "--tuning", "no-such-tuning")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and not (folder / "bad.mid").exists()

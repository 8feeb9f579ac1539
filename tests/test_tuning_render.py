"""Retuned output measured: ``harmonize`` and ``continue`` write files in a non-12-TET tuning,
FluidSynth renders each of their notes in isolation with the file's own tuning messages, and the
FFT peak of every note is compared with the Scala file's value (docs/tuning.md).

The font's own samples are off 12-TET by up to about 7 cents on some keys (a property of the
synth, not of the MIDI), so each key is also rendered untuned in the same way and its error is
taken off: what is checked is the pitch the file's messages ask for."""

from __future__ import annotations

import math
import shutil
import subprocess
import wave
from pathlib import Path

import mido
import numpy as np
import pytest

from cli.main import main
from core.tuning import load_tuning

SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
RATE = 44100
NOTE_S, GAP_S = 0.5, 0.15
pytestmark = pytest.mark.skipif(shutil.which("fluidsynth") is None or not SOUNDFONT.exists(),
                                reason="needs FluidSynth and the FluidR3 GM font")


def _melody(path: Path, pitches: list[int]) -> None:
    midi = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=500000)])
    for pitch in pitches:
        track += [mido.Message("note_on", note=pitch, velocity=90), mido.Message("note_off", note=pitch, time=480)]
    midi.tracks.append(track)
    midi.save(path)


def _played(path: Path) -> tuple[list[mido.Message], list[tuple[int, int, int]]]:
    """The file's setup (everything but notes and bends before its first note) and each note-on
    as (channel, key, the pitch bend its channel has then), in time order."""
    setup: list[mido.Message] = []
    bends = [0] * 16
    notes: list[tuple[int, int, int]] = []
    for message in mido.merge_tracks(mido.MidiFile(path).tracks):
        if message.is_meta:
            continue
        if message.type == "pitchwheel":
            bends[message.channel] = message.pitch
        elif message.type == "note_on" and message.velocity:
            notes.append((message.channel, message.note, bends[message.channel]))
        elif not notes and message.type in ("sysex", "control_change"):
            setup.append(message.copy(time=0))
    return setup, notes


def _render_isolated(setup: list[mido.Message], notes: list[tuple[int, int, int]], folder: Path) -> np.ndarray:
    """Each note alone on a piano, after the file's setup. Bank 0 on channel 10 in XG mode makes
    that MPE member channel melodic in FluidSynth."""
    midi = mido.MidiFile(ticks_per_beat=1000)  # 120 BPM: a tick is 0.5 ms
    track = mido.MidiTrack([mido.Message("control_change", channel=9, control=0, value=0),
                            mido.Message("control_change", channel=9, control=32, value=0),
                            mido.Message("program_change", channel=9, program=0), *setup])
    for channel, key, bend in notes:
        track += [mido.Message("pitchwheel", channel=channel, pitch=bend, time=int(GAP_S * 2000)),
                  mido.Message("note_on", channel=channel, note=key, velocity=100),
                  mido.Message("note_off", channel=channel, note=key, time=int(NOTE_S * 2000))]
    midi.tracks.append(track)
    midi.save(folder / "isolated.mid")
    subprocess.run(["fluidsynth", "-ni", "-q", "-o", "synth.midi-bank-select=xg", "-r", str(RATE),
                    "-F", str(folder / "isolated.wav"), str(SOUNDFONT), str(folder / "isolated.mid")],
                   check=True, capture_output=True, timeout=120)
    with wave.open(str(folder / "isolated.wav")) as audio:
        frames = np.frombuffer(audio.readframes(audio.getnframes()), dtype=np.int16)
        return frames.reshape(-1, audio.getnchannels()).astype(np.float64).mean(1)


def _pitch_cents(audio: np.ndarray, index: int, expected_cents: float) -> float:
    """The FFT peak (Hann window, zero-padded, parabolic interpolation) within a semitone of the
    expected fundamental, as MIDI cents."""
    start = int(((index + 1) * GAP_S + index * NOTE_S + 0.05) * RATE)
    segment = audio[start: start + int(0.4 * RATE)]
    size = 1 << 17
    spectrum = np.abs(np.fft.rfft(segment * np.hanning(len(segment)), size))
    freqs = np.fft.rfftfreq(size, 1 / RATE)
    expected_hz = 440 * 2 ** ((expected_cents - 6900) / 1200)
    window = (freqs > expected_hz * 2 ** (-1 / 12)) & (freqs < expected_hz * 2 ** (1 / 12))
    peak = int(np.argmax(np.where(window, spectrum, 0)))
    a, b, c = np.log(spectrum[peak - 1: peak + 2] + 1e-12)
    hz = (peak + 0.5 * (a - c) / (a - 2 * b + c)) * RATE / size
    return 6900 + 1200 * math.log2(hz / 440)


def _measure(tmp_path: Path, command: list[str], tuning_name: str) -> dict[str, list[tuple[float, float]]]:
    """(expected, measured) cents of every note the command writes, per output mode, the font's
    error on that key taken off. The notes
    of the three files are the same notes (same seed, retuning comes last); the MTS file keeps
    the keys, so its keys give each note's Scala value."""
    tuning = load_tuning(tuning_name)
    files = {}
    for mode in ("mts", "mpe", "none"):
        files[mode] = tmp_path / f"{mode}.mid"
        assert main([*command, "-o", str(files[mode]), "--tuning", tuning_name, "--tuning-output", mode]) == 0
    _, reference = _played(files["mts"])
    expected = [tuning.cents(key) for _, key, _ in reference]
    assert None not in expected and len(expected) >= 8
    results = {}
    for mode, path in files.items():
        setup, notes = _played(path)
        assert len(notes) == len(expected)
        audio = _render_isolated(setup, notes, tmp_path)
        plain = _render_isolated([], [(channel, key, 0) for channel, key, _ in notes], tmp_path)
        synth_error = [_pitch_cents(plain, i, 100 * key) - 100 * key for i, (_, key, _) in enumerate(notes)]
        results[mode] = [(want, _pitch_cents(audio, i, want) - synth_error[i]) for i, want in enumerate(expected)]
    return results


def _check(results: dict[str, list[tuple[float, float]]]) -> None:
    for mode in ("mts", "mpe"):
        errors = [abs(measured - want) for want, measured in results[mode]]
        assert max(errors) < 3.0, (mode, max(errors))
    for want, measured in results["none"]:
        nearest = 100 * round(measured / 100)
        assert abs(measured - nearest) < 3.0 and abs(nearest - want) <= 50.0


def test_harmonize_in_the_balafon_tuning_sounds_within_3_cents(tmp_path):
    _melody(tmp_path / "in.mid", [60, 62, 63, 65, 67, 65, 63, 62, 60])
    tuning = load_tuning("mande_balafon")
    results = _measure(tmp_path, ["harmonize", str(tmp_path / "in.mid"), "--voices", "3"], "mande_balafon")
    _check(results)
    # the notes really are off 12-TET: a 12-TET render would miss by tens of cents
    assert max(abs(want - 100 * round(want / 100)) for want, _ in results["mts"]) > 25
    assert {round(want) % 1200 for want, _ in results["mts"]} <= {round(tuning.cents(60 + k)) % 1200
                                                                   for k in (0, 2, 3, 5, 7, 9, 10)}


def test_continue_in_a_kora_tuning_sounds_within_3_cents(tmp_path):
    _melody(tmp_path / "in.mid", [60, 62, 64, 65, 67, 69, 71, 72, 71, 69, 67, 65, 64, 62, 60, 60])
    results = _measure(tmp_path, ["continue", str(tmp_path / "in.mid"), "--bars", "1", "--seed", "3"],
                       "kora_tomora_ba")
    _check(results)
    assert any(abs(want - 100 * round(want / 100)) >= 15 for want, _ in results["mts"])  # its III or VII sounds

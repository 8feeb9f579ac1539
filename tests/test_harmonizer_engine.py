"""The `harmonizer` engine driven with bridge events (real ONNX Runtime model, no ports)."""

from __future__ import annotations

import subprocess
import sys

import mido
import pytest

from core.engine import EngineContext
from core.errors import ParameterError
from core.events import Beat, Note, NoteOff, NoteOn, Send, TransportChange
from engines import engine_class
from engines.harmonizer.engine import LearnedHarmonizer
from engines.harmonizer.vocab import transpose_tokens
from tests.jackutil import ROOT

MELODY = [72, 74, 76, 77, 79, 77, 76, 74, 72, 71, 72, 72]


def make(**params) -> LearnedHarmonizer:
    engine = LearnedHarmonizer()
    engine.prepare(EngineContext("harm", 1, 120.0))
    for name, value in {"seed": 3, **params}.items():
        engine.set_param(name, value)
    return engine


def play(engine, melody, skip=(), note_delay=0.002):
    """Start, then per beat: the Beat, the previous note's release, the new note just after it.
    Returns (beat, melody pitch, outputs of that beat)."""
    log = [(-1, None, list(engine.process(TransportChange(True, 0.0, 0.0, "start"))))]
    previous = None
    for beat, pitch in enumerate(melody):
        out = list(engine.process(Beat(beat, beat * 0.5, 120.0)))
        if beat in skip:
            if previous is not None:
                out += engine.process(NoteOff(previous, 0, beat * 0.5, beat + note_delay / 2))
                previous = None
            log.append((beat, None, out))
            continue
        if previous is not None:
            out += engine.process(NoteOff(previous, 0, beat * 0.5, beat + note_delay / 2))
        out += engine.process(NoteOn(pitch, 100, 0, beat * 0.5, beat + note_delay))
        previous = pitch
        log.append((beat, pitch, out))
    return log


def sounding_after(outputs, sounding=None):
    sounding = set() if sounding is None else set(sounding)
    for output in outputs:
        if isinstance(output, Send):
            message = output.message
            if message.type == "note_on" and message.velocity:
                sounding.add(message.note)
            elif message.type in ("note_on", "note_off"):
                sounding.discard(message.note)
    return sounding


def test_registered_with_typed_parameters():
    assert engine_class("harmonizer") is LearnedHarmonizer
    engine = LearnedHarmonizer()
    with pytest.raises(ParameterError, match="strategy"):
        engine.set_param("strategy", "beam")
    with pytest.raises(ParameterError, match="clip_folder"):
        engine.set_param("clip_folder", "")
    assert engine.set_param("temperature", "0.5") == 0.5
    assert engine.set_param("clip_folder", " /tmp/x ") == "/tmp/x"


def test_live_chord_on_every_onset_beat_below_the_melody():
    engine = make()
    sounding: set[int] = set()
    for beat, pitch, out in play(engine, MELODY):
        sounding = sounding_after(out, sounding)
        if pitch is None:
            continue
        assert sounding, f"nothing sounds on beat {beat}"
        assert max(sounding) < pitch, (beat, pitch, sorted(sounding))
        assert beat in engine.chords
    assert len(engine.chords) == len(MELODY)


def test_same_seed_same_chords_and_key_shift_is_undone():
    first, second = make(seed=11), make(seed=11)
    play(first, MELODY)
    play(second, MELODY)
    assert first.chords == second.chords
    fixed = make(seed=11, key="C")
    play(fixed, MELODY)
    up = make(seed=11, key="D")
    play(up, [p + 2 for p in MELODY])
    assert [int(t) for t in transpose_tokens(list(fixed.chords.values()), 2)] == list(up.chords.values())


def test_beat_mode_decides_on_the_transport_beat_with_the_held_note():
    engine = make(decide="beat")
    log = play(engine, [72, 72, 72, 72], note_delay=-0.01)  # notes land just before the beat
    starts = [sum(1 for o in out if isinstance(o, Send) and o.message.type == "note_on") for _, _, out in log]
    assert starts[1] > 0  # the first chord at once
    assert set(engine.chords) == {0, 1, 2, 3}


def test_silence_releases_after_release_beats_and_stopped_transport_plays_per_note():
    engine = make(release_beats=1.0)
    log = play(engine, [72, 74], skip=())
    sounding = set()
    for _, _, out in log:
        sounding = sounding_after(out, sounding)
    sounding = sounding_after(engine.process(NoteOff(74, 0, 1.0, 1.5)), sounding)
    assert sounding
    sounding = sounding_after(engine.process(Beat(2, 1.0, 120.0)), sounding)
    sounding = sounding_after(engine.process(Beat(3, 1.5, 120.0)), sounding)
    assert not sounding
    engine.process(TransportChange(False, 4.0, 2.0, "stop"))
    out = engine.process(NoteOn(67, 90, 0, 3.0, 4.0, playing=False))
    sounding = sounding_after(out)
    assert sounding and max(sounding) < 67
    assert not sounding_after(engine.process(NoteOff(67, 0, 3.2, 4.0, playing=False)), sounding)


@pytest.mark.parametrize("style", ["arpeggio", "comping"])
def test_patterned_styles_schedule_notes_inside_the_beat(style):
    engine = make(voicing=style)
    log = play(engine, MELODY[:4])
    for beat, pitch, out in log[1:]:
        notes = [o for o in out if isinstance(o, Note)]
        assert notes, beat
        for note in notes:
            at = beat if note.at_beats is None else note.at_beats
            assert beat <= at < beat + 1 and at + note.duration_beats <= beat + 1 + 1e-9
            assert note.pitch < pitch


def test_clip_of_one_bar_plays_on_the_next_pass_and_is_saved(tmp_path):
    engine = make(mode="clip", clip_bars=1, clip_folder=str(tmp_path), voicing="pad")
    assert engine.latency_beats == 4.0
    log = play(engine, MELODY[:4] + [0] * 8, skip=range(4, 12))
    timed = [(beat, o) for beat, _, out in log for o in out if isinstance(o, Note)]
    assert not [o for beat, o in timed if beat < 4]  # nothing before the loop is harmonized
    assert all(o.at_beats is not None and o.at_beats >= 4.0 for _, o in timed)
    starts = sorted({o.at_beats for _, o in timed})
    assert starts[0] == 4.0 and max(starts) < 13.0
    for beat, note in timed:  # each beat's notes on its Beat, at their song positions
        assert beat <= note.at_beats < beat + 1
    # the second pass repeats the first (empty passes keep the loop)
    first = sorted((o.at_beats - 4.0, o.pitch) for _, o in timed if 4.0 <= o.at_beats < 8.0)
    second = sorted((o.at_beats - 8.0, o.pitch) for _, o in timed if 8.0 <= o.at_beats < 12.0)
    assert first == second and first
    assert [n.pitch for n in engine.clip_mode.looper.clip.melody] == MELODY[:4]  # the last beat's onset counted
    assert len(engine.clip_mode.saved) == 1
    midi = mido.MidiFile(engine.clip_mode.saved[0])
    assert [t.name for t in midi.tracks] == ["melody", "chords"]
    melody = [m.note for m in midi.tracks[0] if m.type == "note_on" and m.velocity]
    assert melody == MELODY[:4]
    assert any(m.type == "marker" for m in midi.tracks[1])
    assert not list(tmp_path.glob(".*.tmp"))


def test_clip_between_start_and_stop_replays_in_sync_on_the_next_start(tmp_path):
    engine = make(mode="clip", clip_bars=0, clip_folder=str(tmp_path))
    log = play(engine, MELODY[:6])
    assert not [o for _, _, out in log for o in out if isinstance(o, Note)]
    engine.process(NoteOff(MELODY[5], 0, 3.0, 6.0))
    engine.process(TransportChange(False, 6.0, 3.0, "stop"))
    assert len(engine.clip_mode.saved) == 1 and engine.clip_mode.looper.clip.length_beats == 8.0
    out = engine.process(TransportChange(True, 0.0, 10.0, "start"))
    out = list(out) + list(engine.process(Beat(0, 10.0, 120.0)))
    notes = [o for o in out if isinstance(o, Note)]
    assert notes and min(n.at_beats for n in notes) == 0.0 and max(n.at_beats for n in notes) < 1.0


def test_locate_releases_the_held_chord_and_switching_to_clip_mode_starts_a_capture():
    engine = make()
    sounding = set()
    for _, _, out in play(engine, MELODY[:3]):
        sounding = sounding_after(out, sounding)
    assert sounding
    assert not sounding_after(engine.process(TransportChange(True, 0.0, 2.0, "locate")), sounding)
    for _, _, out in play(engine, MELODY[:2]):
        sounding = sounding_after(out)
    engine.set_param("mode", "clip")
    assert not sounding_after(engine.process(Beat(2, 1.0, 120.0)), sounding)
    assert engine.clip_mode.looper.capture_origin == 4.0 and engine.clip_mode.looper.capture_end == 20.0


def test_detected_key_has_hysteresis():
    engine = make()
    play(engine, [60, 64, 67, 72, 65, 69, 67, 64, 62, 60])
    assert engine.live_key == (0, "major")
    engine.process(Beat(10, 5.0, 120.0))
    engine.process(NoteOff(60, 0, 5.0, 10.001))
    engine.process(NoteOn(66, 100, 0, 5.0, 10.002))  # one chromatic note does not move the key
    assert engine.live_key == (0, "major")


def test_the_engine_never_imports_torch():
    code = ("import sys; from tests.test_harmonizer_engine import make, play, MELODY; "
            "engine = make(); play(engine, MELODY); assert engine.chords; "
            "sys.exit(3 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False, timeout=60).returncode == 0


def test_a_model_that_cannot_load_fails_in_prepare_and_construction_loads_nothing(tmp_path, monkeypatch):
    import shutil

    import onnx_models
    from core.errors import EngineError, ModelLoadError

    shipped = onnx_models.models_dir()
    shutil.copy(shipped / "harmonizer.card.json", tmp_path)
    (tmp_path / "harmonizer.onnx").write_bytes((shipped / "harmonizer.onnx").read_bytes() + b"\0")
    monkeypatch.setattr(onnx_models, "models_dir", lambda: tmp_path)  # a tampered copy of the model
    engine = LearnedHarmonizer()  # on the thread that asked for it (an OSC swap): loads nothing
    with pytest.raises(EngineError, match="prepare"):
        engine.process(NoteOn(72, 100, 0, 0.0, 0.0, playing=False))
    with pytest.raises(ModelLoadError, match="sha256"):  # the host disables the slot (test_host)
        engine.prepare(EngineContext("harm", 1, 120.0))
    assert not engine.prepared


def test_changing_the_model_loads_it_at_once():
    engine = make()
    first = engine.model
    engine.set_param("model", "harmonizer_midpoint")
    assert engine.model is not first and engine.model.card is not first.card
    # the chorale model knows no 'pop': the style follows it to its own default
    assert first.default_style == "pop" and engine.param("style") == "chorale"


def test_a_clip_folder_that_cannot_be_written_is_logged_and_the_loop_plays_on(tmp_path, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the folder should be")
    engine = make(mode="clip", clip_bars=1, clip_folder=str(blocker / "clips"))
    log = play(engine, MELODY[:4] + [0] * 4, skip=range(4, 8))
    assert engine.clip_mode.save_errors == 1 and "cannot save the loop" in caplog.text
    assert [o for beat, _, out in log if beat >= 4 for o in out if isinstance(o, Note)]


def test_start_to_stop_clip_under_the_internal_clock_that_ran_from_boot(tmp_path):
    engine = make(mode="clip", clip_bars=0, clip_folder=str(tmp_path))
    for beat, pitch in enumerate(MELODY[:8]):  # no TransportChange: the bridge booted playing
        engine.process(Beat(beat, beat * 0.5, 120.0))
        if beat:
            engine.process(NoteOff(MELODY[beat - 1], 0, beat * 0.5, beat + 0.001))
        engine.process(NoteOn(pitch, 100, 0, beat * 0.5, beat + 0.002))
    engine.process(TransportChange(False, 8.0, 4.0, "stop"))
    assert len(engine.clip_mode.saved) == 1 and engine.clip_mode.looper.clip.length_beats == 8.0

"""The `harmonizer` engine's metre and harmonic rhythm: live beats on metric beats for a
lead-sheet model (a test copy of the shipped model whose card says `grid.beats: metric`), on
quarters for a quarter-note model, chords held across a bar or half bar, and the clip mode in
the metre (real ONNX Runtime model, no ports)."""

from __future__ import annotations

import json
import shutil

import mido
import pytest

import onnx_models
from core.events import Beat, Note, NoteOff, NoteOn, Send, TransportChange
from engines.harmonizer import engine as engine_module
from engines.harmonizer import looper as looper_module
from engines.harmonizer.engine import _params
from engines.harmonizer.vocab import token_pitch_classes
from tests.test_harmonizer_engine import make

SCALE = [72, 74, 76, 77, 79, 77, 76, 74, 72, 71, 69, 67]


@pytest.fixture
def metric_models(tmp_path, monkeypatch):
    """The shipped models with `harmonizer` re-labelled as a metric-beat (lead-sheet) model."""
    shipped = onnx_models.models_dir()
    for item in shipped.glob("harmonizer*"):
        shutil.copy(item, tmp_path / item.name)
    card_path = tmp_path / "harmonizer.card.json"
    card = json.loads(card_path.read_text())
    card["grid"]["beats"] = "metric"
    card_path.write_text(json.dumps(card))
    monkeypatch.setattr(onnx_models, "models_dir", lambda: tmp_path)
    return tmp_path


@pytest.fixture
def calls(monkeypatch):
    """Every live model call: (song position, time signature, melody grid, bar flags)."""
    made: list[tuple[float, tuple[int, int], object, object]] = []
    real = engine_module.next_chords

    def recording(model, grid, bars, chords, key, va, style, time_signature, *args, **kwargs):
        made.append((NOW[0], tuple(time_signature), grid, bars))
        return real(model, grid, bars, chords, key, va, style, time_signature, *args, **kwargs)

    monkeypatch.setattr(engine_module, "next_chords", recording)
    return made


NOW = [0.0]


def drive(engine, notes, quarters, onset_delay=0.002):
    """Start, then a transport Beat on every quarter and the notes (pitch, start, end in
    quarters) in time order, each a little after its position. Returns [(time, outputs)]."""
    events = [(float(q), 0, Beat(q, q * 0.5, 120.0)) for q in range(quarters)]
    for pitch, start, end in notes:
        events.append((end + onset_delay / 2, 1, NoteOff(pitch, 0, end * 0.5, end + onset_delay / 2)))
        events.append((start + onset_delay, 2, NoteOn(pitch, 100, 0, start * 0.5, start + onset_delay)))
    log = [(0.0, list(engine.process(TransportChange(True, 0.0, 0.0, "start"))))]
    for at, _, event in sorted(events, key=lambda item: (item[0], item[1])):
        NOW[0] = at
        log.append((at, list(engine.process(event))))
    return log


def legato(step, count, start=0.0):
    """A note on every ``step`` quarters, each held to the next."""
    return [(SCALE[i % len(SCALE)], start + i * step, start + (i + 1) * step) for i in range(count)]


def test_six_eight_with_a_metric_model_decides_on_dotted_quarters_and_tells_the_model(metric_models, calls):
    engine = make(meter="6/8")
    assert engine.model.beats == "metric"
    drive(engine, legato(0.5, 12), 6)  # an eighth note on every eighth for two bars
    assert [round(at, 3) for at, *_ in calls] == [0.002, 1.502, 3.002, 4.502]  # two per bar
    assert sorted(engine.chords) == [0, 1, 2, 3]
    for _, time_signature, grid, bars in calls:
        assert time_signature == (6, 8)
        assert grid.shape[1] == 6  # a step is a dotted quarter: six 16ths
        assert list(bars) == [i % 2 == 0 for i in range(len(bars))]  # bars every two steps


def test_decide_beat_decides_on_the_first_quarter_beat_of_each_metric_beat(metric_models, calls):
    engine = make(meter="6/8", decide="beat")
    drive(engine, legato(0.5, 14), 7, onset_delay=-0.01)  # notes just before the tick
    # the first chord at the first onset, then the Beats at or after 1.5, 3, 4.5 and 6 quarters
    assert [round(at, 2) for at, *_ in calls] == [-0.01, 2.0, 3.0, 5.0, 6.0]
    assert sorted(engine.chords) == [0, 1, 2, 3, 4]


def test_a_quarter_model_in_six_eight_counts_quarters_and_is_told_three_four(calls):
    engine = make(model="harmonizer_chorale", meter="6/8")
    assert engine.model.beats == "quarter"
    drive(engine, legato(0.5, 12), 6)
    assert [round(at, 3) for at, *_ in calls] == [0.002, 1.002, 2.002, 3.002, 4.002, 5.002]
    assert {time_signature for _, time_signature, *_ in calls} == {(3, 4)}


def bar_chords(engine, per_bar):
    by_bar: dict[int, set[int]] = {}
    for beat, token in engine.chords.items():
        by_bar.setdefault(beat // per_bar, set()).add(token)
    return by_bar


def sounding_log(log):
    sounding: set[int] = set()
    states = []
    for at, out in log:
        for output in out:
            if isinstance(output, Send) and output.message.type in ("note_on", "note_off"):
                if output.message.type == "note_on" and output.message.velocity:
                    sounding.add(output.message.note)
                else:
                    sounding.discard(output.message.note)
        states.append((at, set(sounding)))
    return states


@pytest.mark.parametrize("meter, per_bar, bar_quarters", [("4/4", 4, 4.0), ("3/4", 3, 3.0)])
def test_rhythm_bar_holds_one_chord_per_bar_while_the_melody_moves(calls, meter, per_bar, bar_quarters):
    engine = make(meter=meter, rhythm="bar")
    log = drive(engine, legato(1.0, 3 * per_bar), 3 * per_bar)
    assert [round(at, 3) for at, *_ in calls] == [round(b * bar_quarters + 0.002, 3) for b in range(3)]
    assert all(len(tokens) == 1 for tokens in bar_chords(engine, per_bar).values())
    assert len(engine.chords) == 2 * per_bar + 1  # the last bar's later beats are filled at the next decision
    for at, sounding in sounding_log(log):  # the voicing may move under the melody, the chord does not
        if sounding and at > 0.01:
            beat = int((at - 0.0015) // 1)  # (a Beat comes before its onset)
            token = engine.chords[max(b for b in engine.chords if b <= beat)]
            assert {p % 12 for p in sounding} <= set(token_pitch_classes(token)), (at, sounding)


def test_rhythm_bar_with_a_metric_model_in_six_eight(metric_models, calls):
    engine = make(meter="6/8", rhythm="bar")
    drive(engine, legato(0.5, 18), 9)
    assert [round(at, 3) for at, *_ in calls] == [0.002, 3.002, 6.002]


def test_rhythm_half_bar_changes_at_most_twice_a_bar_the_first_half_taking_the_odd_beat(calls):
    engine = make(meter="3/4", rhythm="half-bar")
    drive(engine, legato(1.0, 9), 9)
    assert [round(at, 3) for at, *_ in calls] == [0.002, 2.002, 3.002, 5.002, 6.002, 8.002]
    assert all(len(tokens) <= 2 for tokens in bar_chords(engine, 3).values())


def test_a_span_decided_late_holds_from_its_first_onset_and_a_new_bar_decides_again(calls):
    engine = make(rhythm="bar")
    notes = [(72, 1.0, 2.0), (74, 2.0, 3.0), (76, 3.0, 4.0), (77, 4.0, 5.0), (79, 5.0, 6.0)]
    drive(engine, notes, 6)  # the first bar starts with a rest
    assert [round(at, 3) for at, *_ in calls] == [1.002, 4.002]
    assert engine.chords[1] == engine.chords[2] == engine.chords[3]


def test_patterns_go_on_through_a_held_bar(calls):
    engine = make(rhythm="bar", voicing="arpeggio", release_beats=8.0)
    log = drive(engine, [(76, 0.0, 4.0)], 4)  # one note held through the bar
    assert len(calls) == 1
    starts = sorted({round(o.at_beats if o.at_beats is not None else at, 2) for at, out in log for o in out
                     if isinstance(o, Note)})
    assert starts[0] < 0.01 and {1.0, 2.0, 3.0} <= set(starts)


def test_rhythm_and_strategy_defaults_come_from_the_default_card(tmp_path, monkeypatch):
    shipped = onnx_models.models_dir()
    card = json.loads((shipped / "harmonizer.card.json").read_text())
    card["decoding"] = {"temperature": 0.7, "strategy": "midpoint", "rhythm": "bar"}
    (tmp_path / "harmonizer.card.json").write_text(json.dumps(card))
    monkeypatch.setattr(onnx_models, "models_dir", lambda: tmp_path)
    defaults = {p.name: p.default for p in _params()}
    assert (defaults["temperature"], defaults["strategy"], defaults["rhythm"]) == (0.7, "midpoint", "bar")
    card["decoding"] = {"strategy": "no-such", "rhythm": "no-such"}
    (tmp_path / "harmonizer.card.json").write_text(json.dumps(card))
    defaults = {p.name: p.default for p in _params()}
    assert (defaults["strategy"], defaults["rhythm"]) == ("entropic", "auto")


@pytest.fixture
def clips(monkeypatch):
    """Every clip harmonization: (length in quarters, time signature, options)."""
    made = []
    real = looper_module.harmonize_notes

    def recording(model, melody, length, time_signature, options, *args, **kwargs):
        made.append((length, time_signature, options))
        return real(model, melody, length, time_signature, options, *args, **kwargs)

    monkeypatch.setattr(looper_module, "harmonize_notes", recording)
    return made


def test_clip_in_six_eight_is_bars_of_three_quarters_with_rhythm_and_ending(metric_models, clips, tmp_path):
    engine = make(mode="clip", meter="6/8", clip_bars=2, rhythm="half-bar", ending="free",
                  clip_folder=str(tmp_path / "clips"))
    assert engine.latency_beats == 6.0
    log = drive(engine, legato(0.5, 12), 13)
    assert [(length, ts, o.rhythm, o.ending) for length, ts, o in clips] == [(6.0, (6, 8), "half-bar", "free")]
    clip = engine.clip_mode.looper.clip
    assert clip.length_beats == 6.0 and len({s.start_beats for s in clip.spans}) <= 4
    assert all(span.start_beats % 1.5 == 0 for span in clip.spans)  # half bars of a metric model
    played = [o for at, out in log for o in out if isinstance(o, Note)]
    assert played and min(o.at_beats for o in played) == 6.0
    midi = mido.MidiFile(engine.clip_mode.saved[0])
    signature = next(m for m in midi.tracks[0] if m.type == "time_signature")
    assert (signature.numerator, signature.denominator) == (6, 8)


def test_a_clip_of_one_nine_eight_bar_ends_between_beats_and_loops(clips, tmp_path):
    engine = make(mode="clip", meter="9/8", clip_bars=1, clip_folder=str(tmp_path))
    assert engine.latency_beats == 4.5
    log = drive(engine, legato(0.5, 9), 10)
    assert [(length, ts) for length, ts, _ in clips] == [(4.5, (9, 8))]
    assert engine.clip_mode.looper.capture_origin == 9.0  # the second (empty) pass ended at 9
    assert len(engine.clip_mode.saved) == 1
    played = sorted((o.at_beats, at) for at, out in log for o in out if isinstance(o, Note))
    assert played[0][0] == 4.5 and played[0][1] < 4.5  # handed out before the loop starts
    assert 9.0 in {start for start, _ in played} and played[-1][0] < 10.0  # two passes of 4.5 quarters

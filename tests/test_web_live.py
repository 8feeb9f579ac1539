"""The live view's readings, without a bridge: chord names from sounding notes, planned notes
as a chord per beat, a harmonizer clip's loop ahead, a continuation's state, and the note spans
of the piano roll. (tests/test_web_layout.py shows them in Chromium on a live bridge.)"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bridge.web.live import _clip_plan, _Lane, _state, chord_name, plan_by_beat


@pytest.mark.parametrize("pitches, name", [
    ([], ""), ([60], "C"), ([60, 64, 67], "C"), ([57, 60, 64, 67], "Am7"), ([64, 67, 72], "C/E"),
    ([62, 65, 69, 72], "Dm7"), ([55, 59, 62, 65], "G7"), ([59, 62, 65], "Bdim"), ([60, 65, 67], "Csus4"),
    ([40, 47, 52], "E5"), ([40, 59, 64, 66, 71], "Esus2"), ([59, 67, 62, 65], "G7/B"),
    ([60, 61, 62], "C C# D"), ([60, 63, 65, 66, 68, 69], "6 notes"),
])
def test_chords_are_named_from_their_notes(pitches: list[int], name: str):
    assert chord_name(pitches) == name


def test_planned_notes_are_a_chord_per_beat():
    arpeggio = [(4.0, 4.5, 48), (4.25, 4.5, 52), (4.5, 5.0, 55), (5.0, 6.0, 53), (5.0, 6.0, 57), (5.0, 6.0, 60)]
    assert plan_by_beat(arpeggio) == [[4.0, 5.0, "C"], [5.0, 6.0, "F"]]
    assert plan_by_beat([]) == []


def test_a_looping_clip_shows_its_chords_ahead():
    note = lambda pitch, at, length: SimpleNamespace(pitch=pitch, at_beats=at, duration_beats=length)  # noqa: E731
    clip = SimpleNamespace(length_beats=4.0, spans=[SimpleNamespace(start_beats=0.0, duration_beats=2.0, name="C:maj"),
                                                    SimpleNamespace(start_beats=2.0, duration_beats=2.0, name="G:maj")],
                           events=[note(48, 0.0, 2.0), note(52, 0.0, 2.0), note(55, 0.0, 2.0),
                                   note(43, 2.0, 2.0), note(47, 2.0, 2.0), note(50, 2.0, 2.0)])
    engine = SimpleNamespace(clip_mode=SimpleNamespace(looper=SimpleNamespace(clip=clip, play_origin=8.0)))
    plan = _clip_plan(engine, beats=9.0)
    assert plan[:3] == [[10.0, 12.0, "G"], [12.0, 14.0, "C"], [14.0, 16.0, "G"]]
    assert all(9.0 < start <= 9.0 + 16 for start, _, _ in plan) and len(plan) == 8
    assert _clip_plan(SimpleNamespace(), 9.0) == []  # an engine without a loop plans nothing here
    engine.clip_mode.looper.clip = None
    assert _clip_plan(engine, 9.0) == []


def continuation(**state) -> SimpleNamespace:
    history = SimpleNamespace(notes=[1], open={}, fresh=True, last_activity_beats=5.0)
    values = {"beats_per_bar": 4, "silence_beats": 2.0}
    engine = SimpleNamespace(name="continuation", continuing=False, start_beats=0.0, pending_trigger=False,
                             history=history, values=lambda: values)
    for key, value in state.items():
        setattr(history if hasattr(history, key) else engine, key, value)
    return engine


def test_a_continuation_says_what_it_will_do():
    # Silent since beat 5, it triggers at beat 7 and starts at the bar line a beat later: bar 3.
    assert _state(continuation(), 6.0, None) == "will start at bar 3"
    assert _state(continuation(), 5.2, None) == "listening"  # a gap between two notes says nothing
    assert _state(continuation(), 9.5, None) == "will start at bar 3"  # the engine is still starting
    assert _state(continuation(open={60: (0, 90)}), 6.0, None) == "listening"  # a key still held
    assert _state(continuation(fresh=False), 6.0, None) == "listening"  # this phrase was continued
    assert _state(continuation(pending_trigger=True, fresh=False), 6.0, None) == "will start at bar 3"
    assert _state(continuation(continuing=True, start_beats=8.0), 7.0, None) == "will start at bar 3"
    assert _state(continuation(continuing=True, start_beats=8.0), 9.0, None) == "playing"
    assert _state(continuation(fresh=False), 10.0, 9.0) == "interrupted"
    assert _state(continuation(fresh=False), 14.0, 9.0) == "listening"
    assert _state(SimpleNamespace(name="rule"), 1.0, None) is None


def test_the_piano_roll_keeps_note_spans_of_the_last_bars():
    lane = _Lane()
    lane.update({60, 64}, 0.0)
    lane.update({60}, 1.0)
    lane.update(set(), 2.0)
    lane.update({67}, 12.0)
    assert sorted(lane.recent(12.5)) == [[67, 12.0, None]]  # older than two bars: gone
    assert sorted(lane.recent(2.0)) == [[60, 0.0, 2.0], [64, 0.0, 1.0], [67, 12.0, None]]


def test_file_choices_are_the_allowed_folders_files_and_bounded(tmp_path, monkeypatch):
    from bridge.web import live

    for name in ("b.csv", "a.json", ".hidden.csv"):
        (tmp_path / name).write_text("x")
    (tmp_path / "sub").mkdir()
    assert live._files([tmp_path, tmp_path / "missing"]) == [str(tmp_path / "a.json"), str(tmp_path / "b.csv")]
    monkeypatch.setattr(live, "MAX_FILES", 1)
    assert live._files([tmp_path]) == [str(tmp_path / "a.json")]
    many = tmp_path / "many"
    many.mkdir()
    for number in range(30):
        (many / f"{number:02}.csv").write_text("x")
    monkeypatch.setattr(live, "MAX_FILES", 100)
    monkeypatch.setattr(live, "MAX_SCANNED", 10)
    assert len(live._files([many])) == 10  # a huge folder is not read whole

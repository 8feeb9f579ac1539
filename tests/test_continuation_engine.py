"""The ``continuation`` engine driven with transport and note events (the real shipped ONNX
model through ONNX Runtime; the bridge over JACK is in test_continuation_live.py)."""

from __future__ import annotations

import pytest

from core.engine import EngineContext
from core.errors import ParameterError
from core.events import Beat, NoteOff, NoteOn, Send, Silence, TransportChange
from engines import engine_class
from engines.continuation.engine import ContinuationEngine

C_MAJOR = {0, 2, 4, 5, 7, 9, 11}


def phrase(engine: ContinuationEngine, bars: int = 2) -> list:
    """Start, then a C-major phrase: right-hand quarter notes over left-hand half notes; returns
    the outputs of every event (there should be none while the player plays)."""
    outputs = list(engine.process(TransportChange(True, 0.0, 0.0, "start")))
    melody = [72, 74, 76, 77, 79, 77, 76, 74]
    for beat in range(bars * 4):
        outputs += engine.process(Beat(beat, beat * 0.5, 120.0))
        pitch = melody[beat % len(melody)]
        outputs += engine.process(NoteOn(pitch, 90, 0, beat * 0.5, float(beat)))
        if beat % 2 == 0:
            outputs += engine.process(NoteOn(48 if beat % 4 == 0 else 43, 70, 0, beat * 0.5, float(beat)))
        outputs += engine.process(NoteOff(pitch, 0, beat * 0.5 + 0.4, beat + 0.8))
        if beat % 2 == 1:
            outputs += engine.process(NoteOff(48 if beat % 4 == 1 else 43, 0, beat * 0.5 + 0.4, beat + 0.8))
    return outputs


def beats(engine: ContinuationEngine, first: int, last: int) -> dict[int, list]:
    return {b: list(engine.process(Beat(b, b * 0.5, 120.0))) for b in range(first, last + 1)}


def prepared() -> ContinuationEngine:
    """A continuation engine as the host starts it: the model loaded in ``prepare``."""
    engine = ContinuationEngine()
    engine.prepare(EngineContext("cont", 0, 120.0))
    return engine


@pytest.fixture
def engine() -> ContinuationEngine:
    engine = prepared()
    for name, value in (("bars", 2), ("seed", 7), ("key", "C"), ("silence_beats", 2.0)):
        engine.set_param(name, value)
    return engine


def test_registered_under_its_name() -> None:
    assert engine_class("continuation") is ContinuationEngine


def notes_of(handed: list[tuple[int, Send]]) -> list[tuple[float, float | None, int, int]]:
    """(on, off, pitch, beat it was handed at) of each note from the engine's timed messages."""
    notes: list[list] = []
    for beat, send in handed:
        message = send.message
        if message.type == "note_on" and message.velocity > 0:
            notes.append([send.at_beats, None, message.note, beat])
        else:
            match = next(n for n in notes if n[2] == message.note and n[1] is None)  # no stray off
            match[1] = send.at_beats
    return [tuple(n) for n in notes]


def test_silence_starts_a_continuation_at_the_next_bar_streamed_beat_by_beat(engine) -> None:
    assert phrase(engine) == []
    out = beats(engine, 8, 30)
    assert out[8] == [] and out[9] == []  # silent for 1.2 beats: not yet
    assert engine.generations == 1
    handed = [(b, o) for b, outputs in out.items() for o in outputs]
    assert handed and all(isinstance(o, Send) and o.at_beats is not None for _, o in handed)
    lookahead = engine.param("lookahead_beats")
    for beat, send in handed:
        # a beat (+ look-ahead) at most ahead, never in the past, inside the two bars from bar line 12
        assert beat <= send.at_beats < beat + 1 + lookahead
        assert 12 <= send.at_beats <= 20
    notes = notes_of(handed)
    assert notes and all(off is not None for _, off, _, _ in notes), "every note-on has its note-off"
    for on, off, pitch, _ in notes:
        assert pitch % 12 in C_MAJOR
        assert 0 < off - on <= engine.param("max_note_beats") + 1e-9  # steps / 12 in floats
    assert not engine.continuing
    assert {round(on) for on, _, _, _ in notes} & {12, 13, 14, 15}, "the first bar is played"


def test_playing_again_stops_and_releases(engine) -> None:
    phrase(engine)
    handed: list[tuple[int, Send]] = []
    beat = 8
    while not handed:
        handed += [(beat, o) for o in engine.process(Beat(beat, beat * 0.5, 120.0))]
        beat += 1
        assert beat < 20, "no continuation came"
    assert engine.continuing
    notes = notes_of(handed)
    now = min(on for on, _, _, _ in notes) + 0.01  # the player comes back just after the first note
    released = engine.process(NoteOn(60, 90, 0, now / 2, now))
    assert not engine.continuing
    # The host cancels what was handed out for later and releases what sounds (tested live).
    assert released == [Silence()]
    assert not any(beats(engine, beat, beat + 12).values())  # nothing more is handed out


def test_osc_trigger_and_loop_boundary_start_a_continuation(engine) -> None:
    engine.set_param("silence_beats", 0)  # silence alone never triggers now
    phrase(engine, bars=1)
    assert not any(beats(engine, 4, 8).values())
    engine.set_param("trigger", True)
    assert any(beats(engine, 9, 24).values()) and engine.generations == 1
    # The player comes back, plays, stops; the DAW loops back to bar 1: a new continuation.
    engine.process(NoteOn(65, 80, 0, 12.5, 25.0))
    engine.process(NoteOff(65, 0, 12.7, 25.5))
    assert not any(beats(engine, 26, 27).values())
    engine.reset()  # as the host does before a locate
    engine.process(TransportChange(True, 0.0, 14.0, "locate"))
    out = beats(engine, 0, 12)
    assert engine.generations == 2
    assert [o for outputs in out.values() for o in outputs if o.message.type == "note_on"]


def test_parameters_are_typed(engine) -> None:
    with pytest.raises(ParameterError, match="temperature"):
        engine.set_param("temperature", 0)
    with pytest.raises(ParameterError, match="style"):
        engine.set_param("style", "jazz")
    with pytest.raises(ParameterError, match="bars"):
        engine.set_param("bars", 2.5)
    assert engine.set_param("top_p", "0.9") == 0.9


def test_left_hand_on_its_own_channel(engine) -> None:
    engine.set_param("left_channel", 4)
    phrase(engine)
    sends = [o for outputs in beats(engine, 8, 30).values() for o in outputs]
    assert sends and {s.channel for s in sends} == {None, 3}, "right hand on the slot's channel, left on 4"
    open_notes: dict[tuple[int | None, int], float] = {}
    for send in sends:  # every note-off closes a note-on of the same hand (channel) and pitch
        key = (send.channel, send.message.note)
        if send.message.type == "note_on" and send.message.velocity > 0:
            assert key not in open_notes
            open_notes[key] = send.at_beats
        else:
            assert open_notes.pop(key) <= send.at_beats
    assert not open_notes
    low = [s.message.note for s in sends if s.channel == 3]
    high = [s.message.note for s in sends if s.channel is None]
    assert sum(low) / len(low) < sum(high) / len(high), "channel 4 carries the lower (left) hand"
    with pytest.raises(ParameterError):
        engine.set_param("left_channel", 17)


def test_valence_from_params_turns_the_continuation_to_the_parallel_mode() -> None:
    """va_source params + valence: mode steering (default) makes E, A and B of the C-major phrase
    give way to E-flat, A-flat and B-flat at valence -0.8, and keeps them at +0.8 (shipped model)."""

    def degree_counts(valence: float, steer: float) -> tuple[int, int]:
        minor = major = 0
        for seed in range(3):
            engine = prepared()
            for name, value in (("bars", 4), ("seed", seed), ("silence_beats", 2.0), ("va_source", "params"),
                                ("valence", valence), ("mode_steer", steer)):
                engine.set_param(name, value)
            phrase(engine)
            out = beats(engine, 8, 40)
            pitches = [o.message.note for outputs in out.values() for o in outputs
                       if o.message.type == "note_on" and o.message.velocity > 0]
            minor += sum(p % 12 in (3, 8, 10) for p in pitches)
            major += sum(p % 12 in (4, 9, 11) for p in pitches)
        return minor, major

    engine = ContinuationEngine()
    engine.set_param("valence", -0.8)
    assert engine._config(48).mode_steer == 0.0, "va_source music: the player's own mode, no steering"
    assert engine._config(48).density_bias == engine.param("density_bias") > 0  # the player's own density
    engine.set_param("va_source", "params")
    assert engine._config(48).mode_steer == engine.param("mode_steer") == 5.0
    assert engine._config(48).density_bias == engine._config(48).pattern_bias == 0.0  # arousal sets them
    dark, bright = degree_counts(-0.8, 3.0), degree_counts(0.8, 3.0)
    assert dark[0] > dark[1], f"minor degrees {dark[0]} vs major {dark[1]} at valence -0.8"
    assert bright[1] > 3 * max(1, bright[0]), f"major degrees {bright[1]} vs minor {bright[0]} at valence 0.8"
    assert dark[0] / max(1, sum(dark)) > bright[0] / max(1, sum(bright)) + 0.4


def test_register_follows_the_players_hands_unless_free(engine) -> None:
    """Phrase: right hand 72..79, left 43..48; default register "prompt" keeps each hand within
    5 semitones of that range."""
    assert engine.param("register") == "prompt"
    engine.set_param("left_channel", 4)
    phrase(engine)
    sends = [o for outputs in beats(engine, 8, 14).values() for o in outputs]
    assert engine.stream is not None, "continuing from bar line 12"
    config = engine.stream.stream.config
    assert (config.right_range, config.left_range) == ((67, 84), (38, 53))
    sends += [o for outputs in beats(engine, 15, 30).values() for o in outputs]
    ons = [s for s in sends if s.message.type == "note_on" and s.message.velocity > 0]
    right = [s.message.note for s in ons if s.channel is None]
    left = [s.message.note for s in ons if s.channel == 3]
    assert right and left
    assert all(67 <= p <= 84 for p in right) and all(38 <= p <= 53 for p in left), (right, left)
    engine.set_param("register", "free")
    assert engine._config(48).right_range == (48, 108)
    with pytest.raises(ParameterError):
        engine.set_param("register", "wide")

"""Conformance tests generated from the engine registry: every engine gets the same checks."""

from __future__ import annotations

import pytest

from core.errors import EngineError, ParameterError
from core.events import Beat, ControlChange, Note, NoteOff, NoteOn, Send, Silence, TransportChange
from engines import available_engines, engine_class
from core.engine import Engine, Param

ENGINES = sorted(available_engines())
EVENTS = [
    TransportChange(True, 0.0, 0.0, "start"),
    Beat(0, 0.0, 120.0),
    NoteOn(72, 100, 0, 0.01, 0.02),
    ControlChange(1, 64, 0, 0.02),
    NoteOn(76, 90, 0, 0.5, 1.0),
    Beat(1, 0.5, 120.0),
    NoteOff(72, 0, 0.6, 1.2),
    NoteOff(76, 0, 0.7, 1.4),
    Beat(2, 1.0, 120.0),
    Beat(3, 1.5, 120.0),
    TransportChange(False, 3.0, 1.6, "stop"),
]


def test_builtins_are_registered():
    assert {"rule", "thru"} <= set(ENGINES)


@pytest.mark.parametrize("name", ENGINES)
def test_declared_parameters_are_valid(name):
    cls = engine_class(name)
    assert issubclass(cls, Engine) and cls.name == name
    names = [p.name for p in cls.params]
    assert len(names) == len(set(names))
    engine = cls()
    for param in cls.params:
        assert param.coerce(param.default) == param.default
        assert engine.param(param.name) == param.default
        if param.kind in ("int", "float") and param.maximum is not None:
            with pytest.raises(ParameterError, match=param.name):
                engine.set_param(param.name, param.maximum + 1)
    with pytest.raises(ParameterError, match="valid:"):
        engine.set_param("no-such-parameter", 1)


@pytest.mark.parametrize("name", ENGINES)
def test_process_returns_valid_outputs_for_every_event_kind(name):
    engine = engine_class(name)()
    for event in EVENTS:
        for output in engine.process(event):
            assert isinstance(output, (Note, Send, Silence))
            if isinstance(output, Send):
                assert output.message.type in ("note_on", "note_off", "control_change", "pitchwheel")
    engine.reset()


@pytest.mark.parametrize("name", ENGINES)
def test_every_note_on_is_matched_by_a_note_off_or_reset(name):
    engine = engine_class(name)()
    sounding: set[int] = set()
    for event in EVENTS[:-1]:
        for output in engine.process(event):
            if isinstance(output, Send) and output.message.type == "note_on" and output.message.velocity:
                sounding.add(output.message.note)
            elif isinstance(output, Send) and output.message.type in ("note_off", "note_on"):
                sounding.discard(output.message.note)
            elif isinstance(output, Silence):  # the host releases every note of the slot
                sounding.clear()
    assert not sounding, f"{name} left {sorted(sounding)} sounding after every key was released"


def test_unknown_engine_lists_the_valid_ones():
    with pytest.raises(EngineError, match="available: .*rule"):
        engine_class("nope")
    with pytest.raises(EngineError, match="cannot import"):
        engine_class("no.such.module:Engine")


def test_param_declarations_are_strict():
    with pytest.raises(ValueError, match="kind"):
        Param("x", "string", "a")
    with pytest.raises(ValueError, match="needs choices"):
        Param("x", "choice", "a")
    level = Param("level", "float", 0.5, 0.0, 1.0, unit="gain")
    assert level.coerce("0.25") == 0.25
    with pytest.raises(ParameterError, match="NaN"):
        level.coerce(float("nan"))
    with pytest.raises(ParameterError, match="not a number"):
        level.coerce("loud")
    toggle = Param("on", "bool", False)
    assert toggle.coerce("on") is True and toggle.coerce(0) is False
    with pytest.raises(ParameterError, match="not a boolean"):
        toggle.coerce("maybe")
    with pytest.raises(ParameterError, match="not an integer"):
        Param("n", "int", 1, 0, 10).coerce(2.5)
    # A map or a config file can hold an integer no float can hold (an OverflowError before).
    with pytest.raises(ParameterError, match="level: '1000000000000000000000000000000000000000"):
        level.coerce(10 ** 400)


def test_text_parameters_take_one_line_of_text():
    folder = Param("clip_folder", "text", "~/clips", unit="folder")
    assert folder.coerce("  /tmp/loops ") == "/tmp/loops"
    assert folder.describe_range() == "text (folder)"
    for bad in ("", "   ", 3, "a\nb", "x" * 5000):
        with pytest.raises(ParameterError, match="clip_folder"):
            folder.coerce(bad)
    with pytest.raises(ParameterError):
        Param("song", "text", "")

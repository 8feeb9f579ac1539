"""Conformance tests generated from the engine registry: every engine gets the same checks."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bridge.host import cuts_output
from core.engine import Engine, EngineContext, Param
from core.errors import EngineError, ParameterError
from core.events import Beat, ControlChange, Note, NoteOff, NoteOn, Send, Silence, TransportChange
from engines import available_engines, engine_class
from tests.jackutil import ROOT

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


def prepared(name: str) -> Engine:
    """An engine as the host starts it: built, then prepared (models loaded)."""
    engine = engine_class(name)()
    engine.prepare(EngineContext("slot", 1, 120.0))
    assert engine.prepared
    return engine


def feed(engine: Engine, event) -> list:
    """One event as the host's worker gives it: a stop or locate resets the engine first."""
    if cuts_output(event):
        engine.reset()
    return list(engine.process(event))


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
def test_the_whole_life_prepare_process_reset_release(name):
    engine = prepared(name)
    for event in EVENTS + [TransportChange(True, 0.0, 2.0, "start"), TransportChange(True, 8.0, 2.5, "locate")]:
        for output in feed(engine, event):
            assert isinstance(output, (Note, Send, Silence))
            if isinstance(output, Send):
                assert output.message.type in ("note_on", "note_off", "control_change", "pitchwheel")
    engine.reset()
    engine.release()


@pytest.mark.parametrize("name", ENGINES)
def test_capabilities_are_declared_and_kept(name):
    cls = engine_class(name)
    assert isinstance(cls.provides, frozenset) and cls.provides <= {"affect"}
    if "affect" in cls.provides:  # the affect follower reads it from another thread
        valence, arousal = prepared(name).current()
        assert -1.0 <= valence <= 1.0 and -1.0 <= arousal <= 1.0


def test_importing_an_engine_reads_no_folder():
    """Parameter choices from files (model cards, a song folder) are built on first use."""
    code = ("import pathlib, sys\n"
            "def refuse(*a, **k): raise AssertionError('a folder was listed at import')\n"
            "pathlib.Path.glob = pathlib.Path.iterdir = pathlib.Path.rglob = refuse\n"
            "import importlib; from engines import available_engines\n"
            "for spec in available_engines().values():\n"
            "    importlib.import_module(spec.partition(':')[0])\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("name", ENGINES)
def test_every_note_on_is_matched_by_a_note_off_or_reset(name):
    engine = prepared(name)
    sounding: set[int] = set()
    for event in EVENTS[:-1]:
        for output in feed(engine, event):
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
    # A map or a config file can hold an integer no float can hold (float() raises OverflowError).
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

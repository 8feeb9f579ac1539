"""Control maps: every shipped map loads against the default slots and survives a save/load
round trip; bad maps fail naming the file, the line and the valid choices; value scaling."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.maps import Binding, load_map, parse_map, resolve_target, save_map, without_lines
from core.errors import MappingError
from engines import available_engines, engine_class
from midi_maps import maps_dir

SLOTS = {"rule": engine_class("rule"), "mon": engine_class("thru"), "song": engine_class("snc")}
SHIPPED = sorted(maps_dir().glob("*.toml"))


def test_maps_are_shipped():
    assert {p.stem for p in SHIPPED} >= {"generic_8knob", "browser", "snc_mixer"}


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_map_loads_and_round_trips(path: Path, tmp_path: Path):
    first = load_map(path, SLOTS)
    assert first.bindings
    copy = tmp_path / path.name
    save_map(first, copy)
    second = load_map(copy, SLOTS)
    assert without_lines(second.bindings) == without_lines(first.bindings)
    assert (second.name, second.description, second.feedback) == (first.name, first.description, first.feedback)
    save_map(second, copy)  # a second save writes the same text
    assert load_map(copy, SLOTS).bindings == second.bindings
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind


def _error(text: str) -> str:
    with pytest.raises(MappingError) as caught:
        parse_map(text, "pads.toml", SLOTS)
    return str(caught.value)


GOOD = '[map]\nname = "x"\n\n[[bind]]\ncc = 1\ntarget = "rule/velocity"\n\n'


def test_unknown_parameter_names_file_line_and_the_valid_parameters():
    message = _error(GOOD + '[[bind]]\ncc = 2\nchannel = 1\ntarget = "rule/colour"\n')
    assert message.startswith("pads.toml:11: ")
    assert "'colour'" in message and "valid: engine, enabled, key, sevenths, voices" in message


def test_unknown_slot_and_action_list_the_choices():
    assert "pads.toml:10: " in _error(GOOD + '[[bind]]\nnote = 3\ntarget = "harmony/style"\n')
    assert "slots: rule, mon" in _error(GOOD + '[[bind]]\nnote = 3\ntarget = "harmony/style"\n')
    message = _error(GOOD + '[[bind]]\nnote = 3\ntarget = "explode"\n')
    assert "pads.toml:10: " in message and "actions: panic, transport/start" in message


def test_out_of_range_values_name_the_range():
    message = _error(GOOD + '[[bind]]\ncc = 2\ntarget = "rule/velocity"\nmin = 0\nmax = 127\n')
    assert message.startswith("pads.toml:11: ") and "1..127" in message
    message = _error(GOOD + '[[bind]]\nnote = 2\ntarget = "rule/key"\nvalue = "H"\n')
    assert message.startswith("pads.toml:11: ") and "C, C#, D" in message
    assert "pads.toml:9: cc must be an integer 0..127" in _error(
        GOOD + '[[bind]]\ncc = 200\ntarget = "rule/velocity"\n')
    assert "channel must be an integer 1..16" in _error(GOOD + '[[bind]]\ncc = 2\nchannel = 17\ntarget = "panic"\n')


@pytest.mark.parametrize("lines, expected", [
    ('cc = 2\ntarget = "rule/velocity"\nscale = "wobble"', "is not one of linear, log, toggle"),
    ('cc = 2\ntarget = "affect/valence"\nscale = "log"', "min > 0"),
    ('cc = 2\ntarget = "rule/velocity"\nscale = "toggle"', "needs an on/off parameter"),
    ('note = 2\ntarget = "rule/velocity"\nscale = "relative_twos"', "needs a cc source"),
    ('cc = 2\ntarget = "panic"\nscale = "linear"', "is an action"),
    ('cc = 2\ntarget = "rule/velocity"\nscale = "trigger"', "only for actions"),
    ('cc = 2\ntarget = "rule/velocity"\nvalues = [1, 2]', "values only applies to choice targets"),
    ('cc = 2\nnote = 3\ntarget = "panic"', "exactly one source"),
    ('cc = 2\ntarget = "panic"\ncolour = "red"', "unknown key 'colour'"),
])
def test_bad_scaling_is_refused_with_the_reason(lines: str, expected: str):
    message = _error(GOOD + "[[bind]]\n" + lines + "\n")
    assert message.startswith("pads.toml:") and expected in message


def test_invalid_toml_and_missing_file_name_the_file(tmp_path: Path):
    assert "pads.toml: invalid TOML" in _error("[[bind]\ncc = 1")
    with pytest.raises(MappingError, match="does not exist"):
        load_map(tmp_path / "missing.toml", SLOTS)


def _fire(binding: Binding, raw: int, current=None, pressed=True):
    target = resolve_target(binding.target, SLOTS)
    return binding.value_for(target, raw, raw / 127, pressed, current)


def test_linear_and_log_scaling_and_their_inverse():
    velocity = Binding("cc", 1, "rule/velocity")
    assert [_fire(velocity, r) for r in (0, 64, 127)] == [1, 64, 127]
    release = Binding("cc", 1, "rule/release_beats", scale="log")  # 0.25..8 beats
    assert _fire(release, 0) == pytest.approx(0.25)
    assert _fire(release, 127) == pytest.approx(8.0)
    assert _fire(release, 64) == pytest.approx(0.25 * 32 ** (64 / 127))
    target = resolve_target("rule/release_beats", SLOTS)
    for raw in (0, 10, 64, 100, 127):  # feedback shows the control where it was
        assert release.raw_for(target, _fire(release, raw)) == raw
    narrow = Binding("cc", 1, "rule/low_note", minimum=36, maximum=72)
    assert _fire(narrow, 127) == 72 and _fire(narrow, 0) == 36


def test_choices_toggles_fixed_values_and_triggers():
    key = Binding("cc", 1, "rule/key", values=("auto", "C", "G"))
    assert [_fire(key, r) for r in (0, 42, 43, 127)] == ["auto", "auto", "C", "G"]
    sevenths = Binding("note", 39, "rule/sevenths", scale="toggle")
    assert _fire(sevenths, 100, current=False) is True
    assert _fire(sevenths, 0, current=True, pressed=False) is None  # the release does nothing
    pad = Binding("note", 43, "rule/engine", scale="fixed", value="thru")
    assert _fire(pad, 90, current="rule") == "thru"
    target = resolve_target("rule/engine", SLOTS)
    assert pad.raw_for(target, "thru") == 127 and pad.raw_for(target, "rule") == 0
    panic = Binding("note", 36, "panic", scale="trigger")
    assert _fire(panic, 1) is True and _fire(panic, 0, pressed=False) is None


@pytest.mark.parametrize("scale, up, down", [
    ("relative_twos", 3, 125),      # +3, -3
    ("relative_signed", 3, 67),     # +3, -3 (bit 6 is the sign)
    ("relative_offset", 67, 61),    # 64 +- 3
])
def test_relative_encoders(scale: str, up: int, down: int):
    encoder = Binding("cc", 1, "rule/velocity", scale=scale)
    assert _fire(encoder, up, current=100) == 103
    assert _fire(encoder, down, current=100) == 97
    assert _fire(encoder, up, current=126) == 127  # clamped to the declared range
    stepped = Binding("cc", 1, "rule/release_beats", scale=scale, step=0.5)
    assert _fire(stepped, up, current=1.0) == pytest.approx(2.5)


def test_saved_maps_keep_one_table_per_binding_so_errors_have_lines(tmp_path: Path):
    saved = tmp_path / "mine.toml"
    save_map(load_map(maps_dir() / "generic_8knob.toml", SLOTS), saved)
    text = saved.read_text()
    assert text.count("[[bind]]") == len(load_map(saved, SLOTS).bindings)
    lines = text.splitlines()
    assert all(lines[b.line - 1] == "[[bind]]" for b in load_map(saved, SLOTS).bindings)
    inline = 'bind = [\n  { cc = 1, target = "rule/velocity" },\n  { cc = 2, target = "rule/volume" },\n]\n'
    assert _error(inline).startswith("pads.toml:1: ")  # inline tables: the line of `bind =`


def test_config_control_and_web_sections(tmp_path: Path):
    from bridge.config import load_config

    mine = tmp_path / "knobs.toml"
    mine.write_text('[[bind]]\ncc = 1\ntarget = "rule/velocity"\n')
    config_file = tmp_path / "bridge.toml"
    config_file.write_text('[control]\nmaps = ["knobs.toml", "generic_8knob"]\nconnect = ["nanoKONTROL"]\n'
                           'learn_map = "learned.toml"\n\n[web]\nport = 9999\nallow_remote = true\ntoken = "t"\n')
    config = load_config(config_file)
    assert config.control_maps == [str(mine), "generic_8knob"]  # relative to the config file, or shipped
    assert config.connect_control == ["nanoKONTROL"] and config.learn_map == tmp_path / "learned.toml"
    assert (config.web_port, config.web_port_explicit, config.web_allow_remote, config.web_token) == \
        (9999, True, True, "t")
    config_file.write_text("[web]\nenabled = false\n[control]\nfeedback_ms = 5\n")
    with pytest.raises(Exception, match=r"\[control\]: unknown keys \['feedback_ms'\]"):
        load_config(config_file)


def test_a_slot_cannot_take_a_bridge_address():
    from bridge.config import parse_slot_flag
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot be called 'transport'"):
        parse_slot_flag("transport=rule")


def _conformance_table(param) -> dict:
    """A binding suited to ``param``'s kind (what a map author would write for it)."""
    if param.kind in ("int", "float") and param.minimum is not None and param.maximum is not None:
        return {"cc": 1, "scale": "linear"}
    if param.kind == "choice":
        return {"cc": 1, "values": list(param.choices)}
    if param.kind == "bool":
        return {"note": 1, "scale": "toggle"}
    return {"note": 1, "value": param.default}


ENGINES = sorted(available_engines())


@pytest.mark.parametrize("engine", ENGINES)
def test_every_declared_parameter_of_every_engine_can_be_mapped(engine: str, tmp_path: Path):
    """Generated from the registry: harmonizer style and voicing, a continuation trigger, SNC
    contexts and stem gains are reached the same way as the rule engine's parameters."""
    import tomli_w

    cls = engine_class(engine)
    slots = {"s": cls}
    tables = [{**_conformance_table(p), "target": f"s/{p.name}"} for p in cls.params]
    text = tomli_w.dumps({"bind": tables}) if tables else ""
    bindings = parse_map(text, f"{engine}.toml", slots).bindings
    assert len(bindings) == len(cls.params)
    for param, binding in zip(cls.params, bindings):
        target = resolve_target(binding.target, slots)
        if binding.scale == "linear" and param.kind in ("int", "float"):
            low, high = _fire_on(binding, slots, 0), _fire_on(binding, slots, 127)
            assert (low, high) == (param.coerce(param.minimum), param.coerce(param.maximum))
            assert binding.raw_for(target, high) == 127 and binding.raw_for(target, low) == 0
        elif param.kind == "choice":
            reached = {_fire_on(binding, slots, raw) for raw in range(128)}
            assert reached == set(param.choices)  # every choice has its slice of the travel
        elif binding.scale == "toggle":
            assert binding.value_for(target, 127, 1.0, True, False) is True
        else:
            assert param.coerce(_fire_on(binding, slots, 127)) == param.default
    save_map(parse_map(text, f"{engine}.toml", slots), tmp_path / "m.toml")
    assert without_lines(load_map(tmp_path / "m.toml", slots).bindings) == without_lines(bindings)


def test_text_parameters_take_fixed_values_only():
    text_params = [(name, p) for name in ENGINES for p in engine_class(name).params
                   if p.kind not in ("int", "float", "bool", "choice")]
    if not text_params:
        pytest.skip("no registered engine declares a text parameter")
    name, param = text_params[0]
    with pytest.raises(MappingError, match="engines.toml:1: .*fixed value"):
        parse_map(f'[[bind]]\ncc = 1\ntarget = "s/{param.name}"\n', "engines.toml", {"s": engine_class(name)})


def _fire_on(binding: Binding, slots, raw: int):
    return binding.value_for(resolve_target(binding.target, slots), raw, raw / 127, True, None)


def test_maps_command_lists_and_checks(tmp_path: Path):
    import subprocess
    import sys

    from tests.jackutil import ROOT

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "bridge", "maps", *args], cwd=ROOT, capture_output=True,
                              text=True, timeout=60, check=False)

    listing = run("list")
    assert listing.returncode == 0 and "generic_8knob:" in listing.stdout and "browser:" in listing.stdout
    assert run("check", "generic_8knob").returncode == 0
    bad = tmp_path / "mine.toml"
    bad.write_text('[[bind]]\ncc = 1\ntarget = "mon/transpose"\n')
    checked = run("check", str(bad))  # the default slots have no "mon"
    assert checked.returncode == 1 and f"{bad}:3: " in checked.stderr and "slots: rule" in checked.stderr
    assert run("check", str(bad), "--slot", "mon=thru").returncode == 0

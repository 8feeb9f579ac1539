"""MIDI learn on a running bridge: arm over OSC, move a control on a real rtmidi controller
(JACK dummy server), the binding is saved to the learn map, used at once and after a restart."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bridge.maps import load_map
from engines import engine_class
from tests.test_maps_live import Controller, OscListener, surfaces, wait_until  # noqa: F401 (fixture)

pytestmark = pytest.mark.jack
SLOTS = {"rule": engine_class("rule")}


def test_learn_binds_saves_and_survives_a_restart(start_bridge, surfaces, tmp_path: Path):  # noqa: F811
    learned = tmp_path / "maps" / "learned.toml"
    bridge = start_bridge("--learn-map", str(learned), "--no-web")
    knobs = surfaces(Controller.for_bridge, bridge)
    osc = surfaces(OscListener, bridge.osc_port)

    osc.send("/scorebridge/learn", "rule/low_note")
    assert wait_until(lambda: "rule/low_note" in osc.values("/scorebridge/learn"))
    knobs.send(0xB2, 20, 10)  # the control that moves first (CC 20, channel 3) is learned
    assert wait_until(lambda: "rule/low_note" in osc.values("/scorebridge/learn/done"))
    assert wait_until(learned.exists)
    first = load_map(learned, SLOTS).bindings
    assert [(b.source, b.number, b.channel, b.target, b.scale) for b in first] == \
        [("cc", 20, 2, "rule/low_note", "linear")]
    knobs.send(0xB2, 20, 127)  # now it drives the parameter
    assert wait_until(lambda: 84 in osc.values("/scorebridge/rule/low_note"))

    osc.send("/scorebridge/learn", "rule/bass")  # a pad on an on/off parameter toggles it
    assert wait_until(lambda: osc.values("/scorebridge/learn")[-1:] == ["rule/bass"])
    knobs.send(0x90, 50, 100)
    assert wait_until(lambda: "rule/bass" in osc.values("/scorebridge/learn/done"))
    knobs.send(0x90, 50, 100)
    assert wait_until(lambda: 0 in osc.values("/scorebridge/rule/bass")
                      or False in osc.values("/scorebridge/rule/bass"))

    osc.send("/scorebridge/learn", "rule/low_note")  # learning the same knob again replaces it
    assert wait_until(lambda: osc.values("/scorebridge/learn")[-1:] == ["rule/low_note"])
    osc.send("/scorebridge/learn/cancel")
    assert wait_until(lambda: osc.values("/scorebridge/learn")[-1:] == [""])
    osc.send("/scorebridge/learn", "rule/colour")  # refused with the valid names
    assert wait_until(lambda: any("colour" in str(v) and "low_note" in str(v)
                                  for v in _errors(osc)))

    saved = load_map(learned, SLOTS).bindings
    assert [(b.source, b.number, b.target) for b in saved] == [("cc", 20, "rule/low_note"),
                                                                ("note", 50, "rule/bass")]
    assert not [p for p in learned.parent.iterdir() if p.name != "learned.toml"]  # atomic: no leftovers
    bridge.stop()

    again = start_bridge("--learn-map", str(learned), "--no-web")  # load, learn, save, load
    knobs2 = surfaces(Controller.for_bridge, again, "knobs2")
    osc2 = surfaces(OscListener, again.osc_port)
    time.sleep(0.2)
    knobs2.send(0xB2, 20, 0)
    assert wait_until(lambda: 24 in osc2.values("/scorebridge/rule/low_note"))


def _errors(osc: OscListener) -> list[str]:
    return [str(args[0]) for address, args in list(osc.messages) if address == "/scorebridge/error"]


def test_bindings_learned_for_other_slots_are_kept_but_not_used(tmp_path: Path):
    from bridge.learn import Learner

    path = tmp_path / "learned.toml"
    path.write_text('[map]\nname = "learned"\n\n[[bind]]\ncc = 20\nchannel = 1\ntarget = "rule/velocity"\n\n'
                    '[[bind]]\ncc = 21\nchannel = 1\ntarget = "strings/velocity"\n', encoding="utf-8")
    learner = Learner(None, path, SLOTS)  # type: ignore[arg-type]  # controls only used to learn
    assert [b.target for b in learner.map.bindings] == ["rule/velocity"]
    assert learner.unused_tables == [{"cc": 21, "channel": 1, "target": "strings/velocity"}]
    from bridge.maps import save_map

    save_map(learner.map, path, learner.unused_tables)  # what learning a new control does
    again = Learner(None, path, {**SLOTS, "strings": engine_class("rule")})  # type: ignore[arg-type]
    assert sorted(b.target for b in again.map.bindings) == ["rule/velocity", "strings/velocity"]


def test_a_broken_learn_map_is_still_an_error_naming_the_file(tmp_path: Path):
    from bridge.learn import Learner
    from core.errors import MappingError

    path = tmp_path / "learned.toml"
    path.write_text("[[bind]\ncc = 1\n", encoding="utf-8")
    with pytest.raises(MappingError, match="learned.toml"):
        Learner(None, path, SLOTS)  # type: ignore[arg-type]

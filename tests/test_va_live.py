"""The `va` automation engine: transport -> video time -> CC lanes; manual override over OSC."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from core.events import Beat, NoteOn, Send, TransportChange
from engines.va import VACurve, write_curve
from engines.va.errors import CurveError
from engines.va.live import Playhead, VAAutomation
from tests.jackutil import ROOT
from tests.test_bridge_live import output_state, status


def _step_curve() -> VACurve:
    times = np.array([0.0, 3.95, 4.05, 60.0])
    return VACurve(times, np.array([-0.5, -0.5, 0.5, 0.5]), np.array([-1.0, -1.0, 1.0, 1.0]))


def _play(engine: VAAutomation, beats: int, tempo: float = 120.0, start_s: float = 10.0) -> list[Send]:
    outputs = list(engine.process(TransportChange(True, 0.0, start_s, "start")))
    for index in range(beats):
        outputs += engine.process(Beat(index, start_s + index * 60.0 / tempo, tempo))
    return outputs


def _lane(outputs: list[Send], control: int) -> list[tuple[float, int]]:
    return [(o.at_beats, o.message.value) for o in outputs if o.message.control == control]


def test_playhead_measures_song_time_through_tempo_changes_and_restarts_on_jumps():
    head = Playhead()
    assert head.beat(0, 5.0, 120.0) == 0.0
    assert head.beat(1, 5.5, 120.0) == pytest.approx(0.5)
    assert head.beat(2, 5.9, 150.0) == pytest.approx(0.9)  # the DAW sped up: measured, not assumed
    assert head.beat(8, 9.0, 150.0) == pytest.approx(8 * 0.4)  # a jump: re-estimated from the tempo
    head.locate(4.0, 120.0)
    assert head.song_s == pytest.approx(2.0)


def test_lanes_follow_the_curve_a_beat_ahead_and_only_on_change():
    engine = VAAutomation(_step_curve())
    outputs = _play(engine, 16)
    arousal, valence = _lane(outputs, 11), _lane(outputs, 1)
    assert arousal[0] == (0.0, 32) and valence[0] == (0.0, 56)
    assert arousal[-1][1] == 127 and valence[-1][1] == 103
    assert all(value == 32 for beats, value in arousal if beats < 7.9)  # 4 s = beat 8 at 120 BPM
    assert all(value == 127 for beats, value in arousal if beats > 8.1)
    assert len(arousal) <= 4 and len(valence) <= 4
    assert engine.current() == pytest.approx((0.5, 1.0))


def test_offset_shifts_the_video_time_and_sub_beat_steps_land_between_beats():
    engine = VAAutomation(_step_curve())
    engine.set_param("offset_s", 3.0)
    engine.set_param("steps_per_beat", 8)
    arousal = _lane(_play(engine, 4), 11)
    # video 3.95..4.05 s = song 0.95..1.05 s = beats 1.9..2.1: the ramp falls on 1/8-beat steps
    changes = [beats for beats, _ in arousal[1:]]
    assert changes and all(1.8 < beats < 2.2 for beats in changes)
    assert arousal[-1][1] == 127


def test_manual_override_and_controller_changes():
    engine = VAAutomation(_step_curve())
    _play(engine, 2)
    engine.set_param("manual", True)
    engine.set_param("arousal", 0.8)
    outputs = engine.process(Beat(2, 11.0, 120.0))
    assert (2.0, 118) in _lane(outputs, 11)  # 32 + 95 * 1.8 / 2
    engine.set_param("cc_arousal", 7)
    outputs = engine.process(Beat(3, 11.5, 120.0))
    assert _lane(outputs, 7) == [(3.0, 118)] and _lane(outputs, 1)  # every lane is sent again
    assert engine.process(NoteOn(60, 100, 0, 0.0, 0.0)) == ()


def test_without_a_curve_it_plays_neutral_and_reset_resends():
    engine = VAAutomation()
    outputs = _play(engine, 2)
    assert _lane(outputs, 11) == [(0.0, 80)] and _lane(outputs, 1) == [(0.0, 80)]
    engine.reset()
    assert _lane(list(engine.process(Beat(0, 0.0, 120.0))), 11) == [(0.0, 80)]


def test_from_file_validates(tmp_path):
    path = tmp_path / "va.csv"
    write_curve(_step_curve(), path)
    assert VAAutomation.from_file(path).curve.duration_s == 60.0
    path.write_text("time_s,valence,arousal\n0,0,0\n0,0,0\n")
    with pytest.raises(CurveError, match="line 3"):
        VAAutomation.from_file(path)


@pytest.mark.jack
def test_the_engine_streams_cc_in_a_running_bridge_and_osc_overrides_it(start_bridge, peer_for):
    bridge = start_bridge("--slot", "va=engines.va.live:VAAutomation@all/1", "--tempo", "240")
    peer = peer_for(bridge)

    def values(control: int) -> list[int]:
        return [m[2] for m in peer.messages() if len(m) == 3 and m[0] == 0xB0 and m[1] == control]

    def send(*arguments: str) -> None:
        subprocess.run(["oscsend", "localhost", str(bridge.osc_port), *arguments], check=True)

    send("/scorebridge/va/manual", "i", "1")
    send("/scorebridge/va/arousal", "f", "0.8")
    assert peer.wait_for(lambda: 118 in values(11), 5.0), peer.messages()[-10:]
    send("/scorebridge/va/manual", "i", "0")  # back to the curve: none loaded, so neutral
    if not peer.wait_for(lambda: values(11)[-1] == 80, 5.0):  # (once in CI: say what the bridge saw)
        full = status(bridge)
        raise AssertionError(f"CC 11 heard {values(11)}; va slot {full.get('engines', {}).get('va')}; "
                             f"{output_state(bridge, peer)}")
    time.sleep(0.5)
    assert values(11)[-1] == 80 and 118 in values(11) and set(values(1)) <= {80}  # valence stays neutral


@pytest.mark.jack
def test_serve_va_plays_a_curve_from_va_analyze_as_cc_lanes(start_bridge, peer_for, tmp_path):
    curve = tmp_path / "va.csv"
    write_curve(VACurve(np.array([0.0, 2.0]), np.array([-0.5, 0.9]), np.array([-0.5, 0.9])), curve)
    bridge = start_bridge("--slot", "harm=harmonizer@all/2", "--va", str(curve), "--va-channel", "1",
                          "--tempo", "240")
    peer = peer_for(bridge)

    def arousal() -> list[int]:
        return [m[2] for m in peer.messages() if len(m) == 3 and m[0] == 0xB0 and m[1] == 11]

    # Arousal -0.5 -> 0.9 over the first 2 s of song time: CC11 rises from about 56 to 122.
    assert peer.wait_for(lambda: any(v >= 120 for v in arousal()), 8.0), arousal()
    levels = arousal()
    assert levels[0] <= 70 and levels == sorted(levels), levels
    # The curve leads the bridge's affect: surfaces see it and the harmonizer is conditioned on it
    # (the curve holds 0.9 after 2 s; the engine reports the value of the beat it last played).
    deadline = time.monotonic() + 5.0
    while True:
        state = status(bridge)
        if state["engines"]["harm"]["values"]["arousal"] > 0.85 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert state["engines"]["va"]["engine_status"]["samples"] == 2
    assert state["control"]["affect"]["override"] is True and state["control"]["affect"]["arousal"] > 0.85
    assert state["engines"]["harm"]["values"]["arousal"] > 0.85, state["engines"]["harm"]["values"]


def test_serve_va_refuses_a_bad_curve_before_opening_ports(tmp_path):
    curve = tmp_path / "bad.csv"
    curve.write_text("time_s,valence,arousal\n0,0.1,2.5\n", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "bridge", "serve", "--va", str(curve), "--duration", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1 and "line 2" in done.stderr and "online" not in done.stdout, done


def test_the_curve_parameter_loads_a_file_and_a_bad_one_leaves_it_neutral(tmp_path):
    good, bad = tmp_path / "va.csv", tmp_path / "bad.csv"
    write_curve(_step_curve(), good)
    bad.write_text("time_s,valence,arousal\n0,nan,0\n", encoding="utf-8")
    engine = VAAutomation()
    engine.set_param("curve", str(good))
    assert engine.status()["samples"] == 4 and engine.value_at(10.0) == (0.5, 1.0)
    engine.set_param("curve", str(bad))
    assert engine.curve is None and "line 2" in engine.status()["error"]
    assert engine.value_at(10.0) == (0.0, 0.0)

"""Retuned live output over a real JACK server: the tuning reaches the synth (MTS table, MPE
bends), changes over OSC while notes sound, and leaves no note stuck or on the wrong channel."""

from __future__ import annotations

import subprocess

import pytest

from core.tuning import load_tuning

pytestmark = pytest.mark.jack


def _osc(bridge, *args: str) -> None:
    subprocess.run(["oscsend", "localhost", str(bridge.osc_port), *args], check=True, timeout=10)


def _mts_entries(messages: list[list[int]]) -> dict[int, float]:
    """Key -> cents of every single-note tuning change received."""
    entries = {}
    for data in messages:
        if data[:5] == [0xF0, 0x7F, 0x7F, 0x08, 0x02]:
            body = data[7:-1]
            for i in range(0, len(body), 4):
                key, whole, msb, lsb = body[i: i + 4]
                entries[key] = 100 * whole + 100 * ((msb << 7) | lsb) / 16384
    return entries


def _pairs_match(messages: list[list[int]]) -> bool:
    """Every note-off goes to the channel and key of a sounding note-on, and none is left."""
    sounding: dict[tuple[int, int], int] = {}
    for data in messages:
        kind, key = data[0] & 0xF0, (data[0] & 0x0F, data[1]) if len(data) > 1 else None
        if kind == 0x90 and data[2] > 0:
            sounding[key] = sounding.get(key, 0) + 1
        elif kind in (0x80, 0x90):
            if not sounding.get(key):
                return False
            sounding[key] -= 1
    return not any(sounding.values())


def test_mts_table_on_tuning_change_and_notes_on_mapped_keys(start_bridge, peer_for):
    bridge = start_bridge("--tuning", "kamale_ngoni", "--tuning-output", "mts")
    peer = peer_for(bridge)
    _osc(bridge, "/scorebridge/tuning", "s", "mande_balafon")
    assert peer.wait_for(lambda: len(_mts_entries(peer.messages())) == 128, 3.0)
    balafon = load_tuning("mande_balafon")
    entries = _mts_entries(peer.messages())
    for key in balafon.mapped_keys():
        assert entries[key] == pytest.approx(balafon.cents(key), abs=0.01)
    peer.send([0x90, 64, 100])  # E: not a balafon key (C D Eb F G A Bb), played on a mapped one
    assert peer.wait_for(lambda: len(peer.sounding()) >= 3, 2.0)
    assert {note % 12 for _, note in peer.sounding()} <= balafon.pitch_classes()
    peer.send([0x80, 64, 0])
    peer.send([0xFC])
    assert peer.wait_for(lambda: not peer.sounding(), 3.0), peer.sounding()


def test_mpe_notes_rebend_on_a_tuning_change_and_end_where_they_started(start_bridge, peer_for):
    bridge = start_bridge("--tuning", "kora_tomora_ba", "--tuning-output", "mpe")
    peer = peer_for(bridge)
    peer.send([0x90, 71, 100])  # B: Tomora Ba's seventh, 1085 cents (kora1.scl)
    assert peer.wait_for(lambda: len(peer.sounding()) >= 3, 2.0)
    sounding = peer.sounding()
    channels = [channel for channel, _ in sounding]
    assert len(set(channels)) == len(channels) and 0 not in channels  # one member channel per note
    bends = [m for m in peer.messages() if m[0] & 0xF0 == 0xE0]
    assert any(((m[2] << 7) | m[1]) - 8192 == -26 for m in bends)  # 15 cents down at +-48 semitones
    before = len(bends)
    _osc(bridge, "/scorebridge/tuning", "s", "kora_hardino")
    assert peer.wait_for(lambda: len([m for m in peer.messages() if m[0] & 0xF0 == 0xE0]) > before, 2.0)
    peer.send([0x80, 71, 0])
    peer.send([0xFC])
    assert peer.wait_for(lambda: not peer.sounding(), 3.0), peer.sounding()
    assert _pairs_match(peer.messages())

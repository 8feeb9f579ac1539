"""The learned `harmonizer` engine in a running bridge over a real JACK server (dummy driver):
a second rtmidi client plays the DAW (MIDI clock, Start/Stop, a melody) and records the chords."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import mido
import pytest

from tests.jackutil import ROOT

pytestmark = [pytest.mark.jack, pytest.mark.slow]

CLOCK, START, STOP = 0xF8, 0xFA, 0xFC
CHORD_STATUS = 0x91  # the slot's output channel 2
MELODY = [72, 74, 76, 77, 79, 77, 76, 74, 72, 71, 72, 74]
LATE_S = 0.15  # the latest a chord may come after its beat: under a third of a beat at 120 BPM


def config(tmp_path, **params) -> str:
    lines = ['[[slots]]', 'name = "harm"', 'engine = "harmonizer"', 'in_channels = "all"', "out_channel = 2",
             "[slots.params]"]
    lines += [f"{k} = {v!r}" if isinstance(v, str) else f"{k} = {str(v).lower()}" for k, v in params.items()]
    path = tmp_path / "bridge.toml"
    path.write_text("\n".join(lines).replace("'", '"') + "\n")
    return str(path)


def play(peer, melody, beats, tempo_bpm=120.0, hold_last=False):
    """Start, 24 clocks per beat for `beats` beats; melody notes (None = rest) on the beats,
    each released at the next beat. Returns the send time of every beat's clock tick."""
    tick_s = 60.0 / tempo_bpm / 24
    peer.send([START])
    t0 = time.perf_counter()
    beat_at, previous = [], None
    for beat in range(beats):
        for tick in range(24):
            due = t0 + (beat * 24 + tick) * tick_s
            while time.perf_counter() < due:
                time.sleep(0.0005)
            sent = peer.send([CLOCK])
            if tick:
                continue
            beat_at.append(sent)
            pitch = melody[beat] if beat < len(melody) else None
            if previous is not None and (pitch is not None or not hold_last):
                peer.send([0x80, previous, 0])
                previous = None
            if pitch is not None:
                peer.send([0x90, pitch, 100])
                previous = pitch
    return beat_at


def chord_onsets(peer):
    """(time, notes) of the bridge's note-ons on the chord channel, grouped within 5 ms."""
    onsets: list[tuple[float, list[int]]] = []
    for t, m in peer.notes():
        if m[0] == CHORD_STATUS and m[2] > 0:
            if onsets and t - onsets[-1][0] < 0.005:
                onsets[-1][1].append(m[1])
            else:
                onsets.append((t, [m[1]]))
    return onsets


def test_live_chords_on_every_beat_below_the_melody_and_stop_releases(start_bridge, peer_for, tmp_path):
    bridge = start_bridge("--config", config(tmp_path, voicing="block", seed=7))
    peer = peer_for(bridge)
    beat_at = play(peer, MELODY, len(MELODY), hold_last=True)
    time.sleep(0.1)
    onsets = chord_onsets(peer)
    # one chord per beat (block voicing re-strikes each decision), just after its beat: a model
    # call (a few ms idle, tens of ms on this 2-core machine under training load) plus JACK
    assert len(onsets) == len(MELODY), [(round(t - beat_at[0], 3), n) for t, n in onsets]
    delays = []
    for (t, notes), beat_time, pitch in zip(onsets, beat_at, MELODY):
        delays.append(t - beat_time)
        assert 0 <= t - beat_time < LATE_S, (t - beat_time, pitch, notes)
        assert max(notes) < pitch, (pitch, notes)
    assert sorted(delays)[len(delays) // 2] < 0.03, delays
    assert peer.sounding()  # the last chord is held with the held melody note
    peer.send([STOP])
    assert peer.wait_for(lambda: not peer.sounding(), 1.0), peer.sounding()
    state = subprocess.run([sys.executable, "-m", "bridge", "status", "--osc-port", str(bridge.osc_port)],
                           check=True, cwd=ROOT, capture_output=True, text=True, timeout=10)
    engine = json.loads(state.stdout)["engines"]["harm"]
    assert engine["enabled"] and engine["error"] is None and engine["latency_beats"] == 0.0


def test_clip_of_one_bar_replays_in_sync_and_is_saved(start_bridge, peer_for, tmp_path):
    folder = tmp_path / "clips"
    bridge = start_bridge("--config", config(tmp_path, mode="clip", voicing="block", seed=3))
    peer = peer_for(bridge)

    def osc(*a: str) -> None:
        subprocess.run(["oscsend", "localhost", str(bridge.osc_port), *a], check=True)

    osc("/scorebridge/harm/clip_folder", "s", str(folder))  # parameters travel on OSC, typed
    osc("/scorebridge/harm/clip_bars", "i", "1")
    osc("/scorebridge/harm/temperature", "f", "9")  # out of range: rejected, nothing else changes
    time.sleep(0.3)
    melody = MELODY[:4]
    beat_at = play(peer, melody, 10)
    onsets = chord_onsets(peer)
    assert onsets and min(t for t, _ in onsets) > beat_at[3], "chords before the loop was captured"
    # one block chord per beat of the next passes (beats 4..9), on the transport's beat (each
    # beat's notes go out when the bridge handles that beat's clock tick)
    per_beat = {}
    for t, notes in onsets:
        beat = max(b for b in range(len(beat_at)) if beat_at[b] - 0.1 <= t)
        assert 0 <= t - beat_at[beat] < LATE_S, (beat, t - beat_at[beat])
        per_beat.setdefault(beat, []).extend(notes)
    assert sorted(per_beat) == list(range(4, 10))
    for beat in range(4, 8):  # the loop replays what it harmonized under the captured melody
        assert max(per_beat[beat]) < melody[beat - 4]
    assert per_beat[8] == per_beat[4] and per_beat[9] == per_beat[5]
    saved = sorted(folder.glob("*.mid"))
    assert len(saved) == 1, saved
    midi = mido.MidiFile(saved[0])
    assert [t.name for t in midi.tracks] == ["melody", "chords"]
    assert [m.note for m in midi.tracks[0] if m.type == "note_on" and m.velocity] == melody
    peer.send([STOP])
    assert peer.wait_for(lambda: not peer.sounding(), 1.0), peer.sounding()
    state = subprocess.run([sys.executable, "-m", "bridge", "status", "--osc-port", str(bridge.osc_port)],
                           check=True, cwd=ROOT, capture_output=True, text=True, timeout=10)
    engine = json.loads(state.stdout)["engines"]["harm"]
    assert engine["enabled"] and engine["error"] is None and engine["latency_beats"] == 4.0

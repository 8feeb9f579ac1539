"""The `harmonizer` engine's timing: live chords over a real JACK server, decisions and clips in process.

    .venv/bin/python benchmarks/harmonizer_engine_latency.py [--beats 64] [--tempo 120] [--out FILE]

  live     the bridge (subprocess, `--slot harm=harmonizer`, voicing block) on a private JACK
           dummy server; a second rtmidi client sends Start, 24 clocks per beat and a random melody
           note on every beat; for each beat, the first chord note-on the client receives after it
           sent the beat's tick and note. Also the slot's own input-to-output latency from
           `scorebridge status`, and whether Stop leaves anything sounding.
  decide   `LearnedHarmonizer.process(NoteOn)` in process for a note on every quarter, in 4/4 and
           6/8, rhythm auto and bar: the NoteOns that decide a chord (model call, key, voicing)
           and those that keep it (a bar's later beats).
  clip     `clip.harmonize_notes` on a 16-bar melody per decoding strategy (whole decode + voicing).
Results go to benchmarks/results/harmonizer_engine.json with the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.engine import EngineContext
from core.events import Beat, Note, NoteOff, NoteOn, TransportChange
from engines.harmonizer.clip import ClipOptions, harmonize_notes
from engines.harmonizer.engine import LearnedHarmonizer
from tests.jackutil import start_jack
from tests.peer import Bridge, Peer
from tests.test_harmonizer_live import chord_onsets, config, play

SCALE = [67, 69, 71, 72, 74, 76, 77, 79]


def stats_ms(values_s: list[float]) -> dict:
    array = np.asarray(values_s) * 1000
    return {"count": len(array), "p50": round(float(np.percentile(array, 50)), 2),
            "p99": round(float(np.percentile(array, 99)), 2), "max": round(float(array.max()), 2)}


def live(beats: int, tempo: float) -> dict:
    name = f"sbbench{os.getpid()}"
    jack_log = Path(tempfile.mkdtemp()) / "jackd.log"
    jack = start_jack(name, log_path=str(jack_log))
    os.environ["JACK_DEFAULT_SERVER"] = name
    try:
        folder = Path(tempfile.mkdtemp())
        bridge = Bridge(f"sbh{os.getpid()}", "--config", config(folder, voicing="block", seed=7))
        peer = Peer("benchpeer", bridge.client)
        melody = [int(p) for p in np.random.default_rng(0).choice(SCALE, beats)]
        beat_at = play(peer, melody, beats, tempo, hold_last=True)
        time.sleep(0.2)
        onsets = chord_onsets(peer)
        beat_s = 60.0 / tempo
        latencies, above, missing = [], 0, []
        for index, (sent, pitch) in enumerate(zip(beat_at, melody)):
            found = [(t, notes) for t, notes in onsets if 0 <= t - sent < beat_s]
            if not found:
                missing.append(index)
                continue
            latencies.append(found[0][0] - sent)
            above += max(found[0][1]) >= pitch
        full = json.loads(subprocess.run([sys.executable, "-m", "bridge", "status", "--osc-port",
                                          str(bridge.osc_port)], check=True, cwd=ROOT, capture_output=True,
                                         text=True, timeout=10).stdout)
        status = full["engines"]["harm"]
        peer.send([0xFC])
        released = peer.wait_for(lambda: not peer.sounding(), 1.0)
        peer.close()
        bridge.stop()
    finally:
        jack.terminate()
        jack.wait()
    return {"beats": beats, "tempo_bpm": tempo, "chord_after_beat_ms": stats_ms(latencies),
            "beats_without_chord": missing, "chords_at_or_above_melody": int(above),
            "slot_latency_ms": status["latency_ms"], "slot_max_process_ms": status["max_process_ms"],
            "stop_released_all": released, "bridge_midi_in": full.get("midi_in"),
            "jackd_xruns": jack_log.read_text(errors="replace").lower().count("xrun")}


def decide(beats: int, meter: str = "4/4", rhythm: str = "auto") -> dict:
    engine = LearnedHarmonizer()
    engine.prepare(EngineContext("bench", 1, 120.0))
    for name, value in (("seed", 1), ("meter", meter), ("rhythm", rhythm)):
        engine.set_param(name, value)
    melody = [int(p) for p in np.random.default_rng(1).choice(SCALE, beats)]
    engine.process(TransportChange(True, 0.0, 0.0, "start"))
    decisions, kept = [], []
    for beat, pitch in enumerate(melody):
        engine.process(Beat(beat, beat * 0.5, 120.0))
        if beat:
            engine.process(NoteOff(melody[beat - 1], 0, beat * 0.5, beat + 0.001))
        before = engine.decided_beat
        started = time.perf_counter()
        engine.process(NoteOn(pitch, 100, 0, beat * 0.5, beat + 0.002))
        elapsed = time.perf_counter() - started
        if beat >= 10:  # (warm-up)
            (decisions if engine.decided_beat != before else kept).append(elapsed)
    return {"model": engine.model.path.name, "parameters": engine.model.card.get("model", {}).get("parameters"),
            "grid": engine.model.grid.name, "beats": engine.model.beats, "meter": meter, "rhythm": rhythm,
            "live_beat_quarters": engine.metre.beat, "decision_ms": stats_ms(decisions),
            "kept_ms": stats_ms(kept) if kept else None}


def clips(model, repeats: int = 10) -> dict:
    pitches = np.random.default_rng(2).choice(SCALE, 64)
    melody = [Note(int(p), 90, 1.0, at_beats=float(i)) for i, p in enumerate(pitches)]
    out = {}
    for strategy in ("entropic", "stages10", "midpoint"):
        times, calls = [], 0
        for seed in range(repeats):
            started = time.perf_counter()
            clip = harmonize_notes(model, melody, 64.0, (4, 4), ClipOptions(strategy=strategy), None,
                                   np.random.default_rng(seed))
            times.append(time.perf_counter() - started)
            calls = clip.calls
        out[strategy] = {"calls": calls, **stats_ms(times)}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beats", type=int, default=64)
    parser.add_argument("--tempo", type=float, default=120.0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "harmonizer_engine.json")
    args = parser.parse_args()
    load_before = os.getloadavg()
    result = {"machine": platform.node(), "cpus": os.cpu_count(),
              "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
              "load_before": [round(x, 2) for x in load_before]}
    result["decide"] = decide(400)
    result["decide_metres"] = [decide(400, meter, rhythm) for meter in ("4/4", "6/8") for rhythm in ("auto", "bar")]
    harmonizer = LearnedHarmonizer()
    harmonizer.prepare(EngineContext("bench", 1, args.tempo))
    model = harmonizer.model
    result["clip_16_bars"] = clips(model)
    result["live"] = live(args.beats, args.tempo)
    result["load_after"] = [round(x, 2) for x in os.getloadavg()]
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

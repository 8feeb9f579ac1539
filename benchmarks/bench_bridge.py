"""Bridge overhead over a real JACK server (dummy driver): latency, flood, slow-engine isolation.

    .venv/bin/python benchmarks/bench_bridge.py [--events 10000] [--flood-seconds 60]

The load generators and recorders are jackd2's own C clients, so no Python client competes
with the bridge for the CPU or holds a GIL inside JACK's process cycle:
  latency    jack_midi_latency_test sends N messages through the `thru` engine and measures the
             round trip in JACK frames; the bridge's own input-callback -> send latency for the
             same N events comes from `scorebridge status`.
  flood      jack_midiseq plays 10,000 note events/s into the bridge for the given time;
             jack_midi_dump records what comes back; every gap in the pattern is a lost event.
  isolation  the `rule` engine's latency for chord changes alone, beside an engine that waits
             300 ms per note with the GIL released (an ONNX Runtime call), and beside one that
             spends 300 ms per note in pure Python (holding the GIL: the worst case).
Results go to benchmarks/results/bridge.json; BENCHMARKS.md quotes them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.jack_tools import MidiDump, connect, count_gaps, flood_pattern, midiseq  # noqa: E402
from bridge.remote import request  # noqa: E402
from tests.jackutil import start_jack  # noqa: E402
from tests.peer import Bridge  # noqa: E402


def bridge_status(bridge: Bridge) -> dict:
    return json.loads(request("127.0.0.1", bridge.osc_port, "/scorebridge/status", "/scorebridge/status")[0])


def parse_latency_test(text: str) -> dict:
    """Counts and the latency histogram (0.1 ms bins) from jack_midi_latency_test's report."""
    result: dict = {"bins": {}}
    for key, label in (("sent", "Messages sent"), ("received", "Messages received"), ("xruns", "Xruns"),
                       ("unexpected", "Unexpected messages received")):
        m = re.search(label + r": (\d+)", text)
        result[key] = int(m.group(1)) if m else 0
    if "Latency Plot:" in text:
        plot = text.split("Latency Plot:")[-1]
        for low, high, n in re.findall(r"([\d.]+) - ([\d.]+) ms: (\d+)", plot):
            result["bins"][float(high)] = int(n)
    m = re.search(r"Highest latency: ([\d.]+) ms", text)
    result["highest_ms"] = float(m.group(1)) if m else None
    return result


def phase_latency(events: int, chunk: int = 1000) -> dict:
    """jack_midi_latency_test in chunks: under the dummy driver's xruns the tool sometimes misses
    a message that the bridge did send (jack_midi_dump sees it) and then stops; such a chunk is
    counted, and chunks are repeated until ``events`` round trips are measured."""
    bridge = Bridge("sblat", "--slot", "thru=thru@all/1")
    bins: dict[float, int] = {}
    measured = failed = xruns = 0
    highest = 0.0
    attempts = 0
    while measured < events and attempts < 4 * events // chunk:
        attempts += 1
        done = subprocess.run(["jack_midi_latency_test", "-s", str(chunk), "-t", "3", "sblat:in", "sblat-out:out"],
                              capture_output=True, text=True, timeout=120)
        report = parse_latency_test(done.stdout + done.stderr)
        xruns += report["xruns"]
        if not report["bins"] or report["received"] != report["sent"]:
            failed += 1
            continue
        measured += report["received"]
        highest = max(highest, report["highest_ms"] or 0.0)
        for edge, n in report["bins"].items():
            bins[edge] = bins.get(edge, 0) + n
    total = sum(bins.values())
    quantiles = {}
    for q in (0.5, 0.99, 0.999):
        running = 0
        for edge in sorted(bins):
            running += bins[edge]
            if running >= q * total:
                quantiles[f"p{q * 100:g}_ms_at_most"] = edge
                break
    inside = bridge_status(bridge)["engines"]["thru"]["latency_ms"]
    bridge.stop()
    return {"jack_round_trip": {"measured": measured, "chunks_failed_by_tool": failed, "xruns": xruns,
                                "max_ms": highest, **quantiles},
            "inside_bridge_ms": inside}


def phase_flood(seconds: float, rate: int) -> dict:
    bridge = Bridge("sbflood", "--slot", "thru=thru@all/1")
    tmp = tempfile.mkdtemp()
    dump = MidiDump("flooddump", f"{tmp}/dump.txt")
    connect("sbflood-out:out", "flooddump:input")
    loop, notes = flood_pattern(rate)
    wraps = {notes[-1][1], 108}
    seq = midiseq("flood", loop, notes)
    time.sleep(0.5)
    connect("flood:out", "sbflood:in")
    t0 = time.perf_counter()
    time.sleep(seconds)
    subprocess.run(["jack_disconnect", "flood:out", "sbflood:in"], check=True)
    elapsed = time.perf_counter() - t0
    time.sleep(1.0)
    seq.terminate()
    status = bridge_status(bridge)
    dump.stop()
    events = dump.events()
    bridge.stop()
    return {"seconds": round(elapsed, 2), "target_rate_per_s": rate,
            "bridge_accepted": status["midi_in"].get("accepted", 0),
            "received_back": len(events), "measured_rate_per_s": round(len(events) / elapsed),
            "lost_in_pattern": count_gaps(events, wraps),
            "bridge_dropped_input": {k: v for k, v in status["midi_in"].items() if k not in ("accepted", "transport")},
            "inside_bridge_ms": status["engines"]["thru"]["latency_ms"]}


def phase_isolation(notes: int) -> dict:
    out = {}
    # C and B alternately, one per beat at 240 BPM (C and G chords), 0.2 s long.
    loop = int(48000 * 0.5)
    pattern = [(0, 72, 9600), (12000, 71, 9600)]
    cases = (("rule_alone", []),
             ("beside_engine_waiting_300ms_gil_released",
              ["--slot", "slow=tests.engines_for_tests:Slow@all/4"], {"busy": 0}),
             ("beside_engine_busy_300ms_in_python",
              ["--slot", "slow=tests.engines_for_tests:Slow@all/4"], {"busy": 1}))
    for label, extra, *params in cases:
        bridge = Bridge("sbiso", "--tempo", "240", "--slot", "rule=rule@all/2", *extra)
        for name, value in (params[0] if params else {}).items():
            subprocess.run(["oscsend", "localhost", str(bridge.osc_port), f"/scorebridge/slow/{name}", "i",
                            str(value)], check=True)
        seq = midiseq("isoseq", loop, pattern)
        time.sleep(0.3)
        connect("isoseq:out", "sbiso:in")
        time.sleep(notes * 0.25)
        seq.terminate()
        time.sleep(0.3)
        status = bridge_status(bridge)
        out[label] = {"rule_inside_bridge_ms": status["engines"]["rule"]["latency_ms"]}
        if "slow" in status["engines"]:
            out[label]["slow_engine_max_process_ms"] = status["engines"]["slow"]["max_process_ms"]
        bridge.stop()
    return out


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 "?")
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
            "kernel": platform.release(), "date": time.strftime("%Y-%m-%d")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--flood-seconds", type=float, default=60.0)
    parser.add_argument("--flood-rate", type=int, default=10_000)
    parser.add_argument("--isolation-notes", type=int, default=120)
    parser.add_argument("--period", type=int, default=64, help="JACK period in frames at 48 kHz")
    parser.add_argument("--phases", default="latency,isolation,flood")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/bridge.json")
    args = parser.parse_args()
    name = f"sbbench{os.getpid()}"
    os.environ["JACK_DEFAULT_SERVER"] = name
    jack_log = tempfile.mktemp(suffix=".jackd.log")
    jack = start_jack(name, period_frames=args.period, log_path=jack_log)
    results = {"machine": machine(),
               "jack": {"driver": "dummy", "rate": 48000, "period_frames": args.period,
                        "cycle_ms": round(args.period / 48, 3)},
               "command": " ".join(["benchmarks/bench_bridge.py", *sys.argv[1:]])}
    try:
        for phase in args.phases.split(","):
            if phase == "latency":
                results["latency"] = phase_latency(args.events)
            elif phase == "isolation":
                results["isolation"] = phase_isolation(args.isolation_notes)
            elif phase == "flood":
                results["flood"] = phase_flood(args.flood_seconds, args.flood_rate)
            results[phase]["jackd_xruns_so_far"] = Path(jack_log).read_text().lower().count("xrun")
            print(phase, json.dumps(results[phase]), flush=True)
    finally:
        jack.terminate()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

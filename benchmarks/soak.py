"""Soak: the learned harmonizer and the continuation under MIDI and OSC load together.

    python benchmarks/soak.py --minutes 10            # the documented run
    python benchmarks/soak.py --seconds 20 --warmup-s 6   # the CI version (tests/test_soak.py)

``serve`` runs on a private JACK server (dummy driver) with ``harm=harmonizer@all/2`` and
``cont=continuation@all/3``; jack_midiseq (a C JACK client) plays note pairs at
``--midi-rate`` events/s into it, and a UDP sender sets the engines' parameters at
``--osc-rate`` messages/s (one in a hundred a ``status`` request). Every ``--sample-s`` the
bridge's RSS and its ``status`` (queue sizes, counters) are sampled.

It passes when memory is flat (the mean RSS of the last tenth of the run within
``MEMORY_TOLERANCE`` of the first tenth after the warm-up), every queue stayed within its
bound, no note sounds at the listener once the load stops, and every counter is in
``status``. The result goes to ``benchmarks/results/soak-<time>.json``; exit 1 on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import rtmidi  # noqa: E402

from benchmarks.jack_tools import flood_pattern, midiseq  # noqa: E402
from bridge.osc import build_message  # noqa: E402
from bridge.remote import request  # noqa: E402
from core.errors import ScoreBridgeError  # noqa: E402
from tests.jackutil import start_jack  # noqa: E402
from tests.peer import Bridge  # noqa: E402

# Memory is flat when the end of the run is within this fraction of its start.
MEMORY_TOLERANCE = 0.10
# An inbox may hold one note-off per channel and pitch past its capacity.
NOTE_KEYS = 16 * 128
# How long the engines may keep playing after the load stops (the continuation answers the
# player's silence with a phrase of a few bars) before a sounding note counts as stuck.
SETTLE_S = 30.0
# Memory before this is not compared: the learned harmonizer keeps the last 320 beats of
# melody (160 s at 120 BPM) for its key and chords, so it fills for that long, then stays.
DEFAULT_WARMUP_S = 180.0
# A status request waits this long for its reply (the OSC load shares the bridge's socket).
STATUS_TIMEOUT_S = 3.0
# Tries of the status request after the load (STATUS_TIMEOUT_S each).
FINAL_STATUS_TRIES = 5
# jackd drops a client whose cycle is this late (its default is 500 ms): a machine shared
# with other work can starve the bridge's JACK threads for longer than that.
JACK_CLIENT_TIMEOUT_MS = 5000
SLOTS = ("harm=harmonizer@all/2", "cont=continuation@all/3")
# Parameters the OSC load sets: (slot, name, low, high, integer).
OSC_PARAMS = (
    ("harm", "temperature", 0.5, 1.5, False), ("harm", "valence", -1.0, 1.0, False),
    ("harm", "arousal", -1.0, 1.0, False), ("harm", "velocity", 40, 110, True),
    ("harm", "release_beats", 0.5, 2.0, False), ("cont", "temperature", 0.5, 1.5, False),
    ("cont", "top_p", 0.5, 1.0, False), ("cont", "valence", -1.0, 1.0, False),
    ("cont", "arousal", -1.0, 1.0, False),
)
# Counters every status must carry (dotted paths; "*" = every slot).
REQUIRED_COUNTERS = (
    "midi_in", "midi_in_queue.dropped", "midi_in_queue.coalesced", "midi_in_queue.high_water",
    "midi_in_queue.queued", "engines.*.inbox.dropped", "engines.*.inbox.coalesced",
    "engines.*.inbox.high_water", "engines.*.inbox.capacity", "engines.*.queued", "engines.*.processed",
    "osc", "midi_out.sent", "scheduler.pending", "scheduler.high_water", "notes_sounding",
)


class Listener:
    """Receives the bridge's output and keeps only what a stuck-note check needs."""

    def __init__(self, name: str, port: str) -> None:
        self.inp = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name, queue_size_limit=65536)
        self.inp.open_port(self.inp.get_ports().index(port), "in")
        self.sounding: dict[tuple[int, int], int] = {}
        self.note_ons = self.note_offs = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            event = self.inp.get_message()
            if event is None:
                time.sleep(0.0005)
                continue
            data = event[0]
            kind = data[0] & 0xF0
            if kind not in (0x80, 0x90) or len(data) < 3:
                continue
            key = (data[0] & 0x0F, data[1])
            with self._lock:
                if kind == 0x90 and data[2] > 0:
                    self.note_ons += 1
                    self.sounding[key] = self.sounding.get(key, 0) + 1
                else:
                    self.note_offs += 1
                    self.sounding.pop(key, None)

    def held(self) -> list[tuple[int, int]]:
        with self._lock:
            return sorted(self.sounding)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.inp.close_port()
        self.inp.delete()


class OscLoad(threading.Thread):
    """Parameter sets (and a status request in a hundred) at ``rate`` messages/s."""

    def __init__(self, port: int, rate: int, seed: int = 7) -> None:
        super().__init__(daemon=True)
        self.port, self.rate = port, rate
        self.sent = 0
        self._halt = threading.Event()
        self._random = random.Random(seed)

    def _message(self) -> bytes:
        if self.sent % 100 == 99:
            return build_message("/scorebridge/status")
        slot, name, low, high, integer = self._random.choice(OSC_PARAMS)
        value = self._random.randint(low, high) if integer else self._random.uniform(low, high)
        return build_message(f"/scorebridge/{slot}/{name}", value)

    def run(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        started = time.perf_counter()
        try:
            while not self._halt.is_set():
                due = int((time.perf_counter() - started) * self.rate)
                while self.sent < due:
                    try:
                        sock.sendto(self._message(), ("127.0.0.1", self.port))
                    except BlockingIOError:
                        break  # the socket buffer is full: this slice's rest is skipped
                    self.sent += 1
                time.sleep(0.002)
        finally:
            sock.close()

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(timeout=5)


def rss_mb(pid: int, field: str = "RssAnon") -> float:
    """Resident memory of ``pid``: ``RssAnon`` (the heap, what a leak grows; file-backed
    pages such as the mapped models come and go with the machine's memory pressure) or
    ``VmRSS`` (all of it)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def status(port: int) -> dict[str, Any] | None:
    try:
        return json.loads(request("127.0.0.1", port, "/scorebridge/status", "/scorebridge/status",
                                  timeout_s=STATUS_TIMEOUT_S)[0])
    except (ScoreBridgeError, ValueError, IndexError):
        return None


def missing_counters(st: dict[str, Any]) -> list[str]:
    missing = []
    for path in REQUIRED_COUNTERS:
        nodes = [st]
        for part in path.split("."):
            nodes = ([v for n in nodes for v in n.values()] if part == "*" else
                     [n[part] for n in nodes if isinstance(n, dict) and part in n])
            if not nodes:
                missing.append(path)
                break
    return missing


def queue_bounds(st: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """name -> (high water, bound) of every bounded queue in a status."""
    queues = {"router": (st["midi_in_queue"]["high_water"], st["midi_in_queue"]["capacity"] + NOTE_KEYS)}
    for name, slot in st["engines"].items():
        queues[f"slot {name}"] = (slot["inbox"]["high_water"], slot["inbox"]["capacity"] + NOTE_KEYS)
    return queues


def soak(seconds: float, warmup_s: float, midi_rate: int, osc_rate: int, sample_s: float,
         memory_tolerance: float = MEMORY_TOLERANCE) -> dict[str, Any]:
    client = f"sbs{os.getpid()}"
    bridge = Bridge(client, *[a for slot in SLOTS for a in ("--slot", slot)], "--no-web")
    listener = Listener(f"{client}-listen", f"{client}-out:out")
    seq_name = f"{client}-seq"
    loop, notes = flood_pattern(midi_rate)
    seq = midiseq(seq_name, loop, notes)
    osc = OscLoad(bridge.osc_port, osc_rate)
    samples: list[dict[str, Any]] = []
    failures: list[str] = []
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and f"{seq_name}:out" not in subprocess.run(
                ["jack_lsp"], capture_output=True, text=True).stdout:
            time.sleep(0.05)
        subprocess.run(["jack_connect", f"{seq_name}:out", f"{client}:in"], check=True)
        osc.start()
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < seconds:
            time.sleep(min(sample_s, max(0.0, seconds - elapsed)))
            st = status(bridge.osc_port)
            sample: dict[str, Any] = {"t_s": round(time.monotonic() - started, 1),
                                      "rss_mb": round(rss_mb(bridge.proc.pid), 1),
                                      "vm_rss_mb": round(rss_mb(bridge.proc.pid, "VmRSS"), 1)}
            if st is None:
                sample["status"] = None
            else:
                sample.update({
                    "queued": {n: s["queued"] for n, s in st["engines"].items()},
                    "router_queued": st["midi_in_queue"]["queued"],
                    "scheduler_pending": st["scheduler"]["pending"],
                    "notes_sounding": st["notes_sounding"],
                    "accepted": st["midi_in"].get("accepted", 0),
                    "osc": st["osc"],
                })
                sample["_status"] = st
            samples.append(sample)
            if bridge.proc.poll() is not None:
                failures.append(f"serve exited during the soak ({bridge.proc.returncode})")
                break
        osc.stop()
        subprocess.run(["jack_disconnect", f"{seq_name}:out", f"{client}:in"], check=False)
        seq.terminate()
        seq.wait(timeout=5)
        load_s = time.monotonic() - started
        # The load is gone: the engines finish what they play, then nothing may sound.
        settle_deadline = time.monotonic() + SETTLE_S
        while time.monotonic() < settle_deadline and listener.held():
            time.sleep(0.25)
        stuck = listener.held()
        # The bridge may still be reading the load's backlog from its socket: a live bridge
        # answers within a few tries, a dead OSC thread never does.
        final = None
        for _ in range(FINAL_STATUS_TRIES):
            if (final := status(bridge.osc_port)) is not None:
                break
    finally:
        osc.stop()
        if seq.poll() is None:
            seq.terminate()
        listener.close()
        code, _, err = bridge.stop()
    if "Traceback (most recent call last)" in err:
        failures.append("serve printed a traceback: " + err.strip().splitlines()[-1][:200])
    if code != 0:
        failures.append(f"serve exited {code} on SIGTERM")
    if code < 0 or "Fatal Python error" in err:
        # faulthandler's dump of every thread: where the native crash happened.
        failures.append("serve's stderr ends: " + err[-3000:])
    # Under the OSC load a status request may go unanswered (the kernel drops datagrams the
    # bridge cannot read in time); the high-water marks of the final one cover the whole run.
    statuses = [s.pop("_status") for s in samples if "_status" in s]
    if final is None:
        failures.append("status did not answer after the load")
        final = {}
    # Memory: the first tenth after the warm-up against the last tenth of the run.
    after = [s for s in samples if s["t_s"] >= warmup_s]
    window = max(1, len(after) // 10)
    rss_start = sum(s["rss_mb"] for s in after[:window]) / window if after else 0.0
    rss_end = sum(s["rss_mb"] for s in after[-window:]) / window if after else 0.0
    growth = (rss_end - rss_start) / rss_start if rss_start else 0.0
    if not after:
        failures.append("no sample after the warm-up: run longer than --warmup-s")
    elif growth > memory_tolerance:
        failures.append(f"memory grew {growth:.1%} ({rss_start:.0f} -> {rss_end:.0f} MB)")
    bounds: dict[str, tuple[int, int]] = {}
    for st in statuses + ([final] if final else []):
        for name, (high, bound) in queue_bounds(st).items():
            bounds[name] = (max(high, bounds.get(name, (0, bound))[0]), bound)
    for name, (high, bound) in bounds.items():
        if high > bound:
            failures.append(f"queue {name} reached {high} (bound {bound})")
    missing = sorted({m for st in statuses + ([final] if final else []) for m in missing_counters(st)})
    if missing:
        failures.append(f"counters missing from status: {', '.join(missing)}")
    if stuck:
        failures.append(f"{len(stuck)} notes still sounding {SETTLE_S:.0f} s after the load: {stuck[:8]}")
    accepted = final.get("midi_in", {}).get("accepted", 0)
    return {
        "passed": not failures,
        "failures": failures,
        "seconds": round(load_s, 1),
        "warmup_s": warmup_s,
        "target_midi_rate_per_s": midi_rate,
        "target_osc_rate_per_s": osc_rate,
        "midi_accepted_per_s": round(accepted / load_s) if load_s else 0,
        "osc_sent_per_s": round(osc.sent / load_s) if load_s else 0,
        "osc_counters": final.get("osc", {}),
        "status_answered": f"{len(statuses)} of {len(samples)} samples",
        "rss_anon_mb": {"start_after_warmup": round(rss_start, 1), "end": round(rss_end, 1),
                   "growth": round(growth, 4), "max": max((s["rss_mb"] for s in samples), default=0.0)},
        "queues_high_water": {name: {"high_water": h, "bound": b} for name, (h, b) in bounds.items()},
        "scheduler_pending_max": max((s.get("scheduler_pending", 0) for s in samples), default=0),
        "engines": {n: {k: s.get(k) for k in ("processed", "outputs", "inbox", "latency_ms", "error")}
                    for n, s in final.get("engines", {}).items()},
        "port_events": final.get("ports", {}).get("events", []),
        "midi_in": final.get("midi_in", {}),
        "midi_in_queue": final.get("midi_in_queue", {}),
        "listener": {"note_ons": listener.note_ons, "note_offs": listener.note_offs, "stuck": stuck},
        "samples": samples,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/soak.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the load (default 10)")
    parser.add_argument("--seconds", type=float, help="length in seconds (overrides --minutes)")
    parser.add_argument("--warmup-s", type=float,
                        help=f"not counted for memory (default: a third, at most {DEFAULT_WARMUP_S:.0f} s)")
    parser.add_argument("--midi-rate", type=int, default=10_000, help="MIDI events/s (default 10,000)")
    parser.add_argument("--osc-rate", type=int, default=10_000, help="OSC messages/s (default 10,000)")
    parser.add_argument("--memory-tolerance", type=float, default=MEMORY_TOLERANCE,
                        help="largest growth of RSS after the warm-up that counts as flat (default "
                             f"{MEMORY_TOLERANCE}); a run shorter than the warm-up of the "
                             "harmonizer's melody history needs more")
    parser.add_argument("--sample-s", type=float, default=2.0, help="sampling interval (default 2 s)")
    parser.add_argument("--out", type=Path, help="result JSON (default benchmarks/results/soak-<time>.json)")
    args = parser.parse_args(argv)
    seconds = args.seconds if args.seconds is not None else args.minutes * 60
    warmup_s = args.warmup_s if args.warmup_s is not None else min(DEFAULT_WARMUP_S, seconds / 3)
    own_server = "JACK_DEFAULT_SERVER" not in os.environ
    jackd = None
    if own_server:
        name = f"sbsoak{os.getpid()}"
        jackd = start_jack(name, log_path=str(Path(tempfile.gettempdir()) / f"{name}-jackd.log"),
                           client_timeout_ms=JACK_CLIENT_TIMEOUT_MS)
        os.environ["JACK_DEFAULT_SERVER"] = name
    try:
        result = soak(seconds, warmup_s, args.midi_rate, args.osc_rate, args.sample_s, args.memory_tolerance)
    finally:
        if jackd is not None:
            jackd.terminate()
            jackd.wait(timeout=10)
            os.environ.pop("JACK_DEFAULT_SERVER", None)
    out = args.out or ROOT / "benchmarks" / "results" / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    summary = {k: result[k] for k in ("passed", "failures", "seconds", "midi_accepted_per_s", "osc_sent_per_s",
                                      "status_answered", "rss_anon_mb", "queues_high_water", "scheduler_pending_max")}
    print(json.dumps(summary, indent=1))
    print(f"written to {out}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""Transport stops at random points while every core is busy: no note may sound 100 ms after STOP.

The learned harmonizer plays a clip loop (the mode that hands the most timed notes to the scheduler
ahead of each beat; captured from START to STOP, so that it replays from every START) in the
bridge's own threads: the router, the slot's worker, the scheduler and the note tracker, fed raw
MIDI as the input port feeds them, with a recording output port. A "DAW" thread sends MIDI clock
without a break and, cycle after cycle, START, a random number of clock ticks (half of the time a
tick or two after a beat, where the worker is still busy with the beat when STOP comes) and STOP.
One CPU hog per core runs meanwhile. A stop fails when a note still sounds 100 ms after it, or a
note-on comes later than that before the next START.

Used by tests/test_stop_stress.py (a short run) and benchmarks/bench_stop_stress.py (500 stops).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bridge.clock import Transport
from bridge.host import EngineHost, SlotConfig
from bridge.output import NoteTracker, Scheduler
from bridge.ports.base import OutputPort
from bridge.router import InputRouter
from core.children import TiedPopen

__all__ = ["StressResult", "run"]

CLOCK, START, STOP = 0xF8, 0xFA, 0xFC
TEMPO_BPM = 400.0  # the fastest tempo the bridge follows: the most beats (and races) per second
LIMIT_S = 0.1  # no note may sound this long after STOP
MELODY = [72, 74, 76, 77]
SWITCH_INTERVAL_S = 0.0005  # as `scorebridge serve` sets it


class RecordingPort(OutputPort):
    """Records every message the bridge sends, with the time it was sent."""

    def __init__(self) -> None:
        super().__init__("stress-out")
        self.log: list[tuple[float, list[int]]] = []

    def _send(self, data: list[int]) -> None:
        self.log.append((time.perf_counter(), list(data)))

    def _close(self) -> None:
        pass

    def snapshot(self) -> list[tuple[float, list[int]]]:
        with self._lock:
            return list(self.log)


def sounding(messages: list[tuple[float, list[int]]]) -> set[tuple[int, int]]:
    """(channel, note) started and not stopped, counting stacked note-ons."""
    count: dict[tuple[int, int], int] = {}
    for _, data in messages:
        kind, key = data[0] & 0xF0, (data[0] & 0x0F, data[1])
        if kind == 0x90 and data[2] > 0:
            count[key] = count.get(key, 0) + 1
        elif kind in (0x80, 0x90) and count.get(key):
            count[key] -= 1
            if not count[key]:
                del count[key]
    return set(count)


@dataclass
class StressResult:
    stops: int = 0
    stops_with_chords: int = 0  # cycles in which the loop played before STOP
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    hogs: int = 0

    @property
    def passed(self) -> bool:
        return not self.failures and self.stops_with_chords > self.stops // 2


def _hogs(count: int) -> list[subprocess.Popen]:
    return [TiedPopen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def run(stops: int, seed: int = 0, hogs: int | None = None,
        progress: Callable[[str], None] | None = None) -> StressResult:
    """``stops`` STOPs at random points with ``hogs`` CPU hogs (default: one per core)."""
    rng = random.Random(seed)
    tick_s = 60.0 / TEMPO_BPM / 24
    result = StressResult(hogs=(os.cpu_count() or 1) if hogs is None else hogs)
    folder = tempfile.TemporaryDirectory(prefix="sb-stress-")
    transport = Transport(TEMPO_BPM, "external")
    tracker, scheduler = NoteTracker(), Scheduler()
    host = EngineHost(transport, tracker, scheduler)
    router = InputRouter(host, transport)
    port = RecordingPort()
    params = {"mode": "clip", "clip_bars": 0, "voicing": "block", "seed": 3, "clip_folder": folder.name}
    host.add_slot(SlotConfig("harm", "harmonizer", out_channel=1, params=params), port)
    send = router.handler_for("daw")
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    router.start()
    scheduler.start()
    host.start()
    next_tick = time.perf_counter()

    def tick() -> None:
        """One clock tick on time (the clock never pauses, as a DAW's does not)."""
        nonlocal next_tick
        next_tick += tick_s
        while (wait := next_tick - time.perf_counter()) > 0:
            time.sleep(min(wait, 0.001))
        send([CLOCK], time.perf_counter())

    def message(data: list[int]) -> float:
        now = time.perf_counter()
        send(data, now)
        return now

    processes = _hogs(result.hogs)
    started = time.perf_counter()
    try:
        # Capture one bar of melody from START to STOP: it is harmonized at STOP and replays
        # from every START after (a stop with nothing captured keeps it).
        message([START])
        for beat, pitch in enumerate(MELODY):
            for index in range(24):
                tick()
                if index == 0:
                    message([0x90, pitch, 100])
                if index == 12:
                    message([0x80, pitch, 0])
        tick()
        message([STOP])
        for _ in range(24 * 4):
            tick()
        message([START])
        for _ in range(24 * 2):
            tick()
        message([STOP])
        for _ in range(24):
            tick()
        if not any(data[0] == 0x91 and data[2] for _, data in port.snapshot()):
            result.failures.append("setup: the clip loop never played")
            return result
        for cycle in range(stops):
            message([START])
            first = len(port.snapshot())
            if rng.random() < 0.5:  # just after a beat: the worker is busy with it
                ticks = 24 * rng.randint(1, 2) + rng.randint(0, 2)
            else:
                ticks = rng.randint(0, 24 * 2)
            for _ in range(ticks):
                tick()
            stop_s = message([STOP])
            while time.perf_counter() < stop_s + LIMIT_S:
                tick()
            sent = port.snapshot()
            if any(data[0] == 0x91 and data[2] for _, data in sent[first:]):
                result.stops_with_chords += 1
            hanging = sounding(sent)
            for _ in range(rng.randint(1, 6)):  # stopped a little longer: nothing may start
                tick()
            late = [(t, d) for t, d in port.snapshot() if t > stop_s + LIMIT_S and d[0] & 0xF0 == 0x90 and d[2]]
            result.stops += 1
            if hanging or late:
                result.failures.append(
                    f"stop {cycle + 1} after {ticks} ticks: sounding {LIMIT_S * 1000:.0f} ms after STOP "
                    f"{sorted(hanging)}, note-ons later {[(round((t - stop_s) * 1000), d) for t, d in late]}")
                host.panic()  # the next stop starts clean
            if progress is not None and (cycle + 1) % 50 == 0:
                progress(f"{cycle + 1} stops, {len(result.failures)} failed")
    finally:
        for process in processes:
            process.kill()
            process.wait()
        router.stop()
        host.panic()
        host.stop()
        scheduler.stop()
        sys.setswitchinterval(old_interval)
        folder.cleanup()
        result.seconds = time.perf_counter() - started
    return result


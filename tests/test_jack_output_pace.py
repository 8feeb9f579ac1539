"""The JACK output's pace: rtmidi writes all it holds into the port's buffer at the next JACK
cycle and drops what does not fit (about 127 short messages at a 64-frame period), so the
bridge spreads a burst over cycles. The delivery it buys on a real server is measured by
``benchmarks/jack_burst.py`` (BENCHMARKS.md)."""

from __future__ import annotations

import time

from bridge.ports.rtmidi_backend import JACK_OUTPUT_BURST, JACK_OUTPUT_WINDOW_S, RtMidiOutput


class _Recorder:
    def __init__(self) -> None:
        self.times: list[float] = []

    def send_message(self, data: list[int]) -> None:
        self.times.append(time.perf_counter())


def test_a_paced_output_never_sends_more_than_a_burst_in_a_window():
    out = _Recorder()
    port = RtMidiOutput("test:out", out, paced=True)
    for i in range(10 * JACK_OUTPUT_BURST):
        port.send_bytes([0x90, i % 128, 100])
    times = out.times
    assert len(times) == 10 * JACK_OUTPUT_BURST
    # Any JACK_OUTPUT_BURST + 1 consecutive sends span at least one window.
    spans = [times[i + JACK_OUTPUT_BURST] - times[i] for i in range(len(times) - JACK_OUTPUT_BURST)]
    assert min(spans) >= JACK_OUTPUT_WINDOW_S * 0.99


def test_an_unpaced_output_never_waits(monkeypatch):
    from bridge.ports import rtmidi_backend

    waits: list[float] = []
    monkeypatch.setattr(rtmidi_backend.time, "sleep", waits.append)
    out = _Recorder()
    port = RtMidiOutput("test:out", out)  # ALSA, CoreMIDI, WinMM: their own queues
    for i in range(10 * JACK_OUTPUT_BURST):
        port.send_bytes([0x90, i % 128, 100])
    assert len(out.times) == 10 * JACK_OUTPUT_BURST and waits == []

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


class _LateRecorder(_Recorder):
    """A send that goes out late once (the sending thread preempted inside it)."""

    def __init__(self, late_at: int, delay_s: float) -> None:
        super().__init__()
        self.late_at, self.delay_s, self.count = late_at, delay_s, 0

    def send_message(self, data: list[int]) -> None:
        self.count += 1
        if self.count == self.late_at:
            time.sleep(self.delay_s)
        super().send_message(data)


def test_a_send_preempted_late_in_a_window_does_not_let_a_second_burst_through():
    # the burst's last message goes out late, near the end of its window; a pace that counted
    # fixed windows would let the next window's whole burst follow it at once
    out = _LateRecorder(late_at=JACK_OUTPUT_BURST, delay_s=JACK_OUTPUT_WINDOW_S * 0.9)
    port = RtMidiOutput("test:out", out, paced=True)
    for i in range(3 * JACK_OUTPUT_BURST):
        port.send_bytes([0x90, i % 128, 100])
    times = out.times
    spans = [times[i + JACK_OUTPUT_BURST] - times[i] for i in range(len(times) - JACK_OUTPUT_BURST)]
    assert min(spans) >= JACK_OUTPUT_WINDOW_S * 0.99

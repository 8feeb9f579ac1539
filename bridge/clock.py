"""Transport: follows the DAW's MIDI clock (24 ppq), Start/Stop/Continue and Song Position
Pointer, estimates tempo robustly, and falls back to an internal clock when no DAW clock runs.

Pure logic with explicit times: every method takes the arrival time in seconds, so it is tested
with synthetic clocks and driven by the router thread (MIDI) or the scheduler (internal ticks).
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np

from core.events import TICKS_PER_BEAT, Beat, EngineInput, TransportChange

__all__ = ["TempoEstimator", "Transport", "CLOCK", "START", "CONTINUE", "STOP", "SONG_POSITION"]

CLOCK, START, CONTINUE, STOP, SONG_POSITION = 0xF8, 0xFA, 0xFB, 0xFC, 0xF2
MIN_TEMPO_BPM, MAX_TEMPO_BPM = 20.0, 400.0
_MIN_INTERVAL_S = 60.0 / (MAX_TEMPO_BPM * TICKS_PER_BEAT)
_MAX_INTERVAL_S = 60.0 / (MIN_TEMPO_BPM * TICKS_PER_BEAT)
_PAUSE_S = 0.25  # a gap this long (and 3 ticks' worth) is a pause, not a stall


class TempoEstimator:
    """Tempo from clock tick arrival times.

    Single tick intervals over virtual ports jitter by a millisecond or more (113-131 BPM
    readings at a true 120), so the tempo is the least-squares slope of arrival time against
    tick number over a window of ``window_ticks``; intervals far from the running estimate are
    dropped as glitches, and a sustained change restarts the window so real tempo changes are
    followed within about half a beat. Ticks delivered in a burst after a stall keep their count
    but not their times, and no estimate outside 20..400 BPM is ever reported."""

    def __init__(self, window_ticks: int = 48, change_ratio: float = 0.06, change_ticks: int = 12) -> None:
        self.window_ticks = window_ticks
        self.change_ratio = change_ratio
        self.change_ticks = change_ticks
        self.reset()

    def reset(self) -> None:
        self.times_s: deque[float] = deque(maxlen=self.window_ticks)
        self.tick_numbers: deque[int] = deque(maxlen=self.window_ticks)
        self._tick = 0
        self._deviating = 0
        self.interval_s: float | None = None
        self.dropped = 0
        self.rejected = 0

    def add(self, time_s: float) -> float | None:
        """Add one tick; returns the tempo in BPM once two ticks are known."""
        if self.times_s:
            interval = time_s - self.times_s[-1]
            if interval <= 0:
                self.dropped += 1
                return self.tempo_bpm
            if self.interval_s is not None:
                ratio = interval / self.interval_s
                if ratio > 3.0 and interval > _PAUSE_S:  # the DAW stopped sending: start over
                    self.times_s.clear()
                    self.tick_numbers.clear()
                elif ratio < 0.25:
                    # Part of a burst: a stalled port or process delivered several ticks at
                    # once. The tick counts; its arrival time says nothing about the tempo.
                    self._tick += 1
                    self.dropped += 1
                    return self.tempo_bpm
                elif abs(ratio - 1.0) > self.change_ratio:
                    self._deviating += 1
                    if self._deviating >= self.change_ticks:
                        keep = list(zip(self.tick_numbers, self.times_s))[-self.change_ticks:]
                        self.tick_numbers = deque((k for k, _ in keep), maxlen=self.window_ticks)
                        self.times_s = deque((t for _, t in keep), maxlen=self.window_ticks)
                        self._deviating = 0
                else:
                    self._deviating = 0
        self._tick += 1
        self.times_s.append(time_s)
        self.tick_numbers.append(self._tick)
        if len(self.times_s) >= 2:
            ticks = np.fromiter(self.tick_numbers, float)
            times = np.fromiter(self.times_s, float)
            ticks -= ticks.mean()
            slope = float(np.dot(ticks, times - times.mean()) / np.dot(ticks, ticks))
            if _MIN_INTERVAL_S <= slope <= _MAX_INTERVAL_S:
                self.interval_s = slope
            else:
                # Ticks delivered in a burst (a stalled port or process) give a slope no DAW
                # plays at: keep the last sane estimate rather than report 900,000 BPM.
                self.rejected += 1
        return self.tempo_bpm

    @property
    def tempo_bpm(self) -> float | None:
        if self.interval_s is None:
            return None
        return 60.0 / (self.interval_s * TICKS_PER_BEAT)


class Transport:
    """Song position, play state and tempo, from the DAW or the internal clock.

    ``mode``: ``follow`` (the DAW's clock when it runs, else internal), ``internal`` (ignore
    incoming clock) or ``external`` (only the DAW's clock)."""

    def __init__(self, tempo_bpm: float = 120.0, mode: str = "follow", external_timeout_s: float = 0.5) -> None:
        if mode not in ("follow", "internal", "external"):
            raise ValueError(f"clock mode {mode!r} must be follow, internal or external")
        if not MIN_TEMPO_BPM <= tempo_bpm <= MAX_TEMPO_BPM:
            raise ValueError(f"tempo {tempo_bpm} BPM is outside 20..400")
        self.mode = mode
        self.internal_tempo_bpm = tempo_bpm
        self.external_timeout_s = external_timeout_s
        self.estimator = TempoEstimator()
        self._lock = threading.Lock()
        self.playing = mode != "external"
        self.ticks = -1 if self.playing else 0  # the first tick is song position 0
        self.anchor_time_s = 0.0
        self.last_external_s = -1e9
        self.source = "internal"
        self.dropped = 0

    # -- reading ---------------------------------------------------------------------
    @property
    def tempo_bpm(self) -> float:
        if self.source == "midi" and self.estimator.tempo_bpm is not None:
            return self.estimator.tempo_bpm
        return self.internal_tempo_bpm

    def seconds_per_beat(self) -> float:
        return 60.0 / self.tempo_bpm

    def beats_at(self, time_s: float) -> float:
        """Song position in beats at ``time_s`` (extrapolated at most one tick past the last)."""
        with self._lock:
            base = self.ticks / TICKS_PER_BEAT
            if not self.playing:
                return base
            elapsed_beats = max(0.0, time_s - self.anchor_time_s) / self.seconds_per_beat()
            if self.source == "midi":
                elapsed_beats = min(elapsed_beats, 1.0 / TICKS_PER_BEAT)
            return base + elapsed_beats

    def time_at(self, beats: float) -> float:
        """The time in seconds at which song position ``beats`` sounds at the current tempo."""
        with self._lock:
            return self.anchor_time_s + (beats - self.ticks / TICKS_PER_BEAT) * self.seconds_per_beat()

    def external_active(self, now_s: float) -> bool:
        return now_s - self.last_external_s < self.external_timeout_s

    # -- writing ---------------------------------------------------------------------
    def on_midi(self, status: int, data: list[int], time_s: float) -> list[EngineInput]:
        """Apply one system real-time/common message from the DAW; returns engine events."""
        if self.mode == "internal":
            return []
        with self._lock:
            self.last_external_s = time_s
            handover: list[EngineInput] = []
            if self.source != "midi":
                # The DAW takes over: whatever the internal clock was playing stops here (its
                # notes are released), and the DAW's Start, Continue or clock starts it again.
                if self.playing:
                    handover.append(TransportChange(False, max(self.ticks, 0) / TICKS_PER_BEAT, time_s,
                                                    "clock source changed"))
                self.source = "midi"
                self.playing = False
            return handover + self._on_midi(status, data, time_s)

    def _on_midi(self, status: int, data: list[int], time_s: float) -> list[EngineInput]:
        """``on_midi`` with the lock held and the source already the DAW's."""
        if status == CLOCK:
            self.estimator.add(time_s)
            if not self.playing:
                return []
            return self._advance(time_s)
        if status in (START, CONTINUE):
            if status == START:
                self.ticks = 0
            # The first clock after Start/Continue marks the current position.
            self.ticks -= 1
            self.playing = True
            self.anchor_time_s = time_s
            return [TransportChange(True, (self.ticks + 1) / TICKS_PER_BEAT, time_s,
                                    "start" if status == START else "continue")]
        if status == STOP:
            was = self.playing
            self.playing = False
            self.ticks = max(self.ticks, 0)
            return [TransportChange(False, self.ticks / TICKS_PER_BEAT, time_s, "stop")] if was else []
        if status == SONG_POSITION and len(data) == 2:
            sixteenths = data[0] | (data[1] << 7)
            self.ticks = sixteenths * (TICKS_PER_BEAT // 4)
            self.anchor_time_s = time_s
            return [TransportChange(self.playing, self.ticks / TICKS_PER_BEAT, time_s, "locate")]
        self.dropped += 1
        return []

    def internal_tick(self, time_s: float) -> list[EngineInput]:
        """One tick of the internal clock; ignored while a DAW clock is running."""
        with self._lock:
            if self.mode == "external" or (self.mode == "follow" and self.external_active(time_s)):
                return []
            events: list[EngineInput] = []
            if self.source != "internal":
                self.source = "internal"
                self.playing = True
                self.ticks = -1
                self.anchor_time_s = time_s
                events.append(TransportChange(True, 0.0, time_s, "internal clock"))
            if not self.playing:
                return events
            # A tick due before the last start or locate but run after it (the scheduler was
            # late) counts from that moment: song time never runs backwards across it.
            return events + self._advance(max(time_s, self.anchor_time_s))

    def set_playing(self, playing: bool, time_s: float) -> list[EngineInput]:
        """Start/stop the internal transport (OSC transport control)."""
        with self._lock:
            if playing == self.playing:
                return []
            self.playing = playing
            self.anchor_time_s = time_s
            if playing:
                self.ticks -= 1  # the next tick marks the position it starts from (as after a MIDI Start)
                return [TransportChange(True, (self.ticks + 1) / TICKS_PER_BEAT, time_s, "play")]
            # Stopped before its first tick, it stands at 0 (as after a MIDI Stop): a start
            # from there reports 0, never a tick before the song.
            self.ticks = max(self.ticks, 0)
            return [TransportChange(False, self.ticks / TICKS_PER_BEAT, time_s, "stop")]

    def locate(self, beats: float, time_s: float) -> list[EngineInput]:
        with self._lock:
            self.ticks = int(round(beats * TICKS_PER_BEAT)) - (1 if self.playing else 0)
            self.anchor_time_s = time_s
            return [TransportChange(self.playing, beats, time_s, "locate")]

    def set_tempo(self, tempo_bpm: float) -> None:
        if not MIN_TEMPO_BPM <= tempo_bpm <= MAX_TEMPO_BPM:
            raise ValueError(f"tempo {tempo_bpm} BPM is outside 20..400")
        with self._lock:
            self.internal_tempo_bpm = tempo_bpm

    def _advance(self, time_s: float) -> list[EngineInput]:
        self.ticks += 1
        self.anchor_time_s = time_s
        if self.ticks >= 0 and self.ticks % TICKS_PER_BEAT == 0:
            return [Beat(self.ticks // TICKS_PER_BEAT, time_s, self.tempo_bpm)]
        return []

"""Drive a MIDI score from a VA curve: velocities, CC automation lanes, optional tempo map.

Alignment: the score's time in seconds (under the output file's own tempo map) plus
``offset_s`` is the video time at which the curve is read, so ``offset_s`` is the video time at
which the score starts. Past either end of the curve its first/last values hold.

Mappings (``a`` = arousal, ``x`` = the lane's source, both in [-1, 1]):

- velocity: ``v' = clip(round(v * 2 ** (velocity_depth * a)), 1, 127)`` at each note-on
  (depth 0.5: x0.71 at a = -1, x1.41 at a = +1);
- CC lanes (default CC11 expression <- arousal, CC1 modulation <- valence), on every channel
  that plays notes, every ``lane_step_beats``, sent only when the value changes:
  ``cc = round(cc_floor + (127 - cc_floor) * (x + 1) / 2)``; existing events of those
  controllers on those channels are replaced (and counted);
- tempo map (optional): every ``tempo_step_beats`` (and at each original tempo change) the
  original tempo is multiplied by ``2 ** (tempo_depth * a)`` (depth 0.15: +-11 %), with ``a``
  read at the output time of that beat, so faster passages stay aligned with the video; a
  change is written only where the tempo changes.

Tempo meta events go to the first track; lanes to a new track "va automation" (type 0 files:
merged into the only track). Type 2 files are refused.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np

from core.atomic import atomic_output

from .curve import VACurve
from .errors import CurveError

__all__ = ["ApplyReport", "ApplySettings", "apply_curve", "apply_file"]

SOURCES = ("arousal", "valence")
# Finer lane or tempo steps than a 64th of a beat (8 ms at 120 BPM) change nothing audible and
# would only multiply events over a long score.
MIN_STEP_BEATS = 1 / 64
# Automation events one run may write (all lanes and channels together): a 20,000-beat score
# with two lanes on 16 channels at the default step changes value far less often than this.
MAX_LANE_EVENTS = 2_000_000


@dataclass
class ApplySettings:
    """How the curve drives the score (see the module docstring)."""

    offset_s: float = 0.0
    velocity_depth: float = 0.5
    lanes: dict[int, str] = field(default_factory=lambda: {11: "arousal", 1: "valence"})
    lane_step_beats: float = 0.25
    cc_floor: int = 32
    tempo_map: bool = False
    tempo_depth: float = 0.15
    tempo_step_beats: float = 1.0

    def check(self) -> None:
        """Raise CurveError naming the first invalid setting."""
        numbers = {"offset": self.offset_s, "velocity depth": self.velocity_depth,
                   "lane step": self.lane_step_beats, "tempo depth": self.tempo_depth,
                   "tempo step": self.tempo_step_beats}
        for name, value in numbers.items():
            if not math.isfinite(value):
                raise CurveError(f"{name} must be a finite number, got {value}")
        if not 0 <= self.velocity_depth <= 2 or not 0 <= self.tempo_depth <= 1:
            raise CurveError("velocity depth must be in [0, 2] and tempo depth in [0, 1]")
        if self.lane_step_beats < MIN_STEP_BEATS or self.tempo_step_beats < MIN_STEP_BEATS:
            raise CurveError(f"lane and tempo steps must be at least 1/{round(1 / MIN_STEP_BEATS)} beat, got "
                             f"{self.lane_step_beats:g} and {self.tempo_step_beats:g}")
        if not 0 <= self.cc_floor <= 126:
            raise CurveError(f"CC floor must be in 0..126, got {self.cc_floor}")
        for number, source in self.lanes.items():
            if not 0 <= number <= 119 or source not in SOURCES:
                raise CurveError(f"lane CC{number}={source}: controllers 0..119, sources {', '.join(SOURCES)}")


@dataclass
class ApplyReport:
    """What was changed."""

    notes: int = 0
    mean_velocity_before: float = 0.0
    mean_velocity_after: float = 0.0
    lane_events: int = 0
    replaced_events: int = 0
    tempo_events: int = 0
    score_s: float = 0.0
    channels: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _absolute(track) -> list[tuple[int, object]]:
    tick = 0
    events = []
    for message in track:
        tick += message.time
        events.append((tick, message))
    return events


def _seconds_of_ticks(ticks: np.ndarray, tempi: list[tuple[int, int]], ticks_per_beat: int) -> np.ndarray:
    """Seconds at each tick under ``(tick, microseconds per beat)`` changes (sorted, from tick 0)."""
    starts = np.array([t for t, _ in tempi], dtype=np.float64)
    per_tick = np.array([us for _, us in tempi], dtype=np.float64) / 1e6 / ticks_per_beat
    elapsed = np.concatenate([[0.0], np.cumsum(np.diff(starts) * per_tick[:-1])])
    index = np.clip(np.searchsorted(starts, ticks, side="right") - 1, 0, len(starts) - 1)
    return elapsed[index] + (ticks - starts[index]) * per_tick[index]


def _tempo_changes(events: list[tuple[int, object]]) -> list[tuple[int, int]]:
    changes = {0: 500_000}
    for tick, message in sorted(((t, m) for t, m in events if m.type == "set_tempo"), key=lambda e: e[0]):
        changes[tick] = message.tempo
    return sorted(changes.items())


def _new_tempi(original: list[tuple[int, int]], end_tick: int, ticks_per_beat: int, curve: VACurve,
               settings: ApplySettings) -> list[tuple[int, int]]:
    step = max(1, round(settings.tempo_step_beats * ticks_per_beat))
    grid = sorted(set(range(0, end_tick + 1, step)) | {tick for tick, _ in original})
    starts = np.array([t for t, _ in original])
    result: list[tuple[int, int]] = []
    elapsed = 0.0
    for index, tick in enumerate(grid):
        if index:
            elapsed += (tick - grid[index - 1]) * result[-1][1] / 1e6 / ticks_per_beat
        base = original[int(np.searchsorted(starts, tick, side="right")) - 1][1]
        arousal = float(curve.at(elapsed + settings.offset_s)[1])
        tempo = round(base / 2 ** (settings.tempo_depth * arousal))
        result.append((tick, min(max(tempo, 1), 0xFFFFFF)))
    return [change for i, change in enumerate(result) if i == 0 or change[1] != result[i - 1][1]]


def apply_curve(midi, curve: VACurve, settings: ApplySettings) -> ApplyReport:
    """Modify a ``mido.MidiFile`` in place; returns what changed."""
    import mido

    settings.check()
    if midi.type == 2:
        raise CurveError("type 2 MIDI files (independent sequences) have no single time line to align")
    if not midi.tracks:
        raise CurveError("the MIDI file has no tracks")
    report = ApplyReport()
    ppq = midi.ticks_per_beat
    tracks = [_absolute(track) for track in midi.tracks]
    every = [event for track in tracks for event in track]
    end_tick = max((tick for tick, _ in every), default=0)
    tempi = _tempo_changes(every)
    if settings.tempo_map:
        tempi = _new_tempi(tempi, end_tick, ppq, curve, settings)
        tracks = [[(t, m) for t, m in track if m.type != "set_tempo"] for track in tracks]
        tracks[0] += [(t, mido.MetaMessage("set_tempo", tempo=us, time=0)) for t, us in tempi]
        report.tempo_events = len(tempi)

    channels = sorted({m.channel for _, m in every if m.type == "note_on"})
    velocities_before, velocities_after = [], []
    for index, track in enumerate(tracks):
        kept = []
        for tick, message in track:
            if message.type == "control_change" and message.control in settings.lanes \
                    and message.channel in channels:
                report.replaced_events += 1
                continue
            if message.type == "note_on" and message.velocity > 0:
                seconds = float(_seconds_of_ticks(np.array([tick]), tempi, ppq)[0])
                arousal = float(curve.at(seconds + settings.offset_s)[1])
                scaled = round(message.velocity * 2 ** (settings.velocity_depth * arousal))
                velocity = min(127, max(1, scaled))
                velocities_before.append(message.velocity)
                velocities_after.append(velocity)
                message = message.copy(velocity=velocity)
            kept.append((tick, message))
        tracks[index] = kept

    lane: list[tuple[int, object]] = []
    grid = np.arange(0, end_tick + 1, max(1, round(settings.lane_step_beats * ppq)))
    values = curve.at(_seconds_of_ticks(grid.astype(np.float64), tempi, ppq) + settings.offset_s)
    for control, source in sorted(settings.lanes.items()):
        column = values[:, 0] if source == "valence" else values[:, 1]
        levels = np.rint(settings.cc_floor + (127 - settings.cc_floor) * (column + 1) / 2).astype(int)
        changes = np.flatnonzero(np.concatenate([[True], np.diff(levels) != 0]))
        if len(lane) + len(changes) * len(channels) > MAX_LANE_EVENTS:
            raise CurveError(f"the automation would hold more than {MAX_LANE_EVENTS:,} CC events; use a "
                             "coarser --lane-step or fewer lanes")
        for channel in channels:
            lane += [(int(grid[i]), mido.Message("control_change", channel=channel, control=control,
                                                 value=int(levels[i]))) for i in changes]
    report.lane_events = len(lane)
    if lane:
        if midi.type == 0:
            tracks[0] = tracks[0] + lane  # after existing controllers at equal ticks (stable sort)
        else:
            tracks.append([(0, mido.MetaMessage("track_name", name="va automation"))] + lane)

    midi.tracks = [_relative(track, mido) for track in tracks]
    report.notes = len(velocities_before)
    report.mean_velocity_before = float(np.mean(velocities_before)) if velocities_before else 0.0
    report.mean_velocity_after = float(np.mean(velocities_after)) if velocities_after else 0.0
    report.score_s = float(_seconds_of_ticks(np.array([end_tick]), tempi, ppq)[0])
    report.channels = channels
    past = report.score_s + settings.offset_s - curve.duration_s
    if past > 0.5:
        report.warnings.append(f"the score runs {past:.1f} s past the end of the curve; its last values hold")
    if settings.offset_s < 0:
        report.warnings.append("negative offset: the score's first seconds precede the video; its first values hold")
    return report


def _relative(events: list[tuple[int, object]], mido) -> object:
    """A MidiTrack from absolute events: automation before notes at equal ticks, end_of_track last."""
    body = [(t, m) for t, m in events if not (m.is_meta and m.type == "end_of_track")]
    last = max((t for t, _ in events), default=0)
    order = {"track_name": -1, "set_tempo": 0, "control_change": 1}
    body.sort(key=lambda event: (event[0], order.get(event[1].type, 2)))
    track = mido.MidiTrack()
    previous = 0
    for tick, message in body + [(last, mido.MetaMessage("end_of_track"))]:
        track.append(message.copy(time=tick - previous))
        previous = tick
    return track


def apply_file(score: str | os.PathLike[str], curve: VACurve, output: str | os.PathLike[str],
               settings: ApplySettings) -> ApplyReport:
    """Read a MIDI file, apply the curve, write the result atomically."""
    from core.midifile import MidiFileError, read_midi_file

    try:
        midi = read_midi_file(score)
    except MidiFileError as exc:
        raise CurveError(str(exc)) from None
    try:
        report = apply_curve(midi, curve, settings)
    except CurveError as exc:
        raise CurveError(f"{score}: {exc}") from None
    with atomic_output(output) as temporary:
        midi.save(temporary)
    return report

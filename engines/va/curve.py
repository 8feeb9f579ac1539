"""A valence-arousal curve over a video's time line: read, validate, write, sample.

The shared helper for everything that consumes a VA curve (``va apply``, ``harmonize --va``,
``continue --va``, live playback). Conventions match the models' labels
(``engines/harmonizer/affect.py``, ``engines/continuation/affect.py``): valence and arousal in
[-1, 1], 0 neutral. Times are seconds of the video (``time_s``), strictly increasing.

Sampling is linear interpolation between samples, holding the first/last value outside the
curve. ``per_beat`` averages the curve over each beat (or beat subdivision) window, which is what
a model conditioned per quarter note wants; tempo is a constant BPM or a list of
``(start_beat, bpm)`` changes.
"""

from __future__ import annotations

import csv
import json
import math
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.atomic import atomic_output

from .errors import CurveError

__all__ = ["COLUMNS", "MAX_CURVE_BYTES", "MAX_CURVE_DURATION_S", "MAX_CURVE_SAMPLES", "Tempo", "VACurve",
           "beats_to_seconds", "midi_tempo_map", "read_curve", "read_song_curve", "song_curve_at",
           "song_curve_per_step", "write_curve"]

COLUMNS = ("time_s", "valence", "arousal")
# A day of video: longer curves are damaged or hostile, and every consumer (resampling, per-beat
# means, CC lanes) does work that grows with the curve's span. The same bound holds for a curve
# in beats (86,400 beats, far past any score).
MAX_CURVE_DURATION_S = 24 * 60 * 60.0
# Samples one curve may hold, read or resampled: 24 h at about 11.6 Hz (``va analyze`` writes
# 10 Hz); it keeps a parsed curve in memory under a few hundred MB.
MAX_CURVE_SAMPLES = 1_000_000
# A curve file's size before parsing (1,000,000 rows of CSV take about 30 MB).
MAX_CURVE_BYTES = 64 * 1024 * 1024
Tempo = float | Sequence[tuple[float, float]]


@dataclass(frozen=True)
class VACurve:
    """Samples of (valence, arousal) at strictly increasing times in seconds."""

    time_s: np.ndarray
    valence: np.ndarray
    arousal: np.ndarray

    def __post_init__(self) -> None:
        times = np.asarray(self.time_s, dtype=np.float64)
        values = [np.asarray(v, dtype=np.float64) for v in (self.valence, self.arousal)]
        if times.ndim != 1 or len(times) == 0 or any(v.shape != times.shape for v in values):
            raise CurveError("a VA curve needs at least one sample and equal-length time/valence/arousal")
        if not (np.isfinite(times).all() and all(np.isfinite(v).all() for v in values)):
            raise CurveError("a VA curve holds NaN or infinite values")
        if len(times) > 1 and not (np.diff(times) > 0).all():
            raise CurveError("VA curve times must be strictly increasing")
        if len(times) > MAX_CURVE_SAMPLES:
            raise CurveError(f"a VA curve holds at most {MAX_CURVE_SAMPLES:,} samples, got {len(times):,}")
        if times[0] < 0 or times[-1] > MAX_CURVE_DURATION_S:
            raise CurveError(f"VA curve times must lie in 0..{MAX_CURVE_DURATION_S:g} s (24 h), got "
                             f"{times[0]:g}..{times[-1]:g}")
        if any((np.abs(v) > 1.0 + 1e-9).any() for v in values):
            raise CurveError("valence and arousal must lie in [-1, 1]")
        object.__setattr__(self, "time_s", times)
        object.__setattr__(self, "valence", np.clip(values[0], -1.0, 1.0))
        object.__setattr__(self, "arousal", np.clip(values[1], -1.0, 1.0))

    def __len__(self) -> int:
        return len(self.time_s)

    @property
    def duration_s(self) -> float:
        """Time of the last sample."""
        return float(self.time_s[-1])

    def at(self, time_s: float | np.ndarray) -> np.ndarray:
        """(valence, arousal) at each time: shape [..., 2] float64, edges held."""
        times = np.asarray(time_s, dtype=np.float64)
        valence = np.interp(times, self.time_s, self.valence)
        arousal = np.interp(times, self.time_s, self.arousal)
        return np.stack([valence, arousal], axis=-1)

    def mean_between(self, start_s: np.ndarray, end_s: np.ndarray) -> np.ndarray:
        """[N, 2] mean of the (linearly interpolated) curve over each window [start, end)."""
        starts = np.atleast_1d(np.asarray(start_s, dtype=np.float64))
        ends = np.atleast_1d(np.asarray(end_s, dtype=np.float64))
        if starts.shape != ends.shape or (ends < starts).any():
            raise CurveError("windows need as many ends as starts, each end >= its start")
        low = min(starts.min(), self.time_s[0]) - 1.0
        high = max(ends.max(), self.time_s[-1]) + 1.0
        knots = np.concatenate([[low], self.time_s, [high]])  # the curve extended flat at both ends
        result = np.empty((len(starts), 2))
        for column, series in enumerate((self.valence, self.arousal)):
            values = np.concatenate([[series[0]], series, [series[-1]]])
            width = ends - starts
            total = _integral(knots, values, ends) - _integral(knots, values, starts)
            point = np.interp(starts, self.time_s, series)
            result[:, column] = np.where(width > 0, total / np.where(width > 0, width, 1.0), point)
        return result

    def per_beat(self, count: int, tempo: Tempo, offset_s: float = 0.0, start_beat: float = 0.0,
                 subdivisions: int = 1) -> np.ndarray:
        """[count, 2] float32 mean VA of consecutive beat windows (``1/subdivisions`` beat each).

        Window ``i`` covers beats ``start_beat + i/subdivisions`` to the next; beat 0 falls on
        video time ``offset_s``.
        """
        if count < 0 or subdivisions < 1:
            raise CurveError(f"count must be >= 0 and subdivisions >= 1, got {count}, {subdivisions}")
        edges = start_beat + np.arange(count + 1, dtype=np.float64) / subdivisions
        seconds = beats_to_seconds(edges, tempo) + offset_s
        return self.mean_between(seconds[:-1], seconds[1:]).astype(np.float32)

    def at_beats(self, beats: float | np.ndarray, tempo: Tempo, offset_s: float = 0.0) -> np.ndarray:
        """(valence, arousal) at song positions in beats; beat 0 is video time ``offset_s``."""
        return self.at(beats_to_seconds(beats, tempo) + offset_s)

    def resampled(self, rate_hz: float) -> VACurve:
        """The curve sampled every ``1/rate_hz`` s from 0 to its last time."""
        if not (math.isfinite(rate_hz) and rate_hz > 0):
            raise CurveError(f"rate must be a positive number of samples per second, got {rate_hz}")
        count = math.floor(self.duration_s * rate_hz + 1e-9) + 1
        if count > MAX_CURVE_SAMPLES:
            raise CurveError(f"resampling {self.duration_s:g} s at {rate_hz:g} Hz gives {count:,} samples; at most "
                             f"{MAX_CURVE_SAMPLES:,} (lower the rate)")
        times = np.arange(count, dtype=np.float64) / rate_hz
        values = self.at(times)
        return VACurve(times, values[:, 0], values[:, 1])


def _integral(knots: np.ndarray, values: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Integral from ``knots[0]`` to each time of the piecewise-linear function (knots, values)."""
    primitive = np.concatenate([[0.0], np.cumsum(np.diff(knots) * (values[1:] + values[:-1]) / 2)])
    index = np.clip(np.searchsorted(knots, times, side="right") - 1, 0, len(knots) - 2)
    dt = times - knots[index]
    slope = (values[index + 1] - values[index]) / (knots[index + 1] - knots[index])
    return primitive[index] + dt * (values[index] + 0.5 * slope * dt)


def beats_to_seconds(beats: float | np.ndarray, tempo: Tempo) -> np.ndarray:
    """Seconds from beat 0 of each song position under a constant BPM or ``(start_beat, bpm)`` changes.

    The first tempo also applies before beat 0 (pickups), the last one after the last change.
    """
    positions = np.asarray(beats, dtype=np.float64)
    if isinstance(tempo, (int, float)):
        changes = [(0.0, float(tempo))]
    else:
        changes = sorted((float(b), float(t)) for b, t in tempo)
        if not changes or changes[0][0] != 0.0:
            raise CurveError("a tempo map must start at beat 0")
    if any(not (math.isfinite(bpm) and bpm > 0) for _, bpm in changes):
        raise CurveError(f"tempi must be positive BPM, got {[bpm for _, bpm in changes]}")
    starts = np.array([b for b, _ in changes])
    seconds_per_beat = np.array([60.0 / bpm for _, bpm in changes])
    elapsed = np.concatenate([[0.0], np.cumsum(np.diff(starts) * seconds_per_beat[:-1])])
    index = np.clip(np.searchsorted(starts, positions, side="right") - 1, 0, len(starts) - 1)
    seconds = elapsed[index] + (positions - starts[index]) * seconds_per_beat[index]
    return seconds


def _parse_number(text: str, column: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise CurveError(f"{where}: {column} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise CurveError(f"{where}: {column} is {text.strip()} (NaN/infinite values are not allowed)")
    return value


def _rows_from_csv(path: Path, names: Sequence[str]) -> list[tuple[str, list[str]]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
        except csv.Error as exc:
            raise CurveError(f"{path}: line 1: not a CSV header ({exc})") from None
        if header is None:
            raise CurveError(f"{path}: empty file (expected a header {','.join(names)})")
        header = [cell.strip() for cell in header]
        missing = [name for name in names if name not in header]
        if missing:
            raise CurveError(f"{path}: line 1: missing column(s) {', '.join(missing)}; the header is "
                             f"{','.join(header)!r} (rename with --columns TIME,VALENCE,AROUSAL)")
        indexes = [header.index(name) for name in names]
        rows = []
        try:
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                where = f"{path}: line {reader.line_num}"
                if len(row) <= max(indexes):
                    raise CurveError(f"{where}: {len(row)} fields, expected {len(header)}")
                if len(rows) == MAX_CURVE_SAMPLES:
                    raise CurveError(f"{where}: more than {MAX_CURVE_SAMPLES:,} samples")
                rows.append((where, [row[i] for i in indexes]))
        except csv.Error as exc:
            raise CurveError(f"{path}: line {reader.line_num}: not a CSV row ({exc})") from None
    return rows


def _rows_from_json(path: Path, names: Sequence[str]) -> list[tuple[str, list[str]]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CurveError(f"{path}: line {exc.lineno}: invalid JSON ({exc.msg})") from None
    except RecursionError:
        raise CurveError(f"{path}: JSON nested too deeply (a curve is an object of lists or a list of "
                         "objects)") from None
    except ValueError as exc:  # an integer of more digits than Python converts
        raise CurveError(f"{path}: invalid JSON ({exc})") from None
    if isinstance(data, dict) and "samples" in data:
        data = data["samples"]
    if isinstance(data, dict):
        missing = [name for name in names if not isinstance(data.get(name), list)]
        if missing:
            raise CurveError(f"{path}: missing list(s) {', '.join(missing)} (expected "
                             f"{{\"{names[0]}\": [...], \"{names[1]}\": [...], \"{names[2]}\": [...]}})")
        lengths = {len(data[name]) for name in names}
        if len(lengths) != 1:
            raise CurveError(f"{path}: lists {', '.join(names)} differ in length")
        if max(lengths) > MAX_CURVE_SAMPLES:
            raise CurveError(f"{path}: {max(lengths):,} samples; at most {MAX_CURVE_SAMPLES:,}")
        return [(f"{path}: sample {i}", [str(data[name][i]) for name in names]) for i in range(lengths.pop())]
    if isinstance(data, list):
        if len(data) > MAX_CURVE_SAMPLES:
            raise CurveError(f"{path}: {len(data):,} samples; at most {MAX_CURVE_SAMPLES:,}")
        rows = []
        for i, record in enumerate(data):
            where = f"{path}: sample {i}"
            if not isinstance(record, dict) or any(name not in record for name in names):
                raise CurveError(f"{where}: expected an object with keys {', '.join(names)}")
            rows.append((where, [str(record[name]) for name in names]))
        return rows
    raise CurveError(f"{path}: expected a JSON object of lists or a list of samples")


SONG_TIME_COLUMNS = ("beats", "time_s", "seconds")


def _check_file(source: Path) -> None:
    """A regular file of at most MAX_CURVE_BYTES (a FIFO would block, /dev/zero never ends)."""
    try:
        info = source.stat()
    except FileNotFoundError:
        raise CurveError(f"{source}: no such file") from None
    except OSError as exc:
        raise CurveError(f"{source}: cannot read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(info.st_mode):
        raise CurveError(f"{source}: not a regular file")
    if info.st_size > MAX_CURVE_BYTES:
        raise CurveError(f"{source}: {info.st_size:,} bytes; a curve file may have at most "
                         f"{MAX_CURVE_BYTES // (1024 * 1024)} MiB")


def read_song_curve(path: str | os.PathLike[str]) -> tuple[VACurve, str]:
    """A curve to condition a score on, and the name of its time column: ``beats`` (song
    positions, CSV only) or ``time_s``/``seconds`` (video time, what ``va analyze`` writes; the
    default, and always for JSON). The CLIs' ``--va`` option reads with this."""
    source = Path(path)
    unit = "time_s"
    _check_file(source)
    if source.suffix.lower() != ".json":
        try:
            with open(source, newline="", encoding="utf-8-sig") as handle:
                header = [cell.strip().lower() for cell in next(csv.reader(handle), [])]
        except FileNotFoundError:
            raise CurveError(f"{source}: no such file") from None
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise CurveError(f"{source}: cannot read ({exc})") from None
        unit = next((name for name in SONG_TIME_COLUMNS if name in header), "time_s")
    return read_curve(source, (unit, "valence", "arousal")), unit


def midi_tempo_map(changes: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """``(beats, BPM)`` from a MIDI file's ``(beats, microseconds per beat)`` changes: MIDI's
    default 120 BPM until the first change; of several changes at one beat the last wins."""
    tempo_map = [(beats, 60e6 / tempo) for beats, tempo in sorted(changes, key=lambda change: change[0])]
    if not tempo_map or tempo_map[0][0] > 0:
        tempo_map.insert(0, (0.0, 120.0))
    return [change for index, change in enumerate(tempo_map)
            if index + 1 == len(tempo_map) or tempo_map[index + 1][0] != change[0]]


def song_curve_at(path: str | os.PathLike[str], tempo_changes: Sequence[tuple[float, float]]):
    """A song curve (``read_song_curve``) as a function of song positions in beats -> [..., 2]
    (valence, arousal); seconds are converted through the MIDI tempo changes."""
    curve, unit = read_song_curve(path)
    if unit == "beats":
        return curve.at
    tempo = midi_tempo_map(tempo_changes)
    return lambda beats: curve.at_beats(beats, tempo)


def song_curve_per_step(path: str | os.PathLike[str], steps: int, steps_per_quarter: int,
                        tempo_changes: Sequence[tuple[float, float]]) -> np.ndarray:
    """[steps, 2] float32: a song curve's mean over each step of a grid of ``steps_per_quarter``
    steps per beat from beat 0 (the models' labels are per-step means); seconds are converted
    through the MIDI tempo changes."""
    curve, unit = read_song_curve(path)
    if unit == "beats":
        edges = np.arange(steps + 1, dtype=np.float64) / steps_per_quarter
        return curve.mean_between(edges[:-1], edges[1:]).astype(np.float32)
    return curve.per_beat(steps, midi_tempo_map(tempo_changes), subdivisions=steps_per_quarter)


def read_curve(path: str | os.PathLike[str], columns: Sequence[str] = COLUMNS,
               value_range: tuple[float, float] = (-1.0, 1.0)) -> VACurve:
    """Read and validate a VA curve from CSV (header row) or JSON (by the file's extension).

    ``columns`` names the time, valence and arousal columns; ``value_range`` is the scale the
    file uses (e.g. ``(1, 9)`` for SAM ratings), mapped linearly to [-1, 1]. Errors name the
    file and the line (CSV) or sample index (JSON).
    """
    source = Path(path)
    if len(columns) != 3:
        raise CurveError(f"columns must name time, valence and arousal, got {list(columns)}")
    low, high = value_range
    if not (math.isfinite(low) and math.isfinite(high) and high > low):
        raise CurveError(f"value range must be LOW:HIGH with LOW < HIGH, got {low}:{high}")
    _check_file(source)
    try:
        rows = (_rows_from_json if source.suffix.lower() == ".json" else _rows_from_csv)(source, columns)
    except (OSError, UnicodeDecodeError) as exc:
        raise CurveError(f"{source}: cannot read ({exc})") from None
    if not rows:
        raise CurveError(f"{source}: no samples")
    times, valence, arousal = [], [], []
    for where, (time_text, valence_text, arousal_text) in rows:
        time_value = _parse_number(time_text, columns[0], where)
        if time_value < 0:
            raise CurveError(f"{where}: {columns[0]} {time_value} is negative")
        if time_value > MAX_CURVE_DURATION_S:
            raise CurveError(f"{where}: {columns[0]} {time_value:g} is past the longest curve read "
                             f"({MAX_CURVE_DURATION_S:g}, 24 h in seconds)")
        if times and time_value <= times[-1]:
            raise CurveError(f"{where}: {columns[0]} {time_value} does not come after {times[-1]} "
                             "(times must be strictly increasing)")
        values = []
        for name, text in ((columns[1], valence_text), (columns[2], arousal_text)):
            value = _parse_number(text, name, where)
            if not low - 1e-9 <= value <= high + 1e-9:
                raise CurveError(f"{where}: {name} {value} is outside [{low:g}, {high:g}] "
                                 "(give the file's scale with --from-range LOW:HIGH)")
            values.append(2.0 * (value - low) / (high - low) - 1.0)
        times.append(time_value)
        valence.append(values[0])
        arousal.append(values[1])
    return VACurve(np.array(times), np.array(valence), np.array(arousal))


def write_curve(curve: VACurve, path: str | os.PathLike[str], extra: dict[str, object] | None = None,
                as_json: bool | None = None) -> None:
    """Write the curve atomically: JSON lists (plus ``extra`` keys, e.g. cuts) when ``as_json``
    or, by default, when ``path`` ends in .json; otherwise ``time_s,valence,arousal`` CSV; 4 decimals."""
    target = Path(path)
    as_json = target.suffix.lower() == ".json" if as_json is None else as_json
    columns = [np.round(values, 4).tolist() for values in (curve.time_s, curve.valence, curve.arousal)]
    with atomic_output(target) as temporary, temporary.open("w", newline="", encoding="utf-8") as handle:
        if as_json:
            json.dump({**(extra or {}), **dict(zip(COLUMNS, columns, strict=True))}, handle)
            return
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(COLUMNS)
        for t, v, a in zip(curve.time_s, curve.valence, curve.arousal, strict=True):
            writer.writerow((f"{t:.4f}", f"{v:.4f}", f"{a:.4f}"))

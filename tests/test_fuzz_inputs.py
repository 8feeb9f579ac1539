"""Property-based fuzzing of the offline file readers: MIDI files (byte mutations of valid files
and hostile structures written byte by byte) and VA curves (CSV and JSON).

Every input must either work or fail with the project's error type (``ScoreBridgeError``) and a
message that names the file, within a time and memory bound. The CI run is small and
deterministic; a longer run:

    SCOREBRIDGE_FUZZ_EXAMPLES=5000 .venv/bin/python -m pytest tests/test_fuzz_inputs.py -q

Every finding becomes a named regression test in ``tests/test_hardening_offline.py``.
"""

from __future__ import annotations

import json
import math
import os
import struct
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.errors import ScoreBridgeError

_LONG_RUN = int(os.environ.get("SCOREBRIDGE_FUZZ_EXAMPLES", "0"))
# Per input: what one reader may spend on it, generous for a loaded CI machine (the hangs this
# guards against ran for many minutes; the work after reading is bounded by the readers' limits).
TIME_BOUND_S = float(os.environ.get("SCOREBRIDGE_FUZZ_SECONDS", "30"))
MEMORY_BOUND_BYTES = 256 * 1024 * 1024


def fuzz(ci_examples: int):
    return settings(max_examples=_LONG_RUN or ci_examples, derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


def bounded(source: Path, action: Callable[[], object]) -> object | None:
    """Run ``action``: its result, or None when it refused the input with a ScoreBridgeError
    naming ``source``; anything else fails the test, as does overrunning the bounds."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        return action()
    except ScoreBridgeError as exc:
        assert str(source) in str(exc), f"the error does not name the file: {exc}"
        assert "Traceback" not in str(exc)
        return None
    finally:
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert elapsed < TIME_BOUND_S, f"{elapsed:.1f} s on one input"
        assert peak < MEMORY_BOUND_BYTES, f"{peak / 1e6:.0f} MB on one input"


# -- MIDI ----------------------------------------------------------------------------------

def _vlq(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def _track(events: list[bytes]) -> bytes:
    body = b"".join(events)
    return b"MTrk" + struct.pack(">I", len(body)) + body


def _file(kind: int, division: int, tracks: list[bytes], declared: int | None = None) -> bytes:
    header = struct.pack(">IHHH", 6, kind, len(tracks) if declared is None else declared, division)
    return b"MThd" + header + b"".join(tracks)


def _seed_files() -> list[bytes]:
    """Valid files the mutations start from: a type-0 melody, and a type-1 file with a conductor
    track (tempo, meter, key, text), a melody with running status and a drum track."""
    melody = [b"\x00\xff\x51\x03\x07\xa1\x20", b"\x00\xff\x58\x04\x03\x02\x18\x08"]
    for index, pitch in enumerate((60, 62, 64, 65, 67, 69)):
        melody += [b"\x00\x90" + bytes([pitch, 80]), _vlq(240 * (1 + index % 2)) + b"\x80" + bytes([pitch, 0])]
    melody.append(b"\x00\xff\x2f\x00")
    conductor = [b"\x00\xff\x03\x05tempo", b"\x00\xff\x51\x03\x06\x1a\x80", b"\x00\xff\x58\x04\x06\x03\x18\x08",
                 b"\x00\xff\x59\x02\xfe\x01", _vlq(1920) + b"\xff\x51\x03\x09\x27\xc0", b"\x00\xff\x2f\x00"]
    running = [b"\x00\x91\x48\x60"] + [_vlq(120) + bytes([p, 70]) for p in (50, 52, 53, 55, 57)]
    running += [b"\x00\xe1\x00\x40", b"\x00\xf0\x03\x7e\x7f\xf7", _vlq(480) + b"\x81\x48\x00", b"\x00\xff\x2f\x00"]
    drums = [b"\x00\x99\x24\x64", _vlq(240) + b"\x89\x24\x00", b"\x00\xff\x2f\x00"]
    return [_file(0, 480, [_track(melody)]), _file(1, 96, [_track(conductor), _track(running), _track(drums)])]


SEEDS = _seed_files()
HEADER_VALUES = st.sampled_from([0, 1, 2, 3, 0x7FFF, 0x8000, 0xE728, 0xFFFF])
MUTATION = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 400), st.integers(0, 255)),
    st.tuples(st.just("insert"), st.integers(0, 400), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("delete"), st.integers(0, 400), st.integers(1, 16)),
    st.tuples(st.just("truncate"), st.integers(0, 400), st.just(0)),
    st.tuples(st.just("header"), st.sampled_from([8, 10, 12]), HEADER_VALUES),
)


def _mutate(data: bytes, mutations: list[tuple]) -> bytes:
    out = bytearray(data)
    for kind, position, value in mutations:
        at = position % (len(out) + 1)
        if kind == "flip" and at < len(out):
            out[at] = value
        elif kind == "insert":
            out[at:at] = value
        elif kind == "delete":
            del out[at:at + value]
        elif kind == "truncate":
            del out[at:]
        elif kind == "header" and len(out) >= position + 2:
            out[position:position + 2] = struct.pack(">H", value)
    return bytes(out)


def _every_reader(source: Path, scratch: Path) -> None:
    """What harmonize, continue and va apply do with a MIDI file before (and instead of) the
    models: read it, put the melody on the grid, make the continuation prompt, automate it, and
    write a lead sheet for a short melody."""
    from cli.harmonize import read_melody
    from engines.continuation.offline import prompt_tokens, read_midi
    from engines.harmonizer.harmonize import melody_grid
    from engines.va import VACurve
    from engines.va.apply import ApplySettings, apply_file

    melody = bounded(source, lambda: read_melody(source))
    if melody is not None:
        length = max(n.at_beats + n.duration_beats for n in melody.notes)
        steps = max(1, math.ceil(length * 4))
        grid = melody_grid([(n.pitch, n.at_beats, n.at_beats + n.duration_beats) for n in melody.notes], 4, steps)
        assert grid.shape == (steps, 1)
        numerator, denominator = melody.time_signature
        measures = length * denominator / (4 * numerator)
        if len(melody.notes) <= 60 and measures <= 40:  # music21 takes milliseconds per measure
            from engines.harmonizer.leadsheet import lead_sheet, write_lead_sheet

            chords = [(n.at_beats, "C") for n in melody.notes[::3]]
            score = lead_sheet(melody.notes, chords, melody.time_signature, 60e6 / melody.tempo_changes[0][1], "f")
            write_lead_sheet(score, scratch / "sheet.musicxml")
    read = bounded(source, lambda: read_midi(source))
    if read is not None and read[0]:
        notes, bar_steps, _ = read
        prompt, _, labels = prompt_tokens(notes, bar_steps)
        assert len(prompt) == len(labels)
    curve = VACurve(np.array([0.0, 30.0]), np.array([-1.0, 1.0]), np.array([1.0, -1.0]))
    bounded(source, lambda: apply_file(source, curve, scratch / "applied.mid", ApplySettings(tempo_map=True)))


@fuzz(ci_examples=30)
@given(seed=st.sampled_from(range(len(SEEDS))), mutations=st.lists(MUTATION, min_size=1, max_size=5))
def test_mutated_midi_files_work_or_fail_cleanly(tmp_path_factory, seed, mutations):
    scratch = tmp_path_factory.mktemp("midi")
    source = scratch / "in.mid"
    source.write_bytes(_mutate(SEEDS[seed], mutations))
    _every_reader(source, scratch)


DELTA = st.one_of(st.integers(0, 960), st.integers(0, 0x0FFFFFFF))
EVENT = st.one_of(
    st.tuples(DELTA, st.integers(0x80, 0x9F), st.integers(0, 127), st.integers(0, 127)).map(
        lambda e: _vlq(e[0]) + bytes(e[1:])),
    st.tuples(DELTA, st.integers(0, 0xFFFFFF)).map(  # set_tempo, 0 included
        lambda e: _vlq(e[0]) + b"\xff\x51\x03" + e[1].to_bytes(3, "big")),
    st.tuples(DELTA, st.integers(0, 255), st.integers(0, 255)).map(  # time signature N/2^D
        lambda e: _vlq(e[0]) + b"\xff\x58\x04" + bytes([e[1], e[2], 24, 8])),
    st.tuples(DELTA, st.integers(0, 255), st.integers(0, 255)).map(  # key signature, odd ones too
        lambda e: _vlq(e[0]) + b"\xff\x59\x02" + bytes([e[1], e[2]])),
    st.tuples(DELTA, st.binary(max_size=40)).map(lambda e: _vlq(e[0]) + b"\xff\x01" + _vlq(len(e[1])) + e[1]),
)
TRACK = st.lists(EVENT, max_size=30).map(lambda events: _track(events + [b"\x00\xff\x2f\x00"]))


@fuzz(ci_examples=40)
@given(kind=st.integers(0, 3), division=st.one_of(st.integers(0, 0x7FFF), st.integers(0x8000, 0xFFFF),
                                                   st.sampled_from([0, 1, 480, 0x7FFF])),
       tracks=st.lists(TRACK, min_size=0, max_size=24), declared=st.one_of(st.none(), st.integers(0, 0xFFFF)))
def test_hostile_midi_structures_work_or_fail_cleanly(tmp_path_factory, kind, division, tracks, declared):
    scratch = tmp_path_factory.mktemp("midi")
    source = scratch / "in.mid"
    source.write_bytes(_file(kind, division, tracks, declared))
    _every_reader(source, scratch)


def test_many_tracks_are_read_in_bounded_time(tmp_path):
    """The most tracks the reader takes, each with a note: read within the bounds."""
    from cli.harmonize import read_melody
    from core.midifile import MAX_TRACKS, MidiFileError, read_midi_file
    from engines.continuation.offline import read_midi

    track = _track([b"\x00\x90\x3c\x50", b"\x83\x60\x80\x3c\x00", b"\x00\xff\x2f\x00"])
    source = tmp_path / "in.mid"
    source.write_bytes(_file(1, 480, [track] * MAX_TRACKS))
    assert len(bounded(source, lambda: read_melody(source)).notes) == 1
    assert len(bounded(source, lambda: read_midi(source))[0]) == 1  # one note: the same note in each track
    source.write_bytes(_file(1, 480, [track] * (MAX_TRACKS + 1)))

    with pytest.raises(MidiFileError, match="tracks"):
        read_midi_file(source)


# -- VA curves -----------------------------------------------------------------------------

ODD_NUMBERS = st.sampled_from(["nan", "NaN", "inf", "-inf", "1e309", "-0", "1e-320", "0x10", "1_000", "１",
                               " 1 ", "", "1e308", "86400", "86400.0001", "-1", "+1", "١"])
CELL = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(-1.5, 1.5).map(lambda v: f"{v:.4f}"),
    st.integers(-(10**30), 10**30).map(str),
    ODD_NUMBERS,
    st.text(max_size=12),
)
HEADERS = st.sampled_from(["time_s,valence,arousal", "beats,valence,arousal", "seconds,valence,arousal",
                           "valence,time_s,arousal,extra", "time_s,valence", "\ufefftime_s,valence,arousal",
                           "time_s;valence;arousal", '"time_s","valence","arousal"', ""])
ENCODINGS = st.sampled_from(["utf-8", "utf-16", "latin-1", "utf-8-sig"])


def _check_curve(source: Path, read: Callable[[], object], rate: float) -> None:
    from engines.va.curve import MAX_CURVE_DURATION_S, MAX_CURVE_SAMPLES

    result = bounded(source, read)
    if result is None:
        return
    curve = result[0] if isinstance(result, tuple) else result
    assert np.isfinite(curve.time_s).all() and (np.diff(curve.time_s) > 0).all()
    assert curve.duration_s <= MAX_CURVE_DURATION_S and len(curve) <= MAX_CURVE_SAMPLES
    assert (np.abs(curve.valence) <= 1).all() and (np.abs(curve.arousal) <= 1).all()
    resampled = bounded(source, lambda: _named(source, lambda: curve.resampled(rate)))
    if resampled is not None:
        assert len(resampled) <= MAX_CURVE_SAMPLES
    means = curve.per_beat(16, [(0.0, 120.0), (4.0, 30.0)], subdivisions=4)
    assert means.shape == (16, 2) and np.isfinite(means).all()


def _named(source: Path, action: Callable[[], object]) -> object:
    """As the CLI reports an option's error: prefixed with the file."""
    from engines.va import CurveError

    try:
        return action()
    except CurveError as exc:
        raise CurveError(f"{source}: {exc}") from None


@fuzz(ci_examples=60)
@given(header=HEADERS, rows=st.lists(st.lists(CELL, min_size=0, max_size=4), max_size=12), encoding=ENCODINGS,
       rate=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([10.0, 1e6, 1e-9])))
def test_csv_curves_work_or_fail_cleanly(tmp_path_factory, header, rows, encoding, rate):
    from engines.va import read_curve, read_song_curve

    source = tmp_path_factory.mktemp("va") / "va.csv"
    text = "\n".join([header] + [",".join(row) for row in rows]) + "\n"
    source.write_bytes(text.encode(encoding, errors="replace"))
    _check_curve(source, lambda: read_curve(source), rate)
    _check_curve(source, lambda: read_song_curve(source), rate)


@fuzz(ci_examples=20)
@given(data=st.binary(max_size=300))
def test_random_bytes_as_a_curve_fail_cleanly(tmp_path_factory, data):
    from engines.va import read_curve

    folder = tmp_path_factory.mktemp("va")
    for name in ("va.csv", "va.json"):
        source = folder / name
        source.write_bytes(data)
        _check_curve(source, lambda: read_curve(source), 10.0)


JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-(10**20), 10**20),
                      st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8))
JSON_VALUE = st.recursive(JSON_LEAF, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                              st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                          max_leaves=20)
SAMPLES = st.lists(st.one_of(st.floats(-2, 2), st.floats(allow_nan=True, allow_infinity=True), JSON_LEAF,
                             st.integers(0, 10**12)), max_size=10)
JSON_CURVE = st.one_of(
    JSON_VALUE,
    st.fixed_dictionaries({"time_s": SAMPLES, "valence": SAMPLES, "arousal": SAMPLES}),
    st.fixed_dictionaries({"samples": st.lists(st.fixed_dictionaries(
        {"time_s": JSON_LEAF, "valence": JSON_LEAF, "arousal": JSON_LEAF}), max_size=8)}),
    st.lists(st.fixed_dictionaries({"time_s": st.floats(0, 1e9), "valence": st.floats(-1, 1),
                                    "arousal": st.floats(-1, 1)}), max_size=8),
)


@fuzz(ci_examples=40)
@given(value=JSON_CURVE, depth=st.one_of(st.just(0), st.integers(1, 200_000)), encoding=ENCODINGS)
def test_json_curves_work_or_fail_cleanly(tmp_path_factory, value, depth, encoding):
    from engines.va import read_curve

    source = tmp_path_factory.mktemp("va") / "va.json"
    text = json.dumps(value, allow_nan=True)  # NaN and Infinity literals, as other tools write them
    if depth:
        text = "[" * depth + text + "]" * depth
    source.write_bytes(text.encode(encoding, errors="replace"))
    _check_curve(source, lambda: read_curve(source), 10.0)

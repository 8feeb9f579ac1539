"""The shared VA curve helper and `va import`: sampling in seconds and beats, validation errors
that name the line, round trips, atomic output."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from engines.va import CurveError, VACurve, beats_to_seconds, read_curve, write_curve
from tests.jackutil import ROOT


def _ramp() -> VACurve:
    return VACurve(np.array([0.0, 1.0, 2.0]), np.array([0.0, 1.0, 0.0]), np.array([-1.0, -1.0, 1.0]))


def test_sampling_interpolates_and_holds_the_edges():
    curve = _ramp()
    assert np.allclose(curve.at([0.5, 1.5]), [[0.5, -1.0], [0.5, 0.0]])
    assert np.allclose(curve.at([-3.0, 9.0]), [[0.0, -1.0], [0.0, 1.0]])
    assert curve.at(0.25).shape == (2,)


def test_window_means_integrate_the_piecewise_linear_curve():
    curve = _ramp()
    means = curve.mean_between(np.array([0.0, 0.0, 1.0, -1.0]), np.array([2.0, 1.0, 1.0, 0.0]))
    assert np.allclose(means, [[0.5, -0.5], [0.5, -1.0], [1.0, -1.0], [0.0, -1.0]])
    with pytest.raises(CurveError):
        curve.mean_between(np.array([1.0]), np.array([0.5]))


def test_beats_under_a_tempo_and_a_tempo_map():
    assert np.allclose(beats_to_seconds([0, 1, 4], 120.0), [0, 0.5, 2.0])
    assert np.allclose(beats_to_seconds([-1, 0, 1, 2, 3], [(0, 120), (2, 60)]), [-0.5, 0, 0.5, 1.0, 2.0])
    with pytest.raises(CurveError, match="start at beat 0"):
        beats_to_seconds(1.0, [(1, 120)])
    with pytest.raises(CurveError, match="positive BPM"):
        beats_to_seconds(1.0, 0.0)


def test_per_beat_windows_follow_tempo_and_offset():
    curve = _ramp()
    # 120 BPM: beat i covers [i/2, (i+1)/2) s
    assert np.allclose(curve.per_beat(4, 120.0), [[0.25, -1], [0.75, -1], [0.75, -0.5], [0.25, 0.5]])
    # with a 1 s offset, beat 0 starts at video time 1 s
    assert np.allclose(curve.per_beat(2, 120.0, offset_s=1.0), [[0.75, -0.5], [0.25, 0.5]])
    # two subdivisions per beat at 60 BPM = the same half-second windows
    assert np.allclose(curve.per_beat(4, 60.0, subdivisions=2), curve.per_beat(4, 120.0))
    assert curve.per_beat(3, [(0, 120), (1, 60)]).dtype == np.float32
    assert np.allclose(curve.at_beats([0, 2], 120.0, offset_s=0.5), curve.at([0.5, 1.5]))


def test_the_curve_rejects_what_it_cannot_hold():
    for times, values in (([0, 0], [0, 0]), ([0, 1], [0, np.nan]), ([0, 1], [0, 1.5]), ([], [])):
        with pytest.raises(CurveError):
            VACurve(np.array(times, float), np.array(values, float), np.zeros(len(times)))


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_round_trip(tmp_path, suffix):
    curve = VACurve(np.arange(5) / 10, np.linspace(-1, 1, 5), np.linspace(0.5, -0.5, 5))
    path = tmp_path / f"va{suffix}"
    write_curve(curve, path, {"cuts_s": [0.2]})
    again = read_curve(path)
    assert np.allclose(again.time_s, curve.time_s) and np.allclose(again.valence, curve.valence)
    assert np.allclose(again.arousal, curve.arousal)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_json_as_a_list_of_samples(tmp_path):
    path = tmp_path / "va.json"
    path.write_text(json.dumps({"samples": [{"time_s": 0, "valence": 0.1, "arousal": 0.2},
                                            {"time_s": 1, "valence": -0.1, "arousal": 0.4}]}))
    assert np.allclose(read_curve(path).arousal, [0.2, 0.4])


@pytest.mark.parametrize("text, message", [
    ("time_s,valence,arousal\n0,0,0\n1,0.5,nan\n", "line 3: arousal is nan"),
    ("time_s,valence,arousal\n0,0,0\n1,0.5,0.2\n0.5,0,0\n", "line 4: time_s 0.5 does not come after 1.0"),
    ("time_s,valence,arousal\n0,0,0\n1,1.2,0\n", "line 3: valence 1.2 is outside [-1, 1]"),
    ("time_s,valence,arousal\n0,0,0\n1,0.5,loud\n", "line 3: arousal 'loud' is not a number"),
    ("time_s,valence,arousal\n0,0\n", "line 2: 2 fields, expected 3"),
    ("time,valence,arousal\n0,0,0\n", "line 1: missing column(s) time_s"),
    ("time_s,valence,arousal\n-1,0,0\n", "line 2: time_s -1.0 is negative"),
    ("time_s,valence,arousal\n", "no samples"),
    ("", "empty file"),
])
def test_csv_errors_name_the_line(tmp_path, text, message):
    path = tmp_path / "va.csv"
    path.write_text(text)
    with pytest.raises(CurveError) as error:
        read_curve(path)
    assert message in str(error.value)


@pytest.mark.parametrize("data, message", [
    ({"time_s": [0, 1], "valence": [0, 0]}, "missing list(s) arousal"),
    ({"time_s": [0, 1], "valence": [0], "arousal": [0, 0]}, "differ in length"),
    ([{"time_s": 0, "valence": 0, "arousal": 0}, {"time_s": 1, "valence": 0}], "sample 1: expected an object"),
    ({"time_s": [0, 1], "valence": [0, None], "arousal": [0, 0]}, "sample 1: valence 'None' is not a number"),
    (3, "expected a JSON object"),
])
def test_json_errors_name_the_sample(tmp_path, data, message):
    path = tmp_path / "va.json"
    path.write_text(json.dumps(data))
    with pytest.raises(CurveError) as error:
        read_curve(path)
    assert message in str(error.value)
    path.write_text('{"time_s": [0,\n 1')
    with pytest.raises(CurveError, match="line 2: invalid JSON"):
        read_curve(path)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "bridge", "va", *map(str, args)], cwd=ROOT,
                          check=False, capture_output=True, text=True, timeout=60)


@pytest.mark.slow
def test_import_rescales_renames_and_resamples(tmp_path):
    source = tmp_path / "ratings.csv"
    source.write_text("t,v,a\n0,5,5\n1,9,1\n2,1,9\n")
    out, png = tmp_path / "va.csv", tmp_path / "va.png"
    run = _cli("import", source, "-o", out, "--columns", "t,v,a", "--from-range", "1:9", "--rate", 4, "--plot", png)
    assert run.returncode == 0, run.stderr
    curve = read_curve(out)
    assert np.allclose(curve.time_s, np.arange(9) / 4)
    assert np.allclose(curve.at([0, 1, 2]), [[0, 0], [1, -1], [-1, 1]])
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("args, message", [
    (["--columns", "t,v,a", "--from-range", "1:9"], "line 3: v is nan"),
    (["--columns", "t,v"], "name three columns"),
    (["--columns", "t,v,a", "--from-range", "9"], "write LOW:HIGH"),
    (["--columns", "t,v,a", "--from-range", "9:1"], "LOW < HIGH"),
])
def test_import_errors_exit_1_and_write_nothing(tmp_path, args, message):
    source = tmp_path / "ratings.csv"
    source.write_text("t,v,a\n0,5,5\n1,nan,1\n")
    before = set(tmp_path.iterdir())
    run = _cli("import", source, "-o", tmp_path / "va.csv", "--plot", tmp_path / "va.png", *args)
    assert run.returncode == 1 and message in run.stderr, run.stderr
    assert set(tmp_path.iterdir()) == before


def test_song_curves_take_beats_or_video_time(tmp_path):
    from engines.va import read_song_curve

    beats = tmp_path / "beats.csv"
    beats.write_text("beats,valence,arousal\n0,0.1,0.2\n4,0.3,0.4\n", encoding="utf-8")
    curve, unit = read_song_curve(beats)
    assert unit == "beats" and curve.time_s.tolist() == [0.0, 4.0]
    video = tmp_path / "va.json"
    write_curve(VACurve(np.array([0.0, 1.0]), np.array([0.0, 0.5]), np.array([0.0, -0.5])), video)
    assert read_song_curve(video)[1] == "time_s"
    with pytest.raises(CurveError, match="no such file"):
        read_song_curve(tmp_path / "missing.csv")

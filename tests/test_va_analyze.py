"""`va analyze` on synthetic videos with known structure: the curves move where they should,
cuts are found where they are, and bad input fails cleanly with no output."""

from __future__ import annotations

import ast
import subprocess
import sys
import wave

import numpy as np
import pytest

from engines.va import read_curve
from engines.va.analyze import analyze_video
from engines.va.errors import VideoError
from engines.va.synthetic import Shot, shot_times, write_video
from tests.jackutil import ROOT

WARM = [(0.9, 0.6, 0.3), (0.95, 0.75, 0.35), (0.9, 0.5, 0.4), (0.95, 0.65, 0.3)]
SCENES = {
    # calm, dark, static, one long shot
    "calm": [Shot(8, (0.45, 0.5, 0.55), 0.2, 0.0, texture=0.1, seed=1)],
    # fast, bright, a cut every second (similar palettes: cuts must be found by their spike)
    "lively": [Shot(1, WARM[i % 4], 0.75, 0.6, seed=i) for i in range(8)],
    "warm": [Shot(6, (0.85, 0.55, 0.3), 0.5, 0.2, seed=3)],
    "cold": [Shot(6, (0.3, 0.55, 0.85), 0.5, 0.2, seed=3)],
    "quiet": [Shot(6, (0.5, 0.5, 0.5), 0.5, 0.1, loudness_dbfs=-45, seed=4)],
    "loud": [Shot(6, (0.5, 0.5, 0.5), 0.5, 0.1, loudness_dbfs=-12, seed=4)],
    # calm and dark, then lively and bright: the arc of a scene
    "arc": [Shot(6, (0.4, 0.45, 0.6), 0.2, 0.0, seed=5)] + [Shot(1.5, WARM[i], 0.75, 0.6, seed=i) for i in range(4)],
}


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("va_videos")
    return {name: write_video(folder / f"{name}.mp4", shots, audio=name in ("quiet", "loud", "arc"))
            for name, shots in SCENES.items()}


def _means(path):
    curve = analyze_video(path).curve
    return float(curve.valence.mean()), float(curve.arousal.mean())


def test_calm_dark_static_reads_low_arousal_and_lively_bright_cut_often_reads_high(videos):
    calm_v, calm_a = _means(videos["calm"])
    lively_v, lively_a = _means(videos["lively"])
    assert calm_a < -0.4, calm_a
    assert lively_a > 0.2, lively_a
    assert lively_a - calm_a > 0.7
    assert lively_v - calm_v > 0.8  # bright, warm, colourful vs dark and grey-blue


def test_warm_palette_reads_more_positive_than_cold_with_the_same_arousal(videos):
    warm_v, warm_a = _means(videos["warm"])
    cold_v, cold_a = _means(videos["cold"])
    assert warm_v - cold_v > 0.4
    assert abs(warm_a - cold_a) < 0.15


def test_loud_sound_raises_arousal_and_leaves_valence(videos):
    quiet = analyze_video(videos["quiet"])
    loud = analyze_video(videos["loud"])
    assert quiet.used_audio and loud.used_audio
    assert loud.curve.arousal.mean() - quiet.curve.arousal.mean() > 0.25
    assert abs(loud.curve.valence.mean() - quiet.curve.valence.mean()) < 0.05


def test_cuts_are_found_where_the_shots_change(videos):
    expected = shot_times(SCENES["lively"])
    found = analyze_video(videos["lively"]).cuts_s
    assert len(found) == len(expected)
    assert np.abs(np.array(found) - expected).max() <= 0.1 + 1e-6
    assert analyze_video(videos["calm"]).cuts_s == []


def test_the_arc_rises_at_the_cut_and_valence_does_not_bleed_across_it(videos):
    result = analyze_video(videos["arc"])
    curve = result.curve
    assert abs(result.cuts_s[0] - 6.0) <= 0.1
    first = curve.at(np.arange(0.5, 5.0, 0.5))
    second = curve.at(np.arange(7.5, 11.5, 0.5))
    assert second[:, 1].min() > first[:, 1].max()  # arousal: every later point above every earlier one
    assert second[:, 0].min() > first[:, 0].max() + 0.5
    # shot-aware: 1 s before the cut the valence is still the dark shot's own
    assert abs(curve.at(5.0)[0] - curve.at(2.0)[0]) < 0.05
    assert curve.at(3.0)[1] < curve.at(9.0)[1]


def test_rate_sets_the_grid_and_the_curve_stays_in_range(videos):
    curve = analyze_video(videos["lively"], rate_hz=4).curve
    assert np.allclose(np.diff(curve.time_s), 0.25)
    assert curve.time_s[0] == 0.0 and curve.duration_s >= 7.5
    for values in (curve.valence, curve.arousal):
        assert np.all(np.abs(values) <= 1.0)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "bridge", "va", *map(str, args)], cwd=ROOT,
                          check=False, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_cli_writes_the_csv_and_the_plot(videos, tmp_path):
    out, png = tmp_path / "va.csv", tmp_path / "va.png"
    run = _cli("analyze", videos["arc"], "-o", out, "--rate", 5, "--plot", png)
    assert run.returncode == 0, run.stderr
    assert "4 cuts" in run.stdout and "picture + sound" in run.stdout
    assert out.read_text().splitlines()[0] == "time_s,valence,arousal"
    curve = read_curve(out)
    assert np.allclose(np.diff(curve.time_s), 0.2, atol=1e-4)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["va.csv", "va.png"]


def test_cli_json_output_carries_the_cuts(videos, tmp_path):
    import json

    out = tmp_path / "va.json"
    assert _cli("analyze", videos["lively"], "-o", out).returncode == 0
    data = json.loads(out.read_text())
    assert len(data["cuts_s"]) == 7 and data["sensor"] == "builtin"
    assert len(read_curve(out)) == len(data["time_s"])


def _silence_wav(path):
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(8000)
        handle.writeframes(b"\x00\x00" * 8000)
    return path


def _song_with_cover(path):
    """An MP3 whose only picture is its cover art (a video stream with the attached_pic flag)."""
    from fractions import Fraction

    import av

    with av.open(str(path), "w", format="mp3") as container:
        sound = container.add_stream("libmp3lame", rate=16000, layout="mono")
        cover = container.add_stream("png", rate=1)
        cover.width, cover.height, cover.pix_fmt = 64, 64, "rgb24"
        cover.disposition = av.stream.Disposition.attached_pic
        for packet in cover.encode(av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")):
            container.mux(packet)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 16000), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = 16000, 0, Fraction(1, 16000)
        for packet in [*sound.encode(frame), *sound.encode()]:
            container.mux(packet)
    return path


@pytest.mark.parametrize("case", ["missing", "garbage", "audio_only", "cover_art", "truncated", "bad_rate",
                                  "no_folder"])
def test_bad_input_fails_with_a_clear_error_and_writes_nothing(videos, tmp_path, case):
    out = tmp_path / "va.csv"
    rate = "10"
    if case == "missing":
        video, expected = tmp_path / "nothere.mp4", "no such file"
    elif case == "garbage":
        video, expected = tmp_path / "garbage.mp4", "not a readable video"
        video.write_bytes(b"this is not a video" * 100)
    elif case == "audio_only":
        video, expected = _silence_wav(tmp_path / "sound.wav"), "no video stream"
    elif case == "cover_art":
        video, expected = _song_with_cover(tmp_path / "song.mp3"), "no video stream (streams: audio, cover picture)"
    elif case == "truncated":
        video, expected = tmp_path / "cut.mkv", "truncated or corrupt"
        whole = write_video(tmp_path / "whole.mkv", SCENES["warm"]).read_bytes()
        video.write_bytes(whole[: len(whole) // 2])
    elif case == "bad_rate":
        video, expected, rate = videos["calm"], "--rate must be", "0"
    else:
        video, expected, out = videos["calm"], "does not exist", tmp_path / "nope" / "va.csv"
    before = set(tmp_path.iterdir())
    run = _cli("analyze", video, "-o", out, "--rate", rate, "--plot", tmp_path / "va.png")
    assert run.returncode == 1, run.stdout + run.stderr
    assert expected in run.stderr and run.stderr.startswith("scorebridge va: error:")
    assert set(tmp_path.iterdir()) == before  # no CSV, no PNG, no temporary left behind


def test_api_rejects_a_video_too_short_to_analyse(tmp_path):
    one_frame = write_video(tmp_path / "one.mp4", [Shot(0.04)], fps=25)
    with pytest.raises(VideoError, match="too short"):
        analyze_video(one_frame)


def test_registering_va_keeps_the_cli_light():
    code = ("import sys, cli.main\ncli.main.build_parser()\n"
            "print(sorted(m for m in ('av', 'matplotlib', 'onnxruntime', 'mido', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    loaded = ast.literal_eval(out.stdout.strip())
    assert not {"av", "matplotlib", "torch"} & set(loaded), loaded

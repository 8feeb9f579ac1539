"""``scorebridge score`` end to end on a synthetic video with a known arc (docs/score.md).

The video (built here with ``engines.va.synthetic``): four 5 s shots, dark and still / bright and
fast / dark and still / bright and fast, hard cuts at 5, 10 and 15 s. One real run (PyAV analysis,
both ONNX models, FluidSynth with the FluidR3 GM font, the SNC encoder, ffmpeg) is shared by the
checks; a second run must reuse every stage.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import mido
import numpy as np
import pytest
import soundfile as sf
from scipy.signal import correlate
from scipy.stats import spearmanr

from cli.main import main
from engines.score.render import CEILING_DBFS, TARGET_LUFS
from engines.snc.loudness import LoudnessMeter
from engines.va import read_curve
from engines.va.synthetic import Shot, shot_times, write_video

SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")

FPS = 25
SHOTS = [Shot(5.0, (0.2, 0.25, 0.5), 0.15, 0.0, texture=0.1, seed=1),
         Shot(5.0, (0.95, 0.6, 0.2), 0.85, 0.9, texture=0.6, seed=2),
         Shot(5.0, (0.25, 0.3, 0.6), 0.18, 0.0, texture=0.1, seed=3),
         Shot(5.0, (1.0, 0.5, 0.1), 0.9, 1.2, texture=0.6, seed=4)]
CUTS = shot_times(SHOTS)
# A theme at 96 ticks per beat with a dotted rhythm and a note off the grid's 1/12 beat (ticks 40).
THEME = [(0, 144, 64, 70), (144, 48, 67, 72), (192, 96, 72, 90), (288, 40, 71, 60), (328, 56, 69, 64),
         (384, 192, 67, 80), (0, 384, 48, 50), (384, 384, 43, 52)]


def _theme(path: Path) -> None:
    midi = mido.MidiFile(type=0, ticks_per_beat=96)
    track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=600000)])
    events = []
    for start, length, pitch, velocity in THEME:
        events += [(start, 1, mido.Message("note_on", note=pitch, velocity=velocity)),
                   (start + length, 0, mido.Message("note_off", note=pitch))]
    now = 0
    for tick, _, message in sorted(events, key=lambda e: (e[0], e[1])):
        track.append(message.copy(time=tick - now))
        now = tick
    midi.tracks.append(track)
    midi.save(str(path))


def _score(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(["score", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    missing = [tool for tool in ("fluidsynth", "ffmpeg", "ffprobe") if shutil.which(tool) is None]
    if missing or not SOUNDFONT.exists():
        pytest.fail(f"missing {', '.join(missing) or SOUNDFONT}: the README's test command installs fluidsynth, "
                    "fluid-soundfont-gm and ffmpeg")
    folder = tmp_path_factory.mktemp("score")
    video, theme = folder / "arc.mp4", folder / "theme.mid"
    write_video(video, SHOTS, width=160, height=90, fps=FPS)
    _theme(theme)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SCOREBRIDGE_CACHE", str(folder / "cache"))
        output = folder / "out.mkv"
        assert main(["score", str(video), "-o", str(output), "--theme", str(theme), "--seed", "3"]) == 0
        first = {name: output.with_suffix(name).read_bytes() for name in (".mid", ".snc")}
        (rendered,) = (folder / "cache" / "score" / "render").iterdir()  # the stems and master it made
        yield {"folder": folder, "video": video, "theme": theme, "output": output, "first": first,
               "patch": patch, "rendered": rendered}


def _packets(path: Path) -> list[tuple[str, str]]:
    """(size, MD5) of every packet of the first video stream, copied without decoding."""
    text = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v:0", "-c", "copy", "-f", "framemd5",
                           "-"], capture_output=True, text=True, check=True).stdout
    return [tuple(line.split(",")[-2:]) for line in text.splitlines() if line and not line.startswith("#")]


def _streams(path: Path) -> list[dict]:
    text = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(path)],
                          capture_output=True, text=True, check=True).stdout
    return json.loads(text)["streams"]


def _stream_end_s(path: Path, selector: str) -> float:
    text = subprocess.run(["ffprobe", "-v", "error", "-select_streams", selector, "-show_entries",
                           "packet=pts_time,duration_time", "-of", "csv=p=0", str(path)],
                          capture_output=True, text=True, check=True).stdout
    return max(float(pts) + float(duration) for pts, duration in (line.split(",")[:2] for line in text.split()))


def test_the_video_stream_is_copied_untouched_and_the_master_is_the_one_audio_stream(scored):
    source, output = _streams(scored["video"]), _streams(scored["output"])
    video_in = [s for s in source if s["codec_type"] == "video"][0]
    video_out = [s for s in output if s["codec_type"] == "video"]
    audio_out = [s for s in output if s["codec_type"] == "audio"]
    assert len(video_out) == 1 and len(audio_out) == 1 and len(output) == 2
    for field in ("codec_name", "width", "height", "pix_fmt", "profile"):
        assert video_out[0][field] == video_in[field], field
    assert audio_out[0]["sample_rate"] == "48000" and audio_out[0]["channels"] == 2
    packets_in, packets_out = _packets(scored["video"]), _packets(scored["output"])
    assert len(packets_in) == len(SHOTS) * 5 * FPS and packets_out == packets_in
    video_end, audio_end = _stream_end_s(scored["output"], "v:0"), _stream_end_s(scored["output"], "a:0")
    assert abs(audio_end - video_end) <= 1 / FPS, (audio_end, video_end)


def test_the_audio_is_the_master_in_sync_with_the_first_frame(scored, tmp_path):
    """The AAC track decodes to the master, and the master's first sample plays with the video's
    first frame (the encoder's priming lies before it on the container's time line)."""
    wav = tmp_path / "soundtrack.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(scored["output"]), "-map", "0:a:0", str(wav)], check=True)
    decoded, rate = sf.read(str(wav), always_2d=True)
    master, master_rate = sf.read(str(scored["rendered"] / "master.flac"), always_2d=True)
    assert rate == master_rate
    lag = int(np.argmax(correlate(decoded[: 10 * rate, 0], master[: 10 * rate, 0], "full", method="fft"))) - (
        10 * rate - 1)
    starts = {s["codec_type"]: float(s["start_time"]) for s in _streams(scored["output"])}
    assert abs(lag / rate - (starts["video"] - starts["audio"])) < 0.002, (lag, starts)
    error = decoded[lag: lag + len(master) - rate] - master[: len(master) - rate]
    assert 10 * np.log10(np.sum(master**2) / np.sum(error**2)) > 20  # AAC at 256 kb/s: the master itself


def _marker_seconds(midi: mido.MidiFile) -> list[tuple[float, str]]:
    now, found = 0.0, []
    for message in midi:  # mido yields seconds under the file's tempo map
        now += message.time
        if message.type == "marker":
            found.append((now, message.text))
    return found


PITCHED = frozenset(range(9))  # the parts' channels but the percussion's (10th)


def _onsets_s(midi: mido.MidiFile, channels: frozenset[int] | None = None) -> list[float]:
    now, onsets = 0.0, []
    for message in midi:
        now += message.time
        if message.type == "note_on" and message.velocity > 0 and (channels is None or message.channel in channels):
            onsets.append(now)
    return onsets


def test_sections_change_within_a_beat_of_the_large_cuts(scored):
    midi = mido.MidiFile(str(scored["output"].with_suffix(".mid")))
    markers = _marker_seconds(midi)
    assert len(markers) == len(CUTS) + 1 and markers[0][0] == 0.0
    tempi = {message.tempo for message in midi.tracks[0] if message.type == "set_tempo"}
    beat_s = max(tempi) / 1e6
    for (seconds, _), cut in zip(markers[1:], CUTS, strict=True):
        assert abs(seconds - cut) <= beat_s, (seconds, cut)
    # The music turns at the marker: onsets per second follow the arousal's direction across it.
    onsets = np.array(_onsets_s(midi))
    for seconds, _ in markers[1:]:
        before = np.sum((onsets >= seconds - 3) & (onsets < seconds)) / 3
        after = np.sum((onsets >= seconds) & (onsets < seconds + 3)) / 3
        rising = round(seconds / 5) % 2 == 1  # shots 2 and 4 are the bright, fast ones
        assert (after > before) == rising, (seconds, before, after)


def _windows(curve_path: Path, duration_s: float, width_s: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    curve = read_curve(curve_path)
    starts = np.arange(0.0, duration_s - width_s + 1e-9, width_s)
    return starts, curve.mean_between(starts, starts + width_s)[:, 1]


def test_loudness_and_note_density_follow_the_arousal_curve(scored, tmp_path):
    output = scored["output"]
    wav = tmp_path / "soundtrack.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(output), "-map", "0:a:0", str(wav)], check=True)
    audio, rate = sf.read(str(wav), always_2d=True)
    starts, arousal = _windows(output.with_suffix(".va.csv"), len(audio) / rate)
    loudness = [10 * np.log10(np.mean(audio[int(s * rate):int((s + 1) * rate)] ** 2) + 1e-12) for s in starts]
    midi = mido.MidiFile(str(output.with_suffix(".mid")))
    assert spearmanr(loudness, arousal).statistic >= 0.6
    for channels in (None, PITCHED):  # every note, then without the percussion's rule-made pattern
        onsets = np.array(_onsets_s(midi, channels))
        density = [np.sum((onsets >= s) & (onsets < s + 1)) for s in starts]
        assert spearmanr(density, arousal).statistic >= 0.6, channels
    assert np.ptp(arousal) > 0.5  # the analysis saw the arc
    # register: the piano spreads wider in the bright, fast shots (10th to 90th percentile of its keys)
    spread = [float(np.ptp(np.percentile(keys, [10, 90]))) for keys in _piano_keys_per_shot(midi)]
    assert np.mean(spread[1::2]) > np.mean(spread[0::2]) + 3, spread


def _piano_keys_per_shot(midi: mido.MidiFile) -> list[list[int]]:
    now, keys = 0.0, [[] for _ in SHOTS]
    for message in midi:
        now += message.time
        if message.type == "note_on" and message.velocity > 0 and message.channel in (0, 1):
            keys[min(len(SHOTS) - 1, int(now // 5))].append(message.note)
    return keys


def test_every_part_carries_the_va_automation_lanes(scored):
    """OUT.mid: a track per part, and on each sounding part's channel CC11 (arousal) and CC74
    (valence) lanes; CC11 is higher in the bright, fast shots than in the dark, still ones."""
    midi = mido.MidiFile(str(scored["output"].with_suffix(".mid")))
    names = [track.name for track in midi.tracks]
    assert names == ["conductor", "piano-right", "piano-left", "melody", "harmony", "bass", "percussion",
                     "va automation"]
    playing = {m.channel for track in midi.tracks[1:-1] for m in track if m.type == "note_on"}
    assert {0, 1, 9} <= playing
    now, lanes = 0.0, {}
    for message in midi:
        now += message.time
        if message.type == "control_change" and message.control in (11, 74):
            lanes.setdefault((message.channel, message.control), []).append((now, message.value))
    assert set(lanes) == {(channel, control) for channel in playing for control in (11, 74)}
    middles = np.arange(0.0, 20.0, 0.25)
    middles = middles[(middles % 5 > 1.5) & (middles % 5 < 3.5)]  # away from the cuts (the curve is smoothed)
    for channel in playing:
        times, values = zip(*lanes[channel, 11], strict=True)  # a lane holds its value until the next change
        held = np.array(values)[np.searchsorted(times, middles, side="right") - 1]
        calm, intense = held[(middles // 5) % 2 == 0], held[(middles // 5) % 2 == 1]
        assert calm.max() < intense.min(), (channel, calm, intense)


def test_the_snc_decodes_and_its_stems_sum_to_the_master(scored, tmp_path):
    snc = scored["output"].with_suffix(".snc")
    assert main(["snc", "decode", str(snc), "-o", str(tmp_path)]) == 0
    manifest = json.loads(subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format_tags=SNC_MANIFEST",
                                          "-of", "json", str(snc)], capture_output=True, text=True,
                                         check=True).stdout)["format"]["tags"]["SNC_MANIFEST"]
    manifest = json.loads(manifest)
    names = [stem["name"] for stem in manifest["stems"]]
    assert names == ["piano-right", "piano-left", "melody", "harmony", "bass", "percussion"]
    master, _ = sf.read(str(tmp_path / "master.wav"), always_2d=True)
    # lossless: every decoded track is the rendered one sample for sample (24-bit)
    for name in ["master", *names]:
        decoded, _ = sf.read(str(tmp_path / f"{name}.wav"), dtype="int32", always_2d=True)
        rendered, _ = sf.read(str(scored["rendered"] / f"{name}.flac"), dtype="int32", always_2d=True)
        assert np.array_equal(decoded, rendered), name
    total = sum(sf.read(str(tmp_path / f"{name}.wav"), always_2d=True)[0] for name in names)
    gain = np.asarray(manifest["mastering"]["gain_per_channel"])
    error = master - total * gain
    # lossless: the stems and the master are exact; what the model leaves (the limiter) is small
    assert 10 * np.log10(np.sum(master**2) / max(np.sum(error**2), 1e-20)) > 30
    assert abs(len(master) / manifest["sample_rate"] - 20.0) < 1e-3
    meter = LoudnessMeter(manifest["sample_rate"], master.shape[1])
    meter.push(master)
    assert abs(meter.integrated() - TARGET_LUFS) < 0.5  # mastered to the target, peaks held under the ceiling
    assert np.abs(master).max() <= 10 ** (CEILING_DBFS / 20) + 1e-6
    contexts = manifest["contexts"]
    assert sorted(contexts) == ["section-1", "section-2", "section-3", "section-4"]
    drums = [contexts[f"section-{i}"]["gains_db"]["percussion"] for i in range(1, 5)]
    assert drums[1] > drums[0] and drums[3] > drums[2]  # the VA re-orchestration follows the arc


def test_the_theme_appears_note_for_note(scored):
    midi = mido.MidiFile(str(scored["output"].with_suffix(".mid")))
    scale = midi.ticks_per_beat // 96
    assert scale * 96 == midi.ticks_per_beat
    played = set()
    for track in midi.tracks:
        if not track.name.startswith("piano"):
            continue
        now, sounding = 0, {}
        for message in track:
            now += message.time
            if message.type == "note_on" and message.velocity > 0:
                sounding[message.note] = (now, message.velocity)
            elif message.type in ("note_on", "note_off") and message.note in sounding:
                start, velocity = sounding.pop(message.note)
                played.add((start, now - start, message.note, velocity))
    expected = {(start * scale, length * scale, pitch, velocity) for start, length, pitch, velocity in THEME}
    assert expected <= played, expected - played


def test_a_second_run_reuses_every_stage(scored, capsys):
    output = scored["output"]
    cache = scored["folder"] / "cache"
    before = {path: path.stat().st_mtime_ns for path in cache.rglob("*")}
    code, out, err = _score([str(scored["video"]), "-o", str(output), "--theme", str(scored["theme"]),
                             "--seed", "3"], capsys)
    assert code == 0
    assert {path: path.stat().st_mtime_ns for path in cache.rglob("*")} == before  # nothing recomputed
    assert "; reused analysis, compose, render, snc in " in out
    assert "score: deliver" in err and "100%" in err  # the one progress bar over the whole run
    assert [line.split(":")[0] for line in err.splitlines() if ": reused " in line] == [
        "analysis", "compose", "render", "snc"]
    assert output.with_suffix(".mid").read_bytes() == scored["first"][".mid"]
    assert output.with_suffix(".snc").read_bytes() == scored["first"][".snc"]
    # other instruments render again from the same composition; an MP4 holds the same packets
    code, out, _ = _score([str(scored["video"]), "-o", str(scored["folder"] / "other.mp4"), "--theme",
                           str(scored["theme"]), "--seed", "3", "--instruments", "pop"], capsys)
    assert code == 0 and "; reused analysis, compose in " in out
    assert _packets(scored["folder"] / "other.mp4") == _packets(scored["video"])
    other = mido.MidiFile(str(scored["folder"] / "other.mid"))
    programs = {m.channel: m.program for track in other.tracks for m in track if m.type == "program_change"}
    assert programs[2] == 81 and programs[0] == 4


def _bad_inputs(folder: Path, video: Path) -> dict[str, tuple[list[str], str]]:
    (folder / "garbage.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    (folder / "empty.mkv").write_bytes(b"")
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=black:s=64x36:d=1", "-frames:v", "0",
                    "-c:v", "libx264", str(folder / "noframes.mkv")], check=True)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=d=1", str(folder / "sound.wav")],
                   check=True)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=s=64x36:r=25:d=4", "-c:v", "ffv1",
                    str(folder / "ffv1.mkv")], check=True)
    (folder / "theme.txt.mid").write_text("not a MIDI file\n")
    long_theme = mido.MidiFile(ticks_per_beat=96)  # 20 bars: 24 s even at 200 BPM, the video is 20 s
    long_theme.tracks.append(mido.MidiTrack([message for bar in range(20) for message in (
        mido.Message("note_on", note=60 + bar % 12, velocity=80), mido.Message("note_off", note=60 + bar % 12,
                                                                               time=4 * 96))]))
    long_theme.save(str(folder / "long.mid"))
    (folder / "nan.csv").write_text("time_s,valence,arousal\n0,0,0\n1,nan,0\n")
    (folder / "fake.sf2").write_bytes(b"RIFF\0\0\0\0WAVE")
    (folder / "curve.mid").write_bytes(bytes(range(256)))
    base = [str(video), "-o"]
    return {
        "garbage": ([str(folder / "garbage.mp4"), "-o"], "not a readable video"),
        "empty": ([str(folder / "empty.mkv"), "-o"], "not a readable video"),
        "no frames": ([str(folder / "noframes.mkv"), "-o"], "noframes.mkv"),
        "no video": ([str(folder / "sound.wav"), "-o"], "no video stream"),
        "missing": ([str(folder / "nothing.mp4"), "-o"], "no such file"),
        "theme": (base + ["{out}", "--theme", str(folder / "theme.txt.mid")], "--theme"),
        "long theme": (base + ["{out}", "--theme", str(folder / "long.mid")], "longer than the video"),
        "curve": (base + ["{out}", "--va", str(folder / "nan.csv")], "NaN"),
        "not a curve": (base + ["{out}", "--va", str(folder / "curve.mid")], "--va "),
        "soundfont": (base + ["{out}", "--soundfont", str(folder / "fake.sf2")], "not a SoundFont"),
        "own font": (base + ["{out}", "--instruments", str(folder / "fake.sf2")], "not a SoundFont"),
        "two fonts": (base + ["{out}", "--instruments", str(SOUNDFONT), "--soundfont", str(SOUNDFONT)], "one font"),
        "unwritable": ([str(video), "-o", "/proc/score-test.mkv"], "not writable"),  # (root may write anywhere else)
        "tempo": (base + ["{out}", "--tempo", "fast"], "--tempo"),
        "container": ([str(video), "-o", str(folder / "out" / "x.avi")], ".mkv or .mp4"),
        "codec": ([str(folder / "ffv1.mkv"), "-o", str(folder / "out" / "x.mp4")], "name a .mkv output"),
    }


def test_bad_inputs_are_refused_before_any_work(scored, tmp_path, capsys):
    scored["patch"].setenv("SCOREBRIDGE_CACHE", str(tmp_path / "cache"))
    out_folder = tmp_path / "out"
    out_folder.mkdir()
    for name, (args, message) in _bad_inputs(tmp_path, scored["video"]).items():
        args = [a.replace("{out}", str(out_folder / "x.mkv")) for a in args]
        if args[-1] == "-o":
            args.append(str(out_folder / "x.mkv"))
        code, out, err = _score(args, capsys)
        assert code == 1, name
        assert err.startswith("scorebridge score: error:") and message in err, (name, err)
        assert "Traceback" not in err and not out, name
        assert not any(out_folder.iterdir()), name  # nothing written, not even a part
        assert not (tmp_path / "cache").exists(), name  # refused before the first stage
    scored["patch"].setenv("SCOREBRIDGE_CACHE", str(scored["folder"] / "cache"))


def test_every_style_has_its_models_and_a_motif_in_major_and_minor():
    from engines.continuation.runtime import SCORE_MODEL, ContinuationModel
    from engines.harmonizer.runtime import HarmonizerModel
    from engines.score.compose import motif_theme
    from engines.score.presets import INSTRUMENTS, PARTS, STYLES

    continuation, harmonizer = ContinuationModel.load(SCORE_MODEL), HarmonizerModel.named("harmonizer")
    for name, style in STYLES.items():
        assert style.continuation in continuation.card["styles"], name
        assert style.harmonizer in harmonizer.styles, name
        major, minor = motif_theme(name, minor=False), motif_theme(name, minor=True)
        assert major.bars == minor.bars == 2 and major.grid and minor.grid, name
        assert {p for *_, p, _ in major.written} != {p for *_, p, _ in minor.written}, name
    for name, instrument in INSTRUMENTS.items():
        assert set(instrument.programs) == {p.name for p in PARTS if p.channel != 9}, name
        assert all(0 <= program <= 127 for program in instrument.programs.values()), name


def _step_curve(levels: list[tuple[float, float, float]], duration_s: float):
    """A curve that holds (valence, arousal) from each start time on, sampled at 10 Hz."""
    from engines.va import VACurve

    times = np.arange(0.0, duration_s + 1e-9, 0.1)
    values = np.array([[v, a] for t in times for start, v, a in [max((s for s in levels if s[0] <= t + 1e-9),
                                                                      key=lambda s: s[0])]])
    return VACurve(times, values[:, 0], values[:, 1])


def test_the_form_puts_large_cuts_on_bar_lines_and_skips_small_or_close_ones():
    from engines.score.form import TEMPO_LIMITS, plan_form

    curve = _step_curve([(0, -0.5, -0.6), (7.3, 0.6, 0.7), (11.0, 0.6, 0.7), (19.1, -0.4, -0.2), (21.0, 0.5, 0.6)],
                        30.0)
    # 11.0: a cut inside one mood (no contrast); 21.0: a contrast under 4 s after 19.1, the smaller one
    plan = plan_form(curve, [7.3, 11.0, 19.1, 21.0], 30.0)
    assert plan.cuts_s == (7.3, 19.1)
    assert [round(s.start_s, 6) for s in plan.sections] == [0.0, 7.3, 19.1]
    for section in plan.sections:
        assert abs(float(plan.seconds(section.start_beats)) - section.start_s) < 1e-4  # on its first beat
        assert TEMPO_LIMITS[0] <= section.bpm <= TEMPO_LIMITS[1]
    assert abs(float(plan.seconds(plan.total_beats)) - 30.0) < 1e-4  # (MIDI tempi are whole microseconds)
    tempi = [section.bpm for section in plan.sections]
    assert tempi[1] > tempi[0] and tempi[1] > tempi[2]  # faster where the picture is intense
    assert max(tempi) / min(tempi) < 1.3  # and no lurch: about the +-11 % the arousal asks for
    # a short bar (metre change) closes a section whose beats are not whole bars
    assert plan.short_bars() == [(s.start_beats + s.beats - s.beats % 4, s.beats % 4) for s in plan.sections
                                 if s.beats % 4]
    # a theme the usual tempi cannot fit (16 bars in 20 calm seconds) is played faster, up to the limit:
    # whatever passes the check before any work (the theme fits at 200 BPM) gets a form
    calm = _step_curve([(0, -0.5, -0.9)], 20.0)
    long = plan_form(calm, [7.3], 20.0, None, 4.0, 64.0)
    assert long.total_beats >= 64 and max(s.bpm for s in long.sections) <= TEMPO_LIMITS[1]
    fixed = plan_form(curve, [7.3, 19.1], 30.0, tempo=100.0)
    assert {s.bpm for s in fixed.sections} == {100.0}
    assert [s.start_beats for s in fixed.sections] == [0.0, 12.0, 32.0]  # nearest bar lines: 7.2 s, 19.2 s


def test_a_given_curve_decides_the_form_while_the_cuts_come_from_the_picture(scored, tmp_path, capsys):
    """``--va``, ``--tempo BPM`` and, without a theme, another style's motif."""
    curve = tmp_path / "mine.csv"
    rows = ["time_s,valence,arousal"] + [f"{t / 10:.1f},{-0.5 if 5 <= t / 10 < 15 else 0.5},"
                                         f"{0.6 if 5 <= t / 10 < 15 else -0.6}" for t in range(0, 201)]
    curve.write_text("\n".join(rows) + "\n")
    output = tmp_path / "mine.mkv"
    code, out, _ = _score([str(scored["video"]), "-o", str(output), "--va", str(curve), "--tempo", "120",
                           "--style", "chorale"], capsys)
    assert code == 0 and "; reused analysis in " in out
    assert output.with_suffix(".va.csv").read_text().splitlines()[1:3] == ["0.0000,0.5000,-0.6000",
                                                                            "0.1000,0.5000,-0.6000"]
    midi = mido.MidiFile(str(output.with_suffix(".mid")))
    markers = [seconds for seconds, _ in _marker_seconds(midi)]
    assert markers == pytest.approx([0.0, 5.0, 15.0], abs=0.25)  # the cut at 10 s changes no mood: no section
    assert {m.tempo for m in midi.tracks[0] if m.type == "set_tempo"} == {500000}
    # no theme: the style's built-in motif opens the score, in major (the curve's opening valence is +0.5)
    from engines.score.presets import motif

    opening = {(round(start * midi.ticks_per_beat), pitch) for hand, start, _, pitch in motif("chorale", minor=False)}
    played = set()
    for track in midi.tracks[1:3]:
        now = 0
        for message in track:
            now += message.time
            if message.type == "note_on" and message.velocity > 0 and now < 8 * midi.ticks_per_beat:
                played.add((now, message.note))
    assert opening <= played, opening - played


def _scale(path: Path, third_cents: float) -> None:
    """A 7-note major scale in Scala format, its third at ``third_cents``."""
    cents = [200.0, third_cents, 500.0, 700.0, 900.0, 1100.0, 1200.0]
    path.write_text("! a major scale\nmajor, third at %g cents\n 7\n!\n" % third_cents
                    + "".join(f" {c:.1f}\n" for c in cents))


def test_an_edited_tuning_file_renders_again_with_your_own_font(scored, tmp_path, capsys):
    """``--instruments FONT.sf2`` renders with that file; the render stage is keyed by what the
    synthesizer plays, so a .scl file edited in place (same name, same degrees, another tuning)
    is rendered again while the composition is reused."""
    font, scale, output = tmp_path / "my font.sf2", tmp_path / "mine.scl", tmp_path / "tuned.mkv"
    font.symlink_to(SOUNDFONT)
    args = [str(scored["video"]), "-o", str(output), "--theme", str(scored["theme"]), "--seed", "3",
            "--instruments", str(font), "--tuning", str(scale)]
    _scale(scale, 386.3)  # a just third
    code, out, _ = _score(args, capsys)
    assert code == 0 and "; reused analysis in " in out
    first_midi, first_snc = output.with_suffix(".mid").read_bytes(), output.with_suffix(".snc").read_bytes()
    pitch_classes = {m.note % 12 for m in mido.MidiFile(str(output.with_suffix(".mid"))).tracks[1]
                     if m.type == "note_on"}
    generated = {m.note % 12 for m in mido.MidiFile(str(output.with_suffix(".mid"))).tracks[2] if m.type == "note_on"}
    assert pitch_classes | generated <= {0, 2, 4, 5, 7, 9, 11} | {n[2] % 12 for n in THEME}
    _scale(scale, 400.0)  # the same file, now equal-tempered
    code, out, _ = _score(args, capsys)
    assert code == 0 and "; reused analysis, compose in " in out  # the render is not the old tuning's
    assert output.with_suffix(".mid").read_bytes() != first_midi
    assert output.with_suffix(".snc").read_bytes() != first_snc
    tuning = [m for m in mido.MidiFile(str(output.with_suffix(".mid"))).tracks[0] if m.type == "sysex"]
    assert tuning, "no MIDI Tuning Standard message in OUT.mid"


def test_the_seed_chooses_the_music_and_the_same_seed_gives_it_again():
    """``--seed``: the same seed composes the same parts, another one other generated notes; the
    theme (here the built-in motif) is played the same under every seed."""
    from engines.continuation.runtime import SCORE_MODEL, ContinuationModel
    from engines.harmonizer.runtime import HarmonizerModel
    from engines.score.compose import compose, motif_theme
    from engines.score.form import plan_form

    curve = _step_curve([(0, -0.3, -0.2), (8.0, 0.6, 0.7)], 16.0)
    plan = plan_form(curve, [8.0], 16.0)
    theme = motif_theme("cinematic", minor=False)
    continuation, harmonizer = ContinuationModel.load(SCORE_MODEL), HarmonizerModel.named("harmonizer")
    first, again, other = (compose(theme, plan, curve, "cinematic", seed, continuation, harmonizer)
                           for seed in (1, 1, 2))
    assert first.generated_notes > 0
    assert first.parts == again.parts and first.chords == again.chords
    def piano(music):
        return music.parts["piano-right"] + music.parts["piano-left"]

    assert piano(first) != piano(other)

    def written(music):
        return sorted((n.at_beats, n.pitch) for n in piano(music) if n.at_beats < theme.bars * theme.bar_steps / 12)

    assert written(first) == written(other)  # the theme's bars

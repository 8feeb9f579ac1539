"""SNC player DSP and offline renders against numpy references of the expected mix.

The songs are generated here and encoded with ``scorebridge snc encode``; renders run on pyo's
offline server. Tolerances: 24-bit lossless files reconstruct to 2e-7 (float32 rounding of
integer PCM); mixes of a residual-free file match their reference to 2e-6 (the residual is
one 24-bit step, weighted); mixes with a real residual follow the documented rule to 1e-5.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from core.errors import ParameterError
from engines.snc.reader import SncReader
from engines.snc_player.adaptive import DEFAULT_MAPPING
from engines.snc_player.contexts import load_contexts
from engines.snc_player.pipeline import Pipeline
from engines.snc_player.render import MixRequest, render
from tests.jackutil import ROOT

# Every test here renders or encodes real files (the module's songs take ~10-40 s to encode).
pytestmark = pytest.mark.slow

RATE = 48000
# Integer cycles per 256-frame buffer: every buffer of a stem has the same energy.
TONES = {"vocals": 750.0, "drums": 1312.5, "bass": 187.5, "keys": 562.5}
AMPS = {"vocals": 0.20, "drums": 0.12, "bass": 0.25, "keys": 0.10}


def stems_audio(seconds: float, bursts: bool = False) -> dict[str, np.ndarray]:
    t = np.arange(int(seconds * RATE)) / RATE
    out = {}
    for index, (name, freq) in enumerate(TONES.items()):
        left = AMPS[name] * np.sin(2 * np.pi * freq * t)
        right = AMPS[name] * 0.8 * np.sin(2 * np.pi * freq * t + 0.3 * index)
        out[name] = np.stack([left, right], axis=1)
    if bursts:  # a loud half and a quiet half, for the dynamics contexts
        envelope = np.where(t < seconds / 2, 1.0, 0.08)[:, None]
        out = {k: v * envelope for k, v in out.items()}
    return out


def encode_song(folder: Path, name: str, stems: dict[str, np.ndarray], master: np.ndarray, mode: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    args = []
    for stem, data in stems.items():
        sf.write(folder / f"{name}-{stem}.wav", data, RATE, subtype="PCM_24")
        args += ["--stem", f"{stem}={folder / f'{name}-{stem}.wav'}"]
    sf.write(folder / f"{name}-master.wav", master, RATE, subtype="PCM_24")
    out = folder / f"{name}.snc"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bridge",
            "snc",
            "encode",
            "--master",
            str(folder / f"{name}-master.wav"),
            *args,
            "-o",
            str(out),
            "--mode",
            mode,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module")
def songs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("snc_player")
    clean = stems_audio(2.0)
    mastered = stems_audio(2.0)
    return {
        # master = 0.8 * sum: the residual is at most one 24-bit step.
        "clean": encode_song(folder, "clean", clean, 0.8 * sum(clean.values()), "lossless"),
        # a saturating master: a real residual (-30 dB or so).
        "mastered": encode_song(
            folder, "mastered", mastered, 0.9 * np.tanh(1.3 * sum(mastered.values())), "lossless"
        ),
        "opus": encode_song(
            folder, "opus", mastered, 0.9 * np.tanh(1.3 * sum(mastered.values())), "transparent"
        ),
        "dynamic": encode_song(
            folder, "dynamic", stems_audio(2.0, True), 0.8 * sum(stems_audio(2.0, True).values()), "lossless"
        ),
    }


def decoded(path: Path, block_frames: int = 48000) -> dict[str, np.ndarray]:
    blocks = list(SncReader(path).blocks(block_frames))
    return {k: np.concatenate([b[k] for b in blocks]).astype(np.float64) for k in blocks[0]}


def rendered(song: Path, tmp_path: Path, via: str = "auto", **request) -> np.ndarray:
    out = tmp_path / "out.wav"
    render(song, out, MixRequest(**request), via=via)
    data, rate = sf.read(out, dtype="float64", always_2d=True)
    assert rate == RATE
    return data


def mastering_gain(path: Path) -> np.ndarray:
    return np.asarray(SncReader(path).manifest.mastering["gain_per_channel"])


# -- the default mix is the master ----------------------------------------------------------------


def test_default_render_reconstructs_the_lossless_master(songs, tmp_path):
    out = rendered(songs["mastered"], tmp_path)
    master, _ = sf.read(songs["mastered"].with_name("mastered-master.wav"), dtype="float64")
    assert out.shape == master.shape
    assert np.abs(out - master).max() < 2e-7


def test_pyo_offline_path_plays_the_same_samples_in_the_same_buffer(songs, tmp_path):
    """The pyo feed (numpy -> DataTable -> TableRead, one buffer) adds no delay and no change
    beyond pyo's output scaling of 0.99999923."""
    request = {"gains_db": {"vocals": -6.0}, "mutes": ["drums"]}
    direct = rendered(songs["mastered"], tmp_path, via="numpy", **request)
    through_pyo = rendered(songs["mastered"], tmp_path, via="pyo", **request)
    assert through_pyo.shape == direct.shape
    assert np.abs(through_pyo - direct).max() < 1e-6


def test_default_render_reconstructs_the_opus_master_as_decoded(songs, tmp_path):
    assert SncReader(songs["opus"]).manifest.mastering["model"] == "fir-envelope"
    out = rendered(songs["opus"], tmp_path)
    assert np.abs(out - decoded(songs["opus"], 4096)["master"]).max() == 0.0


def model_of(path: Path, signal: np.ndarray) -> np.ndarray:
    """The file's mastering model applied to a whole signal at once (silence around it)."""
    model = SncReader(path).model
    ext = np.concatenate([np.zeros((model.history, 2)), signal, np.zeros((model.lookahead, 2))])
    return model.predict(ext, 0, signal.shape[0]).astype(np.float64)


def weight_track(stems: dict[str, np.ndarray], linear: dict[str, float], buffer: int = 256) -> np.ndarray:
    """The documented residual weight, frame by frame: per-buffer stem energies smoothed with a
    1 s one-pole, w = sum(E * g) / sum(E) at each buffer's end, linear within the buffer."""
    names = list(linear)
    frames = stems[names[0]].shape[0]
    alpha = 1 - math.exp(-buffer / RATE)
    energy, previous, track = None, None, np.empty(frames)
    for first in range(0, frames, buffer):
        block = np.array(
            [
                np.mean(stems[n][first : first + buffer].astype(np.float32).astype(np.float64) ** 2)
                for n in names
            ]
        )
        energy = block if energy is None else energy + alpha * (block - energy)
        weights = energy + 1e-20
        new = float(np.sum(weights * np.array([linear[n] for n in names])) / np.sum(weights))
        previous = new if previous is None else previous
        n = min(buffer, frames - first)
        track[first : first + n] = previous + (new - previous) * np.arange(1, n + 1) / n
        previous = new
    return track


def test_remix_of_an_fir_mastered_file_goes_through_its_mastering_model(songs, tmp_path):
    out = rendered(songs["opus"], tmp_path, gains_db={"keys": -6.0}, mutes=["vocals"])
    stems = decoded(songs["opus"], 4096)
    names = list(TONES)
    linear = {"vocals": 0.0, "drums": 1.0, "bass": 1.0, "keys": 10 ** (-6 / 20)}
    residual = stems["master"] - model_of(songs["opus"], sum(stems[n] for n in names))
    weight = weight_track(stems, linear)
    expected = model_of(songs["opus"], sum(stems[n] * linear[n] for n in names)) + weight[:, None] * residual
    assert out.shape == expected.shape
    assert np.abs(out - expected).max() < 2e-5
    # The model matters: the plain sum of the remaining stems is far from it.
    assert np.abs(out - sum(stems[n] * linear[n] for n in names)).max() > 0.01


# -- gains, mutes, pans, solo against numpy ---------------------------------------------------------


def test_gain_mute_pan_render_matches_the_numpy_mix(songs, tmp_path):
    out = rendered(
        songs["clean"], tmp_path, gains_db={"vocals": -6.0, "bass": 3.0}, mutes=["drums"], pans={"keys": 0.5}
    )
    stems = decoded(songs["clean"])
    theta = 1.5 * math.pi / 4
    keys_pan = np.array([math.sqrt(2) * math.cos(theta), math.sqrt(2) * math.sin(theta)])
    expected = mastering_gain(songs["clean"]) * (
        stems["vocals"] * 10 ** (-6 / 20) + stems["bass"] * 10 ** (3 / 20) + stems["keys"] * keys_pan
    )
    assert np.abs(out - expected).max() < 2e-6
    # and it is not the master
    assert np.abs(out - stems["master"]).max() > 0.05


def test_solo_plays_one_stem(songs, tmp_path):
    out = rendered(songs["clean"], tmp_path, solos=["bass"])
    stems = decoded(songs["clean"])
    assert np.abs(out - mastering_gain(songs["clean"]) * stems["bass"]).max() < 2e-6


def test_residual_follows_the_energy_weighted_gain_rule(songs, tmp_path):
    out = rendered(songs["mastered"], tmp_path, mutes=["vocals"], gains_db={"keys": -6.0})
    stems = decoded(songs["mastered"])
    gain = mastering_gain(songs["mastered"])
    names = list(TONES)
    residual = stems["master"] - gain * sum(stems[n] for n in names)
    assert np.sqrt(np.mean(residual**2)) > 1e-3  # a real residual
    linear = {"vocals": 0.0, "drums": 1.0, "bass": 1.0, "keys": 10 ** (-6 / 20)}
    energy = {n: np.mean(stems[n] ** 2) for n in names}
    weight = sum(energy[n] * linear[n] for n in names) / sum(energy.values())
    expected = gain * sum(stems[n] * linear[n] for n in names) + weight * residual
    assert 0.3 < weight < 0.9
    assert np.abs(out - expected).max() < 1e-5


def test_muting_every_stem_is_silence(songs, tmp_path):
    out = rendered(songs["mastered"], tmp_path, mutes=list(TONES))
    assert np.abs(out).max() == 0.0


# -- smoothing --------------------------------------------------------------------------------------

# -- contexts ---------------------------------------------------------------------------------------


def test_karaoke_and_focus_from_the_manifest(songs, tmp_path):
    stems = decoded(songs["clean"])
    gain = mastering_gain(songs["clean"])
    rest = stems["drums"] + stems["bass"] + stems["keys"]
    karaoke = rendered(songs["clean"], tmp_path, context="karaoke")
    assert np.abs(karaoke - gain * rest).max() < 2e-6
    focus = rendered(songs["clean"], tmp_path, context="focus")
    assert np.abs(focus - gain * (rest + stems["vocals"] * 10 ** (-12 / 20))).max() < 2e-6


def test_night_reduces_dynamic_range_and_caps_peaks(songs, tmp_path):
    default = rendered(songs["dynamic"], tmp_path)
    night = rendered(songs["dynamic"], tmp_path, context="night")

    def loud_minus_quiet_db(x: np.ndarray) -> float:
        half = x.shape[0] // 2
        rms = [np.sqrt(np.mean(x[a : a + RATE // 2] ** 2)) for a in (RATE // 4, half + RATE // 4)]
        return 20 * math.log10(rms[0] / rms[1])

    assert loud_minus_quiet_db(default) == pytest.approx(20 * math.log10(1 / 0.08), abs=0.2)
    assert loud_minus_quiet_db(night) < loud_minus_quiet_db(default) - 6.0
    assert np.abs(night).max() <= 10 ** (-6 / 20) + 1e-6


def test_car_lifts_the_low_mids(songs, tmp_path):
    default = rendered(songs["clean"], tmp_path)
    car = rendered(songs["clean"], tmp_path, context="car")

    def band_db(x: np.ndarray, freq: float) -> float:
        spectrum = np.abs(np.fft.rfft(x[RATE // 2 :, 0]))
        bins = np.fft.rfftfreq(x.shape[0] - RATE // 2, 1 / RATE)
        return 20 * math.log10(spectrum[np.argmin(np.abs(bins - freq))])

    lift_bass = band_db(car, 187.5) - band_db(default, 187.5)
    lift_high = band_db(car, 1312.5) - band_db(default, 1312.5)
    assert lift_bass - lift_high > 2.5  # the 200 Hz shelf and 400 Hz bell lift the lows more


def test_headphones_place_a_stem_left_of_the_listener(songs, tmp_path):
    contexts = tmp_path / "contexts.toml"
    contexts.write_text('[contexts.phones]\nlayout = "binaural"\npositions = { keys = -90.0 }\n')
    out = rendered(songs["clean"], tmp_path, context="phones", contexts_file=contexts, solos=["keys"])
    left, right = np.sqrt(np.mean(out[RATE // 4 :] ** 2, axis=0))
    assert 20 * math.log10(left / right) > 6.0
    stereo = rendered(songs["clean"], tmp_path, solos=["keys"])
    assert abs(20 * math.log10(np.sqrt(np.mean(out**2)) / np.sqrt(np.mean(stereo**2)))) < 4.0


def test_multichannel_puts_each_stem_on_its_ports(songs, tmp_path):
    out = rendered(songs["clean"], tmp_path, context="multichannel")
    stems = decoded(songs["clean"])
    gain = mastering_gain(songs["clean"])
    assert out.shape[1] == 8
    for index, name in enumerate(TONES):
        ports = out[:, 2 * index : 2 * index + 2]
        expected = gain * stems[name] + (
            stems["master"] - gain * sum(stems[n] for n in TONES) if index == 0 else 0
        )
        assert np.abs(ports - expected).max() < 2e-6, name


def test_context_change_lands_on_the_next_bar(songs):
    reader = SncReader(songs["clean"])
    pipeline = Pipeline(reader.manifest, load_contexts(reader.manifest.contexts), "default")
    pipeline.set_tempo(180.0)  # 4 beats = 1.333 s = 64000 frames
    outputs, frame = [], 0
    for block in reader.blocks(block_frames=4096):
        if frame == 4096:
            assert pipeline.set_context("karaoke", frame) == 64000
        outputs.append(pipeline.process(block, frame))
        frame += block["master"].shape[0]
    out = np.concatenate(outputs).astype(np.float64)
    stems = decoded(songs["clean"])
    assert np.abs(out[:64000] - stems["master"][:64000]).max() < 2e-7
    after = mastering_gain(songs["clean"]) * (stems["drums"] + stems["bass"] + stems["keys"])
    ramp = pipeline.mixer.ramp_frames
    assert np.abs(out[64000 + ramp :] - after[64000 + ramp :]).max() < 2e-6
    assert np.abs(out[64000 : 64000 + ramp] - stems["master"][64000 : 64000 + ramp]).max() > 0.01


# -- valence-arousal --------------------------------------------------------------------------------


def test_va_trajectory_raises_drums_and_bass_with_arousal(songs, tmp_path):
    curve = tmp_path / "va.csv"
    curve.write_text("time_s,valence,arousal\n0,0,1\n10,0,1\n")
    out = rendered(songs["clean"], tmp_path, va_file=curve)
    stems = decoded(songs["clean"])
    gains = DEFAULT_MAPPING.gains_db(0.0, 1.0, SncReader(songs["clean"]).manifest.stems)
    assert gains["drums"] == 6.0 and gains["bass"] == 4.0
    expected = mastering_gain(songs["clean"]) * sum(stems[n] * 10 ** (gains[n] / 20) for n in TONES)
    assert np.abs(out - expected).max() < 2e-6


def test_unknown_stem_names_are_refused(songs, tmp_path):
    with pytest.raises(ParameterError, match="no stem 'voice'.*vocals, drums"):
        render(songs["clean"], tmp_path / "x.wav", MixRequest(gains_db={"voice": -3}))
    assert not list(tmp_path.iterdir())


# -- the command ------------------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bridge", "snc", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_render_command_writes_the_mix(songs, tmp_path):
    out = tmp_path / "mix.wav"
    done = run_cli("render", str(songs["clean"]), "-o", str(out), "--gain", "vocals=-6", "--mute", "drums")
    assert done.returncode == 0, done.stderr
    data, _ = sf.read(out, dtype="float64")
    stems = decoded(songs["clean"])
    expected = mastering_gain(songs["clean"]) * (
        stems["vocals"] * 10 ** (-6 / 20) + stems["bass"] + stems["keys"]
    )
    assert np.abs(data - expected).max() < 2e-6
    assert [p.name for p in tmp_path.iterdir()] == ["mix.wav"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--gain", "vocals"], "write STEM=NUMBER"),
        (["--mute", "nobody"], "no stem 'nobody'"),
        (["--context", "party"], "no context 'party'; available:"),
        (["--valence", "2"], "outside -1..1"),
    ],
)
def test_render_command_bad_input_exits_1_and_writes_nothing(songs, tmp_path, args, message):
    out = tmp_path / "mix.wav"
    done = run_cli("render", str(songs["clean"]), "-o", str(out), *args)
    assert done.returncode == 1
    assert message in done.stderr and "scorebridge snc: error:" in done.stderr
    assert not list(tmp_path.iterdir())


def test_render_command_refuses_a_corrupt_file(tmp_path):
    broken = tmp_path / "broken.snc"
    broken.write_bytes(b"\x1aE\xdf\xa3" + bytes(200))
    done = run_cli("render", str(broken), "-o", str(tmp_path / "mix.wav"))
    assert done.returncode == 1 and "error" in done.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["broken.snc"]


def test_binaural_gain_table_matches_pyo():
    from engines.snc_player.spatial import BINAURAL_GAIN_DB, measure_binaural_gain

    measured = measure_binaural_gain([-90.0, 0.0, 150.0], seconds=2.0)
    for azimuth, gain_db in measured.items():
        assert gain_db == pytest.approx(BINAURAL_GAIN_DB[int(azimuth)], abs=0.3)


def test_play_command_starts_a_private_jack_server_when_none_runs(songs, tmp_path):
    """Like serve: no JACK server answers, so snc play starts a private one, says so, plays and
    stops it; no client library's connection failures reach the user. Refused with
    --no-private-jack, with a one-line error."""
    server = f"nobody{os.getpid()}"
    env = dict(os.environ, JACK_DEFAULT_SERVER=server)
    command = [sys.executable, "-m", "bridge", "snc", "play", str(songs["clean"]), "--duration", "1"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert f"started a private one ('{server}'" in done.stderr
    assert "Cannot connect" not in done.stderr and "Traceback" not in done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["position_s"] > 0.5
    refused = subprocess.run([*command, "--no-private-jack"], cwd=ROOT, capture_output=True, text=True,
                             timeout=60, env=env)
    assert refused.returncode == 1
    assert f"no JACK server '{server}' is running" in refused.stderr
    assert "Cannot connect" not in refused.stderr
    # The private server stopped with the command.
    assert subprocess.run(["jack_lsp"], env=env, capture_output=True).returncode != 0


# -- progressive decoding ---------------------------------------------------------------------------


def read_stream(stream, frames: int, buffer: int = 256) -> tuple[list[int], np.ndarray]:
    """Take ``frames`` frames from a running stream as an audio callback would (polling)."""
    firsts, parts = [], []
    deadline = time.monotonic() + 30
    while sum(p.shape[0] for p in parts) < frames and time.monotonic() < deadline:
        item = stream.read(buffer)
        if item is None:
            time.sleep(0.002)
            continue
        firsts.append(item[0])
        parts.append(item[1]["master"].astype(np.float64))
    return firsts, np.concatenate(parts)[:frames]


def test_stream_seeks_and_loops_gaplessly_with_bounded_read_ahead(songs):
    from engines.snc_player.stream import StemStream

    master = decoded(songs["mastered"])["master"]
    stream = StemStream(SncReader(songs["mastered"]), 256, block_frames=4096, queue_blocks=4)
    stream.start(1.0)
    firsts, audio = read_stream(stream, 4096)
    assert firsts[0] == RATE and np.array_equal(audio, master[RATE:RATE + 4096])
    time.sleep(0.3)  # the decoder runs ahead, but only queue_blocks blocks
    assert stream._queue.qsize() <= 4
    stream.loop = (0.5, 0.75)  # 12,000 frames
    stream.start(0.5)
    _, looped = read_stream(stream, 30000)
    region = master[24000:36000]
    expected = np.concatenate([region, region, region])[:30000]
    assert np.array_equal(looped, expected)  # sample for sample across the loop points
    stream.stop()

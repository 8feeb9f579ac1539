"""SNC parts: the mastering model (fit, storage, hostile data), loudness, bitrates, the
streaming decoder's memory and seeking in lossy files."""

from __future__ import annotations

import base64
import json
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy import signal

from core.errors import CodecError
from engines.snc import SncReader, encode
from engines.snc.lossy import STEM_FLOOR_BPS, stem_bitrate
from engines.snc.loudness import LoudnessMeter
from engines.snc.mastering import FirFitter, MasteringModel, ModelStream, envelope_gains
from engines.snc.residual import (
    MASTER_SNR_TARGET_DB,
    RESIDUAL_RANGE_BPS,
    code_residual,
    probe_bitrate,
    residual_bitrate,
)

RATE = 48000


def _music(seconds: float, seed: int = 3) -> dict[str, np.ndarray]:
    """Two stereo stems (a chord with vibrato, filtered noise bursts) and a master made from
    them by an EQ and a slow, compressor-like gain: the model's two terms."""
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    rng = np.random.default_rng(seed)
    chord = sum(0.08 * np.sin(2 * np.pi * f * t + 0.002 * np.sin(2 * np.pi * 5 * t)) for f in (220, 277, 330, 440))
    bursts = signal.lfilter([1.0], [1.0, -0.9], rng.standard_normal(n)) * 0.02 * (np.sin(2 * np.pi * 2 * t) > 0.3)
    stems = {"keys": np.stack([chord, 0.8 * chord], 1), "perc": np.stack([bursts, np.roll(bursts, 7)], 1)}
    mix = stems["keys"] + stems["perc"]
    b, a = signal.iirpeak(3000, 1.0, RATE)
    eq = mix + 0.5 * signal.lfilter(b, a, mix, axis=0)
    envelope = 1.0 + 0.3 * np.sin(2 * np.pi * 0.5 * t)
    return {**stems, "master": eq * envelope[:, None]}


def _write(folder: Path, tracks: dict[str, np.ndarray]) -> dict[str, Path]:
    paths = {}
    for name, data in tracks.items():
        paths[name] = folder / f"{name}.wav"
        sf.write(paths[name], data, RATE, subtype="PCM_16")
    return paths


def _fit(mix: np.ndarray, master: np.ndarray) -> MasteringModel:
    fitter = FirFitter(2)
    fitter.add(mix.astype(np.float32), master.astype(np.float32))
    model = MasteringModel("fir-envelope", 2, fir=fitter.fir(), lookahead=32, hop=240, envelope=np.ones((1, 2)))
    padded = np.concatenate([np.zeros((model.history, 2)), mix, np.zeros((model.lookahead, 2))])
    filtered = model._filter(padded, mix.shape[0])
    model.envelope = envelope_gains(filtered, master, 240, np.ones(2))
    return model


def test_the_fitted_model_explains_eq_and_gain_riding_that_a_gain_cannot():
    tracks = _music(6.0)
    mix, master = tracks["keys"] + tracks["perc"], tracks["master"]
    model = _fit(mix, master)
    stream = ModelStream(model, 2, np.float32)
    ahead = np.concatenate([mix, np.zeros((32, 2))]).astype(np.float32)  # silence after the end
    predicted = np.concatenate([stream.predict(ahead[i:i + RATE], ahead[i + RATE:i + RATE + 32], i)
                                for i in range(0, mix.shape[0], RATE)])

    def snr(estimate: np.ndarray) -> float:
        return float(10 * np.log10(np.sum(master ** 2) / np.sum((master - estimate) ** 2)))

    gain = np.sum(master * mix, 0) / np.sum(mix * mix, 0)
    assert snr(predicted) > 30.0 and snr(predicted) > snr(mix * gain) + 15.0


def test_the_model_survives_the_manifest_and_hostile_copies_are_refused():
    tracks = _music(2.0)
    model = _fit(tracks["keys"] + tracks["perc"], tracks["master"])
    frames = tracks["master"].shape[0]
    stored = json.loads(json.dumps(model.to_manifest()))
    back = MasteringModel.from_manifest(stored, 2, frames, "test")
    assert np.allclose(back.fir, model.fir, rtol=1e-3, atol=1e-6)  # float16 taps
    assert np.allclose(back.envelope, model.envelope, rtol=0.003)  # 0.02 dB steps
    bomb = base64.b64encode(zlib.compress(bytes(50_000_000))).decode()
    cases = {"envelope_points": 10 ** 9, "fir_taps": 10 ** 6, "envelope_hop": 7, "envelope": bomb,
             "fir": "not base64!", "model": "neural"}
    for key, value in cases.items():
        with pytest.raises(CodecError):
            MasteringModel.from_manifest({**stored, key: value}, 2, frames, "test")


def test_streamed_loudness_matches_pyloudnorm():
    import pyloudnorm

    tracks = _music(5.0)
    for data, rate in ((tracks["master"], RATE), (tracks["perc"][:, :1], 44100)):
        meter = LoudnessMeter(rate, data.shape[1])
        for start in range(0, data.shape[0], 12345):
            meter.push(data[start:start + 12345])
        assert meter.integrated() == pytest.approx(pyloudnorm.Meter(rate).integrated_loudness(data), abs=0.1)
    silent = LoudnessMeter(RATE, 2)
    silent.push(np.zeros((RATE, 2)))
    assert silent.integrated() is None


def test_loudness_meter_scratch_keeps_nothing_from_the_block_before():
    """The meter reuses its FFT scratch arrays: a block measured after a louder one of another
    size gives exactly what a fresh meter gives for it."""
    tracks = _music(3.0)
    loud, quiet = tracks["master"][:RATE].astype(np.float32), (tracks["perc"][:RATE // 2] * 0.01).astype(np.float32)
    used = LoudnessMeter(RATE, 2)
    used.push(loud)
    used.push(quiet)
    used.push(loud[:RATE // 2])
    fresh = LoudnessMeter(RATE, 2)
    fresh.push(quiet)
    assert len(used.energies) == 3
    np.testing.assert_array_equal(used.energies[1], fresh.energies[0])
    assert not np.array_equal(used.energies[1], used.energies[2])


def test_stem_bitrates_follow_activity_and_level():
    full = stem_bitrate("transparent", 2, 1.0, 0.0)
    assert stem_bitrate("transparent", 2, 0.0, 0.0) == STEM_FLOOR_BPS
    assert stem_bitrate("transparent", 2, 0.5, 0.0) == full  # Opus VBR already spends little on silence
    assert stem_bitrate("transparent", 2, 1.0, -20.0) < full
    assert stem_bitrate("transparent", 1, 1.0, 0.0) < full
    assert stem_bitrate("compact", 2, 1.0, 0.0) < full


@pytest.fixture(scope="module")
def lossy_files(tmp_path_factory) -> dict[float, Path]:
    """The same kind of song at two lengths, transparent mode."""
    out = {}
    for seconds in (6.0, 30.0):
        folder = tmp_path_factory.mktemp(f"song{int(seconds)}")
        paths = _write(folder, _music(seconds))
        out[seconds] = folder / "song.snc"
        encode(paths["master"], {"keys": paths["keys"], "perc": paths["perc"]}, out[seconds], "transparent")
    return out


def _peak_decoding(path: Path) -> tuple[int, int]:
    tracemalloc.start()
    frames = 0
    for block in SncReader(path).blocks():
        frames += block["master"].shape[0]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak, frames


@pytest.mark.slow
def test_streaming_decoder_memory_does_not_grow_with_length(lossy_files):
    short_peak, short_frames = _peak_decoding(lossy_files[6.0])
    long_peak, long_frames = _peak_decoding(lossy_files[30.0])
    assert (short_frames, long_frames) == (6 * RATE, 30 * RATE)
    # Whole-file arrays of the long file's 3 tracks would take 30 s * 48000 * 2 ch * 4 B * 3 = 35 MB.
    assert long_peak < 1.5 * short_peak + 1_000_000, (short_peak, long_peak)
    assert long_peak < 12_000_000


@pytest.mark.slow
def test_lossy_seek_matches_decoding_from_the_start(lossy_files):
    reader = SncReader(lossy_files[30.0])
    whole = np.concatenate([b["master"] for b in reader.blocks()])
    for start_s in (0.5, 7.37, 21.0):
        part = np.concatenate([b["master"] for b in reader.blocks(start_s=start_s, duration_s=1.5)])
        start = int(round(start_s * RATE))
        assert part.shape[0] == int(1.5 * RATE)
        error = np.sqrt(np.mean((part - whole[start:start + part.shape[0]]) ** 2))
        assert error < 1e-3 * np.sqrt(np.mean(whole ** 2)), (start_s, error)


@pytest.mark.slow
def test_the_model_leaves_a_smaller_residual_than_a_gain(lossy_files, tmp_path):
    paths = _write(tmp_path, _music(6.0))
    gain_only = encode(paths["master"], {"keys": paths["keys"], "perc": paths["perc"]}, tmp_path / "gain.snc",
                       "transparent", mastering="gain")
    manifest = SncReader(lossy_files[6.0]).manifest
    assert manifest.version == 3 and manifest.mastering["model"] == "fir-envelope"
    assert gain_only.mastering["model"] == "gain"
    assert manifest.residual["model_snr_db"] > gain_only.residual["model_snr_db"] + 5.0
    assert manifest.residual["rms_dbfs"] < gain_only.residual["rms_dbfs"] - 5.0
    # No more residual bits, and (both may sit at the ceiling) a master at least as good.
    assert manifest.residual["bitrate_bps"] <= gain_only.residual["bitrate_bps"]
    assert manifest.residual["master_snr_db"] > gain_only.residual["master_snr_db"]
    assert len(json.dumps(manifest.mastering)) < 12_000  # 1024 float16 taps per channel + 5 ms envelope
    assert all(value is not None for value in manifest.loudness_lufs.values())


@pytest.mark.slow
def test_the_bitrate_probe_predicts_what_coding_the_whole_residual_gives(tmp_path):
    """The probe codes a tenth of the residual (evenly spaced excerpts) to pick its bitrate;
    coding the whole residual at that bitrate gives the master SNR it predicted, at the
    target, and never less bitrate than the floor from the model's SNR."""
    n = 40 * RATE
    rng = np.random.default_rng(11)
    t = np.arange(n) / RATE
    level = 0.02 * (1.0 + 0.8 * np.sin(2 * np.pi * t / 13.0))[:, None]  # louder and quieter passages
    hiss = signal.lfilter([1.0], [1.0, -0.7], rng.standard_normal((n, 2)), axis=0)
    tones = np.stack([np.sin(2 * np.pi * 660 * t), np.sin(2 * np.pi * 990 * t + 1.0)], 1)
    target = (level * (hiss + 0.5 * tones)).astype(np.float32)
    energy = float(np.sum(target.astype(np.float64) ** 2))
    model_snr = 27.0  # the probe lands inside the bitrate range, not on its ceiling
    master = energy * 10 ** (model_snr / 10)
    bitrate, predicted = probe_bitrate(target, n, "transparent", 2, RATE, master, energy, model_snr,
                                       tmp_path / "probe.mka")
    _, _, error = code_residual(target, tmp_path / "whole.mka", RATE, 2, n, bitrate)
    actual = 10 * np.log10(master / error)
    assert predicted is not None and abs(predicted - actual) < 0.5, (bitrate, predicted, actual)
    assert bitrate >= residual_bitrate("transparent", 2, model_snr)
    assert abs(actual - MASTER_SNR_TARGET_DB["transparent"]) < 0.6
    assert bitrate < RESIDUAL_RANGE_BPS["transparent"][1]
    # Too short to probe: the floor, checked afterwards by the encoder's closed loop.
    assert probe_bitrate(target[:10 * RATE], 10 * RATE, "transparent", 2, RATE, master / 4, energy / 4, model_snr,
                         tmp_path / "probe.mka") == (residual_bitrate("transparent", 2, model_snr), None)


def _remux_track_by_track(source: Path, out: Path) -> None:
    """The same tracks and tags, but every packet of one track before the next (no time order)."""
    import av

    with av.open(str(source)) as inp, av.open(str(out), "w", format="matroska") as dst:
        for key, value in inp.metadata.items():
            dst.metadata[key] = value
        streams = []
        for stream in inp.streams.audio:
            copy = dst.add_stream_from_template(stream)
            copy.metadata["title"] = stream.metadata["title"]
            streams.append(copy)
        packets: list[list] = [[] for _ in streams]
        for packet in inp.demux():
            if packet.dts is not None:
                packets[packet.stream.index].append(packet)
        for index, track in enumerate(packets):
            for packet in track:
                packet.stream = streams[index]
                dst.mux(packet)


@pytest.mark.slow
def test_a_file_whose_tracks_are_not_interleaved_is_refused_not_buffered(lossy_files, tmp_path, monkeypatch):
    from engines.snc import reader as reader_module

    skewed = tmp_path / "skewed.snc"
    _remux_track_by_track(lossy_files[30.0], skewed)
    monkeypatch.setattr(reader_module, "_MAX_SKEW_S", 5)  # the 30 s file cannot reach the real bound
    with pytest.raises(CodecError, match="not interleaved"):
        for _ in SncReader(skewed).blocks():
            pass


@pytest.mark.parametrize("threads", ["1", "2"])
def test_a_track_decoded_while_it_is_coded_is_the_finished_file_decoded(tmp_path, monkeypatch, threads):
    """The residual's closed loop decodes its Opus packets in memory as a second thread codes
    them: it must see exactly what the reader will decode from the file, or the loop is open."""
    from engines.snc.avio import TrackWriter, decode_blocks, encode_decoded

    monkeypatch.setenv("SCOREBRIDGE_SNC_THREADS", threads)
    frames = 3 * 48000 + 777  # (a last block that is not whole)
    audio = (0.1 * np.random.default_rng(11).standard_normal((frames, 2))).astype(np.float32)
    writer = TrackWriter(tmp_path / "r.mka", "opus", 48000, 2, 64000)
    blocks = (audio[start:start + 48000] for start in range(0, frames, 48000))
    live = list(encode_decoded(writer, blocks, 48000, frames))
    finished = list(decode_blocks(tmp_path / "r.mka", 0, 48000, frames, False))
    assert [b.shape for b in live] == [b.shape for b in finished] == [(48000, 2)] * 3 + [(777, 2)]
    assert all(np.array_equal(a, b) for a, b in zip(live, finished))
    decoded = np.concatenate(live)[:, 0]  # coded audio, aligned (white noise at 64 kb/s: r about 0.5)
    assert np.corrcoef(decoded, audio[:, 0])[0, 1] > 0.4 > np.corrcoef(decoded[1:], audio[:-1, 0])[0, 1] + 0.1


def test_an_encoder_failure_on_the_coding_thread_reaches_the_caller(tmp_path, monkeypatch):
    from engines.snc.avio import TrackWriter, encode_decoded

    monkeypatch.setenv("SCOREBRIDGE_SNC_THREADS", "2")
    writer = TrackWriter(tmp_path / "r.mka", "opus", 48000, 2, 64000)

    def blocks():
        yield np.zeros((48000, 2), np.float32)
        raise CodecError("input went away")

    with pytest.raises(CodecError, match="input went away"):
        list(encode_decoded(writer, blocks(), 48000, 2 * 48000))


def test_passes_split_across_threads_give_the_one_pass_result_across_a_silence(tmp_path, monkeypatch):
    """The envelope and residual passes run one stretch of blocks per thread; a silence over
    the stretches' border (hops that keep the last gain measured before them) must come out as
    one sequential pass gives it: the same file, byte for byte."""
    tracks = _music(8.0)
    quiet = slice(int(3.0 * RATE), int(5.5 * RATE))  # (2 threads: the border is at block 4, 4.0 s)
    for data in tracks.values():
        data[quiet] = 0.0
    paths = _write(tmp_path, tracks)
    files = {}
    for threads in ("1", "2"):
        monkeypatch.setenv("SCOREBRIDGE_SNC_THREADS", threads)
        files[threads] = tmp_path / f"t{threads}.snc"
        encode(paths["master"], {"keys": paths["keys"], "perc": paths["perc"]}, files[threads], "transparent")
    model = MasteringModel.from_manifest(SncReader(files["1"]).manifest.mastering, 2, int(8.0 * RATE), "test")
    hops = model.envelope[int(4.0 * RATE) // model.hop:int(5.5 * RATE) // model.hop]
    assert len(hops) > 10 and np.all(hops == hops[0])  # (the silent hops kept the gain before them)
    assert files["1"].read_bytes() == files["2"].read_bytes()


@pytest.mark.parametrize("channels", [1, 2])
def test_packed_float_input_gives_the_packets_of_planar_input(tmp_path, channels):
    """TrackWriter hands libopus its own packed float layout (a C-order block reshaped, no
    transposed copy): the encoder must receive the same samples, in the same channel order,
    as from planar frames converted by FFmpeg, i.e. write the same packets."""
    from fractions import Fraction

    import av

    from engines.snc.avio import LAYOUTS, TrackWriter

    frames = 2 * 48000 + 321
    rng = np.random.default_rng(5)
    audio = (0.1 * rng.standard_normal((frames, channels)) * np.linspace(0.2, 1.0, channels)).astype(np.float32)
    packets = {}
    for layout in ("packed", "planar"):
        writer = TrackWriter(tmp_path / f"{layout}.mka", "opus", 48000, channels, 64000)
        seen: list[bytes] = []
        writer.tap = seen.append
        for start in range(0, frames, 48000):
            block = audio[start:start + 48000]
            if layout == "packed":
                writer.write(block)
                continue
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block.T), format="fltp", layout=LAYOUTS[channels])
            frame.sample_rate, frame.pts, frame.time_base = 48000, writer.pts, Fraction(1, 48000)
            writer.pts += block.shape[0]
            writer._mux(writer.stream.encode(frame))
        writer.close()
        packets[layout] = seen
    assert len(packets["packed"]) > 10 and packets["packed"] == packets["planar"]


def test_the_residual_loses_no_snr_at_its_lower_complexity(tmp_path):
    """The residual is coded at RESIDUAL_COMPLEXITY (no CELT pitch pre-filter: about half the
    encoding time) because on noise-like signals that costs no SNR against the stems' complexity."""
    from engines.snc.avio import OPUS_COMPLEXITY, TrackWriter, decode_blocks
    from engines.snc.residual import RESIDUAL_COMPLEXITY

    frames = 4 * 48000
    rng = np.random.default_rng(9)
    noise = signal.lfilter([1.0], [1.0, -0.7], rng.standard_normal((frames, 2)), axis=0)
    residual = (0.01 * noise * (1.0 + 0.5 * np.sin(np.arange(frames) / 9000.0))[:, None]).astype(np.float32)
    snr = {}
    for complexity in (RESIDUAL_COMPLEXITY["transparent"], OPUS_COMPLEXITY):
        path = tmp_path / f"c{complexity}.mka"
        writer = TrackWriter(path, "opus", 48000, 2, 128000, complexity=complexity)
        for start in range(0, frames, 48000):
            writer.write(residual[start:start + 48000])
        writer.close()
        decoded = np.concatenate(list(decode_blocks(path, 0, 48000, frames, False))).astype(np.float64)
        error = decoded - residual
        snr[complexity] = 10 * np.log10(np.sum(residual.astype(np.float64) ** 2) / np.sum(error ** 2))
    assert RESIDUAL_COMPLEXITY["transparent"] < OPUS_COMPLEXITY == RESIDUAL_COMPLEXITY["compact"]
    assert snr[RESIDUAL_COMPLEXITY["transparent"]] > snr[OPUS_COMPLEXITY] - 0.2, snr

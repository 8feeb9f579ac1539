"""SNC in the stem ecosystem: NI Stems out and in (read back by ffprobe, ffmpeg and our importer),
and the command line's behaviour toward pipes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engines.snc import SncReader
from engines.snc.stems_mp4 import NI_SLOTS, read_stem_box
from tests.jackutil import ROOT
from tests.test_snc_player import RATE, encode_song, stems_audio

pytestmark = pytest.mark.skipif(shutil.which("ffprobe") is None or shutil.which("ffmpeg") is None,
                                reason="ffprobe/ffmpeg (FFmpeg's tools) are not installed")


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bridge", "snc", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def decoded(path: Path) -> dict[str, np.ndarray]:
    blocks = list(SncReader(path).blocks(integer=SncReader(path).integer))
    return {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}


def ffprobe_streams(path: Path) -> list[dict]:
    done = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(path)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout)["streams"]


@pytest.fixture(scope="module")
def songs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("snc_stems")
    stems = stems_audio(2.0)
    rng = np.random.default_rng(5)
    stems["drums"] = 0.1 * rng.standard_normal((2 * RATE, 2))  # (noise: alignment is unambiguous)
    master = 0.8 * sum(stems.values())
    return {"lossless": encode_song(folder, "ll", stems, master, "lossless"),
            "transparent": encode_song(folder, "tr", stems, master, "transparent")}


def test_lossless_ni_export_plays_the_master_and_round_trips_samples_names_and_order(songs, tmp_path):
    out = tmp_path / "song.stem.mp4"
    done = cli("export", str(songs["lossless"]), "--stems-mp4", str(out))
    assert done.returncode == 0, done.stderr
    streams = ffprobe_streams(out)
    assert [s["codec_name"] for s in streams] == ["alac"] * 5
    assert [s["disposition"]["default"] for s in streams] == [1, 0, 0, 0, 0]
    names = [s.name for s in SncReader(songs["lossless"]).manifest.stems]
    meta = read_stem_box(out)
    assert meta["version"] == 1 and [s["name"] for s in meta["stems"]] == names
    assert all(s["color"].startswith("#") for s in meta["stems"]) and "compressor" in meta["mastering_dsp"]
    # An ordinary decoder (ffmpeg, default track) gives the master, sample for sample.
    original = decoded(songs["lossless"])
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(out), "-map", "0:a:0", "-f", "s32le", "-"],
                         capture_output=True, check=True).stdout
    played = np.frombuffer(raw, "<i4").reshape(-1, 2) >> 8
    assert np.array_equal(played, original["master"])
    back = tmp_path / "back.snc"
    done = cli("import", str(out), "-o", str(back))
    assert done.returncode == 0, done.stderr
    again = decoded(back)
    assert SncReader(back).manifest.mode == "lossless" and list(again) == list(original)
    for name in original:
        assert np.array_equal(again[name], original[name]), name


def test_aac_ni_export_reads_back_close_and_aligned(songs, tmp_path):
    out = tmp_path / "song.stem.mp4"
    assert cli("export", str(songs["transparent"]), "--stems-mp4", str(out)).returncode == 0
    assert [s["codec_name"] for s in ffprobe_streams(out)] == ["aac"] * 5
    back = tmp_path / "back.snc"
    done = cli("import", str(out), "-o", str(back))
    assert done.returncode == 0, done.stderr
    original, again = decoded(songs["transparent"]), decoded(back)
    assert [s.name for s in SncReader(back).manifest.stems] == list(original)[1:]
    assert SncReader(back).manifest.frames == SncReader(songs["transparent"]).manifest.frames
    # The master, coded twice (AAC, then SNC's transparent mode), keeps the noise stem to about
    # 15 dB; the same comparison one frame off (a misaligned import) falls far below.
    reference = original["master"][2048:-2048]

    def snr(shift: int) -> float:
        error = again["master"][2048 + shift:again["master"].shape[0] - 2048 + shift] - reference
        return float(10 * np.log10(np.sum(reference**2) / np.sum(error**2)))

    assert snr(0) > 10.0 and snr(0) > snr(1) + 6.0 and snr(0) > snr(-1) + 6.0, (snr(-1), snr(0), snr(1))


def test_more_than_four_stems_are_grouped_by_role(tmp_path):
    stems = stems_audio(1.0)
    stems["lead vocal"] = 0.5 * stems["vocals"]
    stems["guitar"] = 0.5 * stems["keys"]
    song = encode_song(tmp_path, "five", stems, 0.7 * sum(stems.values()), "lossless")
    out = tmp_path / "five.stem.mp4"
    done = cli("export", str(song), "--stems-mp4", str(out), "--json")
    assert done.returncode == 0, done.stderr
    groups = {g["name"]: g["from"] for g in json.loads(done.stdout)["stems"]}
    assert list(groups) == [name for name, _ in NI_SLOTS]
    assert groups == {"drums": ["drums"], "bass": ["bass"], "other": ["keys", "guitar"],
                      "vocals": ["vocals", "lead vocal"]}


def test_import_refuses_what_is_not_ni_stems_or_is_damaged(songs, tmp_path):
    done = cli("import", str(songs["lossless"]), "-o", str(tmp_path / "x.snc"))
    assert done.returncode == 1 and "not an NI Stems file" in done.stderr and "Traceback" not in done.stderr
    ni = tmp_path / "song.stem.mp4"
    assert cli("export", str(songs["lossless"]), "--stems-mp4", str(ni)).returncode == 0
    data = bytearray(ni.read_bytes())
    data[len(data) // 3:len(data) // 3 + 20000] = b"\x00\xff" * 10000  # the media data, not the boxes
    ni.write_bytes(bytes(data))
    done = cli("import", str(ni), "-o", str(tmp_path / "x.snc"))
    assert done.returncode == 1 and "does not decode" in done.stderr and "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["song.stem.mp4"]  # nothing left behind


def test_a_closed_pipe_ends_info_quietly(songs):
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run([sys.executable, "-m", "bridge", "snc", "info", "--json", str(songs["lossless"])],
                              cwd=ROOT, stdout=write, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write)
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr


# -- the Matroska stems profile: the mix track ----------------------------------------------------
def with_mix_track(song: Path, mode: str) -> Path:
    """The same song encoded again with --mix-track (from the WAVs encode_song left beside it)."""
    stem = song.stem
    names = [s.name for s in SncReader(song).manifest.stems]
    out = song.with_name(f"{stem}-mix.snc")
    args = [arg for name in names for arg in ("--stem", f"{name}={song.parent / f'{stem}-{name}.wav'}")]
    done = cli("encode", "--master", str(song.parent / f"{stem}-master.wav"), *args, "-o", str(out),
               "--mode", mode, "--mix-track")
    assert done.returncode == 0, done.stderr
    return out


@pytest.mark.parametrize("mode", ["lossless", "transparent"])
def test_the_mix_track_is_the_default_track_an_ordinary_decoder_plays(songs, mode):
    song = with_mix_track(songs[mode], mode)
    reader = SncReader(song)
    assert reader.manifest.version == 4 and reader.manifest.mix["codec"] == ("flac" if mode == "lossless" else "opus")
    streams = ffprobe_streams(song)
    titles = [s["tags"].get("title", s["tags"].get("TITLE")) for s in streams]
    assert titles == ["residual", *(s.name for s in reader.manifest.stems), "master"]
    assert [s["disposition"]["default"] for s in streams] == [0] * (len(streams) - 1) + [1]
    # ffmpeg with no stream chosen picks the default track: the master.
    done = subprocess.run(["ffmpeg", "-v", "info", "-i", str(song), "-f", "f32le", "-"], capture_output=True,
                          check=True)
    assert f"Stream #0:{len(streams) - 1} -> #0:0" in done.stderr.decode()
    played = np.frombuffer(done.stdout, "<f4").reshape(-1, 2)
    original = decoded(song)["master"]
    if mode == "lossless":
        assert np.array_equal(np.rint(played * 2**23).astype(np.int64), original)
    else:  # Opus keeps the tones, not the noise stem's waveform: compared with the source, aligned
        import soundfile as sf

        source, _ = sf.read(songs[mode].with_name(f"{songs[mode].stem}-master.wav"), dtype="float32")
        assert len(played) == len(source)

        def snr(shift: int) -> float:
            error = played[4096 + shift:-4096 + shift] - source[4096:-4096]
            return float(10 * np.log10(np.sum(source[4096:-4096] ** 2) / np.sum(error**2)))

        assert snr(0) > 8.0 and snr(0) > max(snr(-1), snr(1)) + 3.0, (snr(-1), snr(0), snr(1))
    # The reader checks the mix track with the others; decoding does not need it.
    assert reader.verify()["intact"]
    if mode == "lossless":
        assert np.array_equal(original, decoded(songs[mode])["master"])


def test_the_default_track_that_ffprobe_names_is_the_master_when_mapped_explicitly(songs):
    """What a player or script that picks "the default audio track" gets. (FFmpeg 5.1 has no
    stream specifier for the default flag, `-map 0:a:default` is refused as invalid, so the
    track is chosen by the index ffprobe reports.) Every track is audio with a title, at the
    master's rate and channel count, and the file-level tags carry the SNC manifest."""
    song = with_mix_track(songs["lossless"], "lossless")
    streams = ffprobe_streams(song)
    assert all(s["codec_type"] == "audio" and s["tags"].get("title", s["tags"].get("TITLE")) for s in streams)
    assert {(int(s["sample_rate"]), s["channels"]) for s in streams} == {(RATE, 2)}
    default = [s["index"] for s in streams if s["disposition"]["default"]]
    assert default == [len(streams) - 1]
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(song), "-map", f"0:{default[0]}", "-f", "s32le", "-"],
                         capture_output=True, check=True).stdout
    assert np.array_equal(np.frombuffer(raw, "<i4").reshape(-1, 2) >> 8, decoded(song)["master"])
    tags = json.loads(subprocess.run(["ffprobe", "-v", "error", "-show_format", "-of", "json", str(song)],
                                     capture_output=True, text=True, check=True).stdout)["format"]["tags"]
    assert json.loads(tags.get("SNC_MANIFEST", tags.get("snc_manifest", "{}")))["version"] == 4


# -- master <-> stem mix ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mastered(tmp_path_factory) -> Path:
    """A lossless song whose master is more than its stems (noise only in the master: the
    residual), so the stored master and the stem mix differ."""
    stems = stems_audio(2.0)
    noise = 0.05 * np.random.default_rng(9).standard_normal((2 * RATE, 2))
    return encode_song(tmp_path_factory.mktemp("snc_source"), "m", stems, 0.8 * sum(stems.values()) + noise,
                       "lossless")


def test_master_stems_switch_crossfades_without_a_click(mastered):
    from engines.snc_player.contexts import load_contexts
    from engines.snc_player.pipeline import Pipeline

    reader = SncReader(mastered)
    song = decoded(mastered)
    scale = 2.0**-23
    master = song["master"] * scale
    gain = np.asarray(reader.manifest.mastering["gain_per_channel"])
    stem_mix = gain * sum(song[s.name] for s in reader.manifest.stems) * scale  # M(sum of stems)
    pipeline = Pipeline(reader.manifest, load_contexts(reader.manifest.contexts))
    pipeline.mixer.settle()
    fade = pipeline.mixer.crossfade_frames
    to_stems, to_master = 94 * 256, 235 * 256  # (buffer boundaries)
    out = []
    blocks = {k: v * scale for k, v in song.items()}
    for first in range(0, master.shape[0], 256):
        if first == to_stems:
            pipeline.set_source("stems")
        if first == to_master:
            pipeline.set_source("master")
        out.append(pipeline.process({k: v[first:first + 256].astype(np.float32) for k, v in blocks.items()}, first))
    out = np.concatenate(out).astype(np.float64)
    # Master, the stem mix once the fade is over, the master again: sample for sample.
    assert np.abs(out[:to_stems] - master[:to_stems]).max() < 1e-6
    assert np.abs(out[to_stems + fade:to_master] - stem_mix[to_stems + fade:to_master]).max() < 1e-5
    assert np.abs(out[to_master + fade:] - master[to_master + fade:]).max() < 1e-6
    # During each fade: a linear blend, and no sample-to-sample step above what the two signals
    # and the fade's own slope make.
    for start, a, b in ((to_stems, master, stem_mix), (to_master, stem_mix, master)):
        t = np.arange(1, fade + 1)[:, None] / fade
        blend = a[start:start + fade] * (1 - t) + b[start:start + fade] * t
        assert np.abs(out[start:start + fade] - blend).max() < 1e-5
        window = slice(start - 1, start + fade + 1)
        step = np.abs(np.diff(out[window], axis=0)).max()
        allowed = max(np.abs(np.diff(a[window], axis=0)).max(), np.abs(np.diff(b[window], axis=0)).max()) + \
            np.abs(a[window] - b[window]).max() / fade
        assert step <= allowed * 1.001, (step, allowed)


def test_render_plays_the_stem_mix(mastered, tmp_path):
    import soundfile as sf

    out = tmp_path / "stems.wav"
    done = cli("render", str(mastered), "-o", str(out), "--source", "stems")
    assert done.returncode == 0, done.stderr
    rendered, _ = sf.read(out, dtype="float64", always_2d=True)
    reader = SncReader(mastered)
    song = decoded(mastered)
    gain = np.asarray(reader.manifest.mastering["gain_per_channel"])
    stem_mix = gain * sum(song[s.name] for s in reader.manifest.stems) * 2.0**-23
    assert np.abs(rendered - stem_mix).max() < 1e-5
    assert np.abs(rendered - song["master"] * 2.0**-23).max() > 0.05  # (the noise of the master is gone)


# -- tracks on parallel threads ---------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["lossless", "transparent"])
def test_parallel_tracks_code_and_decode_what_one_thread_does(songs, mode, monkeypatch, tmp_path):
    from engines.snc import encode

    folder, stem = songs[mode].parent, songs[mode].stem
    names = [s.name for s in SncReader(songs[mode]).manifest.stems]
    stems = {name: folder / f"{stem}-{name}.wav" for name in names}
    results = {}
    for threads in ("1", "4"):
        monkeypatch.setenv("SCOREBRIDGE_SNC_THREADS", threads)
        out = tmp_path / f"{threads}.snc"
        manifest = encode(folder / f"{stem}-master.wav", stems, out, mode)
        blocks = list(SncReader(out).blocks(block_frames=12000, start_s=0.3))
        results[threads] = (manifest.to_json(), {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]})
    assert results["1"][0] == results["4"][0]  # (the same bitrates, hashes, model and checksums)
    for name, data in results["1"][1].items():
        assert np.array_equal(data, results["4"][1][name]), name

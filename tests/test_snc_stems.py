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


def test_import_refuses_what_is_not_ni_stems(songs, tmp_path):
    done = cli("import", str(songs["lossless"]), "-o", str(tmp_path / "x.snc"))
    assert done.returncode == 1 and "not an NI Stems file" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "x.snc").exists()


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

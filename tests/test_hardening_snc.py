"""SNC against hostile and damaged files: false lengths (decompression bombs), cut and corrupt
files, per-block checksums, --salvage, `snc verify`, outputs that are inputs, strict manifests,
clean exits and no leftovers on SIGTERM (docs/snc.md, "Integrity and limits")."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from core.children import TiedPopen
from core.errors import CodecError
from engines.snc import SncReader, encode
from engines.snc.manifest import LIMITS, Manifest
from tests.jackutil import ROOT
from tests.test_snc import write_song


def manifest_crc32(text: str) -> str:
    """The manifest checksum tag's value (as engines.snc.manifest writes it)."""
    return f"{zlib.crc32(text.encode('utf-8')):08x}"

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def cli(*args: str) -> subprocess.CompletedProcess:
    """``scorebridge ARGS`` in this process (a Python start costs seconds on a loaded CI
    machine); an exception escaping ``main`` fails the test as a traceback would."""
    from cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def spawn(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bridge", *map(str, args)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def refused(done: subprocess.CompletedProcess, *words: str) -> None:
    """Exit 1 or 2 with a one-line error that names ``words``, and no traceback."""
    assert done.returncode in (1, 2), (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    assert "error" in done.stderr, done.stderr
    for word in words:
        assert word in done.stderr, (word, done.stderr)


def no_leftovers(folder: Path) -> list[str]:
    """Temporary or partial names left in ``folder`` (recursively)."""
    if not folder.exists():
        return []
    return [str(p) for p in folder.rglob("*") if p.name.startswith(".") or p.name.endswith((".partial", ".tmp"))]


def remux(source: Path, out: Path, manifest_text: str | None = None, crc: bool = True,
          packets=None) -> None:
    """Copy ``source``'s tracks into ``out`` with another manifest (its checksum tag written
    when ``crc``); ``packets(list) -> list`` may drop or reorder the packets."""
    with av.open(str(source)) as src:
        text = manifest_text if manifest_text is not None else src.metadata["SNC_MANIFEST"]
        with av.open(str(out), "w", format="matroska") as dst:
            dst.metadata["SNC_MANIFEST"] = text
            if crc:
                dst.metadata["SNC_MANIFEST_CRC32"] = manifest_crc32(text)
            streams = []
            for stream in src.streams.audio:
                copy = dst.add_stream_from_template(stream)
                copy.metadata["title"] = stream.metadata["title"]
                streams.append(copy)
            found = [p for p in src.demux(*src.streams.audio) if p.dts is not None]
            for packet in (packets(found) if packets else found):
                packet.stream = streams[packet.stream.index]
                dst.mux(packet)


def edited(source: Path, out: Path, change, crc: bool = True) -> Path:
    data = json.loads(SncReader(source).manifest.to_json())
    change(data)
    remux(source, out, json.dumps(data), crc)
    return out


@pytest.fixture(scope="module")
def song(tmp_path_factory) -> dict[str, Path]:
    return write_song(tmp_path_factory.mktemp("song"), seconds=3.0)


@pytest.fixture(scope="module")
def lossless(song, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lossless") / "song.snc"
    encode(song["master"], {k: v for k, v in song.items() if k != "master"}, out, "lossless")
    return out


@pytest.fixture(scope="module")
def lossy(song, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lossy") / "song.snc"
    encode(song["master"], {k: v for k, v in song.items() if k != "master"}, out, "transparent")
    return out


def decoded(path: Path) -> dict[str, np.ndarray]:
    blocks = list(SncReader(path).blocks())
    return {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}


def packet_spans(path: Path) -> list[tuple[int, int, int]]:
    """(track, byte offset, size) of every packet of ``path``."""
    with av.open(str(path)) as container:
        return [(p.stream.index, p.pos, p.size) for p in container.demux(*container.streams.audio)
                if p.size and p.pos is not None and p.pos >= 0]


# -- decompression bombs: a manifest claiming more than the tracks hold ------------------------


@pytest.mark.parametrize("version", [3, 2])
def test_a_file_claiming_four_hours_fails_fast_and_writes_nothing(lossless, tmp_path, version):
    def claim(data: dict) -> None:
        data["frames"] = LIMITS["max_duration_s"] * data["sample_rate"]
        if version == 2:
            data["version"] = 2
            del data["integrity"]

    bomb = edited(lossless, tmp_path / "bomb.snc", claim, crc=version == 3)
    out = tmp_path / "out"
    started = time.monotonic()
    done = spawn("snc", "decode", bomb, "-o", out)
    refused(done, "bomb.snc", "track", "14400.000 s")
    assert time.monotonic() - started < 60
    assert not out.exists() or not list(out.iterdir())
    done = cli("snc", "render", bomb, "-o", tmp_path / "mix.wav")
    refused(done, "14400.000 s")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.snc"]
    # Without the scan, the reader itself stops where the data ends (plus one block).
    frames = 0
    with pytest.raises(CodecError, match="ends at 3.0"):
        for block in SncReader(bomb).blocks():
            frames += block["master"].shape[0]
    assert frames <= 4 * 48000


def test_a_track_that_jumps_hours_ahead_is_refused_with_bounded_memory(lossless, tmp_path):
    """One packet moved to 4 hours: the reader fills the gap block by block (never one
    allocation of the whole gap) and gives up at the skew limit."""
    def move_last(found: list) -> list:
        last = [p for p in found if p.stream.index == 1][-1]
        last.pts = last.dts = 4 * 3600 * 1000 - 100
        return [p for p in found if p is not last] + [last]

    bad = tmp_path / "jump.snc"
    remux(lossless, bad, packets=move_last)
    assert not SncReader(bad).scan().intact
    done = cli("snc", "decode", bad, "-o", tmp_path / "out")
    refused(done, "track 1 (vocals)")


# -- cut and corrupt files ------------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.5, 0.63, 0.95])
def test_a_cut_file_fails_with_track_and_position_and_leaves_no_output(lossless, lossy, tmp_path, fraction):
    for source in (lossless, lossy):
        data = source.read_bytes()
        cut = tmp_path / f"cut-{source.parent.name}.snc"
        cut.write_bytes(data[: int(len(data) * fraction)])
        out = tmp_path / f"out-{source.parent.name}"
        done = cli("snc", "decode", cut, "-o", out)
        refused(done, "track", " s")
        assert not out.exists() or not list(out.iterdir())
        verify = cli("snc", "verify", cut)
        assert verify.returncode == 1 and "damaged" in verify.stdout and "track" in verify.stdout, verify.stdout


def test_damage_inside_a_lossy_block_is_caught(lossy, tmp_path):
    """A byte changed inside an Opus packet still decodes (to different sound): the block
    checksums catch every one."""
    data = lossy.read_bytes()
    spans = packet_spans(lossy)
    rng = np.random.default_rng(14)
    for index in rng.choice(len(spans), 12, replace=False):
        track, pos, size = spans[index]
        damaged = bytearray(data)
        offset = pos + int(rng.integers(size // 2, size))
        damaged[offset] ^= 0x21
        path = tmp_path / "damaged.snc"
        path.write_bytes(bytes(damaged))
        report = SncReader(path).scan()
        assert [d.track for d in report.damage] == [track], (index, report.damage)
    done = cli("snc", "verify", path, "--json")
    assert done.returncode == 1 and json.loads(done.stdout)["damage"][0]["track"] == track


def test_a_changed_codec_header_is_caught(lossy, tmp_path):
    """The Opus header's output gain (bytes 16-17 of OpusHead) changes every sample the track
    decodes to without touching a packet: group 0's checksum covers the header."""
    data = bytearray(lossy.read_bytes())
    head = data.index(b"OpusHead", data.index(b"OpusHead") + 1)  # the second track's (vocals)
    data[head + 16:head + 18] = (256 * 6).to_bytes(2, "little")  # +6 dB
    path = tmp_path / "louder.snc"
    path.write_bytes(bytes(data))
    report = SncReader(path).scan()
    assert [(d.track, d.start_s) for d in report.damage] == [(1, 0.0)], report.damage
    refused(cli("snc", "decode", path, "-o", tmp_path / "out"), "track 1 (vocals)")


def test_random_corruption_never_decodes_to_other_sound(lossy, tmp_path):
    """Anywhere in the file: either refused (CodecError) or the very same samples."""
    data = lossy.read_bytes()
    reference = decoded(lossy)
    rng = np.random.default_rng(9)
    for _ in range(12):
        damaged = bytearray(data)
        for offset in rng.integers(0, len(data), int(rng.integers(1, 4))):
            damaged[offset] = int(rng.integers(0, 256))
        path = tmp_path / "random.snc"
        path.write_bytes(bytes(damaged))
        try:
            reader = SncReader(path)
            reader.check_intact()
            result = decoded(path)
        except CodecError:
            continue
        for name, samples in reference.items():
            assert np.array_equal(result[name], samples), name


def test_the_manifest_checksum_catches_an_edited_manifest(lossless, tmp_path):
    with av.open(str(lossless)) as container:
        text = container.metadata["SNC_MANIFEST"]
    bad = tmp_path / "edited.snc"
    remux(lossless, bad, text.replace('"gain_db":0.0', '"gain_db":1.0', 1), crc=False)
    with pytest.raises(CodecError, match="without its manifest checksum"):
        SncReader(bad)
    with av.open(str(bad), "r") as container:
        assert container.metadata["SNC_MANIFEST"] != text
    remux(lossless, bad, text.replace('"gain_db":0.0', '"gain_db":1.0', 1), crc=True)
    SncReader(bad)  # a consistent edit: a valid file
    with av.open(str(lossless)) as container:
        assert container.metadata["SNC_MANIFEST_CRC32"] == manifest_crc32(text)
    from engines.snc.manifest import manifest_crc32 as written

    assert written(text) == manifest_crc32(text)


# -- salvage and verify ---------------------------------------------------------------------------


def test_salvage_writes_what_is_intact_and_names_the_missing_span(lossy, tmp_path):
    data = bytearray(lossy.read_bytes())
    drums = [s for s in packet_spans(lossy) if s[0] == 2]
    track, pos, size = drums[len(drums) // 2]
    data[pos + size // 2] ^= 0x40
    damaged = tmp_path / "damaged.snc"
    damaged.write_bytes(bytes(data))
    refused(cli("snc", "decode", damaged, "-o", tmp_path / "strict"), "track 2 (drums)")
    assert not (tmp_path / "strict").exists() or not list((tmp_path / "strict").iterdir())
    done = cli("snc", "decode", damaged, "-o", tmp_path / "out", "--salvage")
    assert done.returncode == 0, done.stderr
    assert "salvaged: missing (silent) track 2 (drums)" in done.stderr
    reference = decoded(lossy)
    for name in ("master", "vocals", "drums", "bass"):
        samples = sf.read(tmp_path / "out" / f"{name}.wav", dtype="float32", always_2d=True)[0]
        assert samples.shape == reference[name].shape
        silent = np.all(samples == 0, axis=1)
        # Nothing but the original or silence: Opus decoding afresh after the gap (as after a
        # seek) lands within -60 dB of decoding straight through.
        error = np.abs(samples - reference[name])[~silent].max()
        assert error < 1e-3, (name, error)
        if name in ("vocals", "bass"):
            assert np.array_equal(samples, reference[name]), name
        else:
            assert 0.02 < silent.mean() < 0.5, (name, silent.mean())
    assert not no_leftovers(tmp_path / "out")


def test_salvage_of_a_cut_file_ends_where_the_data_ends(lossless, tmp_path):
    data = lossless.read_bytes()
    cut = tmp_path / "cut.snc"
    cut.write_bytes(data[: len(data) // 2])
    done = cli("snc", "decode", cut, "-o", tmp_path / "out", "--salvage")
    assert done.returncode == 0, done.stderr
    assert "outputs end here" in done.stderr
    frames = sf.info(tmp_path / "out" / "master.wav").frames
    assert 0.5 * 48000 < frames < 2.5 * 48000


def test_verify_says_intact_or_names_track_and_span(lossless, lossy, tmp_path):
    for path in (lossless, lossy):
        done = cli("snc", "verify", path, "--json")
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert result["intact"] and result["integrity"] == "crc32 per block" and result["decoded"]
    assert json.loads(cli("snc", "verify", lossless, "--json").stdout)["pcm_hashes_checked"]
    text = cli("snc", "verify", lossless)
    assert text.returncode == 0 and "intact" in text.stdout and "PCM hashes match" in text.stdout
    refused(cli("snc", "verify", tmp_path / "missing.snc"), "no such file")


def test_a_version_2_file_still_decodes_with_a_note(lossless, tmp_path):
    def downgrade(data: dict) -> None:
        data["version"] = 2
        del data["integrity"]

    old = edited(lossless, tmp_path / "v2.snc", downgrade, crc=False)
    done = cli("snc", "decode", old, "-o", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert "without per-block checksums" in done.stderr
    verify = json.loads(cli("snc", "verify", old, "--json").stdout)
    assert verify["intact"] and verify["integrity"].startswith("none")


# -- outputs that are inputs, bad output paths -----------------------------------------------------


def test_encode_refuses_to_overwrite_its_own_inputs(song, tmp_path):
    master = tmp_path / "master.wav"
    master.write_bytes(song["master"].read_bytes())
    before = master.read_bytes()
    link = tmp_path / "link.wav"
    link.symlink_to(master)
    hard = tmp_path / "hard.wav"
    os.link(master, hard)
    for output in (master, link, hard, song["vocals"]):
        done = cli("snc", "encode", "--master", master, "--stem", f"vocals={song['vocals']}", "-o", output)
        refused(done, "is also an input")
    assert master.read_bytes() == before
    refused(cli("snc", "encode", "--master", master, "--stem", f"v={song['vocals']}", "-o", tmp_path / "no" / "x.snc"),
            "no such folder")
    refused(cli("snc", "encode", "--master", master, "--stem", f"v={song['vocals']}", "-o", tmp_path), "is a folder")
    refused(cli("snc", "encode", "--master", master, "--stem", f"vocals\n={song['vocals']}", "-o", tmp_path / "x.snc"),
            "stem name")
    refused(cli("snc", "encode", "--master", master, "--stem", f"a/b={song['vocals']}", "-o", tmp_path / "x.snc"),
            "stem name")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hard.wav", "link.wav", "master.wav"]


def test_decode_and_render_refuse_to_overwrite_their_input(lossless, tmp_path):
    disguised = tmp_path / "master.wav"
    disguised.write_bytes(lossless.read_bytes())
    refused(cli("snc", "decode", disguised, "-o", tmp_path), "is the input file")
    assert disguised.read_bytes() == lossless.read_bytes()
    refused(cli("snc", "decode", lossless, "-o", disguised), "is a file")
    refused(cli("snc", "render", disguised, "-o", disguised), "is also an input")
    assert disguised.read_bytes() == lossless.read_bytes()
    (tmp_path / "folder.wav").mkdir()
    refused(cli("snc", "render", lossless, "-o", tmp_path / "folder.wav"), "is a folder")


def test_outputs_follow_the_umask_like_any_other_tool(song, lossless, tmp_path):
    """One file mode for every output: 0666 minus the umask (not mkstemp's private 0600)."""
    import stat

    previous = os.umask(0o027)
    try:
        stems = [f"--stem={name}={path}" for name, path in song.items() if name != "master"]
        assert cli("snc", "encode", "--master", song["master"], *stems, "-o", tmp_path / "a.snc",
                   "--mode", "lossless").returncode == 0
        assert cli("snc", "decode", lossless, "-o", tmp_path / "decoded").returncode == 0
        assert cli("snc", "render", lossless, "-o", tmp_path / "mix.wav", "--via", "numpy").returncode == 0
    finally:
        os.umask(previous)
    outputs = [tmp_path / "a.snc", tmp_path / "mix.wav", *(tmp_path / "decoded").iterdir()]
    assert len(outputs) > 3
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in outputs} == \
        {p.name: oct(0o640) for p in outputs}


def test_render_refuses_non_finite_numbers(lossless, tmp_path):
    out = tmp_path / "mix.wav"
    for option in (["--gain", "vocals=nan"], ["--gain", "vocals=inf"], ["--pan", "drums=nan"],
                   ["--pan", "drums=2"], ["--valence", "nan"]):
        refused(cli("snc", "render", lossless, "-o", out, *option))
    assert not list(tmp_path.iterdir())


# -- strict manifests ------------------------------------------------------------------------------


def _manifest(lossless: Path) -> dict:
    return json.loads(SncReader(lossless).manifest.to_json())


@pytest.mark.parametrize("change, message", [
    (lambda d: d["stems"][0].update(pan="abc"), "pan 'abc' must be a finite number"),
    (lambda d: d["stems"][0].update(pan=None), "pan None must be a finite number"),
    (lambda d: d["stems"][0].update(gain_db=[1]), "gain"),
    (lambda d: d["stems"][0].update(name="vocals\n"), "stem name"),
    (lambda d: d["stems"][0].update(name="a/b"), "stem name"),
    (lambda d: d["stems"][0].update(name="x\x00"), "stem name"),
    # found by tests/test_fuzz_snc.py: a name that is not a string (unhashable)
    (lambda d: d["stems"][0].update(name=[]), "stem name"),
    (lambda d: d["stems"][0].update(codec=7), "codec 7"),
    (lambda d: d["stems"][0].update(surprise=1), "unknown fields"),
    (lambda d: d["residual"].update(gain_block_frames="x"), "gain_block_frames 'x'"),
    (lambda d: d["residual"].update(gain_block_frames=0), "gain_block_frames 0"),
    (lambda d: d["residual"].update(packet_frames=4.5), "packet size 4.5"),
    (lambda d: d.update(frames=1.5), "1.5 frames"),
    (lambda d: d.update(frames=True), "True frames"),
    (lambda d: d.update(version=True), "version True"),
    (lambda d: d.update(sample_rate="48000"), "sample rate '48000'"),
    (lambda d: d.update(stems={}), "stems must be a list"),
    (lambda d: d.update(contexts=[]), "contexts must be an object"),
    (lambda d: d.update(loudness_lufs={"master": "loud"}), "loudness"),
    (lambda d: d["mastering"].update(gain_per_channel=["abc", 1]), "mastering gains"),
    (lambda d: d["integrity"].update(group_ms="1000"), "group_ms"),
    (lambda d: d["integrity"]["tracks"][0].update(crc32="!!"), "not base64"),
    (lambda d: d.pop("integrity"), "missing fields ['integrity']"),
])
def test_manifest_fields_are_checked_for_type_and_range(lossless, change, message):
    data = _manifest(lossless)
    change(data)
    with pytest.raises(CodecError, match=message.replace("(", r"\(").replace("[", r"\[")):
        Manifest.from_json(json.dumps(data))


@pytest.mark.parametrize("text, message", [
    ("{\"version\": 3, \"frames\": NaN}", "NaN is not a number"),
    ("{\"version\": 3, \"frames\": Infinity}", "Infinity is not a number"),
    ("{\"version\": 3, \"frames\": 1e400}", "overflows"),
    ("{\"version\": 3, \"frames\": " + "9" * 5000 + "}", "not usable JSON"),
    ("[" * 100000 + "]" * 100000, "not usable JSON"),
    ("\"text\"", "must be a JSON object"),
])
def test_manifest_json_that_python_accepts_but_snc_does_not(text, message):
    with pytest.raises(CodecError, match=message):
        Manifest.from_json(text)


def test_nan_residual_gains_are_refused(lossy):
    data = json.loads(SncReader(lossy).manifest.to_json())
    data["residual"]["gains"][0][0] = float("nan")
    with pytest.raises(CodecError, match="NaN"):
        Manifest.from_json(json.dumps(data))
    data["residual"]["gains"][0][0] = 1.5
    with pytest.raises(CodecError, match="row 0 must hold 2 numbers in 0..1"):
        Manifest.from_json(json.dumps(data))


def test_a_bad_manifest_in_a_file_is_a_clear_error_on_every_command(lossless, tmp_path):
    bad = edited(lossless, tmp_path / "bad.snc", lambda d: d["stems"][0].update(pan="abc"))
    for args in (["info"], ["info", "--json"], ["verify"], ["decode", "-o", tmp_path / "out"],
                 ["render", "-o", tmp_path / "mix.wav"]):
        action, *rest = args
        refused((spawn if action == "decode" else cli)("snc", action, bad, *rest), "pan 'abc'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.snc"]


# -- signals ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def long_file(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("long")
    song = write_song(folder, seconds=20.0)
    out = folder / "long.snc"
    encode(song["master"], {k: v for k, v in song.items() if k != "master"}, out, "lossless")
    return out


def _terminate_when(args: list, folder: Path, ready) -> subprocess.CompletedProcess | None:
    """Start ``scorebridge ARGS``, wait until ``ready(folder)`` (its temporary files exist),
    SIGTERM it; returns what it did (None: it ended before getting there)."""
    process = TiedPopen([sys.executable, "-m", "bridge", *map(str, args)], cwd=ROOT, env=ENV,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while process.poll() is None and time.monotonic() < deadline:
        if ready(folder):
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=30)
            return subprocess.CompletedProcess(args, process.returncode, out, err)
        time.sleep(0.002)
    process.communicate(timeout=30)
    return None


@pytest.mark.parametrize("action", ["decode", "render", "encode"])
def test_sigterm_leaves_no_partial_files_or_folders(long_file, tmp_path, action):
    out = tmp_path / "out"
    out.mkdir()
    if action == "decode":
        args = ["snc", "decode", long_file, "-o", out]
    elif action == "render":
        args = ["snc", "render", long_file, "-o", out / "mix.wav"]
    else:
        song = write_song(tmp_path, seconds=12.0)
        args = ["snc", "encode", "--master", song["master"], "--stem", f"vocals={song['vocals']}",
                "--stem", f"drums={song['drums']}", "-o", out / "x.snc", "--mode", "lossless"]
    for _ in range(3):  # (the process may finish before the poll sees its temporary files)
        process = _terminate_when(args, out, lambda f: bool(no_leftovers(f)))
        if process is not None:
            break
        for path in out.iterdir():
            path.unlink()
    else:
        pytest.skip(f"snc {action} finished before its temporary files were seen")
    assert process.returncode == 128 + signal.SIGTERM, process.stderr
    assert "Traceback" not in process.stderr
    assert not no_leftovers(out), no_leftovers(out)
    assert not list(out.iterdir())


def _scratch(folder: Path) -> list[Path]:
    return sorted(folder.glob(".snc-*"))


def _sigkill_when(args: list[str], out: Path, seen: Callable[[], bool], poll_s: float) -> bool:
    """Run the command and SIGKILL it as soon as ``seen()``; up to three tries, since the command
    may finish before the poll sees it mid-work (what a finished try wrote in OUT is removed).
    Whether a try was killed."""
    for _ in range(3):
        process = TiedPopen(args, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline:
            if seen():
                process.kill()
                break
            time.sleep(poll_s)
        process.wait(timeout=30)
        if process.returncode == -signal.SIGKILL:
            return True
        for path in out.iterdir():
            path.unlink()
    return False


def test_a_sigkilled_encode_leaves_nothing_once_the_next_encode_ran(tmp_path):
    """SIGKILL runs no cleanup: the killed encoder's scratch folder stays until the next SNC
    command writing there sweeps it (its owner is dead and its lock free); no partial .snc
    ever appears under the output's name."""
    song = write_song(tmp_path, seconds=12.0)
    out = tmp_path / "out"
    out.mkdir()
    args = [sys.executable, "-m", "bridge", "snc", "encode", "--master", str(song["master"]),
            "--stem", f"vocals={song['vocals']}", "--stem", f"drums={song['drums']}", "-o", str(out / "x.snc")]
    # mid-encode: a stem is being coded
    if not _sigkill_when(args, out, lambda: any(folder.glob("stem*.mka") for folder in _scratch(out)), 0.005):
        pytest.skip("snc encode finished three times before a coded stem was seen")
    left = _scratch(out)
    assert left and not (out / "x.snc").exists(), sorted(out.iterdir())  # what the kill left
    done = subprocess.run(args, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["x.snc"], sorted(out.iterdir())
    SncReader(out / "x.snc").check_intact()


def test_a_sigkilled_decode_leaves_no_partial_wav_and_the_next_decode_sweeps_its_folder(long_file, tmp_path):
    """A decode writes its WAVs inside a scratch folder: SIGKILLed mid-write it leaves that
    folder (nothing under an output's name, no .partial file beside them), which the next
    decode into the same place removes."""
    out = tmp_path / "out"
    out.mkdir()
    args = [sys.executable, "-m", "bridge", "snc", "decode", str(long_file), "-o", str(out)]
    # a WAV being written
    if not _sigkill_when(args, out, lambda: any(p.is_file() and p.stat().st_size > 100_000 for p in out.rglob("*")),
                         0.002):
        pytest.skip("snc decode finished three times before a WAV was seen being written")
    left = _scratch(out)
    assert [p.name for p in out.iterdir()] == [p.name for p in left] and left[0].name.startswith(".snc-decode-")
    done = subprocess.run(args, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["bass.wav", "drums.wav", "master.wav", "vocals.wav"]
    assert sf.info(out / "master.wav").frames == SncReader(long_file).manifest.frames


def test_the_sweep_removes_only_scratch_folders_whose_owner_is_gone(tmp_path):
    from engines.snc.scratch import scratch_folder, sweep_scratch

    dead = TiedPopen(["true"])  # a PID that just ended
    dead.wait()
    alive = TiedPopen(["sleep", "60"])
    try:
        gone = tmp_path / f".snc-{dead.pid}-abcd1234"
        living = tmp_path / f".snc-import-{alive.pid}-abcd1234"
        legacy = tmp_path / ".snc-k2j3h4g5"  # an older encoder's folder: no PID, never guessed at
        for folder in (gone, living, legacy):
            folder.mkdir()
            (folder / "stem0.mka").write_bytes(b"x")
        with scratch_folder(tmp_path) as mine:
            assert mine.name.startswith(f".snc-{os.getpid()}-")
            # a dead PID whose lock is held (another PID namespace sharing the folder) is kept
            locked = tmp_path / f".snc-{dead.pid}-held0000"
            locked.mkdir()
            import fcntl

            with open(locked / ".owner.lock", "w") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                assert sweep_scratch(tmp_path) == []
            assert sweep_scratch(tmp_path) == [locked]
            assert mine.is_dir()
        assert not gone.exists()  # (swept when scratch_folder started)
        assert living.is_dir() and legacy.is_dir()
        assert not mine.exists()
    finally:
        alive.kill()
        alive.wait()


def test_info_json_into_a_closed_pipe_ends_quietly(lossless):
    command = f"{sys.executable} -m bridge snc info {lossless} --json | head -c 10"
    done = subprocess.run(["bash", "-c", command], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=60)
    assert len(done.stdout) == 10
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr

"""The SNC reader on several threads: the tracks decode side by side to exactly what one
thread decodes (full decodes, seeks, stems alone, `snc decode` outputs), and a failure on a
worker thread reaches the caller (docs/snc.md, "Speed")."""

from __future__ import annotations

import hashlib
import threading

import av
import numpy as np
import pytest
import soundfile as sf

from core.errors import CodecError
from engines.snc import SncReader, trackdecode
from tests.test_hardening_snc import cli, remux
from tests.test_snc import encode_both_modes

SECONDS = 9.0  # several batches of every track in flight (trackdecode.BATCH_PACKETS, DEPTH)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, object]:
    return encode_both_modes(tmp_path_factory.mktemp("threads"), SECONDS)


def _decoded(path, threads: int, **options) -> dict[str, np.ndarray]:
    reader = SncReader(path, threads=threads)
    blocks = list(reader.blocks(integer=reader.integer, **options))
    return {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}


@pytest.mark.parametrize("mode", ["lossless", "transparent"])
@pytest.mark.parametrize("options", [{}, {"start_s": 2.7, "duration_s": 4.1, "block_frames": 7000},
                                     {"with_residual": False, "block_frames": 30000}])
def test_two_and_three_threads_decode_what_one_thread_decodes(files, mode, options):
    one = _decoded(files[mode], 1, **options)
    assert one["master"].shape[0] >= int(min(SECONDS, options.get("duration_s", SECONDS)) * 48000) - 1
    for threads in (2, 3):
        many = _decoded(files[mode], threads, **options)
        assert list(many) == list(one)
        for name, data in one.items():
            assert data.dtype == many[name].dtype and np.array_equal(data, many[name]), (threads, name)


def test_snc_decode_threads_option_writes_the_same_files(files, tmp_path):
    """The samples of every WAV (libsndfile's float WAVs carry a time stamp in their PEAK chunk,
    so the files' bytes may differ by it)."""
    digests = {}
    for threads in ("1", "2"):
        out = tmp_path / threads
        done = cli("snc", "decode", files["transparent"], "-o", out, "--threads", threads)
        assert done.returncode == 0, done.stderr
        digests[threads] = {p.name: hashlib.sha256(sf.read(p, dtype="float32")[0]).hexdigest()
                            for p in sorted(out.iterdir())}
    assert digests["1"] == digests["2"] and set(digests["1"]) == {"master.wav", "vocals.wav", "drums.wav",
                                                                  "bass.wav"}
    with pytest.raises(SystemExit) as refused:  # (argparse's usage error)
        cli("snc", "decode", files["transparent"], "-o", tmp_path / "x", "--threads", "0")
    assert refused.value.code == 2 and not (tmp_path / "x").exists()
    with pytest.raises(CodecError, match="threads"):
        SncReader(files["transparent"], threads=0)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_packet_that_does_not_decode_names_its_track_on_any_thread(files, tmp_path, threads):
    """A FLAC packet with a frame header that is not one fails in the decoder: the error
    reaches the caller with its track and time, whichever thread decoded it."""
    broken = tmp_path / "broken.snc"

    def damage(packets: list) -> list:
        drums = [i for i, p in enumerate(packets) if p.stream.index == 2]
        victim = packets[drums[len(drums) // 2]]
        bad = av.Packet(b"\xff\xf8" + bytes(12))
        bad.pts, bad.dts, bad.duration, bad.time_base = victim.pts, victim.dts, victim.duration, victim.time_base
        bad.stream = victim.stream
        packets[drums[len(drums) // 2]] = bad
        return packets

    remux(files["lossless"], broken, packets=damage)
    with pytest.raises(CodecError, match=r"track 2 \(drums\) is corrupt near [3-6]\.\d+ s"):
        list(SncReader(broken, threads=threads).blocks())


def test_an_exception_on_a_worker_thread_reaches_the_caller_and_the_threads_end(files, monkeypatch):
    real = trackdecode.decode_chunk
    calls = []

    def failing(*args, **kwargs):
        calls.append(threading.current_thread().name)
        if len(calls) == 5:
            raise MemoryError("out of memory on a worker")
        return real(*args, **kwargs)

    monkeypatch.setattr(trackdecode, "decode_chunk", failing)
    with pytest.raises(MemoryError, match="on a worker"):
        list(SncReader(files["lossless"], threads=2).blocks())
    assert calls[4].startswith("snc-read")  # (it did fail on a worker, not on the caller's thread)
    assert not [t for t in threading.enumerate() if t.name.startswith("snc-read")]

"""The SNC player chasing the transport: a start or seek plays, from its first buffer, where
the transport is at that buffer (``Player.sync``), however late it reached the player. Driven
buffer by buffer through the audio callback with chosen callback times (the real stream,
reader and pipeline; only the pyo output is replaced). The live path is
tests/test_snc_player_live.py."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from core.events import TransportChange
from engines.snc_player.engine import SncEngine
from engines.snc_player.player import Player
from tests.test_snc_player import RATE, decoded, encode_song, stems_audio
from tests.test_snc_player_seek import Output, player_of, run

BUFFER_S = 256 / RATE


@pytest.fixture(scope="module")
def songs(tmp_path_factory) -> dict[str, Path]:
    """A 2 s song whose master is 0.8 * the sum of its stems (the player plays it exactly)."""
    stems = stems_audio(2.0)
    return {"clean": encode_song(tmp_path_factory.mktemp("snc_sync"), "clean", stems, 0.8 * sum(stems.values()),
                                 "lossless")}


def starts_of(player: Player) -> list[float]:
    """Records every (re)start of the decoder (a seek, or a jump the audio thread makes)."""
    seen: list[float] = []
    real = player.stream.start

    def start(seconds: float = 0.0) -> None:
        seen.append(seconds)
        real(seconds)

    player.stream.start = start
    return seen


def decoded_ahead(player: Player, blocks: int = 4) -> None:
    """Waits until the decoder has ``blocks`` blocks (4096 frames each) ready."""
    deadline = time.monotonic() + 10
    while player.stream._queue.qsize() < blocks:
        if time.monotonic() > deadline:
            pytest.fail("the decoder never got ahead")
        time.sleep(0.005)


def located(player: Player, seconds: float) -> None:
    player.seek(seconds)
    run(player, lambda: player.position_s == seconds)  # taken by the audio thread, paused
    decoded_ahead(player)


def played(output: Output, start: int, count: int) -> list[np.ndarray]:
    return [b for b in output.buffers[start:] if b is not None][:count]


def plays(master: np.ndarray, buffers: list[np.ndarray], frame: int) -> bool:
    """The buffers after the first (the fade-in) are the song from ``frame`` + one buffer on."""
    n = len(buffers[0])
    return len(buffers) > 1 and all(
        np.abs(block - master[frame + i * n:frame + (i + 1) * n]).max() < 2e-6
        for i, block in enumerate(buffers) if i > 0
    )


def test_a_start_that_comes_late_plays_where_the_transport_is_from_what_was_decoded(songs):
    master = decoded(songs["clean"])["master"]
    player, output = player_of(songs["clean"])
    located(player, 0.5)
    starts = starts_of(player)
    at = time.perf_counter()
    player.sync(0.5, at)  # the transport started at 0.5 s ...
    player.play()
    before = len(output.buffers)
    player._run_buffer(at + 0.105)  # ... and the audio thread plays its first buffer 105 ms later
    frame = int(round(0.605 * RATE))
    assert player.last_start == {
        "song_s": frame / RATE, "at_s": at + 0.105, "transport_s": pytest.approx(0.605), "told_at_s": at
    }
    run(player, lambda: len(played(output, before, 5)) == 5)
    assert plays(master, played(output, before, 5), frame)
    assert starts == []  # skipped into what was decoded: no new decoding, no wait
    player.stream.stop()


def test_a_seek_plays_where_the_transport_is_once_its_audio_is_decoded(songs):
    master = decoded(songs["clean"])["master"]
    player, output = player_of(songs["clean"])
    player.play()
    run(player, lambda: player.position_s > 0.1)
    at = time.perf_counter()
    player.sync(1.0, at)  # the transport is at 1.0 s now: the engine seeks there
    player.seek(1.0)
    before, now = len(output.buffers), at
    deadline = time.monotonic() + 10
    while player.last_start is None or player.last_start["at_s"] < at:  # callbacks at the audio rate
        assert time.monotonic() < deadline, player.stats()
        now += BUFFER_S
        player._run_buffer(now)
        time.sleep(0.002)  # (the decoder's time)
    start = player.last_start
    # It faded out, took the seek and waited for the decoder, and joined the transport then:
    # not at the seek's target, which the transport had left behind.
    assert start["song_s"] >= 1.0 + 2 * BUFFER_S
    assert abs(start["song_s"] - start["transport_s"]) <= 0.5 / RATE
    faded_in = [i for i, b in enumerate(output.buffers) if i >= before and b is not None and
                np.abs(b).max() > 0 and i > 0 and output.buffers[i - 1] is None][0]
    run(player, lambda: len(output.buffers) > faded_in + 5)
    assert plays(master, [b for b in output.buffers[faded_in:faded_in + 5]], int(round(start["song_s"] * RATE)))
    player.stream.stop()


def test_a_transport_far_ahead_of_what_was_decoded_is_joined_by_decoding_there(songs):
    master = decoded(songs["clean"])["master"]
    player, output = player_of(songs["clean"])
    located(player, 0.2)
    starts = starts_of(player)
    at = time.perf_counter()
    player.sync(0.2, at)
    player.play()
    now = at + 1.4  # the start reached the player 1.4 s late: 1.2 s past what it decoded
    deadline = time.monotonic() + 10
    while player.last_start is None:
        assert time.monotonic() < deadline, player.stats()
        player._run_buffer(now)
        now += BUFFER_S
        time.sleep(0.002)
    assert len(starts) == 1 and abs(starts[0] - 1.6) < 0.01  # decoding restarted there ...
    start = player.last_start
    assert abs(start["song_s"] - start["transport_s"]) <= 0.5 / RATE  # ... and joined in time
    first = len(output.buffers) - 1
    run(player, lambda: len(output.buffers) > first + 5)
    assert plays(master, output.buffers[first:first + 5], int(round(start["song_s"] * RATE)))
    player.stream.stop()


def test_the_engine_starts_a_located_player_in_time_without_a_second_seek(songs):
    """The live failure this file was written for: after a stopped locate to beat 2 (1.0 s at
    120 BPM), the start reached the engine 105 ms after the transport started. The engine
    then sought to 1.105 s and the song played from there once decoded, behind the transport
    by the decoding time; now it skips into what the locate decoded and plays in time."""
    player, output = player_of(songs["clean"])
    engine = SncEngine()
    engine.player = player
    engine.process(TransportChange(False, 2.0, time.perf_counter(), "locate"))
    run(player, lambda: player.position_s == 1.0)
    decoded_ahead(player)
    starts = starts_of(player)
    started_s = time.perf_counter() - 0.105
    before = len(output.buffers)
    engine.process(TransportChange(True, 2.0, started_s, "play"))
    run(player, lambda: any(b is not None for b in output.buffers[before:]))
    assert starts == []  # (it used to seek to 1.105 s)
    start = player.last_start
    assert abs(start["song_s"] - start["transport_s"]) <= 0.5 / RATE
    assert start["transport_s"] == pytest.approx(1.0 + start["at_s"] - started_s)
    engine.process(TransportChange(False, 2.0, time.perf_counter(), "stop"))
    assert not player.playing and player._sync is None
    player.stream.stop()

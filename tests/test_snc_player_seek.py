"""Seeking in the SNC player, driven buffer by buffer through its audio callback (the real
stream and reader; only the pyo output is replaced, by a list of what it was given), and the
reader's cancellation of the batches in flight that a seek abandons. The live path, on JACK,
is tests/test_snc_player_live.py."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from engines.snc import trackdecode
from engines.snc.reader import SncReader
from engines.snc_player.player import Player
from tests.test_snc_player import RATE, decoded, songs  # noqa: F401 - (songs: a fixture)


class Output:
    """What the player hands pyo, buffer by buffer (None: silence)."""

    def __init__(self) -> None:
        self.buffers: list[np.ndarray | None] = []

    def write(self, block: np.ndarray | None) -> None:
        self.buffers.append(None if block is None else np.array(block, np.float64))


def player_of(path) -> tuple[Player, Output]:
    player = Player(path)
    player._feed = Output()
    player.stream.start(0.0)
    return player, player._feed


def run(player: Player, until, seconds: float = 10.0) -> None:
    """Audio callbacks (with the decoder's time to catch up) until ``until()`` holds."""
    deadline = time.monotonic() + seconds
    while not until():
        if time.monotonic() > deadline:
            pytest.fail(f"the player never got there: {player.stats()}, seeking {player.seeking}")
        player._run_buffer(time.perf_counter())
        time.sleep(0.001)


def plays_from(player: Player, output: Output, master: np.ndarray, frame: int) -> bool:
    """Whether the next audio the player hands out is the song from ``frame`` on (its first
    buffer fades in, an underrun fades in again: one of the next full-gain buffers is compared
    sample for sample; the n-th buffer with audio plays song frame ``frame + 256 n``)."""
    start = len(output.buffers)
    run(player, lambda: sum(b is not None for b in output.buffers[start:]) >= 4)
    played = [b for b in output.buffers[start:] if b is not None][:4]
    n = player.buffer_frames
    return any(np.abs(block - master[frame + i * n:frame + (i + 1) * n]).max() < 2e-6
               for i, block in enumerate(played) if i > 0)


def test_a_seek_after_the_song_ended_plays_from_its_target(songs):  # noqa: F811
    """At the end the output is silent, but the player once stayed at full gain there and so
    waited for audio to fade out that never came: a locate after the end was never taken."""
    master = decoded(songs["clean"])["master"]
    player, output = player_of(songs["clean"])
    player.play()
    run(player, player.finished.is_set)
    assert not player.playing and player.stream.ended
    player.seek(0.5)
    player.play()
    assert plays_from(player, output, master, RATE // 2)
    assert player.position_s >= 0.5 and player.stats()["error"] is None
    player.stream.stop()


def test_a_seek_asked_while_the_audio_thread_takes_another_is_neither_lost_nor_hidden(songs):  # noqa: F811
    master = decoded(songs["clean"])["master"]
    player, output = player_of(songs["clean"])
    taking = player.stream.start
    seen: list[bool] = []

    def start(seconds: float) -> None:
        seen.append(player.seeking)  # (the engine's drift check must not see a settled player now)
        if len(seen) == 1:
            player.seek(1.25)  # another control thread asks again while the first is taken
        taking(seconds)

    player.stream.start = start
    player.seek(0.5)
    player.play()
    assert plays_from(player, output, master, int(1.25 * RATE))
    assert seen == [True, True] and not player.seeking and abs(player.located_s - player.position_s) < 1e-9
    player.stream.stop()


def test_located_s_is_the_target_of_a_seek_not_taken_yet(songs):  # noqa: F811
    player, _ = player_of(songs["clean"])
    player.seek(1.5)
    assert player.seeking and player.located_s == 1.5 and player.position_s == 0.0
    run(player, lambda: player.position_s == 1.5)  # taken by the audio thread (paused: not played)
    assert player.located_s == 1.5 and player.seeking
    player.stream.stop()


def test_cancel_ends_the_decoding_and_leaves_the_batches_in_flight_undecoded(songs, monkeypatch):  # noqa: F811
    """A seek sets its old decoder's ``cancel``: the reader ends at once, and of the batches
    queued on the pool only those already running finish (at most one per thread)."""
    calls: list[float] = []
    real = trackdecode.decode_chunk

    def slow(*args, **kwargs):
        calls.append(time.monotonic())
        time.sleep(0.02)  # (each batch long enough to be in flight when the cancel comes)
        return real(*args, **kwargs)

    monkeypatch.setattr(trackdecode, "decode_chunk", slow)
    reader = SncReader(songs["clean"], threads=2)
    every = len(list(reader.blocks(4096)))
    full = len(calls)
    calls.clear()
    cancel = threading.Event()
    blocks = reader.blocks(4096, cancel=cancel)
    next(blocks)
    cancel.set()
    cancelled_at = time.monotonic()
    assert list(blocks) == [] and every > 3
    started_after = [t for t in calls if t > cancelled_at]
    assert len(started_after) <= reader.threads and len(calls) < full, (len(started_after), len(calls), full)

"""The SNC player live on a real JACK server (dummy driver), recorded by ``jack_rec``
(jackd2's recorder), and the ``snc`` engine inside ``scorebridge serve`` following the
transport. Recordings are aligned to the decoded song by cross-correlation and compared sample
by sample (tolerance 2e-6: pyo's output scaling of 0.99999923 and 32-bit PCM)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from engines.snc.reader import SncReader
from tests.peer import Bridge
from tests.test_snc_player import RATE, encode_song, stems_audio

pytestmark = [pytest.mark.jack, pytest.mark.slow]


@pytest.fixture(scope="module")
def live_song(tmp_path_factory) -> Path:
    """3 s, residual-free (master = 0.8 * sum), with a noise stem so alignment is unambiguous."""
    stems = stems_audio(3.0)
    rng = np.random.default_rng(3)
    stems["drums"] = (
        0.1 * rng.standard_normal((3 * RATE, 2)) * np.repeat(rng.uniform(0.2, 1.0, (30, 1)), RATE // 10, 0)
    )
    return encode_song(
        tmp_path_factory.mktemp("snc_live"), "live", stems, 0.8 * sum(stems.values()), "lossless"
    )


def decoded(path: Path) -> dict[str, np.ndarray]:
    blocks = list(SncReader(path).blocks())
    return {k: np.concatenate([b[k] for b in blocks]).astype(np.float64) for k in blocks[0]}


def record(ports: list[str], seconds: int, path: Path) -> subprocess.Popen:
    """Start jack_rec on ``ports`` and return once it is connected to them (jack_rec takes
    whole seconds)."""
    if shutil.which("jack_rec") is None:
        pytest.fail("jack_rec is missing: install jackd2's example clients (jackd2 ships jack_rec)")
    proc = subprocess.Popen(
        ["jack_rec", "-f", str(path), "-d", str(seconds), "-b", "32", *ports],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        listed = subprocess.run(["jack_lsp", "-c", ports[-1]], capture_output=True, text=True).stdout
        if len(listed.strip().splitlines()) > 1:
            return proc
        time.sleep(0.02)
    proc.kill()
    proc.communicate()
    pytest.fail(f"jack_rec did not connect to {ports}")


def finish(recorder: subprocess.Popen) -> None:
    _, err = recorder.communicate(timeout=15)
    assert recorder.returncode == 0, err


def song_offset(
    recorded: np.ndarray,
    reference: np.ndarray,
    start: int,
    guess: int,
    search: int = 4800,
    length: int = 2048,
) -> int:
    """Song frame that recorded[start] plays: the lag near ``guess`` with the smallest error."""
    piece = recorded[start : start + length, 0]
    lags = range(max(0, guess - search), min(len(reference) - length, guess + search))
    errors = [np.abs(reference[lag : lag + length, 0] - piece).max() for lag in lags]
    return lags[int(np.argmin(errors))]


def matching_share(recorded: np.ndarray, expected: np.ndarray, tolerance: float = 2e-6) -> float:
    """Share of 256-frame chunks equal to ``expected`` within ``tolerance``."""
    chunks = [
        np.abs(recorded[i : i + 256] - expected[i : i + 256]).max() < tolerance
        for i in range(0, min(len(recorded), len(expected)) - 255, 256)
    ]
    return float(np.mean(chunks)) if chunks else 0.0


def test_player_ports_play_the_mix_and_a_mute_lands_without_a_step(jack_server, live_song, tmp_path):
    from engines.snc_player.player import Player

    song = decoded(live_song)
    gain = np.asarray(SncReader(live_song).manifest.mastering["gain_per_channel"])
    muted = gain * (song["drums"] + song["bass"] + song["keys"])
    name = f"sncplay{os.getpid()}"
    with Player(live_song, client_name=name, autoconnect=False) as player:
        player.open()
        recorder = record(player.ports, 3, tmp_path / "rec.wav")
        time.sleep(0.2)
        player.play()
        time.sleep(1.0)
        player.set_stem("vocals", mute=True)
        finish(recorder)
        stats = player.stats()
        change_latency_s = player.last_change_latency_s
    assert stats["error"] is None
    assert change_latency_s is not None and change_latency_s < 2 * 256 / RATE
    recorded, rate = sf.read(tmp_path / "rec.wav", dtype="float64", always_2d=True)
    assert rate == RATE and recorded.shape[1] == 2
    first = int(np.argmax(np.abs(recorded[:, 0]) > 1e-4))
    assert first > 0.1 * RATE  # silent until play()
    start = first + 512  # after pyo's and the player's fade-in buffer
    offset = song_offset(recorded, song["master"], start, guess=start - first)
    assert abs(offset - (start - first)) < 300
    aligned = recorded[start - offset :]
    # The change lands where the recording leaves the master and ramps into the muted mix.
    diverge = (
        int(np.argmax(np.abs(aligned[512:] - song["master"][512 : len(aligned)]).max(axis=1) > 1e-4)) + 512
    )
    assert 0.9 * RATE < diverge < 1.6 * RATE
    assert matching_share(aligned[512:diverge], song["master"][512:diverge]) > 0.9
    ramp = int(0.02 * RATE)
    tail = slice(diverge + ramp + 256, min(len(aligned), len(muted)))
    assert matching_share(aligned[tail], muted[tail]) > 0.9
    # No step: the largest sample-to-sample move across the change is that of the music itself.
    around = aligned[diverge - 256 : diverge + ramp + 256]
    music = np.abs(np.diff(song["master"], axis=0)).max()
    assert np.abs(np.diff(around, axis=0)).max() <= music * 1.05


@pytest.fixture
def snc_bridge(jack_server, live_song):
    env = dict(os.environ, SCOREBRIDGE_SNC_DIR=str(live_song.parent))
    bridge = Bridge(f"sncserve{os.getpid()}", "--slot", "song=snc", "--tempo", "120", env=env)
    yield bridge
    bridge.stop()


def osc(bridge: Bridge, *args: str) -> None:
    subprocess.run(["oscsend", "localhost", str(bridge.osc_port), *args], check=True, timeout=10)


def test_serve_snc_engine_follows_stop_and_locate(snc_bridge, live_song, tmp_path):
    song = decoded(live_song)
    ports = ["scorebridge-song:output_1", "scorebridge-song:output_2"]
    osc(snc_bridge, "/scorebridge/transport/stop")
    osc(snc_bridge, "/scorebridge/song/file", "s", "live")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        listed = subprocess.run(["jack_lsp"], capture_output=True, text=True).stdout
        if ports[0] in listed:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the snc engine's JACK ports never appeared: {snc_bridge.stop()[2][-1500:]}")
    # Stopped: silence.
    recorder = record(ports, 1, tmp_path / "stopped.wav")
    finish(recorder)
    stopped, _ = sf.read(tmp_path / "stopped.wav", always_2d=True)
    assert stopped.shape[0] == RATE and np.abs(stopped).max() < 1e-6
    # Locate to beat 2 (1.0 s at 120 BPM) and start: the song plays from there.
    osc(snc_bridge, "/scorebridge/transport/locate", "f", "2.0")
    recorder = record(ports, 1, tmp_path / "playing.wav")
    time.sleep(0.2)
    osc(snc_bridge, "/scorebridge/transport/start")
    finish(recorder)
    playing, _ = sf.read(tmp_path / "playing.wav", dtype="float64", always_2d=True)
    first = int(np.argmax(np.abs(playing[:, 0]) > 1e-4))
    assert first > 0
    start = first + 1024
    offset = song_offset(playing, song["master"], start, guess=RATE + start - first, search=RATE // 5)
    # recorded[start] plays song time offset; the song started near 1.0 s.
    assert abs((offset - (start - first)) / RATE - 1.0) < 0.1
    piece = slice(start, min(len(playing), start + RATE // 2))
    expected = song["master"][offset : offset + (piece.stop - piece.start)]
    assert matching_share(playing[piece], expected) > 0.9
    # An OSC stem control: mute stem 1 (vocals); what plays next is the mix without it.
    osc(snc_bridge, "/scorebridge/song/mute_1", "i", "1")
    time.sleep(0.1)
    recorder = record(ports, 1, tmp_path / "muted.wav")
    finish(recorder)
    muted_rec, _ = sf.read(tmp_path / "muted.wav", dtype="float64", always_2d=True)
    gain = np.asarray(SncReader(live_song).manifest.mastering["gain_per_channel"])
    without = gain * (song["drums"] + song["bass"] + song["keys"])
    where = song_offset(muted_rec, without, 256, guess=int(1.9 * RATE), search=RATE // 2)
    span = min(len(muted_rec) - 256, len(without) - where, RATE // 5)
    assert matching_share(muted_rec[256 : 256 + span], without[where : where + span]) > 0.9

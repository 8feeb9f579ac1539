"""The ``snc`` engine's song choice and its transport following, with the audio player replaced
by a recorder of what the engine asks of it (the live path is tests/test_snc_player_live.py)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from core.engine import EngineContext
from core.errors import ParameterError
from core.events import Beat, TransportChange
from engines.snc_player.engine import SncEngine


class FakePlayer:
    """What the engine uses of ``Player``; seeks and plays take effect at once."""

    made: list[FakePlayer] = []

    def __init__(self, path, request, backend, client_name) -> None:
        self.path = path
        self.reader = SimpleNamespace(manifest=SimpleNamespace(duration_s=60.0))
        self.pipeline = SimpleNamespace(names=["vocals", "drums"], set_tempo=lambda bpm: None, layout="stereo")
        self.stream = SimpleNamespace(loop=None)
        self.playing = False
        self.seeking = False
        self.position_s = 0.0
        self.buffer_frames, self.rate = 256, 48000
        self.seeks: list[float] = []
        self.syncs: list[tuple[float, float]] = []  # (song_s, at_s): where the transport was when
        FakePlayer.made.append(self)

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def sync(self, song_s: float, at_s: float) -> None:
        self.syncs.append((song_s, at_s))

    def seek(self, seconds: float) -> None:
        self.seeks.append(seconds)
        self.position_s = seconds

    @property
    def located_s(self) -> float:
        return self.position_s

    def play(self) -> None:
        self.playing = True

    def pause(self) -> None:
        self.playing = False

    def set_stem(self, *args, **kwargs) -> None:
        pass

    def set_va(self, *args) -> None:
        pass

    def set_loop(self, *args) -> None:
        pass

    def set_source(self, source: str) -> None:
        self.source = source

    def stats(self) -> dict:
        return {"playing": self.playing, "position_s": self.position_s}


@pytest.fixture
def songs(tmp_path, monkeypatch):
    monkeypatch.setenv("SCOREBRIDGE_SNC_DIR", str(tmp_path))
    monkeypatch.setattr("engines.snc_player.player.Player", FakePlayer)
    FakePlayer.made.clear()
    (tmp_path / "song_transparent.snc").write_bytes(b"SNC")
    (tmp_path / "other.snc").write_bytes(b"SNC")
    return tmp_path


def engine(value: str = "none") -> SncEngine:
    made = SncEngine()
    made.set_param("file", value)
    made.prepare(EngineContext("song", 0, 120.0))
    return made


def test_file_takes_a_name_a_name_with_extension_or_a_path_in_the_folder(songs):
    song = SncEngine.declaration("file")
    assert song.coerce("song_transparent") == "song_transparent"
    assert song.coerce("song_transparent.snc") == "song_transparent"
    assert song.coerce(str(songs / "song_transparent.snc")) == "song_transparent"
    assert song.coerce("none") == "none"
    # A song added after the engine was first used is found: the folder is read at each choice.
    (songs / "late.snc").write_bytes(b"SNC")
    assert song.coerce("late.snc") == "late"


def test_file_outside_the_folder_or_missing_is_refused_with_the_songs_listed(songs, tmp_path_factory):
    song = SncEngine.declaration("file")
    outside = tmp_path_factory.mktemp("elsewhere") / "x.snc"
    outside.write_bytes(b"SNC")
    with pytest.raises(ParameterError, match="outside the song folder.*songs there: other, song_transparent"):
        song.coerce(str(outside))
    with pytest.raises(ParameterError, match="outside the song folder"):
        song.coerce("../x")
    with pytest.raises(ParameterError, match="'missing' is not a song .*songs there: other, song_transparent"):
        song.coerce("missing")


def test_a_song_loaded_while_the_transport_runs_starts_at_its_position(songs):
    made = engine()
    now = time.perf_counter()
    made.process(TransportChange(True, 0.0, now, "internal clock"))
    made.process(Beat(8, time.perf_counter(), 120.0))  # beat 8 = 4.0 s at 120 BPM
    made.set_param("file", "song_transparent.snc")
    player = FakePlayer.made[-1]
    assert player.playing and len(player.seeks) == 1 and 4.0 <= player.seeks[0] < 4.2
    assert made.status()["playing"] and made.status()["position_s"] >= 4.0


def test_an_engine_swapped_into_a_running_transport_joins_at_the_next_beat(songs):
    made = engine("other")  # no TransportChange seen: the transport started before the swap
    player = FakePlayer.made[-1]
    assert not player.playing
    made.process(Beat(4, time.perf_counter(), 120.0))
    assert player.playing and 2.0 <= player.seeks[-1] < 2.2


def test_a_song_loaded_while_stopped_waits_at_the_transport_position(songs):
    made = engine()
    made.process(TransportChange(False, 6.0, time.perf_counter(), "locate"))
    made.set_param("file", "other")
    player = FakePlayer.made[-1]
    assert not player.playing and player.seeks == [3.0]


def test_source_switches_between_the_master_and_the_stem_mix(songs):
    made = engine("other")
    player = FakePlayer.made[-1]
    assert player.source == "master"
    made.set_param("source", "stems")
    assert player.source == "stems"
    with pytest.raises(ParameterError):
        made.set_param("source", "both")


def test_a_start_where_the_stopped_player_was_located_plays_without_another_seek(songs):
    """The player decoded ahead at the located place; a new seek there would only make its
    first buffer late (the song behind the transport from the start)."""
    made = engine("other")
    player = FakePlayer.made[-1]
    made.process(TransportChange(False, 2.0, time.perf_counter(), "locate"))
    assert player.seeks == [1.0] and not player.playing
    # The OSC start reports the tick before the located beat (1 - 1/24 beat: 21 ms at 120 BPM).
    started_s = time.perf_counter()
    made.process(TransportChange(True, 2.0 - 1 / 24, started_s, "play"))
    assert player.seeks == [1.0] and player.playing
    # ... and the player is told where the transport started, to join it at its first buffer.
    assert player.syncs == [(pytest.approx(1.0 - 0.5 / 24), started_s)]
    made.process(TransportChange(False, 3.0, time.perf_counter(), "stop"))
    made.process(TransportChange(True, 6.0, time.perf_counter(), "locate"))  # elsewhere: a seek
    assert player.seeks[1:] and 3.0 <= player.seeks[-1] < 3.1 and player.playing

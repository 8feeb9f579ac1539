"""The ``snc`` engine: an SNC player in a ``scorebridge serve`` slot, following the transport.

It produces audio, not MIDI (``process`` returns nothing): its pyo client plays on JACK (or
PortAudio) next to the bridge. The song is a ``.snc`` file of the folder named by
``SCOREBRIDGE_SNC_DIR`` (default: the current folder, read when a song is chosen and when the
engine prepares), named with or without its ``.snc`` extension or by a path in that folder;
``file = none`` keeps the engine silent. A song
must be a regular file of at most ``MAX_SNC_BYTES`` that stays inside the folder once symlinks
are resolved. Song time 0 is DAW beat ``offset_beats``; beats map
to seconds at the transport's tempo (a constant-tempo song).

Transport: Start/Continue -> play from the DAW position, Stop -> pause (faded), locate (Song
Position Pointer, OSC ``transport/locate``) -> seek, and every beat checks the drift between
the DAW position and the player's and re-seeks beyond 80 ms. The player chases the transport:
whenever it starts or lands after a seek, its first buffer plays where the transport is at
that moment (``Player.sync``), so a start that reached the engine late, or a seek's decoding,
costs the song's first moments but never puts it behind. A start at the place a stopped
player was located to skips into what it decoded there, without a new seek. DAW loops arrive
as locates. A song loaded while the transport runs starts at the transport's position at once.
Stems are addressed by their order in the file: ``gain_1`` .. ``gain_8``, ``mute_1`` ..
``mute_8`` (stems past the 8th keep their default). pyo runs one server per process, so a
bridge holds at most one playing ``snc`` slot.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.engine import Engine, EngineContext, LazyParams, Param
from core.errors import ParameterError
from core.events import Beat, EngineInput, EngineOutput, TransportChange
from core.files import inside, regular_file
from engines.snc_player.contexts import BUILTIN
from engines.snc_player.mixer import SILENCE_DB
from engines.snc_player.pipeline import SOURCES

__all__ = ["SncEngine", "STEM_SLOTS", "song_folder", "MAX_SNC_BYTES"]

STEM_SLOTS = 8
_DRIFT_S = 0.08
# The largest song file a slot opens (the player streams it): eight lossless stereo stems of
# an hour at 48 kHz take about 4 GiB.
MAX_SNC_BYTES = 8 * 1024**3
_SUFFIX = ".snc"


def song_folder() -> Path:
    return Path(os.environ.get("SCOREBRIDGE_SNC_DIR") or ".")


def _songs(folder: Path) -> list[str]:
    try:
        return sorted(p.stem for p in folder.glob(f"*{_SUFFIX}") if p.is_file())
    except OSError:
        return []


class _SongParam(Param):
    """The song: ``none``, or a ``.snc`` file of the song folder named by its name, its name
    with the extension, or a path that lies in the folder. The folder is read when a value
    is set (not when the engine is imported), so songs added later are found; the value kept
    is the file's path in the folder without the extension."""

    def coerce(self, value: Any) -> Any:
        if not isinstance(value, str) or not value.strip() or len(value) > 4096 or \
                any(ord(c) < 32 for c in value):
            raise ParameterError(f"{self.name}: {value!r} is not a song name (one line of text)")
        text = value.strip()
        if text in ("none", f"none{_SUFFIX}"):
            return "none"
        folder = song_folder().resolve()
        candidate = Path(text).expanduser()
        if candidate.suffix != _SUFFIX:
            candidate = candidate.with_name(candidate.name + _SUFFIX)
        path = (folder / candidate).resolve()  # (an absolute path stays itself)
        if not inside(path, [folder]) or not path.is_file():
            songs = _songs(folder)
            listed = ", ".join(songs[:20]) + (f" and {len(songs) - 20} more" if len(songs) > 20 else "")
            where = "is outside the song folder" if not inside(path, [folder]) else "is not a song"
            raise ParameterError(f"{self.name}: {text!r} {where} {folder} ($SCOREBRIDGE_SNC_DIR); "
                                 f"songs there: {listed or 'none'}")
        return path.relative_to(folder).with_suffix("").as_posix()


def _params() -> tuple[Param, ...]:
    return (
        _SongParam(
            "file",
            "text",
            "none",
            doc="song: a .snc file of $SCOREBRIDGE_SNC_DIR, by name (with or without .snc) or path",
        ),
        Param("context", "choice", "default", choices=tuple(BUILTIN), doc="listening context"),
        Param("source", "choice", "master", choices=SOURCES,
              doc="master: the stored master (remixed by the stem controls); stems: the stem mix alone "
              "(cross-faded over 50 ms)"),
        *(
            Param(f"gain_{i}", "float", 0.0, SILENCE_DB, 12.0, unit="dB", doc=f"gain of stem {i}")
            for i in range(1, STEM_SLOTS + 1)
        ),
        *(Param(f"mute_{i}", "bool", False, doc=f"mute stem {i}") for i in range(1, STEM_SLOTS + 1)),
        Param("valence", "float", 0.0, -1.0, 1.0, doc="valence -1..1 (vertical re-orchestration)"),
        Param("arousal", "float", 0.0, -1.0, 1.0, doc="arousal -1..1 (raises drums and bass)"),
        Param("offset_beats", "float", 0.0, 0.0, 100000.0, unit="beats", doc="DAW position of song time 0"),
        Param(
            "loop_start_s", "float", 0.0, 0.0, 14400.0, unit="s", doc="loop start (loop on when end > start)"
        ),
        Param("loop_end_s", "float", 0.0, 0.0, 14400.0, unit="s", doc="loop end (0 = no loop)"),
        Param("audio", "choice", "jack", choices=("jack", "portaudio"), doc="audio backend"),
    )


class SncEngine(Engine):
    name = "snc"
    description = (
        "Plays an SNC song's stems in sync with the transport: contexts, stem gains, valence-arousal."
    )
    params = LazyParams(_params)
    latency_beats = 0.0

    def __init__(self) -> None:
        super().__init__()
        self.player: Any = None
        self.tempo_bpm = 120.0
        self.transport_playing = False
        # The last known transport position: (beats, time_s when it was there).
        self._anchor: tuple[float, float] | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    def prepare(self, context: EngineContext) -> None:
        super().prepare(context)
        if context.tempo_bpm > 0:
            self.tempo_bpm = context.tempo_bpm
        self._open()  # the song and the audio server, on the slot's worker

    def _open(self) -> None:
        from engines.snc_player.player import Player
        from engines.snc_player.render import MixRequest

        self._close()
        if self.param("file") == "none":
            return
        path = self._song_path(self.param("file"))
        slot = self.context.slot if self.context else "snc"
        player = Player(
            path,
            MixRequest(context=self.param("context")),
            backend=self.param("audio"),
            client_name=f"scorebridge-{slot}",
        )
        player.open()
        self.player = player
        self._sync_tempo()
        self._apply_all()
        if self._anchor is not None:  # a song loaded mid-song starts where the transport is
            beats, at_s = self._anchor
            if self.transport_playing:
                self._follow(beats, at_s)
            else:
                self._locate(beats)

    @staticmethod
    def _song_path(name: str) -> Path:
        """The song's file, checked: inside the song folder after symlinks, regular, bounded."""
        folder = song_folder().resolve()
        path = regular_file(folder / f"{name}{_SUFFIX}", MAX_SNC_BYTES, "file")
        if not inside(path, [folder]):
            raise ParameterError(f"file: {name}{_SUFFIX} leads out of the song folder {folder}")
        return path

    def _close(self) -> None:
        if self.player is not None:
            player, self.player = self.player, None
            player.close()

    def release(self) -> None:
        """The player stops and lets the audio server go."""
        self._close()

    # -- parameters --------------------------------------------------------------------------------
    def on_param_change(self, name: str, value: Any) -> None:
        if name in ("file", "audio"):
            if self.prepared:
                self._open()
            return
        if self.player is None:
            return
        if name == "context":
            if self.player.pipeline.contexts[value].layout == self.player.pipeline.layout:
                self.player.set_context(value)  # on the next bar line
            else:  # another output layout: a new player, which joins the transport at the next beat
                self._open()
        elif name.startswith(("gain_", "mute_")):
            self._apply_stem(int(name.split("_")[1]))
        elif name in ("valence", "arousal"):
            self.player.set_va(self.param("valence"), self.param("arousal"))
        elif name == "source":
            self.player.set_source(value)
        elif name.startswith("loop_"):
            self._apply_loop()

    def _apply_stem(self, index: int) -> None:
        names = self.player.pipeline.names
        if index > len(names):
            return
        self.player.set_stem(
            names[index - 1], gain_db=self.param(f"gain_{index}"), mute=self.param(f"mute_{index}")
        )

    def _apply_loop(self) -> None:
        start, end = self.param("loop_start_s"), self.param("loop_end_s")
        duration = self.player.reader.manifest.duration_s
        if end > start and start < duration:
            self.player.set_loop(start, min(end, duration))
        else:
            self.player.set_loop(None, None)

    def _apply_all(self) -> None:
        for index in range(1, min(STEM_SLOTS, len(self.player.pipeline.names)) + 1):
            self._apply_stem(index)
        self.player.set_va(self.param("valence"), self.param("arousal"))
        self.player.set_source(self.param("source"))
        self._apply_loop()

    def _sync_tempo(self) -> None:
        if self.player is not None:
            self.player.pipeline.set_tempo(self.tempo_bpm)

    # -- transport ---------------------------------------------------------------------------------
    def _song_s(self, beats: float) -> float:
        return (beats - self.param("offset_beats")) * 60.0 / self.tempo_bpm

    def _locate(self, beats: float) -> None:
        """A stopped transport moved to ``beats``: decode from there, ready to start."""
        seconds = self._song_s(beats)
        if 0.0 <= seconds < self.player.reader.manifest.duration_s and \
                abs(self.player.located_s - seconds) > self._tolerance_s():
            self.player.seek(seconds)

    def _start(self, beats: float, at_s: float) -> None:
        """The transport plays from ``beats`` since ``at_s`` (a start, or a locate while it
        runs). The player joins it where it is when its first buffer plays (``Player.sync``):
        a start that reached the engine late plays in time, without its first moments. A
        player located near there (a stopped locate: decoded ahead) skips into what it
        decoded; elsewhere it seeks."""
        seconds = self._song_s(beats)
        expected_s = seconds + max(0.0, time.perf_counter() - at_s)
        if expected_s >= self.player.reader.manifest.duration_s:
            self.player.pause()
            return
        if seconds < 0.0:  # before song time 0: as before, the song plays from where it is
            self.player.play()
            return
        located_s, tolerance_s = self.player.located_s, self._tolerance_s()
        ready = seconds - tolerance_s <= located_s <= expected_s + tolerance_s
        if self.player.playing:
            if not ready:
                self.player.sync(seconds, at_s)
                self.player.seek(expected_s)
            return
        self.player.sync(seconds, at_s)
        if not ready:
            self.player.seek(expected_s)
        self.player.play()

    def _tolerance_s(self) -> float:
        """The distance between the player and the transport that is not corrected."""
        return _DRIFT_S + self.player.buffer_frames / self.player.rate

    def process(self, event: EngineInput) -> Sequence[EngineOutput]:
        if isinstance(event, Beat):
            if event.tempo_bpm > 0:
                self.tempo_bpm = event.tempo_bpm
                self._sync_tempo()
            # Beats come only while the transport runs: an engine swapped into a running
            # transport never saw its start.
            self.transport_playing = True
            self._anchor = (float(event.index), event.time_s)
        elif isinstance(event, TransportChange):
            self._anchor = (event.beats, event.time_s)
        if self.player is None:
            if isinstance(event, TransportChange):
                self.transport_playing = event.playing
            return []
        if isinstance(event, TransportChange):
            self.transport_playing = event.playing
            if event.playing:
                self._start(event.beats, event.time_s)
            else:
                self.player.pause()
                if event.reason == "locate":
                    self._locate(event.beats)
        elif isinstance(event, Beat) and self.transport_playing and self.player.stream.loop is None:
            self._follow(float(event.index), event.time_s)
        return []

    def _follow(self, beats: float, at_s: float) -> None:
        """The running transport was at ``beats`` at ``at_s`` (a beat; the player has moved on
        since, and a busy slot hears it late): join it, or re-seek when the player drifted."""
        seconds = self._song_s(beats)
        expected_s = seconds + max(0.0, time.perf_counter() - at_s)
        if self.player.seeking or not 0.0 <= expected_s < self.player.reader.manifest.duration_s:
            return
        if not self.player.playing:
            self.player.sync(seconds, at_s)
            self.player.seek(expected_s)
            self.player.play()
        elif abs(self.player.position_s - expected_s) > self._tolerance_s():
            self.player.sync(seconds, at_s)
            self.player.seek(expected_s)

    def status(self) -> dict[str, Any]:
        if self.player is None:
            return {"file": self.param("file"), "open": False}
        return {"file": self.param("file"), "open": True, **self.player.stats()}

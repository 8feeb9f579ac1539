"""Live playback of an SNC file through pyo (JACK or PortAudio), decoding progressively.

The audio thread (pyo's per-buffer callback) takes one buffer from the decoder's queue, runs
the shared ``Pipeline`` and writes the feeds; it never waits: an empty queue plays silence and
is counted as an underrun. Controls (stem gains, context, valence-arousal, seek, loop,
play/pause) may come from any thread and take effect at the next buffer. Pause, resume and
seek fade over one buffer, so none of them clicks.

A player that follows a transport is told where the transport is (``sync``: song time at a
``perf_counter`` time); its next fade-in then starts where the transport is at that buffer,
skipping what was decoded before it, so a start or seek that reached it late, or decoding
that took a while, leaves it in time instead of behind.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import EngineError, ParameterError
from engines.snc.reader import SncReader
from engines.snc_player.pipeline import Pipeline
from engines.snc_player.render import MixRequest, make_pipeline
from engines.snc_player.spatial import PyoFeed, build_graph, import_pyo
from engines.snc_player.stream import StemStream

__all__ = ["Player", "BACKENDS"]

BACKENDS = ("jack", "portaudio")
_ACTIVE: list[Player] = []  # pyo runs one server per process
_ACTIVE_LOCK = threading.Lock()
# A transport this far ahead of what is decoded is joined by decoding from there, not by
# reading through what lies between.
_RESTART_AHEAD_S = 1.0


class Player:
    def __init__(
        self,
        path: Path,
        request: MixRequest | None = None,
        backend: str = "jack",
        buffer_frames: int = 256,
        client_name: str = "scorebridge-snc",
        autoconnect: bool = True,
    ) -> None:
        if backend not in BACKENDS:
            raise ParameterError(f"audio backend {backend!r} is not one of {', '.join(BACKENDS)}")
        self.reader = SncReader(path)
        # Damaged data would play as noise: refuse it up front (a demux-only scan, thousands
        # of times real time).
        self.reader.check_intact()
        self.pipeline: Pipeline = make_pipeline(self.reader, request or MixRequest())
        self.pipeline.mixer.settle()
        self.backend = backend
        self.buffer_frames = buffer_frames
        self.client_name = client_name
        self.autoconnect = autoconnect
        self.rate = self.reader.manifest.sample_rate
        self.channels = 2 if self.pipeline.layout == "binaural" else self.pipeline.feeds
        self.stream = StemStream(self.reader, buffer_frames)
        self.playing = False
        self.callbacks = 0
        self.max_callback_s = 0.0
        self.callback_s_total = 0.0
        self.error: str | None = None
        self.last_seek_latency_s: float | None = None
        self.last_change_latency_s: float | None = None
        # Buffers that began after the last change was asked and before the one that carries it
        # (0: the next buffer did; the bound whatever the load, where the time is not).
        self.last_change_buffers: int | None = None
        self._gain = 0.0  # transport fade: 0 silent .. 1 playing
        # A seek is asked by replacing ``_seek_asked`` (a new tuple, from any thread) and taken
        # by the audio thread, which only marks it ``_seek_taken``: no write of one side can undo
        # the other's, so a seek asked while the audio thread takes the one before is never lost.
        self._seek_asked: tuple[float] | None = None
        self._seek_taken: tuple[float] | None = None
        self._seek_asked_s = 0.0
        self._change_asked_s: float | None = None
        self._change_asked_at = 0  # ``callbacks`` when it was asked
        self._seen_changes = self.pipeline.mixer.changes
        self._awaiting_seek_frame: int | None = None
        # (song_s, perf_counter_s): where the transport was when; the next fade-in joins it.
        self._sync: tuple[float, float] | None = None
        # The last fade-ins from silence (starts, seeks, after underruns): the song time each
        # played, when (perf_counter), where the transport was then and the time of the
        # transport report that said so (None: not told).
        self.starts: deque[dict[str, float | None]] = deque(maxlen=8)
        self._server: Any = None
        self._graph: list[Any] = []
        self.finished = threading.Event()

    # -- lifecycle --------------------------------------------------------------------------------
    def open(self, start_s: float = 0.0) -> None:
        """Boot pyo on the backend and start decoding at ``start_s`` (paused until ``play``)."""
        with _ACTIVE_LOCK:
            if _ACTIVE:
                raise EngineError("pyo runs one audio server per process and an SNC player is already open")
            _ACTIVE.append(self)
        try:
            pyo = import_pyo()
            if self.backend == "portaudio" and (
                pyo.pa_count_devices() == 0 or pyo.pa_get_default_output() < 0
            ):
                # pyo crashes the process when it starts PortAudio without an output device.
                raise EngineError(
                    "PortAudio has no audio output device here; use --backend jack with a running JACK server"
                )
            server = pyo.Server(
                sr=self.rate,
                nchnls=self.channels,
                buffersize=self.buffer_frames,
                duplex=0,
                audio=self.backend,
                jackname=self.client_name,
            )
            server.deactivateMidi()
            server.setVerbosity(1)
            if self.backend == "jack":
                server.setJackAuto(False, self.autoconnect)
            server.boot()
            if not server.getIsBooted():
                raise EngineError(
                    f"pyo could not open the {self.backend} audio backend"
                    + (" (is a JACK server running?)" if self.backend == "jack" else "")
                )
            self._server = server
            # JACK imposes its period: pyo then runs buffers of that size, and so do we.
            self.buffer_frames = int(server.getBufferSize())
            feed = PyoFeed(pyo, self.pipeline.feeds, self.buffer_frames)
            self._feed = feed
            self._graph = build_graph(
                pyo,
                feed,
                self.pipeline.layout,
                self.pipeline.stems,
                self.channels,
                self.pipeline.context.positions,
            )
            self.stream.start(start_s)
            server.setCallback(self._callback)
            server.start()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self.playing = False
        if self._server is not None:
            try:
                self._server.stop()
                time.sleep(0.05)
                self._server.shutdown()
            finally:
                self._server = None
        self.stream.stop()
        with _ACTIVE_LOCK:
            if self in _ACTIVE:
                _ACTIVE.remove(self)

    def __enter__(self) -> Player:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def ports(self) -> list[str]:
        """The JACK output ports this player owns."""
        return [f"{self.client_name}:output_{i + 1}" for i in range(self.channels)]

    # -- controls (any thread) -------------------------------------------------------------------
    def play(self) -> None:
        self.finished.clear()
        self.playing = True

    def pause(self) -> None:
        self.playing = False
        self._sync = None  # (the transport it described has stopped)

    def sync(self, song_s: float, at_s: float) -> None:
        """The transport plays song time ``song_s`` at ``perf_counter()`` time ``at_s`` (and
        runs at the song's speed): the next fade-in (a start, or a seek's) plays from where it
        is then. Not for a looping stream."""
        self._sync = (song_s, at_s)

    def seek(self, seconds: float) -> None:
        """Jump to ``seconds``; the old audio fades out over one buffer, the new fades in."""
        if not 0.0 <= seconds < self.reader.manifest.duration_s:
            raise ParameterError(f"seek to {seconds} s is outside 0..{self.reader.manifest.duration_s:.3f} s")
        self._seek_asked_s = time.perf_counter()
        self._seek_asked = (seconds,)

    def set_loop(self, start_s: float | None, end_s: float | None) -> None:
        """Loop [start_s, end_s) gaplessly (None: no loop); takes effect at the next seek."""
        if start_s is None or end_s is None:
            self.stream.loop = None
            return
        if not 0.0 <= start_s < end_s <= self.reader.manifest.duration_s:
            raise ParameterError(
                f"loop {start_s}..{end_s} s must lie within 0..{self.reader.manifest.duration_s:.3f} s"
            )
        self.stream.loop = (start_s, end_s)

    def _ask_change(self) -> None:
        self._change_asked_at = self.callbacks
        self._change_asked_s = time.perf_counter()

    def set_stem(self, name: str, **fields: float | bool | None) -> None:
        self._ask_change()
        self.pipeline.set_user(name, **fields)

    def set_source(self, source: str) -> None:
        """Cross-fade between the stored master and the stem mix (``master`` / ``stems``)."""
        self._ask_change()
        self.pipeline.set_source(source)

    def set_context(self, name: str) -> int:
        return self.pipeline.set_context(name, self.stream.position_frames)

    def set_va(self, valence: float, arousal: float) -> None:
        self._ask_change()
        self.pipeline.set_va(valence, arousal)

    @property
    def seeking(self) -> bool:
        """A seek was asked for and the new position is not playing yet."""
        return self._seek_asked is not self._seek_taken or self._awaiting_seek_frame is not None

    @property
    def position_s(self) -> float:
        """The song time of the audio played last (after a seek: its target until it plays)."""
        return self.stream.position_frames / self.rate

    @property
    def located_s(self) -> float:
        """Where the player goes on from: the target of a seek not taken yet, else ``position_s``."""
        asked = self._seek_asked
        return asked[0] if asked is not self._seek_taken and asked is not None else self.position_s

    def stats(self) -> dict[str, Any]:
        return {
            "position_s": round(self.position_s, 3),
            "playing": self.playing,
            "context": self.pipeline.context.name,
            "source": self.pipeline.mixer.source,
            "callbacks": self.callbacks,
            "underruns": self.stream.underruns,
            "max_callback_ms": round(self.max_callback_s * 1000, 3),
            "mean_callback_ms": round(self.callback_s_total / max(self.callbacks, 1) * 1000, 4),
            "error": self.error or self.stream.error,
            "starts": list(self.starts),
        }

    @property
    def last_start(self) -> dict[str, float | None] | None:
        return self.starts[-1] if self.starts else None

    # -- audio thread ----------------------------------------------------------------------------
    def _callback(self) -> None:
        started = time.perf_counter()
        try:
            self._run_buffer(started)
        except Exception as exc:  # noqa: BLE001 - pyo would only print it; keep it and go silent
            self.error = f"{type(exc).__name__}: {exc}"
            self.playing = False
            self._feed.write(None)
        spent = time.perf_counter() - started
        self.callbacks += 1
        self.callback_s_total += spent
        self.max_callback_s = max(self.max_callback_s, spent)

    def _run_buffer(self, now: float) -> None:
        n = self.buffer_frames
        changes = self.pipeline.mixer.changes
        if changes != self._seen_changes:
            self._seen_changes = changes
            if self._change_asked_s is not None:
                self.last_change_latency_s = now - self._change_asked_s
                # (a callback running while it was asked counts: it may have read before it)
                self.last_change_buffers = max(0, self.callbacks - self._change_asked_at - 1)
                self._change_asked_s = None
        asked = self._seek_asked
        target = 1.0 if self.playing and asked is self._seek_taken else 0.0
        if self._gain == 0.0 and target == 0.0:
            if asked is not self._seek_taken:
                self.stream.start(asked[0])
                self._awaiting_seek_frame = self.stream.position_frames
                self._seek_taken = asked  # (after the line above: ``seeking`` stays true throughout)
            self._feed.write(None)
            return
        joining = self._gain == 0.0 and target == 1.0
        synced = self._sync
        if joining and not self._join(synced, now):
            self._feed.write(None)
            return
        item = self.stream.read(n)
        if item is None:
            if self.stream.ended and not self.finished.is_set():
                self.finished.set()
                self.playing = False
            # Silence went out: what plays next fades in, and a seek waits for no more audio
            # of the old position (after the song's end none would ever come).
            self._gain = 0.0
            self._feed.write(None)
            return
        first, block = item
        if self._awaiting_seek_frame is not None and first == self._awaiting_seek_frame:
            self.last_seek_latency_s = now - self._seek_asked_s
            self._awaiting_seek_frame = None
        out = self.pipeline.process(block, first)
        if joining:
            if self._sync is synced:  # (a newer one, asked meanwhile, is for the next fade-in)
                self._sync = None
            self.starts.append({
                "song_s": first / self.rate,
                "at_s": now,
                "transport_s": None if synced is None else synced[0] + now - synced[1],
                "told_at_s": None if synced is None else synced[1],
            })
        if target != self._gain:
            ramp = self._gain + (target - self._gain) * np.arange(1, n + 1) / n
            out = out * ramp[:, None].astype(np.float32)
            self._gain = target
        self._feed.write(out)

    def _join(self, synced: tuple[float, float] | None, now: float) -> bool:
        """Before a fade-in: skip to where the transport is now (``sync``). False while the
        decoder has not got there yet (this buffer stays silent)."""
        if synced is None or self.stream.loop is not None:
            return True
        frame = int(round((synced[0] + now - synced[1]) * self.rate))
        if frame - self.stream.position_frames > _RESTART_AHEAD_S * self.rate:
            self.stream.start(frame / self.rate)
            if self._awaiting_seek_frame is not None:
                self._awaiting_seek_frame = self.stream.position_frames
            return False
        if not self.stream.skip_to(frame):
            return False
        if self._awaiting_seek_frame is not None:
            self._awaiting_seek_frame = self.stream.position_frames
        return True

"""What the bridge is playing, for the browser: one ``/scorebridge/live`` value (JSON) at most
every ``INTERVAL_S`` while a browser is connected, and at once after an engine's output.

It holds the transport position, the chord each slot sounds and the chords it has planned (its
timed notes not yet due), the last bars of input and of each slot's output as note spans,
activity per MIDI port, each slot's latency and state (a continuation listening or playing),
the affect with where it comes from and, when a ``va`` slot plays a curve, the curve and its
playhead; an ``snc`` slot's stems as its manifest names them.

Everything is read from the bridge as it runs (the note tracker, the router's held notes, the
slots' counters); the only hook is the host's output listener, which hears the timed notes an
engine plans before they are due. The description a browser draws its controls from is
``describe`` here: the bridge's description plus, per file parameter, the files it may name,
and per ``snc`` slot the stems of its song.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bridge import addresses as A
from bridge.session_osc import describe as bridge_describe
from bridge.web.server import LIVE
from core.events import Note

if TYPE_CHECKING:
    from bridge.affect_follow import AffectFollower
    from bridge.clock import Transport
    from bridge.control import Controls
    from bridge.host import EngineHost
    from bridge.output import NoteTracker
    from bridge.router import InputRouter
    from bridge.web.server import WebSurface

__all__ = ["CURVE", "LIVE", "LiveView", "chord_name", "describe", "plan_by_beat"]

log = logging.getLogger(__name__)

CURVE = "live/curve"  # the VA curve's points, when it changes
# Fast enough for lights and a scrolling lane, slow enough to cost nothing next to the engines.
INTERVAL_S = 0.05
# Between two values at least this long: a flood of engine output costs 100 readings a second.
MIN_GAP_S = 0.01
# How much of the past the piano roll and chord lane keep, in beats (two bars of 4/4).
HISTORY_BEATS = 8.0
# Notes remembered per lane: a flood of notes cannot grow the value without end.
MAX_NOTES = 256
# How far ahead planned notes are shown, in beats.
AHEAD_BEATS = 16.0
# Files listed per file parameter (the first ones by name), of at most MAX_SCANNED entries a folder.
MAX_FILES = 200
MAX_SCANNED = 2000
# A meter reads this many frames (43 ms at 48 kHz) and shows nothing below LEVEL_FLOOR_DB.
METER_FRAMES = 2048
LEVEL_FLOOR_DB = -90.0
# Samples of a VA curve sent to the page (it is drawn, not played).
CURVE_POINTS = 600

_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
# Chord qualities by interval set above the root, most common first.
_QUALITIES = (
    ("", (0, 4, 7)), ("m", (0, 3, 7)), ("7", (0, 4, 7, 10)), ("maj7", (0, 4, 7, 11)),
    ("m7", (0, 3, 7, 10)), ("dim", (0, 3, 6)), ("m7b5", (0, 3, 6, 10)), ("dim7", (0, 3, 6, 9)),
    ("aug", (0, 4, 8)), ("sus4", (0, 5, 7)), ("sus2", (0, 2, 7)), ("6", (0, 4, 7, 9)),
    ("m6", (0, 3, 7, 9)), ("7sus4", (0, 5, 7, 10)), ("mMaj7", (0, 3, 7, 11)), ("5", (0, 7)),
)


def chord_name(pitches: Sequence[int]) -> str:
    """A chord symbol for sounding pitches ("Am7", "C/E"); when no quality fits, up to three
    note names ("C D") or how many notes sound ("5 notes", a line and its accompaniment);
    "" for silence."""
    if not pitches:
        return ""
    bass = min(pitches) % 12
    classes = sorted({p % 12 for p in pitches})
    if len(classes) == 1:
        return _NAMES[bass]
    for root in sorted(classes, key=lambda pc: pc != bass):  # root position first (Esus2, not Bsus4/E)
        for quality, intervals in _QUALITIES:
            if sorted((pc - root) % 12 for pc in classes) == list(intervals):
                return _NAMES[root] + quality + ("" if root == bass else "/" + _NAMES[bass])
    return " ".join(_NAMES[pc] for pc in classes) if len(classes) <= 3 else f"{len(classes)} notes"


def _files(folders: Sequence[Path]) -> list[str]:
    """Regular files directly in ``folders`` (not hidden), as full paths, the first MAX_FILES by
    name among the first MAX_SCANNED entries of each folder (a describe must stay quick: it is
    built on the surface's loop whenever a browser connects)."""
    found: set[str] = set()
    for folder in folders:
        try:
            entries = list(itertools.islice(folder.iterdir(), MAX_SCANNED))
        except OSError:
            continue
        found.update(str(p) for p in entries if not p.name.startswith(".") and p.is_file())
    return sorted(found)[:MAX_FILES]


def _stems(engine: Any) -> list[dict[str, Any]]:
    """An ``snc`` engine's stems as its song's manifest names them (empty before a song is open)."""
    reader = getattr(getattr(engine, "player", None), "reader", None)
    manifest = getattr(reader, "manifest", None)
    return [{"name": s.name, "role": s.role, "colour": s.colour} for s in getattr(manifest, "stems", ())]


def describe(controls: Controls) -> dict[str, Any]:
    """The bridge's description (``bridge.session_osc.describe``) plus what the page needs to
    draw controls that fit: the files a file parameter may name, and an ``snc`` slot's stems."""
    description = bridge_describe(controls)
    folders = list(controls.folders)
    for name, info in description["slots"].items():
        engine = controls.host.slots[name].engine
        for param in info["params"]:
            if param["kind"] == "text" and param["unit"] == "file":
                param["files"] = _files(folders)
        info["stems"] = _stems(engine)
    return description


class _Lane:
    """Note spans [pitch, start, end or None] in beats, from sets of sounding pitches polled."""

    def __init__(self) -> None:
        self.notes: deque[list[Any]] = deque(maxlen=MAX_NOTES)
        self.open: dict[int, list[Any]] = {}

    def update(self, sounding: set[int], beats: float) -> None:
        for pitch in list(self.open):
            if pitch not in sounding:
                self.open.pop(pitch)[2] = round(beats, 3)
        for pitch in sounding - set(self.open):
            note = [pitch, round(beats, 3), None]
            self.open[pitch] = note
            self.notes.append(note)

    def recent(self, beats: float) -> list[list[Any]]:
        since = beats - HISTORY_BEATS
        return [n for n in self.notes if n[2] is None or n[2] >= since]

    def clear(self) -> None:
        self.notes.clear()
        self.open.clear()


class LiveView:
    """Publishes ``/scorebridge/live`` to the browsers of ``web`` that ask for it, read from the
    engine host, the input router, the transport, the note tracker, the controls and the affect
    follower (the session hands them in)."""

    def __init__(self, web: WebSurface, *, host: EngineHost, router: InputRouter, transport: Transport,
                 tracker: NoteTracker, controls: Controls, affect: AffectFollower,
                 interval_s: float = INTERVAL_S) -> None:
        self.web, self.interval_s = web, interval_s
        self.host, self.router, self.transport, self.tracker = host, router, transport, tracker
        self.controls, self.affect = controls, affect
        self._lanes: dict[str, _Lane] = {}
        # slot -> (start beats, end beats, pitch) of timed notes the engine has handed out
        self._planned: dict[str, deque[tuple[float, float, int]]] = {}
        self._chords: dict[str, deque[list[Any]]] = {}  # slot -> [beats, symbol] at each change
        self._affect_origin = "default"
        self._interruptions: dict[str, tuple[int, float | None]] = {}
        self._failed = False  # a reading failed once (warned once)
        self._announced: dict[str, tuple[str, float]] = {}  # slot -> (state, player's last note then)
        self._curve: Any = None
        self._stems: dict[str, list[dict[str, Any]]] | None = None
        self._curve_clients = -1
        self._last_beats = 0.0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="web-live", daemon=True)

    # -- hooks ------------------------------------------------------------------------------
    def start(self) -> None:
        self.host.output_listeners.append(self.outputs)
        self.controls.bus.add_sink(self._changed)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=2)

    def outputs(self, slot: str, outputs: Sequence[Any]) -> None:
        """A slot's worker handed out ``outputs`` (the host's output listener): timed notes are
        its plan; any output is worth showing at once."""
        planned = [(o.at_beats, o.at_beats + o.duration_beats, o.pitch)
                   for o in outputs if isinstance(o, Note) and o.at_beats is not None]
        if planned:
            self._planned.setdefault(slot, deque(maxlen=MAX_NOTES)).extend(planned)
        self._wake.set()

    def _changed(self, address: str, args: tuple[Any, ...], origin: Any) -> None:
        """A FeedbackBus sink: remembers where the affect was last set from."""
        if A.path_of(address) in (A.VALENCE, A.AROUSAL, A.OVERRIDE):
            self._affect_origin = str(origin[0]) if origin else "bridge"

    # -- the loop ---------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            if self._stop.is_set() or not self.web.live_clients():
                continue
            try:
                text = json.dumps(self.snapshot(), separators=(",", ":"))
            except (RuntimeError, ValueError, KeyError, AttributeError) as exc:
                # A slot swapped or a port closed under the read: the next tick reads again.
                log.debug("live view skipped a tick: %s", exc)
                continue
            except Exception as exc:  # noqa: BLE001 - a display: it must not die with an engine's odd state
                if not self._failed:
                    log.warning("live view: a reading failed (%s: %s); it goes on", type(exc).__name__, exc,
                                exc_info=exc)
                self._failed = True
                continue
            self.web.publish_live(A.address(LIVE), (text,))
            self._stop.wait(MIN_GAP_S)

    def snapshot(self) -> dict[str, Any]:
        transport, host, router = self.transport, self.host, self.router
        now = time.perf_counter()
        beats = transport.beats_at(now)
        if beats < self._last_beats - 1e-6:  # a locate or restart: the past is another song's
            for lane in self._lanes.values():
                lane.clear()
            for queue in (*self._planned.values(), *self._chords.values()):
                queue.clear()
        self._last_beats = beats
        held = {pitch for notes in router.held.copy().values() for _, pitch in notes.copy()}
        player = self._lanes.setdefault("", _Lane())
        player.update(held, beats)
        sounding: dict[str, set[int]] = {}
        out_ports: dict[str, int] = {}
        for port, _, pitch in self.tracker.sounding():
            out_ports[port] = out_ports.get(port, 0) + 1
        slots: dict[str, Any] = {}
        stems = {name: _stems(slot.engine) for name, slot in list(host.slots.items())}
        if stems != self._stems:  # a song opened or closed: its mixer strips are redrawn
            if self._stems is not None or any(stems.values()):
                self.web.describe_changed()
            self._stems = stems
        for name, slot in list(host.slots.items()):
            pitches = {pitch for _, _, pitch in self.tracker.sounding(name)}
            sounding[name] = pitches
            lane = self._lanes.setdefault(name, _Lane())
            lane.update(pitches, beats)
            chord = chord_name(sorted(pitches))
            changes = self._chords.setdefault(name, deque(maxlen=64))
            if not changes or changes[-1][1] != chord:
                changes.append([round(beats, 3), chord])
            kept = slot.latencies_s  # (only appended to: the newest 50 by index, not a copy of all)
            latencies = [kept[-i] for i in range(min(50, len(kept)), 0, -1)]
            slots[name] = {
                "engine": slot.engine.name,
                "enabled": slot.enabled,
                "error": slot.error,
                "sounding": sorted(pitches),
                "chord": chord,
                "chords": [c for c in changes if c[0] >= beats - HISTORY_BEATS or c is changes[-1]],
                "planned": _clip_plan(slot.engine, beats) or self._plan(name, beats),
                "notes": lane.recent(beats),
                "outputs": slot.outputs,
                "latency_ms": round(latencies[-1] * 1000, 2) if latencies else None,
                "latency_p50_ms": round(sorted(latencies)[len(latencies) // 2] * 1000, 2) if latencies else None,
                "max_process_ms": round(slot.max_process_s * 1000, 2),
                "state": self._state(name, slot.engine, beats),
                "levels": _stem_levels(slot.engine),
            }
        return {
            "time": round(time.time(), 3),
            "beats": round(beats, 3),
            "playing": transport.playing,
            "tempo": round(transport.tempo_bpm, 2),
            "per_bar": 4,
            "ports": {"in": {port: counts.get("accepted", 0) for port, counts in list(router.per_port.items())},
                      "out": out_ports},
            "input": {"held": sorted(held), "notes": player.recent(beats)},
            "slots": slots,
            "affect": self._affect(beats),
        }

    def _state(self, slot: str, engine: Any, beats: float) -> str | None:
        """A continuation's state (``_state``), holding "will start at bar N" while the engine
        prepares the continuation it announced (between its trigger and the stream it builds, it
        reads as listening) until that bar, unless the player plays again."""
        state = _state(engine, beats, self._interrupted(slot, engine, beats))
        if state is None:
            return None
        last = engine.history.last_activity_beats
        if state.startswith("will start at bar"):
            self._announced[slot] = (state, last)
        elif state == "listening" and slot in self._announced:
            announced, at = self._announced[slot]
            bar = int(announced.rsplit(" ", 1)[1])
            if at == last and beats < (bar - 1) * int(engine.values().get("beats_per_bar", 4)) + 1:
                return announced
            del self._announced[slot]
        else:
            self._announced.pop(slot, None)
        return state

    def _interrupted(self, slot: str, engine: Any, beats: float) -> float | None:
        """When the player last interrupted a continuation in ``slot`` (its counter grew)."""
        count = getattr(engine, "interrupted", None)
        if count is None:
            return None
        seen, at = self._interruptions.get(slot, (count, None))
        if count != seen:
            at = beats
        self._interruptions[slot] = (count, at)
        return at

    def _plan(self, slot: str, beats: float) -> list[list[Any]]:
        """The chords a slot has planned: its timed notes not yet started, a chord per beat (an
        arpeggio's notes of one beat are one chord)."""
        queue = self._planned.get(slot)
        if not queue:
            return []
        while queue and queue[0][1] < beats:
            queue.popleft()
        return plan_by_beat([n for n in list(queue) if beats < n[0] <= beats + AHEAD_BEATS])

    def _affect(self, beats: float) -> dict[str, Any]:
        controls = self.controls
        source = self.affect.source
        info: dict[str, Any] = {"valence": float(controls.affect["valence"]),
                                "arousal": float(controls.affect["arousal"]),
                                "override": bool(controls.affect["override"]),
                                "source": f"curve ({source})" if source else self._affect_origin}
        slot = self.host.slots.get(source) if source else None
        values = slot.engine.values() if slot is not None else {}
        if values.get("manual"):
            info["source"] = f"manual ({source})"
        curve = getattr(slot.engine, "curve", None) if slot is not None else None
        if curve is not None and "offset_s" in values:
            # The curve's time at the transport's position (a constant-tempo song, as the va engine's).
            info["song_s"] = round(beats * 60.0 / self.transport.tempo_bpm + float(values["offset_s"]), 3)
        self._send_curve(curve)
        return info

    def _send_curve(self, curve: Any) -> None:
        """The curve's points, to every browser when it changes and to one that just connected
        (sent apart from the live value: it is large and rarely changes)."""
        connected = self.web.counters["live_on"]
        if curve is self._curve and connected == self._curve_clients:
            return
        self._curve, self._curve_clients = curve, connected
        points: list[list[float]] = []
        if curve is not None:
            step = max(1, len(curve.time_s) // CURVE_POINTS)
            points = [[round(float(t), 3), round(float(v), 3), round(float(a), 3)]
                      for t, v, a in zip(curve.time_s[::step], curve.valence[::step], curve.arousal[::step])]
        self.web.publish_live(A.address(CURVE), (json.dumps(points, separators=(",", ":")),))


def _clip_plan(engine: Any, beats: float) -> list[list[Any]]:
    """A looping clip's chords ahead (the harmonizer's clip mode): each chord span of the loop
    that starts within AHEAD_BEATS, named from the notes it plays. Read from the engine's
    looper; an engine without one plans nothing here."""
    looper = getattr(getattr(engine, "clip_mode", None), "looper", None)
    clip, origin = getattr(looper, "clip", None), getattr(looper, "play_origin", None)
    if clip is None or origin is None or clip.length_beats <= 0:
        return []
    length = clip.length_beats
    plan: list[list[Any]] = []
    first = max(0, math.floor((beats - origin) / length))
    for index in range(first, first + 2 + math.ceil(AHEAD_BEATS / length)):
        for span in clip.spans:
            start = origin + index * length + span.start_beats
            if beats < start <= beats + AHEAD_BEATS:
                end = span.start_beats + span.duration_beats
                pitches = sorted(e.pitch for e in clip.events if span.start_beats - 1e-6 <= e.at_beats < end - 1e-6)
                plan.append([round(start, 3), round(start + span.duration_beats, 3), chord_name(pitches) or span.name])
    return plan


def plan_by_beat(notes: Sequence[tuple[float, float, int]]) -> list[list[Any]]:
    """Timed notes (start, end, pitch) in beats as [start, end, chord] per beat they start in."""
    beats: dict[int, list[tuple[float, float, int]]] = {}
    for note in notes:
        beats.setdefault(math.floor(note[0] + 1e-6), []).append(note)
    return [[round(min(n[0] for n in group), 3), round(max(n[1] for n in group), 3),
             chord_name(sorted(n[2] for n in group))] for _, group in sorted(beats.items())]


def _level_db(samples: Any) -> float:
    """RMS level of a stretch of audio in dBFS, at least LEVEL_FLOOR_DB."""
    rms = math.sqrt(float(np.mean(np.square(samples, dtype=np.float64)))) if samples.size else 0.0
    return round(max(LEVEL_FLOOR_DB, 20.0 * math.log10(rms + 1e-12)), 1)


def _stem_levels(engine: Any) -> dict[str, Any] | None:
    """An ``snc`` slot's levels while it plays: each stem after its gain and mute, and the mix,
    from the decoded audio the player takes next (the head of its stream's queue, about a
    buffer ahead of what sounds). None while nothing plays."""
    player = getattr(engine, "player", None)
    if player is None or not getattr(player, "playing", False):
        return None
    pending = list(getattr(player.stream, "_pending", ()))[:1]
    if not pending:
        return None
    block, values = pending[0][1], engine.values()
    levels: list[float | None] = []
    for index, stem in enumerate(player.reader.manifest.stems, start=1):
        audio = block.get(stem.name)
        if audio is None:
            levels.append(None)
        elif values.get(f"mute_{index}"):
            levels.append(LEVEL_FLOOR_DB)
        else:
            level = _level_db(np.asarray(audio[:METER_FRAMES])) + float(values.get(f"gain_{index}", 0.0))
            levels.append(round(max(LEVEL_FLOOR_DB, level), 1))
    return {"stems": levels, "mix": _level_db(np.asarray(block["master"][:METER_FRAMES]))}


def _bar_after(beats: float, per_bar: int) -> int:
    """The number (1-based) of the first bar line at least a beat after ``beats``: where a
    continuation starts (its engine leads by a beat)."""
    return int(math.ceil((beats + 1.0) / per_bar - 1e-9)) + 1


def _state(engine: Any, beats: float, interrupted_at: float | None) -> str | None:
    """A continuation's state for the chord lane: listening, will start at bar N, playing,
    interrupted (read from the engine's public state; another engine has none)."""
    if engine.name != "continuation":
        return None
    values, history = engine.values(), engine.history
    per_bar = int(values.get("beats_per_bar", 4))
    if engine.continuing:
        if beats < engine.start_beats:
            return f"will start at bar {int(engine.start_beats // per_bar) + 1}"
        return "playing"
    if interrupted_at is not None and beats - interrupted_at < per_bar:
        return "interrupted"
    if history.notes and not history.open:
        if engine.pending_trigger:
            return f"will start at bar {_bar_after(beats, per_bar)}"
        silence = float(values.get("silence_beats", 0.0))
        # Said once the player has paused a while (a beat, or half the silence that triggers),
        # not in every gap between two notes of a phrase.
        paused = beats - history.last_activity_beats >= min(1.0, silence / 2)
        if history.fresh and silence > 0 and paused:
            # It triggers on the first beat after the silence (however long it then takes to start).
            trigger = math.ceil(history.last_activity_beats + silence - 1e-9)
            return f"will start at bar {_bar_after(trigger, per_bar)}"
    return "listening"

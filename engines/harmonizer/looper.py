"""The harmonizer engine's clip mode: capture a loop of melody on the song position, harmonize
it whole, play it back in sync pass after pass, and save each harmonized pass as a .mid.

``ClipLooper`` is the bookkeeping (captured notes, the loop playing, what is scheduled);
``ClipMode`` runs it from the engine's events and parameters.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.events import EngineOutput, Note
from core.tuning import preset_pitch_classes

from .clip import ClipOptions, HarmonizedClip, clip_grid, harmonize_notes, write_midi
from .harmonize import parse_key
from .runtime import HarmonizerModel
from .voicing import VoicingConfig

__all__ = ["CARRY_MIN_BEATS", "METRES", "ClipLooper", "ClipMode", "parse_metre"]

log = logging.getLogger(__name__)
CARRY_MIN_BEATS = 0.125  # a note held over the loop start shorter than this belongs to the last pass
ANTICIPATION_BEATS = 0.2  # as the live mode: a note this close before a beat belongs to it
METRES = ("2/4", "3/4", "4/4", "5/4", "6/8", "9/8", "12/8", "2/2", "3/2")


def parse_metre(text: str) -> tuple[int, int]:
    """'6/8' -> (6, 8)."""
    numerator, denominator = text.split("/")
    return int(numerator), int(denominator)


def _last_beat(end: float) -> int:
    """The transport Beat that starts a loop's last beat: ``end - 1``, or the Beat inside the
    last quarter of a loop that ends between Beats (odd bars of 9/8)."""
    return math.ceil(end - 1 - 1e-9)


class ClipLooper:
    """Captures a loop of melody (song positions in beats) and plays its harmonization back,
    pass after pass, at song positions ``origin + n * length + offset``."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.capture_origin: float | None = None
        self.capture_length: float | None = None
        self.notes: list[Note] = []
        self.held: dict[int, tuple[float, int]] = {}
        self.clip: HarmonizedClip | None = None
        self.play_origin = 0.0
        self.scheduled_until = 0.0

    def start_capture(self, origin_beats: float, length_beats: float | None) -> None:
        """Capture from ``origin_beats`` for ``length_beats`` (None: until transport stop)."""
        self.capture_origin, self.capture_length = origin_beats, length_beats
        self.notes = []

    @property
    def capture_end(self) -> float | None:
        if self.capture_origin is None or self.capture_length is None:
            return None
        return self.capture_origin + self.capture_length

    def note_on(self, pitch: int, velocity: int, beats: float) -> None:
        self.held[pitch] = (beats, velocity)

    def note_off(self, pitch: int, beats: float) -> None:
        started = self.held.pop(pitch, None)
        if started is not None:
            self._keep(pitch, started[0], beats, started[1])

    def _keep(self, pitch: int, start: float, end: float, velocity: int) -> None:
        if self.capture_origin is None:
            return
        clamped = max(start, self.capture_origin)
        # a note held over the loop start and released just after it belongs to the last pass
        if end - clamped > (CARRY_MIN_BEATS if start < self.capture_origin else 1e-6):
            start = clamped
            self.notes.append(Note(pitch, max(1, velocity), end - start, at_beats=start - self.capture_origin))

    def melody_until(self, end_beats: float) -> list[Note]:
        """The captured melody (relative to the origin), held notes cut at ``end_beats``."""
        held = []
        if self.capture_origin is not None:
            for pitch, (start, velocity) in self.held.items():
                carried = start < self.capture_origin
                start = max(start, self.capture_origin)
                if end_beats - start > (CARRY_MIN_BEATS if carried else 1e-6):
                    held.append(Note(pitch, max(1, velocity), end_beats - start, at_beats=start - self.capture_origin))
        limit = end_beats - (self.capture_origin or 0.0)
        kept = [n for n in self.notes if n.at_beats < limit - 1e-6]
        kept = [Note(n.pitch, n.velocity, min(n.duration_beats, limit - n.at_beats), at_beats=n.at_beats)
                for n in kept]
        return sorted(kept + held, key=lambda n: (n.at_beats, n.pitch))

    def play(self, clip: HarmonizedClip, origin_beats: float) -> None:
        """Play ``clip`` looped from ``origin_beats`` on; what was scheduled stays scheduled."""
        self.clip, self.play_origin = clip, origin_beats
        self.scheduled_until = max(self.scheduled_until, origin_beats)

    def due(self, until_beats: float) -> list[Note]:
        """Accompaniment events (absolute song positions) in [scheduled_until, until_beats)."""
        clip, start = self.clip, self.scheduled_until
        if clip is None or until_beats <= start or clip.length_beats <= 0:
            return []
        length = clip.length_beats
        out: list[Note] = []
        first_pass = int(np.floor((start - self.play_origin) / length))
        for index in range(first_pass, int(np.floor((until_beats - self.play_origin) / length)) + 1):
            base = self.play_origin + index * length
            for event in clip.events:
                at = base + event.at_beats
                if start - 1e-9 <= at < until_beats - 1e-9:
                    out.append(Note(event.pitch, event.velocity, event.duration_beats, at_beats=at))
        self.scheduled_until = until_beats
        return out

    def onsets_since(self, beats: float) -> list[float]:
        """Song positions of the captured onsets at or after ``beats`` (held notes included)."""
        origin = self.capture_origin or 0.0
        starts = [origin + n.at_beats for n in self.notes] + [start for start, _ in self.held.values()]
        return [start for start in starts if start >= beats]


class ClipMode:
    """The harmonizer's clip mode. What it reads of the engine is handed in: ``param(name)`` (the
    engine's parameters), ``model()``, ``rng()`` (reseeded with the seed), ``voicing()`` (the
    voicing configuration), ``tempo_bpm()`` and ``slot()`` (the name saved loops carry)."""

    def __init__(self, *, param: Callable[[str], Any], model: Callable[[], HarmonizerModel],
                 rng: Callable[[], np.random.Generator], voicing: Callable[[], VoicingConfig],
                 tempo_bpm: Callable[[], float], slot: Callable[[], str]) -> None:
        self.param, self.model, self.rng, self.voicing = param, model, rng, voicing
        self.tempo_bpm, self.slot = tempo_bpm, slot
        self.looper = ClipLooper()
        self.saved: list[Path] = []
        self.save_errors = 0
        self.reset()

    def reset(self) -> None:
        """Forget everything, the loop playing too."""
        self.looper.reset()
        self.pending: HarmonizedClip | None = None  # harmonized, not saved yet
        self.due: float | None = None  # end of a pass waiting for its last beat's onset

    def _keep_loop(self) -> None:
        clip, origin = self.looper.clip, self.looper.play_origin
        self.reset()
        self.looper.clip, self.looper.play_origin = clip, origin

    def start(self, position_beats: float) -> list[EngineOutput]:
        """Transport start or locate: capture anew, resume the loop from here."""
        self._keep_loop()
        self.start_capture(position_beats)
        if self.looper.clip is None:
            return []
        self.looper.scheduled_until = position_beats
        self.looper.play(self.looper.clip, self.looper.play_origin)
        return self.looper.due(math.ceil(position_beats - 1e-9))  # up to the next Beat

    def _metre(self) -> tuple[int, int]:
        return parse_metre(self.param("meter"))

    def bar_quarters(self) -> float:
        """The bar of the `meter` in quarters (the transport's beats): 3 in 6/8, 4.5 in 9/8."""
        numerator, denominator = self._metre()
        return numerator * 4 / denominator

    def stop(self, position_beats: float) -> None:
        """Transport stop: a Start-to-Stop capture is harmonized and saved; the loop is kept."""
        if self.param("clip_bars") == 0:
            self._finish_open_capture(position_beats)
        self._keep_loop()

    def start_capture(self, position_beats: float) -> None:
        """Capture from the next bar start for `clip_bars` bars (0: from here until Stop)."""
        bars, per_bar = self.param("clip_bars"), self.bar_quarters()
        if bars == 0:
            self.looper.start_capture(position_beats, None)
        else:
            self.looper.start_capture(per_bar * math.ceil(position_beats / per_bar - 1e-9), float(bars * per_bar))

    def note_on(self, pitch: int, velocity: int, beats: float) -> Sequence[EngineOutput]:
        self.looper.note_on(pitch, velocity, beats)
        if self.due is not None and _last_beat(self.due) <= beats < self.due - ANTICIPATION_BEATS:
            self._harmonize_pass(self.due)  # the last beat's onset: the loop is complete
            return self.looper.due(math.ceil(beats))  # (a loop of odd 9/8 bars starts before the next Beat)
        return ()

    def note_off(self, pitch: int, beats: float) -> None:
        self.looper.note_off(pitch, beats)

    def beat(self, index: int) -> list[EngineOutput]:
        """The loop is harmonized at the first onset of its last beat (so that note counts),
        on that beat when a note started just before it, or at the loop end at the latest.
        Each beat's notes are scheduled on its own Beat: the beat's first chord goes out with
        the clock tick, later ones lean on the tempo estimate for less than a beat."""
        looper = self.looper
        if looper.capture_origin is None:  # switched to clip mode while playing
            self.start_capture(float(index))
        end = looper.capture_end
        if end is not None and index == _last_beat(end) and looper.melody_until(end):
            self.due = end  # (an empty pass so far keeps the loop already playing)
            if any(index - ANTICIPATION_BEATS <= start for start in looper.onsets_since(end - 2)):
                self._harmonize_pass(end)
        if end is not None and index >= end:
            if self.due is not None:
                self._harmonize_pass(end)  # no onset in the last beat: its first chord is late by this
            self._save(looper.melody_until(end))
            self.start_capture(end)
        return self.looper.due(index + 1)

    def _options(self, model: HarmonizerModel) -> ClipOptions:
        param = self.param
        strategy = param("strategy")
        if strategy == "tagged" and not model.has_tagger:  # the default model's default, another model chosen
            strategy = model.strategy
        return ClipOptions(style=param("style"), strategy=strategy, calls=param("steps"),
                           temperature=param("temperature"), key=parse_key(param("key")),
                           rhythm=param("rhythm"), ending=param("ending"),
                           voicing_style=param("voicing"), voicing=self.voicing(),
                           velocity=param("velocity"), arpeggio_rate=param("arpeggio_rate"),
                           pitch_classes=preset_pitch_classes(param("tuning")))

    def _harmonize_pass(self, end: float) -> None:
        """Harmonize the pass ending at ``end``; its chords go out from the Beat at ``end`` on."""
        self.due = None
        self._harmonize_capture(end, play_from=end)

    def _harmonize_capture(self, end: float, play_from: float | None) -> None:
        melody = self.looper.melody_until(end)
        if not melody:
            return  # an empty pass keeps the loop already playing
        model = self.model()
        length = end - (self.looper.capture_origin or 0.0)
        metre = self._metre()
        steps = clip_grid(model, metre).steps(length)
        va = np.tile(np.float32([self.param("valence"), self.param("arousal")]), (steps, 1))
        clip = harmonize_notes(model, melody, length, metre, self._options(model), va, self.rng())
        if clip.length_beats > length + 1e-9:  # a quarter-note grid rounds an odd 9/8 bar up: cut to the loop
            clip.length_beats = length
            clip.events = [Note(e.pitch, e.velocity, min(e.duration_beats, length - e.at_beats), at_beats=e.at_beats)
                           for e in clip.events if e.at_beats < length - 1e-9]
        self.pending = clip
        self.looper.play(clip, self.looper.capture_origin if play_from is None else play_from)

    def _finish_open_capture(self, stop_beats: float) -> None:
        origin = self.looper.capture_origin
        if origin is None:
            return
        per_bar = self.bar_quarters()
        end = origin + max(1, math.ceil((stop_beats - origin) / per_bar - 1e-9)) * per_bar
        self.pending = None
        self._harmonize_capture(min(stop_beats, end), play_from=None)
        if self.pending is not None:
            self.looper.clip.length_beats = end - origin  # the loop is whole bars
            self._save(self.looper.melody_until(stop_beats))

    def _save(self, melody: list[Note]) -> None:
        """Write the pending harmonized pass; a folder that cannot be written is logged and
        counted (`save_errors`), and the loop keeps playing."""
        clip, self.pending = self.pending, None
        if clip is None or not melody:
            return
        folder = Path(self.param("clip_folder")).expanduser()
        path = folder / f"{self.slot()}-{time.strftime('%Y%m%d-%H%M%S')}-{len(self.saved) + 1:03d}.mid"
        try:
            write_midi(path, melody, clip.events, clip.spans, self.tempo_bpm(), self._metre())
        except OSError as exc:
            self.save_errors += 1
            log.error("harmonizer: cannot save the loop to %s: %s", path, exc)
            return
        self.saved.append(path)

"""The ``harmonizer`` engine: the learned chord model live in the bridge (numpy + onnxruntime).

Live mode: one chord per beat from the melody played so far (nothing after the current beat
is given to the model); a beat is the metre's metric beat for a lead-sheet model (a dotted
quarter in 6/8), a quarter note for a quarter-note model. A beat's chord is decided at its
first melody onset (``decide = onset``, the default: the chord sounds with the note that
starts the beat, a model call later) or on the transport's beat with the notes sounding then
(``decide = beat``). A beat without a new onset keeps the chord; under a ``bar`` or
``half-bar`` rhythm the whole span keeps the chord decided at its first onset. Clip mode: a
loop is captured (a set number of bars, or from transport start to stop), harmonized whole,
played back in sync on the following passes and saved as a .mid. See docs/harmonizer_live.md.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import mido
import numpy as np

from core.engine import Engine, EngineContext, LazyParams, Param
from core.errors import EngineError, ParameterError
from core.events import Beat, EngineInput, EngineOutput, Note, NoteOff, NoteOn, Send, TransportChange
from core.keys import key_correlations
from core.tuning import preset_names, preset_pitch_classes

from .clip import clip_grid
from .harmonize import ENDINGS, HARMONIZE_STRATEGIES, RHYTHMS, beat_grid, chord_root, next_chords, parse_key
from .looper import METRES, ClipMode, parse_metre
from .runtime import HarmonizerModel, shipped_names
from .vocab import MASK, NC, ROOT_NAMES, token_pitch_classes
from .voicing import STYLES, Voicing, VoicingConfig, render, voice_chord

__all__ = ["LearnedHarmonizer"]

log = logging.getLogger(__name__)
ANTICIPATION_BEATS = 0.2  # quarters: a note this close before a beat belongs to that beat
KEY_SWITCH_MARGIN = 0.15  # correlation a newly detected key must gain over the current one
_KEYS = ("auto",) + ROOT_NAMES + tuple(f"{n}m" for n in ROOT_NAMES)


def _shipped() -> tuple[tuple[str, ...], dict]:
    """Shipped harmonizer model names, and the default model's card ({} without one)."""
    from onnx_models import models_dir

    names = tuple(shipped_names(models_dir()))
    default = models_dir() / "harmonizer.card.json"
    return names or ("harmonizer",), json.loads(default.read_text()) if default.exists() else {}


def _params() -> tuple[Param, ...]:
    """The parameters, with the shipped models, the default model's styles and its calibrated
    decoding defaults (docs/harmonizer.md) read from the model cards (on first use, not at
    import)."""
    from .runtime import DEFAULT_TEMPERATURE

    models, card = _shipped()
    styles = tuple(card.get("styles") or ("chorale",))
    decoding = card.get("decoding", {})
    strategy = decoding.get("strategy") if decoding.get("strategy") in HARMONIZE_STRATEGIES else "entropic"
    rhythm = decoding.get("rhythm") if decoding.get("rhythm") in RHYTHMS else "auto"
    calls = decoding.get("calls") if isinstance(decoding.get("calls"), int) and 1 <= decoding["calls"] <= 128 else 10
    return (
        Param("mode", "choice", "live", choices=("live", "clip"), doc="Chord per beat, or capture a loop"),
        Param("decide", "choice", "onset", choices=("onset", "beat"),
              doc="Decide a beat's chord at its first melody onset, or on the transport's beat"),
        Param("model", "choice", "harmonizer", choices=models, doc="Shipped model (card name)"),
        Param("style", "choice", card.get("default_style") if card.get("default_style") in styles else styles[0],
              choices=styles, doc="Style anchor (default: the model card's)"),
        Param("key", "choice", "auto", choices=_KEYS, doc="Key, or auto to detect it from the melody"),
        Param("meter", "choice", "4/4", choices=METRES, doc="Time signature (the transport's beats stay quarters)"),
        Param("rhythm", "choice", rhythm, choices=RHYTHMS,
              doc="Harmonic rhythm: a chord per bar, per half bar, or per beat (auto: as the model holds them)"),
        Param("voicing", "choice", "pad", choices=STYLES, doc="Accompaniment style"),
        Param("voices", "int", 4, 1, 6, doc="Upper voices"),
        Param("low_note", "int", 48, 24, 96, unit="MIDI note", doc="Lowest upper voice"),
        Param("high_note", "int", 79, 36, 120, unit="MIDI note", doc="Highest upper voice"),
        Param("bass", "bool", True, doc="Add the chord root in the bass"),
        Param("velocity", "int", 72, 1, 127, doc="Chord velocity"),
        Param("arpeggio_rate", "int", 2, 1, 8, unit="notes/beat", doc="Arpeggio speed"),
        Param("strategy", "choice", strategy, choices=HARMONIZE_STRATEGIES,
              doc="Decoding strategy (clip mode; default: the model card's)"),
        Param("ending", "choice", "tonic", choices=ENDINGS,
              doc="Clip mode: a melody ending on the tonic ends on the tonic chord, or free"),
        Param("steps", "int", calls, 1, 128, unit="calls",
              doc="Model calls per window for a clip (staged strategies; default: the model card's)"),
        Param("temperature", "float", float(decoding.get("temperature", DEFAULT_TEMPERATURE)), 0.0, 2.0,
              doc="Sampling temperature, 0 = greedy (default: the model card's calibrated one)"),
        Param("seed", "int", -1, -1, 2**31 - 1, doc="Random seed (-1: a fresh one)"),
        Param("valence", "float", 0.0, -1.0, 1.0, doc="Affect: valence (negative = darker)"),
        Param("arousal", "float", 0.0, -1.0, 1.0, doc="Affect: arousal (positive = more active)"),
        Param("release_beats", "float", 1.0, 0.25, 8.0, unit="beats", doc="Silence after which chords stop"),
        Param("clip_bars", "int", 4, 0, 64, unit="bars", doc="Loop length (0: from transport start to stop)"),
        Param("clip_folder", "text", "~/scorebridge-clips", unit="folder", doc="Where captured loops are saved"),
        Param("tuning", "choice", "off", choices=("off", *preset_names()),
              doc="Only chords made of this scale's degrees (a preset of docs/tuning.md), or off"),
    )


@dataclass(frozen=True)
class LiveMetre:
    """How the live engine counts: beats of ``beat`` quarters (the metric beat for a lead-sheet
    model, a quarter for a quarter-note model), ``per_bar`` of them a bar from song position 0,
    ``steps`` model grid steps each, and the time signature the model is told."""

    beat: float
    per_bar: int
    steps: int
    time_signature: tuple[int, int]


def live_metre(model: HarmonizerModel, time_signature: tuple[int, int]) -> LiveMetre:
    """The clip grid's metre (``clip.clip_grid``) in live beats."""
    grid = clip_grid(model, time_signature)
    if model.beats == "metric" and grid.time_signature == tuple(time_signature):
        return LiveMetre(grid.step_beats, grid.steps_per_bar, 1, grid.time_signature)
    spq = model.grid.steps_per_quarter
    return LiveMetre(1.0, grid.steps_per_bar // spq, spq, grid.time_signature)


class LearnedHarmonizer(Engine):
    name = "harmonizer"
    description = "Learned chords under the live melody (ONNX model), live per beat or a harmonized loop."
    params = LazyParams(_params)
    latency_beats = 0.0

    def __init__(self) -> None:
        super().__init__()
        self._model: HarmonizerModel | None = None
        self.tempo_bpm = 120.0
        self.clip_mode = ClipMode(
            param=self.param, model=lambda: self.model, rng=lambda: self.rng, voicing=self.voicing_config,
            tempo_bpm=lambda: self.tempo_bpm, slot=lambda: self.context.slot if self.context else self.name)
        self._reset_live()

    # -- state ---------------------------------------------------------------------------
    def reset(self) -> None:
        """Transport stop or locate: the live chords start over. The clip mode keeps its loop
        (it captures and replays on the transport's events)."""
        self._reset_live()

    def _reset_live(self) -> None:
        self.playing = False
        self.held: dict[int, float] = {}
        self.notes: list[list[Any]] = []  # [pitch, start, end | None], quarters
        self.chords: dict[int, int] = {}  # live beat -> token (melody's key)
        self.origin = 0.0  # quarters
        self.decided_beat = -math.inf
        self.decided_span: int | None = None
        self.token: int | None = None
        self.voicing: Voicing | None = None
        self.sounding: tuple[int, ...] = ()
        self.last_activity = -math.inf
        self.free_melody: list[int] = []  # transport stopped: one step per note
        self.free_chords: list[int] = []
        self.live_key: tuple[int, str] | None = None
        self._reseed()

    def _reseed(self) -> None:
        seed = self.param("seed")
        self.rng = np.random.default_rng(None if seed < 0 else seed)

    def on_param_change(self, name: str, value: Any) -> None:
        if name == "model" and self.prepared:
            self._load()
        elif name == "seed":
            self._reseed()
        if name in ("mode", "clip_bars", "meter"):
            bars = self.param("clip_bars")
            self.latency_beats = bars * self.clip_mode.bar_quarters() if self.param("mode") == "clip" else 0.0

    def prepare(self, context: EngineContext) -> None:
        self.tempo_bpm = context.tempo_bpm
        self._load()
        super().prepare(context)

    def _load(self) -> None:
        """Load the `model` parameter's model (ModelLoadError: missing, tampered or broken)."""
        model = HarmonizerModel.named(self.param("model"))
        if self.param("style") not in model.styles:
            if self.param("style") not in self.declaration("style").choices:
                raise ParameterError(f"style {self.param('style')!r} is not one of {model.styles}")
            # a model without the current style (the chorale models know no 'pop'): its own default
            log.info("harmonizer: model %s has no style %r; using %r", model.path.stem, self.param("style"),
                     model.default_style)
            self._values["style"] = model.default_style
        self._model = model

    @property
    def model(self) -> HarmonizerModel:
        if self._model is None:
            raise EngineError("the harmonizer has no model: prepare() loads it")
        return self._model

    @property
    def metre(self) -> LiveMetre:
        return live_metre(self.model, parse_metre(self.param("meter")))

    def voicing_config(self) -> VoicingConfig:
        return VoicingConfig(voices=self.param("voices"), low=self.param("low_note"),
                             high=max(self.param("high_note"), self.param("low_note") + 1),
                             bass=self.param("bass"))

    # -- events --------------------------------------------------------------------------
    def process(self, event: EngineInput) -> Sequence[EngineOutput]:
        if isinstance(event, NoteOn):
            return self._note_on(event)
        if isinstance(event, NoteOff):
            return self._note_off(event)
        if isinstance(event, Beat):
            self.tempo_bpm = event.tempo_bpm
            if self.param("mode") == "clip":  # (a chord held from live mode stops)
                return self._change_to(()) + self.clip_mode.beat(event.index)
            return self._live_beat(event.index)
        if isinstance(event, TransportChange):
            return self._transport(event)
        return ()

    def _transport(self, event: TransportChange) -> Sequence[EngineOutput]:
        if not event.playing:
            if self.param("mode") == "clip":  # (also when the internal clock ran from boot, unannounced)
                self.clip_mode.stop(event.beats)
            return ()
        released = self._change_to(())  # a chord played while stopped ends at the start
        self._reset_live()
        self.playing, self.origin = True, float(event.beats)
        if self.param("mode") != "clip":
            return released
        return released + self.clip_mode.start(event.beats)

    def _note_on(self, event: NoteOn) -> Sequence[EngineOutput]:
        self.held[event.pitch] = event.beats
        self.last_activity = event.beats
        if not event.playing:
            return self._free_note(event.pitch)
        self.notes.append([event.pitch, event.beats, None])
        if self.param("mode") == "clip":
            return self.clip_mode.note_on(event.pitch, event.velocity, event.beats)
        metre = self.metre
        beat = math.floor((event.beats + ANTICIPATION_BEATS) / metre.beat + 1e-9)
        if self._due(beat, metre) and (self.param("decide") == "onset" or self.token is None):
            return self._decide(beat, event.beats, metre)
        return self._keep_under_melody()

    def _note_off(self, event: NoteOff) -> Sequence[EngineOutput]:
        self.held.pop(event.pitch, None)
        self.last_activity = event.beats
        for note in reversed(self.notes):
            if note[0] == event.pitch and note[2] is None:
                note[2] = event.beats
                break
        if self.param("mode") == "clip":
            self.clip_mode.note_off(event.pitch, event.beats)
        if not event.playing and not self.held:
            return self._change_to(())  # no beats to wait for while the transport is stopped
        return self._keep_under_melody() if self.param("mode") == "live" else ()

    def _live_beat(self, index: int) -> Sequence[EngineOutput]:
        """A transport Beat (a quarter). Decisions with ``decide = beat``, and the patterns of a
        held bar or half-bar, happen on the first Beat at or after each live beat's start."""
        metre = self.metre
        beat = math.floor(index / metre.beat + 1e-9)
        self._forget_before(beat - 4 * self.model.length, metre)
        active = bool(self.held) or index - self.last_activity < self.param("release_beats")
        if not active and self.sounding:
            self._hold_until(beat)
            self.token = None
            return self._change_to(())
        if index - 1 >= beat * metre.beat - 1e-9:
            return ()  # not the first Beat of this live beat
        if self.param("decide") == "beat" and self.held and self._due(beat, metre):
            return self._decide(beat, float(index), metre)
        if self.token is not None and active and beat > self.decided_beat and self.param("voicing") != "pad" \
                and self.param("rhythm") in ("bar", "half-bar") and self._span(beat, metre) == self.decided_span:
            return self._play_pattern(beat, float(index), metre)  # the span's chord goes on
        return ()

    def _span(self, beat: int, metre: LiveMetre) -> int:
        """The harmonic-rhythm span of a live beat (``harmonize.rhythm_groups`` with bars from
        song position 0): its bar, its half bar (the first half takes an odd beat), or itself."""
        rhythm, bar = self.param("rhythm"), beat // metre.per_bar
        if rhythm == "bar":
            return bar
        if rhythm == "half-bar":
            return 2 * bar + (beat % metre.per_bar >= -(-metre.per_bar // 2))
        return beat

    def _due(self, beat: int, metre: LiveMetre) -> bool:
        """Whether ``beat`` gets a decision: a later beat in a span not decided yet, or any later
        beat when no chord sounds (the span's chord was released by silence)."""
        return beat > self.decided_beat and (self.token is None or self._span(beat, metre) != self.decided_span)

    # -- live decisions ------------------------------------------------------------------
    def _key(self, pitches: list[tuple[int, float]]) -> tuple[int, str]:
        """The `key` parameter, or the melody's duration-weighted Krumhansl-Schmuckler key with
        hysteresis: another key must correlate better by KEY_SWITCH_MARGIN to take over."""
        fixed = parse_key(self.param("key"))
        if fixed is not None:
            return fixed
        histogram = [0.0] * 12
        for pitch, weight in pitches:
            histogram[pitch % 12] += weight
        correlations = key_correlations(histogram)  # 12 major keys, then 12 minor
        code = int(np.argmax(correlations))
        found = (code % 12, "minor" if code >= 12 else "major")
        if self.live_key is None or len(pitches) < 4:
            self.live_key = found
        elif found != self.live_key:
            current = correlations[self.live_key[0] + (12 if self.live_key[1] == "minor" else 0)]
            if correlations[code] > current + KEY_SWITCH_MARGIN:
                self.live_key = found
        return self.live_key

    def _decide(self, beat: int, now_beats: float, metre: LiveMetre) -> Sequence[EngineOutput]:
        """The chord of live beat ``beat`` from the melody up to now (one model call), sounded at
        once; under a bar or half-bar rhythm it is held for the rest of the span."""
        model, per_bar, length = self.model, metre.per_bar, metre.beat
        history = max(1, model.live_length // metre.steps - 2)
        origin = math.floor(self.origin / length + 1e-9)
        first = min(beat, max(origin, per_bar * math.ceil((beat - history) / per_bar)))
        self._hold_until(beat)
        known = [c for c in range(first, beat) if c in self.chords]
        first = min(known) if known else beat
        steps = (beat + 1 - first) * metre.steps
        start, end = first * length, (beat + 1) * length
        notes = [(p, s - start, (end if e is None else e) - start) for p, s, e in self.notes
                 if (e is None or e > start) and s < end]
        grid = beat_grid(notes, length / metre.steps, steps)
        beat_of = first + np.arange(steps) // metre.steps
        bars = ((beat_of % per_bar == 0) & (np.arange(steps) % metre.steps == 0)).astype(np.uint8)
        chords = np.repeat(np.array([self.chords.get(b, NC) for b in range(first, beat)] + [MASK], dtype=np.int64),
                           metre.steps)
        va = np.tile(np.float32([self.param("valence"), self.param("arousal")]), (steps, 1))
        key = self._key([(p, max(0.1, e - s)) for p, s, e in notes])
        tokens = next_chords(model, grid, bars, chords, key, va, self.param("style"),
                             metre.time_signature, self.rng, self.param("temperature"),
                             pitch_classes=preset_pitch_classes(self.param("tuning")))
        self.token = int(tokens[0])
        self.chords[beat] = self.token
        self.decided_beat, self.decided_span = beat, self._span(beat, metre)
        return self._sound(beat, now_beats, metre)

    def _hold_until(self, beat: int) -> None:
        """The beats from the last decision up to ``beat`` kept its chord (as far back as
        decisions look)."""
        if self.token is not None:
            for kept in range(max(self.decided_beat + 1, beat - 4 * self.model.length), beat):
                self.chords[kept] = self.token

    def _free_note(self, pitch: int) -> Sequence[EngineOutput]:
        """Transport stopped: every note is a step of its own, its chord sounds at once."""
        metre = self.metre
        self.free_melody = (self.free_melody + [max(self.held)])[-(self.model.live_length // 2):]
        self.free_chords = (self.free_chords + [MASK])[-len(self.free_melody):]
        steps = len(self.free_melody)
        bars = (np.arange(steps) % metre.per_bar == 0).astype(np.uint8)
        va = np.tile(np.float32([self.param("valence"), self.param("arousal")]), (steps * metre.steps, 1))
        key = self._key([(p, 1.0) for p in self.free_melody])
        grid = np.repeat(np.asarray(self.free_melody, dtype=np.int64), metre.steps)
        bars = np.repeat(bars, metre.steps) * (np.arange(len(grid)) % metre.steps == 0)
        chords = np.repeat(np.asarray(self.free_chords, dtype=np.int64), metre.steps)
        tokens = next_chords(self.model, grid, bars.astype(np.uint8), chords, key, va, self.param("style"),
                             metre.time_signature, self.rng, self.param("temperature"),
                             pitch_classes=preset_pitch_classes(self.param("tuning")))
        self.token = int(tokens[0])
        self.free_chords[-1] = self.token
        return self._sound(None, None, metre)

    def _sound(self, beat: int | None, now_beats: float | None, metre: LiveMetre) -> Sequence[EngineOutput]:
        melody = max(self.held) if self.held else None
        root = chord_root(self.token) if self.token is not None else None
        if root is None:
            return self._change_to(())
        self.voicing = voice_chord(root, token_pitch_classes(self.token), melody, self.voicing,
                                   self.voicing_config())
        style = self.param("voicing")
        if style == "pad" or beat is None:
            return self._change_to(self.voicing.pitches)
        return self._play_pattern(beat, now_beats, metre)

    def _play_pattern(self, beat: int, now_beats: float, metre: LiveMetre) -> list[EngineOutput]:
        """Block (struck now) or arpeggio/comping events of the rest of live beat ``beat``, as
        timed notes."""
        if self.voicing is None or not self.voicing.pitches:
            return []
        if self.param("voicing") == "block":
            return self._change_to(()) + self._change_to(self.voicing.pitches)
        out: list[EngineOutput] = self._change_to(())
        start = beat * metre.beat
        for event in render(self.voicing, self.param("voicing"), start, metre.beat, self.param("velocity"),
                            metre.per_bar, self.param("arpeggio_rate"), metre.beat):
            end = event.at_beats + event.duration_beats
            if event.at_beats > now_beats + 1e-6:
                out.append(event)
            elif event.at_beats <= now_beats + 1e-6 < end and event.at_beats >= start - 1e-6 \
                    and now_beats - event.at_beats < 0.25:
                out.append(Note(event.pitch, event.velocity, end - max(now_beats, event.at_beats)))
        return out

    def _keep_under_melody(self) -> Sequence[EngineOutput]:
        """A new melody note at or below the chord's top voice: the same chord, voiced under it."""
        if self.token is None or not self.sounding or not self.held or max(self.sounding) < max(self.held):
            return ()
        return self._sound(None, None, self.metre) if self.param("voicing") in ("pad", "block") else ()

    def _change_to(self, pitches: tuple[int, ...]) -> list[EngineOutput]:
        """Release what is no longer in the chord, start what is new; common tones are held."""
        out: list[EngineOutput] = []
        for pitch in self.sounding:
            if pitch not in pitches:
                out.append(Send(mido.Message("note_off", note=pitch, velocity=0)))
        for pitch in pitches:
            if pitch not in self.sounding:
                out.append(Send(mido.Message("note_on", note=pitch, velocity=self.param("velocity"))))
        self.sounding = tuple(pitches)
        return out

    def _forget_before(self, beat: int, metre: LiveMetre) -> None:
        self.notes = [n for n in self.notes if n[2] is None or n[2] >= beat * metre.beat]
        for old in [b for b in self.chords if b < beat]:
            del self.chords[old]

"""The ``harmonizer`` engine: the learned chord model live in the bridge (numpy + onnxruntime).

Live mode: one chord per beat from the melody played so far (nothing after the current beat
is given to the model). A beat's chord is decided at its first melody onset (``decide =
onset``, the default: the chord sounds with the note that starts the beat, a model call
later) or on the transport's beat with the notes sounding then (``decide = beat``). A beat
without a new onset keeps the chord. Clip mode: a loop is captured (a set number of bars,
or from transport start to stop), harmonized whole, played back in sync on the following
passes and saved as a .mid. See docs/harmonizer_live.md.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from typing import Any

import mido
import numpy as np

from core.engine import Engine, EngineContext, LazyParams, Param
from core.errors import EngineError, ParameterError
from core.events import Beat, EngineInput, EngineOutput, Note, NoteOff, NoteOn, Send, TransportChange

from .affect import MAJOR_PROFILE, MINOR_PROFILE, detect_key
from .decode import STRATEGIES
from .harmonize import chord_root, melody_grid, next_chords, parse_key
from .looper import ClipMode
from .runtime import HarmonizerModel
from .vocab import MASK, NC, ROOT_NAMES, token_pitch_classes
from .voicing import STYLES, Voicing, VoicingConfig, render, voice_chord

__all__ = ["LearnedHarmonizer"]

log = logging.getLogger(__name__)
ANTICIPATION_BEATS = 0.2  # a note this close before a beat belongs to that beat
KEY_SWITCH_MARGIN = 0.15  # correlation a newly detected key must gain over the current one
_KEYS = ("auto",) + ROOT_NAMES + tuple(f"{n}m" for n in ROOT_NAMES)


def _default_temperature() -> float:
    """The default model card's calibrated sampling temperature (docs/harmonizer.md), else 0.2."""
    from onnx_models import models_dir

    from .runtime import DEFAULT_TEMPERATURE

    card = models_dir() / "harmonizer.card.json"
    decoding = json.loads(card.read_text()).get("decoding", {}) if card.exists() else {}
    return float(decoding.get("temperature", DEFAULT_TEMPERATURE))


def _shipped(kind: str) -> tuple[str, ...]:
    """Shipped harmonizer model names, or the default model's styles, read from the cards."""
    from onnx_models import models_dir

    cards = sorted(models_dir().glob("harmonizer*.card.json"))
    if kind == "models":
        return tuple(p.name.removesuffix(".card.json") for p in cards) or ("harmonizer",)
    default = models_dir() / "harmonizer.card.json"
    styles = json.loads(default.read_text()).get("styles") if default.exists() else None
    return tuple(styles or ("chorale",))


def _params() -> tuple[Param, ...]:
    """The parameters, with the shipped models and styles read from the model cards (on first
    use, not at import)."""
    styles = _shipped("styles")
    return (
        Param("mode", "choice", "live", choices=("live", "clip"), doc="Chord per beat, or capture a loop"),
        Param("decide", "choice", "onset", choices=("onset", "beat"),
              doc="Decide a beat's chord at its first melody onset, or on the transport's beat"),
        Param("model", "choice", "harmonizer", choices=_shipped("models"), doc="Shipped model (card name)"),
        Param("style", "choice", styles[0], choices=styles, doc="Style anchor"),
        Param("key", "choice", "auto", choices=_KEYS, doc="Key, or auto to detect it from the melody"),
        Param("beats_per_bar", "int", 4, 1, 14, unit="beats", doc="Meter (quarter-note beats per bar)"),
        Param("voicing", "choice", "pad", choices=STYLES, doc="Accompaniment style"),
        Param("voices", "int", 4, 1, 6, doc="Upper voices"),
        Param("low_note", "int", 48, 24, 96, unit="MIDI note", doc="Lowest upper voice"),
        Param("high_note", "int", 79, 36, 120, unit="MIDI note", doc="Highest upper voice"),
        Param("bass", "bool", True, doc="Add the chord root in the bass"),
        Param("velocity", "int", 72, 1, 127, doc="Chord velocity"),
        Param("arpeggio_rate", "int", 2, 1, 8, unit="notes/beat", doc="Arpeggio speed"),
        Param("strategy", "choice", "entropic", choices=STRATEGIES, doc="Decoding strategy (clip mode)"),
        Param("steps", "int", 10, 1, 128, unit="calls", doc="Model calls for a clip (staged strategies)"),
        Param("temperature", "float", _default_temperature(), 0.0, 2.0,
              doc="Sampling temperature, 0 = greedy (default: the model card's calibrated one)"),
        Param("seed", "int", -1, -1, 2**31 - 1, doc="Random seed (-1: a fresh one)"),
        Param("valence", "float", 0.0, -1.0, 1.0, doc="Affect: valence (negative = darker)"),
        Param("arousal", "float", 0.0, -1.0, 1.0, doc="Affect: arousal (positive = more active)"),
        Param("release_beats", "float", 1.0, 0.25, 8.0, unit="beats", doc="Silence after which chords stop"),
        Param("clip_bars", "int", 4, 0, 64, unit="bars", doc="Loop length (0: from transport start to stop)"),
        Param("clip_folder", "text", "~/scorebridge-clips", unit="folder", doc="Where captured loops are saved"),
    )


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
        self.notes: list[list[Any]] = []  # [pitch, start_beats, end_beats | None]
        self.chords: dict[int, int] = {}  # beat -> token (melody's key)
        self.origin = 0
        self.decided_beat = -math.inf
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
        if name in ("mode", "clip_bars", "beats_per_bar"):
            bars = self.param("clip_bars")
            self.latency_beats = float(bars * self.param("beats_per_bar")) if self.param("mode") == "clip" else 0.0

    def prepare(self, context: EngineContext) -> None:
        self.tempo_bpm = context.tempo_bpm
        self._load()
        super().prepare(context)

    def _load(self) -> None:
        """Load the `model` parameter's model (ModelLoadError: missing, tampered or broken)."""
        model = HarmonizerModel.named(self.param("model"))
        if self.param("style") not in model.styles:
            raise ParameterError(f"style {self.param('style')!r} is not one of {model.styles}")
        self._model = model

    @property
    def model(self) -> HarmonizerModel:
        if self._model is None:
            raise EngineError("the harmonizer has no model: prepare() loads it")
        return self._model

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
        self.playing, self.origin = True, math.floor(event.beats + 1e-9)
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
        beat = math.floor(event.beats + ANTICIPATION_BEATS)
        if beat > self.decided_beat and (self.param("decide") == "onset" or self.token is None):
            return self._decide(beat, event.beats)
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
        if index - 1 not in self.chords and self.token is not None:
            self.chords[index - 1] = self.token  # a beat without onset kept the chord
        self._forget_before(index - 4 * self.model.length)
        if not self.held and self.sounding and index - self.last_activity >= self.param("release_beats"):
            self.token = None
            return self._change_to(())
        if self.param("decide") == "beat" and self.held and index > self.decided_beat:
            return self._decide(index, float(index))
        return ()

    # -- live decisions ------------------------------------------------------------------
    def _key(self, pitches: list[tuple[int, float]]) -> tuple[int, str]:
        """The `key` parameter, or the melody's duration-weighted Krumhansl-Schmuckler key with
        hysteresis: another key must correlate better by KEY_SWITCH_MARGIN to take over."""
        fixed = parse_key(self.param("key"))
        if fixed is not None:
            return fixed
        histogram = np.zeros(12)
        for pitch, weight in pitches:
            histogram[pitch % 12] += weight
        tonic, mode, best = detect_key(histogram)
        if self.live_key is None or len(pitches) < 4:
            self.live_key = (tonic, mode)
        elif (tonic, mode) != self.live_key:
            profile = MAJOR_PROFILE if self.live_key[1] == "major" else MINOR_PROFILE
            current = float(np.corrcoef(histogram, np.roll(profile, self.live_key[0]))[0, 1]) \
                if histogram.std() > 0 else 0.0
            if best > current + KEY_SWITCH_MARGIN:
                self.live_key = (tonic, mode)
        return self.live_key

    def _decide(self, beat: int, now_beats: float) -> Sequence[EngineOutput]:
        """The chord of ``beat`` from the melody up to now (one model call), sounded at once."""
        model = self.model
        spq, per_bar = model.grid.steps_per_quarter, self.param("beats_per_bar")
        history = max(1, model.live_length // spq - 2)
        first = max(self.origin, per_bar * math.ceil((beat - history) / per_bar))
        first = min(first, beat)
        known = [c for c in range(first, beat) if c in self.chords]
        if known:
            first = min(known)
        else:
            first = beat
        steps = (beat + 1 - first) * spq
        notes = [(p, s - first, (beat + 1 if e is None else e) - first) for p, s, e in self.notes
                 if (e is None or e > first) and s < beat + 1]
        grid = melody_grid(notes, spq, steps)
        beat_of = first + np.arange(steps) // spq
        bars = ((beat_of % per_bar == 0) & (np.arange(steps) % spq == 0)).astype(np.uint8)
        chords = np.array([self.chords.get(int(b), NC) for b in beat_of], dtype=np.int64)
        chords[beat_of == beat] = MASK
        va = np.tile(np.float32([self.param("valence"), self.param("arousal")]), (steps, 1))
        key = self._key([(p, max(0.1, e - s)) for p, s, e in notes])
        tokens = next_chords(model, grid, bars, chords, key, va, self.param("style"),
                             (per_bar, 4), self.rng, self.param("temperature"))
        self.token = int(tokens[0])
        self.chords[beat] = self.token
        self.decided_beat = beat
        return self._sound(beat, now_beats)

    def _free_note(self, pitch: int) -> Sequence[EngineOutput]:
        """Transport stopped: every note is a step of its own, its chord sounds at once."""
        self.free_melody = (self.free_melody + [max(self.held)])[-(self.model.live_length // 2):]
        self.free_chords = (self.free_chords + [MASK])[-len(self.free_melody):]
        steps, per_bar = len(self.free_melody), self.param("beats_per_bar")
        bars = (np.arange(steps) % per_bar == 0).astype(np.uint8)
        va = np.tile(np.float32([self.param("valence"), self.param("arousal")]), (steps, 1))
        key = self._key([(p, 1.0) for p in self.free_melody])
        grid = np.asarray(self.free_melody, dtype=np.int64)
        if self.model.grid.steps_per_quarter > 1:
            grid = np.repeat(grid, self.model.grid.steps_per_quarter)
            bars = np.repeat(bars, self.model.grid.steps_per_quarter) * (np.arange(len(grid)) % 4 == 0)
            chords = np.repeat(self.free_chords, self.model.grid.steps_per_quarter)
        else:
            chords = np.asarray(self.free_chords)
        tokens = next_chords(self.model, grid, bars.astype(np.uint8), chords, key, va, self.param("style"),
                             (per_bar, 4), self.rng, self.param("temperature"))
        self.token = int(tokens[0])
        self.free_chords[-1] = self.token
        return self._sound(None, None)

    def _sound(self, beat: int | None, now_beats: float | None) -> Sequence[EngineOutput]:
        melody = max(self.held) if self.held else None
        root = chord_root(self.token) if self.token is not None else None
        if root is None:
            return self._change_to(())
        self.voicing = voice_chord(root, token_pitch_classes(self.token), melody, self.voicing,
                                   self.voicing_config())
        style = self.param("voicing")
        if style == "pad" or beat is None:
            return self._change_to(self.voicing.pitches)
        if style == "block":
            return self._change_to(()) + self._change_to(self.voicing.pitches)
        return self._play_pattern(beat, now_beats)

    def _play_pattern(self, beat: int, now_beats: float) -> list[EngineOutput]:
        """Arpeggio/comping (and block) events of the rest of ``beat``, as timed notes."""
        if self.voicing is None or not self.voicing.pitches:
            return []
        if self.param("voicing") == "block":
            return self._change_to(()) + self._change_to(self.voicing.pitches)
        out: list[EngineOutput] = self._change_to(())
        for event in render(self.voicing, self.param("voicing"), float(beat), 1.0, self.param("velocity"),
                            self.param("beats_per_bar"), self.param("arpeggio_rate")):
            end = event.at_beats + event.duration_beats
            if event.at_beats > now_beats + 1e-6:
                out.append(event)
            elif event.at_beats <= now_beats + 1e-6 < end and event.at_beats >= beat - 1e-6 \
                    and now_beats - event.at_beats < 0.25:
                out.append(Note(event.pitch, event.velocity, end - max(now_beats, event.at_beats)))
        return out

    def _keep_under_melody(self) -> Sequence[EngineOutput]:
        """A new melody note at or below the chord's top voice: the same chord, voiced under it."""
        if self.token is None or not self.sounding or not self.held or max(self.sounding) < max(self.held):
            return ()
        return self._sound(None, None) if self.param("voicing") in ("pad", "block") else ()

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

    def _forget_before(self, beat: int) -> None:
        self.notes = [n for n in self.notes if n[2] is None or n[2] >= beat]
        for old in [b for b in self.chords if b < beat]:
            del self.chords[old]

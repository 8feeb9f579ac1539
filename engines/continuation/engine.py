"""The ``continuation`` engine: when the player stops, it goes on playing, both hands.

Triggers: a silence of ``silence_beats`` (checked on every beat), a loop boundary (the song
position jumps back while playing) or the ``trigger`` parameter (OSC). The prompt is the
player's last ``context_bars`` bars, padded to the bar line after the last note, with the hands
split at ``split``; the continuation starts at the first bar line at least one beat ahead and
lasts ``bars`` bars.

Streaming: generation runs on the slot's worker, a beat at a time. On each beat it generates
until the model's time passes the end of the next beat (+ ``lookahead_beats``) and hands the
note-ons and note-offs before that point to the host's scheduler (as timed raw messages, which
the host tracks for note safety); everything later stays in the model.
The moment the player plays again, generation stops and the engine answers with a ``Silence``
output: the host cancels everything handed to the scheduler and releases every continuation
note at once, so nothing of the continuation sounds after the player's first note.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import mido

from core.engine import Engine, EngineContext, Param
from core.errors import EngineError
from core.events import Beat, EngineInput, EngineOutput, NoteOff, NoteOn, Send, Silence, TransportChange
from core.tuning import preset_names, preset_pitch_classes

from .defaults import USER_BIASES, USER_CHORD_VELOCITY
from .live import NoteStream, PlayerHistory
from .offline import prompt_tokens, prompt_window
from .runtime import DEFAULT_MODEL, PLAIN_MODEL, ContinuationModel
from .sample import (
    GRIDS,
    MODE_STEER,
    REGISTERS,
    SamplingConfig,
    Stream,
    prompt_grid,
    prompt_register,
    scale_pitch_classes,
)
from .tokens import LEFT, STEPS_PER_QUARTER

__all__ = ["ContinuationEngine"]

_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_KEYS = ("off",) + _NAMES + tuple(f"{n}m" for n in _NAMES)
_STYLES = ("piano", "chorale", "quartet", "part")
_MIN_LEAD_BEATS = 1.0  # the continuation starts at a bar line at least this far ahead


class ContinuationEngine(Engine):
    name = "continuation"
    description = "Continues the player's phrase for both hands when they stop (Smart Embedding model)."
    params = (
        Param("bars", "int", 4, 1, 32, unit="bars", doc="Length of a continuation"),
        Param(
            "context_bars", "int", 4, 1, 16, unit="bars", doc="How much of the player's phrase is the prompt"
        ),
        Param("silence_beats", "float", 2.0, 0.0, 64.0, unit="beats", doc="Silence that triggers (0 = off)"),
        Param("on_loop", "bool", True, doc="Continue when the loop wraps and the player is silent"),
        Param("trigger", "bool", False, doc="Set to 1 to continue now (at the next bar line)"),
        Param("temperature", "float", 1.0, 0.1, 2.0),
        Param("top_p", "float", 0.95, 0.05, 1.0),
        Param("top_k", "int", 0, 0, 437, doc="0 = off"),
        Param("seed", "int", -1, -1, 2**31 - 1, doc="-1 = a new seed each time"),
        Param("style", "choice", "piano", choices=_STYLES),
        Param(
            "va_source",
            "choice",
            "music",
            choices=("music", "params"),
            doc="Valence/arousal from the player's notes, or from the two parameters below",
        ),
        Param("valence", "float", 0.0, -1.0, 1.0),
        Param("arousal", "float", 0.0, -1.0, 1.0),
        Param(
            "mode_steer",
            "float",
            MODE_STEER,
            0.0,
            8.0,
            doc="With va_source params: how hard valence turns the music to the parallel minor/major (0 = off)",
        ),
        Param("key", "choice", "off", choices=_KEYS, doc="Restrict notes to a key's scale (off = any)"),
        Param("tuning", "choice", "off", choices=("off", *preset_names()),
              doc="Restrict notes to this scale's degrees (a preset of docs/tuning.md; off = any)"),
        Param(
            "register", "choice", "prompt", choices=REGISTERS,
            doc="prompt: each hand within 5 semitones of the player's range in that hand, its median within "
                "an octave of the player's; free: any",
        ),
        *(
            Param(name, "float", value, 0.0, 8.0, doc=doc)
            for name, value, doc in (
                ("key_bias", USER_BIASES["key_bias"], "Soft key: logit penalty of notes outside the player's key"),
                ("pattern_bias", USER_BIASES["pattern_bias"],
                 "Rhythm: each hand kept to the steps it struck in the player's last two bars, bar by bar"),
                ("motif_bias", USER_BIASES["motif_bias"],
                 "Motif echo: right-hand notes continuing the player's melodic patterns gain this"),
                ("density_bias", USER_BIASES["density_bias"],
                 "Keeps each hand near the player's onsets per bar (within 0.5-2x)"),
            )
        ),
        Param(
            "grid", "choice", "prompt", choices=GRIDS,
            doc="prompt: notes on the player's rhythmic grid (16ths, triplets) if the prompt keeps one; free: any",
        ),
        Param("beats_per_bar", "int", 4, 1, 12, unit="beats"),
        Param(
            "split", "int", 60, 21, 108, unit="MIDI note", doc="Player's notes below this are the left hand"
        ),
        Param("max_polyphony", "int", 4, 1, 10, doc="Notes per hand at once"),
        Param(
            "left_channel", "int", 0, 0, 16,
            doc="MIDI channel (1-16) of the left hand, 0 = the slot's channel for both hands",
        ),
        Param("max_note_beats", "float", 4.0, 0.25, 8.0, unit="beats", doc="Longest generated note"),
        Param(
            "lookahead_beats",
            "float",
            0.5,
            0.05,
            2.0,
            unit="beats",
            doc="How far past the next beat notes are handed out (the worker's time to generate a beat)",
        ),
        Param("embedding", "choice", "smart", choices=("smart", "plain"), doc="Which shipped model"),
    )
    latency_beats = 0.0

    def __init__(self, model_path: str | Path | None = None) -> None:
        super().__init__()
        self._model_path = Path(model_path) if model_path else None
        self._model: ContinuationModel | None = None
        self.history = PlayerHistory()  # in performance time: it outlives stops and locates
        self.generations = 0
        self.interrupted = 0
        self.position_beats = 0.0
        self.pending_trigger = False
        self.reset()

    # -- lifecycle ------------------------------------------------------------------------
    def prepare(self, context: EngineContext) -> None:
        self._load()
        super().prepare(context)

    def _load(self) -> None:
        """The model named by ``model_path`` or by the ``embedding`` parameter."""
        path = self._model_path or (DEFAULT_MODEL if self.param("embedding") == "smart" else PLAIN_MODEL)
        self._model = ContinuationModel.load(path)

    @property
    def model(self) -> ContinuationModel:
        if self._model is None:
            raise EngineError("the continuation has no model: prepare() loads it")
        return self._model

    def reset(self) -> None:
        """Transport stop or locate: a continuation playing ends (the host released its notes);
        the player's phrase is kept."""
        self.stream: NoteStream | None = None
        self.start_beats = 0.0
        self.handed_until = 0.0
        self.handed: list[list] = []  # [on, off or None, pitch, hand] in song beats, notes handed out

    def on_param_change(self, name: str, value: object) -> None:
        if name == "trigger" and value:
            self.pending_trigger = True
        elif name == "embedding" and self.prepared and self._model_path is None:
            self._load()

    @property
    def continuing(self) -> bool:
        return self.stream is not None

    # -- events ---------------------------------------------------------------------------
    def process(self, event: EngineInput) -> Sequence[EngineOutput]:
        if isinstance(event, NoteOn):
            self.history.note_on(event.pitch, event.velocity, event.beats)
            return self._stop(event.beats) if self.continuing or self.handed else ()
        if isinstance(event, NoteOff):
            self.history.note_off(event.pitch, event.beats)
            return ()
        if isinstance(event, Beat):
            return self._beat(float(event.index))
        if isinstance(event, TransportChange):
            return self._transport(event)
        return ()

    def _transport(self, event: TransportChange) -> Sequence[EngineOutput]:
        if not event.playing:
            return ()
        bar = self.param("beats_per_bar")
        if event.reason == "locate" and event.beats < self.position_beats:
            self.history.jumped(self.position_beats, event.beats, bar * STEPS_PER_QUARTER)
            if self.param("on_loop") and self.history.fresh and not self.history.open:
                self.pending_trigger = True
        self.position_beats = event.beats
        return ()

    def _beat(self, beats: float) -> list[EngineOutput]:
        self.position_beats = beats
        if not self.continuing:
            silence = self.param("silence_beats")
            silent_for = beats - self.history.last_activity_beats
            stopped = self.history.fresh and silence > 0 and silent_for >= silence
            if self.history.notes and not self.history.open and (self.pending_trigger or stopped):
                self._start(beats)  # an OSC trigger may continue the same phrase again
            elif self.pending_trigger and not self.history.notes:
                self.pending_trigger = False  # nothing played yet: nothing to continue
        return self._hand_out(beats) if self.continuing else []

    # -- continuing -----------------------------------------------------------------------
    def _config(self, bar_steps: int) -> SamplingConfig:
        key = self.param("key")
        classes = None
        if key != "off":
            minor = key.endswith("m")
            classes = scale_pitch_classes(_NAMES.index(key.removesuffix("m")), "minor" if minor else "major")
        scale = preset_pitch_classes(self.param("tuning"))
        if scale is not None:  # with a key too, the notes both allow (the scale alone if none)
            classes = scale if classes is None or not classes & scale else classes & scale
        seed = self.param("seed")
        if seed < 0:
            seed = None
        asked = self.param("va_source") == "params"
        biases = {name: self.param(name) for name in USER_BIASES}
        if asked:  # valence/arousal from the parameters: the asked arousal sets density and rhythm
            biases["density_bias"] = biases["pattern_bias"] = 0.0
        return SamplingConfig(
            temperature=self.param("temperature"),
            top_k=self.param("top_k"),
            top_p=self.param("top_p"),
            seed=seed,
            pitch_classes=classes,
            max_polyphony=self.param("max_polyphony"),
            max_note_steps=round(self.param("max_note_beats") * STEPS_PER_QUARTER),
            bar_steps=bar_steps,
            mode_steer=self.param("mode_steer") if asked else 0.0,
            chord_velocity=USER_CHORD_VELOCITY,
            **biases,
        )

    def _start(self, beats: float) -> None:
        self.pending_trigger = False
        self.history.fresh = False
        bar = self.param("beats_per_bar")
        bar_steps = bar * STEPS_PER_QUARTER
        notes = self.history.split_hands(self.param("split"))
        if not notes:
            return
        prompt, _, labels = prompt_tokens(notes, bar_steps, self.param("context_bars"), self.model.valence_lead)
        config = self._config(bar_steps)
        if self.param("register") == "prompt":
            config = prompt_register(prompt, config,
                                     played=prompt_window(notes, bar_steps, self.param("context_bars"))[2])
        if self.param("grid") == "prompt":  # with an asked arousal, the note lengths are the model's
            config = prompt_grid(prompt, config, cap_notes=self.param("va_source") != "params")
        styles = self.model.card.get("styles", list(_STYLES))
        style = styles.index(self.param("style")) if self.param("style") in styles else 0
        if self.param("va_source") == "music":  # the player's own valence/arousal, as in training
            va, prompt_va = (float(labels[-1, 0]), float(labels[-1, 1])), labels
        else:
            va, prompt_va = (self.param("valence"), self.param("arousal")), None
        stream = Stream(self.model, prompt, self.param("bars"), config, style, va, prompt_va=prompt_va)
        self.stream = NoteStream(stream)
        self.start_beats = math.ceil((beats + _MIN_LEAD_BEATS) / bar) * bar
        self.handed_until = self.start_beats
        self.handed = []
        self.generations += 1

    def _hand_out(self, beats: float) -> list[EngineOutput]:
        """Note-ons and note-offs before the next beat + look-ahead, each handed out once."""
        stream = self.stream
        horizon = beats + 1.0 + self.param("lookahead_beats")
        if stream is None or horizon <= self.handed_until:
            return []
        self.handed = [h for h in self.handed if h[1] is None or h[1] > beats]
        outputs: list[EngineOutput] = []
        left = self.param("left_channel")
        for event in stream.take(horizon - self.start_beats):
            at = self.start_beats + event.at_beats
            if event.velocity:
                self.handed.append([at, None, event.pitch, event.hand])
                message = mido.Message("note_on", note=event.pitch, velocity=event.velocity)
            else:
                for record in self.handed:  # the earliest open note of that pitch and hand ends
                    if record[2] == event.pitch and record[3] == event.hand and record[1] is None:
                        record[1] = at
                        break
                message = mido.Message("note_off", note=event.pitch, velocity=0)
            channel = left - 1 if left and event.hand == LEFT else None
            outputs.append(Send(message, at_beats=at, channel=channel))
        self.handed_until = horizon
        if stream.finished:
            self.stream = None
        return outputs

    def _stop(self, beats: float) -> list[EngineOutput]:
        """The player plays again: stop generating; the host cancels what was handed over for
        later and releases every continuation note at once."""
        self.stream = None
        self.interrupted += 1
        self.handed = []
        return [Silence()]

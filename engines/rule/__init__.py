"""The ``rule`` harmonizer: diatonic chords under the live melody, no model needed.

For each beat it picks the diatonic triad (or seventh) that best covers the melody notes of
that beat, in a key that is set or detected from what was played, voices it below the melody
with the least movement, and holds it until the next chord or a silence. It is the live
fallback and the baseline the learned harmonizer is measured against.

With a ``tuning`` whose scale has fewer than 12 degrees (a pentatonic, a kora or balafon
scale) the chords are that scale's own: every other scale step stacked on each degree, on the
keys the tuning maps its degrees to, with its first degree as the tonic. A 12-note temperament
only changes how the notes sound (at the output), so the key's diatonic chords stay.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import mido

from core.engine import Engine, Param
from core.events import Beat, EngineInput, EngineOutput, NoteOff, NoteOn, Send
from core.tuning import load_tuning, preset_names
from engines.rule.theory import NOTE_NAMES, DiatonicChord, Key, KeyFinder, choose_chord, parse_key, voice_chord

__all__ = ["RuleHarmonizer"]

_KEY_CHOICES = ("auto",) + NOTE_NAMES + tuple(f"{n}m" for n in NOTE_NAMES)
# A note this close before a beat belongs to that beat (players and DAWs push slightly early).
_ANTICIPATION_BEATS = 0.2


class RuleHarmonizer(Engine):
    name = "rule"
    description = "Diatonic chords under the live melody (key set or detected), voice-led."
    params = (
        Param("key", "choice", "auto", choices=_KEY_CHOICES, doc="Key, or auto to detect it"),
        Param("sevenths", "bool", False, doc="Seventh chords instead of triads"),
        Param("voices", "int", 3, 3, 4, doc="Upper voices"),
        Param("low_note", "int", 48, 24, 84, unit="MIDI note", doc="Lowest upper voice"),
        Param("bass", "bool", True, doc="Add the chord root in the bass"),
        Param("velocity", "int", 72, 1, 127, doc="Chord velocity"),
        Param("release_beats", "float", 1.0, 0.25, 8.0, unit="beats",
              doc="Silence after which the chord is released"),
        Param("tuning", "choice", "off", choices=("off", *preset_names()),
              doc="Scale whose own chords to play (a preset of docs/tuning.md), or off for the key's"),
    )
    latency_beats = 0.0

    def __init__(self) -> None:
        super().__init__()
        self.key_finder = KeyFinder()
        self._scales: dict[str, tuple[int, ...] | None] = {}
        self.reset()

    def reset(self) -> None:
        """Transport stop or locate (the host released the chord): start over."""
        self.held: dict[int, int] = {}
        self.chord: DiatonicChord | None = None
        self.sounding: tuple[int, ...] = ()
        self.decided_beat = -math.inf
        self.last_activity_beats = -math.inf
        self.key_finder.reset()

    @property
    def scale(self) -> tuple[int, ...] | None:
        """The tuning's scale as pitch classes from its first degree, or None (the key decides)."""
        name = self.param("tuning")
        if name == "off":
            return None
        if name not in self._scales:
            tuning = load_tuning(name)
            classes = tuning.pitch_classes()
            if classes is None or len(classes) >= 12:
                self._scales[name] = None
            else:
                tonic = tuning.mapping.middle_key % 12
                self._scales[name] = tuple(sorted(classes, key=lambda pc: (pc - tonic) % 12))
        return self._scales[name]

    @property
    def key(self) -> Key:
        setting = self.param("key")
        return self.key_finder.key if setting == "auto" else parse_key(setting)

    def process(self, event: EngineInput) -> Sequence[EngineOutput]:
        if isinstance(event, NoteOn):
            return self._note_on(event)
        if isinstance(event, NoteOff):
            self.held.pop(event.pitch, None)
            self.last_activity_beats = event.beats
            if not event.playing and not self.held:
                return self._change_to(())  # no beats to wait for while the transport is stopped
            return ()
        if isinstance(event, Beat):
            silent_for = event.index - self.last_activity_beats
            if not self.held and self.sounding and silent_for >= self.param("release_beats"):
                return self._change_to(())
            return ()
        return ()

    def _note_on(self, event: NoteOn) -> Sequence[EngineOutput]:
        self.held[event.pitch] = event.velocity
        self.key_finder.add(event.pitch)
        self.last_activity_beats = event.beats
        beat_index = math.floor(event.beats + _ANTICIPATION_BEATS)
        top = max(self.held)
        if beat_index > self.decided_beat or not self.sounding or not event.playing:
            weights = {p % 12: 1.0 for p in self.held}
            weights[event.pitch % 12] = 2.0
            scale = self.scale
            if scale is not None:
                weights = {pc: w for pc, w in weights.items() if pc in scale}
                if self.chord is not None and not set(self.chord.pitch_classes) <= set(scale):
                    self.chord = None  # the tuning changed: no progression from the old scale
            self.chord = choose_chord(weights, self.key, self.chord, self.param("sevenths"), scale)
            self.decided_beat = beat_index
        elif self.sounding and max(self.sounding) < top:
            return ()  # same beat, the chord already sits below the melody
        if self.chord is None:
            return ()
        return self._change_to(self._voicing(self.chord, top))

    def _voicing(self, chord: DiatonicChord, melody_pitch: int) -> tuple[int, ...]:
        previous = tuple(p for p in self.sounding if p >= self.param("low_note"))
        upper = voice_chord(chord.pitch_classes, melody_pitch, previous or None,
                            self.param("low_note"), self.param("voices"))
        if not self.param("bass") or not upper:
            return upper
        bass = 36 + (chord.root - 36) % 12
        while bass >= min(upper):
            bass -= 12
        return (bass,) + upper

    def _change_to(self, pitches: tuple[int, ...]) -> list[EngineOutput]:
        """Release what is no longer in the chord, start what is new; common tones are held."""
        out: list[EngineOutput] = []
        new = set(pitches)
        for pitch in self.sounding:
            if pitch not in new:
                out.append(Send(mido.Message("note_off", note=pitch, velocity=0)))
        velocity = self.param("velocity")
        for pitch in pitches:
            if pitch not in self.sounding:
                out.append(Send(mido.Message("note_on", note=pitch, velocity=velocity)))
        self.sounding = tuple(pitches)
        if not pitches:
            self.chord = None
        return out

"""A melody as notes in beats, harmonized whole: chords per grid step, chord spans, voiced
accompaniment events and a two-track MIDI file (numpy, onnxruntime and mido only).

Shared by the engine's clip mode (a captured loop) and ``scorebridge harmonize`` (a file).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from pathlib import Path

import mido
import numpy as np

from core.atomic import atomic_output
from core.events import Note

from .grid import metric_beat
from .harmonize import beat_grid, chord_root, harmonize
from .runtime import HarmonizerModel
from .vocab import token_name, token_pitch_classes
from .voicing import Voicing, VoicingConfig, render, voice_chord

__all__ = [
    "ChordSpan",
    "ClipOptions",
    "HarmonizedClip",
    "accompaniment",
    "build_midi",
    "chord_spans",
    "clip_grid",
    "harmonize_notes",
    "write_midi",
]


@dataclass(frozen=True)
class ClipOptions:
    """Decoding and rendering choices for a whole melody."""

    style: str = "chorale"
    strategy: str = "entropic"
    calls: int = 10
    temperature: float = 0.2
    key: tuple[int, str] | None = None
    rhythm: str = "auto"
    ending: str = "tonic"
    voicing_style: str = "pad"
    voicing: VoicingConfig = field(default_factory=VoicingConfig)
    velocity: int = 72
    arpeggio_rate: int = 2
    pitch_classes: frozenset[int] | None = None  # chords only of these (a tuning's scale); None: any


@dataclass(frozen=True)
class ChordSpan:
    """One chord held from ``start_beats`` for ``duration_beats``."""

    token: int
    start_beats: float
    duration_beats: float

    @property
    def name(self) -> str:
        return token_name(self.token)


@dataclass
class HarmonizedClip:
    """The melody, its chord spans and the voiced accompaniment (song positions in beats)."""

    melody: list[Note]
    spans: list[ChordSpan]
    events: list[Note]
    length_beats: float
    tonic: int
    mode: str
    calls: int


@dataclass(frozen=True)
class ClipGrid:
    """How a clip is cut for a model: steps of ``step_beats`` quarters, ``steps_per_bar`` of
    them a bar, and the time signature the model is conditioned on."""

    step_beats: float
    steps_per_bar: int
    time_signature: tuple[int, int]

    def steps(self, length_beats: float) -> int:
        return max(1, int(np.ceil(length_beats / self.step_beats - 1e-9)))


def clip_grid(model: HarmonizerModel, time_signature: tuple[int, int]) -> ClipGrid:
    """A lead-sheet model steps on metric beats (dotted quarters in 6/8) and is told the real
    metre; a quarter-note model steps on its grid, its bar rounded to whole quarters (N/4)."""
    numerator, denominator = time_signature
    if model.beats == "metric":
        try:
            beat = metric_beat(numerator, denominator)
        except ValueError:
            beat = 0.0  # an unusual metre: counted in quarters below
        per_bar = numerator * 4 / denominator / beat if beat else 0.5
        if abs(per_bar - round(per_bar)) < 1e-9 and per_bar >= 1:
            return ClipGrid(beat, int(round(per_bar)), (numerator, denominator))
    spq = model.grid.steps_per_quarter
    quarters = max(1, round(numerator * 4 / denominator))
    return ClipGrid(1.0 / spq, quarters * spq, (quarters, 4))


def chord_spans(tokens: np.ndarray, step_beats: float) -> list[ChordSpan]:
    """Runs of equal chord tokens on a grid of ``step_beats`` quarters -> spans in quarters
    (`<nc>` and other specials make gaps)."""
    spans: list[ChordSpan] = []
    run_start = 0
    for index in range(1, len(tokens) + 1):
        if index == len(tokens) or tokens[index] != tokens[run_start]:
            token = int(tokens[run_start])
            if chord_root(token) is not None:
                spans.append(ChordSpan(token, run_start * step_beats, (index - run_start) * step_beats))
            run_start = index
    return spans


def _melody_floors(melody: list[Note], spans: list[ChordSpan]) -> list[int | None]:
    """For each span, the lowest melody pitch sounding at any moment of it (None if none
    sounds). One sweep over spans and notes in time order with a heap of the notes begun so far
    (lowest pitch on top; a note that ended before the current span never sounds again, as
    spans are taken in order of their start): linear in notes and spans, up to a log factor."""
    notes = sorted(melody, key=lambda n: n.at_beats)
    floors: list[int | None] = [None] * len(spans)
    begun: list[tuple[int, float]] = []  # (pitch, end)
    next_note = 0
    for index in sorted(range(len(spans)), key=lambda i: spans[i].start_beats):
        start = spans[index].start_beats
        end = start + spans[index].duration_beats
        while next_note < len(notes) and notes[next_note].at_beats < end - 1e-9:
            note = notes[next_note]
            heapq.heappush(begun, (note.pitch, note.at_beats + note.duration_beats))
            next_note += 1
        while begun and begun[0][1] <= start + 1e-9:
            heapq.heappop(begun)
        floors[index] = begun[0][0] if begun else None
    return floors


def accompaniment(
    melody: list[Note],
    spans: list[ChordSpan],
    options: ClipOptions,
    beats_per_bar: int = 4,
    beat_length: float = 1.0,
) -> list[Note]:
    """Voice every span under the melody (least movement from the previous chord) and render it
    on beats of ``beat_length`` quarters, ``beats_per_bar`` of them a bar."""
    events: list[Note] = []
    previous: Voicing | None = None
    for span, ceiling in zip(spans, _melody_floors(melody, spans), strict=True):
        root = chord_root(span.token)
        voicing = voice_chord(root, token_pitch_classes(span.token), ceiling, previous, options.voicing)
        if voicing.pitches:
            events += render(voicing, options.voicing_style, span.start_beats, span.duration_beats,
                             options.velocity, beats_per_bar, options.arpeggio_rate, beat_length)
            previous = voicing
    return events


def harmonize_notes(
    model: HarmonizerModel,
    melody: list[Note],
    length_beats: float,
    time_signature: tuple[int, int],
    options: ClipOptions,
    va: np.ndarray | None = None,
    rng: np.random.Generator | None = None,
) -> HarmonizedClip:
    """Harmonize a melody (song positions in quarters from 0 = a bar start) over
    ``length_beats`` quarters in ``time_signature``.

    ``va`` is [steps, 2] on ``clip_grid(model, time_signature)`` (None: neutral). Raises
    ValueError for a melody with no note."""
    if not melody:
        raise ValueError("the melody is empty: no note to harmonize")
    grid = clip_grid(model, time_signature)
    steps = grid.steps(length_beats)
    pitches = beat_grid([(n.pitch, n.at_beats, n.at_beats + n.duration_beats) for n in melody], grid.step_beats,
                        steps)
    bars = np.zeros(steps, dtype=np.uint8)
    bars[:: grid.steps_per_bar] = 1
    result = harmonize(model, pitches, bars, grid.time_signature, va, options.style, options.strategy,
                       options.calls, rng, options.key, options.temperature, rhythm=options.rhythm,
                       ending=options.ending, pitch_classes=options.pitch_classes)
    spans = chord_spans(result.chords, grid.step_beats)
    events = accompaniment(melody, spans, options, grid.steps_per_bar, grid.step_beats)
    return HarmonizedClip(list(melody), spans, events, steps * grid.step_beats, result.tonic, result.mode,
                          result.calls)


def _track(name: str, items: list[tuple[float, int, mido.Message | mido.MetaMessage]], ticks: int) -> mido.MidiTrack:
    """A track from (beats, order, message) items; order puts note-offs before note-ons."""
    track = mido.MidiTrack([mido.MetaMessage("track_name", name=name, time=0)])
    now = 0
    for beats, _, message in sorted(items, key=lambda item: (item[0], item[1])):
        tick = round(beats * ticks)
        track.append(message.copy(time=max(0, tick - now)))
        now = max(now, tick)
    track.append(mido.MetaMessage("end_of_track", time=0))
    return track


def _note_items(notes: list[Note], channel: int) -> list[tuple[float, int, mido.Message]]:
    items: list[tuple[float, int, mido.Message]] = []
    for note in notes:
        items.append((note.at_beats, 2, mido.Message("note_on", channel=channel, note=note.pitch,
                                                         velocity=note.velocity)))
        items.append((note.at_beats + note.duration_beats, 1,
                      mido.Message("note_off", channel=channel, note=note.pitch, velocity=0)))
    return items


def build_midi(
    melody: list[Note],
    chords: list[Note],
    spans: list[ChordSpan],
    tempo_bpm: float = 120.0,
    time_signature: tuple[int, int] = (4, 4),
    ticks_per_beat: int = 480,
    melody_meta: list[tuple[float, mido.MetaMessage]] | None = None,
) -> mido.MidiFile:
    """A type-1 MIDI file: track `melody` (channel 1, tempo and meter, or ``melody_meta``) and
    track `chords` (channel 2, a marker with each chord's name)."""
    meta = melody_meta if melody_meta is not None else [
        (0.0, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(tempo_bpm))),
        (0.0, mido.MetaMessage("time_signature", numerator=time_signature[0], denominator=time_signature[1])),
    ]
    melody_items = [(beats, 0, message) for beats, message in meta] + _note_items(melody, 0)
    chord_items: list[tuple[float, int, mido.Message | mido.MetaMessage]] = [
        (span.start_beats, 0, mido.MetaMessage("marker", text=span.name)) for span in spans
    ]
    chord_items += _note_items(chords, 1)
    midi = mido.MidiFile(type=1, ticks_per_beat=ticks_per_beat)
    midi.tracks.append(_track("melody", melody_items, ticks_per_beat))
    midi.tracks.append(_track("chords", chord_items, ticks_per_beat))
    return midi


def write_midi(
    path: Path,
    melody: list[Note],
    chords: list[Note],
    spans: list[ChordSpan],
    tempo_bpm: float = 120.0,
    time_signature: tuple[int, int] = (4, 4),
) -> Path:
    """Write `build_midi`'s file atomically (temporary file, then rename)."""
    path = Path(path)
    midi = build_midi(melody, chords, spans, tempo_bpm, time_signature)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as temporary:
        midi.save(temporary)
    return path

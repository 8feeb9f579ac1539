"""Offline continuation of a MIDI file (mido + numpy + onnxruntime; never torch); the command
is ``scorebridge continue`` (cli/continue_.py).

Hands in IN.mid: a track whose name contains "right" or "left" is that hand; notes of other
tracks are split at middle C (below 60 -> left). The meter is the file's first time signature
(4/4 if none). The prompt is the last ``context-bars`` bars, padded to a bar line, on the model's
1/12-beat grid; OUT.mid holds the input's notes as written (its ticks, not the grid) followed by
the continuation, in tracks named ``right`` and ``left``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import mido
import numpy as np

from core.errors import CodecError
from core.midifile import FileNote, read_notes

from .affect import token_steps, token_va, valence_arousal
from .runtime import ContinuationModel
from .sample import GRIDS, REGISTERS, SamplingConfig, generate, prompt_grid, prompt_register
from .tokens import (
    LEFT,
    RIGHT,
    SOS,
    STEPS_PER_QUARTER,
    NoteEvent,
    canonicalize,
    decode,
    encode,
    is_shift,
    shift_steps,
)

__all__ = [
    "PROMPT_LABELS",
    "SourceNotes",
    "announce_labels",
    "continue_notes",
    "prompt_tokens",
    "read_midi",
    "read_source",
    "write_midi",
]

OUTPUT_TICKS_PER_BEAT = 480
MAX_TICKS_PER_BEAT = 32767  # a MIDI header's division holds 15 bits


@dataclass
class SourceNotes:
    """The notes of a MIDI file as written, in its ticks, each with its hand (``RIGHT``/``LEFT``):
    what OUT.mid copies, while the model reads the same notes on its grid."""

    ticks_per_beat: int
    notes: list[tuple[int, FileNote]]


def read_source(path: str | Path, split: int = 60) -> tuple[list[NoteEvent], int, int, SourceNotes]:
    """(notes on the grid, bar length in steps, tempo in microseconds per quarter, the notes as
    written). Notes of tracks not named right/left are split at ``split`` (below -> left hand);
    the grid notes keep the piano's keys 21..108."""
    source = read_notes(path)
    numerator, denominator = source.time_signature
    bar_steps = numerator * 4 * STEPS_PER_QUARTER // denominator
    if bar_steps < 1:
        raise CodecError(f"{path}: time signature {numerator}/{denominator}: a bar shorter than the "
                         f"continuation's grid step (1/{STEPS_PER_QUARTER} beat)")
    per_beat, notes, written = source.ticks_per_beat, [], []
    for name, track in zip(source.track_names, source.tracks, strict=True):
        fixed_hand = RIGHT if "right" in name.lower() else (LEFT if "left" in name.lower() else None)
        for note in track:
            hand = fixed_hand if fixed_hand is not None else (LEFT if note.pitch < split else RIGHT)
            written.append((hand, note))
            if not 21 <= note.pitch <= 108:
                continue
            onset = round(note.start_ticks * STEPS_PER_QUARTER / per_beat)
            duration = max(1, round(note.end_ticks * STEPS_PER_QUARTER / per_beat) - onset)
            notes.append(NoteEvent(onset, hand, note.pitch, duration, note.velocity))
    tempo = source.tempo_changes[0][1]
    return canonicalize(notes)[0], bar_steps, tempo, SourceNotes(per_beat, written)


def read_midi(path: str | Path, split: int = 60) -> tuple[list[NoteEvent], int, int]:
    """(notes on the grid, bar length in steps, tempo in microseconds per quarter): ``read_source``
    without the notes as written."""
    return read_source(path, split)[:3]


def _piano_notes(notes: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
    """(start, end, pitch, velocity) of one track as a piano plays them: a note struck again ends
    at the new onset, an exact duplicate and a zero-length note are dropped."""
    kept: list[tuple[int, int, int, int]] = []
    for start, end, pitch, velocity in sorted(notes, key=lambda n: (n[2], n[0], -n[1])):
        if end <= start:
            continue
        if kept and kept[-1][2] == pitch:  # sorted by pitch: the last kept note of this key
            if kept[-1][0] == start:
                continue
            if kept[-1][1] > start:
                kept[-1] = (kept[-1][0], start, pitch, kept[-1][3])
        kept.append((start, end, pitch, velocity))
    return kept


def write_midi(
    notes: Sequence[NoteEvent], path: str | Path, bar_steps: int, tempo: int, source: SourceNotes | None = None
) -> None:
    """Type-1 file: a conductor track, then tracks ``right`` and ``left``: ``source``'s notes as
    written, then ``notes`` (grid). With a ``source`` the file's resolution is the source's (times
    copied exactly), made a multiple of the grid's 12 steps per beat where MIDI allows it."""
    per_beat = OUTPUT_TICKS_PER_BEAT
    if source is not None:
        per_beat = math.lcm(source.ticks_per_beat, STEPS_PER_QUARTER)
        if per_beat > MAX_TICKS_PER_BEAT:  # only the grid's notes are then rounded to the ticks
            per_beat = source.ticks_per_beat
    midi = mido.MidiFile(type=1, ticks_per_beat=per_beat)
    numerator = (
        bar_steps // STEPS_PER_QUARTER
        if bar_steps % STEPS_PER_QUARTER == 0
        else bar_steps * 2 // STEPS_PER_QUARTER
    )
    denominator = 4 if bar_steps % STEPS_PER_QUARTER == 0 else 8
    midi.tracks.append(
        mido.MidiTrack(
            [
                mido.MetaMessage("set_tempo", tempo=tempo),
                mido.MetaMessage("time_signature", numerator=numerator, denominator=denominator),
            ]
        )
    )

    def ticks(steps: int) -> int:
        return round(steps * per_beat / STEPS_PER_QUARTER)

    scale = per_beat // source.ticks_per_beat if source is not None else 1
    for hand, name in ((RIGHT, "right"), (LEFT, "left")):
        played = [
            (n.start_ticks * scale, n.end_ticks * scale, n.pitch, n.velocity)
            for h, n in (source.notes if source is not None else [])
            if h == hand
        ]
        played += [
            (ticks(n.onset_steps), ticks(n.end_steps), n.pitch, n.velocity) for n in notes if n.hand == hand
        ]
        events = []
        for start, end, pitch, velocity in _piano_notes(played):
            events.append((end, 0, pitch, 0))
            events.append((start, 1, pitch, velocity))
        track, now = mido.MidiTrack([mido.MetaMessage("track_name", name=name)]), 0
        for tick, is_on, pitch, velocity in sorted(events):
            kind = "note_on" if is_on else "note_off"
            track.append(mido.Message(kind, note=pitch, velocity=velocity, time=tick - now))
            now = tick
        midi.tracks.append(track)
    midi.save(str(path))


def prompt_window(notes: Sequence[NoteEvent], bar_steps: int, context_bars: int = 4
                  ) -> tuple[int, int, list[NoteEvent]]:
    """The prompt's first step, the bar line after the notes' end (both in the notes' time) and
    the notes as played that start in between: the last ``context_bars`` bars."""
    end = max((n.end_steps for n in notes), default=0)
    prompt_end = -(-end // bar_steps) * bar_steps if end else bar_steps
    prompt_start = max(0, prompt_end - context_bars * bar_steps)
    return prompt_start, prompt_end, [n for n in notes if prompt_start <= n.onset_steps < prompt_end]


def prompt_tokens(
    notes: Sequence[NoteEvent], bar_steps: int, context_bars: int = 4, valence_lead: int = 0
) -> tuple[list[int], int, np.ndarray]:
    """The prompt: tokens of the last ``context_bars`` bars, padded to the next bar line; that
    bar line in the notes' time; and each token's (valence, arousal) computed from the notes
    as in training (``valence_lead``: the model's ``valence_lead``). Notes still sounding at the
    bar line are cut there."""
    prompt_start, prompt_end, played = prompt_window(notes, bar_steps, context_bars)
    context = canonicalize(
        [
            NoteEvent(n.onset_steps - prompt_start, n.hand, n.pitch, min(n.end_steps, prompt_end) - n.onset_steps,
                      n.velocity)
            for n in played
        ]
    )[0]
    bar_lines = list(range(0, prompt_end - prompt_start, bar_steps))
    prompt = [SOS] + encode(context, bar_lines)
    reached = max([n.end_steps for n in context] + bar_lines)
    tail = prompt_end - prompt_start - reached
    prompt += (
        encode([], [tail])[:-1] if tail > 0 else []
    )  # shifts up to the bar line; generation writes its BAR
    labels = token_va(prompt, valence_arousal(context, prompt_end - prompt_start, valence_lead=valence_lead))
    return prompt, prompt_end, labels


VaSetting = tuple[float, float] | Callable[[float], Sequence[float]] | None
PROMPT_LABELS = ("announce", "target", "own")


def announce_labels(
    labels: np.ndarray, prompt: Sequence[int], target: Sequence[float], valence_lead: int, window_quarters: int = 8
) -> np.ndarray:
    """The prompt's own labels moved toward ``target`` as the training labels would be if the
    music after the prompt had the target's valence and arousal: a label averages a window of
    ``window_quarters`` quarters (the valence's centred ``valence_lead`` quarters later), and
    the part of that window after the prompt's end (its time shifts' total) counts as the target."""
    frames = token_steps(prompt) / STEPS_PER_QUARTER
    end = sum(shift_steps(int(t)) for t in prompt if is_shift(int(t))) / STEPS_PER_QUARTER
    moved = np.array(labels, dtype=np.float32)
    for column, lead in ((0, valence_lead), (1, 0)):
        ahead = np.clip((frames + lead + window_quarters / 2 - end) / window_quarters, 0.0, 1.0)
        moved[:, column] = (1 - ahead) * moved[:, column] + ahead * float(target[column])
    return moved


def continue_notes(
    model: ContinuationModel,
    notes: Sequence[NoteEvent],
    bar_steps: int,
    bars: int,
    config: SamplingConfig,
    context_bars: int = 4,
    style: int = 0,
    va: VaSetting = None,
    prompt_labels: str = "target",
    register: str = "free",
    grid: str = "free",
) -> list[NoteEvent]:
    """The generated notes, in the input's time, starting at the bar line after its last note.

    ``va``: None = the music's own labels (the prompt's, its last value held on; no mode
    steering), a constant (valence, arousal), or a function of the beats after the prompt's end.
    With a ``va``, the prompt's labels (``prompt_labels``): "target" = ``va`` throughout (what
    the live engine does); "announce" = its own labels moving toward ``va`` over the last
    labelling window, as training labels look at music that turns (``announce_labels``); "own" =
    the music's own labels up to the end. ``register``: "prompt" = each hand near the prompt's
    register (``sample.prompt_register``), "free" = ``config``'s ranges. ``grid``: "prompt" = new
    notes start and end on the prompt's rhythmic grid (``sample.prompt_grid``), "free" = any step."""
    if prompt_labels not in PROMPT_LABELS:
        raise ValueError(f"prompt_labels must be one of {PROMPT_LABELS}, got {prompt_labels!r}")
    if register not in REGISTERS:
        raise ValueError(f"register must be one of {REGISTERS}, got {register!r}")
    prompt, prompt_end, labels = prompt_tokens(notes, bar_steps, context_bars, model.valence_lead)
    if grid not in GRIDS:
        raise ValueError(f"grid must be one of {GRIDS}, got {grid!r}")
    if register == "prompt":
        config = prompt_register(prompt, config, played=prompt_window(notes, bar_steps, context_bars)[2])
    if grid == "prompt":  # an asked arousal sets the note lengths, not the prompt's
        config = prompt_grid(prompt, replace(config, bar_steps=bar_steps), cap_notes=va is None)
    if va is not None:  # an asked arousal sets the density and rhythm, not the prompt's
        config = replace(config, density_bias=0.0, pattern_bias=0.0)
    if va is None:
        setting, prompt_va = (float(labels[-1, 0]), float(labels[-1, 1])), labels
        config = replace(config, mode_steer=0.0)  # steering follows a valence the user asks for
    elif prompt_labels == "target":
        setting, prompt_va = va, None
    elif prompt_labels == "own":
        setting, prompt_va = va, labels
    else:
        first = np.clip(np.asarray(va(0.0) if callable(va) else va, dtype=np.float64).reshape(2), -1.0, 1.0)
        setting, prompt_va = va, announce_labels(labels, prompt, first, model.valence_lead)
    generation = generate(
        model, prompt, bars, replace(config, bar_steps=bar_steps), style, setting, prompt_va=prompt_va
    )
    generated = decode(generation.tokens)[0]
    return [
        NoteEvent(n.onset_steps + prompt_end, n.hand, n.pitch, n.duration_steps, n.velocity)
        for n in generated
    ]

"""POP909 songs (``NNN.mid`` MELODY track, ``chord_midi.txt``, ``beat_midi.txt``,
``key_audio.txt``) on the lead-sheet 16th grid of ``leadsheet_corpus`` (numpy + mido)."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np

from .affect import normalizing_shift
from .chord_symbols import ChordEvent, SymbolMapper, harte_chord, root_pc
from .leadsheet_corpus import MAX_STEPS, STEPS_PER_QUARTER, STYLES, LeadSheet, key_code, paint_chords, transpose_sheet
from .vocab import NC

__all__ = ["TempoMap", "read_pop909_song"]


class TempoMap:
    """Seconds -> quarter notes through a MIDI file's set_tempo events (all tracks merged)."""

    def __init__(self, midi) -> None:
        changes = []
        for track in midi.tracks:
            tick = 0
            for message in track:
                tick += message.time
                if message.type == "set_tempo":
                    changes.append((tick, message.tempo))
        changes.sort()
        if not changes or changes[0][0] > 0:
            changes.insert(0, (0, 500_000))
        self.resolution = midi.ticks_per_beat
        ticks, seconds, tempos = [], [], []
        elapsed, previous_tick, previous_tempo = 0.0, 0, changes[0][1]
        for tick, tempo in changes:
            elapsed += (tick - previous_tick) * previous_tempo / 1e6 / self.resolution
            ticks.append(tick)
            seconds.append(elapsed)
            tempos.append(tempo)
            previous_tick, previous_tempo = tick, tempo
        self.ticks, self.seconds = np.array(ticks, float), np.array(seconds)
        self.tempos = np.array(tempos, float)

    def ticks_at(self, seconds) -> np.ndarray:
        """MIDI ticks (float) at the given seconds of the file's timeline."""
        seconds = np.asarray(seconds, dtype=np.float64)
        index = np.maximum(np.searchsorted(self.seconds, seconds, side="right") - 1, 0)
        return self.ticks[index] + (seconds - self.seconds[index]) * 1e6 / self.tempos[index] * self.resolution

    def quarters(self, seconds) -> np.ndarray:
        return self.ticks_at(seconds) / self.resolution


def _read_rows(path: Path, columns: int) -> list[list[str]]:
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) < columns:
            raise ValueError(f"{path.name} line {number}: expected {columns} fields, got {line!r}")
        rows.append(fields)
    if not rows:
        raise ValueError(f"{path.name} is empty")
    return rows


def _melody_notes(midi) -> list[tuple[int, int, int]]:
    """(start tick, end tick, pitch) of the MELODY track (the first track when none is named so)."""
    tracks = [t for t in midi.tracks if t.name.strip().upper() == "MELODY"] or list(midi.tracks)[:1]
    notes, sounding, tick = [], {}, 0
    for message in tracks[0]:
        tick += message.time
        if message.type == "note_on" and message.velocity > 0:
            sounding.setdefault(message.note, tick)
        elif message.type in ("note_off", "note_on") and message.note in sounding:
            notes.append((sounding.pop(message.note), tick, message.note))
    return notes


def read_pop909_song(folder: Path, mapper: SymbolMapper, style: int = STYLES.index("pop")) -> LeadSheet:
    """One POP909 folder (NNN.mid, chord_midi.txt, beat_midi.txt, key_audio.txt) -> LeadSheet.

    Beats and chords are in seconds of the MIDI file's own timeline: they become quarter notes
    through its tempo map, counted from the first downbeat (a pickup gets whole bars before it).
    Metre: beat_midi's second column marks every 2nd or 3rd beat, its third every 4th or 6th;
    bars are the third column's marks when the second groups in twos (4/4), else the second's (3/4).
    """
    import mido

    name = folder.name
    midi_path = folder / f"{name}.mid"
    for path in (midi_path, folder / "chord_midi.txt", folder / "beat_midi.txt"):
        if not path.is_file():
            raise ValueError(f"{folder}: missing {path.name}")
    midi = mido.MidiFile(midi_path)
    tempo = TempoMap(midi)
    beats = _read_rows(folder / "beat_midi.txt", 3)
    beat_q = tempo.quarters([float(r[0]) for r in beats])
    duple_marks = np.array([float(r[1]) > 0.5 for r in beats])
    quad_marks = np.array([float(r[2]) > 0.5 for r in beats])
    groups = np.diff(np.flatnonzero(duple_marks))
    triple = len(groups) > 0 and Counter(groups.tolist()).most_common(1)[0][0] == 3
    downbeats = beat_q[duple_marks if triple else quad_marks]
    if len(downbeats) == 0:
        downbeats = beat_q[:1]
    beats_per_bar = 3 if triple else 4
    bar_q = float(np.median(np.diff(downbeats))) if len(downbeats) > 1 else float(beats_per_bar)

    ticks = midi.ticks_per_beat
    notes = [(s / ticks, e / ticks, p) for s, e, p in _melody_notes(midi)]
    if not notes:
        raise ValueError(f"{folder}: MELODY track has no notes")
    chord_rows = _read_rows(folder / "chord_midi.txt", 3)
    chord_q = tempo.quarters([[float(r[0]), float(r[1])] for r in chord_rows])
    labels = [r[2] for r in chord_rows]
    first_event = min(min(n[0] for n in notes), min(q[0] for q, lab in zip(chord_q, labels) if lab != "N")
                      if any(lab != "N" for lab in labels) else math.inf)
    origin = float(downbeats[0])
    if first_event < origin - 1e-6:
        origin -= math.ceil((origin - first_event - 1e-6) / bar_q) * bar_q
    end_q = max(max(n[1] for n in notes), float(chord_q[:, 1].max()))
    steps = min(MAX_STEPS, int(math.ceil((end_q - origin) * STEPS_PER_QUARTER)))

    def step(quarters: float) -> int:
        return int(round((float(quarters) - origin) * STEPS_PER_QUARTER))

    melody_pitch = np.full(steps, -1, dtype=np.int16)
    melody_onset = np.zeros(steps, dtype=np.uint8)
    for start_q, end_q_note, pitch in notes:
        start = step(start_q)
        end = min(steps, max(step(end_q_note), start + 1))
        if 0 <= start < steps:
            melody_pitch[start:end] = np.maximum(melody_pitch[start:end], pitch)
            melody_onset[start] = 1
    events = []
    for (start_q, stop_q), label in zip(chord_q, labels):
        token, bass = harte_chord(label, mapper)
        events.append(ChordEvent(step(start_q), token, bass))
        events.append(ChordEvent(step(stop_q), NC, -1))  # a gap until the next label is no chord
    # a chord ending where the next starts: keep the later label's event at that step
    merged: dict[int, ChordEvent] = {}
    for event in events:
        if event.token != NC or event.step not in merged:
            merged[event.step] = event
    chord, bass, chord_onset = paint_chords(list(merged.values()), steps)

    bar_start = np.zeros(steps, dtype=np.uint8)
    beat_start = np.zeros(steps, dtype=np.uint8)
    pickup_bars = np.arange(origin, float(downbeats[0]) - 1e-6, bar_q)
    for position in [*pickup_bars, *downbeats]:
        if 0 <= step(position) < steps:
            bar_start[step(position)] = 1
    pickup_beats = np.arange(origin, float(beat_q[0]) - 1e-6, 1.0)
    for position in [*pickup_beats, *beat_q]:
        if 0 <= step(position) < steps:
            beat_start[step(position)] = 1
    bar_start[0] = 1

    key_codes = np.full(steps, -1, dtype=np.int8)
    key_path = folder / "key_audio.txt"
    tonic, mode = 0, "major"
    if key_path.is_file():
        keys = _read_rows(key_path, 3)
        spans = []
        for start_s, end_s, label in ((float(r[0]), float(r[1]), r[2]) for r in keys):
            root_name, _, quality = label.partition(":")
            key_mode = "minor" if quality.startswith("min") else "major"
            spans.append((end_s - start_s, start_s, root_pc(root_name), key_mode))
        # the key of the longest span names the song; each span's key holds from its start
        _, _, tonic, mode = max(spans)
        for _, start_s, key_tonic, key_mode in sorted(spans, key=lambda s: s[1]):
            key_codes[max(0, step(float(tempo.quarters(start_s)))):] = key_code(key_tonic, key_mode)
        first_span = min(spans, key=lambda s: s[1])
        key_codes[key_codes < 0] = key_code(first_span[2], first_span[3])
    sheet = LeadSheet(f"pop909/{name}", "pop909", style, melody_pitch, melody_onset, chord, bass, chord_onset,
                      bar_start, beat_start, key_codes, (beats_per_bar, 4), 0, mode, tonic)
    transpose_sheet(sheet, normalizing_shift(tonic, mode))
    return sheet



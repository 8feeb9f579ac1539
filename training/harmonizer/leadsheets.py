"""Lead-sheet training data for the harmonizer: OpenEWLD (MusicXML) and POP909 (MIDI + annotations).

    python -m training.harmonizer.leadsheets build [--datasets DIR] [--cache DIR] [--sets ...] [--limit N]
    python -m training.harmonizer.leadsheets stats [--cache DIR] [--json]

``build`` converts every song to the harmonizer's 16th grid (the raw-cache layout of
``training.harmonizer.data``, plus the human chord labels, metric beats and local keys), writes
``leadsheets_q16_v1.npz`` and ``leadsheets_report.json`` (chord-symbol coverage) under the cache
folder (``core.paths.cache_dir("harmonizer")``), rewrites the committed split lists in
``training/harmonizer/splits/`` and prints the statistics. Progress goes to stderr.

The data sets are read from ``--datasets`` (default ``$SCOREBRIDGE_DATASETS``, else
``../shared/datasets`` beside the repository root): ``openewld/`` and ``pop909/POP909/``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import sqlite3
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.atomic import atomic_output
from core.keys import key_correlations
from engines.harmonizer.affect import normalizing_shift, valence_arousal
from engines.harmonizer.dataset import DEFAULT_CACHE
from engines.harmonizer.dataset import STYLES as CLASSICAL_STYLES
from engines.harmonizer.vocab import NC, NUM_QUALITIES, NUM_SPECIALS

from .chord_symbols import QUALITY_SETS, ChordEvent, SymbolMapper, harte_chord, music21_chord, root_pc

__all__ = [
    "STYLES",
    "GENRE_STYLE",
    "SETS",
    "CACHE_FILE",
    "REPORT_FILE",
    "SPLITS_DIR",
    "LeadSheet",
    "ChordEvent",
    "SymbolMapper",
    "default_datasets",
    "harte_chord",
    "music21_chord",
    "parse_openewld_score",
    "read_pop909_song",
    "assign_splits",
    "sheets_to_arrays",
    "statistics",
    "main",
]

# The shipped model's three styles keep their ids (its card lists them); lead-sheet styles follow.
STYLES: tuple[str, ...] = (*CLASSICAL_STYLES, "pop", "rock", "jazz", "stage", "folk")
# OpenEWLD's one genre per work (discogs) -> style. The rare genres go to the nearest of the five;
# "Classical" (Fuer Elise, Liebestraum ... as lead sheets) to the existing classical style.
GENRE_STYLE = {
    "Pop": "pop",
    "Rock": "rock",
    "Jazz": "jazz",
    "Stage & Screen": "stage",
    "Folk, World, & Country": "folk",
    "Funk / Soul": "pop",
    "Electronic": "pop",
    "Reggae": "pop",
    "Non-Music": "pop",
    "Blues": "jazz",
    "Latin": "jazz",
    "Brass & Military": "folk",
    "Classical": "classical",
}
UNLABELLED_STYLE = "folk"  # works without a genre in the database: mostly 19th-century songs
SETS = ("openewld", "pop909")
CACHE_FILE = "leadsheets_q16_v1.npz"
REPORT_FILE = "leadsheets_report.json"
SPLITS_DIR = Path(__file__).resolve().parent / "splits"
SPLIT_SEED = "scorebridge-leadsheets-v1"
DATASETS_ENV = "SCOREBRIDGE_DATASETS"
STEPS_PER_QUARTER = 4
KEY_NAMES = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MAX_STEPS = 16_000
PIECE_FIELDS = ("piece_id", "dataset", "style", "time_signature", "shift", "mode", "tonic", "split")
STEP_FIELDS = (
    "melody_pitch", "melody_onset", "texture", "voices", "struck", "bass", "chord",
    "chord_onset", "bar_start", "beat_start", "key", "va",
)


def default_datasets() -> Path:
    """``$SCOREBRIDGE_DATASETS``, else ``../shared/datasets`` next to the repository root."""
    override = os.environ.get(DATASETS_ENV)
    if override:
        return Path(override).expanduser()
    return Path(__file__).resolve().parents[2].parent / "shared" / "datasets"


# ---------------------------------------------------------------- one song on the 16th grid

@dataclass
class LeadSheet:
    """One song on the 16th grid, transposed to C major / A minor by its annotated key."""

    piece_id: str
    dataset: str
    style: int
    melody_pitch: np.ndarray  # int16 [N], -1 rest
    melody_onset: np.ndarray  # uint8 [N]
    chord: np.ndarray  # int16 [N], human chord token, NC where none
    bass: np.ndarray  # int8 [N], the chord's bass pitch class (slash bass or root), -1 none
    chord_onset: np.ndarray  # uint8 [N], 1 where a chord symbol starts (also a repeated one)
    bar_start: np.ndarray  # uint8 [N]
    beat_start: np.ndarray  # uint8 [N], metric beats: dotted quarters in x/8, halves in x/2
    key: np.ndarray  # int8 [N], local key after transposition: tonic pc, +12 for minor; -1 unknown
    time_signature: tuple[int, int]
    shift: int
    mode: str
    tonic: int  # annotated tonic before transposition

    def __len__(self) -> int:
        return len(self.chord)


def _paint_chords(events: list[ChordEvent], steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    chord = np.full(steps, NC, dtype=np.int16)
    bass = np.full(steps, -1, dtype=np.int8)
    onset = np.zeros(steps, dtype=np.uint8)
    events = sorted(events, key=lambda e: e.step)
    for index, event in enumerate(events):
        start = max(0, event.step)
        end = events[index + 1].step if index + 1 < len(events) else steps
        if start >= min(end, steps):
            continue
        chord[start:end] = event.token
        bass[start:end] = event.bass
        onset[start] = event.token != NC
    return chord, bass, onset


def _transpose(sheet: LeadSheet, shift: int) -> None:
    sheet.shift = shift
    sheet.melody_pitch = np.where(sheet.melody_pitch >= 0, sheet.melody_pitch + shift, -1).astype(np.int16)
    chords = sheet.chord.astype(np.int64)
    inside = chords >= NUM_SPECIALS
    root, quality = np.divmod(chords - NUM_SPECIALS, NUM_QUALITIES)
    sheet.chord = np.where(inside, NUM_SPECIALS + ((root + shift) % 12) * NUM_QUALITIES + quality, chords).astype(
        np.int16)
    sheet.bass = np.where(sheet.bass >= 0, (sheet.bass.astype(np.int64) + shift) % 12, -1).astype(np.int8)
    key = sheet.key.astype(np.int64)
    sheet.key = np.where(key >= 0, (key % 12 + shift) % 12 + 12 * (key >= 12), -1).astype(np.int8)


def _key_code(tonic: int, mode: str) -> int:
    return tonic % 12 + (12 if mode == "minor" else 0)


def _section_key(major_tonic: int, stated: str | None, melody: np.ndarray, chords: np.ndarray) -> tuple[int, str]:
    """Major key of a signature or its relative minor: a stated minor mode wins; otherwise the
    Krumhansl-Kessler correlation of the melody and chord tones, with the last chord as a vote."""
    minor_tonic = (major_tonic + 9) % 12
    if stated == "minor":
        return minor_tonic, "minor"
    histogram = np.bincount(melody[melody >= 0] % 12, minlength=12).astype(np.float64)
    tones = _token_bitmaps()[chords.astype(np.int64)].sum(0).astype(np.float64)
    correlations = key_correlations(histogram + 0.5 * tones)
    major, minor = correlations[major_tonic], correlations[12 + minor_tonic]
    sounding = chords[chords >= NUM_SPECIALS].astype(np.int64)
    if len(sounding):
        root, quality = divmod(int(sounding[-1]) - NUM_SPECIALS, NUM_QUALITIES)
        third = 3 in QUALITY_SETS[quality]
        major += 0.2 * (root == major_tonic and not third)
        minor += 0.2 * (root == minor_tonic and third)
    return (minor_tonic, "minor") if minor > major else (major_tonic, "major")


def parse_openewld_score(score, piece_id: str, style: int, mapper: SymbolMapper) -> LeadSheet:
    """A music21 lead sheet -> LeadSheet (melody = top note of the part that has the chord symbols)."""
    from music21 import harmony, meter
    from music21 import key as m21key

    parts = list(score.parts) or [score]
    part = max(parts, key=lambda p: len(p.recurse().getElementsByClass(harmony.ChordSymbol)))
    flat = part.flatten()
    notes = [n for n in flat.notes if not isinstance(n, harmony.ChordSymbol) and float(n.quarterLength) > 0]
    symbols = list(flat.getElementsByClass(harmony.ChordSymbol))
    if not notes:
        raise ValueError(f"{piece_id}: no melody notes")
    if not symbols:
        raise ValueError(f"{piece_id}: no chord symbols")
    total = max(float(flat.highestTime), max(float(n.offset + n.quarterLength) for n in notes))
    steps = min(MAX_STEPS, int(math.ceil(total * STEPS_PER_QUARTER)))

    def step(quarters: float) -> int:
        return int(round(float(quarters) * STEPS_PER_QUARTER))

    melody_pitch = np.full(steps, -1, dtype=np.int16)
    melody_onset = np.zeros(steps, dtype=np.uint8)
    for note in notes:
        start = step(note.offset)
        end = min(steps, max(step(note.offset + note.quarterLength), start + 1))
        if start >= steps:
            continue
        melody_pitch[start:end] = np.maximum(melody_pitch[start:end], max(p.midi for p in note.pitches))
        tied = note.tie is not None and note.tie.type in ("stop", "continue")
        if not tied:
            melody_onset[start] = 1
    events = [ChordEvent(step(s.offset), *music21_chord(s, mapper)) for s in symbols]
    chord, bass, chord_onset = _paint_chords(events, steps)

    bar_start = np.zeros(steps, dtype=np.uint8)
    beat_start = np.zeros(steps, dtype=np.uint8)
    signature: meter.TimeSignature | None = None
    first_signature: tuple[int, int] | None = None
    measures = list(part.getElementsByClass("Measure"))
    for number, measure in enumerate(measures):
        if measure.timeSignature is not None:
            signature = measure.timeSignature
            first_signature = first_signature or (int(signature.numerator), int(signature.denominator))
        active = signature or meter.TimeSignature("4/4")
        offset, length = float(measure.offset), float(measure.duration.quarterLength)
        beat = float(active.beatDuration.quarterLength)
        bar = float(active.barDuration.quarterLength)
        if step(offset) < steps:
            bar_start[step(offset)] = 1
        # a short first measure is a pickup: its beats count back from the bar line
        phase = (length % beat) if number == 0 and length < bar - 1e-6 else 0.0
        position = offset + phase
        while position < offset + length - 1e-6:
            if step(position) < steps:
                beat_start[step(position)] = 1
            position += beat
    bar_start[0] = 1
    if not beat_start.any():
        beat_start[::STEPS_PER_QUARTER] = 1

    # Key signatures give the tonic up to major/relative minor (OpenEWLD's database reads every
    # one as major); each signature's section picks its mode from the melody and chords.
    signatures = [(max(0, step(k.offset)), int(k.sharps), getattr(k, "mode", None))
                  for k in flat.getElementsByClass(m21key.KeySignature)]
    if not signatures or signatures[0][0] > 0:
        signatures.insert(0, (0, signatures[0][1] if signatures else 0, None))
    key_codes = np.full(steps, -1, dtype=np.int8)
    sections = []
    for index, (start, sharps, stated) in enumerate(signatures):
        end = signatures[index + 1][0] if index + 1 < len(signatures) else steps
        if end <= start:
            continue
        major_tonic = (7 * sharps) % 12
        tonic, mode = _section_key(major_tonic, stated, melody_pitch[start:end], chord[start:end])
        key_codes[start:end] = _key_code(tonic, mode)
        sections.append((tonic, mode))
    tonic, mode = sections[0]
    sheet = LeadSheet(piece_id, "openewld", style, melody_pitch, melody_onset, chord, bass, chord_onset,
                      bar_start, beat_start, key_codes, first_signature or (4, 4), 0, mode, tonic)
    _transpose(sheet, normalizing_shift(tonic, mode))
    return sheet


# ---------------------------------------------------------------- POP909

class _TempoMap:
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

    def quarters(self, seconds) -> np.ndarray:
        seconds = np.asarray(seconds, dtype=np.float64)
        index = np.maximum(np.searchsorted(self.seconds, seconds, side="right") - 1, 0)
        ticks = self.ticks[index] + (seconds - self.seconds[index]) * 1e6 / self.tempos[index] * self.resolution
        return ticks / self.resolution


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
    tempo = _TempoMap(midi)
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
    chord, bass, chord_onset = _paint_chords(list(merged.values()), steps)

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
            key_codes[max(0, step(float(tempo.quarters(start_s)))):] = _key_code(key_tonic, key_mode)
        first_span = min(spans, key=lambda s: s[1])
        key_codes[key_codes < 0] = _key_code(first_span[2], first_span[3])
    sheet = LeadSheet(f"pop909/{name}", "pop909", style, melody_pitch, melody_onset, chord, bass, chord_onset,
                      bar_start, beat_start, key_codes, (beats_per_bar, 4), 0, mode, tonic)
    _transpose(sheet, normalizing_shift(tonic, mode))
    return sheet


# ---------------------------------------------------------------- sources, splits, cache

def openewld_sources(root: Path) -> list[tuple[str, Path, int]]:
    """(piece id, .mxl path, style id) per distinct lead sheet, in path order."""
    database = root / "OpenEWLD.db"
    if not database.is_file():
        raise FileNotFoundError(f"{database} missing (OpenEWLD's SQLite database)")
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        rows = connection.execute(
            "SELECT w.path_leadsheet, g.genre, g.occurrences FROM works w LEFT JOIN work_genres g ON g.id = w.id"
        ).fetchall()
    finally:
        connection.close()
    genres: dict[str, Counter] = {}
    for path, genre, occurrences in rows:
        genres.setdefault(path, Counter())
        if genre:
            genres[path][genre] += occurrences or 1
    sources = []
    for path in sorted(genres):
        file = root / path
        if not file.is_file():
            continue
        genre = genres[path].most_common(1)[0][0] if genres[path] else None
        style = GENRE_STYLE.get(genre, UNLABELLED_STYLE) if genre else UNLABELLED_STYLE
        piece_id = "openewld/" + path.removeprefix("dataset/")
        sources.append((piece_id, file, STYLES.index(style)))
    return sources


def song_group(piece_id: str) -> str:
    """Copies of one song (same title folder, any arranger) share a group and a split."""
    if piece_id.startswith("openewld/"):
        title = piece_id.rsplit("/", 2)[-2]
        return "openewld:" + re.sub(r"[^a-z0-9]+", "", re.sub(r"_\(.*?\)|\{.*?\}", "", title.lower()))
    return piece_id


def assign_splits(piece_ids: list[str], styles: list[int], seed: str = SPLIT_SEED) -> dict[str, str]:
    """Seeded 80/10/10 split by song, per data set and style: songs sorted by a seeded hash, the
    first tenth to test and the next to validation (at least one each from three songs on)."""
    group_style: dict[str, tuple[str, int]] = {}
    for piece_id, style in zip(piece_ids, styles):
        group_style.setdefault(song_group(piece_id), (piece_id.split("/", 1)[0], style))
    by_style: dict[tuple[str, int], list[str]] = {}
    for group, stratum in group_style.items():
        by_style.setdefault(stratum, []).append(group)
    split_of_group = {}
    for groups in by_style.values():
        groups.sort(key=lambda g: hashlib.sha256(f"{seed}:{g}".encode()).hexdigest())
        held = max(1, round(len(groups) / 10)) if len(groups) >= 3 else 0
        for index, group in enumerate(groups):
            split_of_group[group] = "test" if index < held else "val" if index < 2 * held else "train"
    return {piece_id: split_of_group[song_group(piece_id)] for piece_id in piece_ids}


def sheets_to_arrays(sheets: list[LeadSheet]) -> dict[str, np.ndarray]:
    """The raw-cache layout of ``training.harmonizer.data`` plus the lead-sheet fields.

    ``texture``/``voices`` hold the human chord's pitch classes with its bass and ``struck`` them
    at chord onsets, so code written for the classical cache can read these pieces too.
    """
    splits = assign_splits([s.piece_id for s in sheets], [s.style for s in sheets])
    lengths = np.array([len(s) for s in sheets], dtype=np.int64)
    arrays: dict[str, np.ndarray] = {
        "piece_id": np.array([s.piece_id for s in sheets]),
        "dataset": np.array([s.dataset for s in sheets]),
        "style": np.array([s.style for s in sheets], dtype=np.int64),
        "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        "time_signature": np.array([s.time_signature for s in sheets], dtype=np.int64).reshape(-1, 2),
        "shift": np.array([s.shift for s in sheets], dtype=np.int64),
        "mode": np.array([s.mode for s in sheets]),
        "tonic": np.array([s.tonic for s in sheets], dtype=np.int64),
        "split": np.array([splits[s.piece_id] for s in sheets]),
        "styles": np.array(STYLES),
    }
    per_step: dict[str, list[np.ndarray]] = {name: [] for name in STEP_FIELDS}
    bitmaps = _token_bitmaps()
    for sheet in sheets:
        texture = bitmaps[sheet.chord.astype(np.int64)]
        has_bass = sheet.bass >= 0
        texture[np.flatnonzero(has_bass), sheet.bass[has_bass]] = 1
        struck = texture * sheet.chord_onset[:, None]
        va = valence_arousal(sheet.melody_pitch, sheet.melody_onset, texture, np.zeros(len(sheet)), STEPS_PER_QUARTER)
        values = {
            "melody_pitch": sheet.melody_pitch, "melody_onset": sheet.melody_onset, "texture": texture,
            "voices": texture.copy(), "struck": struck, "bass": sheet.bass, "chord": sheet.chord,
            "chord_onset": sheet.chord_onset, "bar_start": sheet.bar_start, "beat_start": sheet.beat_start,
            "key": sheet.key, "va": va,
        }
        for name in STEP_FIELDS:
            per_step[name].append(values[name])
    for name in STEP_FIELDS:
        arrays[name] = np.concatenate(per_step[name]) if sheets else np.zeros(0)
    return arrays


def _token_bitmaps() -> np.ndarray:
    from engines.harmonizer.vocab import token_bitmaps

    return token_bitmaps().astype(np.uint8)


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build(datasets: Path, cache: Path, sets: tuple[str, ...] = SETS, limit: int | None = None,
          splits_dir: Path = SPLITS_DIR) -> tuple[dict[str, np.ndarray], dict]:
    """Parse the chosen sets, write the cache, the coverage report and the split lists."""
    from music21 import converter

    jobs: list[tuple[str, object]] = []
    if "openewld" in sets:
        jobs.extend(("openewld", source) for source in openewld_sources(datasets / "openewld")[:limit])
    if "pop909" in sets:
        root = datasets / "pop909" / "POP909"
        if not root.is_dir():
            raise FileNotFoundError(f"{root} missing (POP909's song folders)")
        folders = sorted(p for p in root.iterdir() if p.is_dir() and p.name.isdigit())[:limit]
        jobs.extend(("pop909", folder) for folder in folders)
    mappers = {name: SymbolMapper() for name in SETS}
    sheets, skipped = [], []
    started = time.time()
    for index, (dataset, job) in enumerate(jobs):
        try:
            if dataset == "openewld":
                piece_id, path, style = job
                score = converter.parse(path, forceSource=True)
                sheets.append(parse_openewld_score(score, piece_id, style, mappers[dataset]))
            else:
                sheets.append(read_pop909_song(job, mappers[dataset]))
        except Exception as error:  # noqa: BLE001 - one bad song must not stop a build; each is listed
            skipped.append(f"{dataset} {job if dataset == 'pop909' else job[0]}: {type(error).__name__}: {error}")
        if (index + 1) % 50 == 0 or index + 1 == len(jobs):
            _progress(f"[{index + 1}/{len(jobs)}] kept {len(sheets)} skipped {len(skipped)} "
                      f"{time.time() - started:.0f}s")
    if not sheets:
        raise ValueError("no song could be read; see the skipped list: " + "; ".join(skipped[:5]))
    arrays = sheets_to_arrays(sheets)
    cache.mkdir(parents=True, exist_ok=True)
    with atomic_output(cache / CACHE_FILE) as temporary, open(temporary, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    report = {
        name: {
            "symbols": mapper.symbols,
            "outcomes": dict(mapper.outcomes.most_common()),
            "out_of_vocabulary": sum(mapper.out_of_vocabulary.values()),
            "out_of_vocabulary_kinds": dict(mapper.out_of_vocabulary.most_common()),
        }
        for name, mapper in mappers.items() if name in sets
    }
    report["skipped"] = skipped
    (cache / REPORT_FILE).write_text(json.dumps(report, indent=1) + "\n")
    if limit is None:
        splits_dir.mkdir(parents=True, exist_ok=True)
        for dataset in sets:
            for split in ("train", "val", "test"):
                ids = [str(p) for p, d, s in zip(arrays["piece_id"], arrays["dataset"], arrays["split"])
                       if d == dataset and s == split]
                (splits_dir / f"{dataset}_{split}.txt").write_text("\n".join(ids) + "\n")
    _progress(f"wrote {cache / CACHE_FILE}: {len(sheets)} songs, {len(skipped)} skipped")
    return arrays, report


def load(cache: Path = DEFAULT_CACHE) -> dict[str, np.ndarray]:
    path = Path(cache) / CACHE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing; run `python -m training.harmonizer.leadsheets build`")
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


# ---------------------------------------------------------------- statistics

def _changes(chord: np.ndarray) -> int:
    """Chord changes: a chord token unlike the previous chord (no-chord gaps are skipped)."""
    chords = chord[chord != NC]
    return int((chords[1:] != chords[:-1]).sum()) if len(chords) else 0


def statistics(arrays: dict[str, np.ndarray]) -> dict:
    """Songs, bars, beats, chords, changes per bar per (set, style); keys and metres per set."""
    styles = [str(s) for s in arrays.get("styles", STYLES)]
    out: dict = {}
    offsets = arrays["offsets"]
    for index in range(len(arrays["piece_id"])):
        dataset, style = str(arrays["dataset"][index]), styles[int(arrays["style"][index])]
        lo, hi = offsets[index], offsets[index + 1]
        chord, onset = arrays["chord"][lo:hi], arrays["chord_onset"][lo:hi]
        has_chord = np.flatnonzero(chord != NC)
        bars = arrays["bar_start"][lo:hi]
        # bars from the first to the last chord: harmonic rhythm where there is harmony
        span_bars = int(bars[has_chord[0]: has_chord[-1] + 1].sum()) + (0 if bars[has_chord[0]] else 1) \
            if len(has_chord) else 0
        row = out.setdefault(dataset, {"styles": {}, "keys": Counter(), "metres": Counter(),
                                       "splits": Counter()})
        entry = row["styles"].setdefault(style, Counter())
        entry["songs"] += 1
        entry["bars"] += int(bars.sum())
        entry["beats"] += int(arrays["beat_start"][lo:hi].sum())
        entry["chord_symbols"] += int(onset.sum())
        entry["chord_changes"] += _changes(chord)
        entry["bars_with_chords"] += span_bars
        entry["no_chord_16ths"] += int((chord == NC).sum())
        entry["16ths"] += int(hi - lo)
        tonic = (int(arrays["tonic"][index]))
        row["keys"][f"{KEY_NAMES[tonic]} {arrays['mode'][index]}"] += 1
        row["metres"]["/".join(str(int(v)) for v in arrays["time_signature"][index])] += 1
        row["splits"][str(arrays["split"][index])] += 1
    for row in out.values():
        for entry in row["styles"].values():
            entry["changes_per_bar"] = round(entry["chord_changes"] / max(1, entry["bars_with_chords"]), 3)
            entry["symbols_per_bar"] = round(entry["chord_symbols"] / max(1, entry["bars_with_chords"]), 3)
            entry["no_chord_share"] = round(entry["no_chord_16ths"] / max(1, entry["16ths"]), 3)
        for name in ("keys", "metres", "splits"):
            row[name] = dict(row[name].most_common())
        row["styles"] = {name: dict(entry) for name, entry in row["styles"].items()}
    return out


def _print_table(stats: dict, report: dict | None) -> None:
    header = f"{'set':9} {'style':10} {'songs':>5} {'bars':>6} {'beats':>6} {'chords':>6} {'changes/bar':>11}"
    print(header)
    for dataset, row in stats.items():
        for style, entry in row["styles"].items():
            print(f"{dataset:9} {style:10} {entry['songs']:5d} {entry['bars']:6d} {entry['beats']:6d} "
                  f"{entry['chord_symbols']:6d} {entry['changes_per_bar']:11.2f}")
    for dataset, row in stats.items():
        print(f"{dataset} splits: {row['splits']}")
        print(f"{dataset} metres: {row['metres']}")
        print(f"{dataset} keys: {row['keys']}")
        if report and dataset in report:
            coverage = report[dataset]
            print(f"{dataset} chord symbols: {coverage['symbols']}, out of vocabulary "
                  f"{coverage['out_of_vocabulary']}: {coverage['out_of_vocabulary_kinds']}")
            print(f"{dataset} mapping: {coverage['outcomes']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.harmonizer.leadsheets",
        description="Build the lead-sheet training data (OpenEWLD, POP909) for the harmonizer.")
    parser.add_argument("command", choices=["build", "stats"])
    parser.add_argument("--datasets", type=Path, default=None,
                        help=f"folder holding openewld/ and pop909/ (default ${DATASETS_ENV}, else "
                             "../shared/datasets beside the repository root)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"cache folder (default {DEFAULT_CACHE})")
    parser.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    parser.add_argument("--limit", type=int, default=None,
                        help="read only the first N songs of each set (the split lists are then left alone)")
    parser.add_argument("--json", action="store_true", help="print the statistics as JSON")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            datasets = args.datasets or default_datasets()
            if not datasets.is_dir():
                raise FileNotFoundError(f"datasets folder {datasets} not found; give --datasets or ${DATASETS_ENV}")
            arrays, report = build(datasets, args.cache, tuple(args.sets), args.limit)
        else:
            arrays = load(args.cache)
            report_path = args.cache / REPORT_FILE
            report = json.loads(report_path.read_text()) if report_path.is_file() else None
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    stats = statistics(arrays)
    if args.json:
        print(json.dumps({"statistics": stats, "coverage": report}, indent=1))
    else:
        _print_table(stats, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

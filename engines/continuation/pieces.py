"""Two-hand songs (lead + accompaniment) read from POP909 folders and music21 keyboard scores,
in beats; the hand rule for POP909 (which has no hands) is ``assign_hands``.

The training corpus (``training.continuation.twohands``) and ``scorebridge eval continuation``
(held-out prompts) both read songs through here, so the evaluation sees the hands the model was
trained on. numpy, mido and music21 only.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from engines.continuation.corpus import split_of
from engines.harmonizer.pop909 import TempoMap

__all__ = [
    "LOWER",
    "SPLIT_SEED",
    "UPPER",
    "Song",
    "assign_hands",
    "read_music21",
    "read_pop909",
    "seconds_to_ticks",
    "split_of_song",
]

SPLIT_SEED = "scorebridge-twohands-v1"
UPPER, LOWER = 0, 1
UNISON_WINDOW = 0.125  # beats: a PIANO unison of the tune starting this close is a doubling


@dataclass
class Song:
    """One song's notes in beats: rows (pitch, start, end, velocity, hand)."""

    song_id: str
    source: str
    key: str
    time_signature: str
    notes: np.ndarray  # float64 (n, 5)
    counters: dict[str, int] = field(default_factory=dict)


# ---------------------------------------------------------------- time


def seconds_to_ticks(midi, seconds) -> np.ndarray:
    """MIDI ticks (float) at the given seconds of the file's timeline, through its tempo map."""
    return TempoMap(midi).ticks_at(seconds)


# ---------------------------------------------------------------- POP909


def _track_notes(track) -> list[tuple[int, int, int, int]]:
    """(start tick, end tick, pitch, velocity); a re-struck sounding pitch ends the held one."""
    notes, sounding, tick = [], {}, 0
    for message in track:
        tick += message.time
        if message.type not in ("note_on", "note_off"):
            continue
        if message.note in sounding:
            start, velocity = sounding.pop(message.note)
            if tick > start:
                notes.append((start, tick, message.note, velocity))
        if message.type == "note_on" and message.velocity > 0:
            sounding[message.note] = (tick, message.velocity)
    return notes


def _rows(path: Path, columns: int) -> list[list[str]]:
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    bad = next((r for r in rows if len(r) < columns), None)
    if not rows or bad is not None:
        raise ValueError(f"{path.name}: expected rows of {columns} fields")
    return rows


def read_pop909(folder: Path) -> Song:
    """One POP909 folder -> a Song with hands assigned (``assign_hands``)."""
    import mido

    name = folder.name
    midi_path, beat_path = folder / f"{name}.mid", folder / "beat_midi.txt"
    for path in (midi_path, beat_path):
        if not path.is_file():
            raise ValueError(f"missing {path.name}")
    try:
        midi = mido.MidiFile(midi_path)
    except Exception as error:  # noqa: BLE001 - mido raises several types for a damaged file
        raise ValueError(f"{midi_path.name} is not a readable MIDI file ({type(error).__name__}: {error})") from None
    beats = _rows(beat_path, 3)
    beat_ticks = seconds_to_ticks(midi, [float(r[0]) for r in beats])
    resolution = midi.ticks_per_beat
    if len(beat_ticks) < 2 or not 0.95 <= float(np.median(np.diff(beat_ticks))) / resolution <= 1.05:
        raise ValueError("beat_midi.txt's beats are not the MIDI file's quarter notes")
    duple = np.array([float(r[1]) > 0.5 for r in beats])
    quad = np.array([float(r[2]) > 0.5 for r in beats])
    groups = np.diff(np.flatnonzero(duple))
    triple = len(groups) > 0 and Counter(groups.tolist()).most_common(1)[0][0] == 3
    downbeats = np.flatnonzero(duple if triple else quad)
    beats_per_bar = 3 if triple else 4
    tracks = {t.name.strip().upper(): t for t in midi.tracks}
    if "MELODY" not in tracks or "PIANO" not in tracks:
        raise ValueError(f"{midi_path.name} lacks a MELODY or PIANO track")
    parts = {role: np.array(_track_notes(tracks[role]) if role in tracks else [], dtype=np.float64).reshape(-1, 4)
             for role in ("MELODY", "BRIDGE", "PIANO")}
    if not len(parts["MELODY"]) and not len(parts["PIANO"]):
        raise ValueError(f"{midi_path.name} has no notes")
    # the first annotated downbeat, on the file's tick grid, moved back by whole bars before the first note
    origin = round(float(beat_ticks[downbeats[0] if len(downbeats) else 0]))
    first = min(float(p[:, 0].min()) for p in parts.values() if len(p))
    bar = beats_per_bar * resolution
    if first < origin:
        origin -= math.ceil((origin - first) / bar) * bar
    for role, array in parts.items():
        parts[role] = np.column_stack([array[:, 2], (array[:, :2] - origin) / resolution, array[:, 3]])
    notes, counters = assign_hands(parts["MELODY"], parts.get("BRIDGE", np.zeros((0, 4))), parts["PIANO"])
    key = "unknown"
    key_path = folder / "key_audio.txt"
    if key_path.is_file():
        spans = [(float(r[1]) - float(r[0]), r[2]) for r in _rows(key_path, 3)]
        key = max(spans)[1]
    return Song(f"pop909/{name}", "pop909", key, f"{beats_per_bar}/4", notes, counters)


def assign_hands(melody: np.ndarray, bridge: np.ndarray, piano: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
    """Rows (pitch, start, end, velocity) of the three POP909 tracks -> rows
    (pitch, start, end, velocity, hand) sorted by start, and what each rule did.

    MELODY -> upper. BRIDGE (secondary melody): upper when no upper note sounds at its onset or
    it is at most 12 semitones below the lowest sounding one (the right hand reaches it), else
    lower. PIANO: a unison of a sounding upper note whose onset is within 1/8 beat is dropped
    (the accompaniment doubles the tune on the same key); at or above the lowest sounding upper
    note -> upper (a doubling an octave up, or a line over the tune: the lower hand does not
    cross over it); while no upper note sounds, more than 12 semitones above the accompaniment's
    bass (its lowest note starting within the last beat) -> upper (a hand spans an octave, so the
    intro's or interlude's tune and top voices go to the upper hand); else lower."""
    counters = Counter()
    upper = [tuple(row) for row in melody]
    counters["melody"] = len(upper)

    def sounding(rows, at: float) -> list:
        return [r for r in rows if r[1] <= at + 1e-9 and r[2] > at + 1e-9]

    lower = []
    melody_sorted = sorted(upper, key=lambda r: r[1])
    for row in sorted(map(tuple, bridge), key=lambda r: r[1]):
        over = sounding(melody_sorted, row[1])
        if not over or row[0] >= min(r[0] for r in over) - 12:
            upper.append(row)
            counters["bridge_upper"] += 1
        else:
            lower.append(row)
            counters["bridge_lower"] += 1
    upper.sort(key=lambda r: r[1])
    piano_rows = sorted(map(tuple, piano), key=lambda r: (r[1], r[0]))
    piano_starts = np.array([r[1] for r in piano_rows])
    upper_starts = np.array([r[1] for r in upper])
    longest = max((r[2] - r[1] for r in upper), default=0.0)
    for row in piano_rows:
        pitch, start = row[0], row[1]
        lo = np.searchsorted(upper_starts, start - longest - 1e-9)
        hi = np.searchsorted(upper_starts, start + 1e-9, side="right")
        over = sounding(upper[lo:hi], start)
        if over:
            if any(r[0] == pitch and abs(r[1] - start) <= UNISON_WINDOW for r in over):
                counters["piano_unison_dropped"] += 1
                continue
            if pitch >= min(r[0] for r in over):
                upper.append(row)
                counters["piano_upper_over_tune"] += 1
                continue
            lower.append(row)
            counters["piano_lower"] += 1
            continue
        recent = piano_rows[np.searchsorted(piano_starts, start - 1.0):np.searchsorted(piano_starts, start, "right")]
        bass = min(r[0] for r in recent)
        if pitch > bass + 12:
            upper.append(row)
            counters["piano_upper_tune_rests"] += 1
        else:
            lower.append(row)
            counters["piano_lower"] += 1
    rows = [(*r, UPPER) for r in upper] + [(*r, LOWER) for r in lower]
    rows.sort(key=lambda r: (r[1], r[4], r[0]))
    return np.array(rows, dtype=np.float64).reshape(-1, 5), dict(counters)


def split_of_song(song_id: str, seed: str = SPLIT_SEED) -> str:
    """POP909: seeded 80/10/10 by the song id; music21 pieces: the continuation corpus's split."""
    if not song_id.startswith("pop909/"):
        return split_of(song_id)
    bucket = int.from_bytes(hashlib.sha256(f"{seed}:{song_id}".encode()).digest()[:4], "big") % 100
    return "train" if bucket < 80 else ("val" if bucket < 90 else "test")


# ---------------------------------------------------------------- music21 piano scores


def read_music21(piece_id: str) -> Song:
    """A keyboard score of music21's corpus: top staff -> upper, the staves below -> lower."""
    from music21 import corpus, meter

    from engines.continuation.corpus import _hands

    score = corpus.parse(piece_id)
    right, left, style = _hands(score, piece_id)
    if style != "piano":
        raise ValueError(f"{piece_id}: not a keyboard score")
    rows = []
    for hand, parts in ((UPPER, right), (LOWER, left)):
        for part in parts:
            for element in part.flatten().notes:
                length = Fraction(element.quarterLength)
                if length <= 0:
                    continue
                start = Fraction(element.offset)
                for member in element.notes if element.isChord else (element,):
                    if member.tie is not None and member.tie.type in ("stop", "continue"):
                        continue
                    rows.append((member.pitch.midi, float(start), float(start + length), 72, hand))
    signatures = score.flatten().getElementsByClass(meter.TimeSignature)
    signature = signatures[0].ratioString if len(signatures) else "4/4"
    try:
        analysed = score.analyze("key")
        key = f"{analysed.tonic.name.replace('-', 'b')}:{'min' if analysed.mode == 'minor' else 'maj'}"
    except Exception:  # noqa: BLE001 - a key is metadata; a score without one still counts
        key = "unknown"
    notes = np.array(sorted(rows, key=lambda r: (r[1], r[4], r[0])), dtype=np.float64).reshape(-1, 5)
    return Song(piece_id, "music21", key, signature, notes, {"notes": len(rows)})

"""Turn a music21 score into raw per-16th arrays: top-voice melody, texture chord, bars, affect.

Offline only (imports music21). Output is key-normalized to C major / A minor; the applied
semitone shift is kept so results can be transposed back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .affect import detect_key, normalizing_shift, valence_arousal
from .vocab import nearest_tokens

__all__ = ["RawPiece", "PieceSkipped", "extract_piece", "STEPS_PER_QUARTER_Q16", "DYNAMIC_LEVELS"]

STEPS_PER_QUARTER_Q16 = 4
MAX_STEPS = 16_000  # longer movements are cut (about 4,000 quarter notes)

DYNAMIC_LEVELS = {
    "ppp": -1.0,
    "pp": -0.8,
    "p": -0.5,
    "mp": -0.2,
    "mf": 0.2,
    "f": 0.5,
    "ff": 0.8,
    "fff": 1.0,
    "sf": 0.6,
    "sfz": 0.6,
    "fz": 0.6,
    "fp": 0.3,
    "rfz": 0.5,
}


class PieceSkipped(ValueError):
    """A score that cannot give melody + texture (too few parts, empty, no notes)."""


@dataclass
class RawPiece:
    """One key-normalized piece on the 16th-note grid (N steps)."""

    piece_id: str
    style: int
    melody_pitch: np.ndarray  # int16 [N], MIDI pitch of the top voice, -1 = rest
    melody_onset: np.ndarray  # uint8 [N], 1 where a melody note starts
    texture: np.ndarray  # uint8 [N, 12], pitch classes sounding in the full texture
    voices: np.ndarray  # uint8 [N, 12], how many notes sound each pitch class (doublings)
    struck: np.ndarray  # uint8 [N, 12], 1 where a note of that pitch class starts
    bass: np.ndarray  # int8 [N], lowest sounding pitch class, -1 = none
    chord: np.ndarray  # int16 [N], nearest chord token of the texture
    bar_start: np.ndarray  # uint8 [N], 1 at each measure start
    va: np.ndarray  # float32 [N, 2], valence and arousal in [-1, 1]
    time_signature: tuple[int, int]
    shift: int  # semitones added to normalize to C major / A minor
    mode: str


def _part_notes(part) -> list[tuple[float, float, int]]:
    """(onset_quarters, offset_quarters, midi) for every sounding pitch of a part."""
    events: list[tuple[float, float, int]] = []
    for element in part.flatten().notes:
        duration = float(element.quarterLength)
        if duration <= 0:  # grace notes
            continue
        onset = float(element.offset)
        for pitch in element.pitches:
            events.append((onset, onset + duration, int(pitch.midi)))
    return events


def _to_steps(quarters: float, steps_per_quarter: int) -> int:
    return int(round(quarters * steps_per_quarter))


def _dynamics_curve(part, steps: int) -> np.ndarray:
    curve = np.zeros(steps, dtype=np.float64)
    marks = []
    for dynamic in part.flatten().getElementsByClass("Dynamic"):
        level = DYNAMIC_LEVELS.get(str(dynamic.value))
        if level is not None:
            marks.append((_to_steps(float(dynamic.offset), STEPS_PER_QUARTER_Q16), level))
    for index, (start, level) in enumerate(sorted(marks)):
        end = sorted(marks)[index + 1][0] if index + 1 < len(marks) else steps
        curve[max(0, start) : max(0, end)] = level
    return curve


def extract_piece(score, piece_id: str, style: int) -> RawPiece:
    """Extract one piece; raises PieceSkipped when the score has no usable melody + texture."""
    parts = list(score.parts)
    if len(parts) < 2:
        raise PieceSkipped(f"{piece_id}: {len(parts)} part(s); need a melody and a texture")
    part_events = [_part_notes(part) for part in parts]
    if not any(part_events):
        raise PieceSkipped(f"{piece_id}: no notes")
    mean_pitch = [np.mean([e[2] for e in events]) if events else -1 for events in part_events]
    melody_index = int(np.argmax(mean_pitch))
    total_quarters = max(end for events in part_events for _, end, _ in events)
    steps = min(MAX_STEPS, int(math.ceil(total_quarters * STEPS_PER_QUARTER_Q16)))
    if steps < 16:
        raise PieceSkipped(f"{piece_id}: only {steps} sixteenths")

    melody_pitch = np.full(steps, -1, dtype=np.int16)
    melody_onset = np.zeros(steps, dtype=np.uint8)
    for onset, offset, midi in part_events[melody_index]:
        start, end = _to_steps(onset, 4), min(steps, max(_to_steps(offset, 4), _to_steps(onset, 4) + 1))
        if start >= steps:
            continue
        melody_pitch[start:end] = np.maximum(melody_pitch[start:end], midi)
        melody_onset[start] = 1
    texture_counts = np.zeros((steps, 12), dtype=np.int32)
    struck_counts = np.zeros((steps, 12), dtype=np.uint8)
    lowest = np.full(steps, 999, dtype=np.int32)
    histogram = np.zeros(12)
    for events in part_events:
        for onset, offset, midi in events:
            start, end = _to_steps(onset, 4), min(steps, max(_to_steps(offset, 4), _to_steps(onset, 4) + 1))
            if start >= steps:
                continue
            texture_counts[start:end, midi % 12] += 1
            struck_counts[start, midi % 12] = 1
            lowest[start:end] = np.minimum(lowest[start:end], midi)
            histogram[midi % 12] += offset - onset
    if (melody_pitch >= 0).sum() < 8:
        raise PieceSkipped(f"{piece_id}: melody has fewer than 8 sounding sixteenths")

    tonic, mode, _ = detect_key(histogram)
    shift = normalizing_shift(tonic, mode)
    melody_pitch = np.where(melody_pitch >= 0, melody_pitch + shift, -1).astype(np.int16)
    texture = np.roll((texture_counts > 0).astype(np.uint8), shift, axis=1)
    voices = np.roll(np.minimum(texture_counts, 255).astype(np.uint8), shift, axis=1)
    struck = np.roll(struck_counts, shift, axis=1)
    bass = np.where(lowest < 999, (lowest + shift) % 12, -1).astype(np.int8)
    chord = nearest_tokens(texture, bass).astype(np.int16)

    reference_part = parts[melody_index]
    bar_start = np.zeros(steps, dtype=np.uint8)
    for measure in reference_part.getElementsByClass("Measure"):
        step = _to_steps(float(measure.offset), 4)
        if 0 <= step < steps:
            bar_start[step] = 1
    bar_start[0] = 1
    signatures = list(reference_part.recurse().getElementsByClass("TimeSignature"))
    time_signature = (4, 4)
    if signatures:
        time_signature = (int(signatures[0].numerator), int(signatures[0].denominator))
    dynamics = _dynamics_curve(reference_part, steps)
    va = valence_arousal(melody_pitch, melody_onset, texture, dynamics, STEPS_PER_QUARTER_Q16)
    return RawPiece(
        piece_id=piece_id,
        style=style,
        melody_pitch=melody_pitch,
        melody_onset=melody_onset,
        texture=texture,
        voices=voices,
        struck=struck,
        bass=bass,
        chord=chord,
        bar_start=bar_start,
        va=va,
        time_signature=time_signature,
        shift=shift,
        mode=mode,
    )

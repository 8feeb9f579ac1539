"""Pure music logic for the rule harmonizer: key finding, diatonic chords, voice leading.

No I/O and no threads, so it is unit-tested directly and reused by the offline tools.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from core.keys import key_correlations

__all__ = [
    "NOTE_NAMES",
    "Key",
    "parse_key",
    "KeyFinder",
    "DiatonicChord",
    "diatonic_chords",
    "scale_chords",
    "choose_chord",
    "voice_chord",
]

NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_FLAT_ALIASES = {"Db": 1, "D#": 3, "Gb": 6, "G#": 8, "A#": 10, "Cb": 11, "E#": 5, "Fb": 4, "B#": 0}

# Krumhansl-Kessler key profiles.


@dataclass(frozen=True)
class Key:
    tonic: int  # pitch class 0..11
    minor: bool

    def __str__(self) -> str:
        return f"{NOTE_NAMES[self.tonic]} {'minor' if self.minor else 'major'}"

    def scale(self) -> tuple[int, ...]:
        """Scale degrees as pitch classes; minor uses the harmonic minor (raised 7th)."""
        steps = (0, 2, 3, 5, 7, 8, 11) if self.minor else (0, 2, 4, 5, 7, 9, 11)
        return tuple((self.tonic + s) % 12 for s in steps)


def parse_key(text: str) -> Key:
    """'C', 'Am', 'F# minor', 'Eb major' -> Key. Raises ValueError naming the input."""
    cleaned = text.strip().replace("major", "").replace("maj", "").strip()
    minor = False
    if cleaned.endswith("minor"):
        minor, cleaned = True, cleaned[: -len("minor")].strip()
    elif cleaned.endswith("min"):
        minor, cleaned = True, cleaned[: -len("min")].strip()
    elif cleaned.endswith("m") and len(cleaned) > 1:
        minor, cleaned = True, cleaned[:-1]
    name = cleaned[:1].upper() + cleaned[1:]
    if name in NOTE_NAMES:
        return Key(NOTE_NAMES.index(name), minor)
    if name in _FLAT_ALIASES:
        return Key(_FLAT_ALIASES[name], minor)
    raise ValueError(f"cannot read key {text!r}; use e.g. 'C', 'Am', 'F# minor', 'Eb major'")


class KeyFinder:
    """Krumhansl-Schmuckler key finding on a decaying, duration-free pitch-class histogram,
    with hysteresis so one chromatic note does not flip the key."""

    def __init__(self, decay: float = 0.985, switch_margin: float = 0.15, min_notes: int = 4) -> None:
        self.decay = decay
        self.switch_margin = switch_margin
        self.min_notes = min_notes
        self.reset()

    def reset(self) -> None:
        self.histogram = np.zeros(12)
        self.count = 0
        self.key = Key(0, False)

    def add(self, pitch: int, weight: float = 1.0) -> Key:
        self.histogram *= self.decay
        self.histogram[pitch % 12] += weight
        self.count += 1
        if self.count >= self.min_notes:
            scores = self.scores()
            best = max(scores, key=scores.__getitem__)
            if scores[best] > scores[self.key] + self.switch_margin:
                self.key = best
        return self.key

    def scores(self) -> dict[Key, float]:
        """Pearson correlation of the histogram with each of the 24 rotated key profiles."""
        correlations = key_correlations(self.histogram).tolist()
        return {Key(tonic, minor): correlations[tonic + 12 * minor] for tonic in range(12) for minor in (False, True)}




@dataclass(frozen=True)
class DiatonicChord:
    degree: int  # 0..6
    root: int  # pitch class
    pitch_classes: tuple[int, ...]  # root first

    def label(self) -> str:
        if len(self.pitch_classes) < 3:
            return "-".join(NOTE_NAMES[pc] for pc in self.pitch_classes)
        third = (self.pitch_classes[1] - self.root) % 12
        fifth = (self.pitch_classes[2] - self.root) % 12
        quality = {(4, 7): "", (3, 7): "m", (3, 6): "dim", (4, 8): "aug"}.get((third, fifth), "?")
        if len(self.pitch_classes) == 4:
            seventh = (self.pitch_classes[3] - self.root) % 12
            quality += {11: "maj7", 10: "7", 9: "dim7"}.get(seventh, "7")
            quality = quality.replace("m7", "m7").replace("dim7", "dim7")
        return NOTE_NAMES[self.root] + quality


def diatonic_chords(key: Key, sevenths: bool = False) -> list[DiatonicChord]:
    scale = key.scale()
    size = 4 if sevenths else 3
    chords = []
    for degree in range(7):
        pcs = tuple(scale[(degree + 2 * i) % 7] for i in range(size))
        chords.append(DiatonicChord(degree, scale[degree], pcs))
    return chords


def scale_chords(scale: tuple[int, ...], sevenths: bool = False) -> list[DiatonicChord]:
    """Chords of any scale given as pitch classes from its first degree up: on each degree, every
    other step of the scale stacked (three, or four with ``sevenths``; fewer if the scale has
    fewer notes), so a pentatonic or an equiheptatonic scale gets chords of its own degrees."""
    size, count = min(4 if sevenths else 3, len(scale)), len(scale)
    chords = []
    for degree in range(count):
        # a scale of an even number of notes below 2 * size wraps onto itself: then the
        # remaining steps fill the chord in scale order
        stacked = [scale[(degree + 2 * i) % count] for i in range(count)]
        stacked += [scale[(degree + i) % count] for i in range(count)]
        chords.append(DiatonicChord(degree, scale[degree], tuple(dict.fromkeys(stacked))[:size]))
    return chords


# How likely each degree is a priori (tonic, subdominant and dominant functions first).
_DEGREE_PRIOR = (0.6, 0.15, 0.2, 0.4, 0.5, 0.3, 0.05)
# Preferred root motions: (from_degree, to_degree) -> bonus.
_MOTION_BONUS = {(4, 0): 0.35, (3, 4): 0.25, (1, 4): 0.3, (5, 1): 0.2, (0, 3): 0.15, (0, 4): 0.15,
                 (3, 0): 0.15, (5, 3): 0.15, (0, 5): 0.1, (6, 0): 0.3, (2, 5): 0.15}


def choose_chord(
    melody: dict[int, float],
    key: Key,
    previous: DiatonicChord | None,
    sevenths: bool = False,
    scale: tuple[int, ...] | None = None,
) -> DiatonicChord:
    """Pick the chord that best covers the weighted melody pitch classes (``{pitch_class:
    weight}``), preferring strong functions and smooth progressions: a diatonic chord of ``key``,
    or with ``scale`` (pitch classes from its first degree) one of ``scale_chords``, where only
    the first degree is preferred, since functional harmony is not that scale's own theory."""
    best: DiatonicChord | None = None
    best_score = -np.inf
    diatonic = scale is None
    for chord in diatonic_chords(key, sevenths) if diatonic else scale_chords(scale, sevenths):
        score = _DEGREE_PRIOR[chord.degree] if diatonic else (0.6 if chord.degree == 0 else 0.3)
        for pc, weight in melody.items():
            if pc in chord.pitch_classes:
                # Root and third of the chord under the melody sound most stable.
                score += weight * (1.2 if pc in chord.pitch_classes[:2] else 1.0)
            else:
                score -= weight * 1.1
        if previous is not None:
            if previous.degree == chord.degree:
                score += 0.1
            score += _MOTION_BONUS.get((previous.degree, chord.degree), 0.0) if diatonic else 0.0
        if score > best_score:
            best, best_score = chord, score
    if best is None:
        raise ValueError("no diatonic chord could be scored")
    return best


def voice_chord(
    chord_pcs: tuple[int, ...],
    melody_pitch: int,
    previous: tuple[int, ...] | None,
    low: int = 48,
    voices: int = 3,
) -> tuple[int, ...]:
    """Upper voices for ``chord_pcs``: ``voices`` notes in [low, melody_pitch - 1], every chord
    tone present where possible, never above the melody, with the least total movement from
    ``previous`` (or the closest-packed voicing under the melody when there is none)."""
    high = melody_pitch - 1
    if high - low < 12:
        low = max(0, high - 19)
    candidates = [p for p in range(low, high + 1) if p % 12 in chord_pcs]
    if len(candidates) < voices:
        return tuple(candidates)
    best: tuple[int, ...] = ()
    best_cost = np.inf
    needed = set(chord_pcs[: min(len(chord_pcs), voices)])
    for combo in itertools.combinations(candidates, voices):
        if combo[-1] - combo[0] > 14:  # keep the voicing within about an octave
            continue
        if not needed <= {p % 12 for p in combo}:
            continue
        if previous and len(previous) == voices:
            cost = float(sum(abs(a - b) for a, b in zip(combo, sorted(previous))))
        else:
            cost = float(high - combo[-1]) + 0.1 * (combo[-1] - combo[0])
        if cost < best_cost:
            best, best_cost = combo, cost
    if not best:
        best = tuple(candidates[-voices:])
    return best

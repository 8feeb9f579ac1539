"""Chord symbols of lead sheets -> the harmonizer's chord vocabulary: MusicXML symbols read by
music21 and POP909's Harte-style labels, slash basses kept where the vocabulary can, and a count
of how each symbol was mapped (``SymbolMapper``). Used by ``leadsheet_corpus``."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from .vocab import NC, NUM_QUALITIES, NUM_SPECIALS, QUALITIES

_QUALITY_NAMES = [name for name, _ in QUALITIES]
QUALITY_SETS = [frozenset(intervals) for _, intervals in QUALITIES]
_PREFERRED = ("maj", "min", "7", "min7", "dim", "hdim7", "dim7", "maj7", "sus4", "aug", "5", "1")
_RANK = [_PREFERRED.index(n) if n in _PREFERRED else len(_PREFERRED) + i for i, n in enumerate(_QUALITY_NAMES)]

# MusicXML <kind> values (music21 chordKind) with a quality of the same pitch classes
KIND_QUALITY = {
    "major": "maj", "minor": "min", "augmented": "aug", "diminished": "dim",
    "dominant": "7", "dominant-seventh": "7", "major-seventh": "maj7", "minor-seventh": "min7",
    "diminished-seventh": "dim7", "half-diminished": "hdim7", "minor-major-seventh": "minmaj7",
    "major-minor": "minmaj7", "major-sixth": "maj6", "minor-sixth": "min6",
    "dominant-ninth": "9", "major-ninth": "maj9", "minor-ninth": "min9",
    "dominant-11th": "11", "minor-11th": "min11",
    "dominant-13th": "13", "major-13th": "maj13", "minor-13th": "min13",
    "suspended-second": "sus2", "suspended-fourth": "sus4", "power": "5", "pedal": "1",
}
# Harte (POP909) qualities spelled as in the vocabulary; others go through their intervals
HARTE_INTERVALS = {"sus4(b7)": (0, 5, 7, 10)}
_DEGREE = {1: 0, 2: 2, 3: 4, 4: 5, 5: 7, 6: 9, 7: 11, 9: 2, 11: 5, 13: 9}
_LETTER = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}


def root_pc(name: str) -> int:
    if not name or name[0].upper() not in _LETTER:
        raise ValueError(f"bad chord root {name!r}")
    shift = sum(1 if ch == "#" else -1 if ch in "b-" else 0 for ch in name[1:])
    return (_LETTER[name[0].upper()] + shift) % 12


def _degree_pc(degree: str) -> int:
    match = re.fullmatch(r"([b#]*)(\d+)", degree)
    if not match or int(match.group(2)) not in _DEGREE:
        raise ValueError(f"bad bass degree {degree!r}")
    accidentals = match.group(1)
    return (_DEGREE[int(match.group(2))] + accidentals.count("#") - accidentals.count("b")) % 12


_CORE = frozenset({3, 4, 6, 8, 10, 11})  # thirds, altered fifths, sevenths: what names the function
# 9sus4 is as far from min11 as from 11; it is a dominant, written C:11 in Harte annotations
_TIE_OVERRIDE = {frozenset({0, 2, 5, 7, 10}): "11"}


def _nearest_quality(root: int, pcs: frozenset[int]) -> tuple[int, int]:
    """(quality index, Hamming distance) of the root's nearest quality. Ties keep the symbol's
    thirds, altered fifths and sevenths (C7#5 -> C:7(b13), not C:aug), then common qualities."""
    rooted = frozenset((pc - root) % 12 for pc in pcs)
    if rooted in _TIE_OVERRIDE:
        index = _QUALITY_NAMES.index(_TIE_OVERRIDE[rooted])
        return index, len(rooted ^ QUALITY_SETS[index])
    core = rooted & _CORE
    best = min(range(NUM_QUALITIES),
               key=lambda q: (len(rooted ^ QUALITY_SETS[q]), len(core - QUALITY_SETS[q]), _RANK[q]))
    return best, len(rooted ^ QUALITY_SETS[best])


def _exact_quality(root: int, pcs: frozenset[int]) -> int | None:
    quality, distance = _nearest_quality(root, pcs)
    return quality if distance == 0 else None


def _token(root: int, quality: int) -> int:
    return NUM_SPECIALS + root * NUM_QUALITIES + quality


@dataclass(frozen=True)
class ChordEvent:
    """A chord from onset (16ths) on: vocabulary token, bass pitch class (-1 for no chord)."""

    step: int
    token: int
    bass: int


@dataclass
class SymbolMapper:
    """Maps (root, pitch classes, bass) to a token and counts how each symbol was mapped.

    The root always stays the symbol's. A set that is no quality of that root maps to its nearest
    quality (Hamming distance, common qualities first) and counts as out of vocabulary. A slash
    bass that is a chord tone stays in the bass array (the vocabulary has no inversions); a
    foreign bass joins the chord when that gives a quality of the same root (C/Bb -> C:7) or of
    the bass as root (Am/F -> F:maj7); otherwise the upper chord is kept and the bass lives in
    the bass array only (F/G -> F:maj over G).
    """

    outcomes: Counter = field(default_factory=Counter)
    out_of_vocabulary: Counter = field(default_factory=Counter)
    symbols: int = 0

    def map(self, label: str, root: int, pcs: frozenset[int], bass: int, quality: str | None = None) -> tuple[int, int]:
        self.symbols += 1
        if quality is not None:
            index = _QUALITY_NAMES.index(quality)
            outcome = "exact"
        else:
            index, distance = _nearest_quality(root, pcs)
            outcome = "exact" if distance == 0 else "nearest"
            if distance:
                self.out_of_vocabulary[f"{label} -> {_QUALITY_NAMES[index]}"] += 1
        token = _token(root, index)
        chord_pcs = {(root + i) % 12 for i in QUALITY_SETS[index]} | set(pcs)
        if bass != root:
            if bass in chord_pcs:
                outcome += "+slash(chord-tone bass)"
            else:
                union = frozenset(chord_pcs | {bass})
                same_root, bass_root = _exact_quality(root, union), _exact_quality(bass, union)
                if same_root is not None:
                    token, outcome = _token(root, same_root), outcome + "+slash(bass joins chord)"
                elif bass_root is not None:
                    token, outcome = _token(bass, bass_root), outcome + "+slash(bass as root)"
                else:
                    outcome += "+slash(bass kept apart)"
        self.outcomes[outcome] += 1
        return token, bass


def harte_chord(label: str, mapper: SymbolMapper) -> tuple[int, int]:
    """POP909 label ('C:maj', 'A:min/b3', 'G:sus4(b7)', 'N') -> (token, bass pc); N -> (NC, -1)."""
    if label == "N":
        return NC, -1
    root_name, separator, rest = label.partition(":")
    if not separator:
        raise ValueError(f"bad chord label {label!r}")
    quality, _, bass_degree = rest.partition("/")
    root = root_pc(root_name)
    bass = (root + _degree_pc(bass_degree)) % 12 if bass_degree else root
    kind = label.split(":", 1)[1].split("/")[0]
    if quality in _QUALITY_NAMES and quality not in ("", "1"):
        pcs = frozenset((root + i) % 12 for i in QUALITY_SETS[_QUALITY_NAMES.index(quality)])
        return mapper.map(kind, root, pcs, bass, quality)
    if quality not in HARTE_INTERVALS:
        raise ValueError(f"unknown chord quality {quality!r} in {label!r}")
    pcs = frozenset((root + i) % 12 for i in HARTE_INTERVALS[quality])
    return mapper.map(kind, root, pcs, bass)


# MusicXML <degree>: the value's interval in a dominant chord (so 7 is the minor seventh), and
# the tones an alteration or subtraction of that degree replaces
_DEGREE_XML = {1: 0, 2: 2, 3: 4, 4: 5, 5: 7, 6: 9, 7: 10, 9: 2, 11: 5, 13: 9}
_DEGREE_TONES = {1: (0,), 3: (3, 4), 5: (6, 7, 8), 7: (9, 10, 11), 9: (2,), 11: (5,), 13: (9,)}


def _kind_intervals(root_name: str, kind: str) -> frozenset[int]:
    from music21 import harmony

    if kind in KIND_QUALITY:
        return QUALITY_SETS[_QUALITY_NAMES.index(KIND_QUALITY[kind])]
    try:
        plain = harmony.ChordSymbol(root=root_name, kind=kind or "major")
        root = plain.root().pitchClass
        return frozenset((p.pitchClass - root) % 12 for p in plain.pitches)
    except Exception:  # noqa: BLE001 - music21 raises many types on kinds it lacks
        return QUALITY_SETS[0]


def _with_degrees(intervals: frozenset[int], modifications: list) -> frozenset[int]:
    """Apply MusicXML degree changes (music21 reads 'add 7' as a major seventh; MusicXML means
    the dominant's minor seventh). Adding an altered fifth replaces the fifth (m7 b5 is m7b5)."""
    tones = set(intervals)
    for modification in modifications:
        degree = int(modification.degree)
        alter = int(modification.interval.semitones) if modification.interval is not None else 0
        kind = modification.modType
        if kind == "add" and degree == 5 and alter:
            kind = "alter"
        if kind in ("alter", "subtract"):
            tones -= set(_DEGREE_TONES.get(degree, ()))
        if kind in ("add", "alter") and degree in _DEGREE_XML:
            tones.add((_DEGREE_XML[degree] + alter) % 12)
    return frozenset(tones | {0})


def music21_chord(symbol, mapper: SymbolMapper) -> tuple[int, int]:
    """music21 ChordSymbol -> (token, bass pc); NoChord -> (NC, -1).

    A known MusicXML kind maps by name (music21 spells a 13th with its 11th, which would
    otherwise look foreign); degree changes are applied to the kind's intervals and the result
    maps by pitch classes, without the slash bass.
    """
    from music21 import harmony

    if isinstance(symbol, harmony.NoChord) or symbol.root() is None:
        return NC, -1
    root = symbol.root().pitchClass
    bass = symbol.bass().pitchClass if symbol.bass() is not None else root
    kind = symbol.chordKind or ""
    modifications = list(symbol.getChordStepModifications())
    label = kind + "".join(f" {m.modType} {_alter(m)}{m.degree}" for m in modifications)
    if kind in KIND_QUALITY and not modifications:
        pcs = frozenset((root + i) % 12 for i in QUALITY_SETS[_QUALITY_NAMES.index(KIND_QUALITY[kind])])
        return mapper.map(label, root, pcs, bass, KIND_QUALITY[kind])
    intervals = _with_degrees(_kind_intervals(symbol.root().name, kind), modifications)
    return mapper.map(label, root, frozenset((root + i) % 12 for i in intervals), bass)


def _alter(modification) -> str:
    semitones = int(modification.interval.semitones) if modification.interval is not None else 0
    return "#" * max(0, semitones) + "b" * max(0, -semitones)



"""A lead sheet (melody with chord symbols) as MusicXML, built measure by measure in linear time.

music21's ``makeNotation`` on one long part (measures, ties, rests, voices) grows worse than
quadratically with the length (2,000 notes took 13 s, 5,000 took 65 s): here the measures are
made directly, every note and rest split into written values, and the score is written with
``makeNotation=False``. Positions are counted in whole units of 1/48 quarter: the melody's grid
(1/12 quarter: sixteenth triplets and sixteenths) and the bar line of any meter with a
denominator up to 64 land on it.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from fractions import Fraction

from core.errors import CodecError

__all__ = ["NO_CHORD", "SPELLINGS", "chord_figure", "chord_symbol", "chord_symbols", "key_sharps", "lead_sheet",
           "root_names", "write_lead_sheet"]

UNITS_PER_QUARTER = 48
NOTE_GRID_UNITS = 4  # notes start and end on the 1/12-quarter grid
# Written values in units, longest first: whole, dotted half, half ... 64th (each a multiple of
# 3), then the triplet values (quarter triplet ... 128th triplet) that reach the other lengths.
_BINARY_UNITS = (192, 144, 96, 72, 48, 36, 24, 18, 12, 9, 6, 3)
_TRIPLET_UNITS = (32, 16, 8, 4, 2, 1)

# vocabulary quality -> (lead-sheet suffix, MusicXML kind). A symbol is written with its kind and
# the suffix as the kind's display text, so that a half-diminished chord stays ``half-diminished``
# ("m7b5") and does not become a minor seventh with an added flat fifth. Kind None: music21 reads
# the suffix itself (a dominant seventh and an altered added degree, MusicXML's <degree>).
SPELLINGS = {"maj": ("", "major"), "min": ("m", "minor"), "aug": ("+", "augmented"),
             "dim": ("dim", "diminished"), "sus4": ("sus4", "suspended-fourth"),
             "sus2": ("sus2", "suspended-second"), "7": ("7", "dominant"), "maj7": ("maj7", "major-seventh"),
             "min7": ("m7", "minor-seventh"), "minmaj7": ("m(maj7)", "major-minor"), "maj6": ("6", "major-sixth"),
             "min6": ("m6", "minor-sixth"), "dim7": ("dim7", "diminished-seventh"),
             "hdim7": ("m7b5", "half-diminished"), "maj9": ("maj9", "major-ninth"), "min9": ("m9", "minor-ninth"),
             "9": ("9", "dominant-ninth"), "min11": ("m11", "minor-11th"), "11": ("11", "dominant-11th"),
             "maj13": ("maj13", "major-13th"), "min13": ("m13", "minor-13th"), "13": ("13", "dominant-13th"),
             "b9": ("7b9", None), "#9": ("7#9", None), "#11": ("9#11", None), "b13": ("9b13", None),
             "7(b9)": ("7b9", None), "7(#9)": ("7#9", None), "7(#11)": ("7#11", None), "7(b13)": ("7b13", None),
             "1": ("pedal", "pedal"), "": ("pedal", "pedal"), "5": ("5", "power")}
_KINDS = {suffix: kind for suffix, kind in SPELLINGS.values() if kind is not None}
NO_CHORD = "N.C."
# roots outside the key's scale: sharps in sharp keys, flats in flat keys, the usual mix in C / Am
_SHARP_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
_FLAT_NAMES = ("C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B")
_PLAIN_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


def key_sharps(tonic: int, mode: str) -> int:
    """The key signature of ``tonic`` (pitch class) ``mode`` ('major' | 'minor'): sharps (> 0)
    or flats (< 0), the spelling with the fewest (six sharps for F# major / D# minor)."""
    major = (tonic + 3) % 12 if mode == "minor" else tonic
    sharps = major * 7 % 12
    return sharps - 12 if sharps > 6 else sharps


def root_names(tonic: int, mode: str) -> list[str]:
    """How a lead sheet in this key spells each pitch class as a chord root or bass: the key's
    scale (with the raised sixth and seventh in minor), other notes by the signature's side."""
    from music21 import key

    sharps = key_sharps(tonic, mode)
    names = list(_SHARP_NAMES if sharps > 0 else _FLAT_NAMES if sharps < 0 else _PLAIN_NAMES)
    scale = key.KeySignature(sharps).asKey(mode)
    pitches = list(scale.getPitches()[:7])
    if mode == "minor":
        pitches += [scale.pitchFromDegree(6).transpose("A1"), scale.pitchFromDegree(7).transpose("A1")]
    for pitch in pitches:
        names[pitch.pitchClass] = pitch.name.replace("-", "b")
    return names


def chord_figure(root: str, quality: str, bass: str | None = None) -> str:
    """The lead-sheet figure of a vocabulary chord: ``root`` name (such as 'Bb') and quality
    ('hdim7' -> 'Bbm7b5'), with ``/bass`` when a bass other than the root is given ('C/E')."""
    suffix = SPELLINGS[quality][0]
    return root + suffix + (f"/{bass}" if bass is not None and bass != root else "")


def chord_symbol(figure: str):
    """A music21 ``ChordSymbol`` for a figure (``NoChord`` for 'N.C.'): the suffixes of
    ``SPELLINGS`` with their MusicXML kind and display text, any other figure as music21 reads it."""
    from music21 import harmony

    if figure == NO_CHORD:
        return harmony.NoChord()
    body, _, bass = figure.partition("/")
    split = 1 + len(body[1:]) - len(body[1:].lstrip("#b-"))
    root, suffix = body[:split], body[split:]
    if not root or root[0] not in "ABCDEFG":
        return harmony.ChordSymbol(figure)
    root, bass = root.replace("b", "-"), bass.replace("b", "-")  # music21 reads 'Bb7b9' as B
    if suffix not in _KINDS:
        return harmony.ChordSymbol(root + suffix + (f"/{bass}" if bass else ""))
    return harmony.ChordSymbol(root=root, bass=bass or None, kind=_KINDS[suffix], kindStr=suffix)


def written_values(units: int) -> list[int]:
    """``units`` as a sum of written note values (see ``_BINARY_UNITS``), longest first; at most
    one triplet value, when the length is not a multiple of a 64th."""
    if units <= 0:
        return []
    parts: list[int] = []
    remainder = units % 3
    if remainder:
        triplet = next(t for t in _TRIPLET_UNITS if t <= units and t % 3 == remainder)
        units -= triplet
        parts.append(triplet)
    for value in _BINARY_UNITS:
        while units >= value:
            parts.append(value)
            units -= value
    return sorted(parts, reverse=True)


def _notes_in_units(notes: Sequence) -> list[tuple[int, int, int]]:
    """(start, end, pitch) on the note grid, in order and never overlapping: a note that snaps
    onto the previous one's start replaces it, one that snaps into it cuts it short."""
    placed: list[tuple[int, int, int]] = []
    for event in sorted(notes, key=lambda n: n.at_beats):
        start = round(event.at_beats * UNITS_PER_QUARTER / NOTE_GRID_UNITS) * NOTE_GRID_UNITS
        length = max(1, round(event.duration_beats * UNITS_PER_QUARTER / NOTE_GRID_UNITS)) * NOTE_GRID_UNITS
        start = max(0, start)
        while placed and placed[-1][0] >= start:
            placed.pop()
        if placed and placed[-1][1] > start:
            placed[-1] = (placed[-1][0], start, placed[-1][2])
        placed.append((start, start + length, event.pitch))
    return placed


def lead_sheet(notes: Sequence, chords: Sequence[tuple[float, str]], time_signature: tuple[int, int],
               bpm: float, title: str, key: tuple[int, str] | None = None, part_name: str = "Melody"):
    """A music21 Score of one part named ``part_name``: ``notes`` (``core.events.Note``: pitch,
    at_beats, duration_beats; beats are quarters) tied across bar lines, rests between them,
    the key signature of ``key`` (tonic pitch class, mode) and a chord symbol (a figure such as
    ``Am7``, see ``chord_symbol``) at each ``(start_beats, figure)`` where the figure changes."""
    from music21 import clef, metadata, meter, note, stream, tempo, tie
    from music21 import key as m21key

    numerator, denominator = time_signature
    bar = numerator * 4 * UNITS_PER_QUARTER // denominator
    if bar <= 0 or numerator * 4 * UNITS_PER_QUARTER % denominator:
        raise ValueError(f"time signature {numerator}/{denominator}: bars must be a whole number of "
                         f"1/{UNITS_PER_QUARTER} quarters")
    placed = _notes_in_units(notes)
    symbols: list[tuple[int, str]] = []
    for beats, figure in sorted(chords, key=lambda chord: chord[0]):
        position = max(0, round(beats * UNITS_PER_QUARTER / NOTE_GRID_UNITS) * NOTE_GRID_UNITS)
        if symbols and symbols[-1][0] == position:  # the later of two symbols on one grid point
            symbols.pop()
        if not symbols or symbols[-1][1] != figure:  # a repeated chord is not written again
            symbols.append((position, figure))
    end = max([e for _, e, _ in placed] + [s + 1 for s, _ in symbols] + [1])
    measures = -(-end // bar)

    # one tie chain per note: its pieces split at bar lines and into written values
    pieces: list[list[tuple[int, int, object]]] = [[] for _ in range(measures)]  # (offset, units, item)
    for start, stop, pitch in placed:
        chain = []
        position = start
        while position < stop:
            measure, offset = divmod(position, bar)
            span = min(stop, (measure + 1) * bar) - position
            for value in written_values(span):
                item = note.Note(pitch, quarterLength=Fraction(value, UNITS_PER_QUARTER))
                pieces[measure].append((offset, value, item))
                chain.append(item)
                offset += value
            position += span
        if len(chain) > 1:
            for index, item in enumerate(chain):
                kind = "start" if index == 0 else ("stop" if index == len(chain) - 1 else "continue")
                item.tie = tie.Tie(kind)

    cache: dict[str, object] = {}
    symbols_by_measure: list[list[tuple[int, object]]] = [[] for _ in range(measures)]
    for position, figure in symbols:
        if figure not in cache:
            cache[figure] = chord_symbol(figure)
        symbol = copy.deepcopy(cache[figure])
        symbol.quarterLength = 0
        measure, offset = divmod(position, bar)
        symbols_by_measure[measure].append((offset, symbol))

    part = stream.Part()
    part.partName = part_name
    pitches = [p for _, _, p in placed]
    signature = meter.TimeSignature(f"{numerator}/{denominator}")
    for index in range(measures):
        measure = stream.Measure(number=index + 1)
        if index == 0:
            low = pitches and sorted(pitches)[len(pitches) // 2] < 55
            measure.coreInsert(0, clef.BassClef() if low else clef.TrebleClef())
            if key is not None:
                measure.coreInsert(0, m21key.KeySignature(key_sharps(*key)).asKey(key[1]))
            measure.coreInsert(0, signature)
            measure.coreInsert(0, tempo.MetronomeMark(number=round(bpm, 1)))
        cursor = 0
        for offset, units, item in pieces[index] + [(bar, 0, None)]:
            values = written_values(offset - cursor)  # the rests before this piece
            for value in values:
                rest = note.Rest(quarterLength=Fraction(value, UNITS_PER_QUARTER))
                # said here: the exporter would look for the meter in the whole part, per rest
                rest.fullMeasure = value == bar
                measure.coreInsert(Fraction(cursor, UNITS_PER_QUARTER), rest)
                cursor += value
            if item is not None:
                measure.coreInsert(Fraction(offset, UNITS_PER_QUARTER), item)
                cursor = offset + units
        for offset, symbol in symbols_by_measure[index]:
            measure.coreInsert(Fraction(offset, UNITS_PER_QUARTER), symbol)
        measure.coreElementsChanged()
        part.coreAppend(measure)
    part.coreElementsChanged()
    score = stream.Score()
    score.metadata = metadata.Metadata(title=title)
    score.coreInsert(0, part)
    score.coreElementsChanged()
    return score


def chord_symbols(spans: Sequence, key: tuple[int, str] = (0, "major")) -> list[tuple[float, str]]:
    """``(start_beats, figure)`` of each decoded chord span (``ChordSpan``; a span with a ``bass``
    pitch class gets a slash bass), roots spelled in ``key`` (tonic pitch class, mode), and 'N.C.'
    where the chords stop before the next span starts."""
    from engines.harmonizer.vocab import NUM_QUALITIES, NUM_SPECIALS, QUALITIES

    names = root_names(*key)
    symbols: list[tuple[float, str]] = []
    end = None
    for span in spans:
        if end is not None and span.start_beats > end + 1e-6:
            symbols.append((end, NO_CHORD))
        root, quality = divmod(int(span.token) - NUM_SPECIALS, NUM_QUALITIES)
        bass = getattr(span, "bass", None)
        symbols.append((span.start_beats, chord_figure(names[root], QUALITIES[quality][0],
                                                       None if bass is None or bass < 0 else names[bass % 12])))
        end = span.start_beats + span.duration_beats
    return symbols


def write_lead_sheet(score, path: str | os.PathLike[str]) -> None:
    """Write ``lead_sheet``'s score as MusicXML (already in measures: no makeNotation pass);
    music21's refusal is a ``CodecError``."""
    from music21.exceptions21 import Music21Exception

    try:
        score.write("musicxml", fp=str(path), makeNotation=False)
    except Music21Exception as exc:
        raise CodecError(f"the lead sheet could not be written ({exc})") from None

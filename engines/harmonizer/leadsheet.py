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

__all__ = ["FIGURES", "chord_symbols", "lead_sheet", "write_lead_sheet"]

UNITS_PER_QUARTER = 48
NOTE_GRID_UNITS = 4  # notes start and end on the 1/12-quarter grid
# Written values in units, longest first: whole, dotted half, half ... 64th (each a multiple of
# 3), then the triplet values (quarter triplet ... 128th triplet) that reach the other lengths.
_BINARY_UNITS = (192, 144, 96, 72, 48, 36, 24, 18, 12, 9, 6, 3)
_TRIPLET_UNITS = (32, 16, 8, 4, 2, 1)

# chord symbol suffix (music21 / lead-sheet spelling) for each vocabulary quality
FIGURES = {"maj": "", "min": "m", "aug": "+", "dim": "dim", "sus4": "sus4", "sus2": "sus2", "7": "7",
           "maj7": "maj7", "min7": "m7", "minmaj7": "mM7", "maj6": "6", "min6": "m6", "dim7": "dim7",
           "hdim7": "m7b5", "maj9": "M9", "min9": "m9", "9": "9", "b9": "7b9", "#9": "7#9", "min11": "m11",
           "11": "11", "#11": "7#11", "maj13": "M13", "min13": "m13", "13": "13", "b13": "7b13", "1": "pedal",
           "5": "power", "": "pedal", "7(b9)": "7b9", "7(#9)": "7#9", "7(#11)": "7#11", "7(b13)": "7b13"}


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
    for event in sorted(notes, key=lambda n: n.start_beats):
        start = round(event.start_beats * UNITS_PER_QUARTER / NOTE_GRID_UNITS) * NOTE_GRID_UNITS
        length = max(1, round(event.duration_beats * UNITS_PER_QUARTER / NOTE_GRID_UNITS)) * NOTE_GRID_UNITS
        start = max(0, start)
        while placed and placed[-1][0] >= start:
            placed.pop()
        if placed and placed[-1][1] > start:
            placed[-1] = (placed[-1][0], start, placed[-1][2])
        placed.append((start, start + length, event.pitch))
    return placed


def lead_sheet(notes: Sequence, chords: Sequence[tuple[float, str]], time_signature: tuple[int, int],
               bpm: float, title: str):
    """A music21 Score of one part: ``notes`` (``NoteEvent``: pitch, start_beats, duration_beats;
    beats are quarters) tied across bar lines, rests between them, and a chord symbol (a music21
    figure such as ``Am7``) at each ``(start_beats, figure)``."""
    from music21 import clef, harmony, metadata, meter, note, stream, tempo, tie

    numerator, denominator = time_signature
    bar = numerator * 4 * UNITS_PER_QUARTER // denominator
    if bar <= 0 or numerator * 4 * UNITS_PER_QUARTER % denominator:
        raise ValueError(f"time signature {numerator}/{denominator}: bars must be a whole number of "
                         f"1/{UNITS_PER_QUARTER} quarters")
    placed = _notes_in_units(notes)
    symbols = sorted((max(0, round(beats * UNITS_PER_QUARTER / NOTE_GRID_UNITS) * NOTE_GRID_UNITS), figure)
                     for beats, figure in chords)
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
            cache[figure] = harmony.ChordSymbol(figure)
        symbol = copy.deepcopy(cache[figure])
        symbol.quarterLength = 0
        measure, offset = divmod(position, bar)
        symbols_by_measure[measure].append((offset, symbol))

    part = stream.Part()
    pitches = [p for _, _, p in placed]
    signature = meter.TimeSignature(f"{numerator}/{denominator}")
    for index in range(measures):
        measure = stream.Measure(number=index + 1)
        if index == 0:
            low = pitches and sorted(pitches)[len(pitches) // 2] < 55
            measure.coreInsert(0, clef.BassClef() if low else clef.TrebleClef())
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


def chord_symbols(spans: Sequence) -> list[tuple[float, str]]:
    """``(start_beats, figure)`` of each decoded chord span (``ChordSpan``), spelled for a lead
    sheet: the root's name and the quality's suffix in ``FIGURES``."""
    from engines.harmonizer.vocab import token_name

    symbols = []
    for span in spans:
        root_name, _, quality = token_name(span.token).partition(":")
        symbols.append((span.start_beats, root_name + FIGURES.get(quality, "")))
    return symbols


def write_lead_sheet(score, path: str | os.PathLike[str]) -> None:
    """Write ``lead_sheet``'s score as MusicXML (already in measures: no makeNotation pass);
    music21's refusal is a ``CodecError``."""
    from music21.exceptions21 import Music21Exception

    try:
        score.write("musicxml", fp=str(path), makeNotation=False)
    except Music21Exception as exc:
        raise CodecError(f"the lead sheet could not be written ({exc})") from None

"""Chord voicing and accompaniment styles for the learned harmonizer (pure Python + numpy).

``voice_chord`` turns a chord (root + pitch-class set) into MIDI notes: upper voices within a
range, always strictly below the melody note sounding, the most important chord tones first,
and the least total movement from the previous voicing; plus an optional bass note (the root).
``render`` turns a voiced chord held over a span of beats into note events in one of four
styles: block (struck on every beat), pad (held for the whole span), arpeggio, comping.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from core.events import Note

__all__ = ["STYLES", "Voicing", "VoicingConfig", "render", "tone_weights", "voice_chord"]

STYLES = ("block", "pad", "arpeggio", "comping")

# How much a chord loses when a tone (by interval above the root) is left out of the upper
# voices: the third (or the suspended tone) and the seventh define the chord, the fifth least.
_INTERVAL_WEIGHT = {0: 3.0, 1: 4.0, 2: 4.0, 3: 6.0, 4: 6.0, 5: 5.0, 6: 4.5, 7: 1.0, 8: 4.5, 9: 5.0,
                    10: 5.0, 11: 5.0}
_MISSING_COST = 4.0  # movement semitones one weight unit of a missing tone is worth


@dataclass(frozen=True)
class VoicingConfig:
    """Upper voices count and range, the widest spread allowed, and the bass range."""

    voices: int = 4
    low: int = 48
    high: int = 79
    max_span: int = 16
    bass: bool = True
    bass_low: int = 36
    bass_high: int = 50

    def __post_init__(self) -> None:
        if not 1 <= self.voices <= 6:
            raise ValueError(f"voices must be 1..6, got {self.voices}")
        if not 0 <= self.low < self.high <= 127:
            raise ValueError(f"need 0 <= low < high <= 127, got low {self.low}, high {self.high}")
        if not 0 <= self.bass_low <= self.bass_high <= 127:
            raise ValueError(f"need 0 <= bass_low <= bass_high <= 127, got {self.bass_low}, {self.bass_high}")


@dataclass(frozen=True)
class Voicing:
    """Upper voices (ascending MIDI pitches) and the bass note (None without one)."""

    upper: tuple[int, ...]
    bass: int | None = None

    @property
    def pitches(self) -> tuple[int, ...]:
        return ((self.bass,) if self.bass is not None else ()) + self.upper


def tone_weights(root: int, pitch_classes: Iterable[int], bass: bool) -> dict[int, float]:
    """Weight of each chord pitch class in the upper voices (the root matters less over a bass)."""
    weights = {}
    for pc in {int(p) % 12 for p in pitch_classes}:
        interval = (pc - root) % 12
        weight = _INTERVAL_WEIGHT[interval]
        if interval == 0 and bass:
            weight = 1.5
        weights[pc] = weight
    return weights


def _movement(combo: tuple[int, ...], previous: tuple[int, ...]) -> float:
    """Semitones moved: voice by voice when the counts match, else each note to its nearest."""
    if len(combo) == len(previous):
        return float(sum(abs(a - b) for a, b in zip(combo, previous)))
    return float(sum(min(abs(a - b) for b in previous) for a in combo))


def _within_span(candidates: list[int], voices: int, max_span: int) -> Iterator[tuple[int, ...]]:
    """``itertools.combinations(candidates, voices)`` (ascending candidates), in the same order,
    without the combinations wider than ``max_span`` (any width for one voice): each lowest note
    is combined only with the notes within the span above it."""
    if voices == 1:
        yield from itertools.combinations(candidates, 1)
        return
    for index, lowest in enumerate(candidates):
        end = bisect.bisect_right(candidates, lowest + max_span, index + 1)
        for rest in itertools.combinations(candidates[index + 1:end], voices - 1):
            yield (lowest, *rest)


def _upper_voices(
    root: int,
    pitch_classes: tuple[int, ...],
    ceiling: int,
    previous: tuple[int, ...],
    config: VoicingConfig,
) -> tuple[int, ...]:
    low = config.low
    if ceiling - low < 12:  # a low melody: move the voices down under it
        low = max(0, ceiling - 15)
    candidates = [p for p in range(low, ceiling + 1) if p % 12 in pitch_classes]
    if not candidates:
        return ()
    voices = min(config.voices, len(candidates))
    weights = tone_weights(root, pitch_classes, config.bass)
    best: tuple[int, ...] = ()
    best_cost = float("inf")
    for combo in _within_span(candidates, voices, config.max_span):
        span = combo[-1] - combo[0]
        present = {p % 12 for p in combo}
        missing = sum(w for pc, w in weights.items() if pc not in present)
        doubled = voices - len(present)
        if previous:
            motion = _movement(combo, previous)
        else:  # no previous chord: close position, as high as the ceiling allows
            motion = 0.5 * (ceiling - combo[-1]) + 0.1 * span
        cost = motion + _MISSING_COST * missing + 1.0 * doubled
        if cost < best_cost:
            best, best_cost = combo, cost
    return best or tuple(candidates[-voices:])


def _bass_note(root: int, below: int | None, previous: int | None, config: VoicingConfig) -> int | None:
    options = [p for p in range(config.bass_low, config.bass_high + 1) if p % 12 == root % 12]
    if below is not None:
        options = [p for p in options if p < below]
        if not options:  # the upper voices reach into the bass range: go an octave down
            options = [p for p in range(max(0, config.bass_low - 12), below) if p % 12 == root % 12]
    if not options:
        return None
    if previous is None:
        return options[0]
    return min(options, key=lambda p: (abs(p - previous), p))


def voice_chord(
    root: int,
    pitch_classes: Iterable[int],
    melody_pitch: int | None,
    previous: Voicing | None = None,
    config: VoicingConfig = VoicingConfig(),
) -> Voicing:
    """Voice a chord under ``melody_pitch`` (None: no melody sounding, the range top applies).

    Every note is strictly below the melody note. An empty pitch-class set gives an empty
    voicing (no chord)."""
    pcs = tuple(sorted({int(p) % 12 for p in pitch_classes}))
    if not pcs:
        return Voicing(())
    root %= 12
    ceiling = config.high if melody_pitch is None else min(config.high, int(melody_pitch) - 1)
    if ceiling < 0:
        return Voicing(())
    before = tuple(sorted(previous.upper)) if previous else ()
    upper = _upper_voices(root, pcs, ceiling, before, config)
    bass = None
    if config.bass:
        lowest = min(upper) if upper else ceiling + 1
        bass = _bass_note(root, lowest, previous.bass if previous else None, config)
    return Voicing(tuple(sorted(upper)), bass)


def _strike(voicing: Voicing, start: float, length: float, velocity: int) -> list[Note]:
    return [Note(p, velocity, length, at_beats=start) for p in voicing.pitches]


def render(
    voicing: Voicing,
    style: str,
    start_beats: float,
    duration_beats: float,
    velocity: int = 72,
    beats_per_bar: int = 4,
    arpeggio_rate: int = 2,
    beat_length: float = 1.0,
) -> list[Note]:
    """Note events for ``voicing`` held from ``start_beats`` for ``duration_beats``.

    block: the chord on every beat of the span; pad: the chord held through the span;
    arpeggio: upper voices one at a time, ``arpeggio_rate`` notes per beat, up and around,
    the bass held; comping: a short chord on the beat and another on its second half in
    every other beat (a Charleston-like figure), the bass on each chord start.
    A beat is ``beat_length`` quarters (the metric beat: 1.5 in 6/8), ``beats_per_bar`` of them
    a bar from song position 0. Times are song positions in quarters; events never pass the
    span's end."""
    if style not in STYLES:
        raise ValueError(f"unknown voicing style {style!r}; valid: {', '.join(STYLES)}")
    if duration_beats <= 0 or not voicing.pitches:
        return []
    end = start_beats + duration_beats
    events: list[Note] = []
    if style == "pad":
        return _strike(voicing, start_beats, duration_beats, velocity)
    beat = start_beats
    if style == "block":
        while beat < end - 1e-9:
            length = min(beat_length, end - beat)
            events += _strike(voicing, beat, length * 0.95, velocity)
            beat += length
        return events
    if style == "arpeggio":
        if voicing.bass is not None:
            events.append(Note(voicing.bass, velocity, duration_beats, at_beats=start_beats))
        upper = voicing.upper or (voicing.bass,)
        order = list(upper) + list(reversed(upper[1:-1]))  # up and back down
        step = beat_length / arpeggio_rate
        index = 0
        while beat < end - 1e-9:
            length = min(step, end - beat)
            events.append(Note(order[index % len(order)], velocity, length * 0.95, at_beats=beat))
            beat += length
            index += 1
        return events
    # comping: hits on the beat (short) and on the "and" of every second beat of the bar
    half, hit = beat_length / 2, 0.4 * beat_length
    while beat < end - 1e-9:
        length = min(beat_length, end - beat)
        if voicing.bass is not None:
            events.append(Note(voicing.bass, velocity, length * 0.95, at_beats=beat))
        upper = Voicing(voicing.upper)
        events += _strike(upper, beat, min(hit, length) * 0.95, velocity)
        if round(beat / beat_length) % beats_per_bar % 2 == 1 and length > half:
            events += _strike(upper, beat + half, hit, max(1, velocity - 12))
        beat += length
    return events

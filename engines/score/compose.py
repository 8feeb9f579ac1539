"""The music of a score: the theme (or the style's motif) developed section by section with the
continuation model, harmonized with the harmonizer, orchestrated by arousal (docs/score.md).

Every part is a list of ``core.events.Note`` at song positions in quarters (``at_beats``).
The theme's notes are copied as written (its ticks, not the model's grid) into the piano parts.
Arousal decides, per section: the piano's register (``registers``), the velocities, which parts
play (melody doubling from ``MELODY_FROM``, bass from ``BASS_FROM``, percussion from
``DRUMS_FROM``), the harmony's figure (pad, block chords, arpeggio) and the bass and drum
patterns; valence reaches the models (mode steering, chord colour) and the motif's mode.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from core.errors import CodecError, ScoreBridgeError
from core.events import Note
from core.keys import best_key
from core.midifile import FileNote, MidiFileError, top_line
from engines.continuation.defaults import USER_BIASES
from engines.continuation.offline import continue_notes, read_source
from engines.continuation.sample import SamplingConfig
from engines.continuation.tokens import LEFT, RIGHT, STEPS_PER_QUARTER, NoteEvent
from engines.harmonizer.clip import ChordSpan, ClipOptions, accompaniment, clip_grid, harmonize_notes
from engines.harmonizer.harmonize import chord_root
from engines.harmonizer.vocab import ROOT_NAMES
from engines.harmonizer.voicing import VoicingConfig
from engines.va import VACurve

from .form import Plan, Section
from .presets import STYLES, motif

__all__ = ["Music", "Theme", "compose", "load_theme", "motif_theme", "registers", "theme_fits"]

MELODY_FROM, BASS_FROM, DRUMS_FROM = 0.0, -0.5, -0.25
MAX_THEME_BARS = 32


@dataclass
class Theme:
    """The prompt: notes on the model's grid, the bar length in grid steps, and the notes as
    written (hand, start quarters, duration quarters, pitch, velocity)."""

    grid: list[NoteEvent]
    bar_steps: int
    written: list[tuple[int, float, float, int, int]]
    time_signature: tuple[int, int]
    builtin: bool
    ticks_per_beat: int | None = None  # the theme file's resolution (None: the built-in motif)

    @property
    def bars(self) -> int:
        end = max(n.end_steps for n in self.grid)
        return -(-end // self.bar_steps)

    @property
    def beats(self) -> float:
        return self.bars * self.bar_steps / STEPS_PER_QUARTER


@dataclass
class Music:
    """The parts (name -> notes), the chords, the key and how many notes each source gave."""

    parts: dict[str, list[Note]]
    chords: list[ChordSpan]
    key: str
    theme_notes: int
    generated_notes: int


def load_theme(path: Path) -> Theme:
    """Read a theme MIDI file; refuses a file that is not MIDI, has no piano notes, or is long."""
    try:
        grid, bar_steps, _tempo, source = read_source(path)
    except (MidiFileError, CodecError) as exc:
        text = str(exc)  # (the reader's messages mostly name the file already)
        raise ScoreBridgeError(f"--theme {text if text.startswith(str(path)) else f'{path}: {text}'}") from None
    if not grid:
        raise ScoreBridgeError(f"--theme {path}: no notes in the piano range 21..108")
    per_beat = source.ticks_per_beat
    written = [(hand, n.start_ticks / per_beat, (n.end_ticks - n.start_ticks) / per_beat, n.pitch, n.velocity)
               for hand, n in source.notes if n.end_ticks > n.start_ticks]
    numerator = round(bar_steps * 4 / STEPS_PER_QUARTER) if bar_steps % STEPS_PER_QUARTER == 0 else None
    signature = (numerator, 4) if numerator else (round(bar_steps * 8 / STEPS_PER_QUARTER), 8)
    theme = Theme(grid, bar_steps, written, signature, builtin=False, ticks_per_beat=per_beat)
    if theme.bars > MAX_THEME_BARS:
        raise ScoreBridgeError(f"--theme {path}: {theme.bars} bars; a theme may have at most {MAX_THEME_BARS}")
    return theme


def motif_theme(style: str, minor: bool) -> Theme:
    """The style's built-in two-bar motif as a theme (4/4)."""
    written = [(hand, start, duration, pitch, 80) for hand, start, duration, pitch in motif(style, minor)]
    grid = [NoteEvent(round(start * STEPS_PER_QUARTER), RIGHT if hand == 0 else LEFT, pitch,
                      max(1, round(duration * STEPS_PER_QUARTER)), 80) for hand, start, duration, pitch, _ in written]
    return Theme(sorted(grid, key=lambda n: (n.onset_steps, n.hand, n.pitch)), 4 * STEPS_PER_QUARTER,
                 [(h, s, d, p, v) for h, s, d, p, v in written], (4, 4), builtin=True)


def registers(arousal: float) -> tuple[tuple[int, int], tuple[int, int]]:
    """(right hand, left hand) key ranges: calm is close and middle, intense wide and high."""
    right = (round(59 + 7 * arousal), round(86 + 10 * arousal))
    left = (max(21, round(34 - 6 * arousal)), round(59 - 3 * arousal))
    return right, left


def _velocity(base: float, arousal: float) -> int:
    """A velocity scaled as ``va apply`` does (x 2^(0.5 a))."""
    return int(min(127, max(1, round(base * 2 ** (0.5 * arousal)))))


def _develop(theme: Theme, plan: Plan, curve: VACurve, model, style: int, seed: int,
             pitch_classes: frozenset[int] | None, progress: Callable[[float], None]) -> list[NoteEvent]:
    """The continuation, section by section after the theme, each conditioned on the curve and
    held to the section's register."""
    bar_steps = theme.bar_steps
    notes = list(theme.grid)
    theme_end = theme.bars * bar_steps
    tempo = list(plan.tempo_map)
    generated: list[NoteEvent] = []
    for section in plan.sections:
        start = max(round(section.start_beats * STEPS_PER_QUARTER), theme_end)
        end = round(plan.end_beats(section) * STEPS_PER_QUARTER)
        progress(section.index / len(plan.sections))
        if end - start < STEPS_PER_QUARTER:
            continue
        right, left = registers(section.arousal)
        config = SamplingConfig(temperature=1.0, top_p=0.95, seed=seed * 1009 + section.index,
                                pitch_classes=pitch_classes, right_range=right, left_range=left,
                                mode_steer=5.0, **USER_BIASES)
        start_beats = start / STEPS_PER_QUARTER

        def va(after_beats: float, start_beats: float = start_beats) -> tuple[float, float]:
            valence, arousal = curve.at_beats(start_beats + after_beats, tempo)
            return float(valence), float(arousal)

        # The model counts bars from its prompt's start: move the music so that the section
        # starts on one of its bar lines (after a short bar the score's bar lines moved too).
        offset = -start % bar_steps
        moved = [replace(n, onset_steps=n.onset_steps + offset) for n in notes]
        bars = -(-(end - start) // bar_steps)
        new = continue_notes(model, moved, bar_steps, bars, config, 4, style, va, register="free", grid="prompt")
        prompt_end = -(-max(n.end_steps for n in moved) // bar_steps) * bar_steps
        for note in new:
            onset = note.onset_steps - prompt_end + start
            if onset >= end:
                continue
            kept = replace(note, onset_steps=onset, duration_steps=min(note.duration_steps, end - onset))
            notes.append(kept)
            generated.append(kept)
    progress(1.0)
    return generated


_LINE_TICKS = 5760  # per quarter, for core.midifile.top_line: every grid and common file position


def _skyline(notes: list[Note]) -> list[Note]:
    """The highest sounding note at each moment (``core.midifile.top_line``)."""
    ticked = [FileNote(n.pitch, round(n.at_beats * _LINE_TICKS), round((n.at_beats + n.duration_beats) * _LINE_TICKS),
                       n.velocity, 0) for n in notes]
    return [Note(n.pitch, n.velocity, (n.end_ticks - n.start_ticks) / _LINE_TICKS, at_beats=n.start_ticks / _LINE_TICKS)
            for n in top_line(ticked)]


def _section_key(piano: list[Note], start: float, end: float) -> tuple[int, str] | None:
    """The key of everything the piano plays in [start, end) (Krumhansl-Schmuckler on the
    duration-weighted pitch classes of both hands: the texture, not only the top line)."""
    histogram = np.zeros(12)
    for note in piano:
        overlap = min(end, note.at_beats + note.duration_beats) - max(start, note.at_beats)
        if overlap > 0:
            histogram[note.pitch % 12] += overlap
    if not histogram.any():
        return None
    tonic, minor, _ = best_key(histogram)
    return tonic, "minor" if minor else "major"


def _harmonize(model, line: list[Note], section: Section, plan: Plan, curve: VACurve, options: ClipOptions,
               time_signature: tuple[int, int], seed: int):  # -> HarmonizedClip | None
    """The section's chords from its own first bar (the harmonizer counts bars from 0), the curve
    per step, in ``options.key``; None when no melody note sounds in it."""
    start, end = section.start_beats, plan.end_beats(section)
    melody = [replace(n, at_beats=n.at_beats - start, duration_beats=min(n.duration_beats, end - n.at_beats))
              for n in line if start - 1e-9 <= n.at_beats < end - 1e-9]
    if not melody:
        return None
    grid = clip_grid(model, time_signature)
    steps = grid.steps(section.beats)
    per_step = max(1, round(grid.step_beats * 4))
    va = curve.per_beat(steps * per_step, list(plan.tempo_map), start_beat=start, subdivisions=4)
    va = va.reshape(steps, per_step, 2).mean(1).astype(np.float32)
    try:
        return harmonize_notes(model, melody, section.beats, time_signature, options, va,
                               np.random.default_rng(seed * 1009 + section.index))
    except ValueError as exc:
        raise ScoreBridgeError(f"no harmony for section {section.index + 1}: {exc}") from None


def _shifted(notes: list[Note], by_beats: float, end_beats: float) -> list[Note]:
    """Notes moved by ``by_beats``, those at or after ``end_beats`` dropped, the rest cut there."""
    moved = []
    for note in notes:
        start = note.at_beats + by_beats
        if start < end_beats - 1e-9:
            moved.append(replace(note, at_beats=start, duration_beats=min(note.duration_beats, end_beats - start)))
    return moved


def _harmony_figure(arousal: float) -> str:
    return "pad" if arousal < 0.0 else ("block" if arousal < 0.45 else "arpeggio")


def _bass(spans: list[ChordSpan], section: Section, previous: int | None) -> tuple[list[Note], int | None]:
    """Roots in 28..47 nearest the last: held (calm), on beats 1 and 3, or in eighths (intense)."""
    notes = []
    velocity = _velocity(72, section.arousal)
    for span in spans:
        root = chord_root(span.token)
        if root is None:
            continue
        options = [p for p in range(28, 48) if p % 12 == root]
        pitch = options[0] if previous is None else min(options, key=lambda p: (abs(p - previous), p))
        previous = pitch
        step = span.duration_beats if section.arousal < 0.0 else (2.0 if section.arousal < 0.45 else 0.5)
        beat = span.start_beats
        end = span.start_beats + span.duration_beats
        count = 0
        while beat < end - 1e-9:
            length = min(step, end - beat)
            octave = 12 if step == 0.5 and count % 2 else 0
            notes.append(Note(pitch + octave, velocity, length * 0.9, at_beats=beat))
            beat += length
            count += 1
    return notes, previous


def _drums(section: Section, bar_beats: float) -> list[Note]:
    """A General MIDI kit pattern per bar by arousal (a short last bar takes its first beats), and
    a cymbal on the section's first beat."""
    a = section.arousal
    loud = _velocity(80, a)
    notes = [Note(49 if a >= 0.3 else 51, _velocity(90, a), 1.0, at_beats=section.start_beats)]
    for bar in range(-(-section.beats // int(bar_beats))):
        start = section.start_beats + bar * bar_beats
        beats = [start + b for b in range(int(bar_beats))]
        notes += [Note(36, loud, 0.25, at_beats=b) for b in (beats[::2] if a >= 0.2 else beats[:1])]
        if a >= 0.2:
            notes += [Note(38, loud, 0.25, at_beats=b) for b in beats[1::2]]
        hat_step = 1.0 if a < 0.2 else (0.5 if a < 0.6 else 0.25)
        hats = np.arange(start, start + bar_beats - 1e-9, hat_step)
        notes += [Note(42, max(1, loud - 20 + (8 if (h - start) % 1 == 0 else 0)), 0.2, at_beats=float(h))
                  for h in hats]
    return _shifted(notes, 0.0, section.start_beats + section.beats)


def compose(theme: Theme, plan: Plan, curve: VACurve, style: str, seed: int, continuation_model,
            harmonizer_model, pitch_classes: frozenset[int] | None = None,
            progress: Callable[[float], None] = lambda fraction: None) -> Music:
    """All parts of the score (module docstring)."""
    chosen = STYLES[style]
    styles = continuation_model.card.get("styles", [])
    generated = _develop(theme, plan, curve, continuation_model, styles.index(chosen.continuation), seed,
                         pitch_classes, lambda f: progress(0.8 * f))
    end_beats = plan.total_beats

    def arousal_at(beats: float) -> float:
        return plan.section_at(beats).arousal

    piano: dict[int, list[Note]] = {RIGHT: [], LEFT: []}
    for hand, start, duration, pitch, velocity in theme.written:
        if start < end_beats:
            piano[RIGHT if hand == RIGHT else LEFT].append(
                Note(pitch, max(1, velocity), min(duration, end_beats - start), at_beats=start))
    for note in generated:
        start = note.onset_steps / STEPS_PER_QUARTER
        piano[note.hand].append(Note(note.pitch, _velocity(note.velocity, arousal_at(start)),
                                     note.duration_steps / STEPS_PER_QUARTER, at_beats=start))
    line = _skyline(piano[RIGHT] or piano[LEFT])
    melody = [replace(n, velocity=_velocity(84, arousal_at(n.at_beats))) for n in line
              if arousal_at(n.at_beats) >= MELODY_FROM]

    options = ClipOptions(style=chosen.harmonizer, strategy=harmonizer_model.strategy, calls=harmonizer_model.calls,
                          temperature=harmonizer_model.temperature, rhythm=harmonizer_model.rhythm,
                          pitch_classes=pitch_classes)
    grid = clip_grid(harmonizer_model, theme.time_signature)
    harmony: list[Note] = []
    bass: list[Note] = []
    drums: list[Note] = []
    chords: list[ChordSpan] = []
    keys: list[str] = []
    low_bass: int | None = None
    for section in plan.sections:
        progress(0.8 + 0.2 * section.index / len(plan.sections))
        start, end = section.start_beats, plan.end_beats(section)
        key = _section_key(piano[RIGHT] + piano[LEFT], start, end)
        clip = _harmonize(harmonizer_model, line, section, plan, curve, replace(options, key=key),
                          theme.time_signature, seed)
        spans: list[ChordSpan] = []
        if clip is not None:  # (a section where the piano's right hand rests has no chords)
            keys.append(f"{ROOT_NAMES[clip.tonic]} {clip.mode}")
            length = end - start
            spans = [ChordSpan(s.token, s.start_beats + start, min(s.duration_beats, length - s.start_beats))
                     for s in clip.spans if s.start_beats < length - 1e-9]
            lift = round(6 * section.arousal)
            voicing = VoicingConfig(voices=4, low=48 + lift, high=79 + lift, bass=False)
            figure = replace(options, voicing_style=_harmony_figure(section.arousal), voicing=voicing,
                             velocity=_velocity(64, section.arousal))
            harmony += _shifted(accompaniment(clip.melody, clip.spans, figure, grid.steps_per_bar, grid.step_beats),
                                start, end)
        chords += spans
        if section.arousal >= BASS_FROM:
            notes, low_bass = _bass(spans, section, low_bass)
            bass += notes
        if section.arousal >= DRUMS_FROM:
            drums += _drums(section, plan.beats_per_bar)
    parts = {"piano-right": piano[RIGHT], "piano-left": piano[LEFT], "melody": melody, "harmony": harmony,
             "bass": bass, "percussion": drums}
    progress(1.0)
    return Music(parts, chords, ", ".join(dict.fromkeys(keys)) or "none", len(theme.written), len(generated))


def theme_fits(theme: Theme, duration_s: float, fastest_bpm: float) -> None:
    """Refuse a theme that cannot fit the video even at the fastest tempo."""
    if not theme.beats * 60 / fastest_bpm <= duration_s + 1e-9:
        raise ScoreBridgeError(f"the theme lasts {theme.beats:g} quarters ({theme.bars} bars): longer than the "
                               f"video ({duration_s:.1f} s) even at {fastest_bpm:g} BPM")

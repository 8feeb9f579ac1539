"""Two-hand piano token vocabulary (paper section 2) with exact encode/decode on a time grid.

Layout (VOCAB_SIZE = 437):

- 0..4 specials: PAD, SOS, EOS, UNK, BAR (a bar starts at the current time; no time passes).
- 5..356 note tokens: ``5 + ((hand * 2 + kind) * 88 + pitch - 21)`` with hand 0 = right,
  1 = left and kind 0 = NOTE_ON, 1 = NOTE_OFF, pitch 21..108 (the 88 piano keys).
- 357..388 VELOCITY bins (32): bin b stands for velocity ``velocity_of_bin(b)``; a velocity
  token precedes a NOTE_ON whenever the velocity differs from the last one written.
- 389..436 TIME_SHIFT of 1..48 grid steps; the grid is 1/12 quarter note (16ths and
  eighth-note triplets are exact); longer gaps are several shifts, split at bar lines.

The paper uses 480 ticks per quarter and 1,000 shifts; a 1/12-beat grid keeps the vocabulary
and sequences short enough for CPU real time. Time is in grid steps (``_steps``) everywhere.

Canonical form (what round-trips exactly): onsets and durations on the grid, durations >= 1
step, velocities on bin values, and at most one sounding note per (hand, pitch): a note that is
re-struck while still held ends at the new onset (as on a piano); exact duplicates are dropped.
``canonicalize`` does this and counts what it changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "BAR",
    "EOS",
    "HIGH_PITCH",
    "LEFT",
    "LOW_PITCH",
    "MAX_SHIFT_STEPS",
    "NOTE_BASE",
    "NOTE_OFF",
    "NOTE_ON",
    "NUM_NOTE_TOKENS",
    "NUM_PITCHES",
    "NUM_VELOCITIES",
    "PAD",
    "RIGHT",
    "SHIFT_BASE",
    "SOS",
    "STEPS_PER_QUARTER",
    "UNK",
    "VELOCITY_BASE",
    "VOCAB_SIZE",
    "CanonicalStats",
    "NoteEvent",
    "canonicalize",
    "decode",
    "encode",
    "is_note",
    "is_shift",
    "is_velocity",
    "note_token",
    "parse_note_token",
    "shift_steps",
    "token_name",
    "velocity_bin",
    "velocity_of_bin",
]

PAD, SOS, EOS, UNK, BAR = 0, 1, 2, 3, 4
RIGHT, LEFT = 0, 1
NOTE_ON, NOTE_OFF = 0, 1
LOW_PITCH, HIGH_PITCH = 21, 108
NUM_PITCHES = HIGH_PITCH - LOW_PITCH + 1
NOTE_BASE = 5
NUM_NOTE_TOKENS = 2 * 2 * NUM_PITCHES
VELOCITY_BASE = NOTE_BASE + NUM_NOTE_TOKENS
NUM_VELOCITIES = 32
SHIFT_BASE = VELOCITY_BASE + NUM_VELOCITIES
MAX_SHIFT_STEPS = 48
STEPS_PER_QUARTER = 12
VOCAB_SIZE = SHIFT_BASE + MAX_SHIFT_STEPS

_SPECIAL_NAMES = ("PAD", "SOS", "EOS", "UNK", "BAR")


@dataclass(frozen=True, order=True, slots=True)
class NoteEvent:
    """One note on the grid: onset and duration in grid steps, MIDI pitch, velocity, hand."""

    onset_steps: int
    hand: int
    pitch: int
    duration_steps: int
    velocity: int

    def __post_init__(self) -> None:
        if self.hand not in (RIGHT, LEFT):
            raise ValueError(f"hand must be {RIGHT} (right) or {LEFT} (left), not {self.hand}")
        if not LOW_PITCH <= self.pitch <= HIGH_PITCH:
            raise ValueError(f"pitch {self.pitch} is outside the piano range {LOW_PITCH}..{HIGH_PITCH}")
        if self.onset_steps < 0 or self.duration_steps < 1:
            raise ValueError(f"onset {self.onset_steps} must be >= 0 and duration {self.duration_steps} >= 1")
        if not 1 <= self.velocity <= 127:
            raise ValueError(f"velocity {self.velocity} is outside 1..127")

    @property
    def end_steps(self) -> int:
        return self.onset_steps + self.duration_steps


@dataclass
class CanonicalStats:
    """What ``canonicalize`` changed: re-struck notes shortened, duplicates dropped."""

    shortened: int = 0
    duplicates: int = 0


def note_token(hand: int, kind: int, pitch: int) -> int:
    """Token id of NOTE_ON/NOTE_OFF for a hand and MIDI pitch."""
    if hand not in (RIGHT, LEFT) or kind not in (NOTE_ON, NOTE_OFF):
        raise ValueError(f"hand {hand} / kind {kind} must each be 0 or 1")
    if not LOW_PITCH <= pitch <= HIGH_PITCH:
        raise ValueError(f"pitch {pitch} is outside {LOW_PITCH}..{HIGH_PITCH}")
    return NOTE_BASE + (hand * 2 + kind) * NUM_PITCHES + pitch - LOW_PITCH


def is_note(token: int) -> bool:
    return NOTE_BASE <= token < VELOCITY_BASE


def is_velocity(token: int) -> bool:
    return VELOCITY_BASE <= token < SHIFT_BASE


def is_shift(token: int) -> bool:
    return SHIFT_BASE <= token < VOCAB_SIZE


def parse_note_token(token: int) -> tuple[int, int, int]:
    """(hand, kind, pitch) of a note token."""
    if not is_note(token):
        raise ValueError(f"token {token} is not a note token")
    offset = token - NOTE_BASE
    group, index = divmod(offset, NUM_PITCHES)
    hand, kind = divmod(group, 2)
    return hand, kind, index + LOW_PITCH


def velocity_bin(velocity: int) -> int:
    """Bin 0..31 of a MIDI velocity 1..127 (4 velocities per bin)."""
    if not 1 <= velocity <= 127:
        raise ValueError(f"velocity {velocity} is outside 1..127")
    return min(NUM_VELOCITIES - 1, (velocity - 1) // 4)


def velocity_of_bin(index: int) -> int:
    """The velocity a bin decodes to (its upper edge; bin 31 -> 127)."""
    if not 0 <= index < NUM_VELOCITIES:
        raise ValueError(f"velocity bin {index} is outside 0..{NUM_VELOCITIES - 1}")
    return 127 if index == NUM_VELOCITIES - 1 else 4 * index + 4


def shift_steps(token: int) -> int:
    if not is_shift(token):
        raise ValueError(f"token {token} is not a TIME_SHIFT token")
    return token - SHIFT_BASE + 1


def token_name(token: int) -> str:
    """Readable name, e.g. 'RH_ON_60', 'VEL_16', 'SHIFT_12', 'BAR'."""
    if 0 <= token < NOTE_BASE:
        return _SPECIAL_NAMES[token]
    if is_note(token):
        hand, kind, pitch = parse_note_token(token)
        return f"{'RH' if hand == RIGHT else 'LH'}_{'ON' if kind == NOTE_ON else 'OFF'}_{pitch}"
    if is_velocity(token):
        return f"VEL_{token - VELOCITY_BASE}"
    if is_shift(token):
        return f"SHIFT_{shift_steps(token)}"
    raise ValueError(f"token {token} is outside the vocabulary 0..{VOCAB_SIZE - 1}")


def canonicalize(notes: Iterable[NoteEvent]) -> tuple[list[NoteEvent], CanonicalStats]:
    """Sorted notes with one sounding note per (hand, pitch) and bin-valued velocities."""
    stats = CanonicalStats()
    by_key: dict[tuple[int, int], list[NoteEvent]] = {}
    for note in sorted(notes):
        by_key.setdefault((note.hand, note.pitch), []).append(note)
    result: list[NoteEvent] = []
    for group in by_key.values():
        group.sort(key=lambda n: (n.onset_steps, -n.duration_steps))
        kept: list[NoteEvent] = []
        for note in group:
            if kept and kept[-1].onset_steps == note.onset_steps:
                stats.duplicates += 1
                continue
            if kept and kept[-1].end_steps > note.onset_steps:
                last = kept[-1]
                kept[-1] = NoteEvent(
                    last.onset_steps,
                    last.hand,
                    last.pitch,
                    note.onset_steps - last.onset_steps,
                    last.velocity,
                )
                stats.shortened += 1
            kept.append(note)
        result.extend(kept)
    result = [
        NoteEvent(n.onset_steps, n.hand, n.pitch, n.duration_steps, velocity_of_bin(velocity_bin(n.velocity)))
        for n in result
    ]
    return sorted(result), stats


def _shifts(gap: int) -> list[int]:
    tokens: list[int] = []
    while gap > 0:
        step = min(gap, MAX_SHIFT_STEPS)
        tokens.append(SHIFT_BASE + step - 1)
        gap -= step
    return tokens


def encode(
    notes: Sequence[NoteEvent],
    bar_starts_steps: Sequence[int] = (),
    *,
    add_sos: bool = False,
    add_eos: bool = False,
) -> list[int]:
    """Tokens of canonical notes (see ``canonicalize``); raises ValueError on other input.

    At each time step: BAR (if a bar starts), NOTE_OFFs, then VELOCITY/NOTE_ONs; within a
    kind, right hand before left, low pitch before high.
    """
    ordered = sorted(notes)
    sounding: set[tuple[int, int]] = set()
    events: dict[int, list[tuple[int, int, NoteEvent]]] = {}
    for note in ordered:
        events.setdefault(note.onset_steps, []).append((1, 0, note))
        events.setdefault(note.end_steps, []).append((0, 0, note))
    bars = sorted({b for b in bar_starts_steps if b >= 0})
    times = sorted(set(events) | set(bars))
    tokens: list[int] = [SOS] if add_sos else []
    now, velocity = 0, -1
    bar_set = set(bars)
    for time in times:
        tokens.extend(_shifts(time - now))
        now = time
        if time in bar_set:
            tokens.append(BAR)
        for kind_order, _, note in sorted(events.get(time, []), key=lambda e: (e[0], e[2].hand, e[2].pitch)):
            key = (note.hand, note.pitch)
            if kind_order == 0:
                sounding.discard(key)
                tokens.append(note_token(note.hand, NOTE_OFF, note.pitch))
                continue
            if key in sounding:
                raise ValueError(
                    f"note {note} overlaps a held note of the same hand and pitch; canonicalize first"
                )
            if velocity_of_bin(velocity_bin(note.velocity)) != note.velocity:
                raise ValueError(f"velocity {note.velocity} of {note} is not a bin value; canonicalize first")
            bin_index = velocity_bin(note.velocity)
            if bin_index != velocity:
                tokens.append(VELOCITY_BASE + bin_index)
                velocity = bin_index
            sounding.add(key)
            tokens.append(note_token(note.hand, NOTE_ON, note.pitch))
    if add_eos:
        tokens.append(EOS)
    return tokens


def decode(tokens: Iterable[int], *, close_at_end: bool = True) -> tuple[list[NoteEvent], list[int], int]:
    """Notes, bar starts (steps) and the number of repaired events from a token sequence.

    Tolerant (for model output): a NOTE_OFF without NOTE_ON is skipped, a NOTE_ON on a held key
    re-strikes it, zero-length notes are dropped; all three count as repaired. Notes still open
    at the end are closed at the final time (``close_at_end``) or dropped.
    """
    now, velocity, repaired = 0, velocity_of_bin(velocity_bin(64)), 0
    open_notes: dict[tuple[int, int], tuple[int, int]] = {}
    notes: list[NoteEvent] = []
    bars: list[int] = []

    def close(key: tuple[int, int], end: int) -> None:
        nonlocal repaired
        onset, note_velocity = open_notes.pop(key)
        if end > onset:
            notes.append(NoteEvent(onset, key[0], key[1], end - onset, note_velocity))
        else:
            repaired += 1

    for token in tokens:
        token = int(token)
        if token == EOS:
            break
        if token == BAR:
            bars.append(now)
        elif is_shift(token):
            now += shift_steps(token)
        elif is_velocity(token):
            velocity = velocity_of_bin(token - VELOCITY_BASE)
        elif is_note(token):
            hand, kind, pitch = parse_note_token(token)
            key = (hand, pitch)
            if kind == NOTE_ON:
                if key in open_notes:
                    close(key, now)
                    repaired += 1
                open_notes[key] = (now, velocity)
            elif key in open_notes:
                close(key, now)
            else:
                repaired += 1
    for key in list(open_notes):
        if close_at_end:
            close(key, now)
        else:
            open_notes.pop(key)
        repaired += 1
    return sorted(notes), bars, repaired

"""One safe way to read a MIDI file from outside: bounded size, checked header, meter and tempo.

Every offline command that takes a MIDI file (``harmonize``, ``continue``, ``va apply``) reads it
here, so a hostile or damaged file fails the same way everywhere: a ``MidiFileError`` naming the
file, the track and the tick, before any work that grows with the file's length starts. The
limits are module constants so ``docs/security.md`` can quote them. ``read_notes`` pairs the
note-ons and note-offs of every track once, for the commands that want notes, not messages.
"""

from __future__ import annotations

import io
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

import mido

from core.errors import ScoreBridgeError

__all__ = [
    "DRUM_CHANNEL",
    "MAX_LENGTH_BEATS",
    "MAX_MIDI_BYTES",
    "MAX_TRACKS",
    "FileNote",
    "MidiFileError",
    "NoteFile",
    "check_midi",
    "read_midi_file",
    "read_notes",
    "top_line",
]

# A large orchestral MIDI file is well under 1 MiB (100,000 notes take about 0.9 MiB); 2 MiB keeps
# mido's in-memory messages (about 280 bytes each) near 200 MB even for a file of nothing but
# 3-byte running-status events (700,000 messages).
MAX_MIDI_BYTES = 2 * 1024 * 1024
# No event may lie further than this from the start: about 14 hours at 120 BPM, far beyond any
# piece, and small enough that per-beat work (a grid, CC lanes) stays bounded.
MAX_LENGTH_BEATS = 100_000
# Type-1 files with more tracks than this are not music a person wrote (General MIDI has 16
# channels; large orchestral templates use a few hundred tracks at most).
MAX_TRACKS = 1024
# Time-signature denominators from a whole note to a 64th; MIDI can encode 2^255.
MAX_DENOMINATOR = 64
# General MIDI percussion (channel 10 as users count): never a melody
DRUM_CHANNEL = 9


class MidiFileError(ScoreBridgeError, ValueError):
    """A MIDI file is unreadable, damaged, or outside the limits above."""


# What mido raises on damaged bytes (OSError for bad chunks and status bytes, EOFError for
# a cut file, KeySignatureError (an Exception subclass) for an impossible key, ValueError and
# struct.error for odd sizes and meta data).
_PARSE_ERRORS = (OSError, EOFError, ValueError, KeyError, IndexError, TypeError, struct.error,
                 mido.KeySignatureError)


def _header(path: Path, data: bytes) -> tuple[int, int, int]:
    """(format, tracks, ticks per beat) from the MThd chunk; refuses what mido would misread
    (it reads the division and the track count as signed numbers)."""
    unreadable = f"{path}: not a readable MIDI file"
    if len(data) < 14 or data[:4] != b"MThd":
        raise MidiFileError(f"{unreadable} (no MThd header)")
    size, kind, tracks, division = struct.unpack(">IHHH", data[4:14])
    if size < 6:
        raise MidiFileError(f"{unreadable} (a header chunk of {size} bytes, expected 6)")
    if kind > 2:
        raise MidiFileError(f"{unreadable} (format {kind}; MIDI files are format 0, 1 or 2)")
    if division & 0x8000:
        raise MidiFileError(f"{unreadable}: SMPTE time division (frames per second instead of ticks "
                            "per beat) is not supported; export the file with a tempo-based (PPQ) division")
    if division == 0:
        raise MidiFileError(f"{unreadable} (time division of 0 ticks per beat: a damaged header)")
    if not 1 <= tracks <= MAX_TRACKS:
        raise MidiFileError(f"{unreadable} (the header says {tracks} tracks; expected 1..{MAX_TRACKS})")
    return kind, tracks, division


def read_midi_file(path: str | os.PathLike[str]) -> mido.MidiFile:
    """Read and check a MIDI file (see ``check_midi``); any problem is a ``MidiFileError``."""
    source = Path(path)
    try:
        info = source.stat()
    except FileNotFoundError:
        raise MidiFileError(f"{source}: no such file") from None
    except OSError as exc:
        raise MidiFileError(f"{source}: cannot read it ({exc.strerror or exc})") from None
    if not stat.S_ISREG(info.st_mode):
        raise MidiFileError(f"{source}: not a regular file")
    if info.st_size > MAX_MIDI_BYTES:
        raise MidiFileError(f"{source}: {info.st_size} bytes; MIDI files are limited to "
                            f"{MAX_MIDI_BYTES // (1024 * 1024)} MiB")
    try:
        with source.open("rb") as handle:
            data = handle.read(MAX_MIDI_BYTES + 1)
    except OSError as exc:
        raise MidiFileError(f"{source}: cannot read it ({exc.strerror or exc})") from None
    if len(data) > MAX_MIDI_BYTES:
        raise MidiFileError(f"{source}: more than {MAX_MIDI_BYTES // (1024 * 1024)} MiB")
    _header(source, data)
    try:
        midi = mido.MidiFile(file=io.BytesIO(data))
    except _PARSE_ERRORS as exc:
        raise MidiFileError(f"{source}: not a readable MIDI file ({type(exc).__name__}: {exc})") from None
    midi.filename = str(source)
    check_midi(midi, source)
    return midi


def check_midi(midi: mido.MidiFile, source: str | os.PathLike[str]) -> None:
    """Refuse what no piece holds: events past ``MAX_LENGTH_BEATS``, tempo 0, a meter with
    numerator 0 or a denominator outside 1..``MAX_DENOMINATOR``. Errors name the track and tick."""
    per_beat = midi.ticks_per_beat
    if not isinstance(per_beat, int) or per_beat <= 0:
        raise MidiFileError(f"{source}: time division {per_beat} ticks per beat (must be positive)")
    if len(midi.tracks) > MAX_TRACKS:
        raise MidiFileError(f"{source}: {len(midi.tracks)} tracks; at most {MAX_TRACKS}")
    if midi.type == 0 and len(midi.tracks) != 1:
        raise MidiFileError(f"{source}: not a readable MIDI file (format 0 holds exactly one track, this "
                            f"file {len(midi.tracks)})")
    limit = MAX_LENGTH_BEATS * per_beat
    for index, track in enumerate(midi.tracks):
        now = 0
        for message in track:
            now += message.time
            if now > limit:
                raise MidiFileError(
                    f"{source}: track {index}, tick {now}: an event at beat {now / per_beat:,.0f}, past the "
                    f"longest piece read ({MAX_LENGTH_BEATS:,} beats; a damaged or hostile time gap)")
            if not message.is_meta:
                continue
            if message.type == "set_tempo" and message.tempo <= 0:
                raise MidiFileError(f"{source}: track {index}, tick {now}: tempo {message.tempo} "
                                    "microseconds per beat (must be positive)")
            if message.type == "time_signature":
                numerator, denominator = message.numerator, message.denominator
                if numerator < 1 or not 1 <= denominator <= MAX_DENOMINATOR:
                    raise MidiFileError(
                        f"{source}: track {index}, tick {now}: time signature {numerator}/{denominator} "
                        f"(the numerator must be at least 1, the denominator 1..{MAX_DENOMINATOR})")


@dataclass(frozen=True)
class FileNote:
    """A note of a MIDI file, in the file's ticks; ``channel`` as on the wire, 0-15."""

    pitch: int
    start_ticks: int
    end_ticks: int
    velocity: int
    channel: int


@dataclass
class NoteFile:
    """The notes of a MIDI file track by track, with its meter, tempo map and meta events."""

    ticks_per_beat: int
    tracks: list[list[FileNote]]  # each track's notes in the order they end
    track_names: list[str]
    time_signature: tuple[int, int]  # the first in time; 4/4 when the file has none
    tempo_changes: list[tuple[float, int]]  # (beats, microseconds per beat); 120 BPM when none
    meta: list[tuple[float, mido.MetaMessage]]  # set_tempo, time_signature, key_signature, by time

    def beats(self, ticks: int) -> float:
        return ticks / self.ticks_per_beat


def read_notes(path: str | os.PathLike[str]) -> NoteFile:
    """Read a MIDI file (``read_midi_file``) and pair each track's note-ons with their note-offs,
    first on, first off per channel and pitch. A note-on never switched off is dropped.
    Type 2 files (independent sequences, no common time line) are refused."""
    midi = read_midi_file(path)
    if midi.type == 2:
        raise MidiFileError(f"{path}: MIDI type 2 (independent sequences) is not supported")
    per_beat = midi.ticks_per_beat
    tracks: list[list[FileNote]] = []
    meta: list[tuple[float, mido.MetaMessage]] = []
    for messages in midi.tracks:
        now, sounding, notes = 0, {}, []
        for message in messages:
            now += message.time
            if message.is_meta:
                if message.type in ("set_tempo", "time_signature", "key_signature"):
                    meta.append((now / per_beat, message))
            elif message.type == "note_on" and message.velocity > 0:
                sounding.setdefault((message.channel, message.note), []).append((now, message.velocity))
            elif message.type in ("note_on", "note_off") and sounding.get((message.channel, message.note)):
                start, velocity = sounding[(message.channel, message.note)].pop(0)
                notes.append(FileNote(message.note, start, now, velocity, message.channel))
        tracks.append(notes)
    meta.sort(key=lambda item: item[0])
    signature = next(((m.numerator, m.denominator) for _, m in meta if m.type == "time_signature"), (4, 4))
    tempos = [(beats, m.tempo) for beats, m in meta if m.type == "set_tempo"] or [(0.0, 500_000)]
    return NoteFile(per_beat, tracks, [track.name or "" for track in midi.tracks], signature, tempos, meta)


def top_line(notes: list[FileNote]) -> list[FileNote]:
    """The melody of a part: the highest sounding note at each moment (a skyline). A higher note
    cuts a lower one short, a lower one under a higher one is dropped; percussion
    (``DRUM_CHANNEL``) and notes of no length are ignored."""
    pitched = sorted((n for n in notes if n.channel != DRUM_CHANNEL and n.end_ticks > n.start_ticks),
                     key=lambda n: (n.start_ticks, -n.pitch))
    line: list[FileNote] = []
    for note in pitched:
        if line and note.start_ticks < line[-1].end_ticks:
            if note.pitch <= line[-1].pitch:
                continue
            cut = line.pop()
            if note.start_ticks > cut.start_ticks:
                line.append(FileNote(cut.pitch, cut.start_ticks, note.start_ticks, cut.velocity, cut.channel))
        line.append(note)
    return line

"""One safe way to read a MIDI file from outside: bounded size, checked header, meter and tempo.

Every offline command that takes a MIDI file (``harmonize``, ``continue``, ``va apply``) reads it
here, so a hostile or damaged file fails the same way everywhere: a ``MidiFileError`` naming the
file, the track and the tick, before any work that grows with the file's length starts. The
limits are module constants so ``docs/security.md`` can quote them.
"""

from __future__ import annotations

import io
import os
import stat
import struct
from pathlib import Path

import mido

from core.errors import ScoreBridgeError

__all__ = [
    "MAX_LENGTH_BEATS",
    "MAX_MIDI_BYTES",
    "MAX_TRACKS",
    "MidiFileError",
    "check_midi",
    "read_midi_file",
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
                raise MidiFileError(f"{source}: track {index}, tick {now}: tempo {message.tempo} microseconds "
                                    "per beat (must be positive)")
            if message.type == "time_signature":
                numerator, denominator = message.numerator, message.denominator
                if numerator < 1 or not 1 <= denominator <= MAX_DENOMINATOR:
                    raise MidiFileError(
                        f"{source}: track {index}, tick {now}: time signature {numerator}/{denominator} "
                        f"(the numerator must be at least 1, the denominator 1..{MAX_DENOMINATOR})")

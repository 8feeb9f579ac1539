"""Retuned MIDI output: MTS single-note tuning, MPE pitch bends, or the nearest 12-TET key.

One ``Retuner`` turns the bridge's or a file's 12-key MIDI stream into a stream that sounds in
a ``core.tuning.Tuning``; the live output port and the MIDI files of the offline commands use the
same class, so they send the same bytes.

- ``mts``: MIDI Tuning Standard real-time single-note tuning change
  (``F0 7F 7F 08 02 tt ll [kk xx yy zz]... F7``) for all 128 keys at the start and on every
  tuning change, then Tuning Program Select (RPN 3) on every channel so the synth uses it; the
  notes stay where they are. A synth that applies real-time changes to sounding notes
  (FluidSynth does) retunes them at once.
- ``mpe``: MPE lower zone (MPE Configuration Message, RPN 6 on channel 1), pitch-bend range by
  RPN 0 on every member channel, then each note on its own member channel with the pitch bend
  that puts its nearest 12-TET key on the tuned pitch.
- ``none``: each note on the 12-TET key nearest its tuned pitch (within 50 cents).

A key the mapping leaves out plays the nearest mapped key. Note-offs always follow the note-on
they end (its channel and key), so a tuning change never leaves a note stuck.
"""

from __future__ import annotations

import math
from collections import deque

import mido

from core.tuning import Tuning

__all__ = ["MODES", "Retuner", "mts_table", "retune_file"]

MODES = ("mts", "mpe", "none")
_BEND_MAX = 8191


def _mts_entry(key: int, cents: float) -> list[int]:
    """``kk xx yy zz``: the key, then its pitch as a 12-TET key and 14-bit fraction of a semitone."""
    semitones = min(max(cents / 100.0, 0.0), 127 + 16382 / 16384)  # 7F 7F 7F means "no change"
    whole = math.floor(semitones)
    fraction = round((semitones - whole) * 16384)
    if fraction == 16384:
        whole, fraction = whole + 1, 0
    return [key, whole, fraction >> 7, fraction & 0x7F]


def mts_table(tuning: Tuning, program: int = 0) -> list[mido.Message]:
    """Single-note tuning changes (real time, all devices) for the 128 keys, in two messages of 64
    keys (the count is one data byte); an unmapped key keeps its 12-TET pitch."""
    messages = []
    for start in (0, 64):
        data = [0x7F, 0x7F, 0x08, 0x02, program, 64]
        for key in range(start, start + 64):
            cents = tuning.cents(key)
            data += _mts_entry(key, 100.0 * key if cents is None else cents)
        messages.append(mido.Message("sysex", data=data))
    return messages


def _rpn(channel: int, number: int, msb: int, lsb: int | None = None) -> list[mido.Message]:
    """Set registered parameter ``number`` on ``channel``, then deselect (RPN null)."""
    out = [mido.Message("control_change", channel=channel, control=101, value=number >> 7),
           mido.Message("control_change", channel=channel, control=100, value=number & 0x7F),
           mido.Message("control_change", channel=channel, control=6, value=msb)]
    if lsb is not None:
        out.append(mido.Message("control_change", channel=channel, control=38, value=lsb))
    out += [mido.Message("control_change", channel=channel, control=101, value=127),
            mido.Message("control_change", channel=channel, control=100, value=127)]
    return out


class Retuner:
    """Converts one stream of channel messages; not thread-safe (its caller holds a lock)."""

    def __init__(self, tuning: Tuning, mode: str, mpe_members: int = 15, bend_range: int = 48) -> None:
        if mode not in MODES:
            raise ValueError(f"tuning output {mode!r}: use one of {', '.join(MODES)}")
        if not 1 <= mpe_members <= 15:
            raise ValueError(f"MPE member channels {mpe_members}: must be 1..15")
        if not 1 <= bend_range <= 96:
            raise ValueError(f"pitch-bend range {bend_range}: must be 1..96 semitones")
        self.tuning = tuning
        self.mode = mode
        self.bend_range = bend_range
        self.members = list(range(1, 1 + mpe_members))
        self._free: deque[int] = deque(self.members)
        # (input channel, input key) -> stack of (output channel, output key), oldest first
        self._sounding: dict[tuple[int, int], list[tuple[int, int]]] = {}
        self._order: deque[tuple[int, int]] = deque()  # MPE: input notes, oldest first, for stealing
        self.snapped = 0  # notes on unmapped keys, played on the nearest mapped key
        self.stolen = 0  # MPE notes cut because every member channel was busy

    def start(self) -> list[mido.Message]:
        """What to send before any note: the tuning table, or the MPE zone and bend ranges."""
        if self.mode == "mts":
            out = mts_table(self.tuning)
            for channel in range(16):
                out += _rpn(channel, 3, 0)
            return out
        if self.mode == "mpe":
            out = _rpn(0, 6, len(self.members))
            for channel in self.members:
                out += _rpn(channel, 0, self.bend_range, 0)
            return out
        return []

    def set_tuning(self, tuning: Tuning) -> list[mido.Message]:
        """Change the tuning while notes may sound: MTS resends the table (the synth retunes what
        sounds); MPE re-bends every sounding note; ``none`` lets them end on their keys."""
        self.tuning = tuning
        if self.mode == "mts":
            return mts_table(tuning)
        out = []
        if self.mode == "mpe":
            for (_, key), targets in self._sounding.items():
                for channel, out_key in targets:
                    out.append(self._bend(channel, out_key, self._cents(key)))
        return out

    def _cents(self, key: int) -> float:
        mapped = self.tuning.nearest_mapped(key)
        if mapped is None:
            return 100.0 * key
        cents = self.tuning.cents(mapped)
        return 100.0 * key if cents is None else cents

    def _bend(self, channel: int, out_key: int, cents: float) -> mido.Message:
        value = round((cents - 100.0 * out_key) / (100.0 * self.bend_range) * 8192)
        return mido.Message("pitchwheel", channel=channel, pitch=max(-8192, min(_BEND_MAX, value)))

    def convert(self, message: mido.Message) -> list[mido.Message]:
        """The messages that play ``message`` in the tuning."""
        kind = message.type
        if kind == "note_on" and message.velocity > 0:
            return self._note_on(message)
        if kind in ("note_on", "note_off"):
            return self._note_off(message)
        if kind == "polytouch":
            targets = self._sounding.get((message.channel, message.note))
            return [message.copy(channel=c, note=k) for c, k in targets[-1:]] if targets else []
        if self.mode != "mpe" or not hasattr(message, "channel"):
            if kind == "control_change" and message.control in (120, 123):
                self._forget(message.channel)
            return [message]
        if kind == "program_change":
            return [message.copy(channel=c) for c in [0, *self.members]]
        if kind == "control_change" and message.control in (120, 123):
            self._forget(None)
            return [message.copy(channel=c) for c in [0, *self.members]]
        return [message.copy(channel=0)]  # expression common to all notes: the zone's master channel

    def _note_on(self, message: mido.Message) -> list[mido.Message]:
        if self.tuning.cents(message.note) is None:
            self.snapped += 1
        cents = self._cents(message.note)
        out_key = max(0, min(127, round(cents / 100.0)))
        out: list[mido.Message] = []
        if self.mode == "mts":
            out_key = self.tuning.nearest_mapped(message.note)
            out_key = message.note if out_key is None else out_key
            channel = message.channel
        elif self.mode == "none":
            channel = message.channel
        else:
            if not self._free:
                out += self._steal()
            channel = self._free.popleft()
            out.append(self._bend(channel, out_key, cents))
            self._order.append((message.channel, message.note))
        self._sounding.setdefault((message.channel, message.note), []).append((channel, out_key))
        out.append(message.copy(channel=channel, note=out_key))
        return out

    def _note_off(self, message: mido.Message) -> list[mido.Message]:
        source = (message.channel, message.note)
        targets = self._sounding.get(source)
        if not targets:
            return []  # nothing of ours sounds there: a stray note-off stays silent
        channel, out_key = targets.pop(0)
        if not targets:
            del self._sounding[source]
        if self.mode == "mpe":
            self._order.remove(source)
            self._free.append(channel)
        return [mido.Message("note_off", channel=channel, note=out_key, velocity=getattr(message, "velocity", 0))]

    def _steal(self) -> list[mido.Message]:
        self.stolen += 1
        channel, key = self._order[0]
        return self._note_off(mido.Message("note_off", channel=channel, note=key))

    def _forget(self, channel: int | None) -> None:
        for source in [s for s in self._sounding if channel is None or s[0] == channel]:
            for out_channel, _ in self._sounding.pop(source):
                if self.mode == "mpe":
                    self._free.append(out_channel)
        self._order = deque(s for s in self._order if s in self._sounding)

    def release_all(self) -> list[mido.Message]:
        """Note-offs for every note still sounding (end of a file, a panic)."""
        out = []
        for (channel, key), targets in list(self._sounding.items()):
            for _ in range(len(targets)):
                out += self._note_off(mido.Message("note_off", channel=channel, note=key))
        return out


def retune_file(midi: mido.MidiFile, tuning: Tuning, mode: str) -> mido.MidiFile:
    """A copy of ``midi`` that sounds in ``tuning`` (see the module doc); one ``Retuner`` hears
    every track in time order, so MPE channels are shared across tracks, and each converted
    message stays in its track. The setup messages open the first track."""
    retuner = Retuner(tuning, mode)
    events: list[tuple[int, int, int, mido.Message]] = []
    for index, track in enumerate(midi.tracks):
        now = 0
        for order, message in enumerate(track):
            now += message.time
            events.append((now, index, order, message))
    events.sort(key=lambda e: (e[0], e[1], e[2]))
    converted: list[list[tuple[int, mido.Message]]] = [[] for _ in midi.tracks]
    if midi.tracks:
        converted[0] += [(0, m) for m in retuner.start()]
    for now, index, _, message in events:
        if message.is_meta:
            converted[index].append((now, message))
        else:
            converted[index] += [(now, m) for m in retuner.convert(message)]
    out = mido.MidiFile(type=midi.type, ticks_per_beat=midi.ticks_per_beat)
    for index, items in enumerate(converted):
        track = mido.MidiTrack()
        last = 0
        end_of_track = None
        for now, message in items:
            if message.is_meta and message.type == "end_of_track":
                end_of_track = now
                continue
            track.append(message.copy(time=now - last))
            last = now
        if end_of_track is not None:
            track.append(mido.MetaMessage("end_of_track", time=max(0, end_of_track - last)))
        out.tracks.append(track)
    return out


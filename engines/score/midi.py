"""The score as MIDI: OUT.mid (every part, the tempo map, section markers, the VA automation
lanes written by ``engines.va.apply``) and one file per stem for the synthesizer."""

from __future__ import annotations

import math

import mido

from core.events import Note
from engines.va import VACurve
from engines.va.apply import ApplySettings, apply_curve

from .form import Plan
from .presets import PARTS, Instrument

__all__ = ["LANES", "build_midi", "stem_midi"]

# CC11 (expression) follows arousal: the synthesizer plays it, so loudness follows the picture.
# CC74 (brightness on most synthesizers; FluidSynth's GM font leaves it alone) carries valence.
LANES = {11: "arousal", 74: "valence"}
CC_FLOOR = 56
TICKS_PER_BEAT = 480
DRUM_CHANNEL = 9


def _ticks_per_beat(theme_ticks: int | None) -> int:
    """480, or a multiple of the theme's resolution so its notes keep their exact ticks."""
    if theme_ticks is None:
        return TICKS_PER_BEAT
    common = math.lcm(theme_ticks, TICKS_PER_BEAT)
    return common if common <= 32767 else theme_ticks


def _track(name: str, items: list[tuple[int, int, mido.Message | mido.MetaMessage]]) -> mido.MidiTrack:
    track = mido.MidiTrack([mido.MetaMessage("track_name", name=name)])
    now = 0
    for tick, _, message in sorted(items, key=lambda item: (item[0], item[1])):
        track.append(message.copy(time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    return track


def _one_key_one_note(notes: list[Note], per_beat: int, end: int) -> list[tuple[int, int, int, int]]:
    """(start, stop, pitch, velocity) in ticks as one channel can play them: a key struck again
    ends the note it was sounding, an exact duplicate is dropped, nothing sounds past ``end``."""
    ticked = [(round(n.at_beats * per_beat), round((n.at_beats + n.duration_beats) * per_beat), n.pitch, n.velocity)
              for n in notes if round(n.at_beats * per_beat) < end]
    ticked.sort(key=lambda n: (n[2], n[0], -n[1]))
    kept: list[tuple[int, int, int, int]] = []
    for start, stop, pitch, velocity in ticked:
        if kept and kept[-1][2] == pitch and kept[-1][1] > start:
            if kept[-1][0] == start:
                continue
            kept[-1] = (kept[-1][0], start, pitch, kept[-1][3])
        kept.append((start, max(start + 1, min(end, stop)), pitch, velocity))
    return kept


def build_midi(plan: Plan, parts: dict[str, list[Note]], instrument: Instrument, curve: VACurve,
               theme_ticks: int | None = None, time_signature: tuple[int, int] = (4, 4)) -> mido.MidiFile:
    """Type 1: a conductor track (tempo map, metre, a marker per section), a track per part
    (programme, volume and pan at tick 0), then the VA lanes (CC11 arousal, CC74 valence)."""
    per_beat = _ticks_per_beat(theme_ticks)
    midi = mido.MidiFile(type=1, ticks_per_beat=per_beat)
    end = round(plan.total_beats * per_beat)
    conductor: list[tuple[int, int, mido.Message | mido.MetaMessage]] = [
        (0, 0, mido.MetaMessage("time_signature", numerator=time_signature[0], denominator=time_signature[1]))]
    conductor += [(round(beats * per_beat), 1, mido.MetaMessage("set_tempo", tempo=round(60e6 / bpm)))
                  for beats, bpm in plan.tempo_map]
    for start, length in plan.short_bars():  # e.g. a 2/4 bar that brings the next section onto a cut
        units = length * time_signature[1] / 4
        if abs(units - round(units)) < 1e-9:
            conductor.append((round(start * per_beat), 0, mido.MetaMessage(
                "time_signature", numerator=round(units), denominator=time_signature[1])))
            conductor.append((round((start + length) * per_beat), 0, mido.MetaMessage(
                "time_signature", numerator=time_signature[0], denominator=time_signature[1])))
    for section in plan.sections:
        text = (f"section {section.index + 1}: {section.start_s:.2f} s, valence {section.valence:+.2f}, "
                f"arousal {section.arousal:+.2f}")
        conductor.append((round(section.start_beats * per_beat), 2, mido.MetaMessage("marker", text=text)))
    conductor.append((end, 3, mido.MetaMessage("text", text="end")))
    midi.tracks.append(_track("conductor", conductor))
    for part in PARTS:
        channel = part.channel
        items: list[tuple[int, int, mido.Message | mido.MetaMessage]] = []
        program = instrument.kit if channel == DRUM_CHANNEL else instrument.programs[part.name]
        items += [(0, 0, mido.Message("program_change", channel=channel, program=program)),
                  (0, 0, mido.Message("control_change", channel=channel, control=7, value=part.volume)),
                  (0, 0, mido.Message("control_change", channel=channel, control=10, value=part.pan))]
        for start, stop, pitch, velocity in _one_key_one_note(parts.get(part.name, []), per_beat, end):
            items.append((start, 2, mido.Message("note_on", channel=channel, note=pitch, velocity=velocity)))
            items.append((stop, 1, mido.Message("note_off", channel=channel, note=pitch, velocity=0)))
        midi.tracks.append(_track(part.name, items))
    apply_curve(midi, curve, ApplySettings(velocity_depth=0.0, lanes=dict(LANES), cc_floor=CC_FLOOR))
    return midi


def stem_midi(score: mido.MidiFile, part: str) -> mido.MidiFile:
    """The conductor, one part's track and that part's automation: what its stem plays."""
    names = [track.name for track in score.tracks]
    index = names.index(part)
    channels = {m.channel for m in score.tracks[index] if m.type == "note_on"}
    midi = mido.MidiFile(type=1, ticks_per_beat=score.ticks_per_beat)
    midi.tracks.append(score.tracks[0])
    midi.tracks.append(score.tracks[index])
    if "va automation" in names:
        lane = mido.MidiTrack()
        pending = 0
        for message in score.tracks[names.index("va automation")]:
            pending += message.time
            if message.is_meta or message.channel in channels:
                lane.append(message.copy(time=pending))
                pending = 0
        midi.tracks.append(lane)
    return midi

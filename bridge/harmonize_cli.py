"""``scorebridge harmonize IN.mid -o OUT.mid``: chords for a melody file with the learned model.

The melody is the top line of the first track with notes (or ``--track N``). OUT.mid holds
it in a track named ``melody`` and the accompaniment in a track named ``chords`` (a marker
names each chord); ``--musicxml`` adds a lead sheet with chord symbols. A folder as IN
harmonizes every .mid/.midi file in it into the folder given by -o. Only numpy, onnxruntime,
mido and (for MusicXML) music21 are imported: never torch.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import mido
import numpy as np

from core.errors import ConfigError, ScoreBridgeError
from bridge.va_cli import check_affect_options
from engines.harmonizer.leadsheet import FIGURES
from core.midifile import read_midi_file

__all__ = ["DRUM_CHANNEL", "FIGURES", "MelodyFile", "add_parser", "read_melody", "read_va", "run"]

DRUM_CHANNEL = 9  # General MIDI percussion (channel 10): never a melody

@dataclass
class MelodyFile:
    """A melody read from a MIDI file: notes in beats, its meter, tempo map and meta events."""

    notes: list  # NoteEvent
    time_signature: tuple[int, int]
    tempo_changes: list[tuple[float, float]]  # (beats, microseconds per beat)
    meta: list[tuple[float, mido.MetaMessage]]
    track: int


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from engines.harmonizer.decode import STRATEGIES
    from engines.harmonizer.voicing import STYLES

    p = subparsers.add_parser("harmonize", help="add learned chords to a melody (MIDI file or folder)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", type=Path, help="a .mid file or a folder of them")
    p.add_argument("-o", "--output", type=Path, required=True, help="OUT.mid (a folder when IN is one)")
    p.add_argument("--model", default="harmonizer", help="shipped model name (default harmonizer)")
    p.add_argument("--strategy", choices=STRATEGIES, default="entropic", help="decoding strategy")
    p.add_argument("--steps", type=int, default=10, help="model calls for the staged strategies (default 10)")
    p.add_argument("--style", help="style anchor (default: the model's first style)")
    p.add_argument("--key", default="auto", help="key such as C, F#, Bb, Am, or auto (default)")
    p.add_argument("--valence", type=float, help="constant valence in [-1, 1] (with --arousal)")
    p.add_argument("--arousal", type=float, help="constant arousal in [-1, 1] (with --valence)")
    p.add_argument("--va", type=Path, help="VA curve: CSV/JSON time_s,valence,arousal (as `va analyze` "
                   "writes) or CSV beats,valence,arousal (docs/harmonizer_live.md)")
    p.add_argument("--temperature", type=float,
                   help="sampling temperature (default: the model card's calibrated one, else 0.2)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--track", type=int, help="melody track index (default: the first with notes)")
    p.add_argument("--voicing", choices=STYLES, default="pad", help="accompaniment style (default pad)")
    p.add_argument("--voices", type=int, default=4, help="upper voices (default 4)")
    p.add_argument("--no-bass", action="store_true", help="no bass note")
    p.add_argument("--musicxml", type=Path, help="also write a lead sheet (a folder when IN is one)")
    p.set_defaults(run=run)


def _ticks_to_beats(ticks: int, per_beat: int) -> float:
    return ticks / per_beat


def read_melody(path: Path, track: int | None = None) -> MelodyFile:
    """The top line (highest sounding note wins) of the first track with notes, or of ``track``;
    General MIDI percussion (channel 10) is ignored."""
    from engines.harmonizer.voicing import NoteEvent

    midi = read_midi_file(path)
    if midi.type == 2:
        raise ScoreBridgeError(f"{path}: MIDI type 2 (independent sequences) is not supported")
    per_beat = midi.ticks_per_beat
    meta: list[tuple[float, mido.MetaMessage]] = []
    tracks_notes: list[list[tuple[int, float, float, int]]] = []
    for messages in midi.tracks:
        now, open_notes, notes = 0, {}, []
        for message in messages:
            now += message.time
            beats = _ticks_to_beats(now, per_beat)
            if message.is_meta and message.type in ("set_tempo", "time_signature", "key_signature"):
                meta.append((beats, message))
            elif message.type in ("note_on", "note_off") and message.channel == DRUM_CHANNEL:
                continue
            elif message.type == "note_on" and message.velocity > 0:
                open_notes.setdefault((message.channel, message.note), []).append((beats, message.velocity))
            elif message.type in ("note_on", "note_off"):
                started = open_notes.get((message.channel, message.note))
                if started:
                    start, velocity = started.pop(0)
                    if beats > start:
                        notes.append((message.note, start, beats, velocity))
        tracks_notes.append(notes)
    if track is not None:
        if not 0 <= track < len(tracks_notes):
            raise ConfigError(f"--track {track}: {path} has tracks 0..{len(tracks_notes) - 1}")
        index = track
    else:
        index = next((i for i, n in enumerate(tracks_notes) if n), -1)
    if index < 0 or not tracks_notes[index]:
        where = f"track {index} has" if track is not None else "no track has"
        raise ScoreBridgeError(f"{path}: no melody: {where} any note")
    notes = sorted(tracks_notes[index], key=lambda n: (n[1], -n[0]))
    top: list[list] = []  # skyline: a higher note cuts a lower one; a lower one under a higher is dropped
    for pitch, start, end, velocity in notes:
        if top and start < top[-1][2] - 1e-9:
            if pitch <= top[-1][0]:
                continue
            top[-1][2] = start
            if top[-1][2] - top[-1][1] <= 1e-9:
                top.pop()
        top.append([pitch, start, end, velocity])
    meta.sort(key=lambda item: item[0])
    signature = next(((m.numerator, m.denominator) for _, m in meta if m.type == "time_signature"), (4, 4))
    tempos = [(b, m.tempo) for b, m in meta if m.type == "set_tempo"] or [(0.0, 500_000)]
    events = [NoteEvent(p, s, e - s, max(1, v)) for p, s, e, v in top]
    return MelodyFile(events, signature, tempos, meta, index)


def read_va(path: Path, steps: int, steps_per_quarter: int, tempos: list[tuple[float, float]]) -> np.ndarray:
    """A VA curve -> [steps, 2], the curve's mean over each grid step (the models' labels are
    per-step means). Read with the project's curve helper (`engines/va/curve.py`): CSV or JSON
    with `time_s,valence,arousal` (seconds, converted through the file's tempo map: what
    `scorebridge va analyze` writes), or a CSV with `beats,valence,arousal` (song positions)."""
    from engines.va import read_song_curve

    curve, unit = read_song_curve(path)
    if unit == "beats":
        edges = np.arange(steps + 1, dtype=np.float64) / steps_per_quarter
        return curve.mean_between(edges[:-1], edges[1:]).astype(np.float32)
    tempo_map = [(beats, 60e6 / tempo) for beats, tempo in sorted(tempos)]
    if tempo_map[0][0] > 0:
        tempo_map.insert(0, (0.0, 120.0))  # MIDI's default tempo until the first change
    tempo_map = [change for index, change in enumerate(tempo_map)  # the last change at a beat wins
                 if index + 1 == len(tempo_map) or tempo_map[index + 1][0] != change[0]]
    return curve.per_beat(steps, tempo_map, subdivisions=steps_per_quarter)


def _check(args: argparse.Namespace) -> None:
    if args.steps < 1:
        raise ConfigError(f"--steps {args.steps}: must be at least 1")
    if not 1 <= args.voices <= 6:
        raise ConfigError(f"--voices {args.voices}: must be 1..6")
    if args.temperature is not None and not 0.05 <= args.temperature <= 2.0:
        raise ConfigError(f"--temperature {args.temperature}: must be in 0.05..2")
    check_affect_options(args)


def _lead_sheet(melody: MelodyFile, spans: list, title: str):
    """A music21 score: the melody with a chord symbol at each chord start."""
    from engines.harmonizer.leadsheet import lead_sheet
    from engines.harmonizer.vocab import token_name

    chords = []
    for span in spans:
        root_name, _, quality = token_name(span.token).partition(":")
        chords.append((span.start_beats, root_name + FIGURES.get(quality, "")))
    return lead_sheet(melody.notes, chords, melody.time_signature, 60e6 / melody.tempo_changes[0][1], title)


def _harmonize_one(source: Path, target: Path, xml_target: Path | None, args, model) -> str:
    from engines.harmonizer.clip import ClipOptions, build_midi, harmonize_notes
    from engines.harmonizer.harmonize import parse_key
    from engines.harmonizer.voicing import VoicingConfig

    melody = read_melody(source, args.track)
    numerator, denominator = melody.time_signature
    beats_per_bar = max(1, round(numerator * 4 / denominator))
    length = max(n.start_beats + n.duration_beats for n in melody.notes)
    length = beats_per_bar * int(np.ceil(length / beats_per_bar - 1e-9))
    spq = model.grid.steps_per_quarter
    steps = max(1, int(np.ceil(length * spq - 1e-9)))
    va = None
    if args.va is not None:
        va = read_va(args.va, steps, spq, melody.tempo_changes)
    elif args.valence is not None:
        va = np.tile(np.float32([args.valence, args.arousal]), (steps, 1))
    try:
        key = parse_key(args.key)
    except ValueError as exc:
        raise ConfigError(f"--key: {exc}") from None
    options = ClipOptions(style=args.style or model.styles[0], strategy=args.strategy, calls=args.steps,
                          temperature=model.temperature if args.temperature is None else args.temperature,
                          key=key, voicing_style=args.voicing,
                          voicing=VoicingConfig(voices=args.voices, bass=not args.no_bass))
    try:
        clip = harmonize_notes(model, melody.notes, length, beats_per_bar, options, va,
                               np.random.default_rng(args.seed))
    except ValueError as exc:
        raise ScoreBridgeError(f"{source}: {exc}") from None
    midi = build_midi(melody.notes, clip.events, clip.spans, time_signature=melody.time_signature,
                      ticks_per_beat=480, melody_meta=melody.meta or None)
    score = None
    if xml_target is not None:
        from music21.exceptions21 import Music21Exception

        try:
            score = _lead_sheet(melody, clip.spans, source.stem)
        except (Music21Exception, ValueError) as exc:
            raise ScoreBridgeError(f"{source}: no lead sheet for this file ({exc})") from None
    _write_all(((target, lambda p: midi.save(p)), (xml_target, lambda p: _write_lead_sheet(score, p, xml_target))))
    names = " ".join(s.name for s in clip.spans[:8]) + (" ..." if len(clip.spans) > 8 else "")
    from engines.harmonizer.vocab import ROOT_NAMES

    return (f"{source.name}: {len(melody.notes)} notes, key {ROOT_NAMES[clip.tonic]} {clip.mode}, "
            f"{len(clip.spans)} chords ({names}), {clip.calls} model calls")


def _write_lead_sheet(score, path: Path, final: Path) -> None:
    from music21.exceptions21 import Music21Exception

    from engines.harmonizer.leadsheet import write_lead_sheet

    try:
        write_lead_sheet(score, path)
    except Music21Exception as exc:
        raise ScoreBridgeError(f"{final}: the lead sheet could not be written ({exc})") from None


def _write_all(outputs) -> None:
    """Write every (path, writer) to a temporary file beside it, then rename them all, so that
    an error or a signal leaves no partial output; errors name the path."""
    from core.atomic import atomic_outputs

    chosen = [(final, writer) for final, writer in outputs if final is not None]
    final = chosen[0][0]
    try:
        for final, _ in chosen:
            final.parent.mkdir(parents=True, exist_ok=True)
        with atomic_outputs([path for path, _ in chosen]) as temporaries:
            for (final, writer), temporary in zip(chosen, temporaries, strict=True):
                writer(temporary)
    except OSError as exc:
        raise ScoreBridgeError(f"{final}: cannot write it ({exc.strerror or exc})") from None


def run(args: argparse.Namespace) -> int:
    from engines.harmonizer.runtime import HarmonizerModel

    _check(args)
    model = HarmonizerModel.named(args.model)
    if args.style is not None and args.style not in model.styles:
        raise ConfigError(f"--style {args.style!r}: this model knows {', '.join(model.styles)}")
    if not args.input.exists():
        raise ScoreBridgeError(f"{args.input}: no such file or folder")
    if not args.input.is_dir():
        started = time.perf_counter()
        print(_harmonize_one(args.input, args.output, args.musicxml, args, model)
              + f", {time.perf_counter() - started:.2f} s -> {args.output}")
        return 0
    from rich.progress import Progress

    sources = sorted(p for p in args.input.rglob("*") if p.suffix.lower() in (".mid", ".midi") and p.is_file())
    if not sources:
        raise ScoreBridgeError(f"{args.input}: no .mid or .midi file in this folder")
    if args.output.exists() and not args.output.is_dir():
        raise ConfigError(f"-o {args.output}: IN is a folder, so -o must be a folder too")
    failures = []
    with Progress() as progress:
        task = progress.add_task("harmonizing", total=len(sources))
        for source in sources:
            relative = source.relative_to(args.input).with_suffix("")
            xml = None if args.musicxml is None else args.musicxml / relative.with_suffix(".musicxml")
            try:
                progress.console.print(_harmonize_one(source, args.output / relative.with_suffix(".mid"), xml,
                                                      args, model))
            except (ScoreBridgeError, ValueError) as exc:
                failures.append(str(exc) if str(exc).startswith(str(source)) else f"{source}: {exc}")
            progress.advance(task)
    print(f"harmonized {len(sources) - len(failures)} of {len(sources)} files into {args.output}")
    if failures:
        raise ScoreBridgeError(f"{len(failures)} file(s) failed:\n  " + "\n  ".join(failures))
    return 0

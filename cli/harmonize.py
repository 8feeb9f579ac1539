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

from cli.arguments import check_affect_options
from cli.batch import add_batch_arguments, is_batch_input
from cli.tuning_options import add_tuning_options, tuning_from_args
from core.errors import CodecError, ConfigError, ScoreBridgeError

__all__ = ["MelodyFile", "read_melody", "register"]


@dataclass
class MelodyFile:
    """A melody read from a MIDI file: notes in beats, its meter, tempo map, meta events and the
    name of its track ('' when it has none)."""

    notes: list  # core.events.Note, at_beats set
    time_signature: tuple[int, int]
    tempo_changes: list[tuple[float, float]]  # (beats, microseconds per beat)
    meta: list[tuple[float, mido.MetaMessage]]
    track: int
    name: str = ""


def register(subparsers: argparse._SubParsersAction) -> None:
    from engines.harmonizer.harmonize import ENDINGS, HARMONIZE_STRATEGIES, RHYTHMS
    from engines.harmonizer.voicing import STYLES

    p = subparsers.add_parser("harmonize", help="add learned chords to a melody (MIDI file or folder)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", type=Path, help="a .mid file or a folder of them")
    p.add_argument("-o", "--output", type=Path, required=True, help="OUT.mid (a folder when IN is one)")
    p.add_argument("--model", default="harmonizer", help="shipped model name (default harmonizer)")
    p.add_argument("--strategy", choices=HARMONIZE_STRATEGIES,
                   help="decoding strategy (default: the model card's calibrated one, else entropic)")
    p.add_argument("--rhythm", choices=RHYTHMS,
                   help="harmonic rhythm: one chord per bar, per half bar, per beat, or auto (the model "
                   "holds chords as the lead sheets of its style do; default: the model card's)")
    p.add_argument("--ending", choices=ENDINGS, default="tonic",
                   help="tonic: a melody that ends on the tonic ends on the tonic chord (default); phrases: also "
                   "each four-bar phrase closes on a tonic or dominant chord its last long note allows; "
                   "free: the model chooses every chord")
    p.add_argument("--steps", type=int,
                   help="model calls per window for the staged strategies (default: the model card's; 1 decides "
                   "every chord from one call)")
    p.add_argument("--style", help="style anchor: pop, rock, jazz, stage, folk, chorale, classical, renaissance "
                   "(default: the model card's, pop for the lead-sheet model)")
    p.add_argument("--key", default="auto", help="key such as C, F#, Bb, Am, or auto (default)")
    p.add_argument("--valence", type=float, help="constant valence in [-1, 1] (with --arousal)")
    p.add_argument("--arousal", type=float, help="constant arousal in [-1, 1] (with --valence)")
    p.add_argument("--va", type=Path, help="VA curve: CSV/JSON time_s,valence,arousal (as `va analyze` "
                   "writes) or CSV beats,valence,arousal (docs/harmonizer_live.md)")
    p.add_argument("--temperature", type=float,
                   help="sampling temperature in 0..2; 0 is greedy (always the most likely chord, the same "
                   "for every --seed); default: the model card's calibrated one, else 0.2")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--track", type=int, help="melody track index (default: the first with notes)")
    p.add_argument("--voicing", choices=STYLES, default="pad", help="accompaniment style (default pad)")
    p.add_argument("--voices", type=int, default=4, help="upper voices (default 4)")
    p.add_argument("--no-bass", action="store_true", help="no bass note")
    p.add_argument("--musicxml", type=Path, help="also write a lead sheet (a folder when IN is one)")
    add_batch_arguments(p)
    add_tuning_options(p)
    p.set_defaults(run=run)


def read_melody(path: Path, track: int | None = None) -> MelodyFile:
    """The top line (``core.midifile.top_line``) of the first track with notes, or of ``track``."""
    from core.events import Note
    from core.midifile import read_notes, top_line

    source = read_notes(path)
    lines = [top_line(notes) for notes in source.tracks]
    if track is not None and not 0 <= track < len(lines):
        raise ConfigError(f"--track {track}: {path} has tracks 0..{len(lines) - 1}")
    index = track if track is not None else next((i for i, line in enumerate(lines) if line), -1)
    if index < 0 or not lines[index]:
        where = f"track {index} has" if track is not None else "no track has"
        raise ScoreBridgeError(f"{path}: no melody: {where} any note")
    beats = source.beats
    notes = [Note(n.pitch, max(1, n.velocity), beats(n.end_ticks) - beats(n.start_ticks),
                  at_beats=beats(n.start_ticks)) for n in lines[index]]
    return MelodyFile(notes, source.time_signature, source.tempo_changes, source.meta, index,
                      "".join(c for c in source.track_names[index] if c.isprintable()).strip()[:64])


def _check(args: argparse.Namespace) -> None:
    if args.steps is not None and args.steps < 1:
        raise ConfigError(f"--steps {args.steps}: must be at least 1")
    if not 1 <= args.voices <= 6:
        raise ConfigError(f"--voices {args.voices}: must be 1..6")
    if args.temperature is not None and not 0.0 <= args.temperature <= 2.0:
        raise ConfigError(f"--temperature {args.temperature}: must be in 0..2 (0: greedy)")
    check_affect_options(args)


def _harmonize_one(source: Path, target: Path, xml_target: Path | None, args, model) -> str:
    from engines.harmonizer.clip import ClipOptions, build_midi, clip_grid, harmonize_notes
    from engines.harmonizer.harmonize import parse_key
    from engines.harmonizer.leadsheet import chord_symbols, lead_sheet, write_lead_sheet
    from engines.harmonizer.voicing import VoicingConfig

    melody = read_melody(source, args.track)
    grid = clip_grid(model, melody.time_signature)
    bar_beats = grid.steps_per_bar * grid.step_beats
    length = max(n.at_beats + n.duration_beats for n in melody.notes)
    length = bar_beats * int(np.ceil(length / bar_beats - 1e-9))
    steps = grid.steps(length)
    va = None
    if args.va is not None:
        from engines.va import song_curve_per_step

        per_step = round(grid.step_beats * 4)  # 16ths in a step: the curve's mean over each step
        va = song_curve_per_step(args.va, steps * per_step, 4, melody.tempo_changes)
        va = va.reshape(steps, per_step, 2).mean(1).astype(np.float32)
    elif args.valence is not None:
        va = np.tile(np.float32([args.valence, args.arousal]), (steps, 1))
    try:
        key = parse_key(args.key)
    except ValueError as exc:
        raise ConfigError(f"--key: {exc}") from None
    options = ClipOptions(style=args.style or model.default_style, strategy=args.strategy or model.strategy,
                          calls=args.steps or model.calls,
                          temperature=model.temperature if args.temperature is None else args.temperature,
                          key=key, rhythm=args.rhythm or model.rhythm, ending=args.ending,
                          voicing_style=args.voicing,
                          voicing=VoicingConfig(voices=args.voices, bass=not args.no_bass),
                          pitch_classes=None if args.tuning_model is None else args.tuning_model.pitch_classes())
    try:
        clip = harmonize_notes(model, melody.notes, length, melody.time_signature, options, va,
                               np.random.default_rng(args.seed))
    except ValueError as exc:
        raise ScoreBridgeError(f"{source}: {exc}") from None
    midi = build_midi(melody.notes, clip.events, clip.spans, time_signature=melody.time_signature,
                      ticks_per_beat=480, melody_meta=melody.meta or None)
    score = None
    if xml_target is not None:
        from music21.exceptions21 import Music21Exception

        try:
            key = (clip.tonic, clip.mode)
            score = lead_sheet(melody.notes, chord_symbols(clip.spans, key), melody.time_signature,
                               60e6 / melody.tempo_changes[0][1], source.stem, key, melody.name or "Melody")
        except (Music21Exception, ValueError) as exc:
            raise ScoreBridgeError(f"{source}: no lead sheet for this file ({exc})") from None
    if args.tuning_model is not None:
        from core.retune import retune_file

        midi = retune_file(midi, args.tuning_model, args.tuning_mode)
    _write_all(((target, midi.save), (xml_target, lambda p: write_lead_sheet(score, p))))
    names = " ".join(s.name for s in clip.spans[:8]) + (" ..." if len(clip.spans) > 8 else "")
    from engines.harmonizer.vocab import ROOT_NAMES

    return (f"{source.name}: {len(melody.notes)} notes, key {ROOT_NAMES[clip.tonic]} {clip.mode}, "
            f"{len(clip.spans)} chords ({names}), {clip.calls} model calls")


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
    except CodecError as exc:
        raise CodecError(f"{final}: {exc}") from None


def run(args: argparse.Namespace) -> int:
    from engines.harmonizer.runtime import HarmonizerModel

    _check(args)
    args.tuning_model, args.tuning_mode = tuning_from_args(args)
    model = HarmonizerModel.named(args.model)
    if args.style is not None and args.style not in model.styles:
        raise ConfigError(f"--style {args.style!r}: this model knows {', '.join(model.styles)}")
    if not args.input.exists():
        raise ScoreBridgeError(f"{args.input}: no such file or folder")
    if is_batch_input(args.input):
        from cli.batch_jobs import run_harmonize_batch

        return run_harmonize_batch(args)
    started = time.perf_counter()
    print(_harmonize_one(args.input, args.output, args.musicxml, args, model)
          + f", {time.perf_counter() - started:.2f} s -> {args.output}")
    return 0

"""``scorebridge continue IN.mid -o OUT.mid --bars N``: a two-hand continuation of a MIDI file.

Hands in IN.mid: a track whose name contains "right" or "left" is that hand; notes of other
tracks are split at ``--split`` (below -> left hand). The meter is the file's first time
signature (4/4 if none), the tempo its first tempo. The prompt is the last ``--context-bars``
bars, padded to the bar line after the last note, on the model's 1/12-beat grid; OUT.mid holds
the input's notes as written (exact times) followed by the continuation, in tracks named
``right`` and ``left``. ``--register prompt`` (default) keeps each hand near the prompt's register.

Valence/arousal: by default the music's own (computed from the prompt as in training);
``--valence V --arousal A`` for a constant, or ``--va VA.csv`` for a curve over the file's
time (``time_s,valence,arousal`` as ``va analyze`` writes it, or ``beats,...``; values in [-1, 1],
interpolated between rows and held at the ends). Only numpy, onnxruntime and mido are
imported: never torch.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from cli.arguments import check_affect_options
from cli.batch import add_batch_arguments, is_batch_input
from cli.tuning_options import add_tuning_options, retune_written, tuning_from_args
from core.errors import CodecError, ConfigError
from engines.continuation.defaults import USER_BIASES, USER_CHORD_VELOCITY

__all__ = ["register", "run"]

_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "continue",
        help="continue a MIDI file for both hands with the Smart-Embedding model",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", type=Path, help="a .mid file, or a folder or manifest of them (a batch)")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="OUT.mid (prompt + continuation); a folder for a batch")
    p.add_argument("--bars", type=int, default=4, help="bars to generate (default 4)")
    p.add_argument(
        "--context-bars", type=int, default=4, help="bars of the input used as the prompt (default 4)"
    )
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1.0)")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling threshold (default 0.95)")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (default 0 = off)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: a new one each run)")
    p.add_argument(
        "--style", default="piano", help="style anchor: piano, chorale, quartet or part (default piano)"
    )
    p.add_argument(
        "--key", default="off", help="restrict notes to a scale: C, F#, Bb, Am ... or off (default)"
    )
    p.add_argument("--valence", type=float, help="constant valence in [-1, 1] (with --arousal)")
    p.add_argument("--arousal", type=float, help="constant arousal in [-1, 1] (with --valence)")
    p.add_argument("--va", type=Path, help="VA curve (CSV/JSON): time_s|beats,valence,arousal")
    p.add_argument(
        "--mode-steer", type=float, default=5.0,
        help="with --valence/--va: how hard valence turns the music to the parallel minor or major "
        "(log-odds per unit valence, 0 = the model's adapter alone; default 5)",
    )
    p.add_argument(
        "--register", choices=("prompt", "free"), default="prompt",
        help="prompt (default): each hand stays within 5 semitones of the prompt's lowest and highest "
        "note of that hand, and the median of its new notes within an octave of the prompt's; "
        "free: right hand 48..108, left 21..72",
    )
    p.add_argument(
        "--grid", choices=("prompt", "free"), default="prompt",
        help="prompt (default): new notes start and end on the prompt's rhythmic grid (16ths, eighth "
        "triplets or both) when 95%% of its note times keep one; free: any 1/12-beat step",
    )
    p.add_argument(
        "--pattern-bias", type=float, default=USER_BIASES["pattern_bias"],
        help="rhythm: the prompt's last two bars repeated bar by bar; subtract this from the logit of a hand's "
        "note at a step where that hand struck nothing in the bar it repeats, pull it toward the steps it struck, "
        "and in the first two new bars start notes only there (0 = off; default %(default)s)",
    )
    p.add_argument(
        "--motif-bias", type=float, default=USER_BIASES["motif_bias"],
        help="soft motif echo: add this to the logit of a right-hand note that continues one of the "
        "prompt's melodic interval patterns at a new onset (0 = off; default %(default)s)",
    )
    p.add_argument(
        "--density-bias", type=float, default=USER_BIASES["density_bias"],
        help="density: a hand ahead of the prompt's onsets per bar by half a bar's worth loses this "
        "from its notes' logits, one behind gains it, and each hand's onsets stay within 0.5-2x the prompt's "
        "(0 = off; default %(default)s)",
    )
    p.add_argument(
        "--key-bias", type=float, default=USER_BIASES["key_bias"],
        help="soft key: subtract this from the logit of every note outside the prompt's key "
        "(0 = off; default %(default)s; --key sets a hard scale instead)",
    )
    p.add_argument(
        "--split", type=int, default=60, help="untagged notes below this are the left hand (default 60)"
    )
    p.add_argument("--model", default="smart", help="smart (default), plain, or a path to an exported .onnx")
    add_tuning_options(p)
    add_batch_arguments(p)
    p.set_defaults(run=run)


def _check(args: argparse.Namespace) -> None:
    if not 1 <= args.bars <= 64:
        raise ConfigError(f"--bars {args.bars}: must be 1..64")
    if not 1 <= args.context_bars <= 16:
        raise ConfigError(f"--context-bars {args.context_bars}: must be 1..16")
    if not 0.05 <= args.temperature <= 3.0:
        raise ConfigError(f"--temperature {args.temperature}: must be in 0.05..3")
    if not 0 < args.top_p <= 1:
        raise ConfigError(f"--top-p {args.top_p}: must be in (0, 1]")
    if args.top_k < 0:
        raise ConfigError(f"--top-k {args.top_k}: must be >= 0")
    if not 21 <= args.split <= 108:
        raise ConfigError(f"--split {args.split}: must be a piano key 21..108")
    if not 0 <= args.mode_steer <= 8:
        raise ConfigError(f"--mode-steer {args.mode_steer}: must be in 0..8")
    for option in USER_BIASES:
        if not 0 <= getattr(args, option) <= 8:
            raise ConfigError(f"--{option.replace('_', '-')} {getattr(args, option)}: must be in 0..8")
    check_affect_options(args)
    if args.key != "off" and args.key.removesuffix("m") not in _NAMES:
        raise ConfigError(f"--key {args.key!r}: use one of {', '.join(_NAMES)} (add m for minor) or off")


def _check_files(args: argparse.Namespace) -> None:
    if not args.input.exists():
        raise ConfigError(f"{args.input}: no such file")
    if not args.input.is_file():
        raise ConfigError(f"{args.input}: not a regular file")
    if args.output.resolve() == args.input.resolve():
        raise ConfigError(f"-o {args.output}: would overwrite the input")
    if not args.output.parent.resolve().is_dir():
        raise ConfigError(f"-o {args.output}: folder {args.output.parent} does not exist")


def _model_path(name: str) -> Path:
    from engines.continuation.runtime import DEFAULT_MODEL, PLAIN_MODEL

    if name == "smart":
        return DEFAULT_MODEL
    if name == "plain":
        return PLAIN_MODEL
    path = Path(name)
    if not path.is_file():
        raise ConfigError(f"--model {name!r}: not smart, plain or an existing .onnx file")
    return path


def load_model(args: argparse.Namespace, threads: int = 1):  # -> ContinuationModel
    from engines.continuation.runtime import ContinuationModel

    model = ContinuationModel.load(_model_path(args.model), threads=threads)
    styles = model.card.get("styles", [])
    if args.style not in styles:
        raise ConfigError(f"--style {args.style!r}: use one of {', '.join(styles)}")
    return model


def run(args: argparse.Namespace) -> int:
    """Read, continue, write atomically; every failure is a ScoreBridgeError before any output."""
    _check(args)
    tuning_from_args(args)  # a bad --tuning or --kbm is one error, before any item
    if is_batch_input(args.input):
        from cli.batch_jobs import run_continue_batch

        load_model(args)  # a bad --model or --style is one error, not one per item
        return run_continue_batch(args)
    _check_files(args)
    print(continue_file(args, load_model(args), args.input, args.output))
    return 0


def continue_file(args: argparse.Namespace, model, source_path: Path, output: Path) -> str:
    """Continue one file into ``output`` (atomically); returns the line the command prints."""
    from core.atomic import atomic_output
    from engines.continuation.offline import continue_notes, read_source, write_midi
    from engines.continuation.sample import SamplingConfig, scale_pitch_classes
    from engines.continuation.tokens import STEPS_PER_QUARTER
    from engines.va import song_curve_at

    tuning, tuning_output = tuning_from_args(args)
    styles = model.card.get("styles", [])
    notes, bar_steps, tempo, source = read_source(source_path, split=args.split)
    if not notes:
        raise CodecError(f"{source_path}: no notes in the piano range 21..108 to continue")
    va = None
    if args.valence is not None:
        va = (args.valence, args.arousal)
    elif args.va is not None:
        curve_at = song_curve_at(args.va, [(0.0, tempo)])
        end_beats = -(-max(n.end_steps for n in notes) // bar_steps) * bar_steps / STEPS_PER_QUARTER

        def va(after_end: float) -> tuple[float, float]:
            valence, arousal = curve_at(end_beats + after_end)
            return float(valence), float(arousal)

    classes = None
    if args.key != "off":
        minor = args.key.endswith("m")
        classes = scale_pitch_classes(_NAMES.index(args.key.removesuffix("m")), "minor" if minor else "major")
    if tuning is not None and tuning.pitch_classes() is not None:
        classes = tuning.pitch_classes() if classes is None else classes & tuning.pitch_classes()
        if not classes:
            raise ConfigError(f"--key {args.key} and --tuning {args.tuning} share no pitch class")
    config = SamplingConfig(
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        pitch_classes=classes,
        mode_steer=args.mode_steer,
        chord_velocity=USER_CHORD_VELOCITY,
        **{option: getattr(args, option) for option in USER_BIASES},
    )
    started = time.perf_counter()
    generated = continue_notes(
        model, notes, bar_steps, args.bars, config, args.context_bars, styles.index(args.style), va,
        register=args.register, grid=args.grid,
    )
    elapsed = time.perf_counter() - started
    with atomic_output(output) as temporary:
        write_midi(generated, temporary, bar_steps, tempo, source)
        if tuning is not None:
            retune_written(temporary, tuning, tuning_output)
    hands = sum(1 for n in generated if n.hand == 0), sum(1 for n in generated if n.hand == 1)
    return (
        f"wrote {output}: {len(source.notes)} input notes + {len(generated)} generated "
        f"(right {hands[0]}, left {hands[1]}) over {args.bars} bars in {elapsed:.2f} s"
    )

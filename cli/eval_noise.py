"""``scorebridge eval noise-injection``: the noise-injection probe (reference section 6) on the
shipped continuation models, through ONNX Runtime (no torch, no checkpoint).

    scorebridge eval noise-injection -o OUTDIR [--model smart --model plain] [--midi FILE_OR_DIR]
        [--context 256] [--start 64] [--lengths 8,16,32,64] [--contexts 64]

Held-out contexts come from the test split of music21's corpus, parsed on first use (progress on
stderr) and kept in the user cache folder ($XDG_CACHE_HOME/scorebridge, default
~/.cache/scorebridge; ``--cache`` picks another, and a training cache there is used as it is), or
from MIDI files (``--midi``). Writes
OUTDIR/noise_probe.csv (per model and noise length: Peak / Assimilation / Recovery means,
where the Peak ends, the clean loss) and OUTDIR/noise_probe.png (the mean diff curves).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.errors import ConfigError

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "noise-injection",
        help="noise-injection probe of the continuation models (CSV + PNG)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    p.add_argument(
        "--model", action="append", help="smart, plain or a path to an .onnx (repeatable; default both)"
    )
    p.add_argument(
        "--midi", type=Path, action="append", help="MIDI file or folder for the contexts (repeatable)"
    )
    p.add_argument(
        "--cache", type=Path, default=None, help="corpus cache folder (default: the user cache's continuation/)"
    )
    p.add_argument("--split", choices=("train", "val", "test"), default="test")
    p.add_argument(
        "--context", type=int, default=256, help="tokens per context (default 256, the training window)"
    )
    p.add_argument("--start", type=int, default=64, help="first noisy token (default 64)")
    p.add_argument(
        "--lengths", default="8,16,32,64", help="noise lengths, comma-separated (default 8,16,32,64)"
    )
    p.add_argument("--contexts", type=int, default=64, help="how many contexts (default 64)")
    p.add_argument("--tolerance", type=float, default=0.1, help="nats around the baseline that end the Peak")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=run)


def _lengths(text: str) -> list[int]:
    try:
        lengths = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(
            f"--lengths {text!r}: write whole numbers separated by commas, e.g. 8,16,32"
        ) from None
    if not lengths or min(lengths) < 1:
        raise ConfigError(f"--lengths {text!r}: need at least one length >= 1")
    return lengths


def _midi_files(items: list[Path]) -> list[Path]:
    files: list[Path] = []
    for item in items:
        if item.is_dir():
            files += sorted(p for p in item.iterdir() if p.suffix.lower() in (".mid", ".midi"))
        elif item.is_file():
            files.append(item)
        else:
            raise ConfigError(f"--midi {item}: no such file or folder")
    if not files:
        raise ConfigError(f"--midi {', '.join(map(str, items))}: no .mid files there")
    return files


def run(args: argparse.Namespace) -> int:
    from engines.continuation.noise_probe import (
        contexts_from_cache,
        contexts_from_midi,
        plot_curves,
        probe,
        write_csv,
    )
    from engines.continuation.runtime import DEFAULT_MODEL, PLAIN_MODEL, ContinuationModel

    lengths = _lengths(args.lengths)
    if args.context < 16 or args.context > 256:
        raise ConfigError(f"--context {args.context}: must be 16..256 (the models' training window)")
    if not 0 < args.start or args.start + max(lengths) >= args.context:
        raise ConfigError(
            f"--start {args.start} + the longest noise ({max(lengths)}) must stay below --context {args.context}"
        )
    if args.contexts < 1 or not args.tolerance > 0:
        raise ConfigError("--contexts must be >= 1 and --tolerance > 0")
    if args.output.exists() and not args.output.is_dir():
        raise ConfigError(f"-o {args.output}: exists and is not a folder")
    names = args.model or ["smart", "plain"]
    models = {}
    for name in names:
        path = {"smart": DEFAULT_MODEL, "plain": PLAIN_MODEL}.get(name, Path(name))
        if not path.is_file():
            raise ConfigError(f"--model {name!r}: {path} not found (smart, plain or an .onnx path)")
        models[name if name in ("smart", "plain") else path.stem] = ContinuationModel.load(path)
    try:
        if args.midi:
            contexts = contexts_from_midi(_midi_files(args.midi), args.context, args.contexts)
        else:
            contexts = contexts_from_cache(
                args.cache, args.split, args.context, args.contexts,
                lambda text: print(text, file=sys.stderr, flush=True),
            )
        rows, curves = probe(models, contexts, args.start, lengths, args.tolerance, args.seed)
    except (ValueError, FileNotFoundError) as exc:
        raise ConfigError(str(exc)) from None
    args.output.mkdir(parents=True, exist_ok=True)
    write_csv(rows, args.output / "noise_probe.csv")
    plot_curves(curves, args.start, args.output / "noise_probe.png")
    print(
        f"{len(contexts.tokens)} contexts of {args.context} tokens from {contexts.source}; noise from {args.start}"
    )
    print("model,noise_tokens,peak,peak_end,assimilation,recovery,clean_loss")
    for row in rows:
        print(
            f"{row['model']},{row['noise_tokens']},{row['peak']:.4f},{row['peak_end']},"
            f"{row['assimilation']:.4f},{row['recovery']:.4f},{row['clean_loss']:.4f}"
        )
    print(f"wrote {args.output / 'noise_probe.csv'} and {args.output / 'noise_probe.png'}")
    return 0

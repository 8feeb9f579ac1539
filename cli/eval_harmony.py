"""``scorebridge eval harmony``: harmony metrics of the ground truth, the rule engine and every
harmonizer model x decoding strategy, on held-out chorales and out-of-domain folk melodies.

numpy + onnxruntime; never torch. The held-out pieces and folk melodies are parsed with music21 on
first use (progress on stderr) and kept in the user cache folder (``$XDG_CACHE_HOME/scorebridge``,
default ``~/.cache/scorebridge``), so later runs read them from there.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.errors import ConfigError, ModelLoadError, ParameterError

__all__ = ["add_parser", "run"]

DEFAULT_STRATEGIES = ("start", "certain", "uncertain", "random", "stages10", "midpoint", "entropic")


def add_parser(sub: argparse._SubParsersAction) -> None:
    from engines.harmonizer.decode import STRATEGIES

    parser = sub.add_parser(
        "harmony",
        help="CHE CC CTD CTnCTR PCS MCTD HRHE/HRC CBS: ground truth, rule engine, models x strategies",
        description=__doc__,
    )
    parser.add_argument("--models", nargs="+", metavar="MODEL",
                        help="shipped names or .onnx paths (default: every onnx_models/harmonizer*.onnx)")
    parser.add_argument("--strategies", nargs="+", default=list(DEFAULT_STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--calls", type=int, default=10, help="model calls for stages10 / entropic (10)")
    parser.add_argument("--pieces", type=int, help="only the first N held-out pieces (default all)")
    parser.add_argument("--windows", type=int, help="only the first N windows of each set")
    parser.add_argument("--folk", type=int, default=60, help="out-of-domain folk melodies (default 60)")
    parser.add_argument("--no-folk", action="store_true", help="skip the out-of-domain set")
    parser.add_argument("--no-rule", action="store_true", help="skip the rule engine")
    parser.add_argument("--split", default="test", choices=("test", "val"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--temperature", type=float,
                        help="sampling temperature (default: each model card's calibrated value, else 0.2)")
    parser.add_argument("--top-p", type=float, help="nucleus mass (default: the card's, else 0.9)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="cache folder (default: the user cache's harmonizer/; a training raw_q16.npz "
                             "there is used when present)")
    parser.add_argument("--out", type=Path, help="write every figure as JSON")
    parser.add_argument("--markdown", type=Path, help="write the tables as Markdown")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.set_defaults(run=run)


def _model_paths(names: list[str] | None) -> list[Path]:
    from onnx_models import models_dir

    if not names:
        paths = sorted(models_dir().glob("harmonizer*.onnx"))
        if not paths:
            raise ModelLoadError(f"no harmonizer*.onnx in {models_dir()}")
        return paths
    paths = []
    for name in names:
        path = Path(name) if name.endswith(".onnx") else models_dir() / f"{name}.onnx"
        if not path.exists():
            shipped = ", ".join(p.stem for p in sorted(models_dir().glob("harmonizer*.onnx"))) or "none"
            raise ModelLoadError(f"model {name!r} not found ({path}); shipped: {shipped}")
        paths.append(path)
    return paths


def _write_atomic(path: Path, text: str) -> None:
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ConfigError(f"{path}: folder {folder} does not exist")
    from core.atomic import atomic_output

    with atomic_output(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def _check(args: argparse.Namespace) -> None:
    for option in ("calls", "pieces", "windows", "folk"):
        value = getattr(args, option)
        if value is not None and value < 1:
            raise ParameterError(f"--{option} must be at least 1, got {value}")
    if args.temperature is not None and not 0.0 <= args.temperature <= 2.0:
        raise ParameterError(f"--temperature must be in 0..2 (0: greedy), got {args.temperature}")
    if args.top_p is not None and not 0.0 < args.top_p <= 1.0:
        raise ParameterError(f"--top-p must be in (0, 1], got {args.top_p}")


def run(args: argparse.Namespace) -> int:
    _check(args)
    from engines.harmonizer import harmony_eval as he
    from engines.harmonizer.runtime import HarmonizerModel

    models = [HarmonizerModel.load(path) for path in _model_paths(args.models)]
    grids = {model.grid for model in models}
    if len(grids) > 1:
        raise ConfigError(f"the models use different grids ({sorted(g.name for g in grids)}); evaluate them apart")
    progress = (lambda text: None) if args.quiet else (lambda text: print(text, file=sys.stderr, flush=True))
    try:
        sets = he.load_sets(models[0].grid, args.split, args.pieces, None if args.no_folk else args.folk,
                            args.cache, progress)
    except (FileNotFoundError, ValueError) as error:
        raise ConfigError(str(error)) from error
    report = he.evaluate_all(models, sets, args.strategies, args.calls, args.seed, args.windows,
                             not args.no_rule, progress, args.temperature, args.top_p)
    markdown = he.report_markdown(report)
    print(markdown)
    if args.out:
        _write_atomic(args.out, json.dumps(report, indent=1) + "\n")
    if args.markdown:
        _write_atomic(args.markdown, markdown + "\n")
    return 0

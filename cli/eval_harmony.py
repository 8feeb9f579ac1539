"""``scorebridge eval harmony``: how the harmonizer models, the rule engine and two simple
baselines compare with the human chords of held-out lead sheets (OpenEWLD and POP909 test lists),
by style: per-beat agreement, chord changes per bar, melody chord tones, tonic endings, key
detection, PCS/CTnCTR/CHE/CC. ``--set chorales`` gives the earlier tables instead: every model x
decoding strategy on held-out chorales and out-of-domain folk melodies.

numpy + onnxruntime; never torch. The held-out songs are parsed on first use (music21 and mido,
progress on stderr) from the data sets (``--datasets``, ``$SCOREBRIDGE_DATASETS`` or
``../shared/datasets`` beside the clone) unless the training cache ``leadsheets_q16_v1.npz`` is
there; they are kept in the user cache folder (``$XDG_CACHE_HOME/scorebridge``, default
``~/.cache/scorebridge``), so later runs read them from there.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from core.errors import ConfigError, ModelLoadError, ParameterError

__all__ = ["add_parser", "run"]

DEFAULT_STRATEGIES = ("start", "certain", "uncertain", "random", "stages10", "midpoint", "entropic")


def add_parser(sub: argparse._SubParsersAction) -> None:
    from cli.batch import add_pool_arguments
    from engines.harmonizer.harmonize import ENDINGS, HARMONIZE_STRATEGIES, RHYTHMS

    parser = sub.add_parser(
        "harmony",
        help="harmonizer vs human chords on held-out lead sheets by style (--set chorales: chorale metrics)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--set", default="leadsheets", choices=("leadsheets", "chorales"),
                        help="held-out lead sheets (default) or the chorale and folk tables")
    parser.add_argument("--models", nargs="+", metavar="MODEL",
                        help="shipped names or .onnx paths (default: lead sheets harmonizer and harmonizer_chorale, "
                        "chorales every onnx_models/harmonizer*.onnx)")
    parser.add_argument("--strategies", nargs="+", choices=HARMONIZE_STRATEGIES,
                        help="decoding strategies (default: each model card's, as harmonize decodes, on lead "
                             f"sheets; {' '.join(DEFAULT_STRATEGIES)} on chorales)")
    parser.add_argument("--calls", type=int,
                        help="model calls for stages10 / entropic (default: lead sheets the card's, chorales 10)")
    parser.add_argument("--split", default="test", choices=("test", "val"),
                        help="the held-out lists to read (val: for choosing decoding; test is never tuned on)")
    parser.add_argument("--songs", type=int, help="lead sheets: the first N songs of each data set and style")
    parser.add_argument("--styles", nargs="+", metavar="STYLE", help="lead sheets: only these styles")
    parser.add_argument("--datasets", type=Path,
                        help="lead sheets: folder holding openewld/ and pop909/ (default $SCOREBRIDGE_DATASETS, "
                             "else ../shared/datasets beside the clone); read once, when nothing is cached")
    parser.add_argument("--rhythm", choices=RHYTHMS, help="lead sheets: harmonic rhythm (default: the model card's)")
    parser.add_argument("--ending", choices=ENDINGS, help="lead sheets: the last chord (default tonic, as harmonize)")
    pool = parser.add_argument_group("where the songs are decoded (lead sheets; the batch layer, docs/batch.md)")
    add_pool_arguments(pool, "; 1: in this process")
    pool.add_argument("--jobs", type=int, dest="workers", help=argparse.SUPPRESS)  # the earlier name of --workers
    parser.add_argument("--pieces", type=int, help="chorales: only the first N held-out pieces (default all)")
    parser.add_argument("--windows", type=int, help="chorales: only the first N windows of each set")
    parser.add_argument("--folk", type=int, help="chorales: out-of-domain folk melodies (default 60)")
    parser.add_argument("--no-folk", action="store_true", help="chorales: skip the out-of-domain set")
    parser.add_argument("--no-rule", action="store_true", help="skip the rule engine")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--temperature", type=float,
                        help="sampling temperature (default: each model card's calibrated value, else 0.2)")
    parser.add_argument("--top-p", type=float, help="nucleus mass (default: the card's, else 0.9)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="cache folder (default: the user cache's harmonizer/; training caches there, "
                             "leadsheets_q16_v1.npz or raw_q16.npz, are used when present)")
    parser.add_argument("--out", type=Path, help="write every figure as JSON")
    parser.add_argument("--markdown", type=Path, help="write the tables as Markdown")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.set_defaults(run=run)


# the lead-sheet table's default rows: the default model and the one it replaced (the other
# chorale curricula stay available through --models)
LEADSHEET_MODELS = ("harmonizer", "harmonizer_chorale")


def _model_paths(names: list[str] | None, chosen: tuple[str, ...] | None = None) -> list[Path]:
    from engines.harmonizer.runtime import shipped_names
    from onnx_models import models_dir

    if not names:
        paths = [models_dir() / f"{name}.onnx" for name in shipped_names(models_dir())]
        if chosen is not None:
            paths = [p for p in paths if p.stem in chosen] or paths
        if not paths:
            raise ModelLoadError(f"no harmonizer*.onnx in {models_dir()}")
        return paths
    paths = []
    for name in names:
        path = Path(name) if name.endswith(".onnx") else models_dir() / f"{name}.onnx"
        if not path.exists():
            shipped = ", ".join(shipped_names(models_dir())) or "none"
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


_LEADSHEET_ONLY = ("songs", "styles", "datasets", "workers", "ray_address", "rhythm", "ending")
_CHORALE_ONLY = ("pieces", "windows", "folk")


def _check(args: argparse.Namespace) -> None:
    for option in ("calls", "pieces", "windows", "folk", "songs", "workers"):
        value = getattr(args, option)
        if value is not None and value < 1:
            raise ParameterError(f"--{option} must be at least 1, got {value}")
    if args.temperature is not None and not 0.0 <= args.temperature <= 2.0:
        raise ParameterError(f"--temperature must be in 0..2 (0: greedy), got {args.temperature}")
    if args.top_p is not None and not 0.0 < args.top_p <= 1.0:
        raise ParameterError(f"--top-p must be in (0, 1], got {args.top_p}")
    other = _CHORALE_ONLY if args.set == "leadsheets" else _LEADSHEET_ONLY
    # $RAY_ADDRESS is the cluster for what can run there, not a request to refuse the rest
    given = [f"--{o}" for o in other if getattr(args, o) is not None
             and not (o == "ray_address" and args.ray_address == os.environ.get("RAY_ADDRESS"))]
    given += ["--no-folk"] if args.no_folk and args.set == "leadsheets" else []
    if given:
        wanted = "chorales" if args.set == "leadsheets" else "leadsheets"
        raise ParameterError(f"{', '.join(given).replace('_', '-')}: only with --set {wanted}")
    for path in (args.out, args.markdown):
        folder = path.parent if path is not None and str(path.parent) else Path(".")
        if path is not None and not folder.is_dir():
            raise ConfigError(f"{path}: folder {folder} does not exist")
    if args.styles:
        from engines.harmonizer.leadsheet_corpus import STYLES

        unknown = [s for s in args.styles if s not in STYLES]
        if unknown:
            raise ParameterError(f"unknown style {', '.join(unknown)}; valid: {', '.join(STYLES)}")


def _finite(value):
    """NaN (a figure with no song to average) as JSON null."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def run(args: argparse.Namespace) -> int:
    _check(args)
    if args.ray_address and args.set == "leadsheets":
        from core.batch.ray_pool import connect

        connect(args.ray_address)  # a bad address is one line now, not after the songs and baselines
    from engines.harmonizer.runtime import HarmonizerModel

    models = [HarmonizerModel.load(path)
              for path in _model_paths(args.models, LEADSHEET_MODELS if args.set == "leadsheets" else None)]
    progress = (lambda text: None) if args.quiet else (lambda text: print(text, file=sys.stderr, flush=True))
    runner = _run_leadsheets if args.set == "leadsheets" else _run_chorales
    report, markdown = runner(args, models, progress)
    print(markdown)
    if args.out:
        _write_atomic(args.out, json.dumps(_finite(report), indent=1) + "\n")
    if args.markdown:
        _write_atomic(args.markdown, markdown + "\n")
    return 0


def _run_leadsheets(args: argparse.Namespace, models: list, progress) -> tuple[dict, str]:
    from engines.harmonizer import leadsheet_eval as le
    from engines.harmonizer.dataset import DEFAULT_CACHE
    from engines.harmonizer.leadsheet_corpus import load_eval_songs

    try:
        arrays = load_eval_songs(args.split, args.cache or DEFAULT_CACHE, args.datasets, progress, le.EVAL_FIELDS)
    except (FileNotFoundError, ValueError) as error:
        raise ConfigError(str(error)) from error
    songs = le.select_songs(le.songs_from_arrays(arrays), args.styles, args.songs)
    if not songs:
        raise ConfigError(f"no {args.split} song of style {', '.join(args.styles or [])}")
    strategies = args.strategies or [None]  # None: each card's strategy
    specs = [le.ModelSpec(model.path.stem if len(strategies) == 1 else f"{model.path.stem}/{strategy}",
                          str(model.path), strategy, args.calls, args.temperature, args.top_p, args.rhythm,
                          args.ending or "tonic")
             for model in models for strategy in strategies]
    produced = le.baselines(songs, not args.no_rule)
    produced |= le.decode_models(specs, songs, args.seed, args.workers, progress, args.ray_address)
    report = le.evaluate_songs(songs, produced)
    styles = {song.style for song in songs}
    decoding = "; ".join(
        f"{model.path.stem}: {'/'.join(s or model.strategy for s in strategies)}, "
        f"{args.calls or model.calls} calls, rhythm {args.rhythm or model.rhythm}, "
        f"T {model.temperature if args.temperature is None else args.temperature:g}, "
        f"p {model.top_p if args.top_p is None else args.top_p:g}, "
        f"{'metric beats' if model.beats == 'metric' else 'quarter notes'}, style "
        + (f"the song's where the model has it, else {model.default_style}" if styles & set(model.styles)
           else model.default_style)
        for model in models)
    report.update({
        "set": "leadsheets", "split": args.split, "title": f"Held-out lead sheets ({args.split} lists)",
        "protocol": f"Means over songs, each song weighing the same; one position per metric beat, the human chord "
                    f"at each beat's first 16th, beats without a human chord left out. Models: harmonize(), "
                    f"ending {args.ending or 'tonic'}, seed {args.seed} per song ({decoding})",
        "models": [{"name": m.path.stem, "path": str(m.path), "sha256": m.card.get("sha256"),
                    "styles": m.styles} for m in models],
        "skipped": [str(s) for s in arrays.get("skipped", [])],
    })
    return report, le.report_markdown(report)


def _run_chorales(args: argparse.Namespace, models: list, progress) -> tuple[dict, str]:
    from engines.harmonizer import harmony_eval as he

    grids = {model.grid for model in models}
    if len(grids) > 1:
        raise ConfigError(f"the models use different grids ({sorted(g.name for g in grids)}); evaluate them apart")
    try:
        sets = he.load_sets(models[0].grid, args.split, args.pieces, None if args.no_folk else args.folk or 60,
                            args.cache, progress)
    except (FileNotFoundError, ValueError) as error:
        raise ConfigError(str(error)) from error
    report = he.evaluate_all(models, sets, args.strategies or DEFAULT_STRATEGIES, args.calls or 10, args.seed,
                             args.windows, not args.no_rule, progress, args.temperature, args.top_p)
    return report, he.report_markdown(report)

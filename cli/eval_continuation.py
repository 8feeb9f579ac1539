"""``scorebridge eval continuation``: do continuations of held-out two-hand prompts keep the
prompt's key, texture and motifs?

Prompts: the held-out lists of the two-hand corpus (POP909 songs and music21 keyboard scores,
``engines/continuation/splits/twohands_{test,val}.txt``), ``--context-bars`` bars where both
hands play, continued for ``--bars`` bars with each of ``--seeds`` seeds and ``scorebridge
continue``'s default decoding. Rows: the human's real next bars, the prompt's last two bars
repeated, and each model (default: the shipped ``continuation`` and the one it replaced, ``continuation_d4``).
Figures per row and group (all, pop, classical); see ``engines.continuation.evaluation``.

The held-out songs are read on first use from the data sets (``--datasets``,
``$SCOREBRIDGE_DATASETS`` or ``../shared/datasets`` beside the clone) unless the training cache
is there, and kept in the user cache folder (``$XDG_CACHE_HOME/scorebridge``, default
``~/.cache/scorebridge``). numpy, mido, music21 and onnxruntime; never torch.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from core.errors import ConfigError, ModelLoadError
from engines.continuation.defaults import USER_BIASES

__all__ = ["add_parser", "run"]

DEFAULT_MODELS = ("continuation", "continuation_d4")
_DECODING = ("temperature", "top_p", *USER_BIASES, "register", "grid")
_COLUMNS = (
    ("in-key", "in_key", "{:.3f}"), ("in-key min", "in_key_min", "{:.2f}"), ("met", "in_key_met", "{:.0%}"),
    ("RH dens", "right_density", "{:.2f}"), ("LH dens", "left_density", "{:.2f}"),
    ("dens met", "density_met", "{:.0%}"),
    ("RH |dpitch|", "right_pitch", "{:.1f}"), ("LH |dpitch|", "left_pitch", "{:.1f}"),
    ("pitch met", "pitch_met", "{:.0%}"),
    ("RH n/bar", "right_notes_per_bar", "{:.1f}"), ("LH n/bar", "left_notes_per_bar", "{:.1f}"),
    ("silent bars", "silent_bars", "{:.0f}"),
    ("rhythm", "rhythm", "{:.3f}"), ("rhythm rnd", "rhythm_random", "{:.3f}"),
    ("motif", "motif", "{:.3f}"), ("motif rnd", "motif_random", "{:.3f}"),
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    from cli.batch import add_pool_arguments

    parser = sub.add_parser(
        "continuation",
        help="continuations of held-out two-hand prompts: key, texture, motifs (vs human and repeat baselines)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--models", nargs="+", metavar="MODEL",
                        help=f"shipped names or .onnx paths (default: {' '.join(DEFAULT_MODELS)})")
    parser.add_argument("--split", default="test", choices=("test", "val"),
                        help="held-out lists (val: for choosing decoding; test is never tuned on)")
    parser.add_argument("--seeds", type=int, default=2,
                        help="seeds per prompt (default 2; the issue's targets are read with 5)")
    parser.add_argument("--songs", type=int, default=20,
                        help="the first N pop songs of the list (default 20, so the default run takes under "
                             "a minute; --songs 1000 for every song)")
    parser.add_argument("--bars", type=int, default=4, help="bars to continue (default 4)")
    parser.add_argument("--context-bars", type=int, default=4, help="bars of prompt (default 4)")
    parser.add_argument("--temperature", type=float, help="sampling temperature (default: as `continue`)")
    parser.add_argument("--top-p", type=float, help="nucleus mass (default: as `continue`)")
    parser.add_argument("--key-bias", type=float, help="soft key penalty (default: as `continue`)")
    parser.add_argument("--pattern-bias", type=float, help="soft rhythm penalty (default: as `continue`)")
    parser.add_argument("--motif-bias", type=float, help="soft motif echo (default: as `continue`)")
    parser.add_argument("--density-bias", type=float, help="soft density keeping (default: as `continue`)")
    parser.add_argument("--register", choices=("prompt", "free"), help="hand ranges (default: as `continue`)")
    parser.add_argument("--grid", choices=("prompt", "free"), help="rhythmic grid (default: as `continue`)")
    parser.add_argument("--datasets", type=Path, help="folder holding pop909/ (default $SCOREBRIDGE_DATASETS, "
                        "else ../shared/datasets beside the clone); read once, when nothing is cached")
    parser.add_argument("--cache", type=Path, help="cache folder (default: the user cache's continuation/)")
    pool = parser.add_argument_group("where the prompts are continued (the batch layer, docs/batch.md)")
    add_pool_arguments(pool, "; 1: in this process")
    pool.add_argument("--jobs", type=int, dest="workers", help=argparse.SUPPRESS)  # the earlier name of --workers
    parser.add_argument("--out", type=Path, help="write every figure as JSON")
    parser.add_argument("--markdown", type=Path, help="write the table as Markdown")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.set_defaults(run=run)


def _model_path(name: str) -> Path:
    from onnx_models import models_dir

    path = Path(name)
    if path.suffix == ".onnx":
        if not path.is_file():
            raise ConfigError(f"--models {name}: no such file")
        return path
    shipped = models_dir() / f"{name}.onnx"
    if not shipped.is_file():
        raise ConfigError(f"--models {name}: not a shipped model (onnx_models/{name}.onnx) or an .onnx file")
    return shipped


def _check(args: argparse.Namespace) -> None:
    for option, low, high in (("seeds", 1, 20), ("bars", 1, 16), ("context_bars", 1, 8), ("songs", 1, 10_000),
                              ("workers", 1, 1024)):
        value = getattr(args, option)
        if value is not None and not low <= value <= high:
            raise ConfigError(f"--{option.replace('_', '-')} {value}: must be {low}..{high}")
    if args.temperature is not None and not 0.05 <= args.temperature <= 3:
        raise ConfigError(f"--temperature {args.temperature}: must be in 0.05..3")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise ConfigError(f"--top-p {args.top_p}: must be in (0, 1]")
    for option in USER_BIASES:
        value = getattr(args, option)
        if value is not None and not 0 <= value <= 8:
            raise ConfigError(f"--{option.replace('_', '-')} {value}: must be in 0..8")


def _table(report: dict, groups: tuple[str, ...] = ("all", "pop", "classical")) -> str:
    header = ["row", "group", "n"] + [c[0] for c in _COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row, by_group in report["rows"].items():
        for group in groups:
            figures = by_group.get(group)
            if figures is None:
                continue
            figures = dict(figures)
            figures["density_met"] = min(figures["right_density_met"], figures["left_density_met"])
            figures["pitch_met"] = min(figures["right_pitch_met"], figures["left_pitch_met"])
            figures["silent_bars"] = figures["right_silent_bars"] + figures["left_silent_bars"]
            cells = [row, group, str(figures["continuations"])]
            for _, key, fmt in _COLUMNS:
                value = figures.get(key, math.nan)
                missing = value is None or (isinstance(value, float) and math.isnan(value))
                cells.append("-" if missing else fmt.format(value))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from core.atomic import atomic_output
    from engines.continuation import evaluation as ev
    from engines.continuation.corpus import DEFAULT_CACHE
    from engines.harmonizer.leadsheet_corpus import default_datasets

    _check(args)
    if args.ray_address:
        from core.batch.ray_pool import connect

        connect(args.ray_address)  # a bad address is one line now, not after the prompts
    progress = (lambda text: None) if args.quiet else (lambda text: print(text, file=sys.stderr, flush=True))
    paths = {name: _model_path(name) for name in (args.models or DEFAULT_MODELS)}
    decoding = ev.Decoding()
    for option in _DECODING:
        if getattr(args, option) is not None:
            decoding = replace(decoding, **{option: getattr(args, option)})
    started = time.perf_counter()
    datasets = args.datasets or default_datasets()
    try:
        prompts = ev.held_out_prompts(args.split, datasets, args.context_bars, args.bars, args.songs,
                                      args.cache or DEFAULT_CACHE, progress)
    except (FileNotFoundError, ValueError) as error:
        raise ConfigError(f"eval continuation: {error}") from None
    if not prompts:
        raise ConfigError("eval continuation: no held-out song has a prompt of that many bars")
    progress(f"{len(prompts)} prompts ({sum(p.source == 'pop' for p in prompts)} pop) in "
             f"{time.perf_counter() - started:.1f} s")
    seeds = list(range(args.seeds))
    rows = {"human": [p.human for p in prompts], "repeat": [ev.repeat_last_bars(p, args.bars) for p in prompts]}
    speed = {}
    began = time.perf_counter()
    try:
        made = ev.continue_prompts(list(paths.values()), prompts, seeds, args.bars, decoding, args.workers,
                                   args.ray_address, progress)
    except (OSError, ValueError, RuntimeError) as error:
        raise ModelLoadError(f"{', '.join(map(str, paths.values()))}: {error}") from None
    for name, (continuations, seconds) in zip(paths, made):
        rows[name] = continuations
        speed[name] = {"median_ms": round(1000 * sorted(seconds)[len(seconds) // 2], 1),
                       "busy_s": round(sum(seconds), 1)}
        progress(f"{name}: {len(continuations)} continuations, {speed[name]['busy_s']} s of work")
    progress(f"all models: {time.perf_counter() - began:.1f} s")
    report = {
        "split": args.split, "prompts": len(prompts), "seeds": args.seeds, "bars": args.bars,
        "context_bars": args.context_bars, "decoding": decoding.__dict__, "speed": speed,
        "rows": ev.evaluate_rows(prompts, rows, args.seeds, args.bars),
        "seconds": round(time.perf_counter() - started, 1),
    }
    table = _table(report)
    print(table)
    print(f"{len(prompts)} prompts x {args.seeds} seeds, {args.bars} bars after {args.context_bars}; "
          f"{report['seconds']} s")
    for target, text in ((args.out, json.dumps(report, indent=1)), (args.markdown, table + "\n")):
        if target is not None:
            with atomic_output(target) as temporary:
                Path(temporary).write_text(text)
    return 0

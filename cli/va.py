"""``scorebridge va analyze|import|apply``: video -> valence-arousal curve -> score automation."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from cli.batch import add_batch_arguments, is_batch_input
from cli.tuning_options import add_tuning_options, retune_written, tuning_from_args
from core.errors import ConfigError

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    va = sub.add_parser("va", help="valence-arousal curves from video: analyze, import, apply to a score")
    actions = va.add_subparsers(dest="va_action", metavar="ACTION", required=True)

    analyze = actions.add_parser("analyze", help="video -> time_s,valence,arousal CSV (or JSON)")
    analyze.add_argument("video", type=Path, help="a video, or a folder or manifest of them (a batch)")
    analyze.add_argument("-o", "--output", type=Path, required=True,
                         help="curve file (.csv, or .json with cuts); a folder for a batch (one CSV per video)")
    analyze.add_argument("--rate", type=float, default=10.0, help="samples per second (default 10)")
    analyze.add_argument("--smooth", type=float, default=3.0, metavar="SECONDS",
                         help="smoothing window (default 3 s; 0 = none)")
    analyze.add_argument("--plot", type=Path, help="also write a PNG of both curves with the cuts")
    analyze.add_argument("--sensor", default="builtin",
                         help="'builtin' (picture and sound features) or 'onnx:MODEL.onnx' (docs/va.md)")
    analyze.add_argument("--probe", type=Path, help="linear probe (JSON/NPZ) for an ONNX encoder's embedding")
    add_batch_arguments(analyze)
    analyze.set_defaults(run=_analyze)

    imported = actions.add_parser("import", help="validate a VA curve made elsewhere (CSV/JSON) -> CSV")
    imported.add_argument("source", type=Path)
    imported.add_argument("-o", "--output", type=Path, required=True)
    imported.add_argument("--columns", default="time_s,valence,arousal", metavar="TIME,VALENCE,AROUSAL",
                          help="the source's column names (default time_s,valence,arousal)")
    imported.add_argument("--from-range", default="-1:1", metavar="LOW:HIGH",
                          help="the source's value scale, mapped to [-1, 1] (e.g. 1:9 for SAM ratings)")
    imported.add_argument("--rate", type=float, help="resample to this many samples per second")
    imported.add_argument("--plot", type=Path, help="also write a PNG of both curves")
    imported.set_defaults(run=_import)

    apply = actions.add_parser("apply",
                               help="drive a MIDI score's velocities, CC lanes and tempo from a curve")
    apply.add_argument("score", type=Path, help="MIDI file (type 0 or 1)")
    apply.add_argument("curve", type=Path, help="VA curve (CSV/JSON)")
    apply.add_argument("-o", "--output", type=Path, required=True)
    apply.add_argument("--offset-s", type=float, default=0.0, help="video time at which the score starts")
    apply.add_argument("--tempo-map", action="store_true", help="also scale the tempo with arousal")
    apply.add_argument("--tempo-depth", type=float, default=0.15,
                       help="tempo x 2^(depth*arousal) (default 0.15)")
    apply.add_argument("--velocity-depth", type=float, default=0.5,
                       help="velocity x 2^(depth*arousal) (default 0.5; 0 = leave velocities)")
    apply.add_argument("--lane", action="append", default=None, metavar="CC=SOURCE",
                       help="automation lane, SOURCE arousal|valence; repeatable "
                       "(default 11=arousal, 1=valence)")
    apply.add_argument("--no-lanes", action="store_true", help="write no CC automation")
    apply.add_argument("--lane-step", type=float, default=0.25, metavar="BEATS",
                       help="lane resolution (0.25)")
    apply.add_argument("--cc-floor", type=int, default=32, help="CC value at -1 (default 32; +1 is 127)")
    add_tuning_options(apply)
    apply.set_defaults(run=_apply)


def _range(text: str) -> tuple[float, float]:
    low, sep, high = text.partition(":")
    if sep:
        with contextlib.suppress(ValueError):
            return float(low), float(high)
    raise ConfigError(f"--from-range {text!r}: write LOW:HIGH, e.g. 1:9")


def _lanes(items: list[str] | None, disabled: bool) -> dict[int, str]:
    if disabled:
        return {}
    if items is None:
        return {11: "arousal", 1: "valence"}
    lanes = {}
    for item in items:
        number, sep, source = item.partition("=")
        if not sep or not number.strip().isdigit():
            raise ConfigError(f"--lane {item!r}: write CC=SOURCE, e.g. --lane 11=arousal")
        lanes[int(number)] = source.strip()
    return lanes


def _check_output(path: Path) -> None:
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ConfigError(f"{path}: the folder {folder} does not exist")


def _write(curve, output: Path, plot: Path | None, cuts: list[float], title: str,
           extra: dict[str, object]) -> None:
    """Write the curve and the plot together: both or neither."""
    from core.atomic import atomic_outputs
    from engines.va import write_curve
    from engines.va.plot import plot_curve

    with atomic_outputs([output] if plot is None else [output, plot]) as temporaries:
        write_curve(curve, temporaries[0], extra, as_json=output.suffix.lower() == ".json")
        if plot is not None:
            plot_curve(curve, temporaries[1], cuts, title)


def _progress_logger(video: Path):
    """Log every 10 % of an analysis once it has run for 5 s (the CLI logs at INFO)."""
    import logging
    import time

    log = logging.getLogger("scorebridge.va")
    started = time.monotonic()
    reported = [0]

    def progress(fraction: float) -> None:
        tenth = int(fraction * 10)
        if tenth > reported[0] and time.monotonic() - started > 5.0:
            reported[0] = tenth
            log.info("%s: %d %%", video.name, tenth * 10)

    return progress


def analysis_sensor(args: argparse.Namespace, threads: int = 0):  # -> OnnxSensor | None
    """The sensor ``--sensor``/``--probe`` name (None: the builtin features)."""
    from engines.va.errors import VideoError
    from engines.va.sensor_onnx import OnnxSensor, load_probe

    if args.sensor.startswith("onnx:"):
        return OnnxSensor(args.sensor[5:], load_probe(args.probe) if args.probe else None, threads)
    if args.sensor != "builtin":
        raise VideoError(f"--sensor {args.sensor!r}: use 'builtin' or 'onnx:MODEL.onnx'")
    if args.probe:
        raise VideoError("--probe needs --sensor onnx:MODEL.onnx")
    return None


def _analyze(args: argparse.Namespace) -> int:
    if is_batch_input(args.video):
        from cli.batch_jobs import run_va_batch

        analysis_sensor(args)  # a bad --sensor or --probe is one error, not one per video
        return run_va_batch(args)
    for path in (args.output, args.plot):
        if path is not None:
            _check_output(path)
    print(analyze_one(args, analysis_sensor(args), args.video, args.output, args.plot))
    return 0


def analyze_one(args: argparse.Namespace, sensor, video: Path, output: Path, plot: Path | None) -> str:
    """Analyse one video and write its curve (and plot); returns the lines the command prints."""
    from engines.va.analyze import analyze_video

    result = analyze_video(video, args.rate, args.smooth, sensor, progress=_progress_logger(video))
    curve = result.curve
    extra = {"source": str(video), "sensor": result.sensor, "rate_hz": args.rate,
             "cuts_s": [round(c, 4) for c in result.cuts_s]}
    _write(curve, output, plot, result.cuts_s, f"{video.name} ({result.sensor})", extra)
    inputs = "picture + sound" if result.used_audio else "picture"
    return "\n".join([f"wrote {output}: {curve.duration_s:.1f} s, {len(curve)} samples at {args.rate:g} Hz, "
                      f"{len(result.cuts_s)} cut{'' if len(result.cuts_s) == 1 else 's'}, {result.sensor} sensor "
                      f"({inputs}), {result.frames} frames analysed, "
                      f"{result.speed:.1f}x real time", *(f"note: {note}" for note in result.notes)])


def _import(args: argparse.Namespace) -> int:
    from engines.va import read_curve

    columns = [c.strip() for c in args.columns.split(",")]
    if len(columns) != 3 or not all(columns):
        raise ConfigError(f"--columns {args.columns!r}: name three columns TIME,VALENCE,AROUSAL")
    for path in (args.output, args.plot):
        if path is not None:
            _check_output(path)
    curve = read_curve(args.source, columns, _range(args.from_range))
    if args.rate is not None:
        from engines.va import CurveError

        try:
            curve = curve.resampled(args.rate)
        except CurveError as exc:
            raise CurveError(f"{args.source}: --rate {args.rate:g}: {exc}") from None
    _write(curve, args.output, args.plot, [], args.source.name, {"source": str(args.source)})
    print(f"wrote {args.output}: {len(curve)} samples, {curve.duration_s:.1f} s, valence "
          f"{curve.valence.min():.2f}..{curve.valence.max():.2f}, arousal "
          f"{curve.arousal.min():.2f}..{curve.arousal.max():.2f}")
    return 0


def _apply(args: argparse.Namespace) -> int:
    from engines.va import read_curve
    from engines.va.apply import ApplySettings, apply_file

    _check_output(args.output)
    tuning, tuning_output = tuning_from_args(args)
    settings = ApplySettings(offset_s=args.offset_s, velocity_depth=args.velocity_depth,
                             lanes=_lanes(args.lane, args.no_lanes), lane_step_beats=args.lane_step,
                             cc_floor=args.cc_floor, tempo_map=args.tempo_map, tempo_depth=args.tempo_depth)
    settings.check()
    curve = read_curve(args.curve)
    if tuning is None:
        report = apply_file(args.score, curve, args.output, settings)
    else:
        from core.atomic import atomic_output

        with atomic_output(args.output) as temporary:
            report = apply_file(args.score, curve, temporary, settings)
            retune_written(temporary, tuning, tuning_output)
    print(f"wrote {args.output}: {report.notes} notes (mean velocity {report.mean_velocity_before:.1f} -> "
          f"{report.mean_velocity_after:.1f}), {report.lane_events} CC events on channels "
          f"{[c + 1 for c in report.channels]} ({report.replaced_events} replaced), "
          f"{report.tempo_events} tempo events, score {report.score_s:.1f} s from video time "
          f"{args.offset_s:g} s")
    for warning in report.warnings:
        print(f"warning: {warning}")
    return 0

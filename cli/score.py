"""``scorebridge score VIDEO -o OUT.mkv``: a soundtrack for a video in one command (docs/score.md).

Stages: analyse the picture (valence-arousal curve and cuts, ``va analyze``), plan the form on the
cut (tempo map, sections at the large cuts), compose (the theme or the style's motif developed by
the continuation model, harmonized, orchestrated by arousal), render the stems with FluidSynth,
master, encode the SNC file, and write the video with its soundtrack. Every option is checked and
every input opened before the first stage; every stage's output is kept in the user cache and
reused by a run with the same inputs and options; the four outputs appear together or not at all.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import shutil
import time
from pathlib import Path

from cli.tuning_options import add_tuning_options, tuning_from_args
from core.atomic import temporary_folder
from core.errors import ConfigError, ScoreBridgeError

__all__ = ["register"]

ANALYSIS_RATE_HZ, ANALYSIS_SMOOTH_S = 10.0, 3.0
MIN_DURATION_S = 3.0
CONTAINERS = {".mkv": "matroska", ".mp4": "mp4"}
# share of the progress bar per stage
WEIGHTS = {"analysis": 40, "compose": 20, "render": 25, "snc": 10, "deliver": 5}


def register(sub: argparse._SubParsersAction) -> None:
    from engines.score.presets import INSTRUMENTS, STYLES

    p = sub.add_parser("score", help="score a video: VA curve, form on the cut, theme, stems, SNC, video",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("video", type=Path, help="the picture (any container and codec FFmpeg reads)")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="OUT.mkv or OUT.mp4; OUT.snc, OUT.mid and OUT.va.csv are written beside it")
    p.add_argument("--theme", type=Path, help="a MIDI theme to develop (kept note for note at the start)")
    p.add_argument("--style", choices=sorted(STYLES), default="cinematic",
                   help="models' style and built-in motif (default cinematic)")
    p.add_argument("--tempo", default="auto",
                   help="BPM (constant; sections start on the beat nearest each large cut) or auto "
                   "(default: a tempo map that puts every large cut on a bar's first beat)")
    p.add_argument("--instruments", type=_instruments, default="orchestral", metavar="PRESET|FONT.sf2",
                   help="General MIDI preset: " + "; ".join(f"{k}: {v.description}" for k, v in INSTRUMENTS.items())
                   + "; or your own FONT.sf2 (the orchestral programmes, played by your font)")
    p.add_argument("--soundfont", type=Path, help="a .sf2 to render the preset with (default: FluidR3 GM)")
    p.add_argument("--seed", type=int, default=0, help="random seed of both models (default 0)")
    p.add_argument("--va", type=Path, help="use this VA curve (CSV/JSON time_s,valence,arousal) instead of the "
                   "picture's; the cuts still come from the video")
    p.add_argument("--snc-mode", choices=("lossless", "transparent", "compact"), default="lossless",
                   help="SNC coding of the stems (default lossless)")
    p.add_argument("--no-cache", action="store_true", help="recompute every stage (and refresh the cache)")
    add_tuning_options(p)
    p.set_defaults(run=run)


def _instruments(text: str) -> str | Path:
    from engines.score.presets import INSTRUMENTS

    if text in INSTRUMENTS:
        return text
    if text.lower().endswith(".sf2"):
        return Path(text)
    raise argparse.ArgumentTypeError(f"{text!r}: a preset ({', '.join(sorted(INSTRUMENTS))}) or a .sf2 file")


def _tempo(text: str) -> float | None:
    from engines.score.form import TEMPO_LIMITS

    if text == "auto":
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and TEMPO_LIMITS[0] <= value <= TEMPO_LIMITS[1]):
        raise ConfigError(f"--tempo {text!r}: give BPM in {TEMPO_LIMITS[0]:g}..{TEMPO_LIMITS[1]:g} or auto")
    return value


def _outputs(output: Path) -> dict[str, Path]:
    suffix = output.suffix.lower()
    if suffix not in CONTAINERS:
        raise ConfigError(f"-o {output}: name a .mkv or .mp4 file")
    if not output.parent.resolve().is_dir():
        raise ConfigError(f"-o {output}: folder {output.parent} does not exist")
    outputs = {"video": output, "snc": output.with_suffix(".snc"), "midi": output.with_suffix(".mid"),
               "curve": output.with_suffix(".va.csv")}
    for path in outputs.values():
        if path.is_dir():
            raise ConfigError(f"-o {output}: {path} is a folder")
    try:  # by trying: permissions, a read-only disk or a pseudo file system (root passes os.access)
        with temporary_folder(output.parent, ".score-check-"):
            pass
    except OSError as exc:
        raise ConfigError(f"-o {output}: the folder {output.parent} is not writable ({exc.strerror or exc})") from None
    return outputs


class _Inputs:
    """Everything checked before the first stage."""

    def __init__(self, args: argparse.Namespace) -> None:
        from engines.score.compose import load_theme, theme_fits
        from engines.score.deliver import check_container, check_video
        from engines.score.form import TEMPO_LIMITS
        from engines.score.render import DEFAULT_SOUNDFONT, check_soundfont

        self.tempo = _tempo(args.tempo)
        self.outputs = _outputs(args.output)
        font = args.soundfont
        self.preset = args.instruments
        if isinstance(args.instruments, Path):
            if args.soundfont is not None:
                raise ConfigError(f"--instruments {args.instruments} and --soundfont {args.soundfont}: give one font")
            font, self.preset = args.instruments, "orchestral"
        sources = [args.video, args.theme, args.va, font]
        for path in self.outputs.values():
            if any(s is not None and s.exists() and path.exists() and s.resolve() == path.resolve() for s in sources):
                raise ConfigError(f"-o {args.output}: would overwrite the input {path}")
        self.tuning, mode = tuning_from_args(args)
        if mode == "mpe":
            raise ConfigError("--tuning-output mpe: a score's parts each keep one channel; use mts or none")
        self.tuning_mode = mode
        for tool in ("ffmpeg", "fluidsynth"):
            if shutil.which(tool) is None:
                raise ConfigError(f"{tool} is not installed (Debian: apt install {tool})")
        self.soundfont = check_soundfont(font or DEFAULT_SOUNDFONT)
        self.info, self.stream_index = check_video(args.video)
        check_container(args.video, self.stream_index, CONTAINERS[args.output.suffix.lower()], args.output)
        self.duration_s = float(self.info.duration_s)
        if self.duration_s < MIN_DURATION_S:
            raise ConfigError(f"{args.video}: {self.duration_s:.2f} s; a score needs at least {MIN_DURATION_S:g} s")
        self.theme = load_theme(args.theme) if args.theme is not None else None
        if self.theme is not None:
            theme_fits(self.theme, self.duration_s, self.tempo or TEMPO_LIMITS[1])
        self.curve = None
        if args.va is not None:
            from engines.va import CurveError, read_song_curve

            try:
                self.curve, unit = read_song_curve(args.va)
            except CurveError as exc:
                raise ConfigError(f"--va {exc}") from None
            if unit == "beats":
                raise ConfigError(f"--va {args.va}: a score needs a curve over video time (time_s), not beats")


def _load_models(style: str):
    from engines.continuation.runtime import SCORE_MODEL, ContinuationModel
    from engines.harmonizer.runtime import HarmonizerModel
    from engines.score.presets import STYLES

    continuation = ContinuationModel.load(SCORE_MODEL)
    harmonizer = HarmonizerModel.named("harmonizer")
    if STYLES[style].harmonizer not in harmonizer.styles:
        raise ConfigError(f"--style {style}: the harmonizer has no {STYLES[style].harmonizer!r} style")
    return continuation, harmonizer


class _Run:
    """One run: the cache, the progress bar and the stage reports."""

    def __init__(self, args: argparse.Namespace, progress, task) -> None:
        from bridge import __version__
        from engines.score.cache import StageCache, code_digest

        self.args, self.progress, self.task = args, progress, task
        self.cache = StageCache(salt=f"scorebridge {__version__} {code_digest()}")
        self.done = 0.0
        self.reused: list[str] = []

    def advance(self, stage: str, fraction: float, base: float) -> None:
        self.progress.update(self.task, completed=base + WEIGHTS[stage] * min(1.0, fraction),
                             description=f"score: {stage}")

    def stage(self, name: str, key: str, produce) -> Path:
        """The stage's cached folder, produced first when missing (or with --no-cache)."""
        base = self.done
        if self.args.no_cache:
            self.cache.clear(name, key)
        found = self.cache.find(name, key)
        if found is None:
            started = time.perf_counter()
            try:
                with self.cache.fill(name, key) as work:
                    produce(work, lambda fraction: self.advance(name, fraction, base))
            except OSError as exc:  # the cache folder: unwritable, or the disk full
                raise ScoreBridgeError(f"{name}: cannot write {exc.filename or self.cache.root} "
                                       f"({exc.strerror or exc})") from None
            found = self.cache.find(name, key)
            self.progress.console.print(f"{name}: done in {time.perf_counter() - started:.2f} s", highlight=False,
                                        soft_wrap=True)
        else:
            self.reused.append(name)
            self.progress.console.print(f"{name}: reused {found}", highlight=False, markup=False, soft_wrap=True)
        self.done = base + WEIGHTS[name]
        self.progress.update(self.task, completed=self.done)
        return found


def _music_to_json(music) -> str:
    parts = {name: [[n.pitch, n.velocity, n.duration_beats, n.at_beats] for n in notes]
             for name, notes in music.parts.items()}
    return json.dumps({"parts": parts, "key": music.key, "chords": len(music.chords),
                       "theme_notes": music.theme_notes, "generated_notes": music.generated_notes})


def _music_from_json(text: str) -> tuple[dict, dict]:
    from core.events import Note

    data = json.loads(text)
    parts = {name: [Note(p, v, d, at_beats=b) for p, v, d, b in notes] for name, notes in data["parts"].items()}
    return parts, data


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    started = time.perf_counter()
    inputs = _Inputs(args)
    models = _load_models(args.style)
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
               TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task("score", total=sum(WEIGHTS.values()))
        summary = _score(args, inputs, models, _Run(args, progress, task))
    print(summary + f" in {time.perf_counter() - started:.1f} s")
    return 0


def _score(args: argparse.Namespace, inputs: _Inputs, models, run: _Run) -> str:
    import numpy as np

    from core.atomic import atomic_outputs
    from engines.score.compose import compose, motif_theme
    from engines.score.form import plan_form
    from engines.score.presets import INSTRUMENTS, PARTS
    from engines.va import read_curve, write_curve
    from onnx_models import sha256_of as file_digest

    continuation, harmonizer = models
    video_digest = file_digest(args.video)

    def analyse(work: Path, progress) -> None:
        from engines.va.analyze import analyze_video

        result = analyze_video(args.video, ANALYSIS_RATE_HZ, ANALYSIS_SMOOTH_S, progress=progress)
        write_curve(result.curve, work / "curve.csv")
        (work / "analysis.json").write_text(json.dumps({"cuts_s": result.cuts_s, "notes": result.notes}))

    analysis_key = run.cache.key("analysis", video_digest, ANALYSIS_RATE_HZ, ANALYSIS_SMOOTH_S)
    analysis = run.stage("analysis", analysis_key, analyse)
    cuts = json.loads((analysis / "analysis.json").read_text())["cuts_s"]
    curve = inputs.curve if inputs.curve is not None else read_curve(analysis / "curve.csv")
    curve_digest = file_digest(args.va) if args.va is not None else analysis_key

    theme = inputs.theme
    if theme is None:  # the motif in minor when the opening's valence is negative
        opening = curve.mean_between(np.array([0.0]), np.array([min(8.0, inputs.duration_s)]))[0, 0]
        theme = motif_theme(args.style, minor=bool(opening < 0))
    plan = plan_form(curve, cuts, inputs.duration_s, inputs.tempo, theme.bar_steps / 12, theme.beats)
    pitch_classes = inputs.tuning.pitch_classes() if inputs.tuning is not None else None
    theme_digest = file_digest(args.theme) if args.theme is not None else f"motif:{args.style}"
    music_key = run.cache.key("compose", curve_digest, cuts, inputs.duration_s, args.tempo, theme_digest,
                              args.style, args.seed, sorted(pitch_classes) if pitch_classes else None,
                              continuation.card.get("sha256", str(continuation.path)),
                              harmonizer.card.get("sha256", ""), harmonizer.strategy, harmonizer.calls,
                              harmonizer.temperature, harmonizer.rhythm)

    def write_music(work: Path, progress) -> None:
        music = compose(theme, plan, curve, args.style, args.seed, continuation, harmonizer, pitch_classes, progress)
        (work / "music.json").write_text(_music_to_json(music))

    parts, facts = _music_from_json((run.stage("compose", music_key, write_music) / "music.json").read_text())
    score_midi = _build_midi(plan, parts, INSTRUMENTS[inputs.preset], curve, theme, args, inputs)
    # keyed by what the synthesizer plays (the MIDI with its tuning and lanes) and the font it plays with
    soundfont_id = [str(inputs.soundfont.resolve()), inputs.soundfont.stat().st_size, inputs.soundfont.stat().st_mtime]
    midi_bytes = io.BytesIO()
    score_midi.save(file=midi_bytes)
    render_key = run.cache.key("render", hashlib.sha256(midi_bytes.getvalue()).hexdigest(), soundfont_id,
                               inputs.duration_s)

    def render(work: Path, progress) -> None:
        from engines.score.midi import stem_midi
        from engines.score.render import master, render_stems

        midi_paths = {}
        for part in PARTS:
            midi_paths[part.name] = work / f"{part.name}.mid"
            stem_midi(score_midi, part.name).save(str(midi_paths[part.name]))
        stems = render_stems(midi_paths, inputs.soundfont, work, inputs.duration_s)
        progress(0.8)
        report = master(stems, work / "master.flac")
        (work / "master.json").write_text(json.dumps(report))

    rendered = run.stage("render", render_key, render)
    snc_key = run.cache.key("snc", render_key, args.snc_mode, plan.sections)

    def encode(work: Path, progress) -> None:
        from engines.score.deliver import section_contexts
        from engines.snc.encode import encode as snc_encode

        stems = {part.name: rendered / f"{part.name}.flac" for part in PARTS}
        snc_encode(rendered / "master.flac", stems, work / "score.snc", args.snc_mode,
                   contexts=section_contexts(plan))

    coded = run.stage("snc", snc_key, encode)
    base = run.done
    outputs = inputs.outputs
    from engines.score.deliver import mux

    try:
        with atomic_outputs(list(outputs.values())) as (video, snc, midi, curve_file):
            mux(args.video, inputs.stream_index, rendered / "master.flac", video,
                CONTAINERS[args.output.suffix.lower()])
            run.advance("deliver", 0.8, base)
            shutil.copyfile(coded / "score.snc", snc)
            score_midi.save(str(midi))
            write_curve(curve, curve_file)
    except OSError as exc:
        raise ScoreBridgeError(f"-o {args.output}: cannot write ({exc.strerror or exc})") from None
    run.advance("deliver", 1.0, base)
    mastering = json.loads((rendered / "master.json").read_text())
    cut_text = ", ".join(f"{c:.2f}" for c in plan.cuts_s) or "none"
    tempi = sorted({round(s.bpm, 1) for s in plan.sections})
    return (f"wrote {outputs['video']}, {outputs['snc'].name}, {outputs['midi'].name}, {outputs['curve'].name}: "
            f"{inputs.duration_s:.2f} s, {len(plan.sections)} sections at large cuts {cut_text} s, "
            f"{plan.total_beats:g} beats at {'-'.join(f'{t:g}' for t in tempi)} BPM, keys "
            f"{facts['key']}, {facts['theme_notes']} theme + {facts['generated_notes']} generated piano notes, "
            f"{len(PARTS)} stems, master {mastering['master_lufs']:.1f} LUFS"
            + (f"; reused {', '.join(run.reused)}" if run.reused else ""))


def _build_midi(plan, parts, instrument, curve, theme, args, inputs):
    from engines.score.midi import build_midi

    midi = build_midi(plan, parts, instrument, curve, theme.ticks_per_beat, theme.time_signature)
    if inputs.tuning is not None:
        from core.retune import retune_file

        midi = retune_file(midi, inputs.tuning, inputs.tuning_mode)
    return midi

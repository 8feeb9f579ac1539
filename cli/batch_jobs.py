"""Each batch command's job: the items of its folder or manifest, the model a worker loads once,
and the work on one item, which is the command's own single-file code. A job holds the parsed
options only, so it pickles to worker processes and Ray actors in a few hundred bytes."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cli.batch import BATCH_OPTIONS, item_key, items_from, run_batch
from core.batch import Item, manifest_rows
from core.errors import ConfigError

__all__ = ["ContinueJob", "HarmonizeJob", "SncEncodeJob", "SncRenderJob", "VaAnalyzeJob", "run_continue_batch",
           "run_harmonize_batch", "run_render_batch", "run_snc_batch", "run_va_batch"]


@dataclass
class _Job:
    args: argparse.Namespace

    def settings(self) -> dict[str, Any]:
        return {key: value for key, value in vars(self.args).items() if key not in BATCH_OPTIONS}


class HarmonizeJob(_Job):
    def setup(self, threads: int) -> Any:
        from engines.harmonizer.runtime import HarmonizerModel

        return HarmonizerModel.named(self.args.model, threads)

    def process(self, model: Any, item: Item) -> str:
        from cli.harmonize import _harmonize_one

        xml = Path(item.outputs[1]) if len(item.outputs) > 1 else None
        return _harmonize_one(Path(item.inputs["input"]), Path(item.outputs[0]), xml, self.args, model)


def run_harmonize_batch(args: argparse.Namespace) -> int:
    def outputs(key: str, _source: Path) -> tuple[Path, ...]:
        stem = Path(key).with_suffix("")
        xml = () if args.musicxml is None else (args.musicxml / stem.with_suffix(".musicxml"),)
        return (args.output / stem.with_suffix(".mid"), *xml)

    items = items_from(args.input, args.output, (".mid", ".midi"), outputs)
    return run_batch(args, HarmonizeJob(args), items, args.output)


class ContinueJob(_Job):
    def setup(self, threads: int) -> Any:
        from cli.continue_ import load_model

        return load_model(self.args, threads)

    def process(self, model: Any, item: Item) -> str:
        from cli.continue_ import continue_file

        return continue_file(self.args, model, Path(item.inputs["input"]), Path(item.outputs[0]))


def run_continue_batch(args: argparse.Namespace) -> int:
    def outputs(key: str, _source: Path) -> tuple[Path, ...]:
        return (args.output / Path(key).with_suffix(".mid"),)

    items = items_from(args.input, args.output, (".mid", ".midi"), outputs)
    return run_batch(args, ContinueJob(args), items, args.output)


class SncEncodeJob(_Job):
    def setup(self, threads: int) -> Any:
        from engines.snc import encode  # no model: the codec's imports (PyAV, scipy) are the set-up

        return encode

    def process(self, encode: Any, item: Item) -> str:
        stems = {name: Path(path) for name, path in item.inputs["stems"].items()}
        output = Path(item.outputs[0])
        output.parent.mkdir(parents=True, exist_ok=True)
        manifest = encode(Path(item.inputs["master"]), stems, output, item.inputs["mode"], self.args.mastering,
                          mix_track=self.args.mix_track)
        return (f"wrote {output}: {len(manifest.stems)} stems + residual, {manifest.mode}, "
                f"{manifest.duration_s:.2f} s, {output.stat().st_size} bytes")

    def sweep(self, items: list[Item]) -> None:
        """The scratch folders (``.snc-PID-*``, where the .snc is written before its rename) that
        killed workers left beside the outputs of ``items``; a live encoder's folder is locked."""
        from engines.snc.scratch import sweep_scratch

        for folder in sorted({str(Path(path).parent) for item in items for path in item.outputs}):
            sweep_scratch(folder)


def _stems(value: Any, where: str) -> dict[str, str]:
    """A row's stems: a JSON object {name: file}, or in CSV ``name=file;name=file``."""
    if isinstance(value, dict):
        pairs = [(str(k), str(v)) for k, v in value.items()]
    else:
        pairs = [tuple(part.strip().partition("=")[::2]) for part in str(value or "").split(";") if part.strip()]
    if not pairs or not all(name and path for name, path in pairs):
        raise ConfigError(f"{where}: 'stems' must name NAME=FILE pairs (CSV: vocals=v.wav;drums=d.wav, "
                          "JSON: {\"vocals\": \"v.wav\"})")
    return dict(pairs)


def run_snc_batch(args: argparse.Namespace) -> int:
    """``snc encode --manifest SONGS.csv -o FOLDER``: one row per song (master, stems, mode,
    output); paths relative to the manifest's folder, outputs to FOLDER."""
    manifest: Path = args.manifest
    items = []
    for line, row in manifest_rows(manifest):
        where = f"{manifest}:{line}"
        if not row.get("master"):
            raise ConfigError(f"{where}: no 'master' (each row names a song's master file)")
        mode = str(row.get("mode") or args.mode)  # an unknown mode fails its row (engines.snc checks)
        stems = {name: str(manifest.parent / path) for name, path in _stems(row.get("stems"), where).items()}
        key = item_key(row.get("output") or Path(str(row["master"])).with_suffix(".snc"), where)
        items.append(Item(key, (str(args.output / key),),
                          {"master": str(manifest.parent / str(row["master"])), "stems": stems, "mode": mode}))
    if len({item.key for item in items}) != len(items):
        raise ConfigError(f"{manifest}: two rows write the same output; give each an 'output'")
    if args.output.exists() and not args.output.is_dir():
        raise ConfigError(f"-o {args.output}: with --manifest, -o is the output folder")
    return run_batch(args, SncEncodeJob(args), items, args.output)


class SncRenderJob(_Job):
    def setup(self, threads: int) -> Any:
        from cli.snc import _request
        from engines.snc_player.render import render

        return render, _request(self.args)

    def process(self, state: Any, item: Item) -> str:
        render, request = state
        result = render(Path(item.inputs["input"]), Path(item.outputs[0]), request, via=self.args.via)
        return (f"wrote {result['output']}: {result['frames']} frames, {result['channels']} ch, context "
                f"{result['context']} ({result['layout']}, via {result['via']})")


def run_render_batch(args: argparse.Namespace) -> int:
    """``snc render FOLDER|MANIFEST -o FOLDER``: one WAV per .snc file, with the same mix options."""
    def outputs(key: str, _source: Path) -> tuple[Path, ...]:
        return (args.output / Path(key).with_suffix(".wav"),)

    items = items_from(args.input, args.output, (".snc",), outputs)
    return run_batch(args, SncRenderJob(args), items, args.output)


class VaAnalyzeJob(_Job):
    def setup(self, threads: int) -> Any:
        from cli.va import analysis_sensor

        return analysis_sensor(self.args, threads)

    def process(self, sensor: Any, item: Item) -> str:
        from cli.va import analyze_one

        plot = Path(item.outputs[1]) if len(item.outputs) > 1 else None
        return analyze_one(self.args, sensor, Path(item.inputs["input"]), Path(item.outputs[0]), plot)


VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")


def run_va_batch(args: argparse.Namespace) -> int:
    def outputs(key: str, _source: Path) -> tuple[Path, ...]:
        stem = Path(key).with_suffix("")
        plot = () if args.plot is None else (args.plot / stem.with_suffix(".png"),)
        return (args.output / stem.with_suffix(".csv"), *plot)

    items = items_from(args.video, args.output, VIDEO_SUFFIXES, outputs)
    return run_batch(args, VaAnalyzeJob(args), items, args.output)

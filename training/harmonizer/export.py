"""Export a harmonizer checkpoint to ONNX as a self-test (the shared tail: ``training.export``).

    python -m training.harmonizer.export --checkpoint RUNS/harmonizer/ff/last.pt \
        --name harmonizer --out-dir onnx_models
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from engines.harmonizer.dataset import DEFAULT_CACHE, load_raw
from engines.harmonizer.grid import GridConfig
from engines.harmonizer.runtime import HarmonizerModel
from engines.harmonizer.vocab import BAR, MASK, SPECIALS, VOCAB_SIZE, token_name
from training.export import ExportFiles, publish, trace

from .curriculum import apply_to_batch
from .data import summary
from .model import parameter_count
from .sources import SPLITS_DIR, load_training_data
from .train import evaluate, load_checkpoint

__all__ = ["export_checkpoint", "main"]

INPUT_NAMES = ("melody", "harmony", "va", "style", "condition")
_CLASSICAL_LABELS = (
    "per-beat chord reading engines.harmonizer.grid.read_beat_chords: pitch classes weighted by duration, "
    "metric position and doubling; onset bass always a chord tone; a subset of the previous chord "
    "continues it (docs/harmonizer.md, Data)")
_LEADSHEET_LABELS = (
    "the human chord symbol (OpenEWLD, POP909) sounding at each metric beat's first 16th "
    "(training/harmonizer/sources.py; docs/harmonizer.md, Lead-sheet data)")
_LABELS = {
    "classical": _CLASSICAL_LABELS,
    "leadsheets": _LEADSHEET_LABELS,
    "union": f"lead sheets: {_LEADSHEET_LABELS}; classical pieces: {_CLASSICAL_LABELS}",
}


# Each lead-sheet set as its card names it (../shared/datasets/README.md and the sets' own READMEs).
_SOURCES = {
    "classical": {
        "data": "music21 corpus: Bach chorales, Haydn/Mozart/Beethoven quartets, renaissance madrigals "
                "(training/harmonizer/data.py)",
        "licence": "music21 corpus: public-domain scores (BSD-licensed toolkit)",
        "split": "engines/harmonizer/splits/{train,val,test}.txt (seeded by piece)",
    },
    "openewld": {
        "data": "OpenEWLD: public-domain lead sheets from the Wikifonia archive, MusicXML melody + chord symbols "
                "(F. Simonetta, 2018, zenodo 4332855)",
        "licence": "repository MIT; the songs are public domain",
        "split": "openewld_{train,val,test}.txt (seeded by song, committed)",
    },
    "pop909": {
        "data": "POP909: 909 pop songs, melody + human chord annotations (Wang et al., ISMIR 2020)",
        "licence": "MIT",
        "split": "pop909_{train,val,test}.txt (seeded by song, committed)",
    },
}


def portable(value: object) -> object:
    """A run's arguments without machine paths: the user cache folder as $XDG_CACHE_HOME/scorebridge,
    the clone as '.', any other absolute path as RUNS/<its last two parts>."""
    from core.paths import cache_dir

    text = str(value)
    if not text.startswith("/"):
        return value
    cache, clone = str(cache_dir()), str(Path(__file__).resolve().parents[2])
    if text.startswith(cache):
        return "$XDG_CACHE_HOME/scorebridge" + text[len(cache):]
    if text.startswith(clone):
        return "." + text[len(clone):]
    return "RUNS/" + "/".join(Path(text).parts[-2:])


def _leadsheet_splits(sources: tuple[str, ...], splits_dir: Path) -> dict:
    """Songs per committed split list of each lead-sheet source (classical pieces: the cache's
    own seeded split, counted in the windows)."""
    from engines.harmonizer.leadsheet_corpus import split_ids

    return {split: {name: {"songs": len(split_ids(name, split, splits_dir)),
                           "list": f"engines/harmonizer/splits/{name}_{split}.txt"}
                    for name in sources
                    if name != "classical" and (Path(splits_dir) / f"{name}_{split}.txt").is_file()}
            for split in ("train", "val", "test")}


def _last_val(log_path: Path, step: int) -> dict:
    """Latest validation record at or before `step` in a training log."""
    record: dict = {}
    if log_path.exists():
        for line in log_path.read_text().splitlines():
            entry = json.loads(line)
            if entry.get("event") == "val" and entry["step"] <= step:
                record = entry
    return record


def _warm_start(args: dict) -> str | None:
    """The weights a run started from: a checkpoint (``--init``) or an exported model (``--init-onnx``)."""
    for key in ("init", "init_onnx"):
        if args.get(key) not in (None, "None"):
            return portable(args[key])
    return None


def _trainer_shares(checkpoint: dict) -> dict:
    """The batch shares the trainer logged (a trainer that samples its own batches, e.g. allmasked)."""
    shares = checkpoint.get("data", {}).get("batch_share_by_source")
    return {"batch_share_by_source": shares} if shares else {}


def _live_example(feed: dict[str, np.ndarray], live_length: int) -> dict[str, np.ndarray]:
    """The parity window cut to its first `live_length` positions, the last one masked (a live call)."""
    short = {key: (value[:, :live_length] if value.ndim > 1 and key != "condition" else value)
             for key, value in feed.items()}
    short["harmony"] = short["harmony"].copy()
    short["harmony"][:, -1] = np.where(short["harmony"][:, -1] == BAR, BAR, MASK)
    return short


def export_checkpoint(
    checkpoint_path: Path, name: str, out_dir: Path, cache: Path = DEFAULT_CACHE, live_length: int | None = None,
    splits_dir: Path = SPLITS_DIR,
) -> dict:
    """Export, verify and document one checkpoint; returns the card.

    The graph's length axis is dynamic (1..L positions); `live_length` (default L) is the window
    the live engine uses for one per-beat decision, checked against torch like the full window.
    """
    model, checkpoint = load_checkpoint(checkpoint_path)
    grid = GridConfig(**checkpoint["grid"])
    live_length = grid.length if live_length is None else live_length
    if not 1 <= live_length <= grid.length:
        raise ValueError(f"--live-length {live_length} must lie in [1, {grid.length}]")
    data_name = checkpoint.get("data", {}).get("data", "classical")
    training = load_training_data(data_name, grid, cache, splits_dir=splits_dir)
    val, styles = training.val, list(training.styles)
    files = ExportFiles.staged(out_dir, name)

    # parity example: first validation window with a seeded half of the chords revealed
    rng = np.random.default_rng(0)
    visible = np.zeros(grid.length, dtype=bool)
    visible[rng.permutation(grid.length)[: grid.length // 2]] = True
    harmony_inputs, _ = apply_to_batch(val.harmony[:1], visible, ~visible)
    feed = {
        "melody": val.melody[:1].astype(np.float32),
        "harmony": harmony_inputs.astype(np.int64),
        "va": val.va[:1].astype(np.float32),
        "style": val.style[:1].astype(np.int64),
        "condition": val.condition[:1].astype(np.float32),
    }
    live_feed = _live_example(feed, live_length)
    with torch.no_grad():
        expected = model(*(torch.from_numpy(feed[key]) for key in INPUT_NAMES)).numpy()
        live_expected = model(*(torch.from_numpy(live_feed[key]) for key in INPUT_NAMES)).numpy()
    trace(model, [torch.from_numpy(feed[key]) for key in INPUT_NAMES], files.onnx, INPUT_NAMES, ["logits"],
          {key: {0: "batch"} | ({1: "length"} if key not in ("style", "condition") else {})
           for key in (*INPUT_NAMES, "logits")})

    def verify(onnx_path: Path) -> dict[str, float]:
        """Both windows through the runtime's loader and call path, against torch."""
        runtime_model = HarmonizerModel.load(onnx_path)
        full = runtime_model.logits_batch(*(feed[key] for key in INPUT_NAMES))
        live = runtime_model.logits_batch(*(live_feed[key] for key in INPUT_NAMES))
        return {"ort_vs_torch": float(np.abs(full - expected).max()),
                "live_window": float(np.abs(live - live_expected).max())}

    val_record = _last_val(Path(checkpoint_path).parent / "log.jsonl", checkpoint["step"])
    length, roll_dim = grid.length, grid.roll_dim
    body = {
        "grid": grid.to_dict() | {"name": grid.name, "key_normalization": "C major / A minor",
                                  "beats": "quarter" if data_name == "classical" else "metric"},
        "dynamic_length": True,
        "live_length": live_length,
        "labels": _LABELS[data_name],
        "tokenizer": {
            "vocab_size": VOCAB_SIZE,
            "specials": list(SPECIALS),
            "chord_token_formula": "7 + root * 33 + quality_index",
            "tokens": [token_name(t) for t in range(VOCAB_SIZE)],
        },
        "styles": styles,
        # a user who names no style gets the lead sheets' most common one, not the chorale
        **({"default_style": "pop"} if "pop" in styles else {}),
        "length_axis": f"every window of 1..{length} positions starting on a bar; the offline window is "
        f"{length}, the live per-beat decision uses the last {live_length} (docs/harmonizer.md)",
        "inputs": [
            {
                "name": "melody",
                "dtype": "float32",
                "shape": ["batch", "length", roll_dim],
                "meaning": "binary roll: 12 pitch classes"
                + (", 88 keys" if grid.roll == "pc_fr" else "")
                + (", bar flag" if grid.bars else ""),
            },
            {
                "name": "harmony",
                "dtype": "int64",
                "shape": ["batch", "length"],
                "meaning": "chord tokens, <mask> where unknown",
            },
            {
                "name": "va",
                "dtype": "float32",
                "shape": ["batch", "length", 2],
                "meaning": "valence, arousal per step in [-1, 1]",
            },
            {"name": "style", "dtype": "int64", "shape": ["batch"], "meaning": f"style id: {styles}"},
            {
                "name": "condition",
                "dtype": "float32",
                "shape": ["batch", 16],
                "meaning": "time signature: numerator one-hot 1..14, den-4 flag, den-8 flag",
            },
        ],
        "outputs": [{"name": "logits", "dtype": "float32", "shape": ["batch", "length", VOCAB_SIZE]}],
        "model": checkpoint["model_config"] | {"parameters": parameter_count(model)},
        "training": {
            "curriculum": checkpoint["curriculum"],
            "step": checkpoint["step"],
            "total_steps": checkpoint["total_steps"],
            "finished": checkpoint["step"] >= checkpoint["total_steps"],
            "checkpoint": portable(Path(checkpoint_path).resolve()),
            "warm_start_from": _warm_start(checkpoint["args"]),
            "args": {key: portable(value) for key, value in checkpoint["args"].items()},
        },
        "data": (summary(load_raw(cache), grid) if data_name == "classical" else training.summary()
                 | _trainer_shares(checkpoint) | {"splits": _leadsheet_splits(training.sources, splits_dir)})
        | {"sources": {name: _SOURCES[name] for name in training.sources}},
        "validation": {"logged": val_record, "at_export": evaluate(model, val),
                       # without affect, as a user who sets none runs it (the labels are read from the chords)
                       "at_export_no_va": evaluate(model, val, zero_va=True)},
    }
    card = publish(files, "melody harmonization (masked chord prediction per grid step)", body,
                   feed | {"expected_logits": expected.astype(np.float32)}, {}, verify)
    parity = card["parity"]
    print(
        f"exported {out_dir / files.onnx.name} (step {checkpoint['step']}/{checkpoint['total_steps']}, "
        f"max |ORT - torch| = {parity['max_abs_difference_ort_vs_torch']:.2e}, "
        f"val {card['validation']['at_export']})",
        flush=True,
    )
    return card


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--name", default="harmonizer", help="file stem under --out-dir")
    parser.add_argument("--out-dir", type=Path, default=Path("onnx_models"))
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--live-length", type=int, help="positions of a live per-beat window (default L)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    export_checkpoint(args.checkpoint, args.name, args.out_dir, args.cache, args.live_length)
    return 0


if __name__ == "__main__":
    sys.exit(main())

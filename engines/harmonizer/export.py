"""Export a checkpoint to ONNX as a self-test: export, compare ORT with torch, reload, write the card.

    python -m engines.harmonizer.export --checkpoint /work/runs/harmonizer/ff/last.pt \
        --name harmonizer --out-dir onnx_models
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from onnx_models import sha256_of

from .curriculum import apply_to_batch
from .dataset import DEFAULT_CACHE, STYLES, load_raw, make_windows, summary
from .grid import GridConfig
from .model import parameter_count
from .train import evaluate, load_checkpoint
from .vocab import BAR, MASK, SPECIALS, VOCAB_SIZE, token_name

__all__ = ["export_checkpoint", "main"]

INPUT_NAMES = ("melody", "harmony", "va", "style", "condition")
OPSET = 17
PARITY_ATOL = 1e-4


def _last_val(log_path: Path, step: int) -> dict:
    """Latest validation record at or before `step` in a training log."""
    record: dict = {}
    if log_path.exists():
        for line in log_path.read_text().splitlines():
            entry = json.loads(line)
            if entry.get("event") == "val" and entry["step"] <= step:
                record = entry
    return record


def _live_example(feed: dict[str, np.ndarray], live_length: int) -> dict[str, np.ndarray]:
    """The parity window cut to its first `live_length` positions, the last one masked (a live call)."""
    short = {key: (value[:, :live_length] if value.ndim > 1 and key != "condition" else value)
             for key, value in feed.items()}
    short["harmony"] = short["harmony"].copy()
    short["harmony"][:, -1] = np.where(short["harmony"][:, -1] == BAR, BAR, MASK)
    return short


def export_checkpoint(
    checkpoint_path: Path, name: str, out_dir: Path, cache: Path = DEFAULT_CACHE, live_length: int | None = None
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
    raw = load_raw(cache)
    val = make_windows(raw, grid, "val")
    out_dir.mkdir(parents=True, exist_ok=True)
    # everything is written and checked in a staging folder, then moved into place, so a
    # reader never sees a half-written model or a card that does not match its file
    staging = out_dir / f".{name}.staging"
    staging.mkdir(exist_ok=True)
    onnx_path, card_path, parity_path = (
        staging / f"{name}.onnx",
        staging / f"{name}.card.json",
        staging / f"{name}.parity.npz",
    )

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
    example = tuple(torch.from_numpy(feed[key]) for key in INPUT_NAMES)
    with torch.no_grad(), warnings.catch_warnings():
        # the TorchScript exporter is chosen on purpose (plain ops, checked below); its own
        # deprecation notices and tracer notes are not problems of this model
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        expected = model(*example).numpy()
        torch.onnx.export(
            model,
            example,
            str(onnx_path),
            input_names=list(INPUT_NAMES),
            output_names=["logits"],
            opset_version=OPSET,
            dynamo=False,
            dynamic_axes={key: {0: "batch"} | ({1: "length"} if key not in ("style", "condition") else {})
                          for key in (*INPUT_NAMES, "logits")},
        )
        live_feed = _live_example(feed, live_length)
        live_expected = model(*(torch.from_numpy(live_feed[key]) for key in INPUT_NAMES)).numpy()
    onnx.checker.check_model(onnx.load(str(onnx_path)))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    (got,) = session.run(["logits"], feed)
    (live_got,) = session.run(["logits"], live_feed)
    max_difference = float(np.abs(got - expected).max())
    live_difference = float(np.abs(live_got - live_expected).max())
    if not np.allclose(got, expected, atol=PARITY_ATOL, rtol=1e-4) or live_difference > PARITY_ATOL:
        raise RuntimeError(f"{onnx_path}: ORT differs from torch by {max(max_difference, live_difference):.2e} "
                           f"(> {PARITY_ATOL}) at length {grid.length} or {live_length}")
    np.savez_compressed(parity_path, **feed, expected_logits=expected.astype(np.float32))

    log_path = Path(checkpoint_path).parent / "log.jsonl"
    val_record = _last_val(log_path, checkpoint["step"])
    fresh_val = evaluate(model, val)
    length, roll_dim = grid.length, grid.roll_dim
    card = {
        "name": name,
        "task": "melody harmonization (masked chord prediction per grid step)",
        "created_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "onnx_file": onnx_path.name,
        "sha256": sha256_of(onnx_path),
        "opset": OPSET,
        "grid": grid.to_dict() | {"name": grid.name, "key_normalization": "C major / A minor"},
        "dynamic_length": True,
        "live_length": live_length,
        "labels": "per-beat chord reading engines.harmonizer.grid.read_beat_chords: pitch classes "
        "weighted by duration, metric position and doubling; onset bass always a chord tone; a "
        "subset of the previous chord continues it (docs/harmonizer.md, Data)",
        "tokenizer": {
            "vocab_size": VOCAB_SIZE,
            "specials": list(SPECIALS),
            "chord_token_formula": "7 + root * 33 + quality_index",
            "tokens": [token_name(t) for t in range(VOCAB_SIZE)],
        },
        "styles": list(STYLES),
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
            {"name": "style", "dtype": "int64", "shape": ["batch"], "meaning": f"style id: {list(STYLES)}"},
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
            "checkpoint": str(checkpoint_path),
            "warm_start_from": checkpoint["args"].get("init") if checkpoint["args"].get("init") != "None" else None,
            "args": checkpoint["args"],
        },
        "data": summary(raw, grid),
        "validation": {"logged": val_record, "at_export": fresh_val},
        "parity": {
            "file": parity_path.name,
            "sha256": sha256_of(parity_path),
            "max_abs_difference_ort_vs_torch": max_difference,
            "max_abs_difference_live_window": live_difference,
            "atol": PARITY_ATOL,
        },
        "versions": {"torch": torch.__version__, "onnxruntime": ort.__version__, "onnx": onnx.__version__},
    }
    card_path.write_text(json.dumps(card, indent=1) + "\n")
    # reload through the runtime path as the final self-test
    from .runtime import HarmonizerModel

    runtime_model = HarmonizerModel.load(onnx_path)
    reloaded = runtime_model.logits(
        feed["melody"][0], feed["harmony"][0], feed["va"][0], int(feed["style"][0]), feed["condition"][0]
    )
    if not np.allclose(reloaded, expected[0], atol=PARITY_ATOL, rtol=1e-4):
        raise RuntimeError(f"{onnx_path}: runtime reload differs from torch")
    for path in (onnx_path, parity_path, card_path):
        path.replace(out_dir / path.name)
    staging.rmdir()
    onnx_path = out_dir / onnx_path.name
    print(
        f"exported {onnx_path} (step {checkpoint['step']}/{checkpoint['total_steps']}, "
        f"max |ORT - torch| = {max_difference:.2e}, val {fresh_val})",
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

"""Export a continuation checkpoint to ONNX with an explicit key/value cache, as a self-test.

    python -m engines.continuation.export --checkpoint /work/runs/continuation/smart/best.pt

Writes onnx_models/continuation.onnx, continuation.card.json and continuation.parity.npz:
export, check the graph, compare ONNX Runtime with torch on a prompt pass and on cached
single-token steps, write the card, reload through ``runtime.ContinuationModel`` and compare again.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from onnx_models import sha256_of

from .corpus import DEFAULT_CACHE, STYLES, load_corpus, summary
from .model import ContinuationModel, parameter_counts
from .tokens import MAX_SHIFT_STEPS, NUM_VELOCITIES, STEPS_PER_QUARTER, VOCAB_SIZE, token_name
from .train import evaluate, load_checkpoint, validation_windows

__all__ = ["INPUT_NAMES", "OUTPUT_NAMES", "export_checkpoint", "main"]

INPUT_NAMES = ("tokens", "va", "style", "positions", "past")
OUTPUT_NAMES = ("logits", "present")
OPSET = 17
PARITY_ATOL = 1e-4


class _Exported(torch.nn.Module):
    """The model with the cache as a required input (an empty one for the prompt pass)."""

    def __init__(self, model: ContinuationModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens, va, style, positions, past):
        return self.model(tokens, va, style, positions, past)


def _feeds(
    model: ContinuationModel, prompt: np.ndarray, va: np.ndarray, style: int, steps: int
) -> list[dict]:
    """A prompt pass on an empty cache, then ``steps`` single-token passes (teacher-forced)."""
    config = model.config
    head_dim = config.d_model // config.heads
    past = np.zeros((config.layers, 2, 1, config.heads, 0, head_dim), dtype=np.float32)
    split = len(prompt) - steps
    feeds = [
        {
            "tokens": prompt[None, :split],
            "va": va[None, :split],
            "style": np.array([style]),
            "positions": np.arange(split),
            "past": past,
        }
    ]
    for index in range(split, len(prompt)):
        feeds.append(
            {
                "tokens": prompt[None, index : index + 1],
                "va": va[None, index : index + 1],
                "style": np.array([style]),
                "positions": np.arange(index, index + 1),
                "past": None,
            }
        )
    return feeds


def _run_torch(model: ContinuationModel, feeds: list[dict]) -> list[np.ndarray]:
    outputs, past = [], None
    with torch.no_grad():
        for feed in feeds:
            tensors = {k: torch.from_numpy(v) for k, v in feed.items() if k != "past"}
            past_tensor = torch.from_numpy(feed["past"]) if feed["past"] is not None else past
            logits, past = model(
                tensors["tokens"], tensors["va"], tensors["style"], tensors["positions"], past_tensor
            )
            outputs.append(logits.numpy())
    return outputs


def _run_ort(session: ort.InferenceSession, feeds: list[dict]) -> list[np.ndarray]:
    outputs, past = [], None
    for feed in feeds:
        feed = dict(feed, past=feed["past"] if feed["past"] is not None else past)
        logits, past = session.run(list(OUTPUT_NAMES), feed)
        outputs.append(logits)
    return outputs


def _write_parity(model: ContinuationModel, feeds: list[dict], path: Path) -> None:
    """One cached call (8 new tokens on the prompt's cache) in the shared card format: an array
    per graph input and ``expected_<output>`` per output (``onnx_models.check_parity``)."""
    prompt = feeds[0]
    tokens = np.concatenate([f["tokens"] for f in feeds[1:]], axis=1)
    va = np.concatenate([f["va"] for f in feeds[1:]], axis=1)
    positions = np.concatenate([f["positions"] for f in feeds[1:]])
    with torch.no_grad():
        _, past = model(
            *(torch.from_numpy(prompt[k]) for k in INPUT_NAMES[:4]), torch.from_numpy(prompt["past"])
        )
        logits, present = model(
            torch.from_numpy(tokens),
            torch.from_numpy(va),
            torch.from_numpy(prompt["style"]),
            torch.from_numpy(positions),
            past,
        )
    np.savez_compressed(
        path,
        tokens=tokens,
        va=va,
        style=prompt["style"],
        positions=positions,
        past=past.numpy(),
        expected_logits=logits.numpy(),
        expected_present=present.numpy(),
    )


def _training_record(checkpoint_path: Path, step: int) -> dict:
    """Step, planned steps and arguments from the run's log.jsonl (first start event)."""
    record: dict = {"step": step, "checkpoint": str(checkpoint_path)}
    log_path = checkpoint_path.parent / "log.jsonl"
    if log_path.exists():
        with log_path.open() as handle:
            start = json.loads(handle.readline())
        total = int(start["args"]["steps"])
        record |= {
            "total_steps": total,
            "finished": step >= total,
            "args": start["args"],
            "log": str(log_path),
        }
    return record


def export_checkpoint(checkpoint_path: Path, name: str, out_dir: Path, cache: Path = DEFAULT_CACHE) -> dict:
    """Export, verify and document one checkpoint; returns the card."""
    model, checkpoint = load_checkpoint(checkpoint_path)
    data = load_corpus(cache)
    val = validation_windows(data, "val", 256)
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path, card_path, parity_path = (
        out_dir / f"{name}.onnx",
        out_dir / f"{name}.card.json",
        out_dir / f"{name}.parity.npz",
    )
    prompt, prompt_va, style = val[0][0][:48].astype(np.int64), val[1][0][:48], int(val[2][0])
    feeds = _feeds(model, prompt, prompt_va, style, steps=8)
    example = feeds[0] | {"past": np.zeros_like(feeds[0]["past"][:, :, :, :, :0]).repeat(3, axis=4) + 0.1}
    with torch.no_grad():
        torch.onnx.export(
            _Exported(model).eval(),
            tuple(torch.from_numpy(example[k]) for k in INPUT_NAMES),
            str(onnx_path),
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            opset_version=OPSET,
            dynamo=False,
            dynamic_axes={
                "tokens": {0: "batch", 1: "length"},
                "va": {0: "batch", 1: "length"},
                "style": {0: "batch"},
                "positions": {0: "length"},
                "past": {2: "batch", 4: "past_length"},
                "logits": {0: "batch", 1: "length"},
                "present": {2: "batch", 4: "total_length"},
            },
        )
    onnx.checker.check_model(onnx.load(str(onnx_path)))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    expected, got = _run_torch(model, feeds), _run_ort(session, feeds)
    max_difference = max(float(np.abs(a - b).max()) for a, b in zip(expected, got))
    if not all(np.allclose(a, b, atol=PARITY_ATOL, rtol=1e-4) for a, b in zip(expected, got)):
        raise RuntimeError(f"{onnx_path}: ORT differs from torch by {max_difference:.2e} (> {PARITY_ATOL})")
    _write_parity(model, feeds, parity_path)
    config = model.config
    head_dim = config.d_model // config.heads
    card = {
        "name": name,
        "task": "two-hand piano continuation (next-token prediction, Smart Embedding)",
        "created_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "model_file": onnx_path.name,
        "sha256": sha256_of(onnx_path),
        "opset": OPSET,
        "tokenizer": {
            "vocab_size": VOCAB_SIZE,
            "steps_per_quarter": STEPS_PER_QUARTER,
            "max_shift_steps": MAX_SHIFT_STEPS,
            "velocity_bins": NUM_VELOCITIES,
            "tokens": [token_name(t) for t in range(VOCAB_SIZE)],
        },
        "styles": list(STYLES),
        "inputs": [
            {"name": "tokens", "dtype": "int64", "shape": ["batch", "length"], "meaning": "new tokens"},
            {
                "name": "va",
                "dtype": "float32",
                "shape": ["batch", "length", 2],
                "meaning": "valence, arousal per token in [-1, 1]",
            },
            {"name": "style", "dtype": "int64", "shape": ["batch"], "meaning": f"style id: {list(STYLES)}"},
            {
                "name": "positions",
                "dtype": "int64",
                "shape": ["length"],
                "meaning": "absolute positions past_length..",
            },
            {
                "name": "past",
                "dtype": "float32",
                "shape": [config.layers, 2, "batch", config.heads, "past_length", head_dim],
                "meaning": "keys/values of earlier tokens (past_length 0 for the prompt)",
            },
        ],
        "outputs": [
            {"name": "logits", "dtype": "float32", "shape": ["batch", "length", VOCAB_SIZE]},
            {
                "name": "present",
                "dtype": "float32",
                "shape": [config.layers, 2, "batch", config.heads, "total_length", head_dim],
            },
        ],
        "model": config.to_dict() | {"parameters": parameter_counts(model)},
        "training": _training_record(Path(checkpoint_path), checkpoint["step"]),
        "data": {"source": "music21 bundled corpus, see docs/continuation.md", "splits": summary(data)},
        "splits": {s: f"engines/continuation/splits/{s}.txt" for s in ("train", "val", "test")},
        "metrics": {"val_loss_logged": checkpoint["val_loss"], "val_loss_at_export": evaluate(model, val)},
        "parity": {
            "file": parity_path.name,
            "sha256": sha256_of(parity_path),
            "atol": PARITY_ATOL,
            "max_abs_difference_ort_vs_torch": max_difference,
        },
        "versions": {"torch": torch.__version__, "onnxruntime": ort.__version__, "onnx": onnx.__version__},
    }
    card_path.write_text(json.dumps(card, indent=1) + "\n")
    from .runtime import ContinuationModel as RuntimeModel

    runtime = RuntimeModel.load(onnx_path)
    reloaded = runtime.parity_check(parity_path)
    print(
        f"exported {onnx_path} (step {checkpoint['step']}, max |ORT - torch| = {max_difference:.2e}, "
        f"reload {reloaded:.2e}, val {card['metrics']['val_loss_at_export']:.4f})",
        flush=True,
    )
    return card


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--name", default="continuation", help="file stem under --out-dir")
    parser.add_argument("--out-dir", type=Path, default=Path("onnx_models"))
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    export_checkpoint(args.checkpoint, args.name, args.out_dir, args.cache)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Export a continuation checkpoint to ONNX with an explicit key/value cache, as a self-test.

    python -m training.continuation.export --checkpoint RUNS/continuation/smart/best.pt

Writes onnx_models/continuation.onnx, continuation.card.json and continuation.parity.npz through
the shared tail (``training.export``): export the incremental graph (fixed-size key/value cache
in, new keys/values out), check that it computes what the training forward computes, compare
ONNX Runtime (``runtime.Decoder``) with torch on a prompt pass plus single-token steps, with and
without the ring buffer wrapping, and write the card and the parity example.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from engines.continuation.corpus import CORPORA, DEFAULT_CACHE, STYLES, load_corpus
from engines.continuation.runtime import DEFAULT_SLOTS, EMPTY_SLOT, input_names
from engines.continuation.runtime import ContinuationModel as RuntimeModel
from engines.continuation.tokens import (
    MAX_SHIFT_STEPS,
    NUM_VELOCITIES,
    STEPS_PER_QUARTER,
    VOCAB_SIZE,
    token_name,
)
from training.export import ExportFiles, publish, trace

from .data import summary
from .model import ContinuationModel, parameter_counts
from .train import evaluate, load_checkpoint, validation_windows

__all__ = ["OUTPUT_NAMES", "export_checkpoint", "main"]

OUTPUT_NAMES = ("logits", "new_kv")
EXPORT_SLOTS = 8  # cache size of the traced example; the graph accepts any number of slots


class _Exported(torch.nn.Module):
    """The model's incremental (fixed-size cache) forward as the graph."""

    def __init__(self, model: ContinuationModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens, va, style, positions, past_bias, *past):
        return self.model.incremental(tokens, va, style, positions, past_bias, *past)


def _incremental_torch(
    model: ContinuationModel, prompt: np.ndarray, va: np.ndarray, style: int, split: int, slots: int
) -> tuple[np.ndarray, dict]:
    """Torch reference of what the runtime does: a prompt pass of ``split`` tokens into a ring of
    ``slots`` slots, then one token at a time. Returns the logits of every token and the feed
    (inputs + expected outputs) of the last step, for the parity file."""
    config = model.config
    head_dim = config.d_model // config.heads
    cache = [torch.zeros(1, config.heads, slots, head_dim) for _ in range(2 * config.layers)]
    bias = torch.full((slots,), EMPTY_SLOT)
    style_t = torch.tensor([style])
    outputs, feed = [], {}
    chunks = [(0, split)] + [(i, i + 1) for i in range(split, len(prompt))]
    with torch.no_grad():
        for begin, end in chunks:
            tokens = torch.from_numpy(prompt[None, begin:end])
            va_t = torch.from_numpy(va[None, begin:end])
            positions = torch.arange(begin, end)
            feed = {
                "tokens": tokens.numpy(),
                "va": va_t.numpy(),
                "style": style_t.numpy(),
                "positions": positions.numpy(),
                "past_bias": bias.numpy().copy(),
            } | {name: c.numpy().copy() for name, c in zip(input_names(config.layers)[5:], cache)}
            logits, new_kv = model.incremental(tokens, va_t, style_t, positions, bias, *cache)
            feed |= {"expected_logits": logits.numpy(), "expected_new_kv": new_kv.numpy()}
            outputs.append(logits[0].numpy())
            heads = config.heads
            for column, position in enumerate(positions.tolist()[-slots:]):
                column += max(0, len(positions) - slots)
                slot = position % slots
                for row, array in enumerate(cache):
                    array[0, :, slot] = new_kv[0, row * heads : (row + 1) * heads, column]
                bias[slot] = 0.0
    return np.concatenate(outputs), feed


def _decoder_logits(runtime_model, prompt: np.ndarray, va: np.ndarray, style: int, split: int, slots: int):
    decoder = runtime_model.decoder(style, slots)
    outputs = [decoder.prefill(prompt[:split], va[:split], keep_all=True)]
    for index in range(split, len(prompt)):
        outputs.append(decoder.step(int(prompt[index]), va[index])[None].copy())
    return np.concatenate(outputs)


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
        init = start["args"].get("init")
        if init not in (None, "None"):  # a fine-tune: say what it started from
            base = torch.load(init, map_location="cpu", weights_only=False)
            record["warm_start_from"] = _training_record(Path(init), base["step"]) | {
                "val_loss": base["val_loss"]
            }
    return record


# what the card says each training corpus is (docs/continuation.md has the details)
SOURCES = {
    "music21": "music21 bundled corpus (chorales, quartets, madrigals, 19 keyboard scores), see docs/continuation.md",
    "twohands": "two-hand corpus: POP909 (909 pop songs arranged for piano, MIT licence; melody as the upper "
                "hand, the accompaniment split by engines.continuation.pieces.assign_hands) and music21's "
                "keyboard scores (BSD/public domain), split by song; see docs/continuation.md",
}


def export_checkpoint(checkpoint_path: Path, name: str, out_dir: Path, cache: Path = DEFAULT_CACHE,
                      corpus: str = "music21", val_windows: int = 0) -> dict:
    """Export, verify and document one checkpoint; returns the card."""
    model, checkpoint = load_checkpoint(checkpoint_path)
    data = load_corpus(cache, corpus)
    lead = int(checkpoint.get("valence_lead", 0))
    if lead != data.valence_lead:
        raise ValueError(
            f"{checkpoint_path} was trained on labels with valence_lead {lead}, but {cache} has "
            f"{data.valence_lead}; pass the cache it was trained on (--cache)"
        )
    val = validation_windows(data, "val", 256, val_windows)
    files = ExportFiles.staged(out_dir, name)
    config = model.config
    head_dim = config.d_model // config.heads
    names = input_names(config.layers)
    prompt, prompt_va, style = val[0][0][:48].astype(np.int64), val[1][0][:48], int(val[2][0])
    example = [
        torch.from_numpy(prompt[None, :3]),
        torch.from_numpy(prompt_va[None, :3]),
        torch.tensor([style]),
        torch.arange(3),
        torch.zeros(EXPORT_SLOTS),
    ] + [torch.full((1, config.heads, EXPORT_SLOTS, head_dim), 0.1) for _ in range(2 * config.layers)]
    dynamic = {
        "tokens": {0: "batch", 1: "length"},
        "va": {0: "batch", 1: "length"},
        "style": {0: "batch"},
        "positions": {0: "length"},
        "past_bias": {0: "slots"},
        "logits": {0: "batch", 1: "length"},
        "new_kv": {0: "batch", 2: "length"},
    } | {cache_name: {0: "batch", 2: "slots"} for cache_name in names[5:]}
    trace(_Exported(model).eval(), example, files.onnx, names, OUTPUT_NAMES, dynamic)
    with torch.no_grad():
        full = model(
            torch.from_numpy(prompt[None]),
            torch.from_numpy(prompt_va[None]),
            torch.tensor([style]),
            torch.arange(len(prompt)),
        )[0][0].numpy()
    # the incremental graph must compute what the trained (full-sequence) forward computes
    ring, _ = _incremental_torch(model, prompt, prompt_va, style, split=40, slots=64)
    graph_difference = float(np.abs(ring - full).max())
    sliding, parity_feed = _incremental_torch(model, prompt, prompt_va, style, split=24, slots=16)

    def verify(onnx_path: Path) -> dict[str, float]:
        """The runtime's decoder (prompt pass, then token steps; ring buffer full and wrapping)."""
        runtime = RuntimeModel.load(onnx_path)
        return {
            "ort_vs_torch_prompt_and_steps": float(
                np.abs(_decoder_logits(runtime, prompt, prompt_va, style, 40, 64) - ring).max()
            ),
            "ort_vs_torch_sliding_16_slots": float(
                np.abs(_decoder_logits(runtime, prompt, prompt_va, style, 24, 16) - sliding).max()
            ),
        }

    body = {
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
            {"name": "positions", "dtype": "int64", "shape": ["length"], "meaning": "absolute positions"},
            {
                "name": "past_bias",
                "dtype": "float32",
                "shape": ["slots"],
                "meaning": f"0 for a filled cache slot, {EMPTY_SLOT:g} for an empty one",
            },
        ]
        + [
            {
                "name": cache_name,
                "dtype": "float32",
                "shape": ["batch", config.heads, "slots", head_dim],
                "meaning": "cached keys/values of earlier tokens (ring buffer, slot = position % slots)",
            }
            for cache_name in names[5:]
        ],
        "outputs": [
            {"name": "logits", "dtype": "float32", "shape": ["batch", "length", VOCAB_SIZE]},
            {
                "name": "new_kv",
                "dtype": "float32",
                "shape": ["batch", 2 * config.layers * config.heads, "length", head_dim],
                "meaning": "keys/values of the new tokens in (layer, key|value, head) order, for the cache",
            },
        ],
        "runtime": {"slots": DEFAULT_SLOTS, "context_tokens": DEFAULT_SLOTS + 1},
        "labels": {
            "window_quarters": 8,
            "valence_lead_quarters": lead,
            "meaning": "engines.continuation.affect.valence_arousal: per-token valence/arousal in training; "
            "with a lead the valence describes the coming music",
        },
        "model": config.to_dict() | {"parameters": parameter_counts(model)},
        "training": _training_record(Path(checkpoint_path), checkpoint["step"]),
        "data": {"corpus": corpus, "source": SOURCES[corpus], "splits": summary(data)},
        "splits": {s: f"engines/continuation/splits/{CORPORA[corpus][1]}{s}.txt" for s in ("train", "val", "test")},
        "metrics": {"val_loss_logged": checkpoint["val_loss"], "val_loss_at_export": evaluate(model, val),
                    "val_windows": len(val[0])},
    }
    task = f"two-hand piano continuation (next-token prediction, {config.embedding} embedding)"
    card = publish(files, task, body, parity_feed,
                   {"max_abs_difference_incremental_vs_full_torch": graph_difference}, verify)
    print(
        f"exported {out_dir / files.onnx.name} (step {checkpoint['step']}, incremental vs full "
        f"{graph_difference:.2e}, ORT vs torch {card['parity']}, "
        f"val {card['metrics']['val_loss_at_export']:.4f})",
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
    parser.add_argument("--corpus", choices=tuple(CORPORA), default="music21", help="the token cache it was trained on")
    parser.add_argument("--val-windows", type=int, default=0, metavar="N",
                        help="the validation loss on the card over train's fixed subset of N windows (0 = all)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    export_checkpoint(args.checkpoint, args.name, args.out_dir, args.cache, args.corpus, args.val_windows)
    return 0


if __name__ == "__main__":
    sys.exit(main())

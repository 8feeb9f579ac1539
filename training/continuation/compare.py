"""Smart vs plain embedding: parameters and held-out losses of two checkpoints (torch).

    python -m training.continuation.compare --smart RUNS/continuation/smart/best.pt \\
        --plain RUNS/continuation/plain/best.pt

Prints JSON: per model the training step, parameter counts and mean next-token loss (nats) on
the validation and test splits, then the relative changes smart vs plain (the paper: -48.3 %
note-embedding parameters, -9.47 % validation loss).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from engines.continuation.corpus import CORPORA, DEFAULT_CACHE, load_corpus

from .model import parameter_counts
from .train import evaluate, load_checkpoint, validation_windows

__all__ = ["compare", "main"]


def compare(smart: Path, plain: Path, cache: Path = DEFAULT_CACHE, length: int = 256,
            corpus: str = "music21") -> dict:
    """Both checkpoints on the same validation and test windows of ``corpus``."""
    data = load_corpus(cache, corpus)
    windows = {split: validation_windows(data, split, length) for split in ("val", "test")}
    result: dict = {}
    for name, path in (("smart", smart), ("plain", plain)):
        model, state = load_checkpoint(path)
        result[name] = {
            "checkpoint": str(path),
            "step": state["step"],
            "parameters": parameter_counts(model),
            **{f"{split}_loss": round(evaluate(model, w), 4) for split, w in windows.items()},
        }

    def change(key: str, inner: str | None = None) -> float:
        a = result["smart"][key] if inner is None else result["smart"][key][inner]
        b = result["plain"][key] if inner is None else result["plain"][key][inner]
        return round(100.0 * (a - b) / b, 2)

    result["smart_vs_plain_percent"] = {
        "note_embedding_parameters": change("parameters", "note_embedding"),
        "embedding_parameters": change("parameters", "embedding"),
        "total_parameters": change("parameters", "total"),
        "val_loss": change("val_loss"),
        "test_loss": change("test_loss"),
    }
    result["paper_percent"] = {"note_embedding_parameters": -48.3, "val_loss": -9.47}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smart", type=Path, required=True)
    parser.add_argument("--plain", type=Path, required=True)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--corpus", choices=tuple(CORPORA), default="music21", help="token cache to evaluate on")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(json.dumps(compare(args.smart, args.plain, args.cache, corpus=args.corpus), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

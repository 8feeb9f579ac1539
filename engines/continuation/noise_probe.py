"""Noise-injection probe (reference section 6) for continuation checkpoints.

    python -m engines.continuation.noise_probe --model smart=/work/runs/continuation/smart/best.pt \\
        --model plain=/work/runs/continuation/plain/best.pt --out /work/runs/continuation/noise

For held-out contexts (test split, ``--context`` tokens each), the tokens from ``--start`` on are
replaced by ``tk`` uniformly random non-special tokens (tk in ``--lengths``), and the per-token
loss difference diff[i] = loss_noisy[i] - loss_clean[i] is averaged over contexts. The baseline
is the mean diff before the injection (0 for a causal model). Regions of the mean curve:
Peak from the injection until 5 consecutive diffs are within ``--tolerance`` nats of the
baseline; Assimilation from there to the end of the injected span + 4 (empty if Peak lasts
longer); Recovery after both. Writes noise_probe.csv (one row per model and length with the
three means) and noise_probe.png (the curves) and prints the CSV.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from .corpus import DEFAULT_CACHE, load_corpus
from .tokens import NOTE_BASE, VOCAB_SIZE

__all__ = ["RECOVERY_RUN", "loss_curves", "main", "regions"]

RECOVERY_RUN = 5
ASSIMILATION_EXTRA = 4


def regions(diff: np.ndarray, start: int, length: int, tolerance: float) -> dict[str, float | int]:
    """Peak / Assimilation / Recovery means of one mean diff curve (index = token position)."""
    if not 0 < start < len(diff) or length < 1:
        raise ValueError(f"injection start {start} / length {length} do not fit a curve of {len(diff)}")
    baseline = float(diff[:start].mean())
    near = np.abs(diff - baseline) <= tolerance
    peak_end = len(diff)
    for index in range(start, len(diff) - RECOVERY_RUN + 1):
        if near[index : index + RECOVERY_RUN].all():
            peak_end = index
            break
    assimilation_end = max(peak_end, min(len(diff), start + length + ASSIMILATION_EXTRA))

    def mean(part: np.ndarray) -> float:
        return float(part.mean()) if len(part) else float("nan")

    return {
        "baseline": baseline,
        "peak_end": peak_end,
        "peak": mean(diff[start:peak_end]),
        "assimilation": mean(diff[peak_end:assimilation_end]),
        "recovery": mean(diff[assimilation_end:]),
    }


def loss_curves(checkpoint: Path, contexts: np.ndarray, va: np.ndarray, styles: np.ndarray) -> np.ndarray:
    """Per-token next-token loss [N, T-1] (nats) of a torch checkpoint."""
    import torch
    import torch.nn.functional as F

    from .train import load_checkpoint

    model, _ = load_checkpoint(checkpoint)
    rows = []
    with torch.no_grad():
        for first in range(0, len(contexts), 16):
            tokens = torch.from_numpy(contexts[first : first + 16])
            length = tokens.shape[1] - 1
            logits, _ = model(
                tokens[:, :-1],
                torch.from_numpy(va[first : first + 16, :-1]),
                torch.from_numpy(styles[first : first + 16]),
                torch.arange(length),
            )
            loss = F.cross_entropy(logits.transpose(1, 2), tokens[:, 1:], reduction="none")
            rows.append(loss.numpy())
    return np.concatenate(rows)


def _contexts(cache: Path, split: str, context: int, count: int) -> tuple[np.ndarray, ...]:
    data = load_corpus(cache)
    tokens, va, styles = [], [], []
    for piece in data.piece_indices(split):
        begin, end = int(data.offsets[piece]), int(data.offsets[piece + 1])
        for first in range(begin, end - context, context):
            tokens.append(data.tokens[first : first + context])
            va.append(data.va[first : first + context])
            styles.append(int(data.styles[piece]))
    if not tokens:
        raise ValueError(f"no {split} piece has {context} tokens")
    keep = np.random.default_rng(0).permutation(len(tokens))[:count]
    return np.stack(tokens)[keep], np.stack(va)[keep], np.array(styles, dtype=np.int64)[keep]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", action="append", required=True, help="NAME=checkpoint.pt (repeatable)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--split", default="test")
    parser.add_argument("--context", type=int, default=400)
    parser.add_argument("--start", type=int, default=100)
    parser.add_argument("--lengths", default="10,25,50,100")
    parser.add_argument("--contexts", type=int, default=64)
    parser.add_argument("--tolerance", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    lengths = [int(v) for v in args.lengths.split(",")]
    clean, va, styles = _contexts(args.cache, args.split, args.context, args.contexts)
    rng = np.random.default_rng(args.seed)
    noisy = {}
    for length in lengths:
        if args.start + length >= args.context:
            parser.error(f"--start {args.start} + length {length} must stay below --context {args.context}")
        tokens = clean.copy()
        tokens[:, args.start : args.start + length] = rng.integers(
            NOTE_BASE, VOCAB_SIZE, (len(clean), length)
        )
        noisy[length] = tokens
    args.out.mkdir(parents=True, exist_ok=True)
    rows, curves = [], {}
    for spec in args.model:
        name, _, path = spec.partition("=")
        base = loss_curves(Path(path), clean, va, styles)
        for length in lengths:
            # diff at target position i+1 (prediction made after token i); injection starts at target start
            diff = (loss_curves(Path(path), noisy[length], va, styles) - base).mean(0)
            curve = np.concatenate([[0.0], diff])
            curves[(name, length)] = curve
            stats = regions(curve, args.start, length, args.tolerance)
            rows.append({"model": name, "noise_tokens": length, "contexts": len(clean)} | stats)
    with (args.out / "noise_probe.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    _plot(curves, args.start, args.out / "noise_probe.png")
    print((args.out / "noise_probe.csv").read_text(), end="")
    return 0


def _plot(curves: dict[tuple[str, int], np.ndarray], start: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({name for name, _ in curves})
    figure, axes = plt.subplots(len(names), 1, figsize=(9, 3 * len(names)), sharex=True, squeeze=False)
    for axis, name in zip(axes[:, 0], names, strict=True):
        for (model, length), curve in sorted(curves.items()):
            if model == name:
                axis.plot(curve, label=f"{length} noise tokens", linewidth=0.8)
        axis.axvline(start, color="grey", linestyle=":")
        axis.set_title(name)
        axis.set_ylabel("loss_noisy - loss_clean (nats)")
        axis.legend(fontsize=7)
    axes[-1, 0].set_xlabel("token position")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    sys.exit(main())

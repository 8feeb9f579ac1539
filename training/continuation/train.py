"""Train the continuation model (torch, CPU, one thread by default).

    python -m training.continuation.train --embedding smart --steps 900 --out RUNS/continuation/smart

Re-running the same command resumes from OUT/last.pt. Logs JSON lines to OUT/log.jsonl; the
best validation checkpoint is OUT/best.pt. The batch sequence depends only on --seed, so
smart and plain runs with the same seed see the same data in the same order.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engines.continuation.corpus import CORPORA, DEFAULT_CACHE, Corpus, load_corpus
from engines.continuation.modal import modal_swap
from engines.continuation.tokens import HIGH_PITCH, LOW_PITCH, NOTE_BASE, NUM_PITCHES, PAD, VELOCITY_BASE

from .model import EMBEDDINGS, ContinuationModel, ModelConfig, parameter_counts

__all__ = [
    "RunLog",
    "add_fine_tune_arguments",
    "apply_step",
    "evaluate",
    "load_checkpoint",
    "main",
    "resume",
    "sample_batch",
    "save_checkpoint",
    "transpose",
    "validation_windows",
]

SWAP_FOCUS = 48  # targets after a modal turn that carry the swap weight
SWAP_WEIGHT = 2.0
VAL_SUBSET_SEED = 20261207  # fixed: the --val-windows subset must not depend on a run's --seed


def transpose(tokens: np.ndarray, semitones: int) -> np.ndarray | None:
    """Tokens with every note moved by ``semitones``, or None if a note leaves the piano."""
    notes = (tokens >= NOTE_BASE) & (tokens < VELOCITY_BASE)
    if not notes.any() or semitones == 0:
        return tokens
    pitch = (tokens[notes] - NOTE_BASE) % NUM_PITCHES + LOW_PITCH + semitones
    if pitch.min() < LOW_PITCH or pitch.max() > HIGH_PITCH:
        return None
    moved = tokens.copy()
    moved[notes] += semitones
    return moved


def sample_batch(
    data: Corpus,
    pieces: np.ndarray,
    rng: np.random.Generator,
    batch: int,
    length: int,
    max_transpose: int = 6,
    swap_rate: float = 0.0,
    focus: int = SWAP_FOCUS,
    swap_weight: float = SWAP_WEIGHT,
    swap_hold: float = 0.5,
) -> tuple[np.ndarray, ...]:
    """tokens, va, style and per-target loss weights of random windows of length+1 tokens
    (pieces drawn by length), randomly transposed.

    With ``swap_rate`` > 0, that share of the rows goes to the parallel mode from a random token
    on (``modal.modal_swap``; a ``swap_hold`` share of them hold the new valence over the whole
    window), and the first ``focus`` targets after the turn weigh ``swap_weight``. Otherwise every weight is 1 and
    the random draws are those of plain training, so a seed gives the same batches as before.
    """
    lengths = (data.offsets[pieces + 1] - data.offsets[pieces]).astype(np.float64)
    chosen = rng.choice(pieces, size=batch, p=lengths / lengths.sum())
    tokens = np.full((batch, length + 1), PAD, dtype=np.int64)
    va = np.zeros((batch, length + 1, 2), dtype=np.float32)
    weights = np.ones((batch, length), dtype=np.float32)
    for row, piece in enumerate(chosen):
        start, end = int(data.offsets[piece]), int(data.offsets[piece + 1])
        begin = start + int(rng.integers(0, max(1, end - start - length)))
        window = data.tokens[begin : begin + length + 1].astype(np.int64)
        moved = transpose(window, int(rng.integers(-max_transpose, max_transpose + 1)))
        window = window if moved is None else moved
        labels = data.va[begin : begin + length + 1].astype(np.float32)
        if swap_rate > 0 and rng.random() < swap_rate and len(window) >= 16:
            split = int(rng.integers(len(window) // 4, 3 * len(window) // 4))
            swapped = modal_swap(
                window, labels, split, hold_target=bool(rng.random() < swap_hold), valence_lead=data.valence_lead
            )
            if swapped is not None:
                window, labels = swapped
                weights[row, max(0, split - 1) : split - 1 + focus] = swap_weight  # target i is token i+1
        tokens[row, : len(window)] = window
        va[row, : len(window)] = labels
    return tokens, va, data.styles[chosen].astype(np.int64), weights


def validation_windows(data: Corpus, split: str, length: int, limit: int = 0) -> tuple[np.ndarray, ...]:
    """Consecutive non-overlapping windows (stride ``length``) over every piece of a split; with
    ``limit`` > 0, a fixed subset of that many (drawn with a constant seed, so every run, whatever
    its --seed or embedding, is judged on the same windows)."""
    rows, vas, styles = [], [], []
    for piece in data.piece_indices(split):
        start, end = int(data.offsets[piece]), int(data.offsets[piece + 1])
        for begin in range(start, end - 1, length):
            window = np.full(length + 1, PAD, dtype=np.int64)
            va = np.zeros((length + 1, 2), dtype=np.float32)
            piece_tokens = data.tokens[begin : min(end, begin + length + 1)]
            window[: len(piece_tokens)] = piece_tokens
            va[: len(piece_tokens)] = data.va[begin : begin + len(piece_tokens)]
            rows.append(window), vas.append(va), styles.append(int(data.styles[piece]))
    if not rows:
        raise ValueError(f"split {split!r} has no pieces")
    chosen = np.arange(len(rows))
    if 0 < limit < len(rows):
        chosen = np.sort(np.random.default_rng(VAL_SUBSET_SEED).choice(len(rows), size=limit, replace=False))
    return np.stack(rows)[chosen], np.stack(vas)[chosen], np.array(styles, dtype=np.int64)[chosen]


def _loss(
    model: ContinuationModel,
    tokens: torch.Tensor,
    va: torch.Tensor,
    style: torch.Tensor,
    reduction: str = "mean",
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Next-token cross-entropy; with ``weights`` [B, T], the weighted mean over non-pad targets."""
    length = tokens.shape[1] - 1
    logits, _ = model(tokens[:, :-1], va[:, :-1], style, torch.arange(length))
    targets = tokens[:, 1:].reshape(-1)
    if weights is None:
        return F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets, ignore_index=PAD, reduction=reduction
        )
    losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets, ignore_index=PAD, reduction="none")
    mask = (targets != PAD).float() * weights.reshape(-1)
    return (losses * mask).sum() / mask.sum().clamp_min(1.0)


@torch.no_grad()
def evaluate(model: ContinuationModel, windows: tuple[np.ndarray, ...], batch_size: int = 16) -> float:
    """Mean next-token cross-entropy (nats) over all non-pad targets."""
    model.eval()
    tokens, va, style = windows
    total, count = 0.0, 0
    for start in range(0, len(tokens), batch_size):
        part = slice(start, start + batch_size)
        batch = torch.from_numpy(tokens[part])
        total += float(_loss(model, batch, torch.from_numpy(va[part]), torch.from_numpy(style[part]), "sum"))
        count += int((batch[:, 1:] != PAD).sum())
    model.train()
    return total / max(1, count)


def load_checkpoint(path: Path) -> tuple[ContinuationModel, dict]:
    """Model (eval mode) and the checkpoint dict."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    model = ContinuationModel(ModelConfig(**state["config"]))
    model.load_state_dict(state["model"])
    return model.eval(), state


def apply_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> float:
    """One optimizer step (gradients clipped to norm 1); returns the loss."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return loss.item()


def resume(
    path: Path, model: ContinuationModel, optimizer: torch.optim.Optimizer, rng: np.random.Generator
) -> tuple[int, float]:
    """Restore model, optimizer and both RNGs from a checkpoint of the same model config;
    returns (step, best val loss)."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state["config"] != model.config.to_dict():
        raise ValueError(
            f"{path} was trained with {state['config']}, not {model.config.to_dict()}; use another --out"
        )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    rng.bit_generator.state = state["rng"]
    torch.set_rng_state(state["torch_rng"])
    print(f"resumed from {path} at step {state['step']}", flush=True)
    return state["step"], state["best_val"]


def save_checkpoint(
    out: Path,
    model: ContinuationModel,
    optimizer: torch.optim.Optimizer,
    rng: np.random.Generator,
    step: int,
    best_val: float,
    val_loss: float,
    **extra: object,
) -> dict:
    """Write OUT/last.pt (through a temporary file, so a stop never leaves half of one) in the
    format ``resume`` and ``export`` read; returns the state."""
    state = {
        "config": model.config.to_dict(),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": rng.bit_generator.state,
        "torch_rng": torch.get_rng_state(),
        "step": step,
        "best_val": best_val,
        "val_loss": val_loss,
        "parameters": parameter_counts(model),
    } | extra
    torch.save(state, out / "last.tmp")
    (out / "last.tmp").replace(out / "last.pt")
    return state


def add_fine_tune_arguments(parser: argparse.ArgumentParser, lr: float, seed: int, threads: int = 1) -> None:
    """The options every fine-tuning script (affect_tune, distill_mode) shares."""
    parser.add_argument("--init", type=Path, required=True, help="checkpoint to start from")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--seed", type=int, default=seed)
    parser.add_argument("--threads", type=int, default=threads)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--out", type=Path, required=True)


class RunLog:
    """OUT/log.jsonl of a fine-tuning run (appended on resume): a start event with the arguments,
    then one JSON line per ``write`` with the seconds since the start, then a done event."""

    def __init__(self, out: Path, args: argparse.Namespace, step: int, model: ContinuationModel,
                 **start: object) -> None:
        self.handle = (out / "log.jsonl").open("a")
        self.started = time.monotonic()
        self.write(event="start", step=step, args={k: str(v) for k, v in vars(args).items()},
                   parameters=parameter_counts(model), **start)

    def write(self, **fields: object) -> None:
        self.handle.write(json.dumps(fields | {"elapsed_s": round(time.monotonic() - self.started, 1)}) + "\n")
        self.handle.flush()

    def close(self, step: int) -> None:
        self.write(event="done", step=step)
        self.handle.close()


def _learning_rate(step: int, steps: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.continuation.train", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--embedding", choices=EMBEDDINGS, default="smart")
    parser.add_argument("--steps", type=int, default=900)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=256, help="tokens per training window")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=60)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--d-model", type=int, default=192)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--corpus", choices=tuple(CORPORA), default="music21",
                        help="token cache to train on: music21 (corpus_v1.npz) or twohands (POP909 + piano scores)")
    parser.add_argument("--init", type=Path, help="start from this checkpoint's weights (same config)")
    parser.add_argument(
        "--modal-swap", type=float, default=0.0, metavar="P",
        help="share of windows moved to the parallel mode from a random token on, with their valence "
        "(see sample_batch); 0 = off",
    )
    parser.add_argument(
        "--swap-hold", type=float, default=0.5, metavar="Q",
        help="share of the swapped windows whose new valence is held over the whole window",
    )
    parser.add_argument(
        "--val-windows", type=int, default=0, metavar="N",
        help="judge validation on a fixed subset of N windows (0 = all; twohands has about 10,000)",
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    try:
        data = load_corpus(args.cache, args.corpus)
    except (FileNotFoundError, ValueError) as error:
        print(f"train: {error}", file=sys.stderr)
        return 2
    train_pieces = data.piece_indices("train")
    val = validation_windows(data, "val", args.length, args.val_windows)
    config = ModelConfig(
        embedding=args.embedding, d_model=args.d_model, layers=args.layers, feedforward=4 * args.d_model
    )
    model = ContinuationModel(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    step, best = 0, math.inf
    last = args.out / "last.pt"
    if last.exists():
        step, best = resume(last, model, optimizer, rng)
    elif args.init is not None:
        state = torch.load(args.init, map_location="cpu", weights_only=False)
        if state["config"] != config.to_dict():
            raise ValueError(f"{args.init} was trained with {state['config']}, not {config.to_dict()}")
        model.load_state_dict(state["model"])
        print(f"weights from {args.init} (step {state['step']})", flush=True)
    log = (args.out / "log.jsonl").open("a")
    counts = parameter_counts(model)
    log.write(
        json.dumps(
            {
                "event": "start",
                "step": step,
                "args": {k: str(v) for k, v in vars(args).items()},
                "parameters": counts,
                "val_windows": len(val[0]),
            }
        )
        + "\n"
    )
    log.flush()
    started, recent = time.monotonic(), []
    model.train()
    while step < args.steps:
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(step, args.steps, args.lr, args.warmup)
        tokens, va, style, weights = (
            torch.from_numpy(a)
            for a in sample_batch(
                data, train_pieces, rng, args.batch, args.length, swap_rate=args.modal_swap, swap_hold=args.swap_hold
            )
        )
        loss = _loss(model, tokens, va, style, weights=weights if args.modal_swap > 0 else None)
        recent.append(apply_step(model, optimizer, loss))
        step += 1
        if step % 10 == 0:
            log.write(
                json.dumps(
                    {
                        "step": step,
                        "train_loss": round(float(np.mean(recent)), 4),
                        "lr": optimizer.param_groups[0]["lr"],
                        "elapsed_s": round(time.monotonic() - started, 1),
                    }
                )
                + "\n"
            )
            log.flush()
            recent = []
        if step % args.eval_every == 0 or step == args.steps:
            val_loss = evaluate(model, val)
            state = save_checkpoint(
                args.out, model, optimizer, rng, step, min(best, val_loss), val_loss, valence_lead=data.valence_lead
            )
            if val_loss < best:
                best = val_loss
                torch.save(state, args.out / "best.pt")
            log.write(
                json.dumps(
                    {
                        "step": step,
                        "val_loss": round(val_loss, 4),
                        "best_val": round(best, 4),
                        "elapsed_s": round(time.monotonic() - started, 1),
                    }
                )
                + "\n"
            )
            log.flush()
            print(f"step {step} val {val_loss:.4f} best {best:.4f}", flush=True)
    log.write(json.dumps({"event": "done", "step": step, "best_val": round(best, 4)}) + "\n")
    log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

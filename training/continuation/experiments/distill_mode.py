"""Teach the valence adapter the parallel mode by distillation (issue 7).

    python -m training.continuation.experiments.distill_mode --init RUNS/continuation/long/smart/best.pt \\
        --steps 600 --out RUNS/continuation/distill/smart

The learned adapter barely moves the continuation's mode (docs/continuation.md: six recipes
tried), while mode steering at decoding does (``sample.steer_mode``). Here the model learns to do
what the steering does, from its label alone. The teacher is the frozen starting model with its
logits mode-steered; the student, every weight learning, is fed a label and must match the
teacher (KL divergence at every position):

- a ``--share`` of the windows get a random constant target valence (uniform in [-1, 1]); the
  others keep the music's own labels;
- the teacher steers each token's major/minor degree pairs (third, sixth, seventh above the
  window's tonic, ``modal.window_key``) by ``--steer`` x (target - the music's own valence), so
  with the music's own label it is the starting model unchanged and a label of 0 asks for a mode
  in between, as the labels mean in training (``affect.valence_arousal``).

Result (session 4, from the shipped 3,000-step Smart model, 600 steps, share 0.6, S = 3, every
weight at lr 2e-4): the KL to the teacher fell only from 0.16 to 0.13 nats per token, the
validation loss rose from 1.4392 to 1.4770 (+2.6 %), and the adapter alone reached valence ->
parallel-mode rho 0.18 (40 prompts; 0.136 at step 300). Resumed to 2,400 steps (the schedule
stretched to 2,400): rho 0.246 at 1,200 and 0.348 at 2,400, validation loss 1.4709 (+2.2 %), and
the neutral run's in-scale share fell from 0.899 to 0.853. Not shipped; the engine steers at
decoding instead.

Every ``--eval-every`` steps it logs the plain validation loss (the same windows as
``train.py``, with the music's labels). Checkpoints have ``train.py``'s format (export with
``training.continuation.export``); re-running resumes from OUT/last.pt.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys

import numpy as np
import torch
import torch.nn.functional as F

from engines.continuation.corpus import load_corpus
from engines.continuation.modal import window_key
from engines.continuation.sample import mode_pairs
from engines.continuation.tokens import PAD
from training.continuation.model import ContinuationModel
from training.continuation.train import (
    RunLog,
    _learning_rate,
    add_fine_tune_arguments,
    apply_step,
    evaluate,
    load_checkpoint,
    resume,
    sample_batch,
    save_checkpoint,
    validation_windows,
)

__all__ = ["main", "steered_targets", "teacher_shift"]


def teacher_shift(
    tokens: np.ndarray, va: np.ndarray, rng: np.random.Generator, share: float, steer: float
) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray] | None]]:
    """Student labels [B, T+1, 2] and, per row, the (major, minor) pairs of its tonic (None = no
    clear key: that row is not steered). Rows drawn for a target get it as a constant valence;
    the steering amount per token is ``steer`` x (student valence - music valence)."""
    labels = va.copy()
    pairs: list[tuple[np.ndarray, np.ndarray] | None] = []
    for row in range(len(tokens)):
        if rng.random() < share:
            labels[row, :, 0] = rng.uniform(-1.0, 1.0)
        key = window_key(tokens[row][tokens[row] != PAD])
        pairs.append(None if key is None else mode_pairs(key[0]))
    return labels, pairs


def steered_targets(
    teacher_logits: torch.Tensor, pairs: list[tuple[np.ndarray, np.ndarray] | None], shift: torch.Tensor
) -> torch.Tensor:
    """Teacher log-probabilities [B, T, V]: each row's pairs split by ``shift`` [B, T] (the
    pair's total kept, as ``sample.steer_mode``)."""
    logits = teacher_logits.clone()
    for row, row_pairs in enumerate(pairs):
        if row_pairs is None:
            continue
        major, minor = (torch.from_numpy(p) for p in row_pairs)
        a, b = teacher_logits[row][:, major], teacher_logits[row][:, minor]
        total, odds = torch.logaddexp(a, b), a - b + shift[row][:, None]
        logits[row][:, major] = total - F.softplus(-odds)
        logits[row][:, minor] = total - F.softplus(odds)
    return torch.log_softmax(logits, -1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.continuation.experiments.distill_mode",
                                     description=__doc__.split("\n")[0])
    add_fine_tune_arguments(parser, lr=2e-4, seed=99, threads=2)  # --init is also the teacher
    parser.add_argument("--share", type=float, default=0.6, help="share of windows given a random target valence")
    parser.add_argument("--steer", type=float, default=3.0, help="teacher's log-odds shift per unit valence")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data = load_corpus(args.cache)
    model, base = load_checkpoint(args.init)
    teacher: ContinuationModel = copy.deepcopy(model).eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    step, best, last = 0, math.inf, args.out / "last.pt"
    if last.exists():
        step, best = resume(last, model, optimizer, rng)
    val = validation_windows(data, "val", args.length)
    log = RunLog(args.out, args, step, model, val_windows=len(val[0]), base_step=base["step"])
    recent = []
    positions = torch.arange(args.length)
    model.train()
    while step < args.steps:
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(step, args.steps, args.lr, args.warmup)
        tokens, va, style, _ = sample_batch(data, data.piece_indices("train"), rng, args.batch, args.length)
        labels, pairs = teacher_shift(tokens, va, rng, args.share, args.steer)
        tokens_t, style_t = torch.from_numpy(tokens[:, :-1]), torch.from_numpy(style)
        with torch.no_grad():
            teacher_logits, _ = teacher(tokens_t, torch.from_numpy(va[:, :-1]), style_t, positions)
            shift = torch.from_numpy(args.steer * (labels[:, :-1, 0] - va[:, :-1, 0]))
            target = steered_targets(teacher_logits, pairs, shift)
        logits, _ = model(tokens_t, torch.from_numpy(labels[:, :-1]), style_t, positions)
        per_token = F.kl_div(torch.log_softmax(logits, -1), target, log_target=True, reduction="none").sum(-1)
        mask = (torch.from_numpy(tokens[:, 1:]) != PAD).float()
        loss = (per_token * mask).sum() / mask.sum().clamp_min(1.0)
        recent.append(apply_step(model, optimizer, loss))
        step += 1
        if step % 10 == 0:
            log.write(step=step, kl=round(float(np.mean(recent)), 5))
            recent = []
        if step % args.eval_every == 0 or step == args.steps:
            val_loss = evaluate(model, val)
            best = min(best, val_loss)
            save_checkpoint(args.out, model, optimizer, rng, step, best, val_loss, valence_lead=data.valence_lead)
            log.write(step=step, val_loss=round(val_loss, 4))
            print(f"step {step} val {val_loss:.4f}", flush=True)
    log.close(step)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Fine-tune the continuation's valence adapter with modal-swapped windows (issue 7).

    python -m training.continuation.experiments.affect_tune --init RUNS/continuation/long/smart/best.pt \\
        --steps 600 --out RUNS/continuation/affect/smart

Why: the valence label of a training token is computed from the music itself, so the context
already says what the label says and a model trained on it ignores the label (second session:
valence -> mode of the continuation, Spearman 0.12; after 3,000 steps 0.02). Here a share of the
windows is moved to the parallel mode from a random token on (``modal.modal_swap``), with the
valence recomputed; half of those hold the swapped part's valence over the whole window, so the
label contradicts the unchanged start, as when a major phrase is asked for valence -0.8. The
tokens where the music turns (the first ``--focus`` targets after the split) carry a loss weight
``--swap-weight``. By default only the adapter (Linear(2 -> d)) learns, at ``--adapter-lr-scale``
times ``--lr``; ``--train all`` trains every weight.

Result (session 3, from the 3,000-step Smart model, docs/continuation.md): neither variant
taught the model to read the label. With every weight learning, the model learned to expect a
chromatic turn anywhere (the probe went from -0.103 to -0.048 nats in 200 steps and the
validation loss rose 1.3 %); with the adapter alone, the probe went to -0.035 in 200 steps
(validation loss unchanged). Both runs were stopped; no model from them is shipped.

Every ``--eval-every`` steps it logs the plain validation loss (the same windows as
``train.py``, so quality is comparable) and a valence probe: the mean loss of the first turned
notes of swapped validation windows with the right label minus with the unswapped label (negative
= the model uses the label). Checkpoints have ``train.py``'s format (export with
``training.continuation.export``); re-running resumes from OUT/last.pt.
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np
import torch

from engines.continuation.corpus import Corpus, load_corpus
from engines.continuation.modal import modal_swap
from training.continuation.model import ContinuationModel
from training.continuation.train import (
    RunLog,
    _learning_rate,
    _loss,
    add_fine_tune_arguments,
    apply_step,
    evaluate,
    load_checkpoint,
    resume,
    sample_batch,
    save_checkpoint,
    validation_windows,
)

__all__ = ["main", "probe_windows", "valence_probe"]


def probe_windows(data: Corpus, count: int = 64, seed: int = 0) -> list[tuple]:
    """Swapped validation windows: (tokens, swapped labels, original labels, style, changed)."""
    rng = np.random.default_rng(seed)
    pieces = [p for p in data.piece_indices("val") if data.offsets[p + 1] - data.offsets[p] > 300]
    rows: list[tuple] = []
    for _ in range(count * 20):
        if len(rows) == count:
            break
        piece = int(rng.choice(pieces))
        start, end = int(data.offsets[piece]), int(data.offsets[piece + 1])
        begin = start + int(rng.integers(0, end - start - 257))
        window = data.tokens[begin : begin + 257].astype(np.int64)
        labels = data.va[begin : begin + 257].astype(np.float32)
        swapped = modal_swap(window, labels, 128, hold_target=True, valence_lead=data.valence_lead)
        if swapped is not None:
            changed = np.nonzero(swapped[0] != window)[0][:3]
            rows.append((swapped[0], swapped[1], labels, int(data.styles[piece]), changed))
    return rows


@torch.no_grad()
def valence_probe(model: ContinuationModel, rows: list[tuple]) -> float:
    """Mean loss of the first turned notes with the target label minus with the music's label."""
    gains = []
    for tokens, target, original, style, changed in rows:
        batch = torch.from_numpy(np.stack([tokens, tokens])[:, :-1])
        labels = torch.from_numpy(np.stack([target, original])[:, :-1])
        logits, _ = model(batch, labels, torch.tensor([style, style]), torch.arange(256))
        picked = torch.log_softmax(logits[:, changed - 1], -1)[:, torch.arange(len(changed)), tokens[changed]]
        gains.append(float(-(picked[0] - picked[1]).mean()))
    return float(np.mean(gains))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.continuation.experiments.affect_tune",
                                     description=__doc__.split("\n")[0])
    add_fine_tune_arguments(parser, lr=3e-4, seed=4321)
    parser.add_argument("--adapter-lr-scale", type=float, default=10.0)
    parser.add_argument("--train", choices=("adapter", "all"), default="adapter",
                        help="which weights learn (default: the valence/arousal adapter only)")
    parser.add_argument("--rate", type=float, default=0.5, help="share of windows modal-swapped")
    parser.add_argument("--focus", type=int, default=48, help="targets after the split that get --swap-weight")
    parser.add_argument("--swap-weight", type=float, default=4.0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data = load_corpus(args.cache)
    model, base = load_checkpoint(args.init)
    adapter = list(model.va.parameters())
    rest = [p for p in model.parameters() if all(p is not q for q in adapter)]
    groups = [{"params": adapter, "scale": args.adapter_lr_scale}]
    if args.train == "all":
        groups.append({"params": rest, "scale": 1.0})
    else:  # only the adapter learns: the rest cannot learn to hedge against the swaps
        for parameter in rest:
            parameter.requires_grad_(False)
    optimizer = torch.optim.AdamW(groups, lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    step, best, last = 0, math.inf, args.out / "last.pt"
    if last.exists():
        step, best = resume(last, model, optimizer, rng)
    val, probe = validation_windows(data, "val", args.length), probe_windows(data)
    log = RunLog(args.out, args, step, model, val_windows=len(val[0]), base_step=base["step"])
    if step == 0:
        model.eval()
        log.write(step=0, val_loss=round(evaluate(model, val), 4), valence_probe=round(valence_probe(model, probe), 4))
    recent = []
    model.train()
    while step < args.steps:
        for group in optimizer.param_groups:
            group["lr"] = group["scale"] * _learning_rate(step, args.steps, args.lr, args.warmup)
        tokens, va, style, weights = (torch.from_numpy(a) for a in sample_batch(
            data, data.piece_indices("train"), rng, args.batch, args.length, swap_rate=args.rate,
            focus=args.focus, swap_weight=args.swap_weight))
        recent.append(apply_step(model, optimizer, _loss(model, tokens, va, style, weights=weights)))
        step += 1
        if step % 10 == 0:
            log.write(step=step, train_loss=round(float(np.mean(recent)), 4))
            recent = []
        if step % args.eval_every == 0 or step == args.steps:
            model.eval()
            val_loss, gain = evaluate(model, val), valence_probe(model, probe)
            model.train()
            best = min(best, val_loss)
            save_checkpoint(args.out, model, optimizer, rng, step, best, val_loss, valence_probe=gain,
                            valence_lead=data.valence_lead)
            log.write(step=step, val_loss=round(val_loss, 4), valence_probe=round(gain, 4))
            print(f"step {step} val {val_loss:.4f} valence probe {gain:+.4f}", flush=True)
    log.close(step)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Train several curricula in lockstep in one process (one CPU thread): one optimizer step of
each run in turn, so every curriculum always has the same number of steps, whatever the
machine's load. A run's folder, checkpoint and log are those of `train.py` (export and resume
work the same); `--stop-at HH:MM` (UTC) saves every run and stops, all at the same step.

    python -m training.harmonizer.lockstep --curricula ff random10 midpoint --steps 4500 \
        --data union --root RUNS/harmonizer --stop-at 10:12

``--data`` / ``--weights`` / ``--cache`` as in `train.py`; ``--root`` defaults to
``runs/DATA-lockstep`` under the user cache folder.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import torch
import torch.nn.functional as F

from engines.harmonizer.grid import GridConfig

from .curriculum import CURRICULA, apply_to_batch, curriculum_mask
from .model import Harmonizer, ModelConfig, parameter_count
from .regularize import consistency_penalty, crop_length, melody_fit_table
from .sources import TrainingData, load_training_data
from .train import (
    _batch_tensors,
    _learning_rate,
    _save,
    add_data_options,
    add_training_options,
    default_out,
    evaluate_by_source,
)

__all__ = ["main"]

_FIT = torch.from_numpy(melody_fit_table())


@dataclass
class Run:
    """One curriculum's model, optimizer, RNG, counters and log."""

    curriculum: str
    out: Path
    model: Harmonizer
    optimizer: torch.optim.Optimizer
    rng: np.random.Generator
    log: TextIO
    step: int = 0
    best: float = float("inf")
    loss_sum: float = 0.0
    loss_count: int = 0
    penalty_sum: float = 0.0

    def write(self, record: dict) -> None:
        self.log.write(json.dumps(record) + "\n")
        self.log.flush()


def _payload(run: Run, args: argparse.Namespace, grid: GridConfig, config: ModelConfig, data: dict) -> dict:
    return {
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "step": run.step,
        "total_steps": args.steps,
        "curriculum": run.curriculum,
        "best_val": run.best,
        "model_config": config.to_dict(),
        "grid": grid.to_dict(),
        "args": {k: str(v) for k, v in vars(args).items()} | {"curriculum": run.curriculum},
        "rng": run.rng.bit_generator.state,
        "torch_rng": torch.get_rng_state(),
        "data": data,
    }


def _warm_state(model: Harmonizer, path: Path) -> dict:
    """A checkpoint's weights for `model`; a checkpoint with fewer styles (the three classical
    ones) gives their rows, the new styles keep their fresh rows."""
    state = torch.load(path, map_location="cpu", weights_only=False)["model"]
    own = model.state_dict()["style_in.weight"]
    old = state["style_in.weight"]
    if old.shape[0] < own.shape[0] and old.shape[1:] == own.shape[1:]:
        state["style_in.weight"] = torch.cat([old, own[old.shape[0]:]])
    return state


def _open_run(curriculum: str, args: argparse.Namespace, config: ModelConfig) -> Run:
    out = args.root / curriculum
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    model = Harmonizer(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    last = out / "last.pt"
    checkpoint = torch.load(last, map_location="cpu", weights_only=False) if last.exists() else None
    trained_on = checkpoint.get("data", {}).get("data", "classical") if checkpoint else None
    if checkpoint and (checkpoint["curriculum"], checkpoint["total_steps"], trained_on) != (
            curriculum, args.steps, args.data):
        raise ValueError(f"{last} was trained with {checkpoint['curriculum']}/{checkpoint['total_steps']} steps "
                         f"on {trained_on}")
    if checkpoint is None and args.init is not None:  # warm start: weights only, a new schedule
        model.load_state_dict(_warm_state(model, args.init))
    run = Run(curriculum, out, model, optimizer, np.random.default_rng(args.seed), (out / "log.jsonl").open("a"))
    if checkpoint:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        run.step, run.best = checkpoint["step"], checkpoint["best_val"]
        run.rng.bit_generator.state = checkpoint["rng"]
        print(f"resumed {last} at step {run.step}", flush=True)
    model.train()
    return run


def _train_step(run: Run, args: argparse.Namespace, data: TrainingData, length: int) -> None:
    windows = data.train
    index = data.sample(run.rng, args.batch)
    crop = crop_length(length, run.rng, args.crop_probability, args.min_length)
    visible, target = curriculum_mask(run.curriculum, run.step, args.steps, crop, run.rng)
    harmony = windows.harmony[index, :crop]
    inputs, loss_mask = apply_to_batch(harmony, visible, target)
    for group in run.optimizer.param_groups:
        group["lr"] = _learning_rate(run.step, args.steps, args.lr, args.warmup)
    tensors = list(_batch_tensors(windows, index, inputs))
    tensors[0], tensors[2] = tensors[0][:, :crop], tensors[2][:, :crop]  # melody, va
    mask = torch.from_numpy(loss_mask)
    if not mask.any():
        run.step += 1
        return
    consistency = args.va_consistency > 0
    if consistency:  # the same windows again, with one random constant affect per window
        random_va = torch.from_numpy(run.rng.uniform(-1, 1, (args.batch, 1, 2)).astype(np.float32))
        doubled = [torch.cat([t, random_va.expand_as(t) if k == 2 else t]) for k, t in enumerate(tensors)]
        true_logits, random_logits = run.model(*doubled).chunk(2)
    else:
        true_logits = run.model(*tensors)
    losses = F.cross_entropy(true_logits.transpose(1, 2), torch.from_numpy(harmony), reduction="none")
    loss = losses[mask].mean()
    run.loss_sum += loss.item()
    if consistency:
        pitch = torch.from_numpy(windows.melody_pitch[index, :crop].astype(np.int64))
        penalty = consistency_penalty(true_logits, random_logits, _FIT, pitch, mask,
                                      args.va_consistency_mode == "two-sided")
        run.penalty_sum += penalty.item()
        loss = loss + args.va_consistency * penalty
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(run.model.parameters(), 1.0)
    run.optimizer.step()
    run.loss_count += 1
    run.step += 1


def _deadline(text: str | None) -> float | None:
    """Today's HH:MM UTC as a timestamp; an hour already past is refused (it is read at launch)."""
    if not text:
        return None
    hours, minutes = (int(v) for v in text.split(":"))
    now = datetime.datetime.now(datetime.UTC)
    stop = now.replace(hour=hours, minute=minutes, second=0, microsecond=0)
    if stop <= now:
        raise ValueError(f"--stop-at {text} UTC has already passed")
    return stop.timestamp()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--curricula", nargs="+", choices=CURRICULA, default=list(CURRICULA))
    parser.add_argument("--steps", type=int, required=True, help="total optimizer steps S of every run")
    parser.add_argument("--root", type=Path, default=None,
                        help=f"one folder per curriculum under it (default {default_out('DATA', 'lockstep')})")
    add_data_options(parser)
    add_training_options(parser)
    parser.add_argument("--stop-at", help="HH:MM UTC: save every run and stop (all at the same step)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init", type=Path, help="start from this checkpoint's weights (a new schedule)")
    parser.add_argument("--crop-probability", type=float, default=0.0,
                        help="share of batches cut to a random length in [--min-length, L]")
    parser.add_argument("--min-length", type=int, default=16)
    parser.add_argument("--va-consistency", type=float, default=0.0,
                        help="weight of the affect consistency penalty (regularize.py); 0 = off")
    parser.add_argument("--va-consistency-mode", choices=("hinge", "two-sided"), default="hinge",
                        help="hinge: a random affect may not fit the melody worse; two-sided: nor better")
    args = parser.parse_args(argv)
    stop_at = _deadline(args.stop_at)
    if args.root is None:
        args.root = default_out(args.data, "lockstep")
    torch.set_num_threads(1)
    grid = GridConfig("q4", True, "pc", args.length)
    try:
        training = load_training_data(args.data, grid, args.cache, args.weights, args.splits)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    data = training.summary()
    config = ModelConfig(roll_dim=grid.roll_dim, length=grid.length, d_model=args.d_model, heads=args.heads,
                         layers=args.layers, feedforward=args.feedforward, dropout=args.dropout,
                         num_styles=len(training.styles))
    runs: list[Run] = []
    try:
        for curriculum in args.curricula:
            runs.append(_open_run(curriculum, args, config))
        return _loop(runs, args, grid, config, data, training, stop_at)
    finally:
        for run in runs:
            run.log.close()


def _loop(
    runs: list[Run],
    args: argparse.Namespace,
    grid: GridConfig,
    config: ModelConfig,
    data: dict,
    training: TrainingData,
    stop_at: float | None,
) -> int:
    for run in runs:
        run.write({"event": "start", "step": run.step, "parameters": parameter_count(run.model), **data,
                   "config": _payload(run, args, grid, config, data)["args"], "lockstep": args.curricula,
                   "time": time.time()})
    last_save, started = time.time(), time.time()
    while any(run.step < args.steps for run in runs):
        for run in runs:
            if run.step >= args.steps:
                continue
            _train_step(run, args, training, grid.length)
            if run.step % 100 == 0:
                run.write({"event": "train", "step": run.step, "loss": run.loss_sum / max(1, run.loss_count),
                           "va_penalty": run.penalty_sum / max(1, run.loss_count),
                           "lr": run.optimizer.param_groups[0]["lr"], "elapsed_s": round(time.time() - started, 1)})
                run.loss_sum, run.loss_count, run.penalty_sum = 0.0, 0, 0.0
            if run.step % args.eval_every == 0 or run.step == args.steps:
                metrics = evaluate_by_source(run.model, training)
                if metrics["val_loss_full"] < run.best:
                    run.best = metrics["val_loss_full"]
                    _save(run.out / "best.pt", _payload(run, args, grid, config, data))
                run.write({"event": "val", "step": run.step, **metrics, "best_val_loss_full": run.best})
                print(f"{run.curriculum} step {run.step}/{args.steps} {metrics}", flush=True)
            if run.step == args.steps:
                _save(run.out / "last.pt", _payload(run, args, grid, config, data))
                run.write({"event": "done", "step": run.step, "best_val_loss_full": run.best, "time": time.time()})
        stopping = stop_at is not None and time.time() >= stop_at
        if time.time() - last_save > 60 * args.checkpoint_minutes or stopping:
            for run in runs:
                _save(run.out / "last.pt", _payload(run, args, grid, config, data))
            last_save = time.time()
        if stopping:
            for run in runs:
                if run.step < args.steps:
                    run.write({"event": "stopped", "step": run.step, "reason": f"--stop-at {args.stop_at}",
                               "time": time.time()})
            print(f"stopped at {args.stop_at} UTC, every run at step {runs[0].step}", flush=True)
            return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())

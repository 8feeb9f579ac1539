"""Training speed (optimizer steps per second) of harmonizer sizes on real training windows.

Sizes the long runs by measurement: the same step as ``training.harmonizer.train`` (FF mask at
mid-horizon, AdamW, gradient clipping) on batches drawn from ``--data``, one thread. Needs
torch and the data caches (``python -m training.harmonizer.leadsheets build``).

    python -m benchmarks.bench_harmonizer_train --data leadsheets --sizes 96x2x384,128x3x512 --steps 200
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from engines.harmonizer.dataset import DEFAULT_CACHE
from engines.harmonizer.grid import GridConfig
from training.harmonizer.curriculum import apply_to_batch, curriculum_mask
from training.harmonizer.model import Harmonizer, ModelConfig, parameter_count
from training.harmonizer.sources import DATA_CHOICES, load_training_data
from training.harmonizer.train import _batch_tensors

from .bench_harmonizer_sizes import parse_sizes


def steps_per_second(data, grid: GridConfig, size: tuple[int, int, int], batch: int, steps: int,
                     heads: int = 4, warmup: int = 10) -> dict:
    """Time `steps` training steps after `warmup` untimed ones."""
    d_model, layers, feedforward = size
    torch.manual_seed(0)
    model = Harmonizer(ModelConfig(roll_dim=grid.roll_dim, length=grid.length, d_model=d_model, heads=heads,
                                   layers=layers, feedforward=feedforward, num_styles=len(data.styles)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4)
    rng = np.random.default_rng(0)
    model.train()
    started = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            started = time.perf_counter()
        index = data.sample(rng, batch)
        visible, target = curriculum_mask("ff", 1, 2, grid.length, rng)  # mid-horizon
        harmony = data.train.harmony[index]
        inputs, loss_mask = apply_to_batch(harmony, visible, target)
        logits = model(*_batch_tensors(data.train, index, inputs))
        losses = F.cross_entropy(logits.transpose(1, 2), torch.from_numpy(harmony), reduction="none")
        loss = losses[torch.from_numpy(loss_mask)].mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    seconds = time.perf_counter() - started
    return {"size": f"{d_model}x{layers}x{feedforward}", "parameters": parameter_count(model), "batch": batch,
            "length": grid.length, "steps": steps, "seconds": round(seconds, 2),
            "steps_per_s": round(steps / seconds, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=DATA_CHOICES, default="leadsheets")
    parser.add_argument("--cache", default=DEFAULT_CACHE)
    parser.add_argument("--sizes", type=parse_sizes, default=parse_sizes("96x2x384,128x3x512,192x4x768"),
                        help="d_model x layers x feed-forward, comma separated")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=80)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    grid = GridConfig("q4", True, "pc", args.length)
    try:
        data = load_training_data(args.data, grid, args.cache)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for size in args.sizes:
        result = steps_per_second(data, grid, size, args.batch, args.steps)
        print(json.dumps({"data": args.data, "threads": args.threads, **result}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

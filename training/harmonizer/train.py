"""Train the harmonizer with one curriculum (torch, CPU, one thread by default).

    python -m training.harmonizer.train --curriculum ff --steps 12000 --data union --out RUNS/harmonizer/ff

``--data`` picks the windows (``sources.py``): classical (the shipped model's data), leadsheets
(OpenEWLD + POP909, human chords on metric beats) or union (``--weights`` sets each source's
share of the batches). ``--out`` defaults to ``runs/DATA-CURRICULUM`` under the user cache
folder. Re-running the same command resumes from OUT/last.pt; ``--stop-after-minutes`` saves and
stops early so a long run can go in pieces. Logs JSON lines to OUT/log.jsonl (training loss and
steps/s every 100 steps, validation overall and per source).
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

from core.paths import cache_dir
from engines.harmonizer.dataset import DEFAULT_CACHE, Windows
from engines.harmonizer.grid import GridConfig
from engines.harmonizer.vocab import PAD

from .curriculum import CURRICULA, apply_to_batch, curriculum_mask
from .model import Harmonizer, ModelConfig, parameter_count
from .sources import DATA_CHOICES, SPLITS_DIR, TrainingData, load_training_data

__all__ = ["evaluate", "evaluate_by_source", "load_checkpoint", "add_data_options", "add_model_options",
           "default_out", "main"]


def _batch_tensors(
    windows: Windows, index: np.ndarray, harmony_inputs: np.ndarray, va_kept: np.ndarray | None = None
) -> tuple[torch.Tensor, ...]:
    """Model inputs of the windows at ``index``; ``va_kept`` [B] bool: False replaces a window's
    valence/arousal by zeros (no affect given, as a user who sets none runs the model)."""
    va = windows.va[index]
    if va_kept is not None:
        va = np.where(va_kept[:, None, None], va, np.float32(0.0)).astype(np.float32)
    return (
        torch.from_numpy(windows.melody[index].astype(np.float32)),
        torch.from_numpy(harmony_inputs.astype(np.int64)),
        torch.from_numpy(va),
        torch.from_numpy(windows.style[index]),
        torch.from_numpy(windows.condition[index]),
    )


def evaluate(model: Harmonizer, windows: Windows, batch_size: int = 64, seed: int = 0,
             zero_va: bool = False) -> dict[str, float]:
    """Validation losses under fixed protocols shared by all curricula.

    full: every chord masked (one-shot prediction); half: a seeded random half revealed.
    Accuracy is over non-pad targets of the full protocol. ``zero_va``: no affect given (the
    windows' valence/arousal labels are read from the chords, so with them the model is told
    part of the answer).
    """
    return _metrics(_validation_sums(model, windows, batch_size, seed, zero_va))


def _metrics(sums: np.ndarray) -> dict[str, float]:
    loss_full, count_full, loss_half, count_half, correct, chord_targets = (float(v) for v in sums)
    return {
        "val_loss_full": loss_full / max(1, count_full),
        "val_loss_half": loss_half / max(1, count_half),
        "val_acc_full": correct / max(1, chord_targets),
    }


@torch.no_grad()
def _validation_sums(model: Harmonizer, windows: Windows, batch_size: int, seed: int,
                     zero_va: bool = False) -> np.ndarray:
    """[loss sum, targets] of the full and half protocols, then [correct, chord targets] of full."""
    model.eval()
    rng = np.random.default_rng(seed)
    totals = {"full": 0.0, "half": 0.0}
    counts = {"full": 0, "half": 0}
    correct, chord_targets = 0, 0
    length = windows.harmony.shape[1]
    for start in range(0, len(windows), batch_size):
        index = np.arange(start, min(len(windows), start + batch_size))
        harmony = windows.harmony[index]
        for protocol in ("full", "half"):
            visible = np.zeros(length, dtype=bool)
            if protocol == "half":
                visible[rng.permutation(length)[: length // 2]] = True
            inputs, loss_mask = apply_to_batch(harmony, visible, ~visible)
            kept = np.zeros(len(index), dtype=bool) if zero_va else None
            logits = model(*_batch_tensors(windows, index, inputs, kept))
            targets = torch.from_numpy(harmony)
            mask = torch.from_numpy(loss_mask)
            losses = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
            totals[protocol] += float(losses[mask].sum())
            counts[protocol] += int(mask.sum())
            if protocol == "full":
                chord_mask = mask & (targets != PAD)
                correct += int((logits.argmax(-1)[chord_mask] == targets[chord_mask]).sum())
                chord_targets += int(chord_mask.sum())
    model.train()
    return np.array([totals["full"], counts["full"], totals["half"], counts["half"], correct, chord_targets],
                    dtype=np.float64)


def evaluate_by_source(model: Harmonizer, data: TrainingData, zero_va: bool = False) -> dict[str, float]:
    """``evaluate`` on all validation windows, and per source when there are several (one pass:
    the overall figures are the sums over the sources)."""
    if len(data.sources) == 1:
        return evaluate(model, data.val, zero_va=zero_va)
    per_source = {source: _validation_sums(model, windows, 64, 0, zero_va)
                  for source, windows in data.val_by_source().items()}
    metrics = _metrics(sum(per_source.values()))
    for source, sums in per_source.items():
        metrics |= {f"{key}/{source}": value for key, value in _metrics(sums).items()}
    return metrics


def _learning_rate(step: int, total_steps: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


def load_checkpoint(path: Path) -> tuple[Harmonizer, dict]:
    """Rebuild a model from a checkpoint; returns (model in eval mode, checkpoint dict)."""
    if not Path(path).exists():
        raise FileNotFoundError(f"checkpoint {path} not found")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    model = Harmonizer(ModelConfig(**checkpoint["model_config"]))
    model.load_state_dict(checkpoint["model"])
    return model.eval(), checkpoint


def _save(path: Path, payload: dict) -> None:
    temporary = path.with_suffix(".tmp")
    torch.save(payload, temporary)
    temporary.replace(path)


def add_model_options(parser: argparse.ArgumentParser, lr: float = 5e-4) -> None:
    """Model size and optimiser options, shared with the lockstep trainer and the experiments."""
    parser.add_argument("--d-model", type=int, default=96)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--feedforward", type=int, default=384)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--weight-decay", type=float, default=0.01)


def add_training_options(parser: argparse.ArgumentParser) -> None:
    """``add_model_options`` plus the window length, evaluation and checkpoint intervals."""
    parser.add_argument("--length", type=int, default=80)
    add_model_options(parser)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--checkpoint-minutes", type=float, default=4.0)


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """Which windows to train on, shared with the lockstep trainer."""
    parser.add_argument("--data", choices=DATA_CHOICES, default="classical",
                        help="classical: music21 corpus cache; leadsheets: OpenEWLD + POP909; union: all")
    parser.add_argument("--weights", default=None,
                        help="share of the batches per source, e.g. classical=1,openewld=1,pop909=2 "
                             "(default: every window equally likely)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                        help=f"folder of raw_q16.npz / leadsheets_q16_v1.npz (default {DEFAULT_CACHE})")
    parser.add_argument("--splits", type=Path, default=SPLITS_DIR,
                        help="folder of the lead-sheet split lists (default engines/harmonizer/splits)")


def default_out(data: str, name: str) -> Path:
    """A run folder under the user cache folder."""
    return cache_dir("harmonizer", "runs", f"{data}-{name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--curriculum", choices=CURRICULA, required=True)
    parser.add_argument(
        "--steps", type=int, required=True, help="total optimizer steps S (curriculum horizon)"
    )
    parser.add_argument("--out", type=Path, default=None,
                        help="run folder: checkpoints and log; re-run to resume "
                             f"(default {default_out('DATA', 'CURRICULUM')})")
    add_data_options(parser)
    parser.add_argument("--grid", default="q4", choices=["q4", "q16"])
    parser.add_argument(
        "--no-bars", action="store_true", help="time-signature token instead of intertwined bars"
    )
    parser.add_argument("--roll", default="pc", choices=["pc", "pc_fr"])
    add_training_options(parser)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stop-after-minutes", type=float, default=None,
                        help="save last.pt and stop after this long (re-run to go on)")
    parser.add_argument("--va-dropout", type=float, default=0.0,
                        help="share of training windows whose valence/arousal is replaced by zeros (no affect "
                             "given); validation then also runs without affect and best.pt is chosen there")
    parser.add_argument("--init", type=Path, help="start from this checkpoint's weights (a new schedule)")
    args = parser.parse_args(argv)
    if not 0.0 <= args.va_dropout <= 1.0:
        parser.error(f"--va-dropout {args.va_dropout}: must be in 0..1")
    if args.out is None:
        args.out = default_out(args.data, args.curriculum)
    last_path = args.out / "last.pt"
    checkpoint = torch.load(last_path, map_location="cpu", weights_only=False) if last_path.exists() else None
    try:
        if checkpoint is not None:
            trained_on = checkpoint.get("data", {}).get("data", "classical")
            if (checkpoint["curriculum"], checkpoint["total_steps"], trained_on) != (
                args.curriculum, args.steps, args.data
            ):
                raise ValueError(
                    f"{last_path} was trained with {checkpoint['curriculum']}/{checkpoint['total_steps']} "
                    f"steps on {trained_on}; use another --out or the same --curriculum/--steps/--data"
                )
        grid = GridConfig(args.grid, not args.no_bars, args.roll, args.length)
        data = load_training_data(args.data, grid, args.cache, args.weights, args.splits)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return _train(args, grid, data, checkpoint)


def _train(args: argparse.Namespace, grid: GridConfig, data: TrainingData, checkpoint: dict | None) -> int:
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    train_windows = data.train
    model_config = ModelConfig(
        roll_dim=grid.roll_dim,
        length=grid.length,
        d_model=args.d_model,
        heads=args.heads,
        layers=args.layers,
        feedforward=args.feedforward,
        dropout=args.dropout,
        num_styles=len(data.styles),
    )
    torch.manual_seed(args.seed)
    model = Harmonizer(model_config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    rng = np.random.default_rng(args.seed)
    step, best = 0, float("inf")
    last_path, log_path = args.out / "last.pt", args.out / "log.jsonl"
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        step, best = checkpoint["step"], checkpoint["best_val"]
        rng.bit_generator.state = checkpoint["rng"]
        torch.set_rng_state(checkpoint["torch_rng"])
        print(f"resumed {last_path} at step {step}", flush=True)
    elif args.init is not None:
        model.load_state_dict(torch.load(args.init, map_location="cpu", weights_only=False)["model"])
        print(f"initialized from {args.init}", flush=True)

    def payload() -> dict:
        return {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "total_steps": args.steps,
            "curriculum": args.curriculum,
            "best_val": best,
            "model_config": model_config.to_dict(),
            "grid": grid.to_dict(),
            "args": {k: str(v) for k, v in vars(args).items()},
            "rng": rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "data": data.summary(),
        }

    log = log_path.open("a")
    log.write(
        json.dumps(
            {
                "event": "start",
                "step": step,
                "parameters": parameter_count(model),
                **data.summary(),
                "config": payload()["args"],
                "time": time.time(),
            }
        )
        + "\n"
    )
    log.flush()
    model.train()
    last_save, window_loss, window_count, started = time.time(), 0.0, 0, time.time()
    window_started, first_step = time.time(), step
    stop_at = None if args.stop_after_minutes is None else started + 60 * args.stop_after_minutes
    while step < args.steps:
        index = data.sample(rng, args.batch)
        visible, target = curriculum_mask(args.curriculum, step, args.steps, grid.length, rng)
        harmony = train_windows.harmony[index]
        inputs, loss_mask = apply_to_batch(harmony, visible, target)
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(step, args.steps, args.lr, args.warmup)
        kept = rng.random(len(index)) >= args.va_dropout if args.va_dropout > 0 else None
        logits = model(*_batch_tensors(train_windows, index, inputs, kept))
        mask = torch.from_numpy(loss_mask)
        if mask.any():
            losses = F.cross_entropy(logits.transpose(1, 2), torch.from_numpy(harmony), reduction="none")
            loss = losses[mask].mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            window_loss += loss.item()
            window_count += 1
        step += 1
        if step % 100 == 0:
            log.write(
                json.dumps(
                    {
                        "event": "train",
                        "step": step,
                        "loss": window_loss / max(1, window_count),
                        "lr": optimizer.param_groups[0]["lr"],
                        "visible": int(visible.sum()),
                        "elapsed_s": round(time.time() - started, 1),
                        "steps_per_s": round(100 / max(1e-9, time.time() - window_started), 3),
                    }
                )
                + "\n"
            )
            log.flush()
            window_loss, window_count, window_started = 0.0, 0, time.time()
        if step % args.eval_every == 0 or step == args.steps:
            metrics = evaluate_by_source(model, data)
            chosen_by = "val_loss_full"
            if args.va_dropout > 0:
                metrics |= {f"{key}_no_va": value
                            for key, value in evaluate_by_source(model, data, zero_va=True).items()}
                chosen_by = "val_loss_full_no_va"
            if metrics[chosen_by] < best:
                best = metrics[chosen_by]
                _save(args.out / "best.pt", payload())
            log.write(
                json.dumps({"event": "val", "step": step, **metrics, "best_val_loss_full": best}) + "\n"
            )
            log.flush()
            print(f"step {step}/{args.steps} {metrics}", flush=True)
        stopping = stop_at is not None and time.time() >= stop_at and step < args.steps
        if time.time() - last_save > 60 * args.checkpoint_minutes or step == args.steps or stopping:
            _save(last_path, payload())
            last_save = time.time()
        if stopping:
            log.write(json.dumps({"event": "stopped", "step": step, "steps_this_run": step - first_step,
                                  "elapsed_s": round(time.time() - started, 1), "time": time.time()}) + "\n")
            log.close()
            print(f"stopped after {args.stop_after_minutes} min at step {step}/{args.steps}; re-run to resume",
                  flush=True)
            return 0
    log.write(
        json.dumps({"event": "done", "step": step, "best_val_loss_full": best, "time": time.time()}) + "\n"
    )
    log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

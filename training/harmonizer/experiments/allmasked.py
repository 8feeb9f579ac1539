"""Experiment: train the harmonizer on the run-time task only (issue 16).

The shipped decoding predicts every chord of a window from one call with every chord masked and
no affect given. This trainer optimizes exactly that: every chord of every training window is
masked (no curriculum), the valence/arousal input is always zeros (it is read from the chords, so
it would give the answer away), lead sheets only (OpenEWLD + POP909, the committed train lists),
the shipped architecture and input interface (so ``training.harmonizer.export`` exports it and
every runtime path runs it unchanged). ``--class-weight W`` adds W x the cross-entropy of the
chord's root + third class (the probability of a class is the sum over its tokens), the unit the
agreement metric counts. Checkpoints have ``train.py``'s layout (``last.pt``, ``best.pt`` by the
all-masked validation loss, ``log.jsonl``).

    python -m training.harmonizer.experiments.allmasked --steps 6000 --out RUNS/allmasked [--class-weight 1]

Results: docs/harmonizer.md, "Training on the run-time task".
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engines.harmonizer.dataset import DEFAULT_CACHE
from engines.harmonizer.grid import GridConfig
from engines.harmonizer.leadsheet_metrics import labels
from engines.harmonizer.vocab import PAD, VOCAB_SIZE

from ..curriculum import apply_to_batch
from ..model import Harmonizer, ModelConfig, parameter_count
from ..sources import load_training_data
from ..train import _batch_tensors, _learning_rate, _save, add_model_options, evaluate

CURRICULUM = "allmasked"
_CLASS_OF = labels(np.arange(VOCAB_SIZE), "majmin")
_CLASSES = int(_CLASS_OF.max()) + 1


def class_log_probs(logits: torch.Tensor, membership: torch.Tensor) -> torch.Tensor:
    """[B, L, V] logits -> [B, L, C] log-probabilities of the root + third classes (``membership``: [V, C] 0/1)."""
    return (logits.softmax(-1) @ membership).clamp_min(1e-9).log()


def _membership() -> torch.Tensor:
    table = torch.zeros(VOCAB_SIZE, _CLASSES)
    for token, klass in enumerate(_CLASS_OF):
        if klass >= 0:
            table[token, klass] = 1.0
    return table


@torch.no_grad()
def class_accuracy(model: Harmonizer, harmony: np.ndarray, windows, membership: torch.Tensor) -> dict[str, float]:
    """All-masked, no affect: share of the chord positions whose class is the argmax token's
    class (``token``) and the most likely class (``class``)."""
    model.eval()
    hits_token = hits_class = total = 0
    for start in range(0, len(harmony), 64):
        index = np.arange(start, min(len(harmony), start + 64))
        inputs, _ = apply_to_batch(harmony[index], np.zeros(harmony.shape[1], bool), np.ones(harmony.shape[1], bool))
        logits = model(*_batch_tensors(windows, index, inputs, np.zeros(len(index), bool)))
        truth = _CLASS_OF[harmony[index]]
        counted = truth >= 0
        token_class = _CLASS_OF[logits.argmax(-1).numpy()]
        best_class = class_log_probs(logits, membership).argmax(-1).numpy()
        hits_token += int((token_class == truth)[counted].sum())
        hits_class += int((best_class == truth)[counted].sum())
        total += int(counted.sum())
    model.train()
    return {"class_acc_token": hits_token / max(1, total), "class_acc_marginal": hits_class / max(1, total)}


def from_onnx(path: str) -> tuple[Harmonizer, ModelConfig]:
    """The torch model of an exported joint harmonizer, its weights read back from the ONNX
    initializers (the trace keeps the parameter names of biases, embeddings and norms; the matrix
    weights come transposed and unnamed in module order, and the three segment rows folded into
    constants: melody, harmony, condition). Checked against the file's parity example."""
    import onnx
    from onnx import numpy_helper

    from engines.harmonizer.runtime import HarmonizerModel

    card = HarmonizerModel.load(path).card
    config = ModelConfig(**{k: v for k, v in card["model"].items() if k != "parameters"})
    model = Harmonizer(config).eval()
    initializers = {i.name: numpy_helper.to_array(i) for i in onnx.load(path).graph.initializer}
    anonymous = [initializers[name] for name in sorted((n for n in initializers if n.startswith("onnx::")),
                                                       key=lambda n: int(n.rsplit("_", 1)[1]))]
    matrices = ["melody_in.weight", "affect_in.weight",
                *(f"blocks.{b}.{n}.weight" for b in range(config.layers) for n in ("qkv", "proj", "ff.0", "ff.3")),
                "head.weight"]
    state = model.state_dict()
    state |= {name: torch.from_numpy(value.copy()) for name, value in initializers.items()
              if not name.startswith("onnx::")}
    state |= {name: torch.from_numpy(value.T.copy())
              for name, value in zip(matrices, [a for a in anonymous if a.ndim == 2], strict=True)}
    melody, harmony, condition = [a for a in anonymous if a.ndim == 1]
    state["segment.weight"] = torch.from_numpy(np.stack([condition, melody, harmony]))
    model.load_state_dict(state)
    parity = np.load(Path(path).with_suffix(".parity.npz"))
    with torch.no_grad():
        logits = model(*(torch.from_numpy(parity[k]) for k in ("melody", "harmony", "va", "style", "condition")))
    difference = float(np.abs(logits.numpy() - parity["expected_logits"]).max())
    if difference > 1e-3:
        raise ValueError(f"{path}: weights read back differ from its parity example by {difference:.3g}")
    return model, config


def score_onnx(path: str, cache: Path) -> dict[str, float]:
    """``class_accuracy``'s token figure and the exact-token accuracy of an exported model on the
    same validation windows (all masked, no affect), for comparison with the shipped one."""
    from engines.harmonizer.runtime import HarmonizerModel

    model = HarmonizerModel.load(path)
    val = load_training_data("leadsheets", GridConfig("q4", True, "pc", 80), cache).val
    length = val.harmony.shape[1]
    inputs, loss_mask = apply_to_batch(val.harmony, np.zeros(length, bool), np.ones(length, bool))
    logits = np.concatenate([model.logits_batch(val.melody[i:i + 64].astype(np.float32), inputs[i:i + 64],
                                                np.zeros_like(val.va[i:i + 64]), val.style[i:i + 64],
                                                val.condition[i:i + 64]) for i in range(0, len(val), 64)])
    truth, predicted = _CLASS_OF[val.harmony], logits.argmax(-1)
    chords = loss_mask & (truth >= 0)
    return {"val_acc_full": float((predicted == val.harmony)[loss_mask & (val.harmony != PAD)].mean()),
            "class_acc_token": float((_CLASS_OF[predicted] == truth)[chords].mean())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6000, help="schedule length (cosine to 0.1 x lr)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--init", type=Path, help="start from this checkpoint's weights (a new schedule)")
    parser.add_argument("--init-onnx", help="start from an exported joint model's weights (e.g. the shipped one)")
    parser.add_argument("--live-share", type=float, default=0.0,
                        help="share of the batches with a random prefix of the chords given (the live task)")
    parser.add_argument("--score-onnx", help="only print the validation accuracies of this exported model")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--weights", default="openewld=1,pop909=2", help="share of the batches per source")
    add_model_options(parser, lr=1e-3)
    parser.add_argument("--encoder", choices=("joint", "melody"), default="joint",
                        help="joint: the shipped masked model; melody: condition + melody positions only")
    parser.add_argument("--class-weight", type=float, default=0.0)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--stop-after-minutes", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.score_onnx:
        print(json.dumps(score_onnx(args.score_onnx, args.cache)))
        return 0
    if args.out is None:
        parser.error("--out is required for training")
    grid = GridConfig("q4", True, "pc", 80)
    try:
        data = load_training_data("leadsheets", grid, args.cache, args.weights)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    config = ModelConfig(roll_dim=grid.roll_dim, length=grid.length, d_model=args.d_model, heads=args.heads,
                         layers=args.layers, feedforward=args.feedforward, dropout=args.dropout,
                         num_styles=len(data.styles), encoder=args.encoder)
    torch.manual_seed(args.seed)
    model = Harmonizer(config)
    if args.init_onnx:
        model, config = from_onnx(args.init_onnx)  # keeps the exported model's size and dropout
    if args.init is not None:
        model.load_state_dict(torch.load(args.init, map_location="cpu", weights_only=False)["model"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    rng = np.random.default_rng(args.seed)
    membership = _membership()
    args.out.mkdir(parents=True, exist_ok=True)
    log = (args.out / "log.jsonl").open("a")
    step, best, started = 0, float("inf"), time.time()

    def payload() -> dict:
        return {"model": model.state_dict(), "step": step, "total_steps": args.steps, "curriculum": CURRICULUM,
                "best_val": best, "model_config": config.to_dict(), "grid": grid.to_dict(),
                "args": {k: str(v) for k, v in vars(args).items()} | {"va_dropout": "1.0"},
                "data": data.summary()}

    log.write(json.dumps({"event": "start", "parameters": parameter_count(model), **data.summary(),
                          "config": payload()["args"], "time": started}) + "\n")
    length = grid.length
    nothing = np.zeros(length, dtype=bool)
    running = 0.0
    model.train()
    while step < args.steps:
        index = data.sample(rng, args.batch)
        harmony = data.train.harmony[index]
        visible = nothing
        if args.live_share > 0 and rng.random() < args.live_share:
            visible = np.arange(length) < rng.integers(0, length)
        inputs, loss_mask = apply_to_batch(harmony, visible, ~visible)
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(step, args.steps, args.lr, args.warmup)
        logits = model(*_batch_tensors(data.train, index, inputs, np.zeros(len(index), dtype=bool)))
        mask = torch.from_numpy(loss_mask)
        targets = torch.from_numpy(harmony)
        loss = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")[mask].mean()
        if args.class_weight > 0:
            truth = torch.from_numpy(_CLASS_OF[harmony])
            counted = mask & (truth >= 0)
            if counted.any():
                class_loss = -class_log_probs(logits, membership).gather(-1, truth.clamp(min=0)[..., None])[..., 0]
                loss = loss + args.class_weight * class_loss[counted].mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        running += loss.item()
        step += 1
        if step % 100 == 0:
            log.write(json.dumps({"event": "train", "step": step, "loss": running / 100,
                                  "elapsed_s": round(time.time() - started, 1)}) + "\n")
            log.flush()
            running = 0.0
        stopping = args.stop_after_minutes is not None and time.time() - started >= 60 * args.stop_after_minutes
        if step % args.eval_every == 0 or step == args.steps or stopping:
            metrics = evaluate(model, data.val, zero_va=True)
            metrics |= class_accuracy(model, data.val.harmony, data.val, membership)
            if metrics["val_loss_full"] < best:
                best = metrics["val_loss_full"]
                _save(args.out / "best.pt", payload())
            _save(args.out / "last.pt", payload())
            log.write(json.dumps({"event": "val", "step": step, **metrics,
                                  "elapsed_s": round(time.time() - started, 1)}) + "\n")
            log.flush()
            print(f"step {step}/{args.steps} {time.time() - started:.0f}s "
                  + " ".join(f"{k} {v:.4f}" for k, v in metrics.items()), flush=True)
        if stopping:
            break
    log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Train and export the per-beat chord tagger (``engines/harmonizer/tagger.py``) on the train
lead sheets (OpenEWLD + POP909 committed train lists), one thread, a few minutes.

    python -m training.harmonizer.tagger --out RUNS/tagger            # train, report val accuracy
    python -m training.harmonizer.tagger --out RUNS/tagger --export   # ... and export harmonizer_tagger

Each beat of a song is read in the key ``harmonize`` finds there (``core.keys.section_keys``),
as at run time; its label is the human chord's root + third class in that key's normalized
frame (beats without a chord are left out). Validation songs are only scored, never trained on.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from core.paths import cache_dir
from engines.harmonizer import leadsheet_corpus as lc
from engines.harmonizer import leadsheet_eval as le
from engines.harmonizer.affect import normalizing_shift
from engines.harmonizer.leadsheet_metrics import labels
from engines.harmonizer.tagger import CLASSES, CONTEXT_BEATS, ChordTagger, beat_features
from engines.harmonizer.vocab import VOCAB_SIZE
from training.export import ExportFiles, publish, trace
from training.harmonizer.export import _SOURCES, _leadsheet_splits, portable

NAME = "harmonizer_tagger"
_SHIFTS = np.array([normalizing_shift(code % 12, "minor" if code >= 12 else "major") for code in range(24)])
_CLASS_OF = labels(np.arange(VOCAB_SIZE), "majmin")


def song_arrays(song: le.Song) -> tuple[np.ndarray, np.ndarray]:
    """(features [B, F], label [B]: normalized root * 3 + third class, -1 without a chord)."""
    keys = le.found_keys(song)
    shift = _SHIFTS[keys]
    features = beat_features(song.pitches, song.bar_start, shift, keys >= 12)
    klass = _CLASS_OF[song.human]
    root, third = np.divmod(np.maximum(klass, 0), 3)
    return features, np.where(klass >= 0, ((root + shift) % 12) * 3 + third, -1)


def split_arrays(split: str) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Every labelled beat of a split's songs (train: from the training cache)."""
    if split == "train":
        arrays = lc.load()
        wanted = set(lc.split_ids("openewld", "train")) | set(lc.split_ids("pop909", "train"))
        songs = le.songs_from_arrays(lc.take_songs(
            arrays, [i for i, piece in enumerate(arrays["piece_id"]) if str(piece) in wanted]))
    else:
        songs = le.songs_from_arrays(lc.load_eval_songs(split, lc.DEFAULT_CACHE, None, None, le.EVAL_FIELDS))
    pairs = [song_arrays(song) for song in songs]
    features = np.vstack([f for f, _ in pairs])
    labels = np.concatenate([y for _, y in pairs])
    keep = labels >= 0
    return torch.tensor(features[keep]), torch.tensor(labels[keep]), len(songs)


class Tagger(torch.nn.Module):
    """Two hidden layers with ReLU and dropout; outputs log-probabilities of the 36 classes."""

    def __init__(self, features: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(features, hidden), torch.nn.ReLU(), torch.nn.Dropout(dropout),
            torch.nn.Linear(hidden, hidden), torch.nn.ReLU(), torch.nn.Dropout(dropout),
            torch.nn.Linear(hidden, CLASSES))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.net(features), -1)


def train(args: argparse.Namespace) -> tuple[Tagger, dict]:
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    started = time.time()
    x, y, songs = split_arrays("train")
    vx, vy, val_songs = split_arrays("val")
    model = Tagger(x.shape[1], args.hidden, args.dropout)
    optimizer = torch.optim.Adam(model.parameters(), args.lr, weight_decay=args.weight_decay)
    log = []
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(x))
        for first in range(0, len(x), args.batch):
            rows = order[first: first + args.batch]
            loss = torch.nn.functional.nll_loss(model(x[rows]), y[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            out = model(vx)
            record = {"epoch": epoch + 1, "val_loss": float(torch.nn.functional.nll_loss(out, vy)),
                      "val_class_acc": float((out.argmax(1) == vy).float().mean()),
                      "elapsed_s": round(time.time() - started, 1)}
        log.append(record)
        print(json.dumps(record), flush=True)
    summary = {"train_songs": songs, "train_beats": len(x), "val_songs": val_songs, "val_beats": len(vx),
               "features": int(x.shape[1]), "log": log}
    return model, summary


def export(model: Tagger, summary: dict, args: argparse.Namespace, out_dir: Path) -> dict:
    files = ExportFiles.staged(out_dir, NAME)
    model.eval()
    example = split_arrays("val")[0][:64]
    trace(model, [example], files.onnx, ["features"], ["log_probs"], {"features": {0: "beats"},
                                                                        "log_probs": {0: "beats"}})
    with torch.no_grad():
        expected = model(example).numpy()

    def verify(onnx_path: Path) -> dict[str, float]:
        tagger = ChordTagger.load(onnx_path)
        return {"ort_vs_torch": float(np.abs(tagger.log_probs(example.numpy()) - expected).max())}

    body = {
        "features": {"count": summary["features"], "context_beats": list(CONTEXT_BEATS),
                     "doc": "engines/harmonizer/tagger.py beat_features"},
        "classes": {"count": CLASSES, "order": "root * 3 + (major third, minor third, no third), "
                                               "key-normalized frame (C major / A minor)"},
        "inputs": [{"name": "features", "shape": ["beats", summary["features"]], "dtype": "float32"}],
        "outputs": [{"name": "log_probs", "shape": ["beats", CLASSES], "dtype": "float32"}],
        "model": {"hidden": args.hidden, "layers": 2, "dropout": args.dropout,
                  "parameters": sum(p.numel() for p in model.parameters())},
        "data": {"sources": {name: _SOURCES[name] for name in ("openewld", "pop909")},
                 "splits": _leadsheet_splits(("openewld", "pop909"), lc.SPLITS_DIR),
                 "train_beats": summary["train_beats"], "val_beats": summary["val_beats"]},
        "training": {"trainer": "training/harmonizer/tagger.py", "curriculum": "per-beat cross-entropy",
                     "step": args.epochs * -(-summary["train_beats"] // args.batch),
                     "args": {key: portable(value) for key, value in vars(args).items()},
                     "epochs": args.epochs, "finished": True, "log": summary["log"]},
        "used_by": "harmonizer's offline decoding (strategy tagged, docs/harmonizer.md); not the live engine",
    }
    return publish(files, "per-beat chord tagger (root + third) for the offline harmonizer", body,
                   {"features": example.numpy(), "expected_log_probs": expected}, {}, verify)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=cache_dir() / "harmonizer" / "runs" / "tagger")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-5)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--export", action="store_true", help="export onnx_models/harmonizer_tagger.*")
    parser.add_argument("--export-dir", type=Path, default=Path(__file__).resolve().parents[2] / "onnx_models")
    parser.add_argument("--checkpoint", type=Path, help="export this trained tagger.pt instead of training")
    args = parser.parse_args(argv)
    if args.checkpoint:
        saved = torch.load(args.checkpoint, weights_only=False)
        summary = saved["summary"]
        for key in ("epochs", "hidden", "dropout", "lr", "weight_decay", "batch", "seed", "out"):
            setattr(args, key, saved["args"][key])
        model = Tagger(summary["features"], args.hidden, args.dropout)
        model.load_state_dict(saved["state"])
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        model, summary = train(args)
        torch.save({"state": model.state_dict(), "summary": summary, "args": vars(args) | {"out": str(args.out)}},
                   args.out / "tagger.pt")
    if args.export:
        card = export(model, summary, args, args.export_dir)
        print(f"exported {NAME}: sha256 {card['sha256'][:12]}..., parity {card['parity']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Decode held-out windows with the ONNX model and score them against the ground truth.

    python -m engines.harmonizer.evaluate --model onnx_models/harmonizer.onnx --split test \
        --strategies certain start random stages10 midpoint entropic --out /work/runs/harmonizer/eval/ff.json

numpy + onnxruntime only (the raw cache is read with numpy).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from .dataset import DEFAULT_CACHE, load_raw, make_windows
from .decode import STRATEGIES, fill_masks
from .metrics import all_metrics, chords_from_tokens, mean_absolute_errors, melody_from_grid
from .runtime import HarmonizerModel
from .vocab import BAR, MASK, PAD

__all__ = ["score_window", "evaluate_strategy", "main"]


def score_window(
    tokens: np.ndarray,
    truth: np.ndarray,
    melody_pitch: np.ndarray,
    melody_onset: np.ndarray,
    step_beats: float,
) -> dict[str, float]:
    """Metrics of one harmony row over the window's real (non-pad) positions."""
    real = truth != PAD
    is_bar = truth[real] == BAR
    melody = melody_from_grid(melody_pitch[real], melody_onset[real], step_beats, is_bar=is_bar)
    chords = chords_from_tokens(tokens[real], step_beats)
    bar_onsets = [float(np.count_nonzero(~is_bar[:i]) * step_beats) for i in np.flatnonzero(is_bar)] or [0.0]
    return all_metrics(melody, chords, bar_onsets)


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = rows[0].keys() if rows else []
    return {
        k: float(np.nanmean([r[k] for r in rows])) if any(np.isfinite(r[k]) for r in rows) else float("nan")
        for k in keys
    }


def evaluate_strategy(
    model: HarmonizerModel, windows, strategy: str, calls: int, seed: int, limit: int | None
) -> dict:
    """Decode every window (all chords masked; bars and padding given) and compare with the truth."""
    rng = np.random.default_rng(seed)
    step_beats = 1.0 if model.grid.grid == "q4" else 0.25
    generated, truth_rows, call_counts, seconds = [], [], [], []
    count = len(windows) if limit is None else min(limit, len(windows))
    for index in range(count):
        truth = windows.harmony[index]
        start_row = np.where(np.isin(truth, [BAR, PAD]), truth, MASK)
        sounding = np.flatnonzero(windows.melody_pitch[index] >= 0)
        last_melody = int(sounding[-1]) if len(sounding) else -1

        def logits_fn(harmony: np.ndarray, i: int = index) -> np.ndarray:
            return model.logits(
                windows.melody[i], harmony, windows.va[i], int(windows.style[i]), windows.condition[i]
            )

        started = time.perf_counter()
        result = fill_masks(logits_fn, start_row, last_melody, strategy, rng, calls=calls)
        seconds.append(time.perf_counter() - started)
        call_counts.append(result.calls)
        pitch, onset = windows.melody_pitch[index], windows.melody_onset[index]
        generated.append(score_window(result.harmony, truth, pitch, onset, step_beats))
        truth_rows.append(score_window(truth, truth, pitch, onset, step_beats))
    return {
        "strategy": strategy,
        "windows": count,
        "mean_calls": float(np.mean(call_counts)),
        "mean_decode_s": float(np.mean(seconds)),
        "generated": _mean(generated),
        "ground_truth": _mean(truth_rows),
        "mae": mean_absolute_errors(generated, truth_rows),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=Path("onnx_models/harmonizer.onnx"))
    parser.add_argument("--split", default="test", choices=["val", "test"])
    parser.add_argument(
        "--strategies",
        nargs="+",
        default=["certain", "start", "random", "stages10", "midpoint", "entropic"],
        choices=STRATEGIES,
    )
    parser.add_argument("--calls", type=int, default=10, help="model calls for stages10 / entropic")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N windows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--update-card", action="store_true", help="store the summary under 'evaluation' in the model card"
    )
    args = parser.parse_args(argv)
    model = HarmonizerModel.load(args.model)
    windows = make_windows(load_raw(args.cache), model.grid, args.split)
    report = {
        "model": str(args.model),
        "training": model.card.get("training", {}),
        "split": args.split,
        "results": [],
    }
    for strategy in args.strategies:
        result = evaluate_strategy(model, windows, strategy, args.calls, args.seed, args.limit)
        report["results"].append(result)
        print(
            json.dumps(
                {k: result[k] for k in ("strategy", "windows", "mean_calls", "mean_decode_s")}
                | {
                    "CHE": result["generated"]["CHE"],
                    "CC": result["generated"]["CC"],
                    "CTnCTR": result["generated"]["CTnCTR"],
                    "PCS": result["generated"]["PCS"],
                }
            ),
            flush=True,
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    if args.update_card:
        card_path = args.model.with_suffix(".card.json")
        card = json.loads(card_path.read_text())
        card["evaluation"] = {
            "split": args.split,
            "protocol": "all chords masked, bars and padding given; nucleus T 0.2 p 0.9; seed "
            f"{args.seed}; {args.calls} calls for stages10/entropic",
            "results": report["results"],
        }
        card_path.write_text(json.dumps(card, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

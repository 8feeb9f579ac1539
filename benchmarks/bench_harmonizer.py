"""Latency of the exported harmonizer: one ORT call (batch 1, one thread) and whole decodes.

python benchmarks/bench_harmonizer.py --model onnx_models/harmonizer.onnx --calls 500
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from engines.harmonizer.decode import fill_masks
from engines.harmonizer.runtime import HarmonizerModel
from engines.harmonizer.vocab import BAR, MASK


def percentiles(seconds: list[float]) -> dict[str, float]:
    values = np.array(seconds) * 1e3
    return {
        "p50_ms": float(np.percentile(values, 50)),
        "p99_ms": float(np.percentile(values, 99)),
        "max_ms": float(values.max()),
        "n": len(values),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=Path("onnx_models/harmonizer.onnx"))
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--decodes", type=int, default=10)
    args = parser.parse_args()
    model = HarmonizerModel.load(args.model)
    card = json.loads(args.model.with_suffix(".card.json").read_text())
    with np.load(args.model.parent / card["parity"]["file"]) as data:
        example = {key: data[key][0] for key in data.files}
    melody, va, condition = example["melody"], example["va"], example["condition"]
    style = int(example["style"])
    harmony = example["harmony"]
    for _ in range(20):
        model.logits(melody, harmony, va, style, condition)
    seconds = []
    for _ in range(args.calls):
        started = time.perf_counter()
        model.logits(melody, harmony, va, style, condition)
        seconds.append(time.perf_counter() - started)
    report = {
        "model": str(args.model),
        "step": card["training"]["step"],
        "parameters": card["model"]["parameters"],
        "length": model.length,
        "single_call": percentiles(seconds),
        "decode": {},
    }
    start = np.where(harmony == BAR, BAR, MASK)
    last_melody = int(np.flatnonzero(melody[:, :12].sum(1) > 0).max())
    rng = np.random.default_rng(0)
    for strategy in ("certain", "start", "stages10", "midpoint", "entropic"):
        times, calls = [], []
        for _ in range(args.decodes):
            started = time.perf_counter()
            result = fill_masks(
                lambda h: model.logits(melody, h, va, style, condition), start, last_melody, strategy, rng
            )
            times.append(time.perf_counter() - started)
            calls.append(result.calls)
        report["decode"][strategy] = percentiles(times) | {"calls": float(np.mean(calls))}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

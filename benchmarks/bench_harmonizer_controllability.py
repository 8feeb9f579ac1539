"""The harmonizer part of the controllability sweep (issue 7) alone, on the shipped model or a file.

    .venv/bin/python -m benchmarks.bench_harmonizer_controllability [--windows 60] [--model PATH] \
        [--out benchmarks/results/controllability-harmonizer-DATE.json]

Runs `benchmarks.bench_controllability.harmonizer_sweep` (the lead's sweep: constant valence or
arousal in -0.8..0.8 over held-out test chorale windows, entropic schedule, 10 calls; proxies
major-chord share and chord changes per bar; CTnCTR and PCS against the neutral run) without the
continuation part. Sampling follows the model card (calibrated temperature) unless
--temperature is given. Writes the result with the machine, date and load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from benchmarks.bench_controllability import harmonizer_sweep
from core.atomic import atomic_output
from engines.harmonizer.runtime import HarmonizerModel

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=60, help="held-out test windows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", type=Path, help="an .onnx file instead of the shipped harmonizer")
    parser.add_argument("--temperature", type=float, help="override the card's sampling temperature")
    parser.add_argument("--out", type=Path, help="write the JSON here")
    args = parser.parse_args()
    model = HarmonizerModel.load(args.model) if args.model else HarmonizerModel.named("harmonizer")
    if args.temperature is not None:
        model.card["decoding"] = model.card.get("decoding", {}) | {"temperature": args.temperature}
    original = HarmonizerModel.named
    HarmonizerModel.named = classmethod(lambda cls, name, threads=1: model)  # the sweep loads by name
    started = time.time()
    load_before = os.getloadavg()
    try:
        sweep = harmonizer_sweep(args.windows, args.seed)
    finally:
        HarmonizerModel.named = original
    report = {
        "command": "python -m benchmarks.bench_harmonizer_controllability "
                   f"--windows {args.windows} --seed {args.seed}"
                   + (f" --model {args.model}" if args.model else "")
                   + (f" --temperature {args.temperature}" if args.temperature is not None else ""),
        "machine": f"{platform.node()} ({os.cpu_count()} cores, {platform.machine()})",
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "model": str(model.path), "sha256": model.card["sha256"],
        "temperature": model.temperature, "top_p": model.top_p,
        "load_before": load_before, "load_after": os.getloadavg(),
        "seconds": round(time.time() - started, 1),
        "harmonizer": sweep,
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        with atomic_output(args.out) as temporary:
            temporary.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

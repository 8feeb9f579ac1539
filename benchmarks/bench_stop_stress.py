"""Transport stops at random points under full CPU load, 500 in a row (tests/stop_stress.py).

    .venv/bin/python benchmarks/bench_stop_stress.py [--stops 500] [--seed 15] [--hogs N]

The harmonizer's clip loop plays in the bridge's router, worker, scheduler and tracker threads
while one CPU hog per core runs; each cycle is START, a random number of clock ticks, STOP.
It passes when no note sounds 100 ms after any STOP (and none starts later). The result goes
to benchmarks/results/stop-stress.json; exit 1 on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.stop_stress import LIMIT_S, TEMPO_BPM, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stops", type=int, default=500, help="STOPs in a row (default 500)")
    parser.add_argument("--seed", type=int, default=15, help="random seed of the stop points")
    parser.add_argument("--hogs", type=int, default=None, help="CPU hogs (default: one per core)")
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "benchmarks" / "results" / "stop-stress.json")
    args = parser.parse_args(argv)
    if args.stops < 1:
        parser.error("--stops must be at least 1")
    result = run(args.stops, args.seed, args.hogs, progress=lambda line: print(line, flush=True))
    report = {**asdict(result), "failures": result.failures[:50], "failed": len(result.failures),
              "passed": result.passed, "tempo_bpm": TEMPO_BPM, "limit_ms": LIMIT_S * 1000,
              "seed": args.seed, "cpus": os.cpu_count(), "python": platform.python_version(),
              "date": time.strftime("%Y-%m-%d")}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{result.stops} stops ({result.stops_with_chords} with the loop playing), "
          f"{len(result.failures)} failed, {result.seconds:.0f} s, {result.hogs} CPU hogs: "
          f"{'PASS' if result.passed else 'FAIL'} -> {args.output}")
    for line in result.failures[:10]:
        print(line)
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())

"""Two harmonizer models side by side: where a live decision's time goes, and whether one model
costs more than the other.

    .venv/bin/python -m benchmarks.harmonizer_decision_compare --baseline TREE [--rounds 3] [--out FILE]

TREE is another checkout of the project (e.g. ``git archive COMMIT | tar -x -C TREE``) whose
``onnx_models/harmonizer.onnx`` is the baseline model.

  ort       one ONNX Runtime call of each model (one thread, a batch of 40 windows of 40
            positions), the two sessions alternated 400 times in one process
  decide    ``harmonizer_engine_latency.decide`` (400 live decisions, 4/4, rhythm auto) in each
            tree, in a fresh process per tree, the trees alternated ``--rounds`` times
  profile   cProfile of 400 decisions in this tree: total, ORT's share, the largest Python items
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
ORT_RUNS = 400
DECISIONS = 400
_DECIDE = ("import json, sys; sys.path.insert(0, '.'); from benchmarks.harmonizer_engine_latency import decide; "
           f"decide(100); print(json.dumps(decide({DECISIONS})['decision_ms']))")


def ort_side_by_side(ours: Path, baseline: Path) -> dict:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    sessions = {name: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                for name, path in (("this tree", ours), ("baseline", baseline))}
    rng = np.random.default_rng(0)
    feeds = {}
    for item in sessions["this tree"].get_inputs():
        shape = [size if isinstance(size, int) else 40 for size in item.shape]
        feeds[item.name] = (rng.integers(0, 2, size=shape).astype(np.int64) if "int" in item.type
                            else np.zeros(shape, np.float32))
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for session in sessions.values():
        session.run(None, feeds)
    for _ in range(ORT_RUNS):
        for name, session in sessions.items():
            started = time.perf_counter()
            session.run(None, feeds)
            times[name].append(time.perf_counter() - started)
    return {name: _stats_ms(values) for name, values in times.items()}


def decide_alternated(baseline_tree: Path, rounds: int) -> dict:
    runs: dict[str, list[dict]] = {"this tree": [], "baseline": []}
    for _ in range(rounds):
        for name, tree in (("this tree", ROOT), ("baseline", baseline_tree)):
            out = subprocess.run([sys.executable, "-c", _DECIDE], cwd=tree, capture_output=True, text=True,
                                 check=True, timeout=300)
            runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    return runs


def profile_decisions() -> dict:
    from benchmarks.harmonizer_engine_latency import decide

    decide(100)
    profiler = cProfile.Profile()
    profiler.enable()
    decide(DECISIONS)
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # (file, line, name) -> (calls, primitive, own, cumulative, callers)
    total = sum(own for _, _, own, _, _ in stats.values())
    ort = sum(own for (_, _, name), (_, _, own, _, _) in stats.items() if "onnxruntime" in name and ".run" in name)
    ours = sorted(((cumulative, f"{Path(file).name}:{name}") for (file, _, name), (_, _, _, cumulative, _)
                   in stats.items() if str(ROOT / "engines") in file), reverse=True)
    return {"total_s": round(total, 3), "onnxruntime_run_s": round(ort, 3),
            "engines_cumulative_s": {label: round(seconds, 3) for seconds, label in ours[:12]}}


def _stats_ms(values: list[float]) -> dict:
    ms = np.asarray(values) * 1000.0
    return {"count": len(ms), "p50": round(float(np.percentile(ms, 50)), 3),
            "p99": round(float(np.percentile(ms, 99)), 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="another project tree (its harmonizer model)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks" / "results" / "harmonizer_decision_compare.json")
    args = parser.parse_args(argv)
    baseline_model = args.baseline / "onnx_models" / "harmonizer.onnx"
    if not baseline_model.is_file():
        parser.error(f"{baseline_model} not found: --baseline names a project tree")
    result = {"date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "cpus": os.cpu_count(),
              "load_before": [round(x, 2) for x in os.getloadavg()], "baseline": str(args.baseline)}
    result["ort"] = ort_side_by_side(ROOT / "onnx_models" / "harmonizer.onnx", baseline_model)
    result["decide"] = decide_alternated(args.baseline, args.rounds)
    result["profile"] = profile_decisions()
    result["load_after"] = [round(x, 2) for x in os.getloadavg()]
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Harmonizer speed on one core: live per-beat decision, 16-bar clip, ORT vs torch eager.

    python benchmarks/bench_harmonizer.py --model onnx_models/harmonizer.onnx \
        --out benchmarks/results/harmonizer-DATE.json

- live: one per-beat decision as the live engine makes it: the window holds the melody played
  so far and the chords already decided, `<mask>` at the current beat; with a dynamic-length
  graph the window is the card's `live_length` positions ending at the current beat (starting
  on a bar), with a fixed graph the whole window with the later steps silent and masked; one
  ORT call through `runtime.HarmonizerModel` plus sampling the current beat's chord.
- clip: `harmonize.harmonize` of a 16-bar 4/4 melody (one window) with the entropic schedule
  (10 calls), everything included (key detection, windows, decoding).
- ort_vs_torch: the same module in torch eager (inference mode, one thread) and exported to
  ONNX Runtime (the runtime's session options, dynamic length axis like the shipped graph), calls
  interleaved so both see the same load, at the offline window L and at the live window.
  The weights are the checkpoint's when --checkpoint is given, else seeded: timing does not
  depend on the values. Needs torch (the `train` extra); skipped with a note without it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from core.atomic import atomic_output
from engines.harmonizer.decode import allowed_tokens, nucleus_sample
from engines.harmonizer.harmonize import harmonize
from engines.harmonizer.runtime import HarmonizerModel
from engines.harmonizer.vocab import BAR, MASK

NAMES = ("melody", "harmony", "va", "style", "condition")


def stats(seconds: list[float]) -> dict[str, float]:
    values = np.array(seconds) * 1e3
    return {
        "p50_ms": round(float(np.percentile(values, 50)), 3),
        "p99_ms": round(float(np.percentile(values, 99)), 3),
        "max_ms": round(float(values.max()), 3),
        "n": len(values),
    }


def machine() -> dict:
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": name, "cores": os.cpu_count(), "python": platform.python_version()}


def live_window(example: dict, position: int, length: int) -> tuple[slice, int]:
    """The live window of the beat at `position`: at most `length` positions ending there,
    starting on a bar (as `harmonize.next_chords` cuts it); returns (slice, index of the beat)."""
    truth = example["harmony"]
    start = max(0, position + 1 - length)
    if start > 0:
        bars = np.flatnonzero(truth[start : position + 1] == BAR)
        if len(bars) and start + bars[0] < position:
            start += int(bars[0])
    return slice(start, position + 1), position - start


def live_decisions(model: HarmonizerModel, example: dict, count: int) -> dict:
    """One decision per beat of the example window, cycling; only beats whose live window is
    full (steady state, at least live_length - 4 positions) are timed."""
    melody, truth = example["melody"], example["harmony"]
    va, style, condition = example["va"], int(example["style"]), example["condition"]
    length = model.live_length
    beats = [int(p) for p in np.flatnonzero(truth != BAR) if p + 1 >= length]
    if not model.dynamic_length:  # a fixed graph: the whole window, the future silent and masked
        beats = [int(p) for p in np.flatnonzero(truth != BAR)]
    call_s, decision_s, sizes = [], [], []
    rng = np.random.default_rng(0)
    for _ in range(20):
        model.logits(melody, np.where(truth == BAR, BAR, MASK), va, style, condition)
    for index in range(count):
        position = beats[index % len(beats)]
        if model.dynamic_length:
            cut, current = live_window(example, position, length)
            window, harmony = melody[cut], np.where(truth[cut] == BAR, BAR, truth[cut])
            harmony[current] = MASK
            window_va = va[cut]
        else:
            current, window, window_va = position, melody.copy(), va
            window[position + 1 :, :12] = 0  # the future melody is not played yet
            harmony = np.where((truth == BAR) | (np.arange(len(truth)) < position), truth, MASK)
        started = time.perf_counter()
        logits = model.logits(window, harmony, window_va, style, condition)
        called = time.perf_counter()
        allowed = allowed_tokens(1, 0)[0]  # the current beat: any chord, no <pad>/<nc>
        nucleus_sample(logits[current], allowed, rng)
        finished = time.perf_counter()
        call_s.append(called - started)
        decision_s.append(finished - started)
        sizes.append(len(harmony))
    return {"window_positions": {"live_length": length, "min": min(sizes), "max": max(sizes),
                                 "mean": round(float(np.mean(sizes)), 1)},
            "ort_call": stats(call_s), "decision": stats(decision_s)}


def clip_16_bars(model: HarmonizerModel, example: dict, count: int, calls: int) -> dict:
    """16 bars of 4/4, one note per beat: the example window's melody pitch classes in octave 4,
    repeated to 64 beats (a rest where the example has none)."""
    truth, roll = example["harmony"], example["melody"]
    pcs = roll[truth != BAR, :12]
    pitch = np.resize(np.where(pcs.any(1), 60 + pcs.argmax(1), -1), 64)
    bar_start = (np.arange(64) % 4 == 0).astype(np.uint8)
    seconds, used = [], []
    rng = np.random.default_rng(0)
    for index in range(count + 5):
        started = time.perf_counter()
        result = harmonize(model, pitch, bar_start, (4, 4), strategy="entropic", calls=calls, rng=rng)
        if index >= 5:
            seconds.append(time.perf_counter() - started)
            used.append(result.calls)
    return {"beats": int(len(pitch)), "bars": int(bar_start.sum()), "calls": float(np.mean(used))} | stats(seconds)


def ort_vs_torch(model: HarmonizerModel, example: dict, count: int, checkpoint: Path | None) -> dict:
    try:
        import onnxruntime as ort
        import torch

        from training.harmonizer.model import Harmonizer, ModelConfig
    except ImportError as error:
        return {"skipped": f"torch not installed ({error}); pip install -e .[train]"}
    torch.set_num_threads(1)
    torch.manual_seed(0)
    if checkpoint is not None:
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        module = Harmonizer(ModelConfig(**state["model_config"]))
        module.load_state_dict(state["model"])
    else:
        fields = ModelConfig.__dataclass_fields__
        module = Harmonizer(ModelConfig(**{k: v for k, v in model.card["model"].items() if k in fields}))
    module.eval()
    results = {"weights": str(checkpoint) if checkpoint else "seeded (same architecture as the card)"}
    lengths = sorted({model.length, model.live_length}, reverse=True)
    with tempfile.TemporaryDirectory() as folder, torch.inference_mode():
        path = Path(folder) / "same.onnx"
        axes = {name: {0: "batch", 1: "length"} for name in ("melody", "harmony", "va", "logits")}
        torch.onnx.export(module, _torch_inputs(example, model.length), str(path), input_names=list(NAMES),
                          output_names=["logits"], opset_version=17, dynamo=False,
                          dynamic_axes=axes | {"style": {0: "batch"}, "condition": {0: "batch"}})
        session = ort.InferenceSession(str(path), _session_options(ort), providers=["CPUExecutionProvider"])
        for length in lengths:
            inputs = _torch_inputs(example, length)
            feed = {name: tensor.numpy() for name, tensor in zip(NAMES, inputs)}
            difference = float(np.abs(session.run(None, feed)[0] - module(*inputs).numpy()).max())
            torch_s, ort_s = [], []
            for index in range(count + 20):
                started = time.perf_counter()
                module(*inputs)
                middle = time.perf_counter()
                session.run(None, feed)
                finished = time.perf_counter()
                if index >= 20:
                    torch_s.append(middle - started)
                    ort_s.append(finished - middle)
            torch_stats, ort_stats = stats(torch_s), stats(ort_s)
            results[f"length_{length}"] = {
                "max_abs_difference": difference,
                "torch_eager": torch_stats,
                "ort": ort_stats,
                "speedup_p50": round(torch_stats["p50_ms"] / ort_stats["p50_ms"], 2),
                "speedup_p99": round(torch_stats["p99_ms"] / ort_stats["p99_ms"], 2),
            }
    live = results[f"length_{model.live_length}"]
    return results | {"live_length": model.live_length, "speedup_p50": live["speedup_p50"],
                      "speedup_p99": live["speedup_p99"]}


def _torch_inputs(example: dict, length: int) -> tuple:
    """The example's first `length` positions (the last one masked when cut) as torch tensors."""
    import torch

    harmony = example["harmony"][:length].copy()
    if length < len(example["harmony"]) and harmony[-1] != BAR:
        harmony[-1] = MASK
    return (
        torch.from_numpy(example["melody"][None, :length].astype(np.float32)),
        torch.from_numpy(harmony[None].astype(np.int64)),
        torch.from_numpy(example["va"][None, :length].astype(np.float32)),
        torch.tensor([int(example["style"])]),
        torch.from_numpy(example["condition"][None].astype(np.float32)),
    )


def _session_options(ort):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("onnx_models/harmonizer.onnx"))
    parser.add_argument("--checkpoint", type=Path, help="torch weights for the side-by-side (optional)")
    parser.add_argument("--decisions", type=int, default=2000, help="live per-beat decisions to time")
    parser.add_argument("--clips", type=int, default=200, help="16-bar clips to time")
    parser.add_argument("--calls", type=int, default=10, help="entropic schedule calls per clip")
    parser.add_argument("--pairs", type=int, default=1000, help="interleaved torch / ORT calls")
    parser.add_argument("--load-note", default="", help="what else ran on the machine")
    parser.add_argument("--out", type=Path, help="write the JSON result here")
    args = parser.parse_args()
    model = HarmonizerModel.load(args.model)
    with np.load(args.model.parent / model.card["parity"]["file"]) as data:
        example = {key: data[key][0] for key in data.files}
    load_before = os.getloadavg()
    report = {
        "benchmark": "harmonizer",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "model": str(args.model),
        "model_step": model.card.get("training", {}).get("step"),
        "parameters": model.card.get("model", {}).get("parameters"),
        "length": model.length,
        "live_length": model.live_length,
        "live": live_decisions(model, example, args.decisions),
        "clip_16_bars_entropic": clip_16_bars(model, example, args.clips, args.calls),
        "ort_vs_torch": ort_vs_torch(model, example, args.pairs, args.checkpoint),
        "load": {"loadavg_before": load_before, "loadavg_after": os.getloadavg(), "note": args.load_note},
    }
    report["targets"] = {
        "live_decision_p99_le_2ms": report["live"]["decision"]["p99_ms"] <= 2.0,
        "clip_16_bars_p50_le_30ms": report["clip_16_bars_entropic"]["p50_ms"] <= 30.0,
        "ort_2x_torch_p50": report["ort_vs_torch"].get("speedup_p50", 0) >= 2.0,
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        with atomic_output(args.out) as temporary:
            temporary.write_text(text + "\n")


if __name__ == "__main__":
    main()

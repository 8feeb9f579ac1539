"""Forward-pass latency of candidate harmonizer sizes (random weights), torch and ORT, one thread.

Used to choose the model size for CPU real time. Needs torch (training extra).

    python benchmarks/bench_harmonizer_sizes.py --length 80
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from training.harmonizer.model import Harmonizer, ModelConfig, parameter_count

SIZES = ((256, 4, 1024), (192, 3, 768), (128, 4, 512), (128, 3, 512), (96, 2, 384))


def parse_sizes(text: str) -> tuple[tuple[int, int, int], ...]:
    """'96x2x384,128x2x512' -> ((96, 2, 384), (128, 2, 512))."""
    return tuple(tuple(int(v) for v in item.split("x")) for item in text.split(","))  # type: ignore[misc]
NAMES = ("melody", "harmony", "va", "style", "condition")


def timed(function, repeats: int) -> dict[str, float]:
    for _ in range(10):
        function()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - started)
    values = np.array(seconds) * 1e3
    return {
        "p50_ms": round(float(np.percentile(values, 50)), 3),
        "p99_ms": round(float(np.percentile(values, 99)), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--length", type=int, default=80)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--sizes", type=parse_sizes, default=SIZES, help="e.g. 96x2x384,128x2x512")
    args = parser.parse_args()
    torch.set_num_threads(1)
    length = args.length
    inputs = (
        (torch.rand(1, length, 13) > 0.8).float(),
        torch.randint(0, 403, (1, length)),
        torch.rand(1, length, 2),
        torch.zeros(1, dtype=torch.long),
        torch.zeros(1, 16),
    )
    feed = {name: tensor.numpy() for name, tensor in zip(NAMES, inputs)}
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    with tempfile.TemporaryDirectory() as folder:
        for d_model, layers, feedforward in args.sizes:
            model = Harmonizer(
                ModelConfig(length=length, d_model=d_model, layers=layers, feedforward=feedforward)
            ).eval()
            path = Path(folder) / f"{d_model}_{layers}.onnx"
            with torch.no_grad():
                torch.onnx.export(
                    model,
                    inputs,
                    str(path),
                    input_names=list(NAMES),
                    output_names=["logits"],
                    opset_version=17,
                    dynamo=False,
                )
                torch_time = timed(lambda: model(*inputs), args.repeats)
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            ort_time = timed(lambda: session.run(None, feed), args.repeats)
            print(
                json.dumps(
                    {
                        "d_model": d_model,
                        "layers": layers,
                        "feedforward": feedforward,
                        "parameters": parameter_count(model),
                        "length": length,
                        "torch": torch_time,
                        "ort": ort_time,
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()

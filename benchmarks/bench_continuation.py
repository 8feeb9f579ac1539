"""Generation speed of the exported continuation model (ORT, batch 1, one thread).

python benchmarks/bench_continuation.py --model onnx_models/continuation.onnx --tokens 512

Three ways to produce the same number of tokens after a 128-token prompt, side by side:
ORT with the key/value cache (the shipped path), ORT without cache (the whole sequence again
for every token) and torch with the cache (only if torch and the checkpoint are given).
Also: wall time of constrained 8-bar generations (`sample.generate`). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from engines.continuation import tokens as tk
from engines.continuation.runtime import ContinuationModel
from engines.continuation.sample import SamplingConfig, generate


def _prompt(length: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(tk.NOTE_BASE, tk.VOCAB_SIZE, length)


def ort_cached(model: ContinuationModel, prompt: np.ndarray, count: int) -> float:
    zeros = np.zeros((1, 2), np.float32)
    logits, cache = model.run(prompt, np.zeros((len(prompt), 2), np.float32), 0, model.empty_cache())
    started = time.perf_counter()
    for _ in range(count):
        token = int(np.argmax(logits[-1]))
        logits, cache = model.run(np.array([token]), zeros, 0, cache)
    return count / (time.perf_counter() - started)


def ort_uncached(model: ContinuationModel, prompt: np.ndarray, count: int) -> float:
    sequence = list(prompt)
    started = time.perf_counter()
    for _ in range(count):
        logits, _ = model.run(
            np.array(sequence), np.zeros((len(sequence), 2), np.float32), 0, model.empty_cache()
        )
        sequence.append(int(np.argmax(logits[-1])))
    return count / (time.perf_counter() - started)


def torch_cached(checkpoint: Path, prompt: np.ndarray, count: int) -> float:
    import torch

    from engines.continuation.train import load_checkpoint

    torch.set_num_threads(1)
    net, _ = load_checkpoint(checkpoint)
    with torch.no_grad():
        tokens = torch.from_numpy(prompt)[None]
        logits, cache = net(
            tokens, torch.zeros(1, len(prompt), 2), torch.tensor([0]), torch.arange(len(prompt))
        )
        started = time.perf_counter()
        for step in range(count):
            token = logits[0, -1].argmax().view(1, 1)
            position = torch.tensor([len(prompt) + step])
            logits, cache = net(token, torch.zeros(1, 1, 2), torch.tensor([0]), position, cache)
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=Path("onnx_models/continuation.onnx"))
    parser.add_argument("--checkpoint", type=Path, default=None, help="torch checkpoint for the torch column")
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--uncached-tokens", type=int, default=128)
    parser.add_argument("--generations", type=int, default=5)
    args = parser.parse_args()
    model = ContinuationModel.load(args.model)
    prompt = _prompt(128)
    result: dict = {
        "machine": platform.node(),
        "model": str(args.model),
        "prompt_tokens": len(prompt),
        "tokens_per_s": {
            "ort_kv_cache": ort_cached(model, prompt, args.tokens),
            "ort_no_cache": ort_uncached(model, prompt, args.uncached_tokens),
        },
    }
    if args.checkpoint:
        result["tokens_per_s"]["torch_kv_cache"] = torch_cached(args.checkpoint, prompt, args.tokens)
    rates = result["tokens_per_s"]
    result["speedup_cache_vs_no_cache"] = rates["ort_kv_cache"] / rates["ort_no_cache"]
    seconds, lengths = [], []
    start_prompt = [
        tk.SOS,
        tk.BAR,
        tk.VELOCITY_BASE + 18,
        tk.note_token(tk.RIGHT, tk.NOTE_ON, 72),
        tk.note_token(tk.LEFT, tk.NOTE_ON, 48),
        tk.SHIFT_BASE + 47,
        tk.note_token(tk.RIGHT, tk.NOTE_OFF, 72),
        tk.note_token(tk.LEFT, tk.NOTE_OFF, 48),
    ]
    for seed in range(args.generations):
        started = time.perf_counter()
        generation = generate(
            model, start_prompt, bars=8, config=SamplingConfig(seed=seed, top_p=0.95), max_tokens=1500
        )
        seconds.append(time.perf_counter() - started)
        lengths.append(len(generation.tokens))
    result["eight_bars"] = {
        "median_s": float(np.median(seconds)),
        "max_s": float(max(seconds)),
        "median_tokens": float(np.median(lengths)),
        "runs": len(seconds),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

"""Generation speed of the exported continuation model (ORT, batch 1, one thread), side by side.

    python -m benchmarks.bench_continuation [--model onnx_models/continuation.onnx]
        [--checkpoint smart/best.pt] [--sizes 192x4,160x4,128x4] [--out benchmarks/results/x.json]

One run measures, after the same 4-bar prompt:
- ORT with the key/value cache: ``runtime.Decoder.step`` (ring buffer, IO binding), greedy;
- ORT without cache: the whole sequence (up to the 256-token context) again for every token;
- torch with its concatenating cache (the training model's forward), if --checkpoint is given;
- the cost of one constrained sampling step (mask + top-p sampling, numpy);
- wall time of complete constrained 8-bar generations (``sample.generate``, top-p 0.95),
  prompt pass included, over several seeds;
- the live engine's worker time per beat and its slack before the notes it hands out are due
  (120 BPM, look-ahead 0.25 and 0.5 beats);
- with --node-floor (needs onnx): a chain of as many trivial nodes as one cached step runs,
  timed against the step: ORT's fixed cost per node, the floor of a step of that graph;
- with --sizes (needs torch): the cached step time of untrained graphs of other sizes, exported
  the same way, to choose a size for the target (>= 1,000 tokens/s, 8 bars <= 200 ms);
- with --versus ONNX: 8 bars with the defaults by --model and that model, alternating (only that);
- with --baseline DIR [DIR ...] (other checkouts, e.g. `git archive 15c9322 | tar -x -C DIR`):
  8-bar generations of the same seeds by that code and this one, in alternating subprocesses
  (each round runs every tree, so they share the load), for the model alone, the biases that
  commit used by default and each tree's own defaults, with a digest of the tokens (equal
  digests: the same music); wall and CPU time of each generation (the CPU time is less moved by
  other jobs on a shared machine).
Prints JSON and writes it to --out.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort

from engines.continuation import tokens as tk
from engines.continuation.defaults import USER_BIASES, USER_CHORD_VELOCITY
from engines.continuation.offline import prompt_tokens
from engines.continuation.runtime import DEFAULT_SLOTS, ContinuationModel, _step_session
from engines.continuation.sample import (
    Masker,
    SamplingConfig,
    State,
    generate,
    prompt_grid,
    prompt_register,
    sample_token,
)


def bench_prompt() -> list[int]:
    """Four bars of 4/4: right-hand eighth-note arpeggios over left-hand half-note roots."""
    notes = []
    for bar, (root, third, fifth) in enumerate(((60, 64, 67), (57, 60, 64), (53, 57, 60), (55, 59, 62))):
        start = bar * 48
        for index, pitch in enumerate((root, third, fifth, root + 12) * 2):
            notes.append(tk.NoteEvent(start + 6 * index, tk.RIGHT, pitch + 12, 6, 72))
        notes += [
            tk.NoteEvent(start, tk.LEFT, root - 12, 24, 64),
            tk.NoteEvent(start + 24, tk.LEFT, fifth - 24, 24, 64),
        ]
    return prompt_tokens(tk.canonicalize(notes)[0], 48, 4)[0]


def ort_cached(model: ContinuationModel, prompt: list[int], count: int) -> float:
    decoder = model.decoder(0)
    logits = decoder.prefill(np.array(prompt), np.zeros((len(prompt), 2), np.float32))
    started = time.perf_counter()
    for _ in range(count):
        logits = decoder.step(int(np.argmax(logits)))
    return count / (time.perf_counter() - started)


def ort_uncached(model: ContinuationModel, prompt: list[int], count: int, context: int = 256) -> float:
    sequence = list(prompt)
    started = time.perf_counter()
    for _ in range(count):
        window = np.array(sequence[-context:])
        logits = model.logits(window, np.zeros((len(window), 2), np.float32), 0)
        sequence.append(int(np.argmax(logits[-1])))
    return count / (time.perf_counter() - started)


def torch_cached(checkpoint: Path, prompt: list[int], count: int) -> float:
    import torch

    from training.continuation.train import load_checkpoint

    torch.set_num_threads(1)
    net, _ = load_checkpoint(checkpoint)
    with torch.no_grad():
        tokens = torch.tensor(prompt)[None]
        logits, cache = net(
            tokens, torch.zeros(1, len(prompt), 2), torch.tensor([0]), torch.arange(len(prompt))
        )
        started = time.perf_counter()
        for step in range(count):
            token = logits[0, -1].argmax().view(1, 1)
            position = torch.tensor([len(prompt) + step])
            logits, cache = net(token, torch.zeros(1, 1, 2), torch.tensor([0]), position, cache)
    return count / (time.perf_counter() - started)


def sampling_step_us(prompt: list[int], repeats: int = 2000) -> dict[str, float]:
    config = SamplingConfig(top_p=0.95, seed=0)
    masker, state, rng = Masker(config), State(), np.random.default_rng(0)
    for token in prompt + [
        tk.BAR,
        tk.VELOCITY_BASE + 17,
        tk.note_token(tk.RIGHT, tk.NOTE_ON, 76),
        tk.SHIFT_BASE + 2,
    ]:
        state.advance(token)  # mid-bar with a held note: the full mask is computed
    logits = rng.normal(0, 2, tk.VOCAB_SIZE).astype(np.float32)
    started = time.perf_counter()
    for _ in range(repeats):
        allowed = masker(state)
    mask = (time.perf_counter() - started) / repeats
    started = time.perf_counter()
    for _ in range(repeats):
        sample_token(logits, allowed, config, rng)
    return {"mask_us": mask * 1e6, "sample_us": (time.perf_counter() - started) / repeats * 1e6}


def eight_bars(model: ContinuationModel, prompt: list[int], runs: int, user: bool = False) -> dict[str, float]:
    """8-bar generations; ``user``: with `scorebridge continue`'s defaults (the key, rhythm, motif
    and density biases, the prompt's register and grid), whose per-token work is timed too."""
    seconds, lengths = [], []
    for seed in range(runs):
        started = time.perf_counter()
        config = SamplingConfig(seed=seed, top_p=0.95)
        if user:
            config = replace(config, chord_velocity=USER_CHORD_VELOCITY, **USER_BIASES)
            config = prompt_grid(prompt, prompt_register(prompt, config))
        generation = generate(model, prompt, bars=8, config=config, max_tokens=1500)
        seconds.append(time.perf_counter() - started)
        lengths.append(len(generation.tokens))
    return {
        "median_s": float(np.median(seconds)),
        "max_s": float(max(seconds)),
        "median_tokens": float(np.median(lengths)),
        "tokens_per_s_all_in": float(sum(lengths) / sum(seconds)),
        "runs": runs,
    }


def models_side_by_side(models: dict[str, ContinuationModel], prompt: list[int], rounds_: int,
                        generations: int) -> dict[str, dict]:
    """8-bar generations with `continue`'s defaults by each model, alternating round by round in
    this process: wall and CPU time per generation, tokens."""
    seconds: dict[str, list[float]] = {name: [] for name in models}
    cpu: dict[str, list[float]] = {name: [] for name in models}
    tokens: dict[str, list[int]] = {name: [] for name in models}
    for _ in range(rounds_):
        for name, model in models.items():
            for seed in range(generations):
                config = replace(SamplingConfig(seed=seed, top_p=0.95), chord_velocity=USER_CHORD_VELOCITY,
                                 **USER_BIASES)
                config = prompt_grid(prompt, prompt_register(prompt, config))
                started, started_cpu = time.perf_counter(), time.process_time()
                generated = generate(model, prompt, bars=8, config=config, max_tokens=1500)
                seconds[name].append(time.perf_counter() - started)
                cpu[name].append(time.process_time() - started_cpu)
                tokens[name].append(len(generated.tokens))
    return {name: {"path": str(models[name].path), "median_ms": 1000 * float(np.median(seconds[name])),
                   "cpu_median_ms": 1000 * float(np.median(cpu[name])), "max_ms": 1000 * max(seconds[name]),
                   "median_tokens": float(np.median(tokens[name])), "generations": len(seconds[name])}
            for name in models}


def size_sweep(sizes: str, prompt: list[int], count: int, rounds_: int) -> dict[str, dict]:
    """Cached step speed of untrained models of other sizes (same graph, same runtime)."""
    import torch

    from training.continuation.export import export_checkpoint
    from training.continuation.model import ContinuationModel as TorchModel
    from training.continuation.model import ModelConfig

    results = {}
    models = {}
    with tempfile.TemporaryDirectory() as folder:
        for size in sizes.split(","):
            d_model, layers = (int(v) for v in size.split("x"))
            config = ModelConfig(d_model=d_model, layers=layers, feedforward=4 * d_model)
            torch.manual_seed(0)
            net = TorchModel(config)
            checkpoint = Path(folder) / f"{size}.pt"
            torch.save(
                {"config": config.to_dict(), "model": net.state_dict(), "step": 0, "val_loss": 0.0},
                checkpoint,
            )
            export_checkpoint(checkpoint, f"size{size}", Path(folder), corpus="twohands")
            models[size] = ContinuationModel.load(Path(folder) / f"size{size}.onnx")
            results[size] = {"parameters": sum(p.numel() for p in net.parameters()),
                             "step_nodes": step_nodes(Path(folder) / f"size{size}.onnx")}
        per_round = {size: [] for size in models}
        for _ in range(rounds_):  # interleaved, so a burst of load hits every size alike
            for size, model in models.items():
                per_round[size].append(ort_cached(model, prompt, count))
        for size, rates in per_round.items():
            results[size] |= {
                "ort_kv_cache_tokens_per_s_median": float(np.median(rates)),
                "ort_kv_cache_tokens_per_s_best": float(max(rates)),
                "step_ms_median": 1000 / float(np.median(rates)),
            }
    return results


def step_nodes(path: Path) -> int:
    """Nodes of the graph one cached step runs (the runtime's fixed-shape step session, optimized)."""
    import onnx

    with tempfile.TemporaryDirectory() as folder:
        optimized = Path(folder) / "step.onnx"
        _step_session(path, 1, DEFAULT_SLOTS, optimized)
        return len(onnx.load(optimized).graph.node)


def node_floor(model: ContinuationModel, prompt: list[int], count: int, rounds_: int) -> dict:
    """What ORT charges per node, whatever the node computes: a chain of as many trivial nodes
    (Add of a [1, d_model] constant) as one cached step runs, timed against the step itself,
    interleaved (one thread, IO binding, fixed shapes for both)."""
    import onnx
    from onnx import TensorProto, helper

    nodes, width = step_nodes(model.path), model.card["model"]["d_model"]
    chain = [helper.make_node("Add", ["x" if i == 0 else f"y{i - 1}", "c"], [f"y{i}"]) for i in range(nodes)]
    graph = helper.make_graph(chain, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
                              [helper.make_tensor_value_info(f"y{nodes - 1}", TensorProto.FLOAT, [1, width])],
                              [helper.make_tensor("c", TensorProto.FLOAT, [width], np.ones(width, np.float32))])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(proto)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    binding = session.io_binding()
    binding.bind_cpu_input("x", np.zeros((1, width), np.float32))
    binding.bind_output(f"y{nodes - 1}")
    chain_us, step_us = [], []
    for _ in range(rounds_):
        started = time.perf_counter()
        for _ in range(count):
            session.run_with_iobinding(binding)
        chain_us.append((time.perf_counter() - started) / count * 1e6)
        step_us.append(1e6 / ort_cached(model, prompt, count))
    return {"step_nodes": nodes, "chain_of_trivial_nodes_us": float(np.median(chain_us)),
            "cached_step_us": float(np.median(step_us)), "rounds": rounds_, "runs_per_round": count}


# The biases `scorebridge continue` used by default at commit 15c9322 (before issue 17's density bounds).
BIASES_15C9322 = {"key_bias": 4.0, "pattern_bias": 4.0, "motif_bias": 3.0, "density_bias": 4.0}
_TREE_RUN = textwrap.dedent(
    """
    import hashlib, json, sys, time
    from dataclasses import replace
    from benchmarks.bench_continuation import bench_prompt
    from engines.continuation import defaults
    from engines.continuation.defaults import USER_BIASES
    from engines.continuation.runtime import ContinuationModel
    from engines.continuation.sample import SamplingConfig, generate, prompt_grid, prompt_register
    model, prompt = ContinuationModel.load("onnx_models/continuation.onnx"), bench_prompt()
    generate(model, prompt, 2, SamplingConfig(seed=99))  # warm-up
    out = {}
    for name, extra in (("alone", {}), ("biases_15c9322", json.loads(sys.argv[2])), ("defaults", USER_BIASES)):
        seconds, cpu, digest, tokens = [], [], hashlib.sha256(), 0
        for seed in range(int(sys.argv[1])):
            started, started_cpu = time.perf_counter(), time.process_time()
            config = SamplingConfig(seed=seed, top_p=0.95)
            if extra:
                config = replace(config, **extra)
                if name == "defaults" and getattr(defaults, "USER_CHORD_VELOCITY", False):  # since issue 17c
                    config = replace(config, chord_velocity=True)
                config = prompt_grid(prompt, prompt_register(prompt, config))
            tokens_now = generate(model, prompt, 8, config, max_tokens=1500).tokens
            seconds.append(time.perf_counter() - started)
            cpu.append(time.process_time() - started_cpu)
            digest.update(str(tokens_now).encode())
            tokens += len(tokens_now)
        out[name] = {"seconds": seconds, "cpu_seconds": cpu, "tokens": tokens, "digest": digest.hexdigest()[:16]}
    print(json.dumps(out))
    """
)


def side_by_side(baselines: list[Path], rounds: int, generations: int) -> dict:
    """8-bar generations by each baseline's code and this checkout's, alternating round by round."""
    trees = {f"baseline {path.name}": path.resolve() for path in baselines}
    trees["this"] = Path(__file__).resolve().parents[1]
    runs: dict[str, list[dict]] = {name: [] for name in trees}
    for _ in range(rounds):
        for name, tree in trees.items():
            output = subprocess.run(
                [sys.executable, "-c", _TREE_RUN, str(generations), json.dumps(BIASES_15C9322)], cwd=tree,
                env=os.environ | {"PYTHONPATH": str(tree)}, capture_output=True, text=True, check=True,
            ).stdout
            runs[name].append(json.loads(output))
    result: dict = {"trees": {k: str(v) for k, v in trees.items()}, "rounds": rounds, "generations": generations}
    for config in runs["this"][0]:
        row = {}
        for name in trees:
            seconds = [s for run in runs[name] for s in run[config]["seconds"]]
            cpu = [s for run in runs[name] for s in run[config]["cpu_seconds"]]
            row[name] = {"median_ms": 1000 * float(np.median(seconds)), "max_ms": 1000 * max(seconds),
                         "cpu_median_ms": 1000 * float(np.median(cpu)),
                         "tokens_per_generation": runs[name][0][config]["tokens"] / generations,
                         "digest": runs[name][0][config]["digest"]}
        for name in trees:
            row[name]["ms_per_token"] = row[name]["median_ms"] / row[name]["tokens_per_generation"]
            row[name]["speedup_of_this"] = row[name]["median_ms"] / row["this"]["median_ms"]
            row[name]["cpu_speedup_of_this"] = row[name]["cpu_median_ms"] / row["this"]["cpu_median_ms"]
            row[name]["same_tokens_as_this"] = row[name]["digest"] == row["this"]["digest"]
        result[config] = row
    return result


def engine_beats(seeds: int, lookahead: float, tempo_bpm: float = 120.0) -> dict:
    """The live engine driven with transport and note events (a two-bar phrase, then silence):
    worker time per beat that hands out notes, and the slack before the first of them is due."""
    from core.engine import EngineContext
    from core.events import Beat, NoteOff, NoteOn, TransportChange
    from engines.continuation.engine import ContinuationEngine

    beat_s = 60.0 / tempo_bpm
    compute_ms, slack_ms = [], []
    for seed in range(seeds):
        engine = ContinuationEngine()
        engine.prepare(EngineContext("cont", 0, tempo_bpm))
        for name, value in (
            ("bars", 4),
            ("seed", seed),
            ("silence_beats", 1.0),
            ("lookahead_beats", lookahead),
        ):
            engine.set_param(name, value)
        engine.process(TransportChange(True, 0.0, 0.0, "start"))
        for beat in range(8):
            engine.process(Beat(beat, beat * beat_s, tempo_bpm))
            pitch = (72, 74, 76, 77, 79, 77, 76, 74)[beat]
            engine.process(NoteOn(pitch, 90, 0, beat * beat_s, float(beat)))
            if beat % 2 == 0:
                engine.process(NoteOn(48 if beat % 4 == 0 else 43, 70, 0, beat * beat_s, float(beat)))
            engine.process(NoteOff(pitch, 0, (beat + 0.8) * beat_s, beat + 0.8))
            if beat % 2 == 1:
                engine.process(NoteOff(48 if beat % 4 == 1 else 43, 0, (beat + 0.8) * beat_s, beat + 0.8))
        for beat in range(8, 30):
            started = time.perf_counter()
            outputs = engine.process(Beat(beat, beat * beat_s, tempo_bpm))
            elapsed = (time.perf_counter() - started) * 1000
            if outputs:
                compute_ms.append(elapsed)
                slack_ms.append((min(o.at_beats for o in outputs) - beat) * beat_s * 1000 - elapsed)
    compute_ms.sort()
    return {
        "lookahead_beats": lookahead,
        "tempo_bpm": tempo_bpm,
        "beats_with_output": len(compute_ms),
        "compute_ms": {
            "median": float(np.median(compute_ms)),
            "p90": compute_ms[int(0.9 * (len(compute_ms) - 1))],
            "max": compute_ms[-1],
        },
        "slack_ms_min": float(min(slack_ms)),
        "late_beats": sum(1 for s in slack_ms if s < 0),
    }


def machine_load() -> dict:
    top = subprocess.run(
        ["ps", "-eo", "pcpu,ni,args", "--sort=-pcpu"], check=False, capture_output=True, text=True
    ).stdout
    busy = [line.strip()[:120] for line in top.splitlines()[1:6] if float(line.split()[0]) >= 20]
    return {"loadavg": os.getloadavg(), "busy_processes": busy}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=Path("onnx_models/continuation.onnx"))
    parser.add_argument("--checkpoint", type=Path, default=None, help="torch checkpoint for the torch column")
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--uncached-tokens", type=int, default=128)
    parser.add_argument("--generations", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per path (median, best)")
    parser.add_argument("--sizes", default="", help="e.g. 192x4,160x4,128x4 (needs torch)")
    parser.add_argument("--node-floor", action="store_true",
                        help="time a chain of as many trivial ORT nodes as one step runs (needs onnx)")
    parser.add_argument(
        "--engine-seeds", type=int, default=8, help="live-engine runs per look-ahead (0 = skip)"
    )
    parser.add_argument("--baseline", type=Path, nargs="+", default=None, metavar="DIR",
                        help="checkouts of older code to time side by side with this one")
    parser.add_argument("--only-side-by-side", action="store_true", help="with --baseline: nothing else")
    parser.add_argument("--versus", type=Path, default=None, metavar="ONNX",
                        help="another model: 8 bars with the defaults by both, alternating (nothing else)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    model = ContinuationModel.load(args.model)
    prompt = bench_prompt()
    result: dict = {
        "date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} ({os.cpu_count()} cores, {platform.processor() or platform.machine()})",
        "model": str(args.model),
        "model_size": {k: model.card["model"][k] for k in ("embedding", "d_model", "layers", "heads")},
        "prompt_tokens": len(prompt),
        "load_before": machine_load(),
    }
    if args.baseline:
        result["side_by_side"] = side_by_side(args.baseline, args.rounds, args.generations)
    if args.versus:
        other = ContinuationModel.load(args.versus)
        generate(other, prompt, 2, SamplingConfig(seed=99))  # warm-up, as the model below
        generate(model, prompt, 2, SamplingConfig(seed=99))
        result["versus"] = models_side_by_side({"model": model, "versus": other}, prompt, args.rounds,
                                               args.generations)
        result["load_after"] = machine_load()
        write_result(result, args.out)
        return
    if args.baseline and args.only_side_by_side:
        result["load_after"] = machine_load()
        write_result(result, args.out)
        return
    ort_cached(model, prompt, 64)  # warm-up
    measured = {"ort_kv_cache": [], "ort_no_cache": [], "torch_kv_cache": []}
    for _ in range(args.rounds):  # interleaved rounds: the three paths see the same load
        measured["ort_kv_cache"].append(ort_cached(model, prompt, args.tokens))
        measured["ort_no_cache"].append(ort_uncached(model, prompt, args.uncached_tokens))
        if args.checkpoint:
            measured["torch_kv_cache"].append(torch_cached(args.checkpoint, prompt, args.tokens))
    rates = {k: {"median": float(np.median(v)), "best": float(max(v))} for k, v in measured.items() if v}
    result["tokens_per_s"] = rates | {"rounds": args.rounds, "cached_tokens": args.tokens}
    result["ratio_cache_vs_no_cache"] = rates["ort_kv_cache"]["median"] / rates["ort_no_cache"]["median"]
    if "torch_kv_cache" in rates:
        result["ratio_ort_vs_torch"] = rates["ort_kv_cache"]["median"] / rates["torch_kv_cache"]["median"]
    result["sampling_step"] = sampling_step_us(prompt)
    result["eight_bars"] = eight_bars(model, prompt, args.generations)
    result["eight_bars_user_defaults"] = eight_bars(model, prompt, args.generations, user=True)
    if args.engine_seeds:
        result["engine_per_beat"] = [engine_beats(args.engine_seeds, la) for la in (0.25, 0.5)]
    if args.node_floor:
        result["node_floor"] = node_floor(model, prompt, args.tokens, args.rounds)
    if args.sizes:
        result["sizes"] = size_sweep(args.sizes, prompt, args.tokens, args.rounds)
    result["load_after"] = machine_load()
    write_result(result, args.out)


def write_result(result: dict, out: Path | None) -> None:
    text = json.dumps(result, indent=1)
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        temporary = out.with_suffix(".tmp")
        temporary.write_text(text + "\n")
        temporary.replace(out)


if __name__ == "__main__":
    main()

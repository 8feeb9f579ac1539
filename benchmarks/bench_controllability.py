"""Controllability of the affective adapters (issue 7): sweep the target valence / arousal fed
to each model over held-out prompts and measure musical proxies of what comes out.

    .venv/bin/python -m benchmarks.bench_controllability [--windows 40] [--prompts 12] [--out FILE]

- harmonizer (the shipped FF model): held-out test chorale windows, all chords masked, entropic
  schedule (10 calls), constant valence v in LEVELS (arousal 0): proxy = share of major chords
  (a major third above the root, no minor third) among the chord steps; arousal a in LEVELS
  (valence 0): proxy = chord changes per bar. Quality: CTnCTR and PCS at every level against the
  neutral run (target: within 0.05).
- continuation (the shipped Smart model): the first 2 bars of held-out test pieces as prompts,
  4 bars generated at temperature 1.0 / top-p 0.95, constant arousal a in LEVELS (valence 0):
  proxies note onsets per beat, mean velocity, mean pitch; constant valence v (arousal 0):
  proxy = major-minus-minor Krumhansl correlation of the generated pitch classes (best keys), and
  at the prompt's tonic (its major minus its minor profile: the parallel-mode reading), and the
  share of major triads among the beats that sound a clear major or minor triad; quality =
  the share of generated notes in the scale of their best-fitting key (major, or natural +
  harmonic minor), which must stay near the neutral run's when valence moves the mode.
  ``--mode-steer S`` adds the decoding-time mode bias (engines.continuation.sample).
Spearman rho is taken over every (target, measured) pair, prompts x levels (the stricter
reading), and over the level means. Target (issue 7): rho >= 0.6 for arousal -> density and
valence -> major share. Results JSON with the machine, date and load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from itertools import pairwise
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

LEVELS = (-0.8, -0.4, 0.0, 0.4, 0.8)
ROOT = Path(__file__).resolve().parent.parent


def _rho(targets: list[float], measured: list[float]) -> dict[str, float]:
    pairs = spearmanr(targets, measured).statistic
    levels = sorted(set(targets))
    means = [float(np.mean([m for t, m in zip(targets, measured) if t == level])) for level in levels]
    return {"rho_pairs": float(pairs), "rho_level_means": float(spearmanr(levels, means).statistic),
            "level_means": dict(zip([str(level) for level in levels], means))}


def harmonizer_sweep(windows_count: int, seed: int) -> dict:
    from engines.harmonizer.harmonize import chord_root
    from engines.harmonizer.harmony_eval import load_sets, model_system, score_system
    from engines.harmonizer.runtime import HarmonizerModel
    from engines.harmonizer.vocab import is_chord_token, token_pitch_classes

    model = HarmonizerModel.named("harmonizer")
    windows = load_sets(model.grid, "test", None, None, None, lambda _: None)[0].windows
    count = min(windows_count, len(windows))
    bars_per_window = np.maximum(1, (windows.melody_pitch[:count] >= 0).sum(axis=1) / 4)

    def run(valence: float, arousal: float) -> tuple[list[np.ndarray], list[dict]]:
        windows.va[:] = (valence, arousal)
        produced: list[np.ndarray] = []
        base = model_system(model, windows, "entropic", 10, seed)

        def produce(index: int, row: np.ndarray) -> tuple[np.ndarray, int]:
            tokens, calls = base(index, row)
            produced.append(tokens)
            return tokens, calls

        _, rows = score_system(f"v{valence} a{arousal}", windows, produce, count, ("CTnCTR", "PCS"))
        return produced, rows

    def major_share(tokens: np.ndarray) -> float:
        chords = [t for t in tokens.tolist() if is_chord_token(t)]
        major = 0
        for token in chords:
            root, pcs = chord_root(token), set(token_pitch_classes(token))
            major += root is not None and (root + 4) % 12 in pcs and (root + 3) % 12 not in pcs
        return major / len(chords) if chords else 0.0

    def changes_per_bar(tokens: np.ndarray, bars: float) -> float:
        chords = [t for t in tokens.tolist() if is_chord_token(t)]
        return sum(a != b for a, b in pairwise(chords)) / bars

    result: dict = {"model": "harmonizer", "windows": count, "levels": LEVELS}
    neutral = run(0.0, 0.0)[1]
    quality = {}
    for name, axis in (("valence", 0), ("arousal", 1)):
        targets, measured = [], []
        for level in LEVELS:
            produced, rows = run(level if axis == 0 else 0.0, level if axis == 1 else 0.0)
            for index, tokens in enumerate(produced):
                targets.append(level)
                measured.append(major_share(tokens) if axis == 0 else changes_per_bar(tokens, bars_per_window[index]))
            quality[f"{name}={level}"] = {
                metric: float(np.mean([r[metric] for r in rows]) - np.mean([r[metric] for r in neutral]))
                for metric in ("CTnCTR", "PCS")
            }
        proxy = "major_share" if axis == 0 else "chord_changes_per_bar"
        result[f"{name}->{proxy}"] = _rho(targets, measured)
    result["quality_delta_vs_neutral"] = quality
    result["max_abs_quality_delta"] = max(abs(d) for q in quality.values() for d in q.values())
    return result


def _major_triad_share(notes: list, beat_steps: int) -> float:
    """Share of major among the beats whose sounding pitch classes hold a major or a minor triad
    (root, third, fifth; a beat that holds both kinds is left out); NaN when no beat holds one."""
    if not notes:
        return float("nan")
    end = max(n.onset_steps + n.duration_steps for n in notes)
    major = minor = 0
    for start in range(0, end, beat_steps):
        classes = {n.pitch % 12 for n in notes
                   if n.onset_steps < start + beat_steps and n.onset_steps + n.duration_steps > start}
        kinds = {("major" if (root + 4) % 12 in classes else "minor")
                 for root in classes
                 if (root + 7) % 12 in classes and ((root + 4) % 12 in classes) != ((root + 3) % 12 in classes)}
        if kinds == {"major"}:
            major += 1
        elif kinds == {"minor"}:
            minor += 1
    return major / (major + minor) if major + minor else float("nan")


def continuation_sweep(
    prompts_count: int, seed: int, model_path: Path | None = None, prompt_labels: str = "target",
    mode_steer: float = 0.0, prompt_set: str = "music21", decoding: str = "model",
) -> dict:
    from engines.continuation.affect import key_correlations, mode_score
    from engines.continuation.corpus import load_split_corpus
    from engines.continuation.defaults import USER_BIASES, USER_CHORD_VELOCITY
    from engines.continuation.modal import window_key
    from engines.continuation.offline import continue_notes, prompt_tokens
    from engines.continuation.runtime import ContinuationModel
    from engines.continuation.sample import SCALES, SamplingConfig
    from engines.continuation.tokens import decode

    model = ContinuationModel.load(model_path) if model_path else ContinuationModel.load()
    bar_steps, prompts = 48, []
    if prompt_set == "twohands":  # the held-out two-hand prompts of `eval continuation`, in 4/4
        from engines.continuation.evaluation import held_out_prompts
        from engines.harmonizer.leadsheet_corpus import default_datasets

        for prompt in held_out_prompts("test", default_datasets(), context_bars=2):
            if prompt.bar_steps == bar_steps and len(prompt.notes) >= 8 and len(prompts) < prompts_count:
                prompts.append(prompt.notes)
    else:
        data = load_split_corpus("test")
        for piece in data.piece_indices("test"):
            begin, end = int(data.offsets[piece]), int(data.offsets[piece + 1])
            notes = [n for n in decode(data.tokens[begin:end])[0] if n.onset_steps < 2 * bar_steps]
            if len(notes) >= 8:
                prompts.append(notes)
            if len(prompts) == prompts_count:
                break

    # the tonic of each prompt's key: "major-mode profile" at that tonic is the parallel-mode reading,
    # which a relative key (C major / A minor: one pitch set) cannot confuse
    # (from the prompt tokens the sampler sees; None = no clear key: not steered, not scored)
    tonics = []
    for notes in prompts:
        key = window_key(np.array(prompt_tokens(notes, bar_steps, 2, model.valence_lead)[0], dtype=np.int64))
        tonics.append(key[0] if key else None)
    result: dict = {
        "model": model.path.name, "prompts": len(prompts), "prompt_set": prompt_set, "decoding": decoding,
        "levels": LEVELS,
        "prompt_va": prompt_labels, "mode_steer": mode_steer,
    }
    for name, axis in (("arousal", 1), ("valence", 0)):
        targets: list[float] = []
        measured: dict[str, list[float]] = {"density": [], "velocity": [], "pitch": [], "mode": [], "mode_at_tonic": [],
                                            "major_chords": [], "in_key": []}
        for level in LEVELS:
            va = (level, 0.0) if axis == 0 else (0.0, level)
            for index, notes in enumerate(prompts):
                config = SamplingConfig(
                    temperature=1.0, top_p=0.95, seed=seed + index, bar_steps=bar_steps, mode_steer=mode_steer,
                    chord_velocity=decoding == "user" and USER_CHORD_VELOCITY,
                    **(USER_BIASES if decoding == "user" else {}),
                )
                around = "prompt" if decoding == "user" else "free"
                generated = continue_notes(
                    model, notes, bar_steps, 4, config, context_bars=2, va=va, prompt_labels=prompt_labels,
                    register=around, grid=around,
                )
                if not generated:
                    continue
                targets.append(level)
                measured["density"].append(len(generated) / 16.0)
                measured["velocity"].append(float(np.mean([n.velocity for n in generated])))
                measured["pitch"].append(float(np.mean([n.pitch for n in generated])))
                histogram = np.bincount([n.pitch % 12 for n in generated], minlength=12)
                measured["mode"].append(float(mode_score(histogram)))
                correlations = key_correlations(histogram)
                measured["major_chords"].append(_major_triad_share(generated, 12))
                tonic = tonics[index]
                measured["mode_at_tonic"].append(
                    float("nan") if tonic is None else float(correlations[tonic] - correlations[12 + tonic])
                )
                best = int(np.argmax(correlations))
                scale = SCALES["major"] if best < 12 else set(SCALES["minor"]) | set(SCALES["harmonic_minor"])
                degrees = (np.arange(12) - best % 12) % 12
                measured["in_key"].append(float(histogram[np.isin(degrees, sorted(scale))].sum() / histogram.sum()))
        proxies = ("density", "velocity", "pitch") if axis == 1 else ("mode", "in_key")
        # no chord share without a major or minor triad; no tonic reading for a keyless prompt
        for proxy in () if axis == 1 else ("mode_at_tonic", "major_chords"):
            kept = [i for i, value in enumerate(measured[proxy]) if not np.isnan(value)]
            result[f"{name}->{proxy}"] = _rho([targets[i] for i in kept], [measured[proxy][i] for i in kept])
            result[f"{name}->{proxy}"]["pairs"] = len(kept)
        for proxy in proxies:
            result[f"{name}->{proxy}"] = _rho(targets, measured[proxy])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=40, help="harmonizer test windows")
    parser.add_argument("--prompts", type=int, default=12, help="continuation prompts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=("harmonizer", "continuation"), help="sweep one model only")
    parser.add_argument("--continuation-model", type=Path, help="an ONNX file instead of the shipped model")
    parser.add_argument(
        "--prompt-labels", choices=("target", "announce", "own"), default="target",
        help="the continuation prompt's labels (offline.continue_notes): the target throughout (what "
        "`scorebridge continue` and the engine do), its own moving toward the target, or its own",
    )
    parser.add_argument("--mode-steer", type=float, default=0.0,
                        help="continuation: decoding-time mode bias per unit valence (sample.SamplingConfig)")
    parser.add_argument("--prompt-set", choices=("music21", "twohands"), default="music21",
                        help="continuation prompts: the music21 corpus's test pieces or the held-out two-hand "
                             "prompts of `eval continuation` (POP909 and keyboard scores)")
    parser.add_argument("--decoding", choices=("model", "user"), default="model",
                        help="continuation: the model alone, or `scorebridge continue`'s defaults (key, rhythm, "
                             "motif and density biases, prompt register and grid)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "controllability.json")
    args = parser.parse_args()
    started = time.time()
    report = {
        "command": "python -m benchmarks.bench_controllability "
                   f"--windows {args.windows} --prompts {args.prompts} --seed {args.seed}"
                   + (f" --only {args.only}" if args.only else "")
                   + (f" --continuation-model {args.continuation_model}" if args.continuation_model else "")
                   + f" --prompt-labels {args.prompt_labels} --mode-steer {args.mode_steer:g}"
                   + f" --prompt-set {args.prompt_set} --decoding {args.decoding}",
        "machine": f"{platform.node()} ({os.cpu_count()} cores, {platform.machine()})",
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "load_before": os.getloadavg(),
    }
    if args.only != "continuation":
        report["harmonizer"] = harmonizer_sweep(args.windows, args.seed)
    if args.only != "harmonizer":
        report["continuation"] = continuation_sweep(
            args.prompts, args.seed, args.continuation_model, args.prompt_labels, args.mode_steer, args.prompt_set,
            args.decoding,
        )
    report["load_after"] = os.getloadavg()
    report["seconds"] = round(time.time() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

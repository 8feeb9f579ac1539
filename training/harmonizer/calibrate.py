"""Choose a model's default decoding on the validation lead sheets (never on test).

    python -m training.harmonizer.calibrate --model harmonizer --out calibration.json [--write-card]

Every (strategy, calls, temperature, rhythm) of the grid harmonizes the validation songs of the
committed OpenEWLD and POP909 lists as ``scorebridge harmonize`` does (``leadsheet_eval``: metric
beats, keys per section, the tonic ending, the song's style), and is scored against the human
chords. The choice: the highest root + major/minor agreement among the settings whose chord
changes per bar lie within 0.75-1.33x the human chords' (the issue's harmonic-rhythm target),
all settings when none does. Settings within 0.005 of the best count as equal; among them the
model's own harmonic rhythm (auto) and then the lower temperature win. Temperature 0 is
greedy. ``--write-card`` stores it as the card's ``decoding`` section, which the runtime,
``eval harmony``, ``harmonize`` and the live engine read as their default; the ONNX file and its
sha256 do not change. numpy + onnxruntime only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from core.paths import cache_dir
from engines.harmonizer.leadsheet_corpus import load_eval_songs
from engines.harmonizer.leadsheet_eval import ModelSpec, baselines, decode_models, evaluate_songs, songs_from_arrays
from engines.harmonizer.runtime import HarmonizerModel

from .card import set_section

__all__ = ["RATIO_RANGE", "calibrate", "choose", "main", "write_card"]

RATIO_RANGE = (0.75, 1.33)
TAGGER_KEYS = ("tagger", "tagger_weight", "window_stride")  # set by experiments/tagged_sweep.py --write-card
NOISE = 0.005  # agreement differences below this, on ~140 songs, are not worth a less usable default


def choose(rows: list[dict]) -> dict:
    """The best row: highest agreement within the changes-per-bar range (else among all); rows
    within ``NOISE`` of it count as equal, and among those the model's own harmonic rhythm
    (auto), then the lower temperature (greedy: the same chords every time), then agreement."""
    inside = [row for row in rows if RATIO_RANGE[0] <= row["changes_ratio"] <= RATIO_RANGE[1]] or rows
    top = max(row["majmin"] for row in inside)
    close = [row for row in inside if row["majmin"] >= top - NOISE]
    return max(close, key=lambda row: (row.get("rhythm") == "auto", -row.get("temperature", 0.0),
                                       round(row["majmin"], 3), row["chord_tones"]))


def calibrate(model_path: str, strategies: list[str], temperatures: list[float], rhythms: list[str],
              top_p: float = 0.9, seed: int = 0, jobs: int = 2, cache: Path | None = None,
              songs: list | None = None, calls: list[int] | None = None) -> dict:
    """Score every grid point on the validation songs (``songs``: given instead); returns the
    table and the choice."""
    if songs is None:
        songs = songs_from_arrays(load_eval_songs("val", cache or cache_dir("harmonizer")))
    # one call (entropic with one call left takes every position) decides every chord of a
    # window at once: one plan; the strategies' own orders need more calls
    counts = calls or [10]
    # 'tagged' decodes the whole melody at once whatever the count: one plan, one call counted
    plans = ([("entropic", 1)] if 1 in counts else []) + [("tagged", 1)] * ("tagged" in strategies) + [
        (strategy, count) for count in counts if count > 1 for strategy in strategies if strategy != "tagged"]
    specs = [ModelSpec(f"{strategy} {count} T{temperature} {rhythm}", model_path, strategy, count, temperature, top_p,
                       rhythm)
             for strategy, count in plans for temperature in temperatures for rhythm in rhythms]
    produced = baselines(songs, with_rule=False) | decode_models(specs, songs, seed, jobs)
    report = evaluate_songs(songs, produced)
    rows = []
    for spec in specs:
        means = report["systems"][spec.name]["groups"]["all"]
        rows.append({"strategy": spec.strategy, "calls": spec.calls, "temperature": spec.temperature, "top_p": top_p,
                     "rhythm": spec.rhythm} | {key: means[key] for key in
                                              ("majmin", "sevenths", "changes_per_bar", "changes_ratio",
                                               "chord_tones", "tonic_ending")})
    best = choose(rows)
    return {
        "split": "val", "songs": len(songs), "seed": seed,
        "objective": "highest root+maj/min agreement with the human chords among the settings with "
                     f"changes per bar {RATIO_RANGE[0]}-{RATIO_RANGE[1]}x the human's (else all); "
                     f"within {NOISE} of the best: rhythm auto, then lower temperature, then agreement",
        "baselines": {name: report["systems"][name]["groups"]["all"]["majmin"] for name in ("tonic", "best-triad")},
        "human_changes_per_bar": report["systems"]["human"]["groups"]["all"]["changes_per_bar"],
        "grid": rows,
        "chosen": {key: best[key] for key in ("strategy", "calls", "temperature", "top_p", "rhythm")},
    }


def write_card(model: HarmonizerModel, result: dict) -> Path:
    """Add the `decoding` section to the model's card (atomic rewrite; the ONNX file is untouched);
    the tagger settings already there (strategy 'tagged') are kept."""
    kept = {key: value for key, value in model.card.get("decoding", {}).items() if key in TAGGER_KEYS}
    return set_section(model, "decoding", result["chosen"] | kept | {
        "calibrated_on": f"validation lead sheets ({result['songs']} songs), seed {result['seed']}; "
                         f"{result['objective']}",
        "calibrated_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "grid": result["grid"],
    })


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="harmonizer", help="shipped card name or .onnx path")
    parser.add_argument("--strategies", nargs="+", default=["entropic", "certain", "midpoint"])
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.0, 0.3, 0.6])
    parser.add_argument("--rhythms", nargs="+", default=["auto", "half-bar"])
    parser.add_argument("--calls", type=int, nargs="+", default=[1, 10],
                        help="model calls per window (1: every chord from one call)")
    parser.add_argument("--top-p", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--cache", type=Path)
    parser.add_argument("--out", type=Path, help="write the table as JSON")
    parser.add_argument("--write-card", action="store_true", help="store the choice in the model card")
    args = parser.parse_args(argv)
    model = (HarmonizerModel.load(args.model) if args.model.endswith(".onnx")
             else HarmonizerModel.named(args.model))
    result = calibrate(str(model.path), args.strategies, args.temperatures, args.rhythms, args.top_p, args.seed,
                       args.jobs, args.cache, calls=args.calls)
    result |= {"model": model.path.name, "sha256": model.card["sha256"]}
    for row in result["grid"]:
        print(f"{row['strategy']:<9} {row['calls']:>2} calls T {row['temperature']:<4} {row['rhythm']:<8} "
              f"agreement {row['majmin']:.3f} "
              f"sevenths {row['sevenths']:.3f} changes/bar {row['changes_per_bar']:.2f} "
              f"({row['changes_ratio']:.2f}x human) chord tones {row['chord_tones']:.3f}")
    print(f"baselines {result['baselines']}; human changes/bar {result['human_changes_per_bar']:.2f}")
    print(f"chosen {result['chosen']}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    if args.write_card:
        print(f"wrote decoding to {write_card(model, result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Experiment: the offline strategy 'tagged' (``engines/harmonizer/tagger.py``) swept over its
tagger weight and window stride on the VALIDATION lead sheets, decoded as ``scorebridge
harmonize`` decodes (keys found per section, tonic ending, greedy, rhythm auto unless given).
Weight 0 is the lead-sheet model's overlapping all-masked windows alone.

    python -m training.harmonizer.experiments.tagged_sweep --tagger DIR/harmonizer_tagger.onnx \\
        --weights 0 0.5 1 1.5 --strides 10 20
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from engines.harmonizer import leadsheet_corpus as lc
from engines.harmonizer import leadsheet_eval as le
from engines.harmonizer.leadsheet_metrics import agreement, changes_per_bar
from engines.harmonizer.runtime import HarmonizerModel
from engines.harmonizer.tagger import ChordTagger
from training.harmonizer.calibrate import TAGGER_KEYS
from training.harmonizer.card import set_section


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="onnx_models/harmonizer.onnx")
    parser.add_argument("--tagger", required=True)
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.5, 1.0, 1.5])
    parser.add_argument("--strides", type=int, nargs="+", default=[10])
    parser.add_argument("--rhythm", default="auto")
    parser.add_argument("--write-card", action="store_true",
                        help="store the best weight and stride (and the tagger's name) in the model's card")
    args = parser.parse_args(argv)
    model = HarmonizerModel.load(args.model)
    model._tagger = ChordTagger.load(args.tagger)
    songs = le.songs_from_arrays(lc.load_eval_songs("val", lc.DEFAULT_CACHE, None, None, le.EVAL_FIELDS))
    frames = [le._frame(song) for song in songs]
    styles = ("pop", "jazz", "rock", "stage", "folk")
    print("| weight | stride | all | " + " | ".join(styles) + " | changes/bar | x human | s |")
    print("|" + " --- |" * (len(styles) + 6))
    results = []
    human = np.nanmean([changes_per_bar(s.human, s.bar_start, f.span) for s, f in zip(songs, frames)])
    for stride in args.strides:
        for weight in args.weights:
            model.card = {**model.card, "decoding": {**model.card.get("decoding", {}), "tagger": Path(args.tagger).stem,
                                                     "tagger_weight": weight, "window_stride": stride}}
            started, agree, changes = time.time(), [], []
            for number, (song, frame) in enumerate(zip(songs, frames)):
                chords, _ = le.harmonize_song(model, song, np.random.default_rng([0, number]), strategy="tagged",
                                              rhythm=args.rhythm)
                agree.append(agreement(chords, song.human, "majmin"))
                changes.append(changes_per_bar(chords, song.bar_start, frame.span))
            by_style = [np.nanmean([a for a, s in zip(agree, songs) if s.style == style]) for style in styles]
            rate = np.nanmean(changes)
            results.append((float(np.nanmean(agree)), weight, stride))
            print(f"| {weight} | {stride} | {np.nanmean(agree):.3f} | " + " | ".join(f"{v:.3f}" for v in by_style)
                  + f" | {rate:.2f} | {rate / human:.2f} | {time.time() - started:.0f} |", flush=True)

    if args.write_card:
        best, weight, stride = max(results)
        decoding = {key: value for key, value in model.card.get("decoding", {}).items() if key not in TAGGER_KEYS}
        path = set_section(model, "decoding", decoding | {"tagger": Path(args.tagger).stem, "tagger_weight": weight,
                                                          "window_stride": stride})
        print(f"wrote tagger {Path(args.tagger).stem}, weight {weight}, stride {stride} ({best:.3f}) to {path}")


if __name__ == "__main__":
    main(sys.argv[1:])


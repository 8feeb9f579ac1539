"""Does key finding limit the harmonizer? Agreement with the human chords on the validation lead
sheets with the keys ``harmonize`` finds, against the songs' annotated keys given.

    .venv/bin/python -m benchmarks.harmonizer_key_oracle [--model harmonizer] [--strategy midpoint] [--calls 10]

Validation lists only (never test); greedy, rhythm auto, seeded per song.
"""

from __future__ import annotations

import argparse

import numpy as np

from core.paths import cache_dir
from engines.harmonizer import leadsheet_metrics as lm
from engines.harmonizer.harmonize import harmonize
from engines.harmonizer.leadsheet_corpus import load_eval_songs
from engines.harmonizer.leadsheet_eval import songs_from_arrays
from engines.harmonizer.runtime import HarmonizerModel


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="harmonizer")
    parser.add_argument("--strategy", default="midpoint")
    parser.add_argument("--calls", type=int, default=10)
    args = parser.parse_args(argv)
    model = HarmonizerModel.named(args.model)
    songs = songs_from_arrays(load_eval_songs("val", cache_dir("harmonizer")))
    scores: dict[str, list[float]] = {"found": [], "annotated": []}
    for number, song in enumerate(songs):
        style = song.style if song.style in model.styles else model.default_style
        for name, key in (("found", None), ("annotated", (song.tonic, song.mode))):
            out = harmonize(model, song.pitches, song.bar_start, song.time_signature, style=style,
                            strategy=args.strategy, calls=args.calls, rng=np.random.default_rng(number),
                            temperature=0, key=key)
            scores[name].append(lm.agreement(out.chords, song.human, "majmin"))
    for name, values in scores.items():
        print(f"{name} keys: root + maj/min agreement {np.nanmean(values):.3f} ({len(songs)} songs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Live decisions on validation lead sheets against their human chords, per live window length.

    .venv/bin/python -m benchmarks.harmonizer_live_leadsheets [--songs 40] [--beats 64] [--lengths 20 40 80]

Every metric beat of the first ``--beats`` beats of each validation song (the committed
``*_val`` lists; never test) is decided as the live engine decides it (``harmonize.next_chords``:
the melody up to that beat, the chords already decided, one model call on the last
``live_length`` positions), in the song's key as the offline path finds it, greedy. Reports
per window length the root + major/minor agreement with the human chords (beats with one), the
same for the offline harmonization of the whole song as the card decodes it, and the time per
decision. Chooses nothing: the card's ``live_length`` is set at export (``--live-length``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np

from core.paths import cache_dir
from engines.harmonizer import leadsheet_metrics as lm
from engines.harmonizer.harmonize import harmonize, next_chords
from engines.harmonizer.leadsheet_corpus import load_eval_songs
from engines.harmonizer.leadsheet_eval import songs_from_arrays
from engines.harmonizer.runtime import HarmonizerModel
from engines.harmonizer.vocab import MASK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="harmonizer")
    parser.add_argument("--songs", type=int, default=40)
    parser.add_argument("--beats", type=int, default=64)
    parser.add_argument("--lengths", type=int, nargs="+", default=[20, 40, 80])
    parser.add_argument("--out", help="write the figures as JSON")
    args = parser.parse_args(argv)
    shipped = HarmonizerModel.named(args.model)
    songs = songs_from_arrays(load_eval_songs("val", cache_dir("harmonizer")))[: args.songs]
    result: dict = {"model": args.model, "songs": len(songs), "beats": args.beats, "lengths": {}}
    offline = []
    for number, song in enumerate(songs):
        beats = min(args.beats, song.beats)
        style = song.style if song.style in shipped.styles else shipped.default_style
        whole = harmonize(shipped, song.pitches, song.bar_start, song.time_signature, style=style,
                          strategy=shipped.strategy, rng=np.random.default_rng(number), temperature=0,
                          rhythm=shipped.rhythm)
        offline.append(lm.agreement(whole.chords[:beats], song.human[:beats], "majmin"))
    result["offline_majmin"] = float(np.nanmean(offline))
    for length in args.lengths:
        model = dataclasses.replace(shipped, card={**shipped.card, "live_length": length})
        scores, spent, calls = [], 0.0, 0
        for number, song in enumerate(songs):
            beats = min(args.beats, song.beats)
            style = song.style if song.style in model.styles else model.default_style
            key = harmonize(model, song.pitches, song.bar_start, song.time_signature, style=style,
                            strategy="midpoint", rng=np.random.default_rng(number), temperature=0)
            chords = np.full(beats, MASK, dtype=np.int64)
            va = np.zeros((beats, 2), np.float32)
            for beat in range(beats):
                code = int(key.keys[beat])
                started = time.perf_counter()
                (chords[beat],) = next_chords(model, song.pitches[: beat + 1], song.bar_start[: beat + 1],
                                              chords[: beat + 1], (code % 12, "minor" if code >= 12 else "major"),
                                              va[: beat + 1], style, song.time_signature, np.random.default_rng(0),
                                              temperature=0)
                spent += time.perf_counter() - started
                calls += 1
            scores.append(lm.agreement(chords, song.human[:beats], "majmin"))
        result["lengths"][length] = {"live_majmin": float(np.nanmean(scores)), "ms_per_decision": 1000 * spent / calls}
        print(f"live_length {length}: agreement {result['lengths'][length]['live_majmin']:.3f} "
              f"({1000 * spent / calls:.2f} ms a decision)", flush=True)
    print(f"offline ({shipped.strategy}, rhythm {shipped.rhythm}): agreement {result['offline_majmin']:.3f}")
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(result, handle, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

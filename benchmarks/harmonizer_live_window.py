"""Live decisions against the offline harmonization of the same melody (quality, not speed).

    .venv/bin/python benchmarks/harmonizer_live_window.py [--songs 11] [--beats 64]

Folk songs of music21's Essen collection (`altdeu10`, 2/4, 3/4, 4/4), melody per beat: every
beat is decided as the live engine does (`harmonize.next_chords`: the melody so far, the chords
already decided, one model call), in the key the offline harmonization found: with a fixed-length
graph the window after the current beat is filled with `<mask>` (unknown future) or `<pad>`
(piece ends); a dynamic-length graph gets the last `live_length` positions up to the beat; the
offline harmonization (`harmonize.harmonize`,
stages10) of the whole melody is the reference. Reports the share of beats equal to the offline
chord, the share of tonic chords, and distinct chords per song.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engines.harmonizer.runtime import HarmonizerModel
from engines.harmonizer.vocab import MASK, NC, NUM_QUALITIES, NUM_SPECIALS, PAD

H = importlib.import_module("engines.harmonizer.harmonize")  # the package re-exports a function of that name


def melodies(songs: int) -> list[tuple[np.ndarray, int]]:
    from music21 import corpus

    found = []
    for number in range(1, songs + 1):
        flat = corpus.parse("essenFolksong/altdeu10", number=number).flatten()
        signatures = flat.getElementsByClass("TimeSignature")
        if not signatures or signatures[0].ratioString not in ("2/4", "3/4", "4/4"):
            continue
        notes = [(n.pitch.midi, float(n.offset), float(n.offset + n.quarterLength)) for n in flat.notes]
        found.append((H.melody_grid(notes, 1, int(max(e for _, _, e in notes))), signatures[0].numerator))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--songs", type=int, default=11)
    parser.add_argument("--beats", type=int, default=64)
    parser.add_argument("--model", default="harmonizer", help="shipped card name or .onnx path")
    parser.add_argument("--live-lengths", type=int, nargs="+",
                        help="live windows to compare (a dynamic-length graph; default the card's)")
    args = parser.parse_args()
    model = HarmonizerModel.load(args.model) if args.model.endswith(".onnx") else HarmonizerModel.named(args.model)
    tunes = melodies(args.songs)
    result = {"model": args.model, "songs": len(tunes), "sha256": model.card["sha256"]}
    variants = [("mask", MASK, None), ("pad", PAD, None)]
    if model.dynamic_length:  # the window ends at the current beat: no future positions at all
        variants = [(f"live_length {n}", MASK, n) for n in args.live_lengths or [model.live_length]]
    for name, future, live_length in variants:
        if live_length is not None:
            model.card["live_length"] = live_length
        agree = tonic = total = distinct = 0
        for melody, per_bar in tunes:
            steps = min(len(melody), args.beats)
            offline = H.harmonize(model, melody[:steps], H.bar_starts_for(steps, per_bar), (per_bar, 4),
                                  strategy="stages10", rng=np.random.default_rng(0))
            key = (offline.tonic, offline.mode)
            tonic_token = NUM_SPECIALS + key[0] * NUM_QUALITIES + (0 if key[1] == "major" else 1)
            chords = np.full(steps, NC, dtype=np.int64)
            for beat in range(steps):
                given = chords[: beat + 1].copy()
                given[beat] = MASK
                chords[beat] = H.next_chords(model, melody[: beat + 1], H.bar_starts_for(beat + 1, per_bar), given,
                                             key, np.zeros((beat + 1, 2), np.float32), model.styles[0],
                                             (per_bar, 4), np.random.default_rng(beat), future=future)[0]
            agree += int((chords == offline.chords[:steps]).sum())
            tonic += int((chords == tonic_token).sum())
            total += steps
            distinct += len(set(chords.tolist()))
        result[name] = {"beats": total, "same_as_offline": round(agree / total, 3),
                        "tonic_share": round(tonic / total, 3), "distinct_per_song": round(distinct / len(tunes), 2)}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

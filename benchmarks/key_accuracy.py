"""Key finding from the melody alone against the lead sheets' annotated keys.

    python -m benchmarks.key_accuracy [--split val] [--cache DIR] [--json FILE]

Reads the lead-sheet cache (``python -m training.harmonizer.leadsheets build``), takes each
song of the split back to its written key (the cache stores it moved to C major / A minor) and
compares, on every metric beat with an annotated key:

- ``global``: one key for the whole song, ``core.keys.melody_key`` (what the harmonizer used
  when no key was given, before keys per section);
- ``one_key``: ``core.keys.section_keys`` held to one section (its profiles and final-note vote
  without the sections), to tell what the sections add;
- ``sectional``: ``core.keys.section_keys`` on the 16th grid with the song's bars.

Per dataset: exact key per beat; the beats wrong only by mode, as the relative key (same
signature) or the parallel key (same tonic); per song, whether the key found on the most beats
is the annotated key on the most beats; and the songs whose annotation changes key (POP909
marks changes; OpenEWLD keys come from key signatures, with major/minor inferred at build time)
with the per-beat accuracy on them and on the others, and how many songs each finder makes
modulate.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from core.keys import melody_key, section_keys
from engines.harmonizer.dataset import DEFAULT_CACHE
from training.harmonizer.leadsheets import load

FINDERS = ("global", "one_key", "sectional")
WHOLE_PIECE = 1 << 30  # min_bars larger than any song: section_keys then gives one key


def _relative(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Same key signature, other mode (C major <-> A minor)."""
    major, minor = np.where(truth < 12, truth, found), np.where(truth < 12, found, truth)
    return ((found < 12) != (truth < 12)) & ((major % 12 + 9) % 12 == minor % 12)


def _parallel(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Same tonic, other mode (C major <-> C minor)."""
    return ((found < 12) != (truth < 12)) & (found % 12 == truth % 12)


def _songs(arrays: dict[str, np.ndarray], split: str):
    """(dataset, melody pitch, bar starts, beat starts, key codes) per song, in the written key."""
    offsets = arrays["offsets"]
    for index in np.flatnonzero(arrays["split"] == split):
        start, end = offsets[index], offsets[index + 1]
        shift = int(arrays["shift"][index])
        pitch = arrays["melody_pitch"][start:end].astype(np.int64)
        pitch = np.where(pitch >= 0, pitch - shift, -1)
        key = arrays["key"][start:end].astype(np.int64)
        key = np.where(key >= 0, (key % 12 - shift) % 12 + 12 * (key >= 12), -1)
        yield (str(arrays["dataset"][index]), pitch, arrays["bar_start"][start:end].astype(bool),
               arrays["beat_start"][start:end].astype(bool), key)


def _empty() -> dict[str, float]:
    return {"songs": 0, "beats": 0, "modulating_songs": 0, "modulating_beats": 0,
            **{f"{finder}_{what}": 0 for finder in FINDERS
               for what in ("exact", "relative", "parallel", "songs", "modulating_exact", "made_modulating")}}


def measure(arrays: dict[str, np.ndarray], split: str) -> dict[str, dict[str, float]]:
    """Counts per dataset (and "all"), turned into rates by ``rates``."""
    counts: dict[str, dict[str, float]] = {}
    for dataset, pitch, bar_start, beat_start, key in _songs(arrays, split):
        scored = beat_start & (key >= 0)
        if not scored.any():
            continue
        truth = key[scored]
        modulating = len(np.unique(truth)) > 1
        found = {"global": np.full(len(truth), melody_key(pitch)),
                 "one_key": section_keys(pitch, bar_start, min_bars=WHOLE_PIECE)[scored],
                 "sectional": section_keys(pitch, bar_start)[scored]}
        for name in (dataset, "all"):
            row = counts.setdefault(name, _empty())
            row["songs"] += 1
            row["beats"] += len(truth)
            row["modulating_songs"] += modulating
            row["modulating_beats"] += len(truth) * modulating
            for finder, keys in found.items():
                exact = keys == truth
                row[f"{finder}_exact"] += int(exact.sum())
                row[f"{finder}_relative"] += int(_relative(keys, truth).sum())
                row[f"{finder}_parallel"] += int(_parallel(keys, truth).sum())
                main = np.bincount(truth, minlength=24).argmax() == np.bincount(keys, minlength=24).argmax()
                row[f"{finder}_songs"] += int(main)
                row[f"{finder}_modulating_exact"] += int(exact.sum()) * modulating
                row[f"{finder}_made_modulating"] += len(np.unique(keys)) > 1
    return counts


def rates(counts: dict[str, dict[str, float]]) -> dict[str, dict]:
    table = {}
    for name, row in counts.items():
        entry = {"songs": row["songs"], "beats": row["beats"], "modulating_songs": row["modulating_songs"]}
        for finder in FINDERS:
            entry[finder] = {
                "beat_exact": row[f"{finder}_exact"] / row["beats"],
                "beat_relative": row[f"{finder}_relative"] / row["beats"],
                "beat_parallel": row[f"{finder}_parallel"] / row["beats"],
                "song_main_key": row[f"{finder}_songs"] / row["songs"],
                "modulating_beat_exact": (row[f"{finder}_modulating_exact"] / row["modulating_beats"]
                                          if row["modulating_beats"] else None),
                "steady_beat_exact": ((row[f"{finder}_exact"] - row[f"{finder}_modulating_exact"])
                                      / (row["beats"] - row["modulating_beats"])
                                      if row["beats"] > row["modulating_beats"] else None),
                "songs_made_modulating": row[f"{finder}_made_modulating"],
            }
        table[name] = entry
    return table


def _print(table: dict[str, dict], split: str) -> None:
    print(f"key from the melody vs annotated key, split {split}")
    print(f"{'set':9s} {'finder':10s} {'songs':>5s} {'beat':>6s} {'rel':>6s} {'par':>6s} {'song':>6s}"
          f" {'steady':>6s} {'mod':>4s} {'modbeat':>8s} {'made_mod':>8s}")
    for name in sorted(table, key=lambda n: (n == "all", n)):
        entry = table[name]
        for finder in FINDERS:
            r = entry[finder]
            modbeat, steady = (("-" if r[field] is None else f"{r[field]:.3f}")
                               for field in ("modulating_beat_exact", "steady_beat_exact"))
            print(f"{name:9s} {finder:10s} {entry['songs']:5d} {r['beat_exact']:6.3f} {r['beat_relative']:6.3f}"
                  f" {r['beat_parallel']:6.3f} {r['song_main_key']:6.3f} {steady:>6s} {entry['modulating_songs']:4d}"
                  f" {modbeat:>8s} {r['songs_made_modulating']:8d}")
    print("beat: exact key per beat; rel/par: beats on the relative/parallel key; song: main key right;"
          " steady: exact per beat on songs in one key; mod: songs whose annotation changes key; modbeat:"
          " exact per beat on those; made_mod: songs"
          " the finder gives more than one key")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.key_accuracy", description=__doc__.split("\n")[0])
    parser.add_argument("--split", choices=["train", "val", "test"], default="val")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                        help=f"lead-sheet cache folder (default {DEFAULT_CACHE})")
    parser.add_argument("--json", type=Path, default=None, help="also write the table as JSON here")
    args = parser.parse_args(argv)
    try:
        arrays = load(args.cache)
    except (FileNotFoundError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    counts = measure(arrays, args.split)
    if not counts:
        print(f"error: no song of split {args.split!r} in the cache", file=sys.stderr)
        return 2
    table = rates(counts)
    _print(table, args.split)
    if args.json:
        args.json.write_text(json.dumps({"split": args.split, "table": table}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

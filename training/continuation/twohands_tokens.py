"""Tokenize the two-hand corpus for training: ``twohands_v1.npz`` -> ``corpus_twohands_v1.npz``.

    python -m training.continuation.twohands_tokens [--cache DIR]

Reads the notes that ``python -m training.continuation.twohands build`` wrote under the cache
folder and encodes every song as the music21 corpus is (``engines.continuation.corpus
.tokenize_notes``: canonicalize, the 1/12-beat grid, valence/arousal labels, style "piano"), with
bar lines every bar of the song's time signature from its first bar (beat 0). Writes a cache that
``load_corpus(cache, "twohands")`` reads, its split from the committed lists
``engines/continuation/splits/twohands_{train,val,test}.txt``; ``train --corpus twohands`` trains
on it. Prints songs and tokens per split, the share of onsets the grid moves and the share of
notes canonicalize changed (re-struck notes shortened, duplicates dropped).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

from engines.continuation.corpus import (
    CORPORA,
    DEFAULT_CACHE,
    STYLES,
    load_corpus,
    save_arrays,
    tokenize_notes,
)
from engines.continuation.tokens import HIGH_PITCH, LOW_PITCH, STEPS_PER_QUARTER, NoteEvent

from .data import summary
from .twohands import TOLERANCE, load

__all__ = ["bar_steps", "main", "song_notes", "tokenize_corpus"]


def bar_steps(time_signature: str) -> int:
    """Grid steps in one bar of ``time_signature`` ("3/4" -> 36, "6/8" -> 36)."""
    try:
        numerator, denominator = (int(x) for x in time_signature.split("/"))
        quarters = Fraction(4 * numerator, denominator)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"time signature {time_signature!r} is not N/D") from None
    steps = quarters * STEPS_PER_QUARTER
    if steps <= 0 or steps.denominator != 1:
        raise ValueError(f"a bar of {time_signature} is not a whole number of grid steps")
    return int(steps)


def song_notes(pitch, start, end, velocity, hand, counters: dict[str, int]) -> list[NoteEvent]:
    """One song's rows (beats) on the grid; notes outside the piano range are dropped and counted."""
    events = []
    for p, s, e, v, h in zip(pitch.tolist(), start.tolist(), end.tolist(), velocity.tolist(), hand.tolist()):
        if not LOW_PITCH <= p <= HIGH_PITCH:
            counters["out_of_range"] += 1
            continue
        onset = max(0, round(s * STEPS_PER_QUARTER))
        counters["off_grid"] += abs(s - onset / STEPS_PER_QUARTER) > TOLERANCE
        duration = max(1, round(e * STEPS_PER_QUARTER) - onset)
        events.append(NoteEvent(onset, int(h), int(p), duration, int(min(127, max(1, v)))))
    return events


def tokenize_corpus(cache: Path = DEFAULT_CACHE) -> dict:
    """Encode every song of the cache's two-hand corpus; write the token cache; return the record."""
    started = time.monotonic()
    data = load(cache)
    order = np.argsort(data["song"], kind="stable")
    bounds = np.searchsorted(data["song"][order], np.arange(len(data["song_ids"]) + 1))
    counters = {"notes": 0, "out_of_range": 0, "off_grid": 0, "shortened": 0, "duplicates": 0}
    tokens, labels, offsets = [], [], [0]
    for index, song_id in enumerate(data["song_ids"].tolist()):
        rows = order[bounds[index]:bounds[index + 1]]
        notes = song_notes(*(data[k][rows] for k in ("pitch", "start", "end", "velocity", "hand")), counters)
        counters["notes"] += len(rows)
        step = bar_steps(str(data["time_signatures"][index]))
        end = max((n.end_steps for n in notes), default=0)
        song_tokens, song_va, changed = tokenize_notes(notes, list(range(0, end, step)), song_id)
        for key, value in changed.items():
            counters[key] += value
        tokens.append(song_tokens)
        labels.append(song_va)
        offsets.append(offsets[-1] + len(song_tokens))
    path = cache / CORPORA["twohands"][0]
    save_arrays(
        path, tokens=np.concatenate(tokens), va=np.concatenate(labels), offsets=np.array(offsets, dtype=np.int64),
        piece_ids=data["song_ids"], styles=np.full(len(tokens), STYLES.index("piano"), dtype=np.int64),
    )
    notes = max(1, counters["notes"])
    return {
        **summary(load_corpus(cache, "twohands")),
        "notes": counters["notes"],
        "dropped_out_of_range": counters["out_of_range"],
        "onsets_moved_by_grid": round(counters["off_grid"] / notes, 4),
        "canonicalize_changed": round((counters["shortened"] + counters["duplicates"]) / notes, 4),
        "canonicalize": {"shortened": counters["shortened"], "duplicates": counters["duplicates"]},
        "seconds": round(time.monotonic() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.continuation.twohands_tokens",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args(argv)
    try:
        print(json.dumps(tokenize_corpus(args.cache), indent=1))
    except (FileNotFoundError, ValueError) as error:
        print(f"twohands_tokens: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

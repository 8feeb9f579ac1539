"""Experiment: how often the human chord (root + third) is among the shipped harmonizer's k most
likely chords, on the VALIDATION lead sheets, decoded as ``scorebridge harmonize`` decodes
(one call per window, keys found per section). It bounds what any re-ranking of the model's own
candidates could reach (docs/harmonizer.md, "Decoding").

    python -m training.harmonizer.experiments.topk_coverage
"""

from __future__ import annotations

import sys

import numpy as np

from engines.harmonizer import leadsheet_corpus as lc
from engines.harmonizer import leadsheet_eval as le
from engines.harmonizer.affect import normalizing_shift
from engines.harmonizer.decode import _masked_log_softmax, allowed_tokens
from engines.harmonizer.decode import fill_masks as shipped_fill_masks
from engines.harmonizer.leadsheet_metrics import labels
from engines.harmonizer.runtime import HarmonizerModel
from engines.harmonizer.vocab import BAR, MASK, VOCAB_SIZE, transpose_tokens

RANKS = (1, 2, 3, 5)
_CLASS_OF = labels(np.arange(VOCAB_SIZE), "majmin")
_CALLS: list[tuple[np.ndarray, np.ndarray]] = []


def _recording_fill_masks(logits_fn, harmony, last, strategy, rng, temperature, top_p, calls, groups=None,
                          allowed=None):
    """The shipped decoding, keeping each window's input row and log-probabilities."""
    base = allowed_tokens(len(harmony), last)
    _CALLS.append((harmony.copy(), _masked_log_softmax(np.asarray(logits_fn(harmony)),
                                                       base if allowed is None else base & allowed)))
    return shipped_fill_masks(logits_fn, harmony, last, strategy, rng, temperature, top_p, calls, groups, allowed)


def _top_classes(log_probs: np.ndarray, count: int) -> list[int]:
    classes: list[int] = []
    for token in np.argsort(-log_probs):
        klass = int(_CLASS_OF[token])
        if klass >= 0 and klass not in classes:
            classes.append(klass)
            if len(classes) == count:
                break
    return classes


def main() -> None:
    sys.modules["engines.harmonizer.harmonize"].fill_masks = _recording_fill_masks  # this experiment only
    model = HarmonizerModel.load("onnx_models/harmonizer.onnx")
    songs = le.songs_from_arrays(lc.load_eval_songs("val", lc.DEFAULT_CACHE, None, lambda t: None, le.EVAL_FIELDS))
    shifts = np.array([normalizing_shift(code % 12, "minor" if code >= 12 else "major") for code in range(24)])
    hits, beats = np.zeros(len(RANKS)), 0
    for number, song in enumerate(songs):
        _CALLS.clear()
        le.harmonize_song(model, song, np.random.default_rng([0, number]))
        shift = shifts[le.found_keys(song)]
        human = np.array([transpose_tokens(np.array([chord]), int(by))[0] for chord, by in zip(song.human, shift)])
        row: dict[int, int] = {}  # sequence position -> token, as the windows reveal it
        for window, (harmony, log_probs) in enumerate(_CALLS):
            start = window * (model.length // 2)
            for index, token in enumerate(harmony):
                row.setdefault(start + index, int(token))
            beat_of, beat = {}, -1
            for position in sorted(row):
                if row[position] != BAR:
                    beat += 1
                    beat_of[position] = beat
            for index, token in enumerate(harmony):
                beat = beat_of.get(start + index, -1)
                if token != MASK or not 0 <= beat < song.beats or _CLASS_OF[human[beat]] < 0:
                    continue
                top = _top_classes(log_probs[index], max(RANKS))
                beats += 1
                hits += [_CLASS_OF[human[beat]] in top[:rank] for rank in RANKS]
    print(f"{beats} beats of {len(songs)} validation songs; human root+third among the model's k best: "
          + ", ".join(f"k={rank} {hit / beats:.3f}" for rank, hit in zip(RANKS, hits)))


if __name__ == "__main__":
    main()

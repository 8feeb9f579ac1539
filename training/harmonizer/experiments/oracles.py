"""Experiment: where the lead-sheet harmonizer's disagreements with the human chords come from,
on the VALIDATION lead sheets only (nothing here reads the test lists).

The shipped decoding (one call per window, greedy, keys found per section) is run once per song
while every window's log-probabilities are kept, put back on the song's beats and in its own
key. Oracles then change one thing at a time, each told one fact the decoder does not have:

- ``key``: the annotated local key per beat instead of the keys found (the decoding runs again);
- ``human spans``: the human harmonic rhythm; per span of one human chord, the root + third
  class with the highest summed log-probability over the span's beats;
- ``transposition``: per song, the transposition of the decoded chords that agrees best;
- ``shift``: per song, the decoded chords moved one beat earlier or later, whichever agrees best.

It also prints how the misses relate to the human chord (same root, other third; the root a
fifth away; the relative chord; other).

    python -m training.harmonizer.experiments.oracles [--songs N]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import numpy as np

from engines.harmonizer import leadsheet_corpus as lc
from engines.harmonizer import leadsheet_eval as le
from engines.harmonizer.decode import _masked_log_softmax, allowed_tokens
from engines.harmonizer.decode import fill_masks as shipped_fill_masks
from engines.harmonizer.grid import build_sequence as shipped_build_sequence
from engines.harmonizer.leadsheet_metrics import MAJMIN, agreement, labels
from engines.harmonizer.runtime import HarmonizerModel
from engines.harmonizer.vocab import MASK, VOCAB_SIZE, transpose_tokens

CLASSES = 12 * len(MAJMIN)
CLASS_OF = labels(np.arange(VOCAB_SIZE), "majmin")
_HARMONIZE = sys.modules["engines.harmonizer.harmonize"]
_RECORD: dict[str, list] = {"calls": [], "sequence": []}


def _recording_fill_masks(logits_fn, harmony, last, strategy, rng, temperature, top_p, calls, groups=None,
                          allowed=None):
    base = allowed_tokens(len(harmony), last)
    log_probs = _masked_log_softmax(np.asarray(logits_fn(harmony)), base if allowed is None else base & allowed)
    _RECORD["calls"].append((harmony.copy(), log_probs))
    return shipped_fill_masks(logits_fn, harmony, last, strategy, rng, temperature, top_p, calls, groups, allowed)


def _recording_build_sequence(*args, **kwargs):
    sequence = shipped_build_sequence(*args, **kwargs)
    _RECORD["sequence"].append(sequence)
    return sequence


@dataclass
class Decoded:
    """One song decoded as shipped: chords per beat and the class log-probabilities per beat
    (song's key; rows of beats the decoder did not choose, such as a given ending, are one-hot)."""

    chords: np.ndarray  # [B]
    class_log_probs: np.ndarray  # [B, 36]
    token_log_probs: np.ndarray  # [B, V] in the song's own key


def decode_song(model: HarmonizerModel, song: le.Song, number: int) -> Decoded:
    """The shipped decoding of one song, with the log-probabilities of every masked position."""
    _RECORD["calls"].clear()
    _RECORD["sequence"].clear()
    chords, _ = le.harmonize_song(model, song, np.random.default_rng([0, number]))
    sequence = _RECORD["sequence"][-1]
    total, length = len(sequence.step), model.length
    position_log_probs = np.full((total, VOCAB_SIZE), np.nan)
    calls, start = iter(_RECORD["calls"]), 0
    while True:
        end = min(total, start + length)
        if (sequence.melody_pitch[start:end] >= 0).any():
            harmony, log_probs = next(calls)
            masked = np.flatnonzero(harmony[: end - start] == MASK)
            position_log_probs[start + masked] = log_probs[masked]
        if end == total:
            break
        start += length // 2
    beat_rows = position_log_probs[sequence.step >= 0]
    shifts = le.found_keys(song)  # the decoder's key per beat: undo its normalization
    from engines.harmonizer.affect import normalizing_shift

    shift = np.array([normalizing_shift(code % 12, "minor" if code >= 12 else "major") for code in range(24)])[shifts]
    token_log_probs = np.full((song.beats, VOCAB_SIZE), -np.inf)
    for beat in range(song.beats):
        if np.isnan(beat_rows[beat]).any():
            token_log_probs[beat, chords[beat]] = 0.0
            continue
        token_log_probs[beat, transpose_tokens(np.arange(VOCAB_SIZE), -int(shift[beat]))] = beat_rows[beat]
    class_log_probs = np.full((song.beats, CLASSES), -np.inf)
    probs = np.exp(token_log_probs)
    for klass in range(CLASSES):
        mass = probs[:, CLASS_OF == klass].sum(1)
        class_log_probs[:, klass] = np.log(np.maximum(mass, 1e-30))
    return Decoded(chords, class_log_probs, token_log_probs)


def human_spans(human: np.ndarray) -> list[np.ndarray]:
    """Runs of beats holding one human chord (beats without a chord left out)."""
    spans, start = [], None
    for beat in range(len(human) + 1):
        if start is not None and (beat == len(human) or human[beat] != human[start]):
            spans.append(np.arange(start, beat))
            start = None
        if beat < len(human) and start is None and CLASS_OF[human[beat]] >= 0:
            start = beat
    return spans


def class_agreement(classes: np.ndarray, human: np.ndarray) -> float:
    truth = CLASS_OF[human]
    counted = truth >= 0
    return float((classes[counted] == truth[counted]).mean()) if counted.any() else float("nan")


def span_oracle(decoded: Decoded, human: np.ndarray) -> np.ndarray:
    classes = decoded.class_log_probs.argmax(1)
    for span in human_spans(human):
        classes[span] = int(decoded.class_log_probs[span].sum(0).argmax())
    return classes


def miss_kinds(chords: np.ndarray, human: np.ndarray) -> dict[str, int]:
    """Counts of hits and of misses by their relation to the human root + third."""
    out = dict.fromkeys(("hit", "same root", "fifth", "relative", "no chord", "other"), 0)
    for got, want in zip(CLASS_OF[chords], CLASS_OF[human]):
        if want < 0:
            continue
        if got < 0:
            out["no chord"] += 1
            continue
        (root, third), (true_root, true_third) = divmod(int(got), 3), divmod(int(want), 3)
        if got == want:
            out["hit"] += 1
        elif root == true_root:
            out["same root"] += 1
        elif (root - true_root) % 12 in (5, 7):
            out["fifth"] += 1
        elif (third, true_third) == (1, 0) and (root - true_root) % 12 == 9 or \
                (third, true_third) == (0, 1) and (root - true_root) % 12 == 3:
            out["relative"] += 1
        else:
            out["other"] += 1
    return out


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="onnx_models/harmonizer.onnx")
    parser.add_argument("--songs", type=int, default=None, help="first N songs of each data set and style")
    args = parser.parse_args(argv)
    _HARMONIZE.fill_masks = _recording_fill_masks  # this experiment only
    _HARMONIZE.build_sequence = _recording_build_sequence
    model = HarmonizerModel.load(args.model)
    songs = le.select_songs(le.songs_from_arrays(
        lc.load_eval_songs("val", lc.DEFAULT_CACHE, None, lambda t: None, le.EVAL_FIELDS)), per_group=args.songs)
    rows: dict[str, list[float]] = {}
    kinds: dict[str, int] = {}
    found_section_keys = _HARMONIZE.section_keys
    for number, song in enumerate(songs):
        decoded = decode_song(model, song, number)
        row = {
            "shipped": agreement(decoded.chords, song.human, "majmin"),
            "class argmax": class_agreement(decoded.class_log_probs.argmax(1), song.human),
            "human spans": class_agreement(span_oracle(decoded, song.human), song.human),
            "transposition": max(agreement(transpose_tokens(decoded.chords, t), song.human, "majmin")
                                 for t in range(12)),
            "shift": max(agreement(np.roll(decoded.chords, s), song.human, "majmin") for s in (-1, 0, 1)),
        }
        annotated = np.where(song.keys >= 0, song.keys, le.found_keys(song))
        _HARMONIZE.section_keys = lambda *a, k=annotated: k
        chords, _ = le.harmonize_song(model, song, np.random.default_rng([0, number]))
        _HARMONIZE.section_keys = found_section_keys
        row["key"] = agreement(chords, song.human, "majmin")
        for name, value in row.items():
            rows.setdefault(name, []).append(value)
        for name, count in miss_kinds(decoded.chords, song.human).items():
            kinds[name] = kinds.get(name, 0) + count
        print(f"\r{number + 1}/{len(songs)}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    styles = sorted({song.style for song in songs})
    print("| oracle | all | " + " | ".join(f"{s} ({sum(x.style == s for x in songs)})" for s in styles) + " |")
    print("|" + " --- |" * (len(styles) + 2))
    for name, values in rows.items():
        values = np.array(values)
        cells = [f"{np.nanmean(values[[x.style == s for x in songs]]):.3f}" for s in styles]
        print(f"| {name} | {np.nanmean(values):.3f} | " + " | ".join(cells) + " |")
    total = sum(kinds.values())
    print("beats with a human chord, shipped decoding: " + ", ".join(f"{k} {v / total:.3f}" for k, v in kinds.items()))


if __name__ == "__main__":
    main(sys.argv[1:])

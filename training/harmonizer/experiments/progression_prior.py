"""Experiment (not shipped): Viterbi decoding of the lead-sheet harmonizer under a learned
harmonic-rhythm and progression prior, swept on the VALIDATION lead sheets only.

The shipped decoding takes every chord of a window from one call, each position's argmax on its
own. This experiment keeps the model's log-probabilities (T = 1, the CANDIDATES best tokens per
position) and adds, between consecutive chord positions, ``rhythm_weight`` x log P(hold | beat
of the bar) and, on a change, ``progression_weight`` x log P(next root+third | previous), both
counted on the TRAIN lead sheets in C major / A minor. Result (docs/harmonizer.md, "Decoding"):
at most +0.005 agreement on validation, so it is not shipped.

    python -m training.harmonizer.experiments.progression_prior 1,0 0,1 1,1 0.5,0.5
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import numpy as np

from engines.harmonizer import leadsheet_corpus as lc
from engines.harmonizer import leadsheet_eval as le
from engines.harmonizer.decode import DecodeResult, _masked_log_softmax, allowed_tokens, span_logits
from engines.harmonizer.decode import fill_masks as shipped_fill_masks
from engines.harmonizer.grid import beat_arrays
from engines.harmonizer.leadsheet_metrics import agreement, changes_per_bar, labels
from engines.harmonizer.runtime import HarmonizerModel
from engines.harmonizer.vocab import BAR, MASK, NUM_SPECIALS, VOCAB_SIZE

CANDIDATES = 12  # the most likely tokens per position the search considers
_CLASSES = 36  # 12 roots x (major third, minor third, no third)
_CLASS_OF = labels(np.arange(VOCAB_SIZE), "majmin")
_BEATS = 4  # hold probabilities for beat 0 (a bar start), 1, 2 and 3-or-later of a bar


@dataclass(frozen=True)
class ProgressionPrior:
    """log P(hold) per beat of the bar, log P(next class | previous class, change), two weights."""

    hold: np.ndarray  # [_BEATS]
    bigram: np.ndarray  # [36, 36]
    rhythm_weight: float = 1.0
    progression_weight: float = 1.0

    def step_scores(self, previous: np.ndarray, current: np.ndarray, beat: int) -> np.ndarray:
        """[P, C] score of moving from each previous candidate token to each current one on the
        ``beat``-th chord position of a bar (0: the bar's first)."""
        same = previous[:, None] == current[None, :]
        hold = self.hold[min(beat, len(self.hold) - 1)]
        prev_class, cur_class = _CLASS_OF[previous], _CLASS_OF[current]
        valid = (prev_class[:, None] >= 0) & (cur_class[None, :] >= 0)
        move = np.where(valid, self.bigram[np.maximum(prev_class, 0)[:, None], np.maximum(cur_class, 0)[None, :]],
                        0.0)
        rhythm = np.where(same, hold, np.log1p(-np.exp(hold)))
        return self.rhythm_weight * rhythm + np.where(same, 0.0, self.progression_weight * move)


def train_prior(arrays: dict, train_ids: set[str]) -> tuple[np.ndarray, np.ndarray]:
    """(log hold per beat of the bar, log bigram of classes on changes) of the train songs."""
    bigram = np.ones((_CLASSES, _CLASSES))  # add-one
    held, seen = np.zeros(_BEATS), np.zeros(_BEATS)
    for index, piece_id in enumerate(arrays["piece_id"]):
        if str(piece_id) not in train_ids:
            continue
        beats = beat_arrays(arrays, int(arrays["offsets"][index]), int(arrays["offsets"][index + 1]))
        chord, bars = beats["chord"].astype(np.int64), beats["bar_start"].astype(bool)
        klass = _CLASS_OF[chord]
        beat = 0
        for t in range(1, len(chord)):
            beat = 0 if bars[t] else beat + 1
            if chord[t] < NUM_SPECIALS or chord[t - 1] < NUM_SPECIALS:
                continue
            slot = min(beat, _BEATS - 1)
            seen[slot] += 1
            if chord[t] == chord[t - 1]:
                held[slot] += 1
            elif klass[t] >= 0 and klass[t - 1] >= 0:
                bigram[klass[t - 1], klass[t]] += 1
    return np.log(held / np.maximum(seen, 1)), np.log(bigram / bigram.sum(1, keepdims=True))


def viterbi_fill(log_probs: np.ndarray, harmony: np.ndarray, allowed: np.ndarray, prior: ProgressionPrior,
                 groups: np.ndarray | None = None) -> np.ndarray:
    """Fill every ``<mask>`` of ``harmony`` [L] with the best-scoring sequence; filled positions
    stay, ``<bar>`` positions mark bar starts, positions of one span (``groups``) hold one chord."""
    current = np.array(harmony, dtype=np.int64, copy=True)
    chord_positions = np.flatnonzero(current != BAR)
    if not (current[chord_positions] == MASK).any():
        return current
    candidates, scores = [], []
    for position in chord_positions:
        if current[position] != MASK:
            candidates.append(np.array([current[position]]))
            scores.append(np.zeros(1))
            continue
        row = np.where(allowed[position], log_probs[position], -np.inf)
        top = np.argsort(-row, kind="stable")[:CANDIDATES]
        top = top[np.isfinite(row[top])]
        candidates.append(top)
        scores.append(row[top])
    best, back, beat = scores[0].copy(), [], 0
    for index in range(1, len(chord_positions)):
        position, before = chord_positions[index], chord_positions[index - 1]
        beat = 0 if current[position - 1] == BAR else beat + 1
        step = prior.step_scores(candidates[index - 1], candidates[index], beat)
        if groups is not None and groups[position] >= 0 and groups[position] == groups[before]:
            step = np.where(candidates[index - 1][:, None] == candidates[index][None, :], 0.0, -np.inf)
        total = best[:, None] + step
        back.append(np.argmax(total, axis=0))
        best = total.max(0) + scores[index]
    picked = [int(np.argmax(best))]
    for pointers in reversed(back):
        picked.append(int(pointers[picked[-1]]))
    picked.reverse()
    for position, options, index in zip(chord_positions, candidates, picked):
        current[position] = options[index]
    return current


_PRIOR: dict[str, ProgressionPrior] = {}


def _fill_masks(logits_fn, harmony, last, strategy, rng, temperature, top_p, calls, groups=None, allowed=None):
    if strategy != "viterbi":
        return shipped_fill_masks(logits_fn, harmony, last, strategy, rng, temperature, top_p, calls, groups, allowed)
    base = allowed_tokens(len(harmony), last)
    allowed = base if allowed is None else base & allowed
    allowed[~allowed.any(1)] = base[~allowed.any(1)]
    log_probs = _masked_log_softmax(span_logits(np.asarray(logits_fn(harmony)), allowed, groups), allowed)
    return DecodeResult(viterbi_fill(log_probs, harmony, allowed, _PRIOR["prior"], groups), 1, [])


def main(argv: list[str]) -> None:
    sys.modules["engines.harmonizer.harmonize"].fill_masks = _fill_masks  # this experiment only
    arrays = lc.load()
    train_ids = set(lc.split_ids("openewld", "train")) | set(lc.split_ids("pop909", "train"))
    hold, bigram = train_prior(arrays, train_ids)
    print("hold per beat of the bar:", np.round(np.exp(hold), 3).tolist())
    model = HarmonizerModel.load("onnx_models/harmonizer.onnx")
    songs = le.songs_from_arrays(lc.load_eval_songs("val", lc.DEFAULT_CACHE, None, lambda t: None, le.EVAL_FIELDS))
    frames = [le._frame(song) for song in songs]
    settings = [None] + [tuple(map(float, text.split(","))) for text in argv]
    for setting in settings:
        if setting is not None:
            _PRIOR["prior"] = ProgressionPrior(hold, bigram, *setting)
        started, agree, changes = time.time(), [], []
        for number, (song, frame) in enumerate(zip(songs, frames)):
            chords, _ = le.harmonize_song(model, song, np.random.default_rng([0, number]),
                                          strategy=None if setting is None else "viterbi", calls=1)
            agree.append(agreement(chords, song.human, "majmin"))
            changes.append(changes_per_bar(chords, song.bar_start, frame.span))
        pop = [value for value, song in zip(agree, songs) if song.style == "pop"]
        name = ("shipped (one call, greedy)" if setting is None
                else f"viterbi rhythm {setting[0]} progression {setting[1]}")
        print(f"{name}: all {np.nanmean(agree):.4f} pop {np.nanmean(pop):.4f} changes/bar {np.nanmean(changes):.2f} "
              f"({len(songs)} val songs, {time.time() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])

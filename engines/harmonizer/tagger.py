"""The offline harmonizer's second opinion: a small per-beat chord tagger (numpy + onnxruntime).

The lead-sheet model sees each beat's melody as a set of pitch classes, in windows of 80
positions. The tagger reads it differently: how long each pitch class sounds in the beat, the
pitch on the beat, the neighbouring beats and the bars around it (``beat_features``). On its own
it agrees with human chords about as often as the model; its mistakes differ, so the two
together agree more often than either (docs/harmonizer.md). It gives log-probabilities of
the 36 root + third classes (12 roots x major third, minor third, no third) in the key-normalized
frame. ``combined_scores`` adds them, weighted, to the lead-sheet model's token log-probabilities
averaged over overlapping all-masked windows (``window_log_probs``); ``harmonize`` then picks
chords from those scores (strategy ``tagged``, docs/harmonizer.md). The live engine does not use
it: its decision stays one call of the lead-sheet model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onnx_models import open_model

from .decode import _masked_log_softmax, allowed_tokens, fill_masks
from .leadsheet_metrics import MAJMIN, labels
from .vocab import MASK, NC, PAD, VOCAB_SIZE

__all__ = ["CLASSES", "CONTEXT_BEATS", "ChordTagger", "beat_features", "combined_scores", "decode_tagged",
           "window_log_probs"]

CLASSES = 12 * len(MAJMIN)
CONTEXT_BEATS = (-4, -3, -2, -1, 1, 2, 3, 4)  # neighbouring beats whose melody the tagger sees
_CLASS_OF = labels(np.arange(VOCAB_SIZE), "majmin")


def _roll_rows(rows: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Each row [12] of pitch-class values moved up ``shift`` semitones (per row)."""
    index = (np.arange(12)[None, :] - shift[:, None]) % 12
    return np.take_along_axis(rows, index, 1)


def beat_features(pitches: np.ndarray, bar_start: np.ndarray, shift: np.ndarray, minor: np.ndarray) -> np.ndarray:
    """[B, K] every melody pitch of each beat (one per 16th, -1 for none), bar starts, each
    beat's key-normalizing shift and minor flag -> float32 [B, F] features in the normalized
    frame: the beat's pitch-class durations (share of its K 16ths), its pitch-class set, the
    pitch class on the beat, the durations of the CONTEXT_BEATS beats around it, the duration
    shares of its bar and of the bars before and after, its beat of the bar (1, 2, 3, 4 or
    later) and the mode."""
    pitches = np.asarray(pitches, dtype=np.int64)
    beats, width = pitches.shape
    rows, cols = np.nonzero(pitches >= 0)
    durations = np.zeros((beats, 12))
    np.add.at(durations, (rows, pitches[rows, cols] % 12), 1.0 / width)
    present = (durations > 0).astype(np.float64)
    on_beat = np.zeros((beats, 12))
    sounding = pitches[:, 0] >= 0
    on_beat[np.flatnonzero(sounding), pitches[sounding, 0] % 12] = 1.0
    bar_start = np.asarray(bar_start, dtype=bool).copy()
    bar_start[0] = True
    bar_of = np.cumsum(bar_start) - 1
    bars = np.zeros((bar_of[-1] + 1, 12))
    np.add.at(bars, bar_of, durations)
    bars /= np.maximum(bars.sum(1, keepdims=True), 1e-9)
    first = np.flatnonzero(bar_start)
    position = np.minimum(np.arange(beats) - first[bar_of], 3)
    reach = max(abs(offset) for offset in CONTEXT_BEATS)
    padded = np.vstack([np.zeros((reach, 12)), durations, np.zeros((reach, 12))])
    shift = np.asarray(shift, dtype=np.int64)
    parts = [durations, present, on_beat]
    parts += [padded[reach + offset: reach + offset + beats] for offset in CONTEXT_BEATS]
    parts += [bars[bar_of], bars[np.maximum(bar_of - 1, 0)], bars[np.minimum(bar_of + 1, len(bars) - 1)]]
    rolled = [_roll_rows(part, shift) for part in parts]
    return np.hstack([*rolled, np.eye(4)[position], np.asarray(minor, np.float64)[:, None]]).astype(np.float32)


@dataclass
class ChordTagger:
    """The tagger's ORT session and card; ``log_probs`` runs it on a song's beat features."""

    session: object
    card: dict
    path: Path

    @classmethod
    def load(cls, onnx_path: str | Path, threads: int = 1) -> ChordTagger:
        session, card = open_model(Path(onnx_path), threads=threads, required=("features", "classes"),
                                   export_hint="export it with `python -m training.harmonizer.tagger`")
        return cls(session, card, Path(onnx_path))

    def log_probs(self, features: np.ndarray) -> np.ndarray:
        """[B, F] -> [B, 36] log-probabilities of root * 3 + (major third, minor third, no third)."""
        (output,) = self.session.run(None, {"features": np.asarray(features, np.float32)})
        return np.asarray(output, dtype=np.float64)


def window_log_probs(logits_of, melody_roll: np.ndarray, harmony: np.ndarray, va: np.ndarray,
                     melody_pitch: np.ndarray, length: int, stride: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The lead-sheet model's token log-probabilities at every position of a sequence: the mean
    probability over every window of ``length`` positions covering it, windows ``stride`` apart,
    each decoded all-masked (only the given tokens of ``harmony`` as context). ``logits_of`` maps
    a batch ([W, L, R] melody, [W, L] harmony, [W, L, 2] affect) to [W, L, V] logits. Returns
    ([P, V], [P] the windows with melody that covered each position (0: none did), the number of
    windows run)."""
    total = len(harmony)
    last_start = max(0, total - length)
    starts = sorted({min(start, last_start) for start in range(0, last_start + stride, stride)})
    melody = np.zeros((len(starts), length, melody_roll.shape[1]), np.float32)
    tokens = np.full((len(starts), length), PAD, dtype=np.int64)
    affect = np.zeros((len(starts), length, 2), np.float32)
    lasts = []
    for row, start in enumerate(starts):
        end = min(total, start + length)
        melody[row, : end - start] = melody_roll[start:end]
        tokens[row, : end - start] = harmony[start:end]
        affect[row, : end - start] = va[start:end]
        sounding = np.flatnonzero(melody_pitch[start:end] >= 0)
        lasts.append(int(sounding[-1]) if len(sounding) else -1)
    keep = [row for row, last in enumerate(lasts) if last >= 0]  # a window without melody: no call
    sums, counts = np.zeros((total, VOCAB_SIZE)), np.zeros(total, dtype=np.int64)
    if keep:
        logits = logits_of(melody[keep], tokens[keep], affect[keep])
        for index, row in enumerate(keep):
            start = starts[row]
            end = min(total, start + length)
            allowed = allowed_tokens(length, lasts[row])
            sums[start:end] += np.exp(_masked_log_softmax(logits[index], allowed)[: end - start])
            counts[start:end] += 1
    with np.errstate(divide="ignore"):
        return np.log(sums / np.maximum(counts, 1)[:, None]), counts, len(keep)


def combined_scores(model_log_probs: np.ndarray, tagger_log_probs: np.ndarray, weight: float) -> np.ndarray:
    """[S, V] token log-probabilities + ``weight`` x the tagger's log-probability of each
    token's root + third class ([S, 36]); tokens without a chord class keep the model's score."""
    classes = np.where(_CLASS_OF >= 0, _CLASS_OF, 0)
    bonus = np.where(_CLASS_OF[None, :] >= 0, tagger_log_probs[:, classes], 0.0)
    return model_log_probs + weight * bonus


def decode_tagged(model, sequence, harmony: np.ndarray, style_id: int, condition: np.ndarray,
                  melody_pitch: np.ndarray, bar_start: np.ndarray, keys: np.ndarray, shift: np.ndarray,
                  rng: np.random.Generator, temperature: float, top_p: float, groups: np.ndarray | None,
                  allowed: np.ndarray | None) -> tuple[np.ndarray, int]:
    """Strategy 'tagged' (offline only): every chord from the model's all-masked windows, averaged
    where they overlap, plus the card's tagger weight x the per-beat tagger's root + third
    log-probabilities (``tagger.py``); then one pass of ``fill_masks`` over the whole melody (spans,
    cadences, scale and temperature as for any strategy). Returns (filled sequence, model calls:
    one batched call of every window, counted per window)."""
    tagger, settings = model.tagger()

    def logits_of(melody: np.ndarray, tokens: np.ndarray, affect: np.ndarray) -> np.ndarray:
        count = len(tokens)
        return model.logits_batch(melody, tokens, affect, np.full(count, style_id, dtype=np.int64),
                                  np.repeat(condition[None], count, 0))

    log_probs, covered, windows = window_log_probs(logits_of, sequence.melody_roll, harmony, sequence.va,
                                                   sequence.melody_pitch, model.length, settings["stride"])
    harmony = harmony.copy()
    harmony[(covered == 0) & (harmony == MASK)] = NC  # no window with melody covers it: a long rest
    pitches = melody_pitch if melody_pitch.ndim == 2 else melody_pitch[:, None]
    steps = sequence.step >= 0
    tagged = np.zeros((len(harmony), CLASSES), dtype=np.float64)
    tagged[steps] = tagger.log_probs(beat_features(pitches, bar_start, shift, keys >= 12))
    scores = combined_scores(log_probs, tagged, settings["weight"])
    scores[covered == 0] = 0.0  # filled with <nc> above: any finite row
    sounding = np.flatnonzero(sequence.melody_pitch >= 0)
    result = fill_masks(lambda tokens: scores, harmony, int(sounding[-1]), "entropic", rng, temperature, top_p, 1,
                        groups=groups, allowed=allowed)
    return result.harmony, windows

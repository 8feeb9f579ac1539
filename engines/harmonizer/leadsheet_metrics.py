"""Figures of a harmonization against a lead sheet's human chords, per song (numpy only).

Chords are tokens per metric beat (the chord sounding at the beat's first 16th), in the song's
own key. Two reductions compare a chord with the human one:

- ``majmin``: root + third. A quality with a major third is ``maj`` (maj, 6, 7, 9, 11, 13, maj7,
  aug, and 7(#9), which has both thirds), one with a minor third and no major third is ``min``
  (min, m6, m7, m9, m11, m13, mMaj7, dim, m7b5, dim7), one without a third is ``no3`` (sus2,
  sus4, power chord, single note). mir_eval's ``majmin`` leaves dim, aug and sus out of the
  comparison; here every chord counts, so a sus4 under a human major triad is a miss.
- ``sevenths``: root + one of maj (maj, 6), min (min, m6), 7 (every dominant, extensions and
  alterations included), maj7 (maj7, 9, 13 on a major seventh), min7 (m7, m9, m11, m13), mMaj7,
  dim, hdim7, dim7, aug, sus (sus2, sus4) and 5 (power chord, single note).

Beats without a human chord (N.C., intros) are left out of both; a system's no-chord on a
human chord is a miss.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .metrics import (
    _interval_score,
    chord_coverage,
    chord_histogram_entropy,
    chords_from_tokens,
    ctnctr,
    melody_from_grid,
)
from .vocab import BAR, NUM_QUALITIES, NUM_SPECIALS, QUALITIES, VOCAB_SIZE, token_bitmaps

__all__ = [
    "MAJMIN",
    "SEVENTHS",
    "KEY_RELATIONS",
    "labels",
    "agreement",
    "changes_per_bar",
    "chord_tone_ratio",
    "ends_on_tonic",
    "key_relation",
    "key_shares",
    "window_melody",
    "window_scores",
]

MAJMIN = ("maj", "min", "no3")
SEVENTHS = ("maj", "min", "7", "maj7", "min7", "minmaj7", "dim", "hdim7", "dim7", "aug", "sus", "5")
_SEVENTH_OF = {
    "maj": "maj", "maj6": "maj", "min": "min", "min6": "min", "aug": "aug", "dim": "dim",
    "sus4": "sus", "sus2": "sus", "maj7": "maj7", "maj9": "maj7", "maj13": "maj7",
    "min7": "min7", "min9": "min7", "min11": "min7", "min13": "min7", "minmaj7": "minmaj7",
    "dim7": "dim7", "hdim7": "hdim7", "1": "5", "5": "5", "": "5",
}  # every other quality has a major third and a minor seventh: a dominant
KEY_RELATIONS = ("exact", "fifth", "relative", "parallel", "other")
_BITMAPS = token_bitmaps().astype(bool)


def _table(class_of) -> np.ndarray:
    """Label per token: root * classes + class of its quality; -1 for the specials."""
    table = np.full(VOCAB_SIZE, -1, dtype=np.int64)
    for index, (name, intervals) in enumerate(QUALITIES):
        klass, count = class_of(name, set(intervals))
        for root in range(12):
            table[NUM_SPECIALS + root * NUM_QUALITIES + index] = root * count + klass
    return table


_LABELS = {
    "majmin": _table(lambda name, iv: (0 if 4 in iv else 1 if 3 in iv else 2, len(MAJMIN))),
    "sevenths": _table(lambda name, iv: (SEVENTHS.index(_SEVENTH_OF.get(name, "7")), len(SEVENTHS))),
}


def labels(tokens: np.ndarray, level: str) -> np.ndarray:
    """Reduced chord labels (``majmin`` or ``sevenths``); -1 where there is no chord."""
    return _LABELS[level][np.asarray(tokens, dtype=np.int64)]


def agreement(chords: np.ndarray, human: np.ndarray, level: str) -> float:
    """Share of the beats with a human chord where ``chords`` has the same reduced label."""
    truth = labels(human, level)
    counted = truth >= 0
    if not counted.any():
        return float("nan")
    return float((labels(chords, level)[counted] == truth[counted]).mean())


def changes_per_bar(chords: np.ndarray, bar_start: np.ndarray, span: np.ndarray) -> float:
    """Chord changes per bar over the beats in ``span``: a token unlike the previous chord
    token (no-chord beats skipped), over the bars that begin in the span (at least one)."""
    inside = np.asarray(chords)[span]
    inside = inside[labels(inside, "majmin") >= 0]
    changes = int((inside[1:] != inside[:-1]).sum()) if len(inside) else 0
    return changes / max(1, int(np.asarray(bar_start)[span].sum()))


def chord_tone_ratio(chords_16ths: np.ndarray, melody_16ths: np.ndarray, counted: np.ndarray) -> float:
    """Share of the sounding melody 16ths in ``counted`` whose pitch class is in the chord
    sounding there (a 16th without a chord is not on a chord tone)."""
    sounding = (np.asarray(melody_16ths) >= 0) & counted
    if not sounding.any():
        return float("nan")
    tokens = np.asarray(chords_16ths, dtype=np.int64)[sounding]
    return float(_BITMAPS[tokens, np.asarray(melody_16ths)[sounding] % 12].mean())


def ends_on_tonic(chord: int, last_pitch: int, tonic: int, mode: str) -> float:
    """1.0 when a melody ending on the tonic (``last_pitch``) ends on the tonic chord (root and
    third of the key), 0.0 when it ends on another chord; nan when the melody ends elsewhere."""
    if last_pitch < 0 or last_pitch % 12 != tonic:
        return float("nan")
    return float(labels(np.array([chord]), "majmin")[0] == tonic * len(MAJMIN) + (mode == "minor"))


def key_relation(found: int, annotated: int) -> str:
    """How a found key relates to the annotated one (key codes: tonic pitch class, +12 for
    minor): exact, fifth (same mode, a fifth up or down), relative (same signature, other mode),
    parallel (same tonic, other mode) or other."""
    (tonic, minor), (true_tonic, true_minor) = divmod(found, 12)[::-1], divmod(annotated, 12)[::-1]
    if minor == true_minor:
        return "exact" if tonic == true_tonic else "fifth" if (tonic - true_tonic) % 12 in (5, 7) else "other"
    if tonic == true_tonic:
        return "parallel"
    major, minor_tonic = (true_tonic, tonic) if minor else (tonic, true_tonic)
    return "relative" if (major - minor_tonic) % 12 == 3 else "other"


_RELATION = np.array([[KEY_RELATIONS.index(key_relation(f, a)) for a in range(24)] for f in range(24)])


def key_shares(found: np.ndarray, annotated: np.ndarray) -> dict[str, float]:
    """Share of the positions with an annotated key (code >= 0) in each ``KEY_RELATIONS``."""
    known = np.asarray(annotated) >= 0
    if not known.any():
        return dict.fromkeys(KEY_RELATIONS, float("nan"))
    counts = np.bincount(_RELATION[np.asarray(found)[known], np.asarray(annotated)[known]], minlength=5)
    return dict(zip(KEY_RELATIONS, (counts / counts.sum()).tolist()))


def _consonance_table() -> np.ndarray:
    """[token, melody pitch class] -> PCS of that melody note over that chord (nan: no chord)."""
    table = np.full((VOCAB_SIZE, 12), np.nan)
    for token in range(NUM_SPECIALS, VOCAB_SIZE):
        tones = np.flatnonzero(_BITMAPS[token])
        table[token] = [np.mean([_interval_score(pc - tone) for tone in tones]) for pc in range(12)]
    return table


_CONSONANCE = _consonance_table()


def window_scores(row: np.ndarray, pitch: np.ndarray, melody: Sequence) -> dict[str, float]:
    """PCS, CTnCTR, CHE and CC of one window of grid positions (chord tokens, ``<bar>`` at bar
    positions; ``pitch`` the top melody pitch per position) as ``metrics.score_window`` computes
    them, one beat per position; ``melody`` is ``window_melody`` of the window.

    PCS is ``metrics.pitch_consonance_score`` read off a table: on a grid of beats every 16th
    of a beat meets the beat's chord, so it is the mean over beats with a note and a chord."""
    chords = chords_from_tokens(row, 1.0)
    scores = _CONSONANCE[np.asarray(row, dtype=np.int64), np.asarray(pitch) % 12][np.asarray(pitch) >= 0]
    scores = scores[np.isfinite(scores)]
    return {"PCS": float(scores.mean()) if len(scores) else float("nan"), "CTnCTR": ctnctr(melody, chords),
            "CHE": chord_histogram_entropy(chords), "CC": float(chord_coverage(chords))}


def window_melody(pitch: np.ndarray, onset: np.ndarray, row: np.ndarray) -> Sequence:
    """The notes ``window_scores`` judges: top pitch per position, ``<bar>`` positions skipped."""
    return melody_from_grid(pitch, onset, 1.0, is_bar=np.asarray(row) == BAR)

"""Harmonization metrics of paper section 1 (numpy only).

Times are in beats (quarter notes). A melody is a list of `core.events.Note` (onset in
`at_beats`, velocity unused), a chord track a list of `Chord(onset_beats, duration_beats,
pitch_classes)`. On a grid the chords come from token runs (`chords_from_tokens`), so the paper's
"onsets within 0.05 s are one chord" rule is implicit: one chord per run of equal tokens.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from core.events import Note

from .vocab import BAR, PAD, is_chord_token, token_pitch_classes

__all__ = [
    "Chord",
    "tonal_centroid",
    "chords_from_tokens",
    "melody_from_grid",
    "chord_histogram_entropy",
    "chord_coverage",
    "chord_tonal_distance",
    "ctnctr",
    "pitch_consonance_score",
    "melody_chord_tonal_distance",
    "harmonic_rhythm",
    "chord_beat_strength",
    "all_metrics",
    "score_window",
    "mean_absolute_errors",
]

CONSONANT_INTERVALS = frozenset({0, 3, 4, 7, 8, 9})
_GRID_VELOCITY = 64  # a grid has no velocities; the metrics never read them


@dataclass(frozen=True)
class Chord:
    onset_beats: float
    duration_beats: float
    pitch_classes: tuple[int, ...]


def tonal_centroid(pitch_classes: Iterable[int]) -> np.ndarray:
    """Harte et al. 6-D tonal centroid (fifths, minor thirds, major thirds; radii 1, 1, 0.5)."""
    pcs = np.array(sorted(set(int(p) % 12 for p in pitch_classes)), dtype=np.float64)
    if len(pcs) == 0:
        return np.zeros(6)
    angles = [pcs * 7 * np.pi / 6, pcs * 3 * np.pi / 2, pcs * 2 * np.pi / 3]
    radii = (1.0, 1.0, 0.5)
    parts = []
    for angle, radius in zip(angles, radii):
        parts += [radius * np.sin(angle), radius * np.cos(angle)]
    return np.array(parts).sum(1) / len(pcs)


def chords_from_tokens(tokens: Sequence[int], step_beats: float) -> list[Chord]:
    """Runs of equal chord tokens -> chords; `<bar>` positions are skipped (they take no time)."""
    chords: list[Chord] = []
    beat = 0.0
    current, start = None, 0.0
    for token in tokens:
        token = int(token)
        if token == BAR:
            continue
        if token != current:
            if current is not None and is_chord_token(current):
                chords.append(Chord(start, beat - start, token_pitch_classes(current)))
            current, start = token, beat
        beat += step_beats
    if current is not None and is_chord_token(current):
        chords.append(Chord(start, beat - start, token_pitch_classes(current)))
    return chords


def melody_from_grid(
    pitch: Sequence[int], onset: Sequence[int], step_beats: float, is_bar: Sequence[bool] | None = None
) -> list[Note]:
    """Per-step top pitch (-1 rest) and onset flags -> notes; bar positions are skipped."""
    notes: list[Note] = []
    beat, current, start = 0.0, -1, 0.0
    for index, (p, o) in enumerate(zip(pitch, onset)):
        if is_bar is not None and is_bar[index]:
            continue
        p = int(p)
        if p != current or (o and p >= 0):
            if current >= 0:
                notes.append(Note(current, _GRID_VELOCITY, beat - start, at_beats=start))
            current, start = p, beat
        beat += step_beats
    if current >= 0:
        notes.append(Note(current, _GRID_VELOCITY, beat - start, at_beats=start))
    return notes


def _entropy(counts: Iterable[int]) -> float:
    values = np.array(list(counts), dtype=np.float64)
    if values.sum() <= 0:
        return 0.0
    probs = values / values.sum()
    return float(-(probs * np.log(probs)).sum())


def chord_histogram_entropy(chords: Sequence[Chord]) -> float:
    """CHE: entropy (nats) of the histogram of chords (as pitch-class sets)."""
    return _entropy(Counter(c.pitch_classes for c in chords).values())


def chord_coverage(chords: Sequence[Chord]) -> int:
    """CC: number of distinct chords."""
    return len({c.pitch_classes for c in chords})


def chord_tonal_distance(chords: Sequence[Chord]) -> float:
    """CTD: mean tonal-centroid distance of consecutive chords (nan with fewer than two)."""
    if len(chords) < 2:
        return float("nan")
    centroids = np.array([tonal_centroid(c.pitch_classes) for c in chords])
    return float(np.linalg.norm(np.diff(centroids, axis=0), axis=1).mean())


def _chord_at(chords: Sequence[Chord], beat: float) -> Chord | None:
    for chord in chords:
        if chord.onset_beats <= beat + 1e-9 < chord.onset_beats + chord.duration_beats:
            return chord
    return None


def ctnctr(melody: Sequence[Note], chords: Sequence[Chord]) -> float:
    """CTnCTR = (n_c + n_p) / (n_c + n_n), each note judged against the chord at its onset.

    n_p: non-chord tones whose next different note is a chord tone within 2 semitones.
    """
    chord_tones = non_chord = proper = 0
    for index, note in enumerate(melody):
        chord = _chord_at(chords, note.at_beats)
        if chord is None:
            continue
        if note.pitch % 12 in chord.pitch_classes:
            chord_tones += 1
            continue
        non_chord += 1
        following = next((n for n in melody[index + 1 :] if n.pitch != note.pitch), None)
        if following is not None and abs(following.pitch - note.pitch) <= 2:
            next_chord = _chord_at(chords, following.at_beats)
            if next_chord is not None and following.pitch % 12 in next_chord.pitch_classes:
                proper += 1
    if chord_tones + non_chord == 0:
        return float("nan")
    return (chord_tones + proper) / (chord_tones + non_chord)


def _interval_score(interval: int) -> float:
    interval %= 12
    if interval in CONSONANT_INTERVALS:
        return 1.0
    return 0.0 if interval == 5 else -1.0


def pitch_consonance_score(
    melody: Sequence[Note], chords: Sequence[Chord], window_beats: float = 0.25
) -> float:
    """PCS: per 16th window, the melody note against every chord tone placed at/below it."""
    scores = []
    for note in melody:
        steps = max(1, int(round(note.duration_beats / window_beats)))
        for k in range(steps):
            chord = _chord_at(chords, note.at_beats + k * window_beats)
            if chord is None or not chord.pitch_classes:
                continue
            # a chord tone at/below the melody note: the interval is (melody - tone) mod 12
            scores.append(np.mean([_interval_score(note.pitch - pc) for pc in chord.pitch_classes]))
    return float(np.mean(scores)) if scores else float("nan")


def melody_chord_tonal_distance(melody: Sequence[Note], chords: Sequence[Chord]) -> float:
    """MCTD: duration-weighted tonal-centroid distance of each melody note to its chord."""
    total = weight = 0.0
    for note in melody:
        chord = _chord_at(chords, note.at_beats)
        if chord is None:
            continue
        distance = np.linalg.norm(tonal_centroid([note.pitch]) - tonal_centroid(chord.pitch_classes))
        total += distance * note.duration_beats
        weight += note.duration_beats
    return total / weight if weight > 0 else float("nan")


def harmonic_rhythm(chords: Sequence[Chord], bar_onsets_beats: Sequence[float]) -> dict[str, float]:
    """HRHE/HRC: entropy and count of chord inter-onset intervals; *_bar: of onset positions in the bar."""
    onsets = [c.onset_beats for c in chords]
    intervals = [round(b - a, 4) for a, b in zip(onsets, onsets[1:])]
    positions = [round(_position_in_bar(o, bar_onsets_beats), 4) for o in onsets]
    return {
        "HRHE": _entropy(Counter(intervals).values()),
        "HRC": float(len(set(intervals))),
        "HRHE_bar": _entropy(Counter(positions).values()),
        "HRC_bar": float(len(set(positions))),
    }


def _position_in_bar(onset: float, bar_onsets_beats: Sequence[float]) -> float:
    earlier = [b for b in bar_onsets_beats if b <= onset + 1e-9]
    return onset - (max(earlier) if earlier else 0.0)


def chord_beat_strength(chords: Sequence[Chord], bar_onsets_beats: Sequence[float]) -> float:
    """CBS: mean over chord onsets of 0 downbeat, 1 beat, 2 half-beat, 3 quarter-beat, 4 other."""
    if not chords:
        return float("nan")
    strengths = []
    for chord in chords:
        position = _position_in_bar(chord.onset_beats, bar_onsets_beats)
        if abs(position) < 1e-6:
            strengths.append(0)
        elif abs(position - round(position)) < 1e-6:
            strengths.append(1)
        elif abs(2 * position - round(2 * position)) < 1e-6:
            strengths.append(2)
        elif abs(4 * position - round(4 * position)) < 1e-6:
            strengths.append(3)
        else:
            strengths.append(4)
    return float(np.mean(strengths))


def all_metrics(
    melody: Sequence[Note], chords: Sequence[Chord], bar_onsets_beats: Sequence[float]
) -> dict[str, float]:
    """Every metric for one piece."""
    return {
        "CHE": chord_histogram_entropy(chords),
        "CC": float(chord_coverage(chords)),
        "CTD": chord_tonal_distance(chords),
        "CTnCTR": ctnctr(melody, chords),
        "PCS": pitch_consonance_score(melody, chords),
        "MCTD": melody_chord_tonal_distance(melody, chords),
        **harmonic_rhythm(chords, bar_onsets_beats),
        "CBS": chord_beat_strength(chords, bar_onsets_beats),
    }


def score_window(
    tokens: np.ndarray,
    truth: np.ndarray,
    melody_pitch: np.ndarray,
    melody_onset: np.ndarray,
    step_beats: float,
) -> dict[str, float]:
    """Every metric of one grid window's harmony row over its real (non-pad) positions."""
    real = truth != PAD
    is_bar = truth[real] == BAR
    melody = melody_from_grid(melody_pitch[real], melody_onset[real], step_beats, is_bar=is_bar)
    chords = chords_from_tokens(tokens[real], step_beats)
    bar_onsets = [float(np.count_nonzero(~is_bar[:i]) * step_beats) for i in np.flatnonzero(is_bar)] or [0.0]
    return all_metrics(melody, chords, bar_onsets)


def mean_absolute_errors(
    generated: Sequence[dict[str, float]], truth: Sequence[dict[str, float]]
) -> dict[str, float]:
    """Per metric, mean over pieces of |generated - ground truth| (pieces with nan skipped)."""
    if len(generated) != len(truth):
        raise ValueError(f"{len(generated)} generated vs {len(truth)} ground-truth pieces")
    out = {}
    for key in truth[0] if truth else []:
        diffs = [
            abs(g[key] - t[key])
            for g, t in zip(generated, truth)
            if np.isfinite(g[key]) and np.isfinite(t[key])
        ]
        out[key] = float(np.mean(diffs)) if diffs else float("nan")
    return out

"""Modal-swap augmentation: teach the valence adapter to lead the music, not to echo it.

The valence label of a training token is computed from the music itself (its mode), so in an
ordinary window the label says what the context already says and the model can ignore the
adapter: with the plain labels, asking a major prompt for valence -0.8 barely moves the
continuation's mode (Spearman 0.12, second session). This augmentation breaks that redundancy.
From a random token of the window on, the notes are moved to the parallel mode of the window's
key (major -> natural minor: degrees 3, 6 and 7 lowered a semitone; minor -> major: raised), and
the valence labels are recomputed for the changed notes. Before the split the context is in one
mode; after it the music, and its label, are in the other. Because labels are smoothed over
8 quarter notes centred on each frame, the label starts to move a few beats before the notes do,
which is exactly what a live curve asks of the model.

numpy only; used by ``training.continuation.train --modal-swap P``.
"""

from __future__ import annotations

import numpy as np

from .affect import key_correlations, token_va, valence_arousal
from .tokens import HIGH_PITCH, LOW_PITCH, NOTE_ON, decode, is_note, note_token, parse_note_token

__all__ = ["MAJOR_TO_MINOR", "modal_swap", "parallel_mode_shift", "window_key"]

# Semitone moves per pitch class above the tonic, to the parallel mode.
MAJOR_TO_MINOR = {4: -1, 9: -1, 11: -1}
_MINOR_TO_MAJOR = {3: +1, 8: +1, 10: +1}


def window_key(tokens: np.ndarray) -> tuple[int, bool] | None:
    """(tonic pitch class, is_major) of the NOTE_ONs' pitch-class histogram; None without notes."""
    histogram = np.zeros(12)
    for token in tokens:
        token = int(token)
        if is_note(token):
            _, kind, pitch = parse_note_token(token)
            if kind == NOTE_ON:
                histogram[pitch % 12] += 1
    if histogram.sum() < 4 or histogram.std() == 0:
        return None
    best = int(np.argmax(key_correlations(histogram)))
    return best % 12, best < 12


def parallel_mode_shift(pitch: int, tonic: int, major: bool) -> int:
    """The pitch in the parallel mode (unchanged when its degree does not differ)."""
    moves = MAJOR_TO_MINOR if major else _MINOR_TO_MAJOR
    return pitch + moves.get((pitch - tonic) % 12, 0)


def modal_swap(
    tokens: np.ndarray, va: np.ndarray, split: int, hold_target: bool = False, valence_lead: int = 0
) -> tuple[np.ndarray, np.ndarray] | None:
    """Tokens with the notes struck at or after index ``split`` moved to the parallel mode.

    A note keeps its pitch when it was struck before ``split`` (its NOTE_OFF too), so every
    NOTE_ON still has its matching NOTE_OFF. Returns None when the window has no clear key, when
    nothing would change, or when a moved note would leave the piano or collide with a key the
    same hand already holds. The valence column of ``va`` is shifted by the change the swap makes
    to the window's own labels; arousal is kept. With ``hold_target`` every token, the unchanged
    start included, gets the mean valence of the swapped part: a constant target that the context
    contradicts until the music turns to it, as when a player asks a major phrase for valence -0.8.
    ``valence_lead`` is the labels' look-ahead (``affect.valence_arousal``), so the recomputed
    valence moves before the turn exactly as the corpus labels do.
    """
    key = window_key(tokens)
    if key is None:
        return None
    tonic, major = key
    moved = tokens.copy()
    shifted: set[tuple[int, int]] = set()
    sounding: set[tuple[int, int]] = set()
    changed = False
    for index, token in enumerate(tokens):
        token = int(token)
        if not is_note(token):
            continue
        hand, kind, pitch = parse_note_token(token)
        if kind == NOTE_ON:
            target = parallel_mode_shift(pitch, tonic, major) if index >= split else pitch
            if not LOW_PITCH <= target <= HIGH_PITCH or (hand, target) in sounding:
                return None
            if target != pitch:
                shifted.add((hand, pitch))
                changed = True
            else:
                shifted.discard((hand, pitch))
            sounding.add((hand, target))
        else:
            target = parallel_mode_shift(pitch, tonic, major) if (hand, pitch) in shifted else pitch
            shifted.discard((hand, pitch))
            sounding.discard((hand, target))
        moved[index] = note_token(hand, kind, target)
    if not changed:
        return None
    new_va = va.copy()
    change = _window_valence(moved, valence_lead) - _window_valence(tokens, valence_lead)
    new_va[:, 0] = np.clip(va[:, 0] + change, -1.0, 1.0)
    if hold_target:
        new_va[:, 0] = new_va[split:, 0].mean()
    return moved, new_va


def _window_valence(tokens: np.ndarray, valence_lead: int) -> np.ndarray:
    """Per-token valence of a window computed from the window alone."""
    notes, _, _ = decode(tokens)
    total = max((note.end_steps for note in notes), default=1)
    return token_va(tokens, valence_arousal(notes, total, valence_lead=valence_lead))[:, 0]

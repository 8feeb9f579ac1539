"""Harmonize a melody of any length with the exported model (numpy + onnxruntime only).

The melody is given on the model's grid (one MIDI pitch per step, -1 for rests) with bar starts.
It is key-normalized like the training data, cut into windows of L positions that overlap by
half (the chords of the overlap are given to the next window as context), decoded, and the
chords are transposed back to the melody's key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from core.keys import section_keys

from .affect import normalizing_shift
from .decode import STRATEGIES, allowed_tokens, fill_masks, nucleus_sample
from .grid import build_sequence, time_signature_vector
from .runtime import HarmonizerModel
from .tagger import decode_tagged
from .vocab import (
    MASK,
    NC,
    NUM_QUALITIES,
    NUM_SPECIALS,
    PAD,
    ROOT_NAMES,
    is_chord_token,
    token_id,
    transpose_tokens,
)

__all__ = [
    "ENDINGS",
    "HARMONIZE_STRATEGIES",
    "RHYTHMS",
    "Harmonization",
    "rhythm_groups",
    "phrase_ends",
    "beat_grid",
    "bar_starts_for",
    "chord_root",
    "harmonize",
    "melody_grid",
    "next_chords",
    "parse_key",
]


RHYTHMS = ("auto", "bar", "half-bar", "beat")
# the window strategies of ``fill_masks``, and 'tagged' (a whole melody at once, offline: ``_tagged``)
HARMONIZE_STRATEGIES = (*STRATEGIES, "tagged")
ENDINGS = ("tonic", "phrases", "free")
# the tonic triad in the model's key-normalized frame (C major / A minor)
TONIC_TOKENS = {"major": token_id("C:maj"), "minor": token_id("A:min")}


def rhythm_groups(bar_start: np.ndarray, rhythm: str) -> np.ndarray | None:
    """Span id per step for a harmonic rhythm (steps are metric beats): 'bar' one chord per bar,
    'half-bar' two per bar (the first half the longer one in a bar of odd beats), 'beat' and
    'auto' None: every beat decided on its own ('auto' holds a chord as long as the model,
    trained on human lead sheets of the style, holds it)."""
    if rhythm not in RHYTHMS:
        raise ValueError(f"unknown rhythm {rhythm!r}; valid: {', '.join(RHYTHMS)}")
    if rhythm in ("auto", "beat"):
        return None
    bar_start = np.asarray(bar_start, dtype=bool).copy()
    bar_start[0] = True
    bar_of = np.cumsum(bar_start) - 1
    if rhythm == "bar":
        return bar_of.astype(np.int64)
    starts = np.flatnonzero(bar_start)
    ends = np.r_[starts[1:], len(bar_start)]
    beat_in_bar = np.arange(len(bar_start)) - starts[bar_of]
    half = -(-(ends - starts)[bar_of] // 2)  # ceil: the first half takes the odd beat
    return (2 * bar_of + (beat_in_bar >= half)).astype(np.int64)


def _ending(shifted: np.ndarray, mode: str, groups: np.ndarray | None) -> tuple[np.ndarray, int] | None:
    """Steps that get the tonic chord when the melody ([steps] or [steps, K], normalized frame)
    ends on the tonic, and the token; None when it ends elsewhere. The steps are the last note's
    (from its onset), or its whole span under a bar or half-bar rhythm."""
    shifted_top = shifted if shifted.ndim == 1 else shifted.max(1)
    sounding = np.flatnonzero(shifted_top >= 0)
    if not len(sounding):
        return None
    last = int(sounding[-1])
    row = np.atleast_1d(shifted[last])
    final_pitch = int(row[row >= 0][-1])  # the last 16th that sounds, not the step's highest
    tonic = 0 if mode == "major" else 9
    if final_pitch % 12 != tonic:
        return None
    first = last
    while first > 0 and shifted_top[first - 1] == shifted_top[last]:
        first -= 1
    steps = np.arange(first, last + 1)
    if groups is not None:
        steps = np.flatnonzero(np.isin(groups, groups[steps]))
    return steps, TONIC_TOKENS[mode]


def _cadence_chords() -> dict[str, np.ndarray]:
    """[VOCAB_SIZE] bool per mode: the chords a phrase may close on, rooted on the tonic or the
    dominant of the normalized key (I and V in C major, i and V in A minor), any quality."""
    from .vocab import VOCAB_SIZE

    out = {}
    for mode, roots in (("major", (0, 7)), ("minor", (9, 4))):
        allowed = np.zeros(VOCAB_SIZE, dtype=bool)
        for root in roots:
            allowed[NUM_SPECIALS + root * NUM_QUALITIES: NUM_SPECIALS + (root + 1) * NUM_QUALITIES] = True
        out[mode] = allowed
    return out


def phrase_ends(top: np.ndarray, bar_start: np.ndarray, phrase_bars: int = 4) -> list[tuple[int, int]]:
    """Notes where a phrase closes, as (first step, last step): in the last bar of each group of
    ``phrase_bars`` bars (counted from the first whole bar), the last note that lasts two steps
    or more or is followed by a rest, one per phrase. The piece's last note is left to the
    ending."""
    bar_start = np.asarray(bar_start, dtype=bool)
    starts = np.flatnonzero(bar_start)
    if len(starts) < phrase_bars:
        return []
    sounding = np.flatnonzero(top >= 0)
    last_note = int(sounding[-1]) if len(sounding) else -1
    out: list[tuple[int, int]] = []
    for number in range(phrase_bars - 1, len(starts), phrase_bars):
        lo = int(starts[number])
        hi = int(starts[number + 1]) if number + 1 < len(starts) else len(top)
        chosen = None
        for step in range(lo, hi):
            if top[step] < 0 or (step > 0 and top[step - 1] == top[step]):
                continue  # a rest, or not a note's first step
            end = step
            while end + 1 < len(top) and top[end + 1] == top[step]:
                end += 1
            if (end - step >= 1 or (end + 1 < len(top) and top[end + 1] < 0)) and end < last_note:
                chosen = (step, min(end, hi - 1))
        if chosen is not None:
            out.append(chosen)
    return out


@dataclass
class Harmonization:
    """Chord token per melody step (original key), the key found and the model calls used."""

    chords: np.ndarray  # int64 [steps]
    tonic: int  # the key of the first section (a lead sheet's key signature)
    mode: str
    calls: int
    keys: np.ndarray | None = None  # int64 [steps] key per step: tonic pc, +12 for minor


def _key_code(tonic: int, mode: str) -> int:
    return int(tonic) % 12 + (12 if mode == "minor" else 0)


def _key_of(code: int) -> tuple[int, str]:
    return int(code) % 12, "minor" if code >= 12 else "major"


def parse_key(text: str) -> tuple[int, str] | None:
    """'auto' -> None (detect); 'C', 'F#', 'Bb' -> major; 'Am', 'C#m' -> minor."""
    text = text.strip()
    if text == "auto":
        return None
    minor = text.endswith("m")
    name = text[:-1] if minor else text
    flats = {"Db": "C#", "Eb": "D#", "Gb": "F#", "Ab": "G#", "Bb": "A#"}
    name = flats.get(name, name)
    if name not in ROOT_NAMES:
        raise ValueError(f"bad key {text!r}; write e.g. C, F#, Bb, Am, C#m or auto")
    return ROOT_NAMES.index(name), "minor" if minor else "major"


def chord_root(token: int) -> int | None:
    """Root pitch class of a chord token (None for specials such as `<nc>`)."""
    if not is_chord_token(token):
        return None
    return (int(token) - NUM_SPECIALS) // NUM_QUALITIES


def _window_start(step_of: np.ndarray, length: int) -> int:
    """First position of the last window: at most `length` positions, starting on a bar."""
    total = len(step_of)
    start = max(0, total - length)
    if start > 0:
        bars = np.flatnonzero(step_of[start:] < 0)
        if len(bars) and start + bars[0] < total - 1:
            start += int(bars[0])
    return start


def harmonize(
    model: HarmonizerModel,
    melody_pitch: np.ndarray,
    bar_start: np.ndarray,
    time_signature: tuple[int, int] = (4, 4),
    va: np.ndarray | None = None,
    style: str = "chorale",
    strategy: str = "entropic",
    calls: int = 10,
    rng: np.random.Generator | None = None,
    key: tuple[int, str] | None = None,
    temperature: float = 0.2,
    top_p: float = 0.9,
    rhythm: str = "auto",
    ending: str = "tonic",
    pitch_classes: frozenset[int] | None = None,
) -> Harmonization:
    """Chords for `melody_pitch` [steps] (or [steps, K]: every pitch in the step, -1 padded) on
    the model's grid (its beats: metric beats for a lead-sheet model); `va` [steps, 2] defaults
    to zeros.

    `key` (tonic pitch class, 'major' | 'minor') holds for the whole melody; None finds the key
    per section of whole bars (``core.keys.section_keys``), so a melody that modulates is
    harmonized in its local key.
    `rhythm` (RHYTHMS) sets the harmonic rhythm: one chord per bar, per half bar, or per beat
    decided by the model. `ending` 'tonic': a melody that ends on the tonic ends on the tonic
    chord (the model then chooses the approach to it); 'phrases': also every 4-bar phrase closes
    on a tonic or dominant chord holding its last long note (``phrase_ends``) where one does;
    'free' leaves the chords to the model."""
    if ending not in ENDINGS:
        raise ValueError(f"unknown ending {ending!r}; valid: {', '.join(ENDINGS)}")
    melody_pitch = np.asarray(melody_pitch, dtype=np.int64)
    bar_start = np.asarray(bar_start, dtype=np.uint8)
    steps = len(melody_pitch)
    if melody_pitch.ndim not in (1, 2) or steps == 0 or bar_start.shape != (steps,):
        raise ValueError(f"melody has {steps} steps, bar_start shape {bar_start.shape}; need equal, non-zero")
    if style not in model.styles:
        raise ValueError(f"unknown style {style!r}; this model knows {model.styles}")
    va = np.zeros((steps, 2), np.float32) if va is None else np.asarray(va, np.float32)
    if va.shape != (steps, 2):
        raise ValueError(f"va must have shape ({steps}, 2), got {va.shape}")
    rng = rng if rng is not None else np.random.default_rng()
    if not (melody_pitch >= 0).any():
        raise ValueError("the melody has no note")
    # each section is harmonized in its own key: moved to C major / A minor like the training data
    keys = (np.full(steps, _key_code(*key), dtype=np.int64) if key is not None
            else section_keys(melody_pitch, bar_start).astype(np.int64))
    shift = np.array([normalizing_shift(*_key_of(code)) for code in range(24)])[keys]
    shifted = np.where(melody_pitch >= 0, melody_pitch + (shift if melody_pitch.ndim == 1 else shift[:, None]), -1)
    top = shifted if shifted.ndim == 1 else shifted.max(1)
    onset = np.r_[1, (top[1:] != top[:-1]).astype(np.uint8)]
    placeholder = np.full(steps, MASK, dtype=np.int64)
    step_groups = rhythm_groups(bar_start, rhythm)
    _, final_mode = _key_of(keys[-1])
    in_scale = None if pitch_classes is None else _scale_tokens(pitch_classes, shift)
    if ending != "free" and (end_chord := _ending(shifted, final_mode, step_groups)) is not None:
        if in_scale is None or in_scale[end_chord[0], end_chord[1]].all():
            placeholder[end_chord[0]] = end_chord[1]
    step_allowed = None
    if ending == "phrases":
        from .vocab import token_bitmaps

        bitmaps, cadence = token_bitmaps().astype(bool), _cadence_chords()
        for first, last in phrase_ends(top, bar_start):
            allowed = cadence[_key_of(keys[first])[1]] & bitmaps[:, int(top[first]) % 12]
            if allowed.any():  # a cadence the melody note allows; else the model is free there
                if step_allowed is None:
                    step_allowed = np.ones((steps, len(allowed)), dtype=bool)
                step_allowed[first: last + 1] = allowed
    if in_scale is not None:
        combined = in_scale if step_allowed is None else in_scale & step_allowed
        # where a cadence has no chord inside the scale, the scale wins
        step_allowed = np.where(combined[:, NUM_SPECIALS:].any(1, keepdims=True), combined, in_scale)
    sequence = build_sequence(model.grid, shifted, onset, placeholder, bar_start, va)
    harmony = sequence.harmony.copy()  # MASK everywhere but BAR positions (and a given ending)
    groups = None
    if step_groups is not None:
        groups = np.full(len(harmony), -1, dtype=np.int64)
        groups[sequence.step >= 0] = step_groups
    seq_allowed = None
    if step_allowed is not None:
        seq_allowed = np.ones((len(harmony), step_allowed.shape[1]), dtype=bool)
        seq_allowed[sequence.step >= 0] = step_allowed
    condition = time_signature_vector(*time_signature)
    style_id = model.styles.index(style)
    if strategy == "tagged":
        harmony, total_calls = decode_tagged(model, sequence, harmony, style_id, condition, melody_pitch, bar_start,
                                             keys, shift, rng, temperature, top_p, groups, seq_allowed)
        return _finish(harmony, sequence, shift, keys, total_calls)
    length, total_calls = model.length, 0
    start = 0
    while True:
        end = min(len(harmony), start + length)
        window = np.full(length, PAD, dtype=np.int64)
        window[: end - start] = harmony[start:end]
        melody = np.zeros((length, model.grid.roll_dim), np.float32)
        melody[: end - start] = sequence.melody_roll[start:end]
        window_va = np.zeros((length, 2), np.float32)
        window_va[: end - start] = sequence.va[start:end]
        sounding = np.flatnonzero(sequence.melody_pitch[start:end] >= 0)
        last_melody = int(sounding[-1]) if len(sounding) else -1
        if last_melody < 0:
            # no melody in the whole window (a long rest): no chord, and no model call, so the
            # work follows the notes and not the length of the silence between them
            chunk = harmony[start:end]
            harmony[start:end] = np.where(chunk == MASK, NC, chunk)
            if end == len(harmony):
                break
            start += length // 2
            continue

        def logits_fn(tokens: np.ndarray, m=melody, v=window_va) -> np.ndarray:
            return model.logits(m, tokens, v, style_id, condition)

        window_groups = None
        if groups is not None:
            window_groups = np.full(length, -1, dtype=np.int64)
            window_groups[: end - start] = groups[start:end]
        window_allowed = None
        if seq_allowed is not None:
            window_allowed = np.ones((length, seq_allowed.shape[1]), dtype=bool)
            window_allowed[: end - start] = seq_allowed[start:end]
        result = fill_masks(logits_fn, window, last_melody, strategy, rng, temperature, top_p, calls,
                            groups=window_groups, allowed=window_allowed)
        harmony[start:end] = result.harmony[: end - start]
        total_calls += result.calls
        if end == len(harmony):
            break
        start += length // 2
    return _finish(harmony, sequence, shift, keys, total_calls)


def _finish(harmony: np.ndarray, sequence, shift: np.ndarray, keys: np.ndarray, calls: int) -> Harmonization:
    """The filled sequence's chords per step, back in each step's own key."""
    chords = harmony[sequence.step >= 0]
    chords = np.where(chords == PAD, NC, chords)  # inside the melody a window's padding means "no chord"
    for value in np.unique(shift):
        chords[shift == value] = transpose_tokens(chords[shift == value], -int(value))
    tonic, mode = _key_of(keys[0])
    return Harmonization(chords=chords, tonic=tonic, mode=mode, calls=calls, keys=keys)


def _scale_tokens(pitch_classes: frozenset[int], shift: np.ndarray) -> np.ndarray:
    """[steps, V] bool: the chord tokens (in each step's key-normalized frame) made only of
    ``pitch_classes``, and the special tokens. Raises ValueError when no chord fits the scale."""
    from .vocab import token_bitmaps

    bitmaps = token_bitmaps().astype(bool)
    scale = np.zeros(12, dtype=bool)
    scale[list(pitch_classes)] = True
    allowed = np.empty((len(shift), len(bitmaps)), dtype=bool)
    for value in np.unique(shift):
        inside = ~(bitmaps & ~np.roll(scale, int(value))[None]).any(1)
        allowed[shift == value] = inside
    allowed[:, :NUM_SPECIALS] = True
    if not allowed[:, NUM_SPECIALS:].any():
        raise ValueError("no chord of the vocabulary is made only of the scale's pitch classes")
    return allowed


def bar_starts_for(steps: int, steps_per_bar: int, pickup_steps: int = 0) -> np.ndarray:
    """Bar-start flags for a regular meter (with an optional pickup)."""
    flags = np.zeros(steps, dtype=np.uint8)
    flags[pickup_steps % steps_per_bar :: steps_per_bar] = 1
    flags[0] = 1
    return flags


def melody_grid(
    notes: list[tuple[int, float, float]], steps_per_quarter: int, steps: int
) -> np.ndarray:
    """Notes (pitch, start_beats, end_beats) -> [steps, K] every pitch sounding in each grid
    step (-1 padded, K = the 16ths in a step), as the training data reads a melody."""
    return beat_grid(notes, 1.0 / steps_per_quarter, steps)


def beat_grid(notes: list[tuple[int, float, float]], step_quarters: float, steps: int) -> np.ndarray:
    """``melody_grid`` with steps of any whole number of 16ths (a metric beat: 1.5 quarters in
    6/8, 2 in 2/2); times in quarters."""
    per_step = round(step_quarters * 4)
    if per_step < 1 or abs(per_step - step_quarters * 4) > 1e-9:
        raise ValueError(f"a grid step of {step_quarters} quarters is not a whole number of 16ths")
    size = steps * per_step
    sixteenths = [-1] * size  # (a list: a live decision fills a few dozen 16ths from a few notes)
    for pitch, start, end in notes:
        first = math.floor(start * 4 + 1e-6)
        last = max(first + 1, math.ceil(end * 4 - 1e-6))
        for index in range(max(0, first), min(size, last)):
            if sixteenths[index] < pitch:
                sixteenths[index] = pitch
    return np.array(sixteenths, dtype=np.int64).reshape(steps, per_step)


def next_chords(
    model: HarmonizerModel,
    melody_pitch: np.ndarray,
    bar_start: np.ndarray,
    chords: np.ndarray,
    key: tuple[int, str],
    va: np.ndarray,
    style: str,
    time_signature: tuple[int, int],
    rng: np.random.Generator,
    temperature: float = 0.2,
    top_p: float = 0.9,
    future: int = MASK,
    pitch_classes: frozenset[int] | None = None,
) -> np.ndarray:
    """Live decision, one model call: fill the `<mask>` steps of `chords` [steps] (the last
    ones; earlier steps hold the chords already played, in the melody's key) from the melody
    played so far, at most the model's `live_length` positions starting on a bar. Nothing after
    the last step is known: a dynamic-length graph gets the window up to it, a fixed-length one
    silence and `future` chord tokens after it (`<mask>`: unknown; `<pad>` says the piece ends).
    Returns the tokens of the masked steps (melody's key)."""
    melody_pitch = np.asarray(melody_pitch, dtype=np.int64)
    chords = np.asarray(chords, dtype=np.int64)
    steps = len(melody_pitch)
    if steps == 0 or chords.shape != (steps,) or np.asarray(bar_start).shape != (steps,):
        raise ValueError("melody, chords and bar_start need the same non-zero number of steps")
    shift = normalizing_shift(*key)
    shifted = np.where(melody_pitch >= 0, melody_pitch + shift, -1)
    top = shifted if shifted.ndim == 1 else shifted.max(1)
    onset = np.r_[1, (top[1:] != top[:-1]).astype(np.uint8)]
    sequence = build_sequence(model.grid, shifted, onset, transpose_tokens(chords, shift),
                              np.asarray(bar_start, np.uint8), np.asarray(va, np.float32))
    start = _window_start(sequence.step, model.live_length)
    used = len(sequence.step) - start
    # a graph with a dynamic length axis gets the window up to the current beat and nothing
    # after it; a fixed-length graph gets the rest of its window as silence and `future`
    length = used if model.dynamic_length else model.length
    harmony = np.full(length, future, dtype=np.int64)
    harmony[:used] = sequence.harmony[start:]
    melody = np.zeros((length, model.grid.roll_dim), np.float32)
    melody[:used] = sequence.melody_roll[start:]
    window_va = np.zeros((length, 2), np.float32)
    window_va[:used] = sequence.va[start:]
    window_va[used:] = sequence.va[-1]
    logits = model.logits(melody, harmony, window_va, model.styles.index(style),
                          time_signature_vector(*time_signature))
    masked = np.flatnonzero(sequence.harmony[start:] == MASK)
    allowed = allowed_tokens(length, int(masked.max()) if len(masked) else -1)
    if pitch_classes is not None:
        allowed &= _scale_tokens(pitch_classes, np.full(length, shift))
    tokens = np.array([nucleus_sample(logits[p], allowed[p], rng, temperature, top_p) for p in masked],
                      dtype=np.int64)
    return transpose_tokens(tokens, -shift)

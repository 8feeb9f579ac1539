"""Grid and sequence encoding shared by training and runtime (numpy only).

A piece on the 16th grid (melody pitch per step, texture, bars) becomes a sequence of
positions on the Q4 or Q16 grid, optionally with intertwined bar positions (bar flag in the
melody roll, `<bar>` in the harmony), then fixed-length windows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .vocab import BAR, is_chord_token, nearest_tokens, token_pitch_classes

__all__ = [
    "GridConfig",
    "Sequence",
    "TIME_SIGNATURE_DIM",
    "time_signature_vector",
    "metric_beat",
    "downsample_q16",
    "read_beat_chords",
    "METRIC_WEIGHTS",
    "build_sequence",
    "melody_roll",
    "beat_arrays",
]

TIME_SIGNATURE_DIM = 16
METRIC_WEIGHTS = np.array([2.0, 1.0, 1.5, 1.0])  # the four 16ths of a beat: onset, e, and, a
CHORD_TONE_SHARE = 0.5  # of one voice sounding through the whole beat
LOWEST_KEY = 21  # A0, first of 88 keys


@dataclass(frozen=True)
class GridConfig:
    """Tokenization choices: grid ('q4' | 'q16'), intertwined bars, roll ('pc' | 'pc_fr'), length L."""

    grid: str = "q4"
    bars: bool = True
    roll: str = "pc"
    length: int = 80

    def __post_init__(self) -> None:
        if self.grid not in ("q4", "q16"):
            raise ValueError(f"grid must be 'q4' or 'q16', got {self.grid!r}")
        if self.roll not in ("pc", "pc_fr"):
            raise ValueError(f"roll must be 'pc' or 'pc_fr', got {self.roll!r}")
        if self.length < 8:
            raise ValueError(f"length must be at least 8, got {self.length}")

    @property
    def steps_per_quarter(self) -> int:
        return 1 if self.grid == "q4" else 4

    @property
    def roll_dim(self) -> int:
        return 12 + (88 if self.roll == "pc_fr" else 0) + (1 if self.bars else 0)

    @property
    def name(self) -> str:
        return f"{self.grid}_L{self.length}_{'bar' if self.bars else 'ts'}_{self.roll}"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Sequence:
    """One piece as grid positions. step = index on the grid, -1 for bar positions."""

    melody_roll: np.ndarray  # uint8 [P, roll_dim]
    melody_pitch: np.ndarray  # int16 [P], top melody pitch sounding, -1 rest / bar
    melody_onset: np.ndarray  # uint8 [P]
    harmony: np.ndarray  # int64 [P] chord tokens, BAR at bar positions
    va: np.ndarray  # float32 [P, 2]
    step: np.ndarray  # int32 [P]


def time_signature_vector(numerator: int, denominator: int) -> np.ndarray:
    """16-dim condition: one-hot numerator 1..14 (clipped), then flags for denominator 4 and 8.

    Denominator 2 (and others) leave both flags at zero.
    """
    vector = np.zeros(TIME_SIGNATURE_DIM, dtype=np.float32)
    vector[min(max(int(numerator), 1), 14) - 1] = 1.0
    if int(denominator) == 4:
        vector[14] = 1.0
    elif int(denominator) == 8:
        vector[15] = 1.0
    return vector


def metric_beat(numerator: int, denominator: int) -> float:
    """Length of the metric beat in quarters, as music21 counts beats: compound metres (6/8,
    9/8, 12/8, 3/8, 6/4) beat in dotted notes, 2/2 in halves, 5/8 and 7/8 in eighths."""
    numerator, denominator = int(numerator), int(denominator)
    if numerator < 1 or denominator not in (1, 2, 4, 8, 16, 32):
        raise ValueError(f"bad time signature {numerator}/{denominator}")
    note = 4.0 / denominator
    compound = numerator % 3 == 0 and (numerator > 3 or denominator >= 8)
    return 3 * note if compound else note


def read_beat_chords(voices4: np.ndarray, bass4: np.ndarray) -> np.ndarray:
    """Per-beat chord tokens from voice counts [B, 4, 12] (16ths of each beat) and onset bass [B].

    A pitch class is a chord tone when its metric- and doubling-weighted duration in the beat,
    sum over 16ths of voices x METRIC_WEIGHTS, reaches CHORD_TONE_SHARE of one voice sounding
    the whole beat: a passing or neighbour eighth in one voice off the beat (2.5 of 5.5) drops
    out, a doubled or on-beat eighth stays. The bass at the beat onset is always a chord tone.
    When fewer than three pitch classes pass (fast figuration), the onset sonority and pitch
    classes sounding in at least three 16ths are added.
    The set maps to its nearest token (bass-aware). A beat whose set is a subset of the previous
    beat's chord and has fewer than three pitch classes or the same bass keeps that chord (an
    incomplete or thinned-out sonority continues the harmony instead of becoming a new chord).
    """
    voices4 = np.asarray(voices4, dtype=np.float64)
    bass4 = np.asarray(bass4, dtype=np.int64)
    weight = (voices4 * METRIC_WEIGHTS[None, :, None]).sum(1)
    keep = weight >= CHORD_TONE_SHARE * METRIC_WEIGHTS.sum()
    rows = np.flatnonzero(bass4 >= 0)
    keep[rows, bass4[rows]] = True
    # fast figuration (every voice moving in 16ths): fewer than three chord tones survive, so
    # the sonority at the beat onset and anything sounding through most of the beat join them
    thin = keep.sum(1) < 3
    sounding = voices4 > 0
    keep[thin] |= sounding[thin, 0] | (sounding[thin].sum(1) >= 3)
    tokens = nearest_tokens(keep.astype(np.int8), bass4)
    for beat in range(1, len(tokens)):
        previous = int(tokens[beat - 1])
        if not (is_chord_token(previous) and keep[beat].any()):
            continue
        chord_pcs = np.zeros(12, dtype=bool)
        chord_pcs[list(token_pitch_classes(previous))] = True
        subset = not (keep[beat] & ~chord_pcs).any()
        if subset and (keep[beat].sum() < 3 or bass4[beat] == bass4[beat - 1]):
            tokens[beat] = previous
    return tokens


def downsample_q16(
    melody_pitch: np.ndarray,
    melody_onset: np.ndarray,
    texture: np.ndarray,
    bass: np.ndarray,
    bar_start: np.ndarray,
    va: np.ndarray,
    voices: np.ndarray | None = None,
    struck: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Q16 arrays -> Q4 arrays. A beat's chord comes from `read_beat_chords` over the voice
    counts (the binary texture when `voices` is absent); its melody is every pitch in it.
    `struck` (note starts) is accepted for cache compatibility and not used by the reading."""
    steps = len(melody_pitch)
    beats = -(-steps // 4)
    pad = beats * 4 - steps

    def padded(array: np.ndarray, value) -> np.ndarray:
        widths = [(0, pad)] + [(0, 0)] * (array.ndim - 1)
        return np.pad(array, widths, constant_values=value)

    pitch4 = padded(melody_pitch, -1).reshape(beats, 4)
    counts = texture if voices is None else voices
    voices4 = padded(counts, 0).reshape(beats, 4, 12)
    bass4 = padded(bass, -1).reshape(beats, 4)[:, 0]
    return {
        "melody_pitches": pitch4,  # [B, 4] every sounding pitch in the beat
        "melody_pitch": pitch4.max(1).astype(np.int16),
        "melody_onset": padded(melody_onset, 0).reshape(beats, 4).max(1).astype(np.uint8),
        "chord": read_beat_chords(voices4, bass4).astype(np.int64),
        "bar_start": padded(bar_start, 0).reshape(beats, 4).max(1).astype(np.uint8),
        "va": padded(va, 0).reshape(beats, 4, 2).mean(1).astype(np.float32),
    }


def melody_roll(pitches: np.ndarray, roll: str) -> np.ndarray:
    """[P, K] MIDI pitches (-1 = none) -> [P, 12 or 100] binary roll (pitch classes, then 88 keys)."""
    pitches = np.asarray(pitches)
    if pitches.ndim == 1:
        pitches = pitches[:, None]
    width = 12 + (88 if roll == "pc_fr" else 0)
    out = np.zeros((len(pitches), width), dtype=np.uint8)
    rows, cols = np.nonzero(pitches >= 0)
    values = pitches[rows, cols].astype(np.int64)
    out[rows, values % 12] = 1
    if roll == "pc_fr":
        keys = values - LOWEST_KEY
        inside = (keys >= 0) & (keys < 88)
        out[rows[inside], 12 + keys[inside]] = 1
    return out


def build_sequence(
    config: GridConfig,
    melody_pitches: np.ndarray,
    melody_onset: np.ndarray,
    chord: np.ndarray,
    bar_start: np.ndarray,
    va: np.ndarray,
) -> Sequence:
    """Grid arrays (melody_pitches [S] or [S, K]) -> positions, with bar positions if configured."""
    pitches = np.asarray(melody_pitches)
    top = pitches if pitches.ndim == 1 else pitches.max(1)
    roll = melody_roll(pitches, config.roll)
    steps = len(top)
    if not config.bars:
        return Sequence(
            roll,
            top.astype(np.int16),
            np.asarray(melody_onset, np.uint8),
            np.asarray(chord, np.int64),
            np.asarray(va, np.float32),
            np.arange(steps, dtype=np.int32),
        )
    bar_positions = np.flatnonzero(bar_start)
    total = steps + len(bar_positions)
    is_bar = np.zeros(total, dtype=bool)
    is_bar[bar_positions + np.arange(len(bar_positions))] = True
    step_of = np.full(total, -1, dtype=np.int32)
    step_of[~is_bar] = np.arange(steps, dtype=np.int32)
    full_roll = np.zeros((total, config.roll_dim), dtype=np.uint8)
    full_roll[~is_bar, : roll.shape[1]] = roll
    full_roll[is_bar, -1] = 1
    melody_top = np.full(total, -1, dtype=np.int16)
    melody_top[~is_bar] = top
    onset = np.zeros(total, dtype=np.uint8)
    onset[~is_bar] = melody_onset
    harmony = np.full(total, BAR, dtype=np.int64)
    harmony[~is_bar] = chord
    full_va = np.zeros((total, 2), dtype=np.float32)
    full_va[~is_bar] = va
    # a bar position carries the affect of the step it announces
    full_va[is_bar] = np.asarray(va, np.float32)[np.minimum(bar_positions, steps - 1)]
    return Sequence(full_roll, melody_top, onset, harmony, full_va, step_of)


def beat_arrays(arrays: dict[str, np.ndarray], lo: int, hi: int) -> dict[str, np.ndarray]:
    """One lead sheet's 16ths ``lo..hi`` of cache arrays -> per metric beat: its first 16th
    (``start``, from ``lo``), every melody pitch of the beat ([B, K], -1 padded), onset, the
    chord at the beat's first 16th, bar flag and mean affect.

    Beats start at ``beat_start``, at every bar line and at the first 16th (a pickup's leading
    rest is a beat of its own), so a bar always begins a beat.
    """
    starts_mask = arrays["beat_start"][lo:hi].astype(bool) | arrays["bar_start"][lo:hi].astype(bool)
    starts_mask[0] = True
    starts = np.flatnonzero(starts_mask)
    ends = np.append(starts[1:], hi - lo)
    width = int((ends - starts).max())
    pitch = arrays["melody_pitch"][lo:hi]
    pitches = np.full((len(starts), width), -1, dtype=np.int16)
    for offset in range(width):
        inside = starts + offset < ends
        pitches[inside, offset] = pitch[starts[inside] + offset]
    return {
        "start": starts,
        "melody_pitches": pitches,
        "melody_onset": np.maximum.reduceat(arrays["melody_onset"][lo:hi], starts).astype(np.uint8),
        "chord": arrays["chord"][lo:hi][starts].astype(np.int64),
        "bar_start": arrays["bar_start"][lo:hi][starts].astype(np.uint8),
        "va": (np.add.reduceat(arrays["va"][lo:hi], starts, axis=0) / (ends - starts)[:, None]).astype(np.float32),
    }

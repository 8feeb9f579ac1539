"""Training regularizers of the harmonizer (torch; training only).

- Variable window length: a batch is cut to its first L' positions (windows start on a bar), so
  one set of weights serves the offline window (L) and a shorter live window (the graph is
  exported with a dynamic length axis).
- Affect consistency: the batch is run a second time with a random constant valence/arousal;
  the expected melody fit of the predicted chords (the PCS interval score of section 1, under
  the model's distribution) may not fall below the fit with the true affect (or, two-sided, may
  not differ from it). So an extreme target changes the chord among chords that fit the melody
  instead of forcing clashes.
"""

from __future__ import annotations

import numpy as np
import torch

from engines.harmonizer.metrics import _interval_score
from engines.harmonizer.vocab import VOCAB_SIZE, token_bitmaps

__all__ = ["consistency_penalty", "crop_length", "expected_fit", "melody_fit_table"]


def melody_fit_table() -> np.ndarray:
    """[VOCAB_SIZE, 12] float32: PCS score of each chord token under a melody pitch class.

    Entry (t, m) is the mean over the chord's pitch classes c of the interval score of
    (m - c) mod 12 (+1 for 0 3 4 7 8 9, 0 for 5, -1 otherwise); 0 for special tokens.
    """
    bitmaps = token_bitmaps().astype(bool)
    scores = np.array([_interval_score(i) for i in range(12)], dtype=np.float32)
    table = np.zeros((VOCAB_SIZE, 12), dtype=np.float32)
    for token in np.flatnonzero(bitmaps.any(axis=1)):
        tones = np.flatnonzero(bitmaps[token])
        for melody in range(12):
            table[token, melody] = scores[(melody - tones) % 12].mean()
    return table


def crop_length(length: int, rng: np.random.Generator, probability: float, minimum: int) -> int:
    """With `probability`, a length drawn uniformly from [minimum, length]; else `length`."""
    if probability <= 0 or minimum >= length or rng.random() >= probability:
        return length
    return int(rng.integers(minimum, length + 1))


def expected_fit(logits: torch.Tensor, fit: torch.Tensor, melody_pitch: torch.Tensor) -> torch.Tensor:
    """[B, L] expected PCS of the predicted chord against the melody pitch (0 where no note).

    logits [B, L, V]; fit [V, 12]; melody_pitch int64 [B, L] (-1 rest, bar or padding).
    """
    probabilities = logits.softmax(-1)
    pitch_class = melody_pitch.clamp(min=0) % 12
    per_step = (probabilities @ fit)  # [B, L, 12]
    chosen = per_step.gather(-1, pitch_class[..., None])[..., 0]
    return chosen * (melody_pitch >= 0)


def consistency_penalty(
    true_logits: torch.Tensor,
    random_logits: torch.Tensor,
    fit: torch.Tensor,
    melody_pitch: torch.Tensor,
    loss_mask: torch.Tensor,
    two_sided: bool = False,
) -> torch.Tensor:
    """Mean over windows of relu(fit with the true affect - fit with a random affect), or of
    |difference| when `two_sided` (a random affect may then not buy a better fit either).

    The fit is averaged over the loss positions that carry a melody note; the true-affect
    side is a fixed reference (no gradient), so only the random-affect prediction moves.
    """
    weights = (loss_mask & (melody_pitch >= 0)).float()
    count = weights.sum(-1).clamp(min=1.0)
    reference = (expected_fit(true_logits.detach(), fit, melody_pitch) * weights).sum(-1) / count
    shifted = (expected_fit(random_logits, fit, melody_pitch) * weights).sum(-1) / count
    return (reference - shifted).abs().mean() if two_sided else torch.relu(reference - shifted).mean()

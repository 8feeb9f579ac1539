"""Masking curricula for training (numpy only, so they are testable without torch).

Each function returns (visible, target) boolean arrays of shape [L] for one batch: visible
positions keep their chord as input, every other position is fed `<mask>`, targets carry loss.
Bar positions are handled by `apply_to_batch` (always visible, never targets).
"""

from __future__ import annotations

import numpy as np

from engines.harmonizer.vocab import BAR, MASK

__all__ = [
    "CURRICULA",
    "ff_visible_count",
    "ff_mask",
    "random10_mask",
    "midpoint_mask",
    "curriculum_mask",
    "apply_to_batch",
]

CURRICULA = ("ff", "random10", "midpoint")
MIDPOINT_STAGES = 9  # target spacing 2^(8 - stage), stage 0..8


def ff_visible_count(step: int, total_steps: int, length: int) -> int:
    """FF schedule: pv = ((s + 1) / S) ** 5, num_visible = min(int(L * pv), L - 1)."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    visible_fraction = ((step + 1) / total_steps) ** 5
    return min(int(length * visible_fraction), length - 1)


def ff_mask(
    step: int, total_steps: int, length: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Full-to-full: a random permutation reveals num_visible positions; all the others are targets."""
    order = rng.permutation(length)
    visible = np.zeros(length, dtype=bool)
    visible[order[: ff_visible_count(step, total_steps, length)]] = True
    return visible, ~visible


def random10_mask(
    step: int, total_steps: int, length: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Stage k of 10 (equal step budgets): k/10 of the positions revealed, the next tenth are targets."""
    stage = min(9, int(10 * step / total_steps))
    order = rng.permutation(length)
    revealed = int(round(length * stage / 10))
    targets = max(1, int(round(length * (stage + 1) / 10)) - revealed)
    visible = np.zeros(length, dtype=bool)
    visible[order[:revealed]] = True
    target = np.zeros(length, dtype=bool)
    target[order[revealed : revealed + targets]] = True
    return visible, target


def midpoint_mask(
    step: int, total_steps: int, length: int, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Midpoint doubling: at stage k of 9, targets lie at spacing 2^(8-k), inputs at twice that."""
    stage = min(MIDPOINT_STAGES - 1, int(MIDPOINT_STAGES * step / total_steps))
    spacing = 2 ** (MIDPOINT_STAGES - 1 - stage)
    positions = np.arange(length)
    visible = positions % (2 * spacing) == 0 if stage > 0 else np.zeros(length, dtype=bool)
    target = (positions % spacing == 0) & ~visible
    return visible, target


def curriculum_mask(
    name: str, step: int, total_steps: int, length: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Dispatch by curriculum name; error lists the valid names."""
    if name == "ff":
        return ff_mask(step, total_steps, length, rng)
    if name == "random10":
        return random10_mask(step, total_steps, length, rng)
    if name == "midpoint":
        return midpoint_mask(step, total_steps, length, rng)
    raise ValueError(f"unknown curriculum {name!r}; valid: {', '.join(CURRICULA)}")


def apply_to_batch(
    harmony: np.ndarray, visible: np.ndarray, target: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """[B, L] tokens -> (inputs with `<mask>` where hidden, bool loss mask). `<bar>` always visible."""
    is_bar = harmony == BAR
    shown = visible[None, :] | is_bar
    inputs = np.where(shown, harmony, MASK)
    loss_mask = target[None, :] & ~is_bar
    return inputs, loss_mask

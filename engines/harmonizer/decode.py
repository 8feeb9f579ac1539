"""Decoding strategies for the masked harmonizer (numpy only).

A strategy fills every `<mask>` position of a harmony row by calling a logits function
(`harmony [L] -> logits [L, V]`, melody and conditions bound by the caller) repeatedly.
Strategies differ in how many and which positions each call commits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .vocab import BAR, BOS, EOS, MASK, NC, PAD, UNK, VOCAB_SIZE

__all__ = [
    "LogitsFn",
    "DecodeResult",
    "ORDERS",
    "STRATEGIES",
    "allowed_tokens",
    "nucleus_sample",
    "entropies",
    "fill_masks",
    "span_logits",
]

LogitsFn = Callable[[np.ndarray], np.ndarray]
ORDERS = ("start", "end", "certain", "uncertain", "random")
STRATEGIES = (*ORDERS, "stages10", "midpoint", "entropic")


@dataclass
class DecodeResult:
    """Filled harmony row, the number of model calls, and positions committed per call."""

    harmony: np.ndarray
    calls: int
    committed: list[list[int]]


def allowed_tokens(length: int, last_melody_position: int) -> np.ndarray:
    """[L, V] bool: chords everywhere; `<pad>`/`<nc>` only after the last melody note."""
    allowed = np.ones((length, VOCAB_SIZE), dtype=bool)
    allowed[:, [UNK, BOS, EOS, MASK, BAR]] = False
    allowed[: last_melody_position + 1, [PAD, NC]] = False
    return allowed


def _masked_log_softmax(logits: np.ndarray, allowed: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    scaled = np.where(allowed, logits / temperature, -np.inf)
    scaled = scaled - scaled.max(-1, keepdims=True)
    return scaled - np.log(np.exp(scaled).sum(-1, keepdims=True))


def entropies(logits: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Predictive entropy (nats) per position of the allowed-token distribution at T = 1."""
    log_probs = _masked_log_softmax(logits, allowed)
    probs = np.exp(log_probs)
    # a token a span rules out has probability 0 (log -inf): it adds nothing, not 0 * -inf
    return -(probs * np.where(allowed & (probs > 0), log_probs, 0.0)).sum(-1)


def nucleus_sample(
    logits: np.ndarray,
    allowed: np.ndarray,
    rng: np.random.Generator,
    temperature: float = 0.2,
    top_p: float = 0.9,
) -> int:
    """Sample one token from a [V] logit row with temperature and nucleus (top-p) filtering;
    temperature 0 is greedy: the most likely allowed token, the first on a tie, no draw."""
    if not allowed.any():
        raise ValueError("no allowed token at this position")
    if temperature <= 0:
        return int(np.argmax(np.where(allowed, logits, -np.inf)))
    probs = np.exp(_masked_log_softmax(logits, allowed, temperature))
    order = np.argsort(-probs, kind="stable")
    cumulative = np.cumsum(probs[order])
    keep = order[: int(np.searchsorted(cumulative, top_p) + 1)]
    kept = probs[keep] / probs[keep].sum()
    return int(keep[rng.choice(len(keep), p=kept)])


def _pick_one(order: str, masked: np.ndarray, entropy: np.ndarray, rng: np.random.Generator) -> int:
    if order == "start":
        return int(masked[0])
    if order == "end":
        return int(masked[-1])
    if order == "certain":
        return int(masked[np.argmin(entropy[masked])])
    if order == "uncertain":
        return int(masked[np.argmax(entropy[masked])])
    return int(rng.choice(masked))


def _entropic_share(masked: np.ndarray, entropy: np.ndarray, calls_left: int) -> list[int]:
    """Lowest-entropy positions whose entropies sum to an equal share of the remaining total."""
    if calls_left <= 1:
        return [int(p) for p in masked]
    by_entropy = masked[np.argsort(entropy[masked], kind="stable")]
    values = np.maximum(entropy[by_entropy], 0.0)
    share = values.sum() / calls_left
    if share <= 0:  # all certain: spread the count evenly instead
        return [int(p) for p in by_entropy[: -(-len(by_entropy) // calls_left)]]
    count = int(np.searchsorted(np.cumsum(values), share, side="left") + 1)
    # leave at least one position for each remaining call
    count = max(1, min(count, len(by_entropy) - (calls_left - 1)))
    return [int(p) for p in by_entropy[:count]]


def _whole_spans(chosen: list[int], groups: np.ndarray, current: np.ndarray) -> list[int]:
    """The chosen positions with every still-masked position of their spans."""
    out: list[int] = []
    for position in chosen:
        if groups[position] < 0:
            out.append(position)
        else:
            out.extend(int(p) for p in np.flatnonzero((groups == groups[position]) & (current == MASK)))
    return list(dict.fromkeys(out))


def _midpoint_positions(masked: np.ndarray, length: int, filled_spacing: int) -> tuple[list[int], int]:
    spacing = filled_spacing
    while spacing >= 1:
        chosen = [int(p) for p in masked if p % spacing == 0]
        if chosen:
            return chosen, spacing // 2
        spacing //= 2
    return [int(p) for p in masked], 0


def span_logits(logits: np.ndarray, allowed: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """[L, V] logits -> the same with every position of a span holding the span's joint score:
    the sum over its positions of the allowed-token log-probabilities, so one chord is chosen for
    the whole span by how well it fits every beat of it. ``groups`` [L]: span id per position
    (-1: a position on its own); None leaves the logits as they are."""
    if groups is None:
        return logits
    out = np.array(logits, dtype=np.float64, copy=True)
    log_probs = np.where(allowed, _masked_log_softmax(logits, allowed), 0.0)
    for group in np.unique(groups[groups >= 0]):
        members = np.flatnonzero(groups == group)
        joint = log_probs[members].sum(0)
        ok = allowed[members].all(0)
        out[members] = np.where(ok, joint, -np.inf)
    return out


def fill_masks(
    logits_fn: LogitsFn,
    harmony: np.ndarray,
    last_melody_position: int,
    strategy: str = "certain",
    rng: np.random.Generator | None = None,
    temperature: float = 0.2,
    top_p: float = 0.9,
    calls: int = 10,
    groups: np.ndarray | None = None,
    allowed: np.ndarray | None = None,
) -> DecodeResult:
    """Fill the `<mask>` positions of `harmony` [L].

    strategy: one token per call in order start | end | certain | uncertain | random;
    'stages10' (confidence unmasking in `calls` stages, default 10); 'midpoint' (doubling);
    'entropic' (equal-entropy shares over `calls` calls, low entropy first).
    ``groups`` [L] ties positions into spans (harmonic rhythm): a span is filled in one go, with
    the chord that fits all its positions best (``span_logits``), whenever the strategy picks any
    of its positions. ``allowed`` [L, V] narrows the tokens further (e.g. a cadence).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
    if calls < 1:
        raise ValueError(f"calls must be >= 1, got {calls}")
    rng = rng if rng is not None else np.random.default_rng()
    current = np.array(harmony, dtype=np.int64, copy=True)
    length = len(current)
    base = allowed_tokens(length, last_melody_position)
    allowed = base if allowed is None else base & allowed
    allowed[~allowed.any(1)] = base[~allowed.any(1)]  # a constraint that leaves nothing is dropped
    if groups is not None:
        groups = np.asarray(groups, dtype=np.int64)
        if groups.shape != (length,):
            raise ValueError(f"groups has shape {groups.shape}, expected ({length},)")
    committed: list[list[int]] = []
    spacing = 1 << int(np.ceil(np.log2(max(2, length))))
    while True:
        masked = np.flatnonzero(current == MASK)
        if len(masked) == 0:
            break
        logits = np.asarray(logits_fn(current))
        if logits.shape != (length, VOCAB_SIZE):
            raise ValueError(f"logits_fn returned shape {logits.shape}, expected {(length, VOCAB_SIZE)}")
        logits = span_logits(logits, allowed, groups)
        entropy = entropies(logits, allowed)
        calls_left = max(1, calls - len(committed))
        if strategy in ORDERS:
            chosen = [_pick_one(strategy, masked, entropy, rng)]
        elif strategy == "stages10":
            count = -(-len(masked) // calls_left)
            confidence = np.exp(_masked_log_softmax(logits[masked], allowed[masked])).max(-1)
            chosen = [int(p) for p in masked[np.argsort(-confidence, kind="stable")[:count]]]
        elif strategy == "midpoint":
            chosen, spacing = _midpoint_positions(masked, length, spacing)
        else:
            chosen = _entropic_share(masked, entropy, calls_left)
        if groups is not None:
            chosen = _whole_spans(chosen, groups, current)
        for position in chosen:
            if current[position] != MASK:  # filled with its span earlier in this call
                continue
            token = nucleus_sample(logits[position], allowed[position], rng, temperature, top_p)
            if groups is None or groups[position] < 0:
                current[position] = token
            else:
                current[(groups == groups[position]) & (current == MASK)] = token
        committed.append(chosen)
    return DecodeResult(harmony=current, calls=len(committed), committed=committed)

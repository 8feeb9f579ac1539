"""Constrained sampling of a two-hand continuation (numpy + onnxruntime only, never torch).

Sampling: temperature, top-k, top-p (nucleus) and a seed, over the tokens the grammar mask allows
(``state.Masker``: key/scale, hand ranges, polyphony, note lengths, bar lines, the time grid) and
the logits shifted by the biases measured from the prompt (``biases.Scorer``: key, rhythm
pattern, density, motif, mode steering) and, with ``chord_velocity``, one velocity per hand's
chord (``state.shared_chord_velocity``). Generation stops at the bar line after ``bars`` bars
(or after ``max_tokens``) and closes every held note, so every NOTE_ON of the output has its
NOTE_OFF. What the prompt sets (register, grid) is read by ``prompt_style``.

The names of those modules are re-exported here, where the commands and the engine find them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .biases import MODE_STEER, PATTERN_PULL, Scorer, key_penalty, mode_pairs, steer_mode
from .prompt_style import (
    GRID_CANDIDATES,
    GRID_COVER,
    GRIDS,
    PATTERN_BARS,
    REGISTER_MARGIN,
    REGISTERS,
    prompt_grid,
    prompt_onsets,
    prompt_register,
)
from .runtime import ContinuationModel
from .state import SCALES, Masker, SamplingConfig, State, scale_pitch_classes, shared_chord_velocity
from .tokens import BAR, NOTE_OFF, SHIFT_BASE, STEPS_PER_QUARTER, note_token

__all__ = [
    "GRIDS",
    "GRID_CANDIDATES",
    "GRID_COVER",
    "MODE_STEER",
    "PATTERN_BARS",
    "PATTERN_PULL",
    "REGISTERS",
    "REGISTER_MARGIN",
    "SCALES",
    "Generation",
    "Masker",
    "SamplingConfig",
    "State",
    "Stream",
    "closing_tokens",
    "generate",
    "key_penalty",
    "mode_pairs",
    "prompt_grid",
    "prompt_onsets",
    "prompt_register",
    "sample_token",
    "scale_pitch_classes",
    "shared_chord_velocity",
    "steer_mode",
]


def sample_token(
    logits: np.ndarray, allowed: np.ndarray, config: SamplingConfig, rng: np.random.Generator
) -> int:
    """One token from masked logits with temperature, top-k and top-p."""
    candidates = allowed.nonzero()[0]
    if not len(candidates):
        raise ValueError("no token is allowed by the constraints")
    scores = np.asarray(logits[candidates], dtype=np.float64)  # a new array: free to change in place
    if config.temperature != 1.0:
        scores /= config.temperature
    if config.top_k and config.top_k < len(candidates):
        keep = np.argpartition(-scores, config.top_k - 1)[: config.top_k]
        candidates, scores = candidates[keep], scores[keep]
    order = np.argsort(-scores, kind="stable")
    candidates, scores = candidates[order], scores[order]
    scores -= scores[0]
    cumulative = np.exp(scores, out=scores).cumsum()
    total = cumulative[-1]
    if config.top_p < 1.0:
        keep = min(len(cumulative), int(cumulative.searchsorted(config.top_p * total)) + 1)
        total = cumulative[keep - 1]
    return int(candidates[min(int(cumulative.searchsorted(rng.random() * total, side="right")), len(candidates) - 1)])


@dataclass
class Generation:
    """Generated tokens (prompt excluded) and how many notes were force-closed at the end."""

    tokens: list[int]
    forced_offs: int
    bars: int


def closing_tokens(state: State) -> list[int]:
    """NOTE_OFFs for every held note (one extra step first if a note started at this instant)."""
    held = sorted(state.held.items())
    older = [note_token(h, NOTE_OFF, p) for (h, p), onset in held if onset < state.now_steps]
    newest = [note_token(h, NOTE_OFF, p) for (h, p), onset in held if onset == state.now_steps]
    return older + ([SHIFT_BASE] + newest if newest else [])  # one step: no zero-length note


class Stream:
    """The continuation of a prompt, token by token (iterate it), then the closing NOTE_OFFs.

    The prompt is cut to the model's context (its last ``slots + 1`` tokens) and fed at
    construction; generation slides over the ring-buffer cache. It stops before the (bars+1)-th
    generated BAR or after ``max_tokens``. ``state`` is the time/held-note state after the last
    yielded token; ``forced_offs`` counts the notes closed at the end.
    """

    def __init__(
        self,
        model: ContinuationModel,
        prompt: Sequence[int],
        bars: int,
        config: SamplingConfig,
        style: int = 0,
        va: tuple[float, float] | Callable[[float], Sequence[float]] = (0.0, 0.0),
        max_tokens: int = 2048,
        prompt_va: np.ndarray | None = None,
    ) -> None:
        if not len(prompt):
            raise ValueError("the prompt needs at least one token (e.g. SOS)")
        if bars < 1:
            raise ValueError(f"bars must be >= 1, got {bars}")
        self.bars, self.config, self.max_tokens = bars, config, max_tokens
        self.rng = np.random.default_rng(config.seed)
        self.masker = Masker(config)
        self.state = State()
        for token in prompt:
            self.state.advance(int(token))
        self.state.bars = 0
        self.forced_offs = 0
        self.origin_steps = self.state.now_steps
        self.va_curve = va if callable(va) else None
        self.va = self._va_now() if self.va_curve else np.asarray(va, dtype=np.float32).reshape(2)
        self.decoder = model.decoder(style)
        keep = self.decoder.slots + 1
        context = np.asarray(prompt, dtype=np.int64)[-keep:]
        if prompt_va is None:
            rows = np.repeat(self.va[None], len(context), 0)
        else:
            rows = np.asarray(prompt_va, dtype=np.float32).reshape(-1, 2)
            if len(rows) != len(prompt):
                raise ValueError(f"prompt_va has {len(rows)} rows for {len(prompt)} tokens")
            rows = rows[-keep:]
        self.logits = self.decoder.prefill(context, rows)
        self.scorer = Scorer(prompt, config, self.origin_steps, bars * config.bar_steps)

    def _scores(self) -> np.ndarray:
        """The model's current logits with every bias of the config (``biases.Scorer``)."""
        return self.scorer.scores(self.logits, self.state, float(self.va[0]))

    def _va_now(self) -> np.ndarray:
        """The VA curve at the current time (beats after the prompt's end)."""
        beats = (self.state.now_steps - self.origin_steps) / STEPS_PER_QUARTER
        return np.clip(np.asarray(self.va_curve(beats), dtype=np.float32).reshape(2), -1.0, 1.0)

    def __iter__(self) -> Iterator[int]:
        state = self.state
        for _ in range(self.max_tokens):
            allowed = self.scorer.allowed(self.masker(state), state)
            if self.config.chord_velocity:
                allowed = shared_chord_velocity(allowed, state)
            token = sample_token(self._scores(), allowed, self.config, self.rng)
            if token == BAR and state.bars + 1 > self.bars:
                break
            state.advance(token)
            self.scorer.advance(token, state.now_steps)
            yield token
            if self.va_curve is not None:
                self.va = self._va_now()
            self.logits = self.decoder.step(token, self.va)
        closing = closing_tokens(state)
        self.forced_offs = sum(1 for t in closing if t != SHIFT_BASE)
        for token in closing:
            state.advance(token)
            yield token


def generate(
    model: ContinuationModel,
    prompt: Sequence[int],
    bars: int,
    config: SamplingConfig,
    style: int = 0,
    va: tuple[float, float] | Callable[[float], Sequence[float]] = (0.0, 0.0),
    max_tokens: int = 2048,
    prompt_va: np.ndarray | None = None,
) -> Generation:
    """Continue ``prompt`` for ``bars`` bars of ``config.bar_steps`` (the prompt's bar grid).
    ``va``: a constant (valence, arousal) or a function of the beats after the prompt's end;
    ``prompt_va``: per-token labels of the prompt (default: ``va`` throughout)."""
    stream = Stream(model, prompt, bars, config, style, va, max_tokens, prompt_va)
    tokens = list(stream)
    return Generation(tokens, stream.forced_offs, stream.state.bars)

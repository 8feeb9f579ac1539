"""Single-encoder masked harmonizer (torch; training and export only).

Sequence = [condition] + L melody positions + L harmony positions. Melody i and harmony i
share sinusoidal position i; a segment embedding tells the halves apart. The per-step
valence/arousal (affective adapter) is projected and added to the harmony embeddings; the
style embedding (global anchor) is added to every position. Logits come from the harmony half.
``ModelConfig.encoder = "melody"`` drops the harmony half (an experiment: a tagger for the
one-call task, ``experiments/allmasked.py``); the graph keeps the same inputs and output.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from engines.harmonizer.grid import TIME_SIGNATURE_DIM
from engines.harmonizer.vocab import VOCAB_SIZE
from training.transformer import Block

__all__ = ["ModelConfig", "Harmonizer", "sinusoidal_positions"]


@dataclass
class ModelConfig:
    """Architecture hyper-parameters (stored in checkpoints and the model card)."""

    roll_dim: int = 13
    length: int = 80
    d_model: int = 256
    heads: int = 4
    layers: int = 4
    feedforward: int = 1024
    dropout: float = 0.1
    vocab_size: int = VOCAB_SIZE
    num_styles: int = 3
    condition_dim: int = TIME_SIGNATURE_DIM
    # "joint": condition + melody + harmony positions (the masked model); "melody": condition +
    # melody positions only, the chord of each position read off its melody position (a tagger
    # trained on the one-call task: chord and affect inputs are accepted and not read)
    encoder: str = "joint"

    def to_dict(self) -> dict:
        return asdict(self)


def sinusoidal_positions(length: int, d_model: int) -> torch.Tensor:
    """[length, d_model] fixed sinusoidal table."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    frequencies = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    table = torch.zeros(length, d_model)
    table[:, 0::2] = torch.sin(position * frequencies)
    table[:, 1::2] = torch.cos(position * frequencies)
    return table


class _Block(Block):
    """Every position attends to every other (written out so the ONNX graph stays plain ops)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config.d_model, config.heads, config.feedforward, config.dropout)

    def forward(self, hidden: torch.Tensor, queries_from: int = 0) -> torch.Tensor:
        """Only positions >= `queries_from` are computed and returned (the last block needs the
        harmony half only)."""
        batch, _, width = hidden.shape
        head_dim = width // self.heads
        q, k, v = self.qkv(self.norm1(hidden)).chunk(3, dim=-1)
        if queries_from:
            q, hidden = q[:, queries_from:], hidden[:, queries_from:]

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(batch, -1, self.heads, head_dim).transpose(1, 2)

        scores = split(q) @ split(k).transpose(-1, -2) / math.sqrt(head_dim)
        attended = (scores.softmax(-1) @ split(v)).transpose(1, 2).reshape(batch, -1, width)
        return self.residual(hidden, attended)


class Harmonizer(nn.Module):
    """Masked chord model: predicts a distribution over the 403 tokens at every harmony step."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.encoder not in ("joint", "melody"):
            raise ValueError(f"encoder must be 'joint' or 'melody', got {config.encoder!r}")
        if config.d_model % config.heads:
            raise ValueError(f"d_model {config.d_model} not divisible by heads {config.heads}")
        self.config = config
        d = config.d_model
        self.melody_in = nn.Linear(config.roll_dim, d)
        self.harmony_in = nn.Embedding(config.vocab_size, d)
        self.condition_in = nn.Linear(config.condition_dim, d)
        self.affect_in = nn.Linear(2, d)
        self.style_in = nn.Embedding(config.num_styles, d)
        self.segment = nn.Embedding(3, d)  # condition, melody, harmony
        self.register_buffer("positions", sinusoidal_positions(config.length, d), persistent=False)
        self.blocks = nn.ModuleList(_Block(config) for _ in range(config.layers))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, config.vocab_size)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        melody: torch.Tensor,  # float [B, L, R]
        harmony: torch.Tensor,  # int64 [B, L]
        va: torch.Tensor,  # float [B, L, 2]
        style: torch.Tensor,  # int64 [B]
        condition: torch.Tensor,  # float [B, 16]
    ) -> torch.Tensor:
        length = harmony.shape[1]
        positions = self.positions[:length][None]
        melody_h = self.melody_in(melody) + positions + self.segment.weight[1]
        if self.config.encoder == "melody":
            return self._tag(melody_h, va, style, condition)
        harmony_h = self.harmony_in(harmony) + self.affect_in(va) + positions + self.segment.weight[2]
        condition_h = (self.condition_in(condition) + self.segment.weight[0])[:, None, :]
        hidden = torch.cat([condition_h, melody_h, harmony_h], dim=1) + self.style_in(style)[:, None, :]
        hidden = self.dropout(hidden)
        for block in self.blocks[:-1]:
            hidden = block(hidden)
        # the head reads the harmony half only, so the last block computes only that half
        return self.head(self.norm(self.blocks[-1](hidden, queries_from=1 + length)))

    def _tag(self, melody_h: torch.Tensor, va: torch.Tensor, style: torch.Tensor,
             condition: torch.Tensor) -> torch.Tensor:
        """Melody-only encoder: logits at every melody position. ``va`` enters multiplied by zero,
        so the graph keeps the shared inputs without reading them."""
        condition_h = (self.condition_in(condition) + self.segment.weight[0])[:, None, :]
        hidden = torch.cat([condition_h, melody_h + 0.0 * self.affect_in(va)], dim=1) + self.style_in(style)[:, None, :]
        hidden = self.dropout(hidden)
        for block in self.blocks[:-1]:
            hidden = block(hidden)
        return self.head(self.norm(self.blocks[-1](hidden, queries_from=1)))


def parameter_count(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

"""Decoder-only two-hand continuation transformer (torch; training and export only).

Pre-LN blocks with rotary position embeddings (RoPE) and an explicit key/value cache.
Token embedding is either ``smart`` (paper section 2: a note token's vector is
pitch[pitch] + hand[hand] + kind[on/off]; every other token has its own row) or ``plain``
(one row per token). The per-token valence/arousal (affective adapter, Linear(2 -> d)) and the
style anchor (one embedding per style, added at every position) are added to the embedding.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engines.continuation.tokens import NOTE_BASE, NUM_NOTE_TOKENS, NUM_PITCHES, VOCAB_SIZE
from training.transformer import Block

__all__ = ["EMBEDDINGS", "ContinuationModel", "ModelConfig", "SmartEmbedding", "parameter_counts"]

EMBEDDINGS = ("smart", "plain")


@dataclass
class ModelConfig:
    """Architecture hyper-parameters (stored in checkpoints and the model card)."""

    embedding: str = "smart"
    d_model: int = 192
    heads: int = 4
    layers: int = 4
    feedforward: int = 768
    dropout: float = 0.1
    vocab_size: int = VOCAB_SIZE
    num_styles: int = 4
    rope_base: float = 10000.0

    def __post_init__(self) -> None:
        if self.embedding not in EMBEDDINGS:
            raise ValueError(f"embedding must be one of {EMBEDDINGS}, not {self.embedding!r}")
        if self.d_model % (2 * self.heads):
            raise ValueError(f"d_model {self.d_model} must be a multiple of 2 * heads ({2 * self.heads})")

    def to_dict(self) -> dict:
        return asdict(self)


class SmartEmbedding(nn.Module):
    """Factorized note embedding; the full [vocab, d] table is composed on each call."""

    def __init__(self, d_model: int, vocab_size: int = VOCAB_SIZE) -> None:
        super().__init__()
        self.other = nn.Embedding(vocab_size - NUM_NOTE_TOKENS, d_model)
        self.pitch = nn.Embedding(NUM_PITCHES, d_model)
        self.hand = nn.Embedding(2, d_model)
        self.kind = nn.Embedding(2, d_model)
        note = torch.arange(NUM_NOTE_TOKENS)
        self.register_buffer("note_pitch", note % NUM_PITCHES, persistent=False)
        self.register_buffer("note_hand", note // (2 * NUM_PITCHES), persistent=False)
        self.register_buffer("note_kind", (note // NUM_PITCHES) % 2, persistent=False)

    def table(self) -> torch.Tensor:
        notes = self.pitch(self.note_pitch) + self.hand(self.note_hand) + self.kind(self.note_kind)
        other = self.other.weight
        return torch.cat([other[:NOTE_BASE], notes, other[NOTE_BASE:]], dim=0)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.embedding(tokens, self.table())


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2)


class _Block(Block):
    """Causal self-attention with rotary positions and a key/value cache."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config.d_model, config.heads, config.feedforward, config.dropout, inner_dropout=False)
        self.attention_dropout = config.dropout

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        positions: torch.Tensor,
        past: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # no sizes read from shapes, so a traced ONNX graph stays valid for any length and cache
        q, k, v = self.qkv(self.norm1(x)).unflatten(-1, (3, self.heads, -1)).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        key_positions = torch.cumsum(torch.ones_like(k[0, 0, :, 0], dtype=torch.long), 0) - 1
        mask = key_positions[None, :] <= positions[:, None]
        if self.training:
            attended = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=self.attention_dropout
            )
        else:  # spelled out for inference and export: a plain MatMul/Softmax ONNX graph
            scores = (q @ k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
            attended = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1) @ v
        return self.residual(x, attended.transpose(1, 2).flatten(2)), torch.stack([k, v])

    def incremental(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        swap: torch.Tensor,
        causal: torch.Tensor,
        past_key: torch.Tensor,
        past_value: torch.Tensor,
        past_bias: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Attention over a fixed-size cache (slots masked by ``past_bias``) plus the new tokens.

        The same function as ``forward``, written for a short ONNX graph: the cache is never
        concatenated or copied (one softmax over the two score blocks, then each block's weights
        times its values), RoPE is one matrix product for queries and keys together
        (``swap`` [head_dim, head_dim] pairs each even/odd element, ``cos``/``sin`` [T, head_dim]),
        ``causal`` [T, T] is an additive mask. Returns x and the new keys and values.
        """
        # explicit (non-negative) dims throughout: the TorchScript exporter misplaced negative ones here
        heads, head_dim = self.heads, swap.shape[0]
        qkv = self.qkv(self.norm1(x)).unflatten(2, (3 * heads, head_dim)).transpose(1, 2)  # [B, 3H, T, hd]
        qk = qkv[:, : 2 * heads]
        qk = qk * cos + torch.matmul(qk, swap) * sin
        q, k, v = qk[:, :heads] * (head_dim**-0.5), qk[:, heads:], qkv[:, 2 * heads :]
        old = q @ past_key.transpose(2, 3) + past_bias
        weights = torch.softmax(torch.cat([old, q @ k.transpose(2, 3) + causal], dim=3), dim=3)
        slots = past_key.shape[2]
        attended = weights[:, :, :, :slots] @ past_value + weights[:, :, :, slots:] @ v
        return self.residual(x, attended.transpose(1, 2).flatten(2)), k, v


class ContinuationModel(nn.Module):
    """tokens [B, T], va [B, T, 2], style [B], positions [T] (+ cache) -> logits [B, T, V]."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.embed = (
            SmartEmbedding(d, config.vocab_size)
            if config.embedding == "smart"
            else nn.Embedding(config.vocab_size, d)
        )
        self.va = nn.Linear(2, d)
        self.style = nn.Embedding(config.num_styles, d)
        self.blocks = nn.ModuleList(_Block(config) for _ in range(config.layers))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, config.vocab_size)
        self.dropout = nn.Dropout(config.dropout)
        half = d // config.heads // 2
        self.register_buffer(
            "inv_freq",
            config.rope_base ** (-torch.arange(half, dtype=torch.float32) / half),
            persistent=False,
        )
        head_dim = d // config.heads
        swap = torch.zeros(head_dim, head_dim)
        swap[torch.arange(1, head_dim, 2), torch.arange(0, head_dim, 2)] = -1.0  # (x @ swap)[2i] = -x[2i+1]
        swap[torch.arange(0, head_dim, 2), torch.arange(1, head_dim, 2)] = 1.0  # (x @ swap)[2i+1] = x[2i]
        self.register_buffer("swap", swap, persistent=False)
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(
        self,
        tokens: torch.Tensor,
        va: torch.Tensor,
        style: torch.Tensor,
        positions: torch.Tensor,
        past: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """past/present: [layers, 2, B, heads, P, head_dim]; positions: absolute positions of tokens."""
        x = self.embed(tokens) + self.va(va) + self.style(style)[:, None, :]
        x = self.dropout(x)
        angles = positions.to(torch.float32)[:, None] * self.inv_freq[None, :]
        cos, sin = torch.cos(angles), torch.sin(angles)
        presents = []
        for index, block in enumerate(self.blocks):
            x, present = block(x, cos, sin, positions, None if past is None else past[index])
            presents.append(present)
        return self.head(self.norm(x)), torch.stack(presents)

    def incremental(
        self,
        tokens: torch.Tensor,
        va: torch.Tensor,
        style: torch.Tensor,
        positions: torch.Tensor,
        past_bias: torch.Tensor,
        *past: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Inference with a fixed-size cache: ``past`` = key_0, value_0, key_1, ... each
        [B, heads, slots, head_dim]; ``past_bias`` [slots] is 0 for a filled slot and a large
        negative number for an empty one. Returns the logits and only the new keys/values,
        [B, layers * 2 * heads, T, head_dim] in (layer, key|value, head) order (the caller
        writes them into its slots)."""
        x = self.embed(tokens) + self.va(va) + self.style(style)[:, None, :]
        angles = positions.to(torch.float32)[:, None] * self.inv_freq.repeat_interleave(2)[None, :]
        cos, sin = torch.cos(angles), torch.sin(angles)  # [T, head_dim], pairs share an angle
        causal = torch.where(positions[None, :] > positions[:, None], float("-inf"), 0.0)
        news = []
        for index, block in enumerate(self.blocks):
            x, key, value = block.incremental(
                x, cos, sin, self.swap, causal, past[2 * index], past[2 * index + 1], past_bias
            )
            news += [key, value]
        return self.head(self.norm(x)), torch.cat(news, dim=1)


def parameter_counts(model: ContinuationModel) -> dict[str, int]:
    """Total parameters, input-embedding parameters and note-embedding parameters."""
    embed = model.embed
    if isinstance(embed, SmartEmbedding):
        note = sum(p.numel() for p in (embed.pitch.weight, embed.hand.weight, embed.kind.weight))
    else:
        note = NUM_NOTE_TOKENS * embed.weight.shape[1]
    return {
        "total": sum(p.numel() for p in model.parameters()),
        "embedding": sum(p.numel() for p in embed.parameters()),
        "note_embedding": note,
    }

"""The pre-LN transformer block both models are built from (torch; training and export only).

LayerNorm -> fused QKV projection -> attention -> output projection, then LayerNorm -> GELU
feed-forward, dropout on both residual branches. How queries meet keys is each model's own (the
harmonizer attends to the whole window, the continuation is causal with rotary positions and a
key/value cache), so a model subclasses ``Block`` and computes ``attended`` itself; the
parameters and the residual path are these.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Block"]

# Parameter names of checkpoints saved before the two models shared this block.
_LEGACY_NAMES = {"norm_attention.": "norm1.", "out.": "proj.", "norm_ff.": "norm2."}


class Block(nn.Module):
    """Parameters and residual path of one pre-LN block; subclasses compute the attention."""

    def __init__(
        self, d_model: int, heads: int, feedforward: int, dropout: float, inner_dropout: bool = True
    ) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(
            nn.Linear(d_model, feedforward),
            nn.GELU(),
            # p = 0 is an identity that draws no random numbers: same training either way
            nn.Dropout(dropout if inner_dropout else 0.0),
            nn.Linear(feedforward, d_model),
        )
        self.dropout = nn.Dropout(dropout)

    def residual(self, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """x plus the projected attention [B, T, d], then plus the feed-forward of that."""
        x = x + self.dropout(self.proj(attended))
        return x + self.dropout(self.ff(self.norm2(x)))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # noqa: ANN001
        # older checkpoints name the same tensors differently; the weights are unchanged
        for key in [k for k in state_dict if k.startswith(prefix)]:
            rest = key[len(prefix):]
            new = next((rest.replace(old, name, 1) for old, name in _LEGACY_NAMES.items()
                        if rest.startswith(old)), rest)
            if new.startswith("ff.2."):  # the feed-forward had no inner dropout slot
                new = "ff.3." + new[len("ff.2."):]
            if new != rest:
                state_dict[prefix + new] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

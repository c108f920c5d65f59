"""Pluggable attention modules. Every variant takes (x, additive_mask) and returns (out, probs).

Written with explicit matmul + softmax (no fused kernel) so that every variant traces to
ONNX, ExecuTorch and Core ML alike. New variants register in ATTENTION.
"""

from __future__ import annotations

import torch
from torch import nn


class FullAttention(nn.Module):
    """Multi-head softmax attention over the whole sequence (the quadratic baseline)."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, T, D); mask: (B, 1, 1, T) additive (0 keep, large negative drop)."""
        B, T, D = x.shape
        qkv = self.qkv(x).reshape(B, T, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # each (B, nh, T, hd)
        scores = q @ k.transpose(-2, -1) * (self.head_dim ** -0.5) + mask  # (B, nh, T, T)
        probs = scores.softmax(dim=-1)
        out = (self.drop(probs) @ v).transpose(1, 2).reshape(B, T, D)  # (B, T, D)
        return self.proj(out), probs


ATTENTION: dict[str, type[nn.Module]] = {"full": FullAttention}

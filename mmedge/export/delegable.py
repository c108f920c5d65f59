"""Rewrites that keep a stage inside ExecuTorch's XNNPACK delegate (applied to a copy of the model
at ExecuTorch export only; the other exporters and training keep the original modules).

- XNNPACK has no layer-norm operator, so ``aten.native_layer_norm`` runs in ExecuTorch's portable
  kernels and cuts the delegate in pieces around every norm (three per stage). ``DelegableLayerNorm``
  computes the same function from operators XNNPACK takes: the mean and the variance over the last
  dimension as products with a constant 1/D vector, then rsqrt, multiply and add.
- XNNPACK delegates a linear layer only when its weight is a parameter. ``lowrank`` attention
  projects q alone and k, v alone with slices of the fused ``QKV`` weight, which would run as
  portable ``addmm`` kernels (2.2 against 0.55 ms for one stage at 601 tokens, width 64, two threads).
  ``DelegableQKV`` gives each slice a ``Linear`` of its own.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from mmedge.models.attention import QKV


class DelegableLayerNorm(nn.Module):
    """``nn.LayerNorm`` over the last dimension, written with matmuls and elementwise ops only."""

    def __init__(self, norm: nn.LayerNorm) -> None:
        super().__init__()
        if len(norm.normalized_shape) != 1 or not norm.elementwise_affine:
            raise ValueError(f"DelegableLayerNorm takes an affine norm over the last dimension, not {norm}")
        dim = norm.normalized_shape[0]
        self.weight, self.bias, self.eps = norm.weight, norm.bias, norm.eps
        self.register_buffer("average", torch.full((dim, 1), 1.0 / dim), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - x @ self.average  # (..., D) - (..., 1)
        variance = (centred * centred) @ self.average  # biased, as LayerNorm's
        return centred * torch.rsqrt(variance + self.eps) * self.weight + self.bias


class DelegableQKV(nn.Module):
    """``QKV`` whose q and k, v parts are ``Linear`` layers of their own (copies of the weight's rows)."""

    def __init__(self, qkv: QKV) -> None:
        super().__init__()
        self.whole = qkv
        self.q_proj = _rows(qkv, 0, qkv.dim)
        self.kv_proj = _rows(qkv, qkv.dim, 3 * qkv.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.whole(x)

    def q(self, x: torch.Tensor) -> torch.Tensor:
        return self.q_proj(x)

    def kv(self, x: torch.Tensor) -> torch.Tensor:
        return self.kv_proj(x)


def _rows(linear: nn.Linear, start: int, stop: int) -> nn.Linear:
    """A Linear computing output rows start:stop of `linear` (its own copy of them)."""
    part = nn.Linear(linear.in_features, stop - start)
    with torch.no_grad():
        part.weight.copy_(linear.weight[start:stop])
        part.bias.copy_(linear.bias[start:stop])
    return part


def delegable_copy(model: nn.Module) -> nn.Module:
    """A copy of `model` with every ``nn.LayerNorm`` replaced by a ``DelegableLayerNorm`` and every
    ``QKV`` by a ``DelegableQKV``: the same function, in operators XNNPACK delegates."""
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.LayerNorm):
                setattr(parent, name, DelegableLayerNorm(child))
            elif isinstance(child, QKV):
                setattr(parent, name, DelegableQKV(child))
    return model

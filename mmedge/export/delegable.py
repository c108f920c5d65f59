"""Rewrites that keep a stage inside ExecuTorch's XNNPACK delegate (applied to a copy of the model
at ExecuTorch export only; the other exporters and training keep the original modules).

XNNPACK has no layer-norm operator, so ``aten.native_layer_norm`` runs in ExecuTorch's portable
kernels and cuts the delegate in pieces around every norm (three per stage). ``DelegableLayerNorm``
computes the same function from operators XNNPACK takes: the mean and the variance over the last
dimension as products with a constant 1/D vector, then rsqrt, multiply and add.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


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


def with_delegable_layer_norms(model: nn.Module) -> nn.Module:
    """A copy of `model` with every ``nn.LayerNorm`` replaced by a ``DelegableLayerNorm``."""
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.LayerNorm):
                setattr(parent, name, DelegableLayerNorm(child))
    return model

"""The adapted model cut at its exits into traceable stage modules, under mmedge's stage contract
(mmedge.export.stages: the same input and output names, a static shape per keep ratio, batch 1).

    stage 0: pixel_values f32 (1, 3, S, S) (two images: (1, 2, 3, S, S)), input_ids i32 (1, L),
             text_mask i32 (1, L) -> hidden f32 (I, T, D), attention_mask f32 (I, T), logits f32 (1, C),
             confidence f32 (1,), kept_index i32 (I, k)
    stage i: hidden_in f32 (I, T, D), attention_mask f32 (I, T) -> hidden, logits, confidence

with I images per example (1, or 2 for NLVR2: one sequence per image) and T = L + 1 + k (the text,
the image [CLS], the k kept patches). Stage 0 holds the prefilter, wherever in it the prefilter
sits, so its kept indices come out of stage 0 as they do for mmedge's own models.

A single-score head (retrieval: C = 1, the score s) gives logits [0, s] (C = 2, labels no / yes;
mmedge.adapt.model.as_classes): softmax of them is [1 - sigmoid(s), sigmoid(s)], so a runtime's
softmax over the labels is the match probability (docs/bundle-format.md, Adapted encoders, head
"match-score").
"""

from __future__ import annotations

import torch
from torch import nn

from mmedge.adapt.model import AdaptedModel, as_classes
from mmedge.export.stages import StageSpec


class FirstStage(nn.Module):
    """Embeddings, layers up to the prefilter, the prefilter at a fixed keep ratio, the rest of stage 0, exit 0."""

    def __init__(self, model: AdaptedModel, keep_ratio: float) -> None:
        super().__init__()
        self.model, self.keep_ratio = model, keep_ratio

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, text_mask: torch.Tensor):
        hidden, mask, logits, confidence, pruned = self.model.first_stage(
            pixel_values, input_ids.long(), text_mask.float(), self.keep_ratio)
        if pruned.kept_index is None:  # every token kept: the identity order
            N = self.model.backbone.num_patches
            kept = torch.arange(N, dtype=torch.int32).unsqueeze(0).expand(hidden.shape[0], N)
        else:
            kept = pruned.kept_index.to(torch.int32)
        return hidden, mask, as_classes(logits), confidence, kept


class LaterStage(nn.Module):
    def __init__(self, model: AdaptedModel, stage: int) -> None:
        super().__init__()
        self.model, self.stage = model, stage

    def forward(self, hidden_in: torch.Tensor, attention_mask: torch.Tensor):
        hidden, logits, confidence = self.model.forward_stage(self.stage, hidden_in, attention_mask)
        return hidden, as_classes(logits), confidence


def stage_specs(model: AdaptedModel, keep_ratios: list[float]) -> list[StageSpec]:
    """Every (keep ratio, stage) pair, keep ratios in the order given."""
    cfg, G = model.config, model.backbone.num_global
    specs = []
    for ratio in keep_ratios:
        k = min(cfg.kept_tokens(ratio), cfg.num_patches)
        specs += [StageSpec(s, ratio, k, G + k) for s in range(model.num_stages)]
    return specs


def stage_module(model: AdaptedModel, spec: StageSpec) -> nn.Module:
    return (FirstStage(model, spec.keep_ratio) if spec.stage == 0 else LaterStage(model, spec.stage)).eval()


def example_inputs(model: AdaptedModel, spec: StageSpec, cls_id: int = 2, sep_id: int = 3) -> tuple[torch.Tensor, ...]:
    """Batch-1 example inputs with the stage's exact shapes and dtypes."""
    cfg, I = model.config, model.backbone.num_images
    L, S = cfg.max_text_len, cfg.image_size
    if spec.stage == 0:
        ids = torch.zeros(1, L, dtype=torch.int32)
        ids[0, :2] = torch.tensor([cls_id, sep_id])  # an empty text: [CLS] [SEP] [PAD]...
        pixels = torch.zeros(1, 3, S, S) if I == 1 else torch.zeros(1, I, 3, S, S)
        return pixels, ids, (ids != 0).to(torch.int32)
    mask = torch.ones(I, spec.seq_len)
    mask[:, 2:L] = 0.0
    return torch.randn(I, spec.seq_len, cfg.dim), mask

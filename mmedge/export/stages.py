"""The model cut at its exits into traceable stage modules (what every backend exports).

Stage 0 = embeddings + prefilter (top-k at a fixed keep ratio) + its layers + exit head 0.
Stage i = its layers + exit head i. Shapes are static (batch 1, the phone case): a keep ratio
fixes the number of visual tokens, so each exported keep ratio has its own set of stages.

Inputs and outputs (names shared by every backend and written into the manifest):
    stage 0: pixel_values f32 (1, 3, S, S), input_ids i32 (1, L), text_mask i32 (1, L)
          -> hidden f32 (1, T, D), attention_mask f32 (1, T), logits f32 (1, C),
             confidence f32 (1,), kept_index i32 (1, k)
    stage i: hidden_in f32 (1, T, D) (the previous stage's hidden), attention_mask f32 (1, T)
          -> hidden, logits, confidence
with T = 1 + L + k. A model adapted by `mmedge adapt` (is_adapted) has its own stage modules, specs and
example inputs in mmedge.adapt.stages, under the same names: T = L + 1 + k (text first, then the
image's [CLS] and the kept patches); every function here dispatches to them.

Modality pruning (``--drop-visual-after A``) adds text-only stages ``text_stage{i}`` for every
stage i > A: the same layers and exit head on the [CLS] + text part of the sequence only,
    text stage i: hidden_in f32 (1, 1 + L, D) (stage A's hidden, first 1 + L rows),
                  attention_mask f32 (1, 1 + L) -> hidden, logits, confidence
one graph for every keep ratio (the text part does not depend on how many visual tokens were kept).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mmedge.models.model import AdaptiveVLModel


def is_adapted(model) -> bool:
    """Whether `model` is a pretrained encoder adapted by `mmedge adapt` (mmedge.adapt.model.AdaptedModel):
    its stages, specs and example inputs then come from mmedge.adapt.stages (T = L + 1 + k)."""
    return bool(getattr(model, "is_adapted", False))

STAGE0_INPUTS = ("pixel_values", "input_ids", "text_mask")
STAGE0_OUTPUTS = ("hidden", "attention_mask", "logits", "confidence", "kept_index")
STAGE_INPUTS = ("hidden_in", "attention_mask")  # hidden_in <- the previous stage's hidden
STAGE_OUTPUTS = ("hidden", "logits", "confidence")


@dataclass(frozen=True)
class StageSpec:
    """One exported stage: which stage of the model at which keep ratio, and its tensor names."""

    stage: int
    keep_ratio: float
    kept_tokens: int
    seq_len: int
    text_only: bool = False  # a modality-pruning stage: [CLS] + text, no visual tokens

    @property
    def name(self) -> str:
        """Method / function / file stem, e.g. ``k18_stage2`` (k = visual tokens kept), ``text_stage2``."""
        return f"text_stage{self.stage}" if self.text_only else f"k{self.kept_tokens}_stage{self.stage}"

    @property
    def inputs(self) -> tuple[str, ...]:
        return STAGE0_INPUTS if self.stage == 0 else STAGE_INPUTS

    @property
    def outputs(self) -> tuple[str, ...]:
        return STAGE0_OUTPUTS if self.stage == 0 else STAGE_OUTPUTS


class FirstStage(nn.Module):
    """Embeddings, the prefilter at a fixed keep ratio, the first layers and exit head 0."""

    def __init__(self, model: AdaptiveVLModel, keep_ratio: float) -> None:
        super().__init__()
        self.model, self.keep_ratio = model, keep_ratio

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, text_mask: torch.Tensor):
        cfg = self.model.config
        emb = self.model.embed(pixel_values, input_ids.long(), text_mask.float(), self.keep_ratio)
        hidden, logits, confidence = self.model.forward_stage(0, emb.hidden, emb.mask)
        if emb.kept_index is None:  # every token kept: the identity order
            kept = torch.arange(cfg.num_patches, dtype=torch.int32).unsqueeze(0)
        else:
            kept = emb.kept_index.to(torch.int32)
        return hidden, emb.mask, logits, confidence, kept


class LaterStage(nn.Module):
    """The layers between two exits and the later exit's head."""

    def __init__(self, model: AdaptiveVLModel, stage: int) -> None:
        super().__init__()
        self.model, self.stage = model, stage

    def forward(self, hidden_in: torch.Tensor, attention_mask: torch.Tensor):
        return self.model.forward_stage(self.stage, hidden_in, attention_mask)


def stage_specs(model: AdaptiveVLModel, keep_ratios: list[float]) -> list[StageSpec]:
    """Every (keep ratio, stage) pair to export, keep ratios in the order given."""
    if is_adapted(model):
        from mmedge.adapt import stages as adapted

        return adapted.stage_specs(model, keep_ratios)
    cfg = model.config
    specs = []
    for ratio in keep_ratios:
        k = cfg.kept_tokens(ratio)
        specs += [StageSpec(s, ratio, k, 1 + cfg.max_text_len + k) for s in range(model.num_stages)]
    return specs


def text_stage_specs(model: AdaptiveVLModel, after_stage: int) -> list[StageSpec]:
    """The text-only stages that follow stage `after_stage` when the visual tokens are dropped after it."""
    from mmedge.errors import ConfigError

    if is_adapted(model):
        raise ConfigError("drop_visual_after (modality pruning, text-only stages) is not supported yet for models "
                          "adapted by `mmedge adapt`; export them without --drop-visual-after", "export recipe")
    if not 0 <= after_stage < model.num_stages - 1:
        raise ConfigError(f"drop_visual_after {after_stage} must name a stage before the last one "
                          f"(0..{model.num_stages - 2} for this model's {model.num_stages} stages)", "export recipe")
    seq = 1 + model.config.max_text_len
    return [StageSpec(s, 0.0, 0, seq, text_only=True) for s in range(after_stage + 1, model.num_stages)]


def stage_module(model: AdaptiveVLModel, spec: StageSpec) -> nn.Module:
    if is_adapted(model):
        from mmedge.adapt import stages as adapted

        return adapted.stage_module(model, spec)
    return (FirstStage(model, spec.keep_ratio) if spec.stage == 0 else LaterStage(model, spec.stage)).eval()


def example_inputs(model: AdaptiveVLModel, spec: StageSpec) -> tuple[torch.Tensor, ...]:
    """Batch-1 example inputs with the stage's exact shapes and dtypes."""
    if is_adapted(model):
        from mmedge.adapt import stages as adapted

        return adapted.example_inputs(model, spec)
    cfg = model.config
    if spec.stage == 0:
        ids = torch.zeros(1, cfg.max_text_len, dtype=torch.int32)
        ids[0, :4] = torch.tensor([2, 5, 6, 3])
        text_mask = (ids != 0).to(torch.int32)
        return torch.zeros(1, 3, cfg.image_size, cfg.image_size), ids, text_mask
    mask = torch.ones(1, spec.seq_len)
    mask[0, 6: 1 + cfg.max_text_len] = 0.0
    return torch.randn(1, spec.seq_len, cfg.dim), mask

"""The captioning model cut into the graphs a device runs: what export traces.

Per exported keep ratio r (the visual tokens the prefilter keeps):
- ``encoder_k{r}``: pixel_values (1, 3, S, S) -> cross_k, cross_v (Ld, 1, H, k, hd): the image once per
  caption, every decoder layer's cross-attention keys and values;
- ``step{s}_k{r}``: decoder stage s for one new word. Stage 0 takes ``token`` (1,) and ``position`` (1,),
  later stages ``hidden_in`` (1, 1, D: the previous stage's ``hidden``) and ``position``; all take this stage's ``past_k``/``past_v``
  (n, 1, H, P, hd) and ``cross_k``/``cross_v`` (n, 1, H, k, hd), and return ``hidden``, ``logits`` (1, V),
  ``confidence`` (1,), ``present_k``/``present_v`` (the caches with the position written);
and once (no image input):
- ``fill{s}`` for every stage but the last: ``hidden_in`` (the exiting stage's ``hidden``) and ``position`` and the caches of every later
  layer -> those caches with the copy-forward keys and values written (a word that exited at s).
Every shape is static: the key/value cache has max_len positions and a one-hot write.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mmedge.caption.model import CaptionModel


def ratio_tag(keep_ratio: float) -> str:
    return f"k{keep_ratio:g}"


@dataclass
class GraphSpec:
    name: str
    kind: str                      # encoder | step | fill
    stage: int | None
    keep_ratio: float | None
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    layers: tuple[int, ...] = ()   # decoder layers whose caches the graph takes (step: its own; fill: later ones)


class EncoderGraph(nn.Module):
    def __init__(self, model: CaptionModel, keep_ratio: float) -> None:
        super().__init__()
        self.model, self.keep_ratio = model, keep_ratio

    def forward(self, pixel_values: torch.Tensor):
        memory, _, _ = self.model.encode(pixel_values, self.keep_ratio)
        return self.model.cross_kv(memory)


class StepGraph(nn.Module):
    """A later decoder stage; argument names are the graph's input names (Core ML reads them)."""

    def __init__(self, model: CaptionModel, stage: int) -> None:
        super().__init__()
        self.model, self.stage = model, stage

    def forward(self, hidden_in, position, past_k, past_v, cross_k, cross_v):
        return self.model.step_stage(self.stage, hidden_in, position, past_k, past_v, cross_k, cross_v)


class FirstStepGraph(StepGraph):
    """Stage 0: embeds the previous word itself."""

    def forward(self, token, position, past_k, past_v, cross_k, cross_v):
        x = self.model.embed_word(token, position)
        return self.model.step_stage(0, x, position, past_k, past_v, cross_k, cross_v)


class FillGraph(nn.Module):
    def __init__(self, model: CaptionModel, stage: int) -> None:
        super().__init__()
        self.model, self.stage = model, stage

    def forward(self, hidden_in, position, past_k, past_v):
        return self.model.fill_after(self.stage, hidden_in, position, past_k, past_v)


def graph_specs(model: CaptionModel, keep_ratios: list[float]) -> list[GraphSpec]:
    cache = ("past_k", "past_v")
    step_out = ("hidden", "logits", "confidence", "present_k", "present_v")
    specs = []
    for r in keep_ratios:
        specs.append(GraphSpec(f"encoder_{ratio_tag(r)}", "encoder", None, r, ("pixel_values",), ("cross_k", "cross_v")))
        for s in range(model.num_stages):
            first = "token" if s == 0 else "hidden_in"
            specs.append(GraphSpec(f"step{s}_{ratio_tag(r)}", "step", s, r,
                                   (first, "position", *cache, "cross_k", "cross_v"), step_out,
                                   tuple(model.stage_layers(s))))
    for s in range(model.num_stages - 1):
        specs.append(GraphSpec(f"fill{s}", "fill", s, None, ("hidden_in", "position", *cache),
                               ("present_k", "present_v"), tuple(model.layers_after(s))))
    return specs


def graph_module(model: CaptionModel, spec: GraphSpec) -> nn.Module:
    if spec.kind == "encoder":
        return EncoderGraph(model, spec.keep_ratio)
    if spec.kind == "step":
        return FirstStepGraph(model, 0) if spec.stage == 0 else StepGraph(model, spec.stage)
    return FillGraph(model, spec.stage)


def example_inputs(model: CaptionModel, spec: GraphSpec) -> tuple[torch.Tensor, ...]:
    cfg = model.config
    if spec.kind == "encoder":
        return (torch.randn(1, 3, cfg.image_size, cfg.image_size),)
    n = len(spec.layers)
    cache = torch.randn(n, 1, cfg.num_heads, cfg.max_len, cfg.head_dim) * 0.1
    position = torch.tensor([3], dtype=torch.int64)
    hidden = torch.randn(1, 1, cfg.dim)
    if spec.kind == "fill":
        return hidden, position, cache, cache.clone()
    k = cfg.kept_tokens(spec.keep_ratio)
    cross = torch.randn(n, 1, cfg.num_heads, k, cfg.head_dim) * 0.1
    first = torch.tensor([cfg.bos_id], dtype=torch.int64) if spec.stage == 0 else hidden
    return first, position, cache, cache.clone(), cross, cross.clone()

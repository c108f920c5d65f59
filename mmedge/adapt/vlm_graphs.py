"""An adapted generative VLM (mmedge.adapt.vlm) cut into the graphs a device runs: what export traces.

- ``vision``: pixel_values (1, 3, S, S) and the prompt's text ids (1, L) -> ``visual`` (1, M, D), the tile's
  visual tokens after the connector, and ``scores`` (1, M), the prefilter's score of each against the
  prompt. The runtime keeps the top k = keep ratio x M of them (mmedge.runtime.vlm), so one graph, and one
  copy of the vision tower in memory, serves every keep ratio;
- ``embed``: ids (1, T) -> ``embeds`` (1, T, D): the decoder's token embeddings;
- ``step{s}``: decoder stage s on T tokens (a prefill: the prompt; a decode: T = 1): ``hidden_in``
  (1, T, D: the embeddings for stage 0, else the previous stage's ``hidden``), ``positions`` (1, T) rotary
  positions, ``slot`` (1,) the cache slot of the first token (the rest follow), ``past_k``/``past_v``
  (n, 1, KVH, P, hd) this stage's layers' caches -> ``hidden`` (1, T, D), ``exit_hidden`` (1, D) the last
  token's state at this stage's exit (its map and norm) and ``confidence`` (1,) of its exit,
  ``present_k``/``present_v`` (the caches with the T tokens written). Token t sees the slots up to slot + t;
- ``head``: ``exit_hidden`` (1, D) -> ``logits`` (1, V): the model's LM head, shared by every exit and run
  only at the exit a token takes;
- ``fill{s}`` for every stage but the last: ``hidden_in`` (1, 1, D, the exiting stage's hidden), ``positions``,
  ``slot`` and the caches of every later layer -> those caches with the copy-forward keys and values written.
The cache holds P = max_slots positions: a prompt of T tokens and up to P - T generated ones. The writes are
one-hot products (no scatter), so every shape but T is static.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mmedge.adapt.vlm import AdaptedVLM


@dataclass
class VLMGraphSpec:
    name: str
    kind: str                      # vision | embed | step | head | fill
    stage: int | None
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    layers: tuple[int, ...] = ()   # decoder layers whose caches the graph takes


def graph_specs(model: AdaptedVLM) -> list[VLMGraphSpec]:
    cfg, S = model.config, model.num_stages
    specs = [VLMGraphSpec("vision", "vision", None, ("pixel_values", "text_ids"), ("visual", "scores")),
             VLMGraphSpec("embed", "embed", None, ("ids",), ("embeds",))]
    cache = ("past_k", "past_v")
    for s in range(S):
        specs.append(VLMGraphSpec(f"step{s}", "step", s, ("hidden_in", "positions", "slot") + cache,
                                  ("hidden", "exit_hidden", "confidence", "present_k", "present_v"),
                                  tuple(model.stage_layers(s))))
    specs.append(VLMGraphSpec("head", "head", None, ("exit_hidden",), ("logits",)))
    for s in range(S - 1):
        later = tuple(range(cfg.exits[s] + 1, cfg.depth))
        specs.append(VLMGraphSpec(f"fill{s}", "fill", s, ("hidden_in", "positions", "slot") + cache,
                                  ("present_k", "present_v"), later))
    return specs


def _write(past: torch.Tensor, new: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
    """past (1, KVH, P, hd) with new (1, KVH, T, hd) written at slots slot..slot+T-1 (one-hot product)."""
    P, T = past.shape[2], new.shape[2]
    onehot = (torch.arange(P)[None, :] == (slot + torch.arange(T))[:, None]).to(past.dtype)  # (T, P)
    keep = 1.0 - onehot.sum(0)  # (P,)
    return past * keep[None, None, :, None] + torch.einsum("tp,bhtd->bhpd", onehot, new)


class VisionGraph(nn.Module):
    def __init__(self, model: AdaptedVLM) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor, text_ids: torch.Tensor):
        bb = self.model.backbone
        visual = bb.encode_image(pixel_values)  # (1, M, D)
        text = bb.embed_tokens(text_ids)  # (1, L, D)
        scores = self.model.prefilter_scores(visual, text, torch.ones(text.shape[:2], dtype=text.dtype))  # (1, M)
        return visual, scores


class EmbedGraph(nn.Module):
    def __init__(self, model: AdaptedVLM) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor):
        return self.model.backbone.embed_tokens(ids)


class StepGraph(nn.Module):
    """Decoder stage `stage` on T tokens; argument names are the graph's input names."""

    def __init__(self, model: AdaptedVLM, stage: int) -> None:
        super().__init__()
        self.model, self.stage = model, stage
        self.layers = list(model.stage_layers(stage))

    def forward(self, hidden_in, positions, slot, past_k, past_v):
        bb = self.model.backbone
        x = hidden_in
        cos, sin = bb.rotary(positions, x)
        mask = AdaptedVLM._causal(slot, x.shape[1], past_k.shape[3])
        present_k, present_v = [], []
        for j, i in enumerate(self.layers):
            k, v = bb.key_values(i, x, cos, sin)
            keys, values = _write(past_k[j], k, slot), _write(past_v[j], v, slot)
            x = bb.attend(i, x, cos, sin, keys, values, mask)
            present_k.append(keys)
            present_v.append(values)
        last = x[:, -1:]  # (1, 1, D)
        exit_hidden = self.model.exit_state(self.stage, last)[:, 0]  # (1, D)
        confidence = self.model.confidence[self.stage](last)[:, 0]  # (1,)
        return x, exit_hidden, confidence, torch.stack(present_k), torch.stack(present_v)


class HeadGraph(nn.Module):
    """The shared LM head on an exit's state: exit_hidden (1, D) -> logits (1, V)."""

    def __init__(self, model: AdaptedVLM) -> None:
        super().__init__()
        self.model = model

    def forward(self, exit_hidden):
        return self.model.backbone.lm_head(exit_hidden)


class FillGraph(nn.Module):
    """Copy-forward: the later layers' keys and values of a token that exited after stage `stage`."""

    def __init__(self, model: AdaptedVLM, stage: int) -> None:
        super().__init__()
        self.model = model
        self.layers = list(range(model.config.exits[stage] + 1, model.config.depth))

    def forward(self, hidden_in, positions, slot, past_k, past_v):
        bb = self.model.backbone
        cos, sin = bb.rotary(positions, hidden_in)
        present_k, present_v = [], []
        for j, i in enumerate(self.layers):
            k, v = bb.key_values(i, hidden_in, cos, sin)
            present_k.append(_write(past_k[j], k, slot))
            present_v.append(_write(past_v[j], v, slot))
        return torch.stack(present_k), torch.stack(present_v)


def graph_module(model: AdaptedVLM, spec: VLMGraphSpec) -> nn.Module:
    if spec.kind == "vision":
        return VisionGraph(model)
    if spec.kind == "embed":
        return EmbedGraph(model)
    if spec.kind == "head":
        return HeadGraph(model)
    return (StepGraph if spec.kind == "step" else FillGraph)(model, spec.stage)


def example_inputs(model: AdaptedVLM, spec: VLMGraphSpec, max_slots: int, tokens: int = 3) -> tuple:
    """Inputs to trace `spec` with (T = tokens for the graphs whose token count varies)."""
    bb = model.backbone
    if spec.kind == "vision":
        return torch.zeros(1, 3, bb.image_size, bb.image_size), torch.ones(1, 5, dtype=torch.long)
    if spec.kind == "embed":
        return (torch.ones(1, tokens, dtype=torch.long),)
    if spec.kind == "head":
        return (torch.zeros(1, bb.dim),)
    T = tokens if spec.kind == "step" else 1
    cache = torch.zeros(len(spec.layers), 1, bb.num_kv_heads, max_slots, bb.head_dim)
    return (torch.zeros(1, T, bb.dim), torch.arange(T)[None], torch.tensor([0]), cache, cache.clone())

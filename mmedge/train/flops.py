"""FLOP counting with torch.utils.flop_counter (counts matmuls, convs and attention ops)."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch.utils.flop_counter import FlopCounterMode

from mmedge.models.model import AdaptiveVLModel


@contextmanager
def count_flops():
    """with count_flops() as result: ...; result["flops"] holds the total afterwards."""
    result = {"flops": 0}
    mode = FlopCounterMode(display=False)
    with mode:
        yield result
    result["flops"] = int(mode.get_total_flops())


@torch.no_grad()
def stage_flops(model: AdaptiveVLModel, keep_ratio: float) -> list[int]:
    """FLOPs of each stage for one sample at `keep_ratio` (stage 0 includes embeddings + prefilter)."""
    from mmedge.export.stages import is_adapted

    if is_adapted(model):
        return _adapted_stage_flops(model, keep_ratio)
    cfg = model.config
    pixels = torch.zeros(1, 3, cfg.image_size, cfg.image_size)
    ids = torch.zeros(1, cfg.max_text_len, dtype=torch.long)
    mask = torch.ones(1, cfg.max_text_len, dtype=torch.long)
    was_training = model.training
    model.eval()
    per_stage = []
    with count_flops() as embed_cost:
        emb = model.embed(pixels, ids, mask, keep_ratio)
    hidden = emb.hidden
    for stage in range(model.num_stages):
        with count_flops() as cost:
            hidden, _, _ = model.forward_stage(stage, hidden, emb.mask)
        per_stage.append(cost["flops"] + (embed_cost["flops"] if stage == 0 else 0))
    model.train(was_training)
    return per_stage


def _adapted_stage_flops(model, keep_ratio: float) -> list[int]:
    """The same count through the stage modules `mmedge export` exports for an adapted model
    (mmedge.adapt.stages: stage 0 holds the embeddings, the prefilter and exit 0)."""
    from mmedge.adapt.stages import example_inputs, stage_module, stage_specs

    was_training = model.training
    model.eval()
    per_stage, hidden, mask = [], None, None
    for spec in stage_specs(model, [keep_ratio]):
        module = stage_module(model, spec)
        inputs = example_inputs(model, spec) if spec.stage == 0 else (hidden, mask)
        with count_flops() as cost:
            out = module(*inputs)
        hidden = out[0]
        if spec.stage == 0:
            mask = out[1]
        per_stage.append(cost["flops"])
    model.train(was_training)
    return per_stage


def exit_flops(model: AdaptiveVLModel, keep_ratio: float) -> list[int]:
    """Cumulative FLOPs to reach each exit for one sample."""
    out, total = [], 0
    for f in stage_flops(model, keep_ratio):
        total += f
        out.append(total)
    return out


@torch.no_grad()
def text_stage_flops(model: AdaptiveVLModel, after_stage: int) -> list[int]:
    """FLOPs of each text-only stage (modality pruning: [CLS] + text, no visual tokens) after `after_stage`."""
    from mmedge.export.stages import text_stage_specs

    text_stage_specs(model, after_stage)  # checks the stage index; refuses adapted models
    cfg = model.config
    seq = 1 + cfg.max_text_len
    hidden, mask = torch.zeros(1, seq, cfg.dim), torch.ones(1, seq)
    was_training = model.training
    model.eval()
    out = []
    for stage in range(after_stage + 1, model.num_stages):
        with count_flops() as cost:
            hidden, _, _ = model.forward_stage(stage, hidden, mask)
        out.append(cost["flops"])
    model.train(was_training)
    return out

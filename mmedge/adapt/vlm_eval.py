"""Quality and cost of an adapted generative VLM (mmedge.adapt.vlm) on prompts with references, per exit
policy and keep ratio, and the calibration of an exit threshold under a bound on the task metric.

Tasks: ``caption`` (CIDEr x100 against the references, pycocoevalcap) and ``answer`` (exact-match
accuracy of the short answer). Cost per generated token: decoder layers run (the exiting stage's and
those before it), and the copy-forward projections of the layers skipped; the first token always comes
from the prefill at full depth and is counted apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from mmedge.adapt.vlm import AdaptedVLM, Generated
from mmedge.caption.metrics import caption_scores
from mmedge.runtime.controller import Policy

TASK_METRICS = {"caption": "CIDEr", "answer": "accuracy"}


@dataclass
class Run:
    """One policy and keep ratio over a set of prompts."""
    said: list[str]
    generated: list[Generated]
    quality: float                 # CIDEr x100 (caption) or accuracy x100 (answer)
    layers_per_token: float        # decoder layers run per decoded token (the first, prefilled, excluded)
    exit_histogram: list[int]      # decoded tokens (first excluded) per exit stage
    interval: tuple[float, float] = (math.nan, math.nan)  # bootstrap 90% interval of the quality over prompts

    def to_dict(self) -> dict:
        return {"quality": self.quality, "interval90": list(self.interval), "layers_per_token": self.layers_per_token,
                "exit_histogram": self.exit_histogram}


def per_prompt(task: str, said: list[str], references: list) -> list[float]:
    """Each prompt's score (CIDEr x100 per image, whose mean is the corpus CIDEr, against its one reference or
    its list of them; or 100 / 0)."""
    if task == "caption":
        return caption_scores(said, [[r] if isinstance(r, str) else list(r) for r in references],
                              meteor=False).cider_per_image
    return [100.0 * (s == r) for s, r in zip(said, references)]


def bootstrap90(scores: list[float], rounds: int = 1000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    x = np.asarray(scores, np.float64)
    means = x[rng.integers(0, len(x), (rounds, len(x)))].mean(axis=1)
    return float(np.percentile(means, 5)), float(np.percentile(means, 95))


def run(model: AdaptedVLM, pre, task: str, images: list, texts: list[str], references: list[str],
        policy: Policy | None = None, keep_ratio: float = 1.0, max_new_tokens: int = 24,
        progress: bool = False) -> Run:
    """Greedy generation of every prompt (batch 1, as a device runs) and its quality and cost."""
    pixels = pre.pixels(images)
    gens, said = [], []
    for i in tqdm(range(len(texts)), desc=f"{task} keep {keep_ratio:g}", disable=not progress, leave=False):
        g = model.generate(pre.prompt_ids(texts[i]), pixels[i: i + 1], max_new_tokens=max_new_tokens,
                           stop_ids=pre.stop_ids, keep_ratio=keep_ratio, policy=policy)
        gens.append(g)
        said.append(pre.decode(g.tokens))
    histogram = [0] * model.num_stages
    for g in gens:
        for stage in g.exits[1:]:
            histogram[stage] += 1
    layers = [model.config.exits[s] + 1 for s in range(model.num_stages)]
    decoded = sum(histogram)
    per_token = sum(h * n for h, n in zip(histogram, layers)) / decoded if decoded else float(model.config.depth)
    scores = per_prompt(task, said, references)
    return Run(said, gens, float(np.mean(scores)), per_token, histogram, bootstrap90(scores))


def calibrate(model: AdaptedVLM, pre, task: str, images: list, texts: list[str], references: list[str],
              thresholds: list[float], bound: float, kind: str = "confidence", keep_ratio: float = 1.0,
              max_new_tokens: int = 24, progress: bool = False) -> dict:
    """The cheapest threshold of `kind` whose quality stays within `bound` of full depth at this keep
    ratio (bound: points of accuracy, or a relative share of CIDEr, e.g. 0.01 = 1%)."""
    full = run(model, pre, task, images, texts, references, Policy("full"), keep_ratio, max_new_tokens)
    floor = full.quality - bound if task == "answer" else full.quality * (1 - bound)
    tried = []
    for t in tqdm(sorted(thresholds), desc=f"calibrate {kind}", disable=not progress, leave=False):
        r = run(model, pre, task, images, texts, references, Policy(kind, threshold=t), keep_ratio, max_new_tokens)
        tried.append({"threshold": t, **r.to_dict(), "within": r.quality >= floor - 1e-9})
    ok = [t for t in tried if t["within"]]
    best = min(ok, key=lambda t: (t["layers_per_token"], -t["threshold"])) if ok else None
    return {"kind": kind, "keep_ratio": keep_ratio, "bound": bound, "full_depth": full.to_dict(), "floor": floor,
            "tried": tried, "chosen": best}


def count_flops(fn) -> int:
    """FLOPs that torch's FlopCounterMode counts (matrix products) in fn()."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


@torch.no_grad()
def decoder_flops(model: AdaptedVLM, slots: int) -> dict:
    """Counted FLOPs of one decoded token's parts at a cache of `slots`: a decoder layer, each exit's
    confidence, each exit head (map, norm and the shared LM head; the last exit is the model's head), and
    one layer's copy-forward."""
    bb, D = model.backbone, model.backbone.dim
    x = torch.zeros(1, 1, D)
    cos, sin = bb.rotary(torch.zeros(1, 1, dtype=torch.long), x)
    cache = bb.new_cache(1, slots)
    mask = torch.zeros(1, 1, slots)
    layer = count_flops(lambda: bb.layer(0, x, cos, sin, cache[0], torch.tensor([0]), mask))
    confidences = [count_flops(lambda s=s: model.confidence[s](x)) for s in range(model.num_stages)]
    heads = [count_flops(lambda s=s: bb.lm_head(model.exit_state(s, x))) for s in range(model.num_stages)]
    copy = count_flops(lambda: bb.key_values(0, x, cos, sin))
    return {"layer": layer, "confidences": confidences, "exit_heads": heads, "copy_forward_layer": copy,
            "slots": slots}


def flops_per_token(model: AdaptedVLM, histogram: list[int], parts: dict) -> float:
    """Mean counted decoder FLOPs per decoded token for an exit histogram under a confidence policy: the
    layers up to the exit, each confidence read on the way, the head at the exit taken, and the skipped
    layers' copy-forward."""
    depth, exits, total = model.config.depth, model.config.exits, 0.0
    n = sum(histogram)
    if not n:
        return math.nan
    for stage, count in enumerate(histogram):
        layers = exits[stage] + 1
        cost = layers * parts["layer"] + sum(parts["confidences"][: stage + 1]) + parts["exit_heads"][stage] + \
            (depth - layers) * parts["copy_forward_layer"]
        total += count * cost
    return total / n

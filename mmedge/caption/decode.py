"""Greedy and beam decoding with a per-word early exit, in PyTorch (training side, batched).

Every generated word runs the decoder stages in order and stops at the first exit the policy
accepts (``mmedge.runtime.controller.Policy``: confidence, max_probability, patience, full; the
last exit always stops). The layers a word skipped still owe the later words their keys and
values at its position:
- ``kv="copy"`` (CALM's copy-forward): the exiting layer's state stands in as the input of every
  skipped layer, whose keys and values are computed from it (one projection per skipped layer);
- ``kv="recompute"``: the skipped layers run anyway to fill the cache (the word still comes
  from the exit taken), which keeps the cache exact and saves only the skipped exit heads.
Rows of a batch exit independently: a row that has exited keeps its state frozen while the batch
runs on, which gives the copy-forward keys and values for it without a second code path.
``decoder_cost`` counts the FLOPs of each part with torch's FlopCounterMode (priced by ``DecoderCost``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mmedge.caption.cost import DecoderCost
from mmedge.caption.model import CaptionModel
from mmedge.errors import ConfigError
from mmedge.runtime.controller import Policy

KV_MODES = ("copy", "recompute")


@dataclass
class Decoded:
    tokens: list[list[int]]   # per image: generated word ids, the final [EOS] included when reached
    exits: list[list[int]]    # per image: the exit stage each generated id came from


def _stop(policy: Policy, stage: int, stages: int, confidence: torch.Tensor, max_prob: torch.Tensor,
          run: torch.Tensor) -> torch.Tensor:
    """(B,) bool: does each row stop at this exit? (mirrors controller.should_stop)."""
    if stage >= stages - 1:
        return torch.ones_like(confidence, dtype=torch.bool)
    if policy.kind == "full":
        return torch.zeros_like(confidence, dtype=torch.bool)
    if policy.kind in ("confidence", "latency_budget"):  # no timings here: a budget falls back to its threshold
        return confidence >= policy.threshold
    if policy.kind == "max_probability":
        return max_prob >= policy.threshold
    return run >= policy.patience  # patience


def _word_step(model: CaptionModel, token: torch.Tensor, pos: int, cache_k: torch.Tensor, cache_v: torch.Tensor,
               cross_k: torch.Tensor, cross_v: torch.Tensor, policy: Policy, kv: str):
    """One position for every row: -> chosen logits (B, V), exit stage (B,). Updates the caches in place."""
    position = torch.tensor([pos], dtype=torch.int64)
    write, visible = model.position_masks(position)
    x = model.embed_word(token, position)  # (B, 1, D)
    B, S = token.shape[0], model.num_stages
    active = torch.ones(B, dtype=torch.bool)
    chosen = torch.zeros(B, model.config.vocab_size)
    exit_at = torch.full((B,), S - 1, dtype=torch.int64)
    last, run = torch.full((B,), -1, dtype=torch.int64), torch.zeros(B, dtype=torch.int64)
    for s in range(S):
        for i in model.stage_layers(s):
            x_new, cache_k[i], cache_v[i] = model.decoder[i].step(x, write, visible, cache_k[i], cache_v[i],
                                                                  cross_k[i], cross_v[i])
            x = x_new if kv == "recompute" else torch.where(active[:, None, None], x_new, x)
        if not active.any():
            continue  # only the cache still needed this stage
        logits, conf = model.exits[s](x, model.lm_head)
        logits, conf = logits[:, 0], conf[:, 0]  # (B, V), (B,)
        max_prob, answer = logits.softmax(-1).max(-1)
        run = torch.where(answer == last, run + 1, torch.ones_like(run))
        last = answer
        stop = active & _stop(policy, s, S, conf, max_prob, run)
        chosen[stop] = logits[stop]
        exit_at[stop] = s
        active &= ~stop
    return chosen, exit_at


@torch.no_grad()
def generate(model: CaptionModel, pixels: torch.Tensor, keep_ratio: float = 1.0, policy: Policy | None = None,
             max_len: int | None = None, beam: int = 1, kv: str = "copy") -> Decoded:
    """Captions for pixels (B, 3, S, S): greedy (beam=1) or beam search, at most max_len ids each."""
    if kv not in KV_MODES:
        raise ConfigError(f"kv {kv!r} must be one of {list(KV_MODES)}", "arguments")
    if isinstance(beam, bool) or not isinstance(beam, int) or beam < 1:
        raise ConfigError(f"beam {beam!r} must be an integer >= 1", "arguments")
    cfg, policy = model.config, policy or Policy("full")
    max_len = min(max_len or cfg.max_len, cfg.max_len)
    B = pixels.shape[0]
    memory, _, _ = model.encode(pixels, keep_ratio)
    cross_k, cross_v = model.cross_kv(memory)  # (Ld, B, H, k, hd)
    R = B * beam  # rows: beam hypotheses of each image, image-major
    cross_k, cross_v = cross_k.repeat_interleave(beam, 1), cross_v.repeat_interleave(beam, 1)
    cache_k, cache_v = model.empty_cache(R)
    token = torch.full((R,), cfg.bos_id, dtype=torch.int64)
    scores = torch.zeros(B, beam)
    scores[:, 1:] = float("-inf")  # all beams start equal: keep one
    done = torch.zeros(R, dtype=torch.bool)
    history = torch.zeros(R, 0, dtype=torch.int64)
    exits = torch.zeros(R, 0, dtype=torch.int64)
    lengths = torch.zeros(R)
    for pos in range(max_len):
        logits, exit_at = _word_step(model, token, pos, cache_k, cache_v, cross_k, cross_v, policy, kv)
        logp = logits.log_softmax(-1)  # (R, V)
        V = logp.shape[1]
        # a finished hypothesis continues only with [PAD] at no cost
        logp[done] = float("-inf")
        logp[done, cfg.pad_id] = 0.0
        if beam == 1:
            word = logp.argmax(-1)
            origin = torch.arange(R)
        else:
            cand = (scores.reshape(R, 1) + logp).reshape(B, beam * V)
            top, idx = cand.topk(beam, dim=1)  # (B, beam)
            scores = top
            origin = (idx // V + torch.arange(B)[:, None] * beam).reshape(R)
            word = (idx % V).reshape(R)
        cache_k, cache_v = cache_k[:, origin], cache_v[:, origin]
        history = torch.cat([history[origin], word[:, None]], 1)
        exits = torch.cat([exits[origin], exit_at[origin][:, None]], 1)
        lengths, done = lengths[origin] + (~done[origin]).float(), done[origin]
        done = done | (word == cfg.eos_id)
        token = word
        if done.all():
            break
    best = (scores / lengths.reshape(B, beam).clamp(min=1)).argmax(1) if beam > 1 else torch.zeros(B, dtype=torch.int64)
    tokens, taken = [], []
    for b in range(B):
        r = b * beam + int(best[b])
        n = int(lengths[r])
        tokens.append(history[r, :n].tolist())
        taken.append(exits[r, :n].tolist())
    return Decoded(tokens, taken)


@torch.no_grad()
def decoder_cost(model: CaptionModel, keep_ratio: float = 1.0) -> DecoderCost:
    from mmedge.train.flops import count_flops

    cfg = model.config
    pixels = torch.zeros(1, 3, cfg.image_size, cfg.image_size)
    with count_flops() as enc:
        memory, _, _ = model.encode(pixels, keep_ratio)
        cross_k, cross_v = model.cross_kv(memory)
    cache_k, cache_v = model.empty_cache(1)
    position = torch.tensor([1], dtype=torch.int64)
    x = model.embed_word(torch.tensor([cfg.bos_id]), position)
    stage, head, fill = [], [], []
    for s in range(model.num_stages):
        layers = list(model.stage_layers(s))
        with count_flops() as c:
            model.step_stage(s, x, position, cache_k[layers], cache_v[layers], cross_k[layers], cross_v[layers])
        with count_flops() as h:
            model.exits[s](x, model.lm_head)
        after = list(model.layers_after(s))
        f = {"flops": 0}
        if after:
            with count_flops() as f:
                model.fill_after(s, x, position, cache_k[after], cache_v[after])
        stage.append(c["flops"])
        head.append(h["flops"])
        fill.append(f["flops"])
    return DecoderCost(stage, head, fill, enc["flops"])

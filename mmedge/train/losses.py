"""Losses for joint exit training, the confidence heads and prefilter distillation."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from mmedge.models.model import ModelOutput


def exit_weights(num_exits: int, scheme: str) -> list[float]:
    """Normalised per-exit loss weights. linear: exit i weighs (i + 1), so deeper exits count more."""
    raw = [float(i + 1) for i in range(num_exits)] if scheme == "linear" else [1.0] * num_exits
    total = sum(raw)
    return [w / total for w in raw]


def exit_loss(out: ModelOutput, labels: torch.Tensor, weights: list[float]) -> tuple[torch.Tensor, list[float]]:
    """Weighted cross-entropy over all exits; also returns each exit's loss value."""
    losses = [F.cross_entropy(lg, labels) for lg in out.logits]
    return sum(w * l for w, l in zip(weights, losses)), [l.item() for l in losses]


def confidence_loss(out: ModelOutput, labels: torch.Tensor) -> torch.Tensor:
    """BCE of each exit's confidence against 'this exit's argmax is the label'."""
    terms = []
    for lg, conf in zip(out.logits, out.confidence):
        correct = (lg.detach().argmax(-1) == labels).to(conf.dtype)
        terms.append(F.binary_cross_entropy(conf.clamp(1e-6, 1 - 1e-6), correct))
    return sum(terms) / len(terms)


def attention_teacher(attention: list[torch.Tensor], text_mask: torch.Tensor, num_text: int) -> torch.Tensor:
    """Where [CLS] and the text look in the image, averaged over layers and heads -> (B, N), rows sum to 1.

    attention: per layer (B, nh, Q, T) with T = 1 + num_text + N (all visual tokens kept) and Q = T
    (full attention) or 1 + num_text (the efficient variants give only the [CLS] + text rows): only
    the [CLS] + text rows are read.
    """
    attn = torch.stack(attention).mean(dim=(0, 2))  # (B, T, T)
    to_visual = attn[:, : 1 + num_text, 1 + num_text:]  # (B, 1 + L, N): queries CLS + text
    ones = torch.ones_like(text_mask[:, :1])
    query_mask = torch.cat([ones, text_mask], dim=1).to(attn.dtype).unsqueeze(-1)  # (B, 1 + L, 1)
    mass = (to_visual * query_mask).sum(1)  # (B, N)
    return (mass / mass.sum(-1, keepdim=True)).detach()


def prefilter_loss(scores: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """KL(teacher || softmax(scores)), batch mean."""
    return F.kl_div(F.log_softmax(scores, dim=-1), teacher, reduction="batchmean")


def grounding_loss(out: ModelOutput, grounder: torch.nn.Module, targets: torch.Tensor, num_text: int,
                   stage: int, bins: int) -> torch.Tensor:
    """Cross-entropy of the grid column and row (and, when the head has size outputs, the size
    class) predicted from each text token after `stage`.

    targets: (B, L, 3) column bin, row bin and size class of the object each word names, -1 where
    it names none.
    """
    text = out.hidden[stage][:, 1: 1 + num_text]  # (B, L, D): the text tokens
    logits = grounder(text)  # (B, L, 2 * bins + sizes)
    cells = logits[..., : 2 * bins].reshape(-1, bins)  # (B * L * 2, bins): column, row interleaved per token
    cell_target = targets[..., :2].reshape(-1)  # (B * L * 2,) in the same order
    if not bool((cell_target >= 0).any()):  # no referring phrase in the batch; keep the head in the graph
        return 0.0 * logits.sum()
    loss = F.cross_entropy(cells, cell_target, ignore_index=-1)
    if logits.shape[-1] > 2 * bins:  # the size classes
        sizes = logits[..., 2 * bins:].reshape(-1, logits.shape[-1] - 2 * bins)  # (B * L, sizes)
        loss = loss + F.cross_entropy(sizes, targets[..., 2].reshape(-1), ignore_index=-1)
    return loss


def token_tag_loss(out: ModelOutput, tagger: torch.nn.Module, token_classes: torch.Tensor,
                   num_text: int) -> torch.Tensor:
    """Cross-entropy of the tagger on the kept visual tokens after stage 0.

    token_classes: (B, N) object class of every visual token; the kept ones are gathered.
    """
    visual = out.hidden[0][:, 1 + num_text:]  # (B, k, D)
    target = token_classes if out.kept_index is None else torch.gather(token_classes, 1, out.kept_index)
    logits = tagger(visual)  # (B, k, C)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))

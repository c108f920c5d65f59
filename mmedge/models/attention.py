"""Pluggable attention modules. Every variant takes (x, additive_mask) and returns (out, probs).

Written with explicit matmul + softmax (no fused kernel) so that every variant traces to
ONNX, ExecuTorch and Core ML alike. New variants register in ATTENTION (and are named in
``mmedge.models.config.ATTENTION_VARIANTS``); ``build_attention(cfg)`` makes the one a model
config asks for.

The sequence is always ``[CLS] + L text tokens + n visual tokens`` (T = 1 + L + n; n differs per
exported keep ratio and may be 0 when the visual tokens are dropped). ``mask`` is additive, shape
(B, 1, 1, T): 0 for a real token, MASK_VALUE for a padded one.

``probs``, what the prefilter's distillation loss (``mmedge.train.losses.attention_teacher``) and
analysis read: attention probabilities of shape (B, nh, Q, T) over the T keys, rows summing to one,
whose first 1 + L rows are the queries [CLS] and text. ``full`` returns every row (Q = T, as it always
has); the efficient variants return only those 1 + L rows (Q = 1 + L), as exact distributions over
the original tokens: those are the rows the loss needs, and the only ones every variant can give
without rebuilding a T x T matrix (a visual query in ``crossmodal`` sees only its block). Nothing
in an exported stage uses ``probs``, and the exporters drop it as dead code.

The efficient variants have no parameters of their own (the same ``qkv`` and ``proj`` as ``full``),
so a model trained with one attention loads into another (``mmedge train --init-from``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

MASK_VALUE = -1e4  # additive attention mask for padding (finite: safe in fp16 and int8 paths)


class QKV(nn.Linear):
    """The fused q, k, v projection (D -> 3D, one weight, so checkpoints and ``full`` are unchanged)
    that can also project q alone or k and v alone, for a variant whose keys are not one per token.
    (ExecuTorch exports replace it with ``mmedge.export.delegable.DelegableQKV``: XNNPACK delegates a
    linear layer only when its weight is a parameter, not a slice of one.)"""

    def __init__(self, dim: int) -> None:
        super().__init__(dim, 3 * dim)
        self.dim = dim

    def q(self, x: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (..., D): the query rows of the projection."""
        return F.linear(x, self.weight[: self.dim], self.bias[: self.dim])

    def kv(self, x: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (..., 2D): the key and value rows of the projection."""
        return F.linear(x, self.weight[self.dim:], self.bias[self.dim:])


class FullAttention(nn.Module):
    """Multi-head softmax attention over the whole sequence (the quadratic baseline)."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = QKV(dim)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    @classmethod
    def from_config(cls, cfg) -> "FullAttention":
        return cls(cfg.dim, cfg.num_heads, cfg.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, T, D); mask: (B, 1, 1, T) additive (0 keep, large negative drop)."""
        out, probs = self._attend(*self._heads(x), mask)
        return self._merge(out, x.shape[0]), probs

    def _attend(self, q, k, v, mask) -> tuple[torch.Tensor, torch.Tensor]:
        """Softmax attention of (B * nh, T, hd) heads over all T keys: out (B * nh, T, hd) and the
        probabilities (B, nh, T, T)."""
        BH, T, _ = q.shape
        scores = torch.bmm(q, k.transpose(1, 2)).reshape(BH // self.num_heads, self.num_heads, T, T) + mask
        probs = scores.softmax(dim=-1)
        return torch.bmm(self.drop(probs).reshape(BH, T, T), v), probs

    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q (scaled by hd ** -0.5), k, v, each (B * nh, T, hd). Attention is written with 3-D
        ``bmm`` throughout: a 4-D ``@`` lowers in ExecuTorch to an ``expand_copy`` of both operands
        (outside the XNNPACK delegate) before its bmm; for the T x T probabilities of ``full`` that
        copy doubled the layer's attention time (2.3 against 1.1 ms at 601 tokens, width 64)."""
        q, k, v = self._split_heads(self.qkv(x), 3)
        return q * (self.head_dim ** -0.5), k, v

    def _split_heads(self, t: torch.Tensor, parts: int) -> list[torch.Tensor]:
        """(B, T, parts * D) projections -> `parts` tensors of (B * nh, T, hd) heads: contiguous head
        slices (a select would be copied outside XNNPACK by ExecuTorch)."""
        B, T, _ = t.shape
        nh, hd = self.num_heads, self.head_dim
        t = t.reshape(B, T, parts * nh, hd).transpose(1, 2)  # (B, parts nh, T, hd)
        if parts == 1:  # no slice: a full-length one traces to an alias node, which Core ML rejects
            return [t.reshape(B * nh, T, hd)]
        return [t[:, i * nh:(i + 1) * nh].reshape(B * nh, T, hd) for i in range(parts)]

    def _merge(self, out: torch.Tensor, B: int) -> torch.Tensor:
        """(B * nh, T, hd) per-head outputs -> the projected (B, T, D)."""
        _, T, hd = out.shape
        return self.proj(out.reshape(B, self.num_heads, T, hd).transpose(1, 2).reshape(B, T, self.num_heads * hd))


def _pad(t: torch.Tensor, dim: int, after: int, before: int = 0, value: float = 0.0) -> torch.Tensor:
    """Pad `t` along `dim` (-1 or -2) with `before` / `after` entries; nothing at all when both are 0
    (a no-op pad or a full-length slice traces to an ``alias`` node that Core ML's converter rejects)."""
    if before == 0 and after == 0:
        return t
    return F.pad(t, (before, after) if dim == -1 else (0, 0, before, after), value=value)


def _head(t: torch.Tensor, n: int) -> torch.Tensor:
    """The first n entries along dim 2 (the tokens), without a slice when there is nothing to cut."""
    return t if t.shape[2] == n else t[:, :, :n]


class _SplitAttention(FullAttention):
    """Shared by the efficient variants: the sequence split into [CLS] + text (G = 1 + L tokens, the
    'global' part) and the n visual tokens after them."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0, num_text: int = 24) -> None:
        super().__init__(dim, num_heads, dropout)
        self.num_global = 1 + num_text

    def _dense(self, q, k, v, mask) -> tuple[torch.Tensor, torch.Tensor]:
        """Plain attention (used where the sequence is too short for the variant to save anything) on
        (B * nh, T, hd) heads: out (B * nh, T, hd) and the [CLS] + text rows of the probabilities."""
        out, probs = self._attend(q, k, v, mask)
        return out, _head(probs, self.num_global)


class LowRankAttention(_SplitAttention):
    """Linformer-style attention with a fixed projection: keys and values compressed along the
    sequence to [CLS] + text (kept exact) + at most ``rank`` visual landmarks.

    Every query (all T tokens) attends to the 1 + L [CLS] and text keys, unchanged and masked as in
    ``full``, and to m <= rank landmarks: the n visual tokens, in kept order (raster order when all
    are kept, descending prefilter score otherwise), cut into m = ceil(n / s) consecutive segments of
    s = ceil(n / rank) tokens, each landmark's key and value the mean of its segment's real tokens
    (masked tokens and the padding to m * s are excluded), and its score biased by log(real tokens
    in the segment), so that a landmark weighs as much as the tokens it stands for (exact when the
    segment's keys are equal). The means are taken of the layer's input and then projected, which
    equals the mean of the tokens' keys and values (the projection is linear and a mean's weights
    sum to one) and leaves the visual tokens with no keys or values of their own: the projection
    costs T x D + (1 + L + m) x 2D outputs instead of T x 3D. Cost: T x (1 + L + m) scores instead
    of T x T, linear in the number of visual tokens. With n <= rank every landmark would be one
    token: plain attention.

    Why segment means and not Linformer's learned projection E (r x T) or Nystromformer:
    - a learned E is sized for one sequence length; every exported keep ratio has its own T, and a
      projection sliced to T would meet columns it was never trained with at the shorter lengths,
      while the prefilter reorders the visual tokens by relevance, so column j of E does not even
      mean one image position. Segment means have no length-specific parameters: one model, every
      keep ratio, and the efficient variants load the weights of a ``full`` model as they are;
    - padding is excluded exactly (a mean over the real tokens, an empty landmark masked out), and
      the text, which is short and carries the question, is never compressed;
    - Nystromformer uses the same segment-mean landmarks but adds a Moore-Penrose pseudo-inverse
      (iterative matmuls) and three softmaxes: more operators to export, little to gain at r = 16;
    - the landmark probabilities spread back over their tokens give exact rows over the original
      keys, which the prefilter's distillation needs.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0, num_text: int = 24,
                 rank: int = 16) -> None:
        super().__init__(dim, num_heads, dropout, num_text)
        self.rank = rank

    @classmethod
    def from_config(cls, cfg) -> "LowRankAttention":
        return cls(cfg.dim, cfg.num_heads, cfg.dropout, cfg.max_text_len, cfg.attention_rank)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, T, D); mask: (B, 1, 1, T) additive -> out (B, T, D), probs (B, nh, 1 + L, T)."""
        B, T, D = x.shape
        G, nh, hd = self.num_global, self.num_heads, self.head_dim
        n = T - G
        if n <= self.rank:  # static shape: every landmark would be a single token
            out, probs = self._dense(*self._heads(x), mask)
            return self._merge(out, B), probs
        s = -(-n // self.rank)  # tokens per segment
        m = -(-n // s)          # landmarks (<= rank)
        pad = m * s - n
        keep = (mask[..., G:] > MASK_VALUE / 2).to(x.dtype)  # (B, 1, 1, n): 1 = a real visual token
        w = _pad(keep, -1, pad).reshape(B * m, 1, s)          # pooling weights, padding excluded
        count = w.reshape(B, m, s).sum(-1, keepdim=True)      # (B, m, 1) real tokens per landmark
        segments = _pad(x[:, G:], -2, pad).reshape(B * m, s, D)
        landmarks = torch.bmm(w, segments).reshape(B, m, D) / count.clamp(min=1.0)  # (B, m, D) segment means
        # A landmark's key and value are the projections of its segment's mean input (the means of
        # the tokens' keys and values, by linearity): the visual tokens need no keys or values.
        q = self._split_heads(self.qkv.q(x), 1)[0] * (hd ** -0.5)                     # (B * nh, T, hd)
        keys, values = self._split_heads(self.qkv.kv(torch.cat([x[:, :G], landmarks], dim=1)), 2)  # (B * nh, G + m, hd)
        count = count.reshape(B, 1, 1, m)
        bias = torch.where(count > 0, count.clamp(min=1.0).log(), torch.full_like(count, MASK_VALUE))
        key_mask = torch.cat([mask[..., :G], bias], dim=-1)  # (B, 1, 1, G + m)
        p = (torch.bmm(q, keys.transpose(1, 2)).reshape(B, nh, T, G + m) + key_mask).softmax(dim=-1)
        out = torch.bmm(self.drop(p).reshape(B * nh, T, G + m), values)  # (B * nh, T, hd)
        # [CLS] + text rows over the original keys: a landmark's probability shared by its real tokens.
        rows = p[:, :, :G]  # (B, nh, G, G + m)
        share = (rows[..., G:] / count.clamp(min=1.0)).reshape(B, nh * G, m, 1)
        spread = share.expand(B, nh * G, m, s).reshape(B, nh, G, m * s)
        spread = (spread if pad == 0 else spread[..., :n]) * keep
        return self._merge(out, B), torch.cat([rows[..., :G], spread], dim=-1)


class CrossModalAttention(_SplitAttention):
    """Sparse cross-modal attention: [CLS] and text attend to everything; each visual token attends
    to [CLS], the text and the visual tokens of its own block.

    The visual tokens, in kept order, are cut into consecutive blocks of ``window`` tokens (block-
    local attention, as in the Image Transformer's local 1-D attention and BigBird's block-sparse
    layout, without BigBird's sliding and random blocks). Cost: (1 + L) x T scores for the global
    rows + n x (1 + L + window) for the visual ones, against T x T; the blocks are computed as such
    (reshape, batched matmul), never as a mask over a T x T matrix. Any two visual tokens are two
    hops apart through [CLS] and the text, which see the whole image, and the probe shows that the
    visual tokens put most of their attention on the text keys (``mmedge probe``:
    ``visual_to_text`` 0.34-0.78 per layer of the shipped model, against a uniform share of 0.19),
    which is why every visual query keeps them.

    Why non-overlapping blocks in kept order:
    - with every token kept (the training and full-quality path) kept order is raster order, so a
      block of 24 tokens at 576 visual tokens (a 24 x 24 grid) is one image row; after the
      prefilter the kept tokens are scattered over the grid and their positions are data
      (``kept_index``), while kept order is then descending prefilter score, and a block groups
      tokens of similar relevance (object tokens with object tokens);
    - a block's keys are a reshape of the sequence, no copy. The first version (blocks of 8, each
      also seeing the blocks on either side) needed pads, slices and concatenations of the keys,
      values and mask in every layer; on onnxruntime and ExecuTorch those cost more than their
      FLOPs: 1.64x / 1.49x faster than ``full`` exported at 576 tokens, width 64, against 6.0x in
      training (``benchmarks/results/attention/dim64`` in the git history before these blocks);
      these blocks: 2.06x / 1.92x against 6.8x, with ``full`` itself twice as fast on ExecuTorch;
    - ``window`` = 24 keeps the number of visual keys a visual query sees (3 x 8 before).
    Where the blocks would save nothing (n <= window, or when the padding to whole blocks costs
    more than the saving) the layer is plain attention; which path a layer takes depends only on
    the static shapes, so each exported keep ratio traces one of them.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0, num_text: int = 24,
                 window: int = 24) -> None:
        super().__init__(dim, num_heads, dropout, num_text)
        self.window = window

    @classmethod
    def from_config(cls, cfg) -> "CrossModalAttention":
        return cls(cfg.dim, cfg.num_heads, cfg.dropout, cfg.max_text_len, cfg.attention_window)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, T, D); mask: (B, 1, 1, T) additive -> out (B, T, D), probs (B, nh, 1 + L, T)."""
        B, T, _ = x.shape
        G, nh, hd, w = self.num_global, self.num_heads, self.head_dim, self.window
        q, k, v = self._heads(x)  # each (B * nh, T, hd), q scaled
        n = T - G
        nb = -(-n // w)  # blocks
        pad = nb * w - n
        if n <= w or nb * w * (G + w) >= n * T:  # static shapes: the blocks would not save anything
            out, probs = self._dense(q, k, v, mask)
            return self._merge(out, B), probs
        # [CLS] + text queries: full rows.
        probs = (torch.bmm(q[:, :G], k.transpose(1, 2)).reshape(B, nh, G, T) + mask).softmax(dim=-1)  # (B, nh, G, T)
        out_global = torch.bmm(self.drop(probs).reshape(B * nh, G, T), v)  # (B * nh, G, hd)
        # Visual queries: [CLS] + text keys and their own block's keys.
        qv = _pad(q[:, G:], -2, pad)                               # (B * nh, nb * w, hd)
        k_blk = _pad(k[:, G:], -2, pad).reshape(B * nh * nb, w, hd)  # (B * nh * nb, w, hd)
        v_blk = _pad(v[:, G:], -2, pad).reshape(B * nh * nb, w, hd)
        to_global = torch.bmm(qv, k[:, :G].transpose(1, 2)).reshape(B, nh, nb, w, G)
        local = torch.bmm(qv.reshape(B * nh * nb, w, hd), k_blk.transpose(1, 2)).reshape(B, nh, nb, w, w)
        to_global = to_global + mask[..., :G].reshape(B, 1, 1, 1, G)
        local = local + _pad(mask[..., G:], -1, pad, 0, MASK_VALUE).reshape(B, 1, nb, 1, w)  # padding slots masked
        p = self.drop(torch.cat([to_global, local], dim=-1).softmax(dim=-1))  # (B, nh, nb, w, G + w)
        out_visual = (torch.bmm(p[..., :G].reshape(B * nh, nb * w, G), v[:, :G])
                      + torch.bmm(p[..., G:].reshape(B * nh * nb, w, w), v_blk).reshape(B * nh, nb * w, hd))
        out_visual = out_visual if pad == 0 else out_visual[:, :n]  # (B * nh, n, hd)
        return self._merge(torch.cat([out_global, out_visual], dim=1), B), probs


ATTENTION: dict[str, type[nn.Module]] = {"full": FullAttention, "lowrank": LowRankAttention,
                                         "crossmodal": CrossModalAttention}


def build_attention(cfg) -> nn.Module:
    """The attention module that ModelConfig `cfg` names."""
    return ATTENTION[cfg.attention].from_config(cfg)

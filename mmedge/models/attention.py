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
without rebuilding a T x T matrix (a visual query in ``crossmodal`` sees only its window). Nothing
in an exported stage uses ``probs``, and the exporters drop it as dead code.

The efficient variants have no parameters of their own (the same ``qkv`` and ``proj`` as ``full``),
so a model trained with one attention loads into another (``mmedge train --init-from``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

MASK_VALUE = -1e4  # additive attention mask for padding (finite: safe in fp16 and int8 paths)


class FullAttention(nn.Module):
    """Multi-head softmax attention over the whole sequence (the quadratic baseline)."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    @classmethod
    def from_config(cls, cfg) -> "FullAttention":
        return cls(cfg.dim, cfg.num_heads, cfg.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, T, D); mask: (B, 1, 1, T) additive (0 keep, large negative drop)."""
        B, T, D = x.shape
        qkv = self.qkv(x).reshape(B, T, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # each (B, nh, T, hd)
        scores = q @ k.transpose(-2, -1) * (self.head_dim ** -0.5) + mask  # (B, nh, T, T)
        probs = scores.softmax(dim=-1)
        out = (self.drop(probs) @ v).transpose(1, 2).reshape(B, T, D)  # (B, T, D)
        return self.proj(out), probs


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

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, T, _ = x.shape
        qkv = self.qkv(x).reshape(B, T, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]  # each (B, nh, T, hd)

    def _dense(self, q, k, v, mask) -> tuple[torch.Tensor, torch.Tensor]:
        """Plain attention (used where the sequence is too short for the variant to save anything):
        out (B, nh, T, hd) and the [CLS] + text rows of the probabilities."""
        probs = (q @ k.transpose(-2, -1) * (self.head_dim ** -0.5) + mask).softmax(dim=-1)  # (B, nh, T, T)
        return self.drop(probs) @ v, _head(probs, self.num_global)

    def _finish(self, out: torch.Tensor) -> torch.Tensor:
        B, _, T, _ = out.shape
        return self.proj(out.transpose(1, 2).reshape(B, T, self.num_heads * self.head_dim))


class LowRankAttention(_SplitAttention):
    """Linformer-style attention with a fixed projection: keys and values compressed along the
    sequence to [CLS] + text (kept exact) + at most ``rank`` visual landmarks.

    Every query (all T tokens) attends to the 1 + L [CLS] and text keys, unchanged and masked as in
    ``full``, and to m <= rank landmarks: the n visual tokens, in kept order (raster order when all
    are kept, descending prefilter score otherwise), cut into m = ceil(n / s) consecutive segments of
    s = ceil(n / rank) tokens, each landmark's key and value the mean of its segment's real tokens
    (masked tokens and the padding to m * s are excluded), and its score biased by log(real tokens
    in the segment), so that a landmark weighs as much as the tokens it stands for (exact when the
    segment's keys are equal). Cost: T x (1 + L + m) scores instead of T x T, linear in the number
    of visual tokens. With n <= rank every landmark would be one token: plain attention.

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
        B, T, _ = x.shape
        G, nh, hd = self.num_global, self.num_heads, self.head_dim
        q, k, v = self._qkv(x)
        n = T - G
        if n <= self.rank:  # static shape: every landmark would be a single token
            out, probs = self._dense(q, k, v, mask)
            return self._finish(out), probs
        s = -(-n // self.rank)  # tokens per segment
        m = -(-n // s)          # landmarks (<= rank)
        pad = m * s - n
        keep = (mask[..., G:] > MASK_VALUE / 2).to(x.dtype)  # (B, 1, 1, n): 1 = a real visual token
        w = _pad(keep, -1, pad).reshape(B, 1, m * s, 1)    # pooling weights, padding excluded
        count = w.reshape(B, 1, m, s).sum(-1)                 # (B, 1, m) real tokens per landmark
        denom = count.clamp(min=1.0).unsqueeze(-1)            # (B, 1, m, 1)

        def pool(t: torch.Tensor) -> torch.Tensor:  # (B, nh, n, hd) -> (B, nh, m, hd): segment means
            t = _pad(t, -2, pad) * w
            return t.reshape(B, nh * m, s, hd).sum(2).reshape(B, nh, m, hd) / denom

        keys = torch.cat([k[:, :, :G], pool(k[:, :, G:])], dim=2)    # (B, nh, G + m, hd)
        values = torch.cat([v[:, :, :G], pool(v[:, :, G:])], dim=2)
        bias = torch.where(count > 0, count.clamp(min=1.0).log(), torch.full_like(count, MASK_VALUE))
        key_mask = torch.cat([mask[..., :G], bias.unsqueeze(2)], dim=-1)  # (B, 1, 1, G + m)
        p = (q @ keys.transpose(-2, -1) * (hd ** -0.5) + key_mask).softmax(dim=-1)  # (B, nh, T, G + m)
        out = self.drop(p) @ values  # (B, nh, T, hd)
        # [CLS] + text rows over the original keys: a landmark's probability shared by its real tokens.
        rows = p[:, :, :G]
        share = (rows[..., G:] / denom.reshape(B, 1, 1, m)).reshape(B, nh * G, m, 1)
        spread = share.expand(B, nh * G, m, s).reshape(B, nh, G, m * s)
        spread = (spread if pad == 0 else spread[..., :n]) * keep
        return self._finish(out), torch.cat([rows[..., :G], spread], dim=-1)


class CrossModalAttention(_SplitAttention):
    """Sparse cross-modal attention: [CLS] and text attend to everything; each visual token attends
    to [CLS], the text and a local window of visual tokens.

    The window is block-local in kept order (BigBird-style blocks): the n visual tokens are cut into
    blocks of ``window`` tokens, and a block's queries attend to their own block and the blocks on
    either side (3 x window keys) plus the 1 + L [CLS] and text keys. Cost: (1 + L) x T scores for
    the global rows + n x (1 + L + 3 window) for the visual ones, against T x T; the blocks are
    computed as such (pad, slice, reshape, matmul), never as a mask over a T x T matrix. Any two
    visual tokens are two hops apart through [CLS] and the text, which see the whole image.

    Why a window in kept order rather than a w x w neighbourhood on the patch grid: with every token
    kept (the training and full-quality path) kept order is raster order, so the window is the
    token's row neighbours and the neighbouring rows' nearest tokens; after the prefilter the kept
    tokens are scattered over the grid and their positions are data (``kept_index``), so a grid
    neighbourhood would need data-dependent gathers, while kept order is then descending prefilter
    score, and a window groups tokens of similar relevance (object tokens with object tokens).
    Block windows need only constant slices, so all three exporters take them as they are.
    Where the windows would save nothing (n <= 2 x window, when every window holds the whole image,
    or when the padding to whole blocks costs more than the saving: e.g. 18 visual tokens after 24
    text tokens) the layer is plain attention; which path a layer takes depends only on the static
    shapes, so each exported keep ratio traces one of them.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0, num_text: int = 24,
                 window: int = 8) -> None:
        super().__init__(dim, num_heads, dropout, num_text)
        self.window = window

    @classmethod
    def from_config(cls, cfg) -> "CrossModalAttention":
        return cls(cfg.dim, cfg.num_heads, cfg.dropout, cfg.max_text_len, cfg.attention_window)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, T, D); mask: (B, 1, 1, T) additive -> out (B, T, D), probs (B, nh, 1 + L, T)."""
        B, T, _ = x.shape
        G, nh, hd, b = self.num_global, self.num_heads, self.head_dim, self.window
        scale = hd ** -0.5
        q, k, v = self._qkv(x)
        n = T - G
        nb = -(-n // b)  # blocks
        pad = nb * b - n
        if n <= 2 * b or nb * b * (G + 3 * b) >= n * T:  # static shapes: the windows would not save anything
            out, probs = self._dense(q, k, v, mask)
            return self._finish(out), probs
        # [CLS] + text queries: full rows.
        probs = (q[:, :, :G] @ k.transpose(-2, -1) * scale + mask).softmax(dim=-1)  # (B, nh, G, T)
        out_global = self.drop(probs) @ v  # (B, nh, G, hd)
        # Visual queries, block by block.
        qv = _pad(q[:, :, G:], -2, pad)                    # (B, nh, nb * b, hd)
        kp = _pad(k[:, :, G:], -2, b + pad, b)             # (B, nh, (nb + 2) * b, hd): a block either side
        vp = _pad(v[:, :, G:], -2, b + pad, b)
        mp = _pad(mask[..., G:], -1, b + pad, b, MASK_VALUE)  # (B, 1, 1, (nb + 2) * b)

        def windows(t: torch.Tensor, lead: int) -> torch.Tensor:  # block i sees padded blocks i, i+1, i+2
            return torch.cat([t[:, :, j * b: (j + nb) * b].reshape(B, lead * nb, b, t.shape[-1])
                              for j in range(3)], dim=2)

        k_win, v_win = windows(kp, nh), windows(vp, nh)    # (B, nh * nb, 3b, hd)
        m_win = windows(mp.reshape(B, 1, (nb + 2) * b, 1), 1).reshape(B, nb, 1, 3 * b).repeat(1, nh, 1, 1)
        local = qv.reshape(B, nh * nb, b, hd) @ k_win.transpose(-2, -1) * scale + m_win  # (B, nh*nb, b, 3b)
        to_global = (qv @ k[:, :, :G].transpose(-2, -1) * scale + mask[..., :G])       # (B, nh, nb*b, G)
        p = self.drop(torch.cat([to_global.reshape(B, nh * nb, b, G), local], dim=-1).softmax(dim=-1))
        out_visual = _head(p[..., :G].reshape(B, nh, nb * b, G) @ v[:, :, :G]
                           + (p[..., G:] @ v_win).reshape(B, nh, nb * b, hd), n)  # (B, nh, n, hd)
        return self._finish(torch.cat([out_global, out_visual], dim=2)), probs


ATTENTION: dict[str, type[nn.Module]] = {"full": FullAttention, "lowrank": LowRankAttention,
                                         "crossmodal": CrossModalAttention}


def build_attention(cfg) -> nn.Module:
    """The attention module that ModelConfig `cfg` names."""
    return ATTENTION[cfg.attention].from_config(cfg)

"""The captioning model: a visual encoder run once per image, and a causal decoder with an exit
after each layer, run once per generated word.

Encoder-decoder, not a prefix-LM over the single stream: the image is encoded once and each decoder
layer's cross-attention keys and values are computed from it once per caption, so a generated word
costs only the decoder's layers over one new position, and a word that exits early skips the rest
of the decoder without touching the image tokens again. (A prefix-LM would carry the visual tokens
through every layer's self-attention cache and its early exits would cut less work per word.)

Every decoder step uses a static key/value cache of ``max_len`` positions written in place with a
one-hot mask, so that one traced step serves every position with no dynamic shape (ExecuTorch and
Core ML need static shapes). When a word exits after layer e, the later layers still need keys and
values at its position for the words that follow: ``fill`` computes them from the exiting layer's
state (CALM's copy-forward; ``mmedge.caption.decode`` measures it against recomputing the layers).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from mmedge.caption.config import CaptionConfig
from mmedge.models.attention import MASK_VALUE, FullAttention
from mmedge.models.exit_stages import ExitStages
from mmedge.models.model import MLP, ConvStem, VisualPrefilter, sincos_2d


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, T, D) -> (B, H, T, D / H)."""
    B, T, D = x.shape
    return x.reshape(B, T, heads, D // heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, T, hd) -> (B, T, H * hd)."""
    B, H, T, hd = x.shape
    return x.transpose(1, 2).reshape(B, T, H * hd)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """q (B, H, Q, hd), k/v (B, H, K, hd), additive mask broadcastable to (B, H, Q, K) -> out, probs."""
    scores = q @ k.transpose(-2, -1) * (q.shape[-1] ** -0.5)  # (B, H, Q, K)
    if mask is not None:
        scores = scores + mask
    probs = scores.softmax(dim=-1)
    return probs @ v, probs


class EncoderLayer(nn.Module):
    """Pre-norm transformer layer over the visual tokens (no mask: every token is real)."""

    def __init__(self, cfg: CaptionConfig) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(cfg.dim), nn.LayerNorm(cfg.dim)
        self.attn = FullAttention(cfg.dim, cfg.num_heads, cfg.dropout)
        self.mlp = MLP(cfg.dim, int(cfg.dim * cfg.mlp_ratio), cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        zero = torch.zeros(1, 1, 1, x.shape[1], dtype=x.dtype)  # (1, 1, 1, N): nothing masked
        x = x + self.attn(self.norm1(x), zero)[0]
        return x + self.mlp(self.norm2(x))


class DecoderLayer(nn.Module):
    """Pre-norm causal self-attention, cross-attention to the encoded image, MLP."""

    def __init__(self, cfg: CaptionConfig) -> None:
        super().__init__()
        D, self.heads = cfg.dim, cfg.num_heads
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(D), nn.LayerNorm(D), nn.LayerNorm(D)
        self.qkv, self.proj = nn.Linear(D, 3 * D), nn.Linear(D, D)
        self.cross_q, self.cross_kv, self.cross_proj = nn.Linear(D, D), nn.Linear(D, 2 * D), nn.Linear(D, D)
        self.mlp = MLP(D, int(D * cfg.mlp_ratio), cfg.dropout)

    def self_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, T, D) -> q, k, v each (B, H, T, hd)."""
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        return split_heads(q, self.heads), split_heads(k, self.heads), split_heads(v, self.heads)

    def self_kv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Only the keys and values of x (what a skipped layer leaves in the cache): (B, H, T, hd) x2."""
        D = x.shape[-1]
        kv = F.linear(self.norm1(x), self.qkv.weight[D:], self.qkv.bias[D:])  # (B, T, 2D)
        k, v = kv.chunk(2, dim=-1)
        return split_heads(k, self.heads), split_heads(v, self.heads)

    def memory_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoded image (B, N, D) -> cross-attention keys, values (B, H, N, hd) x2 (once per image)."""
        k, v = self.cross_kv(memory).chunk(2, dim=-1)
        return split_heads(k, self.heads), split_heads(v, self.heads)

    def _rest(self, x: torch.Tensor, attn: torch.Tensor, cross_k: torch.Tensor, cross_v: torch.Tensor):
        x = x + self.proj(merge_heads(attn))
        q = split_heads(self.cross_q(self.norm2(x)), self.heads)
        out, cross_probs = attend(q, cross_k, cross_v, None)
        x = x + self.cross_proj(merge_heads(out))
        return x + self.mlp(self.norm3(x)), cross_probs

    def forward(self, x: torch.Tensor, causal: torch.Tensor, cross_k: torch.Tensor, cross_v: torch.Tensor):
        """Teacher forcing over a whole caption: x (B, T, D), causal (1, 1, T, T) additive."""
        q, k, v = self.self_qkv(x)
        attn, _ = attend(q, k, v, causal)
        return self._rest(x, attn, cross_k, cross_v)

    def step(self, x: torch.Tensor, write: torch.Tensor, visible: torch.Tensor, cache_k: torch.Tensor,
             cache_v: torch.Tensor, cross_k: torch.Tensor, cross_v: torch.Tensor):
        """One new position: x (B, 1, D); write (1, 1, P, 1) one-hot of the position; visible (1, 1, 1, P)
        additive (0 up to the position); caches (B, H, P, hd). Returns x, cache_k, cache_v."""
        q, k, v = self.self_qkv(x)  # (B, H, 1, hd) each
        cache_k = cache_k * (1 - write) + k * write  # (B, H, P, hd): k written at the position
        cache_v = cache_v * (1 - write) + v * write
        attn, _ = attend(q, cache_k, cache_v, visible)
        x, _ = self._rest(x, attn, cross_k, cross_v)
        return x, cache_k, cache_v

    def fill(self, x: torch.Tensor, write: torch.Tensor, cache_k: torch.Tensor, cache_v: torch.Tensor):
        """Write the keys and values of x (B, 1, D) at the position without running the layer."""
        k, v = self.self_kv(x)
        return cache_k * (1 - write) + k * write, cache_v * (1 - write) + v * write


class WordExit(nn.Module):
    """Next-word logits through the shared vocabulary head, and a learned confidence that the
    argmax is the word the full model would be trained to emit."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.confidence = nn.Sequential(nn.Linear(dim + 2, 64), nn.GELU(), nn.Linear(64, 1))

    def forward(self, hidden: torch.Tensor, lm_head: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
        """hidden (B, T, D) -> logits (B, T, V), confidence (B, T)."""
        h = self.norm(hidden)
        logits = lm_head(h)
        top2 = logits.softmax(dim=-1).topk(2, dim=-1).values  # (B, T, 2)
        feats = torch.cat([h, top2], dim=-1).detach()
        return logits, torch.sigmoid(self.confidence(feats)).squeeze(-1)


@dataclass
class CaptionOutput:
    logits: list[torch.Tensor]        # per exit, (B, T, V)
    confidence: list[torch.Tensor]    # per exit, (B, T)
    prefilter_scores: torch.Tensor    # (B, N)
    cross_attention: list[torch.Tensor]  # per decoder layer, (B, H, T, k)
    kept_index: torch.Tensor | None   # (B, k) or None when every token is kept


class CaptionModel(ExitStages, nn.Module):
    def __init__(self, cfg: CaptionConfig) -> None:
        super().__init__()
        self.config = cfg
        D = cfg.dim
        self.patch_embed = ConvStem(D, cfg.patch_size)
        self.image_pos = nn.Parameter(sincos_2d(cfg.image_size // cfg.patch_size, D).unsqueeze(0))
        self.query = nn.Parameter(torch.zeros(1, 1, D))  # the prefilter's "text": what a caption looks for
        self.prefilter = VisualPrefilter(D, cfg.prefilter_dim)
        self.encoder = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.encoder_depth))
        self.encoder_norm = nn.LayerNorm(D)
        self.token_embed = nn.Embedding(cfg.vocab_size, D)
        self.word_pos = nn.Parameter(torch.zeros(1, cfg.max_len, D))
        self.decoder = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.decoder_depth))
        self.exits = nn.ModuleList(WordExit(D) for _ in cfg.exits)
        self.lm_head = nn.Linear(D, cfg.vocab_size)
        for p in (self.query, self.word_pos, self.token_embed.weight):
            nn.init.trunc_normal_(p, std=0.02)

    # ------------------------------------------------------------------ structure
    def layers_after(self, stage: int) -> range:
        return range(self.config.exits[stage] + 1, self.config.decoder_depth)

    # ------------------------------------------------------------------ image side (once per image)
    def encode(self, pixels: torch.Tensor, keep_ratio: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """pixels (B, 3, S, S) -> memory (B, k, D), prefilter scores (B, N), kept index (B, k) or None."""
        cfg = self.config
        visual = self.patch_embed(pixels).flatten(2).transpose(1, 2) + self.image_pos  # (B, N, D)
        B = visual.shape[0]
        query = self.query.repeat(B, 1, 1)  # (B, 1, D) (a copy: a view of a parameter trips FlopCounterMode)
        scores = self.prefilter(visual, query, torch.ones(B, 1, dtype=visual.dtype))  # (B, N)
        k, kept = cfg.kept_tokens(keep_ratio), None
        if k < cfg.num_patches:
            kept = scores.topk(k, dim=1).indices  # (B, k)
            visual = torch.gather(visual, 1, kept.unsqueeze(-1).expand(-1, -1, visual.shape[-1]))  # (B, k, D)
        for layer in self.encoder:
            visual = layer(visual)
        return self.encoder_norm(visual), scores, kept

    def cross_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every decoder layer's cross-attention keys and values: (Ld, B, H, k, hd) x2."""
        pairs = [layer.memory_kv(memory) for layer in self.decoder]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])

    # ------------------------------------------------------------------ training forward
    def forward(self, pixels: torch.Tensor, tokens: torch.Tensor, keep_ratio: float = 1.0) -> CaptionOutput:
        """Teacher forcing: tokens (B, T) start with [BOS]; every exit predicts the next word at every position."""
        memory, scores, kept = self.encode(pixels, keep_ratio)
        cross_k, cross_v = self.cross_kv(memory)
        T = tokens.shape[1]
        x = self.token_embed(tokens) + self.word_pos[:, :T]  # (B, T, D)
        causal = torch.full((T, T), MASK_VALUE).triu(1)[None, None]  # (1, 1, T, T)
        logits, confs, cross = [], [], []
        for stage, head in enumerate(self.exits):
            for i in self.stage_layers(stage):
                x, probs = self.decoder[i](x, causal, cross_k[i], cross_v[i])
                cross.append(probs)
            lg, cf = head(x, self.lm_head)
            logits.append(lg)
            confs.append(cf)
        return CaptionOutput(logits, confs, scores, cross, kept)

    # ------------------------------------------------------------------ one decoder step (what export traces)
    def position_masks(self, position: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """position: int64 tensor of one element -> write one-hot (1, 1, P, 1), visible (1, 1, 1, P) additive."""
        slots = torch.arange(self.config.max_len, dtype=torch.int64)  # (P,)
        pos = position.reshape(1)
        write = (slots == pos).to(torch.float32).reshape(1, 1, -1, 1)
        visible = ((slots > pos).to(torch.float32) * MASK_VALUE).reshape(1, 1, 1, -1)
        return write, visible

    def embed_word(self, token: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """token (B,) int64, position (1,) int64 -> (B, 1, D)."""
        pos = torch.index_select(self.word_pos[0], 0, position.reshape(1))  # (1, D)
        return (self.token_embed(token) + pos).unsqueeze(1)

    def step_stage(self, stage: int, x: torch.Tensor, position: torch.Tensor, cache_k: torch.Tensor,
                   cache_v: torch.Tensor, cross_k: torch.Tensor, cross_v: torch.Tensor):
        """Stage `stage` for one new word. x (B, 1, D); caches (n, B, H, P, hd) and cross (n, B, H, k, hd)
        for this stage's n layers. -> x, logits (B, V), confidence (B,), cache_k, cache_v."""
        write, visible = self.position_masks(position)
        ks, vs = [], []
        for j, i in enumerate(self.stage_layers(stage)):
            x, k, v = self.decoder[i].step(x, write, visible, cache_k[j], cache_v[j], cross_k[j], cross_v[j])
            ks.append(k)
            vs.append(v)
        logits, confidence = self.exits[stage](x, self.lm_head)
        return x, logits[:, 0], confidence[:, 0], torch.stack(ks), torch.stack(vs)

    def fill_after(self, stage: int, x: torch.Tensor, position: torch.Tensor, cache_k: torch.Tensor,
                   cache_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Copy-forward after exiting at `stage`: the keys and values of every later layer at the
        position, computed from the exiting state x (B, 1, D). caches (m, B, H, P, hd), m = layers after."""
        write, _ = self.position_masks(position)
        ks, vs = [], []
        for j, i in enumerate(self.layers_after(stage)):
            k, v = self.decoder[i].fill(x, write, cache_k[j], cache_v[j])
            ks.append(k)
            vs.append(v)
        return torch.stack(ks), torch.stack(vs)

    def empty_cache(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Zeroed caches for every decoder layer: (Ld, B, H, P, hd) x2."""
        cfg = self.config
        shape = (cfg.decoder_depth, batch, cfg.num_heads, cfg.max_len, cfg.head_dim)
        return torch.zeros(shape), torch.zeros(shape)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

"""The adaptive single-stream vision-language transformer (ViLT-like).

Sequence: [CLS] + text tokens + visual tokens (patch embeddings kept by the prefilter).
Each exit layer ends a *stage*; a stage returns its hidden state and its exit's logits and
confidence. ``forward`` is literally the stages run in order, so the per-stage forwards that
export traces give the same numbers as training. No Python branch depends on tensor values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from mmedge.models.attention import MASK_VALUE, build_attention  # noqa: F401 (MASK_VALUE re-exported)
from mmedge.models.config import ModelConfig


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))


def sincos_2d(side: int, dim: int, linear: bool = False) -> torch.Tensor:
    """(side * side, dim) fixed 2-D sine-cosine position code (MAE style), row-major patches.

    linear=True replaces the two lowest-frequency sine channels (nearly constant over the grid)
    with x and y ramps from -1 to 1, so that "further left" is a linear feature."""
    quarter = dim // 4
    omega = 1.0 / (10000 ** (torch.arange(quarter, dtype=torch.float32) / quarter))  # (D/4,)
    ys, xs = torch.meshgrid(torch.arange(side, dtype=torch.float32), torch.arange(side, dtype=torch.float32),
                            indexing="ij")
    out_x = xs.reshape(-1, 1) * omega  # (N, D/4)
    out_y = ys.reshape(-1, 1) * omega
    code = torch.cat([out_x.sin(), out_x.cos(), out_y.sin(), out_y.cos()], dim=1)  # (N, 4 * D/4)
    if linear:
        code[:, quarter - 1] = xs.reshape(-1) / max(1, side - 1) * 2 - 1
        code[:, 3 * quarter - 1] = ys.reshape(-1) / max(1, side - 1) * 2 - 1
    return torch.nn.functional.pad(code, (0, dim - code.shape[1]))


class ConvStem(nn.Module):
    """log2(patch) stride-2 3x3 convolutions (Xiao et al. 2021, "Early convolutions help
    transformers see better"): the same downsampling as patches, with a local inductive bias."""

    def __init__(self, dim: int, patch_size: int) -> None:
        super().__init__()
        steps = patch_size.bit_length() - 1
        if patch_size < 2 or 2 ** steps != patch_size:
            raise ValueError("the conv stem needs a power-of-two patch_size")
        widths = [3] + [max(8, dim >> (steps - i)) for i in range(1, steps)] + [dim]
        layers: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(widths, widths[1:])):
            layers.append(nn.Conv2d(cin, cout, 3, stride=2, padding=1))
            if i < steps - 1:
                layers.append(nn.GELU())
        self.layers = nn.Sequential(*layers)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.layers(pixels)  # (B, D, S/patch, S/patch)


class Block(nn.Module):
    """Pre-norm transformer layer with a pluggable attention module."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(cfg.dim), nn.LayerNorm(cfg.dim)
        self.attn = build_attention(cfg)
        self.mlp = MLP(cfg.dim, int(cfg.dim * cfg.mlp_ratio), cfg.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        attn_out, probs = self.attn(self.norm1(x), mask)
        x = x + attn_out
        return x + self.mlp(self.norm2(x)), probs


class ExitHead(nn.Module):
    """Task classifier on [CLS] plus a learned confidence that this exit's answer is right.

    The confidence head sees the (detached) [CLS] features and the top-2 class probabilities;
    it is trained with binary cross-entropy against "the argmax equals the label".
    """

    def __init__(self, dim: int, num_labels: int, pool: str = "cls", num_text: int = 0) -> None:
        super().__init__()
        self.pool, self.num_text = pool, num_text
        self.norm = nn.LayerNorm(dim)
        self.classifier = nn.Linear(dim, num_labels)
        self.confidence = nn.Sequential(nn.Linear(dim + 2, 64), nn.GELU(), nn.Linear(64, 1))

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """hidden (B, T, D), mask (B, T) -> logits (B, L), confidence (B,)."""
        if self.pool == "cls":
            h = self.norm(hidden[:, 0])  # (B, D): the [CLS] token
        else:  # mean over [CLS] and the real text tokens
            if hidden.shape[1] > 1 + self.num_text:  # a static shape: a text-only sequence needs no slice
                hidden, mask = hidden[:, : 1 + self.num_text], mask[:, : 1 + self.num_text]  # (Core ML: no alias op)
            w = mask.unsqueeze(-1)  # (B, 1 + L, 1)
            h = self.norm((hidden * w).sum(1) / w.sum(1))  # (B, D)
        logits = self.classifier(h)  # (B, L)
        top2 = logits.softmax(dim=-1).topk(2, dim=-1).values  # (B, 2)
        feats = torch.cat([h, top2], dim=-1).detach()  # (B, D + 2)
        return logits, torch.sigmoid(self.confidence(feats)).squeeze(-1)  # (B, L), (B,)


def pool_text(text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the real text tokens: (B, L, D), (B, L) -> (B, D)."""
    m = text_mask.to(text.dtype).unsqueeze(-1)  # (B, L, 1)
    return (text * m).sum(1) / m.sum(1).clamp(min=1.0)


class VisualPrefilter(nn.Module):
    """Scores each visual token against the pooled text; cost O(N * prefilter_dim)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.visual = nn.Linear(dim, hidden)
        self.text = nn.Linear(dim, hidden)
        self.score = nn.Linear(hidden, 1)

    def forward(self, visual: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """visual (B, N, D), text (B, L, D), text_mask (B, L) -> scores (B, N)."""
        h = F.gelu(self.visual(visual) + self.text(pool_text(text, text_mask)).unsqueeze(1))  # (B, N, H)
        return self.score(h).squeeze(-1)  # (B, N)


@dataclass
class ModelOutput:
    logits: list[torch.Tensor]        # per exit, (B, L)
    confidence: list[torch.Tensor]    # per exit, (B,)
    kept_index: torch.Tensor | None   # (B, k) visual tokens kept, None when all are kept
    prefilter_scores: torch.Tensor | None  # (B, N)
    attention: list[torch.Tensor] = field(default_factory=list)  # per layer (B, nh, Q, T) if asked; Q = T or 1 + L
    hidden: list[torch.Tensor] = field(default_factory=list)     # per stage (B, T, D)


@dataclass
class Embedded:
    hidden: torch.Tensor              # (B, T, D)
    mask: torch.Tensor                # (B, T) float, 1 = real token
    kept_index: torch.Tensor | None
    prefilter_scores: torch.Tensor | None


class AdaptiveVLModel(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        D = cfg.dim
        if cfg.patch_embed == "conv_stem":
            self.patch_embed = ConvStem(D, cfg.patch_size)
        else:
            self.patch_embed = nn.Conv2d(3, D, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.token_embed = nn.Embedding(cfg.vocab_size, D)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.text_pos = nn.Parameter(torch.zeros(1, cfg.max_text_len, D))
        self.image_pos = nn.Parameter(torch.zeros(1, cfg.num_patches, D))
        self.type_embed = nn.Parameter(torch.zeros(2, D))  # 0 = text, 1 = image
        self.prefilter = VisualPrefilter(D, cfg.prefilter_dim)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.exit_heads = nn.ModuleList(ExitHead(D, cfg.num_labels, cfg.exit_pool, cfg.max_text_len)
                                        for _ in cfg.exits)
        # Optional FiLM: the pooled text scales and shifts every visual token (identity at init).
        self.text_film = nn.Linear(D, 2 * D) if cfg.text_film else None
        if self.text_film is not None:
            nn.init.zeros_(self.text_film.weight)
            nn.init.zeros_(self.text_film.bias)
        # Training-only: tags each visual token after stage 0 with the object under it.
        self.token_tagger = nn.Linear(D, cfg.token_classes) if cfg.token_classes else None
        # Training-only: predicts, from each text token, the column and row (and size) of the object it names.
        self.text_grounder = nn.Linear(D, 2 * cfg.ground_bins + cfg.ground_sizes) if cfg.ground_bins else None
        for p in (self.cls_token, self.text_pos, self.type_embed, self.token_embed.weight):
            nn.init.trunc_normal_(p, std=0.02)
        with torch.no_grad():  # learned, but starting from 2-D sin-cos so that layout is there from step 0
            code = sincos_2d(cfg.image_size // cfg.patch_size, D, linear=cfg.position_code == "sincos_linear")
            self.image_pos.copy_(code.unsqueeze(0))

    # ------------------------------------------------------------------ structure
    @property
    def num_stages(self) -> int:
        return len(self.config.exits)

    def stage_layers(self, stage: int) -> range:
        """The layer indices that stage `stage` runs."""
        exits = self.config.exits
        start = 0 if stage == 0 else exits[stage - 1] + 1
        return range(start, exits[stage] + 1)

    # ------------------------------------------------------------------ forwards
    def embed(self, pixels: torch.Tensor, input_ids: torch.Tensor, text_mask: torch.Tensor,
              keep_ratio: float = 1.0, score_all: bool = False, visual_transform=None) -> Embedded:
        """pixels (B, 3, S, S), input_ids/text_mask (B, L) -> the stage-0 input sequence.

        visual_transform (pretraining only) maps the patch embeddings (B, N, D) before positions
        are added, e.g. to mask or replace visual tokens."""
        cfg = self.config
        visual = self.patch_embed(pixels).flatten(2).transpose(1, 2)  # (B, N, D)
        if visual_transform is not None:
            visual = visual_transform(visual)
        visual = visual + self.image_pos + self.type_embed[1]
        text = self.token_embed(input_ids) + self.text_pos + self.type_embed[0]  # (B, L, D)
        if self.text_film is not None:
            scale, shift = self.text_film(pool_text(text, text_mask)).unsqueeze(1).chunk(2, dim=-1)  # (B, 1, D) x2
            visual = visual * (1 + scale) + shift
        k = cfg.kept_tokens(keep_ratio)
        scores = kept = None
        if k < cfg.num_patches or score_all:
            scores = self.prefilter(visual, text, text_mask)  # (B, N)
        if k < cfg.num_patches:
            kept = scores.topk(k, dim=1).indices  # (B, k)
            visual = torch.gather(visual, 1, kept.unsqueeze(-1).expand(-1, -1, visual.shape[-1]))  # (B, k, D)
        B = pixels.shape[0]
        hidden = torch.cat([self.cls_token.expand(B, -1, -1), text, visual], dim=1)  # (B, 1 + L + k, D)
        ones = torch.ones(B, 1, dtype=hidden.dtype, device=hidden.device)
        mask = torch.cat([ones, text_mask.to(hidden.dtype), ones.expand(B, visual.shape[1])], dim=1)
        return Embedded(hidden, mask, kept, scores)

    def forward_stage(self, stage: int, hidden: torch.Tensor, mask: torch.Tensor,
                      attention: list[torch.Tensor] | None = None):
        """Run stage `stage` on (B, T, D) hidden and (B, T) mask -> hidden, logits, confidence."""
        additive = ((1.0 - mask) * MASK_VALUE)[:, None, None, :]  # (B, 1, 1, T)
        for i in self.stage_layers(stage):
            hidden, probs = self.blocks[i](hidden, additive)
            if attention is not None:
                attention.append(probs)
        logits, confidence = self.exit_heads[stage](hidden, mask)
        return hidden, logits, confidence

    def forward(self, pixels: torch.Tensor, input_ids: torch.Tensor, text_mask: torch.Tensor,
                keep_ratio: float = 1.0, return_attention: bool = False,
                score_all: bool = False) -> ModelOutput:
        """The full-depth forward: every stage in order, every exit's outputs."""
        emb = self.embed(pixels, input_ids, text_mask, keep_ratio, score_all)
        attention: list[torch.Tensor] | None = [] if return_attention else None
        hidden, logits, confs, states = emb.hidden, [], [], []
        for stage in range(self.num_stages):
            hidden, lg, cf = self.forward_stage(stage, hidden, emb.mask, attention)
            logits.append(lg)
            confs.append(cf)
            states.append(hidden)
        return ModelOutput(logits, confs, emb.kept_index, emb.prefilter_scores, attention or [], states)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

"""A pretrained single-stream encoder re-expressed as an mmedge adaptive model: stages, exits, prefilter.

The pretrained weights stay as they are (the family's ``Backbone`` holds the ``transformers`` model
itself); what is added is small and trained by self-distillation (mmedge.adapt.distill):

- an exit head after each chosen layer, a copy of the model's own head (for ViLT: final LayerNorm,
  pooler, classifier) that then learns to answer from that layer. Each linear map of the copy larger
  than rank ``exit_rank`` allows is stored as two (a truncated SVD of the original): a head read at
  every exit costs its weights' memory traffic, and a real-size VQA head (768 -> 1536 -> 3,129) is
  26 MB. The exit after the last layer is the model's own head, unchanged, so the last exit at keep
  ratio 1.0 *is* the pretrained model;
- a learned confidence per exit (that exit's answer agrees with the full model's);
- a text-conditioned visual-token prefilter after a chosen layer: it scores the visual tokens
  against the pooled text and keeps the top k, so that every later layer runs on fewer tokens.

Sequence layout (a family's embeddings): ``G`` global tokens (the text, plus any image [CLS]) then
``N`` visual tokens, ``T = G + k`` after the prefilter kept k of them; the first ``L`` global tokens
are the text (mask 1 on real tokens). A model that reads several images (NLVR2) runs one sequence
per image: every tensor inside is folded to ``B' = B * images`` rows, image-major within a sample.

Stages, as in mmedge.models.model: stage s runs the layers after exit s - 1 up to exit s and
returns (hidden, logits, confidence). The prefilter must sit in stage 0 (after layer -1, i.e. on
the embeddings, up to the first exit layer): stage 0 then emits the kept token indices and every
later stage of one keep ratio runs at one sequence length, the contract the exporter builds on.
No Python branch depends on tensor values, and all shapes are fixed by the keep ratio.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import nn

from mmedge.errors import ConfigError
from mmedge.models.attention import MASK_VALUE
from mmedge.models.exit_stages import ExitStages
from mmedge.models.model import ModelOutput, VisualPrefilter

ADAPT_CONFIG_VERSION = 1
TASKS = ("vqa", "nlvr2", "retrieval")


@dataclass
class AdaptConfig:
    """What was adapted and how; saved in the adapted model folder's config.json (``adapt``)."""

    family: str = "vilt"                 # encoder family (mmedge.adapt.families)
    source_class: str = ""               # the transformers class, e.g. ViltForQuestionAnswering
    task: str = "vqa"                    # vqa | nlvr2 | retrieval
    labels: list[str] = field(default_factory=list)  # output names, index = logit (retrieval: ["match"])
    image_size: int = 384                # exported square input side, px (fixed: no data-dependent shapes)
    patch_size: int = 32                 # px per visual token side (the source's)
    num_images: int = 1                  # images per example (2 for NLVR2)
    max_text_len: int = 40               # text tokens incl. [CLS] and [SEP] (fixed)
    dim: int = 768                       # hidden width (the source's)
    depth: int = 12                      # encoder layers (the source's)
    exit_layers: list[int] | None = None  # 0-based layers followed by an exit; None = every layer
    prefilter_after: int = 0             # the prefilter scores the output of this layer (-1: the embeddings)
    prefilter_dim: int = 64              # width of the prefilter's scorer
    confidence_dim: int = 64             # hidden width of each confidence head
    exit_rank: int | None = 128          # exit heads' linear maps factorised to this rank where smaller; None: full copies
    keep_ratios: list[float] = field(default_factory=lambda: [1.0, 0.5, 0.25])  # visual-token keep ratios
    version: int = ADAPT_CONFIG_VERSION

    def __post_init__(self) -> None:
        problems = self.validate()
        if problems:
            raise ConfigError(problems, "adapt config")

    @property
    def exits(self) -> list[int]:
        return list(range(self.depth)) if self.exit_layers is None else sorted(self.exit_layers)

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    def kept_tokens(self, keep_ratio: float) -> int:
        """Visual tokens kept (per image) at `keep_ratio`, at least one."""
        return max(1, round(keep_ratio * self.num_patches))

    def validate(self) -> list[str]:
        p = []
        if self.task not in TASKS:
            p.append(f"task {self.task!r} must be one of {', '.join(TASKS)}")
        if not self.labels:
            p.append("labels must name the outputs")
        if self.patch_size < 1 or self.image_size < self.patch_size or self.image_size % self.patch_size:
            p.append(f"image_size {self.image_size} must be a positive multiple of patch_size {self.patch_size}")
        if self.max_text_len < 2:
            p.append(f"max_text_len {self.max_text_len} must leave room for [CLS] and [SEP]")
        if self.depth < 1:
            p.append(f"depth {self.depth} must be at least 1")
        exits = self.exits
        if self.exit_layers is not None:
            bad = [i for i in self.exit_layers if not 0 <= i < self.depth]
            if bad:
                p.append(f"exit_layers {bad} outside 0..{self.depth - 1}")
            elif self.depth - 1 not in self.exit_layers:
                p.append(f"exit_layers must include the last layer {self.depth - 1} (the model's own head)")
            if len(set(self.exit_layers)) != len(self.exit_layers):
                p.append(f"exit_layers {self.exit_layers} repeat a layer")
        if exits and not -1 <= self.prefilter_after <= exits[0]:
            p.append(f"prefilter_after {self.prefilter_after} (after layer {self.prefilter_after + 1}, counting "
                     f"from 1, 0 = the embeddings) must be in -1..{exits[0]}, no later than the first exit (layer "
                     f"{exits[0] + 1}): the prefilter belongs to stage 0, which emits the kept tokens, so that every "
                     "later stage of a keep ratio runs at one sequence length; move it earlier or start the exits later")
        if not self.keep_ratios or any(not 0 < r <= 1 for r in self.keep_ratios):
            p.append(f"keep_ratios {self.keep_ratios} must be in (0, 1]")
        if self.prefilter_dim < 1 or self.confidence_dim < 1:
            p.append("prefilter_dim and confidence_dim must be positive")
        if self.exit_rank is not None and self.exit_rank < 1:
            p.append(f"exit_rank {self.exit_rank} must be positive (or null: full copies of the head)")
        return p

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = "adapt config") -> "AdaptConfig":
        from mmedge.models.config import from_dict

        # folders written before exit_rank existed hold full copies of the head
        return from_dict(cls, {"exit_rank": None, **data}, source)


# ---------------------------------------------------------------------------------------------- family side
class Backbone(nn.Module):
    """What an encoder family provides (mmedge.adapt.vilt is the reference). Attributes:

    num_layers, dim; num_text (L: text tokens, first in the sequence); num_global (G >= L: tokens
    never pruned); num_patches (N per image); num_images; feature_dim (what the head's classifier
    reads, e.g. the pooled [CLS]); num_outputs (logits).
    """

    num_layers: int
    dim: int
    num_text: int
    num_global: int
    num_patches: int
    num_images: int
    feature_dim: int
    num_outputs: int

    def embed(self, pixel_values: torch.Tensor, input_ids: torch.Tensor,
              text_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, [I,] 3, S, S), (B, L), (B, L) -> hidden (B', G + N, D), mask (B', G + N) float."""
        raise NotImplementedError

    def layer(self, index: int, hidden: torch.Tensor, additive_mask: torch.Tensor,
              key_weight: torch.Tensor | None = None, need_probs: bool = False):
        """Encoder layer `index`: hidden (B', T, D), additive mask (B', 1, 1, T) -> hidden, probs or None.
        key_weight (B', T): the prefilter's relaxed training, passed on to attention_probs."""
        raise NotImplementedError

    def head(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's own head on (B', T, D): logits (B, C), features (B, feature_dim)."""
        raise NotImplementedError

    def new_exit_head(self) -> nn.Module:
        """A trainable copy of the model's own head (forward as `head`)."""
        raise NotImplementedError

    def prefilter_norm(self, after_layer: int) -> nn.LayerNorm:
        """A LayerNorm for the hidden state after `after_layer` (a copy of the next layer's input norm)."""
        raise NotImplementedError


def keep_weights(scores: torch.Tensor, kept: torch.Tensor, temperature: float | None = None) -> torch.Tensor:
    """(B, N) keep weights of the top-k `kept` (B, k) of `scores`: the hard mask (1 kept, 0 dropped); with a
    temperature, relaxed for training (straight-through): its value the hard mask, its gradient that of a
    sigmoid around the k-th score. What attention_probs takes as key_weight."""
    hard = torch.zeros_like(scores).scatter(1, kept, 1.0)
    if temperature is None:
        return hard
    k = kept.shape[1]
    top = scores.detach().topk(k + 1, dim=1).values
    threshold = 0.5 * (top[:, k - 1] + top[:, k])  # (B,) between the k-th and (k+1)-th score
    soft = torch.sigmoid((scores - threshold.unsqueeze(1)) / temperature)
    return hard + soft - soft.detach()


def attention_probs(scores: torch.Tensor, additive_mask: torch.Tensor,
                    key_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax attention probabilities (B, nh, Q, T) of scaled scores (B, nh, Q, T) under an additive
    mask (B, 1, 1, T); a family's layer calls this so that every family prunes the same way.

    key_weight (B, T), the prefilter's relaxed training (AdaptedModel.prune): its value is the hard
    keep mask (1 kept, 0 dropped) and the dropped keys are masked out exactly, as if they had been
    removed; its gradient (straight-through) reaches the weights through the first-order effect
    of giving key j weight w_j, d p_i / d w_j = r_j (delta_ij - p_i) with r_j = exp(s_j - logsumexp
    over the kept keys), r_j capped at 1. Uncapped, r_j of a dropped key that dominates its row
    overflows (1 / the kept keys' underflowed mass); capped, the sign of the gradient is kept."""
    if key_weight is None:
        return (scores + additive_mask).softmax(dim=-1)
    hard = key_weight.detach().round()  # (1 + s) - s may miss 1.0 by an ulp
    logits = scores + additive_mask + ((1.0 - hard) * MASK_VALUE)[:, None, None, :]
    probs = logits.softmax(dim=-1)
    ratio = torch.exp((scores + additive_mask - logits.logsumexp(dim=-1, keepdim=True)).clamp(max=0.0)).detach()
    nudge = ratio * (key_weight - hard)[:, None, None, :]  # zero-valued; carries the gradient
    return probs + nudge - probs * nudge.sum(dim=-1, keepdim=True)


# ---------------------------------------------------------------------------------------------- added parts
def low_rank_linear(linear: nn.Linear, rank: int) -> nn.Sequential:
    """`linear` as Linear(in, rank) -> Linear(rank, out) from its truncated SVD (W ~ U_r S_r V_r^T)."""
    weight = linear.weight.detach().float()  # (out, in)
    u, s, vh = torch.linalg.svd(weight, full_matrices=False)
    root = s[:rank].sqrt()
    down = nn.Linear(linear.in_features, rank, bias=False)
    up = nn.Linear(rank, linear.out_features, bias=linear.bias is not None)
    with torch.no_grad():
        down.weight.copy_(root[:, None] * vh[:rank])  # (rank, in)
        up.weight.copy_(u[:, :rank] * root[None])     # (out, rank)
        if linear.bias is not None:
            up.bias.copy_(linear.bias)
    return nn.Sequential(down, up).to(linear.weight.dtype)


def factorise_linears(module: nn.Module, rank: int | None) -> nn.Module:
    """Replace (in place) every nn.Linear in `module` that a rank-`rank` pair stores in fewer
    parameters by that pair; rank None leaves the module as it is. Returns `module`."""
    if rank is None:
        return module
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear) and rank * (child.in_features + child.out_features) < \
                    child.in_features * child.out_features:
                setattr(parent, name, low_rank_linear(child, rank))
    return module


def as_classes(logits: torch.Tensor) -> torch.Tensor:
    """(B, C) logits as class logits: a single score s (retrieval) becomes the two classes [0, s]."""
    return torch.cat([torch.zeros_like(logits), logits], dim=-1) if logits.shape[-1] == 1 else logits


class ConfidenceHead(nn.Module):
    """Learned confidence that an exit's answer agrees with the full model's, from the exit's
    (detached) features and its top-2 class probabilities (as mmedge.models.model.ExitHead)."""

    def __init__(self, feature_dim: int, hidden: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(feature_dim + 2, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """features (B, F), logits (B, C) -> confidence (B,)."""
        top2 = as_classes(logits).softmax(dim=-1).topk(2, dim=-1).values  # (B, 2)
        x = torch.cat([features, top2], dim=-1).detach()  # (B, F + 2)
        return torch.sigmoid(self.mlp(x)).squeeze(-1)


class PrefilterNorm(nn.Module):
    """The prefilter's LayerNorm (the same parameters and function as ``nn.LayerNorm``), deliberately not
    an ``nn.LayerNorm``: mmedge.export.delegable rewrites those into XNNPACK operators, and a delegated
    norm ahead of the top-k puts the scorer and the layers after the gather into one XNNPACK partition
    with the top-k (not delegated) between them, a dependency cycle that stops the lowering. Left as
    ``aten.layer_norm`` it runs in ExecuTorch's portable kernels and cuts the partition there."""

    def __init__(self, norm: nn.LayerNorm) -> None:
        super().__init__()
        self.normalized_shape, self.eps = tuple(norm.normalized_shape), norm.eps
        self.weight, self.bias = norm.weight, norm.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)


class TextPrefilter(nn.Module):
    """Scores each visual token against the pooled text (mmedge's VisualPrefilter) after a LayerNorm
    initialised from the encoder's own (the residual stream of a pretrained model is not unit-scaled)."""

    def __init__(self, norm: nn.LayerNorm, hidden: int) -> None:
        super().__init__()
        self.norm = PrefilterNorm(norm)
        self.scorer = VisualPrefilter(norm.normalized_shape[0], hidden)

    def forward(self, visual: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """visual (B', N, D), text (B', L, D), text_mask (B', L) -> scores (B', N)."""
        return self.scorer(self.norm(visual), self.norm(text), text_mask)


@dataclass
class Pruned:
    """The sequence after the prefilter (or unchanged when every token is kept)."""

    hidden: torch.Tensor                 # (B', G + k, D), or (B', G + N, D) when relaxed
    mask: torch.Tensor                   # (B', T) float
    key_weight: torch.Tensor | None      # relaxed training only: (B', G + N)
    kept_index: torch.Tensor | None      # (B', k), None when all are kept
    scores: torch.Tensor | None          # (B', N)


class Adapter(ExitStages):
    """What every adapted model shares: the pretrained model under ``backbone``, the rest added."""

    def adapter_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """The added parameters (exits, confidences, prefilter): what self-distillation trains."""
        return [(n, p) for n, p in self.named_parameters() if not n.startswith("backbone.")]


class AdaptedModel(Adapter, nn.Module):
    """A family's backbone with exits, confidences and the prefilter (module docstring)."""

    is_adapted = True  # mmedge.export.stages.is_adapted: take the stages from mmedge.adapt.stages

    def __init__(self, backbone: Backbone, cfg: AdaptConfig) -> None:
        super().__init__()
        self.backbone, self.config = backbone, cfg
        problems = [f"{name} {getattr(cfg, name)} != the source's {value}" for name, value in
                    (("depth", backbone.num_layers), ("dim", backbone.dim), ("num_images", backbone.num_images),
                     ("num_labels", backbone.num_outputs)) if getattr(cfg, name) != value]
        if (cfg.image_size // cfg.patch_size) ** 2 != backbone.num_patches:
            problems.append(f"{cfg.num_patches} visual tokens != the backbone's {backbone.num_patches}")
        if problems:
            raise ConfigError(problems, "adapt config (against its source model)")
        self.exit_heads = nn.ModuleList(factorise_linears(backbone.new_exit_head(), cfg.exit_rank)
                                        for _ in cfg.exits[:-1])  # the last: backbone.head
        self.confidence = nn.ModuleList(ConfidenceHead(backbone.feature_dim, cfg.confidence_dim) for _ in cfg.exits)
        self.prefilter = TextPrefilter(backbone.prefilter_norm(cfg.prefilter_after), cfg.prefilter_dim)
        self.relax_temperature = 1.0  # relaxed top-k: sigmoid((score - threshold) / this)

    # ------------------------------------------------------------------ structure
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ------------------------------------------------------------------ pieces
    def exit(self, stage: int, hidden: torch.Tensor, detach: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Exit `stage` on hidden (B', T, D) -> logits (B, C), confidence (B,). detach: an exit before
        the last reads a detached hidden state (its loss then trains the exit, nothing before it)."""
        last = stage == self.num_stages - 1
        head = self.backbone.head if last else self.exit_heads[stage]
        logits, features = head(hidden.detach() if detach and not last else hidden)
        return logits, self.confidence[stage](features, logits)

    def prefilter_scores(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B', G + N, D) before any pruning -> scores (B', N) of the visual tokens."""
        L, G = self.backbone.num_text, self.backbone.num_global
        return self.prefilter(hidden[:, G:], hidden[:, :L], mask[:, :L])

    def prune(self, hidden: torch.Tensor, mask: torch.Tensor, keep_ratio: float, relaxed: bool = False,
              score_all: bool = False) -> Pruned:
        """Keep the top-k visual tokens. Relaxed (training): every token stays in the sequence, the
        dropped ones masked out of attention as keys (attention_probs) by weights whose value is the
        hard top-k and whose gradient is that of a sigmoid around the k-th score (straight-through),
        so that the pruned model's output trains the scorer."""
        G, N = self.backbone.num_global, self.backbone.num_patches
        k = self.config.kept_tokens(keep_ratio)
        if k >= N:
            return Pruned(hidden, mask, None, None, self.prefilter_scores(hidden, mask) if score_all else None)
        scores = self.prefilter_scores(hidden, mask)  # (B', N)
        kept = scores.topk(k, dim=1).indices  # (B', k), descending score
        if relaxed:
            weight = torch.cat([torch.ones_like(mask[:, :G]), keep_weights(scores, kept, self.relax_temperature)],
                               dim=1)  # (B', G + N)
            return Pruned(hidden, mask, weight, kept, scores)
        visual = torch.gather(hidden[:, G:], 1, kept.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))  # (B', k, D)
        hidden = torch.cat([hidden[:, :G], visual], dim=1)  # (B', G + k, D)
        mask = torch.cat([mask[:, :G], torch.ones_like(mask[:, :k])], dim=1)  # (B', G + k)
        return Pruned(hidden, mask, None, kept, scores)

    def _layers(self, layers, hidden, mask, key_weight=None, attention: list | None = None) -> torch.Tensor:
        additive = ((1.0 - mask) * MASK_VALUE)[:, None, None, :]  # (B', 1, 1, T)
        for i in layers:
            hidden, probs = self.backbone.layer(i, hidden, additive, key_weight, attention is not None)
            if attention is not None:
                attention.append(probs)
        return hidden

    # ------------------------------------------------------------------ stages
    def first_stage(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, text_mask: torch.Tensor,
                    keep_ratio: float = 1.0, relaxed: bool = False, score_all: bool = False,
                    attention: list | None = None, detach_exits: bool = False):
        """Embeddings, the layers up to the prefilter, the prefilter, the rest of stage 0 and exit 0
        -> hidden, mask, logits, confidence and the Pruned record (kept indices, scores)."""
        hidden, mask = self.backbone.embed(pixel_values, input_ids, text_mask)
        after = self.config.prefilter_after
        layers = self.stage_layers(0)
        hidden = self._layers(range(layers.start, after + 1), hidden, mask, None, attention)
        pruned = self.prune(hidden, mask, keep_ratio, relaxed, score_all)
        hidden = self._layers(range(after + 1, layers.stop), pruned.hidden, pruned.mask, pruned.key_weight, attention)
        logits, confidence = self.exit(0, hidden, detach_exits)
        return hidden, pruned.mask, logits, confidence, pruned

    def forward_stage(self, stage: int, hidden: torch.Tensor, mask: torch.Tensor,
                      key_weight: torch.Tensor | None = None, attention: list | None = None,
                      detach_exits: bool = False):
        """Stage `stage` >= 1 on (B', T, D) hidden and (B', T) mask -> hidden, logits, confidence."""
        hidden = self._layers(self.stage_layers(stage), hidden, mask, key_weight, attention)
        logits, confidence = self.exit(stage, hidden, detach_exits)
        return hidden, logits, confidence

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, text_mask: torch.Tensor,
                keep_ratio: float = 1.0, relaxed: bool = False, return_attention: bool = False,
                score_all: bool = False, detach_exits: bool = False) -> ModelOutput:
        """Every stage in order; every exit's logits (B, C) and confidence (B,). relaxed: the prefilter's
        training form (prune); detach_exits: the exits before the last train only themselves."""
        attention: list | None = [] if return_attention else None
        hidden, mask, lg, cf, pruned = self.first_stage(pixel_values, input_ids, text_mask.float(), keep_ratio,
                                                        relaxed, score_all, attention, detach_exits)
        logits, confs, states = [lg], [cf], [hidden]
        for stage in range(1, self.num_stages):
            hidden, lg, cf = self.forward_stage(stage, hidden, mask, pruned.key_weight, attention, detach_exits)
            logits.append(lg)
            confs.append(cf)
            states.append(hidden)
        return ModelOutput(logits, confs, pruned.kept_index, pruned.scores, attention or [], states)


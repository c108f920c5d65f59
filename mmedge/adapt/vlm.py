"""A pretrained generative VLM (a family's decoder backbone, mmedge.adapt.smolvlm first) with a
prompt-conditioned visual-token prefilter and per-token exits in the decoder.

What is added, trained by self-distillation from the frozen model (its weights unchanged):
- **exits** after chosen decoder layers: a per-exit RMSNorm (a copy of the final norm) in front of the
  model's own LM head (shared, not copied), behind a low-rank residual map h + U V h (rank
  ``exit_adapter_rank``, U zero at the start: the exit starts as the final norm and head read early),
  and a confidence (that this exit's token is the full model's) read from the hidden state alone, so
  that a device runs the vocabulary head only at the exit it takes. The exit after the last layer is the
  model's own norm and head: at keep ratio 1.0 the last exit *is* the pretrained model;
- **a prefilter** on the connector's visual tokens, conditioned on the prompt (the mean of its text
  tokens' embeddings), keeping the top k = keep ratio x M tokens in their order. Kept tokens, and
  every text token, keep their original rotary positions, so the pruned prompt is exactly the full
  prompt with the dropped visual tokens masked out of attention.

Decoding (``generate``, PyTorch; exported graphs: mmedge.runtime.vlm): greedy, one token at a time, the decoder's stages in order with the first
exit the policy accepts (mmedge.runtime.controller.Policy); the layers a token skipped get its keys
and values copied forward from the exiting hidden state (CALM's copy-forward, as mmedge.caption does).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field

import torch
from torch import nn

from mmedge.adapt.model import Adapter
from mmedge.errors import ConfigError
from mmedge.models.attention import MASK_VALUE
from mmedge.models.model import VisualPrefilter
from mmedge.runtime.controller import ExitState, Policy, should_stop
from mmedge.runtime.vlm import kept_tokens


@dataclass
class VLMAdaptConfig:
    """What was adapted and how (saved in the adapted folder's config.json, ``adapt``)."""

    family: str = "smolvlm"
    source_class: str = "SmolVLMForConditionalGeneration"
    depth: int = 4                        # decoder layers (the source's)
    dim: int = 576                        # decoder width (the source's)
    num_image_tokens: int = 64            # visual tokens after the connector, one tile (the source's)
    exit_layers: list[int] | None = None  # 0-based decoder layers followed by an exit; None: every layer
    keep_ratios: list[float] = field(default_factory=lambda: [1.0, 0.5, 0.25])
    prefilter_dim: int = 64
    confidence_dim: int = 64
    exit_adapter_rank: int = 32           # rank of each exit's residual map before its norm; 0: the norm alone

    def __post_init__(self) -> None:
        p = []
        if self.exit_layers is not None:
            if any(not 0 <= i < self.depth for i in self.exit_layers) or self.depth - 1 not in self.exit_layers:
                p.append(f"exit_layers {self.exit_layers} must lie in 0..{self.depth - 1} and include the last")
        if not self.keep_ratios or any(not 0 < r <= 1 for r in self.keep_ratios):
            p.append(f"keep_ratios {self.keep_ratios} must be in (0, 1]")
        if self.exit_adapter_rank < 0:
            p.append(f"exit_adapter_rank {self.exit_adapter_rank} must be 0 or more")
        if p:
            raise ConfigError(p, "adapt config")

    @property
    def exits(self) -> list[int]:
        return list(range(self.depth)) if self.exit_layers is None else sorted(self.exit_layers)

    def kept_tokens(self, keep_ratio: float) -> int:
        return kept_tokens(keep_ratio, self.num_image_tokens)  # as the runtime keeps them

    task = "generate"  # a class attribute, not a field: what the adapted folder's config.json says

    @property
    def labels(self) -> list[str]:
        return []  # a generative model has no answer set

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = "adapt config") -> "VLMAdaptConfig":
        from mmedge.models.config import from_dict

        return from_dict(cls, data, source)


class ExitMap(nn.Module):
    """An exit's hidden-state map before the shared head: h + up(down(h)) (rank r; up starts at zero)."""

    def __init__(self, dim: int, rank: int) -> None:
        super().__init__()
        self.down = nn.Linear(dim, rank, bias=False) if rank else None
        self.up = nn.Linear(rank, dim, bias=False) if rank else None
        if self.up is not None:
            nn.init.zeros_(self.up.weight)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden if self.down is None else hidden + self.up(self.down(hidden))


class TokenConfidence(nn.Module):
    """Confidence that an exit's next token is the full model's, from the hidden state (B, T, D) -> (B, T).
    It reads no logits: a token that goes on past an exit never pays for the vocabulary head there."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.mlp(hidden.detach())).squeeze(-1)


@dataclass
class Prompt:
    """A prompt laid out for the decoder: what prefill runs."""
    embeds: torch.Tensor      # (B, T, D) token embeddings, the visual tokens in place of the image placeholders
    positions: torch.Tensor   # (B, T) rotary positions (the unpruned prompt's)
    kept: torch.Tensor | None  # (B, k) visual tokens kept (indices into the M), None when all are kept


@dataclass
class Generated:
    tokens: list[int]         # generated ids, the stop token included when reached
    exits: list[int]          # per token, the exit stage it came from
    prompt_tokens: int        # tokens prefilled (after the prefilter)


class AdaptedVLM(Adapter, nn.Module):
    """A family's decoder backbone with exits, confidences and the prompt-conditioned prefilter."""

    def __init__(self, backbone, cfg: VLMAdaptConfig) -> None:
        super().__init__()
        self.backbone, self.config = backbone, cfg
        if (cfg.depth, cfg.dim, cfg.num_image_tokens) != (backbone.num_layers, backbone.dim, backbone.num_image_tokens):
            raise ConfigError(f"adapt config (depth {cfg.depth}, dim {cfg.dim}, {cfg.num_image_tokens} image tokens) "
                              f"does not match the source ({backbone.num_layers}, {backbone.dim}, "
                              f"{backbone.num_image_tokens})", "adapt config")
        self.exit_norms = nn.ModuleList(copy.deepcopy(backbone.text.norm) for _ in cfg.exits[:-1])
        self.exit_maps = nn.ModuleList(ExitMap(backbone.dim, cfg.exit_adapter_rank) for _ in cfg.exits[:-1])
        self.confidence = nn.ModuleList(TokenConfidence(backbone.dim, cfg.confidence_dim) for _ in cfg.exits)
        self.prefilter = VisualPrefilter(backbone.dim, cfg.prefilter_dim)
        self.relax_temperature = 1.0  # relaxed top-k in training: sigmoid((score - threshold) / this)

    # ------------------------------------------------------------------ exits
    def exit_state(self, stage: int, hidden: torch.Tensor) -> torch.Tensor:
        """hidden (B, T, D) after stage `stage` -> what the shared LM head reads there (B, T, D): the exit's
        map and norm (the model's final norm at the last stage)."""
        if stage == self.num_stages - 1:
            return self.backbone.final_norm(hidden)
        return self.exit_norms[stage](self.exit_maps[stage](hidden))

    def exit(self, stage: int, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """hidden (B, T, D) after stage `stage` -> logits (B, T, V), confidence (B, T)."""
        return self.backbone.lm_head(self.exit_state(stage, hidden)), self.confidence[stage](hidden)

    # ------------------------------------------------------------------ the prompt
    def prefilter_scores(self, visual: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """visual (B, M, D), the prompt's text embeddings (B, L, D) and mask (B, L) -> scores (B, M)."""
        return self.prefilter(visual, text, text_mask)

    def kept_visual(self, visual: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor, k: int) -> torch.Tensor:
        """The prefilter's top k of the visual tokens (B, M, D) against the text -> their indices (B, k) in
        order (ordered by a second topk: ExecuTorch has no aten::sort)."""
        kept = self.prefilter_scores(visual, text, text_mask).topk(k, dim=-1).indices  # (B, k) by score
        return kept.topk(k, dim=-1, largest=False).values

    def prompt(self, input_ids: torch.Tensor, pixel_values: torch.Tensor, keep_ratio: float = 1.0) -> Prompt:
        """input_ids (B, T) holding M image placeholders per row, pixel_values (B, 3, S, S) -> the prompt
        with the visual tokens in place; at keep_ratio < 1 only the prefilter's top k of them stay."""
        bb = self.backbone
        embeds = bb.embed_tokens(input_ids)  # (B, T, D)
        visual = bb.encode_image(pixel_values)  # (B, M, D)
        is_image = input_ids == bb.image_token_id  # (B, T)
        if not bool((is_image.sum(-1) == visual.shape[1]).all()):
            raise ConfigError(f"each prompt must hold {visual.shape[1]} image tokens (one tile); got "
                              f"{is_image.sum(-1).tolist()}", "prompt")
        B, T, D = embeds.shape
        embeds = embeds.masked_scatter(is_image[..., None], visual)
        positions = torch.arange(T).expand(B, T)
        k = self.config.kept_tokens(keep_ratio)
        if k >= visual.shape[1]:
            return Prompt(embeds, positions, None)
        kept = self.kept_visual(visual, bb.embed_tokens(input_ids), (~is_image).float(), k)
        image_slot = is_image.cumsum(-1) - 1  # (B, T): which visual token a placeholder holds
        keep = ~is_image | ((image_slot[..., None] == kept[:, None, :]).any(-1) & is_image)  # (B, T)
        rows = keep.sum(-1)
        if not bool((rows == rows[0]).all()):
            raise ConfigError("prompts of one batch must keep the same number of tokens", "prompt")
        idx = keep.nonzero()[:, 1].view(B, -1)  # (B, T') kept token indices in order
        take = idx[..., None].expand(-1, -1, D)
        return Prompt(embeds.gather(1, take), positions.gather(1, idx), kept)

    # ------------------------------------------------------------------ decoding
    @staticmethod
    def _causal(first_slot, count: int, slots: int) -> torch.Tensor:
        """(1, count, slots) additive mask: token t (in slot first_slot + t; an int or a (1,) tensor) sees the
        slots up to its own."""
        query = (first_slot + torch.arange(count))[:, None]
        return torch.where(torch.arange(slots)[None] <= query, 0.0, MASK_VALUE)[None]

    def prefill(self, prompt: Prompt, cache) -> tuple[torch.Tensor, torch.Tensor]:
        """Every layer on the prompt (slots 0..T-1) -> the last stage's hidden state (B, T, D) and the
        full model's logits for the next token (B, V)."""
        x, T = prompt.embeds, prompt.embeds.shape[1]
        cos, sin = self.backbone.rotary(prompt.positions, x)
        mask = self._causal(0, T, cache[0].k.shape[2])
        for i in range(self.config.depth):
            x = self.backbone.layer(i, x, cos, sin, cache[i], torch.arange(T), mask)
        logits, _ = self.exit(self.num_stages - 1, x[:, -1:])
        return x, logits[:, 0]

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, pixel_values: torch.Tensor, max_new_tokens: int = 24,
                 stop_ids: tuple[int, ...] = (), keep_ratio: float = 1.0, policy: Policy | None = None) -> Generated:
        """Greedy decoding of one prompt (batch 1) with the exit `policy` per token (default: full depth)."""
        policy = policy or Policy("full")
        if input_ids.shape[0] != 1:
            raise ConfigError("generate takes one prompt (batch 1)", "generate")
        prompt = self.prompt(input_ids, pixel_values, keep_ratio)
        T = prompt.embeds.shape[1]
        cache = self.backbone.new_cache(1, T + max_new_tokens, prompt.embeds.dtype)
        _, logits = self.prefill(prompt, cache)
        token = int(logits.argmax(-1))
        tokens, exits = [token], [self.num_stages - 1]  # the first token comes from the prefill's full depth
        position = int(prompt.positions[0, -1]) + 1
        S = cache[0].k.shape[2]
        while token not in stop_ids and len(tokens) < max_new_tokens:
            slot = T + len(tokens) - 1
            token, stage = self._step(token, position, slot, cache, S, policy)
            tokens.append(token)
            exits.append(stage)
            position += 1
        return Generated(tokens, exits, T)

    def _step(self, token: int, position: int, slot: int, cache, slots: int, policy: Policy) -> tuple[int, int]:
        """One generated token through the stages up to the exit the policy takes; the skipped layers'
        keys and values at this slot are copied forward from the exiting hidden state."""
        x = self.backbone.embed_tokens(torch.tensor([[token]]))
        positions = torch.tensor([[position]])
        cos, sin = self.backbone.rotary(positions, x)
        where = torch.tensor([slot])
        mask = self._causal(slot, 1, slots)
        state = ExitState([], [], [])
        for stage in range(self.num_stages):
            for i in self.stage_layers(stage):
                x = self.backbone.layer(i, x, cos, sin, cache[i], where, mask)
            logits, confidence = self.exit(stage, x)
            choice = int(logits[0, -1].argmax())
            state.answers.append(choice)
            state.confidences.append(float(confidence[0, -1]))
            state.max_probabilities.append(float(logits[0, -1].softmax(-1).max()))
            if should_stop(policy, state, self.num_stages):
                for i in range(self.config.exits[stage] + 1, self.config.depth):
                    k, v = self.backbone.key_values(i, x, cos, sin)
                    cache[i].k[:, :, where] = k
                    cache[i].v[:, :, where] = v
                return choice, stage
        raise AssertionError("unreachable: the last exit always stops")


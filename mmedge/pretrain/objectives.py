"""Pretraining objectives on one encoder (AdaptiveVLModel's embeddings and layers): a text half and
a visual half, each generative (masked modelling) or discriminative (ELECTRA-style replaced-token
detection), plus image-text matching (ITM) on [CLS].

Objectives are named text-visual: ``rwd-rod`` (proposed), ``mlm-mop`` (baseline) and the two crosses
``mlm-rod`` and ``rwd-mop`` that show which half carries a difference.

Text half:
  - ``mlm``: masked words become [UNK] (no caption word is unknown, so it doubles as the mask
    token); cross-entropy over the vocabulary at the masked positions.
  - ``rwd``: a generator (an encoder of the same kind, ``generator_depth`` layers,
    ``generator_dim_ratio`` of the width, token embeddings tied to the discriminator's through a
    projection as in ELECTRA) fills the masked words with samples from its MLM predictions; the
    discriminator labels every real text token original/replaced (a sample equal to the original
    word counts as original). Loss: generator MLM + ``disc_weight`` x BCE.
  Which words may be masked: ``mask_words="content"`` (colours, shapes, sizes, relations: the words
  an image can confirm or contradict) or ``"any"`` word, at ``text_replace_rate`` of them.
Visual half:
  - ``mop``: masked visual tokens become a learned mask embedding and are classified into the 19
    colour-shape classes of the object under them (0 = background); ``visual_replace_rate`` of all
    visual tokens.
  - ``rod``: ``visual_replace_rate`` of the tokens on objects take the patch embedding of an object
    token of another image. The label is 1 only where the object class under the token changed.
    ``visual_sources="decoys"`` draws a same-class source (labelled original) for ``decoy_rate`` of
    the replaced tokens, so a transplanted patch is not by itself a sign of replacement: only its
    content, against the rest of the image and the caption, is. ``"any-object"`` draws any object
    token of another image (the first design, solvable by spotting the transplant).
  Loss: ``disc_weight`` x BCE for rod, 1 x cross-entropy for mop.
ITM: half the captions swapped within the batch (rolled by one). ``itm_pass="separate"`` runs it in
its own forward pass on uncorrupted text and image, and the word/object losses only on the
matched pairs (as ViLT does); ``"shared"`` (the first design) swaps captions in the single pass, so
the word and object losses also run on mismatched pairs. ``itm_weight`` (default: ``disc_weight``
when either half is discriminative, else 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from mmedge.data.scenes import COLORS, NUM_OBJECT_CLASSES, SHAPES, SIZES
from mmedge.data.tasks import RELATIONS
from mmedge.models.config import ModelConfig
from mmedge.models.model import AdaptiveVLModel

OBJECTIVES = ("rwd-rod", "mlm-mop", "mlm-rod", "rwd-mop")
CONTENT_WORDS = frozenset({*COLORS, *SHAPES, *(f"{s}s" for s in SHAPES), *SIZES, *RELATIONS})


@dataclass
class ObjectiveConfig:
    objective: str = "mlm-mop"
    text_replace_rate: float = 0.5      # of the maskable words (see mask_words)
    visual_replace_rate: float = 0.15   # rod: of the object tokens; mop: of all visual tokens
    mask_words: str = "content"         # content | any
    replace_text: bool = True           # ablation switches (discriminative halves only)
    replace_visual: bool = True
    visual_replace_where: str = "objects"  # rod: replace only tokens on objects, or "any" token
    visual_sources: str = "decoys"      # rod: decoys (same-class sources labelled original) | any-object
    decoy_rate: float = 0.5
    generator_dim_ratio: float = 0.25   # generator width = dim x ratio (ELECTRA: 1/4 to 1/3)
    generator_depth: int = 4
    tie_embeddings: bool = True         # generator shares the discriminator's token embeddings
    disc_weight: float = 50.0           # ELECTRA's lambda for the discriminator losses
    itm_weight: float | None = None     # None: disc_weight when a half is discriminative, else 1
    itm_pass: str = "separate"          # separate (own clean pass; word/object losses on matched pairs) | shared

    @property
    def text_half(self) -> str:
        return self.objective.split("-")[0]

    @property
    def visual_half(self) -> str:
        return self.objective.split("-")[1]

    @property
    def resolved_itm_weight(self) -> float:
        if self.itm_weight is not None:
            return self.itm_weight
        return self.disc_weight if "rwd" == self.text_half or "rod" == self.visual_half else 1.0


def _rand_positions(mask: torch.Tensor, rate: float) -> torch.Tensor:
    """Bernoulli(rate) positions among mask == 1, at least one per row that has any."""
    probs = torch.rand(mask.shape)
    chosen = (probs < rate) & mask.bool()
    none = ~chosen.any(1) & mask.bool().any(1)
    if none.any():  # force one position in rows that drew none
        first = torch.where(mask.bool(), probs, torch.full_like(probs, 2.0)).argmin(1)
        chosen[none, first[none]] = True
    return chosen


def replaced_object_labels(token_classes: torch.Tensor, replaced: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """(B, N) 1.0 where a replaced visual token now shows another object class than before
    (`source` indexes the flattened (B * N) tokens), 0.0 elsewhere."""
    source_classes = token_classes.flatten()[source].reshape(token_classes.shape)  # (B, N)
    return (replaced & (source_classes != token_classes)).float()


@dataclass
class TextCorruption:
    ids: torch.Tensor                 # (B, L) what the encoder reads
    masked: torch.Tensor              # (B, L) bool: masked (mlm) or handed to the generator (rwd)
    targets: torch.Tensor             # mlm: original ids (B, L); rwd: 1.0 replaced / 0.0 original
    generator_loss: torch.Tensor | None = None
    generator_correct: torch.Tensor | None = None  # (M,) bool: the sample equals the original word


@dataclass
class VisualCorruption:
    transform: Callable[[torch.Tensor], torch.Tensor] | None
    positions: torch.Tensor           # (B, N) bool: masked (mop) or replaced (rod)
    targets: torch.Tensor             # mop: classes (B, N); rod: 1.0 class changed / 0.0 not
    same_class: torch.Tensor | None = None  # rod: (B, N) bool replaced by a same-class decoy


class PretrainModel(nn.Module):
    """Encoder + the objective's heads (+ the generator for rwd)."""

    def __init__(self, cfg: ModelConfig, obj: ObjectiveConfig, unk_id: int,
                 content_ids: list[int] | None = None) -> None:
        super().__init__()
        self.obj, self.unk_id = obj, unk_id
        self.encoder = AdaptiveVLModel(cfg)
        D, V = cfg.dim, cfg.vocab_size
        self.register_buffer("content_ids", torch.tensor(sorted(content_ids or []), dtype=torch.long),
                             persistent=False)
        self.itm_head = nn.Linear(D, 2)
        if obj.text_half == "rwd":
            gen_dim = max(cfg.num_heads * 8, int(D * obj.generator_dim_ratio) // cfg.num_heads * cfg.num_heads)
            gen_cfg = ModelConfig(**{**cfg.to_dict(), "dim": gen_dim, "depth": obj.generator_depth,
                                     "exit_layers": None, "token_classes": 0})
            self.generator = AdaptiveVLModel(gen_cfg)
            if obj.tie_embeddings:  # ELECTRA: one token embedding table, projected to the generator's width
                self.generator.token_embed = nn.Sequential(self.encoder.token_embed, nn.Linear(D, gen_dim))
                self.generator_out = nn.Linear(gen_dim, D)
                self.generator_bias = nn.Parameter(torch.zeros(V))
            else:
                self.generator_head = nn.Linear(gen_dim, V)
            self.text_disc = nn.Linear(D, 1)
        else:
            self.mlm_head = nn.Linear(D, V)
        if obj.visual_half == "rod":
            self.visual_disc = nn.Linear(D, 1)
        else:
            self.mop_head = nn.Linear(D, NUM_OBJECT_CLASSES)
            self.visual_mask = nn.Parameter(torch.zeros(D))

    # -------------------------------------------------------------- shared pieces
    def encode(self, model: AdaptiveVLModel, pixels, ids, text_mask, visual_transform=None) -> torch.Tensor:
        """Final hidden states (B, 1 + L + N, D) of `model` at full depth, every token kept."""
        emb = model.embed(pixels, ids, text_mask, 1.0, visual_transform=visual_transform)
        additive = ((1.0 - emb.mask) * -1e4)[:, None, None, :]
        hidden = emb.hidden
        for block in model.blocks:
            hidden, _ = block(hidden, additive)
        return hidden

    def swap_captions(self, ids, text_mask) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Swap the captions of a random half of the batch (rolled by one): ids, mask, match labels."""
        B = ids.shape[0]
        swap = torch.rand(B) < 0.5 if B > 1 else torch.zeros(B, dtype=torch.bool)
        rolled_ids, rolled_mask = ids.roll(1, 0), text_mask.roll(1, 0)
        same = (rolled_ids == ids).all(1)
        ids = torch.where(swap[:, None], rolled_ids, ids)
        text_mask = torch.where(swap[:, None], rolled_mask, text_mask)
        return ids, text_mask, (~swap | same).long()  # 1 = the caption belongs to the image

    def maskable_words(self, ids, text_mask) -> torch.Tensor:
        """(B, L) 1 where a word may be masked: every real word, or only content words."""
        if self.obj.mask_words == "any" or self.content_ids.numel() == 0:
            return text_mask
        return (torch.isin(ids, self.content_ids) & text_mask.bool()).long()

    # -------------------------------------------------------------- corruption
    def corrupt_text(self, pixels, ids, text_mask) -> TextCorruption:
        masked = _rand_positions(self.maskable_words(ids, text_mask), self.obj.text_replace_rate)
        mask_in = torch.where(masked, torch.full_like(ids, self.unk_id), ids)
        if self.obj.text_half == "mlm":
            return TextCorruption(mask_in, masked, ids)
        if not self.obj.replace_text:
            return TextCorruption(ids, torch.zeros_like(masked), torch.zeros_like(ids, dtype=torch.float))
        L = ids.shape[1]
        gen_hidden = self.encode(self.generator, pixels, mask_in, text_mask)[:, 1: 1 + L]  # (B, L, Dg)
        gen_logits = self.generator_logits(gen_hidden[masked])  # (M, V)
        with torch.no_grad():
            sampled = torch.distributions.Categorical(logits=gen_logits).sample()
        corrupted = ids.clone()
        corrupted[masked] = sampled
        return TextCorruption(corrupted, masked, (corrupted != ids).float(),
                              F.cross_entropy(gen_logits, ids[masked]), sampled == ids[masked])

    def generator_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.obj.tie_embeddings:
            return self.generator_out(hidden) @ self.encoder.token_embed.weight.T + self.generator_bias
        return self.generator_head(hidden)

    def corrupt_visual(self, token_classes) -> VisualCorruption:
        if not self.obj.replace_visual:  # no visual corruption (an ablation, or captions without object classes)
            none = torch.zeros_like(token_classes, dtype=torch.bool)
            return VisualCorruption(None, none, none.float(), none)
        if self.obj.visual_half == "mop":
            masked = _rand_positions(torch.ones_like(token_classes), self.obj.visual_replace_rate)

            def mask(visual):  # (B, N, D): masked tokens become the learned mask embedding
                return torch.where(masked[..., None], self.visual_mask.expand_as(visual), visual)
            return VisualCorruption(mask, masked, token_classes)
        replaced, source = self.visual_replacements(token_classes)
        labels = replaced_object_labels(token_classes, replaced, source)

        def replace(visual):  # (B, N, D): replaced tokens take another image's object patch
            flat = visual.reshape(-1, visual.shape[-1])  # (B * N, D)
            return torch.where(replaced[..., None], flat[source].reshape(visual.shape), visual)
        return VisualCorruption(replace, replaced, labels, replaced & (labels == 0))

    def visual_replacements(self, token_classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Which visual tokens to replace (B, N) and, for each, a source index into the flattened
        (B * N) tokens of another image: an object token of another class, or (decoys, for
        `decoy_rate` of them) of the same class when the batch has one; another image's
        background only when the batch has too few objects."""
        B, N = token_classes.shape
        where = torch.ones_like(token_classes) if self.obj.visual_replace_where == "any" else \
            (token_classes > 0).long()
        replaced = _rand_positions(where, self.obj.visual_replace_rate)
        flat = token_classes.flatten()  # (B * N,)
        rows, cols = replaced.nonzero(as_tuple=True)  # the R replaced tokens
        other = (torch.arange(B * N) // N)[None, :] != rows[:, None]  # (R, B * N)
        is_object = (flat > 0)[None, :]
        scores = torch.rand(len(rows), B * N) + 2.0 * (other & is_object) + 1.0 * other  # objects of others first
        if self.obj.visual_sources == "decoys":
            same = flat[None, :] == token_classes[rows, cols][:, None]  # (R, B * N)
            decoy = (torch.rand(len(rows)) < self.obj.decoy_rate)[:, None]
            scores = scores + 4.0 * (other & is_object & (same == decoy))
        source = torch.arange(B * N)  # untouched tokens keep their own patch
        source[rows * N + cols] = scores.argmax(-1)
        return replaced, source

    # -------------------------------------------------------------- losses
    def forward(self, pixels, ids, text_mask, token_classes) -> dict[str, torch.Tensor]:
        obj, L = self.obj, ids.shape[1]
        itm_ids, itm_mask, match = self.swap_captions(ids, text_mask)
        if obj.itm_pass == "shared":
            ids, text_mask = itm_ids, itm_mask
        text = self.corrupt_text(pixels, ids, text_mask)
        visual = self.corrupt_visual(token_classes)
        hidden = self.encode(self.encoder, pixels, text.ids, text_mask, visual.transform)
        losses: dict[str, torch.Tensor] = {}
        stats: dict[str, torch.Tensor] = {}
        real = text_mask.bool()
        text_h, visual_h = hidden[:, 1: 1 + L], hidden[:, 1 + L:]
        if obj.text_half == "mlm":
            logits = self.mlm_head(text_h[text.masked])
            losses["mlm"] = F.cross_entropy(logits, ids[text.masked])
            stats["mlm_acc"] = (logits.argmax(-1) == ids[text.masked]).float().mean()
        else:
            logit = self.text_disc(text_h).squeeze(-1)
            loss = F.binary_cross_entropy_with_logits(logit[real], text.targets[real])
            losses["replaced_word"] = loss if obj.replace_text else 0.0 * loss  # a constant target teaches nothing
            if text.generator_loss is not None:
                losses["generator_mlm"] = text.generator_loss
                stats["generator_sample_acc"] = text.generator_correct.float().mean()
            stats["rwd_acc"] = ((logit[real] > 0).float() == text.targets[real]).float().mean()
        if obj.visual_half == "mop" and not obj.replace_visual:  # nothing masked: the head takes no gradient
            losses["mop"] = 0.0 * self.mop_head(visual_h[:, 0]).sum()
        elif obj.visual_half == "mop":
            logits = self.mop_head(visual_h[visual.positions])
            losses["mop"] = F.cross_entropy(logits, token_classes[visual.positions])
            stats["mop_acc"] = (logits.argmax(-1) == token_classes[visual.positions]).float().mean()
        else:
            logit = self.visual_disc(visual_h).squeeze(-1)
            loss = F.binary_cross_entropy_with_logits(logit, visual.targets)
            losses["replaced_object"] = loss if obj.replace_visual else 0.0 * loss
            stats["rod_acc"] = ((logit > 0).float() == visual.targets).float().mean()
        itm_hidden = hidden if obj.itm_pass == "shared" else self.encode(self.encoder, pixels, itm_ids, itm_mask)
        itm_logits = self.itm_head(itm_hidden[:, 0])
        losses["itm"] = F.cross_entropy(itm_logits, match)
        stats["itm_acc"] = (itm_logits.argmax(-1) == match).float().mean()
        weights = {"mlm": 1.0, "mop": 1.0, "generator_mlm": 1.0, "replaced_word": obj.disc_weight,
                   "replaced_object": obj.disc_weight, "itm": obj.resolved_itm_weight}
        total = sum(weights[k] * v for k, v in losses.items())
        return {"loss": total, **losses, **{k: v.detach() for k, v in stats.items()}}

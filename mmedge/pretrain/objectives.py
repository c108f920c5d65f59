"""The two pretraining objectives on the same encoder (AdaptiveVLModel's embeddings and layers).

rwd-rod (proposed, ELECTRA-style; every token of both modalities gets a label):
  - replaced word detection: a small generator (a narrow, shallow encoder of the same kind,
    trained by masked language modelling) fills ``text_replace_rate`` of the caption's words with
    samples from its predictions; the discriminator labels every real text token original/replaced
    (a sample equal to the original word counts as original);
  - replaced object detection: ``visual_replace_rate`` of the visual tokens (of any token, or with
    ``visual_replace_where="objects"`` only of tokens on an object) get the patch embedding
    of an object token from another image of the batch ("plausible": an object, not background);
    the discriminator labels every visual token original/replaced, where "replaced" means the
    object class under the token changed (background for background, or a patch of the same
    colour and shape, counts as original: nothing the caption could contradict);
  - image-text matching on [CLS] (half the captions swapped within the batch).
  loss = generator MLM + disc_weight x (text BCE + visual BCE) + itm_weight x ITM.
mlm-mop (baseline): masked language modelling ([UNK] doubles as the mask token: no caption word is
  unknown) + masked object prediction (masked visual tokens, a learned mask embedding, classified
  into the 19 colour-shape classes of the object under them, 0 = background: a discrete visual code
  read off the scene's own drawing) + ITM. Only the masked positions carry a loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from mmedge.data.scenes import NUM_OBJECT_CLASSES
from mmedge.models.config import ModelConfig
from mmedge.models.model import AdaptiveVLModel

OBJECTIVES = ("rwd-rod", "mlm-mop")


@dataclass
class ObjectiveConfig:
    objective: str = "rwd-rod"
    text_replace_rate: float = 0.15     # rwd: fraction of words the generator replaces (mlm: masks)
    visual_replace_rate: float = 0.15   # rod: fraction of visual tokens replaced (mop: masked)
    replace_text: bool = True           # ablation switches (rwd-rod only)
    replace_visual: bool = True
    visual_replace_where: str = "objects"  # rod: replace only tokens on objects, or "any" token
    generator_dim_ratio: float = 0.25   # generator width = dim x ratio (ELECTRA: 1/4 to 1/3)
    generator_depth: int = 1
    disc_weight: float = 50.0           # ELECTRA's lambda for the discriminator loss
    itm_weight: float = 1.0


def _rand_positions(mask: torch.Tensor, rate: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Bernoulli(rate) positions among mask == 1, at least one per row that has any."""
    probs = torch.rand(mask.shape, generator=generator)
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


class PretrainModel(nn.Module):
    """Encoder + the objective's heads (+ the generator for rwd-rod)."""

    def __init__(self, cfg: ModelConfig, obj: ObjectiveConfig, unk_id: int) -> None:
        super().__init__()
        self.obj, self.unk_id = obj, unk_id
        self.encoder = AdaptiveVLModel(cfg)
        D, V = cfg.dim, cfg.vocab_size
        self.itm_head = nn.Linear(D, 2)
        if obj.objective == "rwd-rod":
            gen_dim = max(cfg.num_heads * 8, int(cfg.dim * obj.generator_dim_ratio) // cfg.num_heads * cfg.num_heads)
            gen_cfg = ModelConfig(**{**cfg.to_dict(), "dim": gen_dim, "depth": obj.generator_depth,
                                     "exit_layers": None, "token_classes": 0})
            self.generator = AdaptiveVLModel(gen_cfg)
            self.generator_head = nn.Linear(gen_dim, V)
            self.text_disc = nn.Linear(D, 1)
            self.visual_disc = nn.Linear(D, 1)
        else:
            self.mlm_head = nn.Linear(D, V)
            self.mop_head = nn.Linear(D, NUM_OBJECT_CLASSES)
            self.visual_mask = nn.Parameter(torch.zeros(D))

    # -------------------------------------------------------------- shared pieces
    def _encode(self, model: AdaptiveVLModel, pixels, ids, text_mask, visual_transform=None) -> torch.Tensor:
        """Final hidden states (B, 1 + L + N, D) of `model` at full depth, every token kept."""
        emb = model.embed(pixels, ids, text_mask, 1.0, visual_transform=visual_transform)
        additive = ((1.0 - emb.mask) * -1e4)[:, None, None, :]
        hidden = emb.hidden
        for block in model.blocks:
            hidden, _ = block(hidden, additive)
        return hidden

    def _itm(self, ids, text_mask) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Swap the captions of a random half of the batch (rolled by one): ids, mask, match labels."""
        B = ids.shape[0]
        swap = torch.rand(B) < 0.5 if B > 1 else torch.zeros(B, dtype=torch.bool)
        rolled_ids, rolled_mask = ids.roll(1, 0), text_mask.roll(1, 0)
        same = (rolled_ids == ids).all(1)
        ids = torch.where(swap[:, None], rolled_ids, ids)
        text_mask = torch.where(swap[:, None], rolled_mask, text_mask)
        return ids, text_mask, (~swap | same).long()  # 1 = the caption belongs to the image

    # -------------------------------------------------------------- objectives
    def forward(self, pixels, ids, text_mask, token_classes) -> dict[str, torch.Tensor]:
        ids, text_mask, match = self._itm(ids, text_mask)
        if self.obj.objective == "rwd-rod":
            return self._rwd_rod(pixels, ids, text_mask, token_classes, match)
        return self._mlm_mop(pixels, ids, text_mask, token_classes, match)

    def _rwd_rod(self, pixels, ids, text_mask, token_classes, match):
        obj, L = self.obj, ids.shape[1]
        losses: dict[str, torch.Tensor] = {}
        corrupted, text_labels = ids, torch.zeros_like(ids, dtype=torch.float)
        if obj.replace_text:
            masked = _rand_positions(text_mask, obj.text_replace_rate)
            gen_in = torch.where(masked, torch.full_like(ids, self.unk_id), ids)
            gen_hidden = self._encode(self.generator, pixels, gen_in, text_mask)[:, 1: 1 + L]  # (B, L, Dg)
            gen_logits = self.generator_head(gen_hidden)  # (B, L, V)
            losses["generator_mlm"] = F.cross_entropy(gen_logits[masked], ids[masked])
            with torch.no_grad():
                sampled = torch.distributions.Categorical(logits=gen_logits[masked]).sample()
            corrupted = ids.clone()
            corrupted[masked] = sampled
            text_labels = (corrupted != ids).float()
        visual_labels = torch.zeros_like(token_classes, dtype=torch.float)
        transform = None
        if obj.replace_visual:
            replaced, source = self._visual_replacements(token_classes)
            visual_labels = replaced_object_labels(token_classes, replaced, source)

            def transform(visual):  # (B, N, D): replaced tokens take another image's object patch
                flat = visual.reshape(-1, visual.shape[-1])  # (B * N, D)
                return torch.where(replaced[..., None], flat[source].reshape(visual.shape), visual)
        hidden = self._encode(self.encoder, pixels, corrupted, text_mask, transform)
        text_h, visual_h = hidden[:, 1: 1 + L], hidden[:, 1 + L:]
        real = text_mask.bool()
        text_logit = self.text_disc(text_h).squeeze(-1)
        visual_logit = self.visual_disc(visual_h).squeeze(-1)
        losses["replaced_word"] = F.binary_cross_entropy_with_logits(text_logit[real], text_labels[real])
        losses["replaced_object"] = F.binary_cross_entropy_with_logits(visual_logit, visual_labels)
        losses["itm"] = F.cross_entropy(self.itm_head(hidden[:, 0]), match)
        if not obj.replace_text:  # a constant target teaches nothing: keep the head in the graph only
            losses["replaced_word"] = 0.0 * losses["replaced_word"]
        if not obj.replace_visual:
            losses["replaced_object"] = 0.0 * losses["replaced_object"]
        total = (losses.get("generator_mlm", 0.0) + obj.disc_weight * (losses["replaced_word"] + losses["replaced_object"])
                 + obj.itm_weight * losses["itm"])
        with torch.no_grad():
            stats = {"rwd_acc": ((text_logit[real] > 0).float() == text_labels[real]).float().mean(),
                     "rod_acc": ((visual_logit > 0).float() == visual_labels).float().mean()}
        return {"loss": total, **losses, **stats}

    def _visual_replacements(self, token_classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Which visual tokens to replace (B, N) and, for each, a source index into the flattened
        (B * N) tokens: a random object token of another image (another image's background when
        the batch has too few objects)."""
        B, N = token_classes.shape
        where = torch.ones_like(token_classes) if self.obj.visual_replace_where == "any" else \
            (token_classes > 0).long()
        replaced = _rand_positions(where, self.obj.visual_replace_rate)
        image_of = torch.arange(B * N) // N  # (B * N,)
        other = image_of[None, :] != torch.arange(B)[:, None]  # (B, B * N)
        is_object = (token_classes.flatten() > 0)[None, :]
        scores = torch.rand(B, B * N) + 2.0 * (other & is_object) + 1.0 * other  # objects of others first
        source = scores.topk(N, dim=1).indices  # (B, N), random order among the best
        return replaced, source.flatten()

    def _mlm_mop(self, pixels, ids, text_mask, token_classes, match):
        obj, L = self.obj, ids.shape[1]
        masked_text = _rand_positions(text_mask, obj.text_replace_rate)
        masked_visual = _rand_positions(torch.ones_like(token_classes), obj.visual_replace_rate)
        inp = torch.where(masked_text, torch.full_like(ids, self.unk_id), ids)

        def transform(visual):  # masked visual tokens become the learned mask embedding
            return torch.where(masked_visual[..., None], self.visual_mask.expand_as(visual), visual)

        hidden = self._encode(self.encoder, pixels, inp, text_mask, transform)
        text_h, visual_h = hidden[:, 1: 1 + L], hidden[:, 1 + L:]
        mlm_logits = self.mlm_head(text_h[masked_text])
        mop_logits = self.mop_head(visual_h[masked_visual])
        losses = {"mlm": F.cross_entropy(mlm_logits, ids[masked_text]),
                  "mop": F.cross_entropy(mop_logits, token_classes[masked_visual]),
                  "itm": F.cross_entropy(self.itm_head(hidden[:, 0]), match)}
        with torch.no_grad():
            stats = {"mlm_acc": (mlm_logits.argmax(-1) == ids[masked_text]).float().mean(),
                     "mop_acc": (mop_logits.argmax(-1) == token_classes[masked_visual]).float().mean()}
        return {"loss": losses["mlm"] + losses["mop"] + obj.itm_weight * losses["itm"], **losses, **stats}

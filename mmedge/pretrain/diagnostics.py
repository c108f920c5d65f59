"""What a pretraining snapshot has learnt, on held-out pairs (as ELECTRA's metric function reports):
whether each detector or predictor uses the other modality, not only whether its loss fell.

Each half is scored alone (the other modality left intact), once with the true pairing and once
with the other modality shuffled within the batch (rolled by one):
  - rwd: the generator's sampled accuracy (how often its sample equals the word), the base rate
    (share of real words that are original), accuracy, and ROC AUC of replaced-word detection over
    the content words (colours, shapes, sizes, relations) with the true image and with another image;
  - rod: P(replaced) on replaced tokens whose class changed, on same-class decoys and on untouched
    object tokens; AUC with the true caption and with another caption;
  - mlm / mop: accuracy at the masked positions with the true and with the shuffled other modality;
  - ITM accuracy on a clean pass.
A detector that uses the image scores a higher AUC with the true image than with a shuffled one.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from mmedge.pretrain.objectives import PretrainModel


def _auc(labels: torch.Tensor, scores: torch.Tensor) -> float | None:
    y = labels.numpy()
    return float(roc_auc_score(y, scores.numpy())) if 0 < y.sum() < len(y) else None


def _mean(x: torch.Tensor) -> float | None:
    return float(x.float().mean()) if x.numel() else None


@torch.no_grad()
def diagnose(model: PretrainModel, pixels: torch.Tensor, ids: torch.Tensor, text_mask: torch.Tensor,
             token_classes: torch.Tensor, seed: int = 0) -> dict[str, float | None]:
    """Held-out diagnostics of `model` on one batch; the corruption is drawn from `seed`."""
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng():  # the training run's random stream is left as it was
            torch.manual_seed(seed)
            out = {**_text(model, pixels, ids, text_mask), **_visual(model, pixels, ids, text_mask, token_classes)}
            itm_ids, itm_mask, match = model.swap_captions(ids, text_mask)
            logits = model.itm_head(model.encode(model.encoder, pixels, itm_ids, itm_mask)[:, 0])
            out["itm_acc"] = _mean(logits.argmax(-1) == match)
    finally:
        model.train(was_training)
    return out


def _text(model: PretrainModel, pixels, ids, text_mask) -> dict:
    L, obj = ids.shape[1], model.obj
    text = model.corrupt_text(pixels, ids, text_mask)
    out: dict[str, float | None] = {}
    for name, images in (("true", pixels), ("shuffled", pixels.roll(1, 0))):
        text_h = model.encode(model.encoder, images, text.ids, text_mask)[:, 1: 1 + L]
        if obj.text_half == "mlm":
            out[f"mlm_acc_{name}_image"] = _mean(model.mlm_head(text_h[text.masked]).argmax(-1) == ids[text.masked])
            continue
        if not obj.replace_text:
            continue
        scores = model.text_disc(text_h).squeeze(-1)
        real = text_mask.bool()
        content = real & torch.isin(ids, model.content_ids)
        out[f"rwd_auc_{name}_image"] = _auc(text.targets[content], scores[content])
        if name == "true":
            out["rwd_acc"] = _mean((scores[real] > 0).float() == text.targets[real])
            out["rwd_base_rate"] = _mean(text.targets[real] == 0)
            out["generator_sample_acc"] = _mean(text.generator_correct)
    return out


def _visual(model: PretrainModel, pixels, ids, text_mask, token_classes) -> dict:
    L, obj = ids.shape[1], model.obj
    visual = model.corrupt_visual(token_classes)
    out: dict[str, float | None] = {}
    if obj.visual_half == "rod" and not obj.replace_visual:
        return out
    for name, (caption, mask) in (("true", (ids, text_mask)), ("shuffled", (ids.roll(1, 0), text_mask.roll(1, 0)))):
        visual_h = model.encode(model.encoder, pixels, caption, mask, visual.transform)[:, 1 + L:]
        if obj.visual_half == "mop":
            logits = model.mop_head(visual_h[visual.positions])
            out[f"mop_acc_{name}_caption"] = _mean(logits.argmax(-1) == token_classes[visual.positions])
            continue
        p = torch.sigmoid(model.visual_disc(visual_h).squeeze(-1))
        on_object = token_classes > 0
        out[f"rod_auc_{name}_caption"] = _auc(visual.targets[on_object], p[on_object])
        if name == "true":
            changed = visual.targets.bool()
            out["rod_p_replaced_class_changed"] = _mean(p[changed])
            out["rod_p_replaced_same_class"] = _mean(p[visual.same_class])
            out["rod_p_untouched_object"] = _mean(p[on_object & ~visual.positions])
    return out


def summary_line(d: dict[str, float | None]) -> str:
    """One short line for a log."""
    return ", ".join(f"{k} {v:.3f}" for k, v in d.items() if isinstance(v, float) and np.isfinite(v))

"""Which per-input signal predicts that dropping the visual tokens after a stage keeps the answer?

For each sample of a split and each stage A before the last: run the model, then the text-only
continuation after A (the stages' own layers on [CLS] + text), and record whether the final answer
changed, and candidate signals read at stage A's output: text -> visual and [CLS] -> visual attention
mass in A's last layer, the visual tokens' mean L2 norm, visual / text mean norm, and the exit's
learned confidence. Prints each signal's AUC for "the answer changes" and the share of samples that
can be pruned (lowest or highest signal first) while at most 0.5 point of answers change, over all
samples and over those that an exit threshold would send past A.

    python benchmarks/modality_pruning_signals.py --model models/vqa-default --split val --samples 1000
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from mmedge.analysis.probe import attention_mass, token_norms
from mmedge.data.batches import build_batch, generate
from mmedge.models.checkpoint import from_pretrained

SIGNALS = ("text_to_visual", "cls_to_visual", "visual_norm", "visual_text_norm_ratio", "confidence")


def auc(score: np.ndarray, positive: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counted half."""
    a, b = score[positive], score[~positive]
    if a.size == 0 or b.size == 0:
        return float("nan")
    return float(((a[:, None] > b[None, :]).sum() + 0.5 * (a[:, None] == b[None, :]).sum()) / (a.size * b.size))


def prunable_share(values: np.ndarray, changed: np.ndarray, n_all: int, low_first: bool, limit: float) -> float:
    order = np.argsort(values if low_first else -values, kind="stable")
    cum = np.cumsum(changed[order])
    return float(np.searchsorted(cum, limit * n_all, side="right") / max(1, values.size))


@torch.no_grad()
def measure(model_dir: str, split: str, samples: int, keep_ratio: float) -> dict:
    model, tok = from_pretrained(model_dir)
    model.eval()
    cfg = model.config
    keep = 1 + cfg.max_text_len
    stages = range(model.num_stages - 1)
    rec = {a: {k: [] for k in (*SIGNALS, "changed")} for a in stages}
    for start in range(0, samples, 100):
        b = build_batch(generate(cfg.task, 0, split, range(start, min(samples, start + 100)), cfg.image_size),
                        tok, cfg.image_size)
        px, ids, tm = (torch.from_numpy(x) for x in (b.pixels, b.input_ids, b.text_mask))
        emb = model.embed(px, ids, tm, keep_ratio)
        h, outs = emb.hidden, []
        for st in range(model.num_stages):
            probs: list[torch.Tensor] = []
            h, logits, conf = model.forward_stage(st, h, emb.mask, probs)
            outs.append((h, conf, probs[-1]))
        final = logits.argmax(-1)
        for a in stages:
            ha, conf, probs = outs[a]
            hp, m = ha[:, :keep], emb.mask[:, :keep]
            for st in range(a + 1, model.num_stages):
                hp, lp, _ = model.forward_stage(st, hp, m)
            r = rec[a]
            r["changed"] += (lp.argmax(-1) != final).tolist()
            mass = attention_mass(probs, tm, cfg.max_text_len)
            norms = token_norms(ha, tm, cfg.max_text_len)
            r["text_to_visual"] += mass["text_to_visual"].tolist()
            r["cls_to_visual"] += mass["cls_to_visual"].tolist()
            r["visual_norm"] += norms["visual"].tolist()
            r["visual_text_norm_ratio"] += (norms["visual"] / norms["text"]).tolist()
            r["confidence"] += conf.tolist()
    return {a: {k: np.asarray(v) for k, v in r.items()} for a, r in rec.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/vqa-default")
    ap.add_argument("--split", default="val")
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--keep-ratio", type=float, default=1.0)
    ap.add_argument("--exit-threshold", type=float, default=0.9, help="confidence threshold for 'goes on past A'")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rec = measure(args.model, args.split, args.samples, args.keep_ratio)
    conf = np.stack([rec[a]["confidence"] for a in rec], 1)
    n = conf.shape[0]
    for a, r in rec.items():
        changed = r["changed"].astype(bool)
        goes_on = (conf[:, : a + 1] < args.exit_threshold).all(1)
        print(f"after stage {a}: final answer changes for {changed.mean():.3f} of all samples; "
              f"{goes_on.mean():.3f} go on past it at confidence < {args.exit_threshold}")
        for k in SIGNALS:
            v = r[k]
            row = [f"  {k:24s} AUC(all) {auc(v, changed):.3f}  AUC(going on) {auc(v[goes_on], changed[goes_on]):.3f}"]
            for name, low in (("low", True), ("high", False)):
                row.append(f"prune {name} first @0.5pt: all {prunable_share(v, changed, n, low, 0.005):.2f}, "
                           f"going on {prunable_share(v[goes_on], changed[goes_on], n, low, 0.005):.2f}")
            print("; ".join(row))


if __name__ == "__main__":
    main()

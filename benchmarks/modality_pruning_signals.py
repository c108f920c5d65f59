"""Which per-input signal predicts that dropping the visual tokens after a stage keeps the answer?

For each sample of a split and each stage A before the last: run the model, then the text-only
continuation after A (the stages' own layers on [CLS] + text), and record whether the final answer
changed, and candidate signals read at stage A's output: text -> visual and [CLS] -> visual attention
mass in A's last layer, the visual tokens' mean L2 norm, visual / text mean norm, and the exit's
learned confidence. Prints each signal's AUC for "the answer changes" and the share of samples that
can be pruned (lowest or highest signal first) while at most 0.5 point of answers change, over all
samples and over those that an exit threshold would send past A.

    python benchmarks/modality_pruning_signals.py --model models/vqa-default --split val --samples 1000
    python benchmarks/modality_pruning_signals.py --out runs/signals      # also writes .json and .md there
    python benchmarks/modality_pruning_signals.py --report-only --out runs/signals   # the .md again from the .json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mmedge.analysis.probe import attention_mass, token_norms  # noqa: E402
from mmedge.data.batches import build_batch, generate  # noqa: E402
from mmedge.fileio import atomic_write, shown_path  # noqa: E402
from mmedge.models.checkpoint import from_pretrained  # noqa: E402

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


def summarise(rec: dict, exit_threshold: float, settings: dict) -> dict:
    """The figures the report shows, from measure()'s per-sample records (JSON-ready)."""
    conf = np.stack([rec[a]["confidence"] for a in rec], 1)
    n = conf.shape[0]
    stages = {}
    for a, r in rec.items():
        changed = r["changed"].astype(bool)
        goes_on = (conf[:, : a + 1] < exit_threshold).all(1)
        signals = {}
        for k in SIGNALS:
            v = r[k]
            signals[k] = {"auc_all": auc(v, changed), "auc_going_on": auc(v[goes_on], changed[goes_on]),
                          **{f"prune_{name}_first_{group}": prunable_share(vv, cc, n, low, 0.005)
                             for name, low in (("low", True), ("high", False))
                             for group, vv, cc in (("all", v, changed), ("going_on", v[goes_on], changed[goes_on]))}}
        stages[str(a)] = {"changed_share": float(changed.mean()), "going_on_share": float(goes_on.mean()),
                          "signals": signals}
    return {"settings": {**settings, "exit_threshold": exit_threshold, "samples_measured": int(n)}, "stages": stages}


def markdown(summary: dict) -> str:
    from tabulate import tabulate

    s = summary["settings"]
    lines = ["# Modality pruning signals", "",
             f"Model {s['model']}, {s['samples_measured']} {s['split']} samples, keep ratio {s['keep_ratio']:g}; "
             f"'going on': every exit up to the stage below confidence {s['exit_threshold']:g}. AUC: of each signal "
             "for 'the final answer changes when the visual tokens are dropped after the stage'; prunable: the share "
             "of samples that can drop them (lowest or highest signal first) with at most 0.5 point of answers "
             "changed.", ""]
    for a, st in summary["stages"].items():
        lines += [f"## After stage {a}", "",
                  f"The final answer changes for {st['changed_share']:.3f} of all samples; {st['going_on_share']:.3f} "
                  f"go on past it.", ""]
        rows = [[k, f"{v['auc_all']:.3f}", f"{v['auc_going_on']:.3f}", f"{v['prune_low_first_all']:.2f}",
                 f"{v['prune_low_first_going_on']:.2f}", f"{v['prune_high_first_all']:.2f}",
                 f"{v['prune_high_first_going_on']:.2f}"] for k, v in st["signals"].items()]
        lines += [tabulate(rows, ["signal", "AUC (all)", "AUC (going on)", "prunable, low first (all)",
                                  "(going on)", "prunable, high first (all)", "(going on)"], tablefmt="github"), ""]
    return "\n".join(lines)


def report_only(out: Path) -> list[Path]:
    """Rewrite OUT/modality_pruning_signals.md from the JSON beside it (nothing is measured)."""
    summary = json.loads((out / "modality_pruning_signals.json").read_text())
    atomic_write(out / "modality_pruning_signals.md", lambda p: p.write_text(markdown(summary) + "\n"))
    return [out / "modality_pruning_signals.md"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/vqa-default")
    ap.add_argument("--split", default="val")
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--keep-ratio", type=float, default=1.0)
    ap.add_argument("--exit-threshold", type=float, default=0.9, help="confidence threshold for 'goes on past A'")
    ap.add_argument("--out", type=Path, help="also write modality_pruning_signals.{json,md} into this folder")
    ap.add_argument("--report-only", action="store_true", help="rewrite OUT's Markdown from its JSON; measure nothing")
    args = ap.parse_args(argv)
    if args.report_only:
        if args.out is None:
            ap.error("--report-only needs --out (the folder an earlier run wrote)")
        print("wrote " + ", ".join(map(str, report_only(args.out))))
        return 0
    torch.set_num_threads(1)
    rec = measure(args.model, args.split, args.samples, args.keep_ratio)
    summary = summarise(rec, args.exit_threshold, {"model": shown_path(args.model), "split": args.split,
                                                   "keep_ratio": args.keep_ratio})
    print(markdown(summary))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write(args.out / "modality_pruning_signals.json",
                     lambda p: p.write_text(json.dumps(summary, indent=1) + "\n"))
        report_only(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

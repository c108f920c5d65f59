"""Accuracy per exit / question type / keep ratio, threshold sweeps and prefilter recall."""

from __future__ import annotations

import numpy as np

from mmedge.data.batches import token_in_box_mask
from mmedge.evaluation.predict import EvalRun, ExitOutputs

DEFAULT_THRESHOLDS = [0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999, 1.01]


def accuracy_per_exit(run: EvalRun, keep_ratio: float) -> list[float]:
    return (run.outputs[keep_ratio].preds == run.labels[:, None]).mean(0).tolist()


def accuracy_per_qtype(run: EvalRun, keep_ratio: float) -> dict[str, list[float]]:
    """{qtype: accuracy per exit} at one keep ratio, plus each type's sample count under 'n'."""
    out = {}
    correct = run.outputs[keep_ratio].preds == run.labels[:, None]  # (n, E)
    qtypes = np.array(run.qtypes)
    for q in sorted(set(run.qtypes)):
        sel = qtypes == q
        out[q] = {"n": int(sel.sum()), "acc_per_exit": correct[sel].mean(0).tolist()}
    return out


def early_exit(conf: np.ndarray, threshold: float) -> np.ndarray:
    """(n,) index of the first exit whose confidence reaches `threshold`, else the last exit."""
    reached = conf >= threshold  # (n, E)
    reached[:, -1] = True
    return reached.argmax(1)


def threshold_sweep(run: EvalRun, keep_ratio: float, exit_flops: list[int], source: str,
                    thresholds: list[float] = DEFAULT_THRESHOLDS) -> list[dict]:
    """Accuracy, mean exit and mean FLOPs of confidence-threshold exiting for each threshold."""
    out: ExitOutputs = run.outputs[keep_ratio]
    conf = out.learned_conf if source == "learned" else out.max_prob
    flops = np.asarray(exit_flops, dtype=np.float64)
    rows = []
    for t in thresholds:
        idx = early_exit(conf, t)
        pred = out.preds[np.arange(len(idx)), idx]
        rows.append({"threshold": t, "accuracy": float((pred == run.labels).mean()),
                     "mean_exit": float(idx.mean()), "mean_flops": float(flops[idx].mean()),
                     "flops_fraction": float(flops[idx].mean() / flops[-1])})
    return rows


def prefilter_recall(run: EvalRun, keep_ratio: float, image_size: int, patch: int) -> dict | None:
    """How many kept tokens lie on objects, and how many object tokens were kept."""
    kept = run.outputs[keep_ratio].kept_index
    if kept is None:
        return None
    precision, recall = [], []
    for boxes, idx in zip(run.boxes, kept):
        on_object = token_in_box_mask(boxes, image_size, patch)
        hits = on_object[idx].sum()
        precision.append(hits / len(idx))
        recall.append(hits / max(1, on_object.sum()))
    return {"object_token_precision": float(np.mean(precision)), "object_token_recall": float(np.mean(recall))}

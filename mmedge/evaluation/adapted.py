"""`mmedge eval` on a model folder written by `mmedge adapt`: accuracy per exit where the data has
labels, and every exit's agreement with the model's own full-depth answer (the teacher) per keep ratio.

Examples come from mmedge.adapt.data (the generated scenes, or a dataset NAME:ROOT's validation
split) and are prepared by the model's own preprocessor, as in self-distillation.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from tabulate import tabulate

from mmedge.train.flops import exit_flops


@torch.no_grad()
def evaluate_adapted(model, preprocessor, data: str, split: str | None, limit: int, data_seed: int = 0,
                     keep_ratios: list[float] | None = None, batch_size: int = 32, progress: bool = True,
                     teacher: tuple | None = None) -> dict:
    """The evaluation dict (JSON-ready); format_adapted prints it. `teacher`: (model or None, description)
    from mmedge.adapt.folder.pretrained_teacher, the model whose final answer the exits are compared
    with; a None model (or no teacher): the model's own final exit at keep 1.0, which is the pretrained
    model's answer unless the backbone was trained."""
    from tqdm.auto import tqdm

    from mmedge.adapt.data import AdaptData, materialise

    cfg = model.config
    model.eval()
    ratios = keep_ratios or list(cfg.keep_ratios)
    t0 = time.perf_counter()
    source = AdaptData(data, cfg.task, list(cfg.labels), cfg.image_size, cfg.num_images, data_seed)
    if data == "scenes":
        split = split or "test"
        examples = source._scenes(split, range(limit))
    else:
        split = "val"
        examples = source.val(limit)
    labels = np.array([ex.label for ex in examples])
    answers = {r: [] for r in ratios}  # keep ratio -> (exits, N) argmax
    answers_of_teacher: list[np.ndarray] = []
    reference, teacher_note = teacher or (None, None)
    starts = range(0, len(examples), batch_size)
    for start in tqdm(starts, desc="eval", disable=not progress, leave=False, unit="batch"):
        chunk = examples[start: start + batch_size]
        inputs = preprocessor.encode([tuple(materialise(im) for im in ex.images) for ex in chunk],
                                     [ex.text for ex in chunk])
        for r in ratios:
            out = model(**inputs, keep_ratio=r)
            answers[r].append(np.stack([lg.argmax(-1).numpy() for lg in out.logits]))
        if reference is not None:
            answers_of_teacher.append(reference(**inputs, keep_ratio=1.0).logits[-1].argmax(-1).numpy())
        elif 1.0 in answers:  # the model's own final exit at keep 1.0: just computed
            answers_of_teacher.append(answers[1.0][-1][-1])
        else:
            answers_of_teacher.append(model(**inputs, keep_ratio=1.0).logits[-1].argmax(-1).numpy())
    teacher_all = np.concatenate(answers_of_teacher)
    labelled = labels >= 0
    per_ratio = {}
    for r in ratios:
        got = np.concatenate(answers[r], axis=1)  # (exits, N)
        per_ratio[f"{r:g}"] = {
            "keep_ratio": r, "visual_tokens": min(cfg.kept_tokens(r), cfg.num_patches),
            "exit_flops": exit_flops(model, r),
            "teacher_agreement_per_exit": (got == teacher_all).mean(axis=1).tolist(),
            "accuracy_per_exit": (got[:, labelled] == labels[labelled]).mean(axis=1).tolist() if labelled.any() else None,
        }
    return {"adapted": True, "task": cfg.task, "source_class": cfg.source_class, "data": data, "split": split,
            "samples": len(examples), "labelled": int(labelled.sum()), "data_seed": data_seed,
            "parameters": model.num_parameters(), "exit_layers": cfg.exits,
            "eval_seconds": time.perf_counter() - t0,
            "teacher": teacher_note or "the model's own final exit at keep ratio 1.0 (the pretrained model)",
            "teacher_accuracy": float((teacher_all[labelled] == labels[labelled]).mean()) if labelled.any() else None,
            "flops_counter": "torch.utils.flop_counter.FlopCounterMode (per sample, batch 1)",
            "keep_ratios": per_ratio}


def format_adapted(result: dict) -> str:
    n_exits = len(result["exit_layers"])
    lines = [f"adapted {result['source_class']} ({result['task']}) | {result['data']} {result['split']} | "
             f"{result['samples']} samples, {result['labelled']} labelled | {result['parameters'] / 1e6:.2f} M "
             f"parameters | exits after layers {[e + 1 for e in result['exit_layers']]}", ""]
    head = ["keep", "vis tokens"] + [f"exit {i + 1}" for i in range(n_exits)] + ["MFLOPs full"]
    agreement = f"Agreement with the teacher per exit (the teacher: {result['teacher']})"
    for key, title in (("teacher_agreement_per_exit", agreement),
                       ("accuracy_per_exit", "Accuracy per exit (labelled examples)")):
        rows = [[k, r["visual_tokens"]] + [f"{a:.3f}" for a in r[key]] + [f"{r['exit_flops'][-1] / 1e6:.1f}"]
                for k, r in result["keep_ratios"].items() if r[key] is not None]
        if rows:
            lines += [title, tabulate(rows, head, tablefmt="github"), ""]
    if result.get("teacher_accuracy") is not None:
        lines.append(f"The teacher's accuracy on the same examples: {result['teacher_accuracy']:.3f}")
    return "\n".join(lines).rstrip()

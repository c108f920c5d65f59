"""The full evaluation of a model on one split, as a JSON-ready dict and readable tables."""

from __future__ import annotations

import time

from tabulate import tabulate

from mmedge.data.tokenizer import WordTokenizer
from mmedge.evaluation import metrics
from mmedge.evaluation.predict import make_batches, random_prefilter, run_model
from mmedge.models.model import AdaptiveVLModel
from mmedge.train.flops import exit_flops


def evaluate(model: AdaptiveVLModel, tokenizer: WordTokenizer, split: str, limit: int, data_seed: int = 0,
             keep_ratios: list[float] | None = None, batch_size: int = 128, progress: bool = True,
             teacher: tuple | None = None) -> dict:
    """teacher: for a model adapted by `mmedge adapt`, (model or None, description) from
    mmedge.adapt.folder.pretrained_teacher."""
    from mmedge.export.stages import is_adapted

    if is_adapted(model):  # a folder written by `mmedge adapt`: `tokenizer` is its preprocessor
        from mmedge.evaluation.adapted import evaluate_adapted

        return evaluate_adapted(model, tokenizer, "scenes", split, limit, data_seed, keep_ratios,
                                progress=progress, teacher=teacher)
    cfg = model.config
    ratios = keep_ratios or cfg.keep_ratios
    t0 = time.perf_counter()
    batches = make_batches(cfg.task, data_seed, split, limit, tokenizer, cfg.image_size, batch_size)
    run = run_model(model, batches, ratios, progress=progress)
    reduced = [r for r in ratios if cfg.kept_tokens(r) < cfg.num_patches]
    with random_prefilter(model, seed=data_seed):
        baseline = run_model(model, batches, reduced, progress=progress)
    per_ratio = {}
    for r in ratios:
        flops = exit_flops(model, r)
        per_ratio[f"{r:g}"] = {
            "keep_ratio": r,
            "visual_tokens": cfg.kept_tokens(r),
            "exit_flops": flops,
            "accuracy_per_exit": metrics.accuracy_per_exit(run, r),
            "accuracy_per_qtype": metrics.accuracy_per_qtype(run, r),
            "prefilter": metrics.prefilter_recall(run, r, cfg.image_size, cfg.patch_size),
            "random_selection": None if r not in reduced else {
                "accuracy_per_exit": metrics.accuracy_per_exit(baseline, r),
                **metrics.prefilter_recall(baseline, r, cfg.image_size, cfg.patch_size)},
            "threshold_sweep": {src: metrics.threshold_sweep(run, r, flops, src) for src in ("learned", "max_prob")},
        }
    return {"task": cfg.task, "split": split, "samples": len(run.labels), "data_seed": data_seed,
            "parameters": model.num_parameters(), "exit_layers": cfg.exits, "eval_seconds": time.perf_counter() - t0,
            "flops_counter": "torch.utils.flop_counter.FlopCounterMode (per sample, batch 1)",
            "keep_ratios": per_ratio}


def format_report(result: dict) -> str:
    """Readable tables: accuracy per exit and keep ratio, per question type, threshold exiting."""
    if result.get("adapted"):
        from mmedge.evaluation.adapted import format_adapted

        return format_adapted(result)
    ratios = result["keep_ratios"]
    n_exits = len(result["exit_layers"])
    lines = [f"task {result['task']} | split {result['split']} | {result['samples']} samples | "
             f"{result['parameters'] / 1e6:.2f} M parameters | exits after layers "
             f"{[e + 1 for e in result['exit_layers']]}", ""]
    rows = []
    for key, r in ratios.items():
        pf = r["prefilter"]
        rnd = r["random_selection"]
        rows.append([key, r["visual_tokens"]] + [f"{a:.3f}" for a in r["accuracy_per_exit"]]
                    + [f"{r['exit_flops'][-1] / 1e6:.1f}",
                       "-" if pf is None else f"{pf['object_token_recall']:.3f}",
                       "-" if rnd is None else f"{rnd['accuracy_per_exit'][-1]:.3f}"])
    head = (["keep", "vis tokens"] + [f"exit {i + 1}" for i in range(n_exits)]
            + ["MFLOPs full", "obj recall", "random keep: last exit"])
    lines += ["Accuracy per exit and keep ratio", tabulate(rows, head, tablefmt="github"), ""]
    full = ratios[next(iter(ratios))]
    rows = [[q, v["n"]] + [f"{a:.3f}" for a in v["acc_per_exit"]] for q, v in full["accuracy_per_qtype"].items()]
    lines += [f"Accuracy per question type (keep {full['keep_ratio']:g})",
              tabulate(rows, ["type", "n"] + [f"exit {i + 1}" for i in range(n_exits)], tablefmt="github"), ""]
    rows = [[f"{s['threshold']:g}", f"{s['accuracy']:.3f}", f"{s['mean_exit'] + 1:.2f}",
             f"{s['mean_flops'] / 1e6:.1f}", f"{s['flops_fraction']:.2f}"]
            for s in full["threshold_sweep"]["learned"]]
    lines += [f"Confidence-threshold exiting, learned confidence (keep {full['keep_ratio']:g}); "
              "max-probability and other keep ratios in the JSON",
              tabulate(rows, ["threshold", "accuracy", "mean exit", "MFLOPs", "of full"], tablefmt="github")]
    return "\n".join(lines)

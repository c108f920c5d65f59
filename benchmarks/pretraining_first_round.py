"""The first round of the pretraining study, re-rendered from its committed JSON (nothing is measured).

    python benchmarks/pretraining_efficiency.py --report-only --out benchmarks/results/pretraining-round1
    python benchmarks/pretraining_efficiency.py --report-only --out benchmarks/results/pretraining-prelim

benchmarks/results/pretraining-prelim (one seed, VQA, commit 3e5680c) and pretraining-round1 (commit
233a9d2) were written by the benchmark's first design, before it was rebuilt around a unit ledger;
their JSON has per-variant curves instead of units. This module renders that format exactly as the
first design did. The two runs differ in one respect the renderer must know: the preliminary run's
targets were 95% of the best accuracy and its report had no sampling-error note, ablation table or
ratio bound; the first design's later version (round 1) added them. The preliminary JSON is the one
that records "seconds" (round 1 records "seconds_this_invocation").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def is_first_round(r: dict) -> bool:
    """Whether a pretraining_efficiency.json is in the first design's format (curves, no units)."""
    return "curves" in r and "collected" not in r


def _is_preliminary(r: dict) -> bool:
    return "seconds_this_invocation" not in r


def _binomial_se(p: float, n: int) -> float:
    return float(np.sqrt(p * (1 - p) / n))


def _ratio_bound(r: dict, task: str, seed: str) -> str:
    """When only mlm-mop reached the target: rwd-rod needed more than everything it was given."""
    mlm, rwd = r["reached"].get(f"mlm-mop/{seed}/{task}"), r["reached"].get(f"rwd-rod/{seed}/{task}")
    if not (mlm and rwd and mlm["flops"] is not None and rwd["flops"] is None):
        return "n/a (a variant did not reach it)"
    last = r["curves"][f"rwd-rod/{seed}"][-1]
    return (f"below {mlm['flops'] / last['pretrain_flops']:.2f}x, {mlm['wall_s'] / last['wall_s']:.2f}x "
            f"(rwd-rod had not reached it after {last['pretrain_flops'] / 1e12:.4g} TFLOPs, {last['wall_s']:.0f} s)")


def markdown(r: dict) -> str:
    from tabulate import tabulate

    prelim = _is_preliminary(r)
    lines = [f"# Pretraining efficiency{' (SMOKE: tiny sizes, not a result)' if r['smoke'] else ''}", "",
             f"Command: `{r['plan']['command']}`. " + r["note"] + ".", "",
             "No pretraining (floor): " + ", ".join(f"{t} {v['mean']:.3f}" for t, v in r["floor"].items()), ""]
    if not prelim:
        lines += [f"Every accuracy: the last exit with every visual token kept, on {r['plan']['eval_samples']} "
                  f"validation samples after {r['plan']['finetune_steps']} fine-tuning steps, seed(s) "
                  f"{r['plan']['seeds']}; the sampling error of one such figure is about "
                  f"+-{_binomial_se(0.6, r['plan']['eval_samples']):.3f} (binomial standard error at accuracy 0.6: "
                  "computed, not measured).", ""]
    rows = [[key, p["step"], f"{p['pretrain_flops'] / 1e12:.4g}", f"{p['wall_s']:.1f}",
             *[f"{p[f'acc_{t}']:.3f}" for t in r["tasks"]]] for key, pts in r["curves"].items() for p in pts]
    lines += [tabulate(rows, ["variant", "step", "pretrain TFLOPs", "wall s", *[f"val acc {t}" for t in r["tasks"]]],
                       tablefmt="github"), ""]
    shared = sorted(set.intersection(*[{p["step"] for p in pts} for pts in r["curves"].values()]))
    if not prelim and len(r["curves"]) > 2 and shared:  # the ablation: every variant at the steps they all reached
        rows = [[key, p["step"], *[f"{p[f'acc_{t}']:.3f}" for t in r["tasks"]]]
                for step in shared for key, pts in r["curves"].items() for p in pts if p["step"] == step]
        lines += ["Ablation, every variant at the same pretraining steps:", "",
                  tabulate(rows, ["variant", "step", *[f"val acc {t}" for t in r["tasks"]]], tablefmt="github"), ""]
    rows = [[k, f"{v['flops'] / 1e12:.4g}" if v["flops"] is not None else "not reached",
             f"{v['wall_s']:.1f}" if v["wall_s"] is not None else "not reached"] for k, v in r["reached"].items()]
    if prelim:
        targets = "Targets: " + ", ".join(f"{t} {v:.3f}" for t, v in r["targets"].items())
    else:
        targets = "Targets (default: halfway from the floor to the best pretrained accuracy): " + ", ".join(
            f"{t} {v:.3f}" if v is not None else f"{t}: none (no pretrained snapshot beat the floor)"
            for t, v in r["targets"].items())
    lines += [targets, "",
              tabulate(rows, ["variant/task", "TFLOPs to target", "seconds to target"], tablefmt="github"), "",
              "mlm-mop / rwd-rod (FLOPs, wall-clock) to the target: " + ", ".join(
                  f"{k}: " + (f"{v['flops']:.2f}x, {v['wall_s']:.2f}x" if v else
                              "n/a (a variant did not reach it)" if prelim else _ratio_bound(r, *k.split("/")))
                  for k, v in r["ratio_mlm_over_rwd"].items()), ""]
    return "\n".join(lines)


def plot(r: dict, path: Path) -> None:
    """Accuracy against pretraining FLOPs and seconds per variant, the floor and the target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mmedge.fileio import atomic_write

    tasks = r["tasks"]
    fig, axes = plt.subplots(2, len(tasks), figsize=(6 * len(tasks), 8), squeeze=False)
    for col, task in enumerate(tasks):
        for row, (key, label) in enumerate((("pretrain_flops", "pretraining FLOPs"), ("wall_s", "pretraining seconds"))):
            ax = axes[row][col]
            for name, pts in r["curves"].items():
                ax.plot([p[key] for p in pts], [p[f"acc_{task}"] for p in pts], marker="o", label=name)
            ax.axhline(r["floor"][task]["mean"], color="grey", ls="--", label="no pretraining")
            if r["targets"][task] is not None:
                ax.axhline(r["targets"][task], color="black", ls=":", label="target")
            ax.set(xlabel=label, ylabel=f"{task} val accuracy (after fine-tuning)", title=task)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)

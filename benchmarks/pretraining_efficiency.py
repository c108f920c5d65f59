"""Pretraining efficiency: rwd-rod against mlm-mop by FLOPs and wall-clock to a downstream accuracy.

    python benchmarks/pretraining_efficiency.py                 # the full run (hours here: run it with nohup)
    python benchmarks/pretraining_efficiency.py --smoke --out /tmp/pe   # the pipeline on tiny sizes (tests)

Re-running with the same settings resumes: every finished pretraining run and fine-tune keeps its
result (benchmark_result.json in its folder, keyed by its exact settings) and is not run again.

Every variant (rwd-rod, mlm-mop, and the ablations rwd-text-only / rwd-visual-only) pretrains the
same encoder on the same caption data, saving snapshots along the way; every snapshot (and a
no-pretraining floor) is fine-tuned the same way on downstream VQA and statement verification and
scored on their validation splits. From the curves of accuracy against pretraining FLOPs and
wall-clock it reports, per task, the FLOPs and seconds each variant needs to reach the target
accuracy (linear interpolation between snapshots; "not reached" otherwise) and their ratio.
Writes results JSON, Markdown and PNG plots into --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mmedge.fileio import atomic_write  # noqa: E402

VARIANTS = {
    "rwd-rod": {"objective": "rwd-rod"},
    "mlm-mop": {"objective": "mlm-mop"},
    "rwd-text-only": {"objective": "rwd-rod", "replace_visual": False},
    "rwd-visual-only": {"objective": "rwd-rod", "replace_text": False},
}
FULL = dict(model={"dim": 128, "depth": 4, "num_heads": 4, "image_size": 96, "patch_size": 16, "max_text_len": 24,
                   "patch_embed": "conv_stem", "exit_pool": "text", "keep_ratios": [1.0, 0.5, 0.25]},
            pretrain_steps=2000, snapshot_every=500, batch_size=64, finetune_steps=600, finetune_batch=64,
            eval_samples=512, ablation_steps=1000, seeds=[0])
SMOKE = dict(model={"dim": 32, "depth": 2, "num_heads": 2, "image_size": 48, "patch_size": 8, "max_text_len": 24,
                    "patch_embed": "conv_stem", "exit_pool": "text", "keep_ratios": [1.0]},
             pretrain_steps=4, snapshot_every=2, batch_size=4, finetune_steps=3, finetune_batch=4,
             eval_samples=16, ablation_steps=2, seeds=[0])


def cached(directory: Path, key: dict, compute):
    """compute() once per (directory, key): a finished run's result is reused when the benchmark is
    re-run with the same settings (so an interrupted benchmark resumes), recomputed otherwise."""
    done = directory / "benchmark_result.json"
    if done.exists():
        saved = json.loads(done.read_text())
        if saved.get("key") == key:
            print(f"reusing {directory} (finished earlier with the same settings)", flush=True)
            return saved["value"]
    value = compute()
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write(done, lambda p: p.write_text(json.dumps({"key": key, "value": value})))
    return value


def pretrain(variant: str, seed: int, plan: dict, out: Path, progress: bool) -> list[dict]:
    """Run one variant; returns its snapshots (and final encoder) with FLOPs and wall-clock."""
    from mmedge.pretrain.config import PretrainConfig

    steps = plan["pretrain_steps"] if variant in ("rwd-rod", "mlm-mop") else plan["ablation_steps"]
    cfg = PretrainConfig(**VARIANTS[variant], seed=seed, steps=steps, batch_size=plan["batch_size"],
                         warmup_steps=max(1, steps // 10), snapshot_every=plan["snapshot_every"],
                         log_every=max(1, plan["snapshot_every"] // 4), model=plan["model"])
    run_dir = out / "runs" / f"{variant}-seed{seed}"
    return cached(run_dir, {"pretrain": cfg.to_dict()},
                  lambda: _pretrain_points(cfg, run_dir, progress))


def _pretrain_points(cfg, run_dir: Path, progress: bool) -> list[dict]:
    from mmedge.pretrain.trainer import Pretrainer

    Pretrainer(cfg, run_dir, force=True, progress=progress).fit()
    points = []
    for d in sorted((run_dir / "snapshots").glob("step-*")) + [run_dir]:
        state = json.loads((d / "pretrain_state.json").read_text())
        points.append({"dir": str(d), "step": state["step"], "pretrain_flops": state["pretrain_flops"],
                       "wall_s": state["wall_s"]})
    return points


def finetune(init: str | None, task: str, seed: int, plan: dict, out: Path, progress: bool) -> float:
    """Fine-tune (or train from scratch) on `task`; validation accuracy of the last exit, keep 1.0."""
    from mmedge.train.config import TrainConfig
    from mmedge.train.trainer import Trainer

    steps = plan["finetune_steps"]
    cfg = TrainConfig(task=task, seed=seed, steps=steps, batch_size=plan["finetune_batch"], lr=1e-3,
                      warmup_steps=max(1, steps // 10), eval_every=steps, eval_samples=plan["eval_samples"],
                      checkpoint_every=steps, log_every=max(1, steps // 4), model=plan["model"])
    key = {"finetune": repr(cfg), "init": init, "init_state": _state_of(init)}
    return cached(out, key, lambda: float(
        Trainer(cfg, out, force=True, init_from=init, progress=progress).fit().final_val_accuracy[-1]))


def _state_of(init: str | None) -> str | None:
    """The initialising snapshot's own record, so a re-pretrained encoder is never mistaken for the old one."""
    if init is None:
        return None
    state = Path(init) / "pretrain_state.json"
    return state.read_text() if state.exists() else None


def reach(points: list[dict], key: str, target: float, acc_key: str) -> float | None:
    """The `key` (FLOPs or seconds) at which accuracy first reaches target, linearly interpolated."""
    prev = None
    for p in points:
        if p[acc_key] >= target:
            if prev is None:
                return float(p[key])
            frac = (target - prev[acc_key]) / max(p[acc_key] - prev[acc_key], 1e-12)
            return float(prev[key] + frac * (p[key] - prev[key]))
        prev = p
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the pipeline in a minute")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "pretraining"))
    parser.add_argument("--work", help="where runs go (default: OUT/work, not committed)")
    parser.add_argument("--tasks", nargs="+", default=["vqa", "verify"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument("--target", type=float, nargs="+", help="target accuracy per task (default: 95%% of "
                        "the best accuracy any pretrained variant reached on it)")
    parser.add_argument("--pretrain-steps", type=int, help="override the plan's pretraining steps")
    parser.add_argument("--snapshot-every", type=int, help="override the plan's snapshot interval")
    parser.add_argument("--finetune-steps", type=int, help="override the plan's fine-tuning steps")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    plan = dict(SMOKE if args.smoke else FULL)
    if args.seeds:
        plan["seeds"] = args.seeds
    for key in ("pretrain_steps", "snapshot_every", "finetune_steps"):
        if getattr(args, key) is not None:
            plan[key] = getattr(args, key)
    plan["command"] = " ".join(["python", "benchmarks/pretraining_efficiency.py", *(argv or sys.argv[1:])])
    out = Path(args.out)
    work = Path(args.work) if args.work else out / "work"
    started = time.perf_counter()
    progress = not args.no_progress
    curves: dict[str, list[dict]] = {}
    floor = {}
    for task in args.tasks:
        accs = [finetune(None, task, s, plan, work / "finetune" / f"none-{task}-seed{s}", progress)
                for s in plan["seeds"]]
        floor[task] = {"mean": float(np.mean(accs)), "per_seed": accs}
        print(f"no pretraining, {task}: {floor[task]['mean']:.3f}", flush=True)
    for variant in args.variants:
        for seed in plan["seeds"]:
            points = pretrain(variant, seed, plan, work, progress)
            for p in points:
                for task in args.tasks:
                    name = f"{variant}-seed{seed}-{Path(p['dir']).name}-{task}"
                    p[f"acc_{task}"] = finetune(p["dir"], task, seed, plan, work / "finetune" / name, progress)
                print(f"{variant} seed {seed} step {p['step']}: " + ", ".join(
                    f"{t} {p[f'acc_{t}']:.3f}" for t in args.tasks), flush=True)
            curves[f"{variant}/seed{seed}"] = points
    targets = dict(zip(args.tasks, args.target)) if args.target else {
        t: 0.95 * max(p[f"acc_{t}"] for pts in curves.values() for p in pts) for t in args.tasks}
    reached = {}
    for task in args.tasks:
        for key, pts in curves.items():
            reached[f"{key}/{task}"] = {"flops": reach(pts, "pretrain_flops", targets[task], f"acc_{task}"),
                                        "wall_s": reach(pts, "wall_s", targets[task], f"acc_{task}")}
    ratios = {}
    for task in args.tasks:
        for seed in plan["seeds"]:
            a, b = reached.get(f"mlm-mop/seed{seed}/{task}"), reached.get(f"rwd-rod/seed{seed}/{task}")
            if a and b and a["flops"] and b["flops"] and a["wall_s"] and b["wall_s"]:
                ratios[f"{task}/seed{seed}"] = {"flops": a["flops"] / b["flops"], "wall_s": a["wall_s"] / b["wall_s"]}
            else:
                ratios[f"{task}/seed{seed}"] = None
    result = {"smoke": args.smoke, "plan": plan, "tasks": args.tasks, "targets": targets, "floor": floor,
              "curves": curves, "reached": reached, "ratio_mlm_over_rwd": ratios,
              "seconds": time.perf_counter() - started,
              "note": "FLOPs counted by torch.utils.flop_counter (generator included); wall-clock on this machine"}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "pretraining_efficiency.json", lambda p: p.write_text(json.dumps(result, indent=1) + "\n"))
    atomic_write(out / "pretraining_efficiency.md", lambda p: p.write_text(markdown(result) + "\n"))
    plot(result, out / "pretraining_efficiency.png")
    print(markdown(result))
    return 0


def markdown(r: dict) -> str:
    from tabulate import tabulate

    lines = [f"# Pretraining efficiency{' (SMOKE: tiny sizes, not a result)' if r['smoke'] else ''}", "",
             f"Command: `{r['plan']['command']}`. " + r["note"] + ".", "",
             "No pretraining (floor): " + ", ".join(f"{t} {v['mean']:.3f}" for t, v in r["floor"].items()), ""]
    rows = []
    for key, pts in r["curves"].items():
        for p in pts:
            rows.append([key, p["step"], f"{p['pretrain_flops'] / 1e12:.4g}", f"{p['wall_s']:.1f}",
                         *[f"{p[f'acc_{t}']:.3f}" for t in r["tasks"]]])
    lines += [tabulate(rows, ["variant", "step", "pretrain TFLOPs", "wall s", *[f"val acc {t}" for t in r["tasks"]]],
                       tablefmt="github"), ""]
    rows = [[k, f"{v['flops'] / 1e12:.4g}" if v["flops"] is not None else "not reached",
             f"{v['wall_s']:.1f}" if v["wall_s"] is not None else "not reached"] for k, v in r["reached"].items()]
    lines += ["Targets: " + ", ".join(f"{t} {v:.3f}" for t, v in r["targets"].items()), "",
              tabulate(rows, ["variant/task", "TFLOPs to target", "seconds to target"], tablefmt="github"), "",
              "mlm-mop / rwd-rod (FLOPs, wall-clock) to the target: " + ", ".join(
                  f"{k}: " + (f"{v['flops']:.2f}x, {v['wall_s']:.2f}x" if v else "n/a (a variant did not reach it)")
                  for k, v in r["ratio_mlm_over_rwd"].items()), ""]
    return "\n".join(lines)


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = r["tasks"]
    fig, axes = plt.subplots(2, len(tasks), figsize=(6 * len(tasks), 8), squeeze=False)
    for col, task in enumerate(tasks):
        for row, (key, label) in enumerate((("pretrain_flops", "pretraining FLOPs"), ("wall_s", "pretraining seconds"))):
            ax = axes[row][col]
            for name, pts in r["curves"].items():
                ax.plot([p[key] for p in pts], [p[f"acc_{task}"] for p in pts], marker="o", label=name)
            ax.axhline(r["floor"][task]["mean"], color="grey", ls="--", label="no pretraining")
            ax.axhline(r["targets"][task], color="black", ls=":", label="target")
            ax.set(xlabel=label, ylabel=f"{task} val accuracy (after fine-tuning)", title=task)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())

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
accuracy (linear interpolation between snapshots, the curve starting at the floor with no
pretraining; "not reached" otherwise) and their ratio. The default target is halfway from the
floor to the best accuracy any pretrained snapshot reached, so it always asks for a gain.
Writes results JSON, Markdown and PNG plots into --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
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


def finetune(init: str | None, task: str, seed: int, plan: dict, out: Path, progress: bool,
             threads: int | None = None) -> float:
    """Fine-tune (or train from scratch) on `task`; validation accuracy of the last exit, keep 1.0."""
    from mmedge.train.config import TrainConfig
    from mmedge.train.trainer import Trainer

    steps = plan["finetune_steps"]
    cfg = TrainConfig(task=task, seed=seed, steps=steps, batch_size=plan["finetune_batch"], lr=1e-3,
                      warmup_steps=max(1, steps // 10), eval_every=steps, eval_samples=plan["eval_samples"],
                      checkpoint_every=steps, log_every=max(1, steps // 4), model=plan["model"], threads=threads)
    key = {"finetune": repr(dataclasses.replace(cfg, threads=None)), "init": init, "init_state": _state_of(init)}
    return cached(out, key, lambda: float(
        Trainer(cfg, out, force=True, init_from=init, progress=progress).fit().final_val_accuracy[-1]))


def run_finetunes(jobs: list[tuple], workers: int, progress: bool) -> list[float]:
    """finetune(*job) for every job, `workers` at a time (each in its own process with
    cores / workers threads); results in the order of `jobs`. Only pretraining's wall-clock is
    reported, so fine-tunes may share the machine: their accuracies do not depend on it."""
    from tqdm.auto import tqdm

    if workers <= 1 or len(jobs) <= 1:
        return [finetune(*job, progress) for job in tqdm(jobs, desc="fine-tunes", disable=not progress)]
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch thread pools
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        futures = {pool.submit(finetune, *job, False, threads): i for i, job in enumerate(jobs)}
        results: list[float] = [0.0] * len(jobs)
        for done, future in enumerate(as_completed(futures), 1):
            i = futures[future]
            results[i] = future.result()
            print(f"fine-tune {done}/{len(jobs)}: {Path(jobs[i][4]).name} {results[i]:.3f}", flush=True)
    return results


def _state_of(init: str | None) -> str | None:
    """The initialising snapshot's own record, so a re-pretrained encoder is never mistaken for the old one."""
    if init is None:
        return None
    state = Path(init) / "pretrain_state.json"
    return state.read_text() if state.exists() else None


def default_target(floor: float, best: float) -> float | None:
    """Halfway from the no-pretraining floor to the best pretrained accuracy; None when no
    pretrained snapshot beat the floor (then there is nothing for pretraining to reach)."""
    return floor + 0.5 * (best - floor) if best > floor else None


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
    parser.add_argument("--target", type=float, nargs="+", help="target accuracy per task (default: halfway "
                        "from the no-pretraining floor to the best accuracy any pretrained snapshot reached)")
    parser.add_argument("--pretrain-steps", type=int, help="override the plan's pretraining steps")
    parser.add_argument("--snapshot-every", type=int, help="override the plan's snapshot interval")
    parser.add_argument("--finetune-steps", type=int, help="override the plan's fine-tuning steps")
    parser.add_argument("--jobs", type=int, default=2, help="fine-tunes run this many at a time (pretraining "
                        "always runs alone, since its wall-clock is measured)")
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
    seed_of: dict[str, int] = {}
    for variant in args.variants:  # one at a time, all cores: their wall-clock is a result
        for seed in plan["seeds"]:
            key = f"{variant}/seed{seed}"
            curves[key], seed_of[key] = pretrain(variant, seed, plan, work, progress), seed
    jobs, slots = [], []  # every fine-tune: the floor's, then every snapshot's
    for task in args.tasks:
        for s in plan["seeds"]:
            jobs.append((None, task, s, plan, work / "finetune" / f"none-{task}-seed{s}"))
            slots.append(("floor", task))
    for key, points in curves.items():
        for p in points:
            for task in args.tasks:
                name = f"{key.replace('/', '-')}-{Path(p['dir']).name}-{task}"
                jobs.append((p["dir"], task, seed_of[key], plan, work / "finetune" / name))
                slots.append((p, task))
    floor_accs: dict[str, list[float]] = {t: [] for t in args.tasks}
    for (point, task), acc in zip(slots, run_finetunes(jobs, args.jobs, progress)):
        if point == "floor":
            floor_accs[task].append(acc)
        else:
            point[f"acc_{task}"] = acc
    floor = {t: {"mean": float(np.mean(a)), "per_seed": a} for t, a in floor_accs.items()}
    for key, points in curves.items():
        for p in points:
            print(f"{key} step {p['step']}: " + ", ".join(f"{t} {p[f'acc_{t}']:.3f}" for t in args.tasks), flush=True)
    targets = dict(zip(args.tasks, args.target)) if args.target else {
        t: default_target(floor[t]["mean"], max(p[f"acc_{t}"] for pts in curves.values() for p in pts))
        for t in args.tasks}
    reached = {}
    for task in args.tasks:
        origin = {"pretrain_flops": 0, "wall_s": 0.0, f"acc_{task}": floor[task]["mean"]}
        for key, pts in curves.items():
            reached[f"{key}/{task}"] = {
                name: None if targets[task] is None else reach([origin, *pts], field, targets[task], f"acc_{task}")
                for name, field in (("flops", "pretrain_flops"), ("wall_s", "wall_s"))}
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
              "seconds_this_invocation": time.perf_counter() - started,  # small when finished units were reused
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
             "No pretraining (floor): " + ", ".join(f"{t} {v['mean']:.3f}" for t, v in r["floor"].items()), "",
             f"Every accuracy: the last exit with every visual token kept, on {r['plan']['eval_samples']} validation "
             f"samples after {r['plan']['finetune_steps']} fine-tuning steps, seed(s) {r['plan']['seeds']}; the "
             f"sampling error of one such figure is about +-{_binomial_se(0.6, r['plan']['eval_samples']):.3f} "
             "(binomial standard error at accuracy 0.6: computed, not measured).", ""]
    rows = []
    for key, pts in r["curves"].items():
        for p in pts:
            rows.append([key, p["step"], f"{p['pretrain_flops'] / 1e12:.4g}", f"{p['wall_s']:.1f}",
                         *[f"{p[f'acc_{t}']:.3f}" for t in r["tasks"]]])
    lines += [tabulate(rows, ["variant", "step", "pretrain TFLOPs", "wall s", *[f"val acc {t}" for t in r["tasks"]]],
                       tablefmt="github"), ""]
    shared = sorted(set.intersection(*[{p["step"] for p in pts} for pts in r["curves"].values()]))
    if len(r["curves"]) > 2 and shared:  # the ablation: every variant at the steps they all reached
        rows = [[key, p["step"], *[f"{p[f'acc_{t}']:.3f}" for t in r["tasks"]]]
                for step in shared for key, pts in r["curves"].items() for p in pts if p["step"] == step]
        lines += ["Ablation, every variant at the same pretraining steps:", "",
                  tabulate(rows, ["variant", "step", *[f"val acc {t}" for t in r["tasks"]]], tablefmt="github"), ""]
    rows = [[k, f"{v['flops'] / 1e12:.4g}" if v["flops"] is not None else "not reached",
             f"{v['wall_s']:.1f}" if v["wall_s"] is not None else "not reached"] for k, v in r["reached"].items()]
    lines += ["Targets (default: halfway from the floor to the best pretrained accuracy): " + ", ".join(
                  f"{t} {v:.3f}" if v is not None else f"{t}: none (no pretrained snapshot beat the floor)"
                  for t, v in r["targets"].items()), "",
              tabulate(rows, ["variant/task", "TFLOPs to target", "seconds to target"], tablefmt="github"), "",
              "mlm-mop / rwd-rod (FLOPs, wall-clock) to the target: " + ", ".join(
                  f"{k}: " + (f"{v['flops']:.2f}x, {v['wall_s']:.2f}x" if v else _ratio_bound(r, *k.split("/")))
                  for k, v in r["ratio_mlm_over_rwd"].items()), ""]
    return "\n".join(lines)


def _ratio_bound(r: dict, task: str, seed: str) -> str:
    """When only mlm-mop reached the target: rwd-rod needed more than everything it was given."""
    mlm, rwd = r["reached"].get(f"mlm-mop/{seed}/{task}"), r["reached"].get(f"rwd-rod/{seed}/{task}")
    if not (mlm and rwd and mlm["flops"] is not None and rwd["flops"] is None):
        return "n/a (a variant did not reach it)"
    last = r["curves"][f"rwd-rod/{seed}"][-1]
    return (f"below {mlm['flops'] / last['pretrain_flops']:.2f}x, {mlm['wall_s'] / last['wall_s']:.2f}x "
            f"(rwd-rod had not reached it after {last['pretrain_flops'] / 1e12:.4g} TFLOPs, {last['wall_s']:.0f} s)")


def _binomial_se(p: float, n: int) -> float:
    return float(np.sqrt(p * (1 - p) / n))


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
            if r["targets"][task] is not None:
                ax.axhline(r["targets"][task], color="black", ls=":", label="target")
            ax.set(xlabel=label, ylabel=f"{task} val accuracy (after fine-tuning)", title=task)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())

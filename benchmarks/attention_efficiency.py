"""Attention efficiency: full, lowrank and crossmodal attention at 36, 144 and 576 visual tokens.

    python benchmarks/attention_efficiency.py            # the full run (~25-30 min on 2 cores: use nohup)
    python benchmarks/attention_efficiency.py --quick --out /tmp/ae   # tiny sizes, the pipeline only (tests)
    python benchmarks/attention_efficiency.py --report-only [--out benchmarks/results/attention/dim64]
                                                         # the Markdown and figure again from the committed JSON

For every (variant, visual tokens) cell, each unit in a fresh subprocess (so that peak memory and
thread pools never mix between cells), one process at a time:

1. training (the Trainer's own step, batch 32, torch threads 2, keep ratio 1.0 only): wall-clock of
   every step (median and p10-p90 over the steps after the warm-up; the data generation inside
   the step is timed too and reported apart), FLOPs of one training step (FlopCounterMode, as the
   trainer counts them), peak resident memory of the training process (getrusage ru_maxrss, read
   before the first validation, so it is the training step's peak, not evaluation's) and the
   resident memory before the first step;
2. final-exit validation accuracy on 512 validation samples at checkpoints. `full` trains S steps
   (the plan's steps per token count); `lowrank` and `crossmodal` train at least S steps and on
   until their summed training-step time reaches the time `full` took (capped at budget_cap x S
   steps). Accuracy at equal steps = at step S; at equal wall-clock = linearly interpolated between
   the checkpoints that bracket full's training time. The learning rate is constant after a
   linear warm-up (min_lr_ratio 1.0), so a longer run's first S steps are exactly the shorter run.
3. export (onnx + executorch, fp32, keep ratio 1.0, parity-checked by the exporter) and batch-1
   latency at full depth (Policy "full") through `mmedge.runtime.Engine` with one thread: median,
   p10, p90 of the total and of every stage from `Prediction.timings_ms`.

Speed-ups are ratios of medians measured in this same run. Re-running with the same settings
resumes: every finished unit keeps its result (benchmark_result.json in its folder under --work,
keyed by its exact settings and a hash of the source it runs: mmedge/models, train and data for
training, mmedge/export and runtime for the export) and is not run again. Writes attention_efficiency.{json,md,png} into --out.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mmedge.fileio import atomic_write  # noqa: E402
from pretraining_efficiency import cached  # noqa: E402  (the resumable-unit cache both benchmarks use)

VARIANTS = ["full", "lowrank", "crossmodal"]
FULL = dict(model={"dim": 128, "depth": 4, "num_heads": 4, "image_size": 96, "max_text_len": 24,
                   "patch_embed": "linear", "exit_pool": "text", "keep_ratios": [1.0]},
            patches=[16, 8, 4], steps={16: 150, 8: 60, 4: 20}, checkpoints=4, batch_size=32, lr=1e-3,
            eval_samples=512, warmup_steps_timed=2, budget_cap=3, threads=2,
            latency_runs=100, latency_warmup=10, parity_samples=4, targets=["onnx", "executorch"])
QUICK = dict(model={"dim": 32, "depth": 2, "num_heads": 2, "image_size": 48, "max_text_len": 24,
                    "patch_embed": "linear", "exit_pool": "text", "keep_ratios": [1.0]},
             patches=[16, 8, 4], steps={16: 4, 8: 4, 4: 4}, checkpoints=2, batch_size=4, lr=1e-3,
             eval_samples=16, warmup_steps_timed=1, budget_cap=2, threads=2,
             latency_runs=5, latency_warmup=1, parity_samples=1, targets=["onnx"], in_process=True)


def in_subprocess(plan: dict, fn, *args):
    """fn(*args) in a fresh interpreter (spawn): its own peak RSS, its own thread pools. --quick runs
    in this process instead (its peaks then mix: the smoke run checks the pipeline, not the numbers)."""
    if plan.get("in_process"):
        return fn(*args)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_die_with_parent) as pool:
        return pool.submit(fn, *args).result()


def _die_with_parent() -> None:
    """Linux: the unit's process gets SIGTERM when the benchmark that started it dies. A unit left
    running after its parent was killed would otherwise train on beside the next run's units and
    skew their timings (it did once: a 286 against 184 ms training step)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def source_hash(*packages: str) -> str:
    """sha256 of every .py file under the given mmedge subpackages: a unit's key changes with its code."""
    import hashlib

    digest = hashlib.sha256()
    for package in packages:
        for path in sorted((ROOT / "mmedge" / package).rglob("*.py")):
            digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _rel(path) -> str:
    """A path relative to the repository when it is inside it (results name no host paths)."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return Path(path).name


def _pct(values_ms) -> dict:
    a = np.asarray(values_ms, dtype=np.float64)
    p10, p50, p90 = np.percentile(a, [10, 50, 90])
    return {"n": int(a.size), "p10_ms": float(p10), "median_ms": float(p50), "p90_ms": float(p90),
            "mean_ms": float(a.mean())}


def _rss_now_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# ---------------------------------------------------------------------------------------- units
def train_unit(variant: str, patch: int, plan: dict, run_dir: str, steps: int, budget_s: float | None) -> dict:
    """Train one cell (in its own process): per-step times, FLOPs, peak RSS, accuracy curve, model saved."""
    import torch

    torch.set_num_threads(plan["threads"])
    import mmedge.train.trainer as trainer_mod

    data_s = [0.0]

    def timed(fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                data_s[0] += time.perf_counter() - t
        return wrapper

    originals = trainer_mod.generate, trainer_mod.build_batch
    trainer_mod.generate = timed(originals[0])  # the step's data generation, timed apart
    trainer_mod.build_batch = timed(originals[1])
    try:
        return _train(variant, patch, plan, run_dir, steps, budget_s, trainer_mod, data_s)
    finally:
        trainer_mod.generate, trainer_mod.build_batch = originals


def _train(variant, patch, plan, run_dir, steps, budget_s, trainer_mod, data_s) -> dict:
    import resource

    from mmedge.evaluation.predict import make_batches
    from mmedge.models.checkpoint import save_pretrained
    from mmedge.train.config import TrainConfig
    from mmedge.train.flops import count_flops, stage_flops

    cfg = TrainConfig(task="vqa", seed=0, data_seed=0, steps=steps, batch_size=plan["batch_size"], lr=plan["lr"],
                      min_lr_ratio=1.0, warmup_steps=max(1, plan["steps"][patch] // 10), train_keep_ratios=[1.0],
                      eval_samples=plan["eval_samples"], eval_every=steps, checkpoint_every=steps, log_every=steps,
                      threads=plan["threads"], model={**plan["model"], "patch_size": patch, "attention": variant})
    run_dir = Path(run_dir)
    tr = trainer_mod.Trainer(cfg, run_dir / "trainer", force=True, progress=False)
    tr.val_batches = make_batches("vqa", cfg.data_seed, "val", cfg.eval_samples, tr.tokenizer,
                                  tr.model.config.image_size, 32, cfg.max_objects)  # batch 32: light on memory
    s_equal = plan["steps"][patch]
    every = max(1, s_equal // plan["checkpoints"])
    cap = steps if budget_s is None else plan["budget_cap"] * s_equal
    rss_before = _rss_now_mb()
    step_ms, data_ms, curve, cum, peak_mb = [], [], [], 0.0, None

    def validate():
        acc = tr._validate()["val_acc_keep_1"][-1]
        curve.append({"step": tr.step, "train_s": cum, "acc": float(acc)})
        print(f"  {variant} p{patch} step {tr.step}: train {cum:.1f} s, val acc {acc:.3f}", flush=True)

    validate()  # step 0: the untrained model
    while True:
        for group in tr.optimizer.param_groups:
            group["lr"] = cfg.lr * trainer_mod.lr_factor(tr.step, cfg)
        data_s[0] = 0.0
        t = time.perf_counter()
        tr._train_step(1.0)
        dt = time.perf_counter() - t
        step_ms.append(dt * 1e3)
        data_ms.append(data_s[0] * 1e3)
        cum += dt
        tr.step += 1
        if tr.step % every == 0 or tr.step == s_equal:
            if peak_mb is None:
                peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before any validation
            validate()
        done = tr.step >= steps if budget_s is None else (tr.step >= s_equal and cum >= budget_s) or tr.step >= cap
        if done:
            if curve[-1]["step"] != tr.step:
                validate()
            break
    save_pretrained(tr.model, tr.tokenizer, run_dir / "model")
    with count_flops() as cost:  # one more step, after the model is saved, counted as the trainer counts
        tr._train_step(1.0)
    w = plan["warmup_steps_timed"]
    measured = step_ms[w:s_equal]
    compute = [a - b for a, b in zip(step_ms[w:s_equal], data_ms[w:s_equal])]
    fwd = stage_flops(tr.model, 1.0)
    return {"variant": variant, "patch": patch, "visual_tokens": tr.model.config.num_patches,
            "steps_run": tr.step, "steps_equal": s_equal, "cap_steps": cap, "warmup_steps_excluded": w,
            "step_time": _pct(measured), "step_compute_time": _pct(compute), "step_data_time": _pct(data_ms[w:s_equal]),
            "train_flops_per_step": int(cost["flops"]), "inference_flops_per_sample": int(sum(fwd)),
            "peak_rss_mb": peak_mb, "rss_before_training_mb": rss_before, "train_s_total": cum,
            "train_s_at_equal_steps": float(sum(step_ms[:s_equal]) / 1e3), "curve": curve,
            "params": int(sum(p.numel() for p in tr.model.parameters()))}


def export_unit(model_dir: str, bundle: str, plan: dict) -> dict:
    """Export one trained cell and time batch-1 full-depth predictions per backend (own process)."""
    import torch

    torch.set_num_threads(plan["threads"])
    from mmedge.data.batches import generate
    from mmedge.export.exporter import export_bundle
    from mmedge.export.recipe import ExportRecipe
    from mmedge.runtime.backends.executorch_backend import set_executorch_threads
    from mmedge.runtime.controller import Policy
    from mmedge.runtime.engine import Engine

    set_executorch_threads(1, missing_ok=True)  # before the export's parity check runs a program
    recipe = ExportRecipe(targets=list(plan["targets"]), keep_ratios=[1.0], in_graph=False, ort_format=False,
                          parity_samples=plan["parity_samples"])
    t = time.perf_counter()
    export_bundle(model_dir, bundle, recipe, force=True, log=lambda *a: None)
    export_s = time.perf_counter() - t
    image_size = plan["model"]["image_size"]
    samples = generate("vqa", 0, "test", range(32), image_size)
    backends = {"onnx": "onnxruntime", "executorch": "executorch"}
    out = {"export_s": export_s}
    for target in plan["targets"]:
        engine = Engine.load(bundle, backend=backends[target], threads=1)
        policy = Policy("full")
        for i in range(plan["latency_warmup"]):
            s = samples[i % len(samples)]
            engine.predict(s.image, s.text, policy=policy)
        totals, stages = [], {}
        for i in range(plan["latency_runs"]):
            s = samples[i % len(samples)]
            p = engine.predict(s.image, s.text, policy=policy)
            totals.append(p.timings_ms["total"])
            model_ms = 0.0
            for name, ms in p.timings_ms.items():
                if name != "total":
                    stages.setdefault(name, []).append(ms)
                    if name != "preprocess":
                        model_ms += ms
            stages.setdefault("stages_sum", []).append(model_ms)
        assert p.exit_index == len(engine.manifest["exit_layers"]) - 1, "Policy('full') must run every stage"
        out[backends[target]] = {"total": _pct(totals), "stages": {k: _pct(v) for k, v in stages.items()}}
        del engine
    return out


# ---------------------------------------------------------------------------------------- analysis
def acc_at_time(curve: list[dict], budget_s: float) -> tuple[float, bool]:
    """Accuracy at `budget_s` of training time, linearly interpolated between checkpoints; (value,
    reached) where reached is False when the run stopped (cap) before the budget: then its last value."""
    prev = None
    for p in curve:
        if p["train_s"] >= budget_s:
            if prev is None:
                return p["acc"], True
            f = (budget_s - prev["train_s"]) / max(p["train_s"] - prev["train_s"], 1e-12)
            return prev["acc"] + f * (p["acc"] - prev["acc"]), True
        prev = p
    return curve[-1]["acc"], False


def acc_at_step(curve: list[dict], step: int) -> float:
    for p in curve:
        if p["step"] == step:
            return p["acc"]
    raise KeyError(step)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few steps: the pipeline only")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "attention"))
    parser.add_argument("--work", default=None, help="finished units are cached here (default runs/attention-efficiency)")
    parser.add_argument("--threads", type=int, help="torch threads for training (default 2; on a machine "
                        "another process keeps busy, 2 threads wait on each other: use 1)")
    parser.add_argument("--dim", type=int, help="model width (default 128, the shipped model's; heads stay 4): "
                        "attention's share of the cost grows as the width shrinks")
    parser.add_argument("--patches", help="comma-separated patch sizes to run (default 16,8,4 = 36, 144, 576 tokens)")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite OUT's Markdown and figure from its JSON; train and measure nothing")
    args = parser.parse_args(argv)
    if args.report_only:
        print("wrote " + ", ".join(map(str, report_only(Path(args.out)))))
        return 0
    plan = json.loads(json.dumps(QUICK if args.quick else FULL))
    if args.threads:
        plan["threads"] = args.threads
    if args.dim:
        plan["model"]["dim"] = args.dim
    if args.patches:
        plan["patches"] = [int(x) for x in args.patches.split(",")]
    plan["steps"] = {int(k): v for k, v in plan["steps"].items()}
    out = Path(args.out)
    suffix = ("-quick" if args.quick else "") + (f"-dim{args.dim}" if args.dim else "")
    work = Path(args.work) if args.work else ROOT / "runs" / ("attention-efficiency" + suffix)
    command = " ".join(["python", "benchmarks/attention_efficiency.py", *(["--quick"] if args.quick else []),
                        *([f"--threads {args.threads}"] if args.threads else []),
                        *([f"--dim {args.dim}"] if args.dim else []), *([f"--patches {args.patches}"] if args.patches else []),
                        *([f"--out {_rel(out)}"] if args.out != parser.get_default("out") else [])])
    started = time.perf_counter()
    from mmedge.bench.machine import describe

    train_code, export_code = source_hash("models", "train", "data"), source_hash("export", "runtime")
    cells: dict[str, dict] = {}
    for patch in plan["patches"]:
        budget = None
        for variant in VARIANTS:  # full first: its training time is the others' budget
            d = work / f"p{patch}-{variant}"
            key_plan = {k: v for k, v in plan.items() if k not in ("latency_runs", "latency_warmup", "targets",
                                                                 "parity_samples")}
            key = {"unit": "train", "variant": variant, "patch": patch, "plan": json.dumps(key_plan, sort_keys=True),
                   "budget_s": budget, "code": train_code}
            steps = plan["steps"][patch]
            print(f"train {variant} at patch {patch} px ...", flush=True)
            tr = cached(d / "train", key, lambda: in_subprocess(plan, train_unit, variant, patch, plan, str(d / "train"),
                                                                 steps, budget))
            if variant == "full":
                budget = tr["train_s_total"]
            print(f"export {variant} at patch {patch} px ...", flush=True)
            ekey = {"unit": "export", "train": key, "train_s": tr["train_s_total"], "targets": plan["targets"], "code": export_code,
                    "runs": plan["latency_runs"], "warmup": plan["latency_warmup"], "parity": plan["parity_samples"]}
            ex = cached(d / "export", ekey, lambda: in_subprocess(plan, export_unit, str(d / "train" / "model"),
                                                                  str(d / "export" / "bundle.mmedge"), plan))
            cells[f"{variant}/{tr['visual_tokens']}"] = {"train": tr, "export": ex}
    result = analyse(cells, plan)
    result.update({"quick": args.quick, "command": command, "plan": plan, "machine": describe(),
                   "seconds_this_invocation": time.perf_counter() - started, "cells": cells})
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "attention_efficiency.json", lambda p: p.write_text(json.dumps(result, indent=1) + "\n"))
    atomic_write(out / "attention_efficiency.md", lambda p: p.write_text(markdown(result) + "\n"))
    plot(result, out / "attention_efficiency.png")
    print(markdown(result))
    return 0


def report_only(out: Path) -> list[Path]:
    """Rewrite OUT/attention_efficiency.{md,png} from OUT/attention_efficiency.json (nothing is run)."""
    result = json.loads((out / "attention_efficiency.json").read_text())
    result["plan"]["steps"] = {int(k): v for k, v in result["plan"]["steps"].items()}  # JSON made the keys strings
    atomic_write(out / "attention_efficiency.md", lambda p: p.write_text(markdown(result) + "\n"))
    plot(result, out / "attention_efficiency.png")
    return [out / "attention_efficiency.md", out / "attention_efficiency.png"]


def analyse(cells: dict, plan: dict) -> dict:
    tokens = sorted({c["train"]["visual_tokens"] for c in cells.values()})
    backends = [b for b in ("onnxruntime", "executorch") if any(b in c["export"] for c in cells.values())]
    rows = {}
    for n in tokens:
        base = cells[f"full/{n}"]
        budget = base["train"]["train_s_total"]
        s = base["train"]["steps_equal"]
        for v in VARIANTS:
            c = cells[f"{v}/{n}"]
            tr, ex = c["train"], c["export"]
            acc_wall, reached = acc_at_time(tr["curve"], budget)
            row = {"variant": v, "visual_tokens": n, "steps_equal": s, "budget_s": budget,
                   "acc_equal_steps": acc_at_step(tr["curve"], s), "acc_equal_wall": acc_wall,
                   "equal_wall_reached": reached,
                   "step_speedup_vs_full": base["train"]["step_time"]["median_ms"] / tr["step_time"]["median_ms"],
                   "step_compute_speedup_vs_full": (base["train"]["step_compute_time"]["median_ms"]
                                                    / tr["step_compute_time"]["median_ms"]),
                   "flops_ratio_vs_full": base["train"]["train_flops_per_step"] / tr["train_flops_per_step"]}
            for b in backends:
                row[f"{b}_speedup_vs_full"] = (base["export"][b]["stages"]["stages_sum"]["median_ms"]
                                               / ex[b]["stages"]["stages_sum"]["median_ms"])
            row["acc_diff_equal_wall_points"] = 100 * (row["acc_equal_wall"] - rows.get(f"full/{n}", row)["acc_equal_wall"])
            row["acc_diff_equal_steps_points"] = 100 * (row["acc_equal_steps"]
                                                        - rows.get(f"full/{n}", row)["acc_equal_steps"])
            rows[f"{v}/{n}"] = row
    largest = tokens[-1]
    goal = {}
    for v in VARIANTS[1:]:
        r = rows[f"{v}/{largest}"]
        checks = {"train_step_2x": r["step_speedup_vs_full"] >= 2.0,
                  **{f"{b}_2x": r[f"{b}_speedup_vs_full"] >= 2.0 for b in backends},
                  "within_1_point_equal_wall": r["acc_diff_equal_wall_points"] >= -1.0}
        goal[v] = {"visual_tokens": largest, **checks, "met": all(checks.values())}
    crossover = {}
    for v in VARIANTS[1:]:
        crossover[v] = {}
        for metric in ["step_speedup_vs_full", *[f"{b}_speedup_vs_full" for b in backends]]:
            pays = [n for n in tokens if rows[f"{v}/{n}"][metric] > 1.0]
            crossover[v][metric] = _crossover(tokens, [rows[f"{v}/{n}"][metric] for n in tokens])
            crossover[v][metric + "_faster_at"] = pays
    return {"tokens": tokens, "backends": backends, "rows": rows, "goal": goal, "crossover": crossover}


def _crossover(tokens: list[int], speedups: list[float]) -> str:
    """Where the speed-up first crosses 1 (log-linear interpolation in the token count)."""
    if speedups[0] > 1.0:
        return f"faster already at {tokens[0]} tokens"
    for (n0, s0), (n1, s1) in zip(zip(tokens, speedups), zip(tokens[1:], speedups[1:])):
        if s0 <= 1.0 < s1:
            f = (1.0 - s0) / (s1 - s0)
            return f"~{np.exp(np.log(n0) + f * (np.log(n1) - np.log(n0))):.0f} tokens (between {n0} and {n1})"
    return f"not faster at any measured count (up to {tokens[-1]})"


def markdown(r: dict) -> str:
    from tabulate import tabulate

    p = r["plan"]
    steps = ", ".join(f"{(p['model']['image_size'] // k) ** 2} tokens: {s}" for k, s in p["steps"].items())
    lines = [f"# Attention efficiency{' (QUICK: tiny sizes, not a result)' if r['quick'] else ''}", "",
             f"Command: `{r['command']}`; {r['seconds_this_invocation'] / 60:.1f} min this invocation "
             "(small when finished units were reused). Machine: "
             f"{r['machine'].get('cpu', r['machine']) if isinstance(r['machine'], dict) else r['machine']}.", "",
             f"Model: dim {p['model']['dim']}, depth {p['model']['depth']}, {p['model']['num_heads']} heads, "
             f"{p['model']['image_size']} px images, linear patches of {' / '.join(str(k) for k in p['patches'])} px, "
             f"exit pool `{p['model']['exit_pool']}`, every token kept (keep ratio 1.0 only), task vqa, no tagging or "
             f"grounding losses. Training: batch {p['batch_size']}, AdamW lr {p['lr']} constant after a linear warm-up "
             f"of steps/10, one process, torch threads {p['threads']}. Steps S (equal-step point) per token count: "
             f"{steps}; `full` trains S steps, `lowrank` / `crossmodal` train on until their summed step time "
             f"reaches full's (at most {p['budget_cap']} x S steps). Validation: final exit, "
             f"{p['eval_samples']} val samples, at step 0 and every S/{p['checkpoints']} steps.", "",
             "Step time: median [p10-p90] over the steps after the first "
             f"{p['warmup_steps_timed']} (warm-up), up to S; the whole trainer step (data generation included: "
             "its own median is in the JSON, the same for every variant) and the step without data generation "
             "(`compute`). Peak RSS: getrusage ru_maxrss of the training subprocess before its first validation "
             "(RSS before the first step in brackets). FLOPs: FlopCounterMode over one training step (fwd + bwd), "
             "as the trainer counts them; inference FLOPs = one sample, full depth. Exported latency: batch 1, "
             f"one thread, Policy('full'), {p['latency_runs']} runs after {p['latency_warmup']} warm-up, the sum of "
             "the stage times (preprocessing excluded) median [p10-p90].", ""]
    rows = []
    for key, row in r["rows"].items():
        tr, ex = r["cells"][key]["train"], r["cells"][key]["export"]
        st, sc = tr["step_time"], tr["step_compute_time"]
        lat = [f"{ex[b]['stages']['stages_sum']['median_ms']:.2f} [{ex[b]['stages']['stages_sum']['p10_ms']:.2f}-"
               f"{ex[b]['stages']['stages_sum']['p90_ms']:.2f}]" for b in r["backends"]]
        rows.append([row["variant"], row["visual_tokens"],
                     f"{st['median_ms']:.0f} [{st['p10_ms']:.0f}-{st['p90_ms']:.0f}]",
                     f"{sc['median_ms']:.0f} [{sc['p10_ms']:.0f}-{sc['p90_ms']:.0f}]",
                     f"{tr['train_flops_per_step'] / 1e9:.2f}", f"{tr['inference_flops_per_sample'] / 1e6:.0f}",
                     f"{tr['peak_rss_mb']:.0f} ({tr['rss_before_training_mb']:.0f})", *lat])
    lines += ["## Cost", "", tabulate(rows, ["variant", "visual tokens", "train step ms", "compute ms",
                                             "train GFLOPs/step", "inference MFLOPs", "peak RSS MB",
                                             *[f"{b} full-depth ms" for b in r["backends"]]], tablefmt="github"), ""]
    rows = []
    for key, row in r["rows"].items():
        tr = r["cells"][key]["train"]
        rows.append([row["variant"], row["visual_tokens"], f"{row['step_speedup_vs_full']:.2f}x",
                     f"{row['step_compute_speedup_vs_full']:.2f}x", f"{row['flops_ratio_vs_full']:.2f}x",
                     *[f"{row[f'{b}_speedup_vs_full']:.2f}x" for b in r["backends"]],
                     f"{row['steps_equal']}: {row['acc_equal_steps']:.3f} ({row['acc_diff_equal_steps_points']:+.1f})",
                     f"{row['budget_s']:.0f} s: {row['acc_equal_wall']:.3f} ({row['acc_diff_equal_wall_points']:+.1f})"
                     + ("" if row["equal_wall_reached"] else " (cap: budget not reached)"),
                     f"{tr['steps_run']}"])
    lines += ["## Speed-up over full (ratios of medians, same run) and accuracy", "",
              tabulate(rows, ["variant", "visual tokens", "train step", "step compute", "FLOPs",
                              *[f"{b} full depth" for b in r["backends"]], "acc @ equal steps (diff, points)",
                              "acc @ equal wall-clock (diff, points)", "steps run"], tablefmt="github"), "",
              "Accuracy at equal wall-clock is linearly interpolated between validation checkpoints (summed "
              "training-step time, validation excluded). The sampling error of one accuracy on "
              f"{p['eval_samples']} samples is about +-{np.sqrt(0.25 / p['eval_samples']):.3f} (binomial standard "
              "error at 0.5, computed): a 1-point difference is inside it. These runs are far too short to "
              "converge (the shipped model trains 11,500 steps at batch 64); the accuracies compare variants "
              "early in training, not their final quality.", ""]
    lines += ["## Per-stage exported latency (median ms)", ""]
    rows = []
    for key, row in r["rows"].items():
        ex = r["cells"][key]["export"]
        for b in r["backends"]:
            st = ex[b]["stages"]
            names = [k for k in st if k not in ("preprocess", "stages_sum")]
            rows.append([row["variant"], row["visual_tokens"], b,
                         " / ".join(f"{st[k]['median_ms']:.2f}" for k in names), f"{st['preprocess']['median_ms']:.2f}",
                         f"{ex[b]['total']['median_ms']:.2f}"])
    lines += [tabulate(rows, ["variant", "visual tokens", "backend", "stage 0 / 1 / ... ms", "preprocess ms",
                              "total ms"], tablefmt="github"), ""]
    lines += ["## The goal (issue 12)", "",
              f"At {r['tokens'][-1]} visual tokens, each efficient variant >= 2x faster than full in the training step "
              "and in exported full-depth inference (every backend), and within 1 accuracy point at equal wall-clock:", ""]
    for v, g in r["goal"].items():
        checks = ", ".join(f"{k} {'yes' if val else 'NO'}" for k, val in g.items() if k not in ("visual_tokens", "met"))
        lines.append(f"- `{v}`: {'MET' if g['met'] else 'NOT MET'} ({checks})")
    lines += ["", "Crossover (where the speed-up over full first exceeds 1, log-interpolated in the token count):", ""]
    for v, c in r["crossover"].items():
        for metric, text in c.items():
            if not metric.endswith("_faster_at"):
                lines.append(f"- `{v}`, {metric.replace('_speedup_vs_full', '').replace('_', ' ')}: {text}")
    return "\n".join(lines)


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tokens = r["tokens"]
    ncols = 2 + len(r["backends"])
    fig, axes = plt.subplots(1, ncols, figsize=(5 * ncols, 4.2))
    colors = {"full": "tab:blue", "lowrank": "tab:orange", "crossmodal": "tab:green"}
    ax = axes[0]
    for v in VARIANTS:
        st = [r["cells"][f"{v}/{n}"]["train"]["step_time"] for n in tokens]
        med = np.array([s["median_ms"] for s in st])
        err = np.array([[m - s["p10_ms"] for m, s in zip(med, st)], [s["p90_ms"] - m for m, s in zip(med, st)]])
        ax.errorbar(tokens, med, yerr=err, marker="o", capsize=3, color=colors[v], label=v)
    ax.set(xscale="log", yscale="log", xlabel="visual tokens", ylabel="training step ms (median, p10-p90)",
           title=f"training step, batch {r['plan']['batch_size']}")
    for i, b in enumerate(r["backends"]):
        ax = axes[1 + i]
        for v in VARIANTS:
            st = [r["cells"][f"{v}/{n}"]["export"][b]["stages"]["stages_sum"] for n in tokens]
            med = np.array([s["median_ms"] for s in st])
            err = np.array([[m - s["p10_ms"] for m, s in zip(med, st)], [s["p90_ms"] - m for m, s in zip(med, st)]])
            ax.errorbar(tokens, med, yerr=err, marker="o", capsize=3, color=colors[v], label=v)
        ax.set(xscale="log", yscale="log", xlabel="visual tokens", ylabel="full-depth ms (median, p10-p90)",
               title=f"exported, batch 1, {b}")
    ax = axes[-1]
    width = 0.25
    x = np.arange(len(tokens))
    for i, v in enumerate(VARIANTS):
        acc = np.array([r["rows"][f"{v}/{n}"]["acc_equal_wall"] for n in tokens], float)
        half = 1.96 * np.sqrt(acc * (1 - acc) / r["plan"]["eval_samples"])  # binomial 95% (normal approx.)
        ax.bar(x + (i - 1) * width, acc, width, yerr=half, capsize=3, color=colors[v], label=v)
    ax.set_xticks(x, [str(n) for n in tokens])
    ax.set(xlabel="visual tokens", ylabel="val accuracy (final exit)", ylim=(0, 1),
           title="accuracy at equal wall-clock (= full's time), 95% CI")
    for a in axes:
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())

"""Pretraining efficiency, second round (issue #19): a fair test of ELECTRA-style replaced word and
object detection (rwd-rod) against masked language and object modelling (mlm-mop).

    python benchmarks/pretraining_efficiency.py                 # the full run (hours here: use nohup)
    python benchmarks/pretraining_efficiency.py --only main-seed0 ablation   # some groups only
    python benchmarks/pretraining_efficiency.py --smoke --out /tmp/pe       # the pipeline on tiny sizes
    python benchmarks/pretraining_efficiency.py --report-only   # the report again from the committed ledger

What runs, in priority order (groups; `--only` picks some):
  main-seed0, main-seeds   rwd-rod and mlm-mop (the fixed designs of mmedge.pretrain.objectives),
                           seeds 0 | 1, 2, with the no-pretraining floor of the same seeds
  ablation                 today's first rwd-rod design ("legacy") and legacy plus each fix alone
  crosses                  mlm-rod and rwd-mop, seeds 0 and 1 (which half carries a gap)
  long                     the floor and the main arms' final encoders fine-tuned at the long budget
  steptime                 every objective's pretraining step time, the arms interleaved in one
                           process (rounds x steps each): on a shared machine the runs' own
                           wall-clocks carry whatever else ran; these same-run ratios do not
Every pretraining run saves snapshots; each snapshot (and the floor) is fine-tuned the same way on
downstream VQA and statement verification and scored on the validation split, per question type.
Curves of accuracy against pretraining FLOPs (generator and the separate ITM pass included) and
wall-clock give, per task and seed, the FLOPs and seconds to a target accuracy (linear
interpolation from the floor) and the ratio mlm-mop / rwd-rod.

Resumable across machines: every finished unit (a pretraining run's record, a fine-tune's scores)
is a small JSON under OUT/units/, keyed by its exact settings, committed with the results; a unit is
recomputed only when its key changed. A pretraining run is re-run only when one of its fine-tunes is
not finished and its snapshots are not on this machine (under --work).
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

from mmedge.bench.stats import wilson  # noqa: E402
from mmedge.fileio import atomic_write  # noqa: E402

LEGACY = dict(mask_words="any", text_replace_rate=0.15, visual_sources="any-object", generator_depth=1,
              tie_embeddings=False, itm_weight=1.0, itm_pass="shared")
ARMS = {"rwd-rod": {"objective": "rwd-rod"}, "mlm-mop": {"objective": "mlm-mop"},
        "mlm-rod": {"objective": "mlm-rod"}, "rwd-mop": {"objective": "rwd-mop"}}
ABLATION = {  # one change at a time from the first design; "all fixes" is rwd-rod seed 0
    "legacy": {"objective": "rwd-rod", **LEGACY},
    "legacy+separate-itm": {"objective": "rwd-rod", **LEGACY, "itm_pass": "separate"},
    "legacy+decoys": {"objective": "rwd-rod", **LEGACY, "visual_sources": "decoys"},
    "legacy+generator": {"objective": "rwd-rod", **LEGACY, "generator_depth": 4, "tie_embeddings": True},
    "legacy+content-masking": {"objective": "rwd-rod", **LEGACY, "mask_words": "content", "text_replace_rate": 0.5},
    "legacy+itm-weight": {"objective": "rwd-rod", **LEGACY, "itm_weight": None},
}
FIX_NOTES = {"legacy+separate-itm": "word/object losses on matched pairs only, ITM in its own clean pass",
             "legacy+decoys": "same-class decoy patches labelled original",
             "legacy+generator": "generator 4 layers (was 1), token embeddings tied",
             "legacy+content-masking": "50% of content words masked (was 15% of any word)",
             "legacy+itm-weight": "ITM weight 50 (was 1), on the scale of the detectors"}
FULL = dict(model={"dim": 64, "depth": 4, "num_heads": 4, "image_size": 96, "patch_size": 16, "max_text_len": 24,
                   "patch_embed": "conv_stem", "exit_pool": "text", "keep_ratios": [1.0, 0.5, 0.25]},
            pretrain_steps=800, snapshot_every=400, batch_size=64, finetune_steps=600, long_finetune_steps=1800,
            finetune_batch=64, eval_samples=2048, main_seeds=[0, 1, 2], cross_seeds=[0, 1], ablation_seeds=[0])
SMOKE = dict(model={"dim": 32, "depth": 2, "num_heads": 2, "image_size": 48, "patch_size": 8, "max_text_len": 24,
                    "patch_embed": "conv_stem", "exit_pool": "text", "keep_ratios": [1.0]}, steptime_rounds=2,
             steptime_steps=1,
             pretrain_steps=4, snapshot_every=2, batch_size=4, finetune_steps=3, long_finetune_steps=5,
             finetune_batch=4, eval_samples=16, main_seeds=[0, 1], cross_seeds=[0], ablation_seeds=[0])
GROUPS = ("main-seed0", "main-seeds", "ablation", "crosses", "long", "steptime")
TASKS = ("vqa", "verify")


# ------------------------------------------------------------------ the unit ledger
def finished(directory: Path, key: dict):
    """The unit's saved value when it finished with this key, else None."""
    done = directory / "benchmark_result.json"
    if done.exists():
        saved = json.loads(done.read_text())
        if saved.get("key") == key or normal_key(saved.get("key")) == normal_key(key):
            return saved["value"]
    return None


def normal_key(key):
    """A unit key with every field added after the ledger began left out while at its default.
    Units were recorded by versions that wrote some of those fields (e.g. text_vocab='wordpiece' in
    the long fine-tunes) and by versions that did not: the same settings must give the same key."""
    if isinstance(key, list):
        return [normal_key(v) for v in key]
    if not isinstance(key, dict):
        return key
    out = {k: normal_key(v) for k, v in key.items()}
    if isinstance(out.get("finetune"), str):
        from mmedge.train.config import TrainConfig

        defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
        for name in ADDED_FIELDS:
            out["finetune"] = out["finetune"].replace(f", {name}={defaults[name]!r}", "")
    if isinstance(out.get("pretrain"), dict):
        from mmedge.pretrain.config import PretrainConfig

        defaults = {f.name: f.default for f in dataclasses.fields(PretrainConfig)}
        out["pretrain"] = {k: v for k, v in out["pretrain"].items()
                           if not (k in ADDED_PRETRAIN_FIELDS and v == defaults[k])}
    return out


def record(directory: Path, key: dict, value) -> None:
    """Save a finished unit's value under its key (atomically)."""
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write(directory / "benchmark_result.json",
                 lambda p: p.write_text(json.dumps({"key": key, "value": value}, indent=1)))


def cached(directory: Path, key: dict, compute):
    """compute() once per (directory, key): a finished unit's result is reused when the benchmark is
    re-run with the same settings (so an interrupted benchmark resumes), recomputed otherwise."""
    value = finished(directory, key)
    if value is None:
        value = compute()
        record(directory, key, value)
    return value


@dataclasses.dataclass
class Run:
    """One pretraining run: its name, settings and where its snapshots live."""
    name: str            # e.g. rwd-rod-seed0
    arm: str             # rwd-rod | ... | legacy+decoys
    seed: int
    settings: dict

    def config(self, plan: dict):
        from mmedge.pretrain.config import PretrainConfig

        steps = plan["pretrain_steps"]
        return PretrainConfig(**self.settings, seed=self.seed, steps=steps, batch_size=plan["batch_size"],
                              warmup_steps=max(1, steps // 10), snapshot_every=plan["snapshot_every"],
                              log_every=max(1, plan["snapshot_every"] // 4), model=plan["model"],
                              diagnostics_samples=plan.get("diagnostics_samples", 256), threads=1)

    def points(self, plan: dict) -> list[int]:
        """The steps whose encoders are fine-tuned: every snapshot and the end."""
        every, steps = plan["snapshot_every"], plan["pretrain_steps"]
        return [s for s in range(every, steps, every)] + [steps]

    def encoder_dir(self, work: Path, step: int, plan: dict) -> Path:
        run_dir = work / "runs" / self.name
        return run_dir if step == plan["pretrain_steps"] else run_dir / "snapshots" / f"step-{step:06d}"


def pretrain_key(run: Run, plan: dict) -> dict:
    """The pretraining config's fields (those added since the ledger began left out at their default)."""
    cfg = run.config(plan)
    defaults = {f.name: f.default for f in dataclasses.fields(cfg)}
    return {"pretrain": {k: v for k, v in cfg.to_dict().items()
                         if not (k in ADDED_PRETRAIN_FIELDS and v == defaults[k])}}


def run_pretraining(run: Run, plan: dict, out: Path, work: Path, progress: bool) -> list[dict]:
    """Pretrain on one thread (runs go two at a time: on this shared 2-core machine a run with two
    threads stalls whenever anything else runs); the record of every point."""
    from mmedge.pretrain.trainer import Pretrainer

    run_dir = work / "runs" / run.name
    load_before = os.getloadavg()[0]
    Pretrainer(run.config(plan), run_dir, force=True, progress=progress).fit()
    load_after = os.getloadavg()[0]
    points = []
    for step in run.points(plan):
        state = json.loads((run.encoder_dir(work, step, plan) / "pretrain_state.json").read_text())
        points.append({"step": state["step"], "pretrain_flops": state["pretrain_flops"], "wall_s": state["wall_s"],
                       "diagnostics": state.get("diagnostics", {})})
    result = {"points": points, "load_average_1min": [load_before, load_after]}
    record(out / "units" / "pretrain" / run.name, pretrain_key(run, plan), result)
    return result


def finetune_config(task: str, seed: int, steps: int, plan: dict, threads: int | None = 1):
    from mmedge.train.config import TrainConfig

    return TrainConfig(task=task, seed=seed, steps=steps, batch_size=plan["finetune_batch"], lr=1e-3,
                       warmup_steps=max(1, steps // 10), eval_every=steps, eval_samples=min(64, plan["eval_samples"]),
                       checkpoint_every=steps, log_every=max(1, steps // 4), model=plan["model"], threads=threads)


# TrainConfig fields added after units were first recorded: left out of a key while at their default,
# so that a new field does not make every finished fine-tune look unfinished
ADDED_FIELDS = ("data", "answer_vocab_size", "text_vocab", "text_vocab_size", "epochs", "minutes", "augment_shift",
                "unpruned_share")
ADDED_PRETRAIN_FIELDS = ("data", "text_vocab_size")


def config_key(cfg) -> str:
    """The config's repr (threads excluded: results do not depend on it), stable under added fields."""
    cfg = dataclasses.replace(cfg, threads=None)
    defaults = {f.name: f.default for f in dataclasses.fields(cfg)}
    shown = [f"{f.name}={getattr(cfg, f.name)!r}" for f in dataclasses.fields(cfg)
             if not (f.name in ADDED_FIELDS and getattr(cfg, f.name) == defaults[f.name])]
    return f"{type(cfg).__name__}({', '.join(shown)})"


def finetune_key(init_id: dict | None, task: str, seed: int, steps: int, plan: dict) -> dict:
    cfg = finetune_config(task, seed, steps, plan)
    return {"finetune": config_key(cfg), "init": init_id, "eval_samples": plan["eval_samples"]}


def finetune(init: str | None, task: str, seed: int, steps: int, plan: dict, unit_dir: str, work_dir: str,
             key: dict, threads: int | None = 1) -> dict:
    """Fine-tune (or train from scratch) on `task`; the last exit's validation accuracy with every
    visual token kept, overall and per question type, on plan["eval_samples"] samples."""
    import torch

    from mmedge.evaluation.predict import make_batches, run_model
    from mmedge.train.trainer import Trainer

    def compute() -> dict:
        trainer = Trainer(finetune_config(task, seed, steps, plan, threads), work_dir, force=True, init_from=init,
                          progress=False)
        trainer.fit()
        model = trainer.model
        batches = make_batches(task, 0, "val", plan["eval_samples"], trainer.tokenizer, model.config.image_size, 128)
        with torch.no_grad():
            run = run_model(model, batches, [1.0])
        correct = run.outputs[1.0].preds[:, -1] == run.labels
        qtypes = np.array(run.qtypes)
        return {"accuracy": float(correct.mean()), "n": int(len(correct)),
                "per_qtype": {q: {"n": int((qtypes == q).sum()), "accuracy": float(correct[qtypes == q].mean())}
                              for q in sorted(set(run.qtypes))}}
    return cached(Path(unit_dir), key, compute)


# ------------------------------------------------------------------ the plan
def runs_of(group: str, plan: dict) -> list[Run]:
    if group == "main-seed0":
        return [Run(f"{a}-seed0", a, 0, ARMS[a]) for a in ("rwd-rod", "mlm-mop")]
    if group == "main-seeds":
        return [Run(f"{a}-seed{s}", a, s, ARMS[a]) for s in plan["main_seeds"][1:] for a in ("rwd-rod", "mlm-mop")]
    if group == "ablation":
        return [Run(f"{a}-seed{s}", a, s, ABLATION[a]) for s in plan["ablation_seeds"] for a in ABLATION]
    if group == "crosses":
        return [Run(f"{a}-seed{s}", a, s, ARMS[a]) for s in plan["cross_seeds"] for a in ("mlm-rod", "rwd-mop")]
    return []


def finetunes_of(group: str, run: Run, plan: dict) -> list[tuple[int, int]]:
    """(pretraining step, fine-tune steps) pairs to score for `run` in `group`."""
    if group == "ablation":
        return [(plan["pretrain_steps"], plan["finetune_steps"])]
    if group == "long":
        return [(plan["pretrain_steps"], plan["long_finetune_steps"])]
    return [(s, plan["finetune_steps"]) for s in run.points(plan)]


def floor_seeds(group: str, plan: dict) -> list[tuple[int, int]]:
    """(seed, fine-tune steps) of the no-pretraining floors a group needs."""
    if group == "main-seed0":
        return [(0, plan["finetune_steps"])]
    if group == "main-seeds":
        return [(s, plan["finetune_steps"]) for s in plan["main_seeds"][1:]]
    if group == "long":
        return [(s, plan["long_finetune_steps"]) for s in plan["main_seeds"]]
    return []


def long_runs(plan: dict) -> list[Run]:
    return [Run(f"{a}-seed{s}", a, s, ARMS[a]) for s in plan["main_seeds"] for a in ("rwd-rod", "mlm-mop")]


def execute(groups: list[str], plan: dict, out: Path, work: Path, workers: int, progress: bool) -> None:
    """Run every unfinished unit of `groups`, in order: pretraining alone, then its fine-tunes
    `workers` at a time (only pretraining's wall-clock is a result)."""
    for group in groups:
        if group == "steptime":
            print("[steptime] interleaved step times", flush=True)
            key = steptime_key(plan)
            cached(out / "units" / "steptime", key, lambda: measure_step_times(plan, key["rounds"], key["steps"]))
            continue
        runs = long_runs(plan) if group == "long" else runs_of(group, plan)
        jobs, to_pretrain = [], []
        for seed, steps in floor_seeds(group, plan):
            for task in TASKS:
                name = f"floor-seed{seed}-{task}-ft{steps}"
                jobs.append((None, task, seed, steps, plan, str(out / "units" / "finetune" / name),
                             str(work / "finetune" / name), finetune_key(None, task, seed, steps, plan)))
        for run in runs:
            pkey = pretrain_key(run, plan)
            done = finished(out / "units" / "pretrain" / run.name, pkey)
            wanted = []
            for step, steps in finetunes_of(group, run, plan):
                for task in TASKS:
                    name = f"{run.name}-step{step}-{task}-ft{steps}"
                    key = finetune_key({"run": run.name, "step": step, **pkey}, task, run.seed, steps, plan)
                    if finished(out / "units" / "finetune" / name, key) is None:
                        wanted.append((step, task, steps, name, key))
            if done is not None and not wanted:
                continue
            local = all((run.encoder_dir(work, s, plan) / "pretrain_state.json").exists() for s in run.points(plan))
            if done is None or not local:
                print(f"[{group}] pretraining {run.name}" + ("" if done is None else
                      f" again: its snapshots are not under {work}"), flush=True)
                to_pretrain.append(run)
            for step, task, steps, name, key in wanted:
                jobs.append((str(run.encoder_dir(work, step, plan)), task, run.seed, steps, plan,
                             str(out / "units" / "finetune" / name), str(work / "finetune" / name), key))
        in_pool(run_pretraining, [(run, plan, out, work, False) for run in to_pretrain], workers, progress,
                lambda job, _: f"pretrained {job[0].name}")
        jobs = [j for j in jobs if finished(Path(j[5]), j[7]) is None]
        if jobs:
            print(f"[{group}] {len(jobs)} fine-tunes", flush=True)
            run_finetunes(jobs, workers, progress)


def run_finetunes(jobs: list[tuple], workers: int, progress: bool) -> None:
    in_pool(finetune, jobs, workers, progress,
            lambda job, value: f"fine-tune {Path(job[5]).name} {value['accuracy']:.3f}")


def in_pool(function, jobs: list[tuple], workers: int, progress: bool, describe) -> None:
    """function(*job) for every job, `workers` at a time, each in a fresh process on one thread."""
    from tqdm.auto import tqdm

    if workers <= 1 or len(jobs) <= 1:
        for job in tqdm(jobs, disable=not progress):
            print(describe(job, function(*job)), flush=True)
        return
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch thread pools
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_one_thread) as pool:
        futures = {pool.submit(function, *job): job for job in jobs}
        for done, future in enumerate(as_completed(futures), 1):
            print(f"{done}/{len(jobs)} {describe(futures[future], future.result())}", flush=True)


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def measure_step_times(plan: dict, rounds: int, steps: int) -> dict:
    """Median seconds per pretraining step of every objective, measured interleaved in one process
    (round-robin, `steps` steps each per round, after one warm-up round): the ratios between arms
    share the machine's state at every round."""
    import torch

    from mmedge.data.tokenizer import UNK, default_tokenizer
    from mmedge.models.config import ModelConfig
    from mmedge.pretrain.data import build
    from mmedge.pretrain.objectives import CONTENT_WORDS, PretrainModel
    from mmedge.pretrain.trainer import PRETRAIN_LABELS

    torch.set_num_threads(1)  # as the pretraining runs
    tok = default_tokenizer(plan["model"]["max_text_len"])
    content = [i for w, i in tok.vocab.items() if w in CONTENT_WORDS]
    model_cfg = ModelConfig(task="pretrain", labels=PRETRAIN_LABELS, vocab_size=len(tok.vocab), **plan["model"])
    variants = {**ARMS, "legacy": ABLATION["legacy"]}
    setups = {}
    for name, settings in variants.items():
        cfg = Run(name, name, 0, settings).config(plan)
        torch.manual_seed(0)
        model = PretrainModel(model_cfg, cfg.objective_config(), tok.vocab[UNK], content)
        setups[name] = (model, torch.optim.AdamW(model.parameters(), lr=cfg.lr))
    batch = build(0, range(plan["batch_size"]), tok, model_cfg.image_size, model_cfg.patch_size)
    args = [torch.from_numpy(a) for a in (batch.pixels, batch.input_ids, batch.text_mask, batch.token_classes)]
    times: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(rounds + 1):
        for name, (model, opt) in setups.items():
            start = time.perf_counter()
            for _ in range(steps):
                opt.zero_grad(set_to_none=True)
                model(*args)["loss"].backward()
                opt.step()
            if r:  # round 0 warms up
                times[name].append((time.perf_counter() - start) / steps)
    ratio = [m / r for m, r in zip(times["mlm-mop"], times["rwd-rod"])]
    return {"rounds": rounds, "steps_per_round": steps, "threads": torch.get_num_threads(),
            "seconds_per_step": {k: {"median": float(np.median(v)), "q25": float(np.quantile(v, 0.25)),
                                     "q75": float(np.quantile(v, 0.75)), "rounds": v} for k, v in times.items()},
            "ratio_mlm_mop_over_rwd_rod": {"median": float(np.median(ratio)), "min": float(min(ratio)),
                                           "max": float(max(ratio))}}


def steptime_key(plan: dict) -> dict:
    return {"steptime": {k: plan[k] for k in ("model", "batch_size")}, "rounds": plan.get("steptime_rounds", 5),
            "steps": plan.get("steptime_steps", 10)}


# ------------------------------------------------------------------ the analysis
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


def default_target(floor: float, best: float) -> float | None:
    """Halfway from the no-pretraining floor to the best pretrained accuracy; None when no
    pretrained snapshot beat the floor (then there is nothing for pretraining to reach)."""
    return floor + 0.5 * (best - floor) if best > floor else None


def seed_interval(values: list[float]) -> dict:
    """Mean and a 95% t-interval over seeds, clipped to [0, 1] (n = 1: the value, no interval)."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return {"mean": float(v.mean()), "low": None, "high": None, "n": int(len(v))}
    half = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return {"mean": float(v.mean()), "low": max(0.0, float(v.mean() - half)), "high": min(1.0, float(v.mean() + half)),
            "n": int(len(v))}


def collect(plan: dict, out: Path) -> dict:
    """Every finished unit, gathered into curves per run (pending units are simply absent)."""
    runs = {r.name: r for g in GROUPS for r in (long_runs(plan) if g == "long" else runs_of(g, plan))}
    curves, floors = {}, {}
    for name, run in runs.items():
        pkey = pretrain_key(run, plan)
        done = finished(out / "units" / "pretrain" / name, pkey)
        if done is None:
            continue
        pts = []
        for p in done["points"]:
            point = {**p}
            for task in TASKS:
                for steps in (plan["finetune_steps"], plan["long_finetune_steps"]):
                    key = finetune_key({"run": name, "step": p["step"], **pkey}, task, run.seed, steps, plan)
                    value = finished(out / "units" / "finetune" / f"{name}-step{p['step']}-{task}-ft{steps}", key)
                    if value is not None:
                        point[f"{task}_ft{steps}"] = value
            pts.append(point)
        curves[name] = {"arm": run.arm, "seed": run.seed, "points": pts, "load_average_1min": done["load_average_1min"]}
    for seed in sorted(set(plan["main_seeds"]) | set(plan["cross_seeds"]) | set(plan["ablation_seeds"])):
        for task in TASKS:
            for steps in (plan["finetune_steps"], plan["long_finetune_steps"]):
                value = finished(out / "units" / "finetune" / f"floor-seed{seed}-{task}-ft{steps}",
                                 finetune_key(None, task, seed, steps, plan))
                if value is not None:
                    floors[f"seed{seed}/{task}/ft{steps}"] = value
    return {"curves": curves, "floors": floors,
            "steptime": finished(out / "units" / "steptime", steptime_key(plan))}


def analyse(plan: dict, data: dict, targets: dict | None) -> dict:
    """Targets, FLOPs / seconds to target per run and task, ratios, seed intervals."""
    ft = plan["finetune_steps"]
    curves, floors = data["curves"], data["floors"]
    floor_mean = {t: [v["accuracy"] for k, v in floors.items() if k.endswith(f"/{t}/ft{ft}")] for t in TASKS}
    result = {"targets": {}, "reached": {}, "ratios": {}, "arms": {}, "mean_curve": {}, "mean_curve_ratio": {}}
    steptime = data.get("steptime")
    for task in TASKS:
        floor = float(np.mean(floor_mean[task])) if floor_mean[task] else None
        accs = [p[f"{task}_ft{ft}"]["accuracy"] for c in curves.values() if c["arm"] in ARMS
                for p in c["points"] if f"{task}_ft{ft}" in p]
        target = (targets or {}).get(task) or (default_target(floor, max(accs)) if floor is not None and accs else None)
        result["targets"][task] = target
        for name, c in curves.items():
            seed_floor = floors.get(f"seed{c['seed']}/{task}/ft{ft}")
            pts = [{"pretrain_flops": p["pretrain_flops"], "wall_s": p["wall_s"], "acc": p[f"{task}_ft{ft}"]["accuracy"]}
                   for p in c["points"] if f"{task}_ft{ft}" in p]
            if target is None or seed_floor is None or len(pts) < len(c["points"]):
                continue
            origin = {"pretrain_flops": 0, "wall_s": 0.0, "acc": seed_floor["accuracy"]}
            result["reached"][f"{name}/{task}"] = _reached(c, [origin, *pts], target, steptime)
        for seed in plan["main_seeds"]:
            a, b = (result["reached"].get(f"{arm}-seed{seed}/{task}") for arm in ("mlm-mop", "rwd-rod"))
            if a is not None and b is not None:
                result["ratios"][f"{task}/seed{seed}"] = _ratio(a, b)
        # the seeds' mean curve of each arm (seeds share their snapshot steps) against the mean floor
        for arm in ARMS:
            runs = [c for c in curves.values() if c["arm"] == arm and
                    all(f"{task}_ft{ft}" in p for p in c["points"]) and f"seed{c['seed']}/{task}/ft{ft}" in floors]
            if not runs or target is None:
                continue
            seed_floors = [floors[f"seed{c['seed']}/{task}/ft{ft}"]["accuracy"] for c in runs]
            mean_pts = [{"pretrain_flops": p["pretrain_flops"], "wall_s": float(np.mean([c["points"][i]["wall_s"] for c in runs])),
                         "acc": float(np.mean([c["points"][i][f"{task}_ft{ft}"]["accuracy"] for c in runs]))}
                        for i, p in enumerate(runs[0]["points"])]
            origin = {"pretrain_flops": 0, "wall_s": 0.0, "acc": float(np.mean(seed_floors))}
            result["mean_curve"][f"{arm}/{task}"] = {"seeds": len(runs), **_reached(runs[0], [origin, *mean_pts],
                                                                                      target, steptime)}
        a, b = (result["mean_curve"].get(f"{arm}/{task}") for arm in ("mlm-mop", "rwd-rod"))
        if a is not None and b is not None:
            result["mean_curve_ratio"][task] = _ratio(a, b)
    for arm in [*ARMS, "floor"]:
        for task in TASKS:
            for steps in (plan["finetune_steps"], plan["long_finetune_steps"]):
                if arm == "floor":
                    vals = [v["accuracy"] for k, v in floors.items() if k.endswith(f"/{task}/ft{steps}")]
                else:
                    vals = [p[f"{task}_ft{steps}"]["accuracy"] for c in curves.values() if c["arm"] == arm
                            for p in c["points"][-1:] if f"{task}_ft{steps}" in p]
                if vals:
                    result["arms"][f"{arm}/{task}/ft{steps}"] = {**seed_interval(vals), "values": vals}
    return result


def _reached(curve: dict, points: list[dict], target: float, steptime: dict | None) -> dict:
    """FLOPs and own wall-clock to the target, the budget given, and (when the interleaved step
    times were measured) the seconds at the arm's median step time: FLOPs / FLOPs per step x s/step."""
    last = curve["points"][-1]
    out = {f: reach(points, f, target, "acc") for f in ("pretrain_flops", "wall_s")}
    out["budget_flops"] = last["pretrain_flops"]
    per_step = (steptime or {}).get("seconds_per_step", {}).get(curve["arm"])
    out["seconds_interleaved"] = None if per_step is None or out["pretrain_flops"] is None else \
        out["pretrain_flops"] / (last["pretrain_flops"] / last["step"]) * per_step["median"]
    return out


def _ratio(mlm: dict, rwd: dict) -> dict:
    """mlm-mop / rwd-rod of FLOPs and seconds to the target; when only mlm-mop reached it, an upper
    bound (rwd-rod needed more than its whole budget); None when mlm-mop did not reach it."""
    out = {f: (mlm[f] / rwd[f] if mlm[f] and rwd[f] else None)
           for f in ("pretrain_flops", "wall_s", "seconds_interleaved")}
    out["reached"] = {"mlm-mop": mlm["pretrain_flops"] is not None, "rwd-rod": rwd["pretrain_flops"] is not None}
    out["flops_upper_bound"] = mlm["pretrain_flops"] / rwd["budget_flops"] \
        if mlm["pretrain_flops"] is not None and rwd["pretrain_flops"] is None else None
    return out


# ------------------------------------------------------------------ the report
def _fmt_interval(s: dict) -> str:
    if s["low"] is None:
        return f"{s['mean']:.3f} (1 seed)"
    return f"{s['mean']:.3f} [{s['low']:.3f}, {s['high']:.3f}] (n={s['n']})"


def markdown(r: dict) -> str:
    from tabulate import tabulate

    plan, a, ft = r["plan"], r["analysis"], r["plan"]["finetune_steps"]
    n = plan["eval_samples"]
    lo, hi = wilson(0.6, n)
    lines = [f"# Pretraining efficiency, second round{' (SMOKE: tiny sizes, not a result)' if r['smoke'] else ''}", "",
             f"Command: `{plan['command']}`. Encoder: dim {plan['model']['dim']}, depth {plan['model']['depth']}, "
             f"{plan['model']['image_size']} px / {plan['model']['patch_size']} px patches; {plan['pretrain_steps']} "
             f"pretraining steps of {plan['batch_size']} pairs, fine-tuned at {ft} (and {plan['long_finetune_steps']}) "
             f"steps of {plan['finetune_batch']}; accuracy of the last exit, every visual token kept, on {n} validation "
             f"samples (95% Wilson interval of one figure at 0.6: [{lo:.3f}, {hi:.3f}], computed). Seed intervals: "
             "95% t-intervals over pretraining seeds. FLOPs by torch.utils.flop_counter (generator and the separate "
             "ITM pass included); wall-clock on this shared 2-core machine, snapshots and diagnostics excluded "
             "(each run's 1-minute load average before/after is in the JSON).", ""]
    if r["pending"]:
        lines += [f"**Incomplete**: {len(r['pending'])} groups not finished yet ({', '.join(r['pending'])}); "
                  "figures below cover the finished units only.", ""]
    rows = []
    for key, s in a["arms"].items():
        arm, task, steps = key.split("/")
        rows.append([arm, task, steps[2:], _fmt_interval(s), ", ".join(f"{v:.3f}" for v in s["values"])])
    lines += ["## Accuracy after fine-tuning the final encoder (mean and 95% interval over seeds)", "",
              tabulate(rows, ["arm", "task", "fine-tune steps", "accuracy", "per seed"], tablefmt="github"), ""]
    lines += _budgets(r)
    lines += ["## FLOPs and seconds to the target", "",
              "Targets (halfway from the mean floor to the best pretrained accuracy at the short budget): " +
              ", ".join(f"{t} {v:.3f}" if v is not None else f"{t} none" for t, v in a["targets"].items()), ""]
    def cell(v: float | None, scale: float = 1.0, fmt: str = "{:.3g}") -> str:
        return "not reached" if v is None else fmt.format(v / scale)

    rows = [[k, v.get("seeds", 1), cell(v["pretrain_flops"], 1e12), f"{v['budget_flops'] / 1e12:.3g}",
             cell(v["wall_s"], fmt="{:.0f}"), cell(v["seconds_interleaved"], fmt="{:.0f}")]
            for k, v in [*a["mean_curve"].items(), *a["reached"].items()]]
    lines += ["First the seeds' mean curve per arm (mean floor as origin), then every run. Seconds: the run's own "
              "wall-clock (shared machine), and FLOPs-to-target / FLOPs per step x the arm's median step time "
              "measured interleaved with the other arms (the `steptime` group).", "",
              tabulate(rows, ["arm or run/task", "seeds", "TFLOPs to target", "TFLOPs given", "own seconds",
                              "seconds at interleaved step time"], tablefmt="github"), ""]
    st = r["collected"].get("steptime")
    if st:
        lines += ["Interleaved step times (median [q25, q75] over rounds): " + ", ".join(
            f"{k} {v['median']:.3f} s [{v['q25']:.3f}, {v['q75']:.3f}]" for k, v in st["seconds_per_step"].items()) +
            f"; mlm-mop / rwd-rod per round: median {st['ratio_mlm_mop_over_rwd_rod']['median']:.2f}x "
            f"(range {st['ratio_mlm_mop_over_rwd_rod']['min']:.2f}-{st['ratio_mlm_mop_over_rwd_rod']['max']:.2f}).", ""]

    def ratio_text(v: dict) -> str:
        if v["pretrain_flops"]:
            secs = f", {v['seconds_interleaved']:.2f}x s (interleaved)" if v["seconds_interleaved"] else ""
            return f"{v['pretrain_flops']:.2f}x FLOPs{secs}"
        if v["flops_upper_bound"] is not None:
            return f"below {v['flops_upper_bound']:.2f}x FLOPs (rwd-rod did not reach it within its budget)"
        return "n/a (mlm-mop did not reach it)"

    for task in TASKS:
        per_seed = {k: v for k, v in a["ratios"].items() if k.startswith(f"{task}/")}
        vals = [v["pretrain_flops"] for v in per_seed.values() if v["pretrain_flops"]]
        text = "; ".join(f"{k.split('/')[1]}: {ratio_text(v)}" for k, v in per_seed.items())
        if len(vals) > 1:
            text += f" — per-seed range [{min(vals):.2f}, {max(vals):.2f}]"
        mean = a["mean_curve_ratio"].get(task)
        lines += [f"**{task}**: mlm-mop / rwd-rod to the target (above 1: rwd-rod needs less; goal >= 3): "
                  f"mean curves {ratio_text(mean) if mean else 'n/a'}; per seed: {text or 'none yet'}", ""]
    rows = []
    for name, c in r["collected"]["curves"].items():
        last = c["points"][-1]
        d = last.get("diagnostics", {})
        fmt = (lambda x: "-" if x is None else f"{x:.3f}")
        rows.append([name, FIX_NOTES.get(c["arm"], {"rwd-rod": "all fixes", "legacy": "the first design"}.get(c["arm"], "")),
                     f"{last['pretrain_flops'] / 1e12:.3g}", f"{last['wall_s']:.0f}",
                     *[fmt(last.get(f"{t}_ft{ft}", {}).get("accuracy")) for t in TASKS],
                     fmt(d.get("rwd_auc_true_image")), fmt(d.get("rwd_auc_shuffled_image")),
                     fmt(d.get("rod_p_replaced_class_changed")), fmt(d.get("rod_p_replaced_same_class")),
                     fmt(d.get("generator_sample_acc")), fmt(d.get("itm_acc"))])
    lines += ["## Every run at its final step: downstream accuracy and what the pretraining learnt", "",
              f"Diagnostics on {plan.get('diagnostics_samples', 256)} held-out pairs (mmedge.pretrain.diagnostics): replaced-word detection ROC AUC on "
              "content words with the true and with a shuffled image; replaced-object P(replaced) on class-changed "
              "tokens and on same-class decoys; the generator's sampled accuracy; ITM accuracy on a clean pass.", "",
              tabulate(rows, ["run", "change", "TFLOPs", "wall s", *[f"{t} acc" for t in TASKS], "RWD AUC true img",
                              "RWD AUC shuffled", "ROD P(changed)", "ROD P(same-class)", "gen sample acc", "ITM acc"],
                       tablefmt="github"), ""]
    rows = []
    for name, c in r["collected"]["curves"].items():
        for p in c["points"]:
            q = p.get(f"vqa_ft{ft}", {}).get("per_qtype", {})
            if q:
                rows.append([name, p["step"], *[f"{q[k]['accuracy']:.3f}" if k in q else "-" for k in sorted(QTYPES(r))]])
    if rows:
        lines += ["## VQA accuracy per question type (short fine-tune)", "",
                  tabulate(rows, ["run", "step", *sorted(QTYPES(r))], tablefmt="github"), ""]
    return "\n".join(lines)


def _budgets(r: dict) -> list[str]:
    """Both fine-tuning budgets side by side, per seed: the floor and the main arms' final encoders,
    each pretrained figure with its difference from the same seed's floor at the same budget."""
    from tabulate import tabulate

    plan, curves, floors = r["plan"], r["collected"]["curves"], r["collected"]["floors"]
    budgets = (plan["finetune_steps"], plan["long_finetune_steps"])
    if not any(k.endswith(f"/ft{budgets[1]}") for k in floors):
        return []
    rows = []
    for seed in plan["main_seeds"]:
        floor = {(t, st): floors.get(f"seed{seed}/{t}/ft{st}", {}).get("accuracy") for t in TASKS for st in budgets}
        rows.append([f"floor-seed{seed}", *["-" if floor[t, st] is None else f"{floor[t, st]:.3f}"
                                            for t in TASKS for st in budgets]])
        for arm in ("rwd-rod", "mlm-mop"):
            last = curves.get(f"{arm}-seed{seed}", {"points": [{}]})["points"][-1]
            cells = []
            for t in TASKS:
                for st in budgets:
                    acc = last.get(f"{t}_ft{st}", {}).get("accuracy")
                    cells.append("-" if acc is None else f"{acc:.3f}" if floor[t, st] is None
                                 else f"{acc:.3f} ({acc - floor[t, st]:+.3f})")
            rows.append([f"{arm}-seed{seed}", *cells])
    return [f"## Both fine-tuning budgets, per seed ({budgets[0]} and {budgets[1]} steps)", "",
            "The final encoder of each main run and the no-pretraining floor of the same seed, fine-tuned at both "
            "budgets; in brackets the difference from that seed's floor at the same budget.", "",
            tabulate(rows, ["run", *[f"{t} {st}" for t in TASKS for st in budgets]], tablefmt="github"), ""]


def QTYPES(r: dict) -> set[str]:  # noqa: N802 (a small helper read like a constant)
    return {q for c in r["collected"]["curves"].values() for p in c["points"]
            for q in p.get(f"vqa_ft{r['plan']['finetune_steps']}", {}).get("per_qtype", {})}


def plot(r: dict, path: Path) -> None:
    """Accuracy against pretraining FLOPs per main arm: each seed's points with their Wilson
    intervals (error bars), the seeds' mean as a line through one arm's own snapshots only."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ft, n = r["plan"]["finetune_steps"], r["plan"]["eval_samples"]
    fig, axes = plt.subplots(1, len(TASKS), figsize=(6 * len(TASKS), 4.5), squeeze=False)
    colours = {"rwd-rod": "tab:red", "mlm-mop": "tab:blue", "mlm-rod": "tab:purple", "rwd-mop": "tab:orange"}
    for ax, task in zip(axes[0], TASKS):
        for arm, colour in colours.items():
            runs = [c for c in r["collected"]["curves"].values() if c["arm"] == arm]
            for i, c in enumerate(runs):
                pts = [p for p in c["points"] if f"{task}_ft{ft}" in p]
                if not pts:
                    continue
                x = np.array([p["pretrain_flops"] for p in pts]) / 1e12
                y = np.array([p[f"{task}_ft{ft}"]["accuracy"] for p in pts])
                err = np.array([[yy - wilson(yy, n)[0], wilson(yy, n)[1] - yy] for yy in y]).T
                ax.errorbar(x * (1 + 0.01 * i), y, yerr=err, fmt="o", color=colour, alpha=0.6, capsize=2,
                            label=arm if i == 0 else None)
        floors = [v["accuracy"] for k, v in r["collected"]["floors"].items() if k.endswith(f"/{task}/ft{ft}")]
        if floors:
            ax.axhspan(min(floors), max(floors), color="grey", alpha=0.2, label="no pretraining (seed range)")
        if r["analysis"]["targets"].get(task) is not None:
            ax.axhline(r["analysis"]["targets"][task], color="black", ls=":", label="target")
        ax.set(xlabel="pretraining TFLOPs", ylabel=f"{task} val accuracy after {ft} fine-tuning steps", title=task)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the pipeline in a minute")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "pretraining"))
    parser.add_argument("--work", help="where snapshots and fine-tuned models go (default: OUT/work, not committed)")
    parser.add_argument("--only", nargs="+", choices=GROUPS, help="run only these groups (default: all, in order)")
    parser.add_argument("--report-only", action="store_true", help="rewrite OUT's report (JSON, Markdown, figure) "
                        "from its committed unit ledger; run nothing")
    parser.add_argument("--target", type=float, nargs=2, metavar=("VQA", "VERIFY"),
                        help="target accuracies (default: halfway from the floor to the best pretrained accuracy)")
    parser.add_argument("--jobs", type=int, default=2, help="fine-tunes run this many at a time (pretraining "
                        "always runs alone, since its wall-clock is measured)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    plan = dict(SMOKE if args.smoke else FULL)
    if args.smoke:
        plan["diagnostics_samples"] = 16
    out = Path(args.out)
    work = Path(args.work) if args.work else out / "work"
    groups = list(args.only or GROUPS)
    plan["command"] = "python benchmarks/pretraining_efficiency.py" + (" --smoke" if args.smoke else "")
    started = time.perf_counter()
    targets = dict(zip(TASKS, args.target)) if args.target else None
    if args.report_only:
        report_only(out, plan, args.smoke, targets)
        return 0
    execute(groups, plan, out, work, args.jobs, not args.no_progress)
    write_report(plan, out, args.smoke, targets, time.perf_counter() - started)
    return 0


def report_only(out: Path, plan: dict | None = None, smoke: bool = False, targets: dict | None = None,
                quiet: bool = False) -> list[Path]:
    """Rewrite OUT's report from what is committed there, measuring nothing: from the unit ledger
    (OUT/units), or, for the first round's results (pretraining-prelim, -round1), from their JSON."""
    import pretraining_first_round as first

    committed = out / "pretraining_efficiency.json"
    old = json.loads(committed.read_text()) if committed.exists() else None
    if old is not None and first.is_first_round(old):
        atomic_write(out / "pretraining_efficiency.md", lambda p: p.write_text(first.markdown(old) + "\n"))
        first.plot(old, out / "pretraining_efficiency.png")
        return [out / "pretraining_efficiency.md", out / "pretraining_efficiency.png"]
    if not (out / "units").is_dir():
        raise SystemExit(f"--report-only: {out} has no unit ledger (units/) and no first-round JSON to report on")
    if plan is None:
        plan = {**(SMOKE if smoke else FULL), "command": "python benchmarks/pretraining_efficiency.py"
                + (" --smoke" if smoke else "")}
        if smoke:
            plan["diagnostics_samples"] = 16
    # the seconds of the invocation that measured; a report-only run measures nothing
    seconds = (old or {}).get("seconds_this_invocation", 0.0)
    write_report(plan, out, smoke, targets, seconds, quiet=quiet)
    return [out / f"pretraining_efficiency.{ext}" for ext in ("json", "md", "png")]


def pending_groups(plan: dict, out: Path) -> list[str]:
    """Groups with an unfinished unit."""
    pending = []
    for group in GROUPS:
        if group == "steptime":
            if finished(out / "units" / "steptime", steptime_key(plan)) is None:
                pending.append(group)
            continue
        runs = long_runs(plan) if group == "long" else runs_of(group, plan)
        todo = [f"floor-seed{s}-{t}-ft{st}" for s, st in floor_seeds(group, plan) for t in TASKS
                if finished(out / "units" / "finetune" / f"floor-seed{s}-{t}-ft{st}", finetune_key(None, t, s, st, plan)) is None]
        for run in runs:
            pkey = pretrain_key(run, plan)
            if finished(out / "units" / "pretrain" / run.name, pkey) is None:
                todo.append(run.name)
                continue
            todo += [run.name for step, st in finetunes_of(group, run, plan) for t in TASKS
                     if finished(out / "units" / "finetune" / f"{run.name}-step{step}-{t}-ft{st}",
                                 finetune_key({"run": run.name, "step": step, **pkey}, t, run.seed, st, plan)) is None]
        if todo:
            pending.append(group)
    return pending


def write_report(plan: dict, out: Path, smoke: bool, targets: dict | None, seconds: float,
                 quiet: bool = False) -> dict:
    collected = collect(plan, out)
    result = {"smoke": smoke, "plan": plan, "collected": collected, "analysis": analyse(plan, collected, targets),
              "pending": pending_groups(plan, out), "seconds_this_invocation": seconds}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "pretraining_efficiency.json", lambda p: p.write_text(json.dumps(result, indent=1) + "\n"))
    atomic_write(out / "pretraining_efficiency.md", lambda p: p.write_text(markdown(result) + "\n"))
    plot(result, out / "pretraining_efficiency.png")
    if not quiet:
        print(markdown(result), flush=True)
    return result


if __name__ == "__main__":
    sys.exit(main())

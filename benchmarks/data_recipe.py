"""How the defaults for `--data` learn a domain they were never tuned on, against the time budget.

The second domain is `benchmarks/patterns_data.py` (patterned shapes, other sizes, other question
templates, JSON Lines). Each run trains with `mmedge train --data jsonl:ROOT --minutes M` and is then
evaluated on the domain's test split per question type, next to each type's answer prior (the share
of its most frequent training answer: a model at the prior has not learnt to look).

    python benchmarks/data_recipe.py                       # makes data/patterns if missing; ~3.5 h with 2 jobs
    python benchmarks/data_recipe.py --report-only         # the report from benchmarks/results/data_recipe/

Runs (RUNS says what each tries): the data recipe (mmedge/train/data-recipe.json) as `mmedge train
--data` runs it, from the shipped scenes model (the default for VQA; its vocabulary grown by the
domain's words) and from random weights, on the records with their refs (the grounding loss) and
without them (`ground_loss_weight` 0: what a dataset without refs gets), at 10, 30 and 60 minutes
and two seeds; the scenes recipe (models/configs/vqa-default.json) at 30; and variants of the data
recipe at 30 (each changes a setting or two of it, recorded as the run's "changes").
`--conditions` records what else ran on the machine; runs that recorded none shared it with other work.
Two runs go at once (`--jobs`), one thread each (the machine has two cores), so every run sees
the same share of the machine; the minutes are wall-clock minutes under that load.
Writes results.json, report.md and curves.png under --out (repo-relative paths only).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

OUT = ROOT / "benchmarks" / "results" / "data_recipe"
RECIPES = {"data": ROOT / "mmedge" / "train" / "data-recipe.json",
           "scenes": ROOT / "models" / "configs" / "vqa-default.json"}
SHIPPED = ROOT / "models" / "vqa-default"


@dataclass(frozen=True)
class Run:
    """One run: a recipe with the settings it changes ("model" merges into the recipe's model), a budget,
    the model it starts from (None: random weights), and what it tries (for the report)."""
    name: str
    recipe: str
    minutes: float
    init_from: Path | None
    what: str
    changes: dict = field(default_factory=dict)


NO_REFS = {"ground_loss_weight": 0.0}  # the records' refs unused: what the recipe does on data without them

# two at a time, in this order
RUNS = (
    Run("batch32-shifts-30min", "data", 30, None, "batch 32, 100 warm-up steps, 4 px shifts (the variant tried first)",
        {**NO_REFS, "batch_size": 32, "warmup_steps": 100, "augment_shift": 4}),
    Run("scenes-30min", "scenes", 30, None, "the scenes recipe; under --data its scene-only options are switched off, "
        "which leaves the data recipe's settings (only how often it checkpoints differs)", NO_REFS),
    Run("data-from-shipped-30min", "data", 30, SHIPPED,
        "what `mmedge train --data` does on data without refs: the data recipe from the shipped model", NO_REFS),
    Run("data-10min", "data", 10, None, "without refs, from random weights, 10 minutes", NO_REFS),
    Run("data-30min", "data", 30, None, "without refs, from random weights", NO_REFS),
    Run("data-unpruned-half-30min", "data", 30, None,
        "without refs, from random weights, the first half of the time at keep 1.0 only (`unpruned_share` 0.5)",
        {**NO_REFS, "unpruned_share": 0.5}),
    Run("data-lr2e-3-30min", "data", 30, None, "without refs, from random weights, twice the learning rate",
        {**NO_REFS, "lr": 0.002}),
    Run("data-from-shipped-shift4-30min", "data", 30, SHIPPED,
        "without refs, from the shipped model, 4 px shifts (`augment_shift` 4)", {**NO_REFS, "augment_shift": 4}),
    Run("data-from-shipped-lr5e-4-30min", "data", 30, SHIPPED, "without refs, from the shipped model, half the "
        "learning rate", {**NO_REFS, "lr": 0.0005}),
    Run("data-from-shipped-128px-30min", "data", 30, SHIPPED, "without refs, from the shipped model, images at 128 px "
        "(64 visual tokens instead of 36)", {**NO_REFS, "model": {"image_size": 128}}),
    Run("data-from-shipped-60min", "data", 60, SHIPPED, "without refs, from the shipped model, for 60 minutes", NO_REFS),
    Run("data-from-shipped-seed1-30min", "data", 30, SHIPPED, "without refs, from the shipped model, another seed "
        "(initialisation of the new weights, order of the records)", {**NO_REFS, "seed": 1}),
    Run("data-from-shipped-grounded-30min", "data", 30, SHIPPED,
        "what `mmedge train --data` does on data with refs: the data recipe from the shipped model, the grounding "
        "loss pointing each ref's phrase at its box"),
    Run("data-grounded-30min", "data", 30, None, "with refs, from random weights"),
    Run("data-from-shipped-grounded-seed1-30min", "data", 30, SHIPPED, "the default with refs (from the shipped "
        "model), another seed", {"seed": 1}),
    Run("data-grounded-seed1-30min", "data", 30, None, "with refs, from random weights, another seed", {"seed": 1}),
)
OLD_CONDITIONS = "the machine was shared with other work during the run"  # runs that recorded none
OVERRIDES = {"threads": 1, "eval_every": 100}  # one thread per run (two at once); a denser validation curve


def rel(path: Path) -> str:
    """A path as the results name it: relative to the repository (absolute only outside it)."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def answer_priors(data: Path) -> dict[str, float]:
    """Per question type: the share of its most frequent answer in the training split."""
    by_type: dict[str, Counter] = {}
    for line in (data / "train.jsonl").read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        by_type.setdefault(rec.get("type", "vqa"), Counter())[rec["answer"].strip().lower()] += 1
    return {t: c.most_common(1)[0][1] / sum(c.values()) for t, c in sorted(by_type.items())}


def run_config(run: Run) -> dict:
    """The training config of a run: its recipe with its changes and OVERRIDES applied."""
    cfg = json.loads(RECIPES[run.recipe].read_text())
    changes = dict(run.changes)
    cfg["model"] = {**cfg.get("model", {}), **changes.pop("model", {})}
    return {**cfg, **changes, **OVERRIDES}


def run_one(run: Run, data: Path, work: Path) -> dict:
    """Train one run and evaluate it on the test split; returns its curve and test figures."""
    out, summary = work / run.name, work / f"{run.name}.result.json"
    if summary.exists():  # a finished run (train and test) of an earlier invocation
        return json.loads(summary.read_text())
    cfg = run_config(run)
    cfg_path = work / f"{run.name}.json"
    cfg_path.write_text(json.dumps(cfg, indent=1))
    log = (work / f"{run.name}.log").open("w")
    subprocess.run([sys.executable, "-m", "mmedge", "train", "--data", f"jsonl:{data}", "--config", str(cfg_path),
                    "--minutes", str(run.minutes), "--out", str(out), "--force", "--no-progress"]
                   + ([] if run.init_from is None else ["--init-from", str(run.init_from)]),
                   check=True, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    test_json = work / f"{run.name}.test.json"
    subprocess.run([sys.executable, "-m", "mmedge", "eval", "--model", str(out), "--data", f"jsonl:{data}",
                    "--split", "test", "--limit", "100000", "--json", str(test_json), "--no-progress"],
                   check=True, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    result = summarise(run, cfg, out, test_json)
    summary.write_text(json.dumps(result, indent=1))
    return result


def summarise(run: Run, cfg: dict, out: Path, test_json: Path) -> dict:
    """One run's figures from its metrics.jsonl and its test evaluation."""
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    budget = [r for r in rows if r["kind"] == "budget"]
    curve = [{"step": r["step"], "wall_s": r["wall_s"], "samples": r["step"] * cfg["batch_size"],
              "val_acc_per_exit": r["val_acc_keep_1"]} for r in rows if r["kind"] == "val"]
    test = json.loads(test_json.read_text())
    exits = test["keep_ratios"]["1"]["per_exit"]  # keep ratio 1, one entry per exit
    return {"name": run.name, "recipe": rel(RECIPES[run.recipe]), "changes": run.changes,
            "init_from": None if run.init_from is None else rel(run.init_from),
            "minutes": run.minutes, "batch_size": cfg["batch_size"],
            "steps": curve[-1]["step"] if curve else 0, "train_wall_s": budget[-1]["wall_s"] if budget else None,
            "seconds_per_step": round(curve[-1]["wall_s"] / curve[-1]["step"], 4) if curve else None,
            "val_samples": cfg["eval_samples"], "curve": curve,
            "test_samples": test["samples"], "test_acc_per_exit": [e["accuracy"] for e in exits],
            "test_acc_per_type": {t: v["accuracy"] for t, v in sorted(exits[-1]["per_type"].items())},
            "test_type_counts": {t: v["n"] for t, v in sorted(exits[-1]["per_type"].items())}}


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson interval of an accuracy p measured on n samples."""
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def report(results: dict, out: Path) -> None:
    """report.md and curves.png from results.json."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs, priors = results["runs"], results["answer_priors"]
    types = list(priors)
    lines = ["# Your own data: the recipe on a domain it was not tuned on", "",
             f"Data: `{results['data']['generator']}` ({results['data']['train']} training, "
             f"{results['data']['test']} test questions; seven question types). Each run: "
             "`mmedge train --data jsonl:ROOT --minutes M` with the recipe named, one thread, two runs at once "
             f"on this {results['machine']}; then `mmedge eval --split test`. Accuracy of the last exit, "
             "keep ratio 1.", "",
             "| run | recipe | starts from | budget | steps | s/step | test accuracy (95% interval) | "
             + " | ".join(types) + " |",
             "|---|---|---|---|---|---|---|" + "---|" * len(types),
             "| answer prior | | | | | | | " + " | ".join(f"{priors[t]:.2f}" for t in types) + " |"]
    for r in runs:
        acc = r["test_acc_per_exit"][-1]
        lo, hi = wilson(acc, r["test_samples"])
        start = f"`{r['init_from']}`" if r.get("init_from") else "scratch"
        changed = "".join(f" + {k} {json.dumps(v)}" for k, v in r.get("changes", {}).items())
        lines.append(f"| {r['name']} | `{r['recipe']}`{changed} | {start} | {r['minutes']:g} min | {r['steps']} | "
                     f"{r['seconds_per_step'] or float('nan'):.2f} | {acc:.3f} ({lo:.3f}-{hi:.3f}) | "
                     + " | ".join(f"{r['test_acc_per_type'].get(t, float('nan')):.2f}" for t in types) + " |")
    lines += ["", "What each run tries:", ""] + [f"- `{r['name']}`: {r['what']}" for r in runs]
    lines += ["", "Conditions: " + "; ".join(f"`{r['name']}`: {r.get('conditions', OLD_CONDITIONS)}" for r in runs)
              + ".", "", "Test accuracy per exit (exit 0 is after the first layer):", "",
              "| run | " + " | ".join(f"exit {i}" for i in range(len(runs[0]["test_acc_per_exit"]))) + " |",
              "|---|" + "---|" * len(runs[0]["test_acc_per_exit"])]
    lines += [f"| {r['name']} | " + " | ".join(f"{a:.3f}" for a in r["test_acc_per_exit"]) + " |" for r in runs]
    lines += ["", "![validation accuracy against steps](curves.png)", "",
              "Curves: validation accuracy of the last exit on "
              f"{runs[0]['val_samples']} validation questions during training, with 95% Wilson intervals; each "
              "line is one run (its own cosine schedule, so a shorter budget is not a prefix of a longer one)."]
    (out / "report.md").write_text("\n".join(lines) + "\n")

    counts = runs[0]["test_type_counts"]
    prior = sum(priors[t] * n for t, n in counts.items()) / sum(counts.values())  # each type answered by its prior
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), sharey=True)  # rows: from random weights, from the shipped model
    for row, shipped in enumerate((False, True)):
        for i, r in enumerate(x for x in runs if bool(x.get("init_from")) == shipped):
            steps = [c["step"] for c in r["curve"]]
            acc = [c["val_acc_per_exit"][-1] for c in r["curve"]]
            band = [wilson(a, r["val_samples"]) for a in acc]
            for ax, x in ((axes[row, 0], steps), (axes[row, 1], [c["wall_s"] / 60 for c in r["curve"]])):
                ax.plot(x, acc, marker=".", markersize=3, color=f"C{i}", label=r["name"])  # one run's curve
                ax.fill_between(x, [b[0] for b in band], [b[1] for b in band], color=f"C{i}", alpha=0.2)
        axes[row, 0].set_title("from random weights" if not shipped else "from the shipped model", loc="left")
        axes[row, 0].legend(fontsize=8, loc="lower right")
        for ax in axes[row]:
            ax.axhline(prior, color="grey", linestyle=":", linewidth=1)  # every question answered by its type's prior
    axes[1, 0].set_xlabel("optimizer steps")
    axes[1, 1].set_xlabel("wall-clock minutes (one thread, two runs at once)")
    for ax in axes.flat:
        ax.set_ylabel("validation accuracy, last exit")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    fig.suptitle("patterns domain: validation accuracy during training (95% intervals; dotted: the answer priors)")
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "patterns", help="the patterns dataset ROOT")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "data-recipe", help="run folders (not committed)")
    parser.add_argument("--runs", nargs="+", choices=[r.name for r in RUNS], help="a subset of the runs")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--conditions", help="what else ran on the machine during these runs (kept per run)")
    parser.add_argument("--report-only", action="store_true", help="rewrite the report from --out/results.json")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        report(json.loads((args.out / "results.json").read_text()), args.out)
        print(f"wrote {rel(args.out / 'report.md')}")
        return 0
    if not (args.data / "train.jsonl").exists():
        from benchmarks.patterns_data import write

        write(args.data, 12000, 0)
    args.work.mkdir(parents=True, exist_ok=True)
    chosen = [r for r in RUNS if args.runs is None or r.name in args.runs]
    with ThreadPoolExecutor(args.jobs) as pool:
        done = list(pool.map(lambda r: run_one(r, args.data, args.work), chosen))
    if args.conditions:
        done = [{**d, "conditions": args.conditions} for d in done]
    counts = {s: sum(1 for _ in open(args.data / f"{s}.jsonl", encoding="utf-8")) for s in ("train", "val", "test")}
    previous = json.loads((args.out / "results.json").read_text()) if (args.out / "results.json").exists() else {}
    kept = [r for r in previous.get("runs", []) if r["name"] not in {d["name"] for d in done}]
    what = {r.name: r.what for r in RUNS}
    results = {"machine": "2-core CPU", "data": {"generator": "benchmarks/patterns_data.py --images 12000", **counts},
               "answer_priors": answer_priors(args.data),
               "runs": sorted(kept + done, key=lambda r: list(what).index(r["name"]))}
    results["runs"] = [{**r, "what": what[r["name"]]} for r in results["runs"]]
    tmp = args.out / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    tmp.replace(args.out / "results.json")
    report(results, args.out)
    print(f"wrote {rel(args.out / 'results.json')} and the report")
    return 0


if __name__ == "__main__":
    sys.exit(main())

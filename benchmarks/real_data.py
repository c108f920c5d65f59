"""The standard vision-language benchmarks with the default recipe (issue #15): train on each
dataset's training split, evaluate on its validation split with the official metric, one table.

    python benchmarks/real_data.py --vqa2 /data/vqa2 --nlvr2 /data/nlvr2 --coco /data/coco   # real roots
    python benchmarks/real_data.py --fixtures --steps 40                                      # what ran here
    python benchmarks/real_data.py --report-only          # the Markdown and figure again from the committed JSON

Each root is read by `mmedge.data.sources` in its official layout (README, "Real data"). The recipe
is the shipped default model's training config (models/vqa-default/training/1-vqa-default), with
the task set per dataset, the scene-only auxiliary losses off (real data has no object maps) and a
WordPiece vocabulary learnt from the training text. `--steps` shortens it.

`--fixtures` builds small datasets in the official layouts from generated scenes (the test
fixtures, tests/dataset_fixtures.py) instead: no real dataset can be downloaded on the machine this
runs on. Figures from fixtures show that the pipeline runs end to end and nothing about the model
on real data; the report says which it is.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mmedge.bench.stats import wilson  # noqa: E402
from mmedge.fileio import atomic_write, shown_path  # noqa: E402

RECIPE = ROOT / "models/vqa-default/training/1-vqa-default/train_config.json"
TASK = {"vqa2": "vqa", "gqa": "vqa", "nlvr2": "verify", "coco": "match", "cc": "match", "jsonl": "vqa"}
VAL = {"nlvr2": "dev"}


def build_fixtures(work: Path, scale: int) -> dict[str, Path]:
    """Every format's fixture (train and validation split) under work/fixtures."""
    sys.path.insert(0, str(ROOT / "tests"))
    import dataset_fixtures as fx

    base = work / "fixtures"
    roots = {}
    for name in TASK:
        root = base / name
        if not root.exists():
            make = getattr(fx, f"make_{name}")
            for split in ("train", VAL.get(name, "val")):
                if name == "nlvr2":
                    make(root, sets=scale // 4, split=split)
                else:
                    make(root, n=scale, split=split)
        roots[name] = root
    return roots


def train_config(name: str, root: Path, steps: int | None, eval_samples: int):
    from mmedge.train.config import TrainConfig

    recipe, _ = TrainConfig.load(RECIPE).for_data(f"{name}:{root}")  # the scenes-only options off
    changes = dict(task=TASK[name], eval_samples=eval_samples)
    if steps is not None:
        changes.update(steps=steps, warmup_steps=max(1, steps // 10), eval_every=steps, checkpoint_every=steps,
                       log_every=max(1, steps // 5))
    return dataclasses.replace(recipe, **changes)


def headline(result: dict) -> dict:
    """The standard table's figures of one evaluation: final exit, every visual token kept."""
    if "retrieval" in result:
        r = result["retrieval"]
        return {"metric": "retrieval Recall@1/5/10", "n": r["texts"],
                **{k: v for k, v in r.items() if "@" in k}}
    final = result["keep_ratios"]["1"]["per_exit"][-1]
    row = {"metric": "VQA soft accuracy" if result["data"] == "vqa2" else "accuracy", "n": result["samples"],
           "accuracy": final["accuracy"]}
    if "consistency" in final:
        row["consistency"] = final["consistency"]
    kinds = final.get("per_answer_type") or final.get("per_type") or {}
    row["per_type"] = {k: v["accuracy"] for k, v in kinds.items()}
    return row


def run_one(name: str, root: Path, work: Path, steps: int | None, eval_samples: int, progress: bool) -> dict:
    from mmedge.evaluation.real import evaluate_real
    from mmedge.models.checkpoint import from_pretrained
    from mmedge.train.trainer import Trainer

    cfg = train_config(name, root, steps, eval_samples)
    out = work / "runs" / name
    t0 = time.perf_counter()
    Trainer(cfg, out, force=True, progress=progress).fit()
    train_s = time.perf_counter() - t0
    model, tokenizer = from_pretrained(out)
    result = evaluate_real(model, tokenizer, cfg.data, VAL.get(name, "val"), eval_samples, keep_ratios=[1.0],
                           progress=progress)
    return {"task": cfg.task, "steps": cfg.steps, "batch_size": cfg.batch_size, "train_s": round(train_s, 1),
            "vocabulary": len(tokenizer.vocab), "tokenizer": tokenizer.kind, "labels": len(model.config.labels),
            "split": result["split"], **headline(result)}


def markdown(report: dict) -> str:
    from tabulate import tabulate

    rows = []
    for name, r in report["datasets"].items():
        if "@" in " ".join(r):
            figure = ", ".join(f"{k} {v:.3f}" for k, v in r.items() if "@" in k)
        else:
            lo, hi = wilson(r["accuracy"], r["n"])
            figure = f"{r['accuracy']:.3f} [{lo:.3f}, {hi:.3f}]" + \
                (f", consistency {r['consistency']:.3f}" if "consistency" in r else "")
        rows.append([name, r["task"], r["split"], r["metric"], figure, r["n"], r["steps"], r["train_s"],
                     f"{r['tokenizer']} {r['vocabulary']}"])
    source = ("FIXTURES built from generated scenes in the official layouts (tests/dataset_fixtures.py), not the "
              "real datasets: these figures show that training, evaluation and the official metrics run end to "
              "end, and say nothing about the model on real data") if report["fixtures"] else \
        "the dataset roots given on the command line"
    return "\n".join([
        "# The standard benchmarks with the default recipe", "",
        f"`{report['command']}`. Data: {source}. Recipe: `{report['recipe']}` (task per dataset, scene-only "
        "auxiliary losses off); final exit, every visual token kept; accuracies with their 95% Wilson interval "
        "(binomial approximation, also for VQA's soft accuracy).", "",
        tabulate(rows, ["dataset", "task", "split", "metric", "result", "n", "steps", "train s", "tokenizer"],
                 tablefmt="github"), ""])


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names, values, lows, highs = [], [], [], []
    for name, r in report["datasets"].items():
        value = r.get("accuracy", r.get("text_to_image_R@1"))
        lo, hi = wilson(value, r["n"])
        names.append(f"{name}\n{'accuracy' if 'accuracy' in r else 'text->image R@1'}")
        values.append(value)
        lows.append(value - lo)
        highs.append(hi - value)
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.errorbar(np.arange(len(names)), values, yerr=[lows, highs], fmt="o", capsize=5, ls="none")
    ax.set_xticks(np.arange(len(names)), names)
    ax.set_ylim(0, 1)
    ax.set_ylabel("final exit, keep 1.0 (95% Wilson)")
    ax.set_title("Default recipe per dataset" + (" (FIXTURES from generated scenes)" if report["fixtures"] else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)


def report_only(out: Path) -> list[Path]:
    """Rewrite OUT/real_data.{md,png} from OUT/real_data.json (nothing is trained or measured)."""
    report = json.loads((out / "real_data.json").read_text())
    atomic_write(out / "real_data.md", lambda p: p.write_text(markdown(report)))
    atomic_write(out / "real_data.png", lambda p: plot(report, p))
    return [out / "real_data.md", out / "real_data.png"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name in TASK:
        parser.add_argument(f"--{name}", type=Path, metavar="ROOT", help=f"{name} root in its official layout")
    parser.add_argument("--fixtures", action="store_true", help="every format from generated-scene fixtures instead")
    parser.add_argument("--fixture-size", type=int, default=48, help="records per fixture split (default 48)")
    parser.add_argument("--steps", type=int, help="training steps per dataset (default: the recipe's)")
    parser.add_argument("--eval-samples", type=int, default=5000, help="validation records (images for retrieval)")
    parser.add_argument("--work", type=Path, default=ROOT / "runs/real_data")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/real_data")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite OUT's Markdown and figure from its JSON; train and measure nothing")
    args = parser.parse_args(argv)
    if args.report_only:
        print("wrote " + ", ".join(map(str, report_only(args.out))))
        return 0
    roots = {n: getattr(args, n) for n in TASK if getattr(args, n) is not None}
    if args.fixtures:
        if roots:
            parser.error("--fixtures builds every dataset itself: give it no roots")
        roots = build_fixtures(args.work, args.fixture_size)
    if not roots:
        parser.error("give at least one dataset root (e.g. --vqa2 /data/vqa2), or --fixtures")
    report = {"command": "python benchmarks/real_data.py " + " ".join(
                  a if not Path(a).is_absolute() else shown_path(Path(a)) for a in (argv or sys.argv[1:])),
              "fixtures": args.fixtures, "recipe": shown_path(RECIPE), "datasets": {}}
    for name, root in roots.items():
        print(f"[{name}] training and evaluating", flush=True)
        report["datasets"][name] = run_one(name, root, args.work, args.steps, args.eval_samples, not args.no_progress)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out / "real_data.json", lambda p: p.write_text(json.dumps(report, indent=1) + "\n"))
    atomic_write(args.out / "real_data.md", lambda p: p.write_text(markdown(report)))
    atomic_write(args.out / "real_data.png", lambda p: plot(report, p))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A small ViLT trained with `transformers` on the scenes, adapted by `mmedge adapt` without labels, then
calibrated and measured through the Engine: what the adapter gives a model that means something.

    python benchmarks/vilt_teacher.py                  # trains the teacher if runs/vilt-teacher is missing (~1 h)
    python benchmarks/vilt_teacher.py --report-only    # report.md and exits.png from the committed results.json

Steps, each a command a user runs (skipped when its output is already there; --force redoes them):
  1. the teacher: `python scripts/train_vilt_teacher.py --out runs/vilt-teacher` (ViltForQuestionAnswering);
  2. `mmedge adapt --from runs/vilt-teacher --task vqa --data scenes` with benchmarks/configs/vilt-adapt.json
     (label_loss_weight 0: the scenes' images and questions only; the teacher's answers teach the exits,
     the confidences and the prefilter);
  3. `mmedge eval` on the test split: accuracy and agreement with the teacher per exit and keep ratio;
  4. `mmedge export` with benchmarks/configs/vilt-export.json (ONNX and ExecuTorch, fp32 and int8: the targets
     that run here; Core ML converts but predicts only on macOS), then `mmedge calibrate --max-drop 0.01` on the
     validation split (a bound on the accuracy drop against full depth);
  5. `mmedge bench --device host` (batch 1, one thread) per runtime and precision that was exported and
     runs here: accuracy, mean exit, kept tokens and the speed-up of every policy over full depth.
Writes results.json, report.md and exits.png under --out (repository-relative paths only).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "vilt_teacher"
CONFIG = ROOT / "benchmarks" / "configs" / "vilt-adapt.json"
EXPORT = ROOT / "benchmarks" / "configs" / "vilt-export.json"  # ONNX and ExecuTorch, fp32 and int8
BOUND, GOAL = 0.01, 2.5  # the bound (accuracy points below the teacher) and speed-up goal
# how the committed teacher was trained: one 10,000-step cosine schedule, the script's default
TEACHER_RUN = ["python scripts/train_vilt_teacher.py --out runs/vilt-teacher --threads 2"]


def rel(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def run(cmd: list[str], log: Path) -> None:
    print("$", " ".join(cmd), flush=True)
    with log.open("a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        done = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}; see {rel(log)}")


def measure(work: Path, force: bool, eval_samples: int, bench_samples: int, note: str | None) -> dict:
    teacher, adapted, bundle = work / "vilt-teacher", work / "vilt-scenes", work / "vilt-scenes.mmedge"
    log = work / "vilt_teacher.log"
    mmedge = [sys.executable, "-m", "mmedge"]
    if force or not (teacher / "model.safetensors").exists():
        run([sys.executable, "scripts/train_vilt_teacher.py", "--out", str(teacher), "--resume"], log)
    if force or not (adapted / "README.md").exists():
        run(mmedge + ["adapt", "--from", str(teacher), "--task", "vqa", "--data", "scenes", "--config", str(CONFIG),
                      "--out", str(adapted), "--force", "--no-progress"], log)
    evaluation = work / "vilt-scenes-eval.json"
    if force or not evaluation.exists():
        run(mmedge + ["eval", "--model", str(adapted), "--split", "test", "--limit", str(eval_samples),
                      "--json", str(evaluation), "--no-progress"], log)
    if force or not (bundle / "manifest.json").exists():
        run(mmedge + ["export", "--model", str(adapted), "--out", str(bundle), "--recipe", str(EXPORT), "--force"], log)
        run(mmedge + ["calibrate", "--artifact", str(bundle), "--max-drop", str(BOUND), "--no-progress"], log)
    manifest = json.loads((bundle / "manifest.json").read_text())
    benches = {}
    for art in manifest["artifacts"]:
        runtime, precision = art["runtime"], art["precision"]
        if runtime == "coreml":
            continue  # Core ML predicts on macOS only
        out = work / f"vilt-scenes-bench-{runtime}-{precision}.json"
        if force or not out.exists():
            run(mmedge + ["bench", "--artifact", str(bundle), "--device", "host", "--backend", runtime,
                          "--precision", precision, "--samples", str(bench_samples), "--json", str(out),
                          "--no-progress"], log)
        benches[f"{runtime} {precision}"] = json.loads(out.read_text())
    return {**summarise(teacher, json.loads(evaluation.read_text()), manifest, benches), "note": note}


def summarise(teacher: Path, evaluation: dict, manifest: dict, benches: dict) -> dict:
    curve = [json.loads(line) for line in (teacher / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {
        "machine": "2-core CPU; batch 1, one thread",
        "teacher": {"folder": rel(teacher), "script": "scripts/train_vilt_teacher.py", "trained_by": TEACHER_RUN,
                    "config": json.loads((teacher / "teacher_config.json").read_text()),
                    "val_curve": [{"step": r["step"], "val_acc": r["val_acc"]} for r in curve],
                    "test": json.loads((teacher / "teacher_eval.json").read_text())},
        "adapt_config": json.loads(CONFIG.read_text()),
        "eval": {k: evaluation[k] for k in ("split", "samples", "labelled", "exit_layers", "parameters", "keep_ratios")},
        "artifacts": [f"{a['runtime']} {a['precision']}" for a in manifest["artifacts"]],
        "calibration": manifest["thresholds"],
        "bench": {name: {"samples": b["samples"], "repeats": b["repeats"], "threads": b["threads"],
                         "policies": {p: {k: row[k] for k in ("accuracy", "mean_exit", "kept_tokens", "speedup_p50",
                                                                "exit_histogram")}
                                      | {"p50_ms": row["latency"]["p50_ms"], "p90_ms": row["latency"]["p90_ms"]}
                                      for p, row in b["policies"].items()}}
                  for name, b in benches.items()},
    }


def report(results: dict, out: Path) -> None:
    ev, cal = results["eval"], results["calibration"]
    exits = [e + 1 for e in ev["exit_layers"]]
    lines = ["# A small ViLT teacher, adapted without labels",
             "",
             "Generated by `benchmarks/vilt_teacher.py` from `results.json`. The teacher is a "
             "`ViltForQuestionAnswering` trained here with `transformers` (`scripts/train_vilt_teacher.py`, "
             f"{results['teacher']['config']['layers']} layers x {results['teacher']['config']['hidden_size']}, "
             f"{results['teacher']['config']['image_size']} px images in {results['teacher']['config']['patch_size']} px "
             "patches); `mmedge adapt` trained the exits, confidences and prefilter from the teacher's own answers "
             "(no labels). " + results["machine"] + ".",
             "",
             f"Teacher test accuracy (its own script, {results['teacher']['test']['samples']} samples): "
             f"**{results['teacher']['test']['accuracy']:.3f}**, after "
             f"{results['teacher']['val_curve'][-1]['step']:,} steps. It was trained by:",
             "",
             *[f"    {c}" for c in results["teacher"]["trained_by"]],
             "",
             f"## Accuracy and agreement with the teacher per exit ({ev['split']} split, {ev['samples']} samples)",
             "",
             "| keep ratio | visual tokens | " + " | ".join(f"exit {e}: acc / agree" for e in exits) + " |",
             "|---|---|" + "---|" * len(exits)]
    for r in ev["keep_ratios"].values():
        cells = [f"{a:.3f} / {g:.3f}" for a, g in zip(r["accuracy_per_exit"], r["teacher_agreement_per_exit"])]
        lines.append(f"| {r['keep_ratio']:g} | {r['visual_tokens']} | " + " | ".join(cells) + " |")
    chosen = cal.get("calibration", {}).get("chosen", {})
    lines += ["", "## Calibrated policy", "",
              f"`mmedge calibrate --max-drop {BOUND}` on {cal.get('calibration', {}).get('samples', '?')} validation "
              f"samples chose `{cal['policy']}` at keep ratio {cal['keep_ratio']:g} (accuracy "
              f"{chosen.get('accuracy', float('nan')):.3f} against {cal.get('calibration', {}).get('reference_accuracy', float('nan')):.3f} "
              f"at full depth; modelled FLOPs ratio {chosen.get('flops_ratio', float('nan')):.3f}).", "",
              "## Measured through the Engine (batch 1, one thread)", "",
              "| runtime | policy | accuracy | mean exit | kept tokens | p50 ms | p90 ms | speed-up (p50) |",
              "|---|---|---|---|---|---|---|---|"]
    for name, b in results["bench"].items():
        for policy, row in b["policies"].items():
            lines.append(f"| {name} | {policy} | {row['accuracy']:.3f} | {row['mean_exit']:.2f} | {row['kept_tokens']:.1f} "
                         f"| {row['p50_ms']:.2f} | {row['p90_ms']:.2f} | {row['speedup_p50']:.2f}x |")
    if results.get("note"):
        lines += ["", f"**Note on this run:** {results['note']}"]
    lines += ["", f"Accuracy in the bench is on {next(iter(results['bench'].values()))['samples']} test queries per "
              "policy; speed-ups are ratios of medians within one runtime and one run. The goal: at most "
              f"{BOUND * 100:.0f} point below the teacher, at least {GOAL}x.", ""]
    (out / "report.md").write_text("\n".join(lines))
    plot(results, out / "exits.png")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ev = results["eval"]
    exits = [e + 1 for e in ev["exit_layers"]]
    n = ev["samples"]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for i, r in enumerate(ev["keep_ratios"].values()):
        acc = r["accuracy_per_exit"]
        half = [1.96 * (a * (1 - a) / n) ** 0.5 for a in acc]
        ax.errorbar([e + (i - 1) * 0.08 for e in exits], acc, yerr=half, fmt="o", capsize=3,
                    label=f"keep {r['keep_ratio']:g}")
    ax.axhline(results["teacher"]["test"]["accuracy"], color="grey", lw=0.8, ls=":", label="teacher (own test)")
    ax.set_xlabel("exit after layer")
    ax.set_ylabel(f"test accuracy (95% interval, n={n})")
    ax.set_xticks(exits)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--work", type=Path, default=ROOT / "runs", help="where the teacher, adapted model and bundle live")
    parser.add_argument("--eval-samples", type=int, default=1000)
    parser.add_argument("--bench-samples", type=int, default=200)
    parser.add_argument("--force", action="store_true", help="redo every step")
    parser.add_argument("--note", help="what the report should say about this run's conditions")
    parser.add_argument("--report-only", action="store_true", help="rewrite the report from --out/results.json")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        results = measure(args.work, args.force, args.eval_samples, args.bench_samples, args.note)
        tmp = args.out / "results.json.tmp"
        tmp.write_text(json.dumps(results, indent=1) + "\n")
        tmp.replace(args.out / "results.json")
    report(json.loads((args.out / "results.json").read_text()), args.out)
    print(f"wrote {rel(args.out / 'report.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A small ViLT trained with `transformers` on the scenes, adapted by `mmedge adapt` without labels, then
calibrated and measured through the Engine: what the adapter gives a model that means something.

    python benchmarks/vilt_teacher.py                  # trains the teacher if runs/vilt-teacher is missing (~1 h)
    python benchmarks/vilt_teacher.py --report-only    # report.md and exits.png from the committed results.json

Steps, each a command a user runs (skipped when its output is already there; --force redoes them):
  1. the teacher: `python scripts/train_vilt_teacher.py --out runs/vilt-teacher` (ViltForQuestionAnswering);
  2. `mmedge adapt --from runs/vilt-teacher --task vqa --data scenes` with benchmarks/configs/vilt-adapt.json
     (label_loss_weight 0: the scenes' images and questions only; the teacher's answers teach the exits,
     the confidences and the prefilter), again with vilt-adapt-backbone.json (train_backbone: the
     pretrained weights are trained too, the teacher a frozen copy of them), and with the default config
     plus `--max-text-len 16` (the text sized to the questions), with and without `--exits 3,4,5,6`;
  3. `mmedge eval` on the test split: accuracy and agreement with the teacher per exit and keep ratio;
  4. `mmedge export` with benchmarks/configs/vilt-export.json (ONNX and ExecuTorch, fp32 and int8: the targets
     that run here; Core ML converts but predicts only on macOS), then `mmedge calibrate --max-drop 0.01` on the
     validation split (a bound on the accuracy drop against full depth);
  5. `mmedge bench --device host` (batch 1, one thread) per runtime and precision that was exported and
     runs here: accuracy, mean exit, kept tokens and the speed-up of every policy over full depth.
Steps 2-5 run once per adaptation (ADAPTATIONS; --adaptations picks some, the others keep their committed
results). Writes results.json, report.md and exits.png under --out (repository-relative paths only).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "vilt_teacher"
# The adaptations measured: the default (the teacher's weights frozen: exits, confidences and
# prefilter trained), `--train-backbone` (the pretrained weights trained too, against a frozen copy), and
# the default with the text length sized to the scenes' questions (the longest is 14 WordPiece tokens
# with [CLS] and [SEP]; the teacher pads to 24), and that with exits only where this teacher's answers
# have formed (after layers 3-6: exits 1 and 2 agree with it on 61% and 71% of the questions):
# (distillation config, extra `mmedge adapt` arguments).
ADAPTATIONS = {"frozen": (ROOT / "benchmarks" / "configs" / "vilt-adapt.json", []),
               "backbone": (ROOT / "benchmarks" / "configs" / "vilt-adapt-backbone.json", []),
               "frozen-text16": (ROOT / "benchmarks" / "configs" / "vilt-adapt.json", ["--max-text-len", "16"]),
               "frozen-text16-exits3": (ROOT / "benchmarks" / "configs" / "vilt-adapt.json",
                                        ["--max-text-len", "16", "--exits", "3,4,5,6"])}
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


def measure(work: Path, force: bool, eval_samples: int, bench_samples: int, note: str | None,
            adaptations: list[str]) -> dict:
    """The teacher (trained if missing), then each of `adaptations` (ADAPTATIONS) measured."""
    teacher = work / "vilt-teacher"
    log = work / "vilt_teacher.log"
    if force or not (teacher / "model.safetensors").exists():
        run([sys.executable, "scripts/train_vilt_teacher.py", "--out", str(teacher), "--resume"], log)
    out = {"teacher": teacher_summary(teacher)}
    for name in adaptations:
        out[name] = {**adapt_and_measure(teacher, work, name, force, eval_samples, bench_samples), "note": note}
    return out


def adapt_and_measure(teacher: Path, work: Path, name: str, force: bool, eval_samples: int,
                      bench_samples: int) -> dict:
    """Steps 2-5 of the module docstring for one adaptation config."""
    config, extra = ADAPTATIONS[name]
    suffix = "" if name == "frozen" else f"-{name}"
    adapted, bundle = work / f"vilt-scenes{suffix}", work / f"vilt-scenes{suffix}.mmedge"
    log = work / "vilt_teacher.log"
    mmedge = [sys.executable, "-m", "mmedge"]
    if force or not (adapted / "README.md").exists():
        run(mmedge + ["adapt", "--from", str(teacher), "--task", "vqa", "--data", "scenes", "--config", str(config),
                      *extra, "--out", str(adapted), "--force", "--no-progress"], log)
    evaluation = work / f"vilt-scenes{suffix}-eval.json"
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
        out = work / f"vilt-scenes{suffix}-bench-{runtime}-{precision}.json"
        if force or not out.exists():
            run(mmedge + ["bench", "--artifact", str(bundle), "--device", "host", "--backend", runtime,
                          "--precision", precision, "--samples", str(bench_samples), "--json", str(out),
                          "--no-progress"], log)
        benches[f"{runtime} {precision}"] = json.loads(out.read_text())
    adapt_report = json.loads((adapted / "adapt_report.json").read_text())
    return {**summarise(config, json.loads(evaluation.read_text()), manifest, benches),
            "adapt_arguments": extra, "text_tokens": adapt_report.get("text_tokens", {})}


def teacher_summary(teacher: Path) -> dict:
    curve = [json.loads(line) for line in (teacher / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {"folder": rel(teacher), "script": "scripts/train_vilt_teacher.py", "trained_by": TEACHER_RUN,
            "config": json.loads((teacher / "teacher_config.json").read_text()),
            "val_curve": [{"step": r["step"], "val_acc": r["val_acc"]} for r in curve],
            "test": json.loads((teacher / "teacher_eval.json").read_text())}


def summarise(config: Path, evaluation: dict, manifest: dict, benches: dict) -> dict:
    evaluation = {**evaluation, "teacher": evaluation["teacher"].replace(f"{ROOT}/", "")}  # repository-relative
    return {
        "machine": "2-core CPU; batch 1, one thread",
        "adapt_config": json.loads(config.read_text()),
        "eval": {k: evaluation[k] for k in ("split", "samples", "labelled", "exit_layers", "parameters", "keep_ratios",
                                            "teacher", "teacher_accuracy")},
        "artifacts": [f"{a['runtime']} {a['precision']}" for a in manifest["artifacts"]],
        "calibration": manifest["thresholds"],
        "bench": {name: {"samples": b["samples"], "repeats": b["repeats"], "threads": b["threads"],
                         "policies": {p: {k: row[k] for k in ("accuracy", "mean_exit", "kept_tokens", "speedup_p50",
                                                                "exit_histogram", "keep_ratio")}
                                      | {"p50_ms": row["latency"]["p50_ms"], "p90_ms": row["latency"]["p90_ms"],
                                         "stages_p50_ms": {k: v["p50_ms"] for k, v in row["stages"].items()}}
                                      for p, row in b["policies"].items()}}
                  for name, b in benches.items()},
    }


TITLES = {"frozen": "The teacher's weights frozen (the default)",
          "backbone": "The pretrained weights trained too (`--train-backbone`)",
          "frozen-text16": "The teacher's weights frozen, the text sized to the questions (`--max-text-len 16`)",
          "frozen-text16-exits3": "As above, with exits after layers 3-6 only (`--max-text-len 16 --exits 3,4,5,6`)"}


def report(results: dict, out: Path) -> None:
    t = results["teacher"]
    cfg = t["config"]
    lines = ["# A small ViLT teacher, adapted without labels",
             "",
             "Generated by `benchmarks/vilt_teacher.py` from `results.json`. The teacher is a "
             "`ViltForQuestionAnswering` trained here with `transformers` (`scripts/train_vilt_teacher.py`, "
             f"{cfg['layers']} layers x {cfg['hidden_size']}, {cfg['image_size']} px images in {cfg['patch_size']} px "
             "patches); `mmedge adapt` trained the exits, confidences and prefilter from the teacher's own answers "
             "(no labels): with the teacher's weights frozen, with them trained too (against a frozen copy), and "
             "frozen with the text length sized to the questions (exits after every layer, and after layers 3-6 "
             "only). 2-core CPU; batch 1, one thread.",
             "",
             f"Teacher test accuracy (its own script, {t['test']['samples']} samples): "
             f"**{t['test']['accuracy']:.3f}**, after {t['val_curve'][-1]['step']:,} steps. It was trained by:",
             "",
             *[f"    {c}" for c in t["trained_by"]],
             "",
             *goal_lines(results)]
    for name, title in TITLES.items():
        if name in results:
            lines += adaptation_lines(title, results[name])
    first = next(results[n] for n in TITLES if n in results)
    lines += [f"Accuracy in the bench is on {next(iter(first['bench'].values()))['samples']} test queries per "
              "policy; speed-ups are ratios of medians within one runtime and one run. The goal: at most "
              f"{BOUND * 100:.0f} point below the teacher, at least {GOAL}x.", ""]
    (out / "report.md").write_text("\n".join(lines))
    plot(results, out / "exits.png")


def goal_lines(results: dict) -> list[str]:
    """Each adaptation's calibrated policy (prefilter + exits) against full depth, per runtime."""
    lines = ["## Against the goal", "",
             f"The goal: the calibrated policy at most {BOUND * 100:.0f} point below the teacher, at least {GOAL}x "
             "faster than full depth. With the teacher's weights frozen, full depth is the teacher itself; with "
             "the backbone trained it is not (the teacher's accuracy is under that adaptation below).", "",
             "| adaptation | runtime | full depth: accuracy | prefilter + exits: accuracy | mean exit layer "
             "| kept tokens | speed-up (p50) |", "|---|---|---|---|---|---|---|"]
    for name in TITLES:
        for runtime, b in results.get(name, {}).get("bench", {}).items():
            full, both = b["policies"]["full depth, every token"], b["policies"]["prefilter + exits"]
            hist, layers = both["exit_histogram"], results[name]["eval"]["exit_layers"]
            mean_layer = sum(n * (layer + 1) for n, layer in zip(hist, layers)) / sum(hist)  # 1-based
            lines.append(f"| {name} | {runtime} | {full['accuracy']:.3f} | {both['accuracy']:.3f} | "
                         f"{mean_layer:.2f} of {layers[-1] + 1} | {both['kept_tokens']:.1f} | "
                         f"{both['speedup_p50']:.2f}x |")
    return lines + ["", *ceiling_lines(results)]


def ceiling(r: dict, runtime: str) -> dict | None:
    """The fastest any exit policy could be on this bundle within the bound, from measured parts: every
    query stopping at the earliest exit whose test accuracy (at that keep ratio) is within BOUND of the
    teacher's, timed as the preprocessing plus the stages up to that exit (sums of per-stage medians of
    the full-depth and prefilter-only rows), against full depth's measured median. None without stage
    times (results measured before they were kept)."""
    ev, b = r["eval"], r["bench"][runtime]["policies"]
    teacher = ev.get("teacher_accuracy")
    rows = [b["full depth, every token"], b["prefilter only"]]
    if teacher is None or any("stages_p50_ms" not in row for row in rows):
        return None
    best = None
    for row in rows:
        acc = ev["keep_ratios"][f"{row['keep_ratio']:g}"]["accuracy_per_exit"]
        exit_at = next((i for i, a in enumerate(acc) if a >= teacher - BOUND - 1e-9), None)
        if exit_at is None:
            continue
        parts = list(row["stages_p50_ms"].values())  # preprocess, then one stage per exit, in order
        ms = parts[0] + sum(parts[1: exit_at + 2])
        cand = {"keep_ratio": row["keep_ratio"], "exit": exit_at, "exit_layer": ev["exit_layers"][exit_at] + 1,
                "accuracy": acc[exit_at], "ms": ms, "fixed_ms": parts[0] + parts[1],
                "speedup": b["full depth, every token"]["p50_ms"] / ms}
        if best is None or cand["speedup"] > best["speedup"]:
            best = cand
    return best


def ceiling_lines(results: dict) -> list[str]:
    rows = []
    for name in TITLES:
        for runtime in results.get(name, {}).get("bench", {}):
            c = ceiling(results[name], runtime)
            if c is not None:
                full = results[name]["bench"][runtime]["policies"]["full depth, every token"]["p50_ms"]
                rows.append(f"| {name} | {runtime} | {full:.2f} | {c['fixed_ms']:.2f} | {c['keep_ratio']:g} | "
                            f"{c['exit_layer']} ({c['accuracy']:.3f}) | {c['ms']:.2f} | {c['speedup']:.2f}x |")
    if not rows:
        return []
    return ["### The most any exit policy could give here (modelled from measured stage times)", "",
            "Every query stopping at the earliest exit whose test accuracy is within "
            f"{BOUND * 100:.0f} point of the teacher's, at the keep ratio where that is fastest: the preprocessing "
            "plus the stages up to that exit, as sums of per-stage medians measured in the bench, against full "
            "depth's measured median. No exit policy can beat it at that accuracy: what every query pays "
            "(preprocessing, and stage 0: the embeddings, the prefilter and the layers up to the first exit) "
            "bounds it.", "",
            "| adaptation | runtime | full depth ms | preprocess + stage 0 ms | keep | earliest exit in bound "
            "(accuracy) | ms to it | speed-up ceiling |", "|---|---|---|---|---|---|---|---|", *rows, ""]


def adaptation_lines(title: str, r: dict) -> list[str]:
    ev, cal = r["eval"], r["calibration"]
    exits = [e + 1 for e in ev["exit_layers"]]
    config = ", ".join(f"{k} {v}" for k, v in r["adapt_config"].items())
    args = f" `mmedge adapt` arguments beside it: `{' '.join(r['adapt_arguments'])}`." if r.get("adapt_arguments") else ""
    text = r.get("text_tokens") or {}
    use = (f" The {text['examples']} validation questions take at most {text['longest']} of the model's "
           f"{text['max_text_len']} text tokens (mean {text['mean']:g}, with [CLS] and [SEP]; "
           f"{text['truncated']} truncated)." if text.get("examples") else "")
    lines = [f"## {title}", "", f"Distillation config: {config}.{args}{use}", "",
             f"### Accuracy and agreement with the teacher per exit ({ev['split']} split, {ev['samples']} samples)",
             "",
             "| keep ratio | visual tokens | " + " | ".join(f"exit {e}: acc / agree" for e in exits) + " |",
             "|---|---|" + "---|" * len(exits)]
    for k in ev["keep_ratios"].values():
        cells = [f"{a:.3f} / {g:.3f}" for a, g in zip(k["accuracy_per_exit"], k["teacher_agreement_per_exit"])]
        lines.append(f"| {k['keep_ratio']:g} | {k['visual_tokens']} | " + " | ".join(cells) + " |")
    if ev.get("teacher_accuracy") is not None:
        full = ev["keep_ratios"]["1"]["accuracy_per_exit"][-1]
        lines += ["", f"The teacher: {ev['teacher']}; its accuracy on the same {ev['samples']} examples "
                      f"{ev['teacher_accuracy']:.3f}, the adapted model's at full depth (keep 1) {full:.3f}."]
    chosen = cal.get("calibration", {}).get("chosen", {})
    lines += ["", "### Calibrated policy", "",
              f"`mmedge calibrate --max-drop {BOUND}` on {cal.get('calibration', {}).get('samples', '?')} validation "
              f"samples chose `{cal['policy']}` at keep ratio {cal['keep_ratio']:g} (accuracy "
              f"{chosen.get('accuracy', float('nan')):.3f} against "
              f"{cal.get('calibration', {}).get('reference_accuracy', float('nan')):.3f} "
              f"at full depth; modelled FLOPs ratio {chosen.get('flops_ratio', float('nan')):.3f}).", "",
              "### Measured through the Engine (batch 1, one thread)", "",
              "| runtime | policy | accuracy | mean exit | kept tokens | p50 ms | p90 ms | speed-up (p50) |",
              "|---|---|---|---|---|---|---|---|"]
    for name, b in r["bench"].items():
        for policy, row in b["policies"].items():
            lines.append(f"| {name} | {policy} | {row['accuracy']:.3f} | {row['mean_exit']:.2f} | {row['kept_tokens']:.1f} "
                         f"| {row['p50_ms']:.2f} | {row['p90_ms']:.2f} | {row['speedup_p50']:.2f}x |")
    if r.get("note"):
        lines += ["", f"**Note on this run:** {r['note']}"]
    return lines + [""]


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in TITLES if n in results]
    cols = min(2, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 3.6 * rows), sharey=True, squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names):
        ev = results[name]["eval"]
        exits = [e + 1 for e in ev["exit_layers"]]
        n = ev["samples"]
        for i, r in enumerate(ev["keep_ratios"].values()):
            acc = r["accuracy_per_exit"]
            half = [1.96 * (a * (1 - a) / n) ** 0.5 for a in acc]
            ax.errorbar([e + (i - 1) * 0.08 for e in exits], acc, yerr=half, fmt="o", capsize=3,
                        label=f"keep {r['keep_ratio']:g}")
        ax.axhline(results["teacher"]["test"]["accuracy"], color="grey", lw=0.8, ls=":", label="teacher (own test)")
        ax.set_title(TITLES[name].replace("`", ""), fontsize=9)
        ax.set_xlabel("exit after layer")
        ax.set_xticks(exits)
        ax.legend(fontsize=8)
    for row in axes:
        row[0].set_ylabel("test accuracy (95% interval)")
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
    parser.add_argument("--adaptations", default=",".join(ADAPTATIONS),
                        help=f"which to measure, of {', '.join(ADAPTATIONS)} (default all); the others' results are "
                             "kept from --out/results.json")
    parser.add_argument("--report-only", action="store_true", help="rewrite the report from --out/results.json")
    args = parser.parse_args(argv)
    chosen = [a for a in args.adaptations.split(",") if a]
    unknown = sorted(set(chosen) - set(ADAPTATIONS))
    if unknown:
        parser.error(f"--adaptations: unknown {unknown}; choose among {', '.join(ADAPTATIONS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        results = measure(args.work, args.force, args.eval_samples, args.bench_samples, args.note, chosen)
        old = args.out / "results.json"
        if old.exists():  # the adaptations not measured now keep their committed results
            kept = {k: v for k, v in json.loads(old.read_text()).items() if k in ADAPTATIONS and k not in results}
            results = {**results, **kept}
        tmp = args.out / "results.json.tmp"
        tmp.write_text(json.dumps(results, indent=1) + "\n")
        tmp.replace(args.out / "results.json")
    report(json.loads((args.out / "results.json").read_text()), args.out)
    print(f"wrote {rel(args.out / 'report.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

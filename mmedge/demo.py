"""`mmedge demo`, the main job: shipped model -> bundle (every target) -> calibration -> adaptive
inference over the test split in every runtime that runs here -> table, JSON, Markdown and plot.

Latencies are measured here, per query (preprocessing + the stages run), on this machine's CPU;
the speed-up is the ratio of medians to full depth within the same runtime and run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from mmedge.bench.queries import check_scene_labels
from mmedge.bench.stats import wilson
from mmedge.bundle.manifest import load_manifest
from mmedge.data.batches import generate
from mmedge.errors import AdaptedModelUnsupported, ConfigError, MMEdgeError
from mmedge.fileio import atomic_write, sha256_file, shown_path
from mmedge.runtime.controller import Policy, policy_rows
from mmedge.runtime.pruning import PruningRule
from mmedge.runtime.engine import Engine

DEMO_RECIPE = dict(targets=["onnx", "executorch", "coreml"], quantize="int8", in_graph=True,
                   parity_samples=32, accuracy_samples=200, drop_visual_after=0)
RUNTIMES = [("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("executorch", "fp32"), ("executorch", "int8")]


def ensure_bundle(model_dir: Path, bundle: Path, force: bool, log=print) -> Path:
    """Export unless a verified bundle of exactly these weights is already there."""
    from mmedge.export.exporter import export_bundle
    from mmedge.export.recipe import ExportRecipe

    if bundle.exists() and not force:
        try:
            manifest = load_manifest(bundle)
            same = manifest["files"].get("torch/model.safetensors", {}).get("sha256") == \
                sha256_file(model_dir / "model.safetensors")
            pruning = manifest.get("modality_pruning", {}).get("after_stage")
            if same and pruning != DEMO_RECIPE["drop_visual_after"]:
                log(f"re-exporting: the bundle's text-only stages (after stage {pruning}) are not the demo's "
                    f"(after stage {DEMO_RECIPE['drop_visual_after']})")
            elif same:
                log(f"reusing the verified bundle {bundle} (same weights; --force-export to redo)")
                return bundle
        except MMEdgeError as exc:
            log(f"re-exporting: {exc}")
    return export_bundle(model_dir, bundle, ExportRecipe(**DEMO_RECIPE), force=True, log=log)


DEMO_HINT = ("the demo answers the generated scenes' test split; measure a model trained on your own data with "
             "`mmedge eval --model MODEL --data NAME:ROOT` and `mmedge bench --artifact BUNDLE --data NAME:ROOT`")


ADAPTED_INSTEAD = ("export it (mmedge export --model DIR --out B.mmedge --target onnx), then mmedge calibrate "
                   "--artifact B.mmedge --data NAME:ROOT and mmedge bench --artifact B.mmedge --device host --data "
                   "NAME:ROOT (docs/adapt.md)")


def check_model_labels(model_dir: Path) -> None:
    """Refuse, before anything is exported, a model whose labels are not a superset of the scenes'
    answers for its task (a model trained on a dataset of your own): its accuracy on the scenes
    would mean nothing. LabelMismatchError (an MMEdgeError). A config.json that cannot be read is
    left to the export to report."""
    try:
        saved = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if not isinstance(saved, dict) or not isinstance(saved.get("labels"), list):
        return
    task = saved.get("task") or (saved.get("adapt") or {}).get("task")
    check_scene_labels({"task": task, "labels": saved["labels"]}, DEMO_HINT)


def run_policy(engine: Engine, samples, policy: Policy, keep_ratio: float, pruning: PruningRule | None = None) -> dict:
    """One row: `samples` answered under `policy`. An answer is right when it is the sample's answer
    string (never compared by label index: the model's labels need not be in the scenes' order)."""
    correct, exits, kept, latency, pruned = [], [], [], [], []
    for s in samples:
        p = engine.predict(s.image, s.text, policy=policy, keep_ratio=keep_ratio, pruning=pruning)
        correct.append(p.answer == s.answer)
        pruned.append(p.visual_dropped_after is not None)
        exits.append(p.exit_index)
        kept.append(len(p.kept_visual_tokens))
        latency.append(p.timings_ms["total"])
    lat = np.asarray(latency)
    return {"accuracy": float(np.mean(correct)), "mean_exit": float(np.mean(exits)),
            "kept_tokens": float(np.mean(kept)), "p10_ms": float(np.percentile(lat, 10)), "p50_ms": float(np.percentile(lat, 50)),
            "p90_ms": float(np.percentile(lat, 90)), "exit_histogram": np.bincount(exits).tolist(),
            "pruned_share": float(np.mean(pruned))}


def check_demo_arguments(samples: int, calibration_samples: int, max_drop: float, threads: int | None) -> None:
    """Refuse arguments that mean nothing before exporting or calibrating anything."""
    from mmedge.runtime.calibrate import check_arguments

    problems = []
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        problems.append(f"samples {samples!r} must be a whole number >= 1")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        problems.append(f"threads {threads!r} must be a whole number >= 1 (or None for the runtime's default)")
    if problems:
        raise ConfigError(problems, "demo arguments")
    try:
        check_arguments(max_drop, 1.645, calibration_samples)
    except ConfigError as exc:
        problems = [("calibration " + p if p.startswith("samples ") else p).replace("use --samples",
                                                                                     "use --calibration-samples")
                    for p in exc.problems]
        raise ConfigError(problems, "demo arguments") from None


def run_demo(model_dir: str | Path = "models/vqa-default", out: str | Path = "runs/demo", samples: int = 300,
             calibration_samples: int = 1000, max_drop: float = 0.01, force_export: bool = False,
             threads: int | None = 1, progress: bool = True, log=print) -> dict:
    from mmedge.runtime.backends.executorch_backend import set_executorch_threads
    from mmedge.runtime.calibrate import calibrate, format_table

    check_demo_arguments(samples, calibration_samples, max_drop, threads)
    if threads:  # before the export's parity check runs ExecuTorch: its pool is sized once per process
        set_executorch_threads(threads, missing_ok=True)
    started = time.perf_counter()
    model_dir, out = Path(model_dir), Path(out)
    from mmedge.adapt.folder import is_adapted_dir

    if is_adapted_dir(model_dir):  # the demo's scenes, labels and card are mmedge's own models'
        raise AdaptedModelUnsupported("demo", model_dir, ADAPTED_INSTEAD)
    check_model_labels(model_dir)  # before minutes of export
    bundle = ensure_bundle(model_dir, out / f"{model_dir.name}.mmedge", force_export, log)
    manifest = load_manifest(bundle)
    check_scene_labels(manifest, DEMO_HINT)  # the bundle's own labels (a reused bundle included)
    if manifest["thresholds"]["source"] != "calibrated" or \
            manifest["thresholds"].get("calibration", {}).get("max_drop") != max_drop:
        log(f"calibrating on {calibration_samples} validation samples (max drop {max_drop})")
        result = calibrate(bundle, max_drop, calibration_samples, progress=progress)
        log(format_table(result))
        manifest = load_manifest(bundle)
    test = generate(manifest["task"], 0, "test", range(samples), manifest["preprocessing"]["image_size"])
    rows = []
    available = {(a["runtime"], a["precision"]) for a in manifest["artifacts"]}
    for backend, precision in RUNTIMES:
        if (backend, precision) not in available:
            continue
        engine = Engine.load(bundle, backend=backend, precision=precision, threads=threads)
        engine.warm_up(5)
        for name, (policy, ratio, rule) in policy_rows(manifest).items():
            desc = f"{backend} {precision}: {name}"
            it = tqdm(test, desc=desc, disable=not progress, leave=False, unit="query")
            row = {"backend": backend, "precision": precision, "policy": name, "exit_policy": policy.to_dict(),
                   "keep_ratio": ratio, "modality_pruning": rule.to_dict() if rule else None,
                   **run_policy(engine, it, policy, ratio, rule)}
            rows.append(row)
    for row in rows:  # speed-up against full depth in the same runtime and run
        full = next(r for r in rows if (r["backend"], r["precision"]) == (row["backend"], row["precision"])
                    and r["policy"] == "full depth, every token")
        row["speedup_p50"] = full["p50_ms"] / row["p50_ms"]
    coreml = [a for a in manifest["artifacts"] if a["runtime"] == "coreml"]
    result = {"model": shown_path(model_dir), "bundle": shown_path(bundle), "samples": samples, "split": "test",
              "threads": threads, "thresholds": manifest["thresholds"], "rows": rows,
              "modality_pruning": _pruning_summary(manifest.get("modality_pruning")),
              "coreml": [{"precision": a["precision"], "structure_check": a["structure_check"],
                          "parity": a["parity"]} for a in coreml],
              "seconds": time.perf_counter() - started,
              "note": "latencies measured on this machine's CPU, per query (preprocessing + stages), batch 1"}
    write_outputs(out, result)
    return result


def _pruning_summary(section: dict | None) -> dict | None:
    if not section:
        return None
    return {"after_stage": section["after_stage"], "text_stages": [s["name"] for s in section["stages"]],
            "rule": section["rule"]}


def _pruning_line(summary: dict | None) -> str:
    if not summary:
        return "No modality pruning stages in this bundle."
    r = summary["rule"]
    return (f"Modality pruning: after stage {summary['after_stage']}, the visual tokens are dropped when "
            f"{r['signal']} is {r['prune_when']} {r['threshold']:.4g} (source {r['source']}; "
            f"{'on' if r['enabled'] else 'off'} by default after calibration; the pruning rows apply it either way).")


def format_rows(rows: list[dict]) -> str:
    from tabulate import tabulate

    table = [[r["backend"], r["precision"], r["policy"], f"{r['accuracy']:.3f}", f"{r['mean_exit']:.2f}",
              f"{r['kept_tokens']:.0f}", f"{r.get('pruned_share', 0.0):.0%}", f"{r['p50_ms']:.2f}", f"{r['p90_ms']:.2f}",
              f"{r['speedup_p50']:.2f}x"] for r in rows]
    return tabulate(table, ["backend", "precision", "policy", "accuracy", "mean exit", "kept tokens", "image dropped",
                            "p50 ms", "p90 ms", "speed-up (p50)"], tablefmt="github")


def write_outputs(out: Path, result: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "demo.json", lambda p: p.write_text(json.dumps(result, indent=1) + "\n"))
    th = result["thresholds"]
    md = [f"# mmedge demo: {result['model']}", "",
          f"{result['samples']} test samples per row, batch 1, {result['threads']} thread(s); {result['note']}.",
          f"Calibrated on the validation split: keep ratio {th['keep_ratio']}, policy {th['policy']} "
          f"(confidence {th['confidence']}, max probability {th['max_probability']}, patience {th['patience']}).",
          _pruning_line(result.get("modality_pruning")), "",
          format_rows(result["rows"]), ""]
    for c in result["coreml"]:
        md.append(f"Core ML ({c['precision']}): structure check passed={c['structure_check']['passed']}; "
                  f"not run here ({c['parity'].get('reason', '')}).")
    atomic_write(out / "demo.md", lambda p: p.write_text("\n".join(md) + "\n"))
    plot(result["rows"], out / "demo.png", result["samples"])


def plot(rows: list[dict], path: Path, samples: int) -> None:
    """Accuracy against median latency per policy and runtime: the accuracy's 95% Wilson interval
    and the latency's p10-p90 range as error bars, no lines between policies, and an accuracy axis
    no narrower than 0.1 so that differences inside the intervals do not look large."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    markers = {"full depth, every token": "s", "prefilter only": "^", "exits only": "o", "prefilter + exits": "*",
               "modality pruning only": "v", "prefilter + exits + pruning": "P"}
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    lows = []
    for i, key in enumerate(sorted({(r["backend"], r["precision"]) for r in rows})):
        pts = [r for r in rows if (r["backend"], r["precision"]) == key]
        for r in pts:
            lo, hi = wilson(r["accuracy"], samples)
            lows.append(lo)
            ax.errorbar(r["p50_ms"], r["accuracy"], yerr=[[r["accuracy"] - lo], [hi - r["accuracy"]]],
                        xerr=[[r["p50_ms"] - r.get("p10_ms", r["p50_ms"])], [r["p90_ms"] - r["p50_ms"]]],
                        fmt=markers[r["policy"]], color=colours[i % len(colours)], ms=7, capsize=2, alpha=0.8,
                        label=f"{key[0]} {key[1]}" if r is pts[0] else None)
    for name, m in markers.items():
        if not any(r["policy"] == name for r in rows):
            continue
        ax.scatter([], [], marker=m, color="grey", label=name)
    top = 1.0
    ax.set_ylim(max(0.0, min(min(lows, default=0.9), top - 0.1) - 0.005), top + 0.005)
    ax.set_xlabel("latency per query, ms: median, bars p10-p90 (measured, this CPU)")
    ax.set_ylabel(f"test accuracy, bars 95% interval (n={samples})")
    ax.set_title("Adaptive inference: accuracy against latency")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=120, format="png"))
    plt.close(fig)


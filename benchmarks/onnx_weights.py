"""Weights once (issue #18): ONNX stage files that share one external weights file, against
self-contained files that each carry their weights.

    python benchmarks/onnx_weights.py          # about ten minutes here; writes benchmarks/results/onnx_weights/
    python benchmarks/onnx_weights.py --report-only   # the Markdown and figure again from the committed JSON

The default model (`models/vqa-default`) is exported twice with `--target onnx --quantize int8` and
the exporter's default keep ratios (1.0, 0.5, 0.25), ORT format on, the in-graph form off (it
shares the weights file too; the shipped bundle has it): once with `onnx_weights: "embedded"` (every
.onnx file self-contained, as before) and once with `"shared"` (today's default). Reported:
  sizes       every ONNX Runtime artifact (stage files plus its weights file), and its ratio to
              model.safetensors; exact byte counts
  load        Engine.load (manifest checks, SHA-256 of every file, sessions, self-check) and one
              query, each in a fresh Python process: wall-clock of the load, and the process's peak
              and final resident memory (Linux VmHWM, reset after the imports, and VmRSS) over its
              resident memory after importing mmedge and onnxruntime;
              median and p25-p75 of `--repeats` processes, variants interleaved
  JavaScript  the JS runtime (runtimes/js) loading each artifact of the shared bundle on
              onnxruntime-node and on onnxruntime-web (WebAssembly, run in Node) and answering one
              query: it must give the Python Engine's answer
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mmedge.fileio import atomic_write, shown_path  # noqa: E402

MODEL = ROOT / "models/vqa-default"
VARIANTS = ("embedded", "shared")
LOADS = (("onnx", "fp32"), ("onnx", "int8"), ("ort", "fp32"), ("ort", "int8"))
QUERY_IMAGE = ROOT / "tests/vectors/golden/images/scene-color.png"
QUERY_TEXT = "what color is the circle ?"
WEB_MODULE = ROOT / "web_demo/node_modules/onnxruntime-web"
JS = ROOT / "runtimes/js"

LOAD_PROBE = """
import json, sys, time
import numpy as np, onnxruntime
from PIL import Image
from mmedge.runtime.engine import Engine

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB -> MiB

with open("/proc/self/clear_refs", "w") as f:  # reset the peak (VmHWM) to the current resident size
    f.write("5")
before = status("VmRSS")
t0 = time.perf_counter()
engine = Engine.load(sys.argv[1], backend="onnxruntime", precision=sys.argv[3], fmt=sys.argv[2], threads=1)
load_ms = (time.perf_counter() - t0) * 1e3
answer = engine.predict(np.asarray(Image.open(sys.argv[4]).convert("RGB")), sys.argv[5], policy="full").answer
print(json.dumps({"load_ms": load_ms, "peak_mib_over_imports": status("VmHWM") - before,
                  "held_mib": status("VmRSS") - before, "answer": answer}))
"""


def export(variant: str, work: Path) -> Path:
    from mmedge.export.exporter import export_bundle
    from mmedge.export.recipe import ExportRecipe

    out = work / f"{variant}.mmedge"
    if not (out / "manifest.json").exists():
        export_bundle(MODEL, out, ExportRecipe(targets=["onnx"], quantize="int8", in_graph=False,
                                               onnx_weights=variant), log=lambda *_: None, force=True)
    return out


def sizes(bundle: Path) -> dict:
    from mmedge.bundle.manifest import load_manifest
    from mmedge.export.report import artifact_bytes

    weights = (MODEL / "model.safetensors").stat().st_size
    out = {}
    for a in load_manifest(bundle)["artifacts"]:
        if a["runtime"] != "onnxruntime":
            continue
        total = artifact_bytes(bundle, a)
        out[f"{a['format']} {a['precision']}"] = {"bytes": total, "over_safetensors": total / weights,
                                                  "files": len(a["stages"]) + ("external_data" in a)}
    return out


def load_once(bundle: Path, fmt: str, precision: str) -> dict:
    run = subprocess.run([sys.executable, "-c", LOAD_PROBE, str(bundle), fmt, precision, str(QUERY_IMAGE), QUERY_TEXT],
                         capture_output=True, text=True, cwd=ROOT, check=False)
    if run.returncode != 0:
        raise RuntimeError(f"loading {shown_path(bundle)} ({fmt}, {precision}) failed:\n{run.stderr[-2000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def loads(bundles: dict[str, Path], repeats: int) -> dict:
    """Every (variant, format, precision) `repeats` times, interleaved round by round."""
    raw: dict[str, list[dict]] = {}
    for _ in range(repeats):
        for variant, bundle in bundles.items():
            for fmt, precision in LOADS:
                raw.setdefault(f"{variant} {fmt} {precision}", []).append(load_once(bundle, fmt, precision))
    out = {}
    for key, runs in raw.items():
        entry = {"answers": sorted({r["answer"] for r in runs})}
        for field in ("load_ms", "peak_mib_over_imports", "held_mib"):
            v = np.array([r[field] for r in runs])
            entry[field] = {"median": float(np.median(v)), "p25": float(np.percentile(v, 25)),
                            "p75": float(np.percentile(v, 75))}
        out[key] = entry
    return out


def js_loads(bundle: Path) -> dict:
    """The JS runtime on onnxruntime-node and -web, every artifact of `bundle`."""
    node = shutil.which("node")
    if node is None or not (JS / "dist/index.js").exists() or not WEB_MODULE.exists():
        return {"status": "not run", "reason": "needs node, a built runtimes/js (bash scripts/test_js.sh) and "
                                               "web_demo/node_modules (bash scripts/test_web.sh)"}
    out = {}
    for ort in ("node", "web"):
        for fmt, precision in LOADS:
            run = subprocess.run([node, "scripts/load-check.mjs", "--ort", ort, "--web-module", str(WEB_MODULE),
                                  "--bundle", str(bundle), "--format", fmt, "--precision", precision,
                                  "--image", str(QUERY_IMAGE), "--text", QUERY_TEXT],
                                 capture_output=True, text=True, cwd=JS, check=False)
            lines = run.stdout.strip().splitlines()
            result = json.loads(lines[-1]) if lines else {"loaded": False, "error": run.stderr[-500:]}
            out[f"onnxruntime-{ort} {fmt} {precision}"] = result
    return {"status": "measured", "runs": out}


def markdown(r: dict) -> str:
    from tabulate import tabulate

    size_rows = []
    for artifact in r["sizes"]["shared"]:
        e, s = r["sizes"]["embedded"][artifact], r["sizes"]["shared"][artifact]
        size_rows.append([artifact, f"{e['bytes'] / 1e6:.2f} MB ({e['over_safetensors']:.2f}x)",
                          f"{s['bytes'] / 1e6:.2f} MB ({s['over_safetensors']:.2f}x)", r["goals"].get(artifact, "-")])
    load_rows = []
    for fmt, precision in LOADS:
        row = [f"{fmt} {precision}"]
        for variant in VARIANTS:
            e = r["loads"][f"{variant} {fmt} {precision}"]
            row += [f"{e['load_ms']['median']:.0f} ({e['load_ms']['p25']:.0f}-{e['load_ms']['p75']:.0f})",
                    f"{e['peak_mib_over_imports']['median']:.1f} ({e['peak_mib_over_imports']['p25']:.1f}-"
                    f"{e['peak_mib_over_imports']['p75']:.1f})"]
        load_rows.append(row)
    lines = [
        "# Weights once: shared ONNX external data against self-contained stage files", "",
        f"`python benchmarks/onnx_weights.py`; model `{r['model']}` ({r['safetensors_bytes'] / 1e6:.2f} MB of "
        f"safetensors), exported with targets onnx, int8, keep ratios {r['keep_ratios']}, ORT format, no in-graph "
        "form. Sizes are exact; load figures are median (p25-p75) of "
        f"{r['repeats']} fresh processes per row, interleaved, on a shared 2-core machine.", "",
        "## Size on disk (stage files + weights file; ratio to model.safetensors)", "",
        tabulate(size_rows, ["artifact", "embedded", "shared (the default)", "goal"], tablefmt="github"), "",
        "ORT format has no external data: each `.ort` file holds its own weights in both variants.", "",
        "## Python Engine: load and one query", "",
        tabulate(load_rows, ["artifact", "embedded: load ms", "embedded: peak MiB", "shared: load ms",
                             "shared: peak MiB"], tablefmt="github"), "",
        "Load = `Engine.load` (manifest checks, SHA-256 of every file, one onnxruntime session per stage of every "
        "keep ratio, self-check query). Peak MiB = the process's peak resident memory after the load and one "
        "query (Linux VmHWM, reset once mmedge and onnxruntime are imported), over the resident memory at that "
        "point.", ""]
    js = r["javascript"]
    lines += ["## JavaScript runtime (shared bundle)", ""]
    if js["status"] != "measured":
        lines += [f"Not run: {js['reason']}", ""]
    else:
        rows = [[k, "yes" if v.get("loaded") else f"no: {v.get('error', '')[:120]}", v.get("answer", "-"),
                 f"{v['load_ms']:.0f}" if "load_ms" in v else "-"] for k, v in js["runs"].items()]
        lines += [tabulate(rows, ["runtime, format, precision", "loads", "answer", "load ms (one run)"],
                           tablefmt="github"), "",
                  f"The Python Engine's answer to the same query: {r['python_answer']}.", ""]
    return "\n".join(lines)


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    artifacts = list(r["sizes"]["shared"])
    x = np.arange(len(artifacts))
    for i, variant in enumerate(VARIANTS):
        left.bar(x + (i - 0.5) * 0.38, [r["sizes"][variant][a]["over_safetensors"] for a in artifacts], 0.38,
                 label=variant)
    left.axhline(1.0, color="grey", lw=0.8, ls=":")
    left.set_xticks(x, artifacts)
    left.set_ylabel("size / model.safetensors (exact)")
    left.set_title("ONNX Runtime artifacts on disk")
    left.legend()
    keys = [f"{fmt} {precision}" for fmt, precision in LOADS]
    for i, variant in enumerate(VARIANTS):
        med = np.array([r["loads"][f"{variant} {k}"]["load_ms"]["median"] for k in keys])
        lo = np.array([r["loads"][f"{variant} {k}"]["load_ms"]["p25"] for k in keys])
        hi = np.array([r["loads"][f"{variant} {k}"]["load_ms"]["p75"] for k in keys])
        right.errorbar(np.arange(len(keys)) + (i - 0.5) * 0.2, med, yerr=[med - lo, hi - med], fmt="o", capsize=4,
                       ls="none", label=variant)
    right.set_xticks(np.arange(len(keys)), keys)
    right.set_ylabel("Engine.load + self-check, ms (median, p25-p75)")
    right.set_title("Python Engine load")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)


def report_only(out: Path) -> list[Path]:
    """Rewrite OUT/onnx_weights.{md,png} from OUT/onnx_weights.json (nothing is exported or measured)."""
    result = json.loads((out / "onnx_weights.json").read_text())
    atomic_write(out / "onnx_weights.md", lambda p: p.write_text(markdown(result)))
    atomic_write(out / "onnx_weights.png", lambda p: plot(result, p))
    return [out / "onnx_weights.md", out / "onnx_weights.png"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7, help="fresh processes per load row (default 7)")
    parser.add_argument("--work", default=str(ROOT / "runs/onnx_weights"), help="where the two exports go")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/onnx_weights"))
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite OUT's Markdown and figure from its JSON; export and measure nothing")
    args = parser.parse_args(argv)
    if args.report_only:
        print("wrote " + ", ".join(map(str, report_only(Path(args.out)))))
        return 0
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    print("exporting the default model twice (embedded, shared weights)", flush=True)
    bundles = {variant: export(variant, work) for variant in VARIANTS}
    from mmedge.bundle.manifest import load_manifest

    result = {
        "model": shown_path(MODEL), "safetensors_bytes": (MODEL / "model.safetensors").stat().st_size,
        "keep_ratios": [k["keep_ratio"] for k in load_manifest(bundles["shared"])["keep_ratios"]],
        "repeats": args.repeats,
        "sizes": {variant: sizes(bundle) for variant, bundle in bundles.items()},
        "goals": {"onnx fp32": "<= 1.15x", "onnx int8": "<= 0.35x"},
    }
    print("loading each artifact in fresh processes", flush=True)
    result["loads"] = loads(bundles, args.repeats)
    result["python_answer"] = result["loads"]["shared onnx fp32"]["answers"][0]
    print("the JavaScript runtime on onnxruntime-node and -web", flush=True)
    result["javascript"] = js_loads(bundles["shared"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "onnx_weights.json", lambda p: p.write_text(json.dumps(result, indent=1) + "\n"))
    atomic_write(out / "onnx_weights.md", lambda p: p.write_text(markdown(result)))
    atomic_write(out / "onnx_weights.png", lambda p: plot(result, p))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

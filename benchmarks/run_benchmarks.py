"""The committed benchmarks of the shipped model: every goal of issue #18, measured in one run.

    python benchmarks/run_benchmarks.py            # about 4 minutes on 2 busy cores (+8 min to export the bundle)
    python benchmarks/run_benchmarks.py --quick    # fewer queries, rounds and processes: about 2.5 minutes
    python benchmarks/run_benchmarks.py --sections staging,anchors   # only these (the rest from the last run)
    python benchmarks/run_benchmarks.py --report-only   # every report it writes, again from the committed JSON

Sections, each printed with its progress and kept in `--work`/sections/ when done, so that an
interrupted run resumes where it stopped (`--fresh` measures everything again):

  host       the shipped model on this host, per runtime (onnxruntime, executorch fp32 / int8, PyTorch
             eager): adaptive speed-up (prefilter + exits at the calibrated <= 1 point drop) against
             full depth, runtimes against PyTorch eager, int8 against fp32
  staging    the Engine against bare onnxruntime calls (benchmarks/staging_overhead.py's measure(), on
             the shipped ONNX bundle, which has no modality pruning: the Engine and the bare calls do the
             same work): full depth against one graph, the calibrated policy against the bare stage
             calls, the Engine's own time per query
  weights    weights once: every ONNX Runtime artifact's size against model.safetensors (this run's
             bundle), Engine load time and peak memory in fresh processes, the JavaScript runtime
             loading .onnx / .ort on onnxruntime-node and -web (benchmarks/onnx_weights.py's functions)
  optimum    optimum-onnx against today's int8 (benchmarks/optimum_int8.py): run here when optimum imports,
             else in its side venv ($MMEDGE_OPTIMUM_VENV or ~/.venvs/mmedge-optimum; --setup-optimum makes
             it), else its committed side-venv results, labelled as such with their commit date
  anchors    the cost model against published phone latencies (benchmarks/phone_anchors.py's run())
  costmodel  the cost model's error on this host's exported stages, and the MODELLED phone profiles

Latencies are per query, batch 1, one runtime thread; ratios are taken within one run and come with
their spread. Writes benchmarks/results/summary.{json,md,png} (a Goals table first), host_*, modelled_*,
staging/, anchors/ and, when optimum runs, optimum/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from mmedge.fileio import atomic_write  # noqa: E402

RUNTIMES = [("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("executorch", "fp32"), ("executorch", "int8"),
            ("torch", "fp32")]
SECTIONS = ("host", "staging", "weights", "optimum", "anchors", "costmodel")
DEVICES = ("pixel-7", "pixel-8", "galaxy-s23", "iphone-15", "iphone-15-pro", "raspberry-pi-5")
FULL = "full depth, every token"
STAGING_GOALS = {"full": 1.03, "adaptive": 1.05}
WEIGHT_GOALS = {"onnx fp32": 1.15, "onnx int8": 0.35}
STARTED = time.perf_counter()


def rel(path: Path | str) -> str:
    """A path as results may show it: relative to the repository, never a machine path."""
    p = Path(path).resolve()
    return p.relative_to(ROOT).as_posix() if p.is_relative_to(ROOT) else p.name


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - STARTED:6.0f} s] {msg}", flush=True)


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def committed(path: Path) -> str:
    """When `path` was last committed (git), or 'not committed'."""
    try:
        out = subprocess.run(["git", "log", "-1", "--format=%cd", "--date=format:%Y-%m-%d %H:%M UTC", "--",
                              str(path)], cwd=ROOT, capture_output=True, text=True, check=False,
                             env={"TZ": "UTC", "PATH": "/usr/bin:/bin:/usr/local/bin"}).stdout.strip()
    except OSError:
        out = ""
    return out or "not committed"


class Ledger:
    """Finished sections, kept as JSON under work/sections/, keyed by section and settings."""

    def __init__(self, folder: Path, fresh: bool, stamp: str):
        self.folder, self.fresh, self.stamp = folder, fresh, stamp
        folder.mkdir(parents=True, exist_ok=True)

    def path(self, name: str, settings: dict) -> Path:
        key = hashlib.sha256(json.dumps({"stamp": self.stamp, **settings}, sort_keys=True).encode()).hexdigest()[:12]
        return self.folder / f"{name}-{key}.json"

    def get(self, name: str, settings: dict, fresh: bool | None = None):
        p = self.path(name, settings)
        if p.exists() and not (self.fresh if fresh is None else fresh):
            log(f"{name}: done in an earlier run ({json.loads(p.read_text())['measured_at']}), reused "
                "(--fresh to measure again)")
            return json.loads(p.read_text())["result"]
        return None

    def put(self, name: str, settings: dict, result) -> None:
        atomic_write(self.path(name, settings), lambda p: p.write_text(
            json.dumps({"measured_at": now(), "settings": settings, "result": result}) + "\n"))

    def when(self, name: str, settings: dict) -> str | None:
        p = self.path(name, settings)
        return json.loads(p.read_text())["measured_at"] if p.exists() else None


# ---------------------------------------------------------------------------------------------- sections
def section_host(bundle: Path, out: Path, ledger: Ledger, samples: int, repeats: int) -> dict:
    from mmedge.bench import report
    from mmedge.bench.host import bench_host

    host = {}
    for backend, precision in RUNTIMES:
        settings = {"backend": backend, "precision": precision, "samples": samples, "repeats": repeats}
        result = ledger.get(f"host-{backend}-{precision}", settings)
        if result is None:
            log(f"host: {backend} {precision}, {samples} queries x {repeats} passes x 4 policies")
            result = bench_host(bundle, backend, precision, 1, samples, repeats, 20, progress=False)
            result["bundle"] = rel(bundle)
            ledger.put(f"host-{backend}-{precision}", settings, result)
        report.write(result, out / f"host_{backend}_{precision}.json")
        host[f"{backend}/{precision}"] = result
    return host


def section_staging(out: Path, queries: int, rounds: int) -> dict:
    """staging_overhead.measure on the shipped ONNX bundle, and the issue's two ratios derived from it.
    Not on this run's bundle: that one is exported with modality pruning on, which the Engine applies
    by default (a signal after stage 0, text-only stages when it fires) and the bare calls do not, so
    the two would not do the same work."""
    import staging_overhead

    log(f"staging: {queries} queries x {rounds} interleaved rounds, 7 variants ({rel(staging_overhead.BUNDLE)})")
    r = staging_overhead.measure(queries, rounds)
    folder = out / "staging"
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "staging_overhead.json", lambda p: p.write_text(json.dumps(r, indent=1) + "\n"))
    atomic_write(folder / "staging_overhead.md", lambda p: p.write_text(staging_overhead.markdown(r)))
    v = r["variants"]

    def over(k):
        return v[k]["over_bare_graph"]

    derived = {
        # full depth: the Engine's staged chain against one graph doing the same work (every exit computed)
        "full_engine_over_graph": over("full depth: Engine staged"),
        # the calibrated policy: the Engine against the bare stage calls it wraps (ratio of the per-round
        # medians over the bare graph: the per-round ratios of both share each round's machine state)
        "adaptive_engine_over_bare_stages": over("calibrated: Engine staged")["median"]
        / over("calibrated: bare stages")["median"],
        "adaptive_auto_over_bare_stages": over("calibrated: Engine auto (in-graph)")["median"]
        / over("calibrated: bare stages")["median"],
        "full_engine_over_bare_stages": over("full depth: Engine staged")["median"] / over("full depth: bare stages")["median"],
        "engine_ms_per_query_full": v["full depth: Engine staged"]["median_ms"] - v["full depth: bare stages"]["median_ms"],
        "engine_ms_per_query_adaptive": v["calibrated: Engine staged"]["median_ms"] - v["calibrated: bare stages"]["median_ms"],
    }
    return {"measure": r, "derived": derived}


def section_weights(bundle: Path, load_repeats: int) -> dict:
    import onnx_weights

    bundle = Path(bundle).resolve()  # the load probes and the JS runtime run from other folders
    from mmedge.bundle.manifest import load_manifest

    log("weights: sizes of every ONNX Runtime artifact")
    sizes = onnx_weights.sizes(bundle)
    manifest = load_manifest(bundle)
    safetensors = (ROOT / "models/vqa-default/model.safetensors").stat().st_size
    for a in manifest["artifacts"]:  # the parts: keep-ratio stage graphs, text-only stage graphs, weights file
        key = f"{a['format']} {a['precision']}"
        if a["runtime"] != "onnxruntime" or key not in sizes:
            continue
        parts = {"keep-ratio stage graphs": sum((bundle / e["file"]).stat().st_size for n, e in a["stages"].items()
                                                if n in manifest["stages"]),
                 "text-only stage graphs": sum((bundle / e["file"]).stat().st_size for n, e in a["stages"].items()
                                               if n not in manifest["stages"]),
                 "weights file": (bundle / a["external_data"]).stat().st_size if "external_data" in a else 0}
        sizes[key]["parts_bytes"] = parts
        sizes[key]["keep_ratio_stages_over_safetensors"] = (parts["keep-ratio stage graphs"] + parts["weights file"]) / safetensors
        sizes[key]["stage_files"] = {"keep-ratio": sum(n in manifest["stages"] for n in a["stages"]),
                                     "text-only": sum(n not in manifest["stages"] for n in a["stages"])}
    log(f"weights: Engine load + one query in fresh processes ({load_repeats} per artifact)")
    loads = onnx_weights.loads({"shared": bundle}, load_repeats)
    log("weights: the JavaScript runtime on onnxruntime-node and -web")
    js = onnx_weights.js_loads(bundle)
    before_file = ROOT / "benchmarks/results/onnx_weights/onnx_weights.json"
    before = None
    if before_file.exists():
        b = json.loads(before_file.read_text())
        before = {"file": rel(before_file), "committed": committed(before_file), "sizes": b["sizes"]["embedded"],
                  "loads": {k.removeprefix("embedded "): v for k, v in b["loads"].items() if k.startswith("embedded ")},
                  "loads_shared": {k.removeprefix("shared "): v for k, v in b["loads"].items() if k.startswith("shared ")},
                  "repeats": b["repeats"]}
    return {"safetensors_bytes": (ROOT / "models/vqa-default/model.safetensors").stat().st_size, "sizes": sizes,
            "loads": {k.removeprefix("shared "): v for k, v in loads.items()}, "load_repeats": load_repeats,
            "javascript": js, "before_embedded": before}


def optimum_venv() -> Path:
    """The side venv optimum-onnx lives in (scripts/setup_optimum_venv.sh makes it)."""
    return Path(os.environ.get("MMEDGE_OPTIMUM_VENV", Path.home() / ".venvs" / "mmedge-optimum")).expanduser()


def section_optimum(model_dir: Path, out: Path, setup_venv: bool) -> dict:
    """optimum_int8.py in this process when optimum imports here; else in its side venv (made first
    with --setup-optimum); else the committed side-venv results, labelled as not of this run."""
    import optimum_int8

    missing = optimum_int8.optimum_available()
    if missing is None:
        log("optimum: optimum-onnx imports here: running benchmarks/optimum_int8.py (about a minute)")
        r = optimum_int8.run(model_dir, out / "optimum", log=log)
        return {"source": "measured in this run", "result": r}
    venv = optimum_venv()
    if not (venv / "bin" / "python").exists() and setup_venv:
        log("optimum: making its side venv (scripts/setup_optimum_venv.sh: optimum-onnx from PyPI, ~15 s)")
        subprocess.run(["bash", str(ROOT / "scripts" / "setup_optimum_venv.sh"), str(venv)], check=True)
    if (venv / "bin" / "python").exists():
        log("optimum: running benchmarks/optimum_int8.py in its side venv (about two minutes)")
        subprocess.run([str(venv / "bin" / "python"), str(ROOT / "benchmarks" / "optimum_int8.py"),
                        "--model", rel(model_dir), "--out", rel(out / "optimum")], cwd=ROOT, check=True,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])})
        r = json.loads((out / "optimum" / "optimum_int8.json").read_text())
        return {"source": "measured in this run", "venv": "side venv (scripts/setup_optimum_venv.sh)", "result": r}
    f = ROOT / "benchmarks/results/optimum/optimum_int8.json"
    log(f"optimum: not importable here ({missing.split(':')[0]}) and no side venv (--setup-optimum makes one); "
        "using the committed side-venv results")
    if not f.exists():
        return {"source": "not available", "reason": missing}
    return {"source": "committed side-venv run", "file": rel(f), "committed": committed(f), "reason": missing,
            "result": json.loads(f.read_text())}


def section_anchors(out: Path) -> dict:
    import phone_anchors

    log("anchors: exporting the anchor architectures and fitting (two to four minutes)")
    r = phone_anchors.run(out=out / "anchors", log=lambda m: log(f"anchors: {m.strip()}"))
    return {k: r[k] for k in ("summary", "recalibration", "goals", "fits", "seconds")}


def section_costmodel(bundle: Path, out: Path) -> dict:
    from mmedge.bench import report
    from mmedge.bench.costmodel import CALIBRATION, PROFILES, anchor_statement, check_host, model_device

    log("costmodel: host micro-benchmarks and the 12 exported fp32 stages")
    check = check_host(bundle, 1, "fp32")
    modelled = {}
    for device in DEVICES:
        for precision in ("fp32", "int8"):
            m = model_device(bundle, device, precision, host_check=check)
            m["bundle"], m["model"] = rel(bundle), json.loads((bundle / "manifest.json").read_text())["name"]
            report.write(m, out / f"modelled_{device}_{precision}.json")
            modelled[f"{device}/{precision}"] = {"note": "MODELLED", **m["by_keep_ratio"]}
    return {"check": {k: check[k] for k in ("median_abs_error", "max_abs_error", "stages")},
            "host_profile": {k: check["profile"][k] for k in ("overhead_us", "bandwidth_gbs")},
            "modelled_exit_ms": modelled,
            "anchor_statements": {d: anchor_statement(d) for d in DEVICES},
            "anchor_errors": {d: {k: CALIBRATION[d][k] for k in ("error", "anchors", "judged_by")} for d in DEVICES
                              if d in CALIBRATION},
            "profiles": {d: {k: getattr(PROFILES[d], k) for k in ("efficiency", "overhead_us", "matmul_factor",
                                                                    "calibration", "source")} for d in DEVICES}}


# ---------------------------------------------------------------------------------------------- summary
def bundle_sizes(bundle: Path) -> dict:
    manifest = json.loads((bundle / "manifest.json").read_text())
    sizes = {}
    for a in manifest["artifacts"]:
        prefix = a.get("file")
        files = [f for f in manifest["files"] if (prefix and (f == prefix or f.startswith(prefix + "/")))
                 or any(f == s.get("file") for s in a["stages"].values()) or f == a.get("external_data")]
        sizes[f"{a['runtime']}/{a['format']}/{a['precision']}"] = sum(manifest["files"][f]["bytes"] for f in files)
    return sizes


MACHINE_PATH = re.compile(r"(?<![\w.])/(?:work|root|home|tmp|Users|private|var/folders)/")


def machine_paths(out: Path) -> dict:
    """Committed result files (json / md) of this benchmark that name a machine path."""
    files = [*out.glob("summary.*"), *out.glob("host_*"), *out.glob("modelled_*"),
             *(out / "staging").glob("*"), *(out / "anchors").glob("*"), *(out / "optimum").glob("*"),
             *(out / "onnx_weights").glob("*")]
    files = [f for f in files if f.suffix in (".json", ".md")]
    hits = {rel(f): sorted(set(MACHINE_PATH.findall(f.read_text()))) for f in files}
    return {"files_scanned": len(files), "files_with_machine_paths": {k: v for k, v in hits.items() if v}}


def runtime_rows(host: dict, sizes: dict) -> list[dict]:
    from mmedge.bench.stats import wilson

    torch_p50 = host["torch/fp32"]["policies"][FULL]["latency"]["p50_ms"]
    rows = []
    for key, r in host.items():
        pol = r["policies"]
        both, full = pol["prefilter + exits"], pol[FULL]
        backend, precision = key.split("/")
        fmt = {"onnxruntime": "onnx", "executorch": "pte", "torch": "safetensors"}[backend]
        rows.append({"runtime": key, "accuracy_full": full["accuracy"], "accuracy_adaptive": both["accuracy"],
                     "accuracy_adaptive_wilson95": wilson(both["accuracy"], r["samples"]),
                     "p50_full_ms": full["latency"]["p50_ms"], "p50_adaptive_ms": both["latency"]["p50_ms"],
                     "p10_p90_full_ms": [full["latency"].get("p10_ms", full["latency"]["min_ms"]), full["latency"]["p90_ms"]],
                     "p10_p90_adaptive_ms": [both["latency"].get("p10_ms", both["latency"]["min_ms"]),
                                             both["latency"]["p90_ms"]],
                     "adaptive_speedup": both["speedup_p50"], "mean_exit_adaptive": both["mean_exit"],
                     "kept_tokens_adaptive": both["kept_tokens"],
                     "speedup_vs_torch_eager_full": torch_p50 / full["latency"]["p50_ms"],
                     "size_bytes": sizes.get(f"{backend}/{fmt}/{precision}")})
    return rows


def goals_table(s: dict) -> list[dict]:
    """Every goal: what, target, the figure this run measured or computed, met / unmet / reported."""
    g = []

    def add(goal, target, measured, met, source):
        g.append({"goal": goal, "target": target, "measured": measured,
                  "status": {True: "met", False: "NOT met", None: "reported"}[met], "source": source})

    st = s.get("staging")
    if st:
        d, m = st["derived"], st["measure"]
        f = d["full_engine_over_graph"]
        add("Staging at no cost: Engine at full depth against one bare graph (every exit computed)",
            f"<= {STAGING_GOALS['full']:.2f}x", f"{f['median']:.3f}x (rounds {f['min']:.3f}-{f['max']:.3f})",
            f["median"] <= STAGING_GOALS["full"], "staging")
        add("Staging at no cost: calibrated policy through the Engine against bare onnxruntime (Python) calls of "
            "the same stages", f"<= {STAGING_GOALS['adaptive']:.2f}x",
            f"{d['adaptive_engine_over_bare_stages']:.3f}x (in-graph path: {d['adaptive_auto_over_bare_stages']:.3f}x)",
            d["adaptive_engine_over_bare_stages"] <= STAGING_GOALS["adaptive"], "staging")
        add("The Engine's own time per query (Engine staged minus bare stage calls, medians)", "report",
            f"{1e3 * d['engine_ms_per_query_full']:+.0f} us full depth, {1e3 * d['engine_ms_per_query_adaptive']:+.0f} us "
            f"calibrated ({m['queries']} queries x {m['rounds']} rounds)", None, "staging")
    w = s.get("weights")
    if w:
        for art, limit in WEIGHT_GOALS.items():
            v = w["sizes"][art]
            x, y, parts, n = v["keep_ratio_stages_over_safetensors"], v["over_safetensors"], v["parts_bytes"], v["stage_files"]
            add(f"Weights once: {art}, the {n['keep-ratio']} keep-ratio stage graphs + weights.bin / model.safetensors",
                f"<= {limit:.2f}x", f"{x:.3f}x", round(x, 3) <= limit, "weights")
            add(f"Weights once: {art}, the whole artifact of this bundle (also {n['text-only']} text-only stage graphs "
                "of modality pruning)", f"<= {limit:.2f}x",
                f"{y:.3f}x ({v['bytes'] / 1e6:.2f} MB: weights.bin {parts['weights file'] / 1e6:.2f} MB = "
                f"{parts['weights file'] / w['safetensors_bytes']:.3f}x, graphs {(v['bytes'] - parts['weights file']) / 1e6:.2f} MB)",
                round(y, 3) <= limit, "weights")
        js = w["javascript"]
        if js["status"] == "measured":
            ok = sum(bool(v.get("loaded")) and v.get("answer") == w["loads"]["onnx fp32"]["answers"][0]
                     for v in js["runs"].values())
            add(".onnx and .ort (fp32, int8) load and answer as the Python Engine on onnxruntime-node and -web",
                f"{len(js['runs'])} of {len(js['runs'])}", f"{ok} of {len(js['runs'])}", ok == len(js["runs"]), "weights")
        else:
            add(".onnx and .ort load on onnxruntime-node and -web", "all", f"not run here: {js['reason']}", None,
                "weights")
        lf = w["loads"]["onnx fp32"]
        be = w.get("before_embedded") or {}
        b, sh = be.get("loads", {}).get("onnx fp32"), be.get("loads_shared", {}).get("onnx fp32")
        before = (f"; before/after within one earlier run ({be['file']}, committed {be['committed']}; not comparable "
                  f"with this run's load): self-contained {b['load_ms']['median']:.0f} ms, "
                  f"{b['peak_mib_over_imports']['median']:.1f} MiB, shared {sh['load_ms']['median']:.0f} ms, "
                  f"{sh['peak_mib_over_imports']['median']:.1f} MiB") if b and sh else ""
        add("Engine load time and peak memory, fp32 .onnx (fresh processes)", "report",
            f"{lf['load_ms']['median']:.0f} ms, {lf['peak_mib_over_imports']['median']:.1f} MiB (median of "
            f"{w['load_repeats']}){before}", None, "weights")
    o = s.get("optimum")
    if o:
        if o["source"] == "not available":
            add("optimum-onnx against today's quantize_dynamic int8", "measured", f"not available: {o['reason']}",
                None, "optimum")
        else:
            v = o["result"]["variants"]
            when = "this run" if o["source"] == "measured in this run" else \
                f"NOT this run: side-venv run committed {o['committed']}"
            add("optimum where it serves: arm64 preset / preset on weight MatMuls only, against today's int8",
                "measured", f"time {v['int8_optimum_arm64']['latency_vs_int8_today_paired_median']:.2f}x / "
                f"{v['int8_optimum_arm64_weights']['latency_vs_int8_today_paired_median']:.2f}x, .ort "
                f"{v['int8_optimum_arm64']['ort_format']['mb']:.2f} / {v['int8_optimum_arm64_weights']['ort_format']['mb']:.2f}"
                f" MB vs {v['int8_today']['ort_format']['mb']:.2f} MB; val accuracy "
                f"{v['int8_optimum_arm64']['val_accuracy']:.3f} / {v['int8_optimum_arm64_weights']['val_accuracy']:.3f} vs "
                f"{v['int8_today']['val_accuracy']:.3f} ({when})", None, "optimum")
    a = s.get("anchors")
    if a:
        pl, un = a["goals"]["phones_leave_one_out"], a["goals"]["unanchored_profiles"]
        add("Phone estimates: median error on phones with published anchors (leave-one-out)", "<= 25%",
            f"{pl['value']:.0%} over {pl['n']} anchors (before recalibration {a['summary']['phones']['error_before']:.0%})",
            pl["met"], "anchors")
        for n, v in un["profiles"].items():
            used = (f"from its sibling {' + '.join(v['siblings'])}" if v["transfer"] == "sibling" else
                    f"rule from the other devices (its sibling {' + '.join(v['siblings'])}, {v['sibling_kind']}: "
                    f"{v['sibling_check_error']:.0%} held out)")
            own = ("no fp32 / fp16 anchor of its own, its int8 one not carried" if v.get("int8_anchors") else
                   "no anchor of its own")
            add(f"Phone estimates: {n}, {own} ({used})", "<= 25%",
                f"{v['median_abs_error']:.0%} held out (MODELLED figures carry this)",
                v["median_abs_error"] <= un["goal"], "anchors")
        from phone_anchors import NOT_PHONES, soc

        for n, v in a["recalibration"].items():  # the phones whose own SoC's anchors set their efficiency
            if v["anchors"] and soc(v["source"]) not in NOT_PHONES:
                add(f"Phone estimates: {n} (its SoC's anchors, {v['judged_by'].split(':')[0]})", "<= 25%",
                    f"{v['median_abs_error']:.0%} over {v['anchors']} anchor{'s' if v['anchors'] > 1 else ''}",
                    v["goal_met"], "anchors")
    mp = s.get("machine_paths")
    if mp:
        n = len(mp["files_with_machine_paths"])
        add("Committed results carry no machine paths", "0 files", f"{n} of {mp['files_scanned']} files", n == 0,
            "all")
    host = s.get("runtimes")
    if host:
        ort = next(r for r in host if r["runtime"] == "onnxruntime/fp32")
        add("(issue #5) adaptive speed-up on the host, onnxruntime fp32, within 1 point of full-depth accuracy",
            ">= 3x", f"{ort['adaptive_speedup']:.2f}x (accuracy {ort['accuracy_full']:.3f} -> {ort['accuracy_adaptive']:.3f})",
            ort["adaptive_speedup"] >= 3 and ort["accuracy_adaptive"] >= ort["accuracy_full"] - 0.01, "host")
    c = s.get("costmodel")
    if c:
        add("(issue #5) host-calibrated cost model on the exported stages, median error", "<= 15%",
            f"{c['check']['median_abs_error']:.1%} (max {c['check']['max_abs_error']:.1%})",
            c["check"]["median_abs_error"] <= 0.15, "costmodel")
    return g


def markdown(s: dict) -> str:
    from tabulate import tabulate

    m = s["machine"]
    lines = ["# Benchmarks of the shipped model (measured here unless marked MODELLED)", "",
             f"`{s['command']}`; sections measured {s['measured_between']}. Machine: {m['cpu']}, "
             f"{m['logical_cores']} logical cores shared with other jobs, 1 runtime thread, batch 1. Bundle "
             f"`{s['bundle']}` (exported from `{s['model']}` by this benchmark). Ratios are taken within one run; "
             "absolute milliseconds drift with the machine's load.", "",
             "## Goals", "",
             tabulate([[x["goal"], x["target"], x["measured"], f"**{x['status']}**" if x["status"] != "reported"
                        else x["status"]] for x in s["goals"]], ["goal", "target", "this run", "status"],
                      tablefmt="github", disable_numparse=True), ""]
    if "runtimes" in s:
        th = s["thresholds"]
        rows = [[r["runtime"], f"{r['accuracy_full']:.3f}", f"{r['accuracy_adaptive']:.3f} "
                 f"[{r['accuracy_adaptive_wilson95'][0]:.3f}, {r['accuracy_adaptive_wilson95'][1]:.3f}]",
                 f"{r['p50_full_ms']:.2f} [{r['p10_p90_full_ms'][0]:.2f}-{r['p10_p90_full_ms'][1]:.2f}]",
                 f"{r['p50_adaptive_ms']:.2f} [{r['p10_p90_adaptive_ms'][0]:.2f}-{r['p10_p90_adaptive_ms'][1]:.2f}]",
                 f"{r['adaptive_speedup']:.2f}x", f"{r['speedup_vs_torch_eager_full']:.2f}x",
                 f"{(r['size_bytes'] or 0) / 1e6:.2f}"] for r in s["runtimes"]]
        lines += ["## Adaptive speed-up and runtimes (host, latency per query incl. preprocessing)", "",
                  f"{s['samples']} test queries x {s['repeats']} passes per row. Calibrated on validation (<= 1 point "
                  f"drop): keep ratio {th['keep_ratio']}, exit policy {th['policy']} (confidence threshold {th['confidence']}; "
                  f"max-probability threshold {th['max_probability']}). Accuracy with its 95% Wilson interval; latency p50 [p10-p90].", "",
                  tabulate(rows, ["runtime", "acc full", "acc adaptive [95% CI]", "p50 full ms [p10-p90]",
                                  "p50 adaptive ms [p10-p90]", "adaptive speed-up", "full depth vs torch eager",
                                  "bundle MB"], tablefmt="github", disable_numparse=True), ""]
    if "staging" in s:
        r = s["staging"]["measure"]
        rows = [[k, f"{v['median_ms']:.3f}", f"{v['p10_ms']:.3f}-{v['p90_ms']:.3f}",
                 f"{v['over_bare_graph']['median']:.3f}x ({v['over_bare_graph']['min']:.3f}-{v['over_bare_graph']['max']:.3f})"]
                for k, v in r["variants"].items()]
        lines += ["## Staging: the Engine against bare onnxruntime calls", "",
                  f"`staging_overhead.measure` on `{r['bundle']}` (the shipped ONNX bundle: no modality pruning, so "
                  "the Engine and the bare calls do the same work; this run's bundle prunes modalities by default): "
                  f"keep ratio {r['keep_ratio']}, calibrated confidence "
                  f"{r['threshold']}; {r['queries']} test queries x {r['rounds']} interleaved rounds; per-query time "
                  "without preprocessing. Ratios per round against the bare graph (median, range over rounds).", "",
                  tabulate(rows, ["variant", "median ms", "p10-p90 ms", "over the bare graph"], tablefmt="github", disable_numparse=True), ""]
    if "weights" in s:
        w = s["weights"]
        before = w.get("before_embedded")
        rows = []
        for art, v in w["sizes"].items():
            b = before["sizes"].get(art) if before else None
            rows.append([art, f"{v['bytes'] / 1e6:.2f} ({v['over_safetensors']:.3f}x)",
                         "-" if b is None else f"{b['bytes'] / 1e6:.2f} ({b['over_safetensors']:.2f}x)",
                         f"<= {WEIGHT_GOALS[art]}x" if art in WEIGHT_GOALS else "-"])
        lines += ["## Weights once", "",
                  f"Sizes of this run's bundle against `model.safetensors` ({w['safetensors_bytes'] / 1e6:.2f} MB)"
                  + (f"; *before*: self-contained stage files, from `{before['file']}` (committed {before['committed']},"
                     " not re-exported in this run)" if before else "") + ".", "",
                  tabulate(rows, ["artifact", "MB (x safetensors), this run", "before", "goal"], tablefmt="github", disable_numparse=True), ""]
        lrows = [[k, f"{v['load_ms']['median']:.0f} ({v['load_ms']['p25']:.0f}-{v['load_ms']['p75']:.0f})",
                  f"{v['peak_mib_over_imports']['median']:.1f}", ", ".join(v["answers"])] for k, v in w["loads"].items()]
        lines += [f"Engine.load (manifest and SHA-256 checks, sessions, self-check) + one query, {w['load_repeats']} fresh "
                  "processes per artifact: median (p25-p75).", "",
                  tabulate(lrows, ["artifact", "load ms", "peak MiB over imports", "answer"], tablefmt="github", disable_numparse=True), ""]
        js = w["javascript"]
        if js["status"] == "measured":
            jrows = [[k, "yes" if v.get("loaded") else f"no: {str(v.get('error', ''))[:100]}", v.get("answer", "-")]
                     for k, v in js["runs"].items()]
            lines += ["JavaScript runtime (`runtimes/js`) on this run's bundle:", "",
                      tabulate(jrows, ["runtime, format, precision", "loads", "answer"], tablefmt="github", disable_numparse=True), ""]
        else:
            lines += [f"JavaScript runtime: not run ({js['reason']}).", ""]
    if "optimum" in s:
        o = s["optimum"]
        lines += ["## optimum-onnx against today's int8", ""]
        if o["source"] == "not available":
            lines += [f"Not available: {o['reason']}", ""]
        else:
            if o["source"] != "measured in this run":
                lines += [f"**Not measured in this run.** optimum-onnx does not import in this environment "
                          f"(`{o['reason'][:160]}`; it pins transformers<4.58). These figures are the side-venv run of "
                          f"`{o['result']['command']}`, `{o['file']}`, committed {o['committed']}.", ""]
            res = o["result"]
            rows = [[k, f"{v['ort_format']['mb']:.2f}", f"{v['max_abs_logits_error_final']:.2g}",
                     f"{v['val_accuracy']:.3f} [{v['val_accuracy_wilson95'][0]:.3f}, {v['val_accuracy_wilson95'][1]:.3f}]",
                     f"{v['latency_ms']['median']:.2f} [{v['latency_ms']['p10']:.2f}-{v['latency_ms']['p90']:.2f}]",
                     f"{v['latency_vs_int8_today_paired_median']:.2f}x"] for k, v in res["variants"].items()]
            lines += [tabulate(rows, ["variant", ".ort MB", "max logits error vs fp32", "val accuracy [95% CI]",
                                      "p50 ms [p10-p90]", "time vs today's int8 (paired)"], tablefmt="github", disable_numparse=True), "",
                      f"{res['settings']['val_samples']} validation samples; {res['settings']['latency_queries']} queries x "
                      f"{res['settings']['passes']} passes, 4 stages at keep 1.0; optimum's exporter and "
                      "ORTOptimizer refusals are in the file.", ""]
    if "anchors" in s:
        a = s["anchors"]
        su = a["summary"]
        pct = lambda x: "-" if x is None else f"{x:.0%}"  # noqa: E731 (a profile with one anchor has no LOO)
        rows = [[k, su[k]["n"], pct(su[k]["error_before"]), pct(su[k]["error_joint_loo"]), pct(su[k]["error_lodo_nested"])]
                for k in [*sorted(a["fits"]["joint"]["profiles"]), "phones", "all"]]
        j = a["fits"]["joint"]["shared"]
        lines += ["## Phone estimates against published latencies (MODELLED against measured)", "",
                  f"`phone_anchors.run()`: the cost model (MODELLED) against {su['all']['n']} published CPU latencies "
                  "(benchmarks/anchors/published_latencies.json). Joint fit: efficiency per profile; per-op overhead "
                  f"{j['overhead_us']:.1f} us, matmul factor {j['matmul_factor']:.3f}, Winograd share "
                  f"{j['winograd_share']:.2f} shared. Median absolute error; *LOO*: each anchor predicted by the fit "
                  "without it; *LODO*: each device from the other devices only (the transfer rule also chosen "
                  "without it); profiles without anchors take their sibling SoCs' efficiency or the rule from the "
                  "other devices, whichever has the lower held-out error. Details: "
                  "`benchmarks/results/anchors/anchors.md`.", "",
                  tabulate(rows, ["profile", "anchors", "before (0.30, 4 us)", "joint LOO", "LODO"], tablefmt="github", disable_numparse=True), ""]
        rrows = [[k, v["efficiency"], v["overhead_us"], v["matmul_factor"], f"{v['median_abs_error']:.0%}", v["judged_by"]]
                 for k, v in a["recalibration"].items()]
        lines += ["Repository profiles as recalibrated (mmedge/bench/costmodel.py CALIBRATION):", "",
                  tabulate(rrows, ["profile", "efficiency", "overhead us", "matmul factor", "held-out error",
                                   "judged by"], tablefmt="github", disable_numparse=True), ""]
    if "costmodel" in s:
        c = s["costmodel"]
        lines += ["## Cost model", "",
                  f"Host profile calibrated by ONNX Runtime micro-benchmarks (per-op overhead "
                  f"{c['host_profile']['overhead_us']:.1f} us) predicts the {len(c['check']['stages'])} exported fp32 "
                  f"stages with median absolute error {c['check']['median_abs_error']:.1%} (max "
                  f"{c['check']['max_abs_error']:.1%}; goal <= 15%).", "",
                  "MODELLED first-exit and full-depth latency at keep 1.0 (stages only, no preprocessing), each with the "
                  "held-out error its profile carries against real phones:", ""]
        errs = c.get("anchor_errors", {})
        mrows = [[k, f"{v['1.0']['exit_ms'][0]:.2f}", f"{v['1.0']['exit_ms'][-1]:.2f}",
                  (lambda e: f"{e['error']:.0%} ({e['judged_by']})" if e else "uncalibrated")(errs.get(k.split("/")[0]))]
                 for k, v in c["modelled_exit_ms"].items()]
        lines += [tabulate(mrows, ["device/precision", "exit 0 ms (MODELLED)", "full depth ms (MODELLED)",
                                   "median error vs real phones, held out"], tablefmt="github", disable_numparse=True), "",
                  "Each profile's statement in full is in its `modelled_<device>_<precision>.md`; the cost model has "
                  "never been checked on mmedge's own stages on a phone.", ""]
    lines += [f"Run time: {s['seconds']:.0f} s in this invocation."]
    return "\n".join(lines)


def plot(s: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(21, 4.8))
    ax = axes[0]  # adaptive speed-up: full and adaptive latency per runtime, p10-p90, no joining lines
    if "runtimes" in s:
        names = [r["runtime"] for r in s["runtimes"]]
        for i, r in enumerate(s["runtimes"]):
            for dx, key, colour, label in ((-0.12, "full", "tab:grey", "full depth"),
                                           (0.12, "adaptive", "tab:blue", "prefilter + exits (calibrated)")):
                p50, (p10, p90) = r[f"p50_{key}_ms"], r[f"p10_p90_{key}_ms"]
                ax.errorbar(i + dx, p50, yerr=[[p50 - p10], [p90 - p50]], fmt="o", color=colour, capsize=3, ls="none",
                            label=label if i == 0 else None)
        ax.set_xticks(range(len(names)), names, rotation=25, ha="right")
        ax.set_ylim(bottom=0)
        ax.set(ylabel="ms per query (p50; bars p10-p90)", title="host latency, full depth vs adaptive")
        ax.legend(fontsize=7)
    ax = axes[1]  # staging: ratio to the bare graph, median and range over rounds
    if "staging" in s:
        v = s["staging"]["measure"]["variants"]
        keys = [k for k in v if "bare graph" not in k]
        for i, k in enumerate(keys):
            o = v[k]["over_bare_graph"]
            ax.errorbar(i, o["median"], yerr=[[o["median"] - o["min"]], [o["max"] - o["median"]]], fmt="o", capsize=3,
                        ls="none", color="tab:blue" if "Engine" in k else "tab:grey")
        ax.axhline(1.0, color="black", lw=0.8)
        ax.axhline(STAGING_GOALS["full"], color="tab:red", lw=0.8, ls="--", label="full-depth goal (1.03x)")
        ax.set_xticks(range(len(keys)), keys, rotation=25, ha="right", fontsize=7)
        ax.set(ylabel="time / bare graph (median; bars: range over rounds)", title="staging overhead")
        ax.legend(fontsize=7)
    ax = axes[2]  # weights: size / safetensors with the goals
    if "weights" in s:
        w = s["weights"]
        arts = list(w["sizes"])
        ax.bar(range(len(arts)), [w["sizes"][a]["over_safetensors"] for a in arts], 0.5, color="tab:blue",
               label="this run (exact bytes)")
        before = w.get("before_embedded")
        if before:
            ax.scatter(range(len(arts)), [before["sizes"][a]["over_safetensors"] for a in arts], marker="_", s=400,
                       color="black", label="before: self-contained files")
        for i, a in enumerate(arts):
            if a in WEIGHT_GOALS:
                ax.plot([i - 0.3, i + 0.3], [WEIGHT_GOALS[a]] * 2, color="tab:red", ls="--")
        ax.set_xticks(range(len(arts)), arts)
        ax.set(ylabel="size / model.safetensors (15 stage graphs here)",
               title="weights once (red: goal; before: a 12-stage export)")
        ax.legend(fontsize=7)
    ax = axes[3]  # anchors: median error per profile, before / LOO / LODO
    if "anchors" in s:
        su = s["anchors"]["summary"]
        keys = [*sorted(s["anchors"]["fits"]["joint"]["profiles"]), "phones", "all"]
        x = np.arange(len(keys))
        for dx, key, label in ((-0.27, "error_before", "before (0.30, 4 us)"), (0, "error_joint_loo", "joint, LOO"),
                               (0.27, "error_lodo_nested", "LODO (no anchor of the device)")):
            ax.bar(x + dx, [100 * (su[k][key] or 0) for k in keys], 0.27, label=label)  # one anchor: no LOO
        ax.axhline(25, color="tab:red", ls="--", lw=0.8, label="goal 25%")
        ax.set_xticks(x, keys, rotation=30, ha="right", fontsize=7)
        ax.set(ylabel="median |modelled / published - 1|, %", title="cost model vs published phone latencies")
        ax.legend(fontsize=7)
    fig.suptitle("mmedge benchmarks (host measured; phone figures MODELLED)")
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- main
def report_only(out: Path) -> list[Path]:
    """Rewrite every report this benchmark writes into `out` from the JSON beside it: summary.{md,png},
    host_*.{md,png}, modelled_*.md and the staging/, anchors/ and optimum/ reports. Nothing is measured."""
    import optimum_int8
    import phone_anchors
    import staging_overhead

    from mmedge.bench import report

    made = []
    for path in sorted([*out.glob("host_*.json"), *out.glob("modelled_*.json")]):
        result = json.loads(path.read_text())
        atomic_write(path.with_suffix(".md"), lambda p: p.write_text(report.markdown(result) + "\n"))
        made.append(path.with_suffix(".md"))
        if result["kind"] != "modelled":
            made += report.plots(result, path.with_suffix(""))
    if (out / "summary.json").exists():
        summary = json.loads((out / "summary.json").read_text())
        atomic_write(out / "summary.md", lambda p: p.write_text(markdown(summary) + "\n"))
        plot(summary, out / "summary.png")
        made += [out / "summary.md", out / "summary.png"]
    for folder, module in (("staging", staging_overhead), ("anchors", phone_anchors), ("optimum", optimum_int8)):
        if any((out / folder).glob("*.json")):
            made += module.report_only(out / folder)
    return made


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "models" / "vqa-default"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--work", default=str(ROOT / "runs" / "benchmarks"),
                        help="the exported bundle and the finished sections (default runs/benchmarks)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    parser.add_argument("--quick", action="store_true", help="fewer queries, passes, rounds and processes")
    parser.add_argument("--fresh", action="store_true", help="measure every section again")
    parser.add_argument("--samples", type=int, help="host: test queries per policy (default 300; quick 100)")
    parser.add_argument("--repeats", type=int, help="host: passes (default 3; quick 2)")
    parser.add_argument("--staging-queries", type=int, help="default 150; quick 50")
    parser.add_argument("--staging-rounds", type=int, help="default 25 (the staging ratios sit near their goals and "
                                                           "move between runs); quick 3")
    parser.add_argument("--load-repeats", type=int, help="fresh processes per artifact (default 7; quick 2)")
    parser.add_argument("--setup-optimum", action="store_true",
                        help="make optimum-onnx's side venv when it is missing (scripts/setup_optimum_venv.sh; "
                             "needs PyPI) so that the optimum section is measured in this run")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite the Markdown and figures in OUT (summary, host_*, modelled_*, staging/, "
                             "anchors/, optimum/) from their committed JSON; export and measure nothing")
    args = parser.parse_args(argv)
    if args.report_only:
        for path in report_only(Path(args.out)):
            print(f"wrote {rel(path)}")
        return 0
    q = args.quick
    samples, repeats = args.samples or (100 if q else 300), args.repeats or (2 if q else 3)
    sq, sr = args.staging_queries or (50 if q else 150), args.staging_rounds or (3 if q else 25)
    load_repeats = args.load_repeats or (2 if q else 7)
    wanted = [x.strip() for x in args.sections.split(",") if x.strip()]
    unknown = set(wanted) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    out, work = Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    shown_args = [a if not Path(a).is_absolute() else rel(a) for a in (argv if argv is not None else sys.argv[1:])]
    command = " ".join(["python benchmarks/run_benchmarks.py", *shown_args])

    from mmedge.bench.machine import describe
    from mmedge.demo import ensure_bundle
    from mmedge.runtime.backends.executorch_backend import set_executorch_threads
    from mmedge.runtime.calibrate import calibrate

    set_executorch_threads(1, missing_ok=True)  # every runtime on one thread; sized before any program runs
    model_dir = Path(args.model)
    log(f"bundle: {rel(work / (model_dir.name + '.mmedge'))} (exported once, about 8 minutes here; then reused)")
    bundle = ensure_bundle(model_dir, work / f"{model_dir.name}.mmedge", force=False, log=lambda m: log(f"  {m}"))
    manifest = json.loads((bundle / "manifest.json").read_text())
    if manifest["thresholds"]["source"] != "calibrated":
        log("calibrating the exit policy and keep ratio on validation (<= 1 point drop)")
        calibrate(bundle, 0.01, 1000, progress=False)
        manifest = json.loads((bundle / "manifest.json").read_text())
    # finished sections are reused only for this exact bundle (weights and calibration)
    stamp = hashlib.sha256(json.dumps([manifest["files"].get("torch/model.safetensors"), manifest["thresholds"]],
                                      sort_keys=True).encode()).hexdigest()[:16]
    ledger = Ledger(work / "sections", args.fresh, stamp)
    settings = {"host": {"samples": samples, "repeats": repeats}, "staging": {"queries": sq, "rounds": sr},
                "weights": {"load_repeats": load_repeats}, "optimum": {}, "anchors": {}, "costmodel": {}}
    runners = {
        "host": lambda: section_host(bundle, out, ledger, samples, repeats),
        "staging": lambda: section_staging(out, sq, sr),
        "weights": lambda: section_weights(bundle, load_repeats),
        "optimum": lambda: section_optimum(model_dir, out, args.setup_optimum),
        "anchors": lambda: section_anchors(out),
        "costmodel": lambda: section_costmodel(bundle, out),
    }
    results, when = {}, {}
    for name in SECTIONS:
        if name == "host":  # measured after the others (below): the per-runtime units are resumable
            continue
        # a section left out of --sections comes from an earlier run, if there is one (--fresh or not)
        cached = ledger.get(name, settings[name], fresh=None if name in wanted else False)
        if cached is not None:
            results[name], when[name] = cached, ledger.when(name, settings[name])
        elif name in wanted:
            started = time.perf_counter()
            results[name] = runners[name]()
            ledger.put(name, settings[name], results[name])
            when[name] = now()
            log(f"{name}: done in {time.perf_counter() - started:.0f} s")
        else:
            log(f"{name}: not in --sections and not measured before: left out of the summary")
    host, host_when = {}, []
    for backend, precision in RUNTIMES:  # each runtime is a finished unit of its own
        key = {"backend": backend, "precision": precision, "samples": samples, "repeats": repeats}
        if "host" in wanted:
            host = runners["host"]()
            host_when = [ledger.when(f"host-{b}-{p}", {**key, "backend": b, "precision": p}) for b, p in RUNTIMES]
            break
        r = ledger.get(f"host-{backend}-{precision}", key, fresh=False)
        if r is None:
            log("host: not in --sections and not measured before: left out of the summary")
            host = {}
            break
        host[f"{backend}/{precision}"] = r
        host_when.append(ledger.when(f"host-{backend}-{precision}", key))
    if host:
        results["host"] = host
        when["host"] = max(w for w in host_when if w)

    summary = {"command": command, "machine": describe(), "model": rel(model_dir), "bundle": rel(bundle),
               "thresholds": manifest["thresholds"], "samples": samples, "repeats": repeats,
               "measured_at": when}
    if "host" in results:
        summary["runtimes"] = runtime_rows(results["host"], bundle_sizes(bundle))
    for name in ("staging", "weights", "optimum", "anchors", "costmodel"):
        if name in results:
            summary[name] = results[name]
    stamps = sorted(when.values())
    summary["measured_between"] = f"{stamps[0]} - {stamps[-1]}" if stamps else "-"
    summary["seconds"] = time.perf_counter() - STARTED
    summary["machine_paths"] = machine_paths(out)
    summary["goals"] = goals_table(summary)
    atomic_write(out / "summary.json", lambda p: p.write_text(json.dumps(summary, indent=1) + "\n"))
    atomic_write(out / "summary.md", lambda p: p.write_text(markdown(summary) + "\n"))
    plot(summary, out / "summary.png")
    # the scan again, now that the summary itself is written
    summary["machine_paths"] = machine_paths(out)
    summary["goals"] = goals_table(summary)
    atomic_write(out / "summary.json", lambda p: p.write_text(json.dumps(summary, indent=1) + "\n"))
    atomic_write(out / "summary.md", lambda p: p.write_text(markdown(summary) + "\n"))
    print(markdown(summary).split("## Adaptive")[0])
    log(f"wrote {rel(out)}/summary.{{json,md,png}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

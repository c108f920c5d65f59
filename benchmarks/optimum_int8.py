"""optimum-onnx against today's ONNX int8 recipe, on the staged graphs of the shipped model (issue #18).

    # optimum-onnx 0.1.0 pins transformers<4.58 (so huggingface_hub 0.36, tokenizers 0.22): keep it out of
    # the main environment, in a venv that still sees its torch 2.13 / onnx / onnxruntime 1.32
    bash scripts/setup_optimum_venv.sh                                 # ~/.venvs/mmedge-optimum, ~15 s
    ~/.venvs/mmedge-optimum/bin/python benchmarks/optimum_int8.py      # about a minute on 2 cores
    python benchmarks/run_benchmarks.py --sections optimum             # the same, from the main environment
    python benchmarks/optimum_int8.py --report-only                    # the Markdown again from the committed JSON

Without optimum importable the script says so and writes nothing (exit 0).

Steps:
1. `mmedge export --target onnx --quantize int8 --keep-ratio 1.0` (no ORT format, no in-graph graph) into a
   temporary folder: the fp32 stage graphs and today's int8 ones (`onnxruntime.quantization.quantize_dynamic`,
   per channel, int8 weights, on the weight MatMul/Gemm nodes; mmedge/export/onnx_target.py).
2. From the fp32 stage files, with optimum's public API:
   - `ORTQuantizer` + `AutoQuantizationConfig.arm64(is_static=False, per_channel=True)` as it comes (every
     operator type its dynamic preset quantizes: Conv, MatMul including attention's activation products,
     Gather, ...);
   - the same arm64 preset on the weight MatMuls only (`operators_to_quantize=["MatMul"]`, attention's
     activation-by-activation MatMuls in `nodes_to_exclude`);
   - `ORTOptimizer` + `AutoOptimizationConfig.O2()`; optimum refuses model types it does not know, so this
     runs only under a stand-in `BertConfig` with the model's width and heads (the refusals are recorded);
   - O2 followed by the weight-only arm64 quantization (optimum's usual optimise-then-quantise order).
   Also recorded: what optimum's exporter says about the model (it has no exporter for it).
3. Every variant on the same inputs, chained as mmedge's runtime chains stages (stage 0 on the image and
   question, each later stage on the previous `hidden` and stage 0's `attention_mask`), at full depth:
   size of the stage files (and of their ORT-format conversion), max |logits - fp32 logits| over every
   exit, answer agreement with fp32, final-exit validation accuracy (scenes val split, Wilson 95%
   interval), and host batch-1 latency per full-depth query with onnxruntime on one thread (median,
   IQR and p10-p90; every variant timed on the same query back to back in rotating order, over several
   passes, so that drift on this shared machine hits all of them alike).

Writes optimum_int8.json and optimum_int8.md into --out (default benchmarks/results/optimum/).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
INSTALL = ("python -m venv --system-site-packages ~/.venvs/mmedge-optimum && "
           "~/.venvs/mmedge-optimum/bin/pip install optimum-onnx==0.1.0")
MB = 1e6

# Variant name -> what it is (the order of the tables).
VARIANTS = {
    "fp32": "mmedge export, fp32 (reference)",
    "int8_today": "today's int8: mmedge export (quantize_dynamic, per channel, the weight MatMul/Gemm nodes; "
                  "convolution weights int8 behind DequantizeLinear, computed in fp32)",
    "int8_optimum_arm64": "optimum ORTQuantizer, AutoQuantizationConfig.arm64(is_static=False, per_channel=True)",
    "int8_optimum_arm64_weights": "optimum arm64 preset, weight MatMuls only (attention products excluded)",
    "fp32_optimum_O2": "optimum ORTOptimizer, AutoOptimizationConfig.O2() (stand-in BertConfig)",
    "int8_optimum_O2_arm64_weights": "optimum O2, then the arm64 preset on weight MatMuls",
}


def optimum_available() -> str | None:
    """None when optimum-onnx's onnxruntime part imports; else why not."""
    import importlib

    try:
        importlib.import_module("optimum.onnxruntime")
    except ImportError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def rel(path: Path) -> str:
    """A path as the results may show it: relative to the repository, never a machine path."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return path.name


def short(exc: BaseException, limit: int = 300) -> str:
    """An exception as evidence: its type and the start of its text (some list every model type known)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:limit]}{' ...' if len(text) > limit else ''}"


# ---------------------------------------------------------------------------------------------- export

def export_stages(model_dir: Path, work: Path, recipe_overrides: dict | None = None) -> Path:
    """`mmedge export` of the fp32 and int8 ONNX stage graphs at keep ratio 1.0; returns the bundle."""
    from mmedge.cli import main as mmedge

    recipe = {"targets": ["onnx"], "quantize": "int8", "keep_ratios": [1.0], "ort_format": False,
              "in_graph": False, "parity_samples": 8, "accuracy_samples": 64, **(recipe_overrides or {})}
    recipe_path = work / "recipe.json"
    recipe_path.write_text(json.dumps(recipe))
    bundle = work / "stages.mmedge"
    log = io.StringIO()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        rc = mmedge(["export", "--model", str(model_dir), "--recipe", str(recipe_path), "--out", str(bundle)])
    if rc:
        raise RuntimeError(f"mmedge export failed (exit {rc}):\n{log.getvalue()[-3000:]}")
    return bundle


def stage_files(folder: Path) -> dict[str, Path]:
    """The full-token chain's stage files in stage order ({prefix}_stage{i}.onnx, the largest prefix)."""
    files = sorted(folder.glob("*_stage*.onnx"))
    groups: dict[str, list[Path]] = {}
    for f in files:
        groups.setdefault(f.stem.rsplit("_stage", 1)[0], []).append(f)
    if not groups:
        raise FileNotFoundError(f"no stage files in {folder}")
    prefix = max(groups, key=lambda p: int(p.lstrip("k") or 0))
    chain = sorted(groups[prefix], key=lambda f: int(f.stem.rsplit("_stage", 1)[1]))
    return {f.stem: f for f in chain}


# -------------------------------------------------------------------------------------- optimum variants

def activation_matmuls(path: Path) -> list[str]:
    """MatMul nodes whose inputs are both activations (attention's Q.K^T and P.V), not weights."""
    import onnx

    graph = onnx.load(str(path)).graph
    constants = {t.name for t in graph.initializer} | {n.output[0] for n in graph.node if n.op_type == "Constant"}
    return [n.name for n in graph.node if n.op_type == "MatMul" and not any(i in constants for i in n.input)]


def self_contained(src: dict[str, Path], out: Path) -> dict[str, Path]:
    """Copies of `src` with their weights inline and intermediate types inferred: mmedge's stage files
    read one shared weights.bin and carry no value_info, and optimum's quantizer (onnxruntime's shape
    inference under it) cannot type tensors it cannot see."""
    import onnx

    out.mkdir(parents=True, exist_ok=True)
    result = {}
    for name, path in src.items():
        model = onnx.shape_inference.infer_shapes(onnx.load(str(path), load_external_data=True))
        onnx.save_model(model, str(out / path.name), save_as_external_data=False)
        result[name] = out / path.name
    return result


def optimum_quantize(src: dict[str, Path], out: Path, weights_only: bool) -> dict[str, Path]:
    """ORTQuantizer with the arm64 dynamic preset, per channel, one stage file at a time."""
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    result = {}
    for name, path in src.items():
        if weights_only:
            config = AutoQuantizationConfig.arm64(is_static=False, per_channel=True, operators_to_quantize=["MatMul"],
                                                  nodes_to_exclude=activation_matmuls(path))
        else:
            config = AutoQuantizationConfig.arm64(is_static=False, per_channel=True)
        quantizer = ORTQuantizer.from_pretrained(path.parent, file_name=path.name)
        quantizer.quantize(config, out, file_suffix=None)
        result[name] = out / path.name
    (out / "ort_config.json").unlink(missing_ok=True)  # optimum's record of the config: not a stage file
    return result


def optimizer_refusals(path: Path, model_config: Path, work: Path) -> dict[str, str]:
    """What ORTOptimizer says about this model as it is: exact error text, the evidence for the README."""
    from optimum.onnxruntime import ORTOptimizer
    from transformers import PretrainedConfig

    evidence = {}
    folder = work / "m"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, folder / "model.onnx")
    shutil.copy(model_config, folder / "config.json")  # mmedge's own config.json
    try:
        # relative and one letter: transformers also takes the model type from any known name inside the
        # path ("opt" in a temporary folder's name would pass for an OPT model)
        with contextlib.chdir(work):
            ORTOptimizer.from_pretrained("m")
        evidence["from_pretrained(mmedge config.json)"] = "accepted"
    except (ValueError, KeyError, NotImplementedError) as exc:
        evidence["from_pretrained(mmedge config.json)"] = short(exc, 160)

    class MMEdgeConfig(PretrainedConfig):
        model_type = "mmedge-vqa"

    try:
        ORTOptimizer([folder / "model.onnx"], config=MMEdgeConfig(hidden_size=128, num_attention_heads=4))
        evidence["ORTOptimizer(config with model_type 'mmedge-vqa')"] = "accepted"
    except (ValueError, KeyError, NotImplementedError) as exc:
        evidence["ORTOptimizer(config with model_type 'mmedge-vqa')"] = short(exc)
    return evidence


def exporter_refusals(model_dir: Path, work: Path) -> dict[str, str]:
    """What optimum's ONNX exporter says about the model directory (offline)."""
    from optimum.exporters.onnx import main_export
    from optimum.exporters.tasks import TasksManager

    evidence = {}
    for task in ("auto", "visual-question-answering"):
        try:
            main_export(str(model_dir), output=work / f"optimum_export_{task}", task=task, device="cpu")
            evidence[f"main_export(task={task!r})"] = "exported"
        except (RuntimeError, ValueError, KeyError, OSError) as exc:
            evidence[f"main_export(task={task!r})"] = short(exc, 160)
    try:
        TasksManager.get_supported_tasks_for_model_type("mmedge", exporter="onnx", library_name="transformers")
        evidence["TasksManager.get_supported_tasks_for_model_type('mmedge')"] = "supported"
    except KeyError as exc:
        evidence["TasksManager.get_supported_tasks_for_model_type('mmedge')"] = short(exc, 160)
    return evidence


def optimum_optimize(src: dict[str, Path], out: Path, hidden: int, heads: int) -> tuple[dict[str, Path], list[str]]:
    """ORTOptimizer O2 under a stand-in BertConfig (the only way past its model-type gate); returns the
    files and what the optimizer printed (onnxruntime's fusion code prints its shape-inference failures)."""
    from optimum.onnxruntime import ORTOptimizer
    from optimum.onnxruntime.configuration import AutoOptimizationConfig
    from transformers import BertConfig

    optimizer = ORTOptimizer(list(src.values()), config=BertConfig(hidden_size=hidden, num_attention_heads=heads))
    said = io.StringIO()
    with contextlib.redirect_stdout(said):
        optimizer.optimize(AutoOptimizationConfig.O2(), out, file_suffix=None)
    for extra in ("config.json", "ort_config.json"):
        (out / extra).unlink(missing_ok=True)
    notes = sorted({line.strip() for line in said.getvalue().splitlines() if line.strip()})
    return {name: out / path.name for name, path in src.items()}, notes


def build_variants(bundle: Path, work: Path, log=print) -> tuple[dict[str, dict[str, Path]], dict]:
    """Every variant's stage files (missing where optimum could not make it) and the evidence."""
    from mmedge.models.config import read_json

    # every chain self-contained (the bundle's stages share one weights.bin per precision), so that sizes and
    # the ORT-format conversion compare like with like; the graphs and weights are the bundle's
    inline = self_contained(stage_files(bundle / "onnx" / "fp32"), work / "fp32_inline")
    variants = {"fp32": inline, "int8_today": self_contained(stage_files(bundle / "onnx" / "int8"), work / "int8_inline")}
    cfg = read_json(bundle / "torch" / "config.json")
    evidence: dict = {"failures": {}}
    log("optimum: arm64 dynamic quantization (preset as it comes)")
    variants["int8_optimum_arm64"] = optimum_quantize(inline, work / "int8_optimum_arm64", weights_only=False)
    log("optimum: arm64 dynamic quantization (weight MatMuls)")
    variants["int8_optimum_arm64_weights"] = optimum_quantize(inline, work / "int8_optimum_arm64_weights", True)
    evidence["optimizer"] = optimizer_refusals(next(iter(inline.values())), bundle / "torch" / "config.json", work)
    log("optimum: ORTOptimizer O2 (stand-in BertConfig)")
    try:
        variants["fp32_optimum_O2"], evidence["optimizer_printed"] = optimum_optimize(
            inline, work / "fp32_optimum_O2", cfg["dim"], cfg["num_heads"])
    except Exception as exc:  # noqa: BLE001 - any optimizer failure is a result of this benchmark, recorded
        evidence["failures"]["fp32_optimum_O2"] = short(exc)
    if "fp32_optimum_O2" in variants:
        variants["int8_optimum_O2_arm64_weights"] = optimum_quantize(
            variants["fp32_optimum_O2"], work / "int8_optimum_O2_arm64_weights", weights_only=True)
    return variants, evidence


# ------------------------------------------------------------------------------------------ measurement

def sessions(files: dict[str, Path], threads: int = 1) -> list:
    """One onnxruntime session per stage, in order, as mmedge's runtime opens them (CPU, default
    graph optimisation level, `threads` intra-op threads, one inter-op thread)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.disable_quant_qdq", "1")  # as the Engine (folds weight-only DQ)
    return [ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]) for p in files.values()]


def run_chain(chain: list, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Every stage at full depth; returns each exit's logits (1, C). Later stages take the previous
    `hidden` and stage 0's `attention_mask` (mmedge/runtime/engine.py `_all_stages`)."""
    out = dict(zip([o.name for o in chain[0].get_outputs()], chain[0].run(None, feeds)))
    mask, logits = out["attention_mask"], [out["logits"]]
    for session in chain[1:]:
        out = dict(zip([o.name for o in session.get_outputs()],
                       session.run(None, {"hidden_in": out["hidden"], "attention_mask": mask})))
        logits.append(out["logits"])
    return logits


def val_feeds(model_dir: Path, n: int, data_seed: int = 0) -> tuple[list[dict[str, np.ndarray]], np.ndarray]:
    """n validation samples as batch-1 stage-0 inputs, and their labels."""
    from mmedge.evaluation.predict import make_batches
    from mmedge.models.checkpoint import from_pretrained

    model, tokenizer = from_pretrained(model_dir)
    cfg = model.config
    batch = make_batches(cfg.task, data_seed, "val", n, tokenizer, cfg.image_size, batch_size=n)[0]
    feeds = [{"pixel_values": batch.pixels[i: i + 1].astype(np.float32),
              "input_ids": batch.input_ids[i: i + 1].astype(np.int32),
              "text_mask": batch.text_mask[i: i + 1].astype(np.int32)} for i in range(len(batch))]
    return feeds, batch.labels


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion k / n."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def op_summary(files: dict[str, Path]) -> dict[str, int]:
    """Counts of the op types that tell the variants apart, over the chain."""
    import onnx

    keep = ("MatMul", "MatMulInteger", "Gemm", "Conv", "ConvInteger", "DynamicQuantizeLinear", "Gather",
            "LayerNormalization", "SkipLayerNormalization", "BiasGelu", "Gelu", "FastGelu", "Attention",
            "MultiHeadAttention")
    counts: dict[str, int] = {}
    for path in files.values():
        for node in onnx.load(str(path)).graph.node:
            if node.op_type in keep:
                counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


def weight_bytes(files: dict[str, Path]) -> int:
    """Bytes of the initializers (weights, scales, zero points) over the chain: the size without the
    graph itself and the exporter's per-node metadata (source locations), which ORTOptimizer drops."""
    import onnx
    from onnx import numpy_helper

    return sum(numpy_helper.to_array(t).nbytes for path in files.values()
               for t in onnx.load(str(path)).graph.initializer)


def ort_format(files: dict[str, Path], work: Path) -> dict:
    """Convert the chain to ORT format as `mmedge export` does; size, or the converter's error."""
    from onnxruntime.tools import convert_onnx_models_to_ort as converter

    src, dst = work / "src", work / "ort"
    src.mkdir(parents=True, exist_ok=True)
    for path in files.values():
        shutil.copy(path, src / path.name)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            converter.convert_onnx_models_to_ort(src, output_dir=dst,
                                                 optimization_styles=[converter.OptimizationStyle.Fixed])
    except Exception as exc:  # noqa: BLE001 - the converter raises plain exceptions of several kinds
        return {"ok": False, "error": short(exc)}
    made = sorted(dst.glob("*.ort"))
    return {"ok": len(made) == len(files), "mb": round(sum(p.stat().st_size for p in made) / MB, 3)}


def measure(variants: dict[str, dict[str, Path]], feeds: list[dict], labels: np.ndarray, work: Path,
            latency_queries: int = 200, passes: int = 3, threads: int = 1, warmup: int = 10) -> dict:
    """Size, logits error, agreement, accuracy and interleaved latency of every variant."""
    chains = {name: sessions(files, threads) for name, files in variants.items()}
    ref = [run_chain(chains["fp32"], f) for f in feeds]
    ref_final = np.array([r[-1].argmax() for r in ref])
    rows = {}
    for name, files in variants.items():
        outs = ref if name == "fp32" else [run_chain(chains[name], f) for f in feeds]
        final = np.array([o[-1].argmax() for o in outs])
        every_exit = np.array([[o[e].argmax() for e in range(len(o))] for o in outs])
        ref_every = np.array([[r[e].argmax() for e in range(len(r))] for r in ref])
        err_all = max(float(np.abs(o[e] - r[e]).max()) for o, r in zip(outs, ref) for e in range(len(o)))
        err_final = max(float(np.abs(o[-1] - r[-1]).max()) for o, r in zip(outs, ref))
        correct = int((final == labels).sum())
        size = sum(p.stat().st_size for p in files.values())
        rows[name] = {
            "files": {stage: p.name for stage, p in files.items()},
            "mb": round(size / MB, 3),
            "weights_mb": round(weight_bytes(files) / MB, 3),
            "ort_format": ort_format(files, work / "ort_check" / name),
            "ops": op_summary(files),
            "max_abs_logits_error_all_exits": err_all,
            "max_abs_logits_error_final": err_final,
            "max_abs_logits": max(float(np.abs(x).max()) for o in outs for x in o),
            "answer_agreement_final": float((final == ref_final).mean()),
            "answer_agreement_all_exits": float((every_exit == ref_every).mean()),
            "val_accuracy": correct / len(labels),
            "val_accuracy_wilson95": list(wilson(correct, len(labels))),
            "val_correct": correct,
        }
    # latency: the same query through every variant back to back, in rotating order
    names = list(variants)
    times: dict[str, list[float]] = {n: [] for n in names}
    queries = [feeds[i % len(feeds)] for i in range(latency_queries)]
    for name in names:
        for _ in range(warmup):
            run_chain(chains[name], queries[0])
    for p in range(passes):
        for q, f in enumerate(queries):
            shift = (q + p) % len(names)
            for name in names[shift:] + names[:shift]:
                t0 = time.perf_counter()
                run_chain(chains[name], f)
                times[name].append((time.perf_counter() - t0) * 1e3)
    base, fp32 = np.array(times["int8_today"]), np.array(times["fp32"])
    for name in names:
        t = np.array(times[name])
        rows[name]["latency_ms"] = {
            "median": float(np.median(t)), "p25": float(np.percentile(t, 25)), "p75": float(np.percentile(t, 75)),
            "p10": float(np.percentile(t, 10)), "p90": float(np.percentile(t, 90)), "n": int(t.size)}
        # per query, this variant's time over today's int8 on the same query in the same round
        rows[name]["latency_vs_int8_today_paired_median"] = float(np.median(t / base))
        rows[name]["latency_vs_fp32_paired_median"] = float(np.median(t / fp32))
    return rows


# ---------------------------------------------------------------------------------------------- report

def markdown(result: dict) -> str:
    rows, s = result["variants"], result["settings"]
    lines = [
        "# optimum-onnx against today's ONNX int8 recipe (issue #18)", "",
        f"Command: `{result['command']}`. Model `{result['model']}`, keep ratio 1.0 (every visual token), "
        f"the {s['stages']} stage graphs chained at full depth. Accuracy: final exit, {s['val_samples']} samples "
        f"of the scenes val split (data seed {s['data_seed']}). Latency: batch 1, onnxruntime "
        f"{result['machine']['libraries'].get('onnxruntime', '?')} on {s['threads']} thread, "
        f"{s['latency_queries']} queries x {s['passes']} passes, every variant on the same query back to back "
        f"(rotating order), on {result['machine']['cpu']} ({result['machine']['logical_cores']} cores, shared "
        f"with other work: compare the variants within this run, not with other files). optimum-onnx "
        f"{result['optimum_versions'].get('optimum-onnx', '?')}, optimum {result['optimum_versions'].get('optimum', '?')}, "
        f"transformers {result['optimum_versions'].get('transformers', '?')}. MB = 10^6 bytes.", "",
        "| variant | stage files MB: .onnx / .ort / weights | max abs logits error vs fp32, any exit / final | answers = fp32 (final / every exit) | val accuracy [95% CI] | p50 ms per query [IQR] | time vs fp32 / vs today's int8 (paired) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, desc in VARIANTS.items():
        if name not in rows:
            lines.append(f"| {desc} | not made: {result['evidence']['failures'].get(name, 'see evidence')} | | | | | |")
            continue
        r = rows[name]
        o = r["ort_format"]
        ort = f"{o['mb']:.2f}" if o.get("ok") else f"fails: {o.get('error', '?')}"
        lo, hi = r["val_accuracy_wilson95"]
        lat = r["latency_ms"]
        lines.append(
            f"| {desc} | {r['mb']:.2f} / {ort} / {r['weights_mb']:.2f} | {r['max_abs_logits_error_all_exits']:.2g} / "
            f"{r['max_abs_logits_error_final']:.2g} | {r['answer_agreement_final']:.3f} / "
            f"{r['answer_agreement_all_exits']:.3f} | {r['val_accuracy']:.3f} [{lo:.3f}, {hi:.3f}] | "
            f"{lat['median']:.2f} [{lat['p25']:.2f}-{lat['p75']:.2f}] | {r['latency_vs_fp32_paired_median']:.2f}x / "
            f"{r['latency_vs_int8_today_paired_median']:.2f}x |")
    lines += ["", "`.onnx` is the stage files as written; `.ort` their ORT-format conversion as `mmedge export` "
              "makes it (which drops the exporter's per-node metadata, as ORTOptimizer does); weights = the "
              "initializers alone. Paired: the median over queries of this variant's time over fp32's / today's "
              "int8's on the same query in the same round. `arm64` is optimum's preset for ARM64 CPUs "
              "(u8 activations, s8 symmetric weights); its latency here is on this x86 host, not on a phone.", "", "Quantized / fused ops over the chain:", "",
              "| variant | ops |", "|---|---|"]
    for name in VARIANTS:
        if name in rows:
            lines.append(f"| {name} | {', '.join(f'{k} {v}' for k, v in rows[name]['ops'].items())} |")
    lines += ["", "Where optimum cannot serve (exact error text, this run):", ""]
    for k, v in {**result["evidence"]["exporter"], **result["evidence"]["optimizer"],
                 **result["evidence"]["failures"]}.items():
        lines.append(f"- `{k}`: `{v}`")
    for line in result["evidence"].get("optimizer_printed", []):
        lines.append(f"- ORTOptimizer O2 (onnxruntime's fusion code) printed: `{line}`")
    lines.append("")
    return "\n".join(lines)


def run(model_dir: Path, out: Path, val_samples: int = 512, latency_queries: int = 200, passes: int = 3,
        threads: int = 1, data_seed: int = 0, command: str = "python benchmarks/optimum_int8.py",
        recipe_overrides: dict | None = None, log=print) -> dict:
    """The whole benchmark; writes optimum_int8.{json,md} into `out` and returns the result."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the exporter probe must not reach the Hub
    from mmedge.bench.machine import describe
    from mmedge.versions import package_versions

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mmedge-optimum-") as tmp:
        work = Path(tmp)
        log(f"exporting {rel(model_dir)} (onnx fp32 + int8, keep ratio 1.0)")
        bundle = export_stages(model_dir, work, recipe_overrides)
        variants, evidence = build_variants(bundle, work, log)
        evidence["exporter"] = exporter_refusals(model_dir, work)
        feeds, labels = val_feeds(model_dir, val_samples, data_seed)
        log(f"measuring {len(variants)} variants on {len(feeds)} val samples, "
            f"{latency_queries} x {passes} timed queries each")
        rows = measure(variants, feeds, labels, work, latency_queries, passes, threads)
    result = {
        "command": command,
        "model": rel(model_dir),
        "settings": {"keep_ratio": 1.0, "stages": len(variants["fp32"]), "val_samples": len(labels),
                     "data_seed": data_seed, "latency_queries": latency_queries, "passes": passes,
                     "threads": threads},
        "variants_described": dict(VARIANTS),
        "variants": rows,
        "evidence": evidence,
        "machine": describe(),
        "optimum_versions": package_versions(("optimum-onnx", "optimum", "transformers", "onnxruntime", "onnx",
                                              "torch")),
        "seconds": round(time.perf_counter() - started, 1),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "optimum_int8.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "optimum_int8.md").write_text(markdown(result))
    return result


def report_only(out: Path) -> list[Path]:
    """Rewrite OUT/optimum_int8.md from OUT/optimum_int8.json (nothing is exported or measured)."""
    result = json.loads((out / "optimum_int8.json").read_text())
    (out / "optimum_int8.md").write_text(markdown(result))
    return [out / "optimum_int8.md"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="models/vqa-default")
    p.add_argument("--out", default="benchmarks/results/optimum")
    p.add_argument("--val-samples", type=int, default=512)
    p.add_argument("--latency-queries", type=int, default=300)
    p.add_argument("--passes", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--report-only", action="store_true",
                   help="rewrite OUT's Markdown from its JSON (needs no optimum); measure nothing")
    args = p.parse_args(argv)
    if args.report_only:
        print("wrote " + ", ".join(map(str, report_only(Path(args.out)))))
        return 0

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    missing = optimum_available()
    if missing:
        print(f"SKIPPED: optimum-onnx is not importable here ({missing}). Install it apart from the main "
              f"environment (it pins transformers<4.58): {INSTALL}; then run this script with that venv's python.")
        return 0
    # the command as it can be re-run from the repository root (no machine paths)
    changed = [f"--{k.replace('_', '-')} {rel(Path(v)) if k in ('model', 'out') else v}"
               for k, v in vars(args).items() if v != p.get_default(k)]
    command = " ".join(["python benchmarks/optimum_int8.py", *changed])
    result = run(Path(args.model), Path(args.out), args.val_samples, args.latency_queries, args.passes,
                 args.threads, args.data_seed, command)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

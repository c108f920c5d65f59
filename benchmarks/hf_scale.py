"""ViLT-B/32 at real size through `mmedge adapt`, `mmedge export` and the Python Engine (issue #28, "At real size").

RANDOM WEIGHTS. The model is the ViLT-B/32 architecture (transformers' ViltConfig defaults: 12 layers x 768,
12 heads, MLP 3072, 384 x 384 images in 32 px patches = 12 x 12 = 144 patches, 40 text tokens, BERT's 30,522
word pieces) with ViltForQuestionAnswering's 3,129-answer head, initialised at random (seed 0): no pretrained
weights can be downloaded here, and latency, memory and size do not depend on the values. Every output says so.
Its answers mean nothing; parity at export is still measured (and reported), but the int8 decision limits
(answer and exit agreement, accuracy) are not applied: among 3,129 random logits the top two are near-ties
that any rounding flips.

    python benchmarks/hf_scale.py                          # build, adapt, export, measure: ~1 h on 2 shared cores
    python benchmarks/hf_scale.py --work /tmp/hf_scale     # keep the source, adapted folder and bundles there
                                                           # (a second run re-measures without exporting again)
    python benchmarks/hf_scale.py --report-only            # the Markdown and PNG again from the committed JSON
    python benchmarks/hf_scale.py --project-only --exit-histogram PATH   # add the projection to the committed JSON

Steps:
1. Source: the random ViLT-B/32 VQA model and a ViltProcessor (a BERT-layout WordPiece tokenizer padded to
   30,522 entries, ViltImageProcessor at shortest edge 384) saved with save_pretrained into the work folder.
2. Adapt: `mmedge.adapt.load_source` + `save_adapted`, what `mmedge adapt` runs before and after distilling, with
   an exit after every layer (12), the prefilter after layer 1, keep ratios 1.0 / 0.5 / 0.25 and the exit heads'
   linear maps stored as rank-128 pairs (the default), and *no* distillation (0 steps: `mmedge adapt --steps`
   takes at least 1, and the exit heads' and prefilter's values do not change latency). Each exit is moved by
   noise of std 1e-3 so that, as trained heads would, each holds its own bytes (identical copies are stored once
   by the exporters). More variants split the cost of full depth (ONNX only, keep 1.0): every layer with full
   copies of the head (`--exit-rank full`); the last exit alone (the model's own head: mmedge's stage form with
   nothing added that runs at keep 1.0); and that at ONNX opset 18 instead of the default 20; and every layer as
   the in-graph form (ONNX, every keep ratio: one graph with the exits as If branches), VARIANTS.
3. Export: `mmedge export --target onnx executorch --quantize int8` (fp32 and int8 of each; no ORT format; the
   in-graph graph for its variant only), parity-checked against PyTorch as every export is.
4. Unmodified model: optimum's ONNX exporter is asked first (from its side venv, scripts/setup_optimum_venv.sh,
   when there is one); it has no ViLT support, so the plain transformers ViltForQuestionAnswering is exported
   with torch.onnx.export at the fixed size (batch 1, 384 x 384, 40 tokens), fp32, and quantized to int8 with
   mmedge's own ONNX int8 recipe (mmedge.export.onnx_target.quantize_int8). The dynamo exporter cannot trace
   ViLT (its patch selection has data-dependent shapes) and the TorchScript exporter refuses the
   `torch.multinomial` that shuffles the patches (its sample count is a traced tensor); during tracing
   multinomial is therefore replaced by the identity order (for a full pixel mask it only permutes the
   patches, which changes nothing but the float summation order). Both refusals are recorded.
5. Measure, on this machine, batch 1, one thread (onnxruntime intra_op_num_threads=1; ExecuTorch's pool sized 1):
   each configuration (the Engine on onnxruntime fp32 / int8 and ExecuTorch fp32 / int8, the variants on
   onnxruntime fp32 / int8; the unmodified graph on onnxruntime fp32 / int8) in its own process, loaded one after
   another (load time: the bundle's hash check, opening the stages, the Engine's self-check; RSS after imports,
   after loading, peak). Then rounds: in each,
   every keep ratio, every configuration one full-depth query (`Engine.all_exits` on prepared inputs: every stage
   and every exit; the in-graph variant: `Engine.run_in_graph` with no threshold, every exit evaluated in the
   graph and none accepted before the last; the unmodified graph at keep 1.0 only), in an order rotated every
   round, so that the drift of this shared machine hits every configuration alike. Per stage and full depth:
   median and p10-p90 over rounds; adapted / unmodified: per round, the ratio of the two on the same query back
   to back.
   About 40 minutes of the hour are the export (ExecuTorch lowers 36 methods per precision); --work keeps it.
6. Projection (labelled so): the speed-up that an exit histogram (--exit-histogram; by default the calibrated
   small teacher's, benchmarks/results/vilt_teacher/results.json, skipped when absent) would give at this size,
   from the measured stage times.
7. Modelled phones: mmedge's cost model (mmedge.bench.costmodel) on the fp32 ONNX stages, per device profile,
   with each profile's held-out error against published phone latencies, and the host check (the calibrated
   host profile against the stage times measured here).

Writes hf_scale.json, hf_scale.md and hf_scale.png into --out (default benchmarks/results/hf_scale/).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from worker_process import protocol, rss_mb, start_all, stop_all  # noqa: E402

OUT = "benchmarks/results/hf_scale"
DEFAULT_HISTOGRAM = "benchmarks/results/vilt_teacher/results.json"  # the small teacher, calibrated and benched
LABEL = ("RANDOM WEIGHTS: the ViLT-B/32 architecture initialised at random (no pretrained weights here); "
         "latency, memory and size do not depend on the values, answers and accuracy mean nothing")
RATIOS = (1.0, 0.5, 0.25)
NUM_ANSWERS = 3129  # VQA v2's answer set, ViltForQuestionAnswering's head (dandelin/vilt-b32-finetuned-vqa)
DEVICES = ("pixel-7", "pixel-8", "galaxy-s23", "iphone-15", "raspberry-pi-5")
MB = 1e6

# Architectures: "b32" is the study; "tiny" only checks this script end to end in a few minutes.
ARCHS = {
    "b32": {},  # ViltConfig's defaults
    "tiny": {"hidden_size": 64, "num_hidden_layers": 3, "num_attention_heads": 2, "intermediate_size": 128,
             "image_size": 64, "patch_size": 16, "max_position_embeddings": 16, "vocab_size": 600},
}

# Adapted variants: the study (an exit after every layer, every keep ratio, both targets, the defaults of
# `mmedge adapt` and `mmedge export`: exit heads stored as rank-128 pairs, ONNX opset 20), and some that split
# the cost of full depth against the unmodified model (ONNX only, keep 1.0): every layer with full copies of the
# head (`--exit-rank full`); the last exit alone (the model's own head: mmedge's stage form with nothing added
# that runs at keep 1.0); and that at opset 18 (where the exporter writes GELU as Div, Erf, Add, Mul, which
# onnxruntime does not fuse; at 20 it writes the Gelu operator); and every layer as the in-graph form (one
# ONNX graph per keep ratio, the exits as If branches; fp32 and int8), run through the Engine's in-graph mode.
VARIANTS = {
    "every layer": {"exit_layers": None, "exit_rank": 128, "bundle": "bundle.mmedge", "targets": ["onnx", "executorch"],
                    "keep_ratios": list(RATIOS), "opset": 20},
    "every layer, full-copy heads": {"exit_layers": None, "exit_rank": None, "bundle": "bundle-full-heads.mmedge",
                                     "targets": ["onnx"], "keep_ratios": [1.0], "opset": 20},
    "last exit only": {"exit_layers": "last", "exit_rank": 128, "bundle": "bundle-last-exit.mmedge",
                       "targets": ["onnx"], "keep_ratios": [1.0], "opset": 20},
    "last exit only, opset 18": {"exit_layers": "last", "exit_rank": 128, "bundle": "bundle-last-exit-opset18.mmedge",
                                 "targets": ["onnx"], "keep_ratios": [1.0], "opset": 18},
    "every layer, in-graph": {"exit_layers": None, "exit_rank": 128, "bundle": "bundle-in-graph.mmedge",
                              "targets": ["onnx"], "keep_ratios": list(RATIOS), "opset": 20, "in_graph": True},
}

# configuration name -> how it runs: the adapted variants through the Engine, then the unmodified graph
ENGINE_RUNS = [("every layer", "onnxruntime"), ("every layer", "executorch"),
               ("every layer, full-copy heads", "onnxruntime"), ("last exit only", "onnxruntime"),
               ("last exit only, opset 18", "onnxruntime"), ("every layer, in-graph", "onnxruntime")]


def _engine_name(variant: str, backend: str, precision: str) -> str:
    """"onnxruntime fp32" for every layer; "onnxruntime fp32, last exit only" and the like for the others."""
    suffix = variant.removeprefix("every layer").removeprefix(", ")
    return f"{backend} {precision}" + (f", {suffix}" if suffix else "")


CONFIGS = {
    **{_engine_name(v, b, p): {"kind": "engine", "variant": v, "backend": b, "precision": p,
                               "mode": "in-graph" if VARIANTS[v].get("in_graph") else "staged"}
       for v, b in ENGINE_RUNS for p in ("fp32", "int8")},
    **{f"unmodified onnxruntime {p}": {"kind": "plain", "precision": p} for p in ("fp32", "int8")},
}
MAIN = ["onnxruntime fp32", "onnxruntime int8", "executorch fp32", "executorch int8"]  # every layer, every ratio


def adapted_folder(variant: dict) -> str:
    """The adapted folder a variant is exported from (one per set of exits and exit rank)."""
    return f"adapted-{variant['exit_layers'] or 'every-layer'}-rank-{variant['exit_rank'] or 'full'}"


def exit_layers(variant: dict, depth: int) -> list[int] | None:
    """0-based layers followed by an exit: None (every layer) or the last alone."""
    return [depth - 1] if variant["exit_layers"] == "last" else None


def ratios_of(name: str) -> tuple[float, ...]:
    cfg = CONFIGS[name]
    return tuple(VARIANTS[cfg["variant"]]["keep_ratios"]) if cfg["kind"] == "engine" else (1.0,)


def bundle_of(name: str, work: Path) -> Path:
    cfg = CONFIGS[name]
    return work / (VARIANTS[cfg["variant"]]["bundle"] if cfg["kind"] == "engine" else "unmodified")
GOAL = 1.05  # the adapted model at full depth costs at most 5% over the unmodified one


def log(msg: str) -> None:
    print(f"[hf_scale {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def rel(path: Path | str) -> str:
    """A path as the results may show it: relative to the repository, never a machine path."""
    p = Path(path).resolve()
    return p.relative_to(ROOT).as_posix() if p.is_relative_to(ROOT) else p.name


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def root_cause(exc: BaseException) -> BaseException:
    """The innermost exception of a chain (torch.export's own error wraps what it could not trace)."""
    while exc.__cause__ is not None and exc.__cause__ is not exc:
        exc = exc.__cause__
    return exc


PATH = re.compile(r"(?<![\w.])/(?:[\w.+@-]+/)+")  # an absolute path's folders (a machine path)


def short(exc: BaseException | str, limit: int = 300) -> str:
    """An exception as evidence: its type and the start of its text, without colour codes or machine paths."""
    text = PATH.sub("", ANSI.sub("", " ".join(str(exc).split())))
    head = f"{type(exc).__name__}: " if isinstance(exc, BaseException) else ""
    return f"{head}{text[:limit]}{' ...' if len(text) > limit else ''}"


def stats(values) -> dict:
    a = np.asarray(list(values), dtype=np.float64)
    p10, p25, p50, p75, p90 = np.percentile(a, [10, 25, 50, 75, 90])
    return {"n": int(a.size), "p10": float(p10), "p25": float(p25), "median": float(p50), "p75": float(p75),
            "p90": float(p90)}


# ---------------------------------------------------------------------------------------------- 1. source
def vocabulary(size: int) -> list[str]:
    """BERT's layout (specials first, [PAD] 0, [CLS] 2, [SEP] 3 as mmedge's tiny ViLTs), the scenes' words, the
    characters and their ## forms, padded with [unusedN] to `size` entries (BERT-base's 30,522)."""
    from mmedge.data.tasks import vocabulary_words

    chars = list("abcdefghijklmnopqrstuvwxyz0123456789") + list("?.,!'-")
    words = sorted(set(vocabulary_words()) - set(chars))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words + chars + [f"##{c}" for c in chars[:36]]
    return vocab + [f"[unused{i}]" for i in range(max(0, size - len(vocab)))]


def build_source(folder: Path, arch: str, seed: int = 0) -> dict:
    """The random ViLT (ViltForQuestionAnswering, 3,129 answers) and its ViltProcessor, saved with save_pretrained."""
    import torch
    from transformers import BertTokenizer, ViltConfig, ViltForQuestionAnswering, ViltImageProcessor, ViltProcessor

    labels = [f"answer{i}" for i in range(NUM_ANSWERS)]
    config = ViltConfig(num_labels=len(labels), id2label=dict(enumerate(labels)),
                        label2id={a: i for i, a in enumerate(labels)}, **ARCHS[arch])
    torch.manual_seed(seed)
    model = ViltForQuestionAnswering(config).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    vocab = vocabulary(config.vocab_size)
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True,
                              model_max_length=config.max_position_embeddings)
    images = ViltImageProcessor(size={"shortest_edge": config.image_size}, size_divisor=config.patch_size)
    ViltProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)
    keys = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "image_size",
            "patch_size", "max_position_embeddings", "vocab_size", "initializer_range")
    return {"class": "ViltForQuestionAnswering", "weights": f"random (torch.manual_seed({seed}), initializer_range "
            f"{config.initializer_range})", "config": {k: getattr(config, k) for k in keys},
            "num_answers": len(labels), "parameters": sum(p.numel() for p in model.parameters())}


# ---------------------------------------------------------------------------------------------- 2. adapt
def adapt(source: Path, folder: Path, exit_layers: list[int] | None = None, exit_rank: int | None = 128,
          seed: int = 0) -> dict:
    """What `mmedge adapt` does around distillation, with 0 steps: wrap, then write the adapted folder.

    Each exit head starts as a copy of the model's own head; untrained, all of them would hold the same bytes,
    which the exporters store once (weights shared by content): each copy is moved by noise of std 1e-3 so
    that, as trained heads, every one is stored and loaded on its own."""
    import torch

    from mmedge.adapt import load_source
    from mmedge.adapt.folder import save_adapted

    # exits after every layer (None) or the ones given, the prefilter after layer 1
    model, pre = load_source(source, keep_ratios=list(RATIOS), exit_layers=exit_layers, exit_rank=exit_rank)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for head in model.exit_heads:
            for p in head.parameters():
                p.add_(torch.randn(p.shape, generator=generator) * 1e-3)
    save_adapted(model, pre, folder, "benchmarks/hf_scale.py: random ViLT-B/32", metadata={"distill_steps": "0"},
                 source_dir=source)
    cfg = model.config
    source_params = sum(p.numel() for p in model.backbone.parameters())
    total = model.num_parameters()
    return {"exit_layers": [i + 1 for i in cfg.exits], "prefilter_after_layer": cfg.prefilter_after + 1,
            "keep_ratios": list(cfg.keep_ratios), "distill_steps": 0, "image_size": cfg.image_size,
            "patch_size": cfg.patch_size, "patches": cfg.num_patches, "text_tokens": cfg.max_text_len,
            "tokens": {str(r): cfg.max_text_len + 1 + cfg.kept_tokens(r) for r in RATIOS},
            "parameters": {"source": source_params, "added": total - source_params, "total": total}}


# ---------------------------------------------------------------------------------------------- 3. export
RECIPE = {"targets": ["onnx", "executorch"], "quantize": "int8", "keep_ratios": list(RATIOS), "ort_format": False,
          "in_graph": False, "parity_samples": 4, "accuracy_samples": 4, "calibration_samples": 8,
          # random weights: near-tied answers; agreement is measured and reported, not gated
          "int8_min_answer_agreement": 0.0, "int8_min_exit_agreement": 0.0, "int8_max_accuracy_drop": 1.0}


def export(folder: Path, bundle: Path, variant: dict) -> dict:
    from mmedge.export.exporter import export_bundle
    from mmedge.export.recipe import ExportRecipe

    t0 = time.perf_counter()
    recipe = ExportRecipe(**{**RECIPE, "targets": variant["targets"], "keep_ratios": variant["keep_ratios"],
                             "opset": variant["opset"], "in_graph": variant.get("in_graph", False)})
    export_bundle(folder, bundle, recipe, force=True, log=lambda m: log(f"export: {m.strip()}"))
    return {"seconds": round(time.perf_counter() - t0, 1)}


def parity_summary(manifest: dict) -> dict:
    """Per artifact and keep ratio, the worst of the exporter's parity figures (every stage)."""
    out = {}
    for a in manifest["artifacts"]:
        p = a.get("parity", {})
        if p.get("status") != "measured":
            continue
        out[f"{a['runtime']} {a['precision']}"] = {
            r: {"max_abs_logits_error": max(s["logits_max_abs_err"] for s in v["stages"]),
                "min_answer_agreement": min(s["answer_agreement"] for s in v["stages"]),
                "min_kept_tokens_agreement": min(s["kept_tokens_agreement"] for s in v["stages"]),
                "exit_agreement": v["exit_agreement"], "samples": v["samples"], "passed": v["passed"]}
            for r, v in p["by_keep_ratio"].items()}
    return out


def bundle_sizes(bundle: Path) -> dict:
    """Bytes per artifact (its files as the manifest lists them) and in all."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    files = manifest["files"]
    sizes = {}
    for a in manifest["artifacts"]:
        prefix = a.get("file")
        mine = [f for f in files if (prefix and (f == prefix or f.startswith(prefix + "/")))
                or any(f == s.get("file") for s in a["stages"].values()) or f == a.get("external_data")]
        sizes[f"{a['runtime']} {a['precision']}"] = sum(files[f]["bytes"] for f in mine)
    sizes["whole bundle"] = sum(f["bytes"] for f in files.values())
    return sizes


# ---------------------------------------------------------------------------------------------- 4. unmodified
@contextlib.contextmanager
def identity_multinomial():
    """torch.multinomial as the identity order while tracing (module docstring, step 4)."""
    import torch

    original = torch.multinomial

    def first(input, num_samples, replacement=False, generator=None):  # noqa: A002 - torch's own names
        return torch.arange(int(num_samples))

    torch.multinomial = first
    try:
        yield
    finally:
        torch.multinomial = original


def export_unmodified(source: Path, out: Path) -> dict:
    """The plain transformers model as one ONNX graph (fp32, then int8 by mmedge's ONNX recipe) and what each
    exporter said."""
    import torch
    import transformers

    from mmedge.export.onnx_target import quantize_int8

    hf = transformers.ViltForQuestionAnswering.from_pretrained(source).eval()
    L, S = hf.config.max_position_embeddings, hf.config.image_size

    class Plain(torch.nn.Module):  # the Engine's stage-0 inputs; the pixel mask all ones (the fixed size)
        def __init__(self) -> None:
            super().__init__()
            self.m = hf

        def forward(self, pixel_values, input_ids, text_mask):
            return self.m(input_ids=input_ids.long(), attention_mask=text_mask.long(), pixel_values=pixel_values,
                          pixel_mask=torch.ones(1, S, S, dtype=torch.long)).logits

    ids = torch.zeros(1, L, dtype=torch.int32)
    ids[0, :3] = torch.tensor([2, 7, 3])
    args = (torch.zeros(1, 3, S, S), ids, (ids != 0).to(torch.int32))
    names = dict(input_names=["pixel_values", "input_ids", "text_mask"], output_names=["logits"], opset_version=18)
    out.mkdir(parents=True, exist_ok=True)
    fp32, evidence = out / "model_fp32.onnx", {}
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(Plain(), args, dynamo=True, **names).save(str(fp32))
            evidence["torch.onnx.export(dynamo=True)"] = "exported"
        except Exception as exc:  # noqa: BLE001 - recorded as evidence
            cause = root_cause(exc)
            evidence["torch.onnx.export(dynamo=True)"] = short(exc, 160) + (
                f" (caused by {short(cause, 240)})" if cause is not exc else "")
        try:
            torch.onnx.export(Plain(), args, str(fp32), dynamo=False, **names)
            evidence["torch.onnx.export(dynamo=False)"] = "exported"
        except Exception as exc:  # noqa: BLE001
            evidence["torch.onnx.export(dynamo=False)"] = short(exc, 240)
            with identity_multinomial():
                torch.onnx.export(Plain(), args, str(fp32), dynamo=False, **names)
            evidence["torch.onnx.export(dynamo=False), multinomial as the identity order"] = "exported"
    int8 = out / "model_int8.onnx"
    quantize_int8(fp32, int8)
    return {"files": {"fp32": fp32, "int8": int8}, "evidence": evidence,
            "sizes": {"unmodified onnxruntime fp32": fp32.stat().st_size, "unmodified onnxruntime int8": int8.stat().st_size}}


def unmodified_parity(source: Path, plain_fp32: Path, feeds: list[dict]) -> dict:
    """The unmodified graph against transformers' own forward (its own patch shuffle) on the measured queries."""
    import onnxruntime as ort
    import torch
    import transformers

    hf = transformers.ViltForQuestionAnswering.from_pretrained(source).eval()
    session = ort.InferenceSession(str(plain_fp32), providers=["CPUExecutionProvider"])
    worst = 0.0
    for f in feeds:
        with torch.no_grad():
            ref = hf(input_ids=torch.from_numpy(f["input_ids"]).long(),
                     attention_mask=torch.from_numpy(f["text_mask"]).long(),
                     pixel_values=torch.from_numpy(f["pixel_values"])).logits.numpy()
        got = session.run(None, f)[0]
        worst = max(worst, float(np.abs(got - ref).max()))
    return {"max_abs_logits_error_vs_transformers": worst, "queries": len(feeds)}


OPTIMUM_PROBE = r"""
import json, sys, importlib.metadata as md
out = {"versions": {p: md.version(p) for p in ("optimum-onnx", "optimum", "transformers")}, "evidence": {}}
def short(e):
    t = " ".join(str(e).split()).replace(sys.argv[1], "SOURCE")
    return f"{type(e).__name__}: {t[:400]}{' ...' if len(t) > 400 else ''}"
from optimum.exporters.tasks import TasksManager
try:
    tasks = TasksManager.get_supported_tasks_for_model_type("vilt", exporter="onnx", library_name="transformers")
    out["evidence"]["TasksManager.get_supported_tasks_for_model_type('vilt', exporter='onnx')"] = sorted(tasks)
except Exception as e:
    out["evidence"]["TasksManager.get_supported_tasks_for_model_type('vilt', exporter='onnx')"] = short(e)
from optimum.exporters.onnx import main_export
try:
    main_export(sys.argv[1], output=sys.argv[2], task="visual-question-answering", device="cpu")
    out["evidence"]["main_export(task='visual-question-answering')"] = "exported"
except Exception as e:
    out["evidence"]["main_export(task='visual-question-answering')"] = short(e)
print("OPTIMUM-JSON " + json.dumps(out))
"""


def optimum_probe(source: Path, work: Path) -> dict:
    """What optimum-onnx's exporter says about ViLT, run in its side venv (it pins an older transformers)."""
    venv = Path(os.environ.get("MMEDGE_OPTIMUM_VENV", Path.home() / ".venvs" / "mmedge-optimum"))
    python = venv / "bin" / "python"
    if not python.is_file():
        return {"probed": False, "reason": "no optimum venv here (bash scripts/setup_optimum_venv.sh makes one)"}
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([str(python), "-c", OPTIMUM_PROBE, str(source), str(work / "optimum_export")],
                          capture_output=True, text=True, cwd="/", env=env, timeout=1800)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("OPTIMUM-JSON ")), None)
    if line is None:
        return {"probed": False, "reason": f"the probe failed (exit {done.returncode}): {short(done.stderr[-600:])}"}
    result = json.loads(line.split(" ", 1)[1])
    exported = result["evidence"].get("main_export(task='visual-question-answering')") == "exported"
    return {"probed": True, "supports_vilt": exported, **result}


# ---------------------------------------------------------------------------------------------- 5. measure
def make_feeds(folder: Path, n: int, path: Path) -> list[dict]:
    """n queries (random images, scene-style questions) through the adapted model's own preprocessing."""
    from mmedge.adapt.folder import read_config
    from mmedge.adapt.vilt import preprocessor_from_dict

    pre = preprocessor_from_dict(folder, read_config(folder))
    rng = np.random.default_rng(0)
    size = pre.image_size
    texts = ["what color is the large circle left of the square ?", "how many triangles are there ?",
             "is the small red square above the blue circle ?", "what shape is the green object ?"]
    feeds = []
    for i in range(n):
        image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        enc = pre.encode([(image,)], [texts[i % len(texts)]])
        feeds.append({"pixel_values": enc["pixel_values"].numpy().astype(np.float32),
                      "input_ids": enc["input_ids"].numpy().astype(np.int32),
                      "text_mask": enc["text_mask"].numpy().astype(np.int32)})
    np.savez(path, **{f"{k}_{i}": v for i, f in enumerate(feeds) for k, v in f.items()})
    return feeds


def load_feeds(path: Path) -> list[dict]:
    data = np.load(path)
    n = len({k.rsplit("_", 1)[1] for k in data.files})
    return [{k: data[f"{k}_{i}"] for k in ("pixel_values", "input_ids", "text_mask")} for i in range(n)]


def worker(name: str, work: Path, feeds_path: Path) -> None:
    """One configuration in its own process: load, then answer run commands on stdin (JSON lines)."""
    proto = protocol()
    cfg = CONFIGS[name]
    bundle = bundle_of(name, work)
    plain = work / "unmodified"
    feeds = load_feeds(feeds_path)
    if cfg["kind"] == "engine" and cfg["backend"] == "executorch":
        from mmedge.runtime.backends.executorch_backend import set_executorch_threads

        set_executorch_threads(1)
    from mmedge.bundle.manifest import load_bundle_manifest
    from mmedge.runtime.backends.onnxruntime_backend import OnnxRuntimeSession
    from mmedge.runtime.engine import Engine

    before = rss_mb()
    load = {}
    if cfg["kind"] == "engine":
        t0 = time.perf_counter()
        load_bundle_manifest(bundle, verify_files=True)
        load["hash_check_ms"] = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        engine = Engine.load(bundle, backend=cfg["backend"], precision=cfg["precision"], threads=1, verify=False,
                             self_check=False, mode=cfg["mode"])
        load["open_ms"] = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        engine.self_check()
        load["self_check_ms"] = (time.perf_counter() - t0) * 1e3

        def run(q: int, ratio: float) -> dict:
            t = time.perf_counter()
            if cfg["mode"] == "in-graph":  # one graph: every exit evaluated, none accepted before the last
                engine.run_in_graph(feeds[q], ratio)
                ms = (time.perf_counter() - t) * 1e3
                return {"total_ms": ms, "stage_ms": [ms]}
            result = engine.all_exits(feeds[q], ratio)
            return {"total_ms": (time.perf_counter() - t) * 1e3, "stage_ms": [float(x) for x in result.stage_ms]}
    else:
        t0 = time.perf_counter()
        session = OnnxRuntimeSession({"plain": plain / f"model_{cfg['precision']}.onnx"}, threads=1)
        load["open_ms"] = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        session.run("plain", feeds[0])
        load["self_check_ms"] = (time.perf_counter() - t0) * 1e3  # one query: the first-run cost

        def run(q: int, ratio: float) -> dict:
            t = time.perf_counter()
            session.run("plain", feeds[q])
            ms = (time.perf_counter() - t) * 1e3
            return {"total_ms": ms, "stage_ms": [ms]}
    load["total_ms"] = sum(load.values())
    proto.write(json.dumps({"ready": True, "load": load, "rss_after_imports_mb": before,
                            "rss_after_load_mb": rss_mb()}) + "\n")
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "run":
            proto.write(json.dumps(run(cmd["q"], cmd["ratio"])) + "\n")
        elif cmd["cmd"] == "stop":
            proto.write(json.dumps({"peak_rss_mb": rss_mb("VmHWM"), "rss_mb": rss_mb()}) + "\n")
            return


def measure(work: Path, feeds_path: Path, rounds: int, warmup: int) -> dict:
    """Load every configuration in its own process (one after another), then the interleaved rounds."""
    n_feeds = len(load_feeds(feeds_path))
    workers, loads, failures = start_all(
        list(CONFIGS), lambda name: [str(Path(__file__).resolve()), "--worker", name, "--work", str(work), "--feeds",
                                     str(feeds_path)], work, ROOT, log)
    raw = {n: {str(r): {"total_ms": [], "stage_ms": []} for r in ratios_of(n)} for n in workers}

    log(f"measure: warm-up, {warmup} queries per configuration and keep ratio")
    for name, w in workers.items():
        for ratio in ratios_of(name):
            for q in range(warmup):
                w.ask({"cmd": "run", "q": q % n_feeds, "ratio": ratio})
    names = list(workers)
    started = time.perf_counter()
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for ratio in RATIOS:
            for name in order:
                if ratio in ratios_of(name):
                    got = workers[name].ask({"cmd": "run", "q": r % n_feeds, "ratio": ratio})
                    raw[name][str(ratio)]["total_ms"].append(round(got["total_ms"], 3))
                    raw[name][str(ratio)]["stage_ms"].append([round(x, 3) for x in got["stage_ms"]])
        if r == 0 or (r + 1) % 5 == 0:
            log(f"measure: round {r + 1}/{rounds} ({time.perf_counter() - started:.0f} s)")
    memory = stop_all(workers, loads)
    return {"raw": raw, "load": {n: v["load"] for n, v in loads.items()}, "memory": memory, "failures": failures,
            "seconds": round(time.perf_counter() - started, 1)}


def summarise(raw: dict) -> dict:
    """Per configuration and keep ratio: full depth and every stage (median, p10-p90 over rounds), and the
    latency to each exit (the stages up to it, per round)."""
    out = {}
    for name, by in raw.items():
        out[name] = {}
        for ratio, v in by.items():
            stages = np.array(v["stage_ms"])
            cum = np.cumsum(stages, axis=1)
            out[name][ratio] = {"full_depth_ms": stats(v["total_ms"]),
                                "stages_ms": [stats(stages[:, s]) for s in range(stages.shape[1])],
                                "to_exit_ms": [stats(cum[:, s]) for s in range(cum.shape[1])]}
    return out


def versus_unmodified(raw: dict) -> list[dict]:
    """Each adapted onnxruntime configuration at full depth (every stage and exit, keep 1.0) over the unmodified
    graph of the same precision, per round (paired: the same query back to back)."""
    from mmedge.bench.stats import iqr_ratio

    out = []
    for name, cfg in CONFIGS.items():
        plain = f"unmodified onnxruntime {cfg['precision']}"
        if cfg["kind"] != "engine" or cfg["backend"] != "onnxruntime" or name not in raw or plain not in raw:
            continue
        a, b = np.array(raw[name]["1.0"]["total_ms"]), np.array(raw[plain]["1.0"]["total_ms"])
        paired = stats(a / b)
        out.append({"adapted": name, "variant": cfg["variant"], "precision": cfg["precision"], "unmodified": plain,
                    "paired_ratio": paired, "ratio_of_medians": iqr_ratio(a, b), "goal": GOAL,
                    "within_goal": paired["median"] <= GOAL})
    return out


# ---------------------------------------------------------------------------------------------- 6. projection
def read_histogram(path: Path) -> dict:
    """An exit histogram as shares per exit and the exits' relative depths. Accepted: {"exit_histogram": [...],
    "exit_layers": [0-based layers] (default: one exit after every layer), "num_layers": L (default: last exit
    + 1), "keep_ratio": r}; an `mmedge bench --device host` JSON (its "prefilter + exits" policy: the calibrated
    exits and keep ratio); benchmarks/vilt_teacher.py's results.json (the same policy of its onnxruntime fp32
    bench); or a bare list of counts."""
    data = json.loads(path.read_text())
    source = "the file's exit_histogram"
    adaptation = ""
    if isinstance(data, dict) and "teacher" in data and "frozen" in data:  # vilt_teacher.py: one entry per adaptation
        adaptation = " (the teacher's weights frozen)"
        data = {**data["frozen"], "teacher": data["teacher"]}
    if isinstance(data, list):
        data = {"exit_histogram": data}
    elif "bench" in data and "calibration" in data:  # benchmarks/vilt_teacher.py's results.json
        runtime = "onnxruntime fp32" if "onnxruntime fp32" in data["bench"] else next(iter(data["bench"]))
        policy = data["bench"][runtime]["policies"]["prefilter + exits"]
        data = {"exit_histogram": policy["exit_histogram"], "keep_ratio": data["calibration"]["keep_ratio"],
                "exit_layers": data["eval"]["exit_layers"],
                "num_layers": data.get("teacher", {}).get("config", {}).get("layers")}
        source = (f"benchmarks/vilt_teacher.py's calibrated policy 'prefilter + exits' on {runtime}: the small "
                  f"teacher adapted{adaptation} and calibrated within 1 point")
    elif "policies" in data:  # mmedge bench --device host
        policies = data["policies"]
        name = "prefilter + exits" if "prefilter + exits" in policies else next(iter(policies))
        layers = next(iter(data.get("exit_latency", {}).values()), {}).get("exit_layers")
        data = {"exit_histogram": policies[name]["exit_histogram"], "keep_ratio": policies[name]["keep_ratio"],
                "exit_layers": layers}
        source = f"policy {name!r} of an mmedge bench JSON"
    counts = np.asarray(data["exit_histogram"], dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0 or counts.min() < 0 or counts.sum() <= 0:
        raise ValueError(f"{path}: exit_histogram must be a non-empty list of non-negative counts")
    layers = data.get("exit_layers") or list(range(counts.size))  # default: an exit after every layer
    if len(layers) != counts.size:
        raise ValueError(f"{path}: {counts.size} counts for {len(layers)} exit layers")
    num_layers = int(data.get("num_layers") or max(layers) + 1)
    return {"file": rel(path), "source": source, "counts": counts.tolist(), "shares": (counts / counts.sum()).tolist(),
            "exit_layers": [int(x) for x in layers], "num_layers": num_layers,
            "keep_ratio": data.get("keep_ratio")}


def project(raw: dict, hist: dict, depth: int) -> dict:
    """Expected latency per query if the exits were taken as in `hist`, from this run's stage times: a teacher
    exit after layer l of L maps to the exit after layer round(l / L x depth) here (relative depth)."""
    mapped = [min(depth, max(1, round((layer + 1) / hist["num_layers"] * depth))) - 1 for layer in hist["exit_layers"]]
    shares = np.asarray(hist["shares"])
    out = {"mapped_exits": [m + 1 for m in mapped], "by_config": {}}
    for name in MAIN:
        if name not in raw:
            continue
        full = np.array(raw[name]["1.0"]["stage_ms"]).sum(axis=1)  # per round, full depth at keep 1.0
        rows = {}
        for ratio in RATIOS:
            cum = np.cumsum(np.array(raw[name][str(ratio)]["stage_ms"]), axis=1)
            expected = cum[:, mapped] @ shares  # per round
            rows[str(ratio)] = {"expected_ms": stats(expected), "speedup": stats(full / expected)}
            plain = f"unmodified onnxruntime {CONFIGS[name]['precision']}"
            if CONFIGS[name]["backend"] == "onnxruntime" and plain in raw:  # the same rounds: paired
                rows[str(ratio)]["speedup_vs_unmodified"] = stats(np.array(raw[plain]["1.0"]["total_ms"]) / expected)
        out["by_config"][name] = rows
    return out


def projection(raw: dict, path: Path | None, depth: int) -> dict:
    if path is None or not path.is_file():
        return {"skipped": f"no exit histogram at {rel(path) if path else '(none given)'}: pass --exit-histogram "
                           "PATH (the calibrated tiny teacher's, e.g. from `mmedge bench --device host`), then "
                           "`python benchmarks/hf_scale.py --project-only --exit-histogram PATH`"}
    hist = read_histogram(path)
    return {"label": "PROJECTION, not a measurement", "histogram": hist, **project(raw, hist, depth)}


# ---------------------------------------------------------------------------------------------- 7. modelled
def graph_signature(path: Path) -> str:
    """Node types and initializer shapes: stages with equal signatures have equal costs."""
    import onnx

    g = onnx.load(str(path), load_external_data=False).graph
    text = "|".join(n.op_type for n in g.node) + "#" + "|".join(str(list(t.dims)) for t in g.initializer) + "#" + \
        "|".join(str([d.dim_value for d in i.type.tensor_type.shape.dim]) for i in g.input)
    return hashlib.sha256(text.encode()).hexdigest()


def modelled(bundle: Path, measured: dict, seq: int, dim: int) -> dict:
    """Modelled phone latencies (mmedge.bench.costmodel) of the fp32 ONNX stages, and the host check."""
    from mmedge.bench.costmodel import PROFILES, anchor_statement, calibrate_host, graph_costs, predict_ms

    manifest = json.loads((bundle / "manifest.json").read_text())
    art = next(a for a in manifest["artifacts"] if a["runtime"] == "onnxruntime" and a["precision"] == "fp32")
    costs, cache = {}, {}
    for name, entry in art["stages"].items():
        sig = graph_signature(bundle / entry["file"])
        if sig not in cache:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                cache[sig] = graph_costs(bundle / entry["file"])
        costs[name] = cache[sig]
    groups = {str(k["keep_ratio"]): k["stages"] for k in manifest["keep_ratios"]}
    devices = {}
    for device in DEVICES:
        prof = PROFILES[device]
        devices[device] = {"description": prof.description, "anchor_check": anchor_statement(device), "by_precision": {}}
        for precision in ("fp32", "int8"):
            stages = {n: predict_ms(c, prof, int8=precision == "int8") for n, c in costs.items()}
            devices[device]["by_precision"][precision] = {
                r: {"stages_ms": [stages[s] for s in names], "to_exit_ms": np.cumsum([stages[s] for s in names]).tolist()}
                for r, names in groups.items()}
    host = calibrate_host(1, seq=seq, dim=dim)
    rows = []
    for r, names in groups.items():
        got = measured.get("onnxruntime fp32", {}).get(r)
        if got is None:
            continue
        for i, s in enumerate(names):
            pred = predict_ms(costs[s], host)
            meas = got["stages_ms"][i]["median"]
            rows.append({"stage": s, "modelled_ms": pred, "measured_ms": meas, "error": (pred - meas) / meas})
    errors = np.abs([x["error"] for x in rows]) if rows else np.array([np.nan])
    return {"label": "MODELLED, not measured", "distinct_graphs_costed": len(cache), "devices": devices,
            "host_check": {"stages": rows, "median_abs_error": float(np.median(errors)),
                           "max_abs_error": float(np.max(errors)),
                           "profile": {"overhead_us": host.overhead_us, "bandwidth_gbs": host.bandwidth_gbs,
                                       "measured_gflops": {str(k): v for k, v in host.measured_gflops.items()}}}}


# ---------------------------------------------------------------------------------------------- report
def limit_text(limit: float | None) -> str:
    return "reported" if limit is None else f"limit {limit:g}"


def iv(s: dict, digits: int = 1) -> str:
    """median [p10-p90]"""
    return f"{s['median']:.{digits}f} [{s['p10']:.{digits}f}-{s['p90']:.{digits}f}]"


def markdown(r: dict) -> str:
    src, ad, st = r["source"], r["adapted"], r["settings"]
    c = src["config"]
    lat, cfgs = r["latency"], [n for n in CONFIGS if n in r["latency"]]
    lines = [f"# ViLT-B/32 at real size: adapt, export, Engine ({'tiny smoke test, ' if st['arch'] != 'b32' else ''}"
             "random weights)", "",
             f"**{r['label']}.**", "",
             f"Command: `{r['command']}`. {src['class']}, {c['num_hidden_layers']} layers x {c['hidden_size']}, "
             f"{c['num_attention_heads']} heads, MLP {c['intermediate_size']}, {c['image_size']} px images in "
             f"{c['patch_size']} px patches ({ad['patches']} patches), {ad['text_tokens']} text tokens, "
             f"{c['vocab_size']:,} word pieces, {src['num_answers']:,} answers; weights {src['weights']}. "
             f"{src['parameters']:,} parameters; adapted: exits after layers {', '.join(map(str, ad['exit_layers']))}, "
             f"the prefilter after layer {ad['prefilter_after_layer']}, keep ratios "
             f"{' / '.join(map(str, ad['keep_ratios']))} (sequence {' / '.join(ad['tokens'][str(x)].__str__() for x in RATIOS)} "
             f"tokens), {ad['parameters']['added']:,} parameters added ({ad['parameters']['total']:,} in all): each "
             "exit head is a copy of the model's head (LayerNorm, pooler, the 768 -> 1536 -> 3,129 classifier) with "
             "its linear maps stored as rank-128 pairs (`mmedge adapt`'s default `--exit-rank 128`). **No "
             "distillation** (0 steps): the exits and the prefilter are as initialised (each exit head moved by "
             "noise of std 1e-3, so that, as trained heads, each is stored on its own), which changes no latency. "
             "More adapted variants, ONNX only at keep 1.0, split the cost of full depth: every layer with full "
             "copies of the head (`--exit-rank full`); the last exit alone (the model's own head: mmedge's stage "
             "form with nothing added that runs at keep 1.0); and that at ONNX opset 18 instead of the default 20 "
             "(recipe `\"opset\": 18`). Everything else is exported at opset 20. The variant \"in-graph\" is the "
             "model with an exit after every layer exported as the in-graph form (one ONNX graph per keep ratio, "
             "the exits as `If` branches, fp32 and int8 quantized as the stages are; recipe `in_graph`), run "
             "through the Engine's in-graph mode (`Engine.run_in_graph`, one call per query).", "",
             f"Measured on {r['machine']['cpu']} ({r['machine']['logical_cores']} logical cores, shared with other "
             f"work while this ran: compare configurations within this run only), batch 1, one thread "
             f"(onnxruntime intra_op_num_threads=1; ExecuTorch's thread pool sized 1), onnxruntime "
             f"{r['machine']['libraries'].get('onnxruntime', '?')}, executorch "
             f"{r['machine']['libraries'].get('executorch', '?')}. {st['rounds']} rounds after {st['warmup']} warm-up "
             f"queries; in each round every keep ratio and every configuration runs one full-depth query, in an order "
             f"rotated every round (each configuration in its own process). Times are of prepared inputs "
             f"(`Engine.all_exits`: every stage and every exit; in-graph: `Engine.run_in_graph` without a threshold, "
             f"every exit evaluated in the graph and the last taken; preprocessing excluded). Intervals: median "
             f"[p10-p90] over rounds. MB = 10^6 bytes.", ""]
    # full depth
    lines += ["## Full depth", "", "Milliseconds per query, every stage and exit, median [p10-p90]:", "",
              "| configuration | " + " | ".join(f"keep {x}" for x in RATIOS) + " |", "|---|" + "---|" * len(RATIOS)]
    for n in cfgs:
        lines.append(f"| {n} | " + " | ".join(iv(lat[n][str(x)]["full_depth_ms"]) if str(x) in lat[n] else "-"
                                              for x in RATIOS) + " |")
    lines += ["", "The unmodified rows are transformers' ViltForQuestionAnswering as one ONNX graph (no exits, no "
              "prefilter), at keep 1.0 only.", ""]
    vs = r["versus_unmodified"]
    if vs:
        lines += ["## Adapted at full depth against the unmodified model", "",
                  "Per round, an adapted model's full depth at keep 1.0 through the Engine (every stage, every exit; "
                  "in-graph: one call of the graph, every exit evaluated) "
                  "over the unmodified graph of the same precision on the same query back to back. Goal: at most "
                  f"{GOAL:.2f}x.", "",
                  "| adapted (onnxruntime) | exits | paired ratio, median [p10-p90] | IQR | ratio of medians [bootstrap 90%] | within the goal |",
                  "|---|---|---|---|---|---|"]
        for v in vs:
            pr, rm = v["paired_ratio"], v["ratio_of_medians"]
            lines.append(f"| {v['precision']} | {v['variant']} | {iv(pr, 3)} | {pr['p25']:.3f}-{pr['p75']:.3f} | "
                         f"{rm['ratio']:.3f} [{rm['ci90'][0]:.3f}-{rm['ci90'][1]:.3f}] | "
                         f"{'yes' if v['within_goal'] else 'no'} |")
        lines.append("")
        parts = []
        for p in ("fp32", "int8"):
            by = {v["variant"]: v["paired_ratio"]["median"] for v in vs if v["precision"] == p}
            heads = len(ad["exit_layers"]) - 1
            if {"every layer", "every layer, in-graph", "last exit only"} <= set(by):
                last, fused, staged = by["last exit only"], by["every layer, in-graph"], by["every layer"]
                parts.append(f"{p}: one graph with the last exit alone {last:.3f}x; with every exit in one graph "
                             f"(in-graph) {fused:.3f}x, so each exit head before the last costs "
                             f"{100 * (fused - last) / heads:+.2f}% of the unmodified model's time at rank 128; the "
                             f"same exits as {heads + 1} stage calls {staged:.3f}x, so splitting the graph costs "
                             f"{100 * (staged - fused):+.1f}%")
                if "every layer, full-copy heads" in by:
                    parts.append(f"{p}: full copies of the head instead of rank-128 pairs "
                                 f"{100 * (by['every layer, full-copy heads'] - staged) / heads:+.2f}% per exit "
                                 "(both as stage calls)")
            elif {"every layer", "every layer, full-copy heads", "last exit only"} <= set(by):
                last = by["last exit only"]
                parts.append(f"{p}: the stage form alone (last exit only) {last:.3f}x; each exit head before the "
                             f"last, with its stage call, {100 * (by['every layer'] - last) / heads:+.2f}% of the "
                             f"unmodified model's time at rank 128, "
                             f"{100 * (by['every layer, full-copy heads'] - last) / heads:+.2f}% as a full copy")
            if {"last exit only", "last exit only, opset 18"} <= set(by):
                parts.append(f"{p}: opset 18 instead of 20 {by['last exit only, opset 18'] - by['last exit only']:+.3f} "
                             "on the last-exit graph")
        if parts:
            added = {k: r["variants"][k]["adapted"]["parameters"]["added"]
                     for k in ("every layer", "every layer, full-copy heads") if k in r.get("variants", {})}
            sizes = (f" ({added['every layer, full-copy heads']:,} parameters added with full copies, "
                     f"{added['every layer']:,} at rank 128)" if len(added) == 2 else "")
            lines += ["From the medians above: " + "; ".join(parts) + ". Each exit reads its head's weights once per "
                      f"query: a full copy's are the model's whole head{sizes}; at opset 18 onnxruntime "
                      "leaves mmedge's GELU unfused (Div, Erf, Add, Mul) where it fuses the unmodified graph's into "
                      "one Gelu node, which opset 20's Gelu operator avoids.", ""]
    # per stage
    lines += ["## Each stage", "", "Milliseconds per stage call, median [p10-p90]; stage 0 holds the embeddings, "
              "layer 1, the prefilter (at keep < 1) and exit 1; stage i layer i + 1 and its exit.", ""]
    for n in [x for x in MAIN if x in lat]:
        lines += [f"### {n}", "", "| stage | " + " | ".join(f"keep {x}" for x in RATIOS) + " |",
                  "|---|" + "---|" * len(RATIOS)]
        depth = len(lat[n]["1.0"]["stages_ms"])
        for s in range(depth):
            lines.append(f"| {s} | " + " | ".join(iv(lat[n][str(x)]["stages_ms"][s], 2) for x in RATIOS) + " |")
        lines.append("")
    # load, memory, size
    lines += ["## Load, memory, size", "",
              "Load: the bundle's SHA-256 check (every file of every artifact, as `Engine.load` verifies by default), "
              "opening the stages, the Engine's self-check (one query through every stage of every keep ratio; "
              "ExecuTorch loads its methods then). One load per configuration. RSS of the configuration's own "
              "process (Python, numpy and the runtime included). The Engine opens every keep ratio of a bundle, and "
              "each keep ratio's stages hold their own copy of the weights in memory (three for the rows without "
              "a variant, one for the variants at keep 1.0 alone); on disk the copies are stored once. The in-graph "
              "rows open the staged files as well as the in-graph graphs (the Engine's in-graph mode falls back to "
              "the stages for policies the graph does not express).", "",
              "| configuration | hash check ms | open ms | self-check ms | load ms | RSS after imports MB | RSS after load MB | peak RSS MB | files MB |",
              "|---|---|---|---|---|---|---|---|---|"]
    for n in cfgs:
        ld, mem = r["load"][n], r["memory"][n]
        size = r["sizes"].get(n)
        hash_ms = f"{ld['hash_check_ms']:.0f}" if "hash_check_ms" in ld else "-"
        lines.append(f"| {n} | {hash_ms} | {ld['open_ms']:.0f} | {ld['self_check_ms']:.0f} | {ld['total_ms']:.0f} | "
                     f"{mem['rss_after_imports_mb']:.0f} | {mem['rss_after_load_mb']:.0f} | {mem['peak_rss_mb']:.0f} | "
                     f"{'-' if size is None else f'{size / MB:.1f}'} |")
    lines += ["", f"Files: the artifact's own files (the stage graphs and their shared weights). The bundle with an exit "
              f"after every layer in all (both targets, both precisions, the PyTorch reference): "
              f"{r['sizes']['whole bundle'] / MB:.1f} MB; its PyTorch reference (torch/): "
              f"{r['sizes']['torch fp32'] / MB:.1f} MB. An app ships one artifact.", ""]
    if r["measure_failures"]:
        lines += ["Configurations that did not load: " + "; ".join(f"{k}: `{v}`" for k, v in
                                                                   r["measure_failures"].items()), ""]
    # parity
    lines += ["## Parity at export", "",
              "The exporter's own check against PyTorch on the scenes' validation images at this size (worst stage): "
              "fp32 limits as for every bundle; the int8 decision limits waived (random weights: near-tied answers).",
              "", "| artifact | keep | max abs logits error | answer agreement (worst exit) | kept tokens agreement | passed |",
              "|---|---|---|---|---|---|"]
    for variant, arts in r["parity"].items():
        for a, by in arts.items():
            name = a if variant == "every layer" else f"{a}, {variant}"
            for k, v in by.items():
                lines.append(f"| {name} | {k} | {v['max_abs_logits_error']:.2g} | {v['min_answer_agreement']:.2f} | "
                             f"{v['min_kept_tokens_agreement']:.2f} | {'yes' if v['passed'] else 'no'} |")
    for variant, by in r.get("in_graph_checks", {}).items():
        lines += ["", f"The in-graph graphs ({variant}) against the staged chain of the same precision, at the "
                  "thresholds 0, 0.5, 0.9, 0.99 and 1.01 on the parity queries (the exporter's own check, under the "
                  "recipe's limits: fp32 exact decisions and logits within 1e-4; int8 the decision limits, waived "
                  "here as for the int8 stages, and the logits error reported): " +
                  "; ".join(f"keep {ratio} {p}: exits {c['exit_agreement']:.2f} and answers "
                            f"{c['answer_agreement']:.2f} agree, max abs logits error {c['logits_max_abs_err']:.2g} "
                            f"({limit_text(c['logits_limit'])}), {'passed' if c['passed'] else 'FAILED'}"
                            for ratio, ps in by.items() for p, c in ps.items()) + "."]
    um = r["unmodified"]
    lines += ["", f"Unmodified graph: max abs logits error {um['parity']['max_abs_logits_error_vs_transformers']:.2g} "
              f"against transformers' own forward on the {um['parity']['queries']} measured queries.", ""]
    # projection
    pj = r["projection"]
    lines += ["## Projection from an exit histogram", ""]
    if "skipped" in pj:
        lines += [f"Not made: {pj['skipped']}.", ""]
    else:
        h = pj["histogram"]
        lines += [f"**{pj['label']}.** The exits taken as in `{h['file']}` ({h['source']}: shares "
                  f"{', '.join(f'{x:.3f}' for x in h['shares'])} at exits after layers "
                  f"{', '.join(str(x + 1) for x in h['exit_layers'])} of {h['num_layers']}"
                  f"{', keep ratio ' + str(h['keep_ratio']) if h.get('keep_ratio') is not None else ''}), mapped by "
                  f"relative depth to the exits after layers {', '.join(map(str, pj['mapped_exits']))} here, priced with "
                  "this run's stage times at each keep ratio (the histogram's own keep ratio is the column that "
                  "matches it; the others price the same exits with fewer or more tokens); speed-up against the "
                  "adapted model's full depth at keep 1.0, per round, and for onnxruntime against the unmodified "
                  "graph of the same precision in the same round (in parentheses). It assumes that the "
                  "real-size model, distilled, exits as often as the model the histogram comes from: not "
                  "measured.", "",
                  "| configuration | " + " | ".join(f"keep {x}: ms / speed-up" for x in RATIOS) + " |",
                  "|---|" + "---|" * len(RATIOS)]
        def cell(row: dict) -> str:
            text = f"{iv(row['expected_ms'])} / {iv(row['speedup'], 2)}x"
            if "speedup_vs_unmodified" in row:
                text += f" (vs unmodified {row['speedup_vs_unmodified']['median']:.2f}x)"
            return text

        for n, rows in pj["by_config"].items():
            lines.append(f"| {n} | " + " | ".join(cell(rows[str(x)]) for x in RATIOS) + " |")
        lines.append("")
    # modelled
    md = r["modelled"]
    lines += ["## Modelled phones", "",
              f"**{md['label']}**: mmedge's per-operator cost model (mmedge/bench/costmodel.py) on the fp32 ONNX "
              "stages (int8: their matmul-like nodes at the profile's int8 rate), one thread. Full depth, ms:", "",
              "| device | " + " | ".join(f"{p} keep {x}" for p in ("fp32", "int8") for x in RATIOS) + " |",
              "|---|" + "---|" * 2 * len(RATIOS)]
    for d, v in md["devices"].items():
        lines.append(f"| {d} | " + " | ".join(f"{v['by_precision'][p][str(x)]['to_exit_ms'][-1]:.1f}"
                                              for p in ("fp32", "int8") for x in RATIOS) + " |")
    lines += ["", "How far each profile is known to be from real phones (its held-out error on published latencies):", ""]
    lines += [f"- {d} ({v['description']}): {v['anchor_check']}." for d, v in md["devices"].items()]
    hc = md["host_check"]
    lines += ["", f"Host check: the cost model's host profile (calibrated by micro-benchmarks here) against the "
              f"onnxruntime fp32 stage medians measured above: median absolute error {hc['median_abs_error']:.0%} "
              f"(max {hc['max_abs_error']:.0%}) over {len(hc['stages'])} stages.", ""]
    # optimum
    op = r["optimum"]
    lines += ["## optimum", ""]
    if op.get("probed"):
        lines += [f"optimum-onnx {op['versions'].get('optimum-onnx', '?')} (optimum {op['versions'].get('optimum', '?')}, "
                  f"transformers {op['versions'].get('transformers', '?')}, its own venv) "
                  f"{'exports' if op['supports_vilt'] else 'does not export'} ViLT:", ""]
        lines += [f"- `{k}`: `{v}`" for k, v in op["evidence"].items()]
    else:
        lines.append(f"Not probed: {op['reason']}.")
    lines += ["", "So the unmodified model was exported with torch.onnx.export instead:", ""]
    lines += [f"- `{k}`: `{v}`" for k, v in um["evidence"].items()]
    within = [f"{v['precision']} {v['variant']}" for v in vs if v["within_goal"]]
    beyond = [f"{v['precision']} {v['variant']}" for v in vs if not v["within_goal"]]
    lines += ["", "## The goal, and what is not done here", ""]
    if vs:
        lines.append(f"- At most {GOAL:.2f}x the unmodified model at full depth (median paired ratio): met by "
                     f"{'; '.join(within) or 'none'}. Not by {'; '.join(beyond) or 'none'}.")
    lines += [
              "- Real weights and accuracy: nothing pretrained can be downloaded here; the answers above mean nothing.",
              "- Distillation at this size (minutes per step on two cores): the exits and prefilter are untrained; "
              "their cost is the same trained or not.",
              "- Phones: the phone figures are modelled, with the held-out errors stated; none was measured.", ""]
    return "\n".join(lines)


def plot(r: dict, path: Path) -> None:
    """Three panels: full depth per keep ratio (the four main configurations, the in-graph form and the unmodified
    graph), the paired ratio of every onnxruntime variant to the unmodified graph at keep 1.0, each stage at
    keep 1.0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lat = r["latency"]
    fused = [n for n in CONFIGS if CONFIGS[n].get("mode") == "in-graph" and n in lat]
    main = [n for n in MAIN if n in lat] + fused + [n for n in CONFIGS if CONFIGS[n]["kind"] == "plain" and n in lat]
    colours = dict(zip(main, ("C0", "C1", "C2", "C3", "C4", "C6", "C7", "C5")))
    fig, (left, mid, right) = plt.subplots(1, 3, figsize=(17, 5.2), gridspec_kw={"width_ratios": [1.1, 1.2, 1.3]})
    width = 0.8 / len(main)
    for i, n in enumerate(main):
        xs, med, lo, hi = [], [], [], []
        for j, x in enumerate(RATIOS):
            if str(x) in lat[n]:
                st = lat[n][str(x)]["full_depth_ms"]
                xs.append(j + (i - (len(main) - 1) / 2) * width)
                med.append(st["median"])
                lo.append(st["median"] - st["p10"])
                hi.append(st["p90"] - st["median"])
        left.errorbar(xs, med, yerr=[lo, hi], fmt="o" if CONFIGS[n]["kind"] == "engine" else "s", ls="none",
                      capsize=3, color=colours[n], label=n)
    left.set_xticks(range(len(RATIOS)), [f"keep {x}" for x in RATIOS])
    left.set_ylabel("ms per query, full depth (median, p10-p90)")
    left.set_ylim(bottom=0)
    left.set_title("Full depth, batch 1, one thread (random weights)", fontsize=10)
    left.legend(fontsize=7)
    vs = r["versus_unmodified"]
    variants = list(dict.fromkeys(v["variant"] for v in vs))
    for v in vs:
        y = variants.index(v["variant"]) + (-0.15 if v["precision"] == "fp32" else 0.15)
        pr = v["paired_ratio"]
        mid.errorbar([pr["median"]], [y], xerr=[[pr["median"] - pr["p10"]], [pr["p90"] - pr["median"]]], fmt="o",
                     ls="none", capsize=3, color="C0" if v["precision"] == "fp32" else "C1",
                     label=f"onnxruntime {v['precision']}" if variants.index(v["variant"]) == 0 else None)
    mid.axvline(1.0, color="grey", lw=0.8)
    mid.axvline(GOAL, color="grey", lw=0.8, ls=":", label=f"goal {GOAL:.2f}x")
    mid.set_yticks(range(len(variants)), variants, fontsize=8)
    mid.invert_yaxis()
    mid.set_xlabel("adapted / unmodified at full depth, keep 1.0 (paired per round: median, p10-p90)")
    mid.set_title("Against the unmodified model", fontsize=10)
    mid.legend(fontsize=7, loc="lower right")
    engines = [n for n in MAIN if n in lat]
    width = 0.8 / max(1, len(engines))
    for i, n in enumerate(engines):
        st = lat[n]["1.0"]["stages_ms"]
        xs = np.arange(len(st)) + (i - (len(engines) - 1) / 2) * width
        med = np.array([x["median"] for x in st])
        right.errorbar(xs, med, yerr=[med - [x["p10"] for x in st], np.array([x["p90"] for x in st]) - med], fmt="o",
                       ls="none", capsize=2, ms=3, color=colours[n], label=n)
    right.set_xticks(range(len(lat[engines[0]]["1.0"]["stages_ms"])) if engines else [])
    right.set_xlabel("stage (stage 0: embeddings, layer 1, exit 1)")
    right.set_ylabel("ms per stage, keep 1.0 (median, p10-p90)")
    right.set_ylim(bottom=0)
    right.set_title("Each stage through the Engine, keep 1.0", fontsize=10)
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)


def write(r: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "hf_scale.md").write_text(markdown(r))
    plot(r, out / "hf_scale.png")
    return [out / "hf_scale.md", out / "hf_scale.png"]


def report_only(out: Path) -> list[Path]:
    """Rewrite OUT's Markdown and PNG from OUT/hf_scale.json (nothing is built or measured)."""
    return write(json.loads((out / "hf_scale.json").read_text()), out)


# ---------------------------------------------------------------------------------------------- main
def run(args, command: str) -> dict:
    """Every step; each one's result is kept in WORK/facts.json and skipped when WORK has it (--work)."""
    from mmedge.bench.machine import describe

    started = time.perf_counter()
    keep = args.work is not None
    work = Path(args.work) if keep else Path(tempfile.mkdtemp(prefix="mmedge-hf-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    facts_path = work / "facts.json"
    facts = json.loads(facts_path.read_text()) if facts_path.is_file() else {}
    facts.setdefault("seconds", {})

    def step(key: str, what: str, fn) -> None:
        if key in facts:
            log(f"{what}: kept from {rel(work)}")
            return
        log(what)
        t0 = time.perf_counter()
        facts[key] = fn()
        facts["seconds"][key] = round(time.perf_counter() - t0, 1)
        facts_path.write_text(json.dumps(facts, indent=1))

    try:
        source, plain = work / "source", work / "unmodified"
        step("source", f"source: a random ViLT ({args.arch}) and its ViltProcessor", lambda: build_source(source, args.arch))
        for name, variant in VARIANTS.items():
            folder, bundle = work / adapted_folder(variant), work / variant["bundle"]
            step(f"adapted {folder.name}", f"adapt ({folder.name}): the prefilter after layer 1, 0 distillation steps",
                 lambda: adapt(source, folder, exit_layers(variant, facts["source"]["config"]["num_hidden_layers"]),
                               variant["exit_rank"]))
            step(f"export {name}", f"export ({name}): {', '.join(variant['targets'])}, fp32 and int8, opset "
                 f"{variant['opset']}", lambda: export(folder, bundle, variant))
        step("unmodified", "unmodified: torch.onnx.export of the plain transformers model",
             lambda: {k: v for k, v in export_unmodified(source, plain).items() if k != "files"})
        feeds_path = work / "feeds.npz"
        main_folder = work / adapted_folder(VARIANTS["every layer"])
        feeds = make_feeds(main_folder, args.queries, feeds_path)
        unmodified = {**facts["unmodified"], "parity": unmodified_parity(source, plain / "model_fp32.onnx", feeds)}
        log("optimum: probing its ONNX exporter for ViLT")
        optimum = optimum_probe(source, work)
        log(f"measure: {len(CONFIGS)} configurations, {args.rounds} rounds")
        measured = measure(work, feeds_path, args.rounds, args.warmup)
        latency = summarise(measured["raw"])
        log("modelled: the cost model on the fp32 ONNX stages, and its host check")
        t0 = time.perf_counter()
        main_bundle = work / VARIANTS["every layer"]["bundle"]
        model = modelled(main_bundle, latency, facts[f"adapted {main_folder.name}"]["tokens"]["1.0"],
                         facts["source"]["config"]["hidden_size"])
        modelled_s = round(time.perf_counter() - t0, 1)
        manifests = {name: json.loads((work / v["bundle"] / "manifest.json").read_text())
                     for name, v in VARIANTS.items()}
        parity = {name: parity_summary(m) for name, m in manifests.items()}
        in_graph_checks = {name: {ratio: {p: {k: e[f"{pre}check"][k] for k in ("exit_agreement", "answer_agreement",
                                                                            "logits_max_abs_err", "logits_limit",
                                                                            "passed")}
                                          for p, pre in (("fp32", ""), ("int8", "int8_")) if f"{pre}check" in e}
                                  for ratio, e in m["in_graph"]["by_keep_ratio"].items()}
                           for name, m in manifests.items() if "in_graph" in m}
        main_sizes = bundle_sizes(main_bundle)
        sizes = {"whole bundle": main_sizes["whole bundle"], "torch fp32": main_sizes["torch fp32"]}
        for name, cfg in CONFIGS.items():
            if cfg["kind"] == "engine":
                sizes[name] = bundle_sizes(bundle_of(name, work))[f"{cfg['backend']} {cfg['precision']}"]
            else:
                sizes[name] = facts["unmodified"]["sizes"][name]
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    seconds = {**facts["seconds"], "measure": measured["seconds"], "modelled": modelled_s,
               "this_run": round(time.perf_counter() - started, 1)}
    return {
        "label": LABEL, "command": command,
        "settings": {"arch": args.arch, "rounds": args.rounds, "warmup": args.warmup, "queries": args.queries,
                     "threads": 1, "batch": 1, "keep_ratios": list(RATIOS), "recipe": RECIPE,
                     "variants": {k: {x: v[x] for x in ("exit_layers", "exit_rank", "targets", "keep_ratios", "opset")}
                                  for k, v in VARIANTS.items()}},
        "source": facts["source"], "adapted": facts[f"adapted {main_folder.name}"],
        "variants": {name: {"adapted": facts[f"adapted {adapted_folder(v)}"], "export": facts[f"export {name}"]}
                     for name, v in VARIANTS.items()},
        "machine": describe(),
        "latency": latency, "raw": measured["raw"], "load": measured["load"], "memory": measured["memory"],
        "measure_failures": measured["failures"], "sizes": sizes,
        "versus_unmodified": versus_unmodified(measured["raw"]),
        "parity": parity, "in_graph_checks": in_graph_checks, "unmodified": unmodified, "optimum": optimum,
        "projection": projection(measured["raw"], Path(args.exit_histogram) if args.exit_histogram else None,
                                 len(facts[f"adapted {main_folder.name}"]["exit_layers"])),
        "modelled": model, "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=OUT)
    p.add_argument("--work", help="keep the source, adapted folder and bundles here (reused when present)")
    p.add_argument("--arch", choices=list(ARCHS), default="b32", help="b32: the study; tiny: a smoke test")
    p.add_argument("--rounds", type=int, default=150)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--queries", type=int, default=4, help="distinct queries, cycled over the rounds")
    p.add_argument("--exit-histogram", default=DEFAULT_HISTOGRAM,
                   help="an exit histogram to project the speed-up from (skipped when the file is absent)")
    p.add_argument("--report-only", action="store_true", help="rewrite OUT's Markdown and PNG from its JSON")
    p.add_argument("--project-only", action="store_true",
                   help="add the projection from --exit-histogram to OUT's JSON (its committed timings), then rewrite")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--feeds", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker, Path(args.work), Path(args.feeds))
        return 0
    out = Path(args.out)
    if args.report_only:
        print("wrote " + ", ".join(map(rel, report_only(out))))
        return 0
    if args.project_only:
        r = json.loads((out / "hf_scale.json").read_text())
        r["projection"] = projection(r["raw"], Path(args.exit_histogram), len(r["adapted"]["exit_layers"]))
        (out / "hf_scale.json").write_text(json.dumps(r, indent=1) + "\n")
        print("wrote " + ", ".join(map(rel, [out / "hf_scale.json", *write(r, out)])))
        return 0
    changed = [f"--{k.replace('_', '-')} {rel(v) if k in ('out', 'exit_histogram') else v}"
               for k, v in vars(args).items() if v != p.get_default(k) and k not in ("work",)]
    command = " ".join(["python benchmarks/hf_scale.py", *changed])
    r = run(args, command)
    out.mkdir(parents=True, exist_ok=True)
    (out / "hf_scale.json").write_text(json.dumps(r, indent=1) + "\n")
    print("wrote " + ", ".join(map(rel, [out / "hf_scale.json", *write(r, out)])))
    return 0


if __name__ == "__main__":
    sys.exit(main())

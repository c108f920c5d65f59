"""`mmedge export` for a captioning model: the graphs of ``mmedge.caption.graphs`` to ONNX (fp32 and
int8, one shared weights file per precision), ExecuTorch (one .pte, a method per graph, XNNPACK) and
Core ML (one multifunction .mlpackage, a function per graph), each checked before the bundle is
published: ONNX and ExecuTorch by decoding the parity images word by word against PyTorch (fp32:
identical captions and the largest logit difference; int8: caption agreement and CIDEr), Core ML
structurally (it predicts only on macOS).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mmedge.caption.checkpoint import load_caption_model
from mmedge.caption.data import decode_caption, scene_captions
from mmedge.caption.decode import decoder_cost
from mmedge.caption.graphs import GraphSpec, example_inputs, graph_module, graph_specs, ratio_tag
from mmedge.caption.manifest import CAPTION_KIND, write_caption_manifest
from mmedge.caption.metrics import caption_scores
from mmedge.caption.model import CaptionModel
from mmedge.caption.runtime import CaptionDecoder, Layout
from mmedge.data.preprocess import preprocess_batch
from mmedge.errors import ExportError
from mmedge.export.tooling import quiet, require
from mmedge.fileio import make_parent, sha256_file
from mmedge.models.checkpoint import TOKENIZER_FILE, WEIGHTS_FILE
from mmedge.runtime.controller import Policy

TARGETS = ("onnx", "executorch", "coreml")
OPSET = 18
LOGIT_TOL = {"fp32": 1e-3}


class TorchGraphs:
    """The reference: each graph's module run in PyTorch on numpy feeds."""

    backend = "torch"

    def __init__(self, model: CaptionModel, specs: list[GraphSpec]) -> None:
        self.specs = {s.name: s for s in specs}
        self.modules = {s.name: graph_module(model, s).eval() for s in specs}

    @torch.no_grad()
    def run(self, name: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        spec = self.specs[name]
        outs = self.modules[name](*[torch.from_numpy(np.ascontiguousarray(feeds[i])) for i in spec.inputs])
        return {n: o.numpy() for n, o in zip(spec.outputs, outs)}


def _io(spec: GraphSpec, model: CaptionModel) -> dict:
    module, inputs = graph_module(model, spec).eval(), example_inputs(model, spec)
    with torch.no_grad():
        outputs = module(*inputs)
    def desc(names, tensors):
        return [{"name": n, "shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")}
                for n, t in zip(names, tensors)]
    return {"inputs": desc(spec.inputs, inputs), "outputs": desc(spec.outputs, outputs)}


# ---------------------------------------------------------------------------------------------- targets
def _onnx(model: CaptionModel, specs: list[GraphSpec], root: Path, int8: bool, log) -> list[dict]:
    onnx = require("onnx", "pip install onnx onnxscript")
    from mmedge.export.onnx_target import quantize_int8
    from mmedge.export.onnx_weights import share_weights, strip_node_metadata

    fp32 = root / "onnx" / "fp32"
    fp32.mkdir(parents=True, exist_ok=True)
    for spec in specs:
        log(f"  onnx: {spec.name}")
        try:
            with quiet():
                program = torch.onnx.export(graph_module(model, spec).eval(), example_inputs(model, spec),
                                            input_names=list(spec.inputs), output_names=list(spec.outputs),
                                            opset_version=OPSET, dynamo=True, optimize=True, verbose=False)
        except Exception as exc:  # noqa: BLE001 - every exporter failure becomes one typed error
            raise ExportError(f"onnx export of {spec.name} failed: {type(exc).__name__}: {str(exc)[:500]}") from exc
        proto = program.model_proto
        strip_node_metadata(proto.graph)
        onnx.checker.check_model(proto, full_check=True)
        onnx.save_model(proto, str(fp32 / f"{spec.name}.onnx"), save_as_external_data=False)
    folders = {"fp32": fp32}
    if int8:
        folders["int8"] = root / "onnx" / "int8"
        for spec in specs:
            quantize_int8(fp32 / f"{spec.name}.onnx", folders["int8"] / f"{spec.name}.onnx")
    artifacts = []
    for precision, folder in folders.items():
        shared = share_weights(folder)
        artifacts.append({"target": "onnx", "format": "onnx", "precision": precision, "runtime": "onnxruntime",
                          **({"external_data": str(shared.relative_to(root))} if shared else {}),
                          "stages": {s.name: {"file": str((folder / f"{s.name}.onnx").relative_to(root))}
                                     for s in specs}})
    return artifacts


def _executorch(model: CaptionModel, specs: list[GraphSpec], root: Path, log) -> list[dict]:
    from mmedge.runtime.backends.quiet import library_imports

    with library_imports():  # torchao's "Failed to load" kernels, torch's _pytree notice, ExperimentalWarning
        require("executorch", "pip install executorch==1.5.1")
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

    log(f"  executorch: lowering {len(specs)} methods to XNNPACK (fp32)")
    try:
        with quiet():
            programs = {s.name: torch.export.export(graph_module(model, s).eval(), example_inputs(model, s),
                                                    strict=False) for s in specs}
            constants = {"mmedge_task_caption": 1, "mmedge_num_stages": model.num_stages,
                         "mmedge_max_len": model.config.max_len}
            edge = to_edge_transform_and_lower(programs, partitioner=[XnnpackPartitioner()],
                                               constant_methods=constants)
            data = edge.to_executorch().buffer
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"executorch lowering failed: {type(exc).__name__}: {str(exc).splitlines()[0][:500]}") from exc
    path = root / "executorch" / "caption_fp32.pte"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return [{"target": "executorch", "format": "pte", "precision": "fp32", "runtime": "executorch",
             "file": str(path.relative_to(root)), "backend_delegate": "XnnpackBackend",
             "stages": {s.name: {"method": s.name, "outputs": list(s.outputs)} for s in specs}}]


def _coreml(model: CaptionModel, specs: list[GraphSpec], root: Path, io: dict, log) -> list[dict]:
    require("coremltools", "pip install coremltools==9.0")
    from mmedge.export.coreml_target import check_structure, save_functions, structure

    log(f"  coreml: converting {len(specs)} functions (fp32)")
    path = root / "coreml" / "caption_fp32.mlpackage"
    programs = {spec.name: (lambda spec=spec: torch.export.export(graph_module(model, spec).eval(),
                                                                  example_inputs(model, spec), strict=False))
                for spec in specs}
    save_functions(programs, {spec.name: list(spec.outputs) for spec in specs}, path, specs[0].name)
    found = structure(path)
    problems = check_structure(found, io)
    if problems:
        raise ExportError("the Core ML package does not have the graphs' structure:\n  " + "\n  ".join(problems))
    return [{"target": "coreml", "format": "mlpackage", "precision": "fp32", "runtime": "coreml",
             "file": str(path.relative_to(root)), "structure_check": {"passed": True, "functions": len(found)},
             "parity": {"status": "not run", "passed": None,
                        "reason": "Core ML prediction needs macOS; this export was checked structurally "
                                  "(functions, inputs, outputs, shapes, dtypes)"},
             "stages": {s.name: {"function": s.name} for s in specs}}]


# ---------------------------------------------------------------------------------------------- parity
def parity(session, reference, layout: Layout, ratios: list[float], pixels: np.ndarray, references: list[list[str]],
           tokenizer, precision: str, policy: Policy | None = None) -> dict:
    """Greedy captions of every parity image through `session` and through `reference`, word by word."""
    policy = policy or Policy("full")
    out = {}
    for r in ratios:
        tag = ratio_tag(r)
        got_dec, ref_dec = CaptionDecoder(session, layout, tag), CaptionDecoder(reference, layout, tag)
        same, max_diff, texts, ref_texts = 0, 0.0, [], []
        for i in range(len(pixels)):
            got = got_dec.caption(pixels[i: i + 1], policy)
            ref = ref_dec.caption(pixels[i: i + 1], policy)
            same += got.tokens == ref.tokens
            if got.tokens == ref.tokens:
                max_diff = max([max_diff] + [float(np.abs(a - b).max()) for a, b in zip(got.logits, ref.logits)])
            texts.append(decode_caption(tokenizer, got.tokens))
            ref_texts.append(decode_caption(tokenizer, ref.tokens))
        n = len(pixels)
        entry = {"images": n, "identical_captions": same / n, "max_abs_logit_diff": round(max_diff, 7),
                 "cider": round(caption_scores(texts, references, meteor=False).cider, 3),
                 "reference_cider": round(caption_scores(ref_texts, references, meteor=False).cider, 3)}
        failures = []
        if precision == "fp32":
            if same != n:
                failures.append(f"{n - same} of {n} captions differ from PyTorch's")
            if max_diff > LOGIT_TOL["fp32"]:
                failures.append(f"logits differ by {max_diff:.2e} > {LOGIT_TOL['fp32']}")
        entry["failures"] = failures
        out[f"{r:g}"] = entry
    return {"status": "measured", "policy": policy.to_dict(),
            "passed": not any(e["failures"] for e in out.values()), "by_keep_ratio": out}


# ---------------------------------------------------------------------------------------------- bundle
def export_caption_bundle(model_dir: str | Path, out: str | Path, targets=TARGETS, int8: bool = True,
                          parity_images: int = 16, data_seed: int = 0, force: bool = False, sign_key=None,
                          log=print, release_sequence: int | None = None) -> Path:
    """Export, check and atomically publish the captioning bundle at `out`; returns its path. The
    manifest's release is {name: the bundle's name, sequence: `release_sequence`, by default the
    current Unix time in milliseconds}."""
    from mmedge.bundle.publish import check_destination, check_sequence, new_release, sign_and_publish
    from mmedge.errors import ConfigError

    started = time.perf_counter()
    model_dir, out = Path(model_dir), Path(out)
    bad = sorted(set(targets) - set(TARGETS))
    if bad:
        raise ExportError(f"unknown target(s) {bad}; choose from {list(TARGETS)}")
    problems = [f"{name} {value!r} must be a whole number >= {least}"
                for name, value, least in (("parity_images", parity_images, 1), ("data_seed", data_seed, 0))
                if isinstance(value, bool) or not isinstance(value, int) or value < least]
    if problems:
        raise ConfigError(problems, "arguments")
    check_sequence(release_sequence)
    # a model folder may hold its own bundles, but --out may not be it nor hold it
    check_destination(out, force, model_dir, "the model directory", out_inside_source_ok=True)
    if sign_key is not None:
        from mmedge.bundle.signing import load_private_key

        sign_key = load_private_key(sign_key)  # a bad key fails now, not after the export
    model, tokenizer = load_caption_model(model_dir)
    cfg = model.config
    ratios = list(cfg.keep_ratios)
    specs = graph_specs(model, ratios)
    io = {s.name: _io(s, model) for s in specs}
    images, captions = scene_captions(data_seed, "val", range(parity_images), cfg.image_size)
    pixels = preprocess_batch(images, cfg.image_size)
    references = [[c] for c in captions]
    reference = TorchGraphs(model, specs)
    make_parent(out)
    from mmedge.export.exporter import _remove_stale_partials

    _remove_stale_partials(out)  # what a killed export left behind
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-{os.getpid()}-", dir=out.parent))
    try:
        log(f"exporting captioner {model_dir} -> {out}: {len(specs)} graphs, targets {', '.join(targets)}")
        layout = Layout([list(model.stage_layers(s)) for s in range(model.num_stages)], cfg.num_heads, cfg.head_dim,
                        cfg.max_len, cfg.bos_id, cfg.eos_id, cfg.pad_id)
        artifacts, seconds = [], {}
        for target in targets:
            t0 = time.perf_counter()
            if target == "onnx":
                made = _onnx(model, specs, tmp, int8, log)
            elif target == "executorch":
                made = _executorch(model, specs, tmp, log)
            else:
                made = _coreml(model, specs, tmp, io, log)
            for artifact in made:
                if artifact["runtime"] == "coreml":
                    continue
                from mmedge.runtime.backends import open_session

                # parity needs no thread count; ExecuTorch's pool is process-wide, left to the caller
                session = open_session(artifact["runtime"], tmp, artifact,
                                       threads=None if artifact["runtime"] == "executorch" else 1)
                artifact["parity"] = parity(session, reference, layout, ratios, pixels, references, tokenizer,
                                            artifact["precision"])
                log(f"  {artifact['runtime']}/{artifact['precision']}: " + ", ".join(
                    f"keep {r}: identical {p['identical_captions']:.2f}, max logit diff {p['max_abs_logit_diff']:.1e}"
                    for r, p in artifact["parity"]["by_keep_ratio"].items()))
            artifacts += made
            seconds[target] = round(time.perf_counter() - t0, 1)
        from mmedge.export.parity import artifact_failures

        failures = artifact_failures(artifacts)
        if failures:
            raise ExportError("exported graphs disagree with PyTorch:\n  " + "\n  ".join(failures))
        shutil.copy2(model_dir / TOKENIZER_FILE, tmp / TOKENIZER_FILE)
        costs = {f"{r:g}": decoder_cost(model, r) for r in ratios}
        manifest = {
            "kind": CAPTION_KIND,
            "name": out.name,
            "release": new_release(out.name, release_sequence),
            "model": {"config": cfg.to_dict(), "parameters": model.num_parameters()},
            "weights_sha256": sha256_file(model_dir / WEIGHTS_FILE),
            "tokenizer": {"file": TOKENIZER_FILE, "kind": tokenizer.kind, "pad_id": cfg.pad_id, "unk_id": 1,
                          "bos_id": cfg.bos_id, "eos_id": cfg.eos_id, "max_length": tokenizer.max_length},
            "decoder": {"stage_layers": layout.stage_layers, "num_heads": cfg.num_heads, "head_dim": cfg.head_dim,
                        "max_len": cfg.max_len, "dim": cfg.dim},
            "keep_ratios": ratios,
            "graphs": {s.name: {"kind": s.kind, "stage": s.stage, "keep_ratio": s.keep_ratio,
                                "layers": list(s.layers), **io[s.name]} for s in specs},
            "artifacts": artifacts,
            "flops": {r: {"encoder": c.encoder, "stage": c.stage, "head": c.head, "fill": c.fill}
                      for r, c in costs.items()},
            "thresholds": {"policy": "full", "confidence": 1.0, "max_probability": 1.0, "patience": 4,
                           "keep_ratio": max(ratios), "kv": "copy", "calibrated": False},
            "seconds": {**seconds, "total": round(time.perf_counter() - started, 1)},
        }
        write_caption_manifest(tmp, manifest)
        sign_and_publish(tmp, out, force, model_dir, sign_key)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"wrote {out} in {time.perf_counter() - started:.0f} s")
    return out


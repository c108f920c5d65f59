"""Export an adapted generative VLM's graphs (mmedge.adapt.vlm_graphs) with their layout.

    out/onnx/{vision_k1, vision_k0.5, ..., embed, step0.., fill0..}.onnx   ONNX (opset 20, fp32)
    out/onnx-int8/, out/onnx-int4/                                          weight-only quantized copies
                                                                            (quantize_onnx)
    out/executorch/vlm_{fp32,int8,int4}.pte                                 ExecuTorch: one program, a method
                                                                            per graph (XNNPACK; int8 / int4
                                                                            linears via torchao)
    out/coreml/vlm_{fp32,int8,int4}.mlpackage                               Core ML: one multifunction package,
                                                                            a function per graph (iOS 18;
                                                                            int8 / int4: quantized weights)
    out/vlm.json                                                            the VLMLayout

Every ONNX graph is checked against PyTorch on inputs other than those it was traced with (another
token count for the step graphs): the largest absolute difference is returned per graph. ExecuTorch's
methods are checked by running them (tests/test_adapt_vlm.py). Core ML is checked structurally only
(functions, input and output names, static shapes, the token count's range): its prediction needs macOS.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mmedge.adapt.vlm import AdaptedVLM
from mmedge.adapt.vlm_graphs import example_inputs, graph_module, graph_specs
from mmedge.errors import ExportError
from mmedge.export.tooling import quiet
from mmedge.fileio import atomic_write
from mmedge.runtime.vlm import VLMLayout

OPSET = 20
QUANTIZED = ("int8", "int4")  # weight precisions below fp32 (ONNX: weight-only; ExecuTorch: dynamic)


def layout(model: AdaptedVLM, max_slots: int) -> VLMLayout:
    bb, cfg = model.backbone, model.config
    return VLMLayout([list(model.stage_layers(s)) for s in range(model.num_stages)], bb.num_kv_heads, bb.head_dim,
                     max_slots, bb.image_token_id, bb.num_image_tokens, list(cfg.keep_ratios),
                     {spec.name: list(spec.outputs) for spec in graph_specs(model)})


def _dynamic(spec, max_slots: int):
    from torch.export import Dim

    if spec.kind == "vision":
        return {"pixel_values": None, "text_ids": {1: Dim("L", min=1, max=4096)}}
    if spec.kind == "embed":
        return {"ids": {1: Dim("T", min=1, max=4096)}}
    if spec.kind == "step":
        T = Dim("T", min=1, max=max_slots)
        return {"hidden_in": {1: T}, "positions": {1: T}, "slot": None, "past_k": None, "past_v": None}
    return None


def export_onnx(model: AdaptedVLM, out: str | Path, max_slots: int = 64, progress: bool = True) -> dict:
    """Write every graph and vlm.json into `out`; returns {graph: max |onnxruntime - PyTorch|}."""
    import onnxruntime as ort

    out = Path(out)
    (out / "onnx").mkdir(parents=True, exist_ok=True)
    model.eval()
    parity = {}
    for spec in tqdm(graph_specs(model), desc="export onnx", disable=not progress):
        module = graph_module(model, spec).eval()
        path = out / "onnx" / f"{spec.name}.onnx"
        try:
            with quiet(), torch.no_grad():  # the exporter's warnings and optimizer notices stay off the terminal
                program = torch.onnx.export(module, example_inputs(model, spec, max_slots),
                                            input_names=list(spec.inputs), output_names=list(spec.outputs),
                                            dynamic_shapes=_dynamic(spec, max_slots), dynamo=True, optimize=True,
                                            verbose=False, opset_version=OPSET)
        except Exception as exc:  # the exporter's own error types
            raise ExportError(f"{spec.name}: torch.onnx.export failed ({type(exc).__name__}: {str(exc)[:300]})") from exc
        atomic_write(path, lambda p: program.save(str(p)))
        check = example_inputs(model, spec, max_slots, tokens=5)
        generator = torch.Generator().manual_seed(0)
        check = tuple(x + torch.randn(x.shape, generator=generator) if x.is_floating_point() else x for x in check)
        with torch.no_grad():
            want = module(*check)
        want = want if isinstance(want, tuple) else (want,)
        got = ort.InferenceSession(str(path)).run(None, {n: x.numpy() for n, x in zip(spec.inputs, check)})
        parity[spec.name] = max(float(np.abs(g - w.numpy()).max()) for g, w in zip(got, want))
    spec_json = layout(model, max_slots).to_dict()
    atomic_write(out / "vlm.json", lambda p: p.write_text(json.dumps(spec_json, indent=1) + "\n"))
    return parity


def executorch_quantized(model: AdaptedVLM, precision: str, group_size: int = 32) -> AdaptedVLM:
    """A copy of the model whose linear layers run as XNNPACK's dynamically quantized ones (torchao:
    activations int8 per token at run time; weights int8 per output channel, or int4 in groups of
    `group_size` along the input, on the linears whose input width the group divides)."""
    import copy

    from mmedge.runtime.backends.quiet import library_imports

    with library_imports():
        from torchao.quantization import Int8DynamicActivationIntxWeightConfig, quantize_
        from torchao.quantization.granularity import PerAxis, PerGroup

    if precision not in QUANTIZED:
        raise ExportError(f"precision {precision!r}: choose fp32 or one of {list(QUANTIZED)}")
    if group_size <= 0 or group_size % 32:
        raise ExportError(f"group_size {group_size}: XNNPACK takes int4 groups of a multiple of 32")
    int4 = precision == "int4"
    config = Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4 if int4 else torch.int8,
                                                   weight_granularity=PerGroup(group_size) if int4 else PerAxis(0))
    quantized = copy.deepcopy(model).eval()
    with quiet():
        quantize_(quantized, config, filter_fn=lambda m, _: isinstance(m, torch.nn.Linear)
                  and (not int4 or m.in_features % group_size == 0))
    return quantized


def export_executorch(model: AdaptedVLM, out: str | Path, max_slots: int = 64, precision: str = "fp32",
                      group_size: int = 32) -> Path:
    """Every graph as a method of one ExecuTorch program (XNNPACK; the step methods take 1 to max_slots
    tokens), executorch/vlm_{precision}.pte, and vlm.json. int8 / int4: executorch_quantized."""
    from mmedge.runtime.backends.quiet import library_imports

    with library_imports():
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

    out = Path(out)
    model.eval()
    if precision != "fp32":
        model = executorch_quantized(model, precision, group_size)
    specs = graph_specs(model)
    try:
        with quiet(), torch.no_grad():
            programs = {s.name: torch.export.export(graph_module(model, s).eval(), example_inputs(model, s, max_slots),
                                                    dynamic_shapes=_dynamic(s, max_slots), strict=False)
                        for s in specs}
            constants = {"mmedge_task_generate": 1, "mmedge_num_stages": model.num_stages,
                         "mmedge_max_slots": max_slots}
            edge = to_edge_transform_and_lower(programs, partitioner=[XnnpackPartitioner()], constant_methods=constants)
            data = edge.to_executorch().buffer
    except Exception as exc:  # noqa: BLE001 - the exporter's own error types
        raise ExportError(f"executorch lowering failed: {type(exc).__name__}: {str(exc).splitlines()[0][:500]}") from exc
    path = out / "executorch" / f"vlm_{precision}.pte"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda p: p.write_bytes(data))
    spec_json = layout(model, max_slots).to_dict()
    atomic_write(out / "vlm.json", lambda p: p.write_text(json.dumps(spec_json, indent=1) + "\n"))
    return path


def export_coreml(model: AdaptedVLM, out: str | Path, max_slots: int = 64, precision: str = "fp32") -> dict:
    """Every graph as a function of one Core ML package, coreml/vlm_{precision}.mlpackage (mlprogram, iOS 18,
    computed in fp32; weights fp32, or int8 per channel / int4 in blocks of 32 with coremltools' linear
    quantization; the step functions take 1 to max_slots tokens); returns the structural check (raises
    ExportError when it fails)."""
    from mmedge.export.coreml_target import save_functions

    model.eval()
    specs = graph_specs(model)
    path = Path(out) / "coreml" / f"vlm_{precision}.mlpackage"

    def program(spec):
        with torch.no_grad():
            return torch.export.export(graph_module(model, spec).eval(), example_inputs(model, spec, max_slots),
                                       dynamic_shapes=_dynamic(spec, max_slots), strict=False)

    save_functions({spec.name: (lambda spec=spec: program(spec)) for spec in specs},
                   {spec.name: list(spec.outputs) for spec in specs}, path, "embed", weights=precision)
    problems = coreml_problems(model, path, max_slots)
    if problems:
        raise ExportError("the Core ML package does not have the graphs' structure:\n  " + "\n  ".join(problems))
    return {"functions": len(specs), "passed": True,
            "parity": "not run: Core ML prediction needs macOS; checked structurally"}


def coreml_problems(model: AdaptedVLM, path: Path, max_slots: int) -> list[str]:
    """Differences between the package and the graphs: functions, input and output names, the caches'
    static shapes, and the step functions' token count range (1..max_slots)."""
    from mmedge.export.tooling import require

    ct = require("coremltools", "pip install coremltools==9.0")
    described = {fn.name: fn for fn in ct.utils.load_spec(str(path)).description.functions}
    specs = graph_specs(model)
    problems = [] if sorted(described) == sorted(s.name for s in specs) else \
        [f"functions {sorted(described)} != graphs {sorted(s.name for s in specs)}"]
    bb = model.backbone
    for spec in specs:
        fn = described.get(spec.name)
        if fn is None:
            continue
        inputs = {f.name: f.type.multiArrayType for f in fn.input}
        if [f.name for f in fn.input] != list(spec.inputs) or [f.name for f in fn.output] != list(spec.outputs):
            problems.append(f"{spec.name}: inputs {list(inputs)} / outputs {[f.name for f in fn.output]} != "
                            f"{list(spec.inputs)} / {list(spec.outputs)}")
            continue
        if "past_k" in inputs:
            want = [len(spec.layers), 1, bb.num_kv_heads, max_slots, bb.head_dim]
            if list(inputs["past_k"].shape) != want:
                problems.append(f"{spec.name}: past_k shape {list(inputs['past_k'].shape)} != {want}")
        if spec.kind == "step":
            ranges = [(r.lowerBound, r.upperBound) for r in inputs["hidden_in"].shapeRange.sizeRanges]
            if len(ranges) != 3 or ranges[1] != (1, max_slots):
                problems.append(f"{spec.name}: hidden_in token range {ranges} is not 1..{max_slots}")
    return problems


def open_executorch(out: str | Path, threads: int | None = None, precision: str = "fp32"):
    """(session, VLMLayout) over the ExecuTorch program export_executorch wrote at `precision`."""
    from mmedge.runtime.backends.executorch_backend import ExecuTorchSession

    out = Path(out)
    lay = VLMLayout(**json.loads((out / "vlm.json").read_text()))
    session = ExecuTorchSession(out / "executorch" / f"vlm_{precision}.pte", {name: name for name in lay.graphs},
                                threads)
    for name, outputs in lay.graphs.items():
        session.set_output_names(name, outputs)
    return session, lay


def quantize_onnx(out: str | Path, precision: str, block_size: int = 32) -> Path:
    """Weight-only quantized copies of the fp32 ONNX graphs into out/onnx-<precision>/: int8 is mmedge's
    ONNX int8 recipe (mmedge.export.onnx_target.quantize_int8: int8 weights per channel, activations
    quantized at run time); int4 is ONNX Runtime's block-quantized MatMulNBits (4-bit weights in blocks of
    `block_size` along the input dimension, symmetric, activations fp32). Embeddings stay fp32."""
    if precision not in QUANTIZED:
        raise ExportError(f"precision {precision!r}: choose one of {QUANTIZED}")
    out = Path(out)
    src, dst = out / "onnx", out / f"onnx-{precision}"
    dst.mkdir(parents=True, exist_ok=True)
    for path in sorted(src.glob("*.onnx")):
        if precision == "int8":
            from mmedge.export.onnx_target import quantize_int8

            quantize_int8(path, dst / path.name)
            continue
        import onnx
        from onnxruntime.quantization import matmul_nbits_quantizer as nbits

        with quiet():
            quantizer = nbits.MatMulNBitsQuantizer(onnx.load(str(path)), algo_config=nbits.DefaultWeightOnlyQuantConfig(
                block_size=block_size, is_symmetric=True, accuracy_level=4))
            quantizer.process()
        atomic_write(dst / path.name, lambda p: quantizer.model.save_model_to_file(str(p), use_external_data_format=False))
    return dst


def open_onnx(out: str | Path, threads: int | None = None, precision: str = "fp32"):
    """(session, VLMLayout) over a folder written by export_onnx (and quantize_onnx for int8 / int4)."""
    from mmedge.runtime.backends.onnxruntime_backend import OnnxRuntimeSession

    out = Path(out)
    folder = out / ("onnx" if precision == "fp32" else f"onnx-{precision}")
    files = {p.stem: p for p in sorted(folder.glob("*.onnx"))}
    if not files:
        raise ExportError(f"{folder} holds no graphs: export_onnx{'' if precision == 'fp32' else ' and quantize_onnx'} first")
    return OnnxRuntimeSession(files, threads), VLMLayout(**json.loads((out / "vlm.json").read_text()))

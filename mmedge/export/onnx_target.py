"""ONNX: one file per stage (torch.onnx dynamo exporter), checked for ORT Mobile, converted to
ORT format, and int8 by onnxruntime's dynamic quantization (weights int8 per channel). The stage
files of a precision read their weights from one shared external-data file (`onnx_weights`)."""

from __future__ import annotations

import io
import logging
import os
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from mmedge.export.onnx_weights import all_graphs, share_weights, strip_node_metadata
from mmedge.export.recipe import ExportRecipe
from mmedge.export.stages import StageSpec, example_inputs, stage_module
from mmedge.export.tooling import export_failure, quiet, require
from mmedge.models.model import AdaptiveVLModel
from mmedge.runtime.backends.quiet import onnxruntime_logs

INSTALL = "pip install onnx onnxruntime onnxscript"


def export_stage(model: AdaptiveVLModel, spec: StageSpec, path: Path, opset: int) -> None:
    """Trace one stage to a self-contained ONNX file (weights embedded, static shapes, no per-node
    source metadata)."""
    torch = require("torch", "pip install torch==2.13.0")
    require("onnxscript", INSTALL)
    onnx = require("onnx", INSTALL)
    module, inputs = stage_module(model, spec), example_inputs(model, spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with quiet():
            program = torch.onnx.export(module, inputs, input_names=list(spec.inputs),
                                        output_names=list(spec.outputs), opset_version=opset,
                                        dynamo=True, optimize=True, verbose=False)
    except Exception as exc:  # noqa: BLE001 - every exporter failure becomes one typed error
        raise export_failure("onnx", model, spec, exc) from exc
    proto = program.model_proto
    strip_node_metadata(proto.graph)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save_model(proto, str(path), save_as_external_data=False)


def op_counts(path: Path) -> dict[str, int]:
    """Node count per op type of an ONNX file (subgraphs included)."""
    onnx = require("onnx", INSTALL)
    counts: dict[str, int] = {}

    def walk(graph):
        for node in graph.node:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
            for attr in node.attribute:
                if attr.g is not None and attr.g.node:
                    walk(attr.g)

    walk(onnx.load(str(path), load_external_data=False).graph)
    return dict(sorted(counts.items()))


def mobile_usability(path: Path) -> dict:
    """onnxruntime's ORT Mobile usability check; returns its verdicts and log lines."""
    usability = require("onnxruntime.tools.mobile_helpers.usability_checker", INSTALL)
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger = logging.getLogger(f"mmedge.export.usability.{path.stem}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = Collect()
    logger.addHandler(handler)
    try:
        with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()), onnxruntime_logs():
            may_use_eps = usability.analyze_model(path, skip_optimize=False, logger=logger)
    finally:
        logger.removeHandler(handler)
    verdicts = {line.split(" as is: ")[0].replace("Model should perform well with ", ""): line.split(": ")[-1]
                for line in records if " as is: " in line}
    dynamic = [line for line in records if "dynamic" in line.lower() and "input" in line.lower()]
    return {"passed": True, "nnapi_or_coreml_ep_may_help": bool(may_use_eps), "ep_verdicts": verdicts,
            "dynamic_input_notes": dynamic}


def convert_to_ort(onnx_path: Path, out_dir: Path, fold_dequantize: bool = False) -> dict[str, Path]:
    """onnxruntime's ORT-format converter on a folder of stage files or one file, run in this process
    (a child process would outlive a killed export and go on writing). ORT format has no external
    data: each .ort file holds its own weights. With `fold_dequantize`, constant weights behind a
    DequantizeLinear are folded to fp32 first (an ORT-format session cannot fold them at load)."""
    converter = require("onnxruntime.tools.convert_onnx_models_to_ort", INSTALL)
    out_dir.mkdir(parents=True, exist_ok=True)
    if fold_dequantize:
        with tempfile.TemporaryDirectory(dir=out_dir.parent) as tmp:
            _convert(converter, fold_weight_dequantize(onnx_path, Path(tmp)), out_dir)
    else:
        _convert(converter, onnx_path, out_dir)
    for extra in out_dir.glob("*.config"):  # the reduced-build op config: not needed at run time
        extra.unlink()
    return {p.stem: p for p in sorted(out_dir.glob("*.ort"))}


def _convert(converter, onnx_path: Path, out_dir: Path) -> None:
    try:
        with quiet():
            converter.convert_onnx_models_to_ort(onnx_path, output_dir=out_dir,
                                                 optimization_styles=[converter.OptimizationStyle.Fixed])
    except Exception as exc:  # the converter raises plain exceptions of several kinds; report it typed
        from mmedge.errors import ExportError
        raise ExportError(f"ORT format conversion of {onnx_path.name} failed: {type(exc).__name__}: "
                          f"{str(exc)[:2000]}") from exc


def fold_weight_dequantize(src: Path, out: Path) -> Path:
    """Copies of the stage file(s) at `src` (a file or a folder) in `out`, self-contained, with every
    DequantizeLinear of a constant int8 weight replaced by the fp32 weight it computes."""
    onnx = require("onnx", INSTALL)
    numpy_helper = require("onnx.numpy_helper", INSTALL)
    import numpy as np

    for path in sorted(src.glob("*.onnx")) if src.is_dir() else [src]:
        model = onnx.load(str(path), load_external_data=True)
        graph = model.graph
        inits = {t.name: t for t in graph.initializer}
        for node in [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]:
            q, scale = (numpy_helper.to_array(inits[i]).astype(np.float32) for i in node.input[:2])
            zero = numpy_helper.to_array(inits[node.input[2]]).astype(np.float32) if len(node.input) > 2 else 0.0
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            shape = [1] * q.ndim
            if np.ndim(scale):
                shape[axis] = -1
            w = (q - np.reshape(zero, shape)) * np.reshape(scale, shape)
            graph.node.remove(node)
            graph.initializer.append(numpy_helper.from_array(w.astype(np.float32), node.output[0]))
        used = {i for g in all_graphs(graph) for n in g.node for i in n.input} | {o.name for o in graph.output}
        for t in [t for t in graph.initializer if t.name not in used and t.name in inits]:
            graph.initializer.remove(t)
        onnx.save_model(model, str(out / path.name), save_as_external_data=False)
    return out if src.is_dir() else out / src.name


def weight_nodes(path: Path) -> list[str]:
    """Names of the MatMul/Gemm/Conv nodes that apply a constant weight (not attention's Q.K and P.V)."""
    onnx = require("onnx", INSTALL)

    def walk(graph, outer: set[str]) -> list:
        """The graph's weight nodes, and those of its subgraphs (an If's branches: the in-graph form),
        which may read the enclosing graphs' constants."""
        constants = outer | {t.name for t in graph.initializer} | {n.output[0] for n in graph.node
                                                                   if n.op_type == "Constant"}
        found = [n for n in graph.node if n.op_type in ("MatMul", "Gemm", "Conv")
                 and any(i in constants for i in n.input)]
        for node in graph.node:
            found += [n for a in node.attribute if a.type == onnx.AttributeProto.GRAPH for n in walk(a.g, constants)]
        return found

    names = walk(onnx.load(str(path), load_external_data=False).graph, set())
    # the dynamic quantizer first rewrites a Gemm as a MatMul named "<gemm>_MatMul": list that name too,
    # or the exit heads' Gemms are left in fp32
    return [n.name for n in names] + [f"{n.name}_MatMul" for n in names if n.op_type == "Gemm"]


def quantize_int8(src: Path, dst: Path) -> None:
    """onnxruntime dynamic quantization of the weight MatMul/Gemm nodes: int8 weights per channel in 7 bits
    (reduce_range: on x86 CPUs without VNNI, onnxruntime's u8 x s8 kernels saturate 8-bit weights' pair sums,
    which took a tiny adapted model's int8 answers off its fp32 ones on an AVX2 host), activations quantized at
    run time (MatMulInteger). Attention's activation-by-activation products
    stay fp32; so do embeddings, norms and biases. Convolution weights are stored int8 too, but the
    convolution computes in fp32 (`store_conv_weights_int8`)."""
    quant = require("onnxruntime.quantization", INSTALL)
    dst.parent.mkdir(parents=True, exist_ok=True)
    named = _uniquely_named(src, dst.with_name(dst.stem + ".named.onnx"))
    try:
        with quiet():
            quant.quantize_dynamic(named, dst, op_types_to_quantize=["MatMul", "Gemm"], per_channel=True, reduce_range=True,
                                   nodes_to_quantize=weight_nodes(named), weight_type=quant.QuantType.QInt8,
                                   extra_options={"EnableSubgraph": True})  # the in-graph form's If branches
    finally:
        if named != src:
            named.unlink(missing_ok=True)
    store_conv_weights_int8(dst)


def _uniquely_named(src: Path, tmp: Path) -> Path:
    """src, or (a graph with subgraphs: the in-graph form) a copy at tmp whose nodes have names unique
    across all its subgraphs: each If branch is exported with its own node counter, and the quantizer
    names its new tensors after the nodes, which would break single assignment."""
    onnx = require("onnx", INSTALL)
    model = onnx.load(str(src))
    graphs = list(all_graphs(model.graph))
    if len(graphs) == 1:
        return src
    for index, graph in enumerate(graphs):
        for node in graph.node:
            node.name = f"{node.name or node.op_type}{f'__g{index}' if index else ''}"
    onnx.save_model(model, str(tmp))
    return tmp


def store_conv_weights_int8(path: Path) -> None:
    """Rewrite every Conv's constant fp32 weight as int8 per output channel (symmetric, zero point 0)
    behind a DequantizeLinear. ONNX Runtime's CPU ConvInteger (the dynamic quantizer's form) ran the
    patch stem slower than fp32 and added activation rounding (measured in
    benchmarks/results/optimum/); this keeps the int8 bytes on disk and the fp32 convolution."""
    onnx = require("onnx", INSTALL)
    numpy_helper = require("onnx.numpy_helper", INSTALL)
    import numpy as np

    model = onnx.load(str(path))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    dequantize = []
    for node in graph.node:
        name = node.input[1] if node.op_type == "Conv" and len(node.input) > 1 else None
        if name not in inits or inits[name].data_type != onnx.TensorProto.FLOAT:
            continue
        w = numpy_helper.to_array(inits.pop(name))
        graph.initializer.remove(next(t for t in graph.initializer if t.name == name))
        scale = np.abs(w).reshape(w.shape[0], -1).max(axis=1) / 127.0  # (out_channels,)
        scale[scale == 0] = 1.0
        q = np.clip(np.round(w / scale.reshape(-1, *[1] * (w.ndim - 1))), -127, 127).astype(np.int8)
        graph.initializer.extend([numpy_helper.from_array(q, f"{name}_int8"),
                                  numpy_helper.from_array(scale.astype(np.float32), f"{name}_scale"),
                                  numpy_helper.from_array(np.zeros(w.shape[0], np.int8), f"{name}_zero_point")])
        dequantize.append(onnx.helper.make_node("DequantizeLinear", [f"{name}_int8", f"{name}_scale",
                                                                     f"{name}_zero_point"], [name], axis=0,
                                                name=f"{name}_DequantizeLinear"))
    if dequantize:  # the dequantized weights come first (the graph stays in topological order)
        nodes = [*dequantize, *(onnx.NodeProto.FromString(n.SerializeToString()) for n in graph.node)]
        del graph.node[:]
        graph.node.extend(nodes)
        tmp = path.with_name(path.name + ".tmp")
        onnx.save_model(model, str(tmp))
        os.replace(tmp, path)


def export(model: AdaptiveVLModel, specs: list[StageSpec], root: Path, recipe: ExportRecipe,
           log=print) -> list[dict]:
    """Write every stage (fp32, optionally int8; ONNX and ORT format) under root/onnx.

    Returns manifest artifact entries (files relative to root) with per-stage checks; with
    ``recipe.onnx_weights == "shared"`` an entry names its shared weights file as ``external_data``."""
    artifacts = []
    fp32_dir = root / "onnx" / "fp32"
    for spec in specs:
        log(f"  onnx: {spec.name}")
        export_stage(model, spec, fp32_dir / f"{spec.name}.onnx", recipe.opset)
    dirs = {"fp32": fp32_dir}
    if recipe.quantize == "int8":
        dirs["int8"] = root / "onnx" / "int8"
        for spec in specs:
            quantize_int8(fp32_dir / f"{spec.name}.onnx", dirs["int8"] / f"{spec.name}.onnx")
    for precision, folder in dirs.items():
        shared = share_weights(folder) if recipe.onnx_weights == "shared" else None
        stages = {}
        for spec in specs:
            path = folder / f"{spec.name}.onnx"
            stages[spec.name] = {"file": str(path.relative_to(root)), "ops": op_counts(path),
                                 "mobile_usability": mobile_usability(path)}
        artifacts.append({"target": "onnx", "format": "onnx", "precision": precision, "runtime": "onnxruntime",
                          **({"external_data": str(shared.relative_to(root))} if shared else {}),
                          "stages": stages})
        if recipe.ort_format:
            log(f"  onnx: ORT format ({precision})")
            ort_files = convert_to_ort(folder, root / "ort" / precision, fold_dequantize=precision == "int8")
            missing = [s.name for s in specs if s.name not in ort_files]
            if missing:
                from mmedge.errors import ExportError
                raise ExportError(f"ORT format conversion produced no file for stages {missing}")
            artifacts.append({"target": "onnx", "format": "ort", "precision": precision, "runtime": "onnxruntime",
                              "stages": {s.name: {"file": str(ort_files[s.name].relative_to(root))} for s in specs}})
    return artifacts

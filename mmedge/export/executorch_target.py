"""ExecuTorch: one .pte with one method per stage, lowered to XNNPACK.

int8 uses the PT2E flow with the XNNPACK quantizer (torchao's prepare/convert): weights int8 per
channel, activations quantized dynamically per token, calibrated on real training samples.
A convolution is quantized only where it reads a graph input (``_conv_reads_graph_input``):
XNNPACK (ExecuTorch 1.5.1) builds a dynamically quantized convolution whose input another delegated
op computes (a reshape, a multiply) but fails to run it ("Propagating input shapes failed with code:
xnn_status_invalid_parameter"). An adapted ViLT's patch projection reads the pixels directly (one
image) and is quantized; NLVR2's reads them folded to one row per image (a reshape) and stays fp32.
Constant methods carry what the app needs without reading the manifest (names, labels count).
The stages are lowered from a copy of the model whose layer norms, and the partial q / kv projections
of ``lowrank`` attention, are written in operators XNNPACK takes (``mmedge.export.delegable``), so
that none of them runs outside the delegate.
"""

from __future__ import annotations

from pathlib import Path

from mmedge.export.delegable import delegable_copy
from mmedge.export.recipe import ExportRecipe
from mmedge.export.stages import StageSpec, example_inputs, is_adapted, stage_module
from mmedge.export.tooling import export_failure, quiet, require
from mmedge.models.model import AdaptiveVLModel
from mmedge.runtime.backends.quiet import library_imports

INSTALL = "pip install executorch==1.5.1"


CONV_TARGETS = ("aten.conv1d", "aten.conv2d", "aten.convolution")


def _conv_reads_graph_input(node) -> bool:
    """The quantizer's filter for adapted models: every node but a convolution whose input is computed
    in the graph (module docstring: XNNPACK cannot run such a convolution dynamically quantized)."""
    if not str(node.target).startswith(CONV_TARGETS):
        return True
    source = node.args[0] if node.args else None
    return getattr(source, "op", None) == "placeholder"


def _exported(model: AdaptiveVLModel, spec: StageSpec, calibration: list[tuple] | None):
    torch = require("torch", "pip install torch==2.13.0")
    module, inputs = stage_module(model, spec), example_inputs(model, spec)
    try:
        with quiet():
            program = torch.export.export(module, inputs, strict=False)
            if calibration is None:
                return program
            with library_imports():
                pt2e = require("torchao.quantization.pt2e.quantize_pt2e", "pip install torchao")
                xq = require("executorch.backends.xnnpack.quantizer.xnnpack_quantizer", INSTALL)
            quantizer = xq.XNNPACKQuantizer().set_global(
                xq.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True))
            if is_adapted(model):
                quantizer.set_filter_function(_conv_reads_graph_input)
            prepared = pt2e.prepare_pt2e(program.module(), quantizer)
            with torch.no_grad():
                for sample in calibration:
                    prepared(*sample)
            return torch.export.export(pt2e.convert_pt2e(prepared), inputs, strict=False)
    except Exception as exc:  # noqa: BLE001 - every exporter failure becomes one typed error
        raise export_failure("executorch", model, spec, exc) from exc


def build_program(model: AdaptiveVLModel, specs: list[StageSpec], calibration: dict[str, list[tuple]] | None,
                  constants: dict) -> bytes:
    """Lower every stage into one multi-method program; returns the .pte bytes."""
    with library_imports():  # torchao's "Failed to load" kernels, torch's _pytree notice, ExperimentalWarning
        require("executorch", INSTALL)
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

    programs = {s.name: _exported(model, s, None if calibration is None else calibration[s.name]) for s in specs}
    try:
        with quiet():
            edge = to_edge_transform_and_lower(programs, partitioner=[XnnpackPartitioner()],
                                               constant_methods=constants)
            return edge.to_executorch().buffer
    except Exception as exc:  # noqa: BLE001
        from mmedge.errors import ExportError
        raise ExportError(f"executorch lowering to XNNPACK failed: {str(exc).splitlines()[0][:500]}") from exc


def delegated_ops(model: AdaptiveVLModel, spec: StageSpec) -> dict[str, int]:
    """Op counts of a stage's exported graph (aten level, before lowering)."""
    torch = require("torch", "pip install torch==2.13.0")
    with quiet():
        program = torch.export.export(stage_module(model, spec), example_inputs(model, spec), strict=False)
    counts: dict[str, int] = {}
    for node in program.graph.nodes:
        if node.op == "call_function":
            name = str(node.target).replace("aten.", "").split(".")[0]
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def export(model: AdaptiveVLModel, specs: list[StageSpec], root: Path, recipe: ExportRecipe,
           calibration: dict[str, list[tuple]] | None = None, log=print) -> list[dict]:
    """Write executorch/model_<precision>.pte; returns manifest artifact entries."""
    cfg = model.config
    model = delegable_copy(model)  # XNNPACK has no layer norm, nor a linear on a sliced weight (mmedge.export.delegable)
    constants = {"mmedge_num_stages": model.num_stages, "mmedge_num_labels": cfg.num_labels,
                 "mmedge_image_size": cfg.image_size, "mmedge_max_text_len": cfg.max_text_len}
    ops = {s.name: delegated_ops(model, s) for s in specs}
    artifacts = []
    for precision in recipe.precisions:
        log(f"  executorch: lowering {len(specs)} methods to XNNPACK ({precision})")
        if precision == "int8" and calibration is None:
            raise ValueError("int8 export needs calibration samples")
        data = build_program(model, specs, calibration if precision == "int8" else None, constants)
        path = root / "executorch" / f"model_{precision}.pte"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        artifacts.append({"target": "executorch", "format": "pte", "precision": precision, "runtime": "executorch",
                          "file": str(path.relative_to(root)), "backend_delegate": "XnnpackBackend",
                          "constant_methods": constants,
                          "stages": {s.name: {"method": s.name, "outputs": list(s.outputs), "ops": ops[s.name]}
                                     for s in specs}})
    return artifacts

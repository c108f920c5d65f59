"""Core ML: one multifunction .mlpackage (mlprogram, iOS 18), one function per stage.

int8: coremltools.optimize linear weight quantization (symmetric int8 per channel). Core ML cannot
predict on Linux, so here an export is checked *structurally* (functions, input and output names,
shapes, dtypes, op counts); numeric parity runs only on macOS (``parity`` says which happened).
"""

from __future__ import annotations

import platform
import shutil
import tempfile
from pathlib import Path

from mmedge.errors import ExportError
from mmedge.export.recipe import ExportRecipe
from mmedge.export.stages import StageSpec, example_inputs, stage_module
from mmedge.export.tooling import export_failure, quiet, require
from mmedge.models.model import AdaptiveVLModel

INSTALL = "pip install coremltools==9.0"
_DTYPES = {65568: "float32", 65552: "float16", 131104: "int32"}  # Core ML ArrayFeatureType codes


def drop_aliases(program):
    """Replace every `aten.alias` node (a no-op view; the adapted ViLT's stage 0 has them after
    decomposition) by its input: coremltools 9 has no converter for it ("Unsupported fx node alias")."""
    import torch

    graph = program.graph_module.graph
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target is torch.ops.aten.alias.default:
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
    program.graph_module.recompile()
    return program


def convert_stage(model: AdaptiveVLModel, spec: StageSpec, recipe: ExportRecipe, int8: bool):
    """One stage as an in-memory mlprogram model (not yet loaded: no macOS needed)."""
    torch = require("torch", "pip install torch==2.13.0")
    ct = require("coremltools", INSTALL)
    module, inputs = stage_module(model, spec), example_inputs(model, spec)
    precision = ct.precision.FLOAT32 if recipe.coreml_precision == "float32" else ct.precision.FLOAT16
    try:
        with quiet():
            program = drop_aliases(torch.export.export(module, inputs, strict=False).run_decompositions({}))
            mlmodel = ct.convert(program, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS18,
                                 compute_precision=precision, skip_model_load=True,
                                 outputs=[ct.TensorType(name=n) for n in spec.outputs])
            mlmodel = quantize_weights(mlmodel, "int8" if int8 else "fp32")
    except Exception as exc:  # noqa: BLE001 - every converter failure becomes one typed error
        raise export_failure("coreml", model, spec, exc) from exc
    return mlmodel


def build_package(model: AdaptiveVLModel, specs: list[StageSpec], recipe: ExportRecipe, path: Path,
                  int8: bool) -> None:
    """Convert every stage and save them together as one multifunction .mlpackage at `path`."""
    ct = require("coremltools", INSTALL)
    with tempfile.TemporaryDirectory(prefix="mmedge-coreml-") as tmp:
        desc = ct.utils.MultiFunctionDescriptor()
        for spec in specs:
            single = Path(tmp) / f"{spec.name}.mlpackage"
            convert_stage(model, spec, recipe, int8).save(str(single))
            desc.add_function(str(single), src_function_name="main", target_function_name=spec.name)
        desc.default_function_name = specs[0].name
        with quiet():
            ct.utils.save_multifunction(desc, str(path))


WEIGHT_QUANTIZERS = {  # weight-only linear quantization (coremltools.optimize), activations stay fp32
    "int8": dict(mode="linear_symmetric", dtype="int8", granularity="per_channel"),
    "int4": dict(mode="linear_symmetric", dtype="int4", granularity="per_block", block_size=32),
}


def quantize_weights(mlmodel, weights: str):
    """An mlprogram's weights as int8 per output channel or int4 in blocks of 32 (iOS 18's
    constexpr_blockwise_shift_scale); fp32 returns it unchanged."""
    if weights == "fp32":
        return mlmodel
    ct = require("coremltools", INSTALL)
    opt = ct.optimize.coreml
    config = opt.OptimizationConfig(global_config=opt.OpLinearQuantizerConfig(**WEIGHT_QUANTIZERS[weights]))
    return opt.linear_quantize_weights(mlmodel, config=config)


def save_functions(programs: dict, outputs: dict[str, list[str]], path: Path, default: str,
                   weights: str = "fp32") -> None:
    """One multifunction Core ML package (mlprogram, iOS 18) at `path`: a function per entry of
    `programs` (name -> a callable returning its torch.export ExportedProgram), with its output names,
    computed in fp32 with `weights` fp32, int8 or int4 (quantize_weights). Each is converted and saved
    on its own in a temporary folder, then they are merged."""
    if weights not in ("fp32", *WEIGHT_QUANTIZERS):
        raise ExportError(f"Core ML weights {weights!r}: choose fp32, int8 or int4")
    ct = require("coremltools", INSTALL)
    with tempfile.TemporaryDirectory(prefix="mmedge-coreml-") as tmp:
        desc = ct.utils.MultiFunctionDescriptor()
        for name, make in programs.items():
            try:
                with quiet():
                    mlmodel = ct.convert(make().run_decompositions({}), convert_to="mlprogram", skip_model_load=True,
                                         minimum_deployment_target=ct.target.iOS18,
                                         compute_precision=ct.precision.FLOAT32,
                                         outputs=[ct.TensorType(name=n) for n in outputs[name]])
                    mlmodel = quantize_weights(mlmodel, weights)
            except Exception as exc:  # noqa: BLE001 - the converter's own error types
                raise ExportError(f"coreml conversion of {name} failed: {type(exc).__name__}: {str(exc)[:500]}") from exc
            single = Path(tmp) / f"{name}.mlpackage"
            mlmodel.save(str(single))
            desc.add_function(str(single), src_function_name="main", target_function_name=name)
        desc.default_function_name = default
        staged = Path(tmp) / "merged.mlpackage"
        with quiet():
            ct.utils.save_multifunction(desc, str(staged))
        if path.exists():
            shutil.rmtree(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staged), str(path))


def structure(path: Path) -> dict[str, dict]:
    """Per function: inputs and outputs (name, shape, dtype) and op counts, read from the package."""
    ct = require("coremltools", INSTALL)
    spec = ct.utils.load_spec(str(path))
    out = {}
    programs = spec.mlProgram.functions
    for fn in spec.description.functions:
        def tensors(features):
            return [{"name": f.name, "shape": list(f.type.multiArrayType.shape),
                     "dtype": _DTYPES.get(f.type.multiArrayType.dataType, str(f.type.multiArrayType.dataType))}
                    for f in features]
        ops: dict[str, int] = {}
        if fn.name in programs:
            for block in programs[fn.name].block_specializations.values():
                for op in block.operations:
                    ops[op.type] = ops.get(op.type, 0) + 1
        out[fn.name] = {"inputs": tensors(fn.input), "outputs": tensors(fn.output), "ops": dict(sorted(ops.items()))}
    return out


def check_structure(found: dict[str, dict], expected: dict[str, dict]) -> list[str]:
    """Differences between the package's functions and the stages' expected I/O (empty = passed)."""
    problems = []
    if sorted(found) != sorted(expected):
        problems.append(f"functions {sorted(found)} != stages {sorted(expected)}")
    for name, want in expected.items():
        got = found.get(name)
        if got is None:
            continue
        for kind in ("inputs", "outputs"):
            have = {t["name"]: t for t in got[kind]}
            for t in want[kind]:
                g = have.get(t["name"])
                if g is None:
                    problems.append(f"{name}: {kind[:-1]} {t['name']} missing")
                    continue
                if [int(d) for d in g["shape"]] != t["shape"]:
                    problems.append(f"{name}: {t['name']} shape {g['shape']} != {t['shape']}")
                want_dtype = "int32" if t["dtype"].startswith("int") else t["dtype"]
                if g["dtype"] not in (want_dtype, "float16" if want_dtype == "float32" else want_dtype):
                    problems.append(f"{name}: {t['name']} dtype {g['dtype']} != {want_dtype}")
    return problems


def export(model: AdaptiveVLModel, specs: list[StageSpec], root: Path, recipe: ExportRecipe,
           expected_io: dict[str, dict], log=print) -> list[dict]:
    """Write coreml/model_<precision>.mlpackage; returns manifest artifact entries."""
    artifacts = []
    for precision in recipe.precisions:
        log(f"  coreml: converting {len(specs)} functions ({precision})")
        path = root / "coreml" / f"model_{precision}.mlpackage"
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            shutil.rmtree(path)
        build_package(model, specs, recipe, path, int8=precision == "int8")
        found = structure(path)
        problems = check_structure(found, expected_io)
        if problems:
            raise ExportError("the Core ML package does not have the stages' structure:\n  " + "\n  ".join(problems))
        artifacts.append({"target": "coreml", "format": "mlpackage", "precision": precision, "runtime": "coreml",
                          "file": str(path.relative_to(root)), "deployment_target": recipe.coreml_target,
                          "compute_precision": recipe.coreml_precision,
                          "structure_check": {"passed": True, "functions": len(found)},
                          "stages": {s.name: {"function": s.name, "ops": found[s.name]["ops"]} for s in specs}})
    return artifacts


def can_predict() -> bool:
    """Core ML runs models only on macOS."""
    return platform.system() == "Darwin"

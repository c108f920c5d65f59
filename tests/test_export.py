"""Real exports of a tiny trained model, checked in the real runtimes (onnxruntime, executorch.runtime)
and, for Core ML, structurally (prediction needs macOS)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mmedge.bundle.manifest import load_manifest, validate_schema
from mmedge.errors import BundleError, ConfigError, ExportError, MissingDependencyError
from mmedge.export.recipe import ExportRecipe

pytestmark = pytest.mark.slow

@pytest.fixture
def bundle(tiny_bundle) -> Path:
    return tiny_bundle


def _artifact(manifest, target, fmt, precision):
    return next(a for a in manifest["artifacts"]
                if (a["target"], a["format"], a["precision"]) == (target, fmt, precision))


def test_bundle_has_every_target_and_a_valid_manifest(bundle):
    manifest = load_manifest(bundle)  # schema + every SHA-256
    assert validate_schema(manifest) == []
    kinds = {(a["target"], a["format"], a["precision"]) for a in manifest["artifacts"]}
    assert kinds == {(t, f, p) for t, f in [("onnx", "onnx"), ("onnx", "ort"), ("executorch", "pte"),
                                            ("coreml", "mlpackage")] for p in ("fp32", "int8")} | {
        ("torch", "safetensors", "fp32")}
    assert [k["kept_tokens"] for k in manifest["keep_ratios"]] == [36, 18]
    assert len(manifest["stages"]) == 2 * 3
    stage0 = manifest["stages"]["k18_stage0"]
    assert [t["name"] for t in stage0["inputs"]] == ["pixel_values", "input_ids", "text_mask"]
    assert stage0["outputs"][0] == {"name": "hidden", "shape": [1, 1 + 24 + 18, 32], "dtype": "float32"}
    for rel in manifest["files"]:
        assert (bundle / rel).is_file()
    assert {"torch", "onnxruntime", "executorch", "coremltools"} <= set(manifest["tools"])
    assert not list(bundle.parent.glob(".tiny.mmedge.partial-*"))


def test_fp32_parity_in_real_runtimes(bundle):
    manifest = load_manifest(bundle)
    for target, fmt in [("onnx", "onnx"), ("onnx", "ort"), ("executorch", "pte")]:
        parity = _artifact(manifest, target, fmt, "fp32")["parity"]
        assert parity["status"] == "measured" and parity["passed"]
        for p in parity["by_keep_ratio"].values():
            assert p["samples"] == 8
            for stage in p["stages"]:
                assert stage["logits_max_abs_err"] <= 1e-4
                assert stage["answer_agreement"] == 1.0


def test_runtimes_reproduce_the_reference_independently(bundle, tiny_model_dir):
    """Re-run the exported ONNX and ExecuTorch stages here and compare with PyTorch directly."""
    import torch

    from mmedge.export.parity import run_chain
    from mmedge.export.stages import stage_module, stage_specs
    from mmedge.models.checkpoint import from_pretrained
    from mmedge.runtime.backends import open_session

    manifest = load_manifest(bundle)
    model, tok = from_pretrained(tiny_model_dir)
    specs = [s for s in stage_specs(model, [0.5])]
    rng = np.random.default_rng(0)
    ids, mask = tok.encode("is there a red circle ?")
    feed = {"pixel_values": rng.uniform(-1, 1, (1, 3, 48, 48)).astype(np.float32),
            "input_ids": ids[None].astype(np.int32), "text_mask": mask[None].astype(np.int32)}
    with torch.no_grad():
        ref = stage_module(model, specs[0])(*(torch.from_numpy(v) for v in feed.values()))
    for target, fmt in [("onnx", "onnx"), ("executorch", "pte")]:
        session = open_session(_artifact(manifest, target, fmt, "fp32")["runtime"], bundle,
                               _artifact(manifest, target, fmt, "fp32"))
        chain = run_chain(session, specs, feed)
        np.testing.assert_allclose(chain[0]["logits"], ref[2].numpy(), atol=1e-4)
        np.testing.assert_array_equal(chain[0]["kept_index"], ref[4].numpy())
        assert chain[-1]["hidden"].shape == (1, 1 + 24 + 18, 32)


def test_int8_is_smaller_and_its_accuracy_change_is_reported(bundle):
    manifest = load_manifest(bundle)
    sizes = {}
    for a in manifest["artifacts"]:
        files = [f for f in manifest["files"] if f.startswith(a.get("file", "")) and
                 (("file" in a) or f == a.get("external_data") or any(f == s["file"] for s in a["stages"].values()))]
        sizes[(a["target"], a["format"], a["precision"])] = sum(manifest["files"][f]["bytes"] for f in files)
    for target, fmt in [("onnx", "onnx"), ("executorch", "pte"), ("coreml", "mlpackage")]:
        assert sizes[(target, fmt, "int8")] < sizes[(target, fmt, "fp32")]
    for target, fmt in [("onnx", "onnx"), ("executorch", "pte")]:
        acc = _artifact(manifest, target, fmt, "int8")["accuracy"]
        for ratio, row in acc["by_keep_ratio"].items():
            assert row["samples"] == 16
            assert row["change_vs_reference"] == pytest.approx(
                row["final_exit_accuracy"] - acc["reference"][ratio]["final_exit_accuracy"])
        parity = _artifact(manifest, target, fmt, "int8")["parity"]
        errs = [s["logits_max_abs_err"] for p in parity["by_keep_ratio"].values() for s in p["stages"]]
        assert 0 < max(errs) < 1.0  # int8 really changes the numbers, within reason
    ops = {op for s in _artifact(manifest, "onnx", "onnx", "int8")["stages"].values() for op in s["ops"]}
    assert "MatMulInteger" in ops and "ConvInteger" not in ops  # convolutions compute in fp32 (int8 bytes on disk)


def test_conv_weights_are_stored_int8_and_fold_back_for_ort_format(tmp_path):
    """A Conv's weight becomes int8 per output channel behind a DequantizeLinear (a quarter of the bytes,
    the convolution in fp32); folding it back (as the ORT-format conversion does) gives the same numbers."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from mmedge.export.onnx_target import fold_weight_dequantize, store_conv_weights_int8

    rng = np.random.default_rng(0)
    w = rng.normal(size=(8, 3, 3, 3)).astype(np.float32)
    w[5] = 0.0  # a channel of zeros keeps a usable scale
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 6, 6])],
                              [numpy_helper.from_array(w, "w")])
    path = tmp_path / "q" / "conv.onnx"
    path.parent.mkdir()
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    x = {"x": rng.normal(size=(1, 3, 6, 6)).astype(np.float32)}
    fp32 = ort.InferenceSession(str(path)).run(None, x)[0]
    store_conv_weights_int8(path)
    model = onnx.load(str(path))
    assert [n.op_type for n in model.graph.node] == ["DequantizeLinear", "Conv"]
    stored = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert stored["w_int8"].dtype == np.int8 and np.abs(stored["w_int8"]).max() == 127
    assert stored["w_scale"].shape == (8,) and stored["w_scale"][5] == 1.0
    int8 = ort.InferenceSession(str(path)).run(None, x)[0]
    assert 0 < np.abs(int8 - fp32).max() < 0.05 * np.abs(fp32).max()  # weight rounding only
    (tmp_path / "f").mkdir()
    folded = fold_weight_dequantize(path.parent, tmp_path / "f") / "conv.onnx"
    assert [n.op_type for n in onnx.load(str(folded)).graph.node] == ["Conv"]
    np.testing.assert_allclose(ort.InferenceSession(str(folded)).run(None, x)[0], int8, rtol=1e-6, atol=1e-6)


def test_coreml_structure_is_checked_and_parity_says_not_run(bundle):
    import coremltools as ct

    manifest = load_manifest(bundle)
    art = _artifact(manifest, "coreml", "mlpackage", "fp32")
    assert art["structure_check"]["passed"] and art["structure_check"]["functions"] == 6
    assert art["parity"]["status"] == "not run" and "macOS" in art["parity"]["reason"]
    spec = ct.utils.load_spec(str(bundle / art["file"]))
    names = sorted(f.name for f in spec.description.functions)
    assert names == sorted(manifest["stages"])
    assert spec.specificationVersion >= 9  # iOS 18


def test_onnx_mobile_checks_and_ort_format(bundle):
    manifest = load_manifest(bundle)
    onnx_fp32 = _artifact(manifest, "onnx", "onnx", "fp32")
    for stage in onnx_fp32["stages"].values():
        assert stage["mobile_usability"]["passed"]
        assert set(stage["mobile_usability"]["ep_verdicts"]) == {"NNAPI", "CoreML NeuralNetwork", "CoreML MLProgram"}
    ort_fp32 = _artifact(manifest, "onnx", "ort", "fp32")
    assert all(s["file"].endswith(".ort") for s in ort_fp32["stages"].values())
    import onnx

    model = onnx.load(str(bundle / onnx_fp32["stages"]["k36_stage0"]["file"]))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 18


def test_in_graph_exits_match_the_staged_form(bundle):
    import onnx
    import onnxruntime as ort

    manifest = load_manifest(bundle)
    entry = manifest["in_graph"]["by_keep_ratio"]["1.0"]
    assert entry["check"]["passed"] and entry["check"]["exit_agreement"] == 1.0
    graph = onnx.load(str(bundle / entry["file"])).graph
    assert any(n.op_type == "If" for n in graph.node)
    session = ort.InferenceSession(str(bundle / entry["file"]))
    feed = {"pixel_values": np.zeros((1, 3, 48, 48), np.float32), "input_ids": np.zeros((1, 24), np.int32),
            "text_mask": np.zeros((1, 24), np.int32)}
    feed["input_ids"][0, :3] = [2, 3, 4]
    feed["text_mask"][0, :3] = 1
    first = session.run(None, {**feed, "threshold": np.array([0.0], np.float32)})
    last = session.run(None, {**feed, "threshold": np.array([1.5], np.float32)})
    assert int(first[2][0]) == 0 and int(last[2][0]) == 2


def test_report_is_written_with_the_parity_table(bundle):
    text = (bundle / "report.md").read_text()
    assert "## Parity against PyTorch" in text and "executorch (pte, int8)" in text
    assert "not run: Core ML prediction needs macOS" in text
    info = json.loads((bundle / "report.json").read_text())
    assert info["failures"] == [] and info["seconds"]["total"] > 0


def test_tampered_bundle_is_refused(bundle, tmp_path):
    import shutil

    copy = tmp_path / "copy.mmedge"
    shutil.copytree(bundle, copy)
    stage = next(copy.glob("onnx/fp32/*.onnx"))
    stage.write_bytes(stage.read_bytes()[:-1] + b"\0")
    with pytest.raises(BundleError, match="hash mismatch"):
        load_manifest(copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["schema_version"] = 99
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="schema_version 99"):
        load_manifest(copy)


def test_existing_bundle_needs_force_and_failed_export_leaves_nothing(tiny_model_dir, tmp_path, monkeypatch):
    from mmedge.export import exporter
    from mmedge.export.recipe import Tolerances

    import shutil

    out = tmp_path / "b.mmedge"
    shipped = Path(__file__).resolve().parents[1] / "models/vqa-default/bundles/vqa-default-onnx.mmedge"
    shutil.copytree(shipped, out)  # an old bundle: --force may replace it
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    stale = tmp_path / ".b.mmedge.partial-999999999-abc"  # left by a killed export (no such process)
    stale.mkdir()
    (stale / "half.onnx").write_bytes(b"partial")
    recipe = ExportRecipe(targets=["onnx"], keep_ratios=[1.0], parity_samples=2, in_graph=False, ort_format=False)
    with pytest.raises(BundleError, match="--force"):
        exporter.export_bundle(tiny_model_dir, out, recipe, log=lambda *_: None)
    impossible = Tolerances(logits_abs=-1.0, hidden_rel=1.0, min_answer_agreement=0.0, min_exit_agreement=0.0,
                            max_accuracy_drop=1.0)
    monkeypatch.setattr(ExportRecipe, "tolerances", lambda self, precision: impossible)
    with pytest.raises(ExportError, match="logits error"):
        exporter.export_bundle(tiny_model_dir, out, recipe, force=True, log=lambda *_: None)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.mmedge"]  # no partial directories


def test_unsupported_op_names_the_op_and_the_layer(tiny_model_dir, tmp_path, monkeypatch):
    import torch

    from mmedge.export import onnx_target
    from mmedge.export.stages import stage_specs
    from mmedge.models.checkpoint import from_pretrained

    @torch.library.custom_op("mmedge_test::mystery", mutates_args=(), schema="(Tensor x) -> Tensor")
    def mystery(x):
        return x.clone()

    @mystery.register_fake
    def _(x):
        return torch.empty_like(x)

    model, _ = from_pretrained(tiny_model_dir)
    block = model.blocks[1]
    original = block.forward
    monkeypatch.setattr(block, "forward", lambda x, mask: original(mystery(x), mask))
    spec = stage_specs(model, [1.0])[1]
    with pytest.raises(ExportError, match=r"mmedge_test[.:]+mystery.*stage 1 \(layers \[1\]\)"):
        onnx_target.export_stage(model, spec, tmp_path / "s.onnx", 18)


def test_recipes_in_the_repo_load_and_bad_recipes_are_typed_errors(tmp_path):
    recipes = sorted(Path(__file__).resolve().parents[1].glob("export/*.json"))
    assert len(recipes) >= 5
    for path in recipes:
        ExportRecipe.load(str(path))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"targets": ["tflite"], "opset": 12, "speed": "max"}))
    with pytest.raises(ConfigError, match="unknown field 'speed'"):
        ExportRecipe.load(str(bad))
    bad.write_text(json.dumps({"targets": ["tflite"], "opset": 12}))
    with pytest.raises(ConfigError) as info:
        ExportRecipe.load(str(bad))
    assert len(info.value.problems) == 2


def test_missing_backend_gives_the_install_command(monkeypatch):
    import sys

    from mmedge.export.tooling import require

    monkeypatch.setitem(sys.modules, "coremltools", None)  # makes `import coremltools` fail
    with pytest.raises(MissingDependencyError, match="pip install coremltools==9.0"):
        require("coremltools", "pip install coremltools==9.0")


def test_cli_export_prints_the_report(tiny_model_dir, tmp_path, capsys):
    from mmedge.cli import main

    out = tmp_path / "cli.mmedge"
    rc = main(["export", "--model", str(tiny_model_dir), "--target", "onnx", "--keep-ratio", "1.0",
               "--parity-samples", "2", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "Parity against PyTorch" in text and (out / "manifest.json").is_file()
    rc = main(["export", "--model", str(tiny_model_dir), "--target", "onnx", "--out", str(out)])
    assert rc == 2 and "--force" in capsys.readouterr().err


VARIANTS = {  # every architecture option in at least one export (two options per case keep the suite short)
    "linear-patches-cls-exits-position-ramps": {"patch_embed": "linear", "exit_pool": "cls",
                                                "position_code": "sincos_linear"},
    "conv-stem-text-exits-film-exits-after-1-2": {"patch_embed": "conv_stem", "exit_pool": "text", "text_film": True,
                                                  "exit_layers": [1, 2], "depth": 3},
}  # the attention variants' export case (every target, fp32 and int8) is in tests/test_attention.py


def test_every_attention_variant_has_an_export_case():
    from mmedge.models.config import ATTENTION_VARIANTS
    from test_attention import EXPORTED_VARIANTS

    covered = {"full"} | {v.get("attention", "full") for v in VARIANTS.values()} | set(EXPORTED_VARIANTS)
    assert set(ATTENTION_VARIANTS) <= covered, f"no export case for {set(ATTENTION_VARIANTS) - covered}"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_model_variant_exports_to_every_target(variant, tmp_path):
    """Each architecture option the config offers goes through all three exporters, fp32 and int8,
    and the runtimes (a randomly initialised model: the export path does not care about training;
    its near-tied logits are why the int8 decision limits are opened here)."""
    import torch

    from mmedge.data.tasks import LABELS
    from mmedge.data.tokenizer import default_tokenizer
    from mmedge.export.exporter import export_bundle
    from mmedge.models.checkpoint import save_pretrained
    from mmedge.models.config import ModelConfig
    from mmedge.models.model import AdaptiveVLModel

    torch.manual_seed(0)
    tok = default_tokenizer(16)
    cfg = ModelConfig(**{"labels": list(LABELS["vqa"]), "vocab_size": len(tok.vocab), "dim": 32, "depth": 2,
                         "num_heads": 2, "image_size": 32, "patch_size": 8, "max_text_len": 16,
                         **VARIANTS[variant]})
    save_pretrained(AdaptiveVLModel(cfg).eval(), tok, tmp_path / "model")
    out = export_bundle(tmp_path / "model", tmp_path / "v.mmedge",
                        ExportRecipe(keep_ratios=[0.5], parity_samples=3, in_graph=False, ort_format=False,
                                     quantize="int8", accuracy_samples=4, calibration_samples=2,
                                     int8_min_answer_agreement=0.0, int8_min_exit_agreement=0.0,
                                     int8_max_accuracy_drop=1.0),
                        log=lambda *_: None)
    manifest = load_manifest(out)
    assert manifest["exit_layers"] == cfg.exits
    assert {(a["target"], a["precision"]) for a in manifest["artifacts"]} >= {
        (t, p) for t in ("onnx", "executorch", "coreml") for p in ("fp32", "int8")}
    for a in manifest["artifacts"]:
        assert len(a["stages"]) == len(cfg.exits)
        if a["target"] == "coreml":
            assert a["structure_check"]["passed"]
        elif a["target"] != "torch":
            assert a["parity"]["passed"]


def test_onnx_graphs_share_one_copy_of_the_weights(bundle, tiny_model_dir):
    import onnx

    manifest = load_manifest(bundle)
    weights_bytes = (tiny_model_dir / "model.safetensors").stat().st_size
    for precision in ("fp32", "int8"):
        art = _artifact(manifest, "onnx", "onnx", precision)
        shared = bundle / art["external_data"]
        assert shared.name == "weights.bin" and shared.parent == (bundle / art["stages"]["k36_stage0"]["file"]).parent
        # every keep ratio's stages (and the in-graph form) read one copy: at most the model's weights
        assert shared.stat().st_size <= weights_bytes * (1.0 if precision == "fp32" else 0.6)
        for entry in art["stages"].values():
            proto = onnx.load(str(bundle / entry["file"]), load_external_data=False)
            external = [t for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
            assert external and {e.value for t in external for e in t.external_data if e.key == "location"} \
                == {"weights.bin"}
            assert not any(n.metadata_props for n in proto.graph.node)  # no stack traces with machine paths
            assert not proto.graph.metadata_props  # nor the exporter's signature of every parameter
            assert b"/work/" not in (bundle / entry["file"]).read_bytes()
    for entry in manifest["in_graph"]["by_keep_ratio"].values():
        assert entry["external_data"] == _artifact(manifest, "onnx", "onnx", "fp32")["external_data"]

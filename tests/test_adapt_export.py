"""A folder written by `mmedge adapt` through the toolchain: `mmedge eval`, `mmedge export` (ONNX fp32
and int8, ExecuTorch fp32; parity-checked) and the Python Engine, whose full-depth outputs equal
transformers' own forward. Tiny ViLTs made with save_pretrained (tests/test_adapt.py), no download."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from test_adapt import TEXTS, hf_inputs, images, make_source  # noqa: E402
from mmedge.adapt import load_source  # noqa: E402
from mmedge.adapt.folder import save_adapted  # noqa: E402
from mmedge.bundle.manifest import consistency_problems, validate_schema  # noqa: E402
from mmedge.cli import main  # noqa: E402
from mmedge.errors import BundleError, ConfigError  # noqa: E402
from mmedge.export.exporter import UnsupportedAdaptedExport, export_bundle  # noqa: E402
from mmedge.export.recipe import ExportRecipe  # noqa: E402
from mmedge.models.checkpoint import from_pretrained, load_config  # noqa: E402
from mmedge.runtime.engine import Engine  # noqa: E402

SMALL = {"parity_samples": 4, "accuracy_samples": 8, "calibration_samples": 4, "ort_format": False,
         "in_graph": False}


def adapted_folder(root, task: str = "vqa", exit_layers=(0, 2), name: str = "adapted", source=None):
    """An adapted folder as `mmedge adapt` writes it (the exits as initialised: no distillation needed
    for what is checked here)."""
    source = source or make_source(root / "source", task)
    model, pre = load_source(source, exit_layers=list(exit_layers), keep_ratios=[1.0, 0.5])
    return source, save_adapted(model, pre, root / name, str(source), source_dir=source)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapt_export")
    source, folder = adapted_folder(root)
    recipe = root / "recipe.json"
    recipe.write_text(json.dumps(SMALL))
    assert main(["export", "--model", str(folder), "--out", str(root / "onnx.mmedge"), "--target", "onnx",
                 "--quantize", "int8", "--recipe", str(recipe)]) == 0
    # ExecuTorch lowering is the slow part: one stage (exit after the last layer) at both keep ratios
    _, one_stage = adapted_folder(root, exit_layers=(2,), name="one-stage", source=source)
    assert main(["export", "--model", str(one_stage), "--out", str(root / "et.mmedge"), "--target", "executorch",
                 "--recipe", str(recipe)]) == 0
    return {"source": source, "folder": folder, "onnx": root / "onnx.mmedge", "et": root / "et.mmedge"}


def reference(source):
    hf = transformers.ViltForQuestionAnswering.from_pretrained(source).eval()
    imgs = images(3, 40)
    inputs = hf_inputs(source, "vqa", imgs, TEXTS)
    with torch.no_grad():
        return imgs, inputs, hf(**inputs).logits.numpy()


@pytest.mark.parametrize("bundle,backend,precision,tol", [("onnx", "onnxruntime", "fp32", 1e-4),
                                                           ("onnx", "onnxruntime", "int8", 0.5),
                                                           ("et", "executorch", "fp32", 1e-4),
                                                           ("onnx", "torch", "fp32", 1e-4)])
def test_engine_at_full_depth_equals_transformers(made, bundle, backend, precision, tol):
    """Engine.load(bundle): its preprocessing gives transformers' processor's pixels and ids bit for bit,
    and its last exit at keep 1.0 gives transformers' logits (fp32 within float rounding)."""
    pytest.importorskip({"onnxruntime": "onnxruntime", "executorch": "executorch.runtime", "torch": "torch"}[backend])
    imgs, inputs, ref = reference(made["source"])
    engine = Engine.load(made[bundle], backend=backend, precision=precision, keep_ratio=1.0)
    worst = 0.0
    for i, (image, text) in enumerate(zip(imgs, TEXTS)):
        feeds = engine.preprocess(image, text)
        assert np.array_equal(feeds["pixel_values"], inputs["pixel_values"][i: i + 1].numpy())
        assert np.array_equal(feeds["input_ids"], inputs["input_ids"][i: i + 1].numpy().astype(np.int32))
        assert np.array_equal(feeds["text_mask"], inputs["attention_mask"][i: i + 1].numpy().astype(np.int32))
        last = np.asarray(engine.all_exits(feeds, 1.0).logits[-1]).reshape(-1)
        worst = max(worst, float(np.abs(last - ref[i]).max()))
        prediction = engine.predict(image, text)
        assert prediction.answer in engine.labels
        if precision == "fp32":
            full = engine.predict(image, text, policy="full")
            assert full.answer == engine.labels[int(ref[i].argmax())]
    assert worst < tol, f"{backend}/{precision}: max |logits - transformers| {worst:.3g}"


def test_manifest_states_the_adapted_preparation(made):
    m = json.loads((made["onnx"] / "manifest.json").read_text())
    pre, tok = m["preprocessing"], m["tokenizer"]
    assert (pre["resize"], pre["fit"], pre["num_images"]) == ("pillow-bicubic", "stretch", 1)
    assert pre["mean"] == pre["std"] == [0.5, 0.5, 0.5] and "pad_color" not in pre
    assert tok["kind"] == "bert-wordpiece" and tok["template"] == ["[CLS]", "$text", "[SEP]"]
    assert (tok["cls_id"], tok["sep_id"], tok["pad_id"]) == (2, 3, 0) and "split_regex" not in tok
    assert m["model"]["config"]["source_class"] == "ViltForQuestionAnswering"
    assert {a["precision"] for a in m["artifacts"] if a["runtime"] == "onnxruntime"} == {"fp32", "int8"}
    assert all(a["parity"]["passed"] for a in m["artifacts"])
    for name in ("processor_config.json", "tokenizer_config.json", "config.json"):
        assert (made["onnx"] / "torch" / name).is_file()
    stage0 = m["stages"]["k8_stage0"]
    assert stage0["outputs"][0]["shape"] == [1, 16 + 1 + 8, 32]  # T = L + 1 + k
    # the schema's conditions: an adapted preparation needs its own fields, format 1 still needs pad_color
    assert not validate_schema(m) and not consistency_problems(m)
    broken = json.loads(json.dumps(m))
    del broken["preprocessing"]["fit"], broken["tokenizer"]["cls_id"]
    assert len(validate_schema(broken)) == 2
    broken = json.loads(json.dumps(m))
    broken["preprocessing"]["resize"] = "pillow-bilinear"
    assert any("pad_color" in p for p in validate_schema(broken))


def test_engine_refuses_a_tokenizer_the_manifest_does_not_state(made, tmp_path):
    import shutil

    bundle = tmp_path / "b.mmedge"
    shutil.copytree(made["onnx"], bundle)
    m = json.loads((bundle / "manifest.json").read_text())
    m["tokenizer"]["lowercase"] = False
    (bundle / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError) as info:
        Engine.load(bundle, backend="onnxruntime")
    assert info.value.code == "tokenizer" and "lowercase" in str(info.value)


def test_eval_and_loading_dispatch_on_family(made, capsys):
    model, pre = from_pretrained(made["folder"])
    assert getattr(model, "is_adapted", False) and pre.tokenizer.max_length == 16
    assert load_config(made["folder"]).source_class == "ViltForQuestionAnswering"
    assert main(["eval", "--model", str(made["folder"]), "--limit", "6", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "Agreement with the full model" in out and "ViltForQuestionAnswering" in out


@pytest.mark.parametrize("task", ["nlvr2", "retrieval"])
def test_other_tasks_are_refused_with_what_is_supported(tmp_path, task):
    _, folder = adapted_folder(tmp_path, task)
    with pytest.raises(UnsupportedAdaptedExport, match="supports adapted models of task vqa"):
        export_bundle(folder, tmp_path / "b.mmedge", ExportRecipe(targets=["onnx"], **SMALL), log=lambda *_: None)
    assert not (tmp_path / "b.mmedge").exists()


def test_modality_pruning_is_refused_for_adapted_models(made, tmp_path):
    with pytest.raises(ConfigError, match="not supported yet"):
        export_bundle(made["folder"], tmp_path / "b.mmedge",
                      ExportRecipe(targets=["onnx"], drop_visual_after=0, **SMALL), log=lambda *_: None)

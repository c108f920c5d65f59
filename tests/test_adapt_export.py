"""A folder written by `mmedge adapt` through the toolchain: `mmedge eval`, `mmedge export` (ONNX fp32
and int8, ExecuTorch fp32 and int8; parity-checked) and the Python Engine, whose full-depth outputs equal
transformers' own forward, for VQA, NLVR2 (two images per query) and retrieval (a match score);
`mmedge calibrate` and `mmedge bench --device host` on its bundle; `mmedge demo` and `mmedge probe`
refuse the folder and say what to use. Tiny ViLTs made with save_pretrained (tests/test_adapt.py),
no download."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from dataset_fixtures import make_nlvr2  # noqa: E402
from test_adapt import TEXTS, hf_inputs, images, make_source  # noqa: E402
from mmedge.adapt import load_source  # noqa: E402
from mmedge.adapt.folder import save_adapted  # noqa: E402
from mmedge.bundle.manifest import consistency_problems, validate_schema  # noqa: E402
from mmedge.cli import main  # noqa: E402
from mmedge.errors import AdaptedModelUnsupported, BundleError, ConfigError, DatasetError, ImageCountError  # noqa: E402
from mmedge.export.exporter import export_bundle  # noqa: E402
from mmedge.export.recipe import ExportRecipe  # noqa: E402
from mmedge.models.checkpoint import from_pretrained, load_config  # noqa: E402
from mmedge.runtime.controller import Policy  # noqa: E402
from mmedge.runtime.engine import Engine  # noqa: E402

SMALL = {"parity_samples": 4, "accuracy_samples": 8, "calibration_samples": 4, "ort_format": False,
         "in_graph": False}


def adapted_folder(root, task: str = "vqa", exit_layers=(0, 2), name: str = "adapted", source=None,
                   exit_rank: int | None = None):
    """An adapted folder as `mmedge adapt` writes it (the exits as initialised: no distillation needed
    for what is checked here)."""
    source = source or make_source(root / "source", task)
    model, pre = load_source(source, exit_layers=list(exit_layers), keep_ratios=[1.0, 0.5], exit_rank=exit_rank)
    return source, save_adapted(model, pre, root / name, str(source), source_dir=source)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapt_export")
    source, folder = adapted_folder(root, exit_rank=4)  # exit 1's head stored as rank-4 pairs
    recipe = root / "recipe.json"
    recipe.write_text(json.dumps(SMALL))
    assert main(["export", "--model", str(folder), "--out", str(root / "onnx.mmedge"), "--target", "onnx",
                 "--quantize", "int8", "--recipe", str(recipe)]) == 0
    # ExecuTorch lowering is the slow part: one stage (exit after the last layer) at both keep ratios, fp32 and
    # int8 (XNNPACK, dynamically quantized; parity-checked at export like every artifact)
    _, one_stage = adapted_folder(root, exit_layers=(2,), name="one-stage", source=source)
    assert main(["export", "--model", str(one_stage), "--out", str(root / "et.mmedge"), "--target", "executorch",
                 "--quantize", "int8", "--recipe", str(recipe)]) == 0
    return {"source": source, "folder": folder, "onnx": root / "onnx.mmedge", "et": root / "et.mmedge",
            "one_stage": one_stage, "recipe": recipe}


def reference(source):
    hf = transformers.ViltForQuestionAnswering.from_pretrained(source).eval()
    imgs = images(3, 40)
    inputs = hf_inputs(source, "vqa", imgs, TEXTS)
    with torch.no_grad():
        return imgs, inputs, hf(**inputs).logits.numpy()


@pytest.mark.parametrize("bundle,backend,precision,tol", [("onnx", "onnxruntime", "fp32", 1e-4),
                                                           ("onnx", "onnxruntime", "int8", 0.5),
                                                           ("et", "executorch", "fp32", 1e-4),
                                                           ("et", "executorch", "int8", 0.5),
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


def test_executorch_int8_bundle_of_an_adapted_model(made):
    """ExecuTorch int8 is exported for adapted models (it fell back to fp32 while XNNPACK rejected the dynamically
    quantized stage 0 at run time): parity-checked at every stage and keep ratio, and smaller than fp32."""
    m = json.loads((made["et"] / "manifest.json").read_text())
    et = {a["precision"]: a for a in m["artifacts"] if a["runtime"] == "executorch"}
    assert set(et) == {"fp32", "int8"}
    parity = et["int8"]["parity"]
    assert parity["status"] == "measured" and parity["passed"] and set(parity["by_keep_ratio"]) == {"1.0", "0.5"}
    assert all(s["kept_tokens_agreement"] == 1.0 for p in parity["by_keep_ratio"].values() for s in p["stages"])
    assert (made["et"] / et["int8"]["file"]).stat().st_size < (made["et"] / et["fp32"]["file"]).stat().st_size


def test_int8_quantizes_a_convolution_only_where_it_reads_a_graph_input():
    """XNNPACK cannot run a dynamically quantized convolution whose input another delegated op computes
    ("Propagating input shapes failed"): for adapted models the quantizer skips such a convolution (NLVR2's patch
    projection, behind the reshape that folds two images into rows), and quantizes one reading the pixels."""
    from mmedge.export.executorch_target import _conv_reads_graph_input

    class Patches(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.linear = torch.nn.Conv2d(3, 8, 4, 4), torch.nn.Linear(8, 8)

        def forward(self, one, two):
            a = self.conv(one).flatten(2).transpose(1, 2)
            b = self.conv(two.reshape(-1, 3, 8, 8)).flatten(2).transpose(1, 2)
            return self.linear(a), self.linear(b)

    graph = torch.export.export(Patches(), (torch.zeros(1, 3, 8, 8), torch.zeros(1, 2, 3, 8, 8))).module().graph
    convs = [n for n in graph.nodes if str(n.target).startswith("aten.conv2d")]
    linears = [n for n in graph.nodes if str(n.target).startswith("aten.linear")]
    assert [_conv_reads_graph_input(n) for n in convs] == [True, False]
    assert linears and all(_conv_reads_graph_input(n) for n in linears)


def coreml_op_types(package) -> dict[str, int]:
    """Op type -> count over every function of a Core ML program (read from its spec; no prediction)."""
    import collections

    import coremltools as ct

    spec = ct.models.MLModel(str(package), skip_model_load=True).get_spec()
    return collections.Counter(op.type for f in spec.mlProgram.functions.values()
                               for block in f.block_specializations.values() for op in block.operations)


@pytest.mark.parametrize("task", ["vqa", "nlvr2"])
def test_coreml_bundle_of_an_adapted_model(made, kinds, tmp_path, task):
    """Core ML converts an adapted ViLT (stage 0's no-op `aten.alias` nodes are dropped first: coremltools
    has no converter for them), one image or two, fp32 and int8, into packages whose functions have the
    stage contract's inputs and outputs (checked structurally at export; predicting needs macOS); the int8
    package stores its linear weights as int8 (constexpr dequantization ops) and is smaller."""
    pytest.importorskip("coremltools")
    out = tmp_path / "coreml.mmedge"
    folder, recipe = ((made["one_stage"], made["recipe"]) if task == "vqa"
                      else (kinds["nlvr2"]["folder"], kinds["nlvr2"]["root"] / "nlvr2.json"))
    assert main(["export", "--model", str(folder), "--out", str(out), "--target", "coreml", "--quantize", "int8",
                 "--recipe", str(recipe)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert {(a["runtime"], a["precision"]) for a in manifest["artifacts"]} == {
        ("coreml", "fp32"), ("coreml", "int8"), ("torch", "fp32")}
    ops = {p: coreml_op_types(out / f"coreml/model_{p}.mlpackage") for p in ("fp32", "int8")}
    assert not any(k.startswith("constexpr") for k in ops["fp32"])
    assert sum(v for k, v in ops["int8"].items() if k.startswith("constexpr")) >= 4
    assert ops["int8"]["linear"] == ops["fp32"]["linear"]
    weights = {p: (out / f"coreml/model_{p}.mlpackage/Data/com.apple.CoreML/weights/weight.bin").stat().st_size
               for p in ("fp32", "int8")}
    assert weights["int8"] < 0.9 * weights["fp32"]  # the embedding tables stay fp32


def test_eval_and_loading_dispatch_on_family(made, capsys):
    model, pre = from_pretrained(made["folder"])
    assert getattr(model, "is_adapted", False) and pre.tokenizer.max_length == 16
    assert load_config(made["folder"]).source_class == "ViltForQuestionAnswering"
    assert main(["eval", "--model", str(made["folder"]), "--limit", "6", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "Agreement with the teacher per exit (the teacher: the model's own final exit" in out
    assert "ViltForQuestionAnswering" in out


def test_modality_pruning_is_refused_for_adapted_models(made, tmp_path):
    with pytest.raises(ConfigError, match="not supported yet"):
        export_bundle(made["folder"], tmp_path / "b.mmedge",
                      ExportRecipe(targets=["onnx"], drop_visual_after=0, **SMALL), log=lambda *_: None)


# ---------------------------------------------------------------------------------------------- NLVR2, retrieval
HF_CLASSES = {"nlvr2": "ViltForImagesAndTextClassification", "retrieval": "ViltForImageAndTextRetrieval"}
PARITY: dict[str, float] = {}  # "task/precision" -> max |Engine - transformers| at full depth (printed)


@pytest.fixture(scope="module")
def kinds(tmp_path_factory):
    """An NLVR2 folder (parity data: an NLVR2 dataset, the scenes have no two-image task) and a retrieval
    folder (keep ratio 1.0 only, to save time), each exported to ONNX fp32 and int8."""
    root = tmp_path_factory.mktemp("adapt_export_kinds")
    make_nlvr2(root / "nlvr2", 3, "train")
    make_nlvr2(root / "nlvr2", 3, "dev")
    out = {}
    for task, data in (("nlvr2", f"nlvr2:{root / 'nlvr2'}"), ("retrieval", "scenes")):
        source, folder = adapted_folder(root / task, task)
        recipe = root / f"{task}.json"
        ratios = {"keep_ratios": [1.0]} if task == "retrieval" else {}
        recipe.write_text(json.dumps({**SMALL, "data": data, **ratios, "in_graph": True}))  # NLVR2: skipped
        bundle = root / f"{task}.mmedge"
        assert main(["export", "--model", str(folder), "--out", str(bundle), "--target", "onnx", "--quantize", "int8",
                     "--recipe", str(recipe)]) == 0
        out[task] = {"source": source, "folder": folder, "bundle": bundle, "root": root}
    return out


@pytest.mark.parametrize("which", ["vqa", "retrieval"])
def test_in_graph_form_of_an_adapted_model_answers_as_the_staged_chain(made, kinds, tmp_path, which):
    """The in-graph ONNX form (exits as If branches) of an adapted one-image model, fp32 and int8 (quantized
    as the int8 stages are, its If branches too), checked at export, gives the staged chain's exit, answer,
    confidence, kept tokens and match score of the same precision at thresholds that stop at every exit;
    two-image bundles have none (the spec refuses it)."""
    if which == "vqa":
        bundle = tmp_path / "ig.mmedge"
        export_bundle(made["folder"], bundle,
                      ExportRecipe(targets=["onnx"], quantize="int8", **{**SMALL, "in_graph": True}), log=lambda *_: None)
        ratios = [1.0, 0.5]
    else:
        bundle, ratios = kinds["retrieval"]["bundle"], [1.0]
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert sorted(float(r) for r in manifest["in_graph"]["by_keep_ratio"]) == sorted(ratios)
    assert manifest["in_graph"]["check"]["passed"]
    for entry in manifest["in_graph"]["by_keep_ratio"].values():
        assert entry["check"]["passed"] and entry["int8_check"]["passed"]
        assert entry["int8_file"].startswith("onnx/int8/") and entry["int8_ops"].get("MatMulInteger", 0) > 0
    assert "in_graph" not in json.loads((kinds["nlvr2"]["bundle"] / "manifest.json").read_text())
    imgs = images(len(TEXTS), 40)
    for ratio, precision in [(r, p) for r in ratios for p in ("fp32", "int8")]:
        staged = Engine.load(bundle, backend="onnxruntime", keep_ratio=ratio, precision=precision)
        fused = Engine.load(bundle, backend="onnxruntime", keep_ratio=ratio, mode="in-graph", precision=precision)
        exits = set()
        for image, text in zip(imgs, TEXTS):
            confidences = staged.all_exits(staged.preprocess(image, text), ratio).confidences
            for threshold in sorted(set(confidences)) + [1.0]:
                policy = Policy("confidence", float(threshold))
                assert fused.uses_in_graph(policy, ratio, None)
                a, b = staged.predict(image, text, policy=policy), fused.predict(image, text, policy=policy)
                assert "in_graph" in b.timings_ms and "in_graph" not in a.timings_ms
                assert (b.exit_index, b.answer, b.kept_visual_tokens) == (a.exit_index, a.answer, a.kept_visual_tokens)
                assert b.confidence == pytest.approx(a.confidence, abs=1e-5)
                assert (b.match_score is None) == (a.match_score is None)
                if a.match_score is not None:
                    assert b.match_score == pytest.approx(a.match_score, abs=1e-5)
                exits.add(b.exit_index)
        assert exits == set(range(len(manifest["exit_layers"])))  # every exit was taken at some threshold


def query(task: str, imgs: list, i: int):
    """Example i's image(s) as the Engine takes them: a list of two for NLVR2, one image otherwise."""
    return list(imgs[2 * i: 2 * i + 2]) if task == "nlvr2" else imgs[i]


@pytest.mark.parametrize("precision,tol", [("fp32", 1e-4), ("int8", 0.5)])
@pytest.mark.parametrize("task", ["nlvr2", "retrieval"])
def test_two_image_and_match_bundles_at_full_depth_equal_transformers(kinds, task, precision, tol):
    """NLVR2: predict([left, right], text), the 2-way softmax over the model's labels; retrieval: logits
    [0, s], match_score = sigmoid(s), "yes" above 0.5. The last exit at keep 1.0 is transformers' forward."""
    made = kinds[task]
    hf = getattr(transformers, HF_CLASSES[task]).from_pretrained(made["source"]).eval()
    imgs = images(2 * len(TEXTS) if task == "nlvr2" else len(TEXTS), 40)
    inputs = hf_inputs(made["source"], task, imgs, TEXTS)
    with torch.no_grad():
        ref = hf(**inputs).logits.numpy()  # NLVR2 (3, 2); retrieval (3, 1): the score s
    engine = Engine.load(made["bundle"], backend="onnxruntime", precision=precision, keep_ratio=1.0)
    worst = 0.0
    for i, text in enumerate(TEXTS):
        feeds = engine.preprocess(query(task, imgs, i), text)
        assert np.array_equal(feeds["pixel_values"], inputs["pixel_values"][i: i + 1].numpy())  # (1, 2, 3, S, S)
        last = np.asarray(engine.all_exits(feeds, 1.0).logits[-1]).reshape(-1)
        got = last if task == "nlvr2" else last[1:]
        worst = max(worst, float(np.abs(got - ref[i]).max()))
        full = engine.predict(query(task, imgs, i), text, policy="full")
        probs = np.exp(last - last.max()) / np.exp(last - last.max()).sum()
        assert full.max_probability == pytest.approx(float(probs.max()), abs=1e-6)
        if task == "nlvr2":
            assert full.match_score is None
            if precision == "fp32":
                assert full.answer == engine.labels[int(ref[i].argmax())]
        else:
            assert last[0] == 0.0 and engine.labels == ["no", "yes"]
            assert full.match_score == pytest.approx(1 / (1 + np.exp(-float(last[1]))), abs=1e-6)
            assert full.answer == ("yes" if full.match_score > 0.5 else "no")
            if precision == "fp32":
                assert full.match_score == pytest.approx(1 / (1 + np.exp(-float(ref[i, 0]))), abs=1e-5)
    PARITY[f"{task}/{precision}"] = worst
    print(f"parity {task}/{precision}: max |logits - transformers| {worst:.3g}")
    assert worst < tol, f"{task}/{precision}: max |logits - transformers| {worst:.3g}"


def test_manifests_state_two_images_and_the_match_head(kinds):
    m = json.loads((kinds["nlvr2"]["bundle"] / "manifest.json").read_text())
    assert (m["task"], m["labels"], m["preprocessing"]["num_images"]) == ("verify", ["False", "True"], 2)
    assert "head" not in m and m["model"]["config"]["task"] == "nlvr2"
    stage0 = m["stages"]["k8_stage0"]
    shapes = {t["name"]: t["shape"] for t in stage0["inputs"] + stage0["outputs"]}
    assert shapes["pixel_values"] == [1, 2, 3, 32, 32] and shapes["kept_index"] == [2, 8]
    assert shapes["hidden"] == [2, 16 + 1 + 8, 32] and shapes["logits"] == [1, 2]  # one sequence per image
    r = json.loads((kinds["retrieval"]["bundle"] / "manifest.json").read_text())
    assert (r["task"], r["labels"], r["head"], r["preprocessing"]["num_images"]) == ("match", ["no", "yes"],
                                                                                     "match-score", 1)
    assert {t["name"]: t["shape"] for t in r["stages"]["k16_stage1"]["outputs"]}["logits"] == [1, 2]  # [0, s]
    for manifest in (m, r):
        assert not validate_schema(manifest) and not consistency_problems(manifest)
        assert {a["precision"] for a in manifest["artifacts"] if a["runtime"] == "onnxruntime"} == {"fp32", "int8"}
        assert all(a["parity"]["passed"] for a in manifest["artifacts"])
    broken = json.loads(json.dumps(r))
    broken["labels"] = ["yes", "no"]
    assert any("match-score" in p for p in consistency_problems(broken))
    broken = json.loads(json.dumps(m))
    broken["stages"]["k8_stage0"]["inputs"][0]["shape"] = [1, 3, 32, 32]
    assert any("[1, 2, 3, 32, 32]" in p for p in consistency_problems(broken))
    broken = json.loads(json.dumps(m))
    broken["preprocessing"]["num_images"] = 3
    assert validate_schema(broken)


def test_two_images_are_a_list_and_another_count_is_refused(kinds, made):
    engine = Engine.load(kinds["nlvr2"]["bundle"], backend="onnxruntime")
    a, b, c = images(3, 40, seed=7)
    text = "is there a red circle left of the square"
    p = engine.predict([a, b], text)
    assert engine.predict((a, b), text).answer == p.answer and p.answer in engine.labels
    assert [q.answer for q in engine.predict_batch([([a, b], text)])] == [p.answer]
    half = engine.predict([a, b], text, keep_ratio=0.5)  # image i's patch j is i * 16 + j
    assert len(half.kept_visual_tokens) == 16 == len(set(half.kept_visual_tokens))
    assert max(half.kept_visual_tokens) < 32 and sum(t >= 16 for t in half.kept_visual_tokens) == 8
    for bad, got in ((a, 1), ([a], 1), ([a, b, c], 3)):
        with pytest.raises(ImageCountError, match=r"predict\(\[image_a, image_b\], text\)") as info:
            engine.predict(bad, text)
        assert (info.value.expected, info.value.got) == (2, got)
    vqa = Engine.load(made["onnx"], backend="onnxruntime")
    assert vqa.predict([a], text).answer == vqa.predict(a, text).answer
    with pytest.raises(ImageCountError, match="reads 1 image per query, got 2"):
        vqa.predict([a, b], text)


def test_nlvr2_export_needs_two_image_data(kinds, tmp_path):
    with pytest.raises(DatasetError, match="no nlvr2 task"):
        export_bundle(kinds["nlvr2"]["folder"], tmp_path / "b.mmedge", ExportRecipe(targets=["onnx"], **SMALL),
                      log=lambda *_: None)
    assert not (tmp_path / "b.mmedge").exists()


# ---------------------------------------------------------------------------------------------- calibrate, bench
def answers_jsonl(root, n: int, split: str):
    """A JSON Lines dataset whose answers are the tiny VQA model's labels a0..a5."""
    from PIL import Image

    (root / "photos").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, image in enumerate(images(n, 40, seed=11)):
        Image.fromarray(image).save(root / "photos" / f"{split}{i}.png")
        rows.append(json.dumps({"image": f"photos/{split}{i}.png", "question": TEXTS[i % 3], "answer": f"a{i % 6}"}))
    (root / f"{split}.jsonl").write_text("\n".join(rows) + "\n")
    return root


def test_calibrate_an_adapted_bundle_against_its_teacher_or_its_data(made, tmp_path, capsys):
    from mmedge.bundle.manifest import load_manifest
    from mmedge.runtime.calibrate import calibrate

    bundle = tmp_path / "b.mmedge"
    shutil.copytree(made["onnx"], bundle)
    # the scenes' answers are not the tiny model's labels: against the data that bound would mean nothing
    assert main(["calibrate", "--artifact", str(bundle), "--samples", "100", "--dry-run", "--no-progress"]) == 2
    assert "--labels teacher" in capsys.readouterr().err
    # against the model's own full-depth answers (no labels needed), written into the manifest
    assert main(["calibrate", "--artifact", str(bundle), "--samples", "100", "--labels", "teacher",
                 "--max-drop", "0.05", "--no-progress"]) == 0
    assert "against its own full-depth answers" in capsys.readouterr().out
    th = load_manifest(bundle)["thresholds"]
    assert th["source"] == "calibrated" and th["calibration"]["labels"] == "teacher"
    assert th["calibration"]["reference_accuracy"] == 1.0 and th["keep_ratio"] in (1.0, 0.5)
    engine = Engine.load(bundle)  # verified as on any load; the calibrated policy is the default
    assert engine.policy.kind == th["policy"] and engine.keep_ratio == th["keep_ratio"]
    # against a dataset's answers (its raw images, stretched as the model's processor would)
    root = answers_jsonl(tmp_path / "own", 110, "val")
    result = calibrate(bundle, samples=100, data=f"jsonl:{root}", write=False, progress=False)
    assert (result["samples"], result["labels"], result["data"]) == (100, "data", "jsonl")
    assert result["chosen"] is not None and 0 <= result["reference_accuracy"] <= 1


def test_calibrate_and_bench_two_image_and_match_bundles(kinds, tmp_path):
    from mmedge.bench.host import bench_host
    from mmedge.runtime.calibrate import calibrate

    root = make_nlvr2(tmp_path / "nlvr2", 50, "dev")  # 100 validation pairs
    bundle = kinds["nlvr2"]["bundle"]
    result = calibrate(bundle, samples=100, data=f"nlvr2:{root}", labels="teacher", write=False, progress=False)
    assert result["samples"] == 100 and result["reference_accuracy"] == 1.0 and result["chosen"] is not None
    bench = bench_host(bundle, "onnxruntime", samples=4, repeats=1, warmup=1, progress=False, data=f"nlvr2:{root}")
    assert bench["queries"]["n"] == 4 and set(bench["exit_latency"]) == {"1.0", "0.5"}
    assert bench["policies"]["full depth, every token"]["kept_tokens"] == 32  # 16 patches x 2 images
    # retrieval on the scenes' matching captions (their yes / no answers are the bundle's labels)
    bundle = kinds["retrieval"]["bundle"]
    result = calibrate(bundle, samples=100, write=False, progress=False)
    assert result["samples"] == 100 and result["labels"] == "data" and result["chosen"] is not None
    bench = bench_host(bundle, "onnxruntime", samples=4, repeats=1, warmup=1, progress=False)
    assert bench["queries"]["data"] == "scenes" and bench["queries"]["out_of_vocabulary"] == 0


def test_bench_on_the_host_measures_each_exit_of_an_adapted_bundle(made, tmp_path, capsys):
    from mmedge.bench.report import validate

    root = answers_jsonl(tmp_path / "own", 8, "test")
    out = tmp_path / "bench.json"
    assert main(["bench", "--artifact", str(made["onnx"]), "--device", "host", "--data", f"jsonl:{root}",
                 "--samples", "6", "--repeats", "1", "--warmup", "1", "--json", str(out), "--no-progress"]) == 0
    assert "Latency to each exit" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert not validate(result)
    assert (result["queries"]["data"], result["queries"]["split"], result["queries"]["n"]) == ("jsonl", "test", 6)
    assert set(result["exit_latency"]) == {"1.0", "0.5"}
    for row in result["exit_latency"].values():
        assert len(row["p50_ms"]) == 2 and 0 < row["p50_ms"][0] <= row["p50_ms"][1]
    assert set(result["op_profile"]["stages"]) == {"k16_stage0", "k16_stage1"}
    # the scenes' answers are not this model's labels: refused before anything runs
    assert main(["bench", "--artifact", str(made["onnx"]), "--device", "host", "--samples", "4",
                 "--no-progress"]) == 2
    assert "labels" in capsys.readouterr().err


@pytest.mark.parametrize("verb", ["demo", "probe", "predict"])
def test_demo_probe_and_predict_refuse_an_adapted_folder_and_say_what_to_use(made, verb, tmp_path, capsys):
    from PIL import Image

    Image.fromarray(images(1, 40)[0]).save(tmp_path / "x.png")
    extra = {"demo": ["--out", str(tmp_path / "demo")], "probe": [],
             "predict": ["--image", str(tmp_path / "x.png"), "--text", "how many"]}[verb]
    assert main([verb, "--model", str(made["folder"]), *extra]) == 2
    err = capsys.readouterr().err
    assert "adapted by `mmedge adapt`" in err and "Traceback" not in err
    assert {"demo": "mmedge bench", "probe": "mmedge eval", "predict": "Engine.load"}[verb] in err
    assert not (tmp_path / "demo").exists()
    if verb == "demo":  # Python callers get the same refusal, before anything is exported
        from mmedge.demo import run_demo

        with pytest.raises(AdaptedModelUnsupported, match="mmedge bench"):
            run_demo(made["folder"], tmp_path / "demo", progress=False, log=lambda *_: None)
        assert not (tmp_path / "demo").exists()
    if verb == "probe":
        from mmedge.analysis.probe import probe

        model, pre = from_pretrained(made["folder"])
        with pytest.raises(AdaptedModelUnsupported):
            probe(model, pre, samples=4, progress=False)

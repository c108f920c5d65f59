"""The adapted encoders' golden vectors (tests/vectors/adapted, scripts/make_adapted_vectors.py): the
Python Engine on the committed tiny ViLT bundles (VQA, NLVR2 with two images per query, retrieval with
a match score) reproduces them, and they are what the references give: transformers' BertTokenizer
for the text, Pillow's bicubic resize and ViltImageProcessor for the images."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import PIL
import pytest
from PIL import Image

from mmedge.errors import ImageError, TextError
from mmedge.runtime.controller import Policy, decide_offline

ROOT = Path(__file__).resolve().parents[1]
VECTORS = ROOT / "tests/vectors/adapted"
TOKENIZER = json.loads((VECTORS / "tokenizer.json").read_text(encoding="utf-8"))
RESIZE = json.loads((VECTORS / "resize.json").read_text(encoding="utf-8"))
QUERIES = json.loads((VECTORS / "queries.json").read_text(encoding="utf-8"))
BUNDLE = ROOT / QUERIES["bundle"]
# the two-image (NLVR2) and match-score (retrieval) bundles' queries
KINDS = {kind: json.loads((VECTORS / f"queries-{kind}.json").read_text(encoding="utf-8"))
         for kind in ("nlvr2", "retrieval")}
# Pillow 13 changed the order of the two resize passes for images whose height shrinks much more
# than their width (vertical first): the vectors pin that order, which older Pillow does not run
PILLOW_13 = pytest.mark.skipif(int(PIL.__version__.split(".")[0]) < 13,
                               reason=f"the vectors pin Pillow 13's resize pass order; this is {PIL.__version__}")


def _script():
    spec = importlib.util.spec_from_file_location("make_adapted_vectors", ROOT / "scripts/make_adapted_vectors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SCRIPT = _script()


def _image(spec: dict) -> np.ndarray:
    return SCRIPT.generated(spec["width"], spec["height"], spec["channels"], spec["pattern"], spec["seed"])


def _sha(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _text(case: dict) -> str:
    return case["text"] if "text" in case else case["repeat"]["text"] * case["repeat"]["count"]


@pytest.fixture(scope="module")
def engine():
    pytest.importorskip("onnxruntime")
    from mmedge.runtime.engine import Engine

    return Engine.load(BUNDLE, backend="onnxruntime", fmt="onnx")


def test_the_vectors_were_made_from_this_bundle():
    manifest = (BUNDLE / "manifest.json").read_bytes()
    for doc in (TOKENIZER, RESIZE, QUERIES):
        assert doc["manifest_sha256"] == hashlib.sha256(manifest).hexdigest(), \
            "the bundle changed: run python scripts/make_adapted_vectors.py"
    m = json.loads(manifest)
    assert (m["preprocessing"]["resize"], m["preprocessing"]["fit"], m["tokenizer"]["kind"]) == \
        ("pillow-bicubic", "stretch", "bert-wordpiece")
    # three tiny bundles (VQA, NLVR2, retrieval; each about 0.5 MB with its torch/ copy) and their vectors
    assert sum(p.stat().st_size for p in VECTORS.rglob("*") if p.is_file()) < 2 << 20
    for bundle in [BUNDLE] + [ROOT / doc["bundle"] for doc in KINDS.values()]:
        assert sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file()) < 600_000, bundle
    assert len(TOKENIZER["cases"]) >= 60 and len(RESIZE["resample"]) >= 80 and len(QUERIES["queries"]) >= 5


def test_the_nlvr2_and_retrieval_vectors_were_made_from_their_bundles():
    for kind, doc in KINDS.items():
        bundle = ROOT / doc["bundle"]
        manifest = (bundle / "manifest.json").read_bytes()
        assert doc["manifest_sha256"] == hashlib.sha256(manifest).hexdigest(), \
            f"the {kind} bundle changed: run python scripts/make_adapted_vectors.py --kinds {kind}"
        m = json.loads(manifest)
        assert (m["preprocessing"]["resize"], m["tokenizer"]["kind"]) == ("pillow-bicubic", "bert-wordpiece")
        assert (m["task"], m["labels"], m["preprocessing"]["num_images"], m.get("head", "softmax")) == \
            (doc["task"], doc["labels"], doc["num_images"], doc["head"])
        assert {a["target"] for a in m["artifacts"]} == {"onnx", "torch"} and len(doc["queries"]) >= 5
        assert sorted(k["keep_ratio"] for k in m["keep_ratios"]) == [0.5, 1.0]
    assert (KINDS["nlvr2"]["task"], KINDS["nlvr2"]["num_images"], KINDS["nlvr2"]["head"]) == ("verify", 2, "softmax")
    assert (KINDS["retrieval"]["task"], KINDS["retrieval"]["labels"], KINDS["retrieval"]["head"]) == \
        ("match", ["no", "yes"], "match-score")


def test_generator_is_xorshift32():
    """The first bytes of seed 1 (what every runtime's generator is checked against too)."""
    assert SCRIPT.generated(4, 1, 1, "noise", 1).reshape(-1).tolist() == [0, 4, 157, 18]
    assert SCRIPT.generated(4, 1, 1, "binary", 1).reshape(-1).tolist() == [0, 0, 255, 0]
    assert SCRIPT.generated(8, 1, 1, "noise", 2024).reshape(-1).tolist() == [31, 159, 70, 141, 45, 99, 86, 53]


def test_tokenizer_cases_python_engine(engine):
    tok = engine.tokenizer
    assert tok.max_length == TOKENIZER["max_length"]
    for case in TOKENIZER["cases"]:
        text = _text(case)
        if "error" in case:
            with pytest.raises(TextError):
                engine.preprocess(np.full((32, 32, 3), 128, np.uint8), text)
            continue
        feeds = engine.preprocess(np.full((32, 32, 3), 128, np.uint8), text)
        assert feeds["input_ids"].reshape(-1).tolist() == case["input_ids"], repr(text[:80])
        assert feeds["text_mask"].reshape(-1).tolist() == case["text_mask"], repr(text[:80])
        pieces = tok.tokenize(text)
        assert (pieces if "tokens" in case else len(pieces)) == case.get("tokens", case.get("token_count"))
        assert case["truncated"] == (len(pieces) > tok.max_length - 2)


def test_tokenizer_cases_equal_transformers():
    """transformers' BertTokenizer, loading the bundle's own tokenizer files, gives the same ids,
    masks and pieces (the cases the generator kept; it leaves out any text where they differ)."""
    transformers = pytest.importorskip("transformers")
    reference = transformers.BertTokenizer.from_pretrained(BUNDLE / "torch")
    for case in TOKENIZER["cases"]:
        if "error" in case:
            continue
        text = _text(case)
        got = reference(text, padding="max_length", max_length=TOKENIZER["max_length"], truncation=True)
        assert got["input_ids"] == case["input_ids"], repr(text[:80])
        assert got["attention_mask"] == case["text_mask"], repr(text[:80])
        if "tokens" in case:
            assert reference.tokenize(text) == case["tokens"], repr(text)


@PILLOW_13
def test_resample_cases_equal_pillow():
    for case in RESIZE["resample"]:
        assert case["passes"] == SCRIPT.passes(case["width"], case["height"], case["out_width"], case["out_height"])
        src = Image.fromarray(_image(case), "RGB")
        out = np.asarray(src.resize((case["out_width"], case["out_height"]), Image.Resampling.BICUBIC))
        assert _sha(out) == case["sha256"], case


@PILLOW_13
def test_image_cases_python_engine(engine):
    """The Engine's preparation: the bicubic stretch (Pillow) then scale, mean and std; refusals."""
    pre = engine.manifest["preprocessing"]
    for case in RESIZE["images"]:
        image = _image(case)
        if case["refused"]:
            with pytest.raises(ImageError):
                engine.preprocess(image, "x")
            continue
        pixels = engine.preprocess(image, "x")["pixel_values"]
        assert _sha(pixels.astype("<f4")) == case["pixel_values_sha256"], case
        rgb = SCRIPT.stretched_rgb(image, engine.image_size)
        assert _sha(rgb) == case["resized_rgb_sha256"]
        x = (rgb.astype(np.float64) * pre["scale"]).astype(np.float32)
        x = (x - np.asarray(pre["mean"], np.float32)) / np.asarray(pre["std"], np.float32)
        assert np.array_equal(pixels[0], x.transpose(2, 0, 1))


def test_square_images_equal_vilt_image_processor(engine):
    transformers = pytest.importorskip("transformers")
    processor = transformers.ViltImageProcessor.from_pretrained(BUNDLE / "torch")
    seen = 0
    for case in RESIZE["images"]:
        if case["refused"] or case["channels"] != 3 or case["width"] != case["height"]:
            continue
        image = _image(case)
        ref = processor([image], return_tensors="np")["pixel_values"][0]
        assert np.array_equal(engine.preprocess(image, "x")["pixel_values"][0], ref)
        seen += 1
    assert seen >= 3


@PILLOW_13
def test_queries_python_engine(engine):
    tol = QUERIES["tolerance"]
    for q in QUERIES["queries"]:
        image = _image(q)
        feeds = engine.preprocess(image, q["text"])
        assert feeds["input_ids"].reshape(-1).tolist() == q["input_ids"]
        assert feeds["text_mask"].reshape(-1).tolist() == q["text_mask"]
        assert _sha(feeds["pixel_values"].astype("<f4")) == q["pixel_values_sha256"]
        assert _sha(SCRIPT.stretched_rgb(image, engine.image_size)) == q["resized_rgb_sha256"]
        for key, want in q["by_keep_ratio"].items():
            exits = engine.all_exits(feeds, float(key))
            assert exits.kept_visual_tokens == want["kept_index"]
            assert np.abs(np.stack(exits.logits) - np.asarray(want["logits"])).max() <= tol["logits_abs"]
            assert np.abs(np.asarray(exits.confidences) - want["confidence"]).max() <= tol["confidence_abs"]
            assert [engine.labels[a] for a in exits.answers] == want["answers"]
            for row in want["policies"]:
                policy = Policy(**row["policy"])
                i = decide_offline(policy, exits.answers, exits.confidences, exits.max_probabilities)
                assert (i, engine.labels[exits.answers[i]]) == (row["exit_index"], row["answer"]), row
        p = engine.predict(image, q["text"])
        assert (p.keep_ratio, p.exit_index, p.answer) == (q["default"]["keep_ratio"], q["default"]["exit_index"],
                                                          q["default"]["answer"])


def _kind_images(kind: str, q: dict):
    """A query's image argument: [left, right] for NLVR2, one image for retrieval; and the images."""
    arrays = [_image(spec) for spec in q["images"]] if kind == "nlvr2" else [_image(q)]
    return (arrays if kind == "nlvr2" else arrays[0]), arrays


@PILLOW_13
@pytest.mark.parametrize("kind", ["nlvr2", "retrieval"])
def test_nlvr2_and_retrieval_queries_python_engine(kind):
    """The Python Engine on the NLVR2 bundle (two images per query) and the retrieval bundle (a match
    score) reproduces their vectors: inputs bit for bit, every exit within tolerance, the policies'
    exits and answers, the match scores and the default prediction."""
    pytest.importorskip("onnxruntime")
    from mmedge.runtime.engine import Engine

    doc = KINDS[kind]
    engine = Engine.load(ROOT / doc["bundle"], backend="onnxruntime", fmt="onnx")
    tol, match = doc["tolerance"], doc["head"] == "match-score"
    N = (engine.image_size // engine.manifest["model"]["config"]["patch_size"]) ** 2
    for q in doc["queries"]:
        image, arrays = _kind_images(kind, q)
        feeds = engine.preprocess(image, q["text"])
        assert feeds["input_ids"].reshape(-1).tolist() == q["input_ids"]
        assert feeds["text_mask"].reshape(-1).tolist() == q["text_mask"]
        assert list(feeds["pixel_values"].shape) == q["pixel_values_shape"]
        assert _sha(feeds["pixel_values"].astype("<f4")) == q["pixel_values_sha256"]
        rgb = [_sha(SCRIPT.stretched_rgb(a, engine.image_size)) for a in arrays]
        assert rgb == (q["resized_rgb_sha256"] if kind == "nlvr2" else [q["resized_rgb_sha256"]])
        for key, want in q["by_keep_ratio"].items():
            exits = engine.all_exits(feeds, float(key))
            k = next(g["kept_tokens"] for g in engine.manifest["keep_ratios"] if g["keep_ratio"] == float(key))
            assert exits.kept_visual_tokens == want["kept_index"]
            for i in range(engine.num_images):  # image i's patch j is i * N + j, k per image
                assert sum(i * N <= t < (i + 1) * N for t in want["kept_index"]) == k
            assert np.abs(np.stack(exits.logits) - np.asarray(want["logits"])).max() <= tol["logits_abs"]
            assert np.abs(np.asarray(exits.confidences) - want["confidence"]).max() <= tol["confidence_abs"]
            assert [engine.labels[a] for a in exits.answers] == want["answers"]
            if match:
                scores = [engine._match_score(lg) for lg in exits.logits]
                assert all(lg[0] == 0.0 for lg in exits.logits)  # logits [0, s]
                assert np.abs(np.asarray(scores) - want["match_score"]).max() <= tol["logits_abs"]
            else:
                assert "match_score" not in want
            for row in want["policies"]:
                policy = Policy(**row["policy"])
                i = decide_offline(policy, exits.answers, exits.confidences, exits.max_probabilities)
                assert (i, engine.labels[exits.answers[i]]) == (row["exit_index"], row["answer"]), row
                if match:
                    assert abs(row["match_score"] - want["match_score"][i]) < 1e-12
                    assert row["answer"] == ("yes" if row["match_score"] > 0.5 else "no")
        p = engine.predict(image, q["text"])
        assert (p.keep_ratio, p.exit_index, p.answer) == (q["default"]["keep_ratio"], q["default"]["exit_index"],
                                                          q["default"]["answer"])
        if match:
            assert p.match_score == pytest.approx(q["default"]["match_score"], abs=tol["logits_abs"])
        else:
            assert p.match_score is None


def test_the_nlvr2_bundle_takes_two_images_and_refuses_another_count():
    pytest.importorskip("onnxruntime")
    from mmedge.errors import ImageCountError
    from mmedge.runtime.engine import Engine

    engine = Engine.load(ROOT / KINDS["nlvr2"]["bundle"], backend="onnxruntime", fmt="onnx")
    image, _ = _kind_images("nlvr2", KINDS["nlvr2"]["queries"][0])
    for bad in (image[0], image[:1], image + image[:1]):
        with pytest.raises(ImageCountError):
            engine.predict(bad, "x")


@pytest.mark.parametrize("key,value", [("lowercase", False), ("strip_accents", False), ("special_tokens", []),
                                       ("cls_id", 3), ("template", ["[CLS]", "$text"]),
                                       ("max_input_chars_per_word", 50)])
def test_misstated_tokenizer_settings_are_refused(tmp_path, key, value):
    """The same edits the JavaScript and Java tests make: refused with code tokenizer, naming the field."""
    pytest.importorskip("onnxruntime")
    import shutil

    from mmedge.errors import BundleError
    from mmedge.runtime.engine import Engine

    bundle = tmp_path / "b.mmedge"
    shutil.copytree(BUNDLE, bundle)
    m = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    m["tokenizer"][key] = value
    (bundle / "manifest.json").write_text(json.dumps(m), encoding="utf-8")
    with pytest.raises(BundleError) as info:
        Engine.load(bundle, backend="onnxruntime", self_check=False)
    assert info.value.code == "tokenizer" and key in str(info.value)

"""docs/bundle-format.md is what every runtime implements: its reference arithmetic equals the Python
runtime's bit for bit, the golden vectors hold for the Python Engine on the shipped bundle, and slim
bundles are bundles like any other."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmedge.data.preprocess import preprocess_image, resized_rgb
from mmedge.data.scenes import BACKGROUND

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "vectors" / "golden"
SPACES = {*range(0x9, 0xE), *range(0x1C, 0x20), 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029,
          0x202F, 0x205F, 0x3000}  # the spec's list


# ------------------------------------------------------------------ the spec's arithmetic, written out
Q = 22


def _coefficients(n: int, m: int) -> list[tuple[int, list[int]]]:
    scale = n / m
    fs = max(scale, 1.0)
    out = []
    for o in range(m):
        center = (o + 0.5) * scale
        lo = max(int(center - fs + 0.5), 0)
        count = min(int(center + fs + 0.5), n) - lo
        w = [max(1.0 - abs((lo + j - center + 0.5) * (1.0 / fs)), 0.0) for j in range(count)]
        total = sum(w)
        w = [x / total for x in w] if total else w
        out.append((lo, [int(x * (1 << Q) + 0.5) if x >= 0 else int(x * (1 << Q) - 0.5) for x in w]))
    return out


def _pass(rows: np.ndarray, coeffs) -> np.ndarray:
    """One 8-bit pass along axis 1 of (R, n, 3)."""
    out = np.empty((rows.shape[0], len(coeffs), 3), np.int64)
    for o, (lo, ks) in enumerate(coeffs):
        acc = np.full((rows.shape[0], 3), 1 << (Q - 1), np.int64)
        for j, k in enumerate(ks):
            acc += rows[:, lo + j] * k
        out[:, o] = np.clip(acc >> Q, 0, 255)
    return out


def spec_resize(square: np.ndarray, size: int) -> np.ndarray:
    """The spec's resize of a (n, n, 3) uint8 square: horizontal pass on the rows used, then vertical."""
    n = square.shape[0]
    if n == size:
        return square
    vertical = _coefficients(n, size)
    first, last = vertical[0][0], vertical[-1][0] + len(vertical[-1][1])
    rows = _pass(square[first:last].astype(np.int64), _coefficients(n, size))     # (last - first, size, 3)
    columns = _pass(rows.transpose(1, 0, 2), [(lo - first, ks) for lo, ks in vertical])  # (size, size, 3)
    return columns.transpose(1, 0, 2).astype(np.uint8)


def spec_composite(rgba: np.ndarray, pad) -> np.ndarray:
    a = rgba[..., 3:4].astype(np.int64)
    src = rgba[..., :3].astype(np.int64)
    coef1 = np.where(a > 0, a * 255 * 255 * 128 // np.maximum(a * 255 + 255 * (255 - a), 1), 0)
    t = src * coef1 + np.asarray(pad, np.int64) * (255 * 128 - coef1) + (128 << 7)
    out = ((((t >> 8) + t) >> 8) >> 7)
    return np.where(a == 0, np.asarray(pad, np.int64), out).astype(np.uint8)


def spec_pad(rgb: np.ndarray, pad) -> np.ndarray:
    h, w, _ = rgb.shape
    side = max(h, w)
    canvas = np.empty((side, side, 3), np.uint8)
    canvas[:] = pad
    y0, x0 = (side - h) // 2, (side - w) // 2
    canvas[y0:y0 + h, x0:x0 + w] = rgb
    return canvas


@pytest.mark.parametrize("h,w,size", [(96, 96, 96), (200, 300, 96), (97, 97, 96), (64, 64, 96), (95, 140, 96),
                                      (1000, 1000, 96), (13, 17, 96), (3000, 2000, 96), (300, 301, 48)])
def test_the_spec_resize_and_padding_are_pillows_bit_for_bit(h, w, size):
    rng = np.random.default_rng(h * 7919 + w)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    want = spec_resize(spec_pad(image, BACKGROUND), size)
    assert np.array_equal(resized_rgb(image, size), want)


def test_the_spec_normalisation_is_the_runtimes():
    image = np.random.default_rng(1).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    x = image.astype(np.float32) / np.float32(255)
    want = ((x - np.float32(0.5)) / np.float32(0.5)).transpose(2, 0, 1)
    assert np.array_equal(preprocess_image(image, 96), want)


def test_the_spec_alpha_composite_is_pillows_for_every_value_and_alpha():
    value, alpha = np.meshgrid(np.arange(256), np.arange(256))
    rgba = np.stack([value, 255 - value, value // 2, alpha], -1).astype(np.uint8)
    got = resized_rgb(Image.fromarray(rgba, "RGBA"), 256)
    assert np.array_equal(got, spec_composite(rgba, BACKGROUND))
    opaque = rgba.copy()
    opaque[..., 3] = 255
    assert np.array_equal(spec_composite(opaque, BACKGROUND), opaque[..., :3])  # identity when opaque


def test_the_spec_character_classes_are_pythons_over_every_code_point():
    word, space = re.compile(r"\w"), re.compile(r"\s")
    for cp in range(0x110000):
        c = chr(cp)
        assert bool(word.match(c)) == (unicodedata.category(c)[0] in "LN" or c == "_"), hex(cp)
        assert bool(space.match(c)) == (cp in SPACES), hex(cp)


# ------------------------------------------------------------------ golden vectors
def _golden():
    if not (GOLDEN / "queries.json").exists():
        pytest.fail("tests/vectors/golden/queries.json is missing: run python scripts/make_golden_vectors.py")
    return json.loads((GOLDEN / "queries.json").read_text())


def _sha(array) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def test_golden_vectors_belong_to_the_shipped_bundle():
    doc = _golden()
    manifest = ROOT / doc["bundle"] / "manifest.json"
    assert hashlib.sha256(manifest.read_bytes()).hexdigest() == doc["manifest_sha256"], \
        "the shipped bundle changed: regenerate the golden vectors (scripts/make_golden_vectors.py)"


@pytest.mark.slow
def test_the_python_engine_reproduces_the_golden_vectors():
    from mmedge.runtime.controller import Policy, decide_offline
    from mmedge.runtime.engine import Engine

    doc = _golden()
    engine = Engine.load(ROOT / doc["bundle"], backend="onnxruntime", fmt="onnx")
    tol = doc["tolerance"]
    checked = 0
    for q in doc["queries"]:
        image = Image.open(GOLDEN / q["image"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            feeds = engine.preprocess(image, q["text"])
        assert feeds["input_ids"].reshape(-1).tolist() == q["input_ids"], q["name"]
        assert feeds["text_mask"].reshape(-1).tolist() == q["text_mask"], q["name"]
        assert _sha(resized_rgb(image, engine.image_size)) == q["resized_rgb_sha256"], q["name"]
        assert _sha(feeds["pixel_values"].astype("<f4")) == q["pixel_values_sha256"], q["name"]
        for ratio, want in q["by_keep_ratio"].items():
            got = engine.all_exits(feeds, float(ratio))
            assert got.kept_visual_tokens == want["kept_index"]
            np.testing.assert_allclose(np.stack(got.logits), want["logits"], atol=tol["logits_abs"], rtol=0)
            np.testing.assert_allclose(got.confidences, want["confidence"], atol=tol["confidence_abs"], rtol=0)
            for row in want["policies"]:
                i = decide_offline(Policy(**row["policy"]), got.answers, got.confidences, got.max_probabilities)
                assert (i, engine.labels[got.answers[i]]) == (row["exit_index"], row["answer"]), (q["name"], row)
                checked += 1
        p = engine.predict(image, q["text"])
        assert (p.exit_index, p.answer, p.keep_ratio) == (q["default"]["exit_index"], q["default"]["answer"],
                                                           q["default"]["keep_ratio"])
    assert checked >= 100


def test_golden_tokenizer_cases():
    from mmedge.data.tokenizer import WordTokenizer
    from mmedge.errors import TextError

    doc = json.loads((GOLDEN / "tokenizer.json").read_text())
    tokenizer = WordTokenizer.load(ROOT / doc["tokenizer"])
    for case in doc["cases"]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if "error" in case:
                with pytest.raises(TextError):
                    tokenizer.encode(case["text"])
                continue
            ids, mask = tokenizer.encode(case["text"])
        assert (ids.tolist(), mask.tolist()) == (case["input_ids"], case["text_mask"]), case["text"]


# ------------------------------------------------------------------ slim bundles
@pytest.mark.slow
@pytest.mark.parametrize("runtime,fmt,precision", [("onnxruntime", "ort", "fp32"), ("onnxruntime", "onnx", "int8"),
                                                   ("executorch", "pte", "fp32"), ("torch", None, "fp32")])
def test_a_slim_bundle_loads_alone_and_answers_like_the_full_one(tiny_bundle, tmp_path, runtime, fmt, precision):
    from mmedge.bundle.manifest import load_manifest
    from mmedge.bundle.slim import bundle_bytes, slim_bundle
    from mmedge.runtime.controller import Policy
    from mmedge.runtime.engine import Engine

    out = slim_bundle(tiny_bundle, tmp_path / "slim.mmedge", runtime, fmt, precision, keep_ratios=[1.0])
    manifest = load_manifest(out)
    assert [a["runtime"] for a in manifest["artifacts"]] == [runtime]
    assert [k["keep_ratio"] for k in manifest["keep_ratios"]] == [1.0]
    assert manifest["thresholds"] == load_manifest(tiny_bundle)["thresholds"]
    assert bundle_bytes(out) < bundle_bytes(tiny_bundle) / 2
    full = Engine.load(tiny_bundle, backend=runtime, precision=precision, fmt=fmt, policy=Policy("full"))
    slim = Engine.load(out, policy=Policy("full"), precision=precision)
    image = np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    a, b = full.predict(image, "what color is the circle ?"), slim.predict(image, "what color is the circle ?")
    assert (a.answer, a.exit_index, a.kept_visual_tokens) == (b.answer, b.exit_index, b.kept_visual_tokens)


@pytest.mark.slow
def test_slim_bundle_keeps_the_in_graph_variant_and_refuses_what_it_cannot_keep(tiny_bundle, tmp_path):
    from mmedge.bundle.manifest import load_manifest
    from mmedge.bundle.slim import slim_bundle
    from mmedge.errors import ConfigError

    out = slim_bundle(tiny_bundle, tmp_path / "ig.mmedge", "onnxruntime", "ort", "fp32", [1.0], in_graph=True)
    entry = load_manifest(out)["in_graph"]["by_keep_ratio"]["1.0"]
    assert entry["file"].endswith(".ort") and (out / entry["file"]).is_file()
    assert "int8_file" in load_manifest(tiny_bundle)["in_graph"]["by_keep_ratio"]["1.0"]
    assert not [k for k in entry if k.startswith("int8_")]  # the int8 graph stays out of an fp32 slim bundle
    with pytest.raises(ConfigError, match="in-graph variant in fp32 only"):
        slim_bundle(tiny_bundle, tmp_path / "i8.mmedge", "onnxruntime", "onnx", "int8", [1.0], in_graph=True)
    with pytest.raises(ConfigError, match="keep ratio"):
        slim_bundle(tiny_bundle, tmp_path / "k.mmedge", "onnxruntime", "onnx", "fp32", [0.5])  # thresholds use 1.0
    with pytest.raises(ConfigError, match="no coreml/onnx"):
        slim_bundle(tiny_bundle, tmp_path / "c.mmedge", "coreml", "onnx", "fp32")
    assert not (tmp_path / "c.mmedge").exists() and not list(tmp_path.glob(".*partial*"))

"""Property-based fuzzing (hypothesis, bounded in examples and time): manifests, images and texts
give a result or a typed mmedge error, nothing else."""

from __future__ import annotations

import io
import json
import shutil
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mmedge.errors import MMEdgeError

pytestmark = pytest.mark.slow
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
IMAGE = np.zeros((48, 48, 3), np.uint8)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20) | st.sampled_from(["../x", "/etc/passwd", "onnx", "k36_stage0", "fp32", "torch"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


@pytest.fixture(scope="module")
def engine(tiny_bundle):
    from mmedge.runtime.engine import Engine

    return Engine.load(tiny_bundle, backend="onnxruntime")


@pytest.fixture(scope="module")
def fuzz_bundle(tiny_bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("fuzz") / "f.mmedge"
    shutil.copytree(tiny_bundle, out)
    return out


def _paths(value, path=()):
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, path + (key,))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _paths(item, path + (i,))


def test_fuzzed_manifests_load_and_predict_or_raise_typed_errors(tiny_bundle, fuzz_bundle):
    from mmedge.runtime.engine import Engine

    original = json.loads((tiny_bundle / "manifest.json").read_text())
    paths = [p for p in _paths(original) if p]

    @FUZZ
    @given(edits=st.lists(st.tuples(st.sampled_from(paths), json_values), min_size=1, max_size=3))
    def run(edits):
        manifest = json.loads(json.dumps(original))
        for path, value in edits:
            target = manifest
            try:
                for key in path[:-1]:
                    target = target[key]
                target[path[-1]] = value
            except (KeyError, IndexError, TypeError):
                continue  # an earlier edit replaced this path's parent
        (fuzz_bundle / "manifest.json").write_text(json.dumps(manifest))
        try:
            engine = Engine.load(fuzz_bundle)
            assert engine.predict(IMAGE, "is there a red circle ?").answer in engine.labels
        except MMEdgeError:
            pass  # a typed refusal is one of the two allowed outcomes

    run()


image_arrays = st.builds(
    lambda dtype, shape, fill, values: _array(dtype, shape, fill, values),
    st.sampled_from(["uint8", "uint16", "float32", "float64", "int32", "int64", "bool", "float16", "complex64"]),
    st.sampled_from([(48, 48, 3), (48, 48), (48, 48, 1), (48, 48, 4), (48, 48, 2), (7, 48, 3), (3, 48, 48),
                     (48,), (2, 2, 2, 2), (0, 48, 3), (100, 20, 3)]),
    st.sampled_from(["zeros", "ones", "random", "big", "negative", "nan", "inf"]),
    st.integers(0, 2**31 - 1))


def _array(dtype, shape, fill, seed):
    rng = np.random.default_rng(seed)
    base = {"zeros": np.zeros(shape), "ones": np.ones(shape), "random": rng.uniform(0, 1, shape),
            "big": rng.uniform(0, 255, shape), "negative": -rng.uniform(0, 5, shape),
            "nan": np.full(shape, np.nan), "inf": np.full(shape, np.inf)}[fill]
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return base.astype(dtype)


def _pil(mode: str, size: tuple[int, int], state: str, fmt: str):
    img = Image.new(mode, size)
    if state == "closed":
        img.close()
        return img
    if state in ("truncated", "lazy"):
        buffer = io.BytesIO()
        img.convert("RGB").save(buffer, fmt)
        data = buffer.getvalue()
        try:
            return Image.open(io.BytesIO(data[: max(len(data) // 2, 64)] if state == "truncated" else data))
        except OSError:
            return io.BytesIO(data)  # cut before the header ends: a file object, which predict refuses
    return img


pil_images = st.builds(_pil, st.sampled_from(["RGB", "RGBA", "L", "LA", "P", "CMYK", "I", "I;16", "F", "1",
                                              "YCbCr", "HSV"]),
                       st.tuples(st.integers(1, 80), st.integers(1, 80)),
                       st.sampled_from(["plain", "closed", "truncated", "lazy"]), st.sampled_from(["PNG", "JPEG"]))


@FUZZ
@given(image=image_arrays | pil_images | st.none() | st.integers() | st.text(max_size=10))
def test_fuzzed_images_predict_or_raise_typed_errors(engine, image):
    try:
        assert engine.predict(image, "what color is the circle ?").answer in engine.labels
    except MMEdgeError:
        pass  # a typed refusal is one of the two allowed outcomes


@FUZZ
@given(text=st.text(max_size=200) | st.none() | st.binary(max_size=20) | st.integers()
       | st.lists(st.text(max_size=5), max_size=3))
def test_fuzzed_texts_predict_or_raise_typed_errors(engine, text):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TextTruncatedWarning for long texts is expected
        try:
            assert engine.predict(IMAGE, text).answer in engine.labels
        except MMEdgeError:
            pass  # a typed refusal is one of the two allowed outcomes

"""The thin runtime: engine on each backend, the controller's shared vectors, calibration's bound,
torch-free use, concurrency and bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmedge.data.batches import build_batch, generate
from mmedge.errors import BundleError, ConfigError, ImageError, TextError
from mmedge.runtime.controller import ExitState, Policy, decide_offline, should_stop

VECTORS = Path(__file__).parent / "vectors" / "controller.json"


# ---------------------------------------------------------------- controller
@pytest.mark.parametrize("case", json.loads(VECTORS.read_text())["cases"], ids=lambda c: c["name"])
def test_controller_matches_the_shared_vectors(case):
    policy = Policy(**case["policy"])
    got = decide_offline(policy, case["answers"], case["confidences"], case["max_probabilities"], case.get("stage_ms"))
    assert got == case["expected_exit"]


@pytest.mark.parametrize("case", json.loads(VECTORS.read_text())["latency_budget_cases"], ids=lambda c: c["name"])
def test_latency_budget_matches_the_shared_vectors(case):
    """The budget as a running engine applies it: the next stage's expected time is the median of its
    last STAGE_TIME_WINDOW measured times, and a stage never measured does not stop the query."""
    from mmedge.runtime.controller import STAGE_TIME_WINDOW, decide_with_history

    assert json.loads(VECTORS.read_text())["stage_time_window"] == STAGE_TIME_WINDOW
    got = decide_with_history(Policy(**case["policy"]), case["answers"], case["confidences"],
                              case["max_probabilities"], case["stage_ms"], case["history_ms"])
    assert got == (case["expected_exit"], case["expected_next_ms"])


def test_controller_vectors_are_up_to_date():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_controller_vectors",
                                                  VECTORS.parents[2] / "scripts/make_controller_vectors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.dumps(module.make()) == VECTORS.read_text(), "run python scripts/make_controller_vectors.py"


def test_bad_policies_are_config_errors():
    with pytest.raises(ConfigError, match="unknown"):
        Policy("sometimes")
    with pytest.raises(ConfigError, match="budget_ms"):
        Policy("latency_budget")
    assert should_stop(Policy("full"), ExitState([1], [0.0], [0.0]), 1)  # the last exit always stops


# ---------------------------------------------------------------- engine
@pytest.fixture(scope="module")
def samples():
    return generate("vqa", 0, "test", range(12), 48)


def _reference(tiny_model_dir, samples, keep_ratio):
    from mmedge.models.predictor import TorchPredictor

    pred = TorchPredictor(tiny_model_dir)
    return [pred.predict(s.image, s.text, keep_ratio=keep_ratio) for s in samples]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnxruntime", "executorch", "torch"])
def test_engine_matches_pytorch_on_each_backend(backend, tiny_bundle, tiny_model_dir, samples):
    from mmedge.runtime.engine import Engine

    engine = Engine.load(tiny_bundle, backend=backend, policy=Policy("full"))
    assert engine.backend == backend
    for ratio in (1.0, 0.5):
        ref = _reference(tiny_model_dir, samples, ratio)
        for s, r in zip(samples, ref):
            p = engine.predict(s.image, s.text, keep_ratio=ratio)
            assert p.exit_index == 2 and p.exit_layer == 2
            assert p.answer == r.answer
            assert p.confidence == pytest.approx(r.exits[-1].confidence, abs=1e-4)
            assert p.kept_visual_tokens == (r.kept_visual_tokens or list(range(36)))
            assert set(p.timings_ms) == {"preprocess", "total", *engine.stages_for(ratio)}


@pytest.mark.slow
def test_policies_stop_where_they_should(tiny_bundle, samples):
    from mmedge.runtime.engine import Engine

    engine = Engine.load(tiny_bundle, backend="onnxruntime")
    s = samples[0]
    assert engine.predict(s.image, s.text, policy=Policy("confidence", threshold=0.0)).exit_index == 0
    assert engine.predict(s.image, s.text, policy=Policy("confidence", threshold=1.0001)).exit_index == 2
    exits = engine.all_exits(engine.preprocess(s.image, s.text))
    for policy in (Policy("patience", patience=2), Policy("max_probability", threshold=0.3)):
        expected = decide_offline(policy, exits.answers, exits.confidences, exits.max_probabilities)
        assert engine.predict(s.image, s.text, policy=policy).exit_index == expected
    budget = engine.predict(s.image, s.text, policy=Policy("latency_budget", threshold=0.0, budget_ms=1e-6))
    assert budget.exit_index == 0  # the first stage always runs, no second stage fits
    roomy = engine.predict(s.image, s.text, policy=Policy("latency_budget", threshold=0.0, budget_ms=1e6))
    assert roomy.exit_index == 2
    batch = engine.predict_batch([(x.image, x.text) for x in samples[:3]], policy=Policy("full"))
    assert [b.answer for b in batch] == [engine.predict(x.image, x.text, policy=Policy("full")).answer
                                          for x in samples[:3]]


@pytest.mark.slow
def test_runtime_preprocessing_is_the_training_preprocessing(tiny_bundle, samples):
    from mmedge.data.tokenizer import WordTokenizer
    from mmedge.runtime.engine import Engine

    engine = Engine.load(tiny_bundle, backend="onnxruntime")
    batch = build_batch(samples, WordTokenizer.load(tiny_bundle / "tokenizer.json"), 48)
    for i, s in enumerate(samples):
        feeds = engine.preprocess(s.image, s.text)
        np.testing.assert_array_equal(feeds["pixel_values"][0], batch.pixels[i])
        np.testing.assert_array_equal(feeds["input_ids"][0], batch.input_ids[i])
        np.testing.assert_array_equal(feeds["text_mask"][0], batch.text_mask[i])


@pytest.mark.slow
def test_concurrent_predictions_equal_sequential_ones(tiny_bundle, samples):
    from mmedge.runtime.engine import Engine

    for backend in ("onnxruntime", "executorch"):
        engine = Engine.load(tiny_bundle, backend=backend, policy=Policy("confidence", threshold=0.5))
        items = [(s.image, s.text) for s in samples] * 4

        def key(p):
            return (p.answer, round(p.confidence, 6), p.exit_index, tuple(p.kept_visual_tokens))

        sequential = [key(engine.predict(i, t)) for i, t in items]
        with ThreadPoolExecutor(max_workers=6) as pool:
            concurrent = [key(p) for p in pool.map(lambda it: engine.predict(*it), items)]
        assert concurrent == sequential


TORCH_BLOCKER = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, Block())
import numpy as np
from mmedge.runtime.engine import Engine
engine = Engine.load(sys.argv[1], backend="onnxruntime")
p = engine.predict(np.full((48, 48, 3), 90, np.uint8), "is there a red circle ?")
assert "torch" not in sys.modules
print("OK", p.answer, p.exit_index)
"""


@pytest.mark.slow
def test_runtime_runs_where_torch_cannot_be_imported(tiny_bundle):
    done = subprocess.run([sys.executable, "-c", TORCH_BLOCKER, str(tiny_bundle)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("OK ")


EXECUTORCH_THREADS = """
import os, sys
from mmedge.data.batches import generate
from mmedge.errors import BackendUnavailableError
from mmedge.runtime.engine import Engine
from executorch.extension.pybindings import portable_lib
wanted = (os.cpu_count() or 1) + 1  # not the pool's default size (one thread per core)
engine = Engine.load(sys.argv[1], backend="executorch", threads=wanted)
s = generate("vqa", 0, "test", [0], 48)[0]
engine.predict(s.image, s.text)
print("pool", portable_lib._threadpool_get_thread_count(), "wanted", wanted)
Engine.load(sys.argv[1], backend="executorch", threads=wanted)  # the same size again: fine
try:
    Engine.load(sys.argv[1], backend="executorch", threads=1)
except BackendUnavailableError as exc:
    print("refused:", exc)
"""


@pytest.mark.slow
def test_executorch_runs_on_the_threads_asked_for(tiny_bundle):
    """XNNPACK runs on ExecuTorch's own pool, which torch.set_num_threads does not reach: threads=N
    must size that pool, and a resize after a program ran (which crashes the runtime) is refused."""
    done = subprocess.run([sys.executable, "-c", EXECUTORCH_THREADS, str(tiny_bundle)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    pool, wanted = done.stdout.split("pool ")[1].split()[0], done.stdout.split("wanted ")[1].split()[0]
    assert pool == wanted
    assert "refused:" in done.stdout and "one thread pool per process" in done.stdout


# ---------------------------------------------------------------- bad input
@pytest.mark.slow
def test_bad_bundles_are_typed_errors(tiny_bundle, tmp_path):
    from mmedge.runtime.engine import Engine

    with pytest.raises(BundleError, match="does not exist"):
        Engine.load(tmp_path / "nowhere.mmedge")
    copy = tmp_path / "c.mmedge"
    shutil.copytree(tiny_bundle, copy)
    victim = next(copy.glob("onnx/fp32/*stage1.onnx"))
    victim.unlink()
    with pytest.raises(BundleError, match="missing"):
        Engine.load(copy, backend="onnxruntime")
    shutil.rmtree(copy)
    shutil.copytree(tiny_bundle, copy)
    (copy / "tokenizer.json").write_text((copy / "tokenizer.json").read_text().replace("circle", "circel"))
    with pytest.raises(BundleError, match="hash mismatch"):
        Engine.load(copy)
    shutil.rmtree(copy)
    shutil.copytree(tiny_bundle, copy)
    (copy / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        Engine.load(copy)
    engine = Engine.load(tiny_bundle, backend="onnxruntime")
    with pytest.raises(ConfigError, match="not exported"):
        engine.predict(np.zeros((48, 48, 3), np.uint8), "a", keep_ratio=0.3)
    with pytest.raises(BundleError, match="no artifact for backend"):
        Engine.load(tiny_bundle, backend="coreml", precision="fp32", fmt="onnx")


@pytest.mark.slow
def test_odd_images_and_text(tiny_bundle, tmp_path):
    from mmedge.runtime.engine import Engine

    engine = Engine.load(tiny_bundle, backend="onnxruntime")
    cmyk = Image.new("CMYK", (60, 40), (0, 255, 255, 0))  # refused: its colours depend on a profile
    sixteen = Image.fromarray(np.full((50, 50), 40000, np.uint16))
    for image in (sixteen, np.zeros((48, 48, 4), np.uint8)):
        assert engine.predict(image, "what color is the circle ?").answer in engine.labels
    for bad in (cmyk, Image.new("RGB", (1, 1)), np.zeros((20000, 9, 3), np.uint8), tmp_path / "missing.png"):
        with pytest.raises(ImageError):
            engine.predict(bad, "what color is the circle ?")
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(ImageError):
        engine.predict(tmp_path / "junk.png", "what color ?")
    with pytest.raises(TextError):
        engine.predict(np.zeros((48, 48, 3), np.uint8), "   ")


def test_coreml_backend_says_it_needs_macos(tiny_bundle):
    import platform

    from mmedge.errors import BackendUnavailableError
    from mmedge.runtime.engine import Engine

    if platform.system() == "Darwin":
        pytest.skip("Core ML runs on macOS")
    with pytest.raises(BackendUnavailableError, match="macOS"):
        Engine.load(tiny_bundle, backend="coreml")

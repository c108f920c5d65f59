"""The Engine runs the in-graph graph (exits as If branches) whenever the policy is one it expresses,
and its answers equal the staged chain's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmedge.data.batches import generate
from mmedge.runtime.controller import Policy
from mmedge.runtime.engine import Engine, float32_at_least

BUNDLE = Path(__file__).resolve().parents[1] / "models/vqa-default/bundles/vqa-default-onnx.mmedge"


@pytest.fixture(scope="module")
def engines():
    return (Engine.load(BUNDLE, backend="onnxruntime", mode="auto", threads=1),
            Engine.load(BUNDLE, backend="onnxruntime", mode="staged", threads=1))


@pytest.mark.parametrize("threshold", [0.0, 0.5, 0.9, 0.99, 1.01])
def test_in_graph_answers_equal_the_staged_chain(engines, threshold):
    auto, staged = engines
    assert set(auto.in_graph) == {0.25} and not staged.in_graph  # the shipped bundle has it for 0.25 only
    policy = Policy("confidence", threshold=min(threshold, 1.0001))
    for s in generate("vqa", 0, "test", range(12), auto.image_size):
        a = auto.predict(s.image, s.text, policy=policy, keep_ratio=0.25)
        b = staged.predict(s.image, s.text, policy=policy, keep_ratio=0.25)
        assert "in_graph" in a.timings_ms and "in_graph" not in b.timings_ms
        assert (a.answer, a.exit_index, a.kept_visual_tokens) == (b.answer, b.exit_index, b.kept_visual_tokens)
        assert a.confidence == pytest.approx(b.confidence, abs=1e-5)
        assert a.max_probability == pytest.approx(b.max_probability, abs=1e-5)


def test_policies_the_graph_cannot_express_run_staged(engines):
    auto, _ = engines
    s = generate("vqa", 0, "test", range(1), auto.image_size)[0]
    for policy in (Policy("max_probability", threshold=0.9), Policy("patience", patience=2), Policy("full")):
        assert "in_graph" not in auto.predict(s.image, s.text, policy=policy, keep_ratio=0.25).timings_ms
    # keep ratio 1.0 has no in-graph graph in this bundle: staged
    assert "in_graph" not in auto.predict(s.image, s.text, policy=Policy("confidence"), keep_ratio=1.0).timings_ms


def test_mode_in_graph_refuses_a_bundle_without_it_and_threshold_rounding(engines):
    from mmedge.errors import ConfigError

    with pytest.raises(ConfigError, match="mode 'fast' unknown"):
        Engine.load(BUNDLE, mode="fast")
    _, staged = engines
    manifest = staged.manifest
    staged.manifest = {**manifest, "in_graph": None}  # as a bundle exported without in_graph
    try:
        with pytest.raises(ConfigError, match="no in-graph graph"):
            staged._open_in_graph(None, required=True)
    finally:
        staged.manifest = manifest
    t = 0.9  # not a float32: the graph must get the float32 just above it
    v = float32_at_least(t)
    assert v.dtype == np.float32 and float(v[0]) >= t and float(np.nextafter(v[0], np.float32(0))) < t
    assert float(float32_at_least(0.5)[0]) == 0.5

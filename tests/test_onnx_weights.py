"""mmedge.export.onnx_weights: one shared external-data file for the graphs of a folder."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from mmedge.export.onnx_weights import WEIGHTS_FILE, share_weights


def _graph(path, weight: np.ndarray, bias: np.ndarray, name: str) -> None:
    """y = reshape(x @ W + b, shape): W and b float weights, shape an int64 constant."""
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "b"], ["a"]),
             helper.make_node("Reshape", ["a", "shape"], ["y"])]
    inits = [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "b"),
             numpy_helper.from_array(np.array([1, -1] + [1] * 30, np.int64), "shape")]
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.graph.value_info.append(helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, 64]))
    onnx.save_model(model, str(path))


def test_shared_weights_are_stored_once_and_the_graphs_still_run(tmp_path):
    rng = np.random.default_rng(0)
    w, other = rng.normal(size=(64, 64)).astype(np.float32), rng.normal(size=(64, 64)).astype(np.float32)
    b = rng.normal(size=(64,)).astype(np.float32)
    _graph(tmp_path / "a.onnx", w, b, "a")
    _graph(tmp_path / "b.onnx", w, b, "b")        # the same tensors: stored once
    _graph(tmp_path / "c.onnx", other, b, "c")    # another weight: stored too
    x = rng.normal(size=(1, 64)).astype(np.float32)
    before = {p: ort.InferenceSession(str(tmp_path / p)).run(None, {"x": x})[0] for p in ("a.onnx", "c.onnx")}

    shared = share_weights(tmp_path)
    assert shared == tmp_path / WEIGHTS_FILE
    # W, other and b once each (b is shared by all three graphs); 64-byte alignment between them
    assert 2 * w.nbytes + b.nbytes <= shared.stat().st_size < 2 * w.nbytes + b.nbytes + 3 * 64
    for name in ("a.onnx", "b.onnx", "c.onnx"):
        proto = onnx.load(str(tmp_path / name), load_external_data=False)
        kinds = {t.name: t.data_location for t in proto.graph.initializer}
        assert kinds["W"] == kinds["b"] == TensorProto.EXTERNAL
        assert kinds["shape"] == TensorProto.DEFAULT  # integers stay inline, where shape inference reads them
        assert not proto.graph.value_info             # dropped: onnxruntime infers them again
    for name, want in before.items():
        np.testing.assert_array_equal(ort.InferenceSession(str(tmp_path / name)).run(None, {"x": x})[0], want)
    size = shared.stat().st_size
    assert share_weights(tmp_path) == shared and shared.stat().st_size == size  # idempotent
    np.testing.assert_array_equal(ort.InferenceSession(str(tmp_path / "a.onnx")).run(None, {"x": x})[0],
                                  before["a.onnx"])
    assert not list(tmp_path.glob("*.tmp"))


def test_an_empty_folder_has_no_weights_file(tmp_path):
    assert share_weights(tmp_path) is None and not (tmp_path / WEIGHTS_FILE).exists()

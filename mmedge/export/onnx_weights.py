"""One copy of the weights for every ONNX graph of a precision (ONNX external data, shared).

Each keep ratio has its own stage graphs (static shapes) and the in-graph form repeats every stage,
so self-contained files store the same tensors many times. `share_weights` moves every weight tensor
of at least MIN_BYTES out of the graphs of one folder into one ``weights.bin`` beside them, each
distinct tensor once (by content), and points the graphs at it (offset, length). onnxruntime opens
such a graph from its path as usual; from bytes (onnxruntime-node, -web) the caller passes the
weights file as ``externalData`` under the name the graphs use, ``weights.bin``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from mmedge.export.tooling import require

WEIGHTS_FILE = "weights.bin"
ALIGN = 64        # every tensor starts at a multiple of this (aligned loads on every runtime)
MIN_BYTES = 64    # smaller tensors (scalars) stay in their graph
# weights only: integer tensors (shapes, pads, indices) stay in the graph, where onnxruntime's shape
# inference can read them (it does not read external data)
WEIGHT_TYPES = ("FLOAT", "FLOAT16", "BFLOAT16", "DOUBLE", "INT8", "UINT8")


def strip_node_metadata(graph) -> None:
    """Drop the exporter's metadata: per node (source locations, stack traces naming this machine's
    paths) and per graph (torch.export's signature listing every parameter, about 8.7 KB a stage),
    recursing into subgraphs: it outweighs a small stage's structure several times over."""
    del graph.metadata_props[:]
    for node in graph.node:
        del node.metadata_props[:]
        for attribute in node.attribute:
            if attribute.g is not None and attribute.g.ByteSize():
                strip_node_metadata(attribute.g)
            for sub in attribute.graphs:
                strip_node_metadata(sub)


def all_graphs(graph):
    """The graph and every subgraph (If branches, loops) inside it."""
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.g is not None and attribute.g.ByteSize():
                yield from all_graphs(attribute.g)
            for sub in attribute.graphs:
                yield from all_graphs(sub)


def _raw(tensor, numpy_helper) -> bytes:
    """The tensor's little-endian bytes as external data stores them."""
    if tensor.HasField("raw_data"):
        return tensor.raw_data
    array = numpy_helper.to_array(tensor)
    return array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()


def share_weights(folder: Path) -> Path | None:
    """Rewrite every ``*.onnx`` in `folder` to read its tensors from one shared ``weights.bin``.

    The graphs also drop their ``value_info`` (intermediate shapes the exporter and quantizer
    recorded; onnxruntime infers them again), a tenth of a small int8 stage's bytes, and the
    exporter's metadata (`strip_node_metadata`). Idempotent (graphs that already point at the file
    are read back and rewritten). Returns the weights file, or None when the folder has no graph.
    The graphs and the weights file are written to temporary names first and renamed into place."""
    onnx = require("onnx", "pip install onnx")
    numpy_helper = require("onnx.numpy_helper", "pip install onnx")
    files = sorted(folder.glob("*.onnx"))
    if not files:
        return None
    models = {path: onnx.load(str(path), load_external_data=True) for path in files}
    weights, written = folder / WEIGHTS_FILE, []
    index: dict[bytes, tuple[int, int]] = {}
    weight_types = {getattr(onnx.TensorProto, name) for name in WEIGHT_TYPES}
    offset = 0
    tmp_weights = weights.with_name(weights.name + ".tmp")
    with open(tmp_weights, "wb") as out:
        for model in models.values():
            for graph in all_graphs(model.graph):
                for tensor in graph.initializer:
                    if tensor.data_type not in weight_types:
                        continue
                    raw = _raw(tensor, numpy_helper)
                    if len(raw) < MIN_BYTES:
                        continue
                    key = hashlib.sha256(raw).digest() + f"{tensor.data_type}:{tuple(tensor.dims)}".encode()
                    if key not in index:
                        pad = -offset % ALIGN
                        out.write(b"\0" * pad)
                        offset += pad
                        index[key] = (offset, len(raw))
                        out.write(raw)
                        offset += len(raw)
                    start, length = index[key]
                    _point_at(tensor, onnx, start, length)
    for path, model in models.items():
        strip_node_metadata(model.graph)
        for graph in all_graphs(model.graph):
            del graph.value_info[:]
        tmp = path.with_name(path.name + ".tmp")
        onnx.save_model(model, str(tmp), save_as_external_data=False)
        written.append((tmp, path))
    os.replace(tmp_weights, weights)
    for tmp, path in written:
        os.replace(tmp, path)
    return weights


def _point_at(tensor, onnx, offset: int, length: int) -> None:
    """Make `tensor` read `length` bytes at `offset` of the shared weights file."""
    for field in ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
        tensor.ClearField(field)
    tensor.data_location = onnx.TensorProto.EXTERNAL
    del tensor.external_data[:]
    for key, value in (("location", WEIGHTS_FILE), ("offset", str(offset)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value

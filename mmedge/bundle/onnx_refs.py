"""Which files an ONNX graph reads besides itself (its external data), found without the onnx package.

An ONNX model is a protobuf ``ModelProto``; a tensor whose ``data_location`` is EXTERNAL names the
file holding its bytes in an ``external_data`` entry with key ``location``, resolved by onnxruntime
against the graph's folder. Such tensors can sit anywhere a tensor can: graph initializers, sparse
initializers, node attributes (``Constant``), subgraphs (``If``/``Loop`` branches, at any depth),
functions and training graphs. This reader walks exactly those messages of the wire format and
skips every other field by its length, so a graph's weights are never loaded. Field numbers are
onnx.proto's (onnx 1.x).

A bundle's graph may read only its artifact's listed ``external_data`` file
(docs/bundle-format.md): ``check_external_data`` refuses any other location (code ``unlisted``)
before a backend opens the graph.
"""

from __future__ import annotations

import mmap
import os
import posixpath
from pathlib import Path

from mmedge.errors import BundleError

MAX_NESTING = 64  # messages inside messages (subgraphs of subgraphs); real graphs use a few

# message kind -> {field number: kind of the embedded message}; every other field is skipped
_MODEL, _GRAPH, _NODE, _ATTRIBUTE, _TENSOR, _SPARSE, _FUNCTION, _TRAINING, _ENTRY = range(9)
_CHILDREN = {
    _MODEL: {7: _GRAPH, 20: _TRAINING, 25: _FUNCTION},
    _TRAINING: {1: _GRAPH, 2: _GRAPH},
    _FUNCTION: {7: _NODE, 11: _ATTRIBUTE},
    _GRAPH: {1: _NODE, 5: _TENSOR, 15: _SPARSE},
    _NODE: {5: _ATTRIBUTE},
    _ATTRIBUTE: {5: _TENSOR, 6: _GRAPH, 10: _TENSOR, 11: _GRAPH, 22: _SPARSE, 23: _SPARSE},
    _SPARSE: {1: _TENSOR, 2: _TENSOR},
}
_TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION, _EXTERNAL = 13, 14, 1


class _Malformed(ValueError):
    pass


def _varint(buf, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _Malformed("truncated or overlong varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(buf, start: int, end: int):
    """(field number, wire type, value) of one message; a length-delimited value is (start, end)."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos, end)
        elif wire == 1:
            value, pos = None, pos + 8
        elif wire == 5:
            value, pos = None, pos + 4
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            value, pos = (pos, pos + length), pos + length
        else:  # groups (3, 4) are not used by onnx.proto
            raise _Malformed(f"wire type {wire}")
        if pos > end or number == 0:
            raise _Malformed("a field runs past its message")
        yield number, wire, value


def _tensor_locations(buf, start: int, end: int) -> list[str | None]:
    """The `location` values of one TensorProto's external_data (None for an EXTERNAL tensor with none)."""
    locations, external = [], False
    for number, wire, value in _fields(buf, start, end):
        if number == _TENSOR_DATA_LOCATION and wire == 0:
            external = value == _EXTERNAL  # the last value wins, as in protobuf
        elif number == _TENSOR_EXTERNAL_DATA and wire == 2:
            key = text = None
            for n, w, v in _fields(buf, *value):
                if w == 2 and n in (1, 2):
                    s = bytes(buf[v[0]:v[1]]).decode("utf-8", "replace")
                    key, text = (s, text) if n == 1 else (key, s)
            if key == "location":
                locations.append(text)
    if external and not locations:
        locations.append(None)
    return locations


def external_locations(path: str | Path) -> list[str | None]:
    """Every external-data `location` the ONNX file at `path` names (None: a tensor stored
    externally without a location), in file order; [] when it has none. ValueError when the file is
    not a protobuf message."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return []
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            found: list[str | None] = []
            stack = [(_MODEL, 0, size, 0)]
            while stack:
                kind, start, end, depth = stack.pop()
                if depth > MAX_NESTING:
                    raise _Malformed(f"messages nested deeper than {MAX_NESTING}")
                if kind == _TENSOR:
                    found += _tensor_locations(buf, start, end)
                    continue
                children = _CHILDREN[kind]
                for number, wire, value in _fields(buf, start, end):
                    if wire == 2 and number in children:
                        stack.append((children[number], value[0], value[1], depth + 1))
            return found


def check_external_data(root: Path, graph: str, allowed: str | None) -> None:
    """Refuse (BundleError code "unlisted") an ONNX graph `graph` (a bundle member path) that reads
    external data from anything but `allowed` (the artifact's listed external_data, a member path;
    None: the graph may read none). Locations resolve against the graph's folder, as onnxruntime's."""
    try:
        locations = external_locations(Path(root) / graph)
    except (ValueError, OSError) as exc:
        raise BundleError(f"{graph} is not an ONNX model ({str(exc)[:120]}); export the bundle again",
                          code="self-check") from exc
    from mmedge.bundle.paths import member_problem

    folder = posixpath.dirname(graph)
    for location in dict.fromkeys(locations):
        target = None
        if location is not None and member_problem(location) is None:
            target = posixpath.join(folder, location) if folder else location
        if target is None or target != allowed:
            shown = "no location" if location is None else repr(location[:120])
            raise BundleError(f"{graph} reads external data from {shown}, which is not its artifact's listed "
                              f"external_data ({allowed or 'none'}); a graph may read only that file. Export the "
                              "bundle again", code="unlisted")

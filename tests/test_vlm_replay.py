"""The generative VLM graph-call recordings (tests/vectors/vlm/replay.json, scripts/make_vlm_replay.py;
the Android core's JVM tests replay them in VLMVectorsTest) belong to the committed bundle and vectors, are
well formed, and recording again from the committed bundle gives the same file (byte for byte on the
onnxruntime that made it). Fast: the tiny bundle records in a few seconds."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest

from mmedge.bench.machine import recorded_here

ROOT = Path(__file__).resolve().parents[1]
VECTORS = ROOT / "tests/vectors/vlm"
DOC = json.loads((VECTORS / "vectors.json").read_text())
REPLAY_FILE = VECTORS / "replay.json"

pytest.importorskip("onnxruntime")
pytest.importorskip("tokenizers")


def _script():
    spec = importlib.util.spec_from_file_location("make_vlm_replay", ROOT / "scripts/make_vlm_replay.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REPLAY = _script()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_replay_belongs_to_these_vectors_and_this_bundle_and_is_well_formed():
    doc = json.loads(REPLAY_FILE.read_text())
    stale = "replay.json is stale: run python scripts/make_vlm_replay.py"
    assert doc["format"] == REPLAY.FORMAT
    assert doc["manifest_sha256"] == DOC["manifest_sha256"] == _sha((ROOT / DOC["bundle"] / "manifest.json").read_bytes()), stale
    assert doc["vectors_sha256"] == _sha((VECTORS / "vectors.json").read_bytes()), stale
    assert doc["generations"] == sum(len(q["runs"]) for q in DOC["queries"]) + len(DOC["defaults"])
    assert doc["columns"] == REPLAY.COLUMNS
    assert doc["tensor_count"] == len(doc["tensors"]) < 1 << 15  # the JVM replay's float pattern needs < 2^16
    kinds = {k: 0 for k in REPLAY.COLUMNS}
    for row in doc["calls"]:
        kind = REPLAY.graph_kind(row[0])
        kinds[kind] += 1
        assert len(row) == len(REPLAY.COLUMNS[kind]), row[:3]
        for i, column in enumerate(REPLAY.COLUMNS[kind][1:], 1):  # every tensor index points into the table
            if column in REPLAY.ROWS + REPLAY.LAYERS or column == "exit_hidden":
                values = row[i] if isinstance(row[i], list) else [row[i]]
                assert values and all(0 <= v < doc["tensor_count"] for v in values), (row[0], column)
    assert kinds == doc["calls_by_kind"]
    assert sum(kinds.values()) == len(doc["calls"]) and doc["graph_runs"] > len(doc["calls"])
    assert REPLAY_FILE.stat().st_size < 2_000_000


def test_replay_records_again_to_the_same_file():
    """Recording again on the onnxruntime and CPU kernels that made the file gives it byte for byte (another
    version's or instruction set's float32 results may differ in the last bits, which changes tensor hashes:
    only the call structure is compared there)."""
    fresh = REPLAY.record()
    doc = json.loads(REPLAY_FILE.read_text())
    if recorded_here(doc):
        assert REPLAY.dumps(fresh) == REPLAY_FILE.read_text(), "run python scripts/make_vlm_replay.py"
    else:
        assert (fresh["generations"], fresh["graph_runs"], fresh["calls_by_kind"]) == \
            (doc["generations"], doc["graph_runs"], doc["calls_by_kind"])

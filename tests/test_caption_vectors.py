"""The captioning golden vectors (tests/vectors/caption/, scripts/make_caption_vectors.py) hold for the
Python CaptionEngine on the committed bundle, whose weights file is rebuilt from the shipped model's
safetensors: every caption's words, exits and text equal, confidences and scores within tolerance.
The graph-call recordings beside them (replay.json, scripts/make_caption_replay.py; the Android
core's JVM tests replay them) belong to these vectors and this bundle, and recording again gives
the same file."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from mmedge.bench.machine import kernel_isa, recorded_here

ROOT = Path(__file__).resolve().parents[1]
VECTORS = ROOT / "tests/vectors/caption"
DOC = json.loads((VECTORS / "vectors.json").read_text())
TOL = DOC["tolerance"]


def _script():
    spec = importlib.util.spec_from_file_location("make_caption_vectors", ROOT / "scripts/make_caption_vectors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SCRIPT = _script()


def _replay_script():
    spec = importlib.util.spec_from_file_location("make_caption_replay", ROOT / "scripts/make_caption_replay.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REPLAY = _replay_script()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    pytest.importorskip("safetensors")
    return SCRIPT.assemble_bundle(tmp_path_factory.mktemp("caption-vectors"))


@pytest.fixture(scope="module")
def engine(bundle):
    pytest.importorskip("onnxruntime")
    from mmedge.runtime.caption_engine import CaptionEngine

    return CaptionEngine.load(bundle, backend="onnxruntime")


def test_vectors_belong_to_the_committed_bundle():
    assert DOC["format"] == "mmedge-caption-vectors-1"
    manifest = (ROOT / DOC["bundle"] / "manifest.json").read_bytes()
    assert _sha(manifest) == DOC["manifest_sha256"], "the bundle changed: run python scripts/make_caption_vectors.py"
    m = json.loads(manifest)
    recipe = json.loads((ROOT / DOC["weights"]).read_text())
    listed = m["files"][recipe["file"]]
    assert (listed["bytes"], listed["sha256"]) == (recipe["bytes"], recipe["sha256"])
    assert m["weights_sha256"] == recipe["safetensors_sha256"] == _sha((ROOT / recipe["safetensors"]).read_bytes())
    # everything but the rebuilt weights is committed; small enough to keep in the repository
    assert not (ROOT / DOC["bundle"] / recipe["file"]).exists()
    assert sum(p.stat().st_size for p in VECTORS.rglob("*") if p.is_file()) < 2_000_000


def test_weights_rebuild_byte_for_byte(bundle):
    recipe = json.loads((ROOT / DOC["weights"]).read_text())
    data = (bundle / recipe["file"]).read_bytes()
    assert len(data) == recipe["bytes"] and _sha(data) == recipe["sha256"]


def test_images_and_pixels(engine):
    from mmedge.data.preprocess import resized_rgb

    for entry in DOC["images"]:
        image = SCRIPT.image_of(entry, VECTORS)
        assert _sha(np.ascontiguousarray(resized_rgb(image, engine.image_size)).tobytes()) == entry["resized_rgb_sha256"]
        assert _sha(engine.preprocess(image).astype("<f4").tobytes()) == entry["pixel_values_sha256"], entry["name"]


def test_encoder_outputs(engine):
    same_backend = recorded_here(DOC)
    for entry in DOC["images"]:
        pixels = engine.preprocess(SCRIPT.image_of(entry, VECTORS))
        for key, want in entry["by_keep_ratio"].items():
            out = engine.session.run(f"encoder_k{key}", {"pixel_values": pixels})
            for name, w in want["encoder"].items():
                a = out[name].astype("<f4")
                assert list(a.shape) == w["shape"]
                np.testing.assert_allclose(a.reshape(-1)[::DOC["sample_stride"]], w["sample"], rtol=0,
                                           atol=TOL["cross_abs"])
                if same_backend:  # the exact bytes hold for the onnxruntime and CPU kernels that made them
                    assert _sha(a.tobytes()) == w["sha256"], (entry["name"], key, name)


def test_every_caption(engine):
    from mmedge.caption.data import decode_caption
    from mmedge.caption.runtime import CaptionDecoder
    from mmedge.runtime.controller import Policy

    stats = {"captions": 0, "ids": 0, "max_conf_err": 0.0, "max_logprob_err": 0.0}
    for entry in DOC["images"]:
        image = SCRIPT.image_of(entry, VECTORS)
        pixels = engine.preprocess(image)
        for key, want in entry["by_keep_ratio"].items():
            decoder = CaptionDecoder(engine.session, engine.layout, f"k{key}")
            for r in want["runs"]:
                p = r["policy"]
                policy = Policy(p["kind"], threshold=p["threshold"], patience=p["patience"], budget_ms=p["budget_ms"])
                where = (entry["name"], key, p["kind"], r["kv"], r["beam"], r["max_len"])
                run = decoder.caption(pixels, policy, r["max_len"], r["beam"], r["kv"])
                assert run.tokens == r["tokens"], where
                assert run.exits == r["exits"], where
                assert decode_caption(engine.tokenizer, run.tokens) == r["text"], where
                assert [engine.tokenizer.vocab[w] for w in r["words"]] == r["tokens"], where
                err = max((abs(a - b) for a, b in zip(run.confidences, r["confidences"])), default=0.0)
                assert len(run.confidences) == len(r["confidences"]) and err <= TOL["confidence_abs"], where
                assert abs(run.logprob - r["logprob"]) <= TOL["logprob_abs"], where
                if r["beam"] == 1 and r["kv"] == "copy":  # the engine's own call gives the same
                    got = engine.caption(image, max_len=r["max_len"], policy=policy, keep_ratio=float(key), kv="copy")
                    assert (got.tokens, got.exits, got.text) == (r["tokens"], r["exits"], r["text"]), where
                    assert got.confidences == run.confidences, where
                stats["captions"] += 1
                stats["ids"] += len(r["tokens"])
                stats["max_conf_err"] = max(stats["max_conf_err"], err)
                stats["max_logprob_err"] = max(stats["max_logprob_err"], abs(run.logprob - r["logprob"]))
    assert stats["captions"] == sum(len(v["runs"]) for e in DOC["images"] for v in e["by_keep_ratio"].values())
    print(f"caption vectors: {stats}")


def test_replay_belongs_to_these_vectors_and_this_bundle():
    doc = json.loads((VECTORS / "replay.json").read_text())
    stale = "replay.json is stale: run python scripts/make_caption_replay.py"
    assert doc["format"] == REPLAY.FORMAT
    assert doc["manifest_sha256"] == DOC["manifest_sha256"], stale
    assert doc["vectors_sha256"] == _sha((VECTORS / "vectors.json").read_bytes()), stale
    assert doc["captions"] == sum(len(v["runs"]) for e in DOC["images"] for v in e["by_keep_ratio"].values())
    assert doc["columns"] == REPLAY.COLUMNS
    kinds = {"encoder": 0, "step": 0, "fill": 0}
    for row in doc["calls"]:
        kind = REPLAY.graph_kind(row[0])
        kinds[kind] += 1
        assert len(row) == len(REPLAY.COLUMNS[kind]), row[:3]
        for i, column in enumerate(REPLAY.COLUMNS[kind][1:], 1):  # every tensor index points into the table
            values = row[i] if isinstance(row[i], list) else [row[i]]
            if column in ("past_k", "past_v", "cross_k", "cross_v", "present_k", "present_v", "hidden", "hidden_in") \
                    or (column == "token | hidden_in" and not row[0].startswith("step0_")):
                assert all(0 <= v < len(doc["tensors"]) for v in values), (row[0], column)
    assert kinds == doc["calls_by_kind"]


@pytest.mark.slow
def test_replay_records_again_to_the_same_file(bundle):
    """Recording again on the onnxruntime that made the file gives it byte for byte (another version's
    float32 results may differ in the last bits, which changes tensor hashes: skipped there)."""
    import onnxruntime

    doc = json.loads((VECTORS / "replay.json").read_text())
    if not recorded_here(doc):
        pytest.skip(f"replay.json was recorded with {doc['backend']} on {doc.get('kernels', 'another CPU')}, this is "
                    f"onnxruntime {onnxruntime.__version__} on {kernel_isa()}")
    fresh = REPLAY.dumps(REPLAY.record())
    assert fresh == (VECTORS / "replay.json").read_text(), "run python scripts/make_caption_replay.py"

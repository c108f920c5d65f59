"""The generative VLM golden vectors (tests/vectors/vlm/, scripts/make_vlm_vectors.py) are what the Python
VLMEngine computes on the committed bundle: recomputed here from the committed files, every prompt's ids,
every generation's tokens, exits and text, the images' hashes, the kept-token counts, Pillow's LANCZOS
resizes and the tokenizer cases are the same (confidences and scores exactly with the onnxruntime that made
them, within tolerance with another). runtimes/js/test/vlm.test.mjs replays them on the JavaScript runtime."""

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
TOL = DOC["tolerance"]

pytest.importorskip("onnxruntime")
pytest.importorskip("tokenizers")


def _script():
    spec = importlib.util.spec_from_file_location("make_vlm_vectors", ROOT / "scripts/make_vlm_vectors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SCRIPT = _script()
BUNDLE = ROOT / DOC["bundle"]


def test_vectors_belong_to_the_committed_bundle_which_is_small():
    assert DOC["format"] == "mmedge-vlm-vectors-1"
    manifest = (BUNDLE / "manifest.json").read_bytes()
    assert hashlib.sha256(manifest).hexdigest() == DOC["manifest_sha256"], \
        "the bundle changed: run python scripts/make_vlm_vectors.py"
    m = json.loads(manifest)
    assert m["kind"] == "vlm" and m["preprocessing"]["resample"] == "lanczos"
    assert {(a["format"], a["precision"]) for a in m["artifacts"]} == {("onnx", "fp32"), ("ort", "fp32")}
    assert sum(p.stat().st_size for p in BUNDLE.rglob("*") if p.is_file()) < 1_000_000
    assert m["thresholds"]["threshold"] == DOC["thresholds"]["confidence"]


def _same_run(got: dict, want: dict, exact: bool, where: str) -> None:
    for key in ("tokens", "exits", "text", "kept_visual_tokens", "keep_ratio"):
        assert got.get(key) == want.get(key), (where, key, got.get(key), want.get(key))
    if exact:
        assert got == want, where
        return
    assert len(got["confidences"]) == len(want["confidences"])
    assert all(abs(a - b) <= TOL["confidence_abs"] for a, b in zip(got["confidences"], want["confidences"])), where
    if "logprob" in want:
        assert abs(got["logprob"] - want["logprob"]) <= TOL["logprob_abs"], where


def test_the_vectors_regenerate_from_the_committed_bundle():
    doc = SCRIPT.vectors(BUNDLE)
    # the exact bytes hold for the onnxruntime and the CPU kernels that made them
    exact = recorded_here(DOC)
    for key in ("format", "bundle", "manifest_sha256", "generator", "tolerance", "thresholds", "kept_tokens", "images"):
        assert doc[key] == DOC[key], key
    assert [(q["image"], q["prompt"], q["prompt_ids"]) for q in doc["queries"]] == \
        [(q["image"], q["prompt"], q["prompt_ids"]) for q in DOC["queries"]]
    for q, want in zip(doc["queries"], DOC["queries"]):
        assert len(q["runs"]) == len(want["runs"])
        for got, w in zip(q["runs"], want["runs"]):
            _same_run(got, w, exact, f"{q['image']} {q['prompt']} {w['policy']} {w['keep_ratio']} {w['beam']} {w['kv']}")
    for got, w in zip(doc["defaults"], DOC["defaults"]):
        _same_run(got, w, exact, f"default {w['call']} {w['image']}")
    if exact:
        assert doc == DOC
    # no setting hangs on a near tie with its threshold, and the policies did take early exits
    assert min(doc["margins"].values()) > 1e-5
    assert sum(e < 2 for q in doc["queries"] for r in q["runs"] for e in r["exits"]) > 50


def test_lanczos_resizes_and_tokenizer_cases_regenerate():
    assert SCRIPT.resize_vectors() == json.loads((VECTORS / "resize-lanczos.json").read_text())
    assert SCRIPT.tokenizer_vectors(BUNDLE) == json.loads((VECTORS / "tokenizer.json").read_text())

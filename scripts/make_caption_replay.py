"""Graph-call recordings for runtimes that cannot run ONNX here (the Android core on the JVM):
`python scripts/make_caption_replay.py` writes tests/vectors/caption/replay.json.

The Python CaptionEngine runs the committed captioning bundle (weights rebuilt as
scripts/make_caption_vectors.py does) through onnxruntime: its self-check, then every caption of
tests/vectors/caption/vectors.json (each image, keep ratio, policy, kv mode and search, checked
against the vectors as it goes). Every distinct graph call is recorded once, by its inputs, as one line of `calls` (the fields of
its graph kind in the order `columns` gives):

- a tensor a graph passes on (one layer's key or value cache `[1, H, P, hd]`, one layer's rows of
  `cross_k` / `cross_v` `[1, H, k, hd]`, a `hidden` `[1, 1, D]`) is an index into `tensors`, the
  first 16 hex digits of the SHA-256 of its float32 little-endian bytes; the zero cache a caption
  starts from is one of them (`zero_cache`);
- `pixel_values` is its full SHA-256 (what the runtime's preprocessing must give, bit for bit);
- `token` and `position` are their values (stage 0 takes `token`, later stages and `fill` `hidden_in`);
- of the outputs, the values a runtime reads are kept as they are: `logits` (float32
  little-endian, base64) and `confidence` (the float32 value); the others are tensor indices.

A replay runner answers a call only when its graph and every input (each layer of each cache, in
order) are those of a recorded call, so it fails on any call the reference runtime did not make:
a wrong exit, a skipped or extra `fill`, a cache row in the wrong place, a wrong token or position.
tests/test_caption_vectors.py checks that this file is up to date with the bundle and the vectors.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.util
import json
import tempfile
from pathlib import Path

import numpy as np

from mmedge.bench.machine import kernel_isa

ROOT = Path(__file__).resolve().parents[1]
VECTORS = ROOT / "tests/vectors/caption"
OUT = VECTORS / "replay.json"
FORMAT = "mmedge-caption-replay-1"
CACHE_INPUTS = ("past_k", "past_v", "cross_k", "cross_v")
TENSOR_DIGITS = 16
COLUMNS = {
    "encoder": ["graph", "pixel_values", "cross_k", "cross_v"],
    "step": ["graph", "token | hidden_in", "position", "past_k", "past_v", "cross_k", "cross_v",
             "hidden", "logits", "confidence", "present_k", "present_v"],
    "fill": ["graph", "hidden_in", "position", "past_k", "past_v", "present_k", "present_v"],
}


def _vectors_script():
    spec = importlib.util.spec_from_file_location("make_caption_vectors", ROOT / "scripts/make_caption_vectors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sha(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array, dtype="<f4").tobytes()).hexdigest()


def graph_kind(name: str) -> str:
    return "encoder" if name.startswith("encoder_") else "step" if name.startswith("step") else "fill"


class Recorder:
    """A session that records each distinct graph call (module doc) and passes the call on."""

    def __init__(self, session) -> None:
        self.session = session
        self.tensors: list[str] = []
        self.index: dict[str, int] = {}
        self.calls: dict[tuple, list] = {}
        self.runs = 0

    def tensor(self, array: np.ndarray) -> int:
        digest = sha(array)[:TENSOR_DIGITS]
        if digest not in self.index:
            self.index[digest] = len(self.tensors)
            self.tensors.append(digest)
        return self.index[digest]

    def known(self, array: np.ndarray, what: str) -> int:
        """An input tensor: a graph's output seen before, or the zero cache a caption starts from."""
        if sha(array)[:TENSOR_DIGITS] not in self.index and np.any(array):
            raise AssertionError(f"{what} is neither a recorded output nor zeros: the decoding chain is broken")
        return self.tensor(array)

    def run(self, name: str, feeds: dict) -> dict:
        self.runs += 1
        kind = graph_kind(name)
        expected = {"encoder": ["pixel_values"],
                    "step": ["token" if name.startswith("step0_") else "hidden_in", "position", *CACHE_INPUTS],
                    "fill": ["hidden_in", "position", "past_k", "past_v"]}[kind]
        if list(feeds) != expected:
            raise AssertionError(f"{name} is fed {list(feeds)}, not {expected}")
        row: list = [name]
        for key, value in feeds.items():
            if key == "pixel_values":
                row.append(sha(value))
            elif key in ("token", "position"):
                row.append(int(value[0]))
            elif key in CACHE_INPUTS:
                row.append([self.known(layer, f"{name} {key}[{j}]") for j, layer in enumerate(value)])
            else:  # hidden_in
                row.append(self.known(value, f"{name} hidden_in"))
        out = self.session.run(name, feeds)
        key = (name, json.dumps(row))
        if key in self.calls:
            return out
        for column in COLUMNS[kind][len(row):]:
            value = out[column]
            if column == "logits":
                row.append(base64.b64encode(np.ascontiguousarray(value, dtype="<f4").tobytes()).decode())
            elif column == "confidence":
                row.append(float(np.float32(value[0])))
            elif column == "hidden":
                row.append(self.tensor(value))
            else:  # per-layer caches or cross rows
                row.append([self.tensor(layer) for layer in value])
        self.calls[key] = row
        return out


def record(vectors: Path = VECTORS) -> dict:
    """The replay document for the committed bundle and vectors (module doc)."""
    import onnxruntime

    from mmedge.caption.runtime import CaptionDecoder
    from mmedge.runtime.caption_engine import CaptionEngine

    script = _vectors_script()
    doc = json.loads((vectors / "vectors.json").read_text())
    tol = doc["tolerance"]
    with tempfile.TemporaryDirectory(prefix="mmedge-caption-replay-") as tmp:
        bundle = script.assemble_bundle(Path(tmp), vectors)
        engine = CaptionEngine.load(bundle, backend="onnxruntime", self_check=False)
        L = engine.layout
        recorder = Recorder(engine.session)
        zero = recorder.tensor(np.zeros((1, L.num_heads, L.max_len, L.head_dim), np.float32))
        engine.session = recorder
        engine.self_check()
        captions = 0
        for entry in doc["images"]:
            pixels = engine.preprocess(script.image_of(entry, vectors))
            if sha(pixels) != entry["pixel_values_sha256"]:
                raise SystemExit(f"{entry['name']}: pixel_values differ from vectors.json; run make_caption_vectors.py")
            for key, want in entry["by_keep_ratio"].items():
                decoder = CaptionDecoder(recorder, L, f"k{key}")
                for r in want["runs"]:
                    run = decoder.caption(pixels, script._policy(r["policy"]), r["max_len"], r["beam"], r["kv"])
                    where = (entry["name"], key, r["policy"]["kind"], r["kv"], r["beam"], r["max_len"])
                    if run.tokens != r["tokens"] or run.exits != r["exits"] or any(
                            abs(a - b) > tol["confidence_abs"] for a, b in zip(run.confidences, r["confidences"])):
                        raise SystemExit(f"{where}: the caption differs from vectors.json; run make_caption_vectors.py")
                    captions += 1
    calls = list(recorder.calls.values())
    counts: dict[str, int] = {}
    for c in calls:
        counts[graph_kind(c[0])] = counts.get(graph_kind(c[0]), 0) + 1
    return {"format": FORMAT,
            "bundle": doc["bundle"],
            "manifest_sha256": doc["manifest_sha256"],
            "vectors_sha256": hashlib.sha256((vectors / "vectors.json").read_bytes()).hexdigest(),
            "backend": f"onnxruntime {onnxruntime.__version__} (Python, CPU)",
            "kernels": kernel_isa(),
            "rule": "each distinct graph call of the Python CaptionEngine's self-check and of every caption in "
                    "vectors.json, by its inputs, one per line in the order of `columns`: tensors are indices into "
                    "`tensors` (the first 16 hex digits of the SHA-256 of the float32 little-endian bytes of one "
                    "layer's cache [1, H, P, hd], one layer's cross rows [1, H, k, hd] or a hidden [1, 1, D]); "
                    "pixel_values its SHA-256; token and position their values; logits float32 little-endian in "
                    "base64; confidence the float32 value",
            "columns": COLUMNS, "zero_cache": zero,
            "captions": captions, "graph_runs": recorder.runs, "calls_by_kind": counts,
            "tensors": recorder.tensors, "calls": calls}


def dumps(doc: dict) -> str:
    """The document as written: one call per line (so a change shows as a few changed lines)."""
    head = {k: v for k, v in doc.items() if k != "calls"}
    text = json.dumps(head, indent=1)[:-2]
    rows = ",\n".join(json.dumps(c, separators=(",", ":")) for c in doc["calls"])
    return f"{text},\n \"calls\": [\n{rows}\n ]\n}}\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    doc = record()
    args.out.write_text(dumps(doc))
    print(f"wrote {args.out}: {len(doc['calls'])} distinct graph calls of {doc['graph_runs']} ({doc['calls_by_kind']}), "
          f"{len(doc['tensors'])} tensors, {doc['captions']} captions, {args.out.stat().st_size} bytes")


if __name__ == "__main__":
    main()

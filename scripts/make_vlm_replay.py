"""Graph-call recordings of the generative VLM vectors for runtimes that cannot run ONNX here (the Android
core on the JVM): `python scripts/make_vlm_replay.py` writes tests/vectors/vlm/replay.json.

The Python VLMEngine runs the committed bundle tests/vectors/vlm/tiny-smolvlm-onnx.mmedge through
onnxruntime (the onnx artifact, one thread): its self-check, then every generation of
tests/vectors/vlm/vectors.json (each query under each setting, and the bundle-default generate() and
caption() calls; checked against the vectors as it goes). Every distinct graph call is recorded once, by its
inputs, as one line of `calls` (the fields of its graph kind in the order `columns` gives):

- a float tensor a graph passes on is recorded by identity, not by value: one layer's key or value cache
  `[1, G, P, hd]`, one token's row `[D]` of `visual`, `embeds`, `hidden` or `hidden_in`, or an
  `exit_hidden` `[1, D]`. Each is an index into the table of distinct tensors (`tensor_count` of them, the
  first 16 hex digits of the SHA-256 of its float32 little-endian bytes in `tensors`); any all-zero tensor
  is index `zero` (the empty cache a generation starts from); `dim` is the decoder width D. A (1, T, D)
  tensor is the list of its T rows' indices, so the prompt's assembly (which embedding rows, which visual
  rows, in which order) is checked row by row;
- `pixel_values` is its full SHA-256 (what the runtime's preprocessing must give, bit for bit);
- `text_ids`, `ids` and `positions` are their values (lists), `slot` its value;
- of the outputs, the values a runtime reads are kept as they are: `scores` and `logits` (float32
  little-endian, base64) and `confidence` (the float32 value); the others are tensor indices.

A replay runner answers a call only when its graph and every input (each row and each cache layer, in
order) are those of a recorded call, so it fails on any call the reference runtime did not make: a wrong
kept visual token, position or slot, a wrong exit, a missing or extra `head` or `fill`, a cache layer
from the wrong hypothesis. tests/test_vlm_replay.py checks that this file is up to date with the bundle
and the vectors.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np

from mmedge.bench.machine import kernel_isa

ROOT = Path(__file__).resolve().parents[1]
VECTORS = ROOT / "tests/vectors/vlm"
OUT = VECTORS / "replay.json"
FORMAT = "mmedge-vlm-replay-1"
TENSOR_DIGITS = 16
COLUMNS = {
    "vision": ["graph", "pixel_values", "text_ids", "visual", "scores"],
    "embed": ["graph", "ids", "embeds"],
    "step": ["graph", "hidden_in", "positions", "slot", "past_k", "past_v",
             "hidden", "exit_hidden", "confidence", "present_k", "present_v"],
    "head": ["graph", "exit_hidden", "logits"],
    "fill": ["graph", "hidden_in", "positions", "slot", "past_k", "past_v", "present_k", "present_v"],
}
INPUTS = {kind: columns[1:{"vision": 3, "embed": 2, "step": 6, "head": 2, "fill": 6}[kind]]
          for kind, columns in COLUMNS.items()}
ROWS = ("visual", "embeds", "hidden", "hidden_in")       # (1, T, D): one index per row
LAYERS = ("past_k", "past_v", "present_k", "present_v")  # (n, 1, G, P, hd): one index per layer
VALUES = ("text_ids", "ids", "positions")                # int64 (1, T): the values


def _vectors_script():
    spec = importlib.util.spec_from_file_location("make_vlm_vectors", ROOT / "scripts/make_vlm_vectors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sha(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array, dtype="<f4").tobytes()).hexdigest()


def graph_kind(name: str) -> str:
    return next(k for k in ("vision", "embed", "step", "head", "fill") if name.startswith(k))


def b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype="<f4").tobytes()).decode()


class Recorder:
    """A session that records each distinct graph call (module doc) and passes the call on."""

    def __init__(self, session) -> None:
        self.session = session
        self.tensors: list[str] = []
        self.index: dict[str, int] = {}
        self.calls: dict[tuple, list] = {}
        self.runs = 0
        self.dim = 0                # D, the decoder width (the embed graph's last dimension)
        self.zero = self.tensor(np.zeros(1, np.float32))

    def tensor(self, array: np.ndarray) -> int:
        """The index of an output tensor (every all-zero tensor is `zero`)."""
        if self.tensors and not np.any(array):
            return self.zero
        digest = sha(array)[:TENSOR_DIGITS]
        if digest not in self.index:
            self.index[digest] = len(self.tensors)
            self.tensors.append(digest)
        return self.index[digest]

    def known(self, array: np.ndarray, what: str) -> int:
        """An input tensor: a graph's output seen before, or zeros."""
        if np.any(array) and sha(array)[:TENSOR_DIGITS] not in self.index:
            raise AssertionError(f"{what} is neither a recorded output nor zeros: the generation chain is broken")
        return self.tensor(array)

    def identify(self, name: str, column: str, value: np.ndarray, known: bool):
        one = (lambda a, what: self.known(a, what)) if known else (lambda a, what: self.tensor(a))
        if column in ROWS:
            assert value.ndim == 3 and value.shape[0] == 1, (name, column, value.shape)
            return [one(row, f"{name} {column}[{t}]") for t, row in enumerate(value[0])]
        if column in LAYERS:
            return [one(layer, f"{name} {column}[{j}]") for j, layer in enumerate(value)]
        return one(value, f"{name} {column}")  # exit_hidden

    def run(self, name: str, feeds: dict) -> dict:
        self.runs += 1
        kind = graph_kind(name)
        if list(feeds) != INPUTS[kind]:
            raise AssertionError(f"{name} is fed {list(feeds)}, not {INPUTS[kind]}")
        row: list = [name]
        for key, value in feeds.items():
            if key == "pixel_values":
                row.append(sha(value))
            elif key in VALUES:
                assert value.shape[0] == 1, (name, key, value.shape)
                row.append([int(x) for x in value[0]])
            elif key == "slot":
                row.append(int(value[0]))
            else:
                row.append(self.identify(name, key, value, known=True))
        out = self.session.run(name, feeds)
        if kind == "embed":
            self.dim = int(out["embeds"].shape[2])
        key = (name, json.dumps(row))
        if key in self.calls:
            return out
        for column in COLUMNS[kind][len(row):]:
            value = out[column]
            if column in ("scores", "logits"):
                row.append(b64(value[0]))
            elif column == "confidence":
                row.append(float(np.float32(value[0])))
            else:
                row.append(self.identify(name, column, value, known=False))
        self.calls[key] = row
        return out


def _same(where, g, want: dict, tol: dict) -> None:
    if g.tokens != want["tokens"] or g.exits != want["exits"] or g.text != want["text"] or \
            len(g.confidences) != len(want["confidences"]) or \
            any(abs(a - b) > tol["confidence_abs"] for a, b in zip(g.confidences, want["confidences"])):
        raise SystemExit(f"{where}: the generation differs from vectors.json; run make_vlm_vectors.py --vectors")


def record(vectors: Path = VECTORS) -> dict:
    """The replay document for the committed bundle and vectors (module doc)."""
    import onnxruntime

    from mmedge.runtime.vlm_engine import VLMEngine

    script = _vectors_script()
    doc = json.loads((vectors / "vectors.json").read_text())
    tol = doc["tolerance"]
    bundle = ROOT / doc["bundle"]
    engine = VLMEngine.load(bundle, backend="onnxruntime", fmt="onnx", threads=1, self_check=False)
    recorder = Recorder(engine.session)
    engine.session = recorder
    engine.self_check()
    specs = dict(script.IMAGES)
    generations = 0
    for q in doc["queries"]:
        image = script.generated(*specs[q["image"]])
        if engine.prompt_ids(q["prompt"]) != q["prompt_ids"]:
            raise SystemExit(f"{q['prompt']!r}: prompt ids differ from vectors.json")
        for s in q["runs"]:
            g = engine.generate(image, q["prompt"], s["max_new_tokens"], beam=s["beam"],
                                policy=script.to_policy(s["policy"]), keep_ratio=s["keep_ratio"], kv=s["kv"])
            _same((q["image"], q["prompt"], s["policy"]["kind"], s["keep_ratio"], s["kv"], s["beam"]), g, s, tol)
            generations += 1
    for d in doc["defaults"]:
        image = script.generated(*specs[d["image"]])
        g = engine.generate(image, d["prompt"]) if d["call"] == "generate" else \
            engine.caption(image, max_len=d["max_new_tokens"])
        _same((d["call"], d["image"]), g, d, tol)
        generations += 1
    calls = list(recorder.calls.values())
    counts: dict[str, int] = {}
    for c in calls:
        counts[graph_kind(c[0])] = counts.get(graph_kind(c[0]), 0) + 1
    return {"format": FORMAT,
            "bundle": doc["bundle"],
            "manifest_sha256": doc["manifest_sha256"],
            "vectors_sha256": hashlib.sha256((vectors / "vectors.json").read_bytes()).hexdigest(),
            "backend": f"onnxruntime {onnxruntime.__version__} (Python VLMEngine, CPU, 1 thread)",
            "kernels": kernel_isa(),
            "rule": "each distinct graph call of the Python VLMEngine's self-check and of every generation in "
                    "vectors.json (queries and defaults), by its inputs, one per line in the order of `columns`: "
                    "float tensors are indices into the table of distinct tensors (one per cache layer [1, G, P, hd], "
                    "per row [D] of a (1, T, D) tensor, or per exit_hidden [1, D]; every all-zero tensor is `zero`); "
                    "pixel_values its SHA-256; text_ids, ids, positions and slot their values; scores and logits "
                    "float32 little-endian in base64; confidence the float32 value",
            "columns": COLUMNS, "dim": recorder.dim, "zero": recorder.zero, "tensor_count": len(recorder.tensors),
            "generations": generations, "graph_runs": recorder.runs, "calls_by_kind": counts,
            "tensors": recorder.tensors, "calls": calls}


def dumps(doc: dict) -> str:
    """The document as written: one call per line (so a change shows as a few changed lines)."""
    head = {k: v for k, v in doc.items() if k not in ("calls", "tensors")}
    text = json.dumps(head, indent=1)[:-2]
    rows = ",\n".join(json.dumps(c, separators=(",", ":")) for c in doc["calls"])
    tensors = json.dumps(doc["tensors"], separators=(",", ":"))
    return f"{text},\n \"tensors\": {tensors},\n \"calls\": [\n{rows}\n ]\n}}\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    doc = record()
    args.out.write_text(dumps(doc))
    print(f"wrote {args.out}: {len(doc['calls'])} distinct graph calls of {doc['graph_runs']} ({doc['calls_by_kind']}), "
          f"{doc['tensor_count']} tensors, {doc['generations']} generations, {args.out.stat().st_size} bytes")


if __name__ == "__main__":
    main()

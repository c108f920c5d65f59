"""Per-operator time from ONNX Runtime's own profiler (chrome-trace JSON), per stage."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from mmedge.bundle.manifest import load_manifest
from mmedge.runtime.backends.base import require
from mmedge.runtime.backends.quiet import quiet_session_options


def _feeds(manifest: dict, stage: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {}
    for t in manifest["stages"][stage]["inputs"]:
        dtype = np.float32 if t["dtype"] == "float32" else np.int32
        if t["name"] in ("input_ids",):
            arr = np.zeros(t["shape"], dtype)
            arr[0, :6] = rng.integers(2, 20, 6)
        elif t["name"] in ("text_mask", "attention_mask"):
            arr = np.ones(t["shape"], dtype)
        else:
            arr = rng.standard_normal(t["shape"]).astype(dtype)
        out[t["name"]] = arr
    return out


def onnxruntime_op_profile(bundle: str | Path, precision: str = "fp32", keep_ratio: float | None = None,
                           runs: int = 50, threads: int | None = 1) -> dict:
    """{stage: {op_type: mean microseconds per run}} from onnxruntime profiling."""
    ort = require("onnxruntime", "pip install onnxruntime")
    bundle = Path(bundle)
    manifest = load_manifest(bundle)
    art = next(a for a in manifest["artifacts"] if a["runtime"] == "onnxruntime" and a["format"] == "onnx"
               and a["precision"] == precision)
    ratio = keep_ratio or manifest["thresholds"]["keep_ratio"]
    stages = next(k["stages"] for k in manifest["keep_ratios"] if k["keep_ratio"] == ratio)
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        for stage in stages:
            opts = quiet_session_options(ort.SessionOptions())
            opts.enable_profiling = True
            opts.profile_file_prefix = str(Path(tmp) / stage)
            if threads:
                opts.intra_op_num_threads = threads
            sess = ort.InferenceSession(str(bundle / art["stages"][stage]["file"]), opts,
                                        providers=["CPUExecutionProvider"])
            feeds = _feeds(manifest, stage)
            for _ in range(runs):
                sess.run(None, feeds)
            trace = json.loads(Path(sess.end_profiling()).read_text())
            per_op: dict[str, float] = {}
            for ev in trace:
                if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time"):
                    op = ev.get("args", {}).get("op_name", "?")
                    per_op[op] = per_op.get(op, 0.0) + float(ev["dur"]) / runs
            result[stage] = dict(sorted(per_op.items(), key=lambda kv: -kv[1]))
    return {"backend": "onnxruntime", "precision": precision, "keep_ratio": ratio, "runs": runs,
            "unit": "microseconds per run", "stages": result}

"""ONNX Runtime: one InferenceSession per stage file (.onnx or ORT format .ort)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmedge.runtime.backends.base import require

INSTALL = "pip install onnxruntime"


class OnnxRuntimeSession:
    backend = "onnxruntime"

    def __init__(self, files: dict[str, Path], threads: int | None = None) -> None:
        from mmedge.runtime.backends.quiet import quiet_session_options

        ort = require("onnxruntime", INSTALL)
        options = quiet_session_options(ort.SessionOptions())  # errors only: no "Removing initializer" lines
        # int8 bundles store convolution weights int8 behind DequantizeLinear (mmedge.export.onnx_target
        # store_conv_weights_int8): let onnxruntime fold them into fp32 weights once, at load, instead of
        # dequantizing on every call (its default keeps DequantizeLinear for QDQ fusion; these graphs have none)
        options.add_session_config_entry("session.disable_quant_qdq", "1")
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.stage_names = list(files)
        self._sessions = {name: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                          for name, path in files.items()}
        self._outputs = {name: [o.name for o in s.get_outputs()] for name, s in self._sessions.items()}

    def run(self, stage: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self._sessions[stage].run(None, feeds)
        return dict(zip(self._outputs[stage], values))


def open_session(root: Path, artifact: dict, threads: int | None = None) -> OnnxRuntimeSession:
    """Sessions over the artifact's stage files. Before any is opened, each ONNX graph's external
    data must be the artifact's listed `external_data` (onnxruntime would read whatever file a graph
    names beside it); ORT-format files (.ort) hold their own weights."""
    from mmedge.bundle.onnx_refs import check_external_data

    for entry in artifact["stages"].values():
        if not entry["file"].endswith(".ort"):
            check_external_data(Path(root), entry["file"], artifact.get("external_data"))
    return OnnxRuntimeSession({name: root / entry["file"] for name, entry in artifact["stages"].items()}, threads)

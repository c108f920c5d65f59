"""Core ML: one multifunction .mlpackage, one function per stage. Prediction needs macOS."""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np

from mmedge.errors import BackendUnavailableError
from mmedge.runtime.backends.base import require

INSTALL = "pip install coremltools"


class CoreMLSession:
    backend = "coreml"

    def __init__(self, package: Path, functions: dict[str, str]) -> None:
        if platform.system() != "Darwin":
            raise BackendUnavailableError(
                "Core ML prediction needs macOS (coremltools converts and saves on Linux but cannot run "
                "a model); use backend 'onnxruntime' or 'executorch' here")
        ct = require("coremltools", INSTALL)
        self.stage_names = list(functions)
        self._models = {name: ct.models.MLModel(str(package), function_name=fn) for name, fn in functions.items()}

    def run(self, stage: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self._models[stage].predict(feeds)
        return {k: np.asarray(v) for k, v in out.items()}


def open_session(root: Path, artifact: dict, threads: int | None = None) -> CoreMLSession:
    return CoreMLSession(root / artifact["file"], {n: e["function"] for n, e in artifact["stages"].items()})

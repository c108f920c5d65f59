"""One small wrapper per backend, all with the same call: run(stage_name, feeds) -> outputs.

Backends are imported lazily, so that using one never needs another (or torch, for onnxruntime).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from mmedge.errors import ConfigError
from mmedge.runtime.backends.base import StageSession

BACKENDS = {
    "onnxruntime": "mmedge.runtime.backends.onnxruntime_backend",
    "executorch": "mmedge.runtime.backends.executorch_backend",
    "coreml": "mmedge.runtime.backends.coreml_backend",
    "torch": "mmedge.runtime.backends.torch_backend",
}


def open_session(backend: str, root: Path, artifact: dict, threads: int | None = None) -> StageSession:
    """Open the stages of one manifest artifact entry (files relative to `root`) with `backend`."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend {backend!r} unknown; choose one of {sorted(BACKENDS)}", "arguments")
    module = importlib.import_module(BACKENDS[backend])
    return module.open_session(Path(root), artifact, threads)


__all__ = ["BACKENDS", "StageSession", "open_session"]

"""ExecuTorch: one .pte program, one method per stage (XNNPACK-delegated).

The executorch Python runtime exchanges torch tensors, so this backend needs torch installed
(the executorch package depends on it); the phone runtimes (Java/C++) do not.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from mmedge.runtime.backends.base import require

INSTALL = "pip install executorch"


class ExecuTorchSession:
    backend = "executorch"

    def __init__(self, program_file: Path, methods: dict[str, str], threads: int | None = None) -> None:
        runtime_mod = require("executorch.runtime", INSTALL)
        self._torch = require("torch", "pip install torch")
        if threads:
            self._torch.set_num_threads(threads)
        _check_program_header(program_file)
        self._program = runtime_mod.Runtime.get().load_program(str(program_file))
        self.stage_names = list(methods)
        self._method_names = methods
        self._methods: dict[str, object] = {}
        self._outputs: dict[str, list[str]] = {}
        self._lock = threading.Lock()  # an ExecuTorch method holds its own buffers: one call at a time

    def set_output_names(self, stage: str, names: list[str]) -> None:
        self._outputs[stage] = list(names)

    def run(self, stage: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        with self._lock:
            method = self._methods.get(stage)
            if method is None:
                method = self._methods[stage] = self._program.load_method(self._method_names[stage])
            inputs = [torch.from_numpy(np.ascontiguousarray(v)) for v in feeds.values()]
            values = [v.numpy().copy() for v in method.execute(inputs)]
        return dict(zip(self._outputs[stage], values))


def _check_program_header(path: Path) -> None:
    """Refuse a file that is not an ExecuTorch program before the native loader sees it: on a wrong
    flatbuffer identifier it logs the raw bytes and, when they are not UTF-8, aborts the process.
    (A crafted program with a valid header can still crash native code; signed bundles prevent that.)"""
    from mmedge.errors import BundleError

    with open(path, "rb") as f:
        head = f.read(8)
    if len(head) < 8 or head[4:6] != b"ET" or not head[6:8].isdigit():
        raise BundleError(f"{path.name} is not an ExecuTorch program (no ET flatbuffer identifier); export it again")


def open_session(root: Path, artifact: dict, threads: int | None = None) -> ExecuTorchSession:
    stages = artifact["stages"]
    session = ExecuTorchSession(root / artifact["file"], {n: e["method"] for n, e in stages.items()}, threads)
    for name, entry in stages.items():
        session.set_output_names(name, entry["outputs"])
    return session

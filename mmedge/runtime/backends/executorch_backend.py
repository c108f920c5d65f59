"""ExecuTorch: one .pte program, one method per stage (XNNPACK-delegated).

The executorch Python runtime exchanges torch tensors, so this backend needs torch installed
(the executorch package depends on it); the phone runtimes (Java/C++) do not.

Threads: XNNPACK runs on ExecuTorch's own thread pool, one per process, sized to the machine's
cores; ``torch.set_num_threads`` does not reach it. ``threads`` sizes that pool
(``set_executorch_threads``), so it applies to every ExecuTorch program in the process, and it can
be changed only before the first program runs.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from mmedge.runtime.backends.base import require
from mmedge.runtime.backends.quiet import library_imports, native_stderr

INSTALL = "pip install executorch"


class ExecuTorchSession:
    backend = "executorch"

    def __init__(self, program_file: Path, methods: dict[str, str], threads: int | None = None) -> None:
        with library_imports():  # torchao's and torch's import-time notices
            runtime_mod = require("executorch.runtime", INSTALL)
        self._torch = require("torch", "pip install torch")
        if threads:
            self._torch.set_num_threads(threads)
            set_executorch_threads(threads)
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
                with native_stderr():  # the first method makes the thread pool: cpuinfo's lines on fd 2
                    method = self._methods[stage] = self._program.load_method(self._method_names[stage])
                _loaded["methods"] += 1
            inputs = [torch.from_numpy(np.ascontiguousarray(v)) for v in feeds.values()]
            values = [v.numpy().copy() for v in method.execute(inputs)]
        return dict(zip(self._outputs[stage], values))


_loaded = {"methods": 0}  # ExecuTorch methods this process has loaded through mmedge


def set_executorch_threads(threads: int, missing_ok: bool = False) -> int | None:
    """Size ExecuTorch's process-wide thread pool (the one XNNPACK runs on) to `threads`; returns
    the size it has afterwards (None when executorch is missing and `missing_ok`).

    The pool can be resized only before the process loads its first ExecuTorch method: a resize
    after that crashes the native runtime (measured with executorch 1.5.1), so then anything but
    the current size is refused. Commands that run ExecuTorch with a thread count (``mmedge bench``,
    ``mmedge demo``, the benchmarks) call this first thing. The Python bindings expose the resize
    only as a private function: when a release drops it, say so rather than run on every core."""
    from mmedge.errors import BackendUnavailableError

    try:
        with library_imports():
            bindings = require("executorch.extension.pybindings.portable_lib", INSTALL)
    except ImportError:
        if missing_ok:
            return None
        raise
    reset = getattr(bindings, "_unsafe_reset_threadpool", None)
    count = getattr(bindings, "_threadpool_get_thread_count", None)
    if count is not None:
        with native_stderr():  # reading the size makes the pool: cpuinfo's lines on fd 2
            current = count()
        if current == threads:
            return threads
    if reset is None or count is None:
        raise BackendUnavailableError(
            "this executorch cannot set its thread count; install executorch==1.5.1, "
            "or load the bundle with threads=None (the pool's default: one thread per core)")
    if _loaded["methods"]:
        raise BackendUnavailableError(
            f"ExecuTorch runs every program on one thread pool per process, and this process already "
            f"ran ExecuTorch on {count()} thread(s); resizing the pool now would crash it. Load with "
            f"threads={count()} or threads=None, or call set_executorch_threads({threads}) "
            "(mmedge.runtime.backends.executorch_backend) before the first ExecuTorch bundle runs")
    with native_stderr():  # "Resetting threadpool to N threads." on fd 2
        reset(threads)
    return count()


def _check_program_header(path: Path) -> None:
    """Refuse a file that is not an ExecuTorch program before the native loader sees it: on a wrong
    flatbuffer identifier it logs the raw bytes and, when they are not UTF-8, aborts the process.
    (A crafted program with a valid header can still crash native code; signed bundles prevent that.)"""
    from mmedge.errors import BundleError

    with open(path, "rb") as f:
        head = f.read(8)
    if len(head) < 8 or head[4:6] != b"ET" or not head[6:8].isdigit():
        raise BundleError(f"{path.name} is not an ExecuTorch program (no ET flatbuffer identifier); export it again",
                          code="self-check")


def open_session(root: Path, artifact: dict, threads: int | None = None) -> ExecuTorchSession:
    stages = artifact["stages"]
    session = ExecuTorchSession(root / artifact["file"], {n: e["method"] for n, e in stages.items()}, threads)
    for name, entry in stages.items():
        session.set_output_names(name, entry["outputs"])
    return session

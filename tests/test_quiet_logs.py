"""What a user's terminal shows during `mmedge export` and `mmedge demo`: mmedge's own lines, none of
the libraries' routine notices (mmedge.runtime.backends.quiet says where each is quietened).

The commands run in fresh processes, so that what they print to either file descriptor is what a
terminal would show: native libraries print once per process (ExecuTorch's thread pool is made once),
which a test inside the pytest process, where it already exists, would never see.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from mmedge.runtime.backends.quiet import EXECUTORCH_NOISE, native_stderr

NOISE = re.compile(r"Removing initializer|CleanUnusedInitializers|\[W:onnxruntime|cpuinfo_utils|threadpool\.cpp|"
                   r"_pytree|is an Enum subclass|Failed to load .*torchao|ExperimentalWarning|"
                   r"This API is experimental|DeprecationWarning|ort_format_model|\[INFO\]")


def mmedge(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": ""}
    return subprocess.run([sys.executable, "-m", "mmedge", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def noise(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (proc.stdout + proc.stderr).splitlines() if NOISE.search(line)]


@pytest.mark.slow
def test_export_and_demo_print_no_library_noise(tiny_model_dir, tmp_path):
    # every source of noise at once: ONNX stages, the ORT-format converter, the in-graph graph and its
    # check session, ExecuTorch lowering (torchao imported) and its parity run (the thread pool made)
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"targets": ["onnx", "executorch"], "keep_ratios": [1.0], "parity_samples": 4,
                                  "drop_visual_after": 0, "drop_visual_samples": 16}))
    bundle = tmp_path / "demo" / f"{tiny_model_dir.name}.mmedge"
    export = mmedge("export", "--model", str(tiny_model_dir), "--recipe", str(recipe), "--out", str(bundle))
    assert export.returncode == 0, export.stderr[-3000:]
    assert "parity executorch/pte/fp32" in export.stdout and "in-graph exits" in export.stdout
    assert noise(export) == [], noise(export)
    assert export.stderr == ""
    # the demo reuses that bundle (same weights, same pruning stage), calibrates and runs both runtimes
    demo = mmedge("demo", "--model", str(tiny_model_dir), "--out", str(tmp_path / "demo"), "--samples", "3",
                  "--calibration-samples", "100", "--no-progress")
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert "reusing the verified bundle" in demo.stdout and "executorch" in demo.stdout
    assert noise(demo) == [], noise(demo)
    assert demo.stderr == ""


def test_native_stderr_drops_only_the_routine_lines(capfd):
    """The descriptor-level capture keeps every line that is not routine, and everything on an error."""
    with native_stderr():
        os.write(2, b"[cpuinfo_utils.cpp:71] Reading file /sys/devices/soc0/image_version\n"
                    b"[method.cpp:42] a real problem\n[threadpool.cpp:66] Resetting threadpool to 1 threads.\n")
    assert capfd.readouterr().err == "[method.cpp:42] a real problem\n"
    with pytest.raises(RuntimeError):
        with native_stderr():
            os.write(2, b"[cpuinfo_utils.cpp:87] Failed to open midr file\n")
            raise RuntimeError("the call failed")
    assert capfd.readouterr().err == "[cpuinfo_utils.cpp:87] Failed to open midr file\n"
    assert EXECUTORCH_NOISE.match("[threadpool.cpp:66] Resetting threadpool to 1 threads.")

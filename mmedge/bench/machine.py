"""What the measurements ran on: CPU model, cores, library versions."""

from __future__ import annotations

import os
import platform

from mmedge.versions import package_versions

LIBRARIES = ("mmedge", "numpy", "onnxruntime", "executorch", "torch", "coremltools")


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:  # not Linux: fall back to what platform knows
        pass
    return platform.processor() or platform.machine()


def describe() -> dict:
    versions = package_versions(LIBRARIES)
    return {"cpu": cpu_model(), "machine": platform.machine(), "system": platform.system(),
            "logical_cores": os.cpu_count(), "python": platform.python_version(), "libraries": versions}


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MB."""
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 / 1024 if platform.system() == "Darwin" else rss / 1024

"""What the measurements ran on: CPU model, cores, library versions."""

from __future__ import annotations

import os
import platform

from mmedge.versions import package_versions

LIBRARIES = ("mmedge", "numpy", "onnxruntime", "executorch", "torch", "coremltools")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo; off Linux, what the platform module knows."""
    fallback = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.lower().startswith("model name")]
    except OSError:  # no /proc (macOS, Windows)
        return fallback
    return names[0] if names else fallback


def describe() -> dict:
    versions = package_versions(LIBRARIES)
    return {"cpu": cpu_model(), "machine": platform.machine(), "system": platform.system(),
            "logical_cores": os.cpu_count(), "python": platform.python_version(), "libraries": versions}


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MB."""
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 / 1024 if platform.system() == "Darwin" else rss / 1024

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


# instruction sets among which onnxruntime's CPU kernels (MLAS) choose their code paths: float results'
# last bits, and int8 products, can differ between machines that differ in these
KERNEL_FLAGS = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
                "amx_tile", "asimd", "asimddp", "asimdhp", "i8mm", "sve", "bf16")


def kernel_isa() -> str:
    """The machine and which of KERNEL_FLAGS its CPU has, e.g. "x86_64 avx avx2 f16c fma": two machines with the
    same string run onnxruntime's CPU kernels on the same code paths, so exact bytes recorded on one hold on the
    other (with the same onnxruntime)."""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("flags", "features"):
                    flags |= set(value.split())
    except OSError:  # no /proc (macOS, Windows): the machine alone
        return platform.machine()
    return " ".join([platform.machine(), *sorted(f for f in KERNEL_FLAGS if f in flags)])


def recorded_here(doc: dict) -> bool:
    """Whether a vector file (its "backend" and "kernels") was recorded with this onnxruntime on CPU kernels like
    these, so that its exact bytes hold here; a file without "kernels" predates them and is not."""
    import onnxruntime

    return doc["backend"].startswith(f"onnxruntime {onnxruntime.__version__} ") and doc.get("kernels") == kernel_isa()


def describe() -> dict:
    versions = package_versions(LIBRARIES)
    return {"cpu": cpu_model(), "machine": platform.machine(), "system": platform.system(),
            "logical_cores": os.cpu_count(), "python": platform.python_version(), "libraries": versions}


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MB."""
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 / 1024 if platform.system() == "Darwin" else rss / 1024

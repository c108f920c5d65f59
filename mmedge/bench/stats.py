"""Latency statistics: percentiles and spread of repeated measurements."""

from __future__ import annotations

import numpy as np


def summarize(ms) -> dict:
    """n, mean, std, min, p10, p50, p90, p99, max of a list of milliseconds."""
    a = np.asarray(list(ms), dtype=np.float64)
    if a.size == 0:
        raise ValueError("no measurements to summarize")
    p10, p50, p90, p99 = np.percentile(a, [10, 50, 90, 99])
    return {"n": int(a.size), "mean_ms": float(a.mean()), "std_ms": float(a.std(ddof=1)) if a.size > 1 else 0.0,
            "min_ms": float(a.min()), "p10_ms": float(p10), "p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99),
            "max_ms": float(a.max())}


def iqr_ratio(a_ms, b_ms) -> dict:
    """Ratio of medians a/b with a bootstrap 90% interval (spread of the ratio, not of the times)."""
    a, b = np.asarray(a_ms, dtype=np.float64), np.asarray(b_ms, dtype=np.float64)
    rng = np.random.default_rng(0)
    boots = [np.median(rng.choice(a, a.size)) / np.median(rng.choice(b, b.size)) for _ in range(500)]
    lo, hi = np.percentile(boots, [5, 95])
    return {"ratio": float(np.median(a) / np.median(b)), "ci90": [float(lo), float(hi)]}


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% (z = 1.96) Wilson interval of a proportion p measured on n samples (an accuracy's sampling error)."""
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(centre - half), float(centre + half)

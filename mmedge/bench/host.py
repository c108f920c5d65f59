"""Measured latency on this machine: load, first inference, percentiles per policy and stage,
throughput, peak memory, exit histogram, kept tokens and accuracy on the test split of the data
the bundle answers about (the scenes or a real dataset: mmedge.bench.queries), and the latency to
each exit at full depth per keep ratio (the stages up to it, per query; preprocessing excluded)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from mmedge.bench.machine import describe, peak_rss_mb
from mmedge.bench.queries import draw_queries
from mmedge.bench.stats import summarize
from mmedge.bundle.manifest import load_manifest
from mmedge.fileio import shown_path
from mmedge.runtime.controller import Policy, policy_rows
from mmedge.runtime.engine import Engine


def bench_host(bundle: str | Path, backend: str = "auto", precision: str = "fp32", threads: int | None = 1,
               samples: int = 200, repeats: int = 3, warmup: int = 20, progress: bool = True,
               data: str | None = None, split: str | None = None) -> dict:
    """Every standard policy over `samples` test queries, `repeats` passes each (timings pooled;
    accuracy from the first pass). The queries come from `data` (scenes or NAME:ROOT), else the
    dataset the bundle's manifest records, else the scenes when the bundle's labels are theirs
    (mmedge.bench.queries: a bundle whose labels are not the queries' answers is refused before
    anything runs). Returns the result in the bench JSON schema (kind "measured")."""
    manifest = load_manifest(bundle)
    queries = draw_queries(manifest, samples, data, split, progress=progress)
    test = queries.samples
    t0 = time.perf_counter()
    engine = Engine.load(bundle, backend=backend, precision=precision, threads=threads)
    load_ms = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    engine.predict(test[0].image, test[0].text)
    first_ms = (time.perf_counter() - t0) * 1e3
    for i in range(warmup):
        s = test[i % len(test)]
        engine.predict(s.image, s.text)
    policies, exit_latency = {}, {}
    for name, (policy, ratio, rule) in policy_rows(manifest).items():
        totals, stages, exits, kept, correct, pruned = [], {}, [], [], [], []
        names = engine.stages_for(ratio)
        to_exit = [] if policy.kind == "full" and rule is None and str(ratio) not in exit_latency else None
        started = time.perf_counter()
        bar = tqdm(total=len(test) * repeats, desc=f"{engine.backend} {precision}: {name}", disable=not progress,
                   leave=False, unit="query")
        for r in range(repeats):
            for s in test:
                p = engine.predict(s.image, s.text, policy=policy, keep_ratio=ratio, pruning=rule)
                totals.append(p.timings_ms["total"])
                if to_exit is not None:  # full depth: the stages' time up to each exit, this query
                    to_exit.append(np.cumsum([p.timings_ms[s] for s in names]))
                for stage, ms in p.timings_ms.items():
                    if stage not in ("total",):
                        stages.setdefault(stage, []).append(ms)
                if r == 0:
                    exits.append(p.exit_index)
                    kept.append(len(p.kept_visual_tokens))
                    correct.append(p.answer == s.answer)  # an answer outside the labels: wrong
                    pruned.append(p.visual_dropped_after is not None)
                bar.update()
        bar.close()
        wall = time.perf_counter() - started
        policies[name] = {
            "exit_policy": policy.to_dict(), "keep_ratio": ratio, "latency": summarize(totals),
            "stages": {k: summarize(v) for k, v in stages.items()},
            "throughput_qps": len(totals) / wall, "accuracy": float(np.mean(correct)),
            "exit_histogram": np.bincount(exits, minlength=len(manifest["exit_layers"])).tolist(),
            "mean_exit": float(np.mean(exits)), "kept_tokens": float(np.mean(kept)),
            **({"modality_pruning": {**rule.to_dict(), "pruned_share": float(np.mean(pruned))}} if rule else {}),
        }
        if to_exit:
            exit_latency[str(ratio)] = _exit_row(ratio, manifest, to_exit)
    for group in manifest["keep_ratios"]:  # every exported keep ratio at full depth, even the ones no row ran
        ratio = group["keep_ratio"]
        if str(ratio) not in exit_latency:
            cum = [np.cumsum([engine.predict(s.image, s.text, policy=Policy("full"), keep_ratio=ratio,
                                             pruning=None).timings_ms[n] for n in group["stages"]])
                   for _ in range(repeats) for s in test]
            exit_latency[str(ratio)] = _exit_row(ratio, manifest, cum)
    full = policies["full depth, every token"]["latency"]["p50_ms"]
    for row in policies.values():
        row["speedup_p50"] = full / row["latency"]["p50_ms"]
    return {"schema_version": 1, "kind": "measured", "device": "host", "machine": describe(),
            "bundle": shown_path(bundle), "model": manifest["name"], "backend": engine.backend, "precision": precision,
            "threads": threads, "samples": len(test), "repeats": repeats, "warmup": warmup,
            "queries": queries.describe(),
            "load_ms": load_ms, "first_inference_ms": first_ms, "peak_rss_mb": peak_rss_mb(),
            "thresholds": manifest["thresholds"], "policies": policies, "exit_latency": exit_latency}


def _exit_row(ratio: float, manifest: dict, cumulative: list) -> dict:
    """The latency to each exit at one keep ratio from per-query cumulative stage times (ms)."""
    cum = np.array(cumulative)  # (queries x repeats, exits)
    return {"keep_ratio": ratio, "exit_layers": list(manifest["exit_layers"]),
            "p50_ms": np.percentile(cum, 50, axis=0).tolist(), "p90_ms": np.percentile(cum, 90, axis=0).tolist()}

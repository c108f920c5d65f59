"""Benchmarking a generative VLM bundle on this host: time to first token, milliseconds per decoded token
and the whole generation, at full depth and at the bundle's calibrated settings (the prefilter's keep
ratio, the per-token exit policy), and what they cost in quality (CIDEr of captions, accuracy of short
answers) on test scenes.

The four settings run interleaved, prompt by prompt and pass by pass, so that the machine's noise falls on
all of them alike; latency is at batch 1 with preprocessing excluded (the engine's own timings); speed-ups
are ratios of medians within this run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from mmedge.errors import ConfigError
from mmedge.runtime.controller import Policy


def settings(engine) -> dict[str, tuple[Policy, float]]:
    full_ratio = max(engine.layout.keep_ratios)
    return {"full depth, every token": (Policy("full"), full_ratio),
            "prefilter only": (Policy("full"), engine.keep_ratio),
            "exits only": (engine.policy, full_ratio),
            "prefilter + exits": (engine.policy, engine.keep_ratio)}


def _spread(values: list[float]) -> dict:
    x = np.asarray(values, np.float64)
    return {"p10": float(np.percentile(x, 10)), "p50": float(np.median(x)), "p90": float(np.percentile(x, 90))}


def bench_generation(bundle: str | Path, backend: str = "auto", precision: str = "fp32", threads: int = 1,
                     samples: int = 40, repeats: int = 3, warmup: int = 4, progress: bool = True) -> dict:
    """Each setting on `samples` test scenes (half captions, half questions) x `repeats` passes."""
    from mmedge.adapt.vlm_calibrate import scene_prompts
    from mmedge.bench.machine import describe
    from mmedge.caption.metrics import caption_scores
    from mmedge.runtime.vlm_engine import VLMEngine

    for name, value, low in (("samples", samples, 2), ("repeats", repeats, 1), ("warmup", warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{name} {value!r} must be a whole number >= {low}", "arguments")
    engine = VLMEngine.load(bundle, backend=backend, precision=precision, threads=threads)
    prompts = scene_prompts(engine.manifest["preprocessing"]["image_size"], samples, seed=0, split="test")
    caption_prompt = engine.manifest["tokenizer"]["caption_prompt"]
    texts = [caption_prompt if t == "caption" else x for t, x in zip(prompts.tasks, prompts.texts)]
    rows = settings(engine)
    names = list(rows)
    for image, text in list(zip(prompts.images, texts))[:warmup]:
        for policy, ratio in rows.values():
            engine.generate(image, text, policy=policy, keep_ratio=ratio)
    timing = {name: {"first": [], "per_token": [], "total": []} for name in names}
    first_pass: dict[str, list] = {name: [] for name in names}
    bar = tqdm(total=repeats * samples * len(names), desc="bench generation", disable=not progress,
               dynamic_ncols=True)
    for rep in range(repeats):
        for i, (image, text) in enumerate(zip(prompts.images, texts)):
            shift = (i + rep) % len(names)
            for name in names[shift:] + names[:shift]:  # rotate who goes first
                policy, ratio = rows[name]
                g = engine.generate(image, text, policy=policy, keep_ratio=ratio)
                t = timing[name]
                t["first"].append(g.first_token_ms)
                t["total"].append(g.total_ms)
                if len(g.tokens) > 1:
                    t["per_token"].append((g.total_ms - g.first_token_ms) / (len(g.tokens) - 1))
                if rep == 0:
                    first_pass[name].append(g)
                bar.update(1)
    bar.close()
    caps = [i for i, t in enumerate(prompts.tasks) if t == "caption"]
    qs = [i for i, t in enumerate(prompts.tasks) if t == "answer"]
    base = {k: float(np.median(v)) for k, v in timing[names[0]].items() if v}
    out_rows = []
    for name in names:
        policy, ratio = rows[name]
        gens = first_pass[name]
        cider = caption_scores([gens[i].text for i in caps], [[prompts.references[i]] for i in caps],
                               meteor=False).cider if caps else float("nan")
        accuracy = float(np.mean([100.0 * (gens[i].text.strip().lower() == prompts.references[i].strip().lower())
                                  for i in qs])) if qs else float("nan")
        decoded = [e for g in gens for e in g.exits[1:]]
        t = timing[name]
        out_rows.append({
            "setting": name, "policy": policy.to_dict(), "keep_ratio": ratio, "cider": round(cider, 2),
            "accuracy": round(accuracy, 2), "tokens": float(np.mean([len(g.tokens) for g in gens])),
            "mean_exit": float(np.mean(decoded)) if decoded else float("nan"),
            "exit_histogram": np.bincount(decoded, minlength=len(engine.layout.stage_layers)).tolist(),
            "first_token_ms": _spread(t["first"]), "total_ms": _spread(t["total"]),
            "ms_per_token": _spread(t["per_token"]) if t["per_token"] else None,
            "speedup_total": base["total"] / float(np.median(t["total"])),
            "speedup_first_token": base["first"] / float(np.median(t["first"])),
            "speedup_per_token": (base["per_token"] / float(np.median(t["per_token"])))
            if t["per_token"] and "per_token" in base else None})
    return {"kind": "generation", "bundle": Path(bundle).name, "backend": engine.backend, "precision": precision,
            "threads": threads, "samples": samples, "repeats": repeats, "split": "test",
            "calibrated": bool(engine.manifest["thresholds"].get("calibrated")), "machine": describe(),
            "rows": out_rows}


def markdown(result: dict) -> str:
    from tabulate import tabulate

    def ms(s: dict | None) -> str:
        return "-" if s is None else f"{s['p50']:.2f} [{s['p10']:.2f}, {s['p90']:.2f}]"

    head = (f"# Generation benchmark: {result['bundle']} ({result['backend']}/{result['precision']}, "
            f"{result['threads']} thread(s), measured on this host)\n\n{result['samples']} {result['split']} scenes "
            f"(half captions, half questions) x {result['repeats']} passes, settings interleaved; batch 1, "
            "preprocessing excluded; ms as median [p10, p90]. Speed-ups: ratios of medians against full depth in "
            "this run. CIDEr-D x100 of the captions against each scene's one reference; accuracy: exact match of "
            "the short answers." + ("" if result["calibrated"] else
                                    " The bundle is NOT calibrated: its policy and keep ratio are the defaults.")
            + "\n\n")
    rows = [[r["setting"], f"{r['keep_ratio']:g}", f"{r['cider']:.1f}", f"{r['accuracy']:.1f}", f"{r['mean_exit']:.2f}",
             ms(r["first_token_ms"]), ms(r["ms_per_token"]), ms(r["total_ms"]), f"{r['speedup_first_token']:.2f}x",
             "-" if r["speedup_per_token"] is None else f"{r['speedup_per_token']:.2f}x", f"{r['speedup_total']:.2f}x"]
            for r in result["rows"]]
    return head + tabulate(rows, ["setting", "keep", "CIDEr", "accuracy", "mean exit", "first token ms",
                                  "ms per token", "total ms", "first token speed-up", "per-token speed-up",
                                  "total speed-up"], tablefmt="github") + "\n"


def plot(result: dict, path: Path) -> None:
    """Median ms per decoded token (bar: p10-p90) and time to first token per setting; no joining lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.8))
    for ax, key, label in ((axes[0], "first_token_ms", "time to first token, ms"),
                           (axes[1], "ms_per_token", "ms per decoded token")):
        for y, r in enumerate(result["rows"]):
            s = r[key]
            if s is None:
                continue
            ax.errorbar(s["p50"], y, xerr=[[s["p50"] - s["p10"]], [s["p90"] - s["p50"]]], fmt="o", capsize=4)
        ax.set_yticks(range(len(result["rows"])), [r["setting"] for r in result["rows"]], fontsize=8)
        ax.set_xlabel(f"{label} (median, bar: p10-p90)")
        ax.set_xlim(left=0)
    axes[1].set_yticks(range(len(result["rows"])), [""] * len(result["rows"]))
    fig.suptitle(f"{result['bundle']}: {result['backend']}/{result['precision']}, {result['samples']} prompts")
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)


def write(result: dict, json_path: str | Path) -> list[Path]:
    from mmedge.bench.report import write_with

    return write_with(result, json_path, markdown, plot)

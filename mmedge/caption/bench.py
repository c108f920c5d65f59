"""Benchmarking a captioning bundle on this host: captions per second, the speed-up of per-word exits
(and of the prefilter) at the calibrated settings against full depth, and what they cost in CIDEr.

The four settings run interleaved, image by image and pass by pass, so that the machine's noise
falls on all of them alike; latency is per caption (preprocessing, encoder, every decoder graph)
at batch 1; the speed-up is a ratio of medians within this run. Decoder FLOPs come from the
manifest's counts (FlopCounterMode at export) priced per word by the exit each word took.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from mmedge.caption.cost import DecoderCost
from mmedge.caption.data import scene_captions
from mmedge.caption.metrics import caption_scores
from mmedge.errors import ConfigError
from mmedge.runtime.controller import Policy


def settings(engine) -> dict[str, tuple[Policy, float]]:
    th = engine.manifest["thresholds"]
    full_ratio = max(engine.manifest["keep_ratios"])
    return {"full depth, every token": (Policy("full"), full_ratio),
            "prefilter only": (Policy("full"), th["keep_ratio"]),
            "exits only": (engine.policy, full_ratio),
            "prefilter + exits": (engine.policy, th["keep_ratio"])}


def bench_captions(bundle: str | Path, backend: str = "auto", precision: str = "fp32", threads: int = 1,
                   samples: int = 100, repeats: int = 3, warmup: int = 5, split: str = "test",
                   progress: bool = True) -> dict:
    from mmedge.runtime.caption_engine import CaptionEngine

    for name, value, low in (("samples", samples, 1), ("repeats", repeats, 1), ("warmup", warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{name} {value!r} must be a whole number >= {low}", "arguments")
    engine = CaptionEngine.load(bundle, backend=backend, precision=precision, threads=threads)
    images, captions = scene_captions(0, split, range(samples), engine.image_size)
    rows = settings(engine)
    for image in images[:warmup]:
        for policy, ratio in rows.values():
            engine.caption(image, policy=policy, keep_ratio=ratio)
    latency = {name: [] for name in rows}
    first: dict[str, list] = {name: [] for name in rows}
    bar = tqdm(total=repeats * samples * len(rows), desc="bench captions", disable=not progress, dynamic_ncols=True)
    names = list(rows)
    for rep in range(repeats):
        for i, image in enumerate(images):
            order = names[(i + rep) % len(names):] + names[:(i + rep) % len(names)]  # rotate who goes first
            for name in order:
                policy, ratio = rows[name]
                t0 = time.perf_counter()
                c = engine.caption(image, policy=policy, keep_ratio=ratio)
                latency[name].append((time.perf_counter() - t0) * 1e3)
                if rep == 0:
                    first[name].append(c)
                bar.update(1)
    bar.close()
    costs = {float(r): DecoderCost.from_manifest(f) for r, f in engine.manifest["flops"].items()}
    refs = [[c] for c in captions]
    base_name = names[0]
    base_ms = float(np.median(latency[base_name]))
    base_flops = np.mean([costs[rows[base_name][1]].caption(c.exits, engine.kv) for c in first[base_name]])
    out_rows = []
    for name in names:
        policy, ratio = rows[name]
        caps = first[name]
        scores = caption_scores([c.text for c in caps], refs, meteor=False)
        lat = np.asarray(latency[name])
        flops = float(np.mean([costs[ratio].caption(c.exits, engine.kv) for c in caps]))
        exits = [e for c in caps for e in c.exits]
        per_image = np.asarray(scores.cider_per_image)
        half = 1.96 * float(per_image.std(ddof=1) / np.sqrt(len(per_image))) if len(per_image) > 1 else 0.0
        out_rows.append({"setting": name, "policy": policy.to_dict(), "keep_ratio": ratio,
                         "cider": round(scores.cider, 2), "cider_95": [round(scores.cider - half, 2),
                                                                       round(scores.cider + half, 2)],
                         "bleu4": round(scores.bleu4, 4),
                         "mean_exit": float(np.mean(exits)), "words": float(np.mean([len(c.exits) for c in caps])),
                         "p10_ms": float(np.percentile(lat, 10)), "p50_ms": float(np.median(lat)),
                         "p90_ms": float(np.percentile(lat, 90)), "captions_per_s": 1e3 / float(np.median(lat)),
                         "speedup": base_ms / float(np.median(lat)), "decoder_mflops": flops / 1e6,
                         "decoder_flops_ratio": float(base_flops / flops), "encoder_mflops": costs[ratio].encoder / 1e6,
                         "exit_histogram": np.bincount(exits, minlength=engine.layout.num_stages).tolist()})
    from mmedge.bench.machine import describe

    return {"kind": "caption", "bundle": Path(bundle).name, "backend": engine.backend, "precision": precision,
            "threads": threads, "samples": samples, "repeats": repeats, "split": split, "kv": engine.kv,
            "calibrated": bool(engine.manifest["thresholds"].get("calibrated")),
            "machine": describe(), "rows": out_rows}


def markdown(result: dict) -> str:
    from tabulate import tabulate

    head = (f"# Captioning benchmark: {result['bundle']} ({result['backend']}/{result['precision']}, "
            f"{result['threads']} thread(s), measured on this host)\n\n{result['samples']} {result['split']} images x "
            f"{result['repeats']} passes, settings interleaved; latency per caption at batch 1 incl. preprocessing. "
            f"CIDEr with its 95% interval over images (t, per-image CIDEr). "
            f"Speed-up: ratio of medians against full depth in this run. CIDEr-D x100 and BLEU-4 against each "
            f"scene's one reference; decoder FLOPs per caption counted (FlopCounterMode), kv {result['kv']}."
            + ("" if result["calibrated"] else " The bundle is NOT calibrated: its thresholds are the defaults.")
            + "\n\n")
    rows = [[r["setting"], f"{r['keep_ratio']:g}", f"{r['cider']:.1f} [{r['cider_95'][0]:.1f}, {r['cider_95'][1]:.1f}]",
             f"{r['bleu4']:.3f}", f"{r['mean_exit']:.2f}",
             f"{r['p50_ms']:.1f} [{r['p10_ms']:.1f}, {r['p90_ms']:.1f}]", f"{r['captions_per_s']:.1f}",
             f"{r['speedup']:.2f}x", f"{r['decoder_mflops']:.2f}", f"{r['decoder_flops_ratio']:.2f}x"]
            for r in result["rows"]]
    return head + tabulate(rows, ["setting", "keep", "CIDEr", "BLEU-4", "mean exit", "ms p50 [p10, p90]",
                                  "captions/s", "speed-up", "decoder MFLOPs", "fewer decoder FLOPs"],
                           tablefmt="github") + "\n"


def plot(result: dict, path: Path) -> None:
    """CIDEr (95% interval over images) against median latency (p10-p90) per setting; no joining lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for r in result["rows"]:
        low, high = r["cider_95"]
        ax.errorbar(r["p50_ms"], r["cider"], xerr=[[r["p50_ms"] - r["p10_ms"]], [r["p90_ms"] - r["p50_ms"]]],
                    yerr=[[r["cider"] - low], [high - r["cider"]]], fmt="o", capsize=4,
                    label=f"{r['setting']} ({r['speedup']:.2f}x)")
    ax.set_xlabel("ms per caption (median, bar: p10-p90)")
    ax.set_ylabel("CIDEr-D (x100), bar: 95% interval over images")
    ax.set_title(f"{result['bundle']}: {result['backend']}/{result['precision']}, {result['samples']} images")
    ax.set_xlim(left=0)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)


def write(result: dict, json_path: str | Path) -> list[Path]:
    from mmedge.bench.report import write_with

    return write_with(result, json_path, markdown, plot)


# ---------------------------------------------------------------------------------------------- on a phone
DEVICE_SCHEMA = Path(__file__).with_name("device_bench.schema.json")


def device_problems(result: dict) -> list[str]:
    """What is wrong with a captioning benchmark measured on a phone (device_bench.schema.json), [] when nothing."""
    import json

    import jsonschema

    schema = json.loads(DEVICE_SCHEMA.read_text())
    problems = [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
                for e in jsonschema.Draft202012Validator(schema).iter_errors(result)]
    if problems:
        return problems
    for name, row in result["policies"].items():
        hist = row["exit_histogram"]
        words = sum(len(c["exits"]) for c in row["captions"])
        if len(hist) != result["exits"] or sum(hist) != words:
            problems.append(f"policies/{name}: the exit histogram {hist} does not count the {words} words of its "
                            f"captions over {result['exits']} exits")
    return problems


def score_device_captions(result: dict) -> None:
    """CIDEr-D and BLEU-4 per setting from the first pass's captions against their references (the app
    ships each test image's reference caption), when every caption has one."""
    for row in result["policies"].values():
        caps = row["captions"]
        if caps and all(c["reference"] is not None for c in caps):
            scores = caption_scores([c["text"] for c in caps], [[c["reference"]] for c in caps], meteor=False)
            row["cider"], row["bleu4"] = round(scores.cider, 2), round(scores.bleu4, 4)


def device_markdown(result: dict) -> str:
    from tabulate import tabulate

    head = (f"# Captioning benchmark: {result['model']} on {result['device']} (measured on the device)\n\n"
            f"{result['backend']}/{result['precision']}, {result['threads']} thread(s); {result['runs']} greedy captions per "
            f"setting over the app's {result['samples']} test images after {result['warmup']} warm-up captions; latency per "
            f"caption incl. preprocessing; per-word exits and CIDEr over the first pass; kv {result['kv']}.\n\n")
    rows = []
    for name, r in result["policies"].items():
        lat = r["latency"]
        rows.append([name, f"{r['keep_ratio']:g}", f"{r['mean_exit']:.2f}", str(r["exit_histogram"]),
                     f"{r['words']:.1f}", f"{lat['p50_ms']:.1f} [{lat['min_ms']:.1f}, {lat['p90_ms']:.1f}]",
                     f"{r['captions_per_s']:.1f}", f"{r.get('speedup_p50', float('nan')):.2f}x",
                     "" if r.get("cider") is None else f"{r['cider']:.1f}"])
    return head + tabulate(rows, ["setting", "keep", "mean exit", "per-word exits", "words", "ms p50 [min, p90]",
                                  "captions/s", "speed-up", "CIDEr"], tablefmt="github") + "\n"


def write_device(result: dict, json_path: str | Path) -> list[Path]:
    import json

    from mmedge.fileio import atomic_write

    json_path = Path(json_path)
    md = json_path.with_suffix(".md")
    atomic_write(json_path, lambda p: p.write_text(json.dumps(result, indent=1) + "\n"))
    atomic_write(md, lambda p: p.write_text(device_markdown(result)))
    return [json_path, md]

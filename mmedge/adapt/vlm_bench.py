"""Benchmarking a generative VLM bundle on this host: time to first token, milliseconds per decoded token
and the whole generation, at full depth and at the bundle's calibrated settings (the prefilter's keep
ratio, the per-token exit policy), and what they cost in quality (CIDEr of captions, accuracy of short
answers) on test scenes.

The four settings run interleaved, prompt by prompt and pass by pass, so that the machine's noise falls on
all of them alike; a bundle calibrated per task (thresholds.tasks) runs each prompt under its task's
setting, and every setting is also reported per task; latency is at batch 1 with preprocessing excluded (the
engine's own timings); speed-ups are ratios of medians within this run.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from mmedge.errors import ConfigError
from mmedge.runtime.controller import Policy


def settings(engine) -> dict[str, dict[str, tuple[Policy, float]]]:
    """The four settings, each as (policy, keep ratio) per task: the calibrated policy and keep ratio are the
    bundle's for that task (thresholds.tasks where it holds them, else its top-level ones)."""
    from mmedge.adapt.vlm_manifest import GENERATION_TASKS

    full_ratio = max(engine.layout.keep_ratios)
    out: dict[str, dict[str, tuple[Policy, float]]] = {name: {} for name in SETTINGS}
    for task in GENERATION_TASKS:
        policy, ratio = engine.settings(task)
        for name, setting in zip(SETTINGS, ((Policy("full"), full_ratio), (Policy("full"), ratio),
                                             (policy, full_ratio), (policy, ratio))):
            out[name][task] = setting
    return out


SETTINGS = ("full depth, every token", "prefilter only", "exits only", "prefilter + exits")


def _spread(values: list[float]) -> dict:
    x = np.asarray(values, np.float64)
    return {"p10": float(np.percentile(x, 10)), "p50": float(np.median(x)), "p90": float(np.percentile(x, 90))}


def bench_prompts(manifest: dict, samples: int) -> tuple:
    """The bench's prompts: `samples` test scenes (vlm_calibrate.scene_prompts, seed 0: the first half captions,
    the rest questions) at the bundle's image size, and the prompt text of each (a caption's is the bundle's
    caption prompt)."""
    from mmedge.adapt.vlm_calibrate import scene_prompts

    prompts = scene_prompts(manifest["preprocessing"]["image_size"], samples, seed=0, split="test")
    caption_prompt = manifest["tokenizer"]["caption_prompt"]
    return prompts, [caption_prompt if t == "caption" else x for t, x in zip(prompts.tasks, prompts.texts)]


def quality(said: list[str], tasks: list[str], references: list[str]) -> tuple[float, float]:
    """CIDEr-D (x100) of the captions against their one reference each, and the exact-match accuracy (%, case
    and surrounding spaces ignored) of the short answers; NaN for a task with no prompt."""
    from mmedge.caption.metrics import caption_scores

    caps = [i for i, t in enumerate(tasks) if t == "caption"]
    qs = [i for i, t in enumerate(tasks) if t == "answer"]
    cider = caption_scores([said[i] for i in caps], [[references[i]] for i in caps],
                           meteor=False).cider if caps else float("nan")
    accuracy = float(np.mean([100.0 * (said[i].strip().lower() == references[i].strip().lower())
                              for i in qs])) if qs else float("nan")
    return cider, accuracy


def bench_generation(bundle: str | Path, backend: str = "auto", precision: str = "fp32", threads: int = 1,
                     samples: int = 40, repeats: int = 3, warmup: int = 4, progress: bool = True) -> dict:
    """Each setting on `samples` test scenes (half captions, half questions) x `repeats` passes."""
    from mmedge.bench.machine import describe
    from mmedge.runtime.vlm_engine import VLMEngine

    for name, value, low in (("samples", samples, 2), ("repeats", repeats, 1), ("warmup", warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{name} {value!r} must be a whole number >= {low}", "arguments")
    engine = VLMEngine.load(bundle, backend=backend, precision=precision, threads=threads)
    prompts, texts = bench_prompts(engine.manifest, samples)
    rows = settings(engine)
    names = list(rows)

    def run(name: str, i: int):
        policy, ratio = rows[name][prompts.tasks[i]]
        return engine.generate(prompts.images[i], texts[i], policy=policy, keep_ratio=ratio)

    for i in range(min(warmup, samples)):
        for name in names:
            run(name, i)
    # timings per setting and task, each prompt's in order
    timing = {name: {task: {"first": [], "per_token": [], "total": []} for task in ("all", *set(prompts.tasks))}
              for name in names}
    first_pass: dict[str, list] = {name: [] for name in names}
    bar = tqdm(total=repeats * samples * len(names), desc="bench generation", disable=not progress,
               dynamic_ncols=True)
    for rep in range(repeats):
        for i in range(samples):
            shift = (i + rep) % len(names)
            for name in names[shift:] + names[:shift]:  # rotate who goes first
                g = run(name, i)
                for t in (timing[name]["all"], timing[name][prompts.tasks[i]]):
                    t["first"].append(g.first_token_ms)
                    t["total"].append(g.total_ms)
                    if len(g.tokens) > 1:
                        t["per_token"].append((g.total_ms - g.first_token_ms) / (len(g.tokens) - 1))
                if rep == 0:
                    first_pass[name].append(g)
                bar.update(1)
    bar.close()

    def timed(t: dict, base: dict) -> dict:
        """Spreads of one setting's timings and their speed-ups (ratios of medians) against full depth's `base`."""
        def speedup(key: str) -> float | None:
            return float(np.median(base[key]) / np.median(t[key])) if t[key] and base[key] else None

        return {"first_token_ms": _spread(t["first"]), "total_ms": _spread(t["total"]),
                "ms_per_token": _spread(t["per_token"]) if t["per_token"] else None,
                "speedup_total": speedup("total"), "speedup_first_token": speedup("first"),
                "speedup_per_token": speedup("per_token")}

    out_rows = []
    for name in names:
        gens = first_pass[name]
        cider, accuracy = quality([g.text for g in gens], prompts.tasks, prompts.references)
        decoded = [e for g in gens for e in g.exits[1:]]
        by_task = {}
        for task, (policy, ratio) in rows[name].items():
            if task not in prompts.tasks:
                continue
            mine = [g for g, t in zip(gens, prompts.tasks) if t == task]
            exits = [e for g in mine for e in g.exits[1:]]
            by_task[task] = {"policy": policy.to_dict(), "keep_ratio": ratio,
                             "quality": round(cider if task == "caption" else accuracy, 2),
                             "mean_exit": float(np.mean(exits)) if exits else None,
                             **timed(timing[name][task], timing[names[0]][task])}
        same = len({(json.dumps(v["policy"], sort_keys=True), v["keep_ratio"]) for v in by_task.values()}) == 1
        first = next(iter(by_task.values()))
        out_rows.append({
            "setting": name, "policy": first["policy"] if same else None, "keep_ratio": first["keep_ratio"] if same
            else None, "cider": round(cider, 2), "accuracy": round(accuracy, 2),
            "tokens": float(np.mean([len(g.tokens) for g in gens])),
            "mean_exit": float(np.mean(decoded)) if decoded else float("nan"),
            "exit_histogram": np.bincount(decoded, minlength=len(engine.layout.stage_layers)).tolist(),
            **timed(timing[name]["all"], timing[names[0]]["all"]), "by_task": by_task})
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
    rows = [[r["setting"], "per task" if r["keep_ratio"] is None else f"{r['keep_ratio']:g}", f"{r['cider']:.1f}",
             f"{r['accuracy']:.1f}", f"{r['mean_exit']:.2f}",
             ms(r["first_token_ms"]), ms(r["ms_per_token"]), ms(r["total_ms"]), f"{r['speedup_first_token']:.2f}x",
             "-" if r["speedup_per_token"] is None else f"{r['speedup_per_token']:.2f}x", f"{r['speedup_total']:.2f}x"]
            for r in result["rows"]]
    return (head + tabulate(rows, ["setting", "keep", "CIDEr", "accuracy", "mean exit", "first token ms",
                                   "ms per token", "total ms", "first token speed-up", "per-token speed-up",
                                   "total speed-up"], tablefmt="github") + "\n" + task_markdown(result["rows"]))


def policy_name(p: dict) -> str:
    return f"{p['kind']} >= {p['threshold']:g}" if p["kind"] in ("confidence", "max_probability") else p["kind"]


def task_markdown(rows: list[dict]) -> str:
    """Each setting on each task's prompts alone (the settings a bundle calibrated per task apply per prompt),
    speed-ups against full depth on the same prompts; '' for results from before the split."""
    from tabulate import tabulate

    if not all("by_task" in r for r in rows):
        return ""

    def ms(s: dict | None) -> str:
        return "-" if s is None else f"{s['p50']:.2f}"

    def x(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}x"

    table = [[r["setting"], task, policy_name(t["policy"]), f"{t['keep_ratio']:g}",
              f"{t['quality']:.1f} {'CIDEr' if task == 'caption' else '%'}",
              "-" if t["mean_exit"] is None else f"{t['mean_exit']:.2f}", ms(t["first_token_ms"]),
              ms(t["ms_per_token"]), x(t["speedup_first_token"]), x(t["speedup_per_token"]), x(t["speedup_total"])]
             for r in rows for task, t in r["by_task"].items()]
    return ("\nPer task (each prompt generated under its task's setting; medians in ms; speed-ups against full depth "
            "on the same prompts):\n\n"
            + tabulate(table, ["setting", "task", "policy", "keep", "quality", "mean exit", "first token ms",
                               "ms per token", "first token speed-up", "per-token speed-up", "total speed-up"],
                       tablefmt="github") + "\n")


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


# ---------------------------------------------------------------------------------------------- graph times
def decode_fixed(decoder, prompt_len: int, stage: int, tokens: int) -> list[float]:
    """ms per token of `tokens` decoded tokens that each exit after `stage`: the graphs the runtime runs for
    such a token under a confidence policy (StagedDecoder.word under kv "copy": embeddings, the steps up to
    the exit with the controller's read of each one's confidence, the head at the exit, the copy-forward
    fill), on caches of the static size (a decode's cost does not depend on what they hold)."""
    import time

    L = decoder.layout
    cache_k = [np.zeros((1, L.num_kv_heads, L.max_slots, L.head_dim), np.float32) for _ in range(L.depth)]
    cache_v = [c.copy() for c in cache_k]
    word, times, timings = 3, [], {}
    for n in range(tokens):
        t0 = time.perf_counter()
        at = {"positions": np.array([[prompt_len + n]], np.int64), "slot": np.array([prompt_len + n], np.int64)}
        hidden = decoder.run_graph("embed", {"ids": np.array([[word]], np.int64)}, timings)["embeds"]
        for s in range(stage + 1):
            out = decoder.run_cached(decoder.step_name(s), {"hidden_in": hidden, **at}, L.stage_layers[s], cache_k,
                                     cache_v, timings)
            hidden = out["hidden"]
            float(out["confidence"][0])
        word = int(np.argmax(decoder.exit_logits(stage, out, timings)))
        if stage < len(L.stage_layers) - 1:
            later = [i for layers in L.stage_layers[stage + 1:] for i in layers]
            decoder.run_cached(decoder.fill_name(stage), {"hidden_in": hidden, **at}, later, cache_k, cache_v, timings)
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def graph_times(engine, image, prompt: str, decode_tokens: int = 8) -> dict:
    """One measurement of a VLM engine's costs: per keep ratio the image encode (the vision graph), the
    prefill (steps and head) and the time to first token (the runtime's own generate, one token, full
    depth); per exit the median ms of `decode_tokens` tokens that exit there (decode_fixed)."""
    from mmedge.runtime.vlm import VLMDecoder

    pixels, ids = engine.preprocess(image), engine.prompt_ids(prompt)
    decoder = VLMDecoder(engine.session, engine.layout)
    out: dict = {"by_keep_ratio": {}, "prompt_tokens": len(ids)}
    for r in engine.layout.keep_ratios:
        run = decoder.generate(ids, pixels, Policy("full"), max_new_tokens=1, keep_ratio=r)
        out["by_keep_ratio"][str(r)] = {"encode_ms": run.stage_ms["vision"],
                                        "prefill_ms": sum(v for k, v in run.stage_ms.items()
                                                          if k.startswith("step") or k == "head"),
                                        "first_token_ms": run.encoder_ms}
    out["decode_ms"] = {str(s): float(np.median(decode_fixed(decoder, len(ids), s, decode_tokens)))
                        for s in range(len(engine.layout.stage_layers))}
    return out


# ---------------------------------------------------------------------------------------------- modelled
def _onnx_inputs(manifest: dict, graph: str, tokens: int, text_tokens: int) -> dict:
    """Concrete inputs for the cost model: a prefill of `tokens` (1: a decoded token)."""
    lay = manifest["layout"]
    if graph == "head":
        return {"exit_hidden": np.zeros((1, manifest["model"]["adapt"]["dim"]), np.float32)}
    if graph == "vision":
        size = manifest["preprocessing"]["image_size"]
        return {"pixel_values": np.zeros((1, 3, size, size), np.float32),
                "text_ids": np.ones((1, text_tokens), np.int64)}
    if graph == "embed":
        return {"ids": np.ones((1, tokens), np.int64)}
    stage = int(graph.removeprefix("step").removeprefix("fill"))
    layers = sum(len(x) for x in lay["stage_layers"][stage + 1:]) if graph.startswith("fill") else \
        len(lay["stage_layers"][stage])
    cache = np.zeros((layers, 1, lay["num_kv_heads"], lay["max_slots"], lay["head_dim"]), np.float32)
    return {"hidden_in": np.zeros((1, tokens, manifest["model"]["adapt"]["dim"]), np.float32),
            "positions": np.arange(tokens)[None], "slot": np.zeros(1, np.int64), "past_k": cache, "past_v": cache}


def generation_costs(bundle: str | Path, prompt_tokens: int) -> dict:
    """Per quantity ("encode R", "prefill R" per keep ratio R, "decode S" per exit stage S), the costed nodes
    (mmedge.bench.costmodel.graph_costs) of the fp32 ONNX graphs it runs, for a prompt of `prompt_tokens`
    (the runtime's top k of M scores is not priced)."""
    import contextlib
    import io
    import json

    from mmedge.bench.costmodel import graph_costs
    from mmedge.runtime.vlm import kept_tokens

    bundle = Path(bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    lay = manifest["layout"]
    art = next((a for a in manifest["artifacts"] if a["runtime"] == "onnxruntime" and a["precision"] == "fp32"
                and a["format"] == "onnx"), None)
    if art is None:
        raise ConfigError(f"{bundle} has no fp32 ONNX artifact: the cost model prices the ONNX graphs (export with "
                          "--target onnx)", "arguments")
    M, S = lay["num_image_tokens"], len(lay["stage_layers"])
    text_tokens = prompt_tokens - M

    def costs(graph: str, tokens: int):
        with contextlib.redirect_stdout(io.StringIO()):
            return graph_costs(bundle / art["stages"][graph]["file"], _onnx_inputs(manifest, graph, tokens, text_tokens))

    parts, vision, head, embed = {}, costs("vision", 0), costs("head", 1), costs("embed", prompt_tokens)
    for r in lay["keep_ratios"]:
        T = text_tokens + kept_tokens(r, M)
        parts[f"encode {r}"] = [vision]
        parts[f"prefill {r}"] = [embed] + [costs(f"step{s}", T) for s in range(S)] + [head]
    steps, embed1 = [costs(f"step{s}", 1) for s in range(S)], costs("embed", 1)
    for s in range(S):
        parts[f"decode {s}"] = [embed1] + steps[: s + 1] + [head] + ([costs(f"fill{s}", 1)] if s < S - 1 else [])
    return parts


def price(parts: dict, prof, int8: bool = False) -> dict:
    """Modelled ms on a device profile: per keep ratio the encode and the time to first token; per exit stage
    the ms per decoded token."""
    from mmedge.bench.costmodel import predict_ms

    ms = {k: sum(predict_ms(c, prof, int8=int8) for c in v) for k, v in parts.items()}
    ratios = [k.split()[1] for k in ms if k.startswith("encode ")]
    return {"by_keep_ratio": {r: {"encode_ms": ms[f"encode {r}"], "first_token_ms": ms[f"encode {r}"] + ms[f"prefill {r}"]}
                              for r in ratios},
            "decode_ms": {k.split()[1]: v for k, v in ms.items() if k.startswith("decode ")}}


def host_check(parts: dict, measured: dict, threads: int, dim: int, prompt_tokens: int,
               exit_after_layer: list[int]) -> dict:
    """The calibrated host profile's prices against measured medians (graph_times' layout) on this host."""
    from dataclasses import asdict

    from mmedge.bench.costmodel import calibrate_host

    host = calibrate_host(threads, seq=prompt_tokens, dim=dim)
    mine = price(parts, host)
    rows = []
    for r, got in measured["by_keep_ratio"].items():
        for key in ("encode_ms", "first_token_ms"):
            rows.append({"quantity": f"{key[:-3].replace('_', ' ')}, keep {float(r):g}",
                         "modelled_ms": mine["by_keep_ratio"][r][key], "measured_ms": got[key]})
    for s, got in measured["decode_ms"].items():
        rows.append({"quantity": f"ms per token, exit after layer {exit_after_layer[int(s)]}",
                     "modelled_ms": mine["decode_ms"][s],
                     "measured_ms": got})
    for row in rows:
        row["error"] = (row["modelled_ms"] - row["measured_ms"]) / row["measured_ms"]
    errors = np.abs([x["error"] for x in rows])
    return {"rows": rows, "median_abs_error": float(np.median(errors)), "max_abs_error": float(np.max(errors)),
            "threads": threads, "profile": asdict(host)}


def model_generation(bundle: str | Path, device: str, precision: str = "fp32", threads: int = 1, rounds: int = 3,
                     prompt: str | None = None, check: bool = True) -> dict:
    """MODELLED time to first token per keep ratio and ms per decoded token per exit of a VLM bundle on a
    device profile (mmedge.bench.costmodel on its fp32 ONNX graphs; int8 at the profile's int8 rates; int4 is
    not modelled), with the profile's held-out error and (check) the host check: the host profile against
    the bundle's ONNX Runtime fp32 graphs measured here, median of `rounds`."""
    from mmedge.bench.costmodel import anchor_statement, profile
    from mmedge.runtime.vlm_engine import VLMEngine

    if precision not in ("fp32", "int8"):
        raise ConfigError(f"precision {precision!r}: the cost model prices fp32 and int8", "arguments")
    prof = profile(device)
    engine = VLMEngine.load(bundle, backend="onnxruntime", precision="fp32", threads=threads, self_check=False)
    prompt = prompt or engine.manifest["tokenizer"]["caption_prompt"]
    size = engine.manifest["preprocessing"]["image_size"]
    image = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    prompt_tokens = len(engine.prompt_ids(prompt))
    exits = [layers[-1] + 1 for layers in engine.layout.stage_layers]  # decoder layer each exit follows
    parts = generation_costs(bundle, prompt_tokens)
    checked = None
    if check:
        runs = [graph_times(engine, image, prompt) for _ in range(rounds)]
        measured = {"by_keep_ratio": {r: {k: float(np.median([x["by_keep_ratio"][r][k] for x in runs]))
                                          for k in ("encode_ms", "first_token_ms")} for r in runs[0]["by_keep_ratio"]},
                    "decode_ms": {s: float(np.median([x["decode_ms"][s] for x in runs])) for s in runs[0]["decode_ms"]}}
        checked = host_check(parts, measured, threads, engine.manifest["model"]["adapt"]["dim"], prompt_tokens, exits)
    return {"kind": "modelled-generation", "bundle": Path(bundle).name, "device": device,
            "description": prof.description, "precision": precision, "prompt_tokens": prompt_tokens,
            "exit_after_layer": exits,
            **price(parts, prof, int8=precision == "int8"), "anchor_check": anchor_statement(prof.name),
            "host_check": checked,
            "note": "MODELLED, not measured: per-operator cost model on the device profile's public specification, "
                    f"efficiency and per-op overhead: {prof.calibration}"}


def modelled_markdown(result: dict) -> str:
    from tabulate import tabulate

    head = (f"# {result['bundle']} on {result['device']} ({result['description']}), {result['precision']}: "
            f"MODELLED, not measured\n\n{result['note']}\n\nHeld out: {result['anchor_check']}.\n\n"
            f"Prompt: {result['prompt_tokens']} tokens (the image's included).\n\n")
    rows = [[f"keep {float(r):g}", f"{v['encode_ms']:.0f}", f"{v['first_token_ms']:.0f}"]
            for r, v in result["by_keep_ratio"].items()]
    text = head + tabulate(rows, ["", "image encode ms", "time to first token ms"], tablefmt="github") + "\n\n"
    rows = [[layer, f"{result['decode_ms'][str(s)]:.1f}", f"{1e3 / result['decode_ms'][str(s)]:.1f}"]
            for s, layer in enumerate(result["exit_after_layer"])]
    text += tabulate(rows, ["exit after layer", "ms per decoded token", "tokens/s"], tablefmt="github") + "\n"
    h = result.get("host_check")
    if h:
        text += (f"\nHost check ({h['threads']} thread(s)): the host profile against this bundle's ONNX Runtime fp32 "
                 f"graphs measured here: median |error| {h['median_abs_error']:.0%}, max {h['max_abs_error']:.0%}.\n\n")
        text += tabulate([[x["quantity"], f"{x['modelled_ms']:.1f}", f"{x['measured_ms']:.1f}", f"{x['error']:+.0%}"]
                          for x in h["rows"]], ["quantity", "modelled ms", "measured ms", "error"],
                         tablefmt="github") + "\n"
    return text


def modelled_plot(result: dict, path: Path) -> None:
    """Modelled time to first token per keep ratio and ms per token per exit (points: no spread to show)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.6))
    ratios = list(result["by_keep_ratio"])
    axes[0].plot(range(len(ratios)), [result["by_keep_ratio"][r]["first_token_ms"] for r in ratios], "o")
    axes[0].set_xticks(range(len(ratios)), [f"keep {float(r):g}" for r in ratios])
    axes[0].set_ylabel("time to first token, ms")
    stages = list(result["decode_ms"])
    axes[1].plot(range(len(stages)), [result["decode_ms"][s] for s in stages], "o")
    axes[1].set_xticks(range(len(stages)), [f"exit {n}" for n in result["exit_after_layer"]])
    axes[1].set_ylabel("ms per decoded token")
    for ax in axes:
        ax.set_ylim(bottom=0)
    fig.suptitle(f"{result['bundle']} on {result['device']}, {result['precision']}: MODELLED, not measured",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)

"""A generative VLM bundle measured on an attached phone (android_demo/BENCHMARK.md, "Generative VLM bundles").

The host draws the prompts exactly as `mmedge bench --device host` does (mmedge.adapt.vlm_bench.bench_prompts:
test scenes, half captions under the bundle's caption prompt, half questions), writes them as a folder the app
reads (queries.json with each prompt's text, reference and task, one RGB PNG per image), pushes it with the
bundle (mmedge.bench.adb.bench_device), and the app's VLMBenchmarkRunner generates under the four settings, each
prompt under its task's (the bundle's thresholds.tasks where it holds the task, as vlm_bench.settings), and
times each setting per task too. Here the pulled result is checked against vlm_device_bench.schema.json, the
phone's first-pass generations are scored as the host bench scores its own (vlm_bench.quality: CIDEr of the
captions, exact-match accuracy of the short answers), and rows in the host bench's shape (vlm_bench.markdown /
plot / task_markdown) are added.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from mmedge.bench.query_folder import FORMAT

DEVICE_SCHEMA = Path(__file__).with_name("vlm_device_bench.schema.json")


def write_prompt_folder(manifest: dict, samples: int, out: Path) -> tuple[Path, dict]:
    """`out` (created; it must not exist) holding queries.json and images/NNNN.png for the bench's `samples`
    prompts; returns it and the record the result keeps (`prompts`)."""
    from mmedge.adapt.vlm_bench import bench_prompts
    from mmedge.data.preprocess import load_image
    from mmedge.fileio import make_parent, publish_dir

    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; choose a new folder for the prompts")
    prompts, texts = bench_prompts(manifest, samples)
    record = {"data": "scenes", "split": "test", "n": len(texts),
              "chosen_by": "the first test scenes (seed 0): the first half captions under the bundle's caption prompt, "
                           "the rest questions (mmedge.adapt.vlm_bench.bench_prompts, as --device host)",
              "captions": prompts.tasks.count("caption"), "questions": prompts.tasks.count("answer")}
    make_parent(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / "images").mkdir()
        entries = []
        listed = zip(prompts.images, texts, prompts.references, prompts.tasks)
        for i, (image, text, reference, task) in enumerate(listed):
            name = f"images/{i:04d}.png"
            load_image(image).save(tmp / name, format="PNG")
            entries.append({"image": name, "text": text, "answer": reference, "task": task})
        doc = {"format": FORMAT, "task": "vlm", **record, "queries": entries}
        (tmp / "queries.json").write_text(json.dumps(doc, indent=1) + "\n")
        publish_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out, record


def device_problems(result: dict) -> list[str]:
    """What is wrong with a generative VLM benchmark measured on a phone (the schema, then its counts); [] when
    nothing is."""
    import jsonschema

    schema = json.loads(DEVICE_SCHEMA.read_text())
    problems = [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
                for e in jsonschema.Draft202012Validator(schema).iter_errors(result)]
    if problems:
        return problems
    first_pass = min(result["runs"], result["samples"])
    for name, row in result["policies"].items():
        gens = row["generations"]
        decoded = sum(len(g["exits"]) - 1 for g in gens)
        if len(gens) != first_pass:
            problems.append(f"policies/{name}: {len(gens)} generations in the first pass, not {first_pass}")
        if len(row["exit_histogram"]) != result["exits"] or sum(row["exit_histogram"]) != decoded:
            problems.append(f"policies/{name}: the exit histogram {row['exit_histogram']} does not count the {decoded} "
                            f"decoded tokens of its generations over {result['exits']} exits")
        if any(len(g["exits"]) != len(g["tokens"]) for g in gens):
            problems.append(f"policies/{name}: a generation has not one exit per token")
        if row["total_ms"]["n"] != result["runs"] or row["first_token_ms"]["n"] != result["runs"]:
            problems.append(f"policies/{name}: timings of {row['total_ms']['n']} generations, not the "
                            f"{result['runs']} runs")
        by_task = row.get("by_task")
        if by_task is not None:
            if set(by_task) != {g["task"] for g in gens}:
                problems.append(f"policies/{name}: by_task has the tasks {sorted(by_task)}, its prompts "
                                f"{sorted({g['task'] for g in gens})}")
            if sum(t["total_ms"]["n"] for t in by_task.values()) != result["runs"]:
                problems.append(f"policies/{name}: by_task times {sum(t['total_ms']['n'] for t in by_task.values())} "
                                f"generations, not the {result['runs']} runs")
    return problems


def _nan_to_none(x: float) -> float | None:
    return None if x != x else round(x, 2)


_TIMINGS = ("first_token_ms", "total_ms", "ms_per_token")


def _timed(t: dict, base: dict | None) -> dict:
    """The spreads of a phone row (or one task's part of it) in the host bench's shape, with the speed-ups (ratios of
    medians) against full depth's `base` (the same prompts): None where either lacks the timing."""
    def speedup(key: str) -> float | None:
        if base is None or base.get(key) is None or t[key] is None:
            return None
        return base[key]["p50"] / t[key]["p50"]

    return {**{k: None if t[k] is None else {p: t[k][p] for p in ("p10", "p50", "p90")} for k in _TIMINGS},
            "speedup_total": speedup("total_ms"), "speedup_first_token": speedup("first_token_ms"),
            "speedup_per_token": speedup("ms_per_token")}


def score_device_generations(result: dict) -> None:
    """Per setting, `cider` and `accuracy` of the first pass's generations (vlm_bench.quality; null for a task the
    prompts lack), and `rows` in the host bench's shape (vlm_bench.markdown, plot): speed-ups are ratios of
    medians against full depth in this run; with the phone's split per task, each row's `by_task` as the host
    bench's (vlm_bench.task_markdown: the task's policy, keep ratio, quality, mean exit and timings, speed-ups
    against full depth on the same task's prompts), and the row's own policy and keep ratio None where its tasks'
    differ."""
    import numpy as np

    from mmedge.adapt.vlm_bench import quality

    base = result["policies"].get("full depth, every token")
    rows = []
    for name, row in result["policies"].items():
        gens = row["generations"]
        cider, accuracy = quality([g["text"] for g in gens], [g["task"] for g in gens], [g["reference"] for g in gens])
        row["cider"], row["accuracy"] = _nan_to_none(cider), _nan_to_none(accuracy)
        out = {"setting": name, "policy": row["exit_policy"], "keep_ratio": row["keep_ratio"],
               "cider": row["cider"], "accuracy": row["accuracy"], "tokens": row["tokens"],
               "mean_exit": row["mean_exit"], "exit_histogram": row["exit_histogram"], **_timed(row, base)}
        if "by_task" in row:
            by_task = {}
            for task, t in row["by_task"].items():
                exits = [e for g in gens if g["task"] == task for e in g["exits"][1:]]
                base_task = (base or {}).get("by_task", {}).get(task)
                by_task[task] = {"policy": t["exit_policy"], "keep_ratio": t["keep_ratio"],
                                 "quality": round(cider if task == "caption" else accuracy, 2),
                                 "mean_exit": float(np.mean(exits)) if exits else None, **_timed(t, base_task)}
            out["by_task"] = by_task
        rows.append(out)
    result["rows"] = rows


def device_markdown(result: dict) -> str:
    from tabulate import tabulate

    from mmedge.adapt.vlm_bench import task_markdown

    def ms(s: dict | None) -> str:
        return "-" if s is None else f"{s['p50']:.2f} [{s['p10']:.2f}, {s['p90']:.2f}]"

    def num(x, fmt: str) -> str:
        return "-" if x is None else format(x, fmt)

    head = (f"# Generation benchmark: {result['model']} on {result['device']} (measured on the device)\n\n"
            f"{result['backend']}/{result['precision']}, {result['threads']} thread(s); "
            f"{result['samples']} test scenes "
            f"pushed by the host (half captions, half questions), {result['runs']} greedy generations per setting, "
            f"settings interleaved, after {result['warmup']} warm-up prompts under every setting; batch 1, "
            "preprocessing excluded; ms as median [p10, p90]. Speed-ups: ratios of medians against full depth in this "
            "run. CIDEr-D x100 of the captions against each scene's one reference and exact-match accuracy of the "
            f"short answers, over the first pass; kv {result['kv']}."
            + ("" if result["thresholds"].get("calibrated") else
               " The bundle is NOT calibrated: its policy and keep ratio are the defaults.")
            + (" The bundle holds settings per task (thresholds.tasks): each prompt runs under its task's."
               if result["thresholds"].get("tasks") else "") + "\n\n")
    rows = [[r["setting"], "per task" if r["keep_ratio"] is None else f"{r['keep_ratio']:g}", num(r["cider"], ".1f"),
             num(r["accuracy"], ".1f"), num(r["mean_exit"], ".2f"), ms(r["first_token_ms"]), ms(r["ms_per_token"]),
             ms(r["total_ms"]),
             *(num(r[k], ".2f") + ("" if r[k] is None else "x")
               for k in ("speedup_first_token", "speedup_per_token", "speedup_total"))] for r in result["rows"]]
    return (head + tabulate(rows, ["setting", "keep", "CIDEr", "accuracy", "mean exit", "first token ms",
                                   "ms per token", "total ms", "first token speed-up", "per-token speed-up",
                                   "total speed-up"], tablefmt="github") + "\n" + task_markdown(result["rows"]))


def device_plot(result: dict, path: Path) -> None:
    """The host bench's plot (vlm_bench.plot) of the phone's rows, titled with the model and the phone."""
    from mmedge.adapt.vlm_bench import plot

    plot({**result, "bundle": f"{result['model']} on {result['device']}"}, path)


def write_device(result: dict, json_path: str | Path) -> list[Path]:
    from mmedge.bench.report import write_with

    return write_with(result, json_path, device_markdown, device_plot)

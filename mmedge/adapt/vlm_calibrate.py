"""`mmedge calibrate` for a generative VLM bundle: the cheapest exit policy and keep ratio whose quality stays
within the bounds of full depth with every visual token, measured through the bundle's own engine on
validation scenes (half under the caption prompt: CIDEr; half questions: exact-match accuracy of the short
answer), then written into the manifest as the other kinds' calibration is (same `files`, next release,
the old signature removed or replaced). Each task also gets its own setting, the cheapest for its prompts
within its own bound (`thresholds.tasks`: what generate(task=...) and caption() use), since one setting that
bounds both is bound by the more fragile task.

Cost is counted in decoder layer passes per prompt: the prefill's (prompt tokens after the prefilter x
depth) plus, per decoded token, the layers up to the exit it took (the first token comes from the prefill).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass

import numpy as np
from tqdm import tqdm

from mmedge.errors import ConfigError
from mmedge.runtime.controller import Policy

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.995, 0.999)  # a confidence read from the hidden state calibrates high
MIN_PROMPTS = 20  # fewer and the drops' upper limits mean little


@dataclass
class Prompts:
    images: list
    texts: list[str]
    references: list[str]
    tasks: list[str]              # "caption" or "answer" per prompt


@dataclass
class Row:
    policy: dict
    keep_ratio: float
    cider: float                  # x100, the caption prompts
    accuracy: float               # x100, the questions
    layer_passes: float           # decoder layer passes per prompt (prefill and decoded tokens)
    mean_exit: float              # over decoded tokens after the first
    cider_per_prompt: list[float]
    correct: list[float]
    task_layer_passes: dict[str, float]  # per prompt of each task
    cider_drop_upper: float = 0.0
    accuracy_drop_upper: float = 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        del d["cider_per_prompt"], d["correct"]
        return d


def candidate_policies(num_stages: int) -> list[Policy]:
    """Full depth and the confidence policy at each threshold: the learned confidence reads the hidden state,
    so a token runs the vocabulary head only at the exit it takes (a max_probability policy would run it at
    every exit on the way, a cost that layer passes do not count)."""
    if num_stages < 2:
        return [Policy("full")]
    return [Policy("full")] + [Policy("confidence", threshold=t) for t in THRESHOLDS]


def scene_prompts(image_size: int, samples: int, seed: int = 0, split: str = "val") -> Prompts:
    """The scenes of `split`: the first half of `samples` images under the caption prompt (their captions the
    references), the rest questions (their answers the references)."""
    from mmedge.caption.data import scene_captions
    from mmedge.data.batches import generate

    n_cap = samples // 2
    images, captions = scene_captions(seed, split, range(n_cap), image_size)
    questions = generate("vqa", seed, split, range(samples - n_cap), image_size=image_size)
    return Prompts(images + [q.image for q in questions], [""] * n_cap + [q.text for q in questions],
                   captions + [q.answer for q in questions], ["caption"] * n_cap + ["answer"] * len(questions))


def drop_upper(base: list[float], other: list[float], z: float) -> float:
    """One-sided upper limit of the mean paired drop (base - other); 0 with no pairs."""
    from mmedge.caption.calibrate import drop_upper as paired

    return paired(base, other, z) if base else 0.0


def evaluate(engine, prompts: Prompts, policy: Policy, keep_ratio: float, max_new_tokens: int) -> Row:
    from mmedge.caption.metrics import caption_scores

    layers = np.cumsum([len(s) for s in engine.layout.stage_layers])  # layers run up to each exit
    depth = int(layers[-1])
    said, passes, exits = [], [], []
    for image, text, task in zip(prompts.images, prompts.texts, prompts.tasks):
        prompt = engine.manifest["tokenizer"]["caption_prompt"] if task == "caption" else text
        g = engine.generate(image, prompt, max_new_tokens, policy=policy, keep_ratio=keep_ratio)
        said.append(g.text)
        prefill = len(engine.prompt_ids(prompt)) - engine.layout.num_image_tokens + g.kept_visual_tokens
        passes.append(prefill * depth + sum(int(layers[e]) for e in g.exits[1:]))
        exits += g.exits[1:]
    caps = [i for i, t in enumerate(prompts.tasks) if t == "caption"]
    qs = [i for i, t in enumerate(prompts.tasks) if t == "answer"]
    cider = caption_scores([said[i] for i in caps], [[prompts.references[i]] for i in caps],
                           meteor=False).cider_per_image if caps else []
    correct = [100.0 * (said[i].strip().lower() == prompts.references[i].strip().lower()) for i in qs]
    return Row(policy.to_dict(), keep_ratio, float(np.mean(cider)) if caps else math.nan,
               float(np.mean(correct)) if qs else math.nan, float(np.mean(passes)),
               float(np.mean(exits)) if exits else 0.0, list(cider), correct,
               {task: float(np.mean([passes[i] for i in idx]))
                for task, idx in (("caption", caps), ("answer", qs)) if idx})


def check_arguments(max_drop_accuracy, max_drop_cider, samples, z, data_seed) -> None:
    def real(x) -> bool:
        return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)

    problems = []
    if not real(max_drop_accuracy) or not 0 <= max_drop_accuracy < 1:
        problems.append(f"max drop {max_drop_accuracy!r} must be an accuracy drop in [0, 1)")
    if not real(max_drop_cider) or max_drop_cider < 0:
        problems.append(f"max drop CIDEr {max_drop_cider!r} must be a finite number of points >= 0 (x100 scale)")
    if not real(z) or z < 0:
        problems.append(f"z {z!r} must be a finite number >= 0 (sigmas of the upper limit; 1.645 for 95%)")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < MIN_PROMPTS:
        problems.append(f"samples {samples!r}: calibrating a generative VLM needs at least {MIN_PROMPTS} prompts")
    if isinstance(data_seed, bool) or not isinstance(data_seed, int) or data_seed < 0:
        problems.append(f"data seed {data_seed!r} must be a whole number >= 0")
    if problems:
        raise ConfigError(problems, "calibration arguments")


def choose(engine, prompts: Prompts, max_drop_accuracy: float, max_drop_cider: float, z: float,
           max_new_tokens: int, progress: bool = True) -> dict:
    """Every candidate policy at every keep ratio against full depth at the largest keep ratio; the chosen
    one has the fewest layer passes among those whose CIDEr and accuracy drops both stay within their
    bounds at their one-sided upper limits (full depth at the largest ratio always does)."""
    ratios = sorted(engine.layout.keep_ratios, reverse=True)
    base = evaluate(engine, prompts, Policy("full"), ratios[0], max_new_tokens)
    jobs = [(p, r) for r in ratios for p in candidate_policies(len(engine.layout.stage_layers))]
    rows = []
    for policy, ratio in tqdm(jobs, desc="calibrate generation", disable=not progress, dynamic_ncols=True):
        row = base if (policy.kind, ratio) == ("full", ratios[0]) else \
            evaluate(engine, prompts, policy, ratio, max_new_tokens)
        row.cider_drop_upper = round(drop_upper(base.cider_per_prompt, row.cider_per_prompt, z), 3)
        row.accuracy_drop_upper = round(drop_upper(base.correct, row.correct, z), 3)
        rows.append(row)
    cider_ok = [r.cider_drop_upper <= max_drop_cider + 1e-9 for r in rows]
    accuracy_ok = [r.accuracy_drop_upper <= 100 * max_drop_accuracy + 1e-9 for r in rows]
    chosen = min((r for r, c, a in zip(rows, cider_ok, accuracy_ok) if c and a),
                 key=lambda r: (r.layer_passes, -r.keep_ratio))
    # each task on its own: the cheapest row for its prompts within its own bound
    tasks = {task: min((r for r, fine in zip(rows, ok) if fine),
                       key=lambda r: (r.task_layer_passes[task], -r.keep_ratio)).to_dict()
             for task, ok in (("caption", cider_ok), ("answer", accuracy_ok)) if task in base.task_layer_passes}
    return {"max_drop_accuracy": max_drop_accuracy, "max_drop_cider": max_drop_cider, "z": z,
            "prompts": len(prompts.texts), "max_new_tokens": max_new_tokens, "baseline": base.to_dict(),
            "chosen": chosen.to_dict(), "tasks": tasks, "rows": [r.to_dict() for r in rows]}


METRIC = {"caption": "cider", "answer": "accuracy"}  # each task's quality in a Row


def setting(row: dict) -> dict:
    """A calibration row as the manifest's thresholds state a setting."""
    p = row["policy"]
    return {"policy": p["kind"], "threshold": p.get("threshold") if p.get("threshold") is not None else 1.0,
            "patience": p.get("patience") or 2, "keep_ratio": row["keep_ratio"]}


def calibrate_vlm_bundle(bundle, max_drop_accuracy: float = 0.01, max_drop_cider: float = 1.0, samples: int = 64,
                         data_seed: int = 0, backend: str = "auto", z: float = 1.645, progress: bool = True,
                         write: bool = True, sign_key=None) -> dict:
    """Calibrate a generative VLM bundle through its own runtime; with `write`, store the choice in its
    manifest (the bundle as verified on load, and only as such: see mmedge.bundle.publish.write_calibrated)."""
    from mmedge.adapt.vlm_manifest import layout_problems, schema_problems
    from mmedge.bundle.manifest import VLM
    from mmedge.bundle.publish import check_unchanged, write_calibrated
    from mmedge.runtime.vlm_engine import VLMEngine

    check_arguments(max_drop_accuracy, max_drop_cider, samples, z, data_seed)
    key = None
    if sign_key is not None:
        from mmedge.bundle.signing import load_private_key

        key = load_private_key(sign_key)  # a bad key fails now, before anything is computed
    engine = VLMEngine.load(bundle, backend=backend, threads=1, policy="full", keep_ratio=None)
    if write:
        check_unchanged(engine.root, engine.manifest, VLM, hashes=False)
    prompts = scene_prompts(engine.manifest["preprocessing"]["image_size"], samples, data_seed)
    result = choose(engine, prompts, max_drop_accuracy, max_drop_cider, z, engine.max_new_tokens, progress)
    result["backend"] = engine.backend
    if write:
        c, base = result["chosen"], result["baseline"]
        thresholds = {**setting(c), "kv": "copy", "calibrated": True,
                      "tasks": {task: setting(row) for task, row in result["tasks"].items()},
                      "calibration": {k: result[k] for k in ("max_drop_accuracy", "max_drop_cider", "z", "prompts",
                                                             "max_new_tokens", "backend")}
                      | {"baseline_cider": base["cider"], "baseline_accuracy": base["accuracy"], "cider": c["cider"],
                         "accuracy": c["accuracy"], "layer_passes_ratio": c["layer_passes"] / base["layer_passes"],
                         "tasks": {task: {"quality": row[METRIC[task]], "baseline": base[METRIC[task]],
                                          "layer_passes_ratio": row["task_layer_passes"][task]
                                          / base["task_layer_passes"][task]}
                                   for task, row in result["tasks"].items()}}}
        result["signature"] = write_calibrated(engine.root, engine.manifest, {"thresholds": thresholds}, key, VLM,
                                               lambda m: schema_problems(m) or layout_problems(m))
    return result


def format_rows(result: dict) -> str:
    from tabulate import tabulate

    def name(p: dict) -> str:
        return f"{p['kind']} {p['threshold']:g}" if p["kind"] in ("confidence", "max_probability") else p["kind"]

    base = result["baseline"]
    rows = [[name(r["policy"]), r["keep_ratio"], f"{r['cider']:.1f}", f"{r['cider_drop_upper']:.1f}",
             f"{r['accuracy']:.1f}", f"{r['accuracy_drop_upper']:.1f}", f"{r['mean_exit']:.2f}",
             f"{base['layer_passes'] / r['layer_passes']:.2f}x"] for r in result["rows"]]
    c = result["chosen"]
    return (tabulate(rows, ["policy", "keep", "CIDEr", "CIDEr drop (upper)", "accuracy", "accuracy drop (upper)",
                            "mean exit", "fewer layer passes"], tablefmt="github")
            + f"\n\nchosen ({result['prompts']} validation prompts; drops at the one-sided upper limit, z {result['z']}: "
              f"CIDEr <= {result['max_drop_cider']} points, accuracy <= {100 * result['max_drop_accuracy']:g} points): "
              f"{name(c['policy'])} at keep {c['keep_ratio']}: CIDEr {c['cider']:.1f} (full depth {base['cider']:.1f}), "
              f"accuracy {c['accuracy']:.1f} (full depth {base['accuracy']:.1f}), "
              f"{base['layer_passes'] / c['layer_passes']:.2f}x fewer decoder layer passes"
            + "".join(f"\n{task} prompts on their own (their bound only): {name(r['policy'])} at keep {r['keep_ratio']}, "
                      f"{r[METRIC[task]]:.1f} (full depth {base[METRIC[task]]:.1f}), "
                      f"{base['task_layer_passes'][task] / r['task_layer_passes'][task]:.2f}x fewer decoder layer passes"
                      for task, r in result.get("tasks", {}).items()))

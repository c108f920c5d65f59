"""`mmedge eval` on an adapted generative VLM folder: its greedy generations at full depth per keep ratio
(PyTorch, batch 1), scored per task: CIDEr x100 of the captions against their references and exact-match
accuracy of the short answers, each with a bootstrap 90% interval over prompts. On the generated scenes
(half captions under the caption prompt, half questions) or a dataset on disk (NAME:ROOT: coco or cc
captions, every caption of an image its references; vqa2, gqa or jsonl questions against their answer).
The exits are chosen by calibrating the exported bundle (`mmedge calibrate`), not here.
"""

from __future__ import annotations

from pathlib import Path


from mmedge.errors import ConfigError


def scene_examples(image_size: int, split: str, limit: int, seed: int) -> dict[str, tuple[list, list, list]]:
    """task -> (images, prompt texts, references) of `limit` scenes of `split` (vlm_calibrate.scene_prompts)."""
    from mmedge.adapt.vlm_calibrate import scene_prompts
    from mmedge.adapt.vlm_distill import CAPTION_PROMPT

    p = scene_prompts(image_size, limit, seed, split)
    out: dict[str, tuple[list, list, list]] = {}
    for task in ("caption", "answer"):
        idx = [i for i, t in enumerate(p.tasks) if t == task]
        if idx:
            out[task] = ([p.images[i] for i in idx], [CAPTION_PROMPT if task == "caption" else p.texts[i] for i in idx],
                         [p.references[i] for i in idx])
    return out


def dataset_examples(data: str, split: str, limit: int) -> dict[str, tuple[list, list, list]]:
    """task -> (images, prompt texts, references) of the first `limit` examples of a dataset's split: a caption
    dataset's images (every caption of an image one of its references), or questions with their answer."""
    from mmedge.adapt.data import _OpenInside, materialise
    from mmedge.adapt.vlm_distill import CAPTION_PROMPT, RECORD_TASKS, generative_records

    spec, records = generative_records(data, split)
    if RECORD_TASKS[spec.name] == "caption":
        by_image: dict[Path, list] = {}
        for r in records:
            by_image.setdefault(r.images[0], []).append(r)
        picked = list(by_image.values())[:limit]
        images = [materialise(_OpenInside(rs[0].images[0], spec.root, rs[0].where)) for rs in picked]
        return {"caption": (images, [CAPTION_PROMPT] * len(picked), [[r.text for r in rs] for rs in picked])}
    picked = records[:limit]
    images = [materialise(_OpenInside(r.images[0], spec.root, r.where)) for r in picked]
    return {"answer": (images, [r.text for r in picked], [r.answer for r in picked])}


def evaluate_generative(model, pre, data: str = "scenes", split: str | None = None, limit: int = 200,
                        keep_ratios: list[float] | None = None, data_seed: int = 0, progress: bool = True) -> dict:
    """Quality per task at full depth for each keep ratio (default: those the prefilter was distilled at)."""
    from mmedge.adapt.vlm_eval import TASK_METRICS, run
    from mmedge.runtime.controller import Policy

    if data == "scenes":
        split = split or "test"
        if split not in ("val", "test"):
            raise ConfigError(f"--split {split!r}: the scenes have val and test for a generative model", "arguments")
        examples = scene_examples(pre.image_size, split, limit, data_seed)
    else:
        from mmedge.data.provider import VAL_SPLIT
        from mmedge.data.sources import parse_data_spec

        split = split or VAL_SPLIT.get(parse_data_spec(data).name, "val")
        examples = dataset_examples(data, split, limit)
    ratios = sorted(keep_ratios or model.config.keep_ratios, reverse=True)
    rows = []
    for ratio in ratios:
        row = {"keep_ratio": ratio, "visual_tokens": model.config.kept_tokens(ratio)}
        for task, (images, texts, refs) in examples.items():
            r = run(model, pre, task, images, texts, refs, Policy("full"), ratio, progress=progress)
            row[task] = {"metric": TASK_METRICS[task], "quality": r.quality, "interval90": list(r.interval),
                         "prompts": len(texts)}
        rows.append(row)
    return {"data": data, "split": split, "limit": limit, "data_seed": data_seed,
            "visual_tokens": model.config.kept_tokens(1.0), "rows": rows,
            "note": "PyTorch, greedy, full depth; exits: export the folder and calibrate the bundle (mmedge calibrate)"}


def format_generative(result: dict) -> str:
    from tabulate import tabulate

    tasks = [t for t in ("caption", "answer") if t in result["rows"][0]]
    head = {"caption": "captions CIDEr [90%]", "answer": "answers accuracy % [90%]"}
    table = [[f"{r['keep_ratio']:g}", r["visual_tokens"]] + [
        f"{r[t]['quality']:.1f} [{r[t]['interval90'][0]:.1f}, {r[t]['interval90'][1]:.1f}]" for t in tasks]
        for r in result["rows"]]
    counts = ", ".join(f"{result['rows'][0][t]['prompts']} {'images' if t == 'caption' else 'questions'}"
                       for t in tasks)
    return (tabulate(table, ["keep ratio", "visual tokens"] + [head[t] for t in tasks], tablefmt="github")
            + f"\n\n{result['data']} {result['split']} ({counts}); {result['note']}")

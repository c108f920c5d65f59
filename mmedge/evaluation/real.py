"""Evaluation on a real dataset with its own metric, per exit and keep ratio:
VQA v2 soft accuracy per answer type; GQA accuracy per structural and semantic type; NLVR2
accuracy and consistency; accuracy per type for a user's JSON Lines data."""

from __future__ import annotations

import numpy as np

from mmedge.data.batches import build_batch
from mmedge.data.provider import CAPTION_SOURCES, VAL_SPLIT, label_ids
from mmedge.data.sources import open_dataset, parse_data_spec
from mmedge.data.tasks import Sample
from mmedge.data.tokenizer import WordTokenizer
from mmedge.evaluation import official
from mmedge.evaluation.predict import run_model
from mmedge.models.model import AdaptiveVLModel


def metric(source: str, predictions: list[str], records) -> dict:
    """The dataset's own metric of answer strings against its records."""
    correct = [p == r.answer for p, r in zip(predictions, records)]
    if source == "vqa2":
        return official.vqa_accuracy(predictions, [list(r.answers) for r in records], [r.qtype for r in records])
    if source == "gqa":
        return {**official.accuracy_per_type(correct, [r.qtype for r in records]),
                "per_semantic_type": official.accuracy_per_type(correct, [r.extra["semantic"] for r in records])["per_type"]}
    out = official.accuracy_per_type(correct, [r.qtype for r in records])
    if source == "nlvr2":
        out["consistency"] = official.nlvr2_consistency(correct, [r.group for r in records])
    return out


def retrieval(model: AdaptiveVLModel, tokenizer: WordTokenizer, dataset, images: int, progress: bool) -> dict:
    """Image-text retrieval Recall@1/5/10 both ways over the first `images` images and all their
    captions: every caption scored against every image by the matching head (P(yes), last exit,
    every visual token kept)."""
    import torch
    from tqdm.auto import tqdm

    from mmedge.data.preprocess import preprocess_image

    cfg = model.config
    groups = list(dict.fromkeys(r.group for r in dataset.records))[:images]
    column = {g: c for c, g in enumerate(groups)}
    first: dict[str, int] = {}
    for i, r in enumerate(dataset.records):
        if r.group in column:
            first.setdefault(r.group, i)
    texts = [r for r in dataset.records if r.group in column]
    image_of_text = np.array([column[r.group] for r in texts])
    ids, mask = (torch.from_numpy(a) for a in tokenizer.encode_batch([r.text for r in texts]))  # (T, L) once
    scores = np.zeros((len(texts), len(groups)), dtype=np.float32)
    yes = cfg.labels.index("yes")
    model.eval()
    with torch.no_grad():
        for g, group in enumerate(tqdm(groups, desc="retrieval", disable=not progress)):
            pixels = torch.from_numpy(preprocess_image(dataset.image(first[group]), cfg.image_size))[None]  # (1, 3, S, S)
            for start in range(0, len(texts), 128):
                n = min(128, len(texts) - start)
                logits = model(pixels.expand(n, -1, -1, -1), ids[start: start + n], mask[start: start + n]).logits[-1]
                scores[start: start + n, g] = logits.softmax(-1)[:, yes].numpy()
    return {"images": len(groups), "texts": len(texts), **official.retrieval_recall(scores, image_of_text)}


def evaluate_real(model: AdaptiveVLModel, tokenizer: WordTokenizer, data: str, split: str | None, limit: int,
                  keep_ratios: list[float] | None = None, progress: bool = True, teacher: tuple | None = None) -> dict:
    """teacher: as for mmedge.evaluation.evaluate.evaluate."""
    from mmedge.export.stages import is_adapted

    if is_adapted(model):  # a folder written by `mmedge adapt`: `tokenizer` is its preprocessor
        from mmedge.evaluation.adapted import evaluate_adapted

        return evaluate_adapted(model, tokenizer, data, split, limit, keep_ratios=keep_ratios, progress=progress,
                                teacher=teacher)
    cfg = model.config
    spec = parse_data_spec(data)
    split = split or VAL_SPLIT.get(spec.name, "val")
    if spec.name in CAPTION_SOURCES:  # limit counts images here: every caption is scored against every image
        dataset = open_dataset(spec, cfg.task, split, cfg.image_size, progress=progress)
        return {"data": spec.name, "split": split, "retrieval": retrieval(model, tokenizer, dataset, limit, progress),
                "images_skipped": dataset.images.skipped}
    dataset = open_dataset(spec, cfg.task, split, cfg.image_size, limit=limit, progress=progress)
    labels = cfg.labels
    samples = [Sample(image=dataset.image(i), text=r.text, answer=r.answer, label=label, task=cfg.task, qtype=r.qtype)
               for i, (r, label) in enumerate(zip(dataset.records, label_ids(labels, [r.answer for r in dataset.records])))]
    batches = [build_batch(samples[i: i + 128], tokenizer, cfg.image_size) for i in range(0, len(samples), 128)]
    ratios = keep_ratios or cfg.keep_ratios
    run = run_model(model, batches, ratios, progress=progress)
    per_ratio = {}
    for r in ratios:
        preds = run.outputs[r].preds  # (n, exits)
        per_ratio[f"{r:g}"] = {"per_exit": [metric(spec.name, [labels[int(i)] for i in preds[:, e]], dataset.records)
                                            for e in range(preds.shape[1])]}
    return {"data": spec.name, "split": split, "samples": len(dataset), "images_skipped": dataset.images.skipped,
            "out_of_vocabulary_answers": int(np.sum([s.label < 0 for s in samples])), "keep_ratios": per_ratio}


def format_real(result: dict) -> str:
    if result.get("adapted"):
        from mmedge.evaluation.adapted import format_adapted

        return format_adapted(result)
    if "retrieval" in result:
        r = result["retrieval"]
        return (f"{result['data']} {result['split']}: retrieval over {r['images']} images and {r['texts']} captions\n  " +
                ", ".join(f"{k} {v:.3f}" for k, v in r.items() if "@" in k))
    lines = [f"{result['data']} {result['split']}: {result['samples']} samples "
             f"({result['out_of_vocabulary_answers']} with an answer outside the model's labels: counted wrong)"]
    for r, v in result["keep_ratios"].items():
        for e, m in enumerate(v["per_exit"]):
            extra = f", consistency {m['consistency']:.3f}" if "consistency" in m else ""
            kinds = m.get("per_answer_type") or m.get("per_type") or {}
            lines.append(f"  keep {r} exit {e}: {m['accuracy']:.3f}{extra}; " +
                         ", ".join(f"{t} {x['accuracy']:.3f} (n={x['n']})" for t, x in kinds.items()))
    return "\n".join(lines)

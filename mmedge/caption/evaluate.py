"""`mmedge eval` for a captioner: BLEU-4, CIDEr-D and (with Java) METEOR of greedy captions at full
depth, per keep ratio, on the scenes' split or on a COCO / Conceptual Captions split."""

from __future__ import annotations

import torch

from mmedge.caption.data import decode_caption
from mmedge.caption.metrics import caption_scores
from mmedge.errors import ConfigError
from mmedge.runtime.controller import Policy


def evaluate_captions(model, tokenizer, data: str = "scenes", split: str | None = None, limit: int = 500,
                      keep_ratios: list[float] | None = None, beam: int = 1, data_seed: int = 0,
                      progress: bool = True) -> dict:
    from mmedge.caption.calibrate import validation_set
    from mmedge.caption.decode import generate

    size = model.config.image_size
    if data == "scenes":
        split = split or "test"
        if split not in ("val", "test"):
            raise ConfigError(f"--split {split!r}: scene captions have val and test", "arguments")
        pixels, references = validation_set(size, limit, data_seed, split)
    else:
        from mmedge.caption.real import grouped, open_captions

        split = split or "val"
        grouped_set = grouped(open_captions(data, split, size, progress=progress), size, limit)
        pixels, references = grouped_set.pixels, grouped_set.references
    rows = {}
    for r in keep_ratios or model.config.keep_ratios:
        texts = []
        for i in range(0, len(pixels), 64):
            out = generate(model, torch.from_numpy(pixels[i: i + 64]), r, Policy("full"), beam=beam)
            texts += [decode_caption(tokenizer, t) for t in out.tokens]
        rows[f"{r:g}"] = {**caption_scores(texts, references).to_dict(), "examples": [
            {"generated": t, "references": refs} for t, refs in list(zip(texts, references))[:5]]}
    return {"data": data, "split": split, "images": len(pixels), "beam": beam, "by_keep_ratio": rows,
            "references_per_image": sum(len(x) for x in references) / len(references)}


def format_captions(result: dict) -> str:
    from tabulate import tabulate

    rows = [[r, f"{v['bleu4']:.4f}", f"{v['cider']:.1f}", "n/a (no Java)" if v["meteor"] is None else f"{v['meteor']:.4f}"]
            for r, v in result["by_keep_ratio"].items()]
    first = next(iter(result["by_keep_ratio"].values()))["examples"][:3]
    ex = "\n".join(f"  {e['generated']!r}  (reference: {e['references'][0]!r})" for e in first)
    return (f"{result['data']} {result['split']}: {result['images']} images, "
            f"{result['references_per_image']:.1f} references each, greedy, full depth\n"
            + tabulate(rows, ["keep ratio", "BLEU-4", "CIDEr-D x100", "METEOR"], tablefmt="github") + "\n" + ex)

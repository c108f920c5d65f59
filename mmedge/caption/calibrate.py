"""Choosing the per-word exit policy of a captioner: the cheapest policy (decoder FLOPs per caption)
whose CIDEr drop against full depth on validation images stays within ``max_drop`` points at its
one-sided upper confidence limit (mean of the paired per-image CIDEr differences + z x their
standard error; z = 1.645 for 95%), as the classifiers' calibration bounds its accuracy drop.

Unlike a classifier's, a caption's exits cannot be replayed offline: an early word changes the
words after it, and its copied keys and values change what later words see. So each candidate
policy decodes the validation images again (batched, in PyTorch: ``mmedge.caption.decode``, the
same arithmetic as the exported graphs, which export checks word by word; ``torch_decoder``) or
through a bundle's runtime (``engine_decoder``: what `mmedge calibrate` uses, image by image).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
from tqdm.auto import tqdm

from mmedge.caption.cost import DecoderCost
from mmedge.caption.data import decode_caption, scene_captions
from mmedge.caption.metrics import caption_scores
from mmedge.data.preprocess import preprocess_batch
from mmedge.runtime.controller import Policy

# (pixels (B, 3, S, S), policy, keep ratio, kv) -> (generated ids per image, exit stage per id)
Decode = Callable[[np.ndarray, Policy, float, str], tuple[list[list[int]], list[list[int]]]]

CONFIDENCE = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99)
PATIENCE = (2, 3)


@dataclass
class PolicyResult:
    policy: dict
    keep_ratio: float
    kv: str
    cider: float
    bleu4: float
    mean_exit: float               # mean exit stage over generated words (0-based)
    words: float                   # mean generated ids per caption ([EOS] included)
    decoder_flops: float           # per caption, this policy
    full_depth_flops: float        # per caption, every word through every layer (the same captions' lengths)
    flops_ratio: float             # full-depth decoder FLOPs of the full-depth captions / this policy's
    encoder_flops: int             # per image
    cider_per_image: list[float] = field(default_factory=list, repr=False)
    drop_upper: float | None = None  # one-sided upper limit of the CIDEr drop against the baseline

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "cider_per_image"}


def candidate_policies() -> list[Policy]:
    return ([Policy("full")] + [Policy("confidence", threshold=t) for t in CONFIDENCE]
            + [Policy("max_probability", threshold=t) for t in CONFIDENCE]
            + [Policy("patience", patience=p) for p in PATIENCE])


def validation_set(image_size: int, n: int, seed: int = 0, split: str = "val"):
    """(pixels, references) of n generated scenes."""
    images, captions = scene_captions(seed, split, range(n), image_size)
    return preprocess_batch(images, image_size), [[c] for c in captions]


def torch_decoder(model, batch: int = 64, beam: int = 1) -> Decode:
    """Batched decoding in PyTorch (training side)."""
    import torch

    from mmedge.caption.decode import generate

    def decode(pixels, policy, keep_ratio, kv):
        tokens, exits = [], []
        for i in range(0, len(pixels), batch):
            out = generate(model, torch.from_numpy(pixels[i: i + batch]), keep_ratio, policy, beam=beam, kv=kv)
            tokens += out.tokens
            exits += out.exits
        return tokens, exits
    return decode


def engine_decoder(engine, beam: int = 1) -> Decode:
    """Image by image through a CaptionEngine's backend (what ships)."""
    from mmedge.caption.runtime import CaptionDecoder

    def decode(pixels, policy, keep_ratio, kv):
        decoder = CaptionDecoder(engine.session, engine.layout, f"k{keep_ratio:g}")
        runs = [decoder.caption(pixels[i: i + 1], policy, beam=beam, kv=kv) for i in range(len(pixels))]
        return [r.tokens for r in runs], [r.exits for r in runs]
    return decode


def evaluate_policy(decode: Decode, cost: DecoderCost, tokenizer, pixels: np.ndarray, references: list[list[str]],
                    policy: Policy, keep_ratio: float = 1.0, kv: str = "copy",
                    full_words: float | None = None) -> PolicyResult:
    tokens, exits = decode(pixels, policy, keep_ratio, kv)
    texts = [decode_caption(tokenizer, t) for t in tokens]
    scores = caption_scores(texts, references, meteor=False)
    flops = float(np.mean([cost.caption(e, kv) for e in exits]))
    words = float(np.mean([len(e) for e in exits]))
    full = cost.full_depth(1) * (full_words if full_words is not None else words)
    flat = [x for e in exits for x in e]
    return PolicyResult(policy.to_dict(), keep_ratio, kv, round(scores.cider, 3), round(scores.bleu4, 4),
                        float(np.mean(flat)) if flat else 0.0, words, flops, full, full / flops if flops else 0.0,
                        cost.encoder, scores.cider_per_image)


def drop_upper(base: list[float], other: list[float], z: float) -> float:
    """One-sided upper limit of the mean paired CIDEr drop (base - other), per-image scores."""
    d = np.asarray(base) - np.asarray(other)
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
    return float(d.mean()) + z * se


def calibrate(decode: Decode, costs: dict[float, DecoderCost], tokenizer, pixels: np.ndarray,
              references: list[list[str]], max_drop: float = 1.0, kv: str = "copy", progress: bool = True,
              policies: list[Policy] | None = None, z: float = 1.645) -> dict:
    """Every candidate policy at every keep ratio of `costs`; the choice is the fewest decoder FLOPs
    per caption whose CIDEr drop against full depth with every visual token stays within max_drop
    points at its one-sided upper limit (z standard errors of the paired per-image differences)."""
    full_ratio = max(costs)
    base = evaluate_policy(decode, costs[full_ratio], tokenizer, pixels, references, Policy("full"), full_ratio, kv)
    rows: list[PolicyResult] = []
    jobs = [(p, r) for r in sorted(costs, reverse=True) for p in (policies or candidate_policies())]
    for policy, r in tqdm(jobs, desc="calibrate caption", disable=not progress, dynamic_ncols=True):
        row = evaluate_policy(decode, costs[r], tokenizer, pixels, references, policy, r, kv, full_words=base.words)
        row.drop_upper = round(drop_upper(base.cider_per_image, row.cider_per_image, z), 3)
        rows.append(row)
    ok = [x for x in rows if x.drop_upper <= max_drop]
    chosen = min(ok, key=lambda x: (x.decoder_flops, -x.cider))
    return {"max_drop": max_drop, "z": z, "images": len(pixels), "kv": kv, "baseline": base.to_dict(),
            "chosen": chosen.to_dict(), "rows": [x.to_dict() for x in rows]}


def thresholds_from(choice: dict) -> dict:
    """The manifest's thresholds section for a calibrated choice."""
    p = choice["policy"]
    return {"policy": p["kind"], "confidence": p["threshold"] if p["kind"] == "confidence" else 1.0,
            "max_probability": p["threshold"] if p["kind"] == "max_probability" else 1.0,
            "patience": p["patience"], "keep_ratio": choice["keep_ratio"], "kv": choice["kv"], "calibrated": True}


def format_rows(result: dict) -> str:
    from tabulate import tabulate

    base = result["baseline"]
    rows = [[_name(r["policy"]), r["keep_ratio"], f"{r['cider']:.1f}", f"{r['cider'] - base['cider']:+.1f}",
             f"{r['drop_upper']:.1f}", f"{r['mean_exit']:.2f}", f"{r['decoder_flops'] / 1e6:.2f}",
             f"{r['flops_ratio']:.2f}x"] for r in result["rows"]]
    c = result["chosen"]
    return (tabulate(rows, ["policy", "keep", "CIDEr", "vs full", "drop upper limit", "mean exit",
                            "decoder MFLOPs/caption", "fewer FLOPs"], tablefmt="github")
            + f"\n\nchosen ({result['images']} validation images, CIDEr drop <= {result['max_drop']} points at the "
              f"one-sided upper limit, z {result['z']}, kv "
              f"{result['kv']}): {_name(c['policy'])} at keep {c['keep_ratio']}: CIDEr {c['cider']:.1f} against "
              f"{base['cider']:.1f} at full depth, {c['flops_ratio']:.2f}x fewer decoder FLOPs per caption")


def _name(p: dict) -> str:
    if p["kind"] in ("confidence", "max_probability"):
        return f"{p['kind']} {p['threshold']:g}"
    return f"patience {p['patience']}" if p["kind"] == "patience" else p["kind"]


def calibrate_bundle(bundle, max_drop: float = 1.0, samples: int = 200, data_seed: int = 0, backend: str = "auto",
                     kv: str = "copy", progress: bool = True, write: bool = True, sign_key=None,
                     policies: list[Policy] | None = None, z: float = 1.645) -> dict:
    """Calibrate a captioning bundle through its own runtime; write the choice into its manifest."""
    import json
    from pathlib import Path

    from mmedge.caption.manifest import write_caption_manifest
    from mmedge.errors import ConfigError
    from mmedge.runtime.caption_engine import CaptionEngine

    if not z >= 0 or not max_drop >= 0 or isinstance(samples, bool) or not isinstance(samples, int) or samples < 20:
        raise ConfigError(f"max_drop {max_drop} must be >= 0 CIDEr points and samples {samples} at least 20",
                          "arguments")
    engine = CaptionEngine.load(bundle, backend=backend, threads=1)
    pixels, references = validation_set(engine.image_size, samples, data_seed)
    costs = {float(r): DecoderCost.from_manifest(f) for r, f in engine.manifest["flops"].items()}
    result = calibrate(engine_decoder(engine), costs, engine.tokenizer, pixels, references, max_drop, kv, progress,
                       policies, z)
    result["backend"] = engine.backend
    if write:
        root = Path(bundle)
        manifest = json.loads((root / "manifest.json").read_text())
        for key in ("schema_version", "files"):
            manifest.pop(key)
        manifest["thresholds"] = thresholds_from(result["chosen"])
        manifest["calibration"] = {k: result[k] for k in ("max_drop", "z", "images", "kv", "backend")} | {
            "baseline_cider": result["baseline"]["cider"], "cider": result["chosen"]["cider"],
            "drop_upper": result["chosen"]["drop_upper"], "flops_ratio": result["chosen"]["flops_ratio"]}
        signature = root / "manifest.sig"
        had_signature = signature.exists()
        write_caption_manifest(root, manifest)
        if sign_key is not None:
            from mmedge.bundle.signing import sign_bundle

            sign_bundle(root, sign_key)
            result["signature"] = "signed"
        elif had_signature:
            signature.unlink()
            result["signature"] = "removed"
    return result

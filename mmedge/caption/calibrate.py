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


MIN_IMAGES = 20  # fewer and the CIDEr drop's upper limit means little


def check_bundle_arguments(max_drop, samples, z, data_seed=0, data: str = "scenes", kv: str = "copy") -> None:
    """Refuse what `calibrate_bundle` cannot honour, before anything is loaded or written: a CIDEr
    bound (points, x100) and z finite and >= 0, at least MIN_IMAGES images, a seed >= 0, `data`
    'scenes' or a caption dataset coco:ROOT / cc:ROOT, a known kv mode."""
    import math
    import numbers

    from mmedge.caption.real import CAPTION_SOURCES
    from mmedge.caption.runtime import KV_MODES
    from mmedge.data.sources import parse_data_spec
    from mmedge.errors import ConfigError, DatasetError

    def real(x) -> bool:
        return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)

    def whole(x, least) -> bool:
        return isinstance(x, numbers.Integral) and not isinstance(x, bool) and x >= least

    problems = []
    if not real(max_drop) or max_drop < 0:
        problems.append(f"max drop {max_drop!r} must be a finite number of CIDEr points >= 0 (x100 scale)")
    if not real(z) or z < 0:
        problems.append(f"z {z!r} must be a finite number >= 0 (sigmas of the upper limit; 1.645 for 95%)")
    if not whole(samples, MIN_IMAGES):
        problems.append(f"samples {samples!r}: calibrating a captioner needs at least {MIN_IMAGES} images")
    if not whole(data_seed, 0):
        problems.append(f"data seed {data_seed!r} must be a whole number >= 0")
    if kv not in KV_MODES:
        problems.append(f"kv {kv!r} unknown; choose one of {list(KV_MODES)}")
    if not isinstance(data, str):
        problems.append(f"data {data!r} must be 'scenes' or NAME:ROOT")
    elif data != "scenes":
        try:
            name = parse_data_spec(data).name
        except DatasetError as exc:
            problems.append(str(exc))
        else:
            if name not in CAPTION_SOURCES:
                problems.append(f"--data {name}: a captioner is calibrated on captions: "
                                f"{' or '.join(CAPTION_SOURCES)} (NAME:ROOT), or scenes")
    if problems:
        raise ConfigError(problems, "calibration arguments")


def calibration_images(image_size: int, samples: int, data_seed: int = 0, data: str = "scenes",
                       progress: bool = True) -> tuple[np.ndarray, list[list[str]]]:
    """(pixels, references) of the validation images: generated scenes, or the first `samples`
    images of a caption dataset's validation split (every caption of an image its references)."""
    if data == "scenes":
        return validation_set(image_size, samples, data_seed)
    from mmedge.caption.real import grouped, open_captions
    from mmedge.errors import ConfigError

    found = grouped(open_captions(data, "val", image_size, progress=progress), image_size, samples)
    if len(found.references) < MIN_IMAGES:
        raise ConfigError(f"{data}: only {len(found.references)} validation images; calibrating a captioner needs "
                          f"at least {MIN_IMAGES}", "calibration data")
    return found.pixels, found.references


def calibrate_bundle(bundle, max_drop: float = 1.0, samples: int = 200, data_seed: int = 0, backend: str = "auto",
                     kv: str = "copy", progress: bool = True, write: bool = True, sign_key=None,
                     policies: list[Policy] | None = None, z: float = 1.645, data: str = "scenes") -> dict:
    """Calibrate a captioning bundle through its own runtime; with `write`, store the choice in its
    manifest. `max_drop`: CIDEr points (x100 scale); `data`: scenes or coco:ROOT / cc:ROOT.

    Every input (the bound, the data, the signing key) is checked before anything is computed or
    written. The bundle is calibrated as it was verified on load, and only as such: before writing,
    its manifest must still be the one loaded, every listed file must still match its SHA-256, and
    nothing unlisted (file, folder, link) may be inside; the new manifest keeps the very same
    `files` entries (nothing on disk is hashed into it), keeps the release name and raises its
    sequence. The old signature is removed; `sign_key` signs the new manifest."""
    from mmedge.runtime.caption_engine import CaptionEngine

    check_bundle_arguments(max_drop, samples, z, data_seed, data, kv)
    key = None
    if sign_key is not None:
        from mmedge.bundle.signing import load_private_key

        key = load_private_key(sign_key)  # a bad key fails now, before anything is written
    engine = CaptionEngine.load(bundle, backend=backend, threads=1)  # every listed file's SHA-256 checked
    if write:
        _check_writable(engine.root, engine.manifest, hashes=False)  # before the expensive part too (hashed on load)
    pixels, references = calibration_images(engine.image_size, samples, data_seed, data, progress)
    costs = {float(r): DecoderCost.from_manifest(f) for r, f in engine.manifest["flops"].items()}
    result = calibrate(engine_decoder(engine), costs, engine.tokenizer, pixels, references, max_drop, kv, progress,
                       policies, z)
    result["backend"] = engine.backend
    result["data"] = data.split(":")[0]
    if write:
        result["signature"] = _write_calibration(engine.root, engine.manifest, result, key)
    return result


def _check_writable(root, loaded: dict, hashes: bool = True) -> None:
    """BundleError unless the bundle on disk is the captioning bundle loaded (publish.check_unchanged)."""
    from mmedge.bundle.manifest import CAPTION
    from mmedge.bundle.publish import check_unchanged

    check_unchanged(root, loaded, CAPTION, hashes)


def _write_calibration(root, loaded: dict, result: dict, key) -> str:
    """Write the calibrated manifest (same `files`, next release) and sign it with `key`; returns
    what became of the signature: "signed", "removed" or "none"."""
    from mmedge.bundle.manifest import CAPTION
    from mmedge.bundle.publish import write_calibrated
    from mmedge.caption.manifest import layout_problems, schema_problems

    calibration = {k: result[k] for k in ("max_drop", "z", "images", "kv", "backend", "data")} | {
        "baseline_cider": result["baseline"]["cider"], "cider": result["chosen"]["cider"],
        "drop_upper": result["chosen"]["drop_upper"], "flops_ratio": result["chosen"]["flops_ratio"]}
    return write_calibrated(root, loaded, {"thresholds": thresholds_from(result["chosen"]), "calibration": calibration},
                            key, CAPTION, lambda m: schema_problems(m) or layout_problems(m))

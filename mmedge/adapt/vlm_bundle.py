"""`mmedge export` for an adapted generative VLM: its graphs (mmedge.adapt.vlm_export) as a bundle of kind
"vlm" (docs/bundle-format.md, Generative VLM bundles) that ``Engine.load(bundle).generate`` runs.

    onnx/{fp32,int8,int4}/*.onnx + weights.bin   a graph per file, the weights shared in one file
    ort/{fp32,int8,int4}/*.ort                    with --ort-format: ORT format, one self-contained file per graph
    executorch/vlm_{fp32,int8,int4}.pte           one program, a method per graph (XNNPACK)
    coreml/vlm_{fp32,int8,int4}.mlpackage         one multifunction package (structure checked only)
    tokenizer.json                                the source's tokenizer (Hugging Face tokenizers format)
    manifest.json                                 layout, prompt template, preprocessing, parity, hashes

Before anything is published the runtime's own preprocessing (mmedge.runtime.vlm_engine) must give the
source processor's pixels and prompt ids bit for bit on the parity prompts, and every fp32 artifact must
generate the PyTorch model's tokens at every keep ratio (and, at keep 1, transformers' own generate());
the quantized ones report how many generations they keep identical.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mmedge.errors import ConfigError, ExportError
from mmedge.fileio import make_parent, sha256_file

TARGETS = ("onnx", "executorch", "coreml")
QUANTIZED = ("int8", "int4")
SENTINEL = "\u0001PROMPT\u0001"  # stands for the user's text while the chat template is rendered once


def prompt_template(pre) -> tuple[str, str]:
    """The rendered chat template around the user's text: (before, after), the image block expanded."""
    text = pre.prompt_text(SENTINEL)
    if text.count(SENTINEL) != 1:
        raise ExportError("the chat template does not place the user's text exactly once; it cannot be stated as a "
                          "fixed text before and after the prompt")
    before, after = text.split(SENTINEL)
    return before, after


def _artifacts_onnx(model, root: Path, max_slots: int, quantize: tuple[str, ...], log,
                    ort_format: bool = False) -> list[dict]:
    from mmedge.adapt.vlm_export import export_onnx, quantize_onnx
    from mmedge.export.onnx_target import convert_to_ort
    from mmedge.export.onnx_weights import share_weights

    log("  onnx: exporting the graphs (fp32)")
    export_onnx(model, root, max_slots, progress=False)  # checks each graph against PyTorch on other inputs
    for precision in quantize:
        log(f"  onnx: weight-only {precision}")
        quantize_onnx(root, precision)  # onnx/*.onnx -> onnx-<precision>/
    (root / "vlm.json").unlink()  # the layout goes into the manifest
    fp32 = root / "onnx" / "fp32"
    fp32.mkdir()
    for path in (root / "onnx").glob("*.onnx"):
        path.rename(fp32 / path.name)
    for precision in quantize:
        (root / f"onnx-{precision}").rename(root / "onnx" / precision)
    artifacts = []
    for precision in ("fp32", *quantize):
        folder = root / "onnx" / precision
        names = [p.stem for p in sorted(folder.glob("*.onnx"))]
        if ort_format:  # before the weights are shared: an .ort file holds its own (no external data)
            log(f"  onnx: ORT format ({precision})")
            # int8 keeps its convolution weights behind DequantizeLinear, which an ORT-format session cannot
            # fold at load: folded to fp32 first, as for classifier bundles; int4's MatMulNBits stays packed
            converted = convert_to_ort(folder, root / "ort" / precision, fold_dequantize=precision == "int8")
            missing = sorted(set(names) - set(converted))
            if missing:
                raise ExportError(f"ORT format conversion produced no file for graphs {missing}")
        shared = share_weights(folder)
        artifacts.append({"target": "onnx", "format": "onnx", "precision": precision, "runtime": "onnxruntime",
                          **({"external_data": shared.relative_to(root).as_posix()} if shared else {}),
                          "stages": {n: {"file": (folder / f"{n}.onnx").relative_to(root).as_posix()} for n in names}})
        if ort_format:
            artifacts.append({"target": "onnx", "format": "ort", "precision": precision, "runtime": "onnxruntime",
                              "stages": {n: {"file": converted[n].relative_to(root).as_posix()} for n in names}})
    return artifacts


def _artifacts_executorch(model, root: Path, max_slots: int, precisions: tuple[str, ...], log) -> list[dict]:
    from mmedge.adapt.vlm_export import export_executorch, layout

    outputs = layout(model, max_slots).graphs
    artifacts = []
    for precision in precisions:
        log(f"  executorch: lowering {len(outputs)} methods to XNNPACK ({precision})")
        path = export_executorch(model, root, max_slots, precision)
        artifacts.append({"target": "executorch", "format": "pte", "precision": precision, "runtime": "executorch",
                          "file": path.relative_to(root).as_posix(), "backend_delegate": "XnnpackBackend",
                          "stages": {name: {"method": name, "outputs": list(outs)} for name, outs in outputs.items()}})
    (root / "vlm.json").unlink(missing_ok=True)
    return artifacts


def _artifacts_coreml(model, root: Path, max_slots: int, precisions: tuple[str, ...], log) -> list[dict]:
    from mmedge.adapt.vlm_export import export_coreml, layout

    names = list(layout(model, max_slots).graphs)
    artifacts = []
    for precision in precisions:
        log(f"  coreml: converting the graphs into one multifunction package ({precision} weights)")
        check = export_coreml(model, root, max_slots, precision)  # raises ExportError when the structure differs
        artifacts.append({
            "target": "coreml", "format": "mlpackage", "precision": precision, "runtime": "coreml",
            "file": f"coreml/vlm_{precision}.mlpackage",
            "structure_check": {"passed": True, "functions": check["functions"]},
            "parity": {"status": "not run", "passed": None,
                       "reason": "Core ML prediction needs macOS; this export was checked structurally (functions, "
                                 "inputs, outputs, cache shapes, token range)"},
            "stages": {name: {"function": name} for name in names}})
    return artifacts


TIE = 1e-3  # logits this close at the first differing token: a tie that float rounding may break either way


def _parity(decoder, prompts: list, references: dict, stop_ids, max_new_tokens: int, precision: str) -> dict:
    """Greedy generations at full depth per keep ratio against the PyTorch model's (`references`). fp32
    passes when each generation is PyTorch's, or differs first where the runtime's logits of its token and
    of PyTorch's are within TIE (a near tie, which float rounding decides)."""
    from mmedge.runtime.controller import Policy

    out = {}
    for ratio, want in references.items():
        same, ties, margins = 0, 0, []
        for (ids, pixels), tokens in zip(prompts, want):
            got = decoder.generate(ids, pixels, Policy("full"), max_new_tokens, keep_ratio=ratio, stop_ids=stop_ids)
            if got.tokens == tokens:
                same += 1
                continue
            at = next((i for i, (a, b) in enumerate(zip(got.tokens, tokens)) if a != b), None)
            if at is None:  # one stopped earlier: not a tie
                margins.append(float("inf"))
                continue
            margin = float(got.logits[at][got.tokens[at]] - got.logits[at][tokens[at]])
            margins.append(margin)
            ties += margin <= TIE
        n = len(prompts)
        failures = [f"{n - same - ties} of {n} generations differ from PyTorch's beyond a near tie "
                    f"(logit margins at the first difference: {[round(m, 5) for m in margins]})"] \
            if precision == "fp32" and same + ties != n else []
        out[f"{ratio:g}"] = {"prompts": n, "identical_generations": same / n, "near_ties": ties,
                             "failures": failures}
    return {"status": "measured", "policy": "full", "passed": not any(e["failures"] for e in out.values()),
            "by_keep_ratio": out}


def _check_preprocessing(pre, images: list, texts: list[str], tokenizer_file: Path, manifest_pre: dict,
                         before: str, after: str) -> tuple[list[list[int]], list[np.ndarray]]:
    """The runtime's pixels and prompt ids for the parity prompts, which must equal the source processor's
    bit for bit (ExportError otherwise)."""
    from mmedge.runtime.vlm_engine import encode_prompt, open_hf_tokenizer, vlm_pixels

    tokenizer = open_hf_tokenizer(tokenizer_file.read_bytes(), str(tokenizer_file))
    ids, pixels = [], []
    for image, text in zip(images, texts):
        want_px = pre.pixels([image]).numpy()
        got_px = vlm_pixels(image, manifest_pre)
        if got_px.shape != want_px.shape or not np.array_equal(got_px, want_px):
            raise ExportError("the runtime's image preprocessing differs from the source's image processor "
                              f"(max |diff| {float(np.abs(got_px - want_px).max()):.2e}): this processor's settings "
                              "are not ones mmedge states (docs/bundle-format.md, Generative VLM bundles)")
        want_ids = pre.prompt_ids(text)[0].tolist()
        got_ids = encode_prompt(tokenizer, before, after, text)
        if got_ids != want_ids:
            raise ExportError(f"the runtime's prompt ids differ from the source tokenizer's for {text!r}")
        ids.append(got_ids)
        pixels.append(got_px)
    return ids, pixels


def _check_arguments(targets, quantize, parity_prompts: int, max_new_tokens: int, max_slots: int | None) -> None:
    problems = []
    if not targets or set(targets) - set(TARGETS):
        problems.append(f"targets {list(targets)}: choose from {list(TARGETS)}")
    if set(quantize) - set(QUANTIZED):
        problems.append(f"quantize {list(quantize)}: choose from {list(QUANTIZED)}")
    for name, value, least in (("parity_prompts", parity_prompts, 1), ("max_new_tokens", max_new_tokens, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            problems.append(f"{name} {value!r} must be a whole number >= {least}")
    if max_slots is not None and (isinstance(max_slots, bool) or not isinstance(max_slots, int) or max_slots < 2):
        problems.append(f"max_slots {max_slots!r} must be a whole number >= 2")
    if problems:
        raise ConfigError(problems, "arguments")


def export_vlm_bundle(model_dir: str | Path, out: str | Path, targets=TARGETS, quantize: tuple[str, ...] = (),
                      max_slots: int | None = None, max_new_tokens: int = 24, parity_prompts: int = 4,
                      data_seed: int = 0, force: bool = False, sign_key=None, release_sequence: int | None = None,
                      caption_prompt: str | None = None, ort_format: bool = False, log=print) -> Path:
    """Export, check and atomically publish the generative VLM bundle at `out`; returns its path.

    max_slots: the static key/value cache's slots (prompt plus generated tokens; default the image's tokens
    plus 64 for the text plus `max_new_tokens`). quantize: also int8 / int4 (ONNX Runtime weight-only,
    ExecuTorch dynamically quantized linears, Core ML quantized weights). caption_prompt: what caption()
    asks (default the one `mmedge adapt` distils on, "describe the image."). ort_format: the ONNX graphs
    also in ONNX Runtime's ORT format (ORT Mobile), one self-contained .ort file per graph and precision:
    the weights the .onnx graphs share in one file are then stored once per graph. Parity runs on
    `parity_prompts` validation scenes, half under the caption prompt, half questions."""
    from mmedge.adapt import load_adapted
    from mmedge.adapt.vlm_distill import CAPTION_PROMPT, scene_prompts
    from mmedge.adapt.vlm_export import layout
    from mmedge.adapt.vlm_manifest import VLM_KIND, write_vlm_manifest
    from mmedge.bundle.publish import check_destination, check_sequence, new_release, sign_and_publish
    from mmedge.export.exporter import _remove_stale_partials
    from mmedge.runtime.backends import open_session
    from mmedge.runtime.vlm import VLMDecoder

    started = time.perf_counter()
    model_dir, out = Path(model_dir), Path(out)
    targets, quantize = tuple(targets), tuple(quantize)
    _check_arguments(targets, quantize, parity_prompts, max_new_tokens, max_slots)
    caption_prompt = CAPTION_PROMPT if caption_prompt is None else caption_prompt
    if not isinstance(caption_prompt, str) or not caption_prompt.strip() or len(caption_prompt) > 1024:
        raise ConfigError(f"caption prompt {caption_prompt!r} must be a non-empty text of at most 1024 characters",
                          "arguments")
    check_sequence(release_sequence)
    check_destination(out, force, model_dir, "the model directory", out_inside_source_ok=True)
    if sign_key is not None:
        from mmedge.bundle.signing import load_private_key

        sign_key = load_private_key(sign_key)  # a bad key fails now, not after the export
    model, pre = load_adapted(model_dir)
    model.eval()
    bb = model.backbone
    slots = max_slots if max_slots is not None else bb.num_image_tokens + 64 + max_new_tokens
    if slots <= bb.num_image_tokens + max_new_tokens:
        raise ConfigError(f"max_slots {slots} leaves no room for a prompt: it must be above the {bb.num_image_tokens} "
                          f"image tokens plus max_new_tokens {max_new_tokens}", "arguments")
    before, after = prompt_template(pre)
    ip = pre.image_processor
    preprocessing = {"image_size": bb.image_size, "resize": "stretch", "resample": "lanczos",
                     "rescale_factor": float(ip.rescale_factor), "mean": [float(x) for x in ip.image_mean],
                     "std": [float(x) for x in ip.image_std], "channel_order": "RGB", "layout": "NCHW"}
    images, texts = scene_prompts(bb.image_size, data_seed, "val")(0, parity_prompts)
    texts[: max(1, parity_prompts // 2)] = [caption_prompt] * max(1, parity_prompts // 2)
    lay = layout(model, slots)
    make_parent(out)
    _remove_stale_partials(out)  # what a killed export left behind
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-{os.getpid()}-", dir=out.parent))
    try:
        log(f"exporting generative VLM {model_dir} -> {out}: {len(lay.graphs)} graphs, targets {', '.join(targets)}"
            + (f", also {', '.join(quantize)}" if quantize else ""))
        shutil.copy2(model_dir / "tokenizer.json", tmp / "tokenizer.json")
        ids, pixels = _check_preprocessing(pre, images, texts, tmp / "tokenizer.json", preprocessing, before, after)
        prompts = list(zip(ids, pixels))
        stop_ids = tuple(pre.stop_ids)
        if any(len(i) + max_new_tokens > slots for i in ids):
            raise ConfigError(f"max_slots {slots} cannot hold the parity prompts ({max(map(len, ids))} tokens) plus "
                              f"{max_new_tokens} new tokens: raise max_slots", "arguments")
        references = {r: [model.generate(torch.tensor([i]), torch.from_numpy(px), max_new_tokens, stop_ids,
                                         keep_ratio=r).tokens for i, px in prompts] for r in lay.keep_ratios}
        hf_same = _transformers_agreement(model, prompts, references[1.0], stop_ids, max_new_tokens) \
            if 1.0 in references else None
        artifacts, seconds = [], {}
        for target in targets:
            t0 = time.perf_counter()
            if target == "onnx":
                made = _artifacts_onnx(model, tmp, slots, quantize, log, ort_format)
            elif target == "executorch":
                made = _artifacts_executorch(model, tmp, slots, ("fp32", *quantize), log)
            else:
                made = _artifacts_coreml(model, tmp, slots, ("fp32", *quantize), log)
            for artifact in made:
                if artifact["runtime"] == "coreml":
                    continue
                session = open_session(artifact["runtime"], tmp, artifact,
                                       threads=None if artifact["runtime"] == "executorch" else 1)
                artifact["parity"] = _parity(VLMDecoder(session, lay), prompts, references, stop_ids, max_new_tokens,
                                             artifact["precision"])
                log(f"  {artifact['runtime']}/{artifact['precision']}: " + ", ".join(
                    f"keep {r}: {p['identical_generations']:.0%} identical to PyTorch"
                    for r, p in artifact["parity"]["by_keep_ratio"].items()))
            artifacts += made
            seconds[target] = round(time.perf_counter() - t0, 1)
        from mmedge.export.parity import artifact_failures

        failures = artifact_failures(artifacts)
        if hf_same is not None and hf_same < 1.0:
            failures.append(f"the PyTorch model itself writes transformers' tokens on only {hf_same:.0%} of the prompts")
        if failures:
            raise ExportError("exported graphs disagree with PyTorch:\n  " + "\n  ".join(failures))
        vocab = int(bb.hf.config.text_config.vocab_size)
        manifest = {
            "kind": VLM_KIND,
            "name": out.name,
            "release": new_release(out.name, release_sequence),
            "model": {"family": model.config.family, "source_class": model.config.source_class, "vocab_size": vocab,
                      "parameters": int(sum(p.numel() for p in model.parameters())), "adapt": model.config.to_dict()},
            "weights_sha256": sha256_file(model_dir / "model.safetensors"),
            "tokenizer": {"file": "tokenizer.json", "kind": "hf-tokenizers", "prompt_before": before,
                          "prompt_after": after, "caption_prompt": caption_prompt, "stop_ids": list(stop_ids),
                          "max_new_tokens": max_new_tokens},
            "preprocessing": preprocessing,
            "layout": lay.to_dict(),
            "artifacts": artifacts,
            "thresholds": {"policy": "full", "threshold": 1.0, "patience": 2, "keep_ratio": max(lay.keep_ratios),
                           "kv": "copy", "calibrated": False},
            "seconds": {**seconds, "total": round(time.perf_counter() - started, 1)},
        }
        if hf_same is not None:
            manifest["model"]["transformers_identical_generations"] = hf_same
        write_vlm_manifest(tmp, manifest)
        sign_and_publish(tmp, out, force, model_dir, sign_key)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"wrote {out} in {time.perf_counter() - started:.0f} s")
    return out


@torch.no_grad()
def _transformers_agreement(model, prompts: list, tokens: list[list[int]], stop_ids, max_new_tokens: int) -> float:
    """The share of prompts on which transformers' own greedy generate() writes the PyTorch model's tokens."""
    hf, same = model.backbone.hf, 0
    for (ids, pixels), want in zip(prompts, tokens):
        x = torch.tensor([ids])
        got = hf.generate(input_ids=x, pixel_values=torch.from_numpy(pixels)[:, None], max_new_tokens=max_new_tokens,
                          do_sample=False, eos_token_id=list(stop_ids))[0, x.shape[1]:].tolist()
        same += got == want
    return same / len(prompts)

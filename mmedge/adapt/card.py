"""The model card (README.md) written into an adapted model folder at the end of `mmedge adapt`."""

from __future__ import annotations

from pathlib import Path

from tabulate import tabulate


def _per_exit_table(before: dict, after: dict, exits: list[int], key: str) -> str:
    rows = []
    for ratio, res in after.get("by_keep_ratio", {}).items():
        values = res.get(key)
        if values is None:
            continue
        old = before.get("by_keep_ratio", {}).get(ratio, {}).get(key) or [None] * len(values)
        rows.append([ratio, res["visual_tokens"]] + [f"{v:.3f}" + ("" if o is None else f" (was {o:.3f})")
                                                    for v, o in zip(values, old)])
    head = ["keep", "visual tokens"] + [f"exit after layer {e + 1}" for e in exits]
    return tabulate(rows, head, tablefmt="github") if rows else ""


def _text_use(counts: dict) -> str:
    """How much of the text length the validation texts use, as a clause of the card's input line."""
    if not counts.get("examples"):
        return ""
    cut = f"; {counts['truncated']} truncated" if counts["truncated"] else ""
    return (f" (the {counts['examples']} validation texts: longest {counts['longest']}, mean {counts['mean']:g}, "
            f"with [CLS] and [SEP]{cut})")


def model_card(model, result, source: str, distill_cfg, preprocessor) -> str:
    cfg = model.config
    backbone = sum(p.numel() for p in model.backbone.parameters())
    added = sum(p.numel() for _, p in model.adapter_parameters())
    before, after = result.before, result.after
    pre = preprocessor.to_dict()
    tok = pre["tokenizer"]
    lines = [
        f"# {cfg.source_class}, adapted by mmedge ({cfg.task})", "",
        f"Source: `{source}` ({cfg.source_class}, {cfg.depth} layers x {cfg.dim}, {backbone / 1e6:.2f} M parameters), "
        f"its weights {'trained further' if distill_cfg.train_backbone else 'unchanged and frozen'}.",
        "",
        "## What was adapted", "",
        f"- Fixed input: {cfg.num_images} image(s) of {cfg.image_size} x {cfg.image_size} px "
        f"({cfg.num_patches} visual tokens of {cfg.patch_size} px each per image), {cfg.max_text_len} text tokens"
        + _text_use(result.text_tokens) + ".",
        f"- Exits after layers {[e + 1 for e in cfg.exits]} (1-based); the last is the model's own head. The others "
        "are copies of the model's head (final LayerNorm, pooler, classifier"
        f"{'' if cfg.exit_rank is None else f'; linear maps stored as rank-{cfg.exit_rank} pairs where smaller'}) "
        "trained to answer from their layer; each exit has a learned confidence that its answer agrees with the full model's.",
        f"- Text-conditioned prefilter of the visual tokens "
        f"{'on the embeddings' if cfg.prefilter_after < 0 else f'after layer {cfg.prefilter_after + 1}'}, "
        f"keep ratios {cfg.keep_ratios}.",
        f"- Added parameters: {added / 1e6:.3f} M.",
        "",
        "## How", "",
        f"Self-distillation on `{distill_cfg.data}`: the frozen model's own final output is the teacher "
        f"(KL at temperature {distill_cfg.temperature:g}); {result.steps} steps of {distill_cfg.batch_size} examples, "
        f"keep ratios cycled {distill_cfg.train_keep_ratios}, labels mixed in with weight "
        f"{distill_cfg.label_loss_weight:g} where the data has them; {result.wall_s:.0f} s."
        + (f" {result.skipped_examples} examples were dropped for unreadable images."
           if result.skipped_examples else ""),
        "",
        f"## Agreement with the teacher per exit ({after.get('samples', 0)} validation examples)", "",
        "The share of examples on which the exit gives the full model's answer (at keep 1.0, the last exit is "
        "the model itself). In brackets: before distillation (the copied heads read from earlier layers).", "",
        _per_exit_table(before, after, cfg.exits, "agreement"), "",
    ]
    if after.get("labelled"):
        teacher = after.get("teacher_accuracy")
        lines += [f"## Accuracy per exit ({after['labelled']} labelled validation examples)", "",
                  f"Teacher (the source model, full depth): {teacher:.3f}." if teacher is not None else "", "",
                  _per_exit_table(before, after, cfg.exits, "accuracy"), ""]
    else:
        lines += ["## Accuracy", "", "The validation data has no labels: only agreement with the teacher is known.", ""]
    lines += [
        "## Inputs", "",
        f"Images: RGB, resized (stretched) to {cfg.image_size} x {cfg.image_size} with the "
        f"{pre['preprocessing']['resample']} filter, x {pre['preprocessing']['rescale_factor']:.8g}, then "
        f"(x - {pre['preprocessing']['mean']}) / {pre['preprocessing']['std']}; pixel mask all ones. "
        "The source's processor keeps the aspect ratio instead: a non-square image loses its proportions here.",
        f"Text: BERT WordPiece (`{tok['file']}`): lowercase {tok['lowercase']}, strip accents {tok['strip_accents']}, "
        f"CJK characters and punctuation split, `[CLS] text [SEP]` padded to {tok['max_length']} tokens.", "",
        "## Use", "",
        "```python",
        "from mmedge.adapt import load_adapted",
        "model, pre = load_adapted('THIS_FOLDER')",
        "out = model(**pre.encode([(image,)], [question]), keep_ratio=0.5)   # logits and confidence per exit",
        "```", "",
        "Through the toolchain: `mmedge eval --model THIS_FOLDER`; `mmedge export` (ONNX and ExecuTorch, fp32 and "
        "int8), then `mmedge calibrate` and `mmedge bench --device host` on the bundle, and the runtimes: "
        "the Python `Engine`, the JavaScript runtime and the Android core (NLVR2: `predict([left, right], text)`; "
        "retrieval: the prediction's match score). `mmedge demo`, `probe` and `predict` refuse adapted folders "
        "(docs/adapt.md).", "",
    ]
    return "\n".join(lines)


def write_card(directory: Path, text: str) -> Path:
    from mmedge.fileio import atomic_write

    path = Path(directory) / "README.md"
    atomic_write(path, lambda p: p.write_text(text))
    return path

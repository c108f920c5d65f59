"""mmedge export: a trained model -> a validated bundle for ONNX Runtime, ExecuTorch and Core ML."""

from __future__ import annotations

import argparse

from mmedge.cli._checks import config_file, non_negative, positive, release_sequence, writable_parent

EPILOG = """examples:
  mmedge export --model models/vqa-default --target all --out bundles/vqa-default.mmedge
  mmedge export --model models/vqa-default --target onnx --keep-ratio 0.5 --out /tmp/vqa-k05.mmedge
  mmedge export --model models/vqa-default --recipe export/executorch-xnnpack-int8.json --out /tmp/vqa-et.mmedge
  mmedge export --model models/vqa-default --target onnx --drop-visual-after 0 --out /tmp/vqa-pruned.mmedge
  mmedge export --model runs/smolvlm-adapted --target onnx --quantize int8 int4 --out /tmp/smolvlm.mmedge
  mmedge export --model runs/smolvlm-adapted --target onnx --ort-format --out /tmp/smolvlm-ort.mmedge

The bundle holds manifest.json (schema: mmedge/bundle/manifest.schema.json), tokenizer.json,
the backend files and report.md / report.json (sizes, op counts, parity). Every stage is checked
against PyTorch in each runtime that runs here; out of tolerance, nothing is written.
--drop-visual-after A adds text-only stages (modality pruning) for the stages after A, checked the
same way, and the per-input rule that chooses them at run time (docs/bundle-format.md).
"""


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="export a model to ONNX / ExecuTorch / Core ML as a validated bundle",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model directory (config.json, model.safetensors, tokenizer.json)")
    p.add_argument("--out", type=writable_parent, required=True,
                   help="bundle directory to create (e.g. NAME.mmedge); its parent must be writable")
    p.add_argument("--target", choices=("onnx", "executorch", "coreml", "all"),
                   help="backend to export (default: the recipe's, else all)")
    p.add_argument("--quantize", choices=("int8", "int4"), nargs="+",
                   help="also export int8 (each backend's own quantizer); a generative VLM also int4")
    p.add_argument("--keep-ratio", type=float, nargs="+", dest="keep_ratios",
                   help="prefilter keep ratio(s) to export (default: the model's trained ones)")
    p.add_argument("--recipe", help="export recipe JSON (see export/); flags override it")
    p.add_argument("--parity-samples", type=positive, help="validation samples for the parity check, >= 1 "
                   "(default 32; a captioning model: images, default 16)")
    p.add_argument("--data", help="scenes (default) or NAME:ROOT: draw the parity, accuracy and int8 calibration "
                                  "samples from a real dataset (the one the model was trained on)")
    p.add_argument("--drop-visual-after", type=non_negative, metavar="STAGE",
                   help="modality pruning: also export text-only stages for the stages after STAGE")
    p.add_argument("--drop-visual-threshold", type=float, metavar="T",
                   help="the pruning rule's threshold (default: measured at export on validation samples)")
    p.add_argument("--max-slots", type=positive, metavar="N",
                   help="generative VLMs: the key/value cache's slots, prompt plus new tokens (default: the image's "
                        "tokens + 64 + --max-new-tokens)")
    p.add_argument("--max-new-tokens", type=positive, metavar="N",
                   help="generative VLMs: the default limit on new tokens, stated in the manifest (default 24)")
    p.add_argument("--caption-prompt", metavar="TEXT",
                   help="generative VLMs: what caption() asks the model (default \"describe the image.\", the prompt "
                        "`mmedge adapt` distils captions on)")
    p.add_argument("--ort-format", action="store_true",
                   help="also ONNX Runtime's ORT format (ORT Mobile): classifiers have it by default (the recipe's "
                        "ort_format); a generative VLM gets one self-contained .ort per graph (the weights the .onnx "
                        "graphs share are then stored once per graph)")
    p.add_argument("--force", action="store_true", help="replace an existing bundle (never anything else)")
    p.add_argument("--sign-key", help="Ed25519 private key (PEM) to sign the manifest with (see `mmedge sign`)")
    p.add_argument("--release-sequence", type=release_sequence, metavar="N",
                   help="the manifest's release.sequence, 0..2^53-1 (default: the current Unix time in ms); an app "
                        "refuses a bundle whose sequence is below the highest it has accepted")
    p.set_defaults(run=run)


def run_caption(args: argparse.Namespace) -> int:
    """A captioning model: its encoder and decoder-step graphs (mmedge.caption.export)."""
    from mmedge.caption.export import TARGETS, export_caption_bundle
    from mmedge.errors import ConfigError

    unsupported = [flag for flag, value in (("--recipe", args.recipe), ("--keep-ratio", args.keep_ratios),
                                            ("--data", args.data), ("--drop-visual-after", args.drop_visual_after),
                                            ("--drop-visual-threshold", args.drop_visual_threshold))
                   if value is not None]  # 0 is given too
    _one_precision(args)
    if args.ort_format:
        raise ConfigError("--ort-format: a captioning bundle holds its graphs as .onnx only; leave it out",
                          "arguments")
    if unsupported:
        raise ConfigError(f"{', '.join(unsupported)} apply to classifier models; a captioning model exports the "
                          "keep ratios it was trained with, without modality pruning: leave them out", "arguments")
    targets = TARGETS if args.target in (None, "all") else (args.target,)
    out = export_caption_bundle(args.model, args.out, targets, int8=args.quantize == "int8",
                                parity_images=16 if args.parity_samples is None else args.parity_samples,
                                force=args.force, sign_key=args.sign_key, release_sequence=args.release_sequence)
    _print_parity(out, lambda e: f"{e['identical_captions']:.0%} captions identical to PyTorch, max logit diff "
                                 f"{e['max_abs_logit_diff']:.1e}")
    return 0


def _print_parity(bundle, describe) -> None:
    """One line per artifact of a bundle of graphs: its parity per keep ratio (`describe`), or why it was not run."""
    import json
    from pathlib import Path

    manifest = json.loads((Path(bundle) / "manifest.json").read_text())
    for a in manifest["artifacts"]:
        p = a["parity"]
        if p["status"] != "measured":
            print(f"{a['runtime']}/{a['precision']}: parity {p['status']} ({p['reason']})")
            continue
        print(f"{a['runtime']}/{a['precision']}: " + "; ".join(f"keep {r}: {describe(e)}"
                                                              for r, e in p["by_keep_ratio"].items()))


def _one_precision(args: argparse.Namespace) -> None:
    """Classifier and captioning models: refuse the generative VLMs' flags; --quantize becomes one precision."""
    from mmedge.errors import ConfigError

    generative_only = [flag for flag, value in (("--max-slots", args.max_slots), ("--max-new-tokens", args.max_new_tokens),
                                                ("--caption-prompt", args.caption_prompt)) if value is not None]
    generative_only += ["--quantize int4"] if args.quantize and "int4" in args.quantize else []
    if generative_only:
        raise ConfigError(f"{', '.join(generative_only)}: for generative VLMs only (`mmedge adapt --task generate`); "
                          "leave it out", "arguments")
    if args.quantize and len(args.quantize) > 1:
        raise ConfigError("--quantize takes one precision here (int8)", "arguments")
    args.quantize = args.quantize[0] if args.quantize else None


def run_generative(args: argparse.Namespace) -> int:
    """An adapted generative VLM: its graphs as a bundle of kind "vlm" (mmedge.adapt.vlm_bundle)."""
    from mmedge.adapt.vlm_bundle import TARGETS, export_vlm_bundle
    from mmedge.errors import ConfigError

    unsupported = [flag for flag, value in (("--recipe", args.recipe), ("--keep-ratio", args.keep_ratios),
                                            ("--data", args.data), ("--drop-visual-after", args.drop_visual_after),
                                            ("--drop-visual-threshold", args.drop_visual_threshold))
                   if value is not None]
    if unsupported:
        raise ConfigError(f"{', '.join(unsupported)} apply to classifier models; a generative VLM exports the keep "
                          "ratios it was adapted with, checked on the generated scenes: leave them out", "arguments")
    targets = TARGETS if args.target in (None, "all") else (args.target,)
    out = export_vlm_bundle(args.model, args.out, targets, tuple(args.quantize or ()), args.max_slots,
                            24 if args.max_new_tokens is None else args.max_new_tokens,
                            4 if args.parity_samples is None else args.parity_samples, force=args.force,
                            sign_key=args.sign_key, release_sequence=args.release_sequence,
                            caption_prompt=args.caption_prompt, ort_format=args.ort_format)
    _print_parity(out, lambda e: f"{e['identical_generations']:.0%} of generations identical to PyTorch"
                                 + (f" ({e['near_ties']} differ at a near tie)" if e["near_ties"] else ""))
    return 0


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from mmedge.adapt.folder import is_generative_dir
    from mmedge.caption.checkpoint import is_caption_dir

    if is_caption_dir(args.model):
        return run_caption(args)
    if is_generative_dir(args.model):
        return run_generative(args)
    _one_precision(args)

    from mmedge.export.recipe import TARGETS, ExportRecipe

    recipe = ExportRecipe.load(config_file(args.recipe, "export recipe")) if args.recipe else ExportRecipe()
    changes = {}
    if args.target:
        changes["targets"] = list(TARGETS) if args.target == "all" else [args.target]
    if args.quantize:
        changes["quantize"] = args.quantize
    if args.keep_ratios:
        changes["keep_ratios"] = args.keep_ratios
    if args.parity_samples is not None:
        changes["parity_samples"] = args.parity_samples
    if args.data is not None:
        changes["data"] = args.data
    if args.drop_visual_after is not None:
        changes["drop_visual_after"] = args.drop_visual_after
    if args.drop_visual_threshold is not None:
        changes["drop_visual_threshold"] = args.drop_visual_threshold
    if args.ort_format:
        changes["ort_format"] = True
    recipe = dataclasses.replace(recipe, **changes)  # re-validated by __post_init__

    from mmedge.export.exporter import check_recipe_options, export_bundle
    from mmedge.export.report import render

    check_recipe_options(recipe)  # e.g. --drop-visual-threshold without --drop-visual-after: refused, not ignored
    out = export_bundle(args.model, args.out, recipe, force=args.force, sign_key=args.sign_key,
                        release_sequence=args.release_sequence)
    import json
    from pathlib import Path

    info = json.loads((Path(out) / "report.json").read_text())
    print()
    print(render(Path(out), info))
    return 0

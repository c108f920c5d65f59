"""mmedge eval: accuracy per exit, question type and keep ratio on the scenes or a real dataset
(--data NAME:ROOT, scored with its own metric); accuracy against FLOPs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mmedge.cli._checks import non_negative, writable_file

EPILOG = """examples:
  mmedge eval --model models/vqa-default --split test
  mmedge eval --model models/vqa-default --split compositional --limit 500 --json comp.json
  mmedge eval --model runs/vqa2 --data vqa2:/data/vqa2 --split val     # the official soft accuracy
  mmedge eval --model runs/mine --data jsonl:/data/mine --split test   # your own data: accuracy per "type"
  mmedge eval --model runs/smolvlm-adapted --limit 200                # an adapted generative VLM: CIDEr and
                                                                      # accuracy per keep ratio at full depth
"""


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a model on the scenes or on a real dataset (--data NAME:ROOT)",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model directory (config.json, model.safetensors, tokenizer.json)")
    p.add_argument("--split", help="scenes: val, test (default) or compositional; a real dataset: its split "
                   "names (default: its validation split)")
    p.add_argument("--data", default="scenes", help="scenes (default) or NAME:ROOT (vqa2, gqa, nlvr2, jsonl): "
                   "a real dataset, scored with its own metric")
    p.add_argument("--limit", type=int, default=2000, help="number of samples (default 2000)")
    p.add_argument("--data-seed", type=non_negative, default=0, help="scene generator seed (default 0)")
    p.add_argument("--keep-ratios", type=float, nargs="+", help="prefilter keep ratios (default: the model's)")
    p.add_argument("--json", type=writable_file, help="also write the full result as JSON here")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mmedge.errors import ConfigError
    from mmedge.evaluation.evaluate import evaluate, format_report
    from mmedge.models.checkpoint import atomic_write, from_pretrained

    if args.limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {args.limit}", "arguments")
    if args.keep_ratios and any(not 0 < r <= 1 for r in args.keep_ratios):
        raise ConfigError(f"--keep-ratios {args.keep_ratios} must be in (0, 1]", "arguments")
    from mmedge.caption.checkpoint import is_caption_dir

    if is_caption_dir(args.model):
        from mmedge.caption.checkpoint import load_caption_model
        from mmedge.caption.evaluate import evaluate_captions, format_captions

        model, tokenizer = load_caption_model(args.model)
        result = evaluate_captions(model, tokenizer, args.data, args.split, args.limit, args.keep_ratios,
                                   data_seed=args.data_seed, progress=not args.no_progress)
        print(format_captions(result))
        if args.json:
            atomic_write(Path(args.json), lambda p: p.write_text(json.dumps(result, indent=1)))
        return 0
    from mmedge.adapt.folder import is_adapted_dir, is_generative_dir, pretrained_teacher

    if is_generative_dir(args.model):
        from mmedge.adapt import load_adapted
        from mmedge.adapt.vlm_evaluate import evaluate_generative, format_generative

        model, pre = load_adapted(args.model)
        result = evaluate_generative(model, pre, args.data, args.split, args.limit, args.keep_ratios, args.data_seed,
                                     progress=not args.no_progress)
        result["model"] = str(args.model)
        print(format_generative(result))
        if args.json:
            atomic_write(Path(args.json), lambda p: p.write_text(json.dumps(result, indent=1)))
        return 0
    model, tokenizer = from_pretrained(args.model)

    teacher = pretrained_teacher(args.model) if is_adapted_dir(args.model) else None
    if args.data != "scenes":
        from mmedge.evaluation.real import evaluate_real, format_real

        result = evaluate_real(model, tokenizer, args.data, args.split, args.limit, args.keep_ratios,
                               progress=not args.no_progress, teacher=teacher)
        print(format_real(result))
        if args.json:
            atomic_write(Path(args.json), lambda p: p.write_text(json.dumps(result, indent=1)))
        return 0
    if (args.split or "test") not in ("val", "test", "compositional"):
        raise ConfigError(f"--split {args.split!r}: the scenes have val, test and compositional", "arguments")
    args.split = args.split or "test"
    result = evaluate(model, tokenizer, args.split, args.limit, args.data_seed, args.keep_ratios,
                      progress=not args.no_progress, teacher=teacher)
    result["model"] = str(args.model)
    print(format_report(result))
    if args.json:
        atomic_write(Path(args.json), lambda p: p.write_text(json.dumps(result, indent=1)))
        print(f"\nwrote {args.json}")
    return 0

"""mmedge probe: per layer, how much the model uses the text and the image (norms, attention, ablation)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from mmedge.cli._checks import non_negative, positive, writable_file

EPILOG = """examples:
  mmedge probe --model models/vqa-default
  mmedge probe --model models/vqa-default --split val --samples 1000 --json benchmarks/results/probe/vqa-default.json

Per layer: the mean L2 norm of text and of visual token states, the attention mass [CLS]/text -> visual
and visual -> [CLS] + text, per question type; and the final-exit accuracy left when every visual
token is dropped after layer L (L = 0 .. depth; depth = the intact model). --json also writes a PNG
beside the JSON (same name, .png).
"""


def keep_ratio(value: str) -> float:
    """A finite number in (0, 1]."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not math.isfinite(number) or not 0 < number <= 1:
        raise argparse.ArgumentTypeError(f"{value!r} must be in (0, 1], e.g. 0.25 to keep a quarter of the "
                                         f"visual tokens")
    return number


def add_parser(sub) -> None:
    p = sub.add_parser("probe", help="probe how much each layer uses the text and the image",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model directory (config.json, model.safetensors, tokenizer.json)")
    p.add_argument("--split", default="val", choices=("train", "val", "test", "compositional"))
    p.add_argument("--samples", type=positive, default=1000, help="number of generated samples (default 1000)")
    p.add_argument("--keep-ratio", type=keep_ratio, default=1.0,
                   help="share of visual tokens the prefilter keeps, in (0, 1] (default 1.0)")
    p.add_argument("--data-seed", type=non_negative, default=0, help="scene generator seed (default 0)")
    p.add_argument("--batch-size", type=positive, default=64, help="samples per forward (default 64)")
    p.add_argument("--json", type=writable_file, help="write the figures here as JSON, and a PNG beside it")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mmedge.errors import ConfigError

    json_path = png_path = None
    if args.json:
        json_path = Path(args.json)
        png_path = json_path.with_suffix(".png")
        if png_path == json_path:
            raise ConfigError(f"--json {args.json} ends in .png, where the plot goes; give a .json name", "arguments")

    from mmedge.analysis.probe import check_settings, format_report, plot, probe
    from mmedge.fileio import atomic_write
    from mmedge.models.checkpoint import from_pretrained

    check_settings(args.split, args.samples, args.keep_ratio, args.data_seed, args.batch_size)
    from mmedge.adapt.folder import instead, is_adapted_dir

    if is_adapted_dir(args.model):
        from mmedge.analysis.probe import ADAPTED_INSTEAD
        from mmedge.errors import AdaptedModelUnsupported

        raise AdaptedModelUnsupported("probe", args.model, instead(args.model, ADAPTED_INSTEAD))
    model, tokenizer = from_pretrained(args.model)
    result = probe(model, tokenizer, args.split, args.samples, args.keep_ratio, args.data_seed, args.batch_size,
                   progress=not args.no_progress)
    model_dir = Path(args.model)
    result = {"model": str(args.model), "model_name": (model_dir.resolve().name or str(model_dir)), **result}
    print(format_report(result))
    if json_path is not None:
        atomic_write(json_path, lambda p: p.write_text(json.dumps(result, indent=1) + "\n"))
        plot(result, png_path)
        print(f"\nwrote {json_path} and {png_path}")
    return 0

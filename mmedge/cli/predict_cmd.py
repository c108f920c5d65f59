"""mmedge predict: answer a question about an image with a trained model (PyTorch)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

EPILOG = """examples:
  mmedge data --task vqa --split test --n 1 --out scene.png
  mmedge predict --model models/vqa-default --image scene.png --text "what color is the circle ?"
  mmedge predict --model models/vqa-default --image photo.jpg --text "is there a red square ?" --keep-ratio 0.25
  mmedge predict --model models/caption-default --image scene.png           # a captioner: no --text
"""


def add_parser(sub) -> None:
    p = sub.add_parser("predict", help="answer one question about one image, printing every exit",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--image", required=True, help="image file (any format Pillow reads)")
    p.add_argument("--text", help="question, statement or caption (not for a captioning model)")
    p.add_argument("--beam", type=int, default=1, help="captioning model: beam width (default 1, greedy)")
    p.add_argument("--keep-ratio", type=float, default=1.0, help="share of visual tokens the prefilter keeps")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=run)


def run_caption(args: argparse.Namespace) -> int:
    """Caption the image at full depth and show, per word, the first exit whose answer is already that word."""
    import numpy as np
    import torch

    from mmedge.caption.checkpoint import load_caption_model
    from mmedge.caption.data import decode_caption
    from mmedge.caption.decode import generate
    from mmedge.data.preprocess import preprocess_image
    from mmedge.errors import ConfigError
    from mmedge.runtime.controller import Policy

    if args.text is not None:
        raise ConfigError("a captioning model takes no --text", "arguments")
    if args.beam < 1:
        raise ConfigError(f"--beam {args.beam} must be at least 1", "arguments")
    model, tok = load_caption_model(args.model)
    pixels = torch.from_numpy(preprocess_image(args.image, model.config.image_size)[None])
    out = generate(model, pixels, args.keep_ratio, Policy("full"), beam=args.beam)
    exits = generate(model, pixels, args.keep_ratio, Policy("max_probability", threshold=0.9)).exits[0]
    text = decode_caption(tok, out.tokens[0])
    if args.json:
        print(json.dumps({"caption": text, "tokens": out.tokens[0]}))
        return 0
    print(f"caption: {text}")
    print(f"(greedy with max-probability 0.9 exits: mean exit {np.mean(exits) + 1:.2f} of {model.num_stages})")
    return 0


def run(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from mmedge.caption.checkpoint import is_caption_dir
    from mmedge.errors import ConfigError

    if is_caption_dir(args.model):
        return run_caption(args)
    from mmedge.adapt.folder import instead, is_adapted_dir

    if is_adapted_dir(args.model):  # TorchPredictor prepares inputs for mmedge's own models
        from mmedge.errors import AdaptedModelUnsupported

        encoder = ("export it (mmedge export --model DIR --out B.mmedge --target onnx) and answer with the Engine: "
                   "Engine.load(B).predict(image, text) (two images: predict([left, right], text)); or mmedge eval "
                   "--model DIR (docs/adapt.md)")
        raise AdaptedModelUnsupported("predict", args.model, instead(args.model, encoder))
    if args.text is None:
        raise ConfigError("--text is required: the question, statement or caption to answer", "arguments")

    from mmedge.models.predictor import TorchPredictor

    pred = TorchPredictor(args.model).predict(args.image, args.text, args.keep_ratio)
    if args.json:
        print(json.dumps(asdict(pred)))
        return 0
    rows = [[i + 1, e.answer, f"{e.confidence:.3f}", f"{e.max_probability:.3f}"] for i, e in enumerate(pred.exits)]
    print(tabulate(rows, ["exit", "answer", "confidence", "max prob"], tablefmt="github"))
    kept = "all" if pred.kept_visual_tokens is None else len(pred.kept_visual_tokens)
    print(f"answer: {pred.answer}  (visual tokens kept: {kept})")
    return 0

"""mmedge predict: answer a question about an image with a trained model (PyTorch)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

EPILOG = """examples:
  mmedge data --task vqa --split test --n 1 --out scene.png
  mmedge predict --model models/vqa-default --image scene.png --text "what color is the circle ?"
  mmedge predict --model models/vqa-default --image photo.jpg --text "is there a red square ?" --keep-ratio 0.25
"""


def add_parser(sub) -> None:
    p = sub.add_parser("predict", help="answer one question about one image, printing every exit",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--image", required=True, help="image file (any format Pillow reads)")
    p.add_argument("--text", required=True, help="question, statement or caption")
    p.add_argument("--keep-ratio", type=float, default=1.0, help="share of visual tokens the prefilter keeps")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from tabulate import tabulate

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

"""mmedge data: look at generated samples (a contact sheet PNG and their texts)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mmedge.cli._checks import non_negative, writable_file

EPILOG = """examples:
  mmedge data --task vqa --split train --n 16 --out vqa_samples.png
  mmedge data --task verify --split compositional --n 8 --out comp.png
"""


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="render generated samples to a PNG and print their texts",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="vqa", choices=("vqa", "verify", "match"))
    p.add_argument("--split", default="train", choices=("train", "val", "test", "compositional"))
    p.add_argument("--n", type=int, default=16, help="number of samples (1-256)")
    p.add_argument("--start", type=non_negative, default=0, help="index of the first sample (>= 0)")
    p.add_argument("--data-seed", type=non_negative, default=0)
    p.add_argument("--out", type=writable_file, required=True, help="PNG file to write (not a directory)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from PIL import Image, ImageDraw

    from mmedge.data.batches import generate
    from mmedge.errors import ConfigError
    from mmedge.models.checkpoint import atomic_write

    if not 1 <= args.n <= 256:
        raise ConfigError(f"--n must be between 1 and 256, got {args.n}", "arguments")
    samples = generate(args.task, args.data_seed, args.split, range(args.start, args.start + args.n))
    cols, scale, caption = 4, 2, 34
    side = samples[0].image.shape[0] * scale
    rows = (len(samples) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * side, rows * (side + caption)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, s in enumerate(samples):
        x, y = (i % cols) * side, (i // cols) * (side + caption)
        sheet.paste(Image.fromarray(s.image).resize((side, side), Image.Resampling.NEAREST), (x, y))
        words = s.text.split()
        half = (len(words) + 1) // 2
        draw.text((x + 2, y + side + 1), " ".join(words[:half]), fill="black")
        draw.text((x + 2, y + side + 12), " ".join(words[half:]), fill="black")
        draw.text((x + 2, y + side + 22), f"-> {s.answer} [{s.qtype}]", fill="darkred")
        print(f"{args.start + i:5d}  {s.qtype:8s} {s.text}  ->  {s.answer}")
    atomic_write(Path(args.out), lambda p: sheet.save(p, format="PNG"))
    print(f"wrote {args.out}")
    return 0

"""A second data domain, written as JSON Lines: patterned shapes on noisy backgrounds.

mmedge's recipe was tuned on its generated scenes (flat grey 96 px squares, circles / squares /
triangles in six flat colours, its own question templates). This generator shares none of that, so
that training on it measures how the defaults for `--data` do on data they were never tuned on:

- images of six sizes, most not square (64x64 ... 112x84), on a noisy tinted background;
- five shapes (star, cross, ring, diamond, hexagon), five colours (purple, pink, brown, navy,
  lime), four fills (solid, striped, dotted, checked), two sizes;
- seven question templates, worded differently from the scenes' (`type` field of each record);
- each record's `refs` point the phrases that name one item at its box (for the grounding loss).

    python benchmarks/patterns_data.py --out data/patterns              # ~12,000 images, ~36,000 questions
    python benchmarks/patterns_data.py --out data/patterns --images 2000  # a smaller set

It writes ROOT/{train,val,test}.jsonl and ROOT/images/{split}/NNNNN.png, deterministic by --seed;
an existing ROOT is refused unless --force. The layout is the one docs/guides/data.md specifies.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

COLOURS: dict[str, tuple[int, int, int]] = {
    "purple": (128, 40, 160), "pink": (235, 110, 170), "brown": (130, 80, 30),
    "navy": (20, 30, 110), "lime": (150, 220, 40),
}
SHAPES = ("star", "cross", "ring", "diamond", "hexagon")
FILLS = ("solid", "striped", "dotted", "checked")
SIZES = ((64, 64), (80, 60), (60, 80), (96, 72), (72, 96), (112, 84))  # (width, height) px
TEMPLATES = ("fill", "colour", "shape", "count", "exist", "left", "size")
SPLIT_IMAGES = {"train": 0.84, "val": 0.06, "test": 0.10}  # share of --images per split
QUESTIONS_PER_IMAGE = 3


@dataclass(frozen=True)
class Item:
    shape: str
    colour: str
    fill: str
    large: bool
    cx: float          # centre, px
    cy: float
    r: float           # outer radius, px


def _polygon(item: Item) -> list[tuple[float, float]]:
    """The outline of a star, cross, diamond or hexagon, as points around its centre."""
    c, r = (item.cx, item.cy), item.r
    if item.shape == "star":
        return [(c[0] + (r if k % 2 == 0 else 0.45 * r) * math.sin(k * math.pi / 5),
                 c[1] - (r if k % 2 == 0 else 0.45 * r) * math.cos(k * math.pi / 5)) for k in range(10)]
    if item.shape == "diamond":
        return [(c[0], c[1] - r), (c[0] + 0.7 * r, c[1]), (c[0], c[1] + r), (c[0] - 0.7 * r, c[1])]
    if item.shape == "hexagon":
        return [(c[0] + r * math.cos(k * math.pi / 3), c[1] + r * math.sin(k * math.pi / 3)) for k in range(6)]
    w = 0.36 * r  # cross: half the bar width
    return [(c[0] - w, c[1] - r), (c[0] + w, c[1] - r), (c[0] + w, c[1] - w), (c[0] + r, c[1] - w),
            (c[0] + r, c[1] + w), (c[0] + w, c[1] + w), (c[0] + w, c[1] + r), (c[0] - w, c[1] + r),
            (c[0] - w, c[1] + w), (c[0] - r, c[1] + w), (c[0] - r, c[1] - w), (c[0] - w, c[1] - w)]


def _mask(item: Item, size: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: the pixels the item covers."""
    img = Image.new("L", size, 0)
    draw = ImageDraw.Draw(img)
    box = (item.cx - item.r, item.cy - item.r, item.cx + item.r, item.cy + item.r)
    if item.shape == "ring":
        draw.ellipse(box, fill=255)
        inner = 0.5 * item.r
        draw.ellipse((item.cx - inner, item.cy - inner, item.cx + inner, item.cy + inner), fill=0)
    else:
        draw.polygon(_polygon(item), fill=255)
    return np.asarray(img) > 127


def _fill_pattern(fill: str, size: tuple[int, int], phase: int) -> np.ndarray:
    """(H, W) bool: where a fill shows the colour (elsewhere it shows white)."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    if fill == "striped":
        return ((x + y + phase) // 3) % 2 == 0
    if fill == "dotted":
        return ((x + phase) % 5 < 2) & ((y + phase) % 5 < 2)
    if fill == "checked":
        return ((x // 4) + (y // 4)) % 2 == 0
    return np.ones((h, w), bool)


def sample_items(rng: np.random.Generator, size: tuple[int, int]) -> list[Item]:
    """1-4 items that do not overlap (bounding circles apart by a margin)."""
    w, h = size
    n = int(rng.integers(1, 5))
    items: list[Item] = []
    for _ in range(60):
        if len(items) == n:
            break
        large = bool(rng.random() < 0.5)
        r = min(w, h) * (rng.uniform(0.17, 0.21) if large else rng.uniform(0.10, 0.13))
        cx, cy = rng.uniform(r + 1, w - r - 1), rng.uniform(r + 1, h - r - 1)
        if all(math.hypot(cx - o.cx, cy - o.cy) > r + o.r + 2 for o in items):
            items.append(Item(str(rng.choice(SHAPES)), str(rng.choice(list(COLOURS))), str(rng.choice(FILLS)),
                              large, cx, cy, r))
    return items


def render(rng: np.random.Generator, items: list[Item], size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8: a tinted, noisy background with the items drawn on it."""
    w, h = size
    tint = rng.integers(175, 235, size=3)
    img = np.clip(tint + rng.normal(0, 9, size=(h, w, 3)), 0, 255)
    for item in items:
        mask = _mask(item, size)
        show = _fill_pattern(item.fill, size, int(rng.integers(0, 3)))
        colour = np.clip(np.array(COLOURS[item.colour]) + rng.integers(-12, 13, size=3), 0, 255)
        img[mask & show] = colour
        img[mask & ~show] = 250
    return img.astype(np.uint8)


def _unique(items: list[Item], key) -> dict:
    """Values of key(item) that exactly one item has, mapped to that item."""
    seen: dict = {}
    for it in items:
        seen.setdefault(key(it), []).append(it)
    return {k: v[0] for k, v in seen.items() if len(v) == 1}


def ref(phrase: str, item: Item) -> dict:
    """A JSON Lines ref: the phrase and the item's bounding box (pixels x0, y0, x1, y1)."""
    return {"phrase": phrase, "box": [round(item.cx - item.r, 1), round(item.cy - item.r, 1),
                                      round(item.cx + item.r, 1), round(item.cy + item.r, 1)]}


def ask(rng: np.random.Generator, items: list[Item], template: str) -> tuple[str, str, list[dict]] | None:
    """(question, answer, refs) of one template about these items, or None when it does not apply.
    refs point each phrase that names exactly one item at its box."""
    by_shape = _unique(items, lambda it: it.shape)
    if template == "fill" and by_shape:
        it = by_shape[str(rng.choice(sorted(by_shape)))]
        return f"which pattern does the {it.shape} have?", it.fill, [ref(it.shape, it)]
    if template == "colour" and by_shape:
        it = by_shape[str(rng.choice(sorted(by_shape)))]
        return f"the {it.shape} is painted in which colour?", it.colour, [ref(it.shape, it)]
    if template == "shape":
        by_colour = _unique(items, lambda it: it.colour)
        if by_colour:
            it = by_colour[str(rng.choice(sorted(by_colour)))]
            return f"name the shape that is {it.colour}.", it.shape, [ref(it.colour, it)]
    if template == "count":
        fill = str(rng.choice(FILLS))
        return f"count the {fill} shapes.", str(sum(it.fill == fill for it in items)), []
    if template == "exist":
        if rng.random() < 0.5:
            it = items[int(rng.integers(len(items)))]
            colour, shape = it.colour, it.shape
        else:
            colour, shape = str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES))
        there = [it for it in items if it.colour == colour and it.shape == shape]
        return (f"does the picture contain a {colour} {shape}?", "yes" if there else "no",
                [ref(f"{colour} {shape}", there[0])] if len(there) == 1 else [])
    if template == "left" and len(by_shape) >= 2:
        a, b = rng.choice(sorted(by_shape), size=2, replace=False)
        left = by_shape[str(a)].cx < by_shape[str(b)].cx
        return (f"is the {a} on the left side of the {b}?", "yes" if left else "no",
                [ref(str(a), by_shape[str(a)]), ref(str(b), by_shape[str(b)])])
    if template == "size" and by_shape:
        it = by_shape[str(rng.choice(sorted(by_shape)))]
        return f"is the {it.shape} big or small?", "big" if it.large else "small", [ref(it.shape, it)]
    return None


def write(out: Path, images: int, seed: int, force: bool = False, progress: bool = True) -> dict[str, int]:
    """Write the dataset under `out` (a new folder, built beside it and renamed into place).
    Returns the number of questions per split."""
    if out.exists():
        if not force:
            raise SystemExit(f"{out} exists; pass --force to replace it")
        shutil.rmtree(out)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    counts = {}
    for split_no, (split, share) in enumerate(SPLIT_IMAGES.items()):
        n_images = max(1, round(images * share))
        (tmp / "images" / split).mkdir(parents=True)
        lines = []
        for i in tqdm(range(n_images), desc=split, unit="img", disable=not progress):
            rng = np.random.default_rng([seed, split_no, i])
            size = SIZES[int(rng.integers(len(SIZES)))]
            items = sample_items(rng, size)
            rel = f"images/{split}/{i:05d}.png"
            Image.fromarray(render(rng, items, size)).save(tmp / rel, format="PNG")
            asked = 0
            for template in rng.permutation(TEMPLATES):
                qa = ask(rng, items, str(template))
                if qa is not None:
                    lines.append(json.dumps({"image": rel, "question": qa[0], "answer": qa[1], "type": str(template),
                                             "refs": qa[2]}))
                    asked += 1
                if asked == QUESTIONS_PER_IMAGE:
                    break
        (tmp / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        counts[split] = len(lines)
    tmp.rename(out)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the dataset folder ROOT to create")
    parser.add_argument("--images", type=int, default=12000, help="images over all splits (3 questions each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="replace an existing ROOT")
    args = parser.parse_args(argv)
    if args.images < 3:
        parser.error("--images must be at least 3")
    counts = write(args.out, args.images, args.seed, args.force)
    print(f"wrote {args.out}: " + ", ".join(f"{k} {v} questions" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Vectors the Android core's JVM tests need beside the golden ones: what an app decodes.

    python scripts/make_android_vectors.py [--golden tests/vectors/golden]

Reads (never rewrites) tests/vectors/golden/queries.json and its PNGs and writes
tests/vectors/golden/android.json:
- for every query image, the SHA-256 of its pixels as Android's Bitmap.getPixels gives them
  (one 0xAARRGGBB int per pixel, row-major, not premultiplied; alpha 255 for RGB images), written
  big-endian, as Pillow decodes the PNG: the Java test decodes the same PNG and must get these
  pixels before it preprocesses them;
- for the queries that are test-split samples as they are (the "scene-*" ones), the right answer,
  so that the Java benchmark's accuracy can be checked against the golden exits.
scripts/make_golden_vectors.py calls this after it writes the golden vectors.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

from mmedge.data.batches import generate
from mmedge.fileio import atomic_write

ROOT = Path(__file__).resolve().parents[1]


def argb_big_endian(image: Image.Image) -> bytes:
    """Pixels as 0xAARRGGBB ints (Bitmap.getPixels), big-endian bytes."""
    rgba = np.asarray(image.convert("RGBA"), dtype=np.uint32)  # (H, W, 4)
    argb = (rgba[..., 3] << 24) | (rgba[..., 0] << 16) | (rgba[..., 1] << 8) | rgba[..., 2]
    return argb.astype(">u4").tobytes()


def make(golden: Path) -> dict:
    doc = json.loads((golden / "queries.json").read_text())
    manifest = json.loads((ROOT / doc["bundle"] / "manifest.json").read_text())
    images = {}
    for q in doc["queries"]:
        with Image.open(golden / q["image"]) as im:
            im.load()
            if im.mode not in ("RGB", "RGBA"):
                raise SystemExit(f"{q['image']}: mode {im.mode}; the vectors hold RGB and RGBA images only")
            images[q["image"]] = {"width": im.width, "height": im.height, "mode": im.mode,
                                  "argb_be_sha256": hashlib.sha256(argb_big_endian(im)).hexdigest()}
    # The scene-* queries are the first sample of each question type among test indices 0..39
    # (make_golden_vectors._images); each is checked against its PNG before its answer is recorded.
    samples = generate(manifest["task"], 0, "test", range(40), manifest["preprocessing"]["image_size"])
    first: dict[str, object] = {}
    for s in samples:
        first.setdefault(s.qtype, s)
    answers = {}
    for q in doc["queries"]:
        if not q["name"].startswith("scene-"):
            continue
        s = first[q["name"][len("scene-"):]]
        with Image.open(golden / q["image"]) as im:
            if s.text != q["text"] or not np.array_equal(np.asarray(im.convert("RGB")), s.image):
                raise SystemExit(f"{q['name']}: the PNG or text is not the test sample it was made from")
        answers[q["name"]] = manifest["labels"][s.label]
    out = {"format": "mmedge-golden-android-1", "queries": "queries.json",
           "manifest_sha256": doc["manifest_sha256"], "images": images, "answers": answers}
    atomic_write(golden / "android.json", lambda tmp: tmp.write_text(json.dumps(out, indent=1) + "\n"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--golden", default="tests/vectors/golden")
    args = parser.parse_args()
    out = make(ROOT / args.golden)
    print(f"wrote {args.golden}/android.json: {len(out['images'])} images, {len(out['answers'])} answers")


if __name__ == "__main__":
    main()

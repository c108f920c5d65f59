"""The test queries the Android app's BenchmarkActivity runs (android_demo/BENCHMARK.md step 3).

    python scripts/make_android_queries.py [--task vqa] [--n 48] [--image-size 96]
        [--out android_demo/app/src/main/assets/bench]

Writes OUT/TASK/queries.json ({"format": "mmedge-bench-queries-1", "task", "queries": [{"image",
"text", "answer"}]}) and OUT/TASK/images/NNNN.png: test-split samples 0..n-1 of the grounded-scene
generator, the same ones `mmedge bench --device host` starts from (seed 0, split test), with their
right answers. The app reads OUT/<the bundle's task>/ from its assets. `--task caption` writes the
scenes a captioning bundle is benchmarked on (mmedge.caption.data.scene_captions, seed 0, split
test: the images `mmedge bench --device host` captions), each query's text empty and its answer the
scene's reference caption.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image

from mmedge.caption.data import scene_captions
from mmedge.data.batches import generate
from mmedge.data.tasks import LABELS

CAPTION = "caption"

ROOT = Path(__file__).resolve().parents[1]


def make(task: str, n: int, image_size: int, out: Path) -> Path:
    folder = out / task
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for old in (folder / "images").glob("*.png"):
        old.unlink()
    queries = []
    if task == CAPTION:
        images, captions = scene_captions(0, "test", range(n), image_size)
        for i, (image, caption) in enumerate(zip(images, captions)):
            rel = f"images/{i:04d}.png"
            Image.fromarray(image).save(folder / rel, format="PNG", optimize=True)
            queries.append({"image": rel, "text": "", "answer": caption})
    else:
        labels = LABELS[task]
        for i, s in enumerate(generate(task, 0, "test", range(n), image_size)):
            rel = f"images/{i:04d}.png"
            Image.fromarray(s.image).save(folder / rel, format="PNG", optimize=True)
            assert labels[s.label] == s.answer
            queries.append({"image": rel, "text": s.text, "answer": s.answer})
    doc = {"format": "mmedge-bench-queries-1", "task": task, "split": "test", "seed": 0, "image_size": image_size,
           "queries": queries}
    (folder / "queries.json").write_text(json.dumps(doc, indent=1) + "\n")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="vqa", choices=sorted([*LABELS, CAPTION]))
    parser.add_argument("--n", type=int, default=48)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--out", default="android_demo/app/src/main/assets/bench")
    args = parser.parse_args()
    folder = make(args.task, args.n, args.image_size, ROOT / args.out)
    print(f"wrote {folder.relative_to(ROOT)}: {args.n} {args.task} {'images' if args.task == CAPTION else 'queries'}")


if __name__ == "__main__":
    main()

"""Images and texts to self-distil on: the generated scenes or a dataset on disk (``--data``).

    scenes        mmedge's grounded scenes, drawn at the adapted image size (vqa, retrieval = match)
    NAME:ROOT     a dataset in one of mmedge's layouts (mmedge.data.sources: vqa2, gqa, nlvr2, coco,
                  cc, jsonl), read by the same source code as `mmedge train`: the same records, the
                  same checks. Images are prepared by the family's preprocessor (not mmedge's square
                  padding), so that the teacher sees what its processor would give it.

Labels are optional: a record's answer becomes the index of that answer among the model's labels
(compared case-insensitively; retrieval: "yes"/"true" = 1, "no"/"false" = 0), -1 when it has
none, and distillation needs none. Caption sources (coco, cc) pair every other image with another
image's caption (label 0), as mmedge's matching task does, so the teacher sees both kinds of pair.

The same examples serve the bundle of an adapted model (bundle_queries: `mmedge calibrate` and
`mmedge bench --device host` draw its queries here, raw images for the Engine to prepare).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmedge.errors import DatasetError

SCENES_TASK = {"vqa": "vqa", "retrieval": "match"}  # adapt task -> the scenes' task
RECORD_TASK = {"vqa": "vqa", "nlvr2": "verify", "retrieval": "match"}  # adapt task -> mmedge.data.sources task
SCENES_TRAIN_SIZE = 200_000  # distinct training scenes (indices wrap around)


@dataclass
class Example:
    images: tuple               # one entry per image: a path, PIL image or (H, W, 3) uint8 array
    text: str
    label: int = -1             # index among the model's labels (retrieval: 1 match, 0 not); -1 = unlabelled


def label_of(answer: str, labels: list[str], task: str) -> int:
    if task == "retrieval":
        return {"yes": 1, "true": 1, "no": 0, "false": 0}.get(answer.strip().lower(), -1)
    index = {name.strip().lower(): i for i, name in enumerate(labels)}
    return index.get(answer.strip().lower(), -1)


class AdaptData:
    """Training examples by index (wrapping, deterministic) and the first n examples of a split.

    splits: the splits to read ({key: the split's name on disk}); by default "train" and "val" (a
    dataset's validation split: mmedge.data.provider.VAL_SPLIT). Calibration and benchmarks read one
    split only (`first`), so that a dataset without training records serves them too."""

    def __init__(self, data: str, task: str, labels: list[str], image_size: int, num_images: int,
                 seed: int = 0, splits: dict[str, str] | None = None) -> None:
        self.data, self.task, self.labels, self.image_size, self.seed = data, task, labels, image_size, seed
        if data == "scenes":
            if task not in SCENES_TASK:
                raise DatasetError(f"the generated scenes have no {task} task (one image per example); use "
                                   f"--data nlvr2:ROOT (or jsonl) for two-image reasoning")
            self.train_size = SCENES_TRAIN_SIZE
            self._records = None
            return
        from mmedge.data.provider import VAL_SPLIT
        from mmedge.data.sources import parse_data_spec, read_records

        spec = parse_data_spec(data)
        self.root = spec.root
        self.caption_pairs = spec.name in ("coco", "cc")
        splits = splits or {"train": "train", "val": VAL_SPLIT.get(spec.name, "val")}
        self._records = {}
        for key, split in splits.items():
            records = read_records(spec, RECORD_TASK[task], split)
            name = {"train": "train", "val": "validation"}.get(key, split)
            if not records:
                raise DatasetError(f"{data}: the {name} split has no records")
            wrong = next((r for r in records if len(r.images) != num_images), None)
            if wrong is not None:
                raise DatasetError(f"{wrong.where}: the model reads {num_images} image(s) per example, this record "
                                   f"names {len(wrong.images)}")
            self._records[key] = records
        if "train" in self._records:
            self.order = np.random.default_rng(seed).permutation(len(self._records["train"]))
            self.train_size = len(self._records["train"])

    def _scenes(self, split: str, indices) -> list[Example]:
        from mmedge.data.batches import generate

        samples = generate(SCENES_TASK[self.task], self.seed, split, indices, self.image_size)
        return [Example((s.image,), s.text, label_of(s.answer, self.labels, self.task)) for s in samples]

    def _from_records(self, split: str, positions) -> list[Example]:
        records = self._records[split]
        out = []
        for i in positions:
            r = records[i]
            text, answer = r.text, r.answer
            if self.caption_pairs:
                answer = "yes"
                if i % 2:  # another image's caption: a non-matching pair
                    j = (i + 7919) % len(records)
                    if records[j].images != r.images:
                        text, answer = records[j].text, "no"
            images = tuple(_OpenInside(p, self.root, r.where) for p in r.images)
            out.append(Example(images, text, label_of(answer, self.labels, self.task)))
        return out

    def train(self, indices) -> list[Example]:
        """The examples at training positions `indices` (wrapping at train_size)."""
        indices = np.asarray(indices) % self.train_size
        if self._records is None:
            return self._scenes("train", indices)
        return self._from_records("train", self.order[indices])

    def val(self, n: int) -> list[Example]:
        """The first n validation examples (fewer when the split is smaller)."""
        return self.first("val", n)

    def first(self, key: str, n: int) -> list[Example]:
        """The first n examples of split `key` (the scenes: val, test or compositional)."""
        if self._records is None:
            return self._scenes(key, range(n))
        return self._from_records(key, range(min(n, len(self._records[key]))))


class _OpenInside:
    """An image file of a dataset, opened only inside its root (mmedge.data.sources.records.open_inside)
    when the preprocessor reads it."""

    def __init__(self, path, root, where: str) -> None:
        self.path, self.root, self.where = path, root, where

    def load(self):
        from PIL import Image, UnidentifiedImageError

        from mmedge.data.sources.records import open_inside
        from mmedge.errors import ImageError

        try:
            with open_inside(self.path, self.root, self.where) as f:
                with Image.open(f) as img:
                    img.load()
                    return img.copy()
        except FileNotFoundError as exc:
            raise ImageError(f"{self.where}: image not found: {self.path}") from exc
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError, EOFError,
                ValueError) as exc:
            raise ImageError(f"{self.where}: cannot read image {self.path}: {exc}") from exc


def materialise(image):
    """What the preprocessor takes: a dataset file is read (inside its root) first."""
    return image.load() if isinstance(image, _OpenInside) else image


# ---------------------------------------------------------------------------------------------- bundles
def bundle_adapt_config(manifest: dict) -> dict | None:
    """The AdaptConfig (as a dict) of a bundle exported from an adapted model, None for mmedge's own."""
    config = (manifest.get("model") or {}).get("config") or {}
    return config if isinstance(config, dict) and "family" in config and "source_class" in config else None


def bundle_queries(manifest: dict, data: str, split: str, n: int, seed: int = 0) -> tuple[list, np.ndarray]:
    """The first n queries of `split` for a bundle of an adapted model, as `mmedge eval` and the export's
    checks draw them: (images, text) pairs (images: a list of the example's images, read from disk
    inside the dataset's root) and labels (n,): each answer's index among the bundle's labels, -1 when it
    is not one of them (a retrieval bundle's labels are [no, yes]: 1 a matching pair, 0 not).

    `split` is a key of the scenes (val, test, compositional) or a dataset's split on disk."""
    cfg = bundle_adapt_config(manifest)
    if cfg is None:
        raise DatasetError("bundle_queries reads bundles of adapted models (model.config has a family)")
    task, labels = cfg["task"], list(manifest["labels"])
    source = AdaptData(data, task, labels, manifest["preprocessing"]["image_size"], cfg.get("num_images", 1), seed,
                       splits=None if data == "scenes" else {split: split})
    examples = source.first(split, n)
    return ([([materialise(im) for im in ex.images], ex.text) for ex in examples],
            np.array([ex.label for ex in examples], np.int64))

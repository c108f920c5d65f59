"""Real datasets in their official layouts, selected as ``--data NAME:ROOT`` (``scenes``, the
generated grounded scenes, stays the default).

    vqa2:ROOT    VQA v2 (task vqa)            gqa:ROOT     GQA balanced (task vqa)
    nlvr2:ROOT   NLVR2 (task verify)          coco:ROOT    COCO Captions (pretraining, retrieval)
    cc:ROOT      Conceptual Captions TSV      jsonl:ROOT   your own data (vqa, verify or match)

`open_dataset` reads a split's annotations (malformed records raise DatasetError naming the file
and line), caches its images (mmedge.data.sources.images) and drops records whose image could
not be read, reporting how many. Every path stays inside ROOT and every file read is a regular
file (mmedge.data.sources.records: `inside`, `open_inside`); a record's text longer than a
tokenizer takes (MAX_TEXT_CHARS) is refused when the split is read.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmedge.data.grounding import Pointer, pointer
from mmedge.data.sources import captions, gqa, jsonl, nlvr2, vqa2
from mmedge.data.sources.images import CachedImages, cache_images
from mmedge.data.sources.records import Record
from mmedge.data.tokenizer import MAX_TEXT_CHARS
from mmedge.errors import DatasetError

TASKS_OF = {"vqa2": ("vqa",), "gqa": ("vqa",), "nlvr2": ("verify",), "coco": ("match", "pretrain", "caption"),
            "cc": ("match", "pretrain", "caption"), "jsonl": ("vqa", "verify", "match")}


@dataclass(frozen=True)
class DataSpec:
    name: str
    root: Path | None = None

    @property
    def is_scenes(self) -> bool:
        return self.name == "scenes"


def parse_data_spec(text: str) -> DataSpec:
    """'scenes' or 'NAME:ROOT' (ROOT an existing folder)."""
    if text == "scenes":
        return DataSpec("scenes")
    name, sep, root = text.partition(":")
    if not sep or name not in TASKS_OF or not root:
        raise DatasetError(f"--data must be 'scenes' or NAME:ROOT with NAME one of {', '.join(TASKS_OF)}; got {text!r}")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DatasetError(f"--data {name}: {path} is not a folder")
    return DataSpec(name, path)


def read_records(spec: DataSpec, task: str, split: str) -> list[Record]:
    """A split's records, annotations checked, images not yet read."""
    if task not in TASKS_OF[spec.name]:
        raise DatasetError(f"{spec.name} serves task(s) {', '.join(TASKS_OF[spec.name])}, not {task!r}")
    root = spec.root
    if spec.name == "vqa2":
        records = vqa2.records(root, split)
    elif spec.name == "gqa":
        records = gqa.records(root, split)
    elif spec.name == "nlvr2":
        records = nlvr2.records(root, split)
    elif spec.name == "coco":
        records = captions.coco_records(root, split)
    elif spec.name == "cc":
        records = captions.cc_records(root, split)
    else:
        records = jsonl.records(root, split, task)
    for r in records:
        if len(r.text) > MAX_TEXT_CHARS:
            raise DatasetError(f"{r.where}: the text has {len(r.text):,} characters, more than the {MAX_TEXT_CHARS:,} "
                               f"a tokenizer takes; shorten it or drop the record")
    return records


def answer_vocabulary(records: list[Record], size: int) -> list[str]:
    """The `size` most frequent training answers (ties broken alphabetically)."""
    counts = Counter(r.answer for r in records)
    return [a for a, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:size]]


@dataclass
class Dataset:
    """A split ready for training or evaluation: records whose images were readable."""
    spec: DataSpec
    split: str
    records: list[Record]
    images: CachedImages

    def image(self, i: int) -> np.ndarray:
        """(S, S, 3) uint8 of record i."""
        return np.asarray(self.images.array[self.images.row[tuple(map(str, self.records[i].images))]])

    def pointers(self, i: int) -> tuple[Pointer, ...]:
        """Record i's refs as pointers into the square image the model sees."""
        r = self.records[i]
        if not r.refs:
            return ()
        size = self.images.sizes[tuple(map(str, r.images))]
        return tuple(pointer(ref.words, ref.box, size) for ref in r.refs)

    def __len__(self) -> int:
        return len(self.records)


def open_dataset(spec: DataSpec, task: str, split: str, image_size: int, cache_dir: Path | None = None,
                 limit: int | None = None, workers: int = 2, progress: bool = True) -> Dataset:
    records = read_records(spec, task, split)[:limit]
    if not records:
        raise DatasetError(f"{spec.name}:{spec.root} has no {split} records")
    where: dict[tuple[Path, ...], str] = {}
    for r in records:
        where.setdefault(tuple(r.images), r.where)
    cached = cache_images([r.images for r in records], image_size, cache_dir or spec.root / ".mmedge-cache",
                          workers, progress, root=spec.root, where=where)
    kept = [r for r in records if tuple(map(str, r.images)) in cached.row]
    if cached.skipped:
        print(f"{spec.name} {split}: {cached.summary()}; {len(records) - len(kept)} of {len(records)} records dropped")
    if not kept:
        raise DatasetError(f"{spec.name} {split}: no image could be read ({cached.summary()})")
    for r in kept:
        if r.refs:
            _check_boxes(r, cached.sizes.get(tuple(map(str, r.images))))
    return Dataset(spec, split, kept, cached)


def _check_boxes(record: Record, size: tuple[int, int] | None) -> None:
    """DatasetError naming the record when a ref's box leaves its image (or the record has two images)."""
    if size is None:
        raise DatasetError(f"{record.where}: refs need a record of one image")
    w, h = size
    for k, ref in enumerate(record.refs):
        x0, y0, x1, y1 = ref.box
        if x1 > w or y1 > h:
            raise DatasetError(f"{record.where}: refs[{k}].box {list(ref.box)} leaves the {w}x{h} image (as a viewer "
                               f"shows it, EXIF orientation applied); boxes are pixels [x0, y0, x1, y1] inside it")

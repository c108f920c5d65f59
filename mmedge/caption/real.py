"""Image-caption datasets for the captioner: COCO Captions and Conceptual Captions in their own
layouts (``mmedge.data.sources.captions``), through the same image cache as the classifiers.

Training pairs are (image, one of its captions); evaluation groups the captions of an image as its
references (COCO has five). The vocabulary is every word seen at least ``min_count`` times in the
training captions (most frequent first, at most ``max_words``) after [PAD] [UNK] [BOS] [EOS].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmedge.caption.data import BOS, EOS
from mmedge.data.preprocess import preprocess_batch
from mmedge.data.sources import Dataset, open_dataset, parse_data_spec
from mmedge.data.tokenizer import WordTokenizer, vocabulary_words_of
from mmedge.errors import DatasetError

CAPTION_SOURCES = ("coco", "cc")


def open_captions(data: str, split: str, image_size: int, limit: int | None = None, progress: bool = True) -> Dataset:
    spec = parse_data_spec(data)
    if spec.name not in CAPTION_SOURCES:
        raise DatasetError(f"captioning reads {' or '.join(CAPTION_SOURCES)} (NAME:ROOT); got {spec.name!r}")
    return open_dataset(spec, "caption", split, image_size, limit=limit, progress=progress)


def real_tokenizer(train: Dataset, max_len: int, max_words: int = 8000, min_count: int = 1) -> WordTokenizer:
    words = vocabulary_words_of([r.text for r in train.records], min_count=min_count, max_words=max_words)
    return WordTokenizer.from_words([BOS, EOS] + words, max_len)


@dataclass
class GroupedCaptions:
    """One entry per image: its pixels and every reference caption."""

    pixels: np.ndarray            # (n, 3, S, S)
    references: list[list[str]]


def grouped(dataset: Dataset, image_size: int, limit: int | None = None) -> GroupedCaptions:
    first: dict[str, int] = {}
    refs: dict[str, list[str]] = {}
    for i, r in enumerate(dataset.records):
        first.setdefault(r.group, i)
        refs.setdefault(r.group, []).append(r.text)
    groups = list(first)[:limit]
    pixels = preprocess_batch([dataset.image(first[g]) for g in groups], image_size)
    return GroupedCaptions(pixels, [refs[g] for g in groups])

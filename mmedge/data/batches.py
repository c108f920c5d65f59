"""Turning generated samples into model-ready numpy batches (shared by training and eval)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmedge.data.preprocess import preprocess_image
from mmedge.data.tasks import Sample, make_sample
from mmedge.data.tokenizer import WordTokenizer


@dataclass
class Batch:
    pixels: np.ndarray      # (B, 3, S, S) float32
    input_ids: np.ndarray   # (B, L) int64
    text_mask: np.ndarray   # (B, L) int64
    labels: np.ndarray      # (B,) int64
    qtypes: list[str]
    boxes: list[list[tuple[int, int, int, int]]]

    def __len__(self) -> int:
        return len(self.labels)


def generate(task: str, seed: int, split: str, indices, image_size: int = 96,
             max_objects: int = 4) -> list[Sample]:
    return [make_sample(task, seed, split, int(i), image_size, max_objects) for i in indices]


def build_batch(samples: list[Sample], tokenizer: WordTokenizer, image_size: int) -> Batch:
    ids, mask = tokenizer.encode_batch([s.text for s in samples])
    return Batch(
        pixels=np.stack([preprocess_image(s.image, image_size) for s in samples]),
        input_ids=ids, text_mask=mask,
        labels=np.array([s.label for s in samples], dtype=np.int64),
        qtypes=[s.qtype for s in samples], boxes=[list(s.boxes) for s in samples],
    )


def token_in_box_mask(boxes: list[tuple[int, int, int, int]], image_size: int, patch: int) -> np.ndarray:
    """(N,) bool: which visual tokens (row-major patches) overlap any object box."""
    side = image_size // patch
    hit = np.zeros((side, side), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        hit[max(0, y0) // patch: (min(image_size, y1) - 1) // patch + 1,
            max(0, x0) // patch: (min(image_size, x1) - 1) // patch + 1] = True
    return hit.reshape(-1)

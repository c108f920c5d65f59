"""Turning generated samples into model-ready numpy batches (shared by training and eval)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmedge.data.grounding import grounding_targets, phrase_targets
from mmedge.data.preprocess import preprocess_image
from mmedge.data.scenes import Scene, object_class, render_object_map
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
    token_classes: np.ndarray | None = None  # (B, N) object class under each visual token, 0 = background
    grounding: np.ndarray | None = None  # (B, L, 3) grid column, row and size class of the object each word names, -1 = none

    def __len__(self) -> int:
        return len(self.labels)


def generate(task: str, seed: int, split: str, indices, image_size: int = 96,
             max_objects: int = 4, qtype_weights: dict[str, float] | None = None,
             relations: tuple[str, ...] | None = None) -> list[Sample]:
    return [make_sample(task, seed, split, int(i), image_size, max_objects, qtype_weights, relations)
            for i in indices]


def token_classes(sample: Sample, patch: int) -> np.ndarray:
    """(N,) int64 over row-major patches: the colour-shape class of the object covering most of
    each visual token (at least 1/16 of it), 0 for background."""
    size = sample.image.shape[0]
    side = size // patch
    owner = render_object_map(Scene(sample.objects, size, 0))  # (S, S)
    tiles = owner.reshape(side, patch, side, patch).transpose(0, 2, 1, 3).reshape(side * side, patch * patch)
    classes = np.zeros(side * side, dtype=np.int64)
    best = np.zeros(side * side, dtype=np.int64)
    for i, obj in enumerate(sample.objects):
        cover = (tiles == i + 1).sum(1)  # (N,)
        take = (cover * 16 >= patch * patch) & (cover > best)
        classes[take], best[take] = object_class(obj), cover[take]
    return classes


def build_batch(samples: list[Sample], tokenizer: WordTokenizer, image_size: int,
                patch_size: int | None = None, ground_bins: int | None = None) -> Batch:
    """Stack samples; with patch_size, also label each visual token with its object class; with
    ground_bins, also give each word the grid cell of the object it names (a scene's objects, or a
    real record's pointers)."""
    ids, mask = tokenizer.encode_batch([s.text for s in samples])
    grounding = None if not ground_bins else np.stack([
        phrase_targets(tokenizer, s.text, s.pointers, ground_bins, tokenizer.max_length) if s.pointers else
        grounding_targets(tokenizer.tokenize(s.text), s.objects, image_size, ground_bins, tokenizer.max_length)
        for s in samples])
    return Batch(
        pixels=np.stack([preprocess_image(s.image, image_size) for s in samples]),
        input_ids=ids, text_mask=mask,
        labels=np.array([s.label for s in samples], dtype=np.int64),
        qtypes=[s.qtype for s in samples], boxes=[list(s.boxes) for s in samples],
        token_classes=None if patch_size is None else np.stack([token_classes(s, patch_size) for s in samples]),
        grounding=grounding,
    )


def token_in_box_mask(boxes: list[tuple[int, int, int, int]], image_size: int, patch: int) -> np.ndarray:
    """(N,) bool: which visual tokens (row-major patches) overlap any object box."""
    side = image_size // patch
    hit = np.zeros((side, side), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        hit[max(0, y0) // patch: (min(image_size, y1) - 1) // patch + 1,
            max(0, x0) // patch: (min(image_size, x1) - 1) // patch + 1] = True
    return hit.reshape(-1)

"""Where each referring phrase of a text points in the image (a training-only signal).

A referring phrase is a noun ("circle", "square", "triangle" or "object") with the colour and size
words just before it, e.g. "large red circle" or "blue object". When exactly one object of the
scene fits the phrase, every word of the phrase gets that object's centre as a target (the
column and row of a ``bins`` x ``bins`` grid over the image) and its size class. Words that
refer to nothing (or to several objects, or to an absent one) get -1 and are ignored by the loss.

Supervising text tokens with the position of what they name (as MDETR's alignment losses do)
gives the model the positions it needs for "is the A left of the B ?" questions.
"""

from __future__ import annotations

import numpy as np

from mmedge.data.scenes import COLORS, SHAPES, SIZES, SceneObject

NOUNS = (*SHAPES, "object")
SIZE_CLASSES = tuple(SIZES)  # the size target's classes, in this order
IGNORE = -1


def referent_spans(words: list[str], objects: tuple[SceneObject, ...]) -> list[tuple[int, int, SceneObject]]:
    """(first word, last word inclusive, object) for every phrase naming exactly one object."""
    spans = []
    for end, noun in enumerate(words):
        if noun not in NOUNS:
            continue
        start, color, size = end, None, None
        while start > 0 and words[start - 1] in (*COLORS, *SIZES):
            start -= 1
            word = words[start]
            color, size = (word, size) if word in COLORS else (color, word)
        if start == end and noun == "object":
            continue  # a bare "object" names nothing in particular
        fits = [o for o in objects if (noun == "object" or o.shape == noun)
                and (color is None or o.color == color) and (size is None or o.size == size)]
        if len(fits) == 1:
            spans.append((start, end, fits[0]))
    return spans


def grounding_targets(words: list[str], objects: tuple[SceneObject, ...], image_size: int, bins: int,
                      max_length: int) -> np.ndarray:
    """(max_length, 3) int64: the (column, row) bin and the size class of the object each word
    names, -1 for none."""
    targets = np.full((max_length, 3), IGNORE, dtype=np.int64)
    for start, end, obj in referent_spans(words[:max_length], objects):
        column = min(bins - 1, obj.cx * bins // image_size)
        row = min(bins - 1, obj.cy * bins // image_size)
        targets[start: end + 1] = (column, row, SIZE_CLASSES.index(obj.size))
    return targets

"""Where each referring phrase of a text points in the image (a training-only signal).

A referring phrase is a noun ("circle", "square", "triangle" or "object") with the colour and size
words just before it, e.g. "large red circle" or "blue object". When exactly one object of the
scene fits the phrase, every word of the phrase gets that object's centre as a target (the
column and row of a ``bins`` x ``bins`` grid over the image) and its size class. Words that
refer to nothing (or to several objects, or to an absent one) get -1 and are ignored by the loss.

Supervising text tokens with the position of what they name (as MDETR's alignment losses do)
gives the model the positions it needs for "is the A left of the B ?" questions.

A real dataset names its phrases itself (JSON Lines `refs`: words of the text and a pixel box):
`pointer` places each box's centre in the padded square the model sees, and `phrase_targets`
gives every token of the phrase that cell (no size class).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmedge.data.scenes import COLORS, SHAPES, SIZES, SceneObject
from mmedge.data.tokenizer import WordTokenizer, words

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


@dataclass(frozen=True)
class Pointer:
    """A phrase (its words) and the centre of what it names, as fractions (0..1) of the model's
    square image."""

    words: tuple[str, ...]
    x: float
    y: float


def pointer(phrase: tuple[str, ...], box: tuple[float, float, float, float], size: tuple[int, int]) -> Pointer:
    """The words of `phrase` pointing at the centre of `box` (pixels x0, y0, x1, y1) of an image of
    `size` (width, height), placed as preprocessing places the image: centred in a square of its
    longer side (preprocess.resized_rgb), which is then resized as a whole."""
    w, h = size
    side = max(w, h)
    cx = (box[0] + box[2]) / 2 + (side - w) // 2
    cy = (box[1] + box[3]) / 2 + (side - h) // 2
    return Pointer(phrase, cx / side, cy / side)


def find_phrase(text_words: list[str], phrase: tuple[str, ...], start: int = 0) -> int | None:
    """The index of the first run of `phrase` in `text_words` at or after `start`, None when absent."""
    n = len(phrase)
    return next((i for i in range(start, len(text_words) - n + 1) if tuple(text_words[i: i + n]) == phrase), None)


def phrase_targets(tokenizer: WordTokenizer, text: str, pointers: tuple[Pointer, ...], bins: int,
                   max_length: int) -> np.ndarray:
    """(max_length, 3) int64: the (column, row) bin of what each token's phrase names, size class -1.
    A phrase that occurs several times names its first occurrence no earlier pointer took."""
    targets = np.full((max_length, 3), IGNORE, dtype=np.int64)
    pieces = tokenizer.word_tokens(text, limit=max_length)  # per word: its tokens, up to the model's length
    text_words = words(text)[: len(pieces)]
    starts = np.cumsum([0] + [len(p) for p in pieces])  # token index of each word (and one past the end)
    taken: set[int] = set()
    for p in pointers:
        at = find_phrase(text_words, p.words)
        while at is not None and at in taken:
            at = find_phrase(text_words, p.words, at + 1)
        if at is None:
            continue  # checked when the record was read; a text edited since names nothing
        taken.add(at)
        first, end = int(starts[at]), min(int(starts[at + len(p.words)]), max_length)
        cell = (min(bins - 1, int(p.x * bins)), min(bins - 1, int(p.y * bins)), IGNORE)
        targets[first:end] = cell
    return targets


"""Captions of the generated scenes, and the caption tokenizer.

A scene's caption names its objects left to right ("a small red circle and a large blue square ."),
the same sentence the ``match`` task checks. The tokenizer is the scenes' word tokenizer with
[BOS] and [EOS] added after [PAD] and [UNK] (ids 0..3), so a caption encodes as
``[BOS] w1 .. wn [EOS]`` and generation stops at [EOS].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmedge.data.preprocess import preprocess_batch
from mmedge.data.scenes import render_scene, sample_scene, scene_rng
from mmedge.data.tasks import _caption, vocabulary_words
from mmedge.data.tokenizer import PAD, UNK, WordTokenizer
from mmedge.errors import TextError

BOS, EOS = "[BOS]", "[EOS]"
IGNORE = -100  # target id the loss skips (padding after [EOS])


def caption_tokenizer(max_len: int = 24) -> WordTokenizer:
    """[PAD] [UNK] [BOS] [EOS] then every word a scene caption can use."""
    return WordTokenizer.from_words([BOS, EOS] + vocabulary_words(), max_len)


def check_caption_tokenizer(tokenizer: WordTokenizer) -> None:
    want = {PAD: 0, UNK: 1, BOS: 2, EOS: 3}
    got = {k: tokenizer.vocab.get(k) for k in want}
    if got != want:
        raise TextError(f"a caption tokenizer must start with {want}; this one has {got}")


def encode_caption(tokenizer: WordTokenizer, text: str, max_len: int) -> np.ndarray:
    """(max_len + 1,) int64: [BOS] words [EOS] then [PAD]; words beyond max_len - 1 are dropped
    (and not split at all: the work is bounded by max_len; over MAX_TEXT_CHARS characters: TextError)."""
    words = tokenizer.tokenize(text, limit=max_len - 1)
    unk = tokenizer.vocab[UNK]
    ids = [tokenizer.vocab[BOS]] + [tokenizer.vocab.get(w, unk) for w in words] + [tokenizer.vocab[EOS]]
    out = np.full(max_len + 1, tokenizer.vocab[PAD], dtype=np.int64)
    out[: len(ids)] = ids
    return out


def decode_caption(tokenizer: WordTokenizer, ids) -> str:
    """Word ids (without [BOS]) up to the first [EOS] -> the caption text."""
    words = {i: w for w, i in tokenizer.vocab.items()}
    eos, out = tokenizer.vocab[EOS], []
    for i in ids:
        if int(i) == eos:
            break
        out.append(words.get(int(i), UNK))
    return " ".join(out)


@dataclass
class CaptionBatch:
    pixels: np.ndarray      # (B, 3, S, S) float32
    inputs: np.ndarray      # (B, max_len) int64: [BOS] w1 .. (teacher forcing)
    targets: np.ndarray     # (B, max_len) int64: w1 .. [EOS], IGNORE after
    references: list[list[str]]  # per image, its reference captions


def scene_captions(seed: int, split: str, indices, image_size: int = 96, max_objects: int = 4):
    """(images, captions) of the scenes at `indices` (the scene of the classifier tasks' sample)."""
    images, captions = [], []
    for i in indices:
        scene = sample_scene(scene_rng(seed, split, int(i), 0), image_size, 1, max_objects)
        images.append(render_scene(scene))
        captions.append(_caption(scene.objects))
    return images, captions


def make_caption_batch(images, captions: list[str], tokenizer: WordTokenizer, image_size: int, max_len: int,
                       references: list[list[str]] | None = None) -> CaptionBatch:
    ids = np.stack([encode_caption(tokenizer, c, max_len) for c in captions])  # (B, max_len + 1)
    targets = ids[:, 1:].copy()
    targets[targets == tokenizer.vocab[PAD]] = IGNORE
    return CaptionBatch(preprocess_batch(images, image_size), ids[:, :-1], targets,
                        references if references is not None else [[c] for c in captions])


def scene_batch(seed: int, split: str, indices, tokenizer: WordTokenizer, image_size: int, max_len: int,
                max_objects: int = 4) -> CaptionBatch:
    images, captions = scene_captions(seed, split, indices, image_size, max_objects)
    return make_caption_batch(images, captions, tokenizer, image_size, max_len)

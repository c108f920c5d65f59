"""Image-caption pairs for pretraining: the grounded scenes' own `pretrain` split (images disjoint
from every downstream split; object classes under every visual token), or a real caption dataset
(`CaptionPairs`: COCO Captions, Conceptual Captions; no object classes). Captions name every object's size, colour and shape, and
one true spatial relation when there are two or three objects (so that it fits in 24 tokens), e.g.
"a small red circle and a large blue square . the red circle is left of the blue square ."
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmedge.data.batches import token_classes
from mmedge.data.preprocess import preprocess_image
from mmedge.data.scenes import render_scene, sample_scene, scene_rng
from mmedge.data.tasks import _REL_TEXT, RELATIONS, Sample, _relation_holds
from mmedge.data.tokenizer import WordTokenizer


def caption(objects, rng: np.random.Generator, max_tokens: int = 24) -> str:
    """Every object, then one true relation when it fits in max_tokens (4-object scenes: none)."""
    ordered = sorted(objects, key=lambda o: (o.cx, o.cy))
    text = " and ".join(f"a {o.size} {o.color} {o.shape}" for o in ordered) + " ."
    if len(objects) >= 2:
        for _ in range(8):
            i, j = rng.choice(len(objects), 2, replace=False)
            a, b = objects[i], objects[j]
            rel = RELATIONS[int(rng.integers(len(RELATIONS)))]
            if _relation_holds(a, b, rel):
                relation = f" the {a.color} {a.shape} is {_REL_TEXT[rel]} the {b.color} {b.shape} ."
                if len((text + relation).split()) <= max_tokens:
                    text += relation
                break
    return text


def make_pair(seed: int, index: int, image_size: int, max_objects: int = 4, max_tokens: int = 24) -> Sample:
    scene = sample_scene(scene_rng(seed, "pretrain", index, 0), image_size, 1, max_objects)
    text = caption(scene.objects, scene_rng(seed, "pretrain", index, 1), max_tokens)
    return Sample(image=render_scene(scene), text=text, answer="", label=0, task="pretrain", qtype="caption",
                  boxes=[o.box for o in scene.objects], objects=scene.objects)


@dataclass
class PretrainBatch:
    pixels: np.ndarray         # (B, 3, S, S) float32
    input_ids: np.ndarray      # (B, L) int64
    text_mask: np.ndarray      # (B, L) int64
    token_classes: np.ndarray  # (B, N) object class under each visual token, 0 = background


def build(seed: int, indices, tokenizer: WordTokenizer, image_size: int, patch: int) -> PretrainBatch:
    pairs = [make_pair(seed, int(i), image_size, max_tokens=tokenizer.max_length) for i in indices]
    ids, mask = tokenizer.encode_batch([p.text for p in pairs])
    return PretrainBatch(np.stack([preprocess_image(p.image, image_size) for p in pairs]), ids, mask,
                         np.stack([token_classes(p, patch) for p in pairs]))


class CaptionPairs:
    """A real caption dataset's training pairs (`data` coco:ROOT or cc:ROOT), images cached once.
    Captions carry no object classes, so `token_classes` is all background and only the text half
    and image-text matching can learn from them."""

    def __init__(self, data: str, image_size: int, progress: bool = True) -> None:
        from mmedge.data.sources import open_dataset, parse_data_spec

        self.dataset = open_dataset(parse_data_spec(data), "match", "train", image_size, progress=progress)
        self.image_size = image_size

    @property
    def captions(self) -> list[str]:
        return [r.text for r in self.dataset.records]

    def __len__(self) -> int:
        return len(self.dataset)

    def build(self, indices, tokenizer: WordTokenizer, patch: int) -> PretrainBatch:
        rows = [int(i) % len(self.dataset) for i in indices]
        ids, mask = tokenizer.encode_batch([self.dataset.records[i].text for i in rows])
        pixels = np.stack([preprocess_image(self.dataset.image(i), self.image_size) for i in rows])
        patches = (self.image_size // patch) ** 2
        return PretrainBatch(pixels, ids, mask, np.zeros((len(rows), patches), dtype=np.int64))

"""Answer one question about one image with a trained model (the PyTorch reference path)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mmedge.data.preprocess import ImageLike, preprocess_image
from mmedge.errors import ConfigError
from mmedge.models.checkpoint import from_pretrained


@dataclass
class ExitAnswer:
    answer: str
    confidence: float       # learned confidence head
    max_probability: float


@dataclass
class TorchPrediction:
    answer: str                  # the final exit's answer
    exits: list[ExitAnswer]      # every exit, shallow to deep
    kept_visual_tokens: list[int] | None  # row-major patch indices, None when all are kept


class TorchPredictor:
    def __init__(self, model_dir: str | Path) -> None:
        self.model, self.tokenizer = from_pretrained(model_dir)
        self.config = self.model.config

    @torch.no_grad()
    def predict(self, image: ImageLike, text: str, keep_ratio: float = 1.0) -> TorchPrediction:
        if not 0 < keep_ratio <= 1:
            raise ConfigError(f"keep_ratio {keep_ratio} must be in (0, 1]", "arguments")
        if getattr(self.model, "is_adapted", False):  # `mmedge adapt`: the preprocessor takes the tokenizer's place
            inputs = self.tokenizer.encode([(image,)], [text])
            out = self.model(**inputs, keep_ratio=keep_ratio)
        else:
            pixels = torch.from_numpy(preprocess_image(image, self.config.image_size))[None]
            ids, mask = (torch.from_numpy(a)[None] for a in self.tokenizer.encode(text))
            out = self.model(pixels, ids, mask, keep_ratio=keep_ratio)
        exits = []
        for logits, conf in zip(out.logits, out.confidence):
            probs = logits[0].softmax(-1)
            exits.append(ExitAnswer(self.config.labels[int(probs.argmax())], float(conf[0]), float(probs.max())))
        kept = None if out.kept_index is None else np.sort(out.kept_index[0].numpy()).tolist()
        return TorchPrediction(exits[-1].answer, exits, kept)

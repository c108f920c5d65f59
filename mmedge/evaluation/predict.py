"""Run a model over a generated split once per keep ratio and keep every exit's outputs."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from mmedge.data.batches import Batch, build_batch, generate
from mmedge.data.tokenizer import WordTokenizer
from mmedge.models.model import AdaptiveVLModel


@dataclass
class ExitOutputs:
    """Outputs at one keep ratio for n samples and E exits."""

    keep_ratio: float
    preds: np.ndarray           # (n, E) argmax class per exit
    learned_conf: np.ndarray    # (n, E) learned confidence head
    max_prob: np.ndarray        # (n, E) max softmax probability
    kept_index: np.ndarray | None  # (n, k) visual tokens kept by the prefilter


@dataclass
class EvalRun:
    labels: np.ndarray          # (n,)
    qtypes: list[str]
    boxes: list[list[tuple[int, int, int, int]]]
    outputs: dict[float, ExitOutputs]


def to_torch(batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (torch.from_numpy(batch.pixels), torch.from_numpy(batch.input_ids), torch.from_numpy(batch.text_mask))


def make_batches(task: str, data_seed: int, split: str, n: int, tokenizer: WordTokenizer, image_size: int,
                 batch_size: int, max_objects: int = 4) -> list[Batch]:
    samples = generate(task, data_seed, split, range(n), image_size, max_objects)
    return [build_batch(samples[i: i + batch_size], tokenizer, image_size) for i in range(0, n, batch_size)]


class RandomScorer(torch.nn.Module):
    """A stand-in prefilter that ranks visual tokens at random (a baseline for the trained one)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, visual: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        return torch.rand(visual.shape[:2], generator=self.generator)  # (B, N)


@contextmanager
def random_prefilter(model: AdaptiveVLModel, seed: int = 0):
    """Within the block, the model keeps random visual tokens instead of the prefilter's choice."""
    trained = model.prefilter
    model.prefilter = RandomScorer(seed)
    try:
        yield model
    finally:
        model.prefilter = trained


@torch.no_grad()
def run_model(model: AdaptiveVLModel, batches: list[Batch], keep_ratios: list[float],
              progress: bool = False) -> EvalRun:
    was_training = model.training
    model.eval()
    outputs = {}
    for r in keep_ratios:
        preds, conf, maxp, kept = [], [], [], []
        for batch in tqdm(batches, desc=f"eval keep={r:g}", disable=not progress, leave=False):
            out = model(*to_torch(batch), keep_ratio=r)
            logits = torch.stack(out.logits, dim=1)  # (B, E, L)
            preds.append(logits.argmax(-1).numpy())
            maxp.append(logits.softmax(-1).amax(-1).numpy())
            conf.append(torch.stack(out.confidence, dim=1).numpy())
            if out.kept_index is not None:
                kept.append(out.kept_index.numpy())
        outputs[r] = ExitOutputs(r, np.concatenate(preds), np.concatenate(conf), np.concatenate(maxp),
                                 np.concatenate(kept) if kept else None)
    model.train(was_training)
    return EvalRun(np.concatenate([b.labels for b in batches]), [q for b in batches for q in b.qtypes],
                   [bx for b in batches for bx in b.boxes], outputs)

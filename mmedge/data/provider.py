"""Where training and evaluation samples come from: the generated scenes (default) or a real
dataset (`--data NAME:ROOT`, mmedge.data.sources), behind one small interface.

A real dataset's labels are its answer vocabulary (VQA: the most frequent training answers;
verification: false/true) and its tokenizer's vocabulary is built from its training text.
Records whose answer is outside the vocabulary are not trained on (they still count in the
official metrics, as wrong answers).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmedge.data.batches import Batch, build_batch
from mmedge.data.sources import DataSpec, Dataset, answer_vocabulary, open_dataset, parse_data_spec
from mmedge.data.tasks import LABELS, Sample
from mmedge.data.tokenizer import WordTokenizer, vocabulary_words_of
from mmedge.errors import DatasetError

VAL_SPLIT = {"nlvr2": "dev"}
CAPTION_SOURCES = ("coco", "cc")


def _other_group(dataset: Dataset, i: int) -> int | None:
    """A record describing another image than record i (deterministic: the next such record)."""
    n = len(dataset.records)
    for step in range(1, n):
        j = (i + step * 7919) % n  # a large stride so neighbours (one image's captions) are skipped
        if dataset.records[j].group != dataset.records[i].group:
            return j
    return None


@dataclass
class RealData:
    """A real dataset's train and validation splits, with the labels and tokenizer built from them."""
    spec: DataSpec
    task: str
    train: Dataset
    val: Dataset
    labels: list[str]
    tokenizer: WordTokenizer

    def samples(self, dataset: Dataset, indices) -> list[Sample]:
        out = []
        for i in indices:
            r = dataset.records[int(i)]
            text, answer = r.text, r.answer
            if self.spec.name in CAPTION_SOURCES:  # matching from captions: every other index a mismatched caption
                answer, text = "yes", r.text
                if int(i) % 2:
                    j = _other_group(dataset, int(i))
                    answer, text = ("no", dataset.records[j].text) if j is not None else ("yes", r.text)
            label = self.labels.index(answer) if answer in self.labels else -1
            out.append(Sample(image=dataset.image(int(i)), text=text, answer=answer, label=label,
                              task=self.task, qtype=r.qtype))
        return out

    def trainable(self) -> np.ndarray:
        """Indices of training records whose answer is a label."""
        if self.spec.name in CAPTION_SOURCES:  # every caption trains (matched or, every other index, not)
            return np.arange(len(self.train.records), dtype=np.int64)
        labels = set(self.labels)
        return np.array([i for i, r in enumerate(self.train.records) if r.answer in labels], dtype=np.int64)


def load_real(data: str, task: str, image_size: int, max_text_len: int, answer_vocab_size: int = 1000,
              eval_samples: int | None = None, cache_dir: Path | None = None, progress: bool = True) -> RealData:
    spec = parse_data_spec(data)
    train = open_dataset(spec, task, "train", image_size, cache_dir, progress=progress)
    val = open_dataset(spec, task, VAL_SPLIT.get(spec.name, "val"), image_size, cache_dir, limit=eval_samples,
                       progress=progress)
    labels = answer_vocabulary(train.records, answer_vocab_size) if task == "vqa" else list(LABELS[task])
    if spec.name in CAPTION_SOURCES and task != "match":
        raise DatasetError(f"{spec.name} captions train the match task (or pretraining), not {task!r}")
    tokenizer = WordTokenizer.from_words(vocabulary_words_of([r.text for r in train.records]), max_text_len)
    if task != "vqa" and spec.name not in CAPTION_SOURCES and any(r.answer not in labels for r in train.records):
        raise DatasetError(f"{spec.name}: {task} answers must be {' or '.join(labels)}")
    return RealData(spec, task, train, val, labels, tokenizer)


def real_batches(data: RealData, dataset: Dataset, n: int, batch_size: int = 128) -> list[Batch]:
    """Evaluation batches over the first n records of `dataset` (labels -1 for out-of-vocabulary answers)."""
    idx = range(min(n, len(dataset)))
    samples = data.samples(dataset, idx)
    return [build_batch(samples[i: i + batch_size], data.tokenizer, dataset.images.array.shape[1])
            for i in range(0, len(samples), batch_size)]

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
from mmedge.data.tokenizer import WordTokenizer, train_wordpiece, vocabulary_words_of
from mmedge.errors import DatasetError

VAL_SPLIT = {"nlvr2": "dev"}
CAPTION_SOURCES = ("coco", "cc")


def label_ids(labels: list[str], answers) -> list[int]:
    """Each answer's index among `labels`, -1 for an answer outside them (always wrong)."""
    index = {a: i for i, a in enumerate(labels)}
    return [index.get(a, -1) for a in answers]


def _other_group(dataset: Dataset, i: int) -> int | None:
    """A record describing another image than record i (deterministic: the next such record)."""
    n = len(dataset.records)
    for step in range(1, n):
        j = (i + step * 7919) % n  # a large stride so neighbours (one image's captions) are skipped
        if dataset.records[j].group != dataset.records[i].group:
            return j
    return None


def samples_of(source: str, task: str, labels: list[str], dataset: Dataset, indices) -> list[Sample]:
    """Samples of the records at `indices`, labelled by their index among `labels` (-1 outside them).
    Matching from captions (coco, cc): every other index gets another image's caption, answer "no"."""
    pairs = []  # (record index, text, answer)
    for i in map(int, indices):
        r = dataset.records[i]
        text, answer = r.text, r.answer
        if source in CAPTION_SOURCES:
            answer = "yes"
            j = _other_group(dataset, i) if i % 2 else None
            if j is not None:
                answer, text = "no", dataset.records[j].text
        pairs.append((i, text, answer))
    ids = label_ids(labels, [a for _, _, a in pairs])
    return [Sample(image=dataset.image(i), text=text, answer=answer, label=label, task=task,
                   qtype=dataset.records[i].qtype,
                   pointers=dataset.pointers(i) if text == dataset.records[i].text else ())
            for (i, text, answer), label in zip(pairs, ids)]


def real_samples(data: str, task: str, labels: list[str], image_size: int, split: str, n: int,
                 progress: bool = False) -> list[Sample]:
    """The first n records of a real dataset's split ("train", or "val": its validation split) as
    samples labelled for a model with `labels` (what export checks and calibration run on)."""
    spec = parse_data_spec(data)
    name = VAL_SPLIT.get(spec.name, "val") if split == "val" else split
    dataset = open_dataset(spec, task, name, image_size, limit=n, progress=progress)
    if not len(dataset.records):
        raise DatasetError(f"{data}: the {name} split has no usable record")
    return samples_of(spec.name, task, labels, dataset, range(min(n, len(dataset.records))))


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
        return samples_of(self.spec.name, self.task, self.labels, dataset, indices)

    def trainable(self) -> np.ndarray:
        """Indices of training records whose answer is a label."""
        if self.spec.name in CAPTION_SOURCES:  # every caption trains (matched or, every other index, not)
            return np.arange(len(self.train.records), dtype=np.int64)
        labels = set(self.labels)
        return np.array([i for i, r in enumerate(self.train.records) if r.answer in labels], dtype=np.int64)


def extend_words(tokenizer: WordTokenizer, words: list[str]) -> WordTokenizer:
    """`tokenizer` with `words` it lacks appended: every known word keeps its id, so a starting model's
    embedding rows still index it and only the new words' rows start fresh."""
    vocab = dict(tokenizer.vocab)
    for word in words:
        vocab.setdefault(word, len(vocab))
    return WordTokenizer(vocab, tokenizer.max_length)


def load_real(data: str, task: str, image_size: int, max_text_len: int, answer_vocab_size: int = 1000,
              eval_samples: int | None = None, cache_dir: Path | None = None, progress: bool = True,
              text_vocab: str = "wordpiece", text_vocab_size: int = 8000,
              tokenizer: WordTokenizer | None = None) -> RealData:
    """A real dataset's splits, labels and tokenizer: `tokenizer` when given (a run that starts from
    a trained model keeps its vocabulary; a word vocabulary gains the data's new words), else WordPiece learnt from the training text
    (`text_vocab` "wordpiece") or its words (`text_vocab` "word")."""
    spec = parse_data_spec(data)
    train = open_dataset(spec, task, "train", image_size, cache_dir, progress=progress)
    val = open_dataset(spec, task, VAL_SPLIT.get(spec.name, "val"), image_size, cache_dir, limit=eval_samples,
                       progress=progress)
    labels = answer_vocabulary(train.records, answer_vocab_size) if task == "vqa" else list(LABELS[task])
    if spec.name in CAPTION_SOURCES and task != "match":
        raise DatasetError(f"{spec.name} captions train the match task (or pretraining), not {task!r}")
    texts = [r.text for r in train.records]
    if tokenizer is None:
        tokenizer = train_wordpiece(texts, text_vocab_size, max_text_len) if text_vocab == "wordpiece" else \
            WordTokenizer.from_words(vocabulary_words_of(texts), max_text_len)
    elif tokenizer.max_length != max_text_len:
        raise DatasetError(f"the starting model's tokenizer takes {tokenizer.max_length} tokens, the config "
                           f"{max_text_len}; set model.max_text_len to {tokenizer.max_length}")
    elif type(tokenizer) is WordTokenizer:  # a word vocabulary grows by the data's new words (fresh embeddings)
        tokenizer = extend_words(tokenizer, vocabulary_words_of(texts))
    if task != "vqa" and spec.name not in CAPTION_SOURCES and any(r.answer not in labels for r in train.records):
        raise DatasetError(f"{spec.name}: {task} answers must be {' or '.join(labels)}")
    return RealData(spec, task, train, val, labels, tokenizer)


def real_batches(data: RealData, dataset: Dataset, n: int, batch_size: int = 128) -> list[Batch]:
    """Evaluation batches over the first n records of `dataset` (labels -1 for out-of-vocabulary answers)."""
    idx = range(min(n, len(dataset)))
    samples = data.samples(dataset, idx)
    return [build_batch(samples[i: i + batch_size], data.tokenizer, dataset.images.array.shape[1])
            for i in range(0, len(samples), batch_size)]

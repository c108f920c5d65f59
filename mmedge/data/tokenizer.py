"""A word-level tokenizer, saved in the Hugging Face ``tokenizer.json`` format.

Rules (simple enough to reimplement exactly in Java or Swift): lowercase the text, split it
with the regex ``\\w+|[^\\w\\s]+`` (the ``Whitespace`` pre-tokenizer of HF tokenizers), map each
piece to its id or to ``[UNK]``, then truncate or pad with ``[PAD]`` to ``max_length``.
The file loads in HF ``tokenizers`` too; a test checks that both give the same ids.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmedge.errors import CheckpointError, TextError

PAD, UNK = "[PAD]", "[UNK]"
_SPLIT = re.compile(r"\w+|[^\w\s]+")


class TextTruncatedWarning(UserWarning):
    """The text had more tokens than the model takes; the tail was dropped."""


@dataclass
class WordTokenizer:
    vocab: dict[str, int]
    max_length: int = 24

    @classmethod
    def from_words(cls, words: list[str], max_length: int = 24) -> "WordTokenizer":
        vocab = {PAD: 0, UNK: 1}
        for w in words:
            vocab.setdefault(w, len(vocab))
        return cls(vocab, max_length)

    @property
    def pad_id(self) -> int:
        return self.vocab[PAD]

    def tokenize(self, text: str) -> list[str]:
        return _SPLIT.findall(text.lower())

    def encode(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and attention mask, both (max_length,) int64."""
        if not isinstance(text, str):
            raise TextError(f"text must be a str, got {type(text).__name__}")
        pieces = self.tokenize(text)
        if not pieces:
            raise TextError("text is empty (no word or punctuation left after splitting); "
                            "pass a question or statement such as 'is there a red circle ?'")
        if len(pieces) > self.max_length:
            warnings.warn(f"text has {len(pieces)} tokens, more than the model's {self.max_length}: "
                          f"truncated to the first {self.max_length}", TextTruncatedWarning, stacklevel=2)
            pieces = pieces[: self.max_length]
        unk = self.vocab[UNK]
        ids = np.full(self.max_length, self.pad_id, dtype=np.int64)
        ids[: len(pieces)] = [self.vocab.get(p, unk) for p in pieces]
        mask = np.zeros(self.max_length, dtype=np.int64)
        mask[: len(pieces)] = 1
        return ids, mask

    def encode_batch(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        pairs = [self.encode(t) for t in texts]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])

    # ------------------------------------------------------------------ serialisation
    def to_json(self) -> dict:
        """The HF tokenizers JSON layout (WordLevel model, Lowercase, Whitespace)."""
        return {
            "version": "1.0",
            "truncation": {"direction": "Right", "max_length": self.max_length, "strategy": "LongestFirst",
                           "stride": 0},
            "padding": {"strategy": {"Fixed": self.max_length}, "direction": "Right", "pad_to_multiple_of": None,
                        "pad_id": self.pad_id, "pad_type_id": 0, "pad_token": PAD},
            "added_tokens": [
                {"id": self.vocab[t], "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                 "normalized": False, "special": True} for t in (PAD, UNK)
            ],
            "normalizer": {"type": "Lowercase"},
            "pre_tokenizer": {"type": "Whitespace"},
            "post_processor": None,
            "decoder": None,
            "model": {"type": "WordLevel", "vocab": self.vocab, "unk_token": UNK},
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "WordTokenizer":
        try:
            data = json.loads(Path(path).read_text())
            model, truncation = data["model"], data["truncation"]
            if not isinstance(model, dict) or not isinstance(truncation, dict) or not isinstance(model["vocab"], dict):
                raise TypeError("model, model.vocab and truncation must be JSON objects")
            if model.get("type") != "WordLevel":
                raise CheckpointError(f"{path}: tokenizer model type {model.get('type')!r} is not WordLevel")
            max_length = truncation["max_length"]
            if type(max_length) is not int or max_length < 1:
                raise ValueError(f"truncation.max_length {max_length!r} must be a positive integer")
            return cls(dict(model["vocab"]), max_length)
        except FileNotFoundError as exc:
            raise CheckpointError(f"tokenizer file not found: {path}") from exc
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, RecursionError) as exc:
            raise CheckpointError(f"{path} is not a valid tokenizer.json ({str(exc)[:200]}); re-export the model") from exc


def default_tokenizer(max_length: int = 24) -> WordTokenizer:
    """The tokenizer over every word the grounded-scene generators produce."""
    from mmedge.data.tasks import vocabulary_words

    return WordTokenizer.from_words(vocabulary_words(), max_length)


def vocabulary_words_of(texts: list[str], min_count: int = 1, max_words: int = 30_000) -> list[str]:
    """The words of `texts` as this tokenizer splits them, most frequent first (ties
    alphabetically), those seen at least `min_count` times, at most `max_words`."""
    from collections import Counter

    counts = Counter(p for t in texts for p in _SPLIT.findall(t.lower()))
    ranked = sorted(((w, c) for w, c in counts.items() if c >= min_count), key=lambda wc: (-wc[1], wc[0]))
    return [w for w, _ in ranked[:max_words] if w not in (PAD, UNK)]

"""Tokenizers saved in the Hugging Face ``tokenizer.json`` format: word-level and WordPiece.

Rules (simple enough to reimplement exactly in Java or Swift): lowercase the text, split it
with the regex ``\\w+|[^\\w\\s]+`` (the ``Whitespace`` pre-tokenizer of HF tokenizers), then
  word (``WordLevel``): map each piece to its id or to ``[UNK]``;
  wordpiece (``WordPiece``): split each piece greedily into the longest vocabulary entries from
    its start, later entries written with the ``##`` prefix; a piece with no such split, or longer
    than ``max_input_chars_per_word`` code points, becomes one ``[UNK]``;
then truncate or pad with ``[PAD]`` to ``max_length``. A text of more than ``MAX_TEXT_CHARS``
(65,536) code points is refused with a TextError, and `encode` stops splitting once it has
``max_length`` + 1 tokens (the rest would be dropped): the work per text is bounded, the ids
are those of the whole text truncated. The scenes' closed vocabulary uses words;
real text uses a WordPiece vocabulary built from the training text with HF ``tokenizers``
(`train_wordpiece`). The files load in HF ``tokenizers`` too; tests check that both give the same ids.
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
# The longest text a tokenizer takes, in code points (Python's len; JS and Java count the same).
# Every runtime refuses a longer text with TextError before any work: no model reads more than its
# max_length tokens, and 64 Ki characters is far beyond any question a model of this size can use.
MAX_TEXT_CHARS = 65_536


def check_text(text) -> str:
    """`text` if it is a str of at most MAX_TEXT_CHARS code points, else TextError."""
    if not isinstance(text, str):
        raise TextError(f"text must be a str, got {type(text).__name__}")
    if len(text) > MAX_TEXT_CHARS:
        raise TextError(f"text has {len(text):,} characters, more than the {MAX_TEXT_CHARS:,} a tokenizer takes; "
                        f"pass a shorter text (the model reads only its first tokens)")
    return text


def words(text: str) -> list[str]:
    """The lowercased word/punctuation pieces of `text`, as every tokenizer here splits it first."""
    return _SPLIT.findall(check_text(text).lower())


class TextTruncatedWarning(UserWarning):
    """The text had more tokens than the model takes; the tail was dropped."""


@dataclass
class WordTokenizer:
    vocab: dict[str, int]
    max_length: int = 24

    kind = "word"  # the manifest's tokenizer.kind

    @classmethod
    def from_words(cls, words: list[str], max_length: int = 24) -> "WordTokenizer":
        vocab = {PAD: 0, UNK: 1}
        for w in words:
            vocab.setdefault(w, len(vocab))
        return cls(vocab, max_length)

    @property
    def pad_id(self) -> int:
        return self.vocab[PAD]

    def tokenize(self, text: str, limit: int | None = None) -> list[str]:
        """The tokens of `text` (at most MAX_TEXT_CHARS code points, else TextError), or only its
        first `limit`: the splitting stops there, so the work is bounded by `limit`."""
        check_text(text)
        out: list[str] = []
        for match in _SPLIT.finditer(text.lower()):
            out.extend(self._subwords(match.group()))
            if limit is not None and len(out) >= limit:
                return out[:limit]
        return out

    def _subwords(self, piece: str) -> list[str]:
        """The tokens of one word/punctuation piece: itself (WordPiece splits it further)."""
        return [piece]

    def word_tokens(self, text: str, limit: int | None = None) -> list[list[str]]:
        """The tokens of each word/punctuation piece of `text` (`words(text)`), in order: what
        `tokenize` concatenates, so a phrase's words can be traced to its token positions. With
        `limit`, only the words up to the one that reaches `limit` tokens (the work stays bounded)."""
        check_text(text)
        out, total = [], 0
        for match in _SPLIT.finditer(text.lower()):
            out.append(self._subwords(match.group()))
            total += len(out[-1])
            if limit is not None and total >= limit:
                break
        return out

    def encode(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and attention mask, both (max_length,) int64. Only the first max_length + 1
        tokens are made: one more than fits tells that the text is truncated."""
        pieces = self.tokenize(text, limit=self.max_length + 1)
        if not pieces:
            raise TextError("text is empty (no word or punctuation left after splitting); "
                            "pass a question or statement such as 'is there a red circle ?'")
        if len(pieces) > self.max_length:
            warnings.warn(f"text has more than the model's {self.max_length} tokens: "
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

    def manifest_fields(self) -> dict:
        """What the bundle manifest's `tokenizer` section says about this tokenizer's kind."""
        return {"kind": self.kind}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "WordTokenizer":
        """A tokenizer.json of either kind (WordLevel or WordPiece model)."""
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError as exc:
            raise CheckpointError(f"tokenizer file not found: {path}") from exc
        except (json.JSONDecodeError, ValueError, RecursionError) as exc:
            raise CheckpointError(f"{path} is not a valid tokenizer.json ({str(exc)[:200]}); re-export the model") from exc
        return cls.from_json(data, path)

    @classmethod
    def from_json(cls, data, where: str | Path = "tokenizer.json") -> "WordTokenizer":
        """The tokenizer of parsed tokenizer.json content (either kind); `where` names it in errors."""
        try:
            model, truncation = data["model"], data["truncation"]
            if not isinstance(model, dict) or not isinstance(truncation, dict) or not isinstance(model["vocab"], dict):
                raise TypeError("model, model.vocab and truncation must be JSON objects")
            kinds = {"WordLevel": WordTokenizer, "WordPiece": WordPieceTokenizer}
            if model.get("type") not in kinds:
                raise CheckpointError(f"{where}: tokenizer model type {model.get('type')!r} is not one of {list(kinds)}")
            max_length = truncation["max_length"]
            if type(max_length) is not int or max_length < 1:
                raise ValueError(f"truncation.max_length {max_length!r} must be a positive integer")
            if model["type"] == "WordLevel":
                return WordTokenizer(dict(model["vocab"]), max_length)
            prefix, longest = model["continuing_subword_prefix"], model["max_input_chars_per_word"]
            if not isinstance(prefix, str) or not prefix or type(longest) is not int or longest < 1:
                raise ValueError("WordPiece continuing_subword_prefix must be a non-empty string and "
                                 "max_input_chars_per_word a positive integer")
            if model.get("unk_token", UNK) != UNK:
                raise ValueError(f"WordPiece unk_token must be {UNK!r}")
            return WordPieceTokenizer(dict(model["vocab"]), max_length, prefix, longest)
        except (KeyError, TypeError, ValueError, RecursionError) as exc:
            raise CheckpointError(f"{where} is not a valid tokenizer.json ({str(exc)[:200]}); re-export the model") from exc


@dataclass
class WordPieceTokenizer(WordTokenizer):
    """WordPiece over the same lowercased word/punctuation pieces (HF ``WordPiece`` model)."""

    continuing_subword_prefix: str = "##"
    max_input_chars_per_word: int = 100

    kind = "wordpiece"

    def _subwords(self, piece: str) -> list[str]:
        return self._split(piece)

    def _longest_entry(self) -> int:
        """The most code points of any vocabulary entry (prefix included): no longer slice can match.
        Cached per vocabulary (object and size), so that the bound follows a vocabulary built in place."""
        key = (id(self.vocab), len(self.vocab))
        cached = getattr(self, "_longest", None)
        if cached is None or cached[0] != key:
            cached = self._longest = (key, max(map(len, self.vocab), default=0))
        return cached[1]

    def _split(self, word: str) -> list[str]:
        """Greedy longest-match-first from the start; [UNK] for the whole word when a part has no match.
        Each position tries at most the longest entry's length of slices: O(len(word) x longest entry)."""
        if len(word) > self.max_input_chars_per_word:  # code points, as HF counts chars
            return [UNK]
        out, start, longest = [], 0, self._longest_entry()
        while start < len(word):
            end = min(len(word), start + longest)
            while end > start:
                sub = word[start:end] if start == 0 else self.continuing_subword_prefix + word[start:end]
                if sub in self.vocab:
                    out.append(sub)
                    break
                end -= 1
            else:
                return [UNK]
            start = end
        return out

    def to_json(self) -> dict:
        data = super().to_json()
        data["model"] = {"type": "WordPiece", "unk_token": UNK,
                         "continuing_subword_prefix": self.continuing_subword_prefix,
                         "max_input_chars_per_word": self.max_input_chars_per_word, "vocab": self.vocab}
        return data

    def manifest_fields(self) -> dict:
        return {"kind": self.kind, "continuing_subword_prefix": self.continuing_subword_prefix,
                "max_input_chars_per_word": self.max_input_chars_per_word}


def train_wordpiece(texts, vocab_size: int = 8000, max_length: int = 24, min_frequency: int = 2,
                    progress: bool = False) -> WordPieceTokenizer:
    """A WordPiece vocabulary learnt from `texts` by HF ``tokenizers`` (lowercase, Whitespace
    pre-tokenizer, [PAD] = 0 and [UNK] = 1, ``##`` continuation prefix)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    hf = Tokenizer(models.WordPiece(unk_token=UNK, continuing_subword_prefix="##", max_input_chars_per_word=100))
    hf.normalizer = normalizers.Lowercase()
    hf.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[PAD, UNK],
                                        continuing_subword_prefix="##", show_progress=progress)
    hf.train_from_iterator(list(texts), trainer=trainer)
    model = json.loads(hf.to_str())["model"]
    return WordPieceTokenizer(dict(model["vocab"]), max_length, model["continuing_subword_prefix"],
                              model["max_input_chars_per_word"])


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

"""BERT's WordPiece tokenizer, from a Hugging Face ``tokenizer.json``, in plain Python and numpy.

What single-stream encoders (ViLT, and the BERT-text families after it) read: the rules below are
those of HF ``tokenizers``' ``BertNormalizer`` + ``BertPreTokenizer`` + ``WordPiece`` +
``TemplateProcessing`` ("[CLS] A [SEP]"), which is what ``transformers.BertTokenizer`` runs, in
the same order, so that a runtime in another language can reproduce them exactly:

1. special tokens: an exact occurrence of a special added token (``[CLS]``, ``[MASK]``, ...) in the
   raw text is one token, never normalised or split;
2. normaliser (``BertNormalizer``), per code point, in this order:
   - ``clean_text``: U+0000, U+FFFD and control characters (Unicode category Cc, Cf, Co or Cs,
     except tab, LF and CR; unassigned code points, Cn, stay, as in ``tokenizers``) are removed;
     white space (tab, LF, CR and Unicode White_Space) becomes a space;
   - ``handle_chinese_chars``: each CJK ideograph (CJK_RANGES, ``tokenizers``' ranges) gets a space
     on either side;
   - ``strip_accents`` (when null in the file: the value of ``lowercase``): NFD, then every
     non-spacing mark (category Mn) removed;
   - ``lowercase``: each code point lowercased on its own (no final-sigma rule);
3. pre-tokenizer (``BertPreTokenizer``): split on white space (dropped), and every punctuation
   code point (ASCII punctuation, or Unicode category P*) is a word of its own;
4. WordPiece: each word split greedily into the longest vocabulary entries from its start, later
   entries with the ``##`` prefix; a word with no such split, or longer than
   ``max_input_chars_per_word`` code points, is one ``[UNK]``;
5. template: ``[CLS]`` + the first ``max_length - 2`` pieces + ``[SEP]``, then ``[PAD]`` to
   ``max_length``; the mask is 1 on ``[CLS]``, the pieces and ``[SEP]``.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmedge.errors import CheckpointError
from mmedge.data.tokenizer import check_text

# Code points with the Unicode White_Space property (what Rust's char::is_whitespace tests).
WHITE_SPACE = frozenset(map(chr, [*range(0x09, 0x0E), 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B),
                                  0x2028, 0x2029, 0x202F, 0x205F, 0x3000]))
# The CJK ideograph blocks BERT puts spaces around: those of `tokenizers`' is_chinese_char, which
# transformers runs (0x2B920, not 0x2B820 as in BERT's original _is_chinese_char: U+2B820..U+2B91F
# are not spaced out).
CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
              (0x2B920, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))
# What clean_text removes besides NUL and U+FFFD: "other" categories, but not Cn (`tokenizers` keeps
# unassigned code points, so a code point assigned after this Python's Unicode version is kept).
CONTROL_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs"})
ASCII_PUNCTUATION = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


def _is_cjk(c: str) -> bool:
    cp = ord(c)
    return any(lo <= cp <= hi for lo, hi in CJK_RANGES)


def _is_control(c: str) -> bool:
    return c not in "\t\n\r" and unicodedata.category(c) in CONTROL_CATEGORIES


def _is_punctuation(c: str) -> bool:
    return c in ASCII_PUNCTUATION or unicodedata.category(c).startswith("P")


@dataclass
class BertWordPiece:
    """BERT WordPiece with the ``[CLS] text [SEP]`` template, padded to ``max_length``."""

    vocab: dict[str, int]
    max_length: int = 40                      # tokens including [CLS] and [SEP]
    lowercase: bool = True                    # BertNormalizer.lowercase
    strip_accents: bool | None = None         # None: follows lowercase (as in BertNormalizer)
    clean_text: bool = True
    handle_chinese_chars: bool = True
    continuing_subword_prefix: str = "##"
    max_input_chars_per_word: int = 100
    cls_token: str = "[CLS]"
    sep_token: str = "[SEP]"
    pad_token: str = "[PAD]"
    unk_token: str = "[UNK]"
    special_tokens: list[str] = field(default_factory=list)  # added tokens matched in the raw text

    def __post_init__(self) -> None:
        missing = [t for t in (self.cls_token, self.sep_token, self.pad_token, self.unk_token) if t not in self.vocab]
        if missing:
            raise CheckpointError(f"the WordPiece vocabulary lacks {missing}")
        if self.max_length < 2:
            raise CheckpointError(f"max_length {self.max_length} leaves no room for [CLS] and [SEP]")
        self._longest = max(map(len, self.vocab), default=0)

    # ------------------------------------------------------------------ the rules
    def normalize(self, text: str) -> str:
        if self.clean_text:
            text = "".join(" " if c in WHITE_SPACE else c for c in text
                           if not (c in "\x00\ufffd" or _is_control(c)))
        if self.handle_chinese_chars:
            text = "".join(f" {c} " if _is_cjk(c) else c for c in text)
        if self.lowercase if self.strip_accents is None else self.strip_accents:
            text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
        if self.lowercase:
            text = "".join(c.lower() for c in text)
        return text

    def pre_tokenize(self, text: str) -> list[str]:
        words, current = [], []
        for c in text:
            if c in WHITE_SPACE:
                if current:
                    words.append("".join(current))
                    current = []
            elif _is_punctuation(c):
                if current:
                    words.append("".join(current))
                    current = []
                words.append(c)
            else:
                current.append(c)
        if current:
            words.append("".join(current))
        return words

    def wordpiece(self, word: str) -> list[str]:
        if len(word) > self.max_input_chars_per_word:
            return [self.unk_token]
        out, start = [], 0
        while start < len(word):
            end = min(len(word), start + self._longest)
            while end > start:
                piece = word[start:end] if start == 0 else self.continuing_subword_prefix + word[start:end]
                if piece in self.vocab:
                    out.append(piece)
                    break
                end -= 1
            else:
                return [self.unk_token]
            start = end
        return out

    def _segments(self, text: str) -> list[tuple[str, bool]]:
        """The raw text cut at special tokens: (segment, is_special), leftmost longest match first."""
        specials = sorted(self.special_tokens, key=len, reverse=True)
        out, start, i = [], 0, 0
        while i < len(text) and specials:
            hit = next((s for s in specials if text.startswith(s, i)), None)
            if hit is None:
                i += 1
                continue
            if i > start:
                out.append((text[start:i], False))
            out.append((hit, True))
            i = start = i + len(hit)
        if start < len(text):
            out.append((text[start:], False))
        return out

    def tokenize(self, text: str, limit: int | None = None) -> list[str]:
        """The WordPiece tokens of `text` (no [CLS]/[SEP]); with `limit`, only the first `limit`."""
        check_text(text)
        out: list[str] = []
        for segment, special in self._segments(text):
            if special:
                out.append(segment)
            else:
                for word in self.pre_tokenize(self.normalize(segment)):
                    out.extend(self.wordpiece(word))
                    if limit is not None and len(out) >= limit:
                        return out[:limit]
        return out if limit is None else out[:limit]

    def encode(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and attention mask, both (max_length,) int64: [CLS] pieces [SEP] [PAD]..."""
        pieces = self.tokenize(text, limit=self.max_length - 2)
        tokens = [self.cls_token, *pieces, self.sep_token]
        unk = self.vocab[self.unk_token]
        ids = np.full(self.max_length, self.vocab[self.pad_token], dtype=np.int64)
        ids[: len(tokens)] = [self.vocab.get(t, unk) for t in tokens]
        mask = np.zeros(self.max_length, dtype=np.int64)
        mask[: len(tokens)] = 1
        return ids, mask

    def encode_batch(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        pairs = [self.encode(t) for t in texts]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])

    # ------------------------------------------------------------------ files
    def manifest_fields(self) -> dict:
        """What a bundle must state to reproduce this tokenizer (besides the vocabulary file)."""
        return {"kind": "bert-wordpiece", "max_length": self.max_length, "lowercase": self.lowercase,
                "strip_accents": self.lowercase if self.strip_accents is None else self.strip_accents,
                "clean_text": self.clean_text, "handle_chinese_chars": self.handle_chinese_chars,
                "continuing_subword_prefix": self.continuing_subword_prefix,
                "max_input_chars_per_word": self.max_input_chars_per_word,
                "template": [self.cls_token, "$text", self.sep_token],
                "special_tokens": list(self.special_tokens),
                **{f"{name}_id": self.vocab[getattr(self, f"{name}_token")] for name in ("cls", "sep", "pad", "unk")}}

    @classmethod
    def from_tokenizer_json(cls, path: str | Path, max_length: int) -> "BertWordPiece":
        """Read the vocabulary and normaliser flags of a BERT ``tokenizer.json`` (what
        ``BertTokenizer.save_pretrained`` writes); anything else is a CheckpointError."""
        try:
            return cls.from_tokenizer_data(json.loads(Path(path).read_text(encoding="utf-8")), max_length)
        except FileNotFoundError as exc:
            raise CheckpointError(f"tokenizer file not found: {path}") from exc
        except (json.JSONDecodeError, OSError) as exc:
            raise CheckpointError(f"{path}: {str(exc)[:300]}") from exc
        except CheckpointError as exc:
            raise CheckpointError(f"{path}: {exc}") from exc

    @classmethod
    def from_tokenizer_data(cls, data, max_length: int) -> "BertWordPiece":
        """The same from a parsed ``tokenizer.json`` (a bundle's, read as untrusted input); anything
        other than a BERT WordPiece tokenizer is a CheckpointError."""
        try:
            model, norm = data["model"], data.get("normalizer") or {}
            pre = (data.get("pre_tokenizer") or {}).get("type")
            if model.get("type") != "WordPiece" or norm.get("type") != "BertNormalizer" or pre != "BertPreTokenizer":
                raise ValueError(f"a BERT WordPiece tokenizer is needed (WordPiece model, BertNormalizer, "
                                 f"BertPreTokenizer); this one has model {model.get('type')!r}, normalizer "
                                 f"{norm.get('type')!r}, pre-tokenizer {pre!r}")
            specials = [t["content"] for t in data.get("added_tokens", []) if t.get("special")]
            return cls(dict(model["vocab"]), max_length, lowercase=bool(norm.get("lowercase", True)),
                       strip_accents=norm.get("strip_accents"), clean_text=bool(norm.get("clean_text", True)),
                       handle_chinese_chars=bool(norm.get("handle_chinese_chars", True)),
                       continuing_subword_prefix=model.get("continuing_subword_prefix", "##"),
                       max_input_chars_per_word=int(model.get("max_input_chars_per_word", 100)),
                       unk_token=model.get("unk_token", "[UNK]"), special_tokens=specials)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(str(exc)[:300]) from exc

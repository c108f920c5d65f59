"""Golden vectors for the WordPiece tokenizer (docs/bundle-format.md, Text; `kind` "wordpiece").

    python scripts/make_wordpiece_vectors.py

Writes tests/vectors/golden/wordpiece/tokenizer.json (a small WordPiece vocabulary learnt by
mmedge.data.tokenizer.train_wordpiece from scene questions and a few sentences, small enough that
most words split into pieces) and tests/vectors/golden/tokenizer-wordpiece.json (texts, Unicode
and the WordPiece corner cases included, with their subword tokens, ids and masks or the error they
raise). Every case is checked against Hugging Face `tokenizers` loading the same file.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from make_golden_vectors import TEXTS  # noqa: E402  (scripts/ is on sys.path when run as a script)

from mmedge.data.batches import generate  # noqa: E402
from mmedge.data.tokenizer import _SPLIT, PAD, WordTokenizer, train_wordpiece  # noqa: E402
from mmedge.errors import TextError  # noqa: E402
from mmedge.fileio import atomic_write  # noqa: E402

OUT = ROOT / "tests/vectors/golden"
VOCAB_SIZE = 150
SENTENCES = [
    "what is the man holding in his left hand ?", "how many people are standing near the bus ?",
    "is the umbrella open or closed ?", "the left image contains exactly two dogs lying on grass .",
    "a woman riding a bicycle down a crowded street .", "are the players wearing matching uniforms ?",
]
EXTRA_TEXTS = [
    "unbelievable circles", "squares squared square", "redcircle bluesquare", "a" * 100, "a" * 101,
    "circle##", "##", "the ## circle", "holding holder held", "bicycles and umbrellas ?", "x" * 99 + "é",
]


def main() -> None:
    corpus = [s.text for task in ("vqa", "verify") for s in generate(task, 0, "train", range(300), 32)]
    corpus += SENTENCES * 3
    tokenizer = train_wordpiece(corpus, VOCAB_SIZE, max_length=24, min_frequency=2)
    tok_dir = OUT / "wordpiece"
    tok_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(tok_dir / "tokenizer.json", lambda tmp: tokenizer.save(tmp))
    tokenizer = WordTokenizer.load(tok_dir / "tokenizer.json")  # what the runtimes read

    from tokenizers import Tokenizer

    hf = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    cases, checked = [], 0
    for text in TEXTS + EXTRA_TEXTS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ids, mask = tokenizer.encode(text)
            except TextError:
                cases.append({"text": text, "error": "TextError"})
                continue
        tokens = tokenizer.tokenize(text)
        same_split = [p for p, _ in hf.pre_tokenizer.pre_tokenize_str(text.lower())] == _SPLIT.findall(text.lower())
        theirs = [t for t in hf.encode(text).tokens if t != PAD]
        if same_split and tokens[: tokenizer.max_length] != theirs:
            raise SystemExit(f"{text!r}: {tokens} differs from Hugging Face tokenizers' {theirs}")
        checked += same_split
        cases.append({"text": text, "tokens": tokens, "input_ids": ids.astype(int).tolist(),
                      "text_mask": mask.astype(int).tolist()})
    doc = {"format": "mmedge-golden-tokenizer-1", "kind": "wordpiece",
           "tokenizer": (tok_dir / "tokenizer.json").relative_to(ROOT).as_posix(),
           "max_length": tokenizer.max_length, "continuing_subword_prefix": tokenizer.continuing_subword_prefix,
           "max_input_chars_per_word": tokenizer.max_input_chars_per_word, "cases": cases}
    atomic_write(OUT / "tokenizer-wordpiece.json",
                 lambda tmp: tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False)))
    split = sum(any(t.startswith("##") for t in c.get("tokens", [])) for c in cases)
    print(f"wrote {OUT.relative_to(ROOT)}/tokenizer-wordpiece.json: {len(cases)} cases ({split} with subword "
          f"pieces; {checked} checked against Hugging Face tokenizers), vocabulary {len(tokenizer.vocab)}")


if __name__ == "__main__":
    main()

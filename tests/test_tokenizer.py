import json

import pytest

from mmedge.data.tasks import LABELS, make_sample
from mmedge.data.tokenizer import TextTruncatedWarning, WordTokenizer, default_tokenizer
from mmedge.errors import CheckpointError, TextError


def test_generated_text_has_no_unknown_words():
    tok = default_tokenizer()
    for task in LABELS:
        for i in range(300):
            ids, mask = tok.encode(make_sample(task, 0, "train", i).text)
            assert 1 not in ids[: mask.sum()]


def test_save_load_roundtrip(tmp_path):
    tok = default_tokenizer()
    tok.save(tmp_path / "tokenizer.json")
    again = WordTokenizer.load(tmp_path / "tokenizer.json")
    assert again.vocab == tok.vocab and again.max_length == tok.max_length


def test_same_ids_as_hf_tokenizers(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    tok = default_tokenizer()
    tok.save(tmp_path / "tokenizer.json")
    hf = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    texts = ["What COLOR is the circle?", "is there a red   square ?", "zebra!! left,of", "how many 3s?"]
    texts += [make_sample("match", 0, "val", i).text for i in range(20)]
    for text in texts:
        ids, mask = tok.encode(text)
        enc = hf.encode(text)
        assert enc.ids == ids.tolist(), text
        assert enc.attention_mask == mask.tolist(), text


def test_overlong_text_is_truncated_with_a_warning():
    tok = default_tokenizer(max_length=6)
    with pytest.warns(TextTruncatedWarning, match="truncated"):
        ids, mask = tok.encode("is the red circle left of the blue square ?")
    assert mask.sum() == 6 and len(ids) == 6


@pytest.mark.parametrize("text", ["", "   ", "\n"])
def test_empty_text_is_refused(text):
    with pytest.raises(TextError, match="empty"):
        default_tokenizer().encode(text)


def test_non_string_text_is_refused():
    with pytest.raises(TextError):
        default_tokenizer().encode(None)


def test_corrupt_tokenizer_file(tmp_path):
    (tmp_path / "t.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not a valid tokenizer"):
        WordTokenizer.load(tmp_path / "t.json")
    (tmp_path / "t.json").write_text(json.dumps({"model": {"type": "BPE"}}))
    with pytest.raises(CheckpointError):
        WordTokenizer.load(tmp_path / "t.json")


# ------------------------------------------------------------------ WordPiece
def test_wordpiece_learnt_from_text_matches_hf_tokenizers_and_round_trips(tmp_path):
    from tokenizers import Tokenizer

    from mmedge.data.tokenizer import WordPieceTokenizer, train_wordpiece

    texts = ["what is the man holding in his hand ?", "how many umbrellas are open ?",
             "the dogs are holding umbrellas"] * 4
    tok = train_wordpiece(texts, vocab_size=60, max_length=12, min_frequency=1)
    assert tok.vocab["[PAD]"] == 0 and tok.vocab["[UNK]"] == 1 and len(tok.vocab) <= 60
    path = tmp_path / "tokenizer.json"
    tok.save(path)
    loaded = WordTokenizer.load(path)
    assert isinstance(loaded, WordPieceTokenizer) and loaded.vocab == tok.vocab and loaded.max_length == 12
    hf = Tokenizer.from_file(str(path))
    for text in ["umbrellas holding hands", "Open the MANY umbrellas?", "zebra", "the " * 20]:
        ids, mask = loaded.encode(text) if len(text) < 40 else _quiet_encode(loaded, text)
        assert ids.tolist() == hf.encode(text).ids
        assert mask.tolist() == hf.encode(text).attention_mask
    assert any(t.startswith("##") for t in loaded.tokenize("umbrellas holding hands"))


def _quiet_encode(tok, text):
    with pytest.warns(TextTruncatedWarning):
        return tok.encode(text)


def test_wordpiece_golden_cases():
    """tests/vectors/golden/tokenizer-wordpiece.json: what every runtime must reproduce."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    doc = json.loads((root / "tests/vectors/golden/tokenizer-wordpiece.json").read_text())
    tok = WordTokenizer.load(root / doc["tokenizer"])
    assert tok.kind == doc["kind"] == "wordpiece"
    assert sum(any(t.startswith("##") for t in c.get("tokens", [])) for c in doc["cases"]) >= 10
    for case in doc["cases"]:
        if "error" in case:
            with pytest.raises(TextError):
                tok.encode(case["text"])
            continue
        assert tok.tokenize(case["text"]) == case["tokens"]
        with __import__("warnings").catch_warnings():
            __import__("warnings").simplefilter("ignore")
            ids, mask = tok.encode(case["text"])
        assert ids.tolist() == case["input_ids"] and mask.tolist() == case["text_mask"]


def test_wordpiece_rules_by_hand():
    from mmedge.data.tokenizer import WordPieceTokenizer

    vocab = {"[PAD]": 0, "[UNK]": 1, "un": 2, "##believ": 3, "##able": 4, "a": 5, "##a": 6, "?": 7}
    tok = WordPieceTokenizer(vocab, max_length=8, max_input_chars_per_word=12)
    assert tok.tokenize("Unbelievable ?") == ["un", "##believ", "##able", "?"]
    assert tok.tokenize("unbelievably") == ["[UNK]"]          # a part without a match: the whole word
    assert tok.tokenize("a" * 12 + " " + "a" * 13) == ["a"] + ["##a"] * 11 + ["[UNK]"]  # 13 > 12 code points
    ids, mask = tok.encode("un ?")
    assert ids.tolist() == [2, 7, 0, 0, 0, 0, 0, 0] and mask.tolist() == [1, 1, 0, 0, 0, 0, 0, 0]


# ------------------------------------------------------------------ bounded work (issue 31, defect 6)
class _CountingVocab(dict):
    """A vocabulary that counts membership tests: the WordPiece work done."""

    lookups = 0

    def __contains__(self, key):
        type(self).lookups += 1
        return super().__contains__(key)


def _counting_wordpiece(max_length=8):
    from mmedge.data.tokenizer import WordPieceTokenizer

    vocab = _CountingVocab({"[PAD]": 0, "[UNK]": 1, "a": 2, "##a": 3, "aa": 4, "##aa": 5, "?": 6})
    return WordPieceTokenizer(vocab, max_length=max_length, max_input_chars_per_word=100)


@pytest.mark.parametrize("kind", ["word", "wordpiece"])
def test_text_over_the_cap_is_refused_with_a_typed_error(kind):
    from mmedge.data.tokenizer import MAX_TEXT_CHARS

    tok = default_tokenizer() if kind == "word" else _counting_wordpiece()
    assert MAX_TEXT_CHARS == 65_536
    with pytest.raises(TextError, match=r"65,537 characters.*65,536"):
        tok.encode("a" * (MAX_TEXT_CHARS + 1))
    with pytest.raises(TextError, match="65,536"):
        tok.tokenize("a " * MAX_TEXT_CHARS)
    with pytest.raises(TextError, match=r"1,000,000 characters"):
        tok.encode("what is this ? " * 66_666 + "abcdefghij")
    # code points are counted, as every runtime counts them (an astral character is one)
    tok.encode("\U0001d4b6" * MAX_TEXT_CHARS)


def test_long_text_under_the_cap_stops_after_max_length_tokens():
    """A 65,536-character text: encode looks at no more than the first max_length + 1 tokens, each
    word costs at most (its length) x (the longest entry) lookups, and the ids equal the first
    max_length tokens of the full (untruncated) tokenization."""
    import time
    import warnings

    from mmedge.data.tokenizer import MAX_TEXT_CHARS

    tok = _counting_wordpiece(max_length=8)
    text = ("a" * 99 + " ") * (MAX_TEXT_CHARS // 100) + "a" * (MAX_TEXT_CHARS % 100)
    assert len(text) == MAX_TEXT_CHARS
    _CountingVocab.lookups = 0
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(TextTruncatedWarning, match="more than the model's 8 tokens"):
            tok.encode(text)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ids, mask = tok.encode(text)
    assert time.perf_counter() - start < 1.0
    longest = 5  # "[PAD]": no slice of more code points can match
    assert _CountingVocab.lookups <= 2 * 99 * longest  # two encodes, each splitting the first 99-character word only
    full = tok.tokenize(text)  # the untruncated algorithm, linear in the text
    assert len(full) == 655 * 50 + 18 and full[:3] == ["aa", "##aa", "##aa"]
    assert ids.tolist() == [tok.vocab[t] for t in full[:8]] and mask.tolist() == [1] * 8
    _CountingVocab.lookups = 0
    tok.tokenize("a" * 100)
    assert _CountingVocab.lookups <= 100 * longest  # O(n x longest entry), not O(n^2)
    # a long text whose tokens all fit: every token, and the same as tokenize
    short = _counting_wordpiece(max_length=200)
    ids, mask = short.encode("a" * 60 + " ?")
    assert ids.tolist()[:32] == [4] + [5] * 29 + [6, 0] and mask.sum() == 31

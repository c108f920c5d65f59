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

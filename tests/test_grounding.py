"""Referring phrases -> the grid cell of the object they name, and the loss that uses it."""

import json

import numpy as np
import pytest
import torch

from conftest import TINY
from mmedge.data.batches import build_batch
from mmedge.data.grounding import IGNORE, SIZE_CLASSES, grounding_targets, referent_spans
from mmedge.data.scenes import SceneObject
from mmedge.data.tasks import make_sample
from mmedge.data.tokenizer import default_tokenizer
from mmedge.errors import ConfigError
from mmedge.train.config import TrainConfig
from mmedge.train.trainer import Trainer

RED_CIRCLE = SceneObject("red", "circle", "small", 10, 80)
BLUE_SQUARE = SceneObject("blue", "square", "large", 70, 20)
BIG_RED_CIRCLE = SceneObject("red", "circle", "large", 50, 50)


def spans(text, objects):
    return [(a, b, o) for a, b, o in referent_spans(text.split(), objects)]


def test_a_phrase_naming_one_object_points_at_it():
    assert spans("is the red circle left of the blue square ?", (RED_CIRCLE, BLUE_SQUARE)) == [
        (2, 3, RED_CIRCLE), (7, 8, BLUE_SQUARE)]
    assert spans("what shape is the blue object ?", (RED_CIRCLE, BLUE_SQUARE)) == [(4, 5, BLUE_SQUARE)]


def test_ambiguous_absent_and_plural_phrases_point_nowhere():
    two_reds = (RED_CIRCLE, BIG_RED_CIRCLE)
    assert spans("is there a red circle ?", two_reds) == []            # two objects fit
    assert spans("is there a green circle ?", two_reds) == []          # none fits
    assert spans("how many circles are there ?", two_reds) == []       # plural: a count, not a referent
    assert spans("what color is the object ?", (RED_CIRCLE,)) == []    # bare "object" names nothing
    assert spans("what color is the large circle ?", two_reds) == [(4, 5, BIG_RED_CIRCLE)]  # size decides


def test_targets_are_grid_cells_on_every_word_of_the_phrase():
    words = "is the red circle left of the blue square ?".split()
    t = grounding_targets(words, (RED_CIRCLE, BLUE_SQUARE), image_size=96, bins=12, max_length=24)
    assert t.shape == (24, 3) and t.dtype == np.int64
    small, large = SIZE_CLASSES.index("small"), SIZE_CLASSES.index("large")
    assert t[2].tolist() == t[3].tolist() == [10 * 12 // 96, 80 * 12 // 96, small]
    assert t[7].tolist() == t[8].tolist() == [70 * 12 // 96, 20 * 12 // 96, large]
    assert (t[[0, 1, 4, 5, 6, 9]] == IGNORE).all() and (t[10:] == IGNORE).all()


def test_batches_carry_targets_that_agree_with_the_scene():
    tok = default_tokenizer(24)
    samples = [make_sample("vqa", 0, "val", i) for i in range(64)]
    batch = build_batch(samples, tok, 96, ground_bins=6)
    assert batch.grounding.shape == (64, 24, 3)
    spatial = [i for i, s in enumerate(samples) if s.qtype == "spatial"]
    assert spatial, "the first 64 validation samples hold a spatial question"
    for i in spatial:  # both referents of a spatial question are unique, so both are grounded
        cells = {tuple(c) for c in batch.grounding[i] if c[0] != IGNORE}
        want = {(o.cx * 6 // 96, o.cy * 6 // 96, SIZE_CLASSES.index(o.size)) for o in samples[i].objects}
        assert len(cells) >= 1 and cells <= want


def test_grounding_loss_is_logged_and_learned(tmp_path):
    cfg = TrainConfig(**{**TINY, "steps": 40, "eval_every": 40, "checkpoint_every": 40, "lr": 3e-3,
                         "ground_loss_weight": 1.0})
    Trainer(cfg, tmp_path, progress=False).fit()
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    ground = [r["ground_loss"] for r in rows if r["kind"] == "train"]
    assert ground[0] > 0 and min(ground[-3:]) < ground[0]


def test_size_grounding_adds_size_outputs_and_their_loss(tmp_path):
    from mmedge.train.losses import grounding_loss
    from mmedge.train.trainer import build_model

    base = TrainConfig(**{**TINY, "ground_loss_weight": 1.0})
    sized = TrainConfig(**{**TINY, "ground_loss_weight": 1.0, "ground_size": True})
    tok = default_tokenizer(24)
    plain, with_size = build_model(base, tok), build_model(sized, tok)
    bins = base.ground_bins
    assert plain.text_grounder.out_features == 2 * bins
    assert with_size.text_grounder.out_features == 2 * bins + len(SIZE_CLASSES)
    batch = build_batch([make_sample("vqa", 0, "train", i, 48) for i in range(16)], tok, 48, ground_bins=bins)
    ids, mask = torch.from_numpy(batch.input_ids), torch.from_numpy(batch.text_mask)
    targets = torch.from_numpy(batch.grounding)
    with torch.no_grad():
        with_size.text_grounder.weight[: 2 * bins] = plain.text_grounder.weight
        with_size.text_grounder.bias[: 2 * bins] = plain.text_grounder.bias
        out = plain(torch.from_numpy(batch.pixels), ids, mask)
        a = grounding_loss(out, plain.text_grounder, targets, 24, 1, bins)
        b = grounding_loss(out, with_size.text_grounder, targets, 24, 1, bins)
    assert b > a  # the same position loss plus a positive size cross-entropy


def test_ground_stage_must_exist(tmp_path):
    cfg = TrainConfig(**{**TINY, "ground_stage": 3})  # the tiny model has 3 stages: 0, 1, 2
    with pytest.raises(ConfigError, match="ground_stage"):
        Trainer(cfg, tmp_path, progress=False)
    with pytest.raises(ConfigError, match="ground_loss_weight"):
        TrainConfig(**{**TINY, "ground_bins": 0})


def test_the_grounding_head_is_training_only(tiny_model_dir):
    from mmedge.models.checkpoint import from_pretrained

    model, tok = from_pretrained(tiny_model_dir)
    assert model.text_grounder is not None  # trained with it (TINY sets ground_loss_weight) ...
    ids, mask = (torch.from_numpy(a)[None] for a in tok.encode("is the red circle left of the blue square ?"))
    pixels = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    before = model(pixels, ids, mask)
    with torch.no_grad():
        model.text_grounder.weight.normal_()
    after = model(pixels, ids, mask)
    for a, b in zip(before.logits + before.confidence, after.logits + after.confidence):
        assert torch.equal(a, b)  # ... and nothing the model computes at inference depends on it


# ------------------------------------------------------------------ a real dataset's refs (JSON Lines)
def _refs_dataset(root, records, size=(80, 40)):
    """ROOT/train.jsonl and val.jsonl with `records` (dicts without "image"), one size x size image each."""
    from PIL import Image

    (root / "photos").mkdir(parents=True)
    rows = []
    for i, rec in enumerate(records):
        Image.new("RGB", size, (200, 100, 50)).save(root / "photos" / f"{i}.png")
        rows.append(json.dumps({"image": f"photos/{i}.png", **rec}))
    for split in ("train", "val"):
        (root / f"{split}.jsonl").write_text("\n".join(rows) + "\n")
    return root


def test_refs_point_each_token_of_their_phrase_at_the_box_centre_in_the_padded_square(tmp_path):
    """An 80x40 image is padded to 80x80 (20 px above and below), so a box centred at (60, 10) of the image
    lies at (0.75, 0.375) of the square the model sees: cell (9, 4) of 12. WordPiece splits a word into
    several tokens; every token of the phrase gets the cell, and a repeated phrase names its next
    occurrence."""
    from mmedge.data.provider import load_real

    root = _refs_dataset(tmp_path / "d", [
        {"question": "is the bluebird left of the bluebird ?", "answer": "yes",
         "refs": [{"phrase": "Bluebird", "box": [50, 0, 70, 20]}, {"phrase": "bluebird", "box": [0, 20, 10, 40]}]},
        {"question": "what colour is the sky ?", "answer": "blue"}])
    data = load_real(f"jsonl:{root}", "vqa", 48, 40, progress=False, text_vocab_size=16)
    samples = data.samples(data.train, [0, 1])
    assert samples[0].pointers[0].x == pytest.approx(0.75) and samples[0].pointers[0].y == pytest.approx(0.375)
    assert samples[1].pointers == ()
    batch = build_batch(samples, data.tokenizer, 48, ground_bins=12)
    pieces = data.tokenizer.word_tokens(samples[0].text)
    first = sum(map(len, pieces[:2]))  # "is", "the" -> the first "bluebird" starts here
    n = len(pieces[2])
    assert n > 1, "the tiny WordPiece vocabulary should split 'bluebird'"
    assert batch.grounding[0, first: first + n].tolist() == [[9, 4, IGNORE]] * n
    second = sum(map(len, pieces[:6]))  # "is the bluebird left of the"
    assert batch.grounding[0, second: second + n].tolist() == [[0, 7, IGNORE]] * n  # (5, 50) / 80 of the square: 7.5 -> row 7
    assert (batch.grounding[0, :, :2] >= 0).all(axis=1).sum() == 2 * n  # nothing else points
    assert (batch.grounding[1] == IGNORE).all()


@pytest.mark.parametrize("refs, message", [
    ({"phrase": "car"}, "field 'refs' must be a list"),
    ([{"phrase": "bird", "box": [0, 0, 5, 5]}], "'bird' is not a run of words of the text"),
    ([{"phrase": "the car", "box": [0, 0, 5]}], r"refs\[0\].box must be a list of four numbers"),
    ([{"phrase": "car", "box": [5, 0, 5, 5]}], "0 <= x0 < x1"),
    ([{"phrase": "car", "box": [0, 0, 5, 50]}], r"leaves the 80x40 image"),
    ([{"box": [0, 0, 5, 5]}], r"refs\[0\]: missing field 'phrase'"),
])
def test_bad_refs_are_refused_naming_the_record(tmp_path, refs, message):
    from mmedge.data.sources import open_dataset, parse_data_spec
    from mmedge.errors import DatasetError

    root = _refs_dataset(tmp_path / "d", [{"question": "where is the car ?", "answer": "left", "refs": refs}])
    with pytest.raises(DatasetError, match=message) as err:
        open_dataset(parse_data_spec(f"jsonl:{root}"), "vqa", "train", 48, progress=False)
    assert "train.jsonl:1" in str(err.value)


def test_ground_loss_weight_stays_on_for_data_with_refs_and_is_refused_without(tmp_path, tiny_config, capsys):
    """for_data keeps ground_loss_weight for JSON Lines data whose records have refs; training it on data
    without refs is refused with what to do; through the CLI, data with refs trains the grounding head and
    says nothing about it."""
    from mmedge.cli import main

    no_refs = _refs_dataset(tmp_path / "plain", [{"question": "what colour is the car ?", "answer": "red"}] * 4)
    cfg, off = TrainConfig(**{**TINY, "token_loss_weight": 0.0}).for_data(f"jsonl:{no_refs}", grounded=True)
    assert off == [] and cfg.ground_loss_weight == 0.5
    assert TrainConfig(**TINY).for_data("gqa:/d", grounded=True)[0].ground_loss_weight == 0.0  # no refs in GQA here
    with pytest.raises(ConfigError, match="no training record of jsonl:.* has refs .* set ground_loss_weight to 0"):
        Trainer(cfg, tmp_path / "run", progress=False)
    grounded = _refs_dataset(tmp_path / "refs", [
        {"question": "what colour is the car ?", "answer": "red", "refs": [{"phrase": "the car", "box": [0, 0, 20, 20]}]},
        {"question": "what colour is the car ?", "answer": "blue"}] * 2)
    assert main(["train", "--config", str(tiny_config), "--data", f"jsonl:{grounded}", "--steps", "2",
                 "--out", str(tmp_path / "run2"), "--no-progress"]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert notes == ["note: --data jsonl: switched off the scenes-only option(s) token_loss_weight (was 0.5): "
                     "they need the generated scenes"]
    assert json.loads((tmp_path / "run2" / "train_config.json").read_text())["ground_loss_weight"] == 0.5
    rows = [json.loads(r) for r in (tmp_path / "run2" / "metrics.jsonl").read_text().splitlines()]
    ground = [r["ground_loss"] for r in rows if r["kind"] == "train"]
    assert ground and all(g > 0 for g in ground)


def test_a_phrase_past_the_models_text_length_points_nowhere():
    """Only the tokens the model reads can point: the text is split no further than max_length tokens."""
    from mmedge.data.grounding import Pointer, phrase_targets
    from mmedge.data.tokenizer import WordTokenizer

    text = "is the red car left of the blue car ?"
    tok = WordTokenizer.from_words(text.split(), max_length=4)
    far = phrase_targets(tok, text, (Pointer(("blue", "car"), 0.5, 0.5),), 12, 4)
    assert (far == IGNORE).all()
    near = phrase_targets(tok, text, (Pointer(("red", "car"), 0.5, 0.25),), 12, 4)
    assert near[:, :2].tolist() == [[IGNORE, IGNORE], [IGNORE, IGNORE], [6, 3], [6, 3]]

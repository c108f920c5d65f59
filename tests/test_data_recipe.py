"""The recipe for --data: budgets in epochs and minutes, per-epoch reshuffling, random shifts, and
starting from a trained model with a vocabulary grown by the data's words."""

import json
import math
import shutil

import numpy as np
import pytest
import torch

from conftest import TINY
from dataset_fixtures import make_jsonl
from mmedge.errors import ConfigError
from mmedge.train.augment import random_shift
from mmedge.train.config import SCENES_ONLY, TrainConfig
from mmedge.train.trainer import Trainer, epoch_order

REAL = {**TINY, **SCENES_ONLY, "eval_samples": 8, "text_vocab": "word"}


@pytest.fixture(scope="module")
def jsonl_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("jsonl")
    make_jsonl(root, 20, "train")
    make_jsonl(root, 8, "val")
    return root


def rows(out, kind):
    return [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


def test_random_shift_moves_whole_images_reproducibly():
    img = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    a = random_shift(img, 2, torch.Generator().manual_seed(0))
    b = random_shift(img, 2, torch.Generator().manual_seed(0))
    assert a.shape == img.shape and torch.equal(a, b)
    assert not torch.equal(a, random_shift(img, 2, torch.Generator().manual_seed(1)))
    for i in range(2):  # each output is the input translated: some window of the centre matches exactly
        centre = a[i, :, 2:6, 2:6]
        assert any(torch.equal(centre, img[i, :, y:y + 4, x:x + 4]) for y in range(5) for x in range(5))
    assert torch.equal(random_shift(img, 0, torch.Generator()), img)


def test_each_epoch_is_a_new_permutation():
    records = np.arange(10, 30)
    first, second = epoch_order(records, 0, 0), epoch_order(records, 0, 1)
    assert sorted(first) == sorted(second) == list(records)
    assert not np.array_equal(first, second)
    assert np.array_equal(first, epoch_order(records, 0, 0))


def test_budget_options_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="at most one budget"):
        TrainConfig(epochs=1, minutes=1)
    with pytest.raises(ConfigError, match="minutes must be a positive number"):
        TrainConfig(minutes=0)
    with pytest.raises(ConfigError, match="augment_shift moves the images"):
        TrainConfig(augment_shift=2, token_loss_weight=0.5)
    with pytest.raises(ConfigError, match="generated scenes have no end"):
        Trainer(TrainConfig(**{**TINY, "epochs": 1}), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_epochs_set_the_steps_and_every_record_is_seen_once_per_epoch(jsonl_root, tmp_path):
    cfg = TrainConfig(**{**REAL, "epochs": 2, "steps": 1000, "data": f"jsonl:{jsonl_root}", "log_every": 1,
                         "unpruned_share": 0.5})
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    n = len(trainer.order)
    assert trainer.total_steps == math.ceil(2 * n / cfg.batch_size)
    seen = trainer._records_at(np.arange(2 * n))
    assert sorted(seen[:n]) == sorted(seen[n:]) == sorted(trainer.order)  # each epoch: every record once
    assert not np.array_equal(seen[:n], seen[n:])
    result = trainer.fit()
    assert result.steps == trainer.total_steps == 5
    # the first half of the steps at keep 1 only, then the keep ratios cycled (step 3 -> 1.0, step 4 -> 0.5)
    assert [r["keep_ratio"] for r in rows(tmp_path / "run", "train")] == [1.0, 1.0, 1.0, 1.0, 0.5]


def test_a_minutes_budget_stops_when_the_time_is_spent_and_decays_over_it(jsonl_root, tmp_path):
    cfg = TrainConfig(**{**REAL, "minutes": 0.25, "steps": 10_000, "augment_shift": 2, "eval_every": 10_000,
                         "checkpoint_every": 10_000, "data": f"jsonl:{jsonl_root}"})
    out = tmp_path / "run"
    result = Trainer(cfg, out, progress=False).fit()
    budget = rows(out, "budget")
    assert len(budget) == 1 and budget[0]["step"] == result.steps and budget[0]["capped_by_steps"] is False
    assert 15 <= budget[0]["wall_s"] < 15 + 30  # stops after the first step past the 15 s (plus its validation)
    assert [r["step"] for r in rows(out, "val")] == [result.steps]  # validated once, at the end
    lrs = [r["lr"] for r in rows(out, "train")]
    assert lrs[-1] < 0.5 * cfg.lr and max(lrs) > 0.8 * cfg.lr  # warmed up, then decayed over the time
    assert (out / "checkpoint" / "trainer_state.json").is_file() and result.final_val_accuracy
    # the step count still caps a minutes budget
    capped = TrainConfig(**{**cfg.to_dict(), "minutes": 60.0, "steps": 6})
    assert Trainer(capped, tmp_path / "capped", progress=False).fit().steps == 6
    assert rows(tmp_path / "capped", "budget")[0]["capped_by_steps"] is True


def test_lr_follows_the_time_spent_with_a_minutes_budget():
    from mmedge.train.trainer import lr_factor

    cfg = TrainConfig(warmup_steps=10, min_lr_ratio=0.1, minutes=1)
    assert lr_factor(5, cfg, progress=0.9) == pytest.approx(0.6)  # warm-up counts steps
    assert lr_factor(50, cfg, progress=0.0) == pytest.approx(1.0)
    assert lr_factor(50, cfg, progress=0.5) == pytest.approx(0.55)
    assert lr_factor(50, cfg, progress=1.5) == pytest.approx(0.1)


def test_starting_from_a_word_model_grows_its_vocabulary_and_keeps_known_rows(jsonl_root, tmp_path):
    from mmedge.data.provider import extend_words
    from mmedge.data.tokenizer import WordTokenizer
    from mmedge.models.checkpoint import from_pretrained

    base = WordTokenizer.from_words(["what", "colour"], 24)
    grown = extend_words(base, ["colour", "zebra", "what", "stripes"])
    assert grown.vocab == {**base.vocab, "zebra": 4, "stripes": 5}
    # a model trained on the scenes' words, then trained on data with other words
    source = tmp_path / "source"
    Trainer(TrainConfig(**{**TINY, "steps": 2}), source, progress=False).fit()
    lines = (jsonl_root / "train.jsonl").read_text().splitlines()
    rewritten = [json.dumps({**json.loads(x), "question": json.loads(x)["question"] + " zebra"}) for x in lines]
    data = tmp_path / "words"
    data.mkdir()
    (data / "train.jsonl").write_text("\n".join(rewritten) + "\n")
    (data / "val.jsonl").write_text((jsonl_root / "val.jsonl").read_text())
    shutil.copytree(jsonl_root / "photos", data / "photos")  # (links out of ROOT are refused)
    cfg = TrainConfig(**{**REAL, "steps": 1, "data": f"jsonl:{data}"})
    trainer = Trainer(cfg, tmp_path / "run", init_from=source, progress=False)
    old, _ = from_pretrained(source)
    n_old = old.token_embed.weight.shape[0]
    assert "zebra" in trainer.tokenizer.vocab and trainer.tokenizer.vocab["zebra"] >= n_old
    assert torch.equal(trainer.model.token_embed.weight[:n_old], old.token_embed.weight)
    # resumed without --init-from, the run keeps the vocabulary it started with (its checkpoint's)
    trainer.fit()
    resumed = Trainer(cfg, tmp_path / "run", resume=True, progress=False)
    assert resumed.tokenizer.vocab == trainer.tokenizer.vocab and resumed.step == 1


def test_the_cli_takes_one_budget_and_uses_the_data_recipe_without_a_config(jsonl_root, tmp_path, capsys):
    from mmedge.cli import main

    with pytest.raises(SystemExit) as info:
        main(["train", "--steps", "3", "--minutes", "1", "--out", str(tmp_path / "a")])
    assert info.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    assert main(["train", "--task", "caption", "--minutes", "1", "--out", str(tmp_path / "c")]) == 2
    assert "captioner counts steps" in capsys.readouterr().err
    recipe = TrainConfig.data_recipe()
    assert recipe.minutes and recipe.data == "scenes"  # a budget in minutes, no dataset of its own
    # nothing scenes-only but the grounding loss, which data with refs keeps (tests/test_grounding.py)
    assert recipe.ground_loss_weight > 0
    assert all(getattr(recipe, k) == v for k, v in SCENES_ONLY.items() if k != "ground_loss_weight")


def test_the_data_recipe_starts_from_the_shipped_model_unless_told_not_to(jsonl_root, tmp_path, capsys):
    from mmedge.cli import main
    from mmedge.models.checkpoint import from_pretrained
    from mmedge.train.config import SHIPPED_MODELS

    shipped, _ = from_pretrained(SHIPPED_MODELS / "vqa-default")
    gaps = {}
    for start in ("default", "none"):
        out = tmp_path / start
        argv = ["train", "--data", f"jsonl:{jsonl_root}", "--steps", "1", "--out", str(out), "--no-progress"]
        assert main(argv + ([] if start == "default" else ["--init-from", "none"])) == 0
        said = capsys.readouterr().out
        assert ("note: starting from the shipped model" in said) == (start == "default")
        assert "no training record has refs, so ground_loss_weight (was 0.5) is off" in said  # the fixture has none
        model, _ = from_pretrained(out)
        gaps[start] = max((a - b).abs().max().item() for a, b in zip(model.blocks.parameters(), shipped.blocks.parameters()))
    assert gaps["default"] < 1e-3 < gaps["none"]  # one warm-up step from the shipped weights, or random ones
    recipe = TrainConfig.data_recipe()
    assert recipe.shipped_start() == SHIPPED_MODELS / "vqa-default"
    other = TrainConfig(**{**recipe.to_dict(), "model": {**recipe.model, "dim": 64}})
    assert other.shipped_start() is None and TrainConfig(**{**recipe.to_dict(), "task": "verify"}).shipped_start() is None

"""Real-data sources on fixtures in each benchmark's official layout (tests/dataset_fixtures.py),
their metrics on hand-computed cases, the image cache, and the errors bad data gets."""

from __future__ import annotations

import json

import numpy as np
import pytest

import dataset_fixtures as fx
from mmedge.data.sources import answer_vocabulary, open_dataset, parse_data_spec, read_records
from mmedge.errors import DatasetError
from mmedge.evaluation import official


# ------------------------------------------------------------------ metrics on hand-computed cases
def test_vqa_answer_normalisation_follows_the_official_script():
    assert official.normalize_answer("Two dogs!") == "2 dogs"
    assert official.normalize_answer("dont know") == "don't know"
    assert official.normalize_answer("the 1,000.") == "1000"  # comma between digits: one number
    assert official.normalize_answer("a man") == "man"
    assert official.normalize_answer("yes/no") == "yes no"  # no space around '/': spaced


def test_vqa_soft_accuracy_with_disagreeing_annotators():
    # 2 of 10 said "yes": leaving out a "yes" (2 ways) leaves 1 match -> 1/3; a "no" (8 ways) leaves 2 -> 2/3
    assert official.vqa_soft_accuracy("yes", ["yes"] * 2 + ["no"] * 8) == pytest.approx((2 * 1 / 3 + 8 * 2 / 3) / 10)
    assert official.vqa_soft_accuracy("no", ["yes"] * 2 + ["no"] * 8) == pytest.approx(1.0)
    # normalisation applies when annotators disagree: "two" and "2" are the same answer
    assert official.vqa_soft_accuracy("2", fx.DISAGREE) == pytest.approx(1.0)
    assert official.vqa_soft_accuracy("3", fx.DISAGREE) == pytest.approx((2 * 1 / 3 + 8 * 2 / 3) / 10)
    # unanimous answers are compared verbatim (the official script normalises only on disagreement)
    assert official.vqa_soft_accuracy("Two", ["two"] * 10) == 0.0
    r = official.vqa_accuracy(["2", "red"], [fx.DISAGREE, ["blue"] * 10], ["number", "other"])
    assert r["accuracy"] == pytest.approx(0.5) and r["per_answer_type"]["number"]["accuracy"] == 1.0


def test_nlvr2_consistency_and_per_type_accuracy():
    correct = [True, True, True, False, False, True]
    groups = ["s1", "s1", "s2", "s2", "s3", "s4"]
    assert official.nlvr2_consistency(correct, groups) == pytest.approx(2 / 4)  # s1, s4 all right
    r = official.accuracy_per_type([True, False, True], ["query", "query", "verify"])
    assert r["per_type"]["query"]["accuracy"] == 0.5 and r["per_type"]["verify"]["n"] == 1


def test_retrieval_recall_both_ways():
    # 3 images; texts 0, 1 describe image 0, text 2 image 1, text 3 image 2
    scores = np.array([[0.9, 0.1, 0.0],    # text 0: image 0 first
                       [0.2, 0.8, 0.1],    # text 1: image 0 second
                       [0.1, 0.2, 0.7],    # text 2: image 1 second
                       [0.0, 0.1, 0.9]])   # text 3: image 2 first
    r = official.retrieval_recall(scores, np.array([0, 0, 1, 2]), ks=(1, 2))
    assert r["text_to_image_R@1"] == pytest.approx(2 / 4) and r["text_to_image_R@2"] == pytest.approx(1.0)
    # image 0: best text is 0 (one of its own) -> hit@1; image 1: texts by score 1, 2 -> own at rank 2;
    # image 2: texts 3 (0.9), 2 (0.7) -> hit@1
    assert r["image_to_text_R@1"] == pytest.approx(2 / 3) and r["image_to_text_R@2"] == pytest.approx(1.0)


# ------------------------------------------------------------------ loaders on official layouts
def test_vqa2_loads_with_ten_answers_and_a_vocabulary(tmp_path):
    root = fx.make_vqa2(tmp_path / "vqa2", n=24)
    records = read_records(parse_data_spec(f"vqa2:{root}"), "vqa", "train")
    assert len(records) == 24 and all(len(r.answers) == 10 for r in records)
    assert records[0].answer == "2" and records[0].images[0].name == "COCO_train2014_000000001000.jpg"
    vocab = answer_vocabulary(records, 5)
    assert len(vocab) == 5 and vocab == sorted(vocab, key=lambda a: (-sum(r.answer == a for r in records), a))


def test_gqa_nlvr2_captions_and_user_data_load(tmp_path):
    gqa = read_records(parse_data_spec(f"gqa:{fx.make_gqa(tmp_path / 'gqa')}"), "vqa", "val")
    assert len(gqa) == 16 and {r.qtype for r in gqa} <= {"query", "verify"} and "semantic" in gqa[0].extra
    nl = read_records(parse_data_spec(f"nlvr2:{fx.make_nlvr2(tmp_path / 'nlvr2')}"), "verify", "dev")
    assert len(nl) == 12 and len(nl[0].images) == 2 and nl[0].group == nl[1].group == "dev-0-0"
    train = read_records(parse_data_spec(f"nlvr2:{fx.make_nlvr2(tmp_path / 'nlvr2t', split='train')}"), "verify", "train")
    assert train[0].images[0].parent.name == "0" and all(p.is_file() for r in train for p in r.images)
    coco = read_records(parse_data_spec(f"coco:{fx.make_coco(tmp_path / 'coco')}"), "match", "val")
    assert len(coco) == 16 and coco[0].group == coco[1].group
    cc = read_records(parse_data_spec(f"cc:{fx.make_cc(tmp_path / 'cc')}"), "pretrain", "train")
    assert len(cc) == 8 and cc[0].images[0].is_file()
    own = read_records(parse_data_spec(f"jsonl:{fx.make_jsonl(tmp_path / 'own')}"), "vqa", "train")
    assert len(own) == 12 and own[0].images[0].is_file()


def test_side_by_side_pairs_and_the_image_cache(tmp_path, monkeypatch):
    from mmedge.data.sources import images

    spec = parse_data_spec(f"nlvr2:{fx.make_nlvr2(tmp_path / 'nlvr2', sets=2)}")
    data = open_dataset(spec, "verify", "dev", 48, cache_dir=tmp_path / "cache", progress=False)
    img = data.image(0)
    assert img.shape == (48, 48, 3) and img.dtype == np.uint8
    # the left image fills the left half: its centre column differs from the right image's
    assert not np.array_equal(img[12:36, :24], img[12:36, 24:])
    monkeypatch.setattr(images, "_decode", lambda *a: pytest.fail("decoded again: the cache was not reused"))
    again = open_dataset(spec, "verify", "dev", 48, cache_dir=tmp_path / "cache", progress=False)
    assert np.array_equal(again.image(0), img)


def test_missing_and_truncated_images_are_skipped_with_a_summary(tmp_path, capsys):
    root = fx.make_vqa2(tmp_path / "vqa2", n=10)
    (root / "train2014" / "COCO_train2014_000000001003.jpg").unlink()
    broken = root / "train2014" / "COCO_train2014_000000001005.jpg"
    broken.write_bytes(broken.read_bytes()[:200])
    data = open_dataset(parse_data_spec(f"vqa2:{root}"), "vqa", "train", 48, cache_dir=tmp_path / "c", progress=False)
    assert len(data) == 8
    out = capsys.readouterr().out
    assert "1 missing" in out and "1 unreadable" in out and "2 of 10 records dropped" in out


# ------------------------------------------------------------------ errors that name the file and line
def test_bad_annotations_name_the_file_and_line(tmp_path):
    root = fx.make_nlvr2(tmp_path / "nlvr2", sets=2)
    lines = (root / "dev.json").read_text().splitlines()
    lines[2] = json.dumps({"identifier": "dev-1-0-0", "sentence": 3, "label": "True"})
    (root / "dev.json").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"dev\.json:3: field 'sentence' must be str"):
        read_records(parse_data_spec(f"nlvr2:{root}"), "verify", "dev")
    lines[2] = "{not json"
    (root / "dev.json").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"dev\.json:3: not valid JSON"):
        read_records(parse_data_spec(f"nlvr2:{root}"), "verify", "dev")

    coco = fx.make_coco(tmp_path / "coco", n=3)
    path = coco / "annotations" / "captions_val2017.json"
    data = json.loads(path.read_text())
    data["annotations"][4]["image_id"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=r"captions_val2017\.json#annotations\[4\]: image_id 99 is not listed"):
        read_records(parse_data_spec(f"coco:{coco}"), "match", "val")

    vqa = fx.make_vqa2(tmp_path / "vqa2", n=3)
    (vqa / "v2_mscoco_train2014_annotations.json").unlink()
    with pytest.raises(DatasetError, match="annotation file not found: .*v2_mscoco_train2014_annotations.json"):
        read_records(parse_data_spec(f"vqa2:{vqa}"), "vqa", "train")


def test_data_spec_and_user_data_errors(tmp_path):
    with pytest.raises(DatasetError, match="NAME:ROOT"):
        parse_data_spec("imagenet:/x")
    with pytest.raises(DatasetError, match="not a folder"):
        parse_data_spec(f"vqa2:{tmp_path / 'nowhere'}")
    assert parse_data_spec("scenes").is_scenes
    root = fx.make_jsonl(tmp_path / "own", n=2)
    (root / "train.jsonl").write_text(json.dumps({"image": "../secret.png", "question": "q", "answer": "a"}) + "\n")
    with pytest.raises(DatasetError, match=r"train\.jsonl:1: image '\.\./secret\.png' must be a path relative"):
        read_records(parse_data_spec(f"jsonl:{root}"), "vqa", "train")
    with pytest.raises(DatasetError, match="serves task"):
        read_records(parse_data_spec(f"jsonl:{root}"), "pretrain", "train")


# ------------------------------------------------------------------ training and evaluation on them
TINY = {"dim": 32, "depth": 2, "num_heads": 2, "image_size": 48, "patch_size": 8, "max_text_len": 24,
        "keep_ratios": [1.0, 0.5]}


@pytest.mark.parametrize("name, task, make", [("vqa2", "vqa", fx.make_vqa2), ("nlvr2", "verify", fx.make_nlvr2),
                                              ("jsonl", "vqa", fx.make_jsonl)])
def test_train_a_few_steps_on_each_format(name, task, make, tmp_path):
    from mmedge.models.checkpoint import from_pretrained
    from mmedge.train.config import TrainConfig
    from mmedge.train.trainer import Trainer

    root = make(tmp_path / name, split="train")
    make(tmp_path / name, split="dev" if name == "nlvr2" else "val")
    cfg = TrainConfig(task=task, data=f"{name}:{root}", steps=3, batch_size=4, warmup_steps=1, eval_every=3,
                      eval_samples=8, checkpoint_every=3, log_every=1, threads=1, answer_vocab_size=6, model=TINY)
    result = Trainer(cfg, tmp_path / "run", progress=False).fit()
    assert len(result.final_val_accuracy) == 2 and all(0 <= a <= 1 for a in result.final_val_accuracy)
    model, tok = from_pretrained(tmp_path / "run")
    labels = model.config.labels
    assert labels == (["false", "true"] if task == "verify" else labels) and (task == "verify" or len(labels) == 6)
    words = set(tok.vocab)
    assert {"what", "color"} & words or {"there", "is"} & words  # the vocabulary came from the training text


def test_eval_cli_reports_the_official_metrics(tmp_path, capsys):
    from mmedge.cli import main
    from mmedge.train.config import TrainConfig
    from mmedge.train.trainer import Trainer

    root = fx.make_nlvr2(tmp_path / "nlvr2", split="train")
    fx.make_nlvr2(tmp_path / "nlvr2", split="dev")
    cfg = TrainConfig(task="verify", data=f"nlvr2:{root}", steps=2, batch_size=4, warmup_steps=1, eval_every=2,
                      eval_samples=8, checkpoint_every=2, log_every=1, threads=1, model=TINY)
    Trainer(cfg, tmp_path / "run", progress=False).fit()
    assert main(["eval", "--model", str(tmp_path / "run"), "--data", f"nlvr2:{root}", "--limit", "12",
                 "--json", str(tmp_path / "r.json"), "--no-progress"]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["split"] == "dev" and result["samples"] == 12
    m = result["keep_ratios"]["1"]["per_exit"][-1]
    assert 0 <= m["consistency"] <= m["accuracy"] <= 1  # two pairs per sentence: consistency cannot exceed accuracy
    assert "consistency" in capsys.readouterr().out


def test_match_on_captions_and_retrieval_recall(tmp_path):
    from mmedge.evaluation.real import evaluate_real
    from mmedge.models.checkpoint import from_pretrained
    from mmedge.train.config import TrainConfig
    from mmedge.train.trainer import Trainer

    root = fx.make_coco(tmp_path / "coco", n=6, split="train")
    fx.make_coco(tmp_path / "coco", n=6, split="val")
    cfg = TrainConfig(task="match", data=f"coco:{root}", steps=2, batch_size=4, warmup_steps=1, eval_every=2,
                      eval_samples=8, checkpoint_every=2, log_every=1, threads=1, model=TINY)
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    pairs = trainer.real.samples(trainer.real.train, range(4))
    assert [s.answer for s in pairs] == ["yes", "no", "yes", "no"] and pairs[1].text != pairs[0].text
    trainer.fit()
    model, tok = from_pretrained(tmp_path / "run")
    r = evaluate_real(model, tok, f"coco:{root}", "val", 4, progress=False)["retrieval"]
    assert r["images"] == 4 and r["texts"] == 8  # two captions per image in the fixture
    assert 0 <= r["text_to_image_R@1"] <= r["text_to_image_R@5"] == 1.0  # 4 images: top 5 holds them all


@pytest.mark.slow
def test_calibrate_on_a_real_datasets_validation_split(tmp_path):
    from conftest import TINY_RECIPE
    from mmedge.bundle.manifest import load_manifest
    from mmedge.export.exporter import export_bundle
    from mmedge.export.recipe import ExportRecipe
    from mmedge.runtime.calibrate import calibrate
    from mmedge.train.config import TrainConfig
    from mmedge.train.trainer import Trainer

    root = fx.make_jsonl(tmp_path / "own", n=60, split="train")  # labels: the training answers; calibration needs 100 of them in val
    fx.make_jsonl(tmp_path / "own", n=110, split="val")
    cfg = TrainConfig(task="vqa", data=f"jsonl:{root}", steps=2, batch_size=4, warmup_steps=1, eval_every=2,
                      eval_samples=8, checkpoint_every=2, log_every=1, threads=1, model=TINY)
    Trainer(cfg, tmp_path / "run", progress=False).fit()
    recipe = {**TINY_RECIPE, "keep_ratios": [1.0], "targets": ["onnx"], "ort_format": False, "in_graph": False,
              "quantize": "int8", "data": f"jsonl:{root}"}
    bundle = export_bundle(tmp_path / "run", tmp_path / "b.mmedge", ExportRecipe(**recipe), log=lambda *_: None)
    int8 = next(a for a in load_manifest(bundle)["artifacts"] if a["precision"] == "int8" and a["target"] == "onnx")
    assert int8["accuracy"]["data"] == "jsonl"  # the export's accuracy check ran on the dataset's validation records
    assert int8["accuracy"]["by_keep_ratio"]["1.0"]["samples"] == TINY_RECIPE["accuracy_samples"]
    # real text gets a WordPiece vocabulary learnt from the training text; the bundle says so and the Engine reads it
    from mmedge.data.tokenizer import WordPieceTokenizer
    from mmedge.runtime.engine import Engine

    spec = load_manifest(bundle)["tokenizer"]
    assert spec["kind"] == "wordpiece" and spec["continuing_subword_prefix"] == "##"
    engine = Engine.load(bundle)
    assert isinstance(engine.tokenizer, WordPieceTokenizer)
    record = json.loads((root / "train.jsonl").read_text().splitlines()[0])
    assert engine.predict(np.zeros((20, 30, 3), np.uint8), record["question"]).answer in engine.labels
    result = calibrate(bundle, samples=110, data=f"jsonl:{root}", write=False, progress=False)
    assert result["samples"] == 110 and result["data"] == "jsonl"  # the split's 110 records, 100+ of them labelled
    with pytest.raises(Exception, match="at least 100"):
        fx.make_jsonl(tmp_path / "few", n=20, split="val")
        calibrate(bundle, samples=100, data=f"jsonl:{tmp_path / 'few'}", write=False, progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("objective, source", [("mlm-mop", "coco"), ("rwd-rod", "cc")])
def test_pretrain_on_real_captions_then_fine_tune_from_it(objective, source, tmp_path):
    import json as _json

    from mmedge.data.tokenizer import WordPieceTokenizer
    from mmedge.models.checkpoint import from_pretrained
    from mmedge.pretrain.config import PretrainConfig
    from mmedge.pretrain.trainer import Pretrainer
    from mmedge.train.config import TrainConfig
    from mmedge.train.trainer import Trainer

    make = fx.make_coco if source == "coco" else fx.make_cc
    root = make(tmp_path / source, n=8, split="train")
    make(tmp_path / source, n=8, split="val")
    cfg = PretrainConfig(objective=objective, data=f"{source}:{root}", steps=2, batch_size=4, warmup_steps=1,
                         log_every=1, threads=1, generator_depth=1, text_vocab_size=80, model=TINY)
    Pretrainer(cfg, tmp_path / "pre", progress=False).fit()
    saved = _json.loads((tmp_path / "pre" / "pretrain_config.json").read_text())
    assert saved["replace_visual"] is False and saved["mask_words"] == "any"  # what ran: no object classes
    rows = [_json.loads(line) for line in (tmp_path / "pre" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(np.isfinite(r["loss"]) for r in rows)
    visual = "mop" if objective.endswith("mop") else "replaced_object"
    assert all(r[visual] == 0.0 for r in rows) and all(r["itm"] > 0 for r in rows)
    encoder, tok = from_pretrained(tmp_path / "pre")
    assert isinstance(tok, WordPieceTokenizer) and encoder.config.vocab_size == len(tok.vocab)
    # fine-tuning from it keeps the encoder's vocabulary (its embedding rows index it)
    tcfg = TrainConfig(task="match", data=f"{source}:{root}", steps=1, batch_size=4, warmup_steps=1, eval_every=1,
                       eval_samples=4, checkpoint_every=1, log_every=1, threads=1, model=TINY)
    trainer = Trainer(tcfg, tmp_path / "ft", init_from=tmp_path / "pre", progress=False)
    assert trainer.tokenizer.vocab == tok.vocab
    import torch
    assert torch.equal(trainer.model.token_embed.weight, encoder.token_embed.weight)  # copied before training


def test_pretraining_refuses_data_without_captions(tmp_path):
    from mmedge.errors import ConfigError
    from mmedge.pretrain.config import PretrainConfig

    with pytest.raises(ConfigError, match="image-caption pairs"):
        PretrainConfig(data=f"vqa2:{tmp_path}")

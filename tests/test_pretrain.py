"""Pretraining objectives: both train, log FLOPs (the generator's included) and wall-clock, run under
DDP, and their encoder initialises `mmedge train`; the efficiency benchmark's pipeline runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import torchrun
from mmedge.errors import ConfigError
from mmedge.pretrain.config import PretrainConfig

TINY_MODEL = {"dim": 32, "depth": 2, "num_heads": 2, "image_size": 48, "patch_size": 8, "max_text_len": 24,
              "patch_embed": "conv_stem", "exit_pool": "text", "keep_ratios": [1.0, 0.5]}


def tiny(**kw) -> PretrainConfig:
    return PretrainConfig(**{"steps": 3, "batch_size": 4, "log_every": 1, "warmup_steps": 1, "threads": 1,
                             "model": TINY_MODEL, **kw})


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["rwd-rod", "mlm-mop"])
def test_objectives_train_and_log_flops_and_wall_clock(objective, tmp_path):
    from mmedge.models.checkpoint import from_pretrained
    from mmedge.pretrain.trainer import Pretrainer

    result = Pretrainer(tiny(objective=objective, snapshot_every=2), tmp_path / "run", progress=False).fit()
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert rows[-1]["pretrain_flops"] == result.pretrain_flops == 3 * rows[0]["pretrain_flops"] > 0
    assert all(np.isfinite(r["loss"]) for r in rows) and rows[-1]["wall_s"] > 0
    keys = {"generator_mlm", "replaced_word", "replaced_object", "itm"} if objective == "rwd-rod" else \
        {"mlm", "mop", "itm"}
    assert keys <= set(rows[0])
    assert [p.name for p in result.snapshots] == ["step-000002"]
    encoder, _ = from_pretrained(tmp_path / "run")
    assert encoder.config.task == "pretrain" and encoder.config.dim == 32


@pytest.mark.slow
def test_generator_flops_are_counted():
    from mmedge.pretrain.data import build
    from mmedge.pretrain.objectives import PretrainModel
    from mmedge.data.tokenizer import default_tokenizer
    from mmedge.models.config import ModelConfig
    from mmedge.train.flops import count_flops

    tok = default_tokenizer(24)
    cfg = ModelConfig(task="pretrain", labels=["original", "replaced"], vocab_size=len(tok.vocab), **TINY_MODEL)
    batch = build(0, range(4), tok, 48, 8)
    args = [torch.from_numpy(a) for a in (batch.pixels, batch.input_ids, batch.text_mask, batch.token_classes)]
    flops = {}
    for depth in (1, 3):
        torch.manual_seed(0)
        model = PretrainModel(cfg, tiny(objective="rwd-rod", generator_depth=depth).objective_config(), tok.vocab["[UNK]"])
        with count_flops() as cost:
            model(*args)["loss"].backward()
        flops[depth] = cost["flops"]
    assert flops[3] > flops[1]


def test_replaced_objects_come_from_other_images():
    from mmedge.data.tokenizer import default_tokenizer
    from mmedge.models.config import ModelConfig
    from mmedge.pretrain.objectives import ObjectiveConfig, PretrainModel

    tok = default_tokenizer(24)
    cfg = ModelConfig(task="pretrain", labels=["original", "replaced"], vocab_size=len(tok.vocab), **TINY_MODEL)
    model = PretrainModel(cfg, ObjectiveConfig(objective="rwd-rod", visual_replace_rate=0.5, visual_replace_where="any",
                                               visual_sources="any-object"), tok.vocab["[UNK]"])
    classes = torch.zeros(3, 36, dtype=torch.long)
    classes[0, :4], classes[1, 10:12], classes[2, 30] = 5, 7, 9
    torch.manual_seed(0)
    replaced, source = model.visual_replacements(classes)
    assert replaced.float().mean() > 0.2
    flat = torch.arange(3 * 36)
    assert torch.equal(source[~replaced.flatten()], flat[~replaced.flatten()])  # untouched tokens keep theirs
    image = flat // 36
    assert (source[replaced.flatten()] // 36 != image[replaced.flatten()]).all()  # never the same image
    assert (classes.flatten()[source[replaced.flatten()]] > 0).all()  # every image has objects elsewhere


def _model(**objective):
    from mmedge.data.tokenizer import default_tokenizer
    from mmedge.models.config import ModelConfig
    from mmedge.pretrain.objectives import CONTENT_WORDS, ObjectiveConfig, PretrainModel

    tok = default_tokenizer(24)
    cfg = ModelConfig(task="pretrain", labels=["original", "replaced"], vocab_size=len(tok.vocab), **TINY_MODEL)
    content = [i for w, i in tok.vocab.items() if w in CONTENT_WORDS]
    return PretrainModel(cfg, ObjectiveConfig(**{"objective": "rwd-rod", **objective}), tok.vocab["[UNK]"], content), tok


def test_decoys_are_same_class_patches_labelled_original():
    from mmedge.pretrain.objectives import replaced_object_labels

    model, _ = _model(visual_replace_rate=0.9, visual_sources="decoys", decoy_rate=0.5)
    classes = torch.zeros(4, 36, dtype=torch.long)
    for b in range(4):  # every image has class 3 and class 5 objects: a same-class source always exists
        classes[b, 2 * b: 2 * b + 3], classes[b, 20 + b: 23 + b] = 3, 5
    decoys = total = 0
    for seed in range(10):
        torch.manual_seed(seed)
        replaced, source = model.visual_replacements(classes)
        labels = replaced_object_labels(classes, replaced, source)
        picked = classes.flatten()[source].reshape(4, 36)
        same = replaced & (picked == classes)
        assert (labels[same] == 0).all() and (labels[replaced & ~same] == 1).all()
        decoys, total = decoys + int(same.sum()), total + int(replaced.sum())
    assert 0.4 < decoys / total < 0.6  # about decoy_rate of them are decoys (~220 draws)
    legacy, _ = _model(visual_replace_rate=0.9, visual_sources="any-object")
    torch.manual_seed(0)
    replaced, source = legacy.visual_replacements(classes)
    assert (classes.flatten()[source].reshape(4, 36)[replaced] == classes[replaced]).float().mean() < 0.7


def test_content_masking_touches_only_content_words():
    model, tok = _model(objective="mlm-mop", mask_words="content", text_replace_rate=0.9)
    ids, mask = tok.encode_batch(["a small red circle and a large blue square . the red circle is left of the blue square ."] * 4)
    ids, mask = torch.from_numpy(ids), torch.from_numpy(mask)
    torch.manual_seed(0)
    text = model.corrupt_text(None, ids, mask)
    word_of = {i: w for w, i in tok.vocab.items()}
    words = {word_of[int(i)] for i in ids[text.masked]}
    assert words and words <= {"small", "red", "circle", "large", "blue", "square", "left"}
    assert (text.ids[text.masked] == tok.vocab["[UNK]"]).all()
    anyword, _ = _model(objective="mlm-mop", mask_words="any", text_replace_rate=0.9)
    torch.manual_seed(0)
    assert tok.vocab["a"] in ids[anyword.corrupt_text(None, ids, mask).masked].tolist()


def test_tied_generator_shares_the_discriminator_embeddings():
    model, _ = _model(tie_embeddings=True)
    assert model.generator.token_embed[0] is model.encoder.token_embed
    untied, _ = _model(tie_embeddings=False)
    assert untied.generator.token_embed is not untied.encoder.token_embed


@pytest.mark.parametrize("itm_pass", ["separate", "shared"])
def test_word_losses_run_on_matched_pairs_with_a_separate_itm_pass(itm_pass, monkeypatch):
    """separate: the detectors read each image's own caption and ITM gets a second, clean pass;
    shared (the first design): one pass whose captions are partly swapped."""
    from mmedge.pretrain.data import build

    model, tok = _model(itm_pass=itm_pass, replace_text=False)
    batch = build(0, range(8), tok, 48, 8)
    seen = []
    original = model.encode
    monkeypatch.setattr(model, "encode", lambda m, p, ids, *a, **k: seen.append(ids.clone()) or original(m, p, ids, *a, **k))
    torch.manual_seed(3)
    model(*(torch.from_numpy(a) for a in (batch.pixels, batch.input_ids, batch.text_mask, batch.token_classes)))
    ids = torch.from_numpy(batch.input_ids)
    if itm_pass == "separate":
        assert len(seen) == 2 and torch.equal(seen[0], ids) and not torch.equal(seen[1], ids)
    else:
        assert len(seen) == 1 and not torch.equal(seen[0], ids)


@pytest.mark.parametrize("objective", ["mlm-rod", "rwd-mop"])
def test_crosses_combine_one_half_of_each(objective):
    from mmedge.pretrain.data import build

    model, tok = _model(objective=objective)
    batch = build(0, range(4), tok, 48, 8)
    out = model(*(torch.from_numpy(a) for a in (batch.pixels, batch.input_ids, batch.text_mask, batch.token_classes)))
    text, visual = objective.split("-")
    assert ("mlm" in out) == (text == "mlm") and ("replaced_word" in out) == (text == "rwd")
    assert ("mop" in out) == (visual == "mop") and ("replaced_object" in out) == (visual == "rod")
    out["loss"].backward()


def test_diagnostics_see_whether_a_detector_reads_the_image():
    """A word detector wired to answer from the image scores AUC 1 with the true image and less
    with the images shuffled; one that ignores the image scores the same on both."""
    from mmedge.pretrain.data import build
    from mmedge.pretrain.diagnostics import diagnose

    model, tok = _model(objective="rwd-mop", text_replace_rate=0.5)
    batch = build(0, range(16), tok, 48, 8)
    args = [torch.from_numpy(a) for a in (batch.pixels, batch.input_ids, batch.text_mask, batch.token_classes)]
    blind = diagnose(model, *args)
    assert blind["rwd_auc_true_image"] is not None and 0 <= blind["generator_sample_acc"] <= 1
    assert blind["rwd_base_rate"] > 0.5
    L = args[1].shape[1]

    real_encode = model.encode

    def oracle(m, pixels, ids, mask, transform=None):  # flags each word that differs from its image's own caption
        if m is not model.encoder:  # the generator runs as built
            return real_encode(m, pixels, ids, mask, transform)
        owner = torch.tensor([next(j for j in range(len(args[0])) if torch.equal(pixels[i], args[0][j]))
                              for i in range(len(ids))])
        hidden = torch.zeros(len(ids), 1 + L + 36, 32)
        hidden[:, 1: 1 + L, 0] = (ids != args[1][owner]).float()
        return hidden

    model.encode = oracle
    model.text_disc = torch.nn.Linear(32, 1)
    with torch.no_grad():
        model.text_disc.weight.zero_()
        model.text_disc.weight[0, 0] = 10.0
        model.text_disc.bias.fill_(-5.0)
    model.itm_head = torch.nn.Linear(32, 2)
    sighted = diagnose(model, *args)
    assert sighted["rwd_auc_true_image"] == pytest.approx(1.0)
    assert sighted["rwd_auc_shuffled_image"] < 0.9


def test_replaced_object_label_means_the_object_class_changed():
    from mmedge.pretrain.objectives import replaced_object_labels

    classes = torch.tensor([[0, 5, 5, 0], [7, 0, 0, 2]])  # (B=2, N=4); sources index the flattened 8 tokens
    replaced = torch.tensor([[True, True, True, False], [True, True, False, True]])
    source = torch.tensor([3, 4, 1, 0, 2, 5, 6, 7])  # bg<-bg, 5<-7, 5<-5 | 7<-5, bg<-bg, -, 2<-2
    labels = replaced_object_labels(classes, replaced, source)
    assert labels.tolist() == [[0, 1, 0, 0], [1, 0, 0, 0]]


def test_object_only_replacement_touches_only_object_tokens():
    from mmedge.data.tokenizer import default_tokenizer
    from mmedge.models.config import ModelConfig
    from mmedge.pretrain.objectives import ObjectiveConfig, PretrainModel

    tok = default_tokenizer(24)
    cfg = ModelConfig(task="pretrain", labels=["original", "replaced"], vocab_size=len(tok.vocab), **TINY_MODEL)
    model = PretrainModel(cfg, ObjectiveConfig(objective="rwd-rod", visual_replace_rate=0.9, visual_replace_where="objects"),  # noqa
                          tok.vocab["[UNK]"])
    classes = torch.zeros(2, 36, dtype=torch.long)
    classes[0, 3:9], classes[1, 20:24] = 4, 11
    torch.manual_seed(1)
    replaced, _ = model.visual_replacements(classes)
    assert replaced.any() and not (replaced & (classes == 0)).any()


def test_config_errors_are_collected(tmp_path):
    with pytest.raises(ConfigError) as info:
        PretrainConfig(objective="bert", text_replace_rate=1.5, replace_text=False, replace_visual=False,
                       visual_replace_where="sky", model={"width": 3}, mask_words="nouns", itm_pass="twice",
                       generator_depth=0)
    assert len(info.value.problems) == 8


@pytest.mark.slow
def test_pretrained_encoder_initialises_finetuning(tmp_path):
    from mmedge.models.checkpoint import from_pretrained
    from mmedge.pretrain.trainer import Pretrainer
    from mmedge.train.config import TrainConfig
    from mmedge.train.trainer import build_model
    from mmedge.data.tokenizer import default_tokenizer

    Pretrainer(tiny(), tmp_path / "pre", progress=False).fit()
    encoder, _ = from_pretrained(tmp_path / "pre")
    model = build_model(TrainConfig(task="vqa", model=TINY_MODEL), default_tokenizer(24), init_from=tmp_path / "pre")
    assert torch.equal(model.blocks[1].mlp.fc1.weight, encoder.blocks[1].mlp.fc1.weight)
    assert torch.equal(model.token_embed.weight, encoder.token_embed.weight)
    assert model.exit_heads[0].classifier.weight.shape[0] == 16  # vqa labels: a fresh head


@pytest.mark.slow
def test_pretraining_under_torchrun_ddp(tmp_path):
    cfg = tmp_path / "pre.json"
    cfg.write_text(json.dumps(tiny().to_dict()))
    proc = torchrun(["pretrain", "--objective", "rwd-rod", "--config", str(cfg), "--out", str(tmp_path / "ddp"),
                     "--no-progress"], port=29541)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(x) for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 3 and rows[-1]["pretrain_flops"] > 0
    assert (tmp_path / "ddp" / "config.json").is_file()


@pytest.mark.slow
def test_efficiency_benchmark_smoke(tmp_path, monkeypatch):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import shutil

    import pretraining_efficiency as pe

    out = tmp_path / "out"
    assert pe.main(["--smoke", "--out", str(out), "--work", str(tmp_path / "work"), "--only", "main-seed0",
                    "--jobs", "2", "--no-progress"]) == 0
    result = json.loads((out / "pretraining_efficiency.json").read_text())
    curves = result["collected"]["curves"]
    assert set(curves) == {"rwd-rod-seed0", "mlm-mop-seed0"}
    assert set(result["collected"]["floors"]) == {"seed0/vqa/ft3", "seed0/verify/ft3"}
    for name, c in curves.items():
        points = c["points"]
        assert [p["step"] for p in points] == [2, 4]
        assert points[1]["pretrain_flops"] == 2 * points[0]["pretrain_flops"] > 0
        assert points[1]["diagnostics"]["itm_acc"] is not None
        for p, task in ((p, t) for p in points for t in ("vqa", "verify")):
            # the fine-tunes ran two at a time: each score landed on its own snapshot and task
            unit = json.loads((out / "units" / "finetune" / f"{name}-step{p['step']}-{task}-ft3"
                               / "benchmark_result.json").read_text())
            assert unit["key"]["init"]["run"] == name and unit["key"]["init"]["step"] == p["step"]
            assert f"task='{task}'" in unit["key"]["finetune"] and unit["value"] == p[f"{task}_ft3"]
            assert 0 <= unit["value"]["accuracy"] <= 1 and unit["value"]["n"] == 16
    assert result["pending"] == ["main-seeds", "ablation", "crosses", "long", "steptime"]
    assert "Incomplete" in (out / "pretraining_efficiency.md").read_text()
    assert (out / "pretraining_efficiency.png").stat().st_size > 0

    # a fresh machine with the committed units only: nothing is pretrained or fine-tuned again
    shutil.rmtree(tmp_path / "work")
    monkeypatch.setattr(pe, "run_pretraining", lambda *a: pytest.fail("re-pretrained a finished run"))
    monkeypatch.setattr(pe, "run_finetunes", lambda *a: pytest.fail("re-ran a finished fine-tune"))
    assert pe.main(["--smoke", "--out", str(out), "--only", "main-seed0", "--no-progress"]) == 0
    assert json.loads((out / "pretraining_efficiency.json").read_text())["collected"] == result["collected"]


def test_ablation_changes_one_thing_at_a_time():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import pretraining_efficiency as pe

    legacy = pe.ABLATION["legacy"]
    for name, settings in pe.ABLATION.items():
        changed = {k for k in settings if settings[k] != legacy[k]}
        assert name == "legacy" or 1 <= len(changed) <= 2, (name, changed)  # generator: depth + tying
        PretrainConfig(**settings)  # every variant is a valid configuration


def test_intervals():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import pretraining_efficiency as pe

    lo, hi = pe.wilson(0.5, 100)
    assert lo == pytest.approx(0.404, abs=1e-3) and hi == pytest.approx(0.596, abs=1e-3)
    s = pe.seed_interval([0.6, 0.7, 0.8])
    assert s["mean"] == pytest.approx(0.7) and s["high"] - s["mean"] == pytest.approx(4.303 * 0.1 / 3 ** 0.5, rel=1e-3)
    assert pe.seed_interval([0.6])["low"] is None


def test_reach_interpolates():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import pretraining_efficiency as pe

    pts = [{"f": 10, "a": 0.5}, {"f": 20, "a": 0.7}, {"f": 30, "a": 0.9}]
    assert pe.reach(pts, "f", 0.8, "a") == pytest.approx(25)
    assert pe.reach(pts, "f", 0.4, "a") == 10
    assert pe.reach(pts, "f", 0.95, "a") is None

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
        model = PretrainModel(cfg, tiny(generator_depth=depth).objective_config(), tok.vocab["[UNK]"])
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
    model = PretrainModel(cfg, ObjectiveConfig(visual_replace_rate=0.5, visual_replace_where="any"), tok.vocab["[UNK]"])
    classes = torch.zeros(3, 36, dtype=torch.long)
    classes[0, :4], classes[1, 10:12], classes[2, 30] = 5, 7, 9
    torch.manual_seed(0)
    replaced, source = model._visual_replacements(classes)
    assert replaced.float().mean() > 0.2
    source = source.reshape(3, 36)
    for b in range(3):
        assert (source[b] // 36 != b).all()  # never the same image
        others_objects = int(((classes > 0).sum(1)).sum() - (classes[b] > 0).sum())
        picked = classes.flatten()[source[b]]
        assert (picked[:others_objects] > 0).all()  # object tokens first


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
    model = PretrainModel(cfg, ObjectiveConfig(visual_replace_rate=0.9, visual_replace_where="objects"),
                          tok.vocab["[UNK]"])
    classes = torch.zeros(2, 36, dtype=torch.long)
    classes[0, 3:9], classes[1, 20:24] = 4, 11
    torch.manual_seed(1)
    replaced, _ = model._visual_replacements(classes)
    assert replaced.any() and not (replaced & (classes == 0)).any()


def test_config_errors_are_collected(tmp_path):
    with pytest.raises(ConfigError) as info:
        PretrainConfig(objective="bert", text_replace_rate=1.5, replace_text=False, replace_visual=False,
                       visual_replace_where="sky", model={"width": 3})
    assert len(info.value.problems) == 5


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
def test_efficiency_benchmark_smoke(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import pretraining_efficiency as pe

    assert pe.main(["--smoke", "--out", str(tmp_path), "--tasks", "vqa", "verify", "--variants", "rwd-rod",
                    "mlm-mop", "--jobs", "2", "--no-progress"]) == 0
    result = json.loads((tmp_path / "pretraining_efficiency.json").read_text())
    assert set(result["curves"]) == {"rwd-rod/seed0", "mlm-mop/seed0"}
    finetunes = tmp_path / "work" / "finetune"
    for key, points in result["curves"].items():
        assert [p["step"] for p in points] == [2, 4]
        assert points[1]["pretrain_flops"] == 2 * points[0]["pretrain_flops"]
        for p, task in ((p, t) for p in points for t in ("vqa", "verify")):
            assert 0 <= p[f"acc_{task}"] <= 1
            # the fine-tunes ran two at a time: each accuracy landed on its own snapshot and task
            done = json.loads((finetunes / f"{key.replace('/', '-')}-{Path(p['dir']).name}-{task}"
                               / "benchmark_result.json").read_text())
            assert done["key"]["init"] == p["dir"]
            assert f"task='{task}'" in done["key"]["finetune"] and done["value"] == p[f"acc_{task}"]
    assert {"vqa/seed0", "verify/seed0"} <= set(result["ratio_mlm_over_rwd"])
    assert (tmp_path / "pretraining_efficiency.png").stat().st_size > 0
    assert "SMOKE" in (tmp_path / "pretraining_efficiency.md").read_text()


def test_reach_interpolates():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import pretraining_efficiency as pe

    pts = [{"f": 10, "a": 0.5}, {"f": 20, "a": 0.7}, {"f": 30, "a": 0.9}]
    assert pe.reach(pts, "f", 0.8, "a") == pytest.approx(25)
    assert pe.reach(pts, "f", 0.4, "a") == 10
    assert pe.reach(pts, "f", 0.95, "a") is None

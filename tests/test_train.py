import json

import pytest
from safetensors.torch import load_file

from conftest import TINY, torchrun
from mmedge.errors import ConfigError
from mmedge.train.config import TrainConfig
from mmedge.train.losses import exit_weights
from mmedge.train.trainer import Trainer, lr_factor, train_keep_ratio


def weights(path):
    return load_file(str(path / "model.safetensors"))


def same_weights(a, b):
    return a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_metrics_log_has_flops_wall_clock_and_validation(tiny_model_dir):
    rows = [json.loads(line) for line in (tiny_model_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["kind"] == "train"]
    val = [r for r in rows if r["kind"] == "val"]
    assert [r["step"] for r in train] == [2, 4, 6, 8] and [r["step"] for r in val] == [4, 8]
    flops = [r["train_flops"] for r in train]
    assert all(0 < a < b for a, b in zip(flops, flops[1:]))
    assert all(r["wall_s"] > 0 for r in rows)
    assert len(val[-1]["val_acc_keep_1"]) == 3  # one accuracy per exit
    for name in ("config.json", "model.safetensors", "tokenizer.json", "train_config.json"):
        assert (tiny_model_dir / name).is_file()


def test_training_is_deterministic_and_learns(tmp_path):
    cfg = TrainConfig(**{**TINY, "steps": 30, "eval_every": 30, "checkpoint_every": 30, "lr": 3e-3})
    a = Trainer(cfg, tmp_path / "a", progress=False).fit()
    Trainer(cfg, tmp_path / "b", progress=False).fit()
    assert same_weights(weights(tmp_path / "a"), weights(tmp_path / "b"))
    rows = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r["kind"] == "train"]
    assert min(losses[-3:]) < losses[0]
    assert a.steps == 30


def test_resume_continues_exactly(tmp_path):
    cfg = TrainConfig(**TINY)
    Trainer(cfg, tmp_path / "straight", progress=False).fit()

    class Interrupted(Trainer):
        def _train_step(self, keep):
            if self.step == 6:  # two steps (one logged row) after the step-4 checkpoint
                raise KeyboardInterrupt
            return super()._train_step(keep)

    with pytest.raises(KeyboardInterrupt):
        Interrupted(cfg, tmp_path / "resumed", progress=False).fit()
    with pytest.raises(ConfigError, match="--resume"):
        Trainer(cfg, tmp_path / "resumed", progress=False)
    Trainer(cfg, tmp_path / "resumed", resume=True, progress=False).fit()
    assert same_weights(weights(tmp_path / "straight"), weights(tmp_path / "resumed"))
    def rows(run):  # (kind, step) of every metric row
        return [(r["kind"], r["step"]) for r in map(json.loads, (tmp_path / run / "metrics.jsonl").read_text().splitlines())]

    assert rows("resumed") == rows("straight")  # the row logged after the checkpoint is not duplicated


def test_resume_refuses_a_changed_config(tmp_path):
    cfg = TrainConfig(**TINY)
    Trainer(cfg, tmp_path, progress=False).fit()
    with pytest.raises(ConfigError, match="differs"):
        Trainer(TrainConfig(**{**TINY, "lr": 0.5}), tmp_path, resume=True, progress=False)


def test_config_problems_are_reported_together(tmp_path):
    with pytest.raises(ConfigError) as info:
        TrainConfig(task="caption", steps=0, exit_weighting="cubic", model={"dimm": 3})
    assert len(info.value.problems) == 4
    (tmp_path / "c.json").write_text(json.dumps({"stepz": 3, "lr": 0.1}))
    with pytest.raises(ConfigError, match="unknown field 'stepz'"):
        TrainConfig.load(tmp_path / "c.json")


def test_exit_weights_and_schedule():
    assert exit_weights(4, "linear") == [0.1, 0.2, 0.3, 0.4]
    assert exit_weights(2, "uniform") == [0.5, 0.5]
    cfg = TrainConfig(steps=100, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(0, cfg) == pytest.approx(0.1) and lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(99, cfg) == pytest.approx(0.1, abs=1e-3)


def test_the_unpruned_share_trains_at_keep_one_before_the_ratios_cycle():
    cycled = TrainConfig(steps=12, train_keep_ratios=[1.0, 0.5, 0.25])
    assert [train_keep_ratio(cycled, s, 12) for s in range(6)] == [1.0, 0.5, 0.25, 1.0, 0.5, 0.25]
    first_half = TrainConfig(steps=12, train_keep_ratios=[1.0, 0.5, 0.25], unpruned_share=0.5)
    assert [train_keep_ratio(first_half, s, 12) for s in range(12)] == [1.0] * 6 + [1.0, 0.5, 0.25] * 2
    # under a minutes budget the share is of the time spent, whatever the step
    assert train_keep_ratio(first_half, 1, 12, progress=0.49) == 1.0
    assert train_keep_ratio(first_half, 1, 12, progress=0.51) == 0.5
    for bad in (-0.1, 1.5, True, "half"):
        with pytest.raises(ConfigError, match="unpruned_share"):
            TrainConfig(unpruned_share=bad)


@pytest.mark.slow
def test_two_process_ddp_run(tmp_path, tiny_config):
    """torchrun --nproc_per_node 2: both ranks train on disjoint data, rank 0 writes the model."""
    proc = torchrun(["train", "--task", "verify", "--config", str(tiny_config), "--out", str(tmp_path / "ddp"),
                     "--no-progress"], port=29533)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "trained 8 steps" in proc.stdout
    rows = [json.loads(x) for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in rows if r["kind"] == "train"][-1]
    assert last["samples"] == 8 * 8 * 2  # steps x batch x world size
    assert json.loads((tmp_path / "ddp" / "config.json").read_text())["task"] == "verify"


def test_ranks_draw_disjoint_batches():
    from mmedge.train.distributed import DistInfo
    from mmedge.train.trainer import batch_indices

    cfg = TrainConfig(batch_size=4, train_size=1000)
    seen = [set(batch_indices(cfg, s, DistInfo(r, 2))) for s in range(3) for r in range(2)]
    assert sum(len(s) for s in seen) == len(set().union(*seen)) == 24


def test_init_from_copies_the_encoder_but_not_the_exits(tiny_model_dir):
    import torch

    from mmedge.data.tokenizer import default_tokenizer
    from mmedge.models.checkpoint import from_pretrained
    from mmedge.train.trainer import build_model

    source, _ = from_pretrained(tiny_model_dir)
    cfg = TrainConfig(**{**TINY, "task": "verify", "seed": 5})
    model = build_model(cfg, default_tokenizer(), init_from=tiny_model_dir)
    assert torch.equal(model.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)
    assert model.exit_heads[0].classifier.weight.shape[0] == 2  # verify's labels, freshly initialised
    same_task = build_model(TrainConfig(**{**TINY, "seed": 5}), default_tokenizer(), init_from=tiny_model_dir)
    assert torch.equal(same_task.exit_heads[1].classifier.weight, source.exit_heads[1].classifier.weight)


def test_data_switches_the_scenes_only_options_off():
    """for_data (what `mmedge train --data` does) switches every scenes-only option off and names it;
    a config that names a real dataset itself and sets one is refused, with what to do."""
    from mmedge.train.config import SCENES_ONLY

    scenes = TrainConfig(**{**TINY, "qtype_weights": {"spatial": 3.0}, "train_relations": ["left"]})
    cfg, off = scenes.for_data("jsonl:/data/mine")
    assert cfg.data == "jsonl:/data/mine" and all(getattr(cfg, k) == v for k, v in SCENES_ONLY.items())
    assert [o.split(" ")[0] for o in off] == ["token_loss_weight", "ground_loss_weight", "qtype_weights",
                                              "train_relations"]
    assert 'qtype_weights (was {"spatial": 3.0})' in off
    assert cfg.lr == scenes.lr and cfg.model == scenes.model  # nothing else changes
    assert scenes.for_data("scenes") == (TrainConfig(**{**scenes.to_dict(), "data": "scenes"}), [])
    assert TrainConfig().for_data("jsonl:/data/mine")[1] == []  # the defaults have nothing on
    with pytest.raises(ConfigError, match=r"qtype_weights is scenes-only .* names data 'jsonl:/d' itself: set "
                                          r"qtype_weights to null, or take 'data' out of the config"):
        TrainConfig(data="jsonl:/d", qtype_weights={"spatial": 3.0})
    with pytest.raises(ConfigError, match="token_loss_weight, ground_loss_weight are scenes-only"):
        TrainConfig(**{**TINY, "data": "gqa:/d"})
    with pytest.raises(ConfigError, match="token_loss_weight is scenes-only"):  # JSON Lines may carry refs
        TrainConfig(**{**TINY, "data": "jsonl:/d"})


@pytest.mark.slow
def test_cli_data_switches_them_off_with_a_note_and_refuses_an_explicit_one(tmp_path, tiny_config, capsys):
    import dataset_fixtures as fx
    from mmedge.cli import main

    root = fx.make_jsonl(tmp_path / "own", n=16, split="train")
    fx.make_jsonl(root, n=8, split="val")
    args = ["train", "--config", str(tiny_config), "--data", f"jsonl:{root}", "--steps", "2", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    notes = [line for line in out.splitlines() if line.startswith("note:")]
    assert notes == ["note: --data jsonl: switched off the scenes-only option(s) token_loss_weight (was 0.5): "
                     "they need the generated scenes",
                     "note: --data jsonl: no training record has refs, so ground_loss_weight (was 0.5) is off (refs "
                     "point a question's phrases at boxes and teach the model where things are: docs/guides/data.md)"]
    saved = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert saved["token_loss_weight"] == saved["ground_loss_weight"] == 0.0 and saved["data"] == f"jsonl:{root}"
    assert json.loads((tmp_path / "run" / "config.json").read_text())["ground_bins"] == 0  # no grounding head
    # resuming with the same command gives the same config (switched off the same way)
    assert main([*args, "--out", str(tmp_path / "run"), "--resume"]) == 0
    # a config that names the dataset itself and sets a scenes-only option is refused, not switched
    explicit = tmp_path / "explicit.json"
    explicit.write_text(json.dumps({**TINY, "data": f"jsonl:{root}"}))
    capsys.readouterr()
    assert main(["train", "--config", str(explicit), "--out", str(tmp_path / "no"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "token_loss_weight is scenes-only" in err and "pass --data NAME:ROOT" in err
    assert not (tmp_path / "no").exists()

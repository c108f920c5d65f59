import json

import pytest
import torch

from mmedge.data.tasks import LABELS
from mmedge.data.tokenizer import default_tokenizer
from mmedge.errors import CheckpointError, ConfigError
from mmedge.models.attention import ATTENTION
from mmedge.models.checkpoint import from_pretrained, save_pretrained
from mmedge.models.config import ATTENTION_VARIANTS, ModelConfig
from mmedge.models.model import AdaptiveVLModel
from mmedge.train.flops import exit_flops, stage_flops


def tiny_cfg(**kw) -> ModelConfig:
    base = dict(labels=list(LABELS["vqa"]), vocab_size=64, dim=32, depth=3, num_heads=2, image_size=32,
                patch_size=8, max_text_len=12)
    return ModelConfig(**{**base, **kw})


def inputs(cfg: ModelConfig, batch: int = 3):
    g = torch.Generator().manual_seed(0)
    pixels = torch.randn(batch, 3, cfg.image_size, cfg.image_size, generator=g)
    ids = torch.randint(2, cfg.vocab_size, (batch, cfg.max_text_len), generator=g)
    mask = torch.ones(batch, cfg.max_text_len, dtype=torch.long)
    mask[0, 5:] = 0  # one padded text
    return pixels, ids, mask


@pytest.mark.parametrize("keep", [1.0, 0.5, 0.25])
@pytest.mark.parametrize("variant", [{}, {"exit_pool": "text", "text_film": True, "patch_embed": "conv_stem"}])
def test_stage_forwards_equal_full_forward(keep, variant):
    cfg = tiny_cfg(**variant)
    model = AdaptiveVLModel(cfg).eval()
    x = inputs(cfg)
    full = model(*x, keep_ratio=keep)
    emb = model.embed(*x, keep_ratio=keep)
    hidden = emb.hidden
    assert hidden.shape[1] == 1 + cfg.max_text_len + cfg.kept_tokens(keep)
    for stage in range(model.num_stages):
        hidden, logits, conf = model.forward_stage(stage, hidden, emb.mask)
        assert torch.equal(logits, full.logits[stage]) and torch.equal(conf, full.confidence[stage])
        assert ((conf >= 0) & (conf <= 1)).all()


@pytest.mark.parametrize("pool", ["cls", "text"])
def test_padding_does_not_change_the_answer(pool):
    cfg = tiny_cfg(exit_pool=pool, text_film=True)
    model = AdaptiveVLModel(cfg).eval()
    for p in model.text_film.parameters():  # leave the identity init so the FiLM path matters
        torch.nn.init.normal_(p, std=0.1)
    pixels, ids, mask = inputs(cfg, 1)
    mask[0, 5:] = 0
    other = ids.clone()
    other[0, 5:] = 0  # different values at padded positions
    a, b = model(pixels, ids, mask), model(pixels, other, mask)
    assert torch.allclose(a.logits[-1], b.logits[-1], atol=1e-5)


def test_prefilter_keeps_the_top_scored_tokens():
    cfg = tiny_cfg()
    model = AdaptiveVLModel(cfg).eval()
    out = model(*inputs(cfg), keep_ratio=0.25, score_all=True)
    k = cfg.kept_tokens(0.25)
    assert out.kept_index.shape == (3, k)
    best = out.prefilter_scores.topk(k, dim=1).indices
    assert torch.equal(out.kept_index.sort(1).values, best.sort(1).values)


def test_exit_layers_are_configurable():
    cfg = tiny_cfg(depth=4, exit_layers=[1, 3])
    model = AdaptiveVLModel(cfg)
    assert model.num_stages == 2 and list(model.stage_layers(0)) == [0, 1] and list(model.stage_layers(1)) == [2, 3]
    assert len(model(*inputs(cfg)).logits) == 2


def test_stages_export_without_python_control_flow():
    cfg = tiny_cfg()
    model = AdaptiveVLModel(cfg).eval()

    class Stage0(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, pixels, ids, mask):
            emb = self.m.embed(pixels, ids, mask, keep_ratio=0.5)
            hidden, logits, conf = self.m.forward_stage(0, emb.hidden, emb.mask)
            return hidden, emb.mask, logits, conf

    x = inputs(cfg)
    exported = torch.export.export(Stage0(model), x)
    for got, want in zip(exported.module()(*x), Stage0(model)(*x)):
        assert torch.allclose(got, want, atol=1e-6)


def test_flops_grow_with_depth_and_shrink_with_keep_ratio():
    model = AdaptiveVLModel(tiny_cfg())
    full, quarter = exit_flops(model, 1.0), exit_flops(model, 0.25)
    assert all(a < b for a, b in zip(full, full[1:]))
    assert all(q < f for q, f in zip(quarter, full))
    assert sum(stage_flops(model, 1.0)) == full[-1]


def test_attention_registry_matches_config_names():
    assert set(ATTENTION) == set(ATTENTION_VARIANTS)


def test_config_errors_are_collected():
    with pytest.raises(ConfigError) as info:
        tiny_cfg(dim=30, num_heads=4, exit_layers=[0], keep_ratios=[0.0], attention="magic")
    assert len(info.value.problems) == 4
    with pytest.raises(ConfigError, match="unknown field 'dimm'"):
        ModelConfig.from_dict({**tiny_cfg().to_dict(), "dimm": 3})


def test_save_and_load_roundtrip(tmp_path):
    cfg = tiny_cfg(vocab_size=len(default_tokenizer(12).vocab))
    model = AdaptiveVLModel(cfg).eval()
    save_pretrained(model, default_tokenizer(12), tmp_path)
    again, tok = from_pretrained(tmp_path)
    x = inputs(cfg)
    assert torch.equal(model(*x).logits[-1], again(*x).logits[-1])
    assert not list(tmp_path.glob("*.tmp"))
    assert (tmp_path / "model.safetensors").stat().st_mode & 0o044  # readable by others, not 0600


def test_bad_checkpoints_are_typed_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        from_pretrained(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="no config.json"):
        from_pretrained(tmp_path)
    cfg = tiny_cfg(vocab_size=len(default_tokenizer(12).vocab))
    save_pretrained(AdaptiveVLModel(cfg), default_tokenizer(12), tmp_path)
    weights = tmp_path / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        from_pretrained(tmp_path)
    weights.write_bytes(good)
    data = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**data, "dim": 64, "num_heads": 2}))
    with pytest.raises(CheckpointError, match="does not match"):
        from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**data, "colour": "red"}))
    with pytest.raises(CheckpointError, match="unknown field"):
        from_pretrained(tmp_path)


def test_token_tagger_is_training_only_and_sincos_positions():
    from mmedge.models.model import sincos_2d

    cfg = tiny_cfg(token_classes=19)
    model = AdaptiveVLModel(cfg).eval()
    out = model(*inputs(cfg), keep_ratio=0.5)
    assert model.token_tagger(out.hidden[0]).shape[-1] == 19
    assert AdaptiveVLModel(tiny_cfg()).token_tagger is None
    code = sincos_2d(4, 32)
    assert code.shape == (16, 32) and torch.allclose(model.image_pos[0], code)
    assert not torch.allclose(code[0], code[1]) and not torch.allclose(code[0], code[4])


def test_conv_stem_matches_patch_grid():
    cfg = tiny_cfg(patch_embed="conv_stem")
    model = AdaptiveVLModel(cfg)
    assert model.patch_embed(torch.zeros(1, 3, 32, 32)).shape == (1, cfg.dim, 4, 4)
    with pytest.raises(ConfigError, match="power-of-two"):
        tiny_cfg(patch_embed="conv_stem", patch_size=6, image_size=36)


def test_linear_position_ramps():
    from mmedge.models.model import sincos_2d

    code = sincos_2d(4, 32, linear=True)  # quarter = 8: channel 7 is x, channel 23 is y
    assert torch.allclose(code[:4, 7], torch.linspace(-1, 1, 4)) and torch.allclose(code[::4, 23], torch.linspace(-1, 1, 4))
    assert torch.equal(code[:, :7], sincos_2d(4, 32)[:, :7])
    model = AdaptiveVLModel(tiny_cfg(position_code="sincos_linear"))
    assert torch.allclose(model.image_pos[0], sincos_2d(4, 32, linear=True))
    with pytest.raises(ConfigError, match="position_code"):
        tiny_cfg(position_code="rope")

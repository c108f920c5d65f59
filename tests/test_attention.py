"""The attention variants (issue #12): shapes, masking, agreement with dense references, the FLOP
drop, and (slow) a tiny model per variant trained, exported to every target and run by the Engine."""

from __future__ import annotations

import math

import pytest
import torch

from mmedge.data.tasks import LABELS
from mmedge.errors import ConfigError
from mmedge.models.attention import (ATTENTION, MASK_VALUE, CrossModalAttention, FullAttention, LowRankAttention,
                                     build_attention)
from mmedge.models.config import ATTENTION_VARIANTS, ModelConfig
from mmedge.models.model import AdaptiveVLModel
from mmedge.train.flops import stage_flops
from mmedge.train.losses import attention_teacher

D, NH, L = 16, 2, 5
G = 1 + L  # [CLS] + text
# Small rank and window so that the compressed / windowed paths run at these lengths.
MODULES = {"full": lambda: FullAttention(D, NH), "lowrank": lambda: LowRankAttention(D, NH, 0.0, L, rank=4),
           "crossmodal": lambda: CrossModalAttention(D, NH, 0.0, L, window=4)}


def model_cfg(attention: str, **kw) -> ModelConfig:
    base = dict(labels=list(LABELS["vqa"]), vocab_size=64, dim=32, depth=2, num_heads=2, image_size=48,
                patch_size=8, max_text_len=12, attention=attention, attention_rank=4, attention_window=4)
    return ModelConfig(**{**base, **kw})


def additive(batch: int, T: int, text_len: list[int]) -> torch.Tensor:
    """(B, 1, 1, T) additive mask: text of sample i padded after text_len[i] real tokens."""
    mask = torch.zeros(batch, 1, 1, T)
    for i, n in enumerate(text_len):
        mask[i, ..., 1 + n: G] = MASK_VALUE
    return mask


def test_registry_config_and_builder_agree():
    assert set(ATTENTION) == set(ATTENTION_VARIANTS) == {"full", "lowrank", "crossmodal"}
    for name in ATTENTION_VARIANTS:
        cfg = model_cfg(name, attention_rank=7, attention_window=3)
        module = build_attention(cfg)
        assert isinstance(module, ATTENTION[name])
        # No parameters of their own: the same qkv / proj as full, so weights move between variants.
        assert [n for n, _ in module.named_parameters()] == ["qkv.weight", "qkv.bias", "proj.weight", "proj.bias"]
    assert build_attention(model_cfg("lowrank", attention_rank=7)).rank == 7
    assert build_attention(model_cfg("crossmodal", attention_window=3)).window == 3
    with pytest.raises(ConfigError, match="attention_rank 0"):
        model_cfg("lowrank", attention_rank=0)


@pytest.mark.parametrize("name", sorted(MODULES))
@pytest.mark.parametrize("n", [0, 3, 8, 9, 13, 36, 50])  # visual tokens, 0 = dropped (text only)
def test_shapes_and_probabilities(name, n):
    torch.manual_seed(0)
    att = MODULES[name]().eval()
    T = G + n
    x = torch.randn(3, T, D)
    out, probs = att(x, additive(3, T, [2, L, 4]))
    assert out.shape == (3, T, D) and torch.isfinite(out).all()
    rows = T if name == "full" else G  # the efficient variants give the [CLS] + text rows
    assert probs.shape == (3, NH, rows, T)
    assert (probs >= 0).all()
    assert torch.allclose(probs.sum(-1), torch.ones(3, NH, rows), atol=1e-5)
    assert probs[0, :, :, 3:G].max() < 1e-6  # no probability on padded text keys


def _previous_full(att: FullAttention, x, mask):
    """FullAttention.forward as it was before the variants (verbatim)."""
    B, T, D_ = x.shape
    qkv = att.qkv(x).reshape(B, T, 3, att.num_heads, att.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    scores = q @ k.transpose(-2, -1) * (att.head_dim ** -0.5) + mask
    probs = scores.softmax(dim=-1)
    out = (att.drop(probs) @ v).transpose(1, 2).reshape(B, T, D_)
    return att.proj(out), probs


def test_full_equals_the_previous_implementation():
    """3-D bmm with q scaled before its product (the ExecuTorch-friendly form) against the 4-D
    matmul form the variants started from: equal up to float rounding."""
    torch.manual_seed(0)
    att = build_attention(model_cfg("full", dim=D, num_heads=NH)).eval()
    assert type(att) is FullAttention
    for n in (0, 9, 36):
        x, mask = torch.randn(2, G + n, D), additive(2, G + n, [3, L])
        out, probs = att(x, mask)
        ref_out, ref_probs = _previous_full(att, x, mask)
        assert torch.allclose(out, ref_out, atol=1e-6) and torch.allclose(probs, ref_probs, atol=1e-6)


def _heads4(att, x):
    """q (unscaled), k, v as (B, nh, T, hd), computed the textbook way from the layer's weights."""
    B, T, _ = x.shape
    qkv = att.qkv(x).reshape(B, T, 3, att.num_heads, att.head_dim).permute(2, 0, 3, 1, 4)
    return qkv[0], qkv[1], qkv[2]


def _dense_reference(att, x, mask, allowed: torch.Tensor):
    """Plain attention restricted to `allowed` (T, T) by a mask: what a sparse variant must equal."""
    q, k, v = _heads4(att, x)
    scores = (q @ k.transpose(-2, -1) * att.head_dim ** -0.5 + mask).masked_fill(~allowed, float("-inf"))
    p = scores.softmax(-1)
    B, T, _ = x.shape
    return att.proj((p @ v).transpose(1, 2).reshape(B, T, D)), p[:, :, :G]


@pytest.mark.parametrize("n", [4, 5, 9, 13, 20, 23, 36, 50])
def test_crossmodal_equals_its_sparse_pattern(n):
    """Global rows see everything; visual token i sees [CLS], text and the visual tokens of its own
    block of 4 (i // 4). With at most 4 visual tokens, or where the padding to whole blocks costs
    more than it saves (5 visual tokens after 6 [CLS] + text: 2 blocks x 4 x 10 scores >= 5 x 11),
    plain attention."""
    torch.manual_seed(0)
    att = MODULES["crossmodal"]().eval()
    T = G + n
    x, mask = torch.randn(2, T, D), additive(2, T, [2, L])
    mask[1, ..., G + 1] = MASK_VALUE  # a masked visual key too
    allowed = torch.ones(T, T, dtype=torch.bool)
    block = torch.arange(n) // 4
    sparse = n > 4 and math.ceil(n / 4) * 4 * (G + 4) < n * T
    assert sparse == (n >= 9)
    if sparse:
        allowed[G:, G:] = block[:, None] == block[None, :]
    out, probs = att(x, mask)
    ref_out, ref_probs = _dense_reference(att, x, mask, allowed)
    assert torch.allclose(out, ref_out, atol=1e-5) and torch.allclose(probs, ref_probs, atol=1e-6)
    if n >= 36:  # really sparse: visual rows do not see the next block's visual tokens
        assert not allowed[G, G + 4:].any()


@pytest.mark.parametrize("n", [9, 13, 36, 50])
def test_lowrank_equals_explicit_segment_means(n):
    torch.manual_seed(0)
    att = MODULES["lowrank"]().eval()
    T = G + n
    x, mask = torch.randn(2, T, D), additive(2, T, [2, L])
    mask[1, ..., G + 1] = MASK_VALUE  # a masked visual token: out of its landmark's mean
    out, probs = att(x, mask)
    q, k, v = _heads4(att, x)
    s = math.ceil(n / 4)
    for b in range(2):
        real = [t for t in range(n) if mask[b, 0, 0, G + t] == 0]
        segments = [[t for t in real if j * s <= t < (j + 1) * s] for j in range(math.ceil(n / s))]
        keys = torch.cat([k[b, :, :G]] + [k[b, :, [G + t for t in seg]].mean(1, keepdim=True) for seg in segments], 1)
        values = torch.cat([v[b, :, :G]] + [v[b, :, [G + t for t in seg]].mean(1, keepdim=True) for seg in segments], 1)
        bias = torch.cat([mask[b, 0, 0, :G], torch.tensor([math.log(len(seg)) for seg in segments])])
        p = (q[b] @ keys.transpose(-2, -1) * att.head_dim ** -0.5 + bias).softmax(-1)  # (nh, T, G + m)
        assert torch.allclose(out[b], att.proj((p @ values).transpose(0, 1).reshape(T, D)), atol=1e-5)
        expected = torch.zeros(NH, G, T)
        expected[:, :, :G] = p[:, :G, :G]
        for j, seg in enumerate(segments):
            for t in seg:
                expected[:, :, G + t] = p[:, :G, G + j] / len(seg)
        assert torch.allclose(probs[b], expected, atol=1e-6)
    assert probs[1, :, :, G + 1].max() == 0  # the masked visual token gets nothing


@pytest.mark.parametrize("name", sorted(MODULES))
def test_padded_inputs_do_not_leak_into_real_tokens(name):
    """Module level: whatever sits at masked positions, the real tokens' outputs are unchanged."""
    torch.manual_seed(0)
    att = MODULES[name]().eval()
    T = G + 36
    x, mask = torch.randn(1, T, D), additive(1, T, [2])
    other = x.clone()
    other[:, 3:G] = torch.randn(1, G - 3, D) * 10
    real = torch.ones(T, dtype=torch.bool)
    real[3:G] = False
    (a, pa), (b, pb) = att(x, mask), att(other, mask)
    assert torch.allclose(a[:, real], b[:, real], atol=1e-5)
    assert torch.allclose(pa[:, :, :3], pb[:, :, :3], atol=1e-6)  # [CLS] and the real text rows


@pytest.mark.parametrize("name", ATTENTION_VARIANTS)
@pytest.mark.parametrize("keep", [1.0, 0.5])
def test_padded_token_ids_do_not_change_the_model(name, keep):
    """Model level, every variant on its compressed / windowed path (36 and 18 visual tokens)."""
    torch.manual_seed(0)
    cfg = model_cfg(name, exit_pool="text")
    model = AdaptiveVLModel(cfg).eval()
    g = torch.Generator().manual_seed(1)
    pixels = torch.randn(2, 3, 48, 48, generator=g)
    ids = torch.randint(2, cfg.vocab_size, (2, cfg.max_text_len), generator=g)
    mask = torch.ones(2, cfg.max_text_len, dtype=torch.long)
    mask[0, 4:] = 0
    other = ids.clone()
    other[0, 4:] = torch.randint(2, cfg.vocab_size, (cfg.max_text_len - 4,), generator=g)
    a, b = model(pixels, ids, mask, keep_ratio=keep), model(pixels, other, mask, keep_ratio=keep)
    for la, lb in zip(a.logits, b.logits):
        assert torch.allclose(la, lb, atol=1e-5)
    real = torch.cat([torch.ones(5, dtype=torch.bool), torch.zeros(cfg.max_text_len - 4, dtype=torch.bool),
                      torch.ones(cfg.kept_tokens(keep), dtype=torch.bool)])
    assert torch.allclose(a.hidden[-1][0, real], b.hidden[-1][0, real], atol=1e-5)
    if keep < 1:
        assert torch.equal(a.kept_index, b.kept_index)


@pytest.mark.parametrize("name", ATTENTION_VARIANTS)
def test_every_variant_feeds_the_prefilter_teacher(name):
    torch.manual_seed(0)
    cfg = model_cfg(name)
    model = AdaptiveVLModel(cfg)
    pixels, ids = torch.randn(2, 3, 48, 48), torch.randint(2, 64, (2, cfg.max_text_len))
    mask = torch.ones(2, cfg.max_text_len, dtype=torch.long)
    mask[0, 3:] = 0
    out = model(pixels, ids, mask, return_attention=True, score_all=True)
    assert len(out.attention) == cfg.depth
    teacher = attention_teacher(out.attention, mask, cfg.max_text_len)
    assert teacher.shape == (2, cfg.num_patches) and (teacher >= 0).all()
    assert torch.allclose(teacher.sum(-1), torch.ones(2), atol=1e-5)


@pytest.mark.parametrize("n", [0, 36])
def test_stage_traces_with_torch_export(n):
    """Static shapes only: each variant's stage traces (also with every visual token dropped)."""
    for name in ("lowrank", "crossmodal"):
        att = MODULES[name]().eval()
        x, mask = torch.randn(1, G + n, D), additive(1, G + n, [3])
        program = torch.export.export(att, (x, mask), strict=False)
        assert torch.allclose(program.module()(x, mask)[0], att(x, mask)[0], atol=1e-6)


def test_efficient_variants_cost_fewer_flops():
    """FlopCounterMode at 144 visual tokens (96 px, 8 px patches): every stage of lowrank and
    crossmodal costs less than full's, at every trained keep ratio; never more at 36 tokens."""
    flops = {}
    for patch in (8, 16):
        for name in ATTENTION_VARIANTS:
            torch.manual_seed(0)
            cfg = model_cfg(name, image_size=96, patch_size=patch, max_text_len=24, attention_rank=16,
                            attention_window=24)
            model = AdaptiveVLModel(cfg)
            flops[patch, name] = {k: stage_flops(model, k) for k in cfg.keep_ratios}
    for name in ("lowrank", "crossmodal"):
        for keep in (1.0, 0.5, 0.25):
            small, big, full_small, full_big = (flops[8, name][keep], flops[16, name][keep],
                                                flops[8, "full"][keep], flops[16, "full"][keep])
            assert all(v <= f for v, f in zip(big, full_big))
            if keep >= 0.5:  # 144 and 72 visual tokens
                assert all(v < f for v, f in zip(small, full_small)), (name, keep, small, full_small)
    assert sum(flops[8, "lowrank"][1.0]) < 0.75 * sum(flops[8, "full"][1.0])
    assert sum(flops[8, "crossmodal"][1.0]) < 0.8 * sum(flops[8, "full"][1.0])


EXPORTED_VARIANTS = ["lowrank", "crossmodal"]  # every efficient variant: read by test_export's coverage check
# The keep ratios each variant is exported at (each ratio's stages are converted for every target and
# precision: the test's cost). Low rank is exported at both: 36 visual tokens cut into whole segments
# (rank 4), 18 padded to them. The cross-modal blocks (window 4) take the same two paths at 36 and 18
# tokens; it is exported at 0.5 only, the padded blocks (the tiled path is the same code without the
# padding and the final slice, and its PyTorch outputs are checked above).
EXPORT_RATIOS = {"lowrank": [1.0, 0.5], "crossmodal": [0.5]}


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPORTED_VARIANTS)
def test_tiny_model_trains_exports_everywhere_and_runs_in_the_engine(name, tmp_path):
    """4 training steps, then ONNX + ExecuTorch + Core ML, fp32 and int8, parity-checked by the
    export itself, then the Engine answers as PyTorch does (the export case of each variant:
    tests/test_export.py's architecture variants leave attention to this test)."""
    import json

    from mmedge.bundle.manifest import load_manifest
    from mmedge.data.batches import generate
    from mmedge.export.exporter import export_bundle
    from mmedge.export.recipe import ExportRecipe
    from mmedge.models.predictor import TorchPredictor
    from mmedge.runtime.engine import Engine
    from mmedge.train.config import TrainConfig
    from mmedge.train.trainer import Trainer

    from conftest import TINY, TINY_RECIPE

    cfg = {**TINY, "steps": 4, "eval_every": 4, "checkpoint_every": 4,
           "model": {**TINY["model"], "depth": 2, "attention": name, "attention_rank": 4, "attention_window": 4}}
    Trainer(TrainConfig(**cfg), tmp_path / "model", progress=False).fit()
    assert json.loads((tmp_path / "model" / "config.json").read_text())["attention"] == name
    # 36 (and 18) visual tokens after 1 + 24: rank 4 and window 4 take the compressed / windowed paths.
    recipe = ExportRecipe(quantize="int8", in_graph=False, ort_format=False,
                          **{**TINY_RECIPE, "keep_ratios": EXPORT_RATIOS[name]})
    bundle = export_bundle(tmp_path / "model", tmp_path / "b.mmedge", recipe, log=lambda *_: None)
    manifest = load_manifest(bundle)
    kinds = {(a["target"], a["precision"]) for a in manifest["artifacts"]}
    assert kinds >= {(t, p) for t in ("onnx", "executorch", "coreml") for p in ("fp32", "int8")}
    for a in manifest["artifacts"]:
        if a["target"] == "coreml":
            assert a["structure_check"]["passed"]
        elif a["target"] != "torch":
            assert a["parity"]["passed"], (a["target"], a["format"], a["precision"])
            if a["precision"] == "fp32":
                for p in a["parity"]["by_keep_ratio"].values():
                    assert all(s["logits_max_abs_err"] <= 1e-4 for s in p["stages"])
    reference = TorchPredictor(tmp_path / "model")
    samples = generate("vqa", 0, "test", range(4), 48)
    for backend in ("onnxruntime", "executorch"):
        engine = Engine.load(bundle, backend=backend, policy="full")
        for ratio in EXPORT_RATIOS[name]:
            for s in samples:
                got, ref = engine.predict(s.image, s.text, keep_ratio=ratio), reference.predict(s.image, s.text, ratio)
                assert got.answer == ref.answer
                assert got.confidence == pytest.approx(ref.exits[-1].confidence, abs=1e-4)
                assert got.max_probability == pytest.approx(ref.exits[-1].max_probability, abs=1e-4)
    # and `mmedge bench` measures them like any bundle: every standard policy, a valid result
    from mmedge.bench.host import bench_host
    from mmedge.bench.report import validate

    result = bench_host(bundle, backend="onnxruntime", samples=4, repeats=1, warmup=1, progress=False)
    assert validate(result) == [] and len(result["policies"]) >= 4
    assert all(p["latency"]["n"] == 4 for p in result["policies"].values())

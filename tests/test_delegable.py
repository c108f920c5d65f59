"""ExecuTorch export rewrites (mmedge.export.delegable): the same function, and no layer norm or
linear layer left outside the XNNPACK delegate of a real lowered stage."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmedge.data.tasks import LABELS
from mmedge.export.delegable import DelegableLayerNorm, DelegableQKV, delegable_copy
from mmedge.export.stages import example_inputs, stage_module, stage_specs
from mmedge.models.config import ModelConfig
from mmedge.models.model import AdaptiveVLModel


def test_delegable_layer_norm_equals_layer_norm():
    torch.manual_seed(0)
    norm = nn.LayerNorm(24)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(3, 7, 24) * 5 + 2
    assert torch.allclose(DelegableLayerNorm(norm)(x), norm(x), atol=1e-5)
    with pytest.raises(ValueError, match="last dimension"):
        DelegableLayerNorm(nn.LayerNorm([4, 6]))


def tiny(attention: str = "full") -> AdaptiveVLModel:
    """36 visual tokens: more than lowrank's 16 landmarks, so it compresses."""
    torch.manual_seed(0)
    cfg = ModelConfig(labels=list(LABELS["vqa"]), vocab_size=32, dim=32, depth=2, num_heads=2, image_size=48,
                      patch_size=8, max_text_len=8, attention=attention)
    return AdaptiveVLModel(cfg).eval()


@pytest.mark.parametrize("attention", ["full", "lowrank", "crossmodal"])
def test_the_rewrite_copies_and_keeps_the_model_function(attention):
    model = tiny(attention)
    rewritten = delegable_copy(model)
    assert any(isinstance(m, nn.LayerNorm) for m in model.modules())  # the original is untouched
    assert not any(isinstance(m, DelegableQKV) for m in model.modules())
    assert not any(isinstance(m, nn.LayerNorm) for m in rewritten.modules())
    assert sum(isinstance(m, DelegableQKV) for m in rewritten.modules()) == 2  # one per layer
    pixels, ids = torch.randn(2, 3, 48, 48), torch.randint(2, 32, (2, 8))
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[0, 3:] = 0
    for a, b in zip(model(pixels, ids, mask).logits, rewritten(pixels, ids, mask).logits):
        assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("attention", ["full", "lowrank"])
def test_no_layer_norm_or_linear_runs_outside_the_xnnpack_delegate(attention):
    pytest.importorskip("executorch")
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    def outside(model) -> list[str]:
        spec = [s for s in stage_specs(model, [1.0]) if s.stage == 1][0]
        program = torch.export.export(stage_module(model, spec), example_inputs(model, spec), strict=False)
        graph = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).exported_program().graph
        return [str(n.target) for n in graph.nodes if n.op == "call_function"]

    model = tiny(attention)
    before, after = outside(model), outside(delegable_copy(model))
    assert any("layer_norm" in t for t in before)  # the reasons for the rewrite
    if attention == "lowrank":  # q and k, v projected from slices of the fused weight
        assert any("addmm" in t or "linear" in t for t in before)
    assert not any("layer_norm" in t or "addmm" in t or "linear" in t or t.endswith(".mm.default") for t in after)

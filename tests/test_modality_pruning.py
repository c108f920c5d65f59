"""Modality pruning: text-only stages after a chosen stage, exported with parity, a per-input rule the
Engine applies, calibration that may choose or refuse it, and the manifest section that describes it."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mmedge.bundle.manifest import consistency_problems, load_manifest, validate_schema
from mmedge.errors import BundleError, ConfigError
from mmedge.runtime.calibrate import ExitTable, PrunedTable, choose, evaluate_policy
from mmedge.runtime.controller import Policy
from mmedge.runtime.pruning import PruningRule, signal_value

REPO = Path(__file__).resolve().parents[1]
# One keep ratio: the text-only stages after the pruning point are the same for every keep ratio (the
# [CLS] + text rows), so a second ratio would only convert three more visual stages for every target.
RECIPE = dict(keep_ratios=[1.0], parity_samples=6, in_graph=False, drop_visual_after=0, drop_visual_samples=40)


def _tiny_model(depth: int = 3):
    from mmedge.models.config import ModelConfig
    from mmedge.models.model import AdaptiveVLModel

    torch.manual_seed(0)
    cfg = ModelConfig(labels=["a", "b", "c"], vocab_size=40, dim=32, depth=depth, num_heads=2, image_size=48,
                      patch_size=8, max_text_len=24, exit_pool="text")
    return AdaptiveVLModel(cfg).eval()


@pytest.fixture(scope="module")
def pruned_bundle(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model with text-only stages after stage 0, to every target (fp32)."""
    from mmedge.export.exporter import export_bundle
    from mmedge.export.recipe import ExportRecipe

    out = tmp_path_factory.mktemp("pruned") / "tiny-pruned.mmedge"
    return export_bundle(tiny_model_dir, out, ExportRecipe(**RECIPE), log=lambda *_: None)


# ------------------------------------------------------------------------------------------ stages
def test_text_stage_shapes_and_equivalence_to_slicing():
    from mmedge.export.stages import example_inputs, stage_module, stage_specs, text_stage_specs

    model = _tiny_model()
    specs = text_stage_specs(model, 0)
    assert [s.name for s in specs] == ["text_stage1", "text_stage2"]
    assert all(s.seq_len == 1 + 24 and s.text_only for s in specs)
    for spec in specs:
        hidden, logits, conf = stage_module(model, spec)(*example_inputs(model, spec))
        assert tuple(hidden.shape) == (1, 25, 32) and tuple(logits.shape) == (1, 3) and tuple(conf.shape) == (1,)
    # the text-only chain = the model's own stages on the [CLS] + text rows (the probe's ablation)
    full = stage_specs(model, [1.0])
    x = example_inputs(model, full[0])
    with torch.no_grad():
        h, mask, *_ = stage_module(model, full[0])(*x)
        expect = model.forward_stage(1, h[:, :25], mask[:, :25])[1]
        got = stage_module(model, specs[0])(h[:, :25], mask[:, :25])[1]
    torch.testing.assert_close(got, expect)
    assert text_stage_specs(model, 1)[0].name == "text_stage2"
    for bad in (-1, 2, 7):  # the last stage has nothing after it
        with pytest.raises(ConfigError, match="drop_visual_after"):
            text_stage_specs(model, bad)


def test_recipe_refuses_bad_pruning_fields():
    from mmedge.export.recipe import ExportRecipe

    with pytest.raises(ConfigError) as err:
        ExportRecipe(drop_visual_after=-1, drop_visual_signal="loudness", drop_visual_when="sideways",
                     drop_visual_threshold=float("nan"), drop_visual_min_agreement=2.0)
    assert len(err.value.problems) == 5


def test_signal_by_hand():
    # [CLS], 2 text slots (1 real), 2 visual tokens
    hidden = np.zeros((1, 5, 2), np.float32)
    hidden[0, 1] = [3, 4]      # real text token, norm 5
    hidden[0, 2] = [100, 0]    # padding: ignored
    hidden[0, 3] = [0, 2]      # visual, norm 2
    hidden[0, 4] = [6, 8]      # visual, norm 10
    mask = np.array([[1, 1, 0, 1, 1]], np.float32)
    assert signal_value("visual_norm", hidden, mask, 2) == pytest.approx(6.0)
    assert signal_value("visual_text_norm_ratio", hidden, mask, 2) == pytest.approx(6.0 / 5.0)
    assert np.isnan(signal_value("visual_norm", hidden[:, :3], mask[:, :3], 2))  # no visual tokens
    rule = PruningRule("visual_text_norm_ratio", "below", 1.2)
    assert rule.fires(1.2) and not rule.fires(1.2001) and not rule.fires(float("nan"))
    assert PruningRule("visual_norm", "above", 5.0).fires(6.0)
    with pytest.raises(ConfigError):
        PruningRule("visual_norm", "below", float("inf"))


def test_default_threshold_prunes_most_within_the_agreement():
    from mmedge.export.pruning import default_threshold

    values = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    agree = np.array([True, True, False, True, True])
    assert default_threshold(values, agree, "below", 1.0) == pytest.approx(0.2)   # stops before the change
    assert default_threshold(values, agree, "below", 0.8) == pytest.approx(0.5)   # one change in five allowed
    assert default_threshold(values, agree, "above", 1.0) == pytest.approx(0.4)
    never = default_threshold(values, np.zeros(5, bool), "below", 1.0)
    assert not any(PruningRule("visual_norm", "below", never).fires(v) for v in values)


# ------------------------------------------------------------------------------------------ export
def test_export_has_parity_for_the_pruned_stages_in_every_target(pruned_bundle):
    m = load_manifest(pruned_bundle)
    p = m["modality_pruning"]
    assert p["after_stage"] == 0 and p["seq_len"] == 25
    assert [s["name"] for s in p["stages"]] == ["text_stage1", "text_stage2"]
    assert [s["inputs"][0]["shape"] for s in p["stages"]] == [[1, 25, 32]] * 2
    assert p["rule"]["signal"] == "visual_text_norm_ratio" and p["rule"]["source"] == "export"
    full_flops = {k["keep_ratio"]: k["exit_flops"] for k in m["keep_ratios"]}
    for e in p["exit_flops"]:  # the same to the pruning stage, cheaper after it
        assert e["exit_flops"][0] == full_flops[e["keep_ratio"]][0]
        assert e["exit_flops"][-1] < full_flops[e["keep_ratio"]][-1]
    targets = set()
    for a in m["artifacts"]:
        assert {"text_stage1", "text_stage2"} <= set(a["stages"])
        targets.add(a["target"])
        if a["parity"]["status"] == "measured":
            pruned = a["parity"]["modality_pruning"]
            assert set(pruned) == {"1.0"} and a["parity"]["passed"]
            for r in pruned.values():
                assert r["passed"] and len(r["stages"]) == 3
                assert max(s["logits_max_abs_err"] for s in r["stages"]) <= 1e-4
    assert targets == {"onnx", "executorch", "coreml", "torch"}
    coreml = next(a for a in m["artifacts"] if a["target"] == "coreml")
    assert coreml["structure_check"]["functions"] == 3 + 2  # 3 stages at the one keep ratio + 2 text-only


def test_pruned_parity_failure_refuses_the_export(tiny_model_dir, tmp_path, monkeypatch):
    """Break only the text-only stages in ONNX: the export must fail and leave nothing."""
    from mmedge.export import exporter, onnx_target
    from mmedge.export.recipe import ExportRecipe
    from mmedge.export.stages import LaterStage

    real = onnx_target.stage_module

    class Broken(LaterStage):
        def forward(self, hidden_in, attention_mask):
            hidden, logits, conf = super().forward(hidden_in, attention_mask)
            return hidden, logits + 1.0, conf

    def module(model, spec):
        return Broken(model, spec.stage).eval() if spec.text_only else real(model, spec)

    monkeypatch.setattr(onnx_target, "stage_module", module)
    out = tmp_path / "broken.mmedge"
    recipe = ExportRecipe(targets=["onnx"], keep_ratios=[1.0], parity_samples=2, in_graph=False, ort_format=False,
                          drop_visual_after=1, drop_visual_samples=4)
    with pytest.raises(Exception, match="visual tokens dropped after stage 1"):
        exporter.export_bundle(tiny_model_dir, out, recipe, log=lambda *_: None)
    assert not out.exists()


# ------------------------------------------------------------------------------------------ engine
def _hand_signal(model, feeds: dict) -> float:
    """visual / text mean token norm after stage 0, computed with torch from the model itself."""
    with torch.no_grad():
        emb = model.embed(torch.from_numpy(feeds["pixel_values"]), torch.from_numpy(feeds["input_ids"]).long(),
                          torch.from_numpy(feeds["text_mask"]).float())
        hidden, _, _ = model.forward_stage(0, emb.hidden, emb.mask)
    L = model.config.max_text_len
    norms = hidden[0].norm(dim=-1)
    m = torch.from_numpy(feeds["text_mask"][0]).float()
    return float(norms[1 + L:].mean() / ((norms[1: 1 + L] * m).sum() / m.sum()))


@pytest.mark.parametrize("backend", ["onnxruntime", "executorch"])
def test_engine_takes_the_pruned_path_exactly_when_the_rule_fires(pruned_bundle, tiny_model_dir, backend):
    from mmedge.data.batches import generate
    from mmedge.models.checkpoint import from_pretrained
    from mmedge.runtime.engine import Engine

    model, _ = from_pretrained(tiny_model_dir)
    model.eval()
    engine = Engine.load(pruned_bundle, backend=backend, policy=Policy("full"))
    samples = generate("vqa", 0, "test", range(12), 48)
    feeds = [engine.preprocess(s.image, s.text) for s in samples]
    hand = np.array([_hand_signal(model, f) for f in feeds])
    threshold = float(np.median(hand))
    rule = PruningRule("visual_text_norm_ratio", "below", threshold)
    fired = 0
    for s, h in zip(samples, hand):
        if abs(h - threshold) < 1e-4:
            continue  # a tie within float error may go either way
        p = engine.predict(s.image, s.text, pruning=rule)
        assert p.pruning_signal == pytest.approx(h, rel=1e-4)
        assert (p.visual_dropped_after == 0) == (h <= threshold)
        fired += p.visual_dropped_after == 0
        if p.visual_dropped_after == 0:
            assert "text_stage1" in p.timings_ms and "k36_stage1" not in p.timings_ms
        else:
            assert "k36_stage1" in p.timings_ms and "text_stage1" not in p.timings_ms
        off = engine.predict(s.image, s.text, pruning=None)
        assert off.visual_dropped_after is None and off.pruning_signal is None
    assert 0 < fired < len(samples)
    # the pruned answer is the model's own on [CLS] + text after stage 0
    always = PruningRule("visual_text_norm_ratio", "below", 1e9)
    for s, f in zip(samples[:4], feeds[:4]):
        with torch.no_grad():
            emb = model.embed(torch.from_numpy(f["pixel_values"]), torch.from_numpy(f["input_ids"]).long(),
                              torch.from_numpy(f["text_mask"]).float())
            h, _, _ = model.forward_stage(0, emb.hidden, emb.mask)
            h, m = h[:, :25], emb.mask[:, :25]
            for stage in (1, 2):
                h, logits, _ = model.forward_stage(stage, h, m)
        assert engine.predict(s.image, s.text, pruning=always).answer == engine.labels[int(logits.argmax())]
    # an exit before the pruning stage ends the query: no signal, nothing dropped
    early = engine.predict(samples[0].image, samples[0].text, policy=Policy("confidence", threshold=0.0), pruning=always)
    assert early.exit_index == 0 and early.visual_dropped_after is None


SHIPPED_BUNDLE = REPO / "models" / "vqa-default" / "bundles" / "vqa-default-onnx.mmedge"


def test_engine_default_rule_and_bundles_without_the_section(pruned_bundle):
    from mmedge.runtime.engine import Engine

    engine = Engine.load(pruned_bundle, backend="onnxruntime")
    rule = load_manifest(pruned_bundle)["modality_pruning"]["rule"]
    assert engine.pruning == PruningRule(rule["signal"], rule["prune_when"], rule["threshold"])
    plain = Engine.load(SHIPPED_BUNDLE, backend="onnxruntime")
    assert plain.pruning is None and plain.pruning_section is None
    with pytest.raises(ConfigError, match="no text-only stages"):
        plain.predict(np.zeros((96, 96, 3), np.uint8), "what ?", pruning=PruningRule())
    assert plain.predict(np.zeros((96, 96, 3), np.uint8), "what ?").visual_dropped_after is None


# ------------------------------------------------------------------------------------------ calibrate
def _tables(pruned_right: bool):
    """3 exits; exit 0 is never confident, exits 1 and 2 are right. The pruned path after stage 0 is
    right (or wrong) for every sample whose signal is below 0.5, i.e. half of them."""
    rng = np.random.default_rng(0)
    n = 400
    labels = rng.integers(0, 3, n)
    wrong = (labels + 1) % 3
    answers = np.stack([wrong, labels, labels], 1)
    conf = np.stack([np.full(n, 0.1), np.full(n, 0.95), np.full(n, 0.99)], 1)
    signal = rng.random(n)
    pruned_answers = answers.copy()
    if not pruned_right:
        pruned_answers[signal < 0.5, 1:] = wrong[signal < 0.5, None]
    pruned = PrunedTable(PruningRule("visual_text_norm_ratio", "below", 0.0), signal, pruned_answers, conf.copy(),
                         conf.copy(), [10, 14, 18])
    return labels, {1.0: ExitTable(1.0, answers, conf, conf.copy(), [10, 20, 30], pruned)}


def test_calibrate_chooses_pruning_when_it_keeps_the_answers():
    labels, tables = _tables(pruned_right=True)
    result = choose(labels, tables, max_drop=0.0)
    chosen = result["chosen"]
    assert chosen["pruning"] is not None and chosen["pruning"]["fires_share"] == 1.0
    assert chosen["accuracy"] == 1.0 and chosen["mean_flops"] == pytest.approx(14.0)  # pruned, exit 1


def test_calibrate_refuses_pruning_that_changes_answers():
    labels, tables = _tables(pruned_right=False)
    chosen = choose(labels, tables, max_drop=0.0)["chosen"]
    assert chosen["accuracy"] == 1.0 and chosen["mean_flops"] == pytest.approx(20.0)
    assert chosen["pruning"] is None  # every candidate threshold prunes some of the low-signal half: refused
    assert any(r["pruning"] is not None and not r["within_bound"] for r in choose(labels, tables, 0.0)["table"]) \
        or all(r["pruning"] is None for r in choose(labels, tables, 0.0)["table"])
    correct, _ = evaluate_policy(Policy("full"), tables[1.0], labels, PruningRule("visual_text_norm_ratio", "below", 1.0))
    assert correct.mean() == pytest.approx(np.mean(tables[1.0].pruned.signal >= 0.5))


def test_calibrate_writes_the_rule_into_a_valid_manifest(pruned_bundle, tmp_path):
    from mmedge.runtime.calibrate import calibrate

    bundle = tmp_path / "cal.mmedge"
    shutil.copytree(pruned_bundle, bundle)
    result = calibrate(bundle, max_drop=0.05, samples=100, backend="onnxruntime", progress=False)
    m = load_manifest(bundle)  # still valid, every hash intact
    rule = m["modality_pruning"]["rule"]
    assert rule["source"] == "calibrated"
    chosen = result["chosen"]
    if chosen is not None:
        assert rule["enabled"] == (chosen["pruning"] is not None)
        if chosen["pruning"] is not None:
            assert rule["threshold"] == chosen["pruning"]["threshold"]
    assert any(r["pruning"] is not None for r in result["table"]) or chosen is None


# ------------------------------------------------------------------------------------------ manifest
def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def test_manifest_section_is_checked(pruned_bundle):
    m = _manifest(pruned_bundle)
    assert validate_schema(m) == [] and consistency_problems(m) == []
    bad = copy.deepcopy(m)
    bad["modality_pruning"]["after_stage"] = 2  # the last stage: nothing after it
    assert any("after_stage 2" in p for p in consistency_problems(bad))
    bad = copy.deepcopy(m)
    bad["modality_pruning"]["after_stage"] = 1  # stages no longer those after it
    assert any("must be [2]" in p for p in consistency_problems(bad))
    bad = copy.deepcopy(m)
    bad["modality_pruning"]["after_stage"] = -1
    assert validate_schema(bad)
    bad = copy.deepcopy(m)
    bad["modality_pruning"]["seq_len"] = 26
    assert any("seq_len" in p for p in consistency_problems(bad))
    bad = copy.deepcopy(m)
    del bad["artifacts"][0]["stages"]["text_stage2"]
    assert any("lacks the modality_pruning stages" in p for p in consistency_problems(bad))
    bad = copy.deepcopy(m)
    bad["modality_pruning"]["rule"]["signal"] = "loudness"
    assert validate_schema(bad)
    bad = copy.deepcopy(m)
    bad["modality_pruning"]["exit_flops"].pop()
    assert any("exit_flops" in p for p in consistency_problems(bad))


def test_missing_text_stage_file_is_refused(pruned_bundle, tmp_path):
    bundle = tmp_path / "b.mmedge"
    shutil.copytree(pruned_bundle, bundle)
    onnx = next(a for a in _manifest(bundle)["artifacts"] if a["format"] == "onnx" and a["precision"] == "fp32")
    (bundle / onnx["stages"]["text_stage2"]["file"]).unlink()
    with pytest.raises(BundleError, match="missing"):
        load_manifest(bundle)
    # and a manifest that names a text-only file it does not list with a hash
    m = _manifest(pruned_bundle)
    rel = onnx["stages"]["text_stage2"]["file"]
    del m["files"][rel]
    bundle2 = tmp_path / "c.mmedge"
    shutil.copytree(pruned_bundle, bundle2)
    (bundle2 / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="does not list"):
        load_manifest(bundle2)


def test_bundles_without_the_section_stay_valid():
    m = load_manifest(SHIPPED_BUNDLE)
    assert "modality_pruning" not in m


def test_slim_bundle_keeps_the_text_only_stages(pruned_bundle, tmp_path):
    from mmedge.bundle.slim import slim_bundle
    from mmedge.runtime.engine import Engine

    out = tmp_path / "slim.mmedge"
    slim_bundle(pruned_bundle, out, runtime="onnxruntime", fmt="onnx", precision="fp32", keep_ratios=[1.0],
                in_graph=False)
    m = load_manifest(out)
    assert [e["keep_ratio"] for e in m["modality_pruning"]["exit_flops"]] == [1.0]
    engine = Engine.load(out)
    p = engine.predict(np.zeros((48, 48, 3), np.uint8), "what color is the circle ?",
                       policy=Policy("full"), pruning=PruningRule("visual_text_norm_ratio", "below", 1e9))
    assert p.visual_dropped_after == 0


def test_policy_rows_add_the_pruning_rows(pruned_bundle):
    from mmedge.runtime.controller import policy_rows

    rows = policy_rows(load_manifest(pruned_bundle))
    assert list(rows)[-2:] == ["modality pruning only", "prefilter + exits + pruning"]
    assert all(rule is None for name, (_, _, rule) in rows.items() if "pruning" not in name)
    assert all(isinstance(rows[n][2], PruningRule) for n in ("modality pruning only", "prefilter + exits + pruning"))
    assert "modality pruning only" not in policy_rows(load_manifest(SHIPPED_BUNDLE))


def test_vectorised_exits_equal_the_controller():
    from mmedge.runtime.calibrate import candidates, exits_taken
    from mmedge.runtime.controller import decide_offline

    rng = np.random.default_rng(1)
    answers, conf, maxp = rng.integers(0, 3, (200, 4)), rng.random((200, 4)), rng.random((200, 4))
    conf[:5] = 0.9  # exact ties with a threshold
    for policy in candidates(4):
        want = [decide_offline(policy, answers[i], conf[i], maxp[i]) for i in range(200)]
        assert exits_taken(policy, answers, conf, maxp).tolist() == want, policy

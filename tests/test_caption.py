"""Captioning: the decoder's KV-cache step, the copy-forward of skipped layers, decoding, metrics,
export parity (ONNX, ExecuTorch; Core ML structurally), the CaptionEngine and calibration."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mmedge.caption.calibrate import calibrate_bundle, evaluate_policy, torch_decoder, validation_set
from mmedge.caption.checkpoint import is_caption_dir, load_caption_model
from mmedge.caption.config import CaptionConfig
from mmedge.caption.data import IGNORE, caption_tokenizer, decode_caption, encode_caption, scene_batch
from mmedge.caption.decode import _word_step, decoder_cost, generate
from mmedge.caption.metrics import caption_scores
from mmedge.caption.model import CaptionModel
from mmedge.caption.train import CaptionTrainConfig, CaptionTrainer
from mmedge.errors import BundleError, ConfigError
from mmedge.runtime.controller import Policy

TINY_CAPTION = {"steps": 30, "batch_size": 16, "eval_every": 15, "eval_samples": 16, "checkpoint_every": 15,
                "log_every": 5, "warmup_steps": 5, "threads": 1, "train_keep_ratios": [1.0, 0.5],
                "model": {"dim": 32, "encoder_depth": 1, "decoder_depth": 2, "num_heads": 2, "image_size": 48,
                          "patch_size": 8, "keep_ratios": [1.0, 0.5]}}


def _model(seed: int = 0, **overrides) -> tuple[CaptionModel, object]:
    tok = caption_tokenizer(24)
    torch.manual_seed(seed)
    cfg = CaptionConfig(vocab_size=len(tok.vocab), **{**TINY_CAPTION["model"], "decoder_depth": 3, **overrides})
    return CaptionModel(cfg).eval(), tok


@pytest.fixture(scope="session")
def tiny_captioner(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny_captioner")
    CaptionTrainer(CaptionTrainConfig(**TINY_CAPTION), out, progress=False).fit()
    return out


@pytest.fixture(scope="session")
def tiny_caption_bundle(tiny_captioner, tmp_path_factory) -> Path:
    from mmedge.caption.export import export_caption_bundle

    out = tmp_path_factory.mktemp("caption_bundles") / "tiny.mmedge"
    export_caption_bundle(tiny_captioner, out, ("onnx", "executorch", "coreml"), int8=True, parity_images=6,
                          log=lambda *_: None)
    return out


# ------------------------------------------------------------------------------------- model
def test_tokenizer_and_encoding_round_trip():
    tok = caption_tokenizer(24)
    assert [tok.vocab[t] for t in ("[PAD]", "[UNK]", "[BOS]", "[EOS]")] == [0, 1, 2, 3]
    ids = encode_caption(tok, "a small red circle .", 24)
    assert ids.shape == (25,) and ids[0] == 2 and ids[6] == 3 and (ids[7:] == 0).all()
    assert decode_caption(tok, ids[1:]) == "a small red circle ."
    batch = scene_batch(0, "train", range(3), tok, 48, 24)
    assert batch.inputs.shape == batch.targets.shape == (3, 24)
    assert (batch.targets[batch.inputs == 0] == IGNORE).all()  # no loss after [EOS]


def test_kv_cache_step_equals_full_recompute():
    model, tok = _model()
    batch = scene_batch(0, "val", range(3), tok, 48, 24)
    pixels, inputs = torch.from_numpy(batch.pixels), torch.from_numpy(batch.inputs)
    with torch.no_grad():
        full = model(pixels, inputs)
        memory, _, _ = model.encode(pixels)
        cross_k, cross_v = model.cross_kv(memory)
        cache_k, cache_v = model.empty_cache(3)
        for pos in range(8):
            logits, exits = _word_step(model, inputs[:, pos], pos, cache_k, cache_v, cross_k, cross_v,
                                       Policy("full"), "copy")
            assert (exits == model.num_stages - 1).all()
            assert torch.allclose(logits, full.logits[-1][:, pos], atol=1e-5)


def test_skipped_layers_get_the_exiting_state_copied_forward():
    """A word that exits at stage 0 leaves, in every later layer's cache, the keys and values of
    the stage-0 state (CALM copy-forward); with kv=recompute they are the layers' own."""
    model, tok = _model(seed=1)
    pixels = torch.from_numpy(scene_batch(0, "val", range(2), tok, 48, 24).pixels)
    always_first = Policy("confidence", threshold=0.0)  # stops at the first exit
    with torch.no_grad():
        memory, _, _ = model.encode(pixels)
        cross_k, cross_v = model.cross_kv(memory)
        token = torch.full((2,), model.config.bos_id)
        position = torch.tensor([0])
        write, visible = model.position_masks(position)
        x0 = model.embed_word(token, position)
        empty_k, empty_v = model.empty_cache(2)
        inputs = [x0]  # inputs[l]: what layer l sees when every layer runs
        for layer in range(model.config.decoder_depth):
            h, _, _ = model.decoder[layer].step(inputs[-1], write, visible, empty_k[layer], empty_v[layer],
                                                 cross_k[layer], cross_v[layer])
            inputs.append(h)
        h0 = inputs[1]  # the state after stage 0, where every row exits
        for kv in ("copy", "recompute"):
            cache_k, cache_v = model.empty_cache(2)
            _, exits = _word_step(model, token, 0, cache_k, cache_v, cross_k, cross_v, always_first, kv)
            assert (exits == 0).all()
            for layer in range(1, model.config.decoder_depth):
                want_k, want_v = model.decoder[layer].self_kv(h0 if kv == "copy" else inputs[layer])
                assert torch.allclose(cache_k[layer][:, :, :1], want_k, atol=1e-5), (kv, layer)
                assert torch.allclose(cache_v[layer][:, :, :1], want_v, atol=1e-5), (kv, layer)
            last = model.config.decoder_depth - 1  # its copied keys are not what running layer 1 would give
            real_k, _ = model.decoder[last].self_kv(inputs[last])
            assert torch.allclose(cache_k[last][:, :, :1], real_k, atol=1e-4) == (kv == "recompute")
            assert torch.count_nonzero(cache_k[:, :, :, 1:]) == 0  # nothing written past the position


def test_fill_graph_writes_what_the_frozen_row_writes():
    model, _ = _model(seed=2)
    x = torch.randn(1, 1, model.config.dim)
    position = torch.tensor([5])
    cache_k, cache_v = model.empty_cache(1)
    after = list(model.layers_after(0))
    k, v = model.fill_after(0, x, position, cache_k[after], cache_v[after])
    for j, layer in enumerate(after):
        want_k, want_v = model.decoder[layer].self_kv(x)
        assert torch.allclose(k[j][:, :, 5:6], want_k, atol=1e-6) and torch.allclose(v[j][:, :, 5:6], want_v, atol=1e-6)
        assert torch.count_nonzero(k[j][:, :, :5]) == 0


def test_top_k_picks_what_a_stable_sort_of_the_whole_vocabulary_picks():
    """The decoding loop's top-k (largest first, ties by lower index) without sorting every score."""
    from mmedge.runtime.generate import top_k

    rng = np.random.default_rng(0)
    for trial in range(400):
        n = int(rng.integers(1, 40))
        scores = rng.integers(0, 4, n).astype(np.float32) if trial % 2 else rng.standard_normal(n)  # ties, none
        for k in (1, 2, 3, 5, n, n + 1):
            assert top_k(scores, k).tolist() == np.argsort(-scores, kind="stable")[:k].tolist(), (scores, k)


def test_generate_greedy_beam_and_exits():
    model, tok = _model(seed=3)
    pixels = torch.from_numpy(scene_batch(0, "val", range(4), tok, 48, 24).pixels)
    greedy = generate(model, pixels, max_len=7)
    assert all(1 <= len(t) <= 7 and len(t) == len(e) for t, e in zip(greedy.tokens, greedy.exits))
    assert all(e == model.num_stages - 1 for ex in greedy.exits for e in ex)
    beam1 = generate(model, pixels, max_len=7, beam=1)
    assert beam1.tokens == greedy.tokens
    beam = generate(model, pixels, max_len=7, beam=3)
    assert len(beam.tokens) == 4
    early = generate(model, pixels, policy=Policy("confidence", threshold=0.0), max_len=7)
    assert all(e == 0 for ex in early.exits for e in ex)
    with pytest.raises(ValueError, match="kv"):
        generate(model, pixels, kv="bogus")


def test_decoder_cost_prices_exits():
    model, _ = _model()
    cost = decoder_cost(model)
    S = model.num_stages
    assert cost.fill[-1] == 0 and all(f > 0 for f in cost.fill[:-1])
    assert cost.word(S - 1) == sum(cost.stage) == cost.full_depth(1)
    assert cost.word(0) == cost.stage[0] + cost.fill[0] < cost.word(S - 1)
    assert cost.word(0, "recompute") == sum(cost.stage) - sum(cost.head[1:])
    # the fill of every later layer is the keys/values projection: 2 x (D x 2D) multiply-adds per layer
    D = model.config.dim
    assert cost.fill[0] == (S - 1) * 2 * D * (2 * D)


# ------------------------------------------------------------------------------------- metrics
def test_bleu4_hand_computed():
    """hyp 'a small red circle .' against one 10-word reference: n-gram precisions 5/5, 3/4, 2/3, 1/2
    and brevity penalty exp(1 - 10/5)."""
    scores = caption_scores(["a small red circle ."], [["a small red circle and a large blue square ."]],
                            meteor=False)
    want = math.exp(1 - 10 / 5) * (1 * 3 / 4 * 2 / 3 * 1 / 2) ** 0.25
    assert scores.bleu4 == pytest.approx(want, abs=1e-4)


def test_cider_identical_distinct_captions_score_ten():
    """CIDEr-D of captions equal to their only reference, with no word shared between the two images
    and at least four words each: every n-gram order's cosine similarity is 1, so the score is 10
    (1000 on the x100 scale); with two words, orders 3 and 4 have no n-grams and score 0 (500)."""
    gen = ["red circle sits here", "blue square lies there"]
    scores = caption_scores(gen, [[g] for g in gen], meteor=False)
    assert scores.cider == pytest.approx(1000.0, abs=1e-3)
    assert scores.cider_per_image == pytest.approx([1000.0, 1000.0], abs=1e-3)
    short = ["red circle", "blue square"]
    assert caption_scores(short, [[g] for g in short], meteor=False).cider == pytest.approx(500.0, abs=1e-3)
    worse = caption_scores([gen[0], gen[0]], [[g] for g in gen], meteor=False)
    assert worse.cider == pytest.approx(500.0, abs=1e-3)  # one image right, one with nothing in common
    assert worse.cider_per_image == pytest.approx([1000.0, 0.0], abs=1e-3)


def test_drop_upper_limit_is_mean_plus_z_standard_errors():
    from mmedge.caption.calibrate import drop_upper

    base, other = [10.0, 10.0, 10.0, 10.0], [9.0, 11.0, 10.0, 8.0]  # differences 1, -1, 0, 2
    d = np.array([1.0, -1.0, 0.0, 2.0])
    assert drop_upper(base, other, 0.0) == pytest.approx(0.5)
    assert drop_upper(base, other, 1.645) == pytest.approx(0.5 + 1.645 * d.std(ddof=1) / 2)
    with pytest.raises(ValueError):
        caption_scores(["x"], [])


# ------------------------------------------------------------------------------------- training
def test_training_writes_a_loadable_caption_model(tiny_captioner):
    assert is_caption_dir(tiny_captioner)
    model, tok = load_caption_model(tiny_captioner)
    rows = [json.loads(r) for r in (tiny_captioner / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in rows if r["kind"] == "val"]
    assert len(val) == 2 and len(val[-1]["val_word_acc"]) == model.num_stages
    train = [r for r in rows if r["kind"] == "train"]
    assert train[-1]["loss"] < train[0]["loss"]


def test_caption_config_errors():
    with pytest.raises(ConfigError, match="exit_layers"):
        CaptionConfig(decoder_depth=2, exit_layers=[0])
    with pytest.raises(ConfigError, match="not a caption model field"):
        CaptionTrainConfig(model={"depth": 3})


# ------------------------------------------------------------------------------------- export + runtime
def test_export_parity_every_target(tiny_caption_bundle):
    m = json.loads((tiny_caption_bundle / "manifest.json").read_text())
    by = {(a["runtime"], a["precision"]): a for a in m["artifacts"]}
    assert set(by) == {("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("executorch", "fp32"), ("coreml", "fp32")}
    for key in (("onnxruntime", "fp32"), ("executorch", "fp32")):
        parity = by[key]["parity"]
        assert parity["passed"], parity
        for entry in parity["by_keep_ratio"].values():
            assert entry["identical_captions"] == 1.0 and entry["max_abs_logit_diff"] < 1e-3
    assert by[("onnxruntime", "int8")]["parity"]["status"] == "measured"
    assert by[("coreml", "fp32")]["parity"]["status"] == "not run"
    assert by[("coreml", "fp32")]["structure_check"]["passed"]
    assert sorted(m["graphs"]) == sorted(["encoder_k1", "encoder_k0.5", "step0_k1", "step1_k1", "step0_k0.5",
                                          "step1_k0.5", "fill0"])


def test_slim_caption_bundle_captions_as_the_full_one(tiny_caption_bundle, tmp_path, capsys):
    """`mmedge bundle` on a captioning bundle: one runtime, format and precision and the kept keep ratios, a
    bundle of the same kind that captions word for word and exit for exit as the full one; the thresholds'
    keep ratio must be kept, the in-graph variant is the classifier's only."""
    from mmedge.bundle.slim import bundle_bytes
    from mmedge.caption.data import scene_captions
    from mmedge.cli import main
    from mmedge.runtime.engine import Engine

    out = tmp_path / "slim.mmedge"
    assert main(["bundle", "--artifact", str(tiny_caption_bundle), "--runtime", "onnxruntime", "--precision", "int8",
                 "--keep-ratio", "1.0", "--out", str(out)]) == 0, capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "caption" and manifest["keep_ratios"] == [1.0]
    assert manifest["slim"] == {"source": json.loads((tiny_caption_bundle / "manifest.json").read_text())["name"],
                                "runtime": "onnxruntime", "format": "onnx", "precision": "int8",
                                "keep_ratios": [1.0], "in_graph": []}
    assert [(a["runtime"], a["precision"]) for a in manifest["artifacts"]] == [("onnxruntime", "int8")]
    assert {g["keep_ratio"] for g in manifest["graphs"].values()} == {1.0, None}  # fill graphs: every ratio
    assert [float(k) for k in manifest["flops"]] == [1.0]
    assert bundle_bytes(out) < bundle_bytes(tiny_caption_bundle) / 3
    slim = Engine.load(out, precision="int8")
    full = Engine.load(tiny_caption_bundle, backend="onnxruntime", precision="int8")
    images, _ = scene_captions(0, "test", range(3), 48)
    for image in images:
        for policy in (Policy("full"), Policy("max_probability", threshold=0.6)):
            a, b = slim.caption(image, policy=policy), full.caption(image, policy=policy, keep_ratio=1.0)
            assert (a.tokens, a.exits, a.text) == (b.tokens, b.exits, b.text)
    assert main(["bundle", "--artifact", str(tiny_caption_bundle), "--runtime", "executorch", "--out",
                 str(tmp_path / "et.mmedge")]) == 0
    assert Engine.load(tmp_path / "et.mmedge").backend == "executorch"
    for extra, said in ((["--keep-ratio", "0.5"], "thresholds use keep ratio 1.0"), (["--in-graph"], "in-graph"),
                        (["--keep-ratio", "0.3"], "were not exported")):
        assert main(["bundle", "--artifact", str(tiny_caption_bundle), "--runtime", "onnxruntime", "--out",
                     str(tmp_path / "refused.mmedge"), *extra]) == 2
        assert said in capsys.readouterr().err
    assert not (tmp_path / "refused.mmedge").exists()


@pytest.mark.parametrize("backend", ["onnxruntime", "executorch"])
def test_engine_caption_equals_torch_decoding(tiny_captioner, tiny_caption_bundle, backend):
    from mmedge.caption.data import scene_captions
    from mmedge.data.preprocess import preprocess_batch
    from mmedge.runtime.engine import Engine

    engine = Engine.load(tiny_caption_bundle, backend=backend, threads=1)
    assert engine.kind == "caption"
    model, tok = load_caption_model(tiny_captioner)
    images, _ = scene_captions(0, "test", range(4), 48)
    pixels = torch.from_numpy(preprocess_batch(images, 48))
    for policy in (Policy("full"), Policy("max_probability", threshold=0.6), Policy("patience", patience=2)):
        for kv in ("copy", "recompute"):
            want = generate(model, pixels, 1.0, policy, kv=kv)
            for i, image in enumerate(images):
                got = engine.caption(image, policy=policy, keep_ratio=1.0, kv=kv)
                assert got.tokens == want.tokens[i] and got.exits == want.exits[i], (policy, kv, i)
                assert got.text == decode_caption(tok, want.tokens[i])
    beam = engine.caption(images[0], beam=3, policy=Policy("full"), keep_ratio=1.0)
    assert beam.tokens == generate(model, pixels[:1], 1.0, Policy("full"), beam=3).tokens[0]
    short = engine.caption(images[0], max_len=2)
    assert len(short.tokens) <= 2 and set(short.stage_ms) >= {"encoder_k1", "step0_k1"}
    with pytest.raises(ConfigError, match="max_len"):
        engine.caption(images[0], max_len=0)
    with pytest.raises(BundleError, match="caption"):
        engine.predict(images[0], "what color is the circle ?")


def test_tampered_caption_bundle_is_refused(tiny_caption_bundle, tmp_path):
    from mmedge.runtime.engine import Engine

    copy = tmp_path / "b.mmedge"
    shutil.copytree(tiny_caption_bundle, copy)
    graph = copy / "onnx" / "fp32" / "step1_k1.onnx"
    data = bytearray(graph.read_bytes())
    data[-20] ^= 0xFF
    graph.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="hash mismatch"):
        Engine.load(copy)
    shutil.rmtree(copy)
    shutil.copytree(tiny_caption_bundle, copy)
    m = json.loads((copy / "manifest.json").read_text())
    m["decoder"]["stage_layers"] = [[1], [0]]
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="stage_layers"):
        Engine.load(copy)
    m["decoder"]["stage_layers"] = [[0], [1]]
    m["artifacts"][0]["stages"]["step0_k1"]["file"] = "../../etc/passwd"
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError):
        Engine.load(copy)


def test_calibrate_writes_thresholds_the_engine_uses(tiny_caption_bundle, tmp_path):
    from mmedge.runtime.caption_engine import CaptionEngine

    copy = tmp_path / "c.mmedge"
    shutil.copytree(tiny_caption_bundle, copy)
    few = [Policy("full"), Policy("confidence", threshold=0.5), Policy("max_probability", threshold=0.5),
           Policy("patience", patience=2)]
    result = calibrate_bundle(copy, max_drop=1000.0, samples=20, progress=False, policies=few)  # the cheapest wins
    chosen = result["chosen"]
    assert chosen["decoder_flops"] == min(r["decoder_flops"] for r in result["rows"])
    for r in result["rows"]:  # the bound is the mean drop plus a non-negative margin
        assert r["drop_upper"] >= result["baseline"]["cider"] - r["cider"] - 2e-3  # (both rounded to 3 decimals)
    assert chosen["flops_ratio"] >= 1.0
    engine = CaptionEngine.load(copy)
    m = engine.manifest
    assert m["thresholds"]["calibrated"] and m["thresholds"]["keep_ratio"] == chosen["keep_ratio"]
    assert engine.policy.kind == chosen["policy"]["kind"]
    strict = calibrate_bundle(copy, max_drop=0.0, samples=20, progress=False, write=False, policies=few)
    assert strict["chosen"]["cider"] >= strict["baseline"]["cider"]
    with pytest.raises(ConfigError):
        calibrate_bundle(copy, max_drop=-1, samples=20)


def test_torch_and_engine_policy_evaluation_agree(tiny_captioner, tiny_caption_bundle):
    from mmedge.caption.calibrate import engine_decoder
    from mmedge.caption.cost import DecoderCost
    from mmedge.runtime.caption_engine import CaptionEngine

    model, tok = load_caption_model(tiny_captioner)
    engine = CaptionEngine.load(tiny_caption_bundle, threads=1)
    pixels, refs = validation_set(48, 12)
    cost = DecoderCost.from_manifest(engine.manifest["flops"]["1"])
    assert cost == decoder_cost(model, 1.0)
    policy = Policy("max_probability", threshold=0.5)
    a = evaluate_policy(torch_decoder(model), cost, tok, pixels, refs, policy)
    b = evaluate_policy(engine_decoder(engine), cost, tok, pixels, refs, policy)
    assert a == b
    assert np.isfinite(a.cider) and a.flops_ratio >= 1.0


# ------------------------------------------------------------------------------------- real data + CLI
def test_cli_trains_and_evaluates_on_coco_format_captions(tmp_path, capsys):
    import dataset_fixtures as fx
    from mmedge.cli import main

    root = tmp_path / "coco"
    fx.make_coco(root, 8, "train")
    fx.make_coco(root, 6, "val")
    cfg = {**TINY_CAPTION, "steps": 4, "eval_every": 2, "checkpoint_every": 4, "eval_samples": 6}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    out = tmp_path / "model"
    assert main(["train", "--task", "caption", "--config", str(tmp_path / "cfg.json"), "--data", f"coco:{root}",
                 "--out", str(out), "--no-progress"]) == 0
    assert is_caption_dir(out)
    _, tok = load_caption_model(out)
    assert "circle" in tok.vocab or "square" in tok.vocab or "triangle" in tok.vocab  # learnt from the captions
    report = tmp_path / "eval.json"
    assert main(["eval", "--model", str(out), "--data", f"coco:{root}", "--limit", "6", "--json", str(report),
                 "--no-progress"]) == 0
    result = json.loads(report.read_text())
    assert result["images"] == 6 and result["references_per_image"] == 2.0  # two captions per COCO image
    for entry in result["by_keep_ratio"].values():
        assert 0 <= entry["bleu4"] <= 1 and entry["cider"] >= 0
    assert "BLEU-4" in capsys.readouterr().out
    assert main(["train", "--task", "caption", "--data", "vqa2:" + str(root), "--out", str(tmp_path / "x"),
                 "--no-progress"]) == 2  # a caption source is required


def test_resumed_training_equals_an_uninterrupted_run(tmp_path):
    cfg = CaptionTrainConfig(**{**TINY_CAPTION, "steps": 4, "checkpoint_every": 2, "eval_every": 4})
    CaptionTrainer(cfg, tmp_path / "whole", progress=False).fit()
    from mmedge.train.trainer import lr_factor

    first = CaptionTrainer(cfg, tmp_path / "split", progress=False)
    while first.step < 2:  # what fit() does, stopped after the step-2 checkpoint as a killed run would be
        for group in first.optimizer.param_groups:
            group["lr"] = cfg.lr * lr_factor(first.step, cfg)
        first._train_step(cfg.train_keep_ratios[first.step % 2])
        first.step += 1
    first._save_checkpoint(0.0)
    CaptionTrainer(cfg, tmp_path / "split", resume=True, progress=False).fit()
    a, _ = load_caption_model(tmp_path / "whole")
    b, _ = load_caption_model(tmp_path / "split")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name
    with pytest.raises(ConfigError, match="differs"):
        CaptionTrainer(CaptionTrainConfig(**{**cfg.to_dict(), "lr": 0.5}), tmp_path / "split", resume=True,
                       progress=False)


def test_bench_cli_reports_captions_per_second(tiny_caption_bundle, tmp_path, capsys):
    from mmedge.cli import main

    out = tmp_path / "bench.json"
    assert main(["bench", "--artifact", str(tiny_caption_bundle), "--samples", "2", "--repeats", "1",
                 "--json", str(out), "--no-progress"]) == 0
    result = json.loads(out.read_text())
    assert [r["setting"] for r in result["rows"]] == ["full depth, every token", "prefilter only", "exits only",
                                                     "prefilter + exits"]
    for r in result["rows"]:
        assert r["captions_per_s"] > 0 and r["p10_ms"] <= r["p50_ms"] <= r["p90_ms"]
        assert r["cider_95"][0] <= r["cider"] <= r["cider_95"][1]
    assert result["rows"][0]["speedup"] == 1.0 and result["rows"][0]["decoder_flops_ratio"] == 1.0
    assert out.with_suffix(".md").exists() and out.with_suffix(".png").exists()
    assert "captions/s" in capsys.readouterr().out
    assert main(["bench", "--artifact", str(tiny_caption_bundle), "--device", "pixel"]) == 2


def test_a_classifier_engine_refuses_to_caption(tiny_bundle):
    from mmedge.runtime.engine import Engine

    engine = Engine.load(tiny_bundle)
    with pytest.raises(BundleError, match="caption"):
        engine.caption(np.zeros((48, 48, 3), np.uint8))

"""mmedge probe: shapes on the tiny model, hand-computed figures, the ablation against the model's own
forwards and evaluation, and the CLI end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mmedge.analysis.probe import attention_mass, probe, probe_batch, token_norms, wilson
from mmedge.cli import main
from mmedge.data.batches import build_batch, generate
from mmedge.models.checkpoint import from_pretrained


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return from_pretrained(tiny_model_dir)


def tensors(model, tokenizer, n: int, split: str = "val", seed: int = 0):
    cfg = model.config
    batch = build_batch(generate(cfg.task, seed, split, range(n), cfg.image_size), tokenizer, cfg.image_size)
    return (torch.from_numpy(batch.pixels), torch.from_numpy(batch.input_ids), torch.from_numpy(batch.text_mask),
            batch)


def test_norms_and_attention_mass_on_a_constructed_case():
    # [CLS], text t1 t2 <pad>, visual v1 v2: T = 6, L = 3, N = 2, D = 2
    hidden = torch.tensor([[[1.0, 0], [3, 4], [6, 8], [100, 0], [0, 2], [0, 4]]])
    mask = torch.tensor([[1, 1, 0]])
    n = token_norms(hidden, mask, 3)
    assert n["cls"].item() == pytest.approx(1.0)
    assert n["text"].item() == pytest.approx(7.5)  # (5 + 10) / 2, the padded 100 ignored
    assert n["visual"].item() == pytest.approx(3.0)  # (2 + 4) / 2
    # head 0: every query spreads evenly over the 5 real keys; head 1: every query looks only at [CLS]
    probs = torch.zeros(1, 2, 6, 6)
    probs[0, 0, :, [0, 1, 2, 4, 5]] = 0.2
    probs[0, 1, :, 0] = 1.0
    m = attention_mass(probs, mask, 3)
    assert m["cls_to_visual"].item() == pytest.approx(0.2)  # (0.4 + 0) / 2
    assert m["text_to_visual"].item() == pytest.approx(0.2)
    assert m["visual_to_text"].item() == pytest.approx(0.8)  # (0.6 + 1.0) / 2


def test_figures_equal_explicit_loops_over_the_models_own_outputs(tiny):
    model, tokenizer = tiny
    cfg = model.config
    assert cfg.exits == list(range(cfg.depth))  # a stage per layer: out.hidden[i] is the state after layer i
    pixels, ids, mask, batch = tensors(model, tokenizer, 2)
    with torch.no_grad():
        out = model(pixels, ids, mask, return_attention=True)
    Lt, T = cfg.max_text_len, out.attention[0].shape[-1]
    nh = out.attention[0].shape[1]
    expect = {k: np.zeros((2, cfg.depth)) for k in ("text", "visual", "cls_to_visual", "text_to_visual",
                                                    "visual_to_text")}
    for b in range(2):
        text_pos = [1 + j for j in range(Lt) if mask[b, j]]
        vis_pos = list(range(1 + Lt, T))
        for i in range(cfg.depth):
            h, p = out.hidden[i][b], out.attention[i][b]
            expect["text"][b, i] = sum(float(torch.linalg.norm(h[t])) for t in text_pos) / len(text_pos)
            expect["visual"][b, i] = sum(float(torch.linalg.norm(h[v])) for v in vis_pos) / len(vis_pos)
            heads_c, heads_t, heads_v = [], [], []
            for hd in range(nh):
                heads_c.append(sum(float(p[hd, 0, v]) for v in vis_pos))
                heads_t.append(sum(sum(float(p[hd, t, v]) for v in vis_pos) for t in text_pos) / len(text_pos))
                heads_v.append(sum(sum(float(p[hd, v, k]) for k in [0] + text_pos) for v in vis_pos) / len(vis_pos))
            expect["cls_to_visual"][b, i] = sum(heads_c) / nh
            expect["text_to_visual"][b, i] = sum(heads_t) / nh
            expect["visual_to_text"][b, i] = sum(heads_v) / nh
    got = probe_batch(model, pixels, ids, mask)
    for k in ("text", "visual"):
        np.testing.assert_allclose(got.norms[k][:, 1:], expect[k], rtol=1e-5)
    for k in ("cls_to_visual", "text_to_visual", "visual_to_text"):
        np.testing.assert_allclose(got.attention[k], expect[k], rtol=1e-5, atol=1e-7)
    result = probe(model, tokenizer, "val", 2, batch_size=1, progress=False)  # the same two samples, one per batch
    o = result["overall"]
    for k in ("text", "visual"):
        np.testing.assert_allclose(o["activation"][k]["mean"][1:], expect[k].mean(0), rtol=1e-5)
    for k in ("cls_to_visual", "text_to_visual", "visual_to_text"):
        np.testing.assert_allclose(o["attention"][k]["mean"], expect[k].mean(0), rtol=1e-5, atol=1e-7)


def test_ablation_follows_the_models_own_stages(tiny):
    model, tokenizer = tiny
    cfg = model.config
    pixels, ids, mask, _ = tensors(model, tokenizer, 6)
    keep = 1 + cfg.max_text_len
    got = probe_batch(model, pixels, ids, mask)
    assert got.max_logit_diff == 0.0 and (got.ablation_preds[:, -1] == got.forward_preds).all()
    with torch.no_grad():
        emb = model.embed(pixels, ids, mask)
        final_logits = []
        for L in range(cfg.depth + 1):  # stages 0..L-1 with the image, then the rest on [CLS] + text
            h, m = emb.hidden, emb.mask
            logits = None
            for stage in range(cfg.depth):
                if stage == L:
                    h, m = h[:, :keep], m[:, :keep]
                h, logits, _ = model.forward_stage(stage, h, m)
            if L == cfg.depth:  # dropped after the last layer: the final exit head alone on [CLS] + text
                logits, _ = model.exit_heads[-1](h[:, :keep], m[:, :keep])
            final_logits.append(logits)
            np.testing.assert_array_equal(got.ablation_preds[:, L], logits.argmax(-1).numpy())
        full = model(pixels, ids, mask).logits[-1]
    # dropping the visual tokens after the last layer changes nothing; dropping them before it does
    torch.testing.assert_close(final_logits[-1], full, rtol=0, atol=0)
    assert not torch.allclose(final_logits[0], full)


def test_json_sections_shapes_and_evaluation_agreement(tiny):
    from mmedge.evaluation.predict import make_batches, run_model

    model, tokenizer = tiny
    cfg, n = model.config, 48
    result = probe(model, tokenizer, "val", n, keep_ratio=1.0, batch_size=16, progress=False)
    depth = cfg.depth
    assert result["activation_index"] == list(range(depth + 1))
    assert result["attention_layers"] == list(range(1, depth + 1))
    assert result["ablation_visual_layers"] == list(range(depth + 1))
    assert result["settings"]["visual_tokens"] == cfg.num_patches and result["settings"]["samples"] == n
    groups = {"all": result["overall"], **result["per_qtype"]}
    assert sum(g["n"] for g in result["per_qtype"].values()) == n
    for g in groups.values():
        for st in g["activation"].values():
            assert set(st) == {"mean", "std", "p10", "p90"} and all(len(v) == depth + 1 for v in st.values())
            assert all(lo <= hi for lo, hi in zip(st["p10"], st["p90"])) and min(st["std"]) >= 0
        for k in ("cls_to_visual", "text_to_visual", "visual_to_text"):
            mass = g["attention"][k]["mean"]
            assert len(mass) == depth and all(0 <= v <= 1 + 1e-6 for v in mass)
        a = g["ablation"]
        assert len(a["accuracy"]) == depth + 1
        assert all(lo <= acc <= hi for lo, acc, hi in zip(a["ci95_low"], a["accuracy"], a["ci95_high"]))
    # L = depth is the intact model: the same as mmedge.evaluation's final exit on the same samples
    run = run_model(model, make_batches(cfg.task, 0, "val", n, tokenizer, cfg.image_size, 32), [1.0])
    correct = run.outputs[1.0].preds[:, -1] == run.labels
    assert result["overall"]["ablation"]["accuracy"][-1] == pytest.approx(correct.mean())
    q = np.array(run.qtypes)
    for t, g in result["per_qtype"].items():
        assert g["ablation"]["correct"][-1] == int(correct[q == t].sum())
    assert result["check"]["max_abs_logit_diff_vs_forward"] == 0.0
    # fewer tokens kept: fewer visual tokens, and their share of the keys falls
    half = probe(model, tokenizer, "val", 8, keep_ratio=0.5, progress=False)
    assert half["settings"]["visual_tokens"] == cfg.kept_tokens(0.5)
    assert half["overall"]["attention"]["uniform_visual_share"] < result["overall"]["attention"]["uniform_visual_share"]


def test_wilson_interval():
    lo, hi = wilson(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)
    assert wilson(10, 10)[1] == 1.0 and wilson(0, 10)[0] == 0.0


def test_cli_writes_json_and_png(tiny_model_dir, tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "probe" / "tiny.json"
    assert main(["probe", "--model", str(tiny_model_dir), "--samples", "24", "--keep-ratio", "0.5", "--json",
                 str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "Per layer" in text and "per question type" in text
    result = json.loads(out.read_text())
    assert {"model", "model_name", "settings", "overall", "per_qtype", "definitions", "check"} <= set(result)
    assert result["model"] == str(tiny_model_dir) and result["model_name"] == tiny_model_dir.name
    assert result["settings"]["keep_ratio"] == 0.5 and result["settings"]["split"] == "val"
    with Image.open(out.with_suffix(".png")) as im:
        assert im.format == "PNG" and im.size[0] > 1000


@pytest.mark.parametrize("args, message", [
    (["--keep-ratio", "0"], "must be in (0, 1]"),
    (["--keep-ratio", "nan"], "must be in (0, 1]"),
    (["--samples", "0"], "must be at least 1"),
    (["--data-seed", "-1"], "negative"),
])
def test_cli_rejects_bad_arguments(tiny_model_dir, args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["probe", "--model", str(tiny_model_dir), *args])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_cli_errors_are_one_line(tmp_path, tiny_model_dir, capsys):
    assert main(["probe", "--model", str(tmp_path / "nowhere"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mmedge probe: error: model directory not found") and "\n" not in err
    assert main(["probe", "--model", str(tiny_model_dir), "--json", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert "ends in .png" in err and "\n" not in err


def test_attention_variants_without_every_query_row(tiny, tmp_path, monkeypatch):
    """A layer returning no probs gives null mass; one returning only the [CLS] + text query rows (the
    efficient variants' (B, nh, 1 + L, T)) keeps [CLS]/text -> visual and gives null visual -> text."""
    from mmedge.analysis.probe import plot

    model, tokenizer = tiny
    before = probe(model, tokenizer, "val", 8, progress=False)["overall"]["attention"]
    rows = 1 + model.config.max_text_len
    first, second = model.blocks[0].attn, model.blocks[1].attn
    f1, f2 = first.forward, second.forward
    monkeypatch.setattr(first, "forward", lambda x, mask: (f1(x, mask)[0], None))
    monkeypatch.setattr(second, "forward", lambda x, mask: (lambda o: (o[0], o[1][:, :, :rows]))(f2(x, mask)))
    result = probe(model, tokenizer, "val", 8, progress=False)
    att = result["overall"]["attention"]
    assert att["text_to_visual"]["mean"][0] is None and att["visual_to_text"]["mean"][0] is None
    for k in ("cls_to_visual", "text_to_visual"):
        assert att[k]["mean"][1:] == pytest.approx(before[k]["mean"][1:])
    assert att["visual_to_text"]["mean"][1] is None and att["visual_to_text"]["mean"][2:] == pytest.approx(
        before["visual_to_text"]["mean"][2:])
    assert result["check"]["max_abs_logit_diff_vs_forward"] == 0.0
    plot({**result, "model_name": "tiny"}, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 0

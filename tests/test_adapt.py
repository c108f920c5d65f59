"""mmedge adapt: tiny ViLTs made with save_pretrained (no download), each class checked against
transformers' own forward and processor, then self-distilled, resumed, exported and loaded back."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from conftest import torchrun  # noqa: E402
from dataset_fixtures import make_jsonl, make_nlvr2  # noqa: E402
from mmedge.adapt import adapt, load_adapted, load_source  # noqa: E402
from mmedge.adapt.distill import DistillConfig, text_length_hint, text_token_counts  # noqa: E402
from mmedge.adapt.families import UnsupportedModelError, supported_classes  # noqa: E402
from mmedge.adapt.stages import example_inputs, stage_module, stage_specs  # noqa: E402
from mmedge.cli import main  # noqa: E402
from mmedge.data.tasks import LABELS  # noqa: E402
from mmedge.errors import ConfigError  # noqa: E402

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ("what is the color shape of a red blue green circle square triangle left right above below there "
         "how many is are small large yes no ? , . ! - café").split()
CLASSES = {"vqa": "ViltForQuestionAnswering", "nlvr2": "ViltForImagesAndTextClassification",
           "retrieval": "ViltForImageAndTextRetrieval"}
QUIET = dict(progress=False, log=lambda *_: None)


def make_source(root, task: str = "vqa", std: float = 0.2, layers: int = 3, image_size: int = 32,
                labels: list[str] | None = None, shortest_edge: int | None = None, cls: str | None = None):
    """A tiny ViLT of `task`'s class with its ViltProcessor, saved like a downloaded model. std 0.2
    (not ViLT's 0.02) makes a random model whose answers depend on the input and on depth."""
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789")
    vocab = SPECIALS + WORDS + chars + [f"##{c}" for c in chars]
    tokenizer = transformers.BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True,
                                           model_max_length=16)
    images = transformers.ViltImageProcessor(size={"shortest_edge": shortest_edge or image_size}, size_divisor=8)
    processor = transformers.ViltProcessor(image_processor=images, tokenizer=tokenizer)
    labels = labels or {"vqa": [f"a{i}" for i in range(6)], "nlvr2": ["False", "True"], "retrieval": ["score"]}[task]
    extra = {"num_images": 2, "modality_type_vocab_size": 3} if task == "nlvr2" else {}
    config = transformers.ViltConfig(hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                                     intermediate_size=64, image_size=image_size, patch_size=8, vocab_size=len(vocab),
                                     max_position_embeddings=16, num_labels=len(labels), initializer_range=std,
                                     id2label=dict(enumerate(labels)), label2id={a: i for i, a in enumerate(labels)},
                                     **extra)
    torch.manual_seed(0)
    model = getattr(transformers, cls or CLASSES[task])(config).eval()
    model.save_pretrained(root)
    processor.save_pretrained(root)
    return root


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    return {task: make_source(tmp_path_factory.mktemp(task), task) for task in CLASSES}


def images(n: int, size: int = 40, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


TEXTS = ["What is the colour of the café?", "is there a red circle left of the square", "how many"]


def hf_inputs(source, task: str, imgs, texts):
    """What transformers' own processor gives its model (NLVR2: two images per example)."""
    processor = transformers.ViltProcessor.from_pretrained(source)
    text = processor.tokenizer(texts, padding="max_length", max_length=16, truncation=True, return_tensors="pt")
    pix = processor.image_processor(imgs, return_tensors="pt")
    pixel_values, pixel_mask = pix["pixel_values"], pix["pixel_mask"]
    if task == "nlvr2":
        pixel_values = pixel_values.reshape(len(texts), 2, *pixel_values.shape[1:])
        pixel_mask = pixel_mask.reshape(len(texts), 2, *pixel_mask.shape[1:])
    return {**text, "pixel_values": pixel_values, "pixel_mask": pixel_mask}


def examples(task: str, imgs) -> list[tuple]:
    return [tuple(imgs[2 * i: 2 * i + 2]) for i in range(len(imgs) // 2)] if task == "nlvr2" else [(im,) for im in imgs]


# ---------------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("task", list(CLASSES))
def test_full_depth_equals_transformers_forward(sources, task):
    """At full depth and keep 1.0 the adapted model is the pretrained model: its last exit gives
    transformers' logits, on transformers' own inputs and on the adapter's preprocessing."""
    model, pre = load_source(sources[task])
    hf = getattr(transformers, CLASSES[task]).from_pretrained(sources[task]).eval()
    imgs = images(2 * len(TEXTS) if task == "nlvr2" else len(TEXTS))
    ref_inputs = hf_inputs(sources[task], task, imgs, TEXTS)
    mine = pre.encode(examples(task, imgs), TEXTS)
    assert torch.equal(mine["pixel_values"], ref_inputs["pixel_values"])
    assert torch.equal(mine["input_ids"], ref_inputs["input_ids"])
    assert torch.equal(mine["text_mask"], ref_inputs["attention_mask"])
    with torch.no_grad():
        ref = hf(**ref_inputs).logits
        out = model(**mine)
        direct = model(ref_inputs["pixel_values"], ref_inputs["input_ids"], ref_inputs["attention_mask"])
    assert ref.shape == out.logits[-1].shape == (len(TEXTS), model.config.num_labels)
    assert (out.logits[-1] - ref).abs().max() < 1e-5
    assert (direct.logits[-1] - ref).abs().max() < 1e-5
    # every exit head starts as a copy of the model's head: on the last layer it gives the model's logits
    hidden = out.hidden[-1]
    for head in model.exit_heads:
        assert (head(hidden)[0] - ref).abs().max() < 1e-5
    assert len(out.logits) == model.num_stages == model.config.depth


def test_a_shorter_text_length_keeps_the_outputs_of_texts_that_fit(sources):
    """--max-text-len below the model's: padding is masked, so a text that fits gets the same answer."""
    model, pre = load_source(sources["vqa"])  # 16 text tokens, the tiny model's position embeddings
    short, pre_short = load_source(sources["vqa"], max_text_len=12)
    fits = [t for t in TEXTS + ["how many red circles", "is there a square"] if pre.tokenizer.encode(t)[1].sum() <= 12]
    assert len(fits) >= 2 and short.config.max_text_len == 12
    imgs = images(len(fits))
    long_in, short_in = pre.encode([(im,) for im in imgs], fits), pre_short.encode([(im,) for im in imgs], fits)
    assert short_in["input_ids"].shape[1] == 12 and torch.equal(short_in["input_ids"], long_in["input_ids"][:, :12])
    with torch.no_grad():
        a, b = model(**long_in), short(**short_in)
    assert (a.logits[-1] - b.logits[-1]).abs().max() < 1e-5


def test_position_embeddings_interpolated_at_a_fixed_size(sources):
    """At an exported size other than the model's own (48 px against 32: a 6 x 6 grid against 4 x 4)
    the static interpolation gives what transformers computes from the pixel mask."""
    model, pre = load_source(sources["vqa"], image_size=48)
    hf = transformers.ViltForQuestionAnswering.from_pretrained(sources["vqa"]).eval()
    inputs = pre.encode([(im,) for im in images(3, 60)], TEXTS)
    assert inputs["pixel_values"].shape[-1] == 48 and model.backbone.num_patches == 36
    with torch.no_grad():
        ref = hf(input_ids=inputs["input_ids"], attention_mask=inputs["text_mask"],
                 pixel_values=inputs["pixel_values"], pixel_mask=torch.ones(3, 48, 48, dtype=torch.long)).logits
        got = model(**inputs).logits[-1]
    assert (got - ref).abs().max() < 1e-5


def test_preprocessing_reproduces_the_processor(sources):
    """Square images of any size and texts that exercise BERT's normaliser (accents, CJK, punctuation,
    special tokens, control characters, truncation) come out exactly as ViltProcessor makes them."""
    _, pre = load_source(sources["vqa"])
    processor = transformers.ViltProcessor.from_pretrained(sources["vqa"])
    for side in (8, 32, 77, 300):
        img = images(1, side, seed=side)[0]
        ref = processor.image_processor([img], return_tensors="np")
        assert ref["pixel_values"].shape == (1, 3, 32, 32) and ref["pixel_mask"].all()
        np.testing.assert_array_equal(pre.pixels(img), ref["pixel_values"][0])
    assert pre.pixels(images(1, 50)[0][:, :30]).shape == (3, 32, 32)  # non-square: stretched to the fixed size
    texts = ["What is the colour of the CAFÉ?", "ΟΔΟΣ Σ İstanbul", "a\x00b\u200bc\tq\x1cz", "[MASK] is red[SEP]x",
             "", "   ", "left-right!!?", "x" * 120, "ﬁ straße", "a$b+c<d", "e\u0301\u0300 cafe\u0301", "中[CLS]文",
             "\ufffd?\x7f", " ".join(["circle"] * 30)]
    ref = processor.tokenizer(texts, padding="max_length", max_length=16, truncation=True)
    ids, mask = pre.tokenizer.encode_batch(texts)
    assert ids.tolist() == ref["input_ids"] and mask.tolist() == ref["attention_mask"]
    fields = pre.to_dict()["tokenizer"]
    assert fields["lowercase"] and fields["strip_accents"] and fields["template"] == ["[CLS]", "$text", "[SEP]"]


def test_an_unsupported_class_names_the_supported_ones(tmp_path):
    source = make_source(tmp_path / "mlm", cls="ViltForMaskedLM")
    with pytest.raises(UnsupportedModelError) as err:
        load_source(source)
    for name in CLASSES.values():
        assert name in str(err.value)
    assert "ViltForMaskedLM" in str(err.value) and set(err.value.supported) == set(supported_classes())


# ---------------------------------------------------------------------------------------------- export
@pytest.mark.parametrize("task", ["vqa", "nlvr2"])
def test_stages_trace_with_torch_export(sources, task):
    """Every stage traces with torch.export (no data-dependent shape: the prefilter, and for VQA the
    position embeddings interpolated to 48 px, included) and computes what the eager stage does."""
    size = 48 if task == "vqa" else 32
    model, _ = load_source(sources[task], exit_layers=[1, 2], image_size=size)
    for spec in stage_specs(model, [0.5]):
        module, inputs = stage_module(model, spec), example_inputs(model, spec)
        program = torch.export.export(module, inputs)
        with torch.no_grad():
            got, want = program.module()(*inputs), module(*inputs)
        for g, w in zip(got, want):
            assert g.shape == w.shape
            assert (g - w).abs().max() < 1e-6 if g.is_floating_point() else torch.equal(g, w)
    I = 2 if task == "nlvr2" else 1
    k = (size // 8) ** 2 // 2  # T = 16 text tokens + the image [CLS] + k kept patches; one sequence per image
    assert [tuple(o.shape) for o in want] == [(I, 17 + k, 32), (1, model.config.num_labels), (1,)]


def test_onnx_stages_equal_transformers_at_full_depth(sources, tmp_path):
    """The stages exported to ONNX and chained in onnxruntime give transformers' logits at full depth."""
    ort = pytest.importorskip("onnxruntime")
    model, pre = load_source(sources["vqa"], exit_layers=[0, 2])
    hf = transformers.ViltForQuestionAnswering.from_pretrained(sources["vqa"]).eval()
    inputs = pre.encode([(im,) for im in images(2)], TEXTS[:2])
    with torch.no_grad():
        ref = hf(input_ids=inputs["input_ids"], attention_mask=inputs["text_mask"],
                 pixel_values=inputs["pixel_values"]).logits
    sessions = {}
    for spec in stage_specs(model, [1.0]):
        module, example = stage_module(model, spec), example_inputs(model, spec)
        program = torch.onnx.export(module, example, input_names=list(spec.inputs), output_names=list(spec.outputs),
                                    dynamo=True, optimize=True, verbose=False)
        program.save(str(tmp_path / f"{spec.name}.onnx"))
        sessions[spec.stage] = ort.InferenceSession(str(tmp_path / f"{spec.name}.onnx"))
    for i in range(2):
        feed = {"pixel_values": inputs["pixel_values"][i: i + 1].numpy(),
                "input_ids": inputs["input_ids"][i: i + 1].numpy().astype(np.int32),
                "text_mask": inputs["text_mask"][i: i + 1].numpy().astype(np.int32)}
        hidden, mask, _, _, kept = sessions[0].run(None, feed)
        _, logits, _ = sessions[1].run(None, {"hidden_in": hidden, "attention_mask": mask})
        assert np.abs(logits - ref[i: i + 1].numpy()).max() < 1e-5
        assert kept.tolist() == [list(range(16))]


# ---------------------------------------------------------------------------------------------- prefilter
def test_exit_heads_are_factorised_where_a_rank_pair_is_smaller():
    """exit_rank stores a linear map as a rank-r pair (exact for a map of rank r), leaves maps a pair
    would not shrink, and folders saved before the field existed load as full copies."""
    from mmedge.adapt.model import AdaptConfig, factorise_linears

    torch.manual_seed(0)
    big = torch.nn.Linear(48, 40)
    with torch.no_grad():
        big.weight.copy_(torch.randn(40, 3) @ torch.randn(3, 48))  # rank 3
    head = torch.nn.Sequential(big, torch.nn.GELU(), torch.nn.Linear(40, 2))
    x = torch.randn(5, 48)
    want = head(x)
    factorise_linears(head, 3)
    assert isinstance(head[0], torch.nn.Sequential) and [m.weight.shape for m in head[0]] == [(3, 48), (40, 3)]
    assert isinstance(head[2], torch.nn.Linear)  # 3 * (40 + 2) > 40 * 2: kept as it is
    assert (head(x) - want).abs().max() < 1e-5
    saved = AdaptConfig(labels=["a"]).to_dict()
    del saved["exit_rank"]
    assert AdaptConfig.from_dict(saved).exit_rank is None and AdaptConfig(labels=["a"]).exit_rank == 128
    with pytest.raises(ConfigError, match="exit_rank"):
        AdaptConfig(labels=["a"], exit_rank=0)


def test_relaxed_pruning_is_hard_pruning_with_a_gradient(sources):
    """The prefilter's training form masks the dropped tokens out exactly (the same logits as removing
    them) and passes a finite, non-zero gradient to the scorer."""
    model, pre = load_source(sources["vqa"])
    inputs = pre.encode([(im,) for im in images(3)], TEXTS)
    hard = model(**inputs, keep_ratio=0.25)
    relaxed = model(**inputs, keep_ratio=0.25, relaxed=True)
    assert torch.equal(hard.kept_index, relaxed.kept_index) and hard.kept_index.shape == (3, 4)
    for a, b in zip(hard.logits, relaxed.logits):
        assert (a - b).abs().max() < 1e-5
    relaxed.logits[-1].square().sum().backward()
    grad = model.prefilter.scorer.score.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------- distillation
TINY = dict(batch_size=16, eval_samples=64, log_every=5, threads=1, warmup_steps=3, lr=3e-3)


def test_distillation_improves_exit_agreement_and_writes_a_loadable_folder(tmp_path):
    source = make_source(tmp_path / "src", layers=4)
    out = tmp_path / "adapted"
    cfg = DistillConfig(steps=40, eval_every=40, checkpoint_every=40, **TINY)
    result = adapt(source, out, cfg, task="vqa", **QUIET)
    before, after = result.before["by_keep_ratio"], result.after["by_keep_ratio"]
    assert before["1"]["agreement"][-1] == after["1"]["agreement"][-1] == 1.0  # the last exit is the model
    assert after["1"]["agreement"][0] > before["1"]["agreement"][0] + 0.3  # 0.16 -> 0.8 here
    assert sum(after["1"]["kl"][:-1]) < sum(before["1"]["kl"][:-1])
    saved = json.loads((out / "config.json").read_text())
    assert saved["family"] == "vilt" and saved["adapt"]["source_class"] == "ViltForQuestionAnswering"
    assert saved["tokenizer"]["kind"] == "bert-wordpiece" and saved["preprocessing"]["image_size"] == 32
    for name in ("model.safetensors", "tokenizer.json", "processor_config.json", "README.md", "metrics.jsonl"):
        assert (out / name).is_file()
    card = (out / "README.md").read_text()
    assert "Agreement with the teacher per exit" in card and "(was " in card
    # how much of the fixed text length the validation texts use, counted by the model's own tokenizer
    counts = json.loads((out / "adapt_report.json").read_text())["text_tokens"]
    _, pre = load_adapted(out)
    from mmedge.adapt.data import AdaptData
    texts = [e.text for e in AdaptData("scenes", "vqa", [], 32, 1).val(64)]
    assert counts == text_token_counts(pre.tokenizer, texts) and counts["examples"] == 64
    assert min(counts["longest"], 16) == max(int(pre.tokenizer.encode(t)[1].sum()) for t in texts)
    assert counts["longest"] > 16 and counts["truncated"] > 0  # this tiny vocabulary spells words in pieces
    assert f"longest {counts['longest']}, mean" in card and f"{counts['truncated']} truncated" in card
    # the folder loads back to the same model, and its pretrained weights are the source's, unchanged
    model, pre = load_adapted(out)
    inputs = pre.encode([(im,) for im in images(2)], TEXTS[:2])
    hf = transformers.ViltForQuestionAnswering.from_pretrained(source).eval()
    with torch.no_grad():
        ref = hf(input_ids=inputs["input_ids"], attention_mask=inputs["text_mask"],
                 pixel_values=inputs["pixel_values"]).logits
        out_a = model(**inputs, keep_ratio=0.5)
    assert (model(**inputs).logits[-1] - ref).abs().max() < 1e-5
    assert all(torch.equal(p, q) for p, q in zip(model.backbone.hf.state_dict().values(), hf.state_dict().values()))
    assert out_a.kept_index.shape == (2, 8) and len(out_a.confidence) == 4


def test_text_length_hint_names_the_padding_or_the_truncation():
    counts = {"examples": 100, "max_text_len": 40, "longest": 14, "mean": 9.5, "truncated": 0}
    hint = text_length_hint(counts, other_tokens=145)  # ViLT-B/32: 144 patches + the image [CLS]
    assert "--max-text-len 14" in hint and "drops 26 of them" in hint and "185 positions" in hint
    assert text_length_hint({**counts, "longest": 38}, other_tokens=145) is None  # 2 of 185: not worth a note
    cut = text_length_hint({**counts, "longest": 52, "truncated": 3}, other_tokens=145)
    assert "3 of 100 validation texts are longer than the 40" in cut and "truncated" in cut
    assert text_length_hint({"examples": 0}, other_tokens=145) is None


def test_train_backbone_changes_the_pretrained_weights_and_eval_compares_with_the_source(tmp_path, capsys):
    """--train-backbone: the pretrained weights are trained against a frozen copy, so the final exit is no
    longer the pretrained model; `mmedge eval` then measures agreement with the source it loads again
    (and says so), not with the adapted model's own final exit."""
    from mmedge.adapt.folder import pretrained_teacher

    source = make_source(tmp_path / "src", layers=2)
    out = tmp_path / "adapted"
    cfg = DistillConfig(steps=6, eval_every=6, checkpoint_every=6, train_backbone=True, **TINY)
    adapt(source, out, cfg, task="vqa", **QUIET)
    model, pre = load_adapted(out)
    hf = transformers.ViltForQuestionAnswering.from_pretrained(source).eval()
    assert not all(torch.equal(p, q) for p, q in zip(model.backbone.hf.state_dict().values(),
                                                     hf.state_dict().values()))
    teacher, note = pretrained_teacher(out)
    assert teacher is not None and note.startswith(f"the pretrained model ({source})")
    assert main(["eval", "--model", str(out), "--limit", "24", "--json", str(tmp_path / "eval.json"),
                 "--no-progress"]) == 0
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["teacher"] == note and "the pretrained model (" in capsys.readouterr().out
    from mmedge.adapt.data import AdaptData, materialise

    examples = AdaptData("scenes", "vqa", list(model.config.labels), model.config.image_size, 1)._scenes("test", range(24))
    inputs = pre.encode([tuple(materialise(im) for im in ex.images) for ex in examples], [ex.text for ex in examples])
    with torch.no_grad():
        ref = hf(input_ids=inputs["input_ids"], attention_mask=inputs["text_mask"],
                 pixel_values=inputs["pixel_values"]).logits.argmax(-1)
        final = model(**inputs, keep_ratio=1.0).logits[-1].argmax(-1)
    want = float((final == ref).float().mean())
    assert result["keep_ratios"]["1"]["teacher_agreement_per_exit"][-1] == pytest.approx(want)
    # a folder whose backbone was not trained: its own final exit is the pretrained model
    plain = tmp_path / "plain"
    adapt(source, plain, DistillConfig(steps=2, eval_every=2, checkpoint_every=2, **TINY), task="vqa", **QUIET)
    assert pretrained_teacher(plain) == (None, "the model's own final exit at keep ratio 1.0 (the pretrained model: "
                                               "its weights were not trained)")
    # the source moved away: said, not silently compared with the wrong model
    source.rename(tmp_path / "moved")
    teacher, note = pretrained_teacher(out)
    assert teacher is None and "cannot be loaded here" in note


def test_resume_continues_exactly(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from mmedge.adapt import distill

    source = make_source(tmp_path / "src")
    cfg = DistillConfig(steps=12, eval_every=12, checkpoint_every=6, **TINY)
    adapt(source, tmp_path / "straight", cfg, **QUIET)
    batch = distill.Distiller._batch

    def interrupted(self):
        if self.step == 11:  # after the step-6 checkpoint and the step-10 metrics row
            raise KeyboardInterrupt
        return batch(self)

    monkeypatch.setattr(distill.Distiller, "_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        adapt(source, tmp_path / "resumed", cfg, **QUIET)
    monkeypatch.setattr(distill.Distiller, "_batch", batch)
    with pytest.raises(ConfigError, match="already holds an adaptation run"):
        adapt(source, tmp_path / "resumed", cfg, **QUIET)
    adapt(source, tmp_path / "resumed", cfg, resume=True, **QUIET)
    a, b = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("straight", "resumed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    def rows(run):
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return [(r["kind"], r["step"]) for r in map(json.loads, lines)]

    assert rows("resumed") == rows("straight")  # the step-10 row logged after the checkpoint is not repeated
    with pytest.raises(ConfigError, match="differ"):
        adapt(source, tmp_path / "resumed", DistillConfig(**{**cfg.to_dict(), "lr": 0.1}), resume=True, **QUIET)


def test_labels_from_a_dataset_are_mixed_in_and_scored(tmp_path):
    """JSON Lines data (mmedge's own loader): answers among the model's labels count as labels,
    accuracy is reported per exit and in the card."""
    root = tmp_path / "data"
    make_jsonl(root, 24, "train")
    make_jsonl(root, 16, "val")
    source = make_source(tmp_path / "src", labels=list(LABELS["vqa"]))
    cfg = DistillConfig(steps=4, eval_every=4, checkpoint_every=4, data=f"jsonl:{root}", **TINY)
    result = adapt(source, tmp_path / "out", cfg, task="vqa", **QUIET)
    assert result.after["labelled"] == 16 and result.after["teacher_accuracy"] is not None
    assert len(result.after["by_keep_ratio"]["0.5"]["accuracy"]) == 3
    assert "Accuracy per exit" in (tmp_path / "out" / "README.md").read_text()


def test_nlvr2_adapts_on_two_image_records(tmp_path):
    root = tmp_path / "nlvr2"
    make_nlvr2(root, 3, "train")
    make_nlvr2(root, 2, "dev")
    source = make_source(tmp_path / "src", "nlvr2")
    cfg = DistillConfig(steps=2, eval_every=2, checkpoint_every=2, data=f"nlvr2:{root}",
                        **{**TINY, "batch_size": 4})
    result = adapt(source, tmp_path / "out", cfg, task="nlvr2", **QUIET)
    assert result.after["labelled"] == 4  # True / False answers are the model's labels
    model, _ = load_adapted(tmp_path / "out")
    assert model.backbone.num_images == 2


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_adapts_and_refuses_the_wrong_task(sources, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["adapt", "--from", str(sources["retrieval"]), "--task", "retrieval", "--out", str(out),
                 "--steps", "2", "--batch-size", "4", "--exits", "2,3", "--keep-ratios", "1", "0.5",
                 "--no-progress"]) == 0
    assert "agreement with the teacher per exit" in capsys.readouterr().out
    saved = json.loads((out / "config.json").read_text())
    assert saved["adapt"]["exit_layers"] == [1, 2] and saved["labels"] == ["match"]
    assert main(["adapt", "--from", str(sources["vqa"]), "--task", "nlvr2", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "ViltForImagesAndTextClassification" in err and "ViltForQuestionAnswering" in err
    mlm = make_source(tmp_path / "mlm", cls="ViltForMaskedLM")
    assert main(["adapt", "--from", str(mlm), "--task", "vqa", "--out", str(tmp_path / "y")]) == 2
    assert "supported classes" in capsys.readouterr().err


@pytest.mark.slow
def test_two_process_ddp_run(sources, tmp_path):
    config = tmp_path / "distill.json"
    config.write_text(json.dumps({**TINY, "steps": 4, "eval_every": 4, "checkpoint_every": 4, "batch_size": 4}))
    run = torchrun(["adapt", "--from", str(sources["vqa"]), "--task", "vqa", "--out", str(tmp_path / "out"),
                    "--config", str(config), "--no-progress"], port=29531)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "out" / "model.safetensors").is_file()
    rows = [json.loads(r) for r in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "val"] == [0, 4]

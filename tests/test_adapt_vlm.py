"""A generative VLM (transformers' SmolVLMForConditionalGeneration) re-expressed by mmedge.adapt.smolvlm and
given exits and a prefilter by mmedge.adapt.vlm: at full depth equal to transformers' own forward and, token by
token, to its greedy generate(); a pruned prompt is the full prompt with the dropped visual tokens masked out;
the exit policy decides per token. Tiny configs made here, no download."""

from __future__ import annotations

import json
from pathlib import Path
import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from mmedge.adapt.smolvlm import SmolVLMBackbone  # noqa: E402
from mmedge.adapt.vlm import AdaptedVLM, VLMAdaptConfig  # noqa: E402
from mmedge.errors import ConfigError  # noqa: E402
from mmedge.models.attention import MASK_VALUE  # noqa: E402
from mmedge.runtime.controller import Policy  # noqa: E402

VOCAB, IMAGE, FAKE, GLOBAL, BOS, END = 50, 40, 41, 42, 1, 2


def tiny_smolvlm(std: float = 0.2, layers: int = 3, width: int = 48):
    """A random tiny SmolVLM: 32 px images in 8 px patches (16), pixel shuffle 2 -> 4 visual tokens; a 3-layer
    Llama decoder (`width` wide) with grouped keys and values. std 0.2 makes answers depend on the input and on
    depth."""
    config = transformers.SmolVLMConfig(
        vision_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                           image_size=32, patch_size=8),
        text_config=dict(model_type="llama", hidden_size=width, num_hidden_layers=layers, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=96, vocab_size=VOCAB, max_position_embeddings=64,
                         pad_token_id=0, bos_token_id=BOS, eos_token_id=END),
        image_token_id=IMAGE, scale_factor=2, pad_token_id=0, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = transformers.SmolVLMForConditionalGeneration(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, std)
    return model


def prompt_ids(text: list[int], image_tokens: int) -> torch.Tensor:
    """SmolVLM's single-image layout: <fake><global-img><image>*M<fake>, then the text."""
    return torch.tensor([[BOS, FAKE, GLOBAL] + [IMAGE] * image_tokens + [FAKE] + text])


@pytest.fixture(scope="module")
def made():
    hf = tiny_smolvlm()
    backbone = SmolVLMBackbone(hf)
    model = AdaptedVLM(backbone, VLMAdaptConfig(depth=3, dim=48, num_image_tokens=backbone.num_image_tokens))
    torch.manual_seed(1)
    pixels = [torch.randn(1, 3, 32, 32) for _ in range(3)]
    prompts = [prompt_ids(t, backbone.num_image_tokens) for t in ([5, 6, 7, 3], [8, 9, 3], [10, 3])]
    return hf, model.eval(), pixels, prompts


def test_visual_tokens_and_prefill_equal_transformers(made):
    hf, model, pixels, prompts = made
    with torch.no_grad():
        for ids, px in zip(prompts, pixels):
            want = hf.model.get_image_features(px[:, None]).pooler_output[0]
            assert (model.backbone.encode_image(px)[0] - want).abs().max() < 1e-5
            logits = hf(input_ids=ids, pixel_values=px[:, None]).logits[:, -1]
            cache = model.backbone.new_cache(1, ids.shape[1])
            _, last = model.prefill(model.prompt(ids, px), cache)
            assert (last - logits).abs().max() < 1e-5


def test_generate_at_full_depth_equals_transformers_token_by_token(made):
    hf, model, pixels, prompts = made
    for ids, px in zip(prompts, pixels):
        want = hf.generate(input_ids=ids, pixel_values=px[:, None], max_new_tokens=10, do_sample=False,
                           eos_token_id=[END])[0, ids.shape[1]:].tolist()
        got = model.generate(ids, px, max_new_tokens=10, stop_ids=(END,))
        assert got.tokens == want
        assert got.exits == [model.num_stages - 1] * len(want)


def test_a_pruned_prompt_is_the_full_prompt_with_dropped_visual_tokens_masked(made):
    """Prefill at keep 0.5 gives the logits of the unpruned prompt whose dropped visual tokens no token sees."""
    _, model, pixels, prompts = made
    ids, px = prompts[0], pixels[0]
    with torch.no_grad():
        pruned = model.prompt(ids, px, keep_ratio=0.5)
        full = model.prompt(ids, px)
        assert pruned.kept.shape == (1, 2) and pruned.embeds.shape[1] == ids.shape[1] - 2
        T = ids.shape[1]
        image_at = (ids[0] == IMAGE).nonzero()[:, 0]
        dropped = [int(image_at[i]) for i in range(len(image_at)) if i not in pruned.kept[0].tolist()]
        mask = model._causal(0, T, T).clone()
        mask[..., dropped] = MASK_VALUE
        cos, sin = model.backbone.rotary(full.positions, full.embeds)
        x, cache = full.embeds, model.backbone.new_cache(1, T)
        for i in range(model.config.depth):
            x = model.backbone.layer(i, x, cos, sin, cache[i], torch.arange(T), mask)
        want = model.exit(model.num_stages - 1, x[:, -1:])[0][:, 0]
        _, got = model.prefill(pruned, model.backbone.new_cache(1, pruned.embeds.shape[1]))
        assert (got - want).abs().max() < 1e-4
        # the kept tokens keep their positions: the text after the image is not shifted
        assert pruned.positions[0, -1] == T - 1


def test_the_exit_policy_decides_per_token(made):
    _, model, pixels, prompts = made
    ids, px = prompts[1], pixels[1]
    every = model.generate(ids, px, max_new_tokens=6, policy=Policy("max_probability", 0.0))
    assert every.exits == [model.num_stages - 1] + [0] * (len(every.tokens) - 1)  # the first from the prefill
    never = model.generate(ids, px, max_new_tokens=6, policy=Policy("max_probability", 1.0))
    assert never.exits == [model.num_stages - 1] * len(never.tokens)
    assert never.tokens == model.generate(ids, px, max_new_tokens=6).tokens


def test_a_prompt_without_the_image_tokens_is_refused(made):
    _, model, pixels, _ = made
    with pytest.raises(ConfigError, match="image tokens"):
        model.prompt(torch.tensor([[BOS, IMAGE, 5, 3]]), pixels[0])


# ---------------------------------------------------------------------------------------------- source folder, distillation
WORDS = "user assistant : describe the image . ? what color shape is a red blue green circle square".split()


def make_source(root, std: float = 0.2, layers: int = 3, width: int = 48):
    """A tiny SmolVLM (tiny_smolvlm) saved like a downloaded one: model, word-level tokenizer with SmolVLM's chat
    template and special tokens, and the image processor (one unsplit 32 px tile)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers.models.smolvlm.processing_smolvlm import DEFAULT_CHAT_TEMPLATE

    specials = ["<pad>", "<|im_start|>", "<end_of_utterance>", "<unk>"]
    vocab = {w: i for i, w in enumerate(specials + WORDS)}
    vocab.update({"<image>": IMAGE, "<fake_token_around_image>": FAKE, "<global-img>": GLOBAL})
    vocab.update({f"w{i}": i for i in range(VOCAB) if i not in vocab.values()})
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", bos_token="<|im_start|>",
        eos_token="<end_of_utterance>", additional_special_tokens=["<image>", "<fake_token_around_image>", "<global-img>"])
    tok.chat_template = DEFAULT_CHAT_TEMPLATE
    model = tiny_smolvlm(std, layers, width)
    model.save_pretrained(root)
    tok.save_pretrained(root)
    transformers.SmolVLMImageProcessorPil(do_image_splitting=False, size={"longest_edge": 32},
                                          max_image_size={"longest_edge": 32}).save_pretrained(root)
    return root


def scene_data(step: int, n: int):
    rng = np.random.default_rng(step)
    images = [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(n)]
    texts = [rng.choice(["describe the image.", "what color is the circle?", "what shape is a red ?"]) for _ in range(n)]
    return images, texts


def test_load_source_prompts_as_the_processor_lays_out_one_tile(tmp_path):
    from mmedge.adapt.smolvlm import load_source

    model, pre = load_source(make_source(tmp_path / "src"))
    ids = pre.prompt_ids("describe the image.")[0].tolist()
    M = model.backbone.num_image_tokens
    assert ids[:5 + M + 1] == [BOS, vocab_id(pre, "user"), vocab_id(pre, ":"), FAKE, GLOBAL] + [IMAGE] * M + [FAKE]
    assert pre.decode(ids) == "user : describe the image . assistant :"
    px = pre.pixels([np.zeros((20, 50, 3), np.uint8) + 255])  # a wide image is stretched to the tile
    assert tuple(px.shape) == (1, 3, 32, 32) and float(px.max()) == 1.0


def vocab_id(pre, word: str) -> int:
    return pre.tokenizer.convert_tokens_to_ids(word)


def test_distillation_fits_the_exits_and_the_prefilter_to_the_teacher(tmp_path):
    """On one batch, repeated (what the losses can reach, not how they generalise: a random tiny model's
    attention is near uniform over 4 visual tokens; benchmarks/vlm_teacher.py measures held-out data on a
    trained teacher): exit 1 learns the teacher's tokens; the prefilter which tokens to keep so that the pruned
    model's output stays close to the full model's (the KL alone, the default), or the tokens the teacher reads
    (with the attention prior: as much of the teacher's attention as the best 2 of 4 tokens hold); the pretrained
    weights stay as they were."""
    from mmedge.adapt.smolvlm import load_source
    from mmedge.adapt.vlm_distill import (VLMDistillConfig, agreement, attention_prior, distill, kept_attention,
                                          pruned_kl, run_stages, teacher_batch)

    torch.manual_seed(0)
    model, pre = load_source(make_source(tmp_path / "src"), exit_layers=[0, 2], keep_ratios=[1.0, 0.5])
    weights = {n: p.clone() for n, p in model.backbone.named_parameters()}
    fixed = scene_data(7, 8)
    held = [teacher_batch(model, pre, *fixed, max_new_tokens=6)]
    before, kl_before = agreement(model, held), pruned_kl(model, held, 0.5)
    state = {n: p.clone() for n, p in model.state_dict().items()}
    cfg = VLMDistillConfig(steps=40, batch_size=8, max_new_tokens=6, lr=1e-2)
    log = distill(model, pre, lambda step, n: fixed, cfg, progress=False)
    after, kl_after = agreement(model, held), pruned_kl(model, held, 0.5)
    assert after[-1] == before[-1] == 1.0 and after[0] > before[0] + 0.3, (before, after)
    assert kl_after < 0.8 * kl_before, (kl_before, kl_after)
    assert len(log["history"]) == 40 and {r["keep_ratio"] for r in log["history"]} == {0.5}
    model.load_state_dict(state)  # again from the start, with the attention prior
    kept_before = kept_attention(model, held, 0.5)
    attention: list[torch.Tensor] = []
    run_stages(model, held[0], attention=attention)
    best = float(attention_prior(model, held[0], attention).topk(2, dim=-1).values.sum(-1).mean())  # keep 2 of 4
    distill(model, pre, lambda step, n: fixed, VLMDistillConfig(steps=40, batch_size=8, max_new_tokens=6, lr=3e-3,
                                                                attention_prior_weight=5.0), progress=False)
    assert kept_before < best - 0.03 and kept_attention(model, held, 0.5) > best - 0.01, (kept_before, best)
    assert all(torch.equal(p, weights[n]) for n, p in model.backbone.named_parameters())


def test_calibration_takes_the_cheapest_threshold_within_the_bound(tmp_path):
    """Confidence 0 exits every decoded token at exit 1 (1 layer per token), 1.0 never does (an untrained confidence is near 0.5); a loose
    bound takes the cheaper one, a bound nothing but full depth meets takes the dearer; counted FLOPs follow."""
    from mmedge.adapt.smolvlm import load_source
    from mmedge.adapt.vlm_eval import calibrate, decoder_flops, flops_per_token

    torch.manual_seed(0)
    model, pre = load_source(make_source(tmp_path / "src"), exit_layers=[0, 2])
    images, texts = scene_data(3, 4)
    refs = ["w20"] * 4
    loose = calibrate(model, pre, "answer", images, texts, refs, [0.0, 1.0], bound=100.0, max_new_tokens=5)
    assert loose["chosen"]["threshold"] == 0.0 and loose["chosen"]["layers_per_token"] == 1.0
    tight = calibrate(model, pre, "answer", images, texts, refs, [0.0, 1.0], bound=-1.0, max_new_tokens=5)
    assert tight["chosen"] is None  # nothing is 1 point *better* than full depth
    parts = decoder_flops(model, slots=16)
    early, full = flops_per_token(model, [1, 0], parts), flops_per_token(model, [0, 1], parts)
    # a confidence read per exit on the way, the head only at the exit taken
    assert early == parts["layer"] + parts["confidences"][0] + parts["exit_heads"][0] + 2 * parts["copy_forward_layer"]
    assert full == 3 * parts["layer"] + sum(parts["confidences"]) + parts["exit_heads"][1] and early < full
    assert 0 < parts["confidences"][0] < parts["exit_heads"][0]


def test_bundle_calibration_bounds_each_task_on_its_own(monkeypatch):
    """One setting for every prompt must hold both bounds, so a fragile task (captions lose CIDEr at keep 0.5)
    holds the other back; each task's own setting is the cheapest for its prompts within its own bound."""
    from types import SimpleNamespace

    from mmedge.adapt import vlm_calibrate
    from mmedge.adapt.vlm_calibrate import Prompts, Row, choose

    def row(policy, ratio, cider_drop, wrong, cap_passes, ans_passes):
        return Row(policy.to_dict(), ratio, 100.0 - cider_drop, 100.0 - 10 * wrong, (cap_passes + ans_passes) / 2, 1.0,
                   [100.0 - cider_drop] * 10, [0.0] * wrong + [100.0] * (10 - wrong),
                   {"caption": cap_passes, "answer": ans_passes})

    table = {("full", 1.0): row(Policy("full"), 1.0, 0, 0, 100, 60),
             ("confidence", 1.0): row(Policy("confidence", threshold=0.9), 1.0, 0, 0, 80, 50),
             ("full", 0.5): row(Policy("full"), 0.5, 30, 0, 70, 40),
             ("confidence", 0.5): row(Policy("confidence", threshold=0.9), 0.5, 30, 5, 50, 30)}
    monkeypatch.setattr(vlm_calibrate, "evaluate", lambda engine, prompts, policy, ratio, n: table[(policy.kind, ratio)])
    monkeypatch.setattr(vlm_calibrate, "candidate_policies", lambda n: [Policy("full"), Policy("confidence", threshold=0.9)])
    engine = SimpleNamespace(layout=SimpleNamespace(keep_ratios=[1.0, 0.5], stage_layers=[[0], [1]]))
    prompts = Prompts([None] * 20, [""] * 20, [""] * 20, ["caption"] * 10 + ["answer"] * 10)
    result = choose(engine, prompts, max_drop_accuracy=0.01, max_drop_cider=1.0, z=1.645, max_new_tokens=4,
                    progress=False)
    assert (result["chosen"]["policy"]["kind"], result["chosen"]["keep_ratio"]) == ("confidence", 1.0)
    assert (result["tasks"]["caption"]["policy"]["kind"], result["tasks"]["caption"]["keep_ratio"]) == ("confidence", 1.0)
    assert (result["tasks"]["answer"]["policy"]["kind"], result["tasks"]["answer"]["keep_ratio"]) == ("full", 0.5)
    assert "answer prompts on their own (their bound only): full at keep 0.5" in vlm_calibrate.format_rows(result)


def test_cli_adapts_a_smolvlm_into_a_folder_that_loads_back(tmp_path, capsys):
    """`mmedge adapt --task generate` distils on the scenes' prompts and writes a folder (weights, tokenizer,
    image processor, card, report) whose model at full depth is the source and whose exits are the trained
    ones; encoder-only flags are refused with what applies."""
    from mmedge.adapt import load_adapted
    from mmedge.cli import main

    source, out = make_source(tmp_path / "src"), tmp_path / "adapted"
    assert main(["adapt", "--from", str(source), "--task", "generate", "--out", str(out), "--steps", "3",
                 "--batch-size", "4", "--exits", "1,3", "--no-progress"]) == 0
    assert "token agreement with the full model per exit" in capsys.readouterr().out
    assert {"config.json", "model.safetensors", "README.md", "adapt_report.json", "tokenizer.json"} <= \
        {p.name for p in out.iterdir()}
    model, pre = load_adapted(out)
    hf = transformers.SmolVLMForConditionalGeneration.from_pretrained(source).eval()
    ids, px = pre.prompt_ids("describe the image."), pre.pixels(scene_data(5, 1)[0])
    want = hf.generate(input_ids=ids, pixel_values=px[:, None], max_new_tokens=8, do_sample=False,
                       eos_token_id=list(pre.stop_ids))[0, ids.shape[1]:].tolist()
    assert model.generate(ids, px, max_new_tokens=8, stop_ids=pre.stop_ids).tokens == want
    assert model.config.exits == [0, 2] and float(model.exit_maps[0].up.weight.abs().sum()) > 0  # trained
    assert main(["adapt", "--from", str(source), "--task", "generate", "--out", str(tmp_path / "x"),
                 "--exit-rank", "8"]) != 0
    assert "--exit-rank applies to encoder models" in capsys.readouterr().err


def test_generative_adapt_distils_on_a_dataset_of_your_own(tmp_path, capsys):
    """`--data NAME:ROOT` for a generative model: the prompts of a dataset on disk (a JSON Lines set's
    questions; a caption set's images under the caption prompt), no labels read; two-image data and
    unknown names are refused with what to use."""
    from dataset_fixtures import make_coco, make_jsonl, make_nlvr2
    from mmedge.adapt.vlm_distill import CAPTION_PROMPT, dataset_prompts
    from mmedge.cli import main
    from mmedge.errors import DatasetError

    jsonl, coco = tmp_path / "own", tmp_path / "coco"
    make_jsonl(jsonl, 6, "train")
    make_jsonl(jsonl, 4, "val")
    make_coco(coco, 4, "train")
    images, texts = dataset_prompts(f"jsonl:{jsonl}")(0, 3)
    questions = {json.loads(line)["question"] for line in (jsonl / "train.jsonl").read_text().splitlines()}
    assert len(images) == 3 and set(texts) <= questions and np.asarray(images[0]).ndim == 3
    assert dataset_prompts(f"jsonl:{jsonl}")(2, 3)[1] == dataset_prompts(f"jsonl:{jsonl}")(0, 3)[1]  # wraps at 6
    assert dataset_prompts(f"coco:{coco}")(0, 2)[1] == [CAPTION_PROMPT] * 2
    make_nlvr2(tmp_path / "nlvr2", 2, "train")
    with pytest.raises(DatasetError, match="one image and a prompt"):
        dataset_prompts(f"nlvr2:{tmp_path / 'nlvr2'}")
    source, out = make_source(tmp_path / "src"), tmp_path / "adapted"
    assert main(["adapt", "--from", str(source), "--task", "generate", "--data", f"jsonl:{jsonl}", "--out", str(out),
                 "--steps", "2", "--batch-size", "2", "--exits", "1,3", "--no-progress"]) == 0
    report = json.loads((out / "adapt_report.json").read_text())
    assert report["data"] == "jsonl" and report["steps"] == 2
    assert "unlabelled prompts of jsonl" in (out / "README.md").read_text()


def test_generative_adapt_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path, monkeypatch):
    """`mmedge adapt --task generate --resume`: a run cut after its step-2 checkpoint, resumed, writes the
    adapter weights an uninterrupted run writes; an occupied folder needs --resume or --force, and other
    settings than the checkpoint's are refused."""
    from safetensors.torch import load_file

    from mmedge.adapt import adapt, vlm_distill
    from mmedge.adapt.vlm_distill import VLMDistillConfig

    source = make_source(tmp_path / "src")
    cfg = VLMDistillConfig(steps=4, batch_size=2, max_new_tokens=4, checkpoint_every=2)
    quiet = {"progress": False, "log": lambda *_: None, "exit_layers": [0, 2]}
    adapt(source, tmp_path / "straight", cfg, **quiet)
    step, calls = vlm_distill.distill_step, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # the third step, after the step-2 checkpoint
            raise KeyboardInterrupt
        return step(*args, **kwargs)

    monkeypatch.setattr(vlm_distill, "distill_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        adapt(source, tmp_path / "resumed", cfg, **quiet)
    monkeypatch.setattr(vlm_distill, "distill_step", step)
    with pytest.raises(ConfigError, match="already holds an adaptation run"):
        adapt(source, tmp_path / "resumed", cfg, **quiet)
    with pytest.raises(ConfigError, match="differ"):
        adapt(source, tmp_path / "resumed", VLMDistillConfig(**{**cfg.to_dict(), "lr": 0.1}), resume=True, **quiet)
    adapt(source, tmp_path / "resumed", cfg, resume=True, **quiet)
    a, b = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("straight", "resumed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "resumed" / "adapt_report.json").read_text())["steps"] == 4


def adapted_folder(root, **overrides):
    """A tiny SmolVLM adapted with exits after layers 1 and 3, keep ratios 1 and 0.5, written as `mmedge adapt`
    writes it; exit 1's map is not the identity, so early exits change tokens."""
    from mmedge.adapt.folder import save_adapted
    from mmedge.adapt.smolvlm import load_source

    torch.manual_seed(0)
    source = make_source(root / "src", **overrides)
    model, pre = load_source(source, exit_layers=[0, 2], keep_ratios=[1.0, 0.5])
    torch.nn.init.normal_(model.exit_maps[0].up.weight, std=0.1)
    return save_adapted(model, pre, root / "adapted", str(source)), source


def test_eval_scores_an_adapted_vlm_folder_per_keep_ratio_and_other_commands_say_what_to_run(tmp_path, capsys):
    """`mmedge eval` on an adapted generative VLM: captions (CIDEr) and answers (accuracy) at full depth per keep
    ratio, equal to the model's own generations scored by vlm_eval; on the scenes and on a caption set on disk
    (every caption of an image a reference); predict, probe and demo name what to run instead."""
    from dataset_fixtures import make_coco, make_jsonl
    from mmedge.adapt import load_adapted
    from mmedge.adapt.vlm_distill import CAPTION_PROMPT
    from mmedge.adapt.vlm_eval import per_prompt
    from mmedge.adapt.vlm_evaluate import scene_examples
    from mmedge.cli import main

    folder, _ = adapted_folder(tmp_path)
    out = tmp_path / "eval.json"
    assert main(["eval", "--model", str(folder), "--limit", "4", "--json", str(out), "--no-progress"]) == 0
    result = json.loads(out.read_text())
    assert [r["keep_ratio"] for r in result["rows"]] == [1.0, 0.5] and result["split"] == "test"
    assert "captions CIDEr" in capsys.readouterr().out
    model, pre = load_adapted(folder)
    examples = scene_examples(pre.image_size, "test", 4, 0)
    for task, (images, texts, refs) in examples.items():
        said = [pre.decode(model.generate(pre.prompt_ids(t), pre.pixels([im]), 24, pre.stop_ids, keep_ratio=0.5).tokens)
                for im, t in zip(images, texts)]
        assert result["rows"][1][task]["quality"] == pytest.approx(np.mean(per_prompt(task, said, refs)))
        assert result["rows"][1][task]["prompts"] == 2
    coco, jsonl = make_coco(tmp_path / "coco", 3, "val"), make_jsonl(tmp_path / "own", 3, "val")
    assert main(["eval", "--model", str(folder), "--data", f"coco:{coco}", "--limit", "2", "--keep-ratios", "1",
                 "--json", str(out), "--no-progress"]) == 0
    result = json.loads(out.read_text())
    assert list(result["rows"][0]) == ["keep_ratio", "visual_tokens", "caption"] and result["split"] == "val"
    assert result["rows"][0]["caption"]["prompts"] == 2  # images, each with its two captions as references
    assert main(["eval", "--model", str(folder), "--data", f"jsonl:{jsonl}", "--split", "val", "--limit", "3",
                 "--keep-ratios", "1", "--no-progress"]) == 0
    assert "answers accuracy" in capsys.readouterr().out and CAPTION_PROMPT == "describe the image."
    for command in (["predict", "--image", str(tmp_path / "x.png"), "--text", "hi"], ["probe"], ["demo"]):
        assert main([command[0], "--model", str(folder), *command[1:]]) == 2
        assert "Engine.load(B).generate(image, prompt)" in capsys.readouterr().err


def test_onnx_bundle_generates_as_transformers_and_as_pytorch(tmp_path, capsys):
    """`mmedge export` of an adapted SmolVLM: a bundle of kind "vlm" whose Engine.load(...).generate(image, prompt)
    (the runtime's own preprocessing and tokenizer, the shared decoding loop on onnxruntime) writes, at full
    depth, transformers' generate() token for token, greedy and with 3 beams, and with an exit policy at keep
    0.5 the adapted PyTorch model's tokens and exits; caption() is generate() under the caption prompt; int8 and int4 copies generate."""
    from mmedge.adapt import load_adapted
    from mmedge.cli import main
    from mmedge.runtime.engine import Engine

    folder, source = adapted_folder(tmp_path)
    bundle = tmp_path / "vlm.mmedge"
    assert main(["export", "--model", str(folder), "--out", str(bundle), "--target", "onnx", "--quantize", "int8",
                 "int4", "--max-slots", "40", "--max-new-tokens", "10", "--parity-samples", "2",
                 "--caption-prompt", "describe the shape .", "--ort-format"]) == 0
    out = capsys.readouterr().out
    assert "onnxruntime/fp32: keep 1: 100% of generations identical to PyTorch" in out, out
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["kind"] == "vlm" and manifest["model"]["transformers_identical_generations"] == 1.0
    assert {(a["runtime"], a["precision"], a["format"]) for a in manifest["artifacts"]} == \
        {("onnxruntime", p, f) for p in ("fp32", "int8", "int4") for f in ("onnx", "ort")}
    ort = {a["precision"]: a for a in manifest["artifacts"] if a["format"] == "ort"}
    assert ort["fp32"]["parity"]["passed"] and all(e["identical_generations"] == 1.0
                                                   for e in ort["fp32"]["parity"]["by_keep_ratio"].values())
    assert set(ort["int4"]["stages"]) == set(manifest["layout"]["graphs"])
    assert all(Path(bundle / st["file"]).suffix == ".ort" for a in ort.values() for st in a["stages"].values())
    engine = Engine.load(bundle)
    assert type(engine).__name__ == "VLMEngine" and engine.keep_ratio == 1.0
    model, pre = load_adapted(folder)
    hf = transformers.SmolVLMForConditionalGeneration.from_pretrained(source).eval()
    policy = Policy("max_probability", threshold=0.3)
    early = 0
    for image, text in zip(*scene_data(5, 3)):
        ids, px = pre.prompt_ids(text), pre.pixels([image])
        assert engine.prompt_ids(text) == ids[0].tolist()
        assert np.array_equal(engine.preprocess(image), px.numpy())
        want = hf.generate(input_ids=ids, pixel_values=px[:, None], max_new_tokens=10, do_sample=False,
                           eos_token_id=list(pre.stop_ids))[0, ids.shape[1]:].tolist()
        got = engine.generate(image, text, max_new_tokens=10)
        assert got.tokens == want and got.text == pre.decode(want)
        beams = hf.generate(input_ids=ids, pixel_values=px[:, None], max_new_tokens=10, do_sample=False, num_beams=3,
                            eos_token_id=list(pre.stop_ids), pad_token_id=0)[0, ids.shape[1]:].tolist()
        assert engine.generate(image, text, 10, beam=3).tokens == beams  # beam search too, as transformers' own
        run = engine.generate(image, text, 10, policy=policy, keep_ratio=0.5)
        ref = model.generate(ids, px, 10, pre.stop_ids, keep_ratio=0.5, policy=policy)
        assert (run.tokens, run.exits, run.kept_visual_tokens) == (ref.tokens, ref.exits, 2)
        early += run.exits.count(0)
    assert early > 0  # the policy did take the early exit
    caption = engine.caption(image, max_len=6)
    assert caption.tokens == engine.generate(image, "describe the shape .", 6).tokens
    # one vision graph: the runtime keeps the top k of its scores at any keep ratio, as PyTorch does
    quarter = engine.generate(image, text, 8, keep_ratio=0.25)
    assert (quarter.tokens, quarter.kept_visual_tokens) == \
        (model.generate(ids, px, 8, pre.stop_ids, keep_ratio=0.25).tokens, 1)
    with pytest.raises(ConfigError, match="keep ratio 1.5 must be a number in"):
        engine.generate(image, text, keep_ratio=1.5)
    # the LM head runs once per token under a confidence policy, at every exit on the way under max_probability
    calls = []
    run_graph = engine.session.run
    engine.session.run = lambda name, feeds: calls.append(name) or run_graph(name, feeds)
    once = engine.generate(image, text, 8, policy=Policy("confidence", threshold=0.0))  # every token exits at 0
    assert calls.count("head") == len(once.tokens) > 2 and calls.count("step1") == 1  # step1: the prefill only
    calls.clear()
    every = engine.generate(image, text, 8, policy=Policy("max_probability", threshold=1.0))  # no early exit
    assert calls.count("head") == 1 + 2 * (len(every.tokens) - 1)
    engine.session.run = run_graph
    with pytest.raises(ConfigError, match="non-empty"):
        engine.generate(image, "  ")
    import onnx

    for precision, op in (("int8", "MatMulInteger"), ("int4", "MatMulNBits")):  # weight-only quantized copies
        assert op in {n.op_type for n in onnx.load(str(bundle / "onnx" / precision / "step0.onnx")).graph.node}
        quantized = Engine.load(bundle, precision=precision).generate(image, text, 6, policy=policy, keep_ratio=0.5)
        assert 1 <= len(quantized.tokens) <= 6 and all(0 <= t < VOCAB for t in quantized.tokens)
        # the ORT-format copy of the same graphs generates the same tokens
        in_ort = Engine.load(bundle, precision=precision, fmt="ort").generate(image, text, 6, policy=policy,
                                                                               keep_ratio=0.5)
        assert in_ort.tokens == quantized.tokens
    assert Engine.load(bundle, fmt="ort").generate(image, text, max_new_tokens=10).tokens == want


def test_vlm_bundle_is_verified_on_load(tmp_path):
    """The bundle loads with every check of the other kinds: a changed file is refused by its hash, a manifest
    whose layout disagrees with itself as inconsistent, a signed bundle with its key; a classifier engine's
    generate() and the VLM engine's predict() say which call applies."""
    import shutil

    from mmedge.adapt.vlm_bundle import export_vlm_bundle
    from mmedge.bundle.signing import new_key_pair
    from mmedge.errors import BundleError
    from mmedge.runtime.engine import Engine

    folder, _ = adapted_folder(tmp_path)
    private, public = new_key_pair(tmp_path / "keys")
    bundle = export_vlm_bundle(folder, tmp_path / "vlm.mmedge", targets=("onnx",), max_slots=40, max_new_tokens=8,
                               parity_prompts=1, sign_key=private, log=lambda *a: None)
    engine = Engine.load(bundle, verify_key=public)
    with pytest.raises(BundleError, match="generate"):
        engine.predict(np.zeros((32, 32, 3), np.uint8), "what?")
    from mmedge.cli import main

    import subprocess
    import sys

    from test_runtime import TORCH_BLOCKER

    generating = TORCH_BLOCKER.replace('p = engine.predict(np.full((48, 48, 3), 90, np.uint8), "is there a red circle ?")',
                                       'p = engine.generate(np.full((32, 32, 3), 90, np.uint8), "describe the image.", 3)')
    generating = generating.replace("p.answer, p.exit_index", "p.tokens")
    assert "engine.generate" in generating and "p.tokens" in generating
    done = subprocess.run([sys.executable, "-c", generating, str(bundle)],
                          capture_output=True, text=True)  # the runtime needs no torch
    assert done.returncode == 0 and done.stdout.startswith("OK "), done.stderr[-2000:]
    edited = tmp_path / "edited.mmedge"
    shutil.copytree(bundle, edited)
    (edited / "tokenizer.json").write_text((edited / "tokenizer.json").read_text().replace("circle", "circus"))
    with pytest.raises(BundleError) as refused:
        Engine.load(edited)
    assert refused.value.code == "hash-mismatch"
    shutil.rmtree(edited)
    shutil.copytree(bundle, edited)
    manifest = json.loads((edited / "manifest.json").read_text())
    manifest["thresholds"]["keep_ratio"] = 0.25
    (edited / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError) as refused:
        Engine.load(edited)
    assert refused.value.code == "inconsistent" and "keep_ratio 0.25" in str(refused.value)
    with pytest.raises(BundleError) as refused:
        Engine.load(edited, verify_key=public)  # and the signature no longer covers it
    assert refused.value.code == "signature-invalid"
    # a bundle laid out as an earlier mmedge laid it out (a vision graph per keep ratio) is refused, saying what to do
    manifest = json.loads((bundle / "manifest.json").read_text())
    graphs = manifest["layout"]["graphs"]
    graphs["vision_k1"] = graphs["vision_k0.5"] = ["visual", "kept"]
    del graphs["vision"], graphs["head"]
    (edited / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError) as refused:
        Engine.load(edited)
    assert refused.value.code == "inconsistent" and "export it again" in str(refused.value)
    # calibration: a loose bound takes the cheapest candidate, written into the manifest and re-signed
    before = json.loads((bundle / "manifest.json").read_text())
    assert main(["calibrate", "--artifact", str(bundle), "--samples", "20", "--max-drop", "0.99", "--max-drop-cider",
                 "1000", "--sign-key", str(private), "--no-progress"]) == 0
    after = json.loads((bundle / "manifest.json").read_text())
    th = after["thresholds"]
    assert th["calibrated"] and th["calibration"]["prompts"] == 20 and th["calibration"]["layer_passes_ratio"] < 1
    assert after["files"] == before["files"] and after["release"]["sequence"] > before["release"]["sequence"]
    calibrated = Engine.load(bundle, verify_key=public)
    assert (calibrated.policy.kind, calibrated.keep_ratio) == (th["policy"], th["keep_ratio"]) != ("full", 1.0)
    # each task's own setting: caption() and generate(task=...) use it, arguments override it
    assert set(th["tasks"]) == {"caption", "answer"} and set(th["calibration"]["tasks"]) == {"caption", "answer"}
    for task, want in th["tasks"].items():
        policy, ratio = calibrated.settings(task)
        assert (policy.kind, ratio) == (want["policy"], want["keep_ratio"])
    grey = np.full((32, 32, 3), 90, np.uint8)
    assert calibrated.caption(grey, 2).keep_ratio == th["tasks"]["caption"]["keep_ratio"]
    assert calibrated.generate(grey, "what?", 2, task="answer").keep_ratio == th["tasks"]["answer"]["keep_ratio"]
    assert calibrated.generate(grey, "what?", 2, task="answer", keep_ratio=1).keep_ratio == 1.0
    assert Engine.load(bundle, keep_ratio=1).settings("answer")[1] == 1.0  # a load option overrides every task's
    with pytest.raises(ConfigError, match="task 'vqa' unknown"):
        calibrated.generate(grey, "what?", 2, task="vqa")
    with pytest.raises(ConfigError, match="caption"):
        calibrated.caption(grey, 2, task="answer")
    # the host benchmark: the four settings interleaved, written as JSON, Markdown and a plot
    assert main(["bench", "--artifact", str(bundle), "--device", "host", "--samples", "4", "--repeats", "1",
                 "--json", str(tmp_path / "bench" / "vlm.json"), "--no-progress"]) == 0
    result = json.loads((tmp_path / "bench" / "vlm.json").read_text())
    assert [r["setting"] for r in result["rows"]] == ["full depth, every token", "prefilter only", "exits only",
                                                      "prefilter + exits"] and result["calibrated"]
    assert result["rows"][0]["speedup_total"] == 1.0
    both = result["rows"][3]["by_task"]
    assert {t: (v["policy"]["kind"], v["keep_ratio"]) for t, v in both.items()} == \
        {t: (v["policy"], v["keep_ratio"]) for t, v in th["tasks"].items()}
    assert both["caption"]["quality"] == result["rows"][3]["cider"] and both["answer"]["speedup_total"] > 0
    assert "Per task" in (tmp_path / "bench" / "vlm.md").read_text()
    assert {p.suffix for p in (tmp_path / "bench").iterdir()} == {".json", ".md", ".png"}
    # a phone profile: modelled (with --modelled, as without a phone), with the host check against this host
    assert main(["bench", "--artifact", str(bundle), "--device", "pixel", "--modelled",
                 "--json", str(tmp_path / "pixel" / "vlm.json")]) == 0
    modelled = json.loads((tmp_path / "pixel" / "vlm.json").read_text())
    assert modelled["kind"] == "modelled-generation" and "MODELLED" in modelled["note"]
    assert set(modelled["by_keep_ratio"]) == {"1.0", "0.5"} and len(modelled["decode_ms"]) == 2
    assert modelled["exit_after_layer"] == [1, 3]
    assert all(v["first_token_ms"] > v["encode_ms"] > 0 for v in modelled["by_keep_ratio"].values())
    rows = modelled["host_check"]["rows"]
    assert len(rows) == 2 * 2 + 2 and all(r["measured_ms"] > 0 and np.isfinite(r["error"]) for r in rows)
    assert {p.suffix for p in (tmp_path / "pixel").iterdir()} == {".json", ".md", ".png"}
    assert main(["bench", "--artifact", str(bundle), "--device", "pixel", "--modelled", "--precision", "int4"]) != 0


def test_executorch_bundle_generates_as_transformers(tmp_path):
    """The same bundle as one ExecuTorch program (a method per graph, XNNPACK): full depth gives
    transformers' tokens, an exit policy at keep 0.5 the PyTorch model's tokens and exits."""
    pytest.importorskip("executorch")
    from mmedge.adapt import load_adapted
    from mmedge.adapt.vlm_bundle import export_vlm_bundle
    from mmedge.runtime.engine import Engine

    folder, source = adapted_folder(tmp_path)
    bundle = export_vlm_bundle(folder, tmp_path / "vlm.mmedge", targets=("executorch",), max_slots=40,
                               max_new_tokens=10, parity_prompts=1, log=lambda *a: None)
    engine = Engine.load(bundle, backend="executorch")
    assert engine.backend == "executorch"
    model, pre = load_adapted(folder)
    hf = transformers.SmolVLMForConditionalGeneration.from_pretrained(source).eval()
    image, text = scene_data(5, 1)[0][0], "what color is the circle?"
    ids, px = pre.prompt_ids(text), pre.pixels([image])
    want = hf.generate(input_ids=ids, pixel_values=px[:, None], max_new_tokens=10, do_sample=False,
                       eos_token_id=list(pre.stop_ids))[0, ids.shape[1]:].tolist()
    assert engine.generate(image, text, 10).tokens == want
    policy = Policy("max_probability", threshold=0.3)
    run = engine.generate(image, text, 10, policy=policy, keep_ratio=0.5)
    ref = model.generate(ids, px, 10, pre.stop_ids, keep_ratio=0.5, policy=policy)
    assert (run.tokens, run.exits) == (ref.tokens, ref.exits)


def test_executorch_int4_program_holds_quantized_weights_and_generates(tmp_path):
    """ExecuTorch with XNNPACK's dynamically quantized linears (torchao; int4 weights in groups of 32, so the
    tiny decoder is 64 wide here): one program, under 80% of the model's fp32 weights, that generates. (int8
    takes the same path with int8 weights per channel: benchmarks/vlm_teacher.py runs both; one export is
    what the suite's time allows.)"""
    pytest.importorskip("executorch")
    from mmedge.adapt.smolvlm import load_source
    from mmedge.adapt.vlm_export import executorch_quantized, export_executorch, open_executorch
    from mmedge.errors import ExportError
    from mmedge.runtime.vlm import VLMDecoder

    torch.manual_seed(0)
    model, pre = load_source(make_source(tmp_path / "src", layers=1, width=64), exit_layers=[0],
                             keep_ratios=[1.0])  # 3 methods
    image, text = scene_data(5, 1)[0][0], "describe the image."
    ids, px = pre.prompt_ids(text), pre.pixels([image])
    size = export_executorch(model, tmp_path / "g", max_slots=32, precision="int4").stat().st_size
    assert size < 0.8 * 4 * sum(p.numel() for p in model.parameters())  # an fp32 program holds them all
    run = VLMDecoder(*open_executorch(tmp_path / "g", precision="int4")).generate(
        ids[0].tolist(), px.numpy(), Policy("full"), 8, stop_ids=pre.stop_ids)
    assert 1 <= len(run.tokens) <= 8 and all(0 <= t < VOCAB for t in run.tokens)
    with pytest.raises(ExportError, match="choose fp32"):
        executorch_quantized(model, "int2")
    with pytest.raises(ExportError, match="multiple of 32"):
        executorch_quantized(model, "int4", group_size=16)


def test_coreml_bundle_has_a_function_per_graph(tmp_path):
    """Core ML (structure only: prediction needs macOS): the bundle's one multifunction package, every graph a
    function with its inputs and outputs, the caches' static shapes and the step functions' token range; its
    parity says it was not run, and the Engine, which cannot run it here, says so."""
    pytest.importorskip("coremltools")
    from mmedge.adapt import load_adapted
    from mmedge.adapt.vlm_bundle import export_vlm_bundle
    from mmedge.adapt.vlm_export import coreml_problems
    from mmedge.errors import BundleError
    from mmedge.runtime.engine import Engine

    folder, _ = adapted_folder(tmp_path)
    bundle = export_vlm_bundle(folder, tmp_path / "vlm.mmedge", targets=("coreml",), quantize=("int4",),
                               max_slots=40, max_new_tokens=8, parity_prompts=1, log=lambda *a: None)
    artifacts = {a["precision"]: a for a in json.loads((bundle / "manifest.json").read_text())["artifacts"]}
    assert set(artifacts) == {"fp32", "int4"}
    model, _ = load_adapted(folder)
    for artifact in artifacts.values():
        assert artifact["structure_check"] == {"passed": True, "functions": 6}
        assert artifact["parity"]["status"] == "not run" and "macOS" in artifact["parity"]["reason"]
        assert coreml_problems(model, bundle / artifact["file"], 40) == []
    assert coreml_problems(model, bundle / artifacts["fp32"]["file"], 64)  # another cache size does not pass
    import coremltools as ct

    def ops(package) -> set[str]:
        spec = ct.utils.load_spec(str(package))
        return {op.type for f in spec.mlProgram.functions.values() for b in f.block_specializations.values()
                for op in b.operations}

    # int4: the weights are stored 4-bit in blocks (iOS 18's blockwise dequantization), so smaller; coremltools
    # leaves tensors under 2,048 values in fp32, most of this tiny model's, hence no bound on the ratio here
    assert "constexpr_blockwise_shift_scale" in ops(bundle / artifacts["int4"]["file"])
    assert "constexpr_blockwise_shift_scale" not in ops(bundle / artifacts["fp32"]["file"])
    weights = {p: sum(f.stat().st_size for f in (bundle / a["file"]).rglob("*.bin")) for p, a in artifacts.items()}
    assert weights["int4"] < weights["fp32"], weights
    with pytest.raises(BundleError) as refused:
        Engine.load(bundle)
    assert refused.value.code == "unsupported"

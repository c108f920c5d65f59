"""Train a small SmolVLM (Idefics3 family) with `transformers` itself on the grounded scenes: captions
("describe the image.") and short answers (the VQA questions), as the generative teacher that the
VLM adapter is measured on (no pretrained weights can be downloaded here).

    python scripts/train_smolvlm_teacher.py --out runs/smolvlm-teacher             # about an hour on 2 cores
    python scripts/train_smolvlm_teacher.py --out runs/smolvlm-teacher --resume    # continue from its checkpoint
    python scripts/train_smolvlm_teacher.py --out runs/smolvlm-teacher-64 --scale-factor 1  # 64 visual tokens, not 16

The model is `SmolVLMForConditionalGeneration` from a `SmolVLMConfig` (a SigLIP-style vision encoder,
the pixel-shuffle connector, a Llama decoder), prompted with SmolVLM's own chat template and image
layout (`transformers.models.smolvlm.processing_smolvlm`: one global image, no splitting). The image
is prepared by `SmolVLMImageProcessorPil`. `SmolVLMProcessor` itself cannot be built on this machine:
it requires a video processor, which needs torchvision; the prompt is therefore laid out here with the
processor module's own functions, and the folder holds the tokenizer, the image processor and the
chat template separately.

Writes a `save_pretrained` folder (model, tokenizer, image processor), `metrics.jsonl` (losses, and
every `eval_every` steps the validation CIDEr of greedy captions and the accuracy of greedy short
answers) and `checkpoint.safetensors` (for --resume). Deterministic by --seed.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from mmedge.caption.data import scene_captions  # noqa: E402
from mmedge.caption.metrics import caption_scores  # noqa: E402
from teacher_checkpoint import (CHECKPOINT, load_checkpoint, save_checkpoint, save_teacher,  # noqa: E402
                                teacher_arguments)
from mmedge.data.batches import generate  # noqa: E402
from mmedge.data.tasks import vocabulary_words  # noqa: E402

IMAGE, FAKE, GLOBAL, END = "<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>"
SPECIALS = ["<pad>", "<unk>", "<|im_start|>", END, IMAGE, FAKE, GLOBAL]
CAPTION_PROMPT = "describe the image."


@dataclass
class SmolTeacherConfig:
    vision_hidden: int = 128
    vision_layers: int = 4
    vision_heads: int = 4
    vision_intermediate: int = 512
    image_size: int = 96            # the scenes' size: one tile, no splitting
    patch_size: int = 12            # 8 x 8 = 64 patches
    scale_factor: int = 2           # pixel shuffle: 64 patches -> 16 image tokens in the decoder
    text_hidden: int = 160
    text_layers: int = 4
    text_heads: int = 4
    text_kv_heads: int = 2
    text_intermediate: int = 512
    max_positions: int = 128
    steps: int = 4000
    batch_size: int = 32
    caption_share: float = 0.5      # share of each batch that is captions (the rest short answers)
    lr: float = 1e-3
    warmup: int = 200
    weight_decay: float = 0.01
    eval_every: int = 500
    val_samples: int = 128          # per task
    seed: int = 0

    @property
    def image_seq_len(self) -> int:
        return (self.image_size // self.patch_size) ** 2 // self.scale_factor ** 2


def build_tokenizer():
    """Word-level tokenizer over the scenes' words and the chat's words, SmolVLM's special tokens first."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from transformers.models.smolvlm.processing_smolvlm import DEFAULT_CHAT_TEMPLATE

    words = sorted(set(vocabulary_words()) | {"user", "assistant", ":", "describe", "the", "image", ".", "?"})
    vocab = {w: i for i, w in enumerate(SPECIALS + [w for w in words if w not in SPECIALS])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()  # whitespace, and punctuation as its own token
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", bos_token="<|im_start|>", eos_token=END,
        additional_special_tokens=SPECIALS[2:],
        extra_special_tokens={"image_token": IMAGE, "fake_image_token": FAKE, "global_image_token": GLOBAL,
                              "end_of_utterance_token": END})
    tok.chat_template = DEFAULT_CHAT_TEMPLATE
    return tok


def build_image_processor(cfg: SmolTeacherConfig):
    from transformers import SmolVLMImageProcessorPil

    return SmolVLMImageProcessorPil(do_image_splitting=False, size={"longest_edge": cfg.image_size},
                                    max_image_size={"longest_edge": cfg.image_size})


def build_model(cfg: SmolTeacherConfig, tok):
    from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration

    end = tok.convert_tokens_to_ids(END)
    config = SmolVLMConfig(
        vision_config=dict(hidden_size=cfg.vision_hidden, num_hidden_layers=cfg.vision_layers,
                           num_attention_heads=cfg.vision_heads, intermediate_size=cfg.vision_intermediate,
                           image_size=cfg.image_size, patch_size=cfg.patch_size),
        text_config=dict(model_type="llama", hidden_size=cfg.text_hidden, num_hidden_layers=cfg.text_layers,
                         num_attention_heads=cfg.text_heads, num_key_value_heads=cfg.text_kv_heads,
                         intermediate_size=cfg.text_intermediate, vocab_size=len(tok),
                         max_position_embeddings=cfg.max_positions, rms_norm_eps=1e-5,
                         pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=end),
        image_token_id=tok.convert_tokens_to_ids(IMAGE), scale_factor=cfg.scale_factor,
        pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    config.eos_token_id = end
    return SmolVLMForConditionalGeneration(config)


def prompt(tok, cfg: SmolTeacherConfig, text: str) -> str:
    """SmolVLM's chat template for one user turn (image, then text) and the assistant's cue, with the
    image expanded as the processor expands a single unsplit image."""
    from transformers.models.smolvlm.processing_smolvlm import _prompt_single_image

    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    chat = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return chat.replace(IMAGE, _prompt_single_image(cfg.image_seq_len, FAKE, IMAGE, GLOBAL), 1)


def examples(cfg: SmolTeacherConfig, split: str, start: int, n: int, caption_share: float):
    """(images, prompts' texts, answers): the first round(n * caption_share) captions, then questions."""
    n_cap = round(n * caption_share)
    images, captions = scene_captions(cfg.seed, split, range(start, start + n_cap), cfg.image_size)
    qs = generate("vqa", cfg.seed, split, range(start, start + n - n_cap), image_size=cfg.image_size)
    return (images + [s.image for s in qs], [CAPTION_PROMPT] * n_cap + [s.text for s in qs],
            captions + [s.answer for s in qs])


def encode(tok, images_proc, cfg: SmolTeacherConfig, images, texts, answers=None) -> dict:
    """Model inputs; with answers, teacher forcing: labels are the answer and its end token, -100 elsewhere.
    Without, the prompts alone, left-padded for generation."""
    pixels = images_proc(images=[[im] for im in images], return_tensors="pt")
    prompts = [prompt(tok, cfg, t) for t in texts]
    if answers is None:
        tok.padding_side = "left"
        enc = tok(prompts, padding=True, return_tensors="pt", add_special_tokens=False)
        return {**enc, **pixels}
    tok.padding_side = "right"
    heads = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    tails = [tok(" " + a + END, add_special_tokens=False)["input_ids"] for a in answers]
    length = max(len(h) + len(t) for h, t in zip(heads, tails))
    ids = torch.full((len(heads), length), tok.pad_token_id)
    mask = torch.zeros((len(heads), length), dtype=torch.long)
    labels = torch.full((len(heads), length), -100)
    for row, (h, t) in enumerate(zip(heads, tails)):
        ids[row, :len(h) + len(t)] = torch.tensor(h + t)
        mask[row, :len(h) + len(t)] = 1
        labels[row, len(h):len(h) + len(t)] = torch.tensor(t)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, **pixels}


@torch.no_grad()
def evaluate(model, tok, images_proc, cfg: SmolTeacherConfig, split: str, n: int) -> dict:
    """Greedy captions' CIDEr against the one reference, and greedy short answers' exact-match accuracy."""
    model.eval()
    out = {}
    for task, share in (("caption", 1.0), ("vqa", 0.0)):
        said, want = [], []
        for start in range(0, n, 32):
            images, texts, answers = examples(cfg, split, 10**6 + start, min(32, n - start), share)
            enc = encode(tok, images_proc, cfg, images, texts)
            gen = model.generate(**enc, max_new_tokens=24, do_sample=False)
            said += [s.strip() for s in tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)]
            want += answers
        if task == "caption":
            out["caption_cider"] = caption_scores(said, [[w] for w in want], meteor=False).cider
            out["caption_exact"] = float(np.mean([s == w.replace(" .", ".") or s == w for s, w in zip(said, want)]))
        else:
            out["vqa_accuracy"] = float(np.mean([s == w for s, w in zip(said, want)]))
        out[f"{task}_example"] = said[0]
    model.train()
    return out


def schedule(step: int, cfg: SmolTeacherConfig) -> float:
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)))


def train(cfg: SmolTeacherConfig, out: Path, resume: bool) -> None:
    torch.manual_seed(cfg.seed)
    out.mkdir(parents=True, exist_ok=True)
    tok, images_proc = build_tokenizer(), build_image_processor(cfg)
    model = build_model(cfg, tok)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: schedule(s, cfg))
    ckpt = out / CHECKPOINT
    step = load_checkpoint(ckpt, model=model, opt=opt, sched=sched) if resume else 0
    log = (out / "metrics.jsonl").open("a")
    model.train()
    started = time.time()
    bar = tqdm(total=cfg.steps, initial=step, desc="smolvlm teacher", unit="step")
    while step < cfg.steps:
        images, texts, answers = examples(cfg, "train", step * cfg.batch_size, cfg.batch_size, cfg.caption_share)
        loss = model(**encode(tok, images_proc, cfg, images, texts, answers)).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if step % cfg.eval_every == 0 or step == cfg.steps:
            row = {"step": step, "loss": round(loss.item(), 4), **evaluate(model, tok, images_proc, cfg, "val",
                                                                          cfg.val_samples),
                   "seconds": round(time.time() - started, 1)}
            log.write(json.dumps(row) + "\n")
            log.flush()
            bar.write(json.dumps(row))
            save_checkpoint(ckpt, step, model=model, opt=opt, sched=sched)
    bar.close()
    test = evaluate(model, tok, images_proc, cfg, "test", 512)
    save_teacher(out, cfg, [model, tok, images_proc], {"samples_per_task": 512, **test})
    print(f"test: {test}; saved to {out}")


def main(argv: list[str] | None = None) -> None:
    parser = teacher_arguments(__doc__, SmolTeacherConfig.steps)
    parser.add_argument("--eval-every", type=int, default=SmolTeacherConfig.eval_every)
    parser.add_argument("--scale-factor", type=int, default=SmolTeacherConfig.scale_factor, choices=(1, 2, 4),
                        help="the connector's pixel shuffle: 64 patches become 64 / scale-factor^2 visual tokens")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = SmolTeacherConfig(steps=args.steps, eval_every=args.eval_every, scale_factor=args.scale_factor)
    train(cfg, args.out, args.resume)


if __name__ == "__main__":
    main()

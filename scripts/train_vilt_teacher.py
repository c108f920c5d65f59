"""Train a small ViLT with `transformers` itself on the grounded scenes' VQA task, as the teacher that
`mmedge adapt` is measured on (no pretrained weights can be downloaded here).

    python scripts/train_vilt_teacher.py --out runs/vilt-teacher            # about an hour on 2 quiet cores
    python scripts/train_vilt_teacher.py --out runs/vilt-teacher --resume    # continue from its checkpoint

Writes a `save_pretrained` folder (model, config with id2label, BERT WordPiece tokenizer and ViLT image
processor) plus `metrics.jsonl` (loss and validation accuracy over training) and `checkpoint.safetensors`
(optimizer state, for --resume; removed with --final-only). Everything is deterministic by --seed.
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

from teacher_checkpoint import (CHECKPOINT, load_checkpoint, save_checkpoint, save_teacher,  # noqa: E402
                                teacher_arguments)
from mmedge.data.batches import generate, token_classes  # noqa: E402
from mmedge.data.grounding import SIZE_CLASSES, grounding_targets  # noqa: E402
from mmedge.data.scenes import COLORS, SHAPES  # noqa: E402
from mmedge.data.tasks import LABELS, vocabulary_words  # noqa: E402

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@dataclass
class TeacherConfig:
    hidden_size: int = 128          # ViLT width
    layers: int = 6                 # transformer layers
    heads: int = 4
    intermediate: int = 512         # MLP width
    image_size: int = 96            # the scenes' size; 16 px patches -> 6 x 6 = 36 visual tokens
    patch_size: int = 16
    max_text: int = 24              # question tokens incl. [CLS] / [SEP]
    steps: int = 10000
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 200
    weight_decay: float = 0.01
    spatial_weight: float = 3.0     # sampling weight of left/right questions (the hardest type)
    tag_weight: float = 0.5         # training-only: tag each patch after layer 1 with its object's class
    ground_weight: float = 0.5      # training-only: each referring word after layer 2 points at its object
    ground_bins: int = 12           # grid cells per side for that pointing
    eval_every: int = 250
    val_samples: int = 512
    seed: int = 0


def wordpiece_vocab() -> list[str]:
    """BERT-layout vocabulary: specials, the scenes' words, then characters and their '##' forms so
    that any lowercase ASCII word still tokenizes (to pieces) instead of [UNK]."""
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789") + list("?.,!'-")
    words = sorted(set(vocabulary_words()) - set(chars))
    return SPECIALS + words + chars + [f"##{c}" for c in chars[:36]]


def build_processor(cfg: TeacherConfig):
    from transformers import BertTokenizer, ViltImageProcessor, ViltProcessor

    vocab = wordpiece_vocab()
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True,
                              model_max_length=cfg.max_text)
    images = ViltImageProcessor(size={"shortest_edge": cfg.image_size}, size_divisor=cfg.patch_size,
                                do_pad=True)
    return ViltProcessor(image_processor=images, tokenizer=tokenizer)


def build_model(cfg: TeacherConfig, vocab_size: int):
    from transformers import ViltConfig, ViltForQuestionAnswering

    labels = list(LABELS["vqa"])
    config = ViltConfig(hidden_size=cfg.hidden_size, num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads,
                        intermediate_size=cfg.intermediate, image_size=cfg.image_size, patch_size=cfg.patch_size,
                        vocab_size=vocab_size, max_position_embeddings=cfg.max_text, num_labels=len(labels),
                        id2label=dict(enumerate(labels)), label2id={a: i for i, a in enumerate(labels)},
                        max_image_length=-1)
    return ViltForQuestionAnswering(config)


class GroundingHeads(torch.nn.Module):
    """Training-only heads (not saved with the teacher), the auxiliary losses mmedge's own models use:
    tag every patch after layer 1 with the colour-shape class of the object under it, and make every
    word of a referring phrase ("the large red circle") point, after layer 2, at its object's grid
    cell and size. They give the encoder the object identities and positions that left/right, count
    and compare questions need; trained on the answer alone the ViLT plateaued near 0.66."""

    def __init__(self, cfg: TeacherConfig):
        super().__init__()
        self.tagger = torch.nn.Linear(cfg.hidden_size, 1 + len(COLORS) * len(SHAPES))
        self.grounder = torch.nn.Linear(cfg.hidden_size, 2 * cfg.ground_bins + len(SIZE_CLASSES))
        self.bins = cfg.ground_bins

    def forward(self, hidden: tuple[torch.Tensor, ...], num_text: int, tags: torch.Tensor,
                ground: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        F = torch.nn.functional
        patches = hidden[1][:, num_text + 1:]  # (B, N, D): after layer 1, past the text and the image [CLS]
        tag = self.tagger(patches)  # (B, N, C)
        tag_loss = F.cross_entropy(tag.reshape(-1, tag.shape[-1]), tags.reshape(-1))
        words = self.grounder(hidden[2][:, :num_text])  # (B, L, 2 * bins + sizes), after layer 2
        cells = words[..., :2 * self.bins].reshape(-1, self.bins)  # (B * L * 2, bins): column, row per token
        sizes = words[..., 2 * self.bins:].reshape(-1, len(SIZE_CLASSES))  # (B * L, sizes)
        if not bool((ground[..., 0] >= 0).any()):
            return tag_loss, 0.0 * words.sum()
        ground_loss = (F.cross_entropy(cells, ground[..., :2].reshape(-1), ignore_index=-1)
                       + F.cross_entropy(sizes, ground[..., 2].reshape(-1), ignore_index=-1))
        return tag_loss, ground_loss


def batch(processor, cfg: TeacherConfig, split: str, indices, targets: bool = False):
    weights = {"spatial": cfg.spatial_weight} if split == "train" and cfg.spatial_weight != 1.0 else None
    samples = generate("vqa", cfg.seed, split, indices, image_size=cfg.image_size, qtype_weights=weights)
    enc = processor(images=[s.image for s in samples], text=[s.text for s in samples], padding="max_length",
                    truncation=True, max_length=cfg.max_text, return_tensors="pt")
    labels = torch.tensor([s.label for s in samples])
    if not targets:
        return dict(enc), labels
    tags = torch.from_numpy(np.stack([token_classes(s, cfg.patch_size) for s in samples]))  # (B, N)
    # (B, L, 3): the word tokens sit at 1..; position 0 is [CLS]. Every scene word is one WordPiece token.
    ground = np.full((len(samples), cfg.max_text, 3), -1, dtype=np.int64)
    for row, s in enumerate(samples):
        words = processor.tokenizer.tokenize(s.text)[: cfg.max_text - 2]
        ground[row, 1: 1 + len(words)] = grounding_targets(words, s.objects, cfg.image_size, cfg.ground_bins,
                                                           len(words))
    return dict(enc), labels, tags, torch.from_numpy(ground)


@torch.no_grad()
def accuracy(model, processor, cfg: TeacherConfig, split: str, n: int) -> float:
    model.eval()
    right = 0
    for start in range(0, n, 128):
        inputs, labels = batch(processor, cfg, split, range(start, min(n, start + 128)))
        right += int((model(**inputs).logits.argmax(-1) == labels).sum())
    model.train()
    return right / n


def schedule(step: int, cfg: TeacherConfig) -> float:
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    return 0.5 * (1 + math.cos(math.pi * (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)))


def train(cfg: TeacherConfig, out: Path, resume: bool) -> None:
    torch.manual_seed(cfg.seed)
    out.mkdir(parents=True, exist_ok=True)
    processor = build_processor(cfg)
    model = build_model(cfg, processor.tokenizer.vocab_size)
    heads = GroundingHeads(cfg)
    opt = torch.optim.AdamW([*model.parameters(), *heads.parameters()], lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: schedule(s, cfg))
    ckpt = out / CHECKPOINT
    step = load_checkpoint(ckpt, model=model, heads=heads, opt=opt, sched=sched) if resume else 0
    log = (out / "metrics.jsonl").open("a")
    model.train()
    started = time.time()
    bar = tqdm(total=cfg.steps, initial=step, desc="teacher", unit="step")
    while step < cfg.steps:
        inputs, labels, tags, ground = batch(processor, cfg, "train",
                                             range(step * cfg.batch_size, (step + 1) * cfg.batch_size), targets=True)
        outputs = model(**inputs, output_hidden_states=True)
        tag_loss, ground_loss = heads(outputs.hidden_states, cfg.max_text, tags, ground)
        answer_loss = torch.nn.functional.cross_entropy(outputs.logits, labels)
        loss = answer_loss + cfg.tag_weight * tag_loss + cfg.ground_weight * ground_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([*model.parameters(), *heads.parameters()], 1.0)
        opt.step()
        sched.step()
        step += 1
        bar.update(1)
        bar.set_postfix(answer=f"{answer_loss.item():.3f}", tag=f"{tag_loss.item():.3f}",
                        ground=f"{float(ground_loss):.3f}")
        if step % cfg.eval_every == 0 or step == cfg.steps:
            val = accuracy(model, processor, cfg, "val", cfg.val_samples)
            log.write(json.dumps({"step": step, "loss": round(loss.item(), 4), "answer_loss": round(answer_loss.item(), 4),
                                  "tag_loss": round(tag_loss.item(), 4), "ground_loss": round(float(ground_loss), 4),
                                  "val_acc": round(val, 4),
                                  "seconds": round(time.time() - started, 1)}) + "\n")
            log.flush()
            save_checkpoint(ckpt, step, model=model, heads=heads, opt=opt, sched=sched)
    bar.close()
    test = accuracy(model, processor, cfg, "test", 1024)
    save_teacher(out, cfg, [model, processor], {"samples": 1024, "accuracy": test})
    print(f"test accuracy {test:.4f}; saved to {out}")


def main(argv: list[str] | None = None) -> None:
    args = teacher_arguments(__doc__, TeacherConfig.steps).parse_args(argv)
    torch.set_num_threads(args.threads)
    train(TeacherConfig(steps=args.steps), args.out, args.resume)


if __name__ == "__main__":
    main()

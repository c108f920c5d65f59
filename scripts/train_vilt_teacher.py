"""Train a small ViLT with `transformers` itself on the grounded scenes' VQA task, as the teacher that
`mmedge adapt` is measured on (no pretrained weights can be downloaded here).

    python scripts/train_vilt_teacher.py --out runs/vilt-teacher            # about an hour on 2 cores
    python scripts/train_vilt_teacher.py --out runs/vilt-teacher --resume    # continue from its checkpoint

Writes a `save_pretrained` folder (model, config with id2label, BERT WordPiece tokenizer and ViLT image
processor) plus `metrics.jsonl` (loss and validation accuracy over training) and `checkpoint.pt`
(optimizer state, for --resume; removed with --final-only). Everything is deterministic by --seed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mmedge.data.batches import generate  # noqa: E402
from mmedge.data.tasks import LABELS, vocabulary_words  # noqa: E402

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@dataclass
class TeacherConfig:
    hidden_size: int = 256          # ViLT width
    layers: int = 6                 # transformer layers
    heads: int = 4
    intermediate: int = 1024        # MLP width
    image_size: int = 96            # the scenes' size; 16 px patches -> 6 x 6 = 36 visual tokens
    patch_size: int = 16
    max_text: int = 24              # question tokens incl. [CLS] / [SEP]
    steps: int = 4000
    batch_size: int = 48
    lr: float = 4e-4
    warmup: int = 400
    weight_decay: float = 0.01
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


def batch(processor, cfg: TeacherConfig, split: str, indices) -> tuple[dict, torch.Tensor]:
    samples = generate("vqa", cfg.seed, split, indices, image_size=cfg.image_size)
    enc = processor(images=[s.image for s in samples], text=[s.text for s in samples], padding="max_length",
                    truncation=True, max_length=cfg.max_text, return_tensors="pt")
    return dict(enc), torch.tensor([s.label for s in samples])


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
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: schedule(s, cfg))
    step, ckpt = 0, out / "checkpoint.pt"
    if resume and ckpt.exists():
        state = torch.load(ckpt, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        step = int(state["step"])
    log = (out / "metrics.jsonl").open("a")
    model.train()
    started = time.time()
    bar = tqdm(total=cfg.steps, initial=step, desc="teacher", unit="step")
    while step < cfg.steps:
        inputs, labels = batch(processor, cfg, "train", range(step * cfg.batch_size, (step + 1) * cfg.batch_size))
        logits = model(**inputs).logits
        loss = torch.nn.functional.cross_entropy(logits, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if step % cfg.eval_every == 0 or step == cfg.steps:
            val = accuracy(model, processor, cfg, "val", cfg.val_samples)
            log.write(json.dumps({"step": step, "loss": round(loss.item(), 4), "val_acc": round(val, 4),
                                  "seconds": round(time.time() - started, 1)}) + "\n")
            log.flush()
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                        "step": step}, ckpt)
    bar.close()
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "teacher_config.json").write_text(json.dumps(asdict(cfg), indent=1) + "\n")
    test = accuracy(model, processor, cfg, "test", 1024)
    (out / "teacher_eval.json").write_text(json.dumps({"split": "test", "samples": 1024, "accuracy": test}) + "\n")
    print(f"test accuracy {test:.4f}; saved to {out}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--steps", type=int, default=TeacherConfig.steps)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    train(TeacherConfig(steps=args.steps), args.out, args.resume)


if __name__ == "__main__":
    main()

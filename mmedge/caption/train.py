"""Training the captioning model: every exit predicts the next word (teacher forcing), its learned
confidence learns whether that word is right, and the prefilter learns which visual tokens the
decoder's cross-attention reads.

Trains on the generated scenes' captions, or on COCO / Conceptual Captions (``data: coco:ROOT``).
Single process. The batches are a pure function of (data_seed, step), and a checkpoint holds the
optimizer and random state, so ``--resume`` continues exactly where a stopped run was.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.nn import functional as F
from tqdm.auto import tqdm

from mmedge.caption.checkpoint import load_caption_model, save_caption_model
from mmedge.caption.config import CaptionConfig
from mmedge.caption.data import (IGNORE, CaptionBatch, caption_tokenizer, decode_caption, make_caption_batch,
                                 scene_batch)
from mmedge.caption.model import CaptionModel, CaptionOutput
from mmedge.errors import CheckpointError, ConfigError
from mmedge.fileio import atomic_write
from mmedge.models.config import from_dict, read_json
from mmedge.train.losses import exit_weights, prefilter_loss
from mmedge.train.trainer import (append_metrics, lr_factor, optimizer_tensors, restore_optimizer,
                                  trim_metrics)

_MODEL_FIELDS = {f.name for f in dataclasses.fields(CaptionConfig)} - {"task", "vocab_size", "version", "pad_id",
                                                                      "bos_id", "eos_id"}
CHECKPOINT_DIR, STATE_FILE, OPTIM_FILE = "checkpoint", "trainer_state.json", "optimizer.safetensors"


@dataclass
class CaptionTrainConfig:
    task: str = "caption"
    seed: int = 0
    data_seed: int = 0
    steps: int = 2000
    batch_size: int = 48
    lr: float = 1e-3
    min_lr_ratio: float = 0.05
    warmup_steps: int = 100
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    exit_weighting: str = "uniform"     # uniform: every exit's word loss counts the same; linear: exit i (i+1)
    confidence_loss_weight: float = 1.0
    prefilter_loss_weight: float = 1.0
    train_keep_ratios: list[float] = field(default_factory=lambda: [1.0, 0.5])  # cycled per step
    train_size: int = 200_000
    max_objects: int = 4
    eval_every: int = 250
    eval_samples: int = 256              # validation captions per check (teacher-forced word accuracy)
    checkpoint_every: int = 250
    log_every: int = 25
    threads: int | None = None
    data: str = "scenes"                 # scenes (generated) | coco:ROOT | cc:ROOT (mmedge.caption.real)
    text_vocab_size: int = 8000          # real data: most frequent training words kept (specials included)
    model: dict = field(default_factory=dict)  # CaptionConfig overrides

    def __post_init__(self) -> None:
        p = []
        if self.task != "caption":
            p.append(f"task must be 'caption', got {self.task!r}")
        if self.exit_weighting not in ("linear", "uniform"):
            p.append(f"exit_weighting {self.exit_weighting!r} must be 'linear' or 'uniform'")
        for name in ("steps", "batch_size", "eval_every", "eval_samples", "checkpoint_every", "log_every",
                     "train_size", "max_objects"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                p.append(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not self.train_keep_ratios or any(not 0 < r <= 1 for r in self.train_keep_ratios):
            p.append(f"train_keep_ratios {self.train_keep_ratios} must be in (0, 1]")
        if self.data != "scenes" and self.data.split(":", 1)[0] not in ("coco", "cc"):
            p.append(f"data {self.data!r} must be scenes, coco:ROOT or cc:ROOT")
        if not isinstance(self.text_vocab_size, int) or self.text_vocab_size < 16:
            p.append(f"text_vocab_size {self.text_vocab_size!r} must be an integer >= 16")
        for key in sorted(set(self.model) - _MODEL_FIELDS):
            p.append(f"model.{key} is not a caption model field (known: {', '.join(sorted(_MODEL_FIELDS))})")
        if p:
            raise ConfigError(p, "caption training config")

    @classmethod
    def load(cls, path: str | Path) -> "CaptionTrainConfig":
        return from_dict(cls, read_json(path), f"caption training config {path}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))


def caption_losses(out: CaptionOutput, targets: torch.Tensor, weights: list[float], keep_full: bool):
    """-> total word loss, per-exit word loss, confidence loss, prefilter loss."""
    valid = targets != IGNORE  # (B, T)
    per_exit, conf_terms = [], []
    for logits, conf in zip(out.logits, out.confidence):
        per_exit.append(F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE))
        right = (logits.argmax(-1) == targets).float()
        conf_terms.append(F.binary_cross_entropy(conf[valid], right[valid]))
    word = sum(w * l for w, l in zip(weights, per_exit))
    if keep_full:  # teacher: cross-attention mass per visual token, over layers, heads and real positions
        attn = torch.stack(out.cross_attention).mean(dim=(0, 2))  # (B, T, N)
        mass = (attn * valid.unsqueeze(-1)).sum(1)  # (B, N)
        pf = prefilter_loss(out.prefilter_scores, (mass / mass.sum(-1, keepdim=True)).detach())
    else:
        pf = 0.0 * out.prefilter_scores.sum()
    return word, [x.item() for x in per_exit], sum(conf_terms) / len(conf_terms), pf


@torch.no_grad()
def word_accuracy(model: CaptionModel, batch: CaptionBatch, keep_ratio: float = 1.0) -> list[float]:
    """Teacher-forced next-word accuracy per exit over the real target positions."""
    was = model.training
    model.eval()
    out = model(torch.from_numpy(batch.pixels), torch.from_numpy(batch.inputs), keep_ratio)
    targets = torch.from_numpy(batch.targets)
    valid = targets != IGNORE
    model.train(was)
    return [float((lg.argmax(-1) == targets)[valid].float().mean()) for lg in out.logits]


class CaptionTrainer:
    def __init__(self, cfg: CaptionTrainConfig, out_dir: str | Path, resume: bool = False, force: bool = False,
                 progress: bool = True) -> None:
        self.cfg, self.out_dir, self.progress = cfg, Path(out_dir), progress
        torch.set_num_threads(cfg.threads or max(1, os.cpu_count() or 1))
        self._prepare_out_dir(resume, force)
        max_len = cfg.model.get("max_len", CaptionConfig.max_len)
        image_size = cfg.model.get("image_size", CaptionConfig.image_size)
        self.real = None
        if cfg.data != "scenes":  # image-caption pairs on disk: their own vocabulary
            from mmedge.caption.real import open_captions, real_tokenizer

            self.real = open_captions(cfg.data, "train", image_size, progress=progress)
            val = open_captions(cfg.data, "val", image_size, limit=cfg.eval_samples, progress=progress)
            self.tokenizer = real_tokenizer(self.real, max_len, cfg.text_vocab_size)
            self.order = np.random.default_rng(cfg.seed).permutation(len(self.real))
        else:
            self.tokenizer = caption_tokenizer(max_len)
        torch.manual_seed(cfg.seed)
        self.model = CaptionModel(CaptionConfig(vocab_size=len(self.tokenizer.vocab), **cfg.model))
        mcfg = self.model.config
        self.weights = exit_weights(self.model.num_stages, cfg.exit_weighting)
        decays = {n: p.ndim >= 2 and "embed" not in n and "pos" not in n for n, p in self.model.named_parameters()}
        params = dict(self.model.named_parameters())
        self.optimizer = torch.optim.AdamW(
            [{"params": [p for n, p in params.items() if decays[n]], "weight_decay": cfg.weight_decay},
             {"params": [p for n, p in params.items() if not decays[n]], "weight_decay": 0.0}], lr=cfg.lr)
        self.step, self.wall_offset = 0, 0.0
        if resume:
            self._load_checkpoint()
        if self.real is not None:
            self.val = make_caption_batch([val.image(i) for i in range(len(val))], [r.text for r in val.records],
                                          self.tokenizer, mcfg.image_size, mcfg.max_len)
        else:
            self.val = scene_batch(cfg.data_seed, "val", range(cfg.eval_samples), self.tokenizer, mcfg.image_size,
                                   mcfg.max_len, cfg.max_objects)

    def _prepare_out_dir(self, resume: bool, force: bool) -> None:
        has_run = (self.out_dir / CHECKPOINT_DIR).exists() or (self.out_dir / "metrics.jsonl").exists()
        if resume and not (self.out_dir / CHECKPOINT_DIR / STATE_FILE).is_file():
            raise ConfigError(f"--resume: nothing to resume in {self.out_dir}; drop --resume", "resume")
        if has_run and not (resume or force):
            raise ConfigError(f"{self.out_dir} already holds a training run; pass --resume to continue it "
                              f"or --force to start over", "output directory")
        if force and not resume:
            for name in (CHECKPOINT_DIR, "metrics.jsonl"):
                path = self.out_dir / name
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.cfg.save(self.out_dir / "train_config.json")

    def _save_checkpoint(self, wall_s: float) -> None:
        ckpt = self.out_dir / CHECKPOINT_DIR
        save_caption_model(self.model, self.tokenizer, ckpt)
        tensors, groups = optimizer_tensors(self.optimizer)
        meta = {"step": self.step, "wall_s": wall_s, "train_config": self.cfg.to_dict(), "param_groups": groups}
        atomic_write(ckpt / OPTIM_FILE, lambda p: save_file(tensors, str(p)))
        atomic_write(ckpt / STATE_FILE, lambda p: p.write_text(json.dumps(meta)))

    def _load_checkpoint(self) -> None:
        ckpt = self.out_dir / CHECKPOINT_DIR
        try:
            meta = json.loads((ckpt / STATE_FILE).read_text())
            if meta["train_config"] != self.cfg.to_dict():
                raise ConfigError("the training config differs from the checkpoint's; resume with the same "
                                  "--config, or start over with --force", "resume")
            model, _ = load_caption_model(ckpt)
            tensors = load_file(str(ckpt / OPTIM_FILE))
        except (OSError, KeyError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"cannot resume from {ckpt}: {exc}") from exc
        self.model.load_state_dict(model.state_dict())
        restore_optimizer(self.optimizer, tensors, meta["param_groups"])
        self.step, self.wall_offset = meta["step"], meta["wall_s"]
        trim_metrics(self.out_dir / "metrics.jsonl", self.step)

    def _train_step(self, keep_ratio: float) -> dict:
        cfg, mcfg = self.cfg, self.model.config
        start = self.step * cfg.batch_size
        if self.real is not None:
            rows = self.order[np.arange(start, start + cfg.batch_size) % len(self.order)]
            batch = make_caption_batch([self.real.image(int(i)) for i in rows],
                                       [self.real.records[int(i)].text for i in rows], self.tokenizer,
                                       mcfg.image_size, mcfg.max_len)
        else:
            indices = np.arange(start, start + cfg.batch_size) % cfg.train_size
            batch = scene_batch(cfg.data_seed, "train", indices, self.tokenizer, mcfg.image_size, mcfg.max_len,
                                cfg.max_objects)
        out = self.model(torch.from_numpy(batch.pixels), torch.from_numpy(batch.inputs), keep_ratio)
        word, per_exit, conf, pf = caption_losses(out, torch.from_numpy(batch.targets), self.weights,
                                                  keep_ratio >= 1.0)
        loss = word + cfg.confidence_loss_weight * conf + cfg.prefilter_loss_weight * pf
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        return {"loss": loss.item(), "exit_losses": per_exit, "confidence_loss": conf.item(),
                "prefilter_loss": pf.item()}

    def _log(self, row: dict) -> None:
        append_metrics(self.out_dir, row)

    def fit(self) -> dict:
        cfg = self.cfg
        t0 = time.perf_counter() - self.wall_offset
        bar = tqdm(total=cfg.steps, initial=self.step, desc="train caption", disable=not self.progress,
                   dynamic_ncols=True)
        acc: list[float] = []
        try:
            while self.step < cfg.steps:
                for group in self.optimizer.param_groups:
                    group["lr"] = cfg.lr * lr_factor(self.step, cfg)
                keep = cfg.train_keep_ratios[self.step % len(cfg.train_keep_ratios)]
                stats = self._train_step(keep)
                self.step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{stats['loss']:.3f}")
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    self._log({"kind": "train", "step": self.step, "keep_ratio": keep,
                               "lr": self.optimizer.param_groups[0]["lr"],
                               "wall_s": round(time.perf_counter() - t0, 3), **stats})
                if self.step % cfg.eval_every == 0 or self.step == cfg.steps:
                    acc = word_accuracy(self.model, self.val)
                    self._log({"kind": "val", "step": self.step, "wall_s": round(time.perf_counter() - t0, 3),
                               "val_word_acc": acc})
                    bar.write(f"step {self.step}: val word accuracy per exit " + ", ".join(f"{a:.3f}" for a in acc))
                if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                    self._save_checkpoint(time.perf_counter() - t0)
        finally:
            bar.close()
        wall = time.perf_counter() - t0
        self.model.eval()
        save_caption_model(self.model, self.tokenizer, self.out_dir, metadata={"train_steps": str(self.step)})
        return {"steps": self.step, "wall_s": wall, "val_word_acc": acc, "out_dir": str(self.out_dir),
                "example": decode_caption(self.tokenizer, self.val.inputs[0, 1:])}

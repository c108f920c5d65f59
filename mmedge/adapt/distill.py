"""Self-distillation of the exits, confidences and prefilter of an adapted model (`mmedge adapt`).

The teacher is the frozen model's own final output at full depth with every visual token: no
labels are needed, only images and texts of the user's domain. Per step (keep ratio cycled as in
`mmedge train`):

- keep 1.0: one forward pass. With the backbone frozen, the exits read exactly the teacher's hidden
  states; each trainable exit learns KL(teacher || exit) at temperature tau (x tau^2);
- keep < 1.0: the teacher's pass (no gradient) and the pruned model's pass, in which the dropped
  tokens are removed from attention by straight-through key weights (mmedge.adapt.model.prune:
  the forward value is the hard top-k, the gradient a sigmoid around the k-th score). The exits
  learn KL(teacher || exit) on the pruned sequence; the prefilter learns from KL(teacher || the pruned
  model's final output) (prefilter_loss_weight) and from the teacher's own attention from the
  text to the visual tokens in the layers after it (attention_prior_weight, as mmedge train does);
- each confidence learns BCE against "this exit's answer equals the teacher's";
- examples with labels add cross-entropy on every trainable exit (label_loss_weight).

Data order is a pure function of (data_seed, step, rank); a resumed run sees the batches an
uninterrupted one would, and with the same threads gives the same weights. Rank 0 validates,
logs (OUT/metrics.jsonl) and checkpoints (OUT/checkpoint: the trained weights, the optimizer and
the RNG). Under torchrun every process computes its share of each batch (DDP, gloo on CPU).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from mmedge.adapt.data import AdaptData, Example, materialise
from mmedge.adapt.model import AdaptedModel, as_classes
from mmedge.errors import CheckpointError, ConfigError, DatasetError, ImageError
from mmedge.fileio import atomic_write
from mmedge.train.distributed import DistInfo, barrier, init_distributed, shutdown
from mmedge.train.trainer import (append_metrics, lr_factor, optimizer_tensors, prepare_run_dir, restore_optimizer,
                                  trim_metrics)

CHECKPOINT_DIR, STATE_FILE = "checkpoint", "state.json"
TRAINED_FILE, OPTIM_FILE = "trained.safetensors", "optimizer.safetensors"


@dataclass
class DistillConfig:
    steps: int = 2000                   # optimizer steps
    batch_size: int = 32                # per process (global = batch_size * world size)
    lr: float = 1e-3                    # peak AdamW learning rate
    min_lr_ratio: float = 0.05          # cosine decay floor, as a fraction of lr
    warmup_steps: int = 100             # linear warm-up
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    temperature: float = 1.0            # tau: teacher and students softened by it, KL scaled by tau^2
    prefilter_loss_weight: float = 1.0  # KL(teacher || pruned model's final output), keep < 1 steps
    attention_prior_weight: float = 1.0  # KL(teacher's text->visual attention || prefilter scores)
    confidence_loss_weight: float = 1.0  # BCE of the confidences against agreement with the teacher
    label_loss_weight: float = 0.5      # cross-entropy on labelled examples (0: labels ignored)
    train_keep_ratios: list[float] = field(default_factory=lambda: [1.0, 0.5, 0.25])  # cycled per step
    train_backbone: bool = False        # also train the pretrained weights (the teacher is then a frozen copy)
    eval_every: int = 250               # steps between validations
    eval_samples: int = 256             # validation examples per check
    checkpoint_every: int = 250         # steps between resumable checkpoints
    log_every: int = 25                 # steps between metric rows
    seed: int = 0                       # seeds the added heads' initialisation
    data_seed: int = 0                  # seeds the data order (and the scenes)
    threads: int | None = None          # torch threads per process; None = cores / processes
    data: str = "scenes"                # scenes | NAME:ROOT (mmedge.adapt.data)

    def __post_init__(self) -> None:
        p = []
        for name in ("steps", "batch_size", "eval_every", "eval_samples", "checkpoint_every", "log_every"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                p.append(f"{name} must be a positive integer, got {value!r}")
        for name in ("lr", "temperature"):
            if not getattr(self, name) > 0:
                p.append(f"{name} must be positive, got {getattr(self, name)!r}")
        for name in ("prefilter_loss_weight", "attention_prior_weight", "confidence_loss_weight",
                     "label_loss_weight", "weight_decay", "warmup_steps"):
            if getattr(self, name) < 0:
                p.append(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not self.train_keep_ratios or any(not 0 < r <= 1 for r in self.train_keep_ratios):
            p.append(f"train_keep_ratios {self.train_keep_ratios} must be in (0, 1]")
        if p:
            raise ConfigError(p, "distillation config")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def load(cls, path: str | Path) -> "DistillConfig":
        from mmedge.models.config import from_dict, read_json

        return from_dict(cls, read_json(path), f"distillation config {path}")


# ---------------------------------------------------------------------------------------------- batches
def encode(preprocessor, examples: list[Example]) -> tuple[dict[str, torch.Tensor], torch.Tensor, int]:
    """The model's inputs and labels for `examples`; an unreadable image drops its example
    (counted, never a crash mid-run). Returns (inputs, labels, examples dropped)."""
    images, texts, labels = [], [], []
    for ex in examples:
        try:
            images.append(tuple(materialise(im) for im in ex.images))
        except ImageError:
            continue
        texts.append(ex.text)
        labels.append(ex.label)
    if not texts:
        raise DatasetError(f"none of {len(examples)} examples has a readable image")
    return preprocessor.encode(images, texts), torch.tensor(labels, dtype=torch.long), len(examples) - len(texts)


def kl_to_teacher(student: torch.Tensor, teacher_prob: torch.Tensor, tau: float) -> torch.Tensor:
    """KL(teacher || student) of (B, C) logits at temperature tau, x tau^2, batch mean."""
    return F.kl_div(F.log_softmax(as_classes(student) / tau, dim=-1), teacher_prob, reduction="batchmean") * tau ** 2


def attention_prior(attention: list[torch.Tensor], text_mask: torch.Tensor, num_text: int,
                    num_global: int) -> torch.Tensor:
    """Where the text tokens look among the visual tokens, over layers and heads -> (B', N), rows sum to 1.
    attention: per layer (B', nh, T, T), every visual token kept; text_mask (B', L)."""
    attn = torch.stack(attention).mean(dim=(0, 2))  # (B', T, T)
    to_visual = attn[:, :num_text, num_global:]  # (B', L, N)
    mass = (to_visual * text_mask.unsqueeze(-1)).sum(1)  # (B', N)
    return (mass / mass.sum(-1, keepdim=True)).detach()


class DistillStep(nn.Module):
    """One step's losses as one module call (what DDP wraps)."""

    def __init__(self, model: AdaptedModel, teacher: AdaptedModel | None, cfg: DistillConfig) -> None:
        super().__init__()
        self.model, self.cfg = model, cfg
        self.teacher = [teacher]  # a list: not a submodule (its weights are not trained nor synchronised)

    def forward(self, pixel_values, input_ids, text_mask, labels, keep_ratio: float):
        model, cfg, tau = self.model, self.cfg, self.cfg.temperature
        teacher = self.teacher[0]
        text_mask = text_mask.float()
        full = model.config.kept_tokens(keep_ratio) >= model.config.num_patches
        need_prior = not full and cfg.attention_prior_weight > 0
        attention = None
        if full and teacher is None:  # frozen backbone: the exits read the teacher's own hidden states
            out = model(pixel_values, input_ids, text_mask, 1.0, score_all=True, detach_exits=True)
            teacher_logits = out.logits[-1].detach()
        else:
            with torch.no_grad():
                t = (teacher or model)(pixel_values, input_ids, text_mask, 1.0, return_attention=need_prior)
            teacher_logits, attention = t.logits[-1], t.attention
            out = model(pixel_values, input_ids, text_mask, keep_ratio, relaxed=not full, score_all=True,
                        detach_exits=teacher is None)
        teacher_prob = F.softmax(as_classes(teacher_logits) / tau, dim=-1)
        trained = out.logits[:-1] + ([out.logits[-1]] if teacher is not None else [])
        exit_terms = [kl_to_teacher(lg, teacher_prob, tau) for lg in trained]
        zero = 0.0 * out.prefilter_scores.sum()  # keeps every added parameter in the graph (DDP)
        loss = (sum(exit_terms) / len(exit_terms) if exit_terms else zero) + zero
        pf_loss = prior_loss = zero
        if not full:
            pf_loss = kl_to_teacher(out.logits[-1], teacher_prob, tau)
            loss = loss + cfg.prefilter_loss_weight * pf_loss
        if need_prior:
            I, after = model.backbone.num_images, model.config.prefilter_after
            folded = text_mask.repeat_interleave(I, dim=0) if I > 1 else text_mask
            layers = attention[after + 1:] or attention
            prior = attention_prior(layers, folded, model.backbone.num_text, model.backbone.num_global)
            prior_loss = F.kl_div(F.log_softmax(out.prefilter_scores, dim=-1), prior, reduction="batchmean")
            loss = loss + cfg.attention_prior_weight * prior_loss
        answer = as_classes(teacher_logits).argmax(-1)
        conf_terms = []
        for lg, conf in zip(out.logits, out.confidence):
            agree = (as_classes(lg).detach().argmax(-1) == answer).to(conf.dtype)
            conf_terms.append(F.binary_cross_entropy(conf.clamp(1e-6, 1 - 1e-6), agree))
        conf_loss = sum(conf_terms) / len(conf_terms)
        loss = loss + cfg.confidence_loss_weight * conf_loss
        label_loss = zero
        has = labels >= 0
        if cfg.label_loss_weight > 0 and bool(has.any()) and trained:
            label_loss = sum(F.cross_entropy(as_classes(lg)[has], labels[has]) for lg in trained) / len(trained)
            loss = loss + cfg.label_loss_weight * label_loss
        agreement = [float((as_classes(lg).detach().argmax(-1) == answer).float().mean()) for lg in out.logits]
        stats = {"exit_kl": [t.item() for t in exit_terms], "prefilter_loss": float(pf_loss.detach()),
                 "attention_prior_loss": float(prior_loss.detach()), "confidence_loss": conf_loss.item(),
                 "label_loss": float(label_loss.detach()), "train_agreement": agreement}
        return loss, stats


# ---------------------------------------------------------------------------------------------- validation
@torch.no_grad()
def evaluate(model: AdaptedModel, batches: list[tuple[dict, torch.Tensor]], keep_ratios: list[float],
             teacher: AdaptedModel | None = None) -> dict:
    """Per keep ratio and exit: agreement with the teacher's answer, KL to the teacher, mean
    confidence and, over labelled examples, accuracy; and the teacher's own accuracy."""
    model.eval()
    cfg = model.config
    teacher_out, labels = [], []
    for inputs, lab in batches:
        teacher_out.append((teacher or model)(**inputs, keep_ratio=1.0).logits[-1])
        labels.append(lab)
    labels_all = torch.cat(labels)
    t_logits = torch.cat(teacher_out)
    answer = as_classes(t_logits).argmax(-1)
    t_prob = F.softmax(as_classes(t_logits), dim=-1)
    has = labels_all >= 0
    result = {"samples": int(len(labels_all)), "labelled": int(has.sum()),
              "teacher_accuracy": float((answer[has] == labels_all[has]).float().mean()) if bool(has.any()) else None,
              "by_keep_ratio": {}}
    for ratio in keep_ratios:
        outs = [model(**inputs, keep_ratio=ratio) for inputs, _ in batches]
        per_exit = [torch.cat([o.logits[s] for o in outs]) for s in range(model.num_stages)]
        confs = [torch.cat([o.confidence[s] for o in outs]) for s in range(model.num_stages)]
        preds = [as_classes(lg).argmax(-1) for lg in per_exit]
        result["by_keep_ratio"][f"{ratio:g}"] = {
            "keep_ratio": ratio, "visual_tokens": min(cfg.kept_tokens(ratio), cfg.num_patches),
            "agreement": [float((p == answer).float().mean()) for p in preds],
            "kl": [float(kl_to_teacher(lg, t_prob, 1.0)) for lg in per_exit],
            "mean_confidence": [float(c.mean()) for c in confs],
            "accuracy": [float((p[has] == labels_all[has]).float().mean()) for p in preds] if bool(has.any()) else None,
        }
    return result


def text_token_counts(tokenizer, texts: list[str]) -> dict:
    """How much of the fixed text length `texts` use: every layer computes all `max_length` positions,
    padding included, so a model whose texts are much shorter than that pays for nothing."""
    lengths = [len(tokenizer.tokenize(t)) + 2 for t in texts]  # + [CLS] and [SEP]
    limit = tokenizer.max_length
    return {"examples": len(lengths), "max_text_len": limit, "longest": max(lengths, default=0),
            "mean": round(float(np.mean(lengths)), 2) if lengths else 0.0,
            "truncated": sum(n > limit for n in lengths)}


def text_length_hint(counts: dict, other_tokens: int, share: float = 0.1) -> str | None:
    """A note when texts were truncated, or when the padding beyond the longest text is at least `share`
    of every layer's sequence (`other_tokens`: the visual tokens and the image [CLS] beside the text)."""
    if not counts.get("examples"):
        return None
    limit, longest, n = counts["max_text_len"], counts["longest"], counts["examples"]
    if counts["truncated"]:
        return (f"{counts['truncated']} of {n} validation texts are longer than the {limit} text tokens the model "
                f"reads and were truncated (longest {longest}); a larger --max-text-len keeps them whole, up to the "
                "model's position embeddings")
    if (limit - longest) / (limit + other_tokens) >= share:
        return (f"the validation texts use at most {longest} of the {limit} text tokens (mean {counts['mean']:g}); "
                f"every layer computes all {limit + other_tokens} positions, padding included: adapting with "
                f"--max-text-len {longest} (a little more for longer queries: longer texts are truncated) drops "
                f"{limit - longest} of them")
    return None


# ---------------------------------------------------------------------------------------------- the loop
@dataclass
class DistillResult:
    out_dir: Path
    steps: int
    wall_s: float
    before: dict          # validation before any step (the exits as copies of the model's head)
    after: dict           # validation at the end
    skipped_examples: int
    text_tokens: dict = field(default_factory=dict)  # text_token_counts of the validation examples


class Distiller:
    def __init__(self, model: AdaptedModel, preprocessor, cfg: DistillConfig, out_dir: str | Path,
                 resume: bool = False, force: bool = False, progress: bool = True) -> None:
        self.model, self.preprocessor, self.cfg = model, preprocessor, cfg
        self.out_dir, self.progress = Path(out_dir), progress
        self.dist: DistInfo = init_distributed()
        torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // self.dist.world_size))
        self._prepare_out_dir(resume, force)
        mc = model.config
        self.data = AdaptData(cfg.data, mc.task, list(mc.labels), mc.image_size, mc.num_images, cfg.data_seed)
        self.teacher = None
        if cfg.train_backbone:
            self.teacher = copy.deepcopy(model).eval()
            self.teacher.requires_grad_(False)
        model.backbone.requires_grad_(cfg.train_backbone)
        torch.manual_seed(cfg.seed)  # the added heads: re-initialise only what is not a copy of the model's own
        for head in model.confidence:
            for m in head.modules():
                if isinstance(m, nn.Linear):
                    m.reset_parameters()
        for m in model.prefilter.scorer.modules():
            if isinstance(m, nn.Linear):
                m.reset_parameters()
        params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        decay = [p for n, p in params if p.ndim >= 2 and "embed" not in n]
        no_decay = [p for n, p in params if not (p.ndim >= 2 and "embed" not in n)]
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                            {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
        self.trained_names = [n for n, _ in params]
        self.step, self.wall_offset, self.skipped = 0, 0.0, 0
        self.before: dict | None = None
        if resume:
            self._load_checkpoint()
        self.step_module = DistillStep(model, self.teacher, cfg)
        self.ddp = nn.parallel.DistributedDataParallel(self.step_module) if self.dist.enabled else None
        self.text_tokens: dict = {}  # text_token_counts of the validation texts (rank 0)
        self.val_batches = self._val_batches() if self.dist.is_main else []

    # ------------------------------------------------------------------ set-up
    def _prepare_out_dir(self, resume: bool, force: bool) -> None:
        prepare_run_dir(self.out_dir, self.dist, resume, force, STATE_FILE, "an adaptation run",
                        lambda out: atomic_write(out / "distill_config.json",
                                                 lambda p: p.write_text(json.dumps(self.cfg.to_dict(), indent=2) + "\n")))

    def _val_batches(self, batch_size: int = 64) -> list[tuple[dict, torch.Tensor]]:
        examples = self.data.val(self.cfg.eval_samples)
        self.text_tokens = text_token_counts(self.preprocessor.tokenizer, [e.text for e in examples])
        out = []
        for i in range(0, len(examples), batch_size):
            inputs, labels, skipped = encode(self.preprocessor, examples[i: i + batch_size])
            self.skipped += skipped
            out.append((inputs, labels))
        return out

    def _state(self) -> dict[str, torch.Tensor]:
        state = self.model.state_dict()
        return {n: state[n].detach().contiguous() for n in self.trained_names}

    def _save_checkpoint(self, wall_s: float) -> None:
        ckpt = self.out_dir / CHECKPOINT_DIR
        ckpt.mkdir(parents=True, exist_ok=True)
        tensors, groups = optimizer_tensors(self.optimizer)
        atomic_write(ckpt / TRAINED_FILE, lambda p: save_file(self._state(), str(p)))
        atomic_write(ckpt / OPTIM_FILE, lambda p: save_file(tensors, str(p)))
        meta = {"step": self.step, "wall_s": wall_s, "distill_config": self.cfg.to_dict(),
                "adapt_config": self.model.config.to_dict(), "before": self.before, "skipped": self.skipped,
                "optimizer": {"param_groups": groups}}
        atomic_write(ckpt / STATE_FILE, lambda p: p.write_text(json.dumps(meta)))  # last: marks completion

    def _load_checkpoint(self) -> None:
        ckpt = self.out_dir / CHECKPOINT_DIR
        try:
            meta = json.loads((ckpt / STATE_FILE).read_text())
            if meta["distill_config"] != self.cfg.to_dict() or meta["adapt_config"] != self.model.config.to_dict():
                raise ConfigError("the distillation or adapt settings differ from the checkpoint's; resume with "
                                  "the same arguments, or start over with --force", "resume")
            trained = load_file(str(ckpt / TRAINED_FILE))
            tensors = load_file(str(ckpt / OPTIM_FILE))
        except (OSError, KeyError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise CheckpointError(f"cannot resume from {ckpt}: {exc}") from exc
        if set(trained) != set(self.trained_names):
            raise CheckpointError(f"{ckpt / TRAINED_FILE} holds other weights than this run trains")
        self.model.load_state_dict(trained, strict=False)
        restore_optimizer(self.optimizer, tensors, meta["optimizer"]["param_groups"])
        self.step, self.wall_offset = meta["step"], meta["wall_s"]
        self.before, self.skipped = meta["before"], meta["skipped"]
        if self.dist.is_main:
            trim_metrics(self.out_dir / "metrics.jsonl", self.step)

    # ------------------------------------------------------------------ loop
    def _batch(self) -> tuple[dict, torch.Tensor]:
        cfg, d = self.cfg, self.dist
        start = (self.step * d.world_size + d.rank) * cfg.batch_size
        inputs, labels, skipped = encode(self.preprocessor, self.data.train(np.arange(start, start + cfg.batch_size)))
        self.skipped += skipped
        return inputs, labels

    def _validate(self) -> dict:
        result = evaluate(self.model, self.val_batches, self.model.config.keep_ratios, self.teacher)
        self.model.train()
        return result

    def fit(self) -> DistillResult:
        cfg = self.cfg
        start = time.perf_counter() - self.wall_offset
        if self.dist.is_main and self.before is None:
            self.before = self._validate()
            append_metrics(self.out_dir, {"kind": "val", "step": 0, "wall_s": 0.0, **self.before})
        barrier(self.dist)
        self.model.train()
        bar = tqdm(total=cfg.steps, initial=self.step, desc=f"adapt {self.model.config.task}",
                   disable=not (self.progress and self.dist.is_main), dynamic_ncols=True)
        after = {}
        try:
            while self.step < cfg.steps:
                for group in self.optimizer.param_groups:
                    group["lr"] = cfg.lr * lr_factor(self.step, cfg)
                keep = cfg.train_keep_ratios[self.step % len(cfg.train_keep_ratios)]
                inputs, labels = self._batch()
                loss, stats = (self.ddp or self.step_module)(inputs["pixel_values"], inputs["input_ids"],
                                                             inputs["text_mask"], labels, keep)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]],
                                               cfg.grad_clip)
                self.optimizer.step()
                self.step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}", agree=f"{stats['train_agreement'][0]:.2f}")
                wall = time.perf_counter() - start
                if self.dist.is_main and (self.step % cfg.log_every == 0 or self.step == cfg.steps):
                    append_metrics(self.out_dir, {"kind": "train", "step": self.step, "keep_ratio": keep,
                                                  "lr": self.optimizer.param_groups[0]["lr"], "loss": loss.item(),
                                                  "wall_s": round(wall, 3), **stats})
                if self.step % cfg.eval_every == 0 or self.step == cfg.steps:
                    if self.dist.is_main:
                        after = self._validate()
                        append_metrics(self.out_dir, {"kind": "val", "step": self.step,
                                                      "wall_s": round(time.perf_counter() - start, 3), **after})
                        full = after["by_keep_ratio"][next(iter(after["by_keep_ratio"]))]
                        bar.write(f"step {self.step}: agreement with the teacher per exit "
                                  f"[{', '.join(f'{a:.3f}' for a in full['agreement'])}]")
                    barrier(self.dist)
                if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                    if self.dist.is_main:
                        self._save_checkpoint(time.perf_counter() - start)
                    barrier(self.dist)
        finally:
            bar.close()
        if self.dist.is_main and not after:  # resumed after the last step: validate once more for the card
            after = self._validate()
        self.model.eval()
        wall = time.perf_counter() - start
        return DistillResult(self.out_dir, self.step, wall, self.before or {}, after, self.skipped,
                             self.text_tokens)

    def close(self) -> None:
        barrier(self.dist)
        shutdown(self.dist)

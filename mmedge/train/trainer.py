"""The training loop: all exits jointly, the confidence heads and the prefilter, under DDP or not.

Data order is a pure function of (data_seed, step, rank), so a resumed run sees exactly the
batches an uninterrupted one would. Rank 0 validates, logs and checkpoints.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from mmedge.data.batches import build_batch, generate
from mmedge.data.grounding import SIZE_CLASSES
from mmedge.data.scenes import NUM_OBJECT_CLASSES
from mmedge.data.tasks import LABELS
from mmedge.data.tokenizer import WordTokenizer, default_tokenizer
from mmedge.errors import CheckpointError, ConfigError
from mmedge.evaluation.metrics import accuracy_per_exit
from mmedge.evaluation.predict import make_batches, run_model, to_torch
from mmedge.models.checkpoint import atomic_write, from_pretrained, save_pretrained
from mmedge.models.config import ModelConfig
from mmedge.models.model import AdaptiveVLModel
from mmedge.train import losses
from mmedge.train.augment import random_shift
from mmedge.train.config import TrainConfig
from mmedge.train.distributed import DistInfo, barrier, broadcast_int, init_distributed, shutdown
from mmedge.train.flops import count_flops

CHECKPOINT_DIR, STATE_FILE, OPTIM_FILE = "checkpoint", "trainer_state.json", "optimizer.safetensors"


def prepare_run_dir(out_dir: Path, dist: DistInfo, resume: bool, force: bool, state_file: str, what: str, write_config) -> None:
    """Check --resume / --force against what `out_dir` holds (a checkpoint or metrics of an earlier run),
    clear it for a forced fresh start and call write_config(out_dir), on the main process between
    barriers. Shared by `mmedge train` and `mmedge adapt`."""
    ckpt = out_dir / CHECKPOINT_DIR
    has_run = ckpt.exists() or (out_dir / "metrics.jsonl").exists()
    if resume and not (ckpt / state_file).is_file():
        hint = ", with --force to replace what is there" if has_run else ""
        raise ConfigError(f"--resume: there is nothing to resume in {out_dir} (no {CHECKPOINT_DIR}/{state_file}); "
                          f"drop --resume to start a new run{hint}", "resume")
    if has_run and not (resume or force):
        raise ConfigError(f"{out_dir} already holds {what}; pass --resume to continue it or --force to start over",
                          "output directory")
    barrier(dist)
    if dist.is_main:
        if force and not resume:
            for name in (CHECKPOINT_DIR, "metrics.jsonl"):
                path = out_dir / name
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_config(out_dir)
    barrier(dist)


@dataclass
class TrainResult:
    out_dir: Path
    steps: int
    wall_s: float
    train_flops: int
    final_val_accuracy: list[float]


def build_model(cfg: TrainConfig, tokenizer: WordTokenizer, init_from: str | Path | None = None,
                labels: list[str] | None = None) -> AdaptiveVLModel:
    """A fresh model for cfg.task, or one initialised from a model directory: every weight whose
    name and shape match is copied; exit heads only when the source was trained on the same task."""
    grounding = cfg.ground_loss_weight > 0
    model_cfg = ModelConfig(task=cfg.task, labels=list(labels or LABELS[cfg.task]), vocab_size=len(tokenizer.vocab),
                            token_classes=NUM_OBJECT_CLASSES if cfg.token_loss_weight > 0 else 0,
                            ground_bins=cfg.ground_bins if grounding else 0,
                            ground_sizes=len(SIZE_CLASSES) if grounding and cfg.ground_size else 0, **cfg.model)
    torch.manual_seed(cfg.seed)
    model = AdaptiveVLModel(model_cfg)
    if init_from is not None:
        source, _ = from_pretrained(init_from)
        same_task = source.config.task == cfg.task
        own = model.state_dict()
        shared = {k: v for k, v in source.state_dict().items()
                  if k in own and own[k].shape == v.shape and (same_task or not k.startswith("exit_heads."))}
        grown = source.state_dict()["token_embed.weight"]  # a vocabulary grown by the data's words: copy the known rows
        if own["token_embed.weight"].shape[0] > grown.shape[0] and own["token_embed.weight"].shape[1:] == grown.shape[1:]:
            shared["token_embed.weight"] = torch.cat([grown, own["token_embed.weight"][grown.shape[0]:]])
        model.load_state_dict(shared, strict=False)
    return model


def _tokenizer_of(model_dir: str | Path | None) -> WordTokenizer | None:
    """The tokenizer of the model a run starts from (its embeddings index that vocabulary), or None."""
    if model_dir is None:
        return None
    from mmedge.models.checkpoint import TOKENIZER_FILE

    return WordTokenizer.load(Path(model_dir) / TOKENIZER_FILE)


def lr_factor(step: int, cfg: TrainConfig, total_steps: int | None = None, progress: float | None = None) -> float:
    """Linear warm-up then cosine decay to cfg.min_lr_ratio, at the fraction `progress` of the run when
    given (a minutes budget: the share of the time spent), else at step / total_steps (default cfg.steps)."""
    total = cfg.steps if total_steps is None else total_steps
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if progress is None:
        progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def train_keep_ratio(cfg: TrainConfig, step: int, total_steps: int, progress: float | None = None) -> float:
    """The keep ratio this step trains at: 1.0 during the first cfg.unpruned_share of the run (the share of
    the time spent under a minutes budget, else of the steps), so that the prefilter learns from a model
    that already attends before any token is dropped; then cfg.train_keep_ratios, cycled per step."""
    share = step / max(1, total_steps) if progress is None else progress
    if share < cfg.unpruned_share:
        return 1.0
    return cfg.train_keep_ratios[step % len(cfg.train_keep_ratios)]


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list]:
    """The optimizer's per-parameter state as flat safetensors entries plus torch's RNG state, and
    its param groups (JSON): what a resumable checkpoint stores."""
    state = optimizer.state_dict()
    tensors = {"rng.torch": torch.get_rng_state()}
    for idx, param_state in state["state"].items():
        for name, value in param_state.items():
            tensors[f"state.{idx}.{name}"] = value.contiguous()
    return tensors, state["param_groups"]


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], param_groups: list) -> None:
    """Inverse of optimizer_tensors (also restores torch's RNG state)."""
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("state."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": param_groups})
    torch.set_rng_state(tensors["rng.torch"])


def append_metrics(out_dir: Path, row: dict) -> None:
    """One row of OUT/metrics.jsonl."""
    with open(Path(out_dir) / "metrics.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


def trim_metrics(log: Path, step: int) -> None:
    """Drop metric rows logged after `step` (a resumed run logs them again)."""
    if log.exists():
        kept = [r for r in log.read_text().splitlines() if json.loads(r)["step"] <= step]
        atomic_write(log, lambda p: p.write_text("".join(r + "\n" for r in kept)))


def batch_indices(cfg: TrainConfig, step: int, dist: DistInfo) -> np.ndarray:
    """This rank's sample indices for `step` (disjoint across ranks, wrapping at train_size)."""
    return batch_positions(cfg, step, dist) % cfg.train_size


def batch_positions(cfg: TrainConfig, step: int, dist: DistInfo) -> np.ndarray:
    """This rank's positions in the endless stream of training samples for `step`."""
    start = (step * dist.world_size + dist.rank) * cfg.batch_size
    return np.arange(start, start + cfg.batch_size)


def epoch_order(records: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """The order of the training records in one pass over them: a fresh permutation per epoch,
    a pure function of (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(records)


class Trainer:
    def __init__(self, cfg: TrainConfig, out_dir: str | Path, resume: bool = False, force: bool = False,
                 init_from: str | Path | None = None, progress: bool = True) -> None:
        self.cfg, self.out_dir, self.progress = cfg, Path(out_dir), progress
        self.dist = init_distributed()
        torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // self.dist.world_size))
        if cfg.epochs is not None and cfg.data == "scenes":
            raise ConfigError("epochs counts passes over a dataset's records and the generated scenes have no end: "
                              "give steps or minutes, or pass --data NAME:ROOT", "training config")
        self._prepare_out_dir(resume, force)
        self.real = None
        if resume:  # the checkpoint holds the weights, and the vocabulary they index
            init_from = None
        if cfg.data != "scenes":  # a real dataset: its own labels and vocabulary
            from mmedge.data.provider import load_real

            self.real = load_real(cfg.data, cfg.task, cfg.model.get("image_size", 96), cfg.model.get("max_text_len", 24),
                                  cfg.answer_vocab_size, cfg.eval_samples, progress=progress and self.dist.is_main,
                                  text_vocab=cfg.text_vocab, text_vocab_size=cfg.text_vocab_size,
                                  tokenizer=_tokenizer_of(self.out_dir / CHECKPOINT_DIR if resume else init_from))
            self.tokenizer = self.real.tokenizer
            self.order = self.real.trainable()  # the records trained on, reshuffled every epoch
            self._epoch_cache: dict[int, np.ndarray] = {}
            if not len(self.order):
                raise ConfigError(f"{cfg.data}: no training record has an answer among the labels", "training data")
            if cfg.ground_loss_weight > 0 and not any(r.refs for r in self.real.train.records):
                raise ConfigError(f"ground_loss_weight {cfg.ground_loss_weight:g} points phrases at boxes and no training "
                                  f"record of {cfg.data} has refs (docs/guides/data.md): add them or set "
                                  f"ground_loss_weight to 0", "training config")
        else:
            self.tokenizer = default_tokenizer(cfg.model.get("max_text_len", 24))
        self.total_steps = cfg.steps  # the most steps: fewer with epochs; with minutes, the time decides
        if cfg.epochs is not None:
            per_step = cfg.batch_size * self.dist.world_size
            self.total_steps = min(cfg.steps, max(1, math.ceil(cfg.epochs * len(self.order) / per_step)))
        self.model = build_model(cfg, self.tokenizer, init_from, self.real.labels if self.real else None)
        self.weights = losses.exit_weights(self.model.num_stages, cfg.exit_weighting)
        if cfg.ground_loss_weight > 0 and cfg.ground_stage >= self.model.num_stages:
            raise ConfigError(f"ground_stage {cfg.ground_stage} must be below the model's "
                              f"{self.model.num_stages} stages", "training config")
        decays = {n: p.ndim >= 2 and "embed" not in n and "pos" not in n for n, p in self.model.named_parameters()}
        decay = [p for n, p in self.model.named_parameters() if decays[n]]
        no_decay = [p for n, p in self.model.named_parameters() if not decays[n]]
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                            {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
        self.step, self.train_flops, self.wall_offset = 0, 0, 0.0
        self.step_flops: dict[float, int] = {}
        if resume:
            self._load_checkpoint()
        self.ddp = DistributedDataParallel(self.model) if self.dist.enabled else None
        if not self.dist.is_main:
            self.val_batches = []
        elif self.real is not None:
            from mmedge.data.provider import real_batches

            self.val_batches = real_batches(self.real, self.real.val, cfg.eval_samples)
        else:
            self.val_batches = make_batches(cfg.task, cfg.data_seed, "val", cfg.eval_samples, self.tokenizer,
                                            self.model.config.image_size, 128, cfg.max_objects)

    # ------------------------------------------------------------------ set-up
    def _prepare_out_dir(self, resume: bool, force: bool) -> None:
        prepare_run_dir(self.out_dir, self.dist, resume, force, STATE_FILE, "a training run",
                        lambda out: self.cfg.save(out / "train_config.json"))

    def _load_checkpoint(self) -> None:
        ckpt = self.out_dir / CHECKPOINT_DIR
        try:
            state = json.loads((ckpt / STATE_FILE).read_text())
            saved_cfg = TrainConfig(**state["train_config"])
            if saved_cfg.to_dict() != self.cfg.to_dict():
                raise ConfigError("the training config differs from the checkpoint's; resume with the same "
                                  "--config, or start over with --force", "resume")
            model, _ = from_pretrained(ckpt)
            self.model.load_state_dict(model.state_dict())
            tensors = load_file(str(ckpt / OPTIM_FILE))
        except (OSError, KeyError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"cannot resume from {ckpt}: {exc}") from exc
        restore_optimizer(self.optimizer, tensors, state["optimizer"]["param_groups"])
        self.step, self.train_flops = state["step"], state["train_flops"]
        self.wall_offset = state["wall_s"]
        self.step_flops = {float(k): v for k, v in state["step_flops"].items()}
        if self.dist.is_main:  # drop metric rows logged after the checkpoint: they will be logged again
            trim_metrics(self.out_dir / "metrics.jsonl", self.step)

    def _save_checkpoint(self, wall_s: float) -> None:
        ckpt = self.out_dir / CHECKPOINT_DIR
        save_pretrained(self.model, self.tokenizer, ckpt)
        tensors, groups = optimizer_tensors(self.optimizer)
        meta = {"step": self.step, "train_flops": self.train_flops, "wall_s": wall_s,
                "step_flops": self.step_flops, "train_config": self.cfg.to_dict(),
                "optimizer": {"state": {}, "param_groups": groups}}
        atomic_write(ckpt / OPTIM_FILE, lambda p: save_file(tensors, str(p)))
        atomic_write(ckpt / STATE_FILE, lambda p: p.write_text(json.dumps(meta)))

    # ------------------------------------------------------------------ loop
    def _train_step(self, keep_ratio: float) -> dict:
        cfg, model = self.cfg, self.ddp or self.model
        if self.real is not None:
            samples = self.real.samples(self.real.train, self._records_at(batch_positions(cfg, self.step, self.dist)))
        else:
            indices = batch_indices(cfg, self.step, self.dist)
            samples = generate(cfg.task, cfg.data_seed, "train", indices, self.model.config.image_size,
                               cfg.max_objects, cfg.qtype_weights,
                               None if cfg.train_relations is None else tuple(cfg.train_relations))
        tagging = self.model.token_tagger is not None
        grounding = self.model.text_grounder is not None
        batch = build_batch(samples, self.tokenizer, self.model.config.image_size,
                            self.model.config.patch_size if tagging else None,
                            self.model.config.ground_bins if grounding else None)
        pixels, ids, mask = to_torch(batch)
        if cfg.augment_shift:
            rng = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.step * 1009 + self.dist.rank)
            pixels = random_shift(pixels, cfg.augment_shift, rng)
        labels = torch.from_numpy(batch.labels)
        full = keep_ratio >= 1.0
        out = model(pixels, ids, mask, keep_ratio=keep_ratio, return_attention=full, score_all=True)
        task_loss, per_exit = losses.exit_loss(out, labels, self.weights)
        conf_loss = losses.confidence_loss(out, labels)
        if full:
            teacher = losses.attention_teacher(out.attention, mask, ids.shape[1])
            pf_loss = losses.prefilter_loss(out.prefilter_scores, teacher)
        else:  # no teacher when tokens were dropped; keep the scorer in the graph for DDP
            pf_loss = 0.0 * out.prefilter_scores.sum()
        loss = task_loss + cfg.confidence_loss_weight * conf_loss + cfg.prefilter_loss_weight * pf_loss
        tag_loss = torch.zeros(())
        if tagging:
            tag_loss = losses.token_tag_loss(out, self.model.token_tagger, torch.from_numpy(batch.token_classes),
                                             ids.shape[1])
            loss = loss + cfg.token_loss_weight * tag_loss
        ground_loss = torch.zeros(())
        if grounding:
            ground_loss = losses.grounding_loss(out, self.model.text_grounder, torch.from_numpy(batch.grounding),
                                                ids.shape[1], cfg.ground_stage, self.model.config.ground_bins)
            loss = loss + cfg.ground_loss_weight * ground_loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        acc = (out.logits[-1].argmax(-1) == labels).float().mean().item()
        return {"loss": loss.item(), "exit_losses": per_exit, "confidence_loss": conf_loss.item(),
                "prefilter_loss": float(pf_loss.detach()), "token_loss": tag_loss.item(),
                "ground_loss": ground_loss.item(),
                "train_acc_last_exit": acc}

    def _records_at(self, positions: np.ndarray) -> np.ndarray:
        """Training record indices at these stream positions: epoch by epoch, each in its own order."""
        n = len(self.order)
        out = np.empty(len(positions), dtype=np.int64)
        for k, pos in enumerate(positions):
            epoch = int(pos // n)
            if epoch not in self._epoch_cache:
                self._epoch_cache = {e: o for e, o in self._epoch_cache.items() if e >= epoch - 1}
                self._epoch_cache[epoch] = epoch_order(self.order, self.cfg.seed, epoch)
            out[k] = self._epoch_cache[epoch][pos % n]
        return out

    def _time_is_up(self, start: float, budget_s: float | None) -> bool:
        """With a minutes budget: whether the time is spent (rank 0 decides for every rank)."""
        if budget_s is None:
            return False
        return bool(broadcast_int(self.dist, int(time.perf_counter() - start >= budget_s)))

    def _validate_and_log(self, bar, start: float) -> dict:
        val = {}
        if self.dist.is_main:
            val = self._validate()
            self._log({"kind": "val", "step": self.step, "train_flops": self.train_flops,
                       "wall_s": round(time.perf_counter() - start, 3), **val})
            bar.write(f"step {self.step}: " + ", ".join(f"{k} last={v[-1]:.3f}" for k, v in val.items()))
        barrier(self.dist)
        return val

    def _checkpoint(self, start: float) -> None:
        if self.dist.is_main:
            self._save_checkpoint(time.perf_counter() - start)
        barrier(self.dist)

    def _validate(self) -> dict:
        ratios = self.model.config.keep_ratios
        run = run_model(self.model, self.val_batches, ratios)
        return {f"val_acc_keep_{r:g}": accuracy_per_exit(run, r) for r in ratios}

    def _log(self, row: dict) -> None:
        append_metrics(self.out_dir, row)

    def fit(self) -> TrainResult:
        """Train to total_steps, or with a minutes budget until the time is spent (the learning rate
        decays over the share of the time spent, so a slower or busier machine takes fewer steps)."""
        cfg = self.cfg
        start = time.perf_counter() - self.wall_offset
        budget_s = None if cfg.minutes is None else cfg.minutes * 60
        bar = tqdm(total=self.total_steps if budget_s is None else None, initial=self.step, desc=f"train {cfg.task}",
                   disable=not (self.progress and self.dist.is_main), dynamic_ncols=True)
        val, validated, first = {}, -1, self.step
        try:
            while self.step < self.total_steps and not self._time_is_up(start, budget_s):
                progress = None if budget_s is None else (time.perf_counter() - start) / budget_s
                for group in self.optimizer.param_groups:
                    group["lr"] = cfg.lr * lr_factor(self.step, cfg, self.total_steps, progress)
                keep = train_keep_ratio(cfg, self.step, self.total_steps, progress)
                if keep not in self.step_flops:  # count one step of each kind (fwd + bwd, all ranks)
                    with count_flops() as cost:
                        stats = self._train_step(keep)
                    self.step_flops[keep] = cost["flops"] * self.dist.world_size
                else:
                    stats = self._train_step(keep)
                self.train_flops += self.step_flops[keep]
                self.step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{stats['loss']:.3f}", acc=f"{stats['train_acc_last_exit']:.2f}")
                wall = time.perf_counter() - start
                if self.dist.is_main and (self.step % cfg.log_every == 0 or self.step == self.total_steps):
                    self._log({"kind": "train", "step": self.step, "keep_ratio": keep,
                               "lr": self.optimizer.param_groups[0]["lr"], "train_flops": self.train_flops,
                               "wall_s": round(wall, 3), "samples": self.step * cfg.batch_size * self.dist.world_size,
                               **stats})
                if self.step % cfg.eval_every == 0 or self.step == self.total_steps:
                    val, validated = self._validate_and_log(bar, start), self.step
                if self.step % cfg.checkpoint_every == 0 or self.step == self.total_steps:
                    self._checkpoint(start)
            if budget_s is not None and self.step > first:  # the time is spent: between validations, as a rule
                if validated != self.step:
                    val = self._validate_and_log(bar, start)
                    self._checkpoint(start)
                if self.dist.is_main:
                    self._log({"kind": "budget", "step": self.step, "minutes": cfg.minutes,
                               "wall_s": round(time.perf_counter() - start, 3), "capped_by_steps": self.step >= cfg.steps})
        finally:
            bar.close()
        wall = time.perf_counter() - start
        if self.dist.is_main:
            save_pretrained(self.model, self.tokenizer, self.out_dir,
                            metadata={"train_steps": str(self.step), "train_flops": str(self.train_flops)})
        barrier(self.dist)
        shutdown(self.dist)
        last = val.get("val_acc_keep_1", [])
        return TrainResult(self.out_dir, self.step, wall, self.train_flops, last)

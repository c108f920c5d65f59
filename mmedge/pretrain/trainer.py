"""The pretraining loop: one objective, FLOPs (generator included) and wall-clock logged per step
to metrics.jsonl, encoder snapshots along the way, DDP under torchrun (gloo on CPU).

The saved encoder is an ordinary model directory (task "pretrain"): `mmedge train --init-from DIR`
copies its embeddings, prefilter and layers (exit heads start fresh for the downstream task).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from mmedge.data.tokenizer import UNK, default_tokenizer, train_wordpiece
from mmedge.errors import ConfigError
from mmedge.fileio import atomic_write
from mmedge.models.checkpoint import save_pretrained
from mmedge.models.config import ModelConfig
from mmedge.pretrain.config import PretrainConfig
from mmedge.pretrain.data import CaptionPairs, build
from mmedge.pretrain.diagnostics import diagnose, summary_line
from mmedge.pretrain.objectives import CONTENT_WORDS, PretrainModel
from mmedge.train.distributed import DistInfo, barrier, init_distributed, shutdown
from mmedge.train.flops import count_flops
from mmedge.train.trainer import lr_factor

PRETRAIN_LABELS = ["original", "replaced"]


@dataclass
class PretrainResult:
    out_dir: Path
    steps: int
    wall_s: float
    pretrain_flops: int
    snapshots: list[Path]


def _indices(cfg: PretrainConfig, step: int, dist: DistInfo) -> np.ndarray:
    start = (step * dist.world_size + dist.rank) * cfg.batch_size
    return np.arange(start, start + cfg.batch_size) % cfg.train_size


class Pretrainer:
    def __init__(self, cfg: PretrainConfig, out_dir: str | Path, force: bool = False, progress: bool = True) -> None:
        self.cfg, self.out_dir, self.progress = cfg, Path(out_dir), progress
        self.dist = init_distributed()
        torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // self.dist.world_size))
        if (self.out_dir / "metrics.jsonl").exists() and not force:
            raise ConfigError(f"{self.out_dir} already holds a pretraining run; pass --force to start over",
                              "output directory")
        barrier(self.dist)
        if self.dist.is_main:
            for name in ("metrics.jsonl", "snapshots"):
                path = self.out_dir / name
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
            self.out_dir.mkdir(parents=True, exist_ok=True)
        barrier(self.dist)
        self.pairs = None
        if cfg.data == "scenes":
            self.tokenizer = default_tokenizer(cfg.model.get("max_text_len", 24))
        else:  # real captions: a WordPiece vocabulary from them; no object classes, so the visual half is off
            enc_cfg = ModelConfig(task="pretrain", labels=PRETRAIN_LABELS, vocab_size=2, **cfg.model)
            self.pairs = CaptionPairs(cfg.data, enc_cfg.image_size, progress=progress and self.dist.is_main)
            self.tokenizer = train_wordpiece(self.pairs.captions, cfg.text_vocab_size, enc_cfg.max_text_len)
            if cfg.replace_visual and self.dist.is_main:
                tqdm.write(f"{cfg.data.partition(':')[0]}: captions have no object classes; the visual half "
                           f"({cfg.objective.split('-')[1]}) is off, the text half and image-text matching train")
            cfg = self.cfg = dataclasses.replace(cfg, replace_visual=False, diagnostics_samples=0, mask_words="any")
        if self.dist.is_main:
            cfg.save(self.out_dir / "pretrain_config.json")  # as run (real captions: visual half off)
        model_cfg = ModelConfig(task="pretrain", labels=PRETRAIN_LABELS, vocab_size=len(self.tokenizer.vocab),
                                **cfg.model)
        torch.manual_seed(cfg.seed)
        content = [i for w, i in self.tokenizer.vocab.items() if w in CONTENT_WORDS]
        self.model = PretrainModel(model_cfg, cfg.objective_config(), self.tokenizer.vocab[UNK], content)
        params = [p for p in self.model.parameters()]
        decay = [p for n, p in self.model.named_parameters() if p.ndim >= 2 and "embed" not in n and "pos" not in n]
        ids = {id(p) for p in decay}
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                            {"params": [p for p in params if id(p) not in ids], "weight_decay": 0.0}],
                                           lr=cfg.lr)
        self.ddp = DistributedDataParallel(self.model, find_unused_parameters=True) if self.dist.enabled else None

    def _batch(self, indices):
        enc = self.model.encoder.config
        if self.pairs is not None:
            return self.pairs.build(indices, self.tokenizer, enc.patch_size)
        return build(self.cfg.data_seed, indices, self.tokenizer, enc.image_size, enc.patch_size)

    def _step(self, step: int) -> dict:
        cfg = self.cfg
        batch = self._batch(_indices(cfg, step, self.dist))
        out = (self.ddp or self.model)(torch.from_numpy(batch.pixels), torch.from_numpy(batch.input_ids),
                                       torch.from_numpy(batch.text_mask), torch.from_numpy(batch.token_classes))
        self.optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        return {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in out.items()}

    def diagnostics(self) -> dict:
        """Held-out diagnostics (mmedge.pretrain.diagnostics) on pairs no training step reads."""
        cfg = self.cfg
        if not cfg.diagnostics_samples:
            return {}
        batch = self._batch(range(cfg.train_size, cfg.train_size + cfg.diagnostics_samples))
        return diagnose(self.model, *(torch.from_numpy(a) for a in (batch.pixels, batch.input_ids,
                                                                      batch.text_mask, batch.token_classes)))

    def save_encoder(self, directory: Path, meta: dict) -> None:
        if meta.get("diagnostics"):
            tqdm.write(f"step {meta['step']} diagnostics: {summary_line(meta['diagnostics'])}")
        save_pretrained(self.model.encoder, self.tokenizer, directory,
                        metadata={k: str(v) for k, v in meta.items() if k != "diagnostics"})
        atomic_write(directory / "pretrain_state.json", lambda p: p.write_text(json.dumps(meta)))

    def fit(self) -> PretrainResult:
        cfg = self.cfg
        start, flops, step_flops, snapshots = time.perf_counter(), 0, None, []
        paused = 0.0  # seconds spent on snapshots and diagnostics: not training, not counted
        bar = tqdm(total=cfg.steps, desc=f"pretrain {cfg.objective}", dynamic_ncols=True,
                   disable=not (self.progress and self.dist.is_main))
        try:
            for step in range(cfg.steps):
                for group in self.optimizer.param_groups:
                    group["lr"] = cfg.lr * lr_factor(step, cfg)
                if step_flops is None:  # one step counted (fwd + bwd, generator included, all ranks)
                    with count_flops() as cost:
                        stats = self._step(step)
                    step_flops = cost["flops"] * self.dist.world_size
                else:
                    stats = self._step(step)
                flops += step_flops
                bar.update(1)
                bar.set_postfix(loss=f"{stats['loss']:.3f}")
                done = step + 1
                wall = time.perf_counter() - start - paused
                if self.dist.is_main and (done % cfg.log_every == 0 or done == cfg.steps):
                    with open(self.out_dir / "metrics.jsonl", "a") as f:
                        f.write(json.dumps({"kind": "pretrain", "step": done, "pretrain_flops": flops,
                                            "wall_s": round(wall, 3), "lr": self.optimizer.param_groups[0]["lr"],
                                            **stats}) + "\n")
                if cfg.snapshot_every and done % cfg.snapshot_every == 0 and done < cfg.steps:
                    pause = time.perf_counter()
                    if self.dist.is_main:
                        path = self.out_dir / "snapshots" / f"step-{done:06d}"
                        self.save_encoder(path, {"step": done, "pretrain_flops": flops, "wall_s": wall,
                                                 "objective": cfg.objective, "diagnostics": self.diagnostics()})
                        snapshots.append(path)
                    barrier(self.dist)
                    paused += time.perf_counter() - pause
        finally:
            bar.close()
        wall = time.perf_counter() - start - paused
        if self.dist.is_main:
            self.save_encoder(self.out_dir, {"step": cfg.steps, "pretrain_flops": flops, "wall_s": wall,
                                             "objective": cfg.objective, "diagnostics": self.diagnostics()})
        barrier(self.dist)
        shutdown(self.dist)
        return PretrainResult(self.out_dir, cfg.steps, wall, flops, snapshots)

"""Training configuration: a dataclass read from JSON, every problem reported at once."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from mmedge.data.tasks import TASKS, check_qtype_weights, check_relations
from mmedge.errors import ConfigError
from mmedge.models.config import ModelConfig, from_dict, read_json

DATA_RECIPE = Path(__file__).with_name("data-recipe.json")
SHIPPED_MODELS = Path(__file__).resolve().parents[2] / "models"  # the checkout's shipped models

# ModelConfig fields a training config may set (labels and vocab come from the task/tokenizer).
_MODEL_FIELDS = {f.name for f in dataclasses.fields(ModelConfig)} - {"labels", "vocab_size", "task", "version"}

# Options that only the generated scenes can serve, with the value that switches each off: the
# auxiliary losses read the scenes' object maps, the weights and curriculum name their question
# types and relations. With a real dataset (data NAME:ROOT) they must be off, except
# ground_loss_weight on a source whose records may point their phrases at boxes (GROUNDED: refs).
GROUNDED = ("jsonl",)
SCENES_ONLY: dict[str, object] = {
    "token_loss_weight": 0.0,   # tags visual tokens with the scene object's class
    "ground_loss_weight": 0.0,  # points referring phrases at the scene object's grid cell (or a ref's box)
    "ground_size": False,       # grounding also predicts the scene object's size
    "qtype_weights": None,      # odds of the scenes' question types
    "train_relations": None,    # the scenes' spatial relations asked
}


@dataclass
class TrainConfig:
    task: str = "vqa"                   # vqa | verify | match
    seed: int = 0                       # seeds init and order; same seed -> same run
    data_seed: int = 0                  # seeds the scene generator (val/test sets depend only on it)
    steps: int = 3000                   # optimizer steps (with epochs or minutes: the most it may take)
    epochs: float | None = None         # real data: the steps are this many passes over the training records
    minutes: float | None = None        # a wall-clock budget: the steps are set from the speed of the first steps
    batch_size: int = 64                # per process (global = batch_size * world size)
    lr: float = 1e-3                    # peak AdamW learning rate
    min_lr_ratio: float = 0.05          # cosine decay floor, as a fraction of lr
    warmup_steps: int = 150             # linear warm-up
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    exit_weighting: str = "linear"      # linear: exit i weighs (i+1); uniform: all equal
    confidence_loss_weight: float = 1.0  # BCE of the learned confidence heads
    prefilter_loss_weight: float = 1.0  # KL of prefilter scores to the model's attention
    token_loss_weight: float = 0.0      # tagging visual tokens with their object class (0 = off)
    ground_loss_weight: float = 0.0     # pointing each referring phrase at its object's grid cell (0 = off)
    ground_bins: int = 12               # grid cells per side for that pointing (12 = 8 px cells at 96 px)
    ground_stage: int = 1               # the stage whose text tokens are asked to point (0 = after layer 0)
    ground_size: bool = False           # grounding also predicts the named object's size (small / large)
    train_keep_ratios: list[float] = field(default_factory=lambda: [1.0, 0.5, 0.25])  # cycled per step
    unpruned_share: float = 0.0         # the first share of the run (steps or minutes) trains at keep 1.0 only
    train_size: int = 200_000           # distinct training scenes (indices wrap around)
    max_objects: int = 4                # objects per scene, 1..max
    qtype_weights: dict | None = None   # training only: relative odds of each question type (default uniform)
    train_relations: list[str] | None = None  # training only: spatial relations asked (curriculum); None = all
    eval_every: int = 250               # steps between validations
    eval_samples: int = 512             # validation samples per check
    checkpoint_every: int = 250         # steps between resumable checkpoints
    log_every: int = 25                 # steps between metric rows
    threads: int | None = None          # torch threads per process; None = cores / processes
    data: str = "scenes"                # scenes (generated) | NAME:ROOT (mmedge.data.sources: vqa2, gqa, nlvr2, jsonl, ...)
    answer_vocab_size: int = 1000       # real VQA data: the most frequent training answers become the labels
    text_vocab: str = "wordpiece"       # real data: "wordpiece" (learnt from the training text) or "word"
    text_vocab_size: int = 8000         # real data, wordpiece: vocabulary size (special tokens included)
    augment_shift: int = 0              # move each training image by up to this many px in x and y (0 = off)
    model: dict = field(default_factory=dict)  # ModelConfig overrides (dim, depth, ...)

    def __post_init__(self) -> None:
        p = []
        if self.task not in TASKS:
            p.append(f"task {self.task!r} unknown; choose one of {', '.join(TASKS)}")
        if self.exit_weighting not in ("linear", "uniform"):
            p.append(f"exit_weighting {self.exit_weighting!r} must be 'linear' or 'uniform'")
        for name in ("steps", "batch_size", "eval_every", "eval_samples", "checkpoint_every", "log_every",
                     "train_size", "max_objects"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                p.append(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not self.train_keep_ratios or any(not 0 < r <= 1 for r in self.train_keep_ratios):
            p.append(f"train_keep_ratios {self.train_keep_ratios} must be in (0, 1]")
        if isinstance(self.unpruned_share, bool) or not isinstance(self.unpruned_share, (int, float)) \
                or not 0 <= self.unpruned_share <= 1:
            p.append(f"unpruned_share must be a share of the run in [0, 1], got {self.unpruned_share!r}")
        if self.data != "scenes":
            on = [name for name, off in SCENES_ONLY.items() if getattr(self, name) != off
                  and not (name == "ground_loss_weight" and self.data.partition(":")[0] in GROUNDED)]
            if on:
                p.append(f"{', '.join(on)} {'is' if len(on) == 1 else 'are'} scenes-only (the generated scenes' object "
                         f"maps, question types or relations) and this config names data {self.data!r} itself: set "
                         + ", ".join(f"{n} to {json.dumps(SCENES_ONLY[n])}" for n in on)
                         + ", or take 'data' out of the config and pass --data NAME:ROOT, which switches them off "
                         "(TrainConfig.for_data in Python)")
        elif self.qtype_weights is not None and self.task in TASKS:
            try:
                check_qtype_weights(self.task, self.qtype_weights)
            except ConfigError as exc:
                p.extend(exc.problems)
        if self.ground_loss_weight < 0 or self.ground_bins < 1 or self.ground_stage < 0:
            p.append("ground_loss_weight must be >= 0, ground_bins >= 1 and ground_stage >= 0")
        if self.train_relations is not None:
            try:
                check_relations(self.train_relations)
            except ConfigError as exc:
                p.extend(exc.problems)
        if self.epochs is not None and self.minutes is not None:
            p.append("set at most one budget: epochs or minutes (steps stays the most either may take)")
        for name in ("epochs", "minutes"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
                p.append(f"{name} must be a positive number, got {value!r}")
        if not isinstance(self.augment_shift, int) or isinstance(self.augment_shift, bool) or self.augment_shift < 0:
            p.append(f"augment_shift must be a non-negative integer (pixels), got {self.augment_shift!r}")
        elif self.augment_shift and (self.token_loss_weight > 0 or self.ground_loss_weight > 0):
            p.append("augment_shift moves the images but not the scenes' object maps or the refs' boxes that "
                     "token_loss_weight and ground_loss_weight read: switch those off or set augment_shift to 0")
        if self.answer_vocab_size < 1:
            p.append("answer_vocab_size must be at least 1")
        if self.text_vocab not in ("wordpiece", "word"):
            p.append(f"text_vocab {self.text_vocab!r} must be 'wordpiece' or 'word'")
        if not isinstance(self.text_vocab_size, int) or self.text_vocab_size < 16:
            p.append(f"text_vocab_size {self.text_vocab_size!r} must be an integer >= 16")
        for key in sorted(set(self.model) - _MODEL_FIELDS):
            p.append(f"model.{key} is not a model field (known: {', '.join(sorted(_MODEL_FIELDS))})")
        if p:
            raise ConfigError(p, "training config")

    def for_data(self, data: str, grounded: bool = False) -> tuple["TrainConfig", list[str]]:
        """This config on `data` (what `mmedge train --data` does): with a real dataset (NAME:ROOT)
        every scenes-only option is switched off, except ground_loss_weight when `grounded` (the
        dataset's records point phrases at boxes: JSON Lines refs). Returns the new config and the
        options switched off, each as 'name (was value)'; a config that names a real dataset itself
        and sets one is refused (TrainConfig checks), not switched."""
        changes: dict = {"data": data}
        off = []
        if data != "scenes":
            for name, value in SCENES_ONLY.items():
                if name == "ground_loss_weight" and grounded and data.partition(":")[0] in GROUNDED:
                    continue
                if getattr(self, name) != value:
                    changes[name] = value
                    off.append(f"{name} (was {json.dumps(getattr(self, name))})")
        return TrainConfig(**{**self.to_dict(), **changes}), off

    @classmethod
    def data_recipe(cls) -> "TrainConfig":
        """The recipe for a dataset of your own (what `mmedge train --data NAME:ROOT` uses without
        --config): the shipped model's architecture and optimiser settings, a 30-minute budget."""
        return cls.load(DATA_RECIPE)

    def shipped_start(self) -> Path | None:
        """The shipped model a run of the data recipe starts from unless told otherwise: models/vqa-default
        for VQA when its architecture is this config's (on a domain it never saw, its weights were a better
        start than random ones: docs/studies/data-recipe.md); None for the other tasks, another
        architecture, or an installation without the models/ folder."""
        path = SHIPPED_MODELS / f"{self.task}-default"
        if self.task != "vqa" or not (path / "model.safetensors").exists():
            return None
        shipped = read_json(path / "config.json")
        return path if all(shipped.get(k) == v for k, v in self.model.items()) else None

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        return from_dict(cls, read_json(path), f"training config {path}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

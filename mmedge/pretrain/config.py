"""PretrainConfig: the objective, its rates and weights, the schedule and the encoder's size."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from mmedge.errors import ConfigError
from mmedge.models.config import ModelConfig, from_dict, read_json
from mmedge.pretrain.objectives import OBJECTIVES, ObjectiveConfig

_MODEL_FIELDS = {f.name for f in dataclasses.fields(ModelConfig)} - {"labels", "vocab_size", "task", "version"}
_OBJECTIVE_FIELDS = {f.name for f in dataclasses.fields(ObjectiveConfig)}


@dataclass
class PretrainConfig:
    objective: str = "mlm-mop"          # text half - visual half: mlm-mop (default: it transfers, issue #19) | rwd-rod | mlm-rod | rwd-mop
    seed: int = 0
    data_seed: int = 0
    steps: int = 3000
    batch_size: int = 64
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 200
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    train_size: int = 1_000_000         # distinct pretraining pairs before the data repeats
    log_every: int = 25
    snapshot_every: int = 0             # >0: save the encoder every N steps (snapshots/step-N)
    threads: int = 0                    # torch threads per process (0 = cores / processes)
    text_replace_rate: float = 0.5      # of the maskable words (mask_words)
    visual_replace_rate: float = 0.15
    mask_words: str = "content"         # content (colours, shapes, sizes, relations) | any
    replace_text: bool = True
    replace_visual: bool = True
    visual_replace_where: str = "objects"  # objects (only visual tokens on an object) | any
    visual_sources: str = "decoys"      # decoys (same-class sources labelled original) | any-object
    decoy_rate: float = 0.5
    generator_dim_ratio: float = 0.25
    generator_depth: int = 4
    tie_embeddings: bool = True
    disc_weight: float = 50.0
    itm_weight: float | None = None     # None: disc_weight when a half is discriminative, else 1
    itm_pass: str = "separate"          # separate (ITM in its own clean pass) | shared
    diagnostics_samples: int = 256      # held-out pairs scored at every snapshot (0 = none; scenes only)
    data: str = "scenes"                # scenes | coco:ROOT | cc:ROOT (image-caption pairs; visual half off)
    text_vocab_size: int = 8000         # real captions: WordPiece vocabulary size
    model: dict = field(default_factory=dict)  # ModelConfig overrides (dim, depth, ...)

    def __post_init__(self) -> None:
        p = []
        if self.objective not in OBJECTIVES:
            p.append(f"objective {self.objective!r} unknown; choose one of {', '.join(OBJECTIVES)}")
        for name in ("steps", "batch_size", "train_size", "log_every"):
            if getattr(self, name) < 1:
                p.append(f"{name} must be at least 1")
        for name in ("text_replace_rate", "visual_replace_rate"):
            if not 0 < getattr(self, name) < 1:
                p.append(f"{name} must be in (0, 1)")
        if not self.replace_text and not self.replace_visual:
            p.append("replace_text and replace_visual cannot both be false")
        if self.data != "scenes":
            from mmedge.data.provider import CAPTION_SOURCES

            name = self.data.partition(":")[0]
            if name not in CAPTION_SOURCES or ":" not in self.data:
                p.append(f"data {self.data!r}: pretraining reads image-caption pairs, scenes or "
                         f"{' | '.join(f'{n}:ROOT' for n in CAPTION_SOURCES)}")
            if not self.replace_text:
                p.append("with real captions only the text half and ITM train (no object classes): keep replace_text")
        if self.text_vocab_size < 16:
            p.append("text_vocab_size must be at least 16")
        for name, allowed in (("mask_words", ("content", "any")), ("visual_sources", ("decoys", "any-object")),
                              ("itm_pass", ("separate", "shared"))):
            if getattr(self, name) not in allowed:
                p.append(f"{name} {getattr(self, name)!r} must be one of {', '.join(allowed)}")
        if not 0 <= self.decoy_rate <= 1:
            p.append("decoy_rate must be in [0, 1]")
        if self.generator_depth < 1:
            p.append("generator_depth must be at least 1")
        if self.itm_weight is not None and self.itm_weight < 0:
            p.append("itm_weight must be at least 0")
        if self.visual_replace_where not in ("any", "objects"):
            p.append(f"visual_replace_where {self.visual_replace_where!r} must be 'any' or 'objects'")
        if not 0 < self.generator_dim_ratio <= 1:
            p.append("generator_dim_ratio must be in (0, 1]")
        for key in sorted(set(self.model) - _MODEL_FIELDS):
            p.append(f"model.{key} is not a model field (known: {', '.join(sorted(_MODEL_FIELDS))})")
        if p:
            raise ConfigError(p, "pretraining config")

    def objective_config(self) -> ObjectiveConfig:
        return ObjectiveConfig(**{k: getattr(self, k) for k in _OBJECTIVE_FIELDS})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        import json

        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> "PretrainConfig":
        return from_dict(cls, read_json(path), str(path))

"""The model configuration: a dataclass saved as JSON beside the weights."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from mmedge.errors import ConfigError

CONFIG_VERSION = 1
ATTENTION_VARIANTS = ("full", "lowrank", "crossmodal")  # names registered in mmedge.models.attention.ATTENTION


@dataclass
class ModelConfig:
    task: str = "vqa"                 # vqa | verify | match
    labels: list[str] = field(default_factory=list)  # answer vocabulary, index = class id
    vocab_size: int = 64              # tokenizer vocabulary size
    max_text_len: int = 24            # text tokens after padding/truncation
    image_size: int = 96              # square input side, px
    patch_size: int = 8               # px per side of a visual token (96/8 -> 144 tokens)
    patch_embed: str = "linear"       # linear: one conv per patch; conv_stem: log2(patch) stride-2 3x3 convs
    position_code: str = "sincos"     # image position init: sincos, or sincos_linear (+ linear x and y ramps)
    dim: int = 128                    # hidden width
    depth: int = 4                    # transformer layers
    num_heads: int = 4                # attention heads
    mlp_ratio: float = 4.0            # MLP hidden = mlp_ratio * dim
    dropout: float = 0.0              # dropout in attention and MLP
    attention: str = "full"           # attention variant (see mmedge.models.attention.ATTENTION)
    attention_rank: int = 16          # lowrank: at most this many visual landmarks (segment means)
    attention_window: int = 24        # crossmodal: visual block size; a visual token sees its own block
    exit_layers: list[int] | None = None  # 0-based layers followed by an exit; None = every layer
    exit_pool: str = "cls"            # exit heads read: cls = the [CLS] token; text = mean of [CLS] + text
    text_film: bool = False           # FiLM: pooled text scales/shifts visual tokens before the layers
    prefilter_dim: int = 32           # width of the visual-token prefilter scorer
    token_classes: int = 0            # >0: a training-only head tags visual tokens with object classes
    ground_bins: int = 0              # >0: a training-only head points text phrases at their object's grid cell
    ground_sizes: int = 0             # >0: that head also predicts the object's size class (this many classes)
    keep_ratios: list[float] = field(default_factory=lambda: [1.0, 0.5, 0.25])  # trained keep ratios
    version: int = CONFIG_VERSION

    def __post_init__(self) -> None:
        problems = self.validate()
        if problems:
            raise ConfigError(problems, "model config")

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def exits(self) -> list[int]:
        return list(range(self.depth)) if self.exit_layers is None else sorted(self.exit_layers)

    def kept_tokens(self, keep_ratio: float) -> int:
        """Visual tokens kept at `keep_ratio` (at least one)."""
        return max(1, round(keep_ratio * self.num_patches))

    def validate(self) -> list[str]:
        p = []
        if not self.labels:
            p.append("labels must list the answer vocabulary")
        if self.image_size % self.patch_size:
            p.append(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.patch_embed not in ("linear", "conv_stem"):
            p.append(f"patch_embed {self.patch_embed!r} must be 'linear' or 'conv_stem'")
        elif self.patch_embed == "conv_stem" and (self.patch_size < 2 or self.patch_size & (self.patch_size - 1)):
            p.append(f"patch_embed 'conv_stem' needs a power-of-two patch_size, got {self.patch_size}")
        if self.position_code not in ("sincos", "sincos_linear"):
            p.append(f"position_code {self.position_code!r} must be 'sincos' or 'sincos_linear'")
        if self.exit_pool not in ("cls", "text"):
            p.append(f"exit_pool {self.exit_pool!r} must be 'cls' or 'text'")
        if self.dim % self.num_heads:
            p.append(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.exit_layers is not None:
            bad = [i for i in self.exit_layers if not 0 <= i < self.depth]
            if bad:
                p.append(f"exit_layers {bad} outside 0..{self.depth - 1}")
            elif self.depth - 1 not in self.exit_layers:
                p.append(f"exit_layers must include the last layer {self.depth - 1}")
        if not self.keep_ratios or any(not 0 < r <= 1 for r in self.keep_ratios):
            p.append(f"keep_ratios {self.keep_ratios} must be in (0, 1]")
        if self.ground_bins < 0 or self.ground_sizes < 0:
            p.append(f"ground_bins {self.ground_bins} and ground_sizes {self.ground_sizes} must be >= 0 (0 = off)")
        if self.attention_rank < 1 or self.attention_window < 1:
            p.append(f"attention_rank {self.attention_rank} and attention_window {self.attention_window} must be >= 1")
        if self.attention not in ATTENTION_VARIANTS:
            p.append(f"attention {self.attention!r} unknown; choose one of {list(ATTENTION_VARIANTS)}")
        return p

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = "model config") -> "ModelConfig":
        return from_dict(cls, data, source)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> "ModelConfig":
        return cls.from_dict(read_json(path), str(path))


def read_json(path: str | Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"file not found: {path}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    return data


def from_dict(cls, data: dict, source: str):
    """Build dataclass `cls`, reporting every unknown or mistyped field together."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError([f"unknown field {u!r} (known: {', '.join(sorted(names))})" for u in unknown], source)
    try:
        return cls(**data)
    except TypeError as exc:
        raise ConfigError(str(exc), source) from exc

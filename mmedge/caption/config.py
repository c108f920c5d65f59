"""The captioning model's configuration: a dataclass saved as JSON beside the weights."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from mmedge.errors import ConfigError
from mmedge.models.config import from_dict, read_json

CAPTION_CONFIG_VERSION = 1


@dataclass
class CaptionConfig:
    task: str = "caption"             # always "caption": tells a model directory's kind apart
    vocab_size: int = 48              # caption tokenizer vocabulary, [PAD] [UNK] [BOS] [EOS] first
    max_len: int = 24                 # decoder positions: [BOS] + words + [EOS] (the KV cache length)
    image_size: int = 96              # square input side, px
    patch_size: int = 16              # px per side of a visual token (96/16 -> 36 tokens)
    dim: int = 128                    # hidden width of encoder and decoder
    encoder_depth: int = 2            # transformer layers over the kept visual tokens, once per image
    decoder_depth: int = 4            # causal decoder layers, an exit after each in exit_layers
    num_heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    exit_layers: list[int] | None = None  # 0-based decoder layers followed by an exit; None = every layer
    prefilter_dim: int = 32           # width of the visual-token prefilter scorer
    keep_ratios: list[float] = field(default_factory=lambda: [1.0, 0.5])  # trained keep ratios
    pad_id: int = 0
    bos_id: int = 2
    eos_id: int = 3
    version: int = CAPTION_CONFIG_VERSION

    def __post_init__(self) -> None:
        p = self.validate()
        if p:
            raise ConfigError(p, "caption model config")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def exits(self) -> list[int]:
        return list(range(self.decoder_depth)) if self.exit_layers is None else sorted(self.exit_layers)

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    def kept_tokens(self, keep_ratio: float) -> int:
        return max(1, round(keep_ratio * self.num_patches))

    def validate(self) -> list[str]:
        p = []
        if self.task != "caption":
            p.append(f"task must be 'caption', got {self.task!r}")
        if self.image_size % self.patch_size:
            p.append(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.patch_size < 2 or self.patch_size & (self.patch_size - 1):
            p.append(f"patch_size {self.patch_size} must be a power of two (the conv stem halves it)")
        if self.dim % self.num_heads:
            p.append(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.encoder_depth < 0 or self.decoder_depth < 1:
            p.append("encoder_depth must be >= 0 and decoder_depth >= 1")
        if self.max_len < 2:
            p.append(f"max_len {self.max_len} must leave room for [BOS] and one word")
        if not {self.pad_id, self.bos_id, self.eos_id} <= set(range(self.vocab_size)):
            p.append(f"pad/bos/eos ids must lie below vocab_size {self.vocab_size}")
        if self.exit_layers is not None:
            bad = [i for i in self.exit_layers if not 0 <= i < self.decoder_depth]
            if bad:
                p.append(f"exit_layers {bad} outside 0..{self.decoder_depth - 1}")
            elif self.decoder_depth - 1 not in self.exit_layers:
                p.append(f"exit_layers must include the last decoder layer {self.decoder_depth - 1}")
        if not self.keep_ratios or any(not 0 < r <= 1 for r in self.keep_ratios):
            p.append(f"keep_ratios {self.keep_ratios} must be in (0, 1]")
        return p

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> "CaptionConfig":
        return from_dict(cls, read_json(path), str(path))

"""What a decoded caption costs in FLOPs, from the per-part counts export records (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DecoderCost:
    """FLOPs of the decoder's parts for one word at batch 1 (FlopCounterMode counts)."""

    stage: list[int]   # stage s: its layers over the new position, and its exit head
    head: list[int]    # the exit head of stage s alone
    fill: list[int]    # copy-forward after exiting at s: keys and values of every later layer
    encoder: int       # once per image: encoder, prefilter, every layer's cross-attention keys/values

    def word(self, exit_stage: int, kv: str = "copy") -> int:
        if kv == "copy":
            return sum(self.stage[: exit_stage + 1]) + self.fill[exit_stage]
        return sum(self.stage) - sum(self.head[exit_stage + 1:])  # every layer runs, later heads do not

    def caption(self, exits: list[int], kv: str = "copy") -> int:
        return sum(self.word(e, kv) for e in exits)

    def full_depth(self, words: int) -> int:
        return words * sum(self.stage)

    @classmethod
    def from_manifest(cls, flops: dict) -> "DecoderCost":
        """A bundle manifest's flops entry for one keep ratio."""
        return cls(list(flops["stage"]), list(flops["head"]), list(flops["fill"]), int(flops["encoder"]))

"""Captioning on exported graphs: greedy or beam decoding with a per-word early exit, in numpy.

The decoding loop is mmedge.runtime.generate's (shared with adapted generative VLMs); this module says
how a captioner's graphs are fed: the image once (``encoder_{r}``: every decoder layer's cross-attention
keys and values), then per word ``step{s}_{r}`` on the previous word ([BOS] first) at its position, and
``fill{s}`` for the copy-forward. The layout (which graph runs which decoder layers, cache sizes) comes
from the bundle manifest's ``decoder`` and ``graphs`` sections.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from mmedge.errors import ConfigError
from mmedge.runtime.controller import Policy
from mmedge.runtime.generate import KV_MODES, GenerationRun, Hypothesis, StagedDecoder, check_search

CaptionRun = GenerationRun  # a caption's run: tokens, exits, logits, timings
__all__ = ["KV_MODES", "CaptionDecoder", "CaptionRun", "Layout"]


@dataclass
class Layout:
    """What decoding needs to know about the graphs, read from a manifest."""

    stage_layers: list[list[int]]   # decoder layers of each stage
    num_heads: int
    head_dim: int
    max_len: int
    bos_id: int
    eos_id: int
    pad_id: int

    @property
    def num_stages(self) -> int:
        return len(self.stage_layers)

    @property
    def depth(self) -> int:
        return sum(len(x) for x in self.stage_layers)

    @classmethod
    def from_manifest(cls, manifest: dict) -> "Layout":
        d, t = manifest["decoder"], manifest["tokenizer"]
        return cls([list(x) for x in d["stage_layers"]], d["num_heads"], d["head_dim"], d["max_len"],
                   t["bos_id"], t["eos_id"], t["pad_id"])


class CaptionDecoder(StagedDecoder):
    def __init__(self, session, layout: Layout, keep_tag: str) -> None:
        super().__init__(session)
        self.layout, self.keep_tag = layout, keep_tag
        self.stage_layers = layout.stage_layers
        self._cross: tuple[np.ndarray, np.ndarray] | None = None

    def step_name(self, stage: int) -> str:
        return f"step{stage}_{self.keep_tag}"

    def fill_name(self, stage: int) -> str:
        return f"fill{stage}"

    def first_feeds(self, hyp: Hypothesis, n: int, timings: dict) -> dict:
        return {"token": np.array([hyp.tokens[-1] if hyp.tokens else self.layout.bos_id], np.int64)}

    def token_feeds(self, n: int) -> dict:
        return {"position": np.array([n], np.int64)}

    def context_feeds(self, stage: int) -> dict:
        layers = self.stage_layers[stage]
        return {"cross_k": self._cross[0][layers], "cross_v": self._cross[1][layers]}

    def _fresh_cache(self) -> list[np.ndarray]:
        L = self.layout
        return [np.zeros((1, L.num_heads, L.max_len, L.head_dim), np.float32) for _ in range(L.depth)]

    def caption(self, pixel_values: np.ndarray, policy: Policy, max_len: int | None = None, beam: int = 1,
                kv: str = "copy") -> CaptionRun:
        """pixel_values (1, 3, S, S) float32 -> the caption's ids, exits, logits and timings."""
        check_search(policy, kv, beam)
        L = self.layout
        limit = L.max_len if max_len is None else max_len
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= L.max_len:
            raise ConfigError(f"max_len {max_len!r} must be an integer from 1 to the model's {L.max_len}", "arguments")
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        enc = self.run_graph(f"encoder_{self.keep_tag}", {"pixel_values": pixel_values}, timings)
        encoder_ms = timings[f"encoder_{self.keep_tag}"]
        self._cross = (enc["cross_k"], enc["cross_v"])
        start = Hypothesis([], [], 0.0, self._fresh_cache(), self._fresh_cache())
        best = self.search(start, limit, policy, beam, kv, (L.eos_id,), timings)
        return CaptionRun(best.tokens, best.exits, best.logits, encoder_ms, timings,
                          (time.perf_counter() - t0) * 1e3, best.confidences, best.logprob)

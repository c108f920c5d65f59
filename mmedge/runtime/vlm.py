"""An adapted generative VLM on its exported graphs (mmedge.adapt.vlm_graphs), in numpy: the prompt
assembled with the visual tokens the prefilter keeps (the top k of the vision graph's scores, at any keep
ratio), prefilled at full depth, then each token decoded with a per-token exit by
mmedge.runtime.generate's loop (the captioner's). The LM head runs once per token, at the exit taken.
Torch-free.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from mmedge.errors import ConfigError
from mmedge.runtime.controller import Policy
from mmedge.runtime.generate import GenerationRun, Hypothesis, StagedDecoder, check_search, top_k


@dataclass
class VLMLayout:
    """What generation needs to know about the graphs (saved beside them as vlm.json)."""

    stage_layers: list[list[int]]   # decoder layers of each stage
    num_kv_heads: int
    head_dim: int
    max_slots: int                  # cache slots: prompt + generated tokens
    image_token_id: int
    num_image_tokens: int           # per tile, before the prefilter
    keep_ratios: list[float]        # the ratios the prefilter was distilled at (calibration tries these)
    graphs: dict[str, list[str]]    # graph (or method) name -> its output names

    @property
    def depth(self) -> int:
        return sum(len(x) for x in self.stage_layers)

    def to_dict(self) -> dict:
        return asdict(self)


def kept_tokens(keep_ratio: float, num_image_tokens: int) -> int:
    """Visual tokens kept at a keep ratio (mmedge.adapt.vlm.VLMAdaptConfig.kept_tokens)."""
    return max(1, round(keep_ratio * num_image_tokens))


def check_keep_ratio(keep_ratio) -> float:
    if isinstance(keep_ratio, bool) or not isinstance(keep_ratio, (int, float)) or not 0 < keep_ratio <= 1:
        raise ConfigError(f"keep ratio {keep_ratio!r} must be a number in (0, 1]", "arguments")
    return float(keep_ratio)


class VLMDecoder(StagedDecoder):
    def __init__(self, session, layout: VLMLayout) -> None:
        super().__init__(session)
        self.layout = layout
        self.stage_layers = layout.stage_layers
        self._next_position = self._next_slot = 0
        self._first: tuple[np.ndarray, float] | None = None

    def step_name(self, stage: int) -> str:
        return f"step{stage}"

    def fill_name(self, stage: int) -> str:
        return f"fill{stage}"

    def first_feeds(self, hyp: Hypothesis, n: int, timings: dict) -> dict:
        embeds = self.run_graph("embed", {"ids": np.array([[hyp.tokens[-1]]], np.int64)}, timings)["embeds"]
        return {"hidden_in": embeds}

    def token_feeds(self, n: int) -> dict:
        """The n-th generated token (n >= 1) feeds token n - 1 at the position and slot after the last."""
        return {"positions": np.array([[self._next_position + n - 1]], np.int64),
                "slot": np.array([self._next_slot + n - 1], np.int64)}

    def exit_logits(self, stage: int, out: dict, timings: dict) -> np.ndarray:
        return self.run_graph("head", {"exit_hidden": out["exit_hidden"]}, timings)["logits"][0]

    def word(self, hyp: Hypothesis, n: int, policy: Policy, kv: str, timings: dict):
        if n == 0:  # the first token comes from the prefill, at full depth
            logits, confidence = self._first
            return logits, self.num_stages - 1, confidence
        return super().word(hyp, n, policy, kv, timings)

    def prompt(self, ids: list[int], pixel_values: np.ndarray, keep_ratio: float, timings: dict):
        """-> the prompt's embeddings (1, T', D) with the kept visual tokens in place of the image block,
        their rotary positions (1, T') (the unpruned prompt's) and the kept indices."""
        L = self.layout
        ids = np.asarray(ids, np.int64)
        at = np.flatnonzero(ids == L.image_token_id)
        M = L.num_image_tokens
        if len(at) != M or (M and at[-1] - at[0] != M - 1):
            raise ConfigError(f"the prompt must hold one block of {M} image tokens (one tile); it holds {len(at)}",
                              "prompt")
        start = int(at[0])
        text = ids[ids != L.image_token_id][None]
        vision = self.run_graph("vision", {"pixel_values": pixel_values, "text_ids": text}, timings)
        embeds = self.run_graph("embed", {"ids": ids[None]}, timings)["embeds"]
        kept = np.sort(top_k(vision["scores"][0], kept_tokens(keep_ratio, M)))  # (k,) in order
        embeds = np.concatenate([embeds[:, :start], vision["visual"][:, kept], embeds[:, start + M:]], axis=1)
        positions = np.concatenate([np.arange(start), start + kept, np.arange(start + M, len(ids))])[None]
        return embeds.astype(np.float32), positions.astype(np.int64), kept

    def generate(self, ids: list[int], pixel_values: np.ndarray, policy: Policy, max_new_tokens: int = 24,
                 beam: int = 1, kv: str = "copy", keep_ratio: float = 1.0,
                 stop_ids: tuple[int, ...] = ()) -> GenerationRun:
        """ids: the prompt with its block of image tokens; pixel_values (1, 3, S, S) float32."""
        check_search(policy, kv, beam)
        keep_ratio = check_keep_ratio(keep_ratio)
        L = self.layout
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        embeds, positions, _ = self.prompt(ids, pixel_values, keep_ratio, timings)
        T = embeds.shape[1]
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or \
                not 1 <= max_new_tokens <= L.max_slots - T:
            raise ConfigError(f"max_new_tokens {max_new_tokens!r} must be from 1 to {L.max_slots - T} (the cache "
                              f"holds {L.max_slots} slots, the prompt {T})", "arguments")
        cache_k = [np.zeros((1, L.num_kv_heads, L.max_slots, L.head_dim), np.float32) for _ in range(L.depth)]
        cache_v = [c.copy() for c in cache_k]
        hidden = embeds
        for s, layers in enumerate(self.stage_layers):  # the prefill: every stage on the whole prompt
            out = self.run_cached(self.step_name(s), {"hidden_in": hidden, "positions": positions,
                                                      "slot": np.array([0], np.int64)}, layers, cache_k, cache_v,
                                  timings)
            hidden = out["hidden"]
        self._first = (self.exit_logits(self.num_stages - 1, out, timings), float(out["confidence"][0]))
        first_ms = (time.perf_counter() - t0) * 1e3
        self._next_position, self._next_slot = int(positions[0, -1]) + 1, T
        start = Hypothesis([], [], 0.0, cache_k, cache_v)
        search = self.search_transformers if beam > 1 else self.search  # beams as the source model's generate()
        best = search(start, max_new_tokens, policy, beam, kv, tuple(stop_ids), timings)
        return GenerationRun(best.tokens, best.exits, best.logits, first_ms, timings,
                             (time.perf_counter() - t0) * 1e3, best.confidences, best.logprob)

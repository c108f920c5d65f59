"""Captioning on exported graphs: greedy or beam decoding with a per-word early exit, in numpy.

Backend-agnostic and torch-free: `session.run(graph_name, feeds) -> outputs` is any of
``mmedge.runtime.backends``' sessions (onnxruntime, executorch) or the export's PyTorch reference.
The layout (which graph runs which decoder layers, cache sizes) comes from the bundle manifest's
``decoder`` and ``graphs`` sections. The exit decision is ``mmedge.runtime.controller.should_stop``,
the same the classifiers use; a word that exits before the last stage leaves its copy-forward keys
and values in the later layers' caches through the ``fill{s}`` graph (``kv="copy"``), or runs the
skipped stages for their caches (``kv="recompute"``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from mmedge.errors import ConfigError
from mmedge.runtime.controller import ExitState, Policy, should_stop, softmax_max

KV_MODES = ("copy", "recompute")


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


@dataclass
class Hypothesis:
    tokens: list[int]
    exits: list[int]
    logprob: float
    cache_k: list[np.ndarray]   # per decoder layer, (1, H, P, hd)
    cache_v: list[np.ndarray]
    done: bool = False
    logits: list[np.ndarray] = field(default_factory=list)
    confidences: list[float] = field(default_factory=list)


@dataclass
class CaptionRun:
    tokens: list[int]            # generated ids, [EOS] included when reached
    exits: list[int]             # exit stage per generated id
    logits: list[np.ndarray]     # per generated id, the logits it was chosen from (V,)
    encoder_ms: float
    stage_ms: dict[str, float]   # total ms per graph over the caption
    total_ms: float
    confidences: list[float] = field(default_factory=list)  # per generated id, the learned confidence at its exit
    logprob: float = 0.0         # the hypothesis' score: sum of its ids' log-softmax (float64)


class CaptionDecoder:
    def __init__(self, session, layout: Layout, keep_tag: str) -> None:
        self.session, self.layout, self.keep_tag = session, layout, keep_tag

    def _run(self, name: str, feeds: dict, timings: dict) -> dict:
        t0 = time.perf_counter()
        out = self.session.run(name, feeds)
        timings[name] = timings.get(name, 0.0) + (time.perf_counter() - t0) * 1e3
        return out

    def _fresh_cache(self) -> list[np.ndarray]:
        L = self.layout
        return [np.zeros((1, L.num_heads, L.max_len, L.head_dim), np.float32) for _ in range(L.depth)]

    def _word(self, hyp: Hypothesis, pos: int, cross_k: np.ndarray, cross_v: np.ndarray, policy: Policy,
              kv: str, timings: dict) -> tuple[np.ndarray, int, float]:
        """Run the stages for the word at `pos` of `hyp` (updating its caches) -> logits (V,), exit stage and
        the learned confidence at that exit."""
        L = self.layout
        position = np.array([pos], np.int64)
        token = hyp.tokens[-1] if hyp.tokens else L.bos_id
        first = np.array([token], np.int64)
        state = ExitState([], [], [], 0.0)
        hidden = logits = None
        chosen_exit = L.num_stages - 1
        for s, layers in enumerate(L.stage_layers):
            feeds = {"token" if s == 0 else "hidden_in": first if s == 0 else hidden, "position": position,
                     "past_k": np.stack([hyp.cache_k[i] for i in layers]),
                     "past_v": np.stack([hyp.cache_v[i] for i in layers]),
                     "cross_k": cross_k[layers], "cross_v": cross_v[layers]}
            out = self._run(f"step{s}_{self.keep_tag}", feeds, timings)
            for j, i in enumerate(layers):
                hyp.cache_k[i], hyp.cache_v[i] = out["present_k"][j], out["present_v"][j]
            hidden = out["hidden"]
            stage_logits = out["logits"][0]
            if logits is None:  # still choosing
                state.answers.append(int(np.argmax(stage_logits)))
                state.confidences.append(float(out["confidence"][0]))
                state.max_probabilities.append(softmax_max(stage_logits))
                if should_stop(policy, state, L.num_stages):
                    logits, chosen_exit = stage_logits, s
                    if kv == "copy":
                        break
        if kv == "copy" and chosen_exit < L.num_stages - 1:
            later = [i for layers in L.stage_layers[chosen_exit + 1:] for i in layers]
            out = self._run(f"fill{chosen_exit}", {"hidden_in": hidden, "position": position,
                                                   "past_k": np.stack([hyp.cache_k[i] for i in later]),
                                                   "past_v": np.stack([hyp.cache_v[i] for i in later])}, timings)
            for j, i in enumerate(later):
                hyp.cache_k[i], hyp.cache_v[i] = out["present_k"][j], out["present_v"][j]
        return logits, chosen_exit, state.confidences[chosen_exit]

    def caption(self, pixel_values: np.ndarray, policy: Policy, max_len: int | None = None, beam: int = 1,
                kv: str = "copy") -> CaptionRun:
        """pixel_values (1, 3, S, S) float32 -> the caption's ids, exits, logits and timings."""
        if not isinstance(policy, Policy):
            raise ConfigError(f"policy must be a Policy (mmedge.runtime.controller), got {type(policy).__name__}",
                              "arguments")
        if kv not in KV_MODES:
            raise ConfigError(f"kv {kv!r} unknown; choose one of {list(KV_MODES)}", "arguments")
        if isinstance(beam, bool) or not isinstance(beam, int) or not 1 <= beam <= 16:
            raise ConfigError(f"beam {beam!r} must be an integer from 1 to 16", "arguments")
        L = self.layout
        limit = L.max_len if max_len is None else max_len
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= L.max_len:
            raise ConfigError(f"max_len {max_len!r} must be an integer from 1 to the model's {L.max_len}", "arguments")
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        enc = self._run(f"encoder_{self.keep_tag}", {"pixel_values": pixel_values}, timings)
        encoder_ms = timings[f"encoder_{self.keep_tag}"]
        cross_k, cross_v = enc["cross_k"], enc["cross_v"]
        beams = [Hypothesis([], [], 0.0, self._fresh_cache(), self._fresh_cache())]
        for pos in range(limit):
            candidates = []
            for hyp in beams:
                if hyp.done:
                    candidates.append((hyp.logprob, hyp, None, None, None, None))
                    continue
                logits, exit_stage, confidence = self._word(hyp, pos, cross_k, cross_v, policy, kv, timings)
                z = logits.astype(np.float64)
                logp = z - z.max() - np.log(np.exp(z - z.max()).sum())
                top = np.argsort(-logp, kind="stable")[:beam]
                for w in top:
                    candidates.append((hyp.logprob + float(logp[w]), hyp, int(w), exit_stage, logits, confidence))
            candidates.sort(key=lambda c: -c[0])
            new_beams = []
            for score, hyp, word, exit_stage, logits, confidence in candidates[:beam]:
                if word is None:
                    new_beams.append(hyp)
                    continue
                new_beams.append(Hypothesis(hyp.tokens + [word], hyp.exits + [exit_stage], score,
                                            list(hyp.cache_k), list(hyp.cache_v), word == L.eos_id,
                                            hyp.logits + [logits], hyp.confidences + [confidence]))
            beams = new_beams
            if all(h.done for h in beams):
                break
        best = max(beams, key=lambda h: h.logprob / max(1, len(h.tokens))) if beam > 1 else beams[0]
        return CaptionRun(best.tokens, best.exits, best.logits, encoder_ms, timings,
                          (time.perf_counter() - t0) * 1e3, best.confidences, best.logprob)

"""Generation on exported graphs with a per-token early exit, in numpy: the one decoding loop that
mmedge's captioner (mmedge.caption.runtime) and adapted generative VLMs (mmedge.runtime.vlm) share.

Backend-agnostic and torch-free: `session.run(graph_name, feeds) -> outputs` is any of
``mmedge.runtime.backends``' sessions or an export's PyTorch reference. Each token runs the decoder's
``step`` graphs in order until ``mmedge.runtime.controller.should_stop`` takes an exit; a token that
exits before the last stage leaves its copy-forward keys and values in the later layers' caches
through a ``fill`` graph (``kv="copy"``), or runs the skipped stages for their caches
(``kv="recompute"``). The KV cache is one array per decoder layer, (1, heads, slots, head_dim).
A model kind says how its graphs are fed (``StagedDecoder``'s hooks); search (greedy, beam) is here.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from mmedge.errors import ConfigError
from mmedge.runtime.controller import ExitState, Policy, should_stop, softmax_max

KV_MODES = ("copy", "recompute")
LOGIT_POLICIES = ("max_probability", "patience")  # policies that read every exit's logits, not just the one taken


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
class GenerationRun:
    tokens: list[int]            # generated ids, the stop token included when reached
    exits: list[int]             # exit stage per generated id
    logits: list[np.ndarray]     # per generated id, the logits it was chosen from (V,)
    encoder_ms: float            # the image's graphs (and, for a VLM, the prompt's prefill)
    stage_ms: dict[str, float]   # total ms per graph over the generation
    total_ms: float
    confidences: list[float] = field(default_factory=list)  # per generated id, the learned confidence at its exit
    logprob: float = 0.0         # the hypothesis' score: sum of its ids' log-softmax (float64)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """The indices of the k largest scores, largest first, ties by lower index: what
    ``np.argsort(-scores, kind="stable")[:k]`` gives, without sorting the whole vocabulary."""
    if k >= scores.size:
        return np.argsort(-scores, kind="stable")[:k]
    if k == 1:
        return np.array([int(np.argmax(scores))])
    kth = np.partition(scores, scores.size - k)[scores.size - k]  # the k-th largest
    idx = np.flatnonzero(scores >= kth)  # ascending: every tie at the k-th value is in
    return idx[np.argsort(-scores[idx], kind="stable")][:k]


def check_search(policy, kv: str, beam) -> None:
    if not isinstance(policy, Policy):
        raise ConfigError(f"policy must be a Policy (mmedge.runtime.controller), got {type(policy).__name__}",
                          "arguments")
    if kv not in KV_MODES:
        raise ConfigError(f"kv {kv!r} unknown; choose one of {list(KV_MODES)}", "arguments")
    if isinstance(beam, bool) or not isinstance(beam, int) or not 1 <= beam <= 16:
        raise ConfigError(f"beam {beam!r} must be an integer from 1 to 16", "arguments")


class StagedDecoder:
    """Per-token staged decoding over a session's graphs. A model kind implements the hooks:
    ``stage_layers`` (decoder layers per stage), ``step_name(s)``, ``fill_name(s)``,
    ``first_feeds(hyp, n)`` (stage 0's inputs besides the caches for the n-th generated token),
    ``token_feeds(n)`` (every step's and fill's position inputs), ``context_feeds(s)`` (stage s's
    inputs after its caches: the captioner's cross-attention keys and values) and ``exit_logits(s, out)``
    (the logits at stage s's exit from its step's outputs: the captioner's steps give them, a VLM runs its
    head graph, only where they are read). Feeds are built in that order: first (or hidden_in), token
    feeds, past_k, past_v, context."""

    stage_layers: list[list[int]]

    def __init__(self, session) -> None:
        self.session = session

    # ------------------------------------------------------------------ hooks
    def step_name(self, stage: int) -> str:
        raise NotImplementedError

    def fill_name(self, stage: int) -> str:
        raise NotImplementedError

    def first_feeds(self, hyp: Hypothesis, n: int, timings: dict) -> dict:
        raise NotImplementedError

    def token_feeds(self, n: int) -> dict:
        raise NotImplementedError

    def context_feeds(self, stage: int) -> dict:
        return {}

    def exit_logits(self, stage: int, out: dict, timings: dict) -> np.ndarray:
        return out["logits"][0]

    # ------------------------------------------------------------------ shared
    @property
    def num_stages(self) -> int:
        return len(self.stage_layers)

    def run_graph(self, name: str, feeds: dict, timings: dict) -> dict:
        t0 = time.perf_counter()
        out = self.session.run(name, feeds)
        timings[name] = timings.get(name, 0.0) + (time.perf_counter() - t0) * 1e3
        return out

    def run_cached(self, name: str, feeds: dict, layers: list[int], cache_k: list[np.ndarray],
                   cache_v: list[np.ndarray], timings: dict, after: dict | None = None) -> dict:
        """Run graph `name` on feeds, then the caches of `layers` (past_k, past_v), then `after`; write its
        present_k / present_v back into those layers' caches. Returns its outputs."""
        feeds = {**feeds, "past_k": np.stack([cache_k[i] for i in layers]),
                 "past_v": np.stack([cache_v[i] for i in layers]), **(after or {})}
        out = self.run_graph(name, feeds, timings)
        for j, i in enumerate(layers):
            cache_k[i], cache_v[i] = out["present_k"][j], out["present_v"][j]
        return out

    def word(self, hyp: Hypothesis, n: int, policy: Policy, kv: str, timings: dict) -> tuple[np.ndarray, int, float]:
        """Run the stages for the n-th generated token of `hyp` (updating its caches) -> logits (V,), exit
        stage and the learned confidence at that exit."""
        state = ExitState([], [], [], 0.0)
        hidden = logits = None
        chosen_exit = self.num_stages - 1
        every_exit = policy.kind in LOGIT_POLICIES  # otherwise the logits are read at the exit taken only
        for s, layers in enumerate(self.stage_layers):
            first = self.first_feeds(hyp, n, timings) if s == 0 else {"hidden_in": hidden}
            out = self.run_cached(self.step_name(s), {**first, **self.token_feeds(n)}, layers, hyp.cache_k,
                                  hyp.cache_v, timings, self.context_feeds(s))
            hidden = out["hidden"]
            if logits is None:  # still choosing
                stage_logits = self.exit_logits(s, out, timings) if every_exit else None
                state.answers.append(int(np.argmax(stage_logits)) if every_exit else -1)
                state.confidences.append(float(out["confidence"][0]))
                state.max_probabilities.append(softmax_max(stage_logits) if every_exit else math.nan)
                if should_stop(policy, state, self.num_stages):
                    logits = stage_logits if every_exit else self.exit_logits(s, out, timings)
                    chosen_exit = s
                    if kv == "copy":
                        break
        if kv == "copy" and chosen_exit < self.num_stages - 1:
            later = [i for layers in self.stage_layers[chosen_exit + 1:] for i in layers]
            self.run_cached(self.fill_name(chosen_exit), {"hidden_in": hidden, **self.token_feeds(n)}, later,
                            hyp.cache_k, hyp.cache_v, timings)
        return logits, chosen_exit, state.confidences[chosen_exit]

    def search(self, start: Hypothesis, limit: int, policy: Policy, beam: int, kv: str, stop_ids: tuple[int, ...],
               timings: dict) -> Hypothesis:
        """Greedy (beam 1) or beam search from `start` for up to `limit` tokens; a hypothesis ends at a
        stop id. Beams are ranked by summed log-probability, the best by its length-normalised score."""
        beams = [start]
        for n in range(limit):
            candidates = []
            for hyp in beams:
                if hyp.done:
                    candidates.append((hyp.logprob, hyp, None, None, None, None))
                    continue
                logits, exit_stage, confidence = self.word(hyp, n, policy, kv, timings)
                z = logits.astype(np.float64)
                logp = z - z.max() - np.log(np.exp(z - z.max()).sum())
                top = top_k(logp, beam)
                for w in top:
                    candidates.append((hyp.logprob + float(logp[w]), hyp, int(w), exit_stage, logits, confidence))
            candidates.sort(key=lambda c: -c[0])
            new_beams = []
            for score, hyp, word, exit_stage, logits, confidence in candidates[:beam]:
                if word is None:
                    new_beams.append(hyp)
                    continue
                new_beams.append(Hypothesis(hyp.tokens + [word], hyp.exits + [exit_stage], score,
                                            list(hyp.cache_k), list(hyp.cache_v), word in stop_ids,
                                            hyp.logits + [logits], hyp.confidences + [confidence]))
            beams = new_beams
            if all(h.done for h in beams):
                break
        return max(beams, key=lambda h: h.logprob / max(1, len(h.tokens))) if beam > 1 else beams[0]

    def search_transformers(self, start: Hypothesis, limit: int, policy: Policy, beam: int, kv: str,
                            stop_ids: tuple[int, ...], timings: dict) -> Hypothesis:
        """Beam search as `transformers`' generate() does it (num_beams, early_stopping False, length_penalty
        1): each step keeps the top max(2, 1 + stop ids) x beam continuations by summed log-probability; a
        stopping one among the top `beam` (a stop id, or the last step) is set aside as finished, scored by
        its summed log-probability over its length; the best `beam` others run on; the search ends when every
        finished slot is taken and no running beam's score over its length beats the worst of them. The best
        finished hypothesis wins. Log-probabilities are float32, as there."""
        keep = max(2, 1 + len(set(stop_ids))) * beam
        running, finished = [start], []  # finished: (score, hypothesis), the best `beam`
        for n in range(limit):
            candidates = []
            for hyp in running:
                logits, exit_stage, confidence = self.word(hyp, n, policy, kv, timings)
                z = logits.astype(np.float32)
                logp = z - z.max() - np.log(np.exp(z - z.max()).sum(dtype=np.float32))
                for w in top_k(logp, keep):
                    candidates.append((np.float32(hyp.logprob) + logp[w], hyp, int(w), exit_stage, logits,
                                       confidence))
            candidates.sort(key=lambda c: -c[0])
            next_running = []
            for rank, (score, hyp, word, exit_stage, logits, confidence) in enumerate(candidates[:keep]):
                stops = word in stop_ids or n == limit - 1
                new = Hypothesis(hyp.tokens + [word], hyp.exits + [exit_stage], float(score), list(hyp.cache_k),
                                 list(hyp.cache_v), stops, hyp.logits + [logits], hyp.confidences + [confidence])
                if stops:
                    if rank < beam:
                        finished.append((float(score) / (n + 1), new))
                elif len(next_running) < beam:
                    next_running.append(new)
            finished = sorted(finished, key=lambda f: -f[0])[:beam]
            running = next_running
            if not running or (len(finished) == beam and running[0].logprob / (n + 1) <= finished[-1][0]):
                break
        return max(finished, key=lambda f: f[0])[1] if finished else running[0]

"""The adaptive-exit controller: after each stage, stop or go on. Pure numpy, no backend.

Policies (``Policy.kind``):
- ``confidence``: stop at the first exit whose learned confidence >= ``threshold``;
- ``max_probability``: stop at the first exit whose top softmax probability >= ``threshold``;
- ``patience``: stop once the answer has been the same at ``patience`` consecutive exits;
- ``latency_budget``: stop before a stage whose expected time (the median of its last
  ``STAGE_TIME_WINDOW`` measured times) would take this query's total past ``budget_ms`` (the
  first stage always runs; a stage not yet measured does not stop it); combined with a confidence
  threshold if given;
- ``full``: run every stage.
The last exit always stops. The same decisions are pinned by shared test vectors
(``tests/vectors/controller.json``) that the Android app reuses.

Modality pruning (bundles with a ``modality_pruning`` section) is decided apart from the exit: after
the pruning stage, when the query goes on, ``should_prune`` reads the rule's signal
(``mmedge.runtime.pruning``) and says whether the remaining stages run on [CLS] + text only.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass

import numpy as np

from mmedge.errors import ConfigError
from mmedge.runtime.pruning import PruningRule, stored_rule

POLICIES = ("confidence", "max_probability", "patience", "latency_budget", "full")
STAGE_TIME_WINDOW = 64  # latency_budget: a stage's expected time is the median of its last 64 measured times


@dataclass(frozen=True)
class Policy:
    kind: str = "confidence"
    threshold: float = 0.9          # confidence / max_probability (and latency_budget if set >0)
    patience: int = 2               # patience
    budget_ms: float = 0.0          # latency_budget

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.kind, str) or self.kind not in POLICIES:
            problems.append(f"policy {self.kind!r} unknown; choose one of {list(POLICIES)}")
        if not _real(self.threshold):
            problems.append(f"threshold {self.threshold!r} must be a finite number in [0, 1], e.g. 0.9")
        elif not 0 <= self.threshold <= 1.0001:
            problems.append(f"threshold {self.threshold} must be in [0, 1]")
        if isinstance(self.patience, bool) or not isinstance(self.patience, numbers.Integral):
            problems.append(f"patience {self.patience!r} must be a whole number (int), e.g. 2")
        elif self.patience < 1:
            problems.append(f"patience {self.patience} must be at least 1")
        if not _real(self.budget_ms):
            problems.append(f"budget_ms {self.budget_ms!r} must be a finite number of milliseconds, e.g. 5.0")
        elif self.kind == "latency_budget" and self.budget_ms <= 0:
            problems.append("latency_budget needs budget_ms > 0")
        if problems:
            raise ConfigError(problems, "exit policy")

    def to_dict(self) -> dict:
        return asdict(self)


def _real(value) -> bool:
    """A finite real number, not a bool (True would read as 1) and not a string."""
    return (isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
            and math.isfinite(value))


def softmax_max(logits: np.ndarray) -> float:
    z = np.asarray(logits, dtype=np.float64).reshape(-1)
    e = np.exp(z - z.max())
    return float(e.max() / e.sum())


@dataclass
class ExitState:
    """What the controller has seen so far for one query."""

    answers: list[int]
    confidences: list[float]
    max_probabilities: list[float]
    elapsed_ms: float = 0.0


def should_stop(policy: Policy, state: ExitState, num_stages: int, next_stage_ms: float | None = None) -> bool:
    """After the exit just run (index len(state.answers) - 1): stop here?"""
    i = len(state.answers) - 1
    if i >= num_stages - 1:
        return True
    kind = policy.kind
    if kind == "full":
        return False
    if kind == "confidence":
        return state.confidences[i] >= policy.threshold
    if kind == "max_probability":
        return state.max_probabilities[i] >= policy.threshold
    if kind == "patience":
        recent = state.answers[-policy.patience:]
        return len(recent) == policy.patience and len(set(recent)) == 1
    # latency_budget: stop when the next stage would overrun; also stop early on confidence if asked
    if policy.threshold > 0 and state.confidences[i] >= policy.threshold:
        return True
    return next_stage_ms is not None and state.elapsed_ms + next_stage_ms > policy.budget_ms


def should_prune(rule: PruningRule | None, signal: float) -> bool:
    """After the pruning stage, for a query that goes on: drop the visual tokens?"""
    return rule is not None and rule.fires(signal)


def decide_offline(policy: Policy, answers, confidences, max_probabilities, stage_ms=None) -> int:
    """The exit a policy takes given every exit's outputs (for calibration and test vectors)."""
    n = len(answers)
    state = ExitState([], [], [], 0.0)
    for i in range(n):
        state.answers.append(int(answers[i]))
        state.confidences.append(float(confidences[i]))
        state.max_probabilities.append(float(max_probabilities[i]))
        if stage_ms is not None:
            state.elapsed_ms += float(stage_ms[i])
        nxt = None if stage_ms is None or i + 1 >= n else float(stage_ms[i + 1])
        if should_stop(policy, state, n, nxt):
            return i
    return n - 1


def expected_stage_ms(times) -> float | None:
    """A stage's expected time: the median of its last STAGE_TIME_WINDOW measured times (the mean of
    the two middle ones for an even count); None before it has been measured."""
    recent = list(times)[-STAGE_TIME_WINDOW:]
    return float(np.median(np.asarray(recent, dtype=np.float64))) if recent else None


def decide_with_history(policy: Policy, answers, confidences, max_probabilities, stage_ms,
                        history) -> tuple[int, list[float | None]]:
    """The exit a policy takes in a running engine: `stage_ms` are this query's measured stage times
    (their running sum is the time spent), `history[i]` the times stage i was measured before this
    query (oldest first). Returns the exit and, per decision, the next stage's expected time used."""
    n = len(answers)
    state = ExitState([], [], [], 0.0)
    used: list[float | None] = []
    for i in range(n):
        state.answers.append(int(answers[i]))
        state.confidences.append(float(confidences[i]))
        state.max_probabilities.append(float(max_probabilities[i]))
        state.elapsed_ms += float(stage_ms[i])
        nxt = expected_stage_ms(history[i + 1]) if i + 1 < n else None
        used.append(nxt)
        if should_stop(policy, state, n, nxt):
            return i, used
    return n - 1, used


def policy_from_thresholds(th: dict) -> Policy:
    """The exit policy a manifest's `thresholds` entry describes (a latency budget needs a budget
    in ms, which a manifest does not fix: it falls back to the confidence threshold)."""
    kind = th["policy"] if th["policy"] != "latency_budget" else "confidence"
    threshold = th["max_probability"] if kind == "max_probability" else th["confidence"]
    return Policy(kind, threshold=threshold, patience=th["patience"])


def standard_policies(manifest: dict) -> dict[str, tuple[Policy, float]]:
    """The four settings demo and bench compare, as (policy, keep ratio): full depth with every
    token, the calibrated keep ratio at full depth, the calibrated exit policy with every token, both."""
    th = manifest["thresholds"]
    full_ratio = max(k["keep_ratio"] for k in manifest["keep_ratios"])
    calibrated = policy_from_thresholds(th)
    return {"full depth, every token": (Policy("full"), full_ratio),
            "prefilter only": (Policy("full"), th["keep_ratio"]),
            "exits only": (calibrated, full_ratio),
            "prefilter + exits": (calibrated, th["keep_ratio"])}


def policy_rows(manifest: dict) -> dict[str, tuple[Policy, float, PruningRule | None]]:
    """What demo and bench compare, as (policy, keep ratio, modality pruning rule): the four standard
    settings without pruning, and for a bundle with text-only stages, its rule at full depth with every
    token and with the calibrated exits and keep ratio (the rule as stored, even when calibration
    turned it off, so that its effect is measured either way)."""
    rows: dict[str, tuple[Policy, float, PruningRule | None]] = {
        name: (policy, ratio, None) for name, (policy, ratio) in standard_policies(manifest).items()}
    section = manifest.get("modality_pruning")
    if section:
        rule = stored_rule(section)
        full_ratio = max(k["keep_ratio"] for k in manifest["keep_ratios"])
        rows["modality pruning only"] = (Policy("full"), full_ratio, rule)
        rows["prefilter + exits + pruning"] = (policy_from_thresholds(manifest["thresholds"]),
                                               manifest["thresholds"]["keep_ratio"], rule)
    return rows

"""Modality pruning at run time: after stage ``after_stage``, drop the visual tokens for this input when
a signal read off that stage's output says the image is no longer needed. Pure numpy, no backend.

The signal is computed from what every stage already outputs (``hidden`` and stage 0's
``attention_mask``), so the stage graphs are the same as without pruning:

- ``visual_text_norm_ratio`` (the default, chosen by measurement on the shipped model: see docs/studies/probing.md):
  the mean L2 norm of the visual tokens' hidden states divided by the mean L2 norm of the real text
  tokens' (the text mask picks them; [CLS] excluded), i.e. ``activation.visual / activation.text`` of
  ``mmedge probe`` for one input;
- ``visual_norm``: the mean L2 norm of the visual tokens' hidden states alone.

``prune_when`` says on which side of ``threshold`` the visual tokens are dropped ("below": drop when
signal <= threshold; "above": drop when signal >= threshold).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass

import numpy as np

from mmedge.errors import ConfigError

SIGNALS = ("visual_text_norm_ratio", "visual_norm")
DIRECTIONS = ("below", "above")


@dataclass(frozen=True)
class PruningRule:
    signal: str = "visual_text_norm_ratio"   # one of SIGNALS
    prune_when: str = "below"                # drop the visual tokens when the signal is below/above threshold
    threshold: float = 0.0                   # in the signal's own units (a norm ratio: about 0.3 .. 3)

    def __post_init__(self) -> None:
        problems = []
        if self.signal not in SIGNALS:
            problems.append(f"pruning signal {self.signal!r} unknown; choose one of {list(SIGNALS)}")
        if self.prune_when not in DIRECTIONS:
            problems.append(f"prune_when {self.prune_when!r} must be one of {list(DIRECTIONS)}")
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, numbers.Real) \
                or not math.isfinite(self.threshold):
            problems.append(f"pruning threshold {self.threshold!r} must be a finite number")
        if problems:
            raise ConfigError(problems, "modality pruning rule")

    def fires(self, value: float) -> bool:
        """True when the visual tokens are to be dropped for a signal `value` (NaN never fires)."""
        if not math.isfinite(value):
            return False
        return value <= self.threshold if self.prune_when == "below" else value >= self.threshold

    def fires_array(self, values: np.ndarray) -> np.ndarray:
        """fires() for many signal values at once (bool array of the same shape)."""
        v = np.asarray(values, dtype=float)
        hit = v <= self.threshold if self.prune_when == "below" else v >= self.threshold
        return hit & np.isfinite(v)

    def to_dict(self) -> dict:
        return asdict(self)


def signal_value(kind: str, hidden: np.ndarray, attention_mask: np.ndarray, num_text: int) -> float:
    """The pruning signal of one input from a stage's outputs.

    hidden (1, 1 + L + k, D): the stage's hidden output; attention_mask (1, 1 + L + k): stage 0's
    (1 = [CLS], the real text tokens and every kept visual token). NaN without visual tokens."""
    h = np.asarray(hidden, dtype=np.float64).reshape(np.shape(hidden)[-2], np.shape(hidden)[-1])  # (T, D)
    m = np.asarray(attention_mask, dtype=np.float64).reshape(-1)  # (T,)
    norms = np.linalg.norm(h, axis=-1)  # (T,)
    visual = norms[1 + num_text:]
    if visual.size == 0:
        return float("nan")
    v = float(visual.mean())
    if kind == "visual_norm":
        return v
    text_mask = m[1: 1 + num_text]
    text = float((norms[1: 1 + num_text] * text_mask).sum() / max(1.0, text_mask.sum()))
    return v / text if text > 0 else float("inf")


def rule_from_manifest(section: dict | None) -> PruningRule | None:
    """The rule a manifest's ``modality_pruning`` section describes, None when it has none or it is off."""
    if not section or not section["rule"]["enabled"]:
        return None
    return stored_rule(section)


def stored_rule(section: dict) -> PruningRule:
    """The rule stored in a ``modality_pruning`` section, whether enabled or not."""
    r = section["rule"]
    return PruningRule(r["signal"], r["prune_when"], float(r["threshold"]))

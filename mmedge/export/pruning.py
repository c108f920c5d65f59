"""Modality pruning at export: the text-only stage chain, its default threshold, its manifest section.

A pruned chain runs stages 0..A of a keep ratio, keeps the first 1 + L rows of stage A's hidden state
and of stage 0's attention mask ([CLS] + text), and runs the text-only stages A+1.. on them. Parity
compares that chain in every runtime with the same chain in PyTorch, exactly like the full chains.
"""

from __future__ import annotations

import numpy as np

from mmedge.export.stages import StageSpec
from mmedge.runtime.pruning import PruningRule, signal_value


def pruned_chain(session, specs: list[StageSpec], text_specs: list[StageSpec],
                 feeds: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Stages 0..A of one keep ratio (A = the stage before the first text-only one), then the
    text-only stages on [CLS] + text; returns each stage's outputs (one per exit)."""
    after = text_specs[0].stage - 1
    outs = [session.run(specs[0].name, feeds)]
    mask = outs[0]["attention_mask"]
    for spec in specs[1: after + 1]:
        outs.append(session.run(spec.name, {"hidden_in": outs[-1]["hidden"], "attention_mask": mask}))
    keep = text_specs[0].seq_len
    hidden, mask = outs[-1]["hidden"][:, :keep], mask[:, :keep]
    for spec in text_specs:
        outs.append(session.run(spec.name, {"hidden_in": np.ascontiguousarray(hidden),
                                            "attention_mask": np.ascontiguousarray(mask)}))
        hidden = outs[-1]["hidden"]
    return outs


def default_threshold(values: np.ndarray, agree: np.ndarray, prune_when: str, min_agreement: float) -> float:
    """The threshold that drops the visual tokens for the most samples while the final answer stays the
    full-depth one on at least `min_agreement` of all samples (pruned or not). When even the single
    most prunable sample changes its answer, a threshold that prunes none of them."""
    values, agree = np.asarray(values, dtype=float), np.asarray(agree, dtype=bool)
    order = np.argsort(values if prune_when == "below" else -values, kind="stable")
    changed = np.cumsum(~agree[order])  # answers changed when the first i + 1 samples are pruned
    ok = np.nonzero(1.0 - changed / len(values) >= min_agreement - 1e-12)[0]
    if ok.size == 0 or not np.isfinite(values[order[0]]):
        edge = float(np.nanmin(values) if prune_when == "below" else np.nanmax(values))
        return edge - 1.0 if prune_when == "below" else edge + 1.0
    last = int(ok.max())
    # stop short of a tie with the next sample: a threshold equal to its value would prune it too
    while last + 1 < len(values) and values[order[last + 1]] == values[order[last]] and last > 0:
        last -= 1
    return float(values[order[last]])


def measure_rule(session, specs: list[StageSpec], text_specs: list[StageSpec], feeds: list[dict],
                 num_text: int, signal: str, prune_when: str, threshold: float | None,
                 min_agreement: float) -> dict:
    """The rule for the manifest: per sample (at the keep ratio of `specs`) the signal after stage A and
    whether the pruned chain's final answer equals the full chain's; the default threshold from them
    unless `threshold` is given."""
    from mmedge.export.parity import run_chain

    after = text_specs[0].stage - 1
    values, agree = [], []
    for feed in feeds:
        full = run_chain(session, specs, feed)
        pruned = pruned_chain(session, specs, text_specs, feed)
        values.append(signal_value(signal, full[after]["hidden"], full[0]["attention_mask"], num_text))
        agree.append(int(np.argmax(full[-1]["logits"])) == int(np.argmax(pruned[-1]["logits"])))
    values_a, agree_a = np.asarray(values), np.asarray(agree)
    source = "recipe" if threshold is not None else "export"
    if threshold is None:
        threshold = default_threshold(values_a, agree_a, prune_when, min_agreement)
    rule = PruningRule(signal, prune_when, float(threshold))
    fired = np.array([rule.fires(v) for v in values_a])
    return {**rule.to_dict(), "enabled": True, "source": source,
            "measured": {"split": "val", "samples": len(feeds), "keep_ratio": specs[0].keep_ratio,
                         "pruned_share": float(fired.mean()),
                         "final_answer_agreement": float(1.0 - (fired & ~agree_a).sum() / len(feeds)),
                         "min_agreement": min_agreement}}


def section(model, after: int, text_specs: list[StageSpec], io: dict, text_flops: list[int],
            flops: dict[float, list[int]], rule: dict) -> dict:
    """The manifest's ``modality_pruning`` section."""
    stages = [{"name": s.name, "stage": s.stage, "layers": list(model.stage_layers(s.stage)), **io[s.name],
               "flops": int(f)} for s, f in zip(text_specs, text_flops)]
    exit_flops = [{"keep_ratio": r, "exit_flops": np.cumsum(list(f[: after + 1]) + list(text_flops)).astype(int).tolist()}
                  for r, f in flops.items()]
    return {"after_stage": after, "seq_len": text_specs[0].seq_len, "stages": stages, "exit_flops": exit_flops,
            "rule": rule}

"""Parity of an exported artifact against the PyTorch reference, on real samples.

Both run the same chain a runtime runs: stage 0 on the preprocessed inputs, then each later
stage on the previous stage's hidden state. Compared per stage: max abs error of logits, max
relative error of hidden states (where both kept the same visual tokens), agreement of kept
tokens, of answers at every exit and of the exit taken at the default threshold.
"""

from __future__ import annotations

import numpy as np

from mmedge.data.batches import Batch
from mmedge.export.recipe import Tolerances
from mmedge.export.stages import StageSpec


def stage0_feeds(batch: Batch) -> list[dict[str, np.ndarray]]:
    """Per sample, the batch-1 inputs of stage 0 with the exported dtypes."""
    return [{"pixel_values": batch.pixels[i: i + 1].astype(np.float32),
             "input_ids": batch.input_ids[i: i + 1].astype(np.int32),
             "text_mask": batch.text_mask[i: i + 1].astype(np.int32)} for i in range(len(batch))]


def run_chain(session, specs: list[StageSpec], feeds: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Every stage of one keep ratio in order; returns each stage's outputs."""
    outs = [session.run(specs[0].name, feeds)]
    mask = outs[0]["attention_mask"]
    for spec in specs[1:]:
        outs.append(session.run(spec.name, {"hidden_in": outs[-1]["hidden"], "attention_mask": mask}))
    return outs


def exit_taken(chain: list[dict[str, np.ndarray]], threshold: float) -> int:
    """The first exit whose learned confidence reaches `threshold` (the last exit otherwise)."""
    for i, out in enumerate(chain):
        if float(np.asarray(out["confidence"]).reshape(-1)[0]) >= threshold:
            return i
    return len(chain) - 1


def compare(reference: list[list[dict]], got: list[list[dict]], threshold: float, tol: Tolerances,
            tie_margin: float = 1e-4) -> dict:
    """Parity metrics over samples; `passed` says whether they are within `tol`.

    A decision whose reference margin is below `tie_margin` (top-2 logits, or confidence to the
    threshold) is a tie: reported, but not counted as a disagreement."""
    n_stages = len(reference[0])
    per_stage = []
    for s in range(n_stages):
        logit_err, hidden_err, agree, ties, kept_same = 0.0, 0.0, 0, 0, 0
        for ref_chain, got_chain in zip(reference, got):
            r, g = ref_chain[s], got_chain[s]
            ref_kept, got_kept = np.asarray(ref_chain[0]["kept_index"]), np.asarray(got_chain[0]["kept_index"])
            kept_same += bool(np.array_equal(np.sort(ref_kept, axis=-1), np.sort(got_kept, axis=-1)))
            same_tokens = bool(np.array_equal(ref_kept, got_kept))  # same tokens in the same order
            logit_err = max(logit_err, float(np.abs(g["logits"] - r["logits"]).max()))
            if same_tokens:
                scale = max(1.0, float(np.abs(r["hidden"]).max()))
                hidden_err = max(hidden_err, float(np.abs(g["hidden"] - r["hidden"]).max()) / scale)
            top2 = np.sort(r["logits"].reshape(-1))[-2:]
            same = int(np.argmax(r["logits"])) == int(np.argmax(g["logits"]))
            tie = bool((top2[1] - top2[0]) < tie_margin)
            agree += int(same or tie)
            ties += int(tie and not same)
        n = len(reference)
        per_stage.append({"stage": s, "logits_max_abs_err": logit_err, "hidden_max_rel_err": hidden_err,
                          "answer_agreement": agree / n, "answer_ties": ties, "kept_tokens_agreement": kept_same / n})
    exits_agree = 0
    for ref_chain, got_chain in zip(reference, got):
        e_ref, e_got = exit_taken(ref_chain, threshold), exit_taken(got_chain, threshold)
        near = any(abs(float(np.asarray(o["confidence"]).reshape(-1)[0]) - threshold) < tie_margin
                   for o in ref_chain[: max(e_ref, e_got) + 1])
        exits_agree += int((e_ref == e_got) or near)
    exit_agreement = exits_agree / len(reference)
    failures = []
    for row in per_stage:
        if row["logits_max_abs_err"] > tol.logits_abs:
            failures.append(f"stage {row['stage']}: logits error {row['logits_max_abs_err']:.3g} > {tol.logits_abs:g}")
        if row["hidden_max_rel_err"] > tol.hidden_rel:
            failures.append(f"stage {row['stage']}: hidden error {row['hidden_max_rel_err']:.3g} > {tol.hidden_rel:g}")
        if row["answer_agreement"] < tol.min_answer_agreement:
            failures.append(f"stage {row['stage']}: answer agreement {row['answer_agreement']:.3f} "
                            f"< {tol.min_answer_agreement:g}")
    if exit_agreement < tol.min_exit_agreement:
        failures.append(f"exit agreement at threshold {threshold:g}: {exit_agreement:.3f} < {tol.min_exit_agreement:g}")
    return {"samples": len(reference), "stages": per_stage, "exit_agreement": exit_agreement,
            "threshold": threshold, "passed": not failures, "failures": failures}


def accuracy(session, specs: list[StageSpec], feeds: list[dict], labels: np.ndarray, threshold: float) -> dict:
    """Final-exit and adaptive (learned-confidence threshold) accuracy over samples."""
    final, adaptive, exits = 0, 0, []
    for feed, label in zip(feeds, labels):
        chain = run_chain(session, specs, feed)
        final += int(int(np.argmax(chain[-1]["logits"])) == int(label))
        e = exit_taken(chain, threshold)
        exits.append(e)
        adaptive += int(int(np.argmax(chain[e]["logits"])) == int(label))
    n = len(feeds)
    return {"samples": n, "final_exit_accuracy": final / n, "adaptive_accuracy": adaptive / n,
            "mean_exit": float(np.mean(exits)), "threshold": threshold}


def artifact_failures(artifacts: list[dict]) -> list[str]:
    """Every parity failure a graph bundle's artifacts record, as "runtime/precision keep r: failure"
    (artifacts whose parity was not run, Core ML off macOS, have none)."""
    return [f"{a['runtime']}/{a['precision']} keep {r}: {f}" for a in artifacts
            if a["parity"]["status"] == "measured" for r, p in a["parity"]["by_keep_ratio"].items()
            for f in p["failures"]]

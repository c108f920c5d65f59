"""Calibration: pick the cheapest exit policy and keep ratio whose accuracy stays within a chosen
drop of full depth with every token, on the validation split; write it into the manifest.

Cost is the expected FLOPs per query (the manifest's per-exit FLOPs, counted by
torch.utils.flop_counter at export). The accuracy bound is checked conservatively: the paired
per-sample drop against full depth must stay within ``max_drop`` at its one-sided upper
confidence limit (mean + z * standard error, z = 1.645 for 95%), so that it holds on unseen data
too, not only on the samples it was chosen on.

A bundle with text-only stages (modality pruning) adds the pruning rule's threshold to the search:
for every policy and keep ratio, "no pruning" and thresholds at the 5th, 10th, .. 100th percentile of
the rule's signal on the calibration samples. A query whose signal fires follows the pruned path
(its exits after the pruning stage come from the text-only stages, at their FLOPs); the chosen
threshold, or "off" when the cheapest option within the bound does not prune, is written into the
manifest's ``modality_pruning.rule``.

What "correct" means (``labels``): "data", the data's own answers (an answer outside the bundle's
labels is always wrong), or "teacher", the bundle's own full-depth answer with every token (the
reference is then right by definition, and the bound is on disagreement with it: what self-distilled
exits of a model adapted by `mmedge adapt` are trained for, and what needs no labelled data).
A bundle of an adapted model draws its queries as `mmedge eval` does (mmedge.adapt.data: the raw
images, prepared by the bundle's own preparation; two per query for NLVR2).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from mmedge.bundle.manifest import load_manifest, write_manifest
from mmedge.bundle.publish import next_release
from mmedge.data.batches import generate
from mmedge.errors import ConfigError
from mmedge.runtime.controller import Policy, decide_offline
from mmedge.runtime.engine import Engine
from mmedge.runtime.pruning import PruningRule, stored_rule

# Fewer samples than this and the normal approximation behind the upper limit (mean + z standard
# errors of a mean of 0/1 differences) is not trustworthy: one sample's error moves the drop by more
# than the usual bound (0.01). 100 is the least calibration accepts; the default is 1,000.
MIN_SAMPLES = 100
LABELS = ("data", "teacher")  # what calibration counts as correct (module docstring)

THRESHOLDS = tuple(np.round(np.concatenate([np.arange(0.5, 0.9, 0.05), np.arange(0.9, 1.0, 0.01),
                                            [0.995, 0.999, 1.0001]]), 4).tolist())


PRUNING_QUANTILES = tuple(np.round(np.arange(0.05, 1.0001, 0.05), 2).tolist())


@dataclass
class PrunedTable:
    """The modality-pruned path of n samples at one keep ratio: the same exits as the full path up to
    the pruning stage, the text-only stages' after it."""

    rule: PruningRule        # signal kind and direction (its threshold is the one searched over)
    signal: np.ndarray       # (n,) the rule's signal after the pruning stage
    answers: np.ndarray      # (n, E)
    confidence: np.ndarray   # (n, E)
    max_prob: np.ndarray     # (n, E)
    exit_flops: list[int]    # cumulative FLOPs per exit on the pruned path


@dataclass
class ExitTable:
    """Full-depth outputs of n samples at one keep ratio."""

    keep_ratio: float
    answers: np.ndarray      # (n, E)
    confidence: np.ndarray   # (n, E)
    max_prob: np.ndarray     # (n, E)
    exit_flops: list[int]    # cumulative FLOPs per exit
    pruned: PrunedTable | None = None


def _queries(engine: Engine, split: str, n: int, data_seed: int, data: str) -> tuple[list, np.ndarray]:
    """(image, text) pairs and labels of n queries: generated scenes, or a real dataset's validation
    records (`data` NAME:ROOT; an answer outside the bundle's labels is labelled -1: always wrong).
    A bundle of an adapted model: its images as its own preparation reads them (mmedge.adapt.data)."""
    from mmedge.adapt.data import bundle_adapt_config, bundle_queries

    if bundle_adapt_config(engine.manifest) is not None:
        if data == "scenes":
            return bundle_queries(engine.manifest, data, split, n, data_seed)
        from mmedge.data.provider import VAL_SPLIT
        from mmedge.data.sources import parse_data_spec

        name = parse_data_spec(data).name
        return bundle_queries(engine.manifest, data, VAL_SPLIT.get(name, "val") if split == "val" else split, n,
                              data_seed)
    task = engine.manifest["task"]
    if data == "scenes":
        samples = generate(task, data_seed, split, range(n), engine.image_size)
        return [(s.image, s.text) for s in samples], np.array([s.label for s in samples])
    from mmedge.data.provider import VAL_SPLIT, label_ids
    from mmedge.data.sources import open_dataset, parse_data_spec

    spec = parse_data_spec(data)
    dataset = open_dataset(spec, task, VAL_SPLIT.get(spec.name, "val"), engine.image_size, limit=n, progress=False)
    labels = engine.manifest["labels"]
    return ([(dataset.image(i), r.text) for i, r in enumerate(dataset.records)],
            np.array(label_ids(labels, [r.answer for r in dataset.records])))


def collect(engine: Engine, split: str, n: int, data_seed: int = 0, progress: bool = True, data: str = "scenes"
            ) -> tuple[np.ndarray, dict[float, ExitTable]]:
    """Labels (n,) and every exit's outputs at every exported keep ratio."""
    queries, labels = _queries(engine, split, n, data_seed, data)
    n = len(queries)
    tables = {}
    ratios = [k["keep_ratio"] for k in engine.manifest["keep_ratios"]]
    bar = tqdm(total=n * len(ratios), desc=f"calibrate ({split})", disable=not progress, unit="query")
    feeds = [engine.preprocess(image, text) for image, text in queries]
    for ratio in ratios:
        rows = []
        for feed in feeds:
            rows.append(engine.all_exits(feed, ratio))
            bar.update()
        tables[ratio] = ExitTable(ratio, np.array([r.answers for r in rows]), np.array([r.confidences for r in rows]),
                                  np.array([r.max_probabilities for r in rows]), engine.exit_flops(ratio),
                                  _pruned_table(engine, ratio, rows))
    bar.close()
    return labels, tables


def _pruned_table(engine: Engine, ratio: float, rows) -> PrunedTable | None:
    if engine.pruning_section is None:
        return None
    after = engine.pruning_section["after_stage"]

    def path(full: list, text: list) -> list:
        return list(full[: after + 1]) + list(text)

    return PrunedTable(stored_rule(engine.pruning_section), np.array([r.pruned.signal for r in rows]),
                       np.array([path(r.answers, r.pruned.answers) for r in rows]),
                       np.array([path(r.confidences, r.pruned.confidences) for r in rows]),
                       np.array([path(r.max_probabilities, r.pruned.max_probabilities) for r in rows]),
                       engine.exit_flops(ratio, pruned=True))


def pruning_candidates(table: ExitTable) -> list[PruningRule | None]:
    """None (no pruning) and the rule at each PRUNING_QUANTILES quantile of its signal."""
    if table.pruned is None:
        return [None]
    rule, signal = table.pruned.rule, table.pruned.signal[np.isfinite(table.pruned.signal)]
    if signal.size == 0:
        return [None]
    qs = PRUNING_QUANTILES if rule.prune_when == "below" else tuple(1.0 - q for q in PRUNING_QUANTILES)
    values = sorted({float(np.quantile(signal, q)) for q in qs})
    return [None] + [PruningRule(rule.signal, rule.prune_when, v) for v in values]


def candidates(num_exits: int) -> list[Policy]:
    out = [Policy("full")]
    out += [Policy("confidence", threshold=t) for t in THRESHOLDS]
    out += [Policy("max_probability", threshold=t) for t in THRESHOLDS]
    out += [Policy("patience", patience=p) for p in range(2, num_exits + 1)]
    return out


def exits_taken(policy: Policy, answers: np.ndarray, confidence: np.ndarray, max_prob: np.ndarray) -> np.ndarray:
    """(n,) the exit `policy` takes for each row: vectorised for full / confidence / max_probability (the
    same rule as controller.should_stop: the first exit whose value reaches the threshold, else the last),
    decide_offline row by row otherwise."""
    n, e = answers.shape
    if policy.kind == "full":
        return np.full(n, e - 1)
    if policy.kind in ("confidence", "max_probability"):
        hit = (confidence if policy.kind == "confidence" else max_prob) >= policy.threshold  # (n, E)
        hit[:, -1] = True  # the last exit always stops
        return hit.argmax(1)
    return np.array([decide_offline(policy, answers[i], confidence[i], max_prob[i]) for i in range(n)])


def evaluate_policy(policy: Policy, table: ExitTable, labels: np.ndarray,
                    rule: PruningRule | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(correct (n,), flops (n,)) of a policy on a table; with a modality pruning `rule`, the samples
    whose signal fires follow the pruned path."""
    answers, conf, maxp = table.answers, table.confidence, table.max_prob
    flops = np.broadcast_to(np.asarray(table.exit_flops), answers.shape)
    if rule is not None:
        if table.pruned is None:
            raise ConfigError("a pruning rule needs a table with the pruned path (a bundle with text-only stages)",
                              "calibration arguments")
        pr = table.pruned
        fires = rule.fires_array(pr.signal)[:, None]  # (n, 1)
        answers, conf, maxp = (np.where(fires, a, b) for a, b in ((pr.answers, answers), (pr.confidence, conf),
                                                                  (pr.max_prob, maxp)))
        flops = np.where(fires, np.asarray(pr.exit_flops)[None, :], flops)
    exits = exits_taken(policy, answers, conf, maxp)
    rows = np.arange(len(labels))
    return answers[rows, exits] == labels, flops[rows, exits]


def check_arguments(max_drop, z, samples, labels: str = "data") -> None:
    """Refuse a bound that means nothing, before any work: max_drop a finite number in [0, 1), z a
    finite number >= 0, samples a whole number >= MIN_SAMPLES, labels one of LABELS."""
    problems = []
    if labels not in LABELS:
        problems.append(f"labels {labels!r} must be one of {', '.join(LABELS)} (the data's answers, or the bundle's "
                        "own full-depth answers)")
    if not _real(max_drop) or not 0 <= max_drop < 1:
        problems.append(f"max drop {max_drop!r} must be a number in [0, 1), e.g. 0.01 for one point of accuracy")
    if not _real(z) or z < 0:
        problems.append(f"z {z!r} must be a finite number >= 0 (sigmas of the upper limit; 1.645 for 95%)")
    if isinstance(samples, bool) or not isinstance(samples, numbers.Integral) or samples < MIN_SAMPLES:
        problems.append(f"samples {samples!r}: calibration needs at least {MIN_SAMPLES} samples for its "
                        f"accuracy bound to mean anything (default 1000); use --samples {MIN_SAMPLES} or more")
    if problems:
        raise ConfigError(problems, "calibration arguments")


def _real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def choose(labels: np.ndarray, tables: dict[float, ExitTable], max_drop: float, z: float = 1.645) -> dict:
    """The cheapest (policy, keep ratio) within the bound; the table of every option's best."""
    check_arguments(max_drop, z, len(labels))
    full_ratio = max(tables)
    reference, ref_flops = evaluate_policy(Policy("full"), tables[full_ratio], labels)
    n = len(labels)
    best, rows = None, []
    for ratio, table in sorted(tables.items(), reverse=True):
        for rule in pruning_candidates(table):
            fired = None if rule is None else float(rule.fires_array(table.pruned.signal).mean())
            for policy in candidates(table.answers.shape[1]):
                correct, flops = evaluate_policy(policy, table, labels, rule)
                diff = reference.astype(float) - correct.astype(float)  # per-sample drop
                upper = diff.mean() + z * diff.std(ddof=1) / np.sqrt(n)
                row = {"keep_ratio": ratio, "policy": policy.to_dict(), "accuracy": float(correct.mean()),
                       "drop": float(diff.mean()), "drop_upper": float(upper), "mean_flops": float(flops.mean()),
                       "flops_ratio": float(flops.mean() / ref_flops.mean()), "within_bound": bool(upper <= max_drop),
                       "pruning": None if rule is None else {**rule.to_dict(), "fires_share": fired}}
                rows.append(row)
                if row["within_bound"] and (best is None or row["mean_flops"] < best["mean_flops"]):
                    best = row
    summary = {}
    for row in rows:  # the best row per (keep ratio, policy kind, pruning or not), for the printed table
        key = (row["keep_ratio"], row["policy"]["kind"], row["pruning"] is not None)
        cur = summary.get(key)
        if row["within_bound"] and (cur is None or row["mean_flops"] < cur["mean_flops"]):
            summary[key] = row
    return {"reference_accuracy": float(reference.mean()), "reference_flops": float(ref_flops.mean()),
            "samples": n, "max_drop": max_drop, "z": z, "chosen": best,
            "table": sorted(summary.values(), key=lambda r: r["mean_flops"])}


def calibrate(bundle, max_drop: float = 0.01, samples: int = 1000, split: str = "val", data_seed: int = 0,
              backend: str = "auto", z: float = 1.645, progress: bool = True, write: bool = True,
              sign_key=None, data: str = "scenes", labels: str = "data") -> dict:
    """Calibrate a bundle's thresholds; with write, store them in its manifest atomically. Rewriting
    the manifest removes its signature (result["signature"] says so) unless `sign_key` re-signs it.
    labels: "data" (the data's answers) or "teacher" (the bundle's own full-depth answers; module docstring)."""
    check_arguments(max_drop, z, samples, labels)
    if isinstance(data_seed, bool) or not isinstance(data_seed, numbers.Integral) or data_seed < 0:
        raise ConfigError(f"data seed {data_seed!r} must be a whole number >= 0", "calibration arguments")
    if data != "scenes":
        from mmedge.data.sources import parse_data_spec
        from mmedge.errors import DatasetError

        try:
            parse_data_spec(data)  # before loading anything
        except DatasetError as exc:
            raise ConfigError(str(exc), "calibration arguments") from None
    if sign_key is not None:
        from mmedge.bundle.signing import load_private_key

        sign_key = load_private_key(sign_key)  # a bad key fails now, not after the collection
    engine = Engine.load(bundle, backend=backend)
    if write:
        _check_writable(engine.root, engine.manifest, hashes=False)  # before the collection too (hashed on load)
    answers, tables = collect(engine, split, samples, data_seed, progress, data)
    if len(answers) < MIN_SAMPLES:
        raise ConfigError(f"{data}: only {len(answers)} usable validation records; calibration needs at least "
                          f"{MIN_SAMPLES}", "calibration data")
    if labels == "teacher":  # the full-depth answer with every token: the reference itself
        answers = tables[max(tables)].answers[:, -1].copy()
    elif int((answers >= 0).sum()) < MIN_SAMPLES:
        raise ConfigError(f"{data}: only {int((answers >= 0).sum())} of {len(answers)} validation answers are among "
                          f"the bundle's {len(engine.labels)} labels, too few for the accuracy bound to mean anything "
                          f"(at least {MIN_SAMPLES}); calibrate against the bundle's own full-depth answers with "
                          "--labels teacher, or on the data the model was trained for", "calibration data")
    result = choose(answers, tables, max_drop, z)
    result.update(split=split, backend=engine.backend, data=data.split(":")[0], labels=labels)
    if write and result["chosen"] is not None:
        manifest = _check_writable(engine.root, engine.manifest)
        chosen = result["chosen"]
        policy = chosen["policy"]
        thresholds = dict(manifest["thresholds"])
        thresholds.update(source="calibrated", policy=policy["kind"], keep_ratio=chosen["keep_ratio"],
                          patience=policy["patience"])
        if policy["kind"] in ("confidence", "max_probability"):
            thresholds[policy["kind"]] = policy["threshold"]
        thresholds["calibration"] = {k: result[k] for k in ("split", "samples", "max_drop", "z", "backend", "labels",
                                                             "reference_accuracy", "reference_flops", "chosen")}
        manifest["thresholds"] = thresholds
        if "modality_pruning" in manifest:  # the rule is on exactly when the chosen option prunes
            rule = dict(manifest["modality_pruning"]["rule"])
            pruning = chosen.get("pruning")
            rule.update(source="calibrated", enabled=pruning is not None,
                        calibration={"split": split, "samples": result["samples"], "max_drop": max_drop,
                                     "chosen_fires_share": None if pruning is None else pruning["fires_share"]})
            if pruning is not None:
                rule["threshold"] = pruning["threshold"]
            manifest["modality_pruning"]["rule"] = rule
        manifest["release"] = next_release(manifest)  # the same name, a higher sequence: an app can refuse the old one
        removed = write_manifest(engine.root, manifest)  # `files` as loaded and verified, never re-hashed
        result["signature"] = "removed" if removed else "none"
        if sign_key is not None:
            from mmedge.bundle.signing import sign_bundle

            sign_bundle(engine.root, sign_key)
            result["signature"] = "signed"
    return result


def _check_writable(root, loaded: dict, hashes: bool = True) -> dict:
    """The bundle's manifest, re-read and checked as on load, when it is still the one calibrated;
    else BundleError. A manifest.sig that is not a regular file is refused before anything is written."""
    import os
    import stat

    from mmedge.bundle.signing import SIGNATURE_FILE
    from mmedge.errors import BundleError

    signature = root / SIGNATURE_FILE
    if os.path.lexists(signature) and not stat.S_ISREG(os.lstat(signature).st_mode):
        raise BundleError(f"{signature} is not a regular file (a folder or link); remove it, then calibrate again",
                          code="signature-malformed")
    # every check of loading: nothing unlisted (file, folder, link); with `hashes`, every listed file's SHA-256
    manifest = load_manifest(root, verify_files=hashes)
    if manifest != loaded:
        raise BundleError(f"{root}/manifest.json changed while calibrating; nothing was written. Calibrate again")
    return manifest


def format_table(result: dict) -> str:
    from tabulate import tabulate

    rows = [[r["keep_ratio"], r["policy"]["kind"], _param(r["policy"]), _pruning(r.get("pruning")),
             f"{r['accuracy']:.3f}", f"{r['drop']:+.3f}", f"{r['drop_upper']:+.3f}", f"{r['mean_flops'] / 1e6:.1f}",
             f"{r['flops_ratio']:.2f}"] for r in result["table"]]
    chosen = result["chosen"]
    against = " (against its own full-depth answers)" if result.get("labels") == "teacher" else ""
    head = (f"full depth, every token{against}: accuracy {result['reference_accuracy']:.3f} at "
            f"{result['reference_flops'] / 1e6:.1f} MFLOPs ({result['samples']} {result['split']} samples, "
            f"backend {result['backend']}); allowed drop {result['max_drop']} at the {result['z']}-sigma upper limit")
    table = tabulate(rows, ["keep", "policy", "setting", "modality pruning", "accuracy", "drop", "drop upper",
                            "MFLOPs", "cost"], tablefmt="github")
    pick = ("chosen: none within the bound (thresholds left unchanged)" if chosen is None else
            f"chosen: keep {chosen['keep_ratio']}, {chosen['policy']['kind']} {_param(chosen['policy'])}, "
            f"modality pruning {_pruning(chosen.get('pruning'))}: "
            f"accuracy {chosen['accuracy']:.3f}, {chosen['flops_ratio']:.2f} x the full-depth FLOPs")
    return f"{head}\n\n{table}\n\n{pick}"


def _pruning(pruning: dict | None) -> str:
    if pruning is None:
        return "off"
    return (f"{pruning['signal']} {'<=' if pruning['prune_when'] == 'below' else '>='} {pruning['threshold']:.4g} "
            f"({pruning['fires_share']:.0%} fire)")


def _param(policy: dict) -> str:
    if policy["kind"] in ("confidence", "max_probability"):
        return f"threshold {policy['threshold']:g}"
    if policy["kind"] == "patience":
        return f"patience {policy['patience']}"
    return "-"


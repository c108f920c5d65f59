"""Blocks of the study pages, built from the committed results in benchmarks/results/ (and the
shipped models' eval files) when the site is built, so that a page never disagrees with its data.

Every block is a function of the repository root returning Markdown; `BLOCKS` names them for the
`<!-- gen: NAME -->` markers of the pages (see markers.py). A block reads only committed files.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

RESULTS = "benchmarks/results"


# ----------------------------------------------------------------------------- helpers
def load(root: Path, rel: str) -> dict:
    return json.loads((root / rel).read_text(encoding="utf-8"))


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def f3(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def f2(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def pct(x) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def times(x) -> str:
    return "-" if x is None else f"{x:.2f}x"


def source(*paths: str) -> str:
    files = ", ".join(f"`{p}`" for p in paths)
    return f"*Generated from {files} when the site is built.*"


# "(issue #16)", "(issue 12)", "issue #19's ": references to the tracker that wrote a report
ISSUE_REF = re.compile(r"^\(issues? #?\d+\)\s*|\s*\(issues? #?\d+\)|\bissues? #?\d+'s\s+", re.I)


def clean_report(text: str, demote: int = 2) -> str:
    """A committed Markdown report made fit for a page: headings moved down `demote` levels, issue
    references dropped (they mean nothing to a reader of the site)."""
    out = []
    for line in text.splitlines():
        line = ISSUE_REF.sub("", line) if not line.startswith("| (") else "| " + ISSUE_REF.sub("", line[2:])
        if line.startswith("#"):
            line = "#" * demote + line
        out.append(line)
    return "\n".join(out).strip()


# ----------------------------------------------------------------------------- pretraining
PRE = f"{RESULTS}/pretraining/pretraining_efficiency.json"
ARM_NAMES = {"floor": "none (floor)", "rwd-rod": "rwd-rod, every fix", "mlm-mop": "mlm-mop",
             "mlm-rod": "mlm-rod (cross)", "rwd-mop": "rwd-mop (cross)"}


def _budgets(arms: dict) -> list[int]:
    return sorted({int(k.rsplit("/ft", 1)[1]) for k in arms if "/ft" in k})


def pretraining_status(root: Path) -> str:
    d = load(root, PRE)
    plan = d["plan"]
    budgets = _budgets(d["analysis"]["arms"])
    text = (f"Encoder {plan['model']['dim']} wide, {plan['model']['depth']} layers, "
            f"{plan['model']['image_size']} px images; {plan['pretrain_steps']} pretraining steps x "
            f"{plan['batch_size']} pairs; fine-tuned {plan['finetune_steps']} steps (short budget) and "
            f"{plan['long_finetune_steps']} steps (long budget) on VQA and verification; accuracy on "
            f"{plan['eval_samples']:,} validation samples; seeds {', '.join(map(str, plan['main_seeds']))} "
            f"for the main arms. Budgets in the committed results: "
            f"{', '.join(f'{b} steps' for b in budgets) or 'none'}.")
    if d.get("pending"):
        text += ("\n\n!!! warning \"The committed results are incomplete\"\n"
                 f"    The committed JSON lists these groups as not finished: {', '.join(d['pending'])}. "
                 "Tables below show what it holds; `python benchmarks/pretraining_efficiency.py "
                 "--report-only` rewrites the report from the committed unit ledger.")
    return text + "\n\n" + source(PRE)


def pretraining_arms(root: Path) -> str:
    d = load(root, PRE)
    arms = d["analysis"]["arms"]
    parts = []
    for budget in _budgets(arms):
        rows = []
        for arm, name in ARM_NAMES.items():
            cells = []
            for task in ("vqa", "verify"):
                a = arms.get(f"{arm}/{task}/ft{budget}")
                cells.append("-" if a is None else f"{a['mean']:.3f} [{a['low']:.3f}, {a['high']:.3f}] (n={a['n']})")
            if any(c != "-" for c in cells):
                rows.append([name, *cells])
        parts.append(f"**Fine-tuned {budget} steps** (mean and 95% t-interval over pretraining seeds):\n\n"
                     + table(["pretraining", "VQA", "verification"], rows))
    parts.append(pretraining_targets(d))
    st = d["collected"].get("steptime", {}).get("seconds_per_step", {})
    if st:
        parts.append("Step time, the arms interleaved in one process (median seconds per step): "
                     + ", ".join(f"{k} {v['median']:.2f}" for k, v in st.items()) + ".")
    return "\n\n".join(p for p in parts if p) + "\n\n" + source(PRE)


def pretraining_targets(d: dict) -> str:
    """Targets, the pretraining FLOPs each arm needs to reach them on the seeds' mean curve, and the
    ratio the proposal was judged by."""
    a = d["analysis"]
    targets = {k: v for k, v in (a.get("targets") or {}).items() if v is not None}
    if not targets:
        return ""
    rows = []
    for key, m in a.get("mean_curve", {}).items():
        arm, task = key.split("/")
        if task not in targets:
            continue
        reached = (f"{m['pretrain_flops'] / 1e12:.1f} TFLOPs ({m['seconds_interleaved']:.0f} s at the interleaved "
                   f"step time)" if m.get("pretrain_flops") else "not reached")
        rows.append([arm, task, f"{targets[task]:.3f}", m["seeds"], reached, f"{m['budget_flops'] / 1e12:.1f}"])
    text = ("Targets: halfway from the mean floor to the best pretrained accuracy at the short budget. "
            "Pretraining FLOPs to reach them on the seeds' mean curve:\n\n"
            + table(["arm", "task", "target", "seeds", "to the target", "TFLOPs given"], rows))
    ratios = []
    for task, r in (a.get("mean_curve_ratio") or {}).items():
        if r.get("pretrain_flops") is not None:
            ratios.append(f"{task} {r['pretrain_flops']:.2f}x")
        elif r.get("flops_upper_bound") is not None:
            ratios.append(f"{task} below {r['flops_upper_bound']:.2f}x (rwd-rod never reaches the target)")
    if ratios:
        text += ("\n\nRatio mlm-mop / rwd-rod of the FLOPs to the target (above 1: rwd-rod needs fewer; the "
                 "proposal's claim was >= 3x): " + "; ".join(ratios) + ".")
    return text


def pretraining_runs(root: Path) -> str:
    d = load(root, PRE)
    rows = []
    for run, curve in d["collected"]["curves"].items():
        last = curve["points"][-1]
        dg = last.get("diagnostics", {})
        fts = sorted(k for k in last if re.fullmatch(r"(vqa|verify)_ft\d+", k))
        acc = ", ".join(f"{k.replace('_ft', ' @')}: {last[k]['accuracy']:.3f}" for k in fts) or "-"
        rows.append([run, f"{last['pretrain_flops'] / 1e12:.2f}", acc,
                     f"{f3(dg.get('rwd_auc_true_image'))} / {f3(dg.get('rwd_auc_shuffled_image'))}",
                     f"{f2(dg.get('rod_p_replaced_class_changed'))} / {f2(dg.get('rod_p_replaced_same_class'))}",
                     f2(dg.get("itm_acc"))])
    return (table(["run", "pretraining TFLOPs", "accuracy after fine-tuning (task @ steps)",
                   "replaced-word AUC, true / shuffled image", "P(replaced): class changed / same-class decoy",
                   "ITM acc"], rows)
            + "\n\n" + source(PRE))


# ----------------------------------------------------------------------------- attention
ATT = f"{RESULTS}/attention/attention_efficiency.json"
ATT64 = f"{RESULTS}/attention/dim64/attention_efficiency.json"


def _attention_rows(d: dict) -> list[list]:
    rows = []
    for key, r in d["rows"].items():
        cell = d["cells"][key]["train"]
        rows.append([r["variant"], r["visual_tokens"], f"{cell['inference_flops_per_sample'] / 1e6:.0f}",
                     times(r["step_speedup_vs_full"]), times(r["flops_ratio_vs_full"]),
                     times(r["onnxruntime_speedup_vs_full"]), times(r["executorch_speedup_vs_full"]),
                     f"{cell['peak_rss_mb'] / 1024:.1f}", f"{r['acc_equal_wall']:.3f}"
                     + ("" if r["equal_wall_reached"] else " (cap)")])
    return rows


def attention_summary(root: Path) -> str:
    parts = []
    for rel in (ATT, ATT64):
        d = load(root, rel)
        m = d["plan"]["model"]
        goal = d.get("goal", {})
        met = "; ".join(f"`{v}`: train step {'yes' if g['train_step_2x'] else 'no'}, onnxruntime "
                        f"{'yes' if g['onnxruntime_2x'] else 'no'}, ExecuTorch {'yes' if g['executorch_2x'] else 'no'}, "
                        f"within a point at equal wall-clock {'yes' if g['within_1_point_equal_wall'] else 'no'}"
                        for v, g in goal.items())
        parts.append(f"**Width {m['dim']}, {m['depth']} layers, {m['num_heads']} heads** (`{d['command']}`); "
                     "speed-ups are ratios of medians against `full` at the same token count, exported "
                     "latency at batch 1 on one thread:\n\n"
                     + table(["variant", "visual tokens", "inference MFLOPs", "train step", "FLOPs",
                              "onnxruntime", "ExecuTorch", "peak training RSS GB",
                              "val accuracy at equal wall-clock"], _attention_rows(d))
                     + (f"\n\nThe 2x goal at {next(iter(goal.values()))['visual_tokens']} tokens: {met}."
                        if goal else ""))
    return "\n\n".join(parts) + "\n\n" + source(ATT, ATT64)


# ----------------------------------------------------------------------------- probing
PROBE = f"{RESULTS}/probe/vqa-default.json"


def probe_layers(root: Path) -> str:
    d = load(root, PROBE)
    o = d["overall"]
    act, att, abl = o["activation"], o["attention"], o["ablation"]
    rows = []
    depth = d["settings"]["depth"]
    for i in range(depth + 1):
        name = "embedding" if i == 0 else (f"{i} (intact)" if i == depth else str(i))
        t2v = att["text_to_visual"]["mean"][i - 1] if i else None
        v2t = att["visual_to_text"]["mean"][i - 1] if i else None
        rows.append([name, f"{act['text']['mean'][i]:.1f} / {act['visual']['mean'][i]:.1f}", f3(t2v), f3(v2t),
                     f"{abl['accuracy'][i]:.3f} [{abl['ci95_low'][i]:.3f}, {abl['ci95_high'][i]:.3f}]"])
    s = d["settings"]
    return (f"`{d['model']}`, {s['samples']:,} {s['split']} samples, keep ratio {s['keep_ratio']}, "
            f"{s['visual_tokens']} visual tokens. Norms and attention after each layer; the last column is the "
            "final-exit accuracy when every visual token is dropped after that layer (Wilson 95% interval):\n\n"
            + table(["after layer", "text / visual norm", "text -> visual mass", "visual -> text mass",
                     "accuracy with the image dropped here"], rows)
            + "\n\n" + source(PROBE))


def probe_qtypes(root: Path) -> str:
    d = load(root, PROBE)
    depth = d["settings"]["depth"]
    header = ["question type", "n"] + [("embedding" if i == 0 else f"after {i}") for i in range(depth + 1)]
    rows = [[q, v["n"], *(f"{a:.3f}" for a in v["ablation"]["accuracy"])] for q, v in d["per_qtype"].items()]
    return ("Final-exit accuracy with the image dropped after each layer, per question type:\n\n"
            + table(header, rows) + "\n\n" + source(PROBE))


# ----------------------------------------------------------------------------- captioning
CAP = f"{RESULTS}/caption/summary.json"


def _policy_name(p: dict) -> str:
    k = p["kind"]
    if k in ("confidence", "max_probability"):
        return f"{k} {p['threshold']:g}"
    return f"patience {p['patience']}" if k == "patience" else k


def caption_policies(root: Path) -> str:
    d = load(root, CAP)
    pol = d["policies"]
    base = pol["baseline"]
    rows = [["full depth", f"{base['cider']:.1f}", f"{base['bleu4']:.3f}", f"{base['mean_exit']:.2f}",
             f"{base['decoder_flops'] / 1e6:.2f}", "1.00x"]]
    for kv, r in pol["kv"].items():
        rows.append([f"calibrated ({_policy_name(r['policy'])}, keep {r['keep_ratio']:g}), {kv}",
                     f"{r['cider']:.1f} ({r['cider'] - base['cider']:+.1f})", f"{r['bleu4']:.3f}",
                     f"{r['mean_exit']:.2f}", f"{r['decoder_flops'] / 1e6:.2f}", times(r["flops_ratio"])])
    cal = d["calibration"]
    return (f"Calibrated on {cal['images']} validation images through {cal['backend']} (CIDEr drop <= "
            f"{cal['max_drop']:g} point at the one-sided upper limit, z = {cal['z']}); scored on {pol['images']} "
            f"{pol['split']} images, greedy, one reference per image:\n\n"
            + table(["decoding", "CIDEr-D", "BLEU-4", "mean exit", "decoder MFLOPs / caption",
                     "fewer decoder FLOPs"], rows)
            + "\n\n" + source(CAP))


def caption_speed(root: Path) -> str:
    rows = []
    for name in ("onnxruntime_fp32", "onnxruntime_int8", "executorch_fp32"):
        rel = f"{RESULTS}/caption/bench_{name}.json"
        if not (root / rel).exists():
            continue
        b = load(root, rel)
        full = b["rows"][0]
        best = max(b["rows"][1:], key=lambda r: r["speedup"]) if len(b["rows"]) > 1 else full
        cal = next((r for r in b["rows"] if "calibrated" in r["setting"]), best)
        rows.append([f"{b['backend']} {b['precision']}",
                     f"{full['p50_ms']:.1f} [{full['p10_ms']:.1f}, {full['p90_ms']:.1f}]",
                     f"{cal['p50_ms']:.1f} [{cal['p10_ms']:.1f}, {cal['p90_ms']:.1f}]",
                     f"{full['captions_per_s']:.0f} / {cal['captions_per_s']:.0f}", times(cal["speedup"])])
        settings = f"{b['samples']} {b['split']} images x {b['repeats']} passes, batch 1, {b['threads']} thread"
    return (f"Wall-clock per caption ({settings}; preprocessing and the encoder included):\n\n"
            + table(["runtime", "full depth ms p50 [p10, p90]", "calibrated ms p50 [p10, p90]",
                     "captions/s full / calibrated", "speed-up"], rows)
            + "\n\n" + source(f"{RESULTS}/caption/bench_*.json"))


WEB_CAPTION = "web_demo/caption-latency.json"


def web_caption_latency(root: Path) -> str:
    """The web demo's captioning mode: time per caption at full depth and adaptive, in the page."""
    d = load(root, WEB_CAPTION)
    rows = []
    for mode, label in (("full", "full depth"), ("adaptive", "adaptive")):
        m = d["modes"][mode]
        ms = m["caption_ms"]
        rows.append([label, f"{_policy_name(m['policy'])}, keep {m['keep_ratio']:g}, kv {m['kv']}",
                     f"{m['mean_exit']:.2f} of {d['stages']}",
                     f"{m['decoder_stages_run']} of {m['decoder_stages_full_depth']}",
                     f"**{ms['median']:.1f}** [{ms['p10']:.1f}, {ms['p90']:.1f}]"])
    mach = d["machine"]
    same = "the same caption" if d["same_caption"] else "different captions"
    return (f"Image `{d['image']['name']}`, greedy, {d['runs_per_mode']} runs per mode after "
            f"{d['warmup_runs_per_mode']} warm-up runs, alternating; headless Chromium {d['chromium']}, "
            f"onnxruntime-web {d['onnxruntime_web']} WebAssembly with {d['wasm_threads']} thread, "
            f"{mach['cpu']} ({mach['logical_cores']} logical cores, shared; 1-minute load "
            f"{mach['load_average_1m']['before']:g}); ms per caption (preprocessing, encoder, decoder graphs):\n\n"
            + table(["mode", "policy", "mean exit", "decoder stages run", "ms p50 [p10, p90]"], rows)
            + f"\n\nAdaptive is {times(d['speedup_median'])} faster here, with {same}.\n\n" + source(WEB_CAPTION))


# ----------------------------------------------------------------------------- performance
SUMMARY = f"{RESULTS}/summary.json"


def perf_goals(root: Path) -> str:
    d = load(root, SUMMARY)
    rows = [[ISSUE_REF.sub("", g["goal"]).strip(), g["target"], g["measured"],
             f"**{g['status']}**" if g["status"] in ("met", "NOT met") else g["status"]] for g in d["goals"]]
    m = d["machine"]
    return (f"`{d['command']}` on {m['cpu']} ({m['logical_cores']} logical cores), the shipped model, "
            f"{d['samples']} test queries x {d['repeats']} passes, batch 1, one thread:\n\n"
            + table(["goal", "target", "measured", "status"], rows) + "\n\n" + source(SUMMARY))


def perf_runtimes(root: Path) -> str:
    d = load(root, SUMMARY)
    th = d["thresholds"]
    rows = []
    for r in d["runtimes"]:
        lo, hi = r["accuracy_adaptive_wilson95"]
        rows.append([r["runtime"], f"{r['accuracy_full']:.3f} / {r['accuracy_adaptive']:.3f} [{lo:.3f}, {hi:.3f}]",
                     f"{r['p50_full_ms']:.2f}", f"{r['p50_adaptive_ms']:.2f}", f"**{times(r['adaptive_speedup'])}**",
                     times(r["speedup_vs_torch_eager_full"]), f"{r['size_bytes'] / 1e6:.2f}"])
    return (f"Adaptive = prefilter + exits at the setting calibrated on validation for <= "
            f"{100 * th['calibration']['max_drop']:g} point of accuracy (keep ratio {th['keep_ratio']}, policy "
            f"{th['policy']} {th.get(th['policy'], '')}); latency per query including preprocessing:\n\n"
            + table(["runtime", "accuracy full / adaptive [95% CI]", "p50 full ms", "p50 adaptive ms",
                     "adaptive speed-up", "full depth vs PyTorch eager", "bundle MB"], rows)
            + "\n\n" + source(SUMMARY))


def perf_anchors(root: Path) -> str:
    rel = f"{RESULTS}/anchors/anchors.json"
    d = load(root, rel)
    rows = [[name, s["n"], pct(s["error_before"]), pct(s["error_joint_loo"]), pct(s["error_lodo_nested"])]
            for name, s in d["summary"].items()]
    goals = d["goals"]
    un = goals["unanchored_profiles"]
    return ("Median absolute error of the cost model against published CPU latencies, per profile "
            "(before: the first version's fit; leave-one-out: the joint fit without the anchor predicted; "
            "leave-one-device-out: the device's anchors predicted from the other devices only):\n\n"
            + table(["profile", "anchors", "before", "joint fit, leave-one-out", "leave-one-device-out"], rows)
            + f"\n\nPhones with anchors of their own (leave-one-out): {pct(goals['phones_leave_one_out']['value'])} "
            f"(goal <= {pct(goals['phones_leave_one_out']['goal'])}, "
            f"{'met' if goals['phones_leave_one_out']['met'] else 'not met'}). Repository profiles with anchors of "
            "their own: " + ", ".join(f"{n} {pct(v['median_abs_error'])} ({v['anchors']} of {v['source']}, "
                                      f"{v['judged_by'].split(':')[0]})"
                                      for n, v in d["recalibration"].items() if v["anchors"])
            + f". Profiles without an fp32 / fp16 anchor of their own ({', '.join(un['profiles'])}): "
            f"{pct(un['value'])} held out ({'met' if un['met'] else 'not met'}); every MODELLED figure carries its "
            "profile's error."
            + "\n\n" + source(rel))


def real_data(root: Path) -> str:
    rel = f"{RESULTS}/real_data/real_data.json"
    d = load(root, rel)
    rows = []
    for name, r in d["datasets"].items():
        if "accuracy" in r:
            result = f"{r['accuracy']:.3f}"
        else:
            result = ", ".join(f"{k} {v:.3f}" for k, v in r.items() if "R@" in k)
        rows.append([f"`{name}`", r["task"], r["split"], r["metric"], result, r["n"], r["steps"]])
    note = ("These figures come from fixtures built from generated scenes in each official layout: they "
            "show that training, evaluation and the official metrics run end to end, and say nothing about "
            "the model on real data." if d.get("fixtures") else "")
    return (f"`{d['command']}` (recipe `{d['recipe']}`, scene-only losses off). {note}\n\n"
            + table(["dataset", "task", "split", "metric", "result", "n", "steps"], rows) + "\n\n" + source(rel))


def data_recipe(root: Path) -> str:
    """The recipe for --data on the second domain: test accuracy per run and per question type."""
    rel = f"{RESULTS}/data_recipe/results.json"
    d = load(root, rel)
    types = list(d["answer_priors"])
    rows = [["answer prior", "", "", "", ""] + [f2(d["answer_priors"][t]) for t in types]]
    for r in d["runs"]:
        rows.append([r["name"], r["what"], f"{r['minutes']:g} min", r["steps"], f3(r["test_acc_per_exit"][-1])]
                    + [f2(r["test_acc_per_type"].get(t)) for t in types])
    return (table(["run", "what it tries", "budget", "steps", "test accuracy"] + types, rows) + "\n\n"
            + f"Last exit, keep ratio 1, on the {d['data']['test']} test questions; one thread per run, two runs "
            "at once. " + source(rel))


def data_recipe_answer(root: Path) -> str:
    """The study's answer from its results: per starting point, each run's test accuracy; for the best
    run of each, the accuracy of answering every question with its type's prior and the types it learnt."""
    d = load(root, f"{RESULTS}/data_recipe/results.json")
    priors, parts = d["answer_priors"], []
    for shipped, start in ((True, "From the shipped model"), (False, "From random weights")):
        runs = [r for r in d["runs"] if bool(r.get("init_from")) == shipped]
        if not runs:
            continue
        best = max(runs, key=lambda r: r["test_acc_per_exit"][-1])
        n = sum(best["test_type_counts"].values())
        prior = sum(priors[t] * c for t, c in best["test_type_counts"].items()) / n
        learnt = [t for t, a in best["test_acc_per_type"].items() if a - priors[t] >= 0.10]
        each = ", ".join(f"`{r['name']}` {r['test_acc_per_exit'][-1]:.3f}" for r in runs)
        parts.append(f"{start}: {each}. The best, `{best['name']}`, is 10+ points above the prior on "
                     f"{', '.join(learnt) if learnt else 'no question type'} (priors alone: {prior:.3f}).")
    return (" ".join(parts) + " Test accuracy of the last exit; the table below gives every type. Where a type "
            "stays near its prior, the model has not learnt to read it from the image in that time.")


# ----------------------------------------------------------------------------- shipped model
def vqa_default(root: Path) -> str:
    rel = "models/vqa-default/eval/test.json"
    d = load(root, rel)
    comp = load(root, "models/vqa-default/eval/compositional.json")
    rows = []
    for k, r in d["keep_ratios"].items():
        rows.append([r["keep_ratio"], r["visual_tokens"], *(f"{a:.3f}" for a in r["accuracy_per_exit"]),
                     " / ".join(f"{f / 1e6:.0f}" for f in r["exit_flops"])])
    exits = len(next(iter(d["keep_ratios"].values()))["accuracy_per_exit"])
    final = d["keep_ratios"]["1"]["accuracy_per_qtype"]
    per_type = ", ".join(f"{q} {v['acc_per_exit'][-1]:.3f}" for q, v in final.items())
    c = comp["keep_ratios"]["1"]["accuracy_per_exit"][-1]
    return (f"{d['parameters']:,} parameters; {d['samples']:,} {d['split']} samples:\n\n"
            + table(["keep ratio", "visual tokens", *(f"exit {i}" for i in range(exits)), "MFLOPs per exit"], rows)
            + f"\n\nFinal exit, every token, per question type: {per_type}. The compositional split (colour-shape "
            f"pairs never seen in training) scores {c:.3f}.\n\n"
            + source(rel, "models/vqa-default/eval/compositional.json"))


def pruning_calibration(root: Path) -> str:
    rel = f"{RESULTS}/host_onnxruntime_fp32.json"
    cal = load(root, rel)["thresholds"]["calibration"]
    c = cal["chosen"]
    pr = c.get("pruning")
    rule = (f"pruning when `{pr['signal']}` <= {pr['threshold']:.3f} ({pct(pr['fires_share'])} of queries)"
            if pr else "no pruning")
    return (f"Calibrated on {cal['samples']:,} {cal['split']} samples through {cal['backend']} for at most "
            f"{100 * cal['max_drop']:g} point: keep ratio {c['keep_ratio']}, {_policy_name(c['policy'])}, {rule}; "
            f"accuracy {c['accuracy']:.3f} against {cal['reference_accuracy']:.3f} at full depth, "
            f"{c['mean_flops'] / 1e6:.1f} MFLOPs per query ({c['flops_ratio']:.2f}x of full depth's "
            f"{cal['reference_flops'] / 1e6:.1f}).\n\n" + source(rel))


BLOCKS = {
    "pruning-calibration": pruning_calibration,
    "pretraining-status": pretraining_status,
    "pretraining-arms": pretraining_arms,
    "pretraining-runs": pretraining_runs,
    "attention-summary": attention_summary,
    "probe-layers": probe_layers,
    "probe-qtypes": probe_qtypes,
    "caption-policies": caption_policies,
    "caption-speed": caption_speed,
    "web-caption-latency": web_caption_latency,
    "perf-goals": perf_goals,
    "perf-runtimes": perf_runtimes,
    "perf-anchors": perf_anchors,
    "real-data": real_data,
    "data-recipe": data_recipe,
    "data-recipe-answer": data_recipe_answer,
    "vqa-default": vqa_default,
}


def host_bench(root: Path, rel: str) -> str:
    """Every policy of one `mmedge bench --device host` result (its JSON)."""
    d = load(root, rel)
    rows = []
    for name, p in d["policies"].items():
        ep = p["exit_policy"]
        exit_policy = ep["kind"] if ep["kind"] in ("full", "latency_budget") else _policy_name(ep)
        lat = p["latency"]
        mp = p.get("modality_pruning")
        rows.append([name, p["keep_ratio"], exit_policy, f"{p['accuracy']:.3f}", f"{p['mean_exit']:.2f}",
                     pct(mp["pruned_share"]) if mp else "-",
                     f"{lat['p50_ms']:.2f} [{lat['p10_ms']:.2f}-{lat['p90_ms']:.2f}]", times(p["speedup_p50"])])
    return (f"`mmedge bench --device host`, {d['backend']} {d['precision']}, {d['threads']} thread, "
            f"{d['samples']} test queries x {d['repeats']} passes, batch 1; latency per query including "
            "preprocessing:\n\n"
            + table(["policy", "keep ratio", "exit policy", "accuracy", "mean exit", "image dropped",
                     "p50 ms [p10-p90]", "speed-up (p50)"], rows)
            + "\n\n" + source(rel))

"""Bench outputs: JSON (schema in bench.schema.json), a Markdown report and plots."""

from __future__ import annotations

import json
from pathlib import Path

from tabulate import tabulate

from mmedge.fileio import atomic_write


def validate(result: dict) -> list[str]:
    import jsonschema

    schema = json.loads(Path(__file__).with_name("bench.schema.json").read_text())
    return [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(result)]


def markdown(result: dict) -> str:
    kind = result["kind"]
    lines = [f"# mmedge bench: {result.get('model', '')} on {result['device']} ({kind})", ""]
    if kind == "modelled":
        lines += [f"**MODELLED, not measured.** {result['note']}.", "",
                  f"Profile: {result['profile']['description']} (source: {result['profile']['source']}; "
                  f"efficiency {result['profile']['efficiency']}, per-op overhead {result['profile']['overhead_us']} us, "
                  f"matmul factor {result['profile'].get('matmul_factor', 1.0)}: "
                  f"{result['profile'].get('calibration', 'assumed')}).", ""]
        if result.get("anchor_check"):
            lines += [f"Against real phones: {result['anchor_check']} (benchmarks/results/anchors/).", ""]
        rows = [[r, *[f"{ms:.3f}" for ms in v["exit_ms"]]] for r, v in result["by_keep_ratio"].items()]
        n = max(len(v["exit_ms"]) for v in result["by_keep_ratio"].values())
        lines += ["Modelled latency to each exit (ms):", "",
                  tabulate(rows, ["keep", *[f"exit {i}" for i in range(n)]], tablefmt="github"), ""]
        check = result.get("host_check")
        if check:
            lines += [f"Cost-model check on this host: median absolute error {check['median_abs_error']:.1%} "
                      f"(max {check['max_abs_error']:.1%}) over {len(check['stages'])} exported stages.", ""]
        return "\n".join(lines)
    m = result.get("machine", {})
    # the host passes over the queries `repeats` times; the phone app times `runs` queries cycling over them
    timed = (f"{result['samples']} test queries x {result['repeats']} passes" if "repeats" in result
             else f"{result['runs']} timed queries over {result['samples']} test queries")
    where = (f"Machine: {m.get('cpu', '?')}, {m.get('logical_cores', '?')} logical cores; "
             + ", ".join(f"{k} {v}" for k, v in m.get("libraries", {}).items()) + "." if m
             else f"Device: {result['device']} ({result.get('app', 'the mmedge app')}).")
    lines += [f"Backend {result['backend']} ({result['precision']}), {result['threads']} thread(s); "
              f"{timed} per policy after {result['warmup']} warm-up queries. {where}", "",
              f"Load (with SHA-256 checks) {result['load_ms']:.1f} ms, first inference {result['first_inference_ms']:.2f} ms, "
              f"peak RSS {result['peak_rss_mb']:.0f} MB.", ""]
    q = result.get("queries")
    if q:
        lines += [f"Queries: {q['n']} from the {q['split']} split of {q['data']} (chosen by {q['chosen_by']})"
                  + (f"; {q['out_of_vocabulary']} answers outside the bundle's labels, counted wrong"
                     if q["out_of_vocabulary"] else "") + ".", ""]
    rows = []
    for name, p in result["policies"].items():
        lat = p["latency"]
        dropped = p.get("modality_pruning", {}).get("pruned_share")
        rows.append([name, p["keep_ratio"], f"{p['accuracy']:.3f}", f"{p['mean_exit']:.2f}", f"{p['kept_tokens']:.0f}",
                     "-" if dropped is None else f"{dropped:.0%}",
                     f"{lat['p50_ms']:.3f}", f"{lat['p90_ms']:.3f}", f"{lat['p99_ms']:.3f}", f"{lat['std_ms']:.3f}",
                     f"{p['throughput_qps']:.0f}", f"{p['speedup_p50']:.2f}x", " ".join(map(str, p["exit_histogram"]))])
    lines += [tabulate(rows, ["policy", "keep", "accuracy", "mean exit", "kept tokens", "image dropped", "p50 ms", "p90 ms", "p99 ms",
                              "std ms", "queries/s", "speed-up (p50)", "exit histogram"], tablefmt="github"), ""]
    full = result["policies"]["full depth, every token"]["stages"]
    srows = [[s, f"{v['p50_ms']:.3f}", f"{v['p90_ms']:.3f}"] for s, v in full.items()]
    lines += ["Per-stage latency at full depth (ms):", "", tabulate(srows, ["stage", "p50", "p90"], tablefmt="github"), ""]
    exits = result.get("exit_latency")
    if exits:
        n = max(len(v["p50_ms"]) for v in exits.values())
        erows = [[v["keep_ratio"], *[f"{a:.3f} / {b:.3f}" for a, b in zip(v["p50_ms"], v["p90_ms"])]]
                 for v in exits.values()]
        lines += ["Latency to each exit at full depth, p50 / p90 (ms; the stages up to it, preprocessing excluded):",
                  "", tabulate(erows, ["keep", *[f"exit {i}" for i in range(n)]], tablefmt="github"), ""]
    prof = result.get("op_profile")
    if prof:
        lines += [f"Per-operator time from onnxruntime's profiler ({prof['precision']}, keep {prof['keep_ratio']}, "
                  f"{prof['unit']}):", ""]
        ops = sorted({op for st in prof["stages"].values() for op in st})
        totals = {op: sum(st.get(op, 0.0) for st in prof["stages"].values()) for op in ops}
        ops.sort(key=lambda o: -totals[o])
        orows = [[op, *[f"{prof['stages'][s].get(op, 0.0):.1f}" for s in prof["stages"]]] for op in ops[:15]]
        lines += [tabulate(orows, ["op", *prof["stages"]], tablefmt="github"), ""]
    return "\n".join(lines)


def plots(result: dict, out_prefix: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    pol = result["policies"]
    from mmedge.bench.stats import wilson

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    lows = []
    n = result.get("samples") or 1
    for name, p in pol.items():  # one point per policy, never joined: the policies are not a series
        lat = p["latency"]
        lo_lat = lat.get("p10_ms", lat["min_ms"])
        lo_acc, hi_acc = wilson(p["accuracy"], n)
        lows += [lo_acc, hi_acc]
        ax.errorbar(lat["p50_ms"], p["accuracy"], xerr=[[lat["p50_ms"] - lo_lat], [lat["p90_ms"] - lat["p50_ms"]]],
                    yerr=[[p["accuracy"] - lo_acc], [hi_acc - p["accuracy"]]], fmt="o", capsize=3, ls="none",
                    label=name)
    span = max(max(lows) - min(lows), 0.05)  # never stretch a few tenths of a point over the whole axis
    ax.set_ylim(max(0.0, min(lows) - 0.25 * span), min(1.0, max(lows) + 0.25 * span) + 0.005)
    ax.set_xlim(left=0)
    spread = "p10 to p90" if "p10_ms" in next(iter(pol.values()))["latency"] else "min to p90"
    ax.set(xlabel=f"latency per query, ms (p50; bars: {spread})",
           ylabel=f"test accuracy (bars: 95% Wilson interval, n={n})", title="accuracy vs latency")
    ax.legend(fontsize=7)
    ax = axes[1]
    width = 0.8 / len(pol)
    for i, (name, p) in enumerate(pol.items()):
        hist = p["exit_histogram"]
        ax.bar([x + i * width for x in range(len(hist))], hist, width=width, label=name)
    n_exits = len(next(iter(pol.values()))["exit_histogram"])
    ax.set_xticks([x + width * (len(pol) - 1) / 2 for x in range(n_exits)], [str(x) for x in range(n_exits)])
    ax.set(xlabel="exit taken", ylabel="queries", title="exit distribution")
    ax.legend(fontsize=7)
    ax = axes[2]
    stages = pol["full depth, every token"]["stages"]
    names = [s for s in stages if s != "preprocess"]
    ax.bar(["preprocess", *names], [stages["preprocess"]["p50_ms"], *[stages[s]["p50_ms"] for s in names]])
    ax.set(ylabel="p50 ms", title="per-stage latency (full depth)")
    ax.tick_params(axis="x", rotation=30)
    fig.suptitle(f"{result['backend']} {result['precision']} on {result['device']} (measured)")
    fig.tight_layout()
    path = Path(f"{out_prefix}.png")
    atomic_write(path, lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)
    made.append(path)
    return made


def write(result: dict, json_path: str | Path) -> list[Path]:
    """JSON at json_path, Markdown and (for measured results) a PNG beside it."""
    json_path = Path(json_path)
    problems = validate(result)
    if problems:
        raise ValueError(f"bench result does not match its schema: {problems[:5]}")
    atomic_write(json_path, lambda p: p.write_text(json.dumps(result, indent=1) + "\n"))
    md = json_path.with_suffix(".md")
    atomic_write(md, lambda p: p.write_text(markdown(result) + "\n"))
    made = [json_path, md]
    if result["kind"] != "modelled":
        made += plots(result, json_path.with_suffix(""))
    return made


def write_with(result: dict, json_path: str | Path, markdown_of, plot_into) -> list[Path]:
    """A result as JSON at json_path, with `markdown_of(result)` and `plot_into(result, path)` beside it (.md,
    .png), each written atomically: what the captioning and generation benchmarks write."""
    json_path = Path(json_path)
    md, png = json_path.with_suffix(".md"), json_path.with_suffix(".png")
    atomic_write(json_path, lambda p: p.write_text(json.dumps(result, indent=1) + "\n"))
    atomic_write(md, lambda p: p.write_text(markdown_of(result)))
    atomic_write(png, lambda p: plot_into(result, p))
    return [json_path, md, png]

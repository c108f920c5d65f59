"""The export report in the bundle: report.json (everything) and report.md (for people)."""

from __future__ import annotations

import json
from pathlib import Path

from tabulate import tabulate

from mmedge.fileio import atomic_write


def artifact_bytes(root: Path, artifact: dict) -> int:
    """Bytes on disk of one artifact (its stage files and shared weights file, its program, or its
    package folder)."""
    paths = [root / artifact["file"]] if "file" in artifact else [root / s["file"] for s in artifact["stages"].values()]
    paths += [root / artifact["external_data"]] if "external_data" in artifact else []
    total = 0
    for p in paths:
        total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
    return total


def _label(a: dict) -> str:
    return f"{a['target']} ({a['format']}, {a['precision']})"


def _parity_rows(artifacts: list[dict]) -> list[list]:
    rows = []
    for a in artifacts:
        parity = a.get("parity", {})
        if parity.get("status") == "reference":
            rows.append([_label(a), "-", "0", "0", "1", "1", "1", "the reference"])
            continue
        if parity.get("status") != "measured":
            rows.append([_label(a), "-", "-", "-", "-", "-", "-", f"not run: {parity.get('reason', '')}"])
            continue
        for ratio, p in parity["by_keep_ratio"].items():
            st = p["stages"]
            rows.append([_label(a), ratio, f"{max(s['logits_max_abs_err'] for s in st):.2e}",
                         f"{max(s['hidden_max_rel_err'] for s in st):.2e}",
                         f"{min(s['answer_agreement'] for s in st):.3f}",
                         f"{min(s['kept_tokens_agreement'] for s in st):.3f}", f"{p['exit_agreement']:.3f}",
                         "passed" if p["passed"] else "FAILED: " + "; ".join(p["failures"])])
    return rows


def _accuracy_rows(root: Path, artifacts: list[dict]) -> list[list]:
    sizes = {(a["target"], a["format"], a["precision"]): artifact_bytes(root, a) for a in artifacts}
    rows = []
    for a in artifacts:
        acc = a.get("accuracy")
        if not acc:
            continue
        fp32 = sizes.get((a["target"], a["format"], "fp32"))
        for ratio, r in acc["by_keep_ratio"].items():
            ref = acc["reference"][ratio]
            rows.append([_label(a), ratio, r["samples"], f"{ref['final_exit_accuracy']:.3f}",
                         f"{r['final_exit_accuracy']:.3f}", f"{r['change_vs_reference']:+.3f}",
                         f"{r['adaptive_accuracy']:.3f}", f"{r['mean_exit']:.2f}",
                         f"{sizes[(a['target'], a['format'], a['precision'])] / 1e6:.2f}",
                         f"{sizes[(a['target'], a['format'], a['precision'])] / fp32:.2f}" if fp32 else "-"])
    return rows


def render(root: Path, info: dict) -> str:
    arts = info["artifacts"]
    lines = [f"# Export report: {info['name']}", "",
             f"Model `{info['model']}`; export took {info['seconds'].get('total', 0):.0f} s "
             f"({', '.join(f'{k} {v:.0f} s' for k, v in info['seconds'].items() if k != 'total')}).", "",
             "Tools: " + ", ".join(f"{k} {v}" for k, v in info["tools"].items()), ""]
    if info["failures"]:
        lines += ["## FAILED", "", *[f"- {f}" for f in info["failures"]], ""]
    lines += ["## Artifacts", "", tabulate([[_label(a), a.get("file", f"{len(a['stages'])} stage files"),
                                             f"{artifact_bytes(root, a) / 1e6:.2f}"] for a in arts],
                                           ["artifact", "file", "MB"], tablefmt="github"), ""]
    lines += ["## Parity against PyTorch (real validation samples, every stage chained as the runtime runs it)", "",
              f"Samples: {info['recipe']['parity_samples']}; exit decisions at the default learned-confidence "
              f"threshold {info['recipe']['default_threshold']}. fp32 limits: logits <= 1e-4 abs, hidden <= 1e-4 "
              "relative, all answers and exits equal (ties within 1e-4 excepted). int8 limits: answer agreement "
              ">= 0.90 at every exit, exit agreement >= 0.85, val accuracy drop <= 0.02 (raw errors reported).", "",
              tabulate(_parity_rows(arts), ["artifact", "keep", "max logits err", "max hidden rel err",
                                            "min answer agreement", "kept tokens agreement", "exit agreement",
                                            "result"], tablefmt="github"), ""]
    acc_rows = _accuracy_rows(root, arts)
    if acc_rows:
        lines += ["## int8 against fp32 (validation split)", "",
                  tabulate(acc_rows, ["artifact", "keep", "samples", "PyTorch fp32 acc", "acc", "change",
                                      "adaptive acc", "mean exit", "MB", "size vs fp32"], tablefmt="github"), ""]
    coreml = [a for a in arts if a["target"] == "coreml"]
    if coreml:
        lines += ["## Core ML", ""]
        for a in coreml:
            check = a["structure_check"]
            lines.append(f"- {_label(a)}: structure check {'passed' if check['passed'] else 'FAILED'} "
                         f"({check['functions']} functions; inputs, outputs, shapes and dtypes as the stages); "
                         f"numeric parity: {a['parity'].get('status')}"
                         + (f" ({a['parity']['reason']})" if a["parity"].get("reason") else ""))
        lines.append("")
    onnx = [a for a in arts if a["target"] == "onnx" and a["format"] == "onnx"]
    if onnx:
        rows = [[_label(a), name, "passed" if s["mobile_usability"]["passed"] else "FAILED",
                 ", ".join(f"{k}: {v}" for k, v in s["mobile_usability"]["ep_verdicts"].items())]
                for a in onnx for name, s in a["stages"].items()]
        ort = [a for a in arts if a["format"] == "ort"]
        ort_text = ", ".join(f"{_label(a)}: {len(a['stages'])} .ort files, parity "
                             f"{'passed' if a.get('parity', {}).get('passed') else 'not passed'}" for a in ort)
        lines += ["## ONNX Runtime Mobile", "",
                  "`onnxruntime.tools.check_onnx_model_mobile_usability` analysis per stage (it ran to the end, "
                  "shapes are static) and its verdict on the NNAPI / Core ML execution providers (NO = run the stage on "
                  "ORT Mobile's CPU or XNNPACK execution provider):", "",
                  tabulate(rows, ["artifact", "stage", "usability check", "EP verdicts"], tablefmt="github"), "",
                  f"ORT format (`python -m onnxruntime.tools.convert_onnx_models_to_ort`): {ort_text or 'not made'}",
                  ""]
    if info.get("in_graph"):
        rows = [[r, e[f"{pre}file"], e[f"{pre}check"]["exit_agreement"], e[f"{pre}check"].get("answer_agreement", "-"),
                 f"{e[f'{pre}check']['logits_max_abs_err']:.2e}", ", ".join(map(str, e[f"{pre}check"]["thresholds"])),
                 "passed" if e[f"{pre}check"]["passed"] else "FAILED"]
                for r, e in info["in_graph"]["by_keep_ratio"].items() for pre in ("", "int8_") if f"{pre}check" in e]
        lines += ["## In-graph exits (ONNX If), against the staged ONNX chain of the same precision", "",
                  tabulate(rows, ["keep", "file", "exit agreement", "answer agreement", "max logits err", "thresholds",
                                  "result"], tablefmt="github"), ""]
    first = {}
    for a in arts:
        first.setdefault(a["target"], a)
    for target, a in first.items():
        names = list(a["stages"])
        ops = sorted({op for s in a["stages"].values() for op in s.get("ops", {})})
        if not ops:
            continue
        rows = [[op, *[a["stages"][n].get("ops", {}).get(op, 0) for n in names]] for op in ops]
        lines += [f"## Op counts per stage: {_label(a)}", "", tabulate(rows, ["op", *names], tablefmt="github"), ""]
    return "\n".join(lines)


def write_report(root: Path, info: dict) -> None:
    atomic_write(root / "report.json", lambda p: p.write_text(json.dumps(info, indent=1, default=str) + "\n"))
    atomic_write(root / "report.md", lambda p: p.write_text(render(root, info) + "\n"))

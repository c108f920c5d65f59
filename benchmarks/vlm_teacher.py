"""The small SmolVLM teacher (scripts/train_smolvlm_teacher.py) adapted by self-distillation: per-token exits
and the prompt-conditioned prefilter, measured in PyTorch on this machine (issue #29, "A teacher that means
something").

    python scripts/train_smolvlm_teacher.py --out runs/smolvlm-teacher --threads 1 --steps 8000   # ~55 min, one core
    python benchmarks/vlm_teacher.py                                                   # adapt, evaluate, calibrate
    python benchmarks/vlm_teacher.py --report-only                                     # the report from the JSON
    python benchmarks/vlm_teacher.py --bundle-only     # step 7 again on the adapted folder step 7 saved in --work

The same with 64 visual tokens per image instead of 16 (the connector's pixel shuffle off):

    python scripts/train_smolvlm_teacher.py --out runs/smolvlm-teacher-64 --threads 1 --steps 6000 --scale-factor 1
    python benchmarks/vlm_teacher.py --teacher runs/smolvlm-teacher-64 --out benchmarks/results/vlm_teacher_64 \
        --work runs/smolvlm64-adapted-graphs --keep-ratios 1 0.75 0.5 0.25

Steps:
1. The teacher's quality on the test split: greedy captions (CIDEr x100, one reference each) and short
   answers (exact-match accuracy), through mmedge's re-expressed model at full depth, and the share of
   prompts whose tokens equal transformers' own generate() exactly.
2. Adapt (mmedge.adapt.smolvlm.load_source): an exit after every decoder layer, keep ratios 1.0 / 0.5 /
   0.25; distil (mmedge.adapt.vlm_distill) on unlabelled training-split prompts (the model's own answers).
3. Per exit, token agreement with the teacher (teacher-forced along its own continuations), held out.
4. Calibration on the validation split: the cheapest confidence threshold within the bound (CIDEr at
   least 99% of full depth's; accuracy at most 1 point below), then the test split at that threshold:
   quality, decoder layers and counted FLOPs per token (torch's FlopCounterMode).
5. The prefilter: quality at full depth per keep ratio.
6. Exported (ONNX and ExecuTorch fp32 / int8 / int4, mmedge.adapt.vlm_export) and run by mmedge.runtime.vlm,
   one thread: time to first token per keep ratio, ms per decoded token at full depth and at the calibrated
   threshold, and whether the runtimes write the PyTorch model's tokens and exits.
7. Through the bundle, as a user goes: the adapted folder, `mmedge export --target onnx`, `mmedge calibrate`
   (its default bounds) and `mmedge bench --device host` (bundle_path).

Writes results.json, report.md and report.png into --out (default benchmarks/results/vlm_teacher/).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

OUT = ROOT / "benchmarks" / "results" / "vlm_teacher"
TASKS = {"caption": 1.0, "answer": 0.0}  # task -> share of captions in examples()
BOUNDS = {"caption": 0.01, "answer": 1.0}  # CIDEr: relative share; accuracy: points
THRESHOLDS = [0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.995, 0.999]
RATIOS = [1.0, 0.5, 0.25]  # keep ratios: the prefilter is distilled at these, calibration tries them


def rel(path: Path) -> str:
    p = Path(path).resolve()
    return p.relative_to(ROOT).as_posix() if p.is_relative_to(ROOT) else p.name


def examples(teacher: Path, split: str, task: str, n: int, start: int = 0):
    """(images, prompt texts, references) of the scenes, as the teacher was trained on them."""
    from train_smolvlm_teacher import SmolTeacherConfig, examples as scene_examples

    cfg = json.loads((teacher / "teacher_config.json").read_text())
    return scene_examples(SmolTeacherConfig(**cfg), split, 10 ** 6 + start, n, TASKS[task])


def teacher_command(folder: str, cfg: dict) -> str:
    """How a committed teacher was trained (one thread, the config's steps and pixel shuffle)."""
    shuffle = "" if cfg["scale_factor"] == 2 else f" --scale-factor {cfg['scale_factor']}"
    return f"python scripts/train_smolvlm_teacher.py --out {folder} --threads 1 --steps {cfg['steps']}{shuffle}"


def command(args) -> str:
    """This run's command line, repo-relative, options at their defaults left out."""
    parts = ["python benchmarks/vlm_teacher.py"]
    for option, value, default in (("--teacher", args.teacher, ROOT / "runs" / "smolvlm-teacher"), ("--out", args.out, OUT),
                                   ("--work", args.work, ROOT / "runs" / "smolvlm-adapted-graphs")):
        if Path(value).resolve() != default:
            parts.append(f"{option} {rel(value)}")
    if args.keep_ratios != RATIOS:
        parts.append("--keep-ratios " + " ".join(f"{r:g}" for r in args.keep_ratios))
    if args.bundle_samples != 256:
        parts.append(f"--bundle-samples {args.bundle_samples}")
    return " ".join(parts)


def median_ms(samples: list[float]) -> dict:
    q = np.percentile(samples, [10, 50, 90])
    return {"median": float(q[1]), "p10": float(q[0]), "p90": float(q[2]), "n": len(samples)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--teacher", type=Path, default=ROOT / "runs" / "smolvlm-teacher")
    p.add_argument("--steps", type=int, default=300, help="distillation steps")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--samples", type=int, default=128, help="test prompts per task")
    p.add_argument("--calibration-samples", type=int, default=96, help="validation prompts per task")
    p.add_argument("--timing-samples", type=int, default=24)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--keep-ratios", type=float, nargs="+", default=RATIOS,
                   help="keep ratios, 1.0 first (default %(default)s)")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "smolvlm-adapted-graphs",
                   help="where the exported graphs go")
    p.add_argument("--bundle-samples", type=int, default=256,
                   help="step 7: validation prompts `mmedge calibrate` draws (half captions), and half as many test "
                        "prompts for `mmedge bench` (default %(default)s)")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--bundle-only", action="store_true",
                   help="step 7 only, again, from the adapted folder an earlier run saved in --work; the other "
                        "steps' results are kept")
    args = p.parse_args(argv)
    if args.keep_ratios[0] != 1.0 or not all(0 < r < 1 for r in args.keep_ratios[1:]):
        p.error("--keep-ratios: 1.0 first, then ratios in (0, 1)")
    if args.report_only:
        write_report(json.loads((args.out / "results.json").read_text()), args.out)
        return 0
    torch.set_num_threads(args.threads)
    if args.bundle_only:
        results = json.loads((args.out / "results.json").read_text())
        val_cider = results["calibration"]["caption"]["full_depth"]["quality"]
        started = time.perf_counter()
        results["bundle"] = bundle_path(None, None, args, max_drop_cider=round(BOUNDS["caption"] * val_cider, 1))
        results["bundle"]["wall_s"] = round(time.perf_counter() - started, 1)
        results["bundle"]["command"] = command(args) + " --bundle-only"
    else:
        results = measure(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    write_report(results, args.out)
    return 0


def measure(args) -> dict:
    import transformers

    from mmedge.adapt.smolvlm import load_source
    from mmedge.adapt.vlm_distill import VLMDistillConfig, agreement, distill, kept_attention, teacher_batch
    from mmedge.adapt.vlm_eval import calibrate, decoder_flops, flops_per_token, run
    from mmedge.runtime.controller import Policy

    started = time.perf_counter()
    torch.manual_seed(0)
    model, pre = load_source(args.teacher, keep_ratios=args.keep_ratios)
    model.eval()
    teacher_cfg = json.loads((args.teacher / "teacher_config.json").read_text())
    out: dict = {"command": command(args), "teacher": {"folder": rel(args.teacher), "config": teacher_cfg,
                             "parameters": sum(p.numel() for p in model.backbone.parameters())},
                 "settings": {k: v for k, v in vars(args).items() if k not in ("out", "teacher", "work")},
                 "versions": {"torch": torch.__version__, "transformers": transformers.__version__}}
    test = {t: examples(args.teacher, "test", t, args.samples) for t in TASKS}
    val = {t: examples(args.teacher, "val", t, args.calibration_samples, start=50_000) for t in TASKS}

    # 1. the teacher, through the re-expressed model at full depth, against transformers' generate()
    out["teacher"]["quality"], same = {}, 0
    for task, (images, texts, refs) in test.items():
        r = run(model, pre, task, images, texts, refs, Policy("full"), 1.0, progress=True)
        out["teacher"]["quality"][task] = r.quality
        pixels = pre.pixels(images)
        for i in range(min(16, len(texts))):
            ids = pre.prompt_ids(texts[i])
            want = model.backbone.hf.generate(input_ids=ids, pixel_values=pixels[i: i + 1, None], max_new_tokens=24,
                                              do_sample=False, eos_token_id=list(pre.stop_ids))[0, ids.shape[1]:]
            same += int(want.tolist() == r.generated[i].tokens)
    out["teacher"]["equal_to_transformers_generate"] = {"equal": same, "of": 2 * min(16, args.samples)}
    print("teacher", out["teacher"]["quality"], out["teacher"]["equal_to_transformers_generate"], flush=True)

    # 2. distil on unlabelled training prompts (half captions, half questions)
    def data(step: int, n: int):
        images, texts, _ = examples(args.teacher, "train", "caption", n // 2, start=step * n)
        images2, texts2, _ = examples(args.teacher, "train", "answer", n - n // 2, start=step * n)
        return images + images2, texts + texts2

    held = [teacher_batch(model, pre, *data(10_000 + i, 16), max_new_tokens=24) for i in range(4)]
    before = {"agreement": agreement(model, held), "kept_attention": {str(r): kept_attention(model, held, r)
                                                                        for r in args.keep_ratios[1:]}}
    cfg = VLMDistillConfig(steps=args.steps, batch_size=args.batch_size)
    log = distill(model, pre, data, cfg)
    model.eval()
    after = {"agreement": agreement(model, held), "kept_attention": {str(r): kept_attention(model, held, r)
                                                                       for r in args.keep_ratios[1:]}}
    out["distill"] = {"config": cfg.to_dict(), "wall_s": log["wall_s"], "before": before, "after": after,
                      "loss_first_last": [log["history"][0], log["history"][-1]]}
    print("distilled", out["distill"]["after"], flush=True)

    # 3-4. calibration on val, then test at the chosen threshold
    out["calibration"], out["test"] = {}, {}
    parts = decoder_flops(model, slots=model.config.num_image_tokens + 48)  # about a prompt and a caption
    out["flops_parts"] = parts
    for task in TASKS:
        cal = calibrate(model, pre, task, *val[task], THRESHOLDS, BOUNDS[task], progress=True)
        out["calibration"][task] = cal
        chosen = cal["chosen"]
        rows = {}
        for name, policy in (("full depth", Policy("full")),
                             ("calibrated", Policy("confidence", threshold=chosen["threshold"]) if chosen else None)):
            if policy is None:
                continue
            r = run(model, pre, task, *test[task], policy, 1.0, progress=True)
            rows[name] = {**r.to_dict(), "flops_per_token": flops_per_token(model, r.exit_histogram, parts)}
        out["test"][task] = rows
        print(task, cal["chosen"], rows, flush=True)

    # 5. the prefilter: quality at full depth per keep ratio; time to first token and per decoded token
    out["prefilter"] = {}
    for task in TASKS:
        out["prefilter"][task] = {str(r): run(model, pre, task, *test[task], Policy("full"), r).to_dict()
                              for r in args.keep_ratios}
    out["prefilter_oracle"] = {task: {str(r): oracle_prefilter(model, pre, task, *test[task], r)
                                     for r in args.keep_ratios[1:]}
                               for task in TASKS}
    print("prefilter", out["prefilter"], "oracle", out["prefilter_oracle"], flush=True)
    out["timing"] = timing(model, pre, test, args.timing_samples, {t: out["calibration"][t]["chosen"] for t in TASKS},
                           args.work, args.threads, args.keep_ratios)
    val_cider = out["calibration"]["caption"]["full_depth"]["quality"]
    out["bundle"] = bundle_path(model, pre, args, max_drop_cider=round(BOUNDS["caption"] * val_cider, 1))
    out["wall_s"] = round(time.perf_counter() - started, 1)
    return out


@torch.no_grad()
def oracle_prefilter(model, pre, task: str, images: list, texts: list[str], references: list[str],
                     keep_ratio: float) -> dict:
    """Quality at full depth when each prompt keeps the k visual tokens that the teacher's own continuation
    attends to most (every layer and head, as vlm_distill.attention_prior): an oracle, which reads the answer
    it is to write, as a reference for what a prompt-conditioned prefilter could keep."""
    from mmedge.adapt.vlm_distill import attention_prior, run_stages, teacher_batch
    from mmedge.adapt.vlm_eval import bootstrap90, per_prompt

    k, priors = model.config.kept_tokens(keep_ratio), []
    for start in range(0, len(texts), 16):
        batch = teacher_batch(model, pre, images[start: start + 16], texts[start: start + 16], max_new_tokens=24)
        attention: list[torch.Tensor] = []
        run_stages(model, batch, attention=attention)
        priors.append(attention_prior(model, batch, attention))
    prior = torch.cat(priors)  # (N, M)
    pixels, said = pre.pixels(images), []
    try:
        for i, text in enumerate(texts):
            forced = prior[i].topk(k).indices.sort().values[None]  # (1, k) in order
            model.kept_visual = lambda visual, text_embeds, mask, kk, f=forced: f  # the oracle's choice
            g = model.generate(pre.prompt_ids(text), pixels[i: i + 1], 24, pre.stop_ids, keep_ratio=keep_ratio)
            said.append(pre.decode(g.tokens))
    finally:
        del model.kept_visual  # the class's own again
    scores = per_prompt(task, said, references)
    return {"quality": float(np.mean(scores)), "interval90": list(bootstrap90(scores)),
            "kept_attention": float(prior.topk(k, dim=-1).values.sum(-1).mean())}


def timing(model, pre, test: dict, n: int, chosen: dict, work: Path, threads: int, ratios: list[float]) -> dict:
    """The adapted teacher exported (ONNX and ExecuTorch, fp32 / int8 / int4: mmedge.adapt.vlm_export) and run
    by mmedge.runtime.vlm, interleaved per prompt: time to first token (vision graph, prompt assembly, prefill)
    per keep ratio, and ms per decoded token at full depth and at the calibrated threshold; then the quantized
    graphs' quality at full depth on every test prompt against the fp32 ONNX graphs'."""
    from mmedge.adapt.vlm_export import (QUANTIZED, export_executorch, export_onnx, open_executorch, open_onnx,
                                         quantize_onnx)
    from mmedge.adapt.vlm_eval import per_prompt
    from mmedge.runtime.backends.executorch_backend import set_executorch_threads
    from mmedge.runtime.controller import Policy
    from mmedge.runtime.vlm import VLMDecoder

    slots = model.config.num_image_tokens + 80  # the prompt and 24 new tokens
    parity = export_onnx(model, work, max_slots=slots)
    set_executorch_threads(threads, missing_ok=True)
    programs = {p: export_executorch(model, work, max_slots=slots, precision=p) for p in ("fp32", *QUANTIZED)}
    for precision in QUANTIZED:
        quantize_onnx(work, precision)
    decoders = {"onnxruntime": VLMDecoder(*open_onnx(work, threads)),
                "executorch": VLMDecoder(*open_executorch(work, threads)),
                **{f"onnxruntime {p}": VLMDecoder(*open_onnx(work, threads, p)) for p in QUANTIZED},
                **{f"executorch {p}": VLMDecoder(*open_executorch(work, threads, p)) for p in QUANTIZED}}
    ttft = {b: {str(r): [] for r in ratios} for b in decoders}
    per_token = {b: {task: {"full depth": [], "calibrated": []} for task in test} for b in decoders}
    same = {b: 0 for b in decoders}
    checked = 0
    for task, (images, texts, _) in test.items():
        pixels = pre.pixels(images[:n]).numpy()
        policies = {"full depth": Policy("full")}
        if chosen.get(task):
            policies["calibrated"] = Policy("confidence", threshold=chosen[task]["threshold"])
        for i in range(min(n, len(texts))):
            ids = pre.prompt_ids(texts[i])[0].tolist()
            ref = model.generate(torch.tensor([ids]), torch.from_numpy(pixels[i: i + 1]), stop_ids=pre.stop_ids,
                                 policy=policies.get("calibrated", policies["full depth"]))
            checked += 1
            for backend, dec in decoders.items():
                for r in ratios:
                    run = dec.generate(ids, pixels[i: i + 1], Policy("full"), 1, keep_ratio=r, stop_ids=pre.stop_ids)
                    ttft[backend][str(r)].append(run.encoder_ms)
                for name, policy in policies.items():
                    run = dec.generate(ids, pixels[i: i + 1], policy, 24, stop_ids=pre.stop_ids)
                    if len(run.tokens) > 1:
                        per_token[backend][task][name].append((run.total_ms - run.encoder_ms) / (len(run.tokens) - 1))
                    if policy is policies.get("calibrated", policies["full depth"]):
                        same[backend] += int((run.tokens, run.exits) == (ref.tokens, ref.exits))
    said: dict[str, dict[str, list[str]]] = {}  # full depth on every test prompt, per quantized runtime
    for backend in ("onnxruntime", *(f"{b} {p}" for b in ("onnxruntime", "executorch") for p in QUANTIZED)):
        said[backend] = {}
        for task, (images, texts, _) in test.items():
            pixels = pre.pixels(images).numpy()
            said[backend][task] = [pre.decode(decoders[backend].generate(
                pre.prompt_ids(t)[0].tolist(), pixels[i: i + 1], Policy("full"), 24, stop_ids=pre.stop_ids).tokens)
                for i, t in enumerate(texts)]
    quality = {backend: {task: {"quality": float(np.mean(per_prompt(task, texts, test[task][2]))),
                                "same_text_as_fp32": float(np.mean([a == b for a, b in
                                                                    zip(texts, said["onnxruntime"][task])]))}
                         for task, texts in by_task.items()} for backend, by_task in said.items()}
    sizes = {"onnxruntime": _mb(work / "onnx"), **{f"onnxruntime {p}": _mb(work / f"onnx-{p}") for p in QUANTIZED},
             **{"executorch" + ("" if p == "fp32" else f" {p}"): round(path.stat().st_size / 1e6, 2)
                for p, path in programs.items()}}
    return {"ttft_ms": {b: {r: median_ms(v) for r, v in d.items()} for b, d in ttft.items()},
            "decoded_token_ms": {b: {t: {k: median_ms(v) for k, v in d.items() if v} for t, d in bd.items()}
                                 for b, bd in per_token.items()},
            "export_parity": parity, "equal_to_pytorch": {"equal": {b: same[b] for b in ("onnxruntime", "executorch")},
                                                          "of": checked},
            "threads": threads, "quantized_quality": quality,
            "sizes_mb": sizes,
            "note": "mmedge.runtime.vlm on the exported graphs (fp32 unless the runtime names int8 or int4), batch 1; "
                    "a decoded token's time is a generation's time after its first token over its other tokens"}


def bundle_path(model, pre, args, max_drop_cider: float) -> dict:
    """Step 7, as a user goes: the adapted folder `mmedge adapt` writes, `mmedge export --target onnx`,
    `mmedge calibrate` (validation scenes; the CIDEr bound in points: the share of step 4's, 1% of full depth's
    validation CIDEr, since a 1-point default is 0.1% at this scale; accuracy: its default 1 point) and
    `mmedge bench --device host` (test scenes), through the bundle's own engine."""
    from mmedge.adapt.folder import save_adapted
    from mmedge.adapt.vlm_bench import bench_generation
    from mmedge.adapt.vlm_bundle import export_vlm_bundle
    from mmedge.adapt.vlm_calibrate import calibrate_vlm_bundle

    folder, bundle = args.work / "adapted", args.work / "teacher.mmedge"
    if model is not None:  # else --bundle-only: the folder an earlier run saved
        save_adapted(model, pre, folder, rel(args.teacher), metadata={"distill_steps": str(args.steps)},
                     source_dir=args.teacher)
    t0 = time.perf_counter()
    export_vlm_bundle(folder, bundle, targets=("onnx",), force=True, log=lambda *a: None)
    export_s = time.perf_counter() - t0
    manifest = json.loads((bundle / "manifest.json").read_text())
    cal = calibrate_vlm_bundle(bundle, max_drop_cider=max_drop_cider, samples=args.bundle_samples, progress=True)
    bench = bench_generation(bundle, backend="onnxruntime", threads=args.threads, samples=args.bundle_samples // 2,
                             repeats=3)
    bench["machine"] = bench["machine"]["cpu"]
    return {"commands": [f"mmedge export --model ADAPTED --target onnx --out {bundle.name}",
                         f"mmedge calibrate --artifact {bundle.name} --max-drop-cider {max_drop_cider:g} --samples "
                         f"{args.bundle_samples}",
                         f"mmedge bench --artifact {bundle.name} --device host --threads {args.threads} --samples "
                         f"{args.bundle_samples // 2}"],
            "export_s": round(export_s, 1), "graphs": len(manifest["layout"]["graphs"]),
            "parity": manifest["artifacts"][0]["parity"],
            "transformers_identical_generations": manifest["model"].get("transformers_identical_generations"),
            "calibration": {k: v for k, v in cal.items() if k != "signature"}, "bench": bench}


def task_calibration(cal: dict) -> str:
    """The setting calibration chose for each task on its own (its own bound only); '' for a calibration from
    before the per-task settings."""
    if "tasks" not in cal:
        return ""
    from mmedge.adapt.vlm_bench import policy_name

    base, said = cal["baseline"], []
    for task, row in cal["tasks"].items():
        metric, unit = ("cider", " CIDEr") if task == "caption" else ("accuracy", "%")
        name = policy_name(row["policy"])
        saved = 1 - row["task_layer_passes"][task] / base["task_layer_passes"][task]
        said.append(f"{'captions' if task == 'caption' else 'questions'}: **{name} at keep {row['keep_ratio']:g}**, "
                    f"{row[metric]:.1f}{unit} against {base[metric]:.1f}{unit}, {saved:.1%} fewer decoder layer passes "
                    "on those prompts")
    said = " Each task on its own, within its own bound only (`thresholds.tasks`, what `caption()` and " \
           "`generate(..., task=...)` use): " + "; ".join(said) + "."
    pruned = [r for r in cal["rows"] if r["keep_ratio"] < 1]
    for task, key, bound in (("caption", "cider_drop_upper", cal["max_drop_cider"]),
                             ("answer", "accuracy_drop_upper", 100 * cal["max_drop_accuracy"])):
        if cal["tasks"][task]["keep_ratio"] == 1 and pruned:
            near = min(pruned, key=lambda r: r[key])
            metric, unit = ("cider", " CIDEr") if task == "caption" else ("accuracy", "%")
            said += (f" The {'captions' if task == 'caption' else 'questions'}' nearest pruned setting, keep "
                     f"{near['keep_ratio']:g} ({near['policy']['kind']}): {near[metric]:.1f}{unit} against "
                     f"{base[metric]:.1f}{unit}, its drop's upper limit {near[key]:.2f} points against the bound of "
                     f"{bound:g}.")
    return said


def bundle_lines(b: dict) -> list[str]:
    from mmedge.adapt.vlm_bench import policy_name, task_markdown

    cal, bench = b["calibration"], b["bench"]
    c, base = cal["chosen"], cal["baseline"]
    name = policy_name(c["policy"])
    parity = ", ".join(f"keep {k}: {v['identical_generations']:.0%}" for k, v in b["parity"]["by_keep_ratio"].items())
    lines = ["", "## Through the bundle (what a user runs)", "",
             "The adapted teacher saved as `mmedge adapt` writes it, then " + "; ".join(f"`{x}`" for x in b["commands"])
             + f". Export: {b['graphs']} graphs in {b['export_s']:.0f} s; the fp32 ONNX graphs generate the PyTorch "
             f"model's tokens at full depth on the parity prompts ({parity}), and the PyTorch model "
             f"transformers' own on {b['transformers_identical_generations']:.0%}."
             + (f" This step was run again on its own (`{b['command']}`, {b['wall_s'] / 60:.0f} min), the other "
                "sections' figures kept." if "command" in b else ""), "",
             f"Calibration ({cal['prompts']} validation scenes, half captions, half questions; drops bounded at "
             f"their one-sided upper limit, z {cal['z']}: CIDEr {cal['max_drop_cider']:g} points, 1% of the teacher's "
             f"validation CIDEr as in the calibration above (captions score about {round(base['cider'], -2):.0f} here, where "
             f"the default 1 point is about 0.1%), accuracy {100 * cal['max_drop_accuracy']:g} point): **{name} at keep {c['keep_ratio']:g}**, CIDEr "
             f"{c['cider']:.1f} against full depth's {base['cider']:.1f}, accuracy {c['accuracy']:.1f}% against "
             f"{base['accuracy']:.1f}%, {1 - c['layer_passes'] / base['layer_passes']:.1%} fewer decoder layer passes "
             "per prompt." + task_calibration(cal), "",
             f"`mmedge bench --device host` on the calibrated bundle ({bench['samples']} test scenes x {bench['repeats']} "
             f"passes, settings interleaved, {bench['backend']} fp32, {bench['threads']} thread(s); ms as median "
             "[p10-p90], speed-ups as ratios of medians against full depth):", "",
             "| setting | keep | CIDEr | accuracy | mean exit | first token ms | ms per token | total ms | "
             "first token speed-up | per-token speed-up |", "|---|---|---|---|---|---|---|---|---|---|"]

    def ms(x):
        return "-" if x is None else f"{x['p50']:.2f} [{x['p10']:.2f}-{x['p90']:.2f}]"

    for row in bench["rows"]:
        per = row["speedup_per_token"]
        keep = "per task" if row["keep_ratio"] is None else f"{row['keep_ratio']:g}"
        lines.append(f"| {row['setting']} | {keep} | {row['cider']:.1f} | {row['accuracy']:.1f} | "
                     f"{row['mean_exit']:.2f} | {ms(row['first_token_ms'])} | {ms(row['ms_per_token'])} | "
                     f"{ms(row['total_ms'])} | {row['speedup_first_token']:.2f}x | "
                     f"{'-' if per is None else f'{per:.2f}x'} |")
    lines += task_markdown(bench["rows"]).splitlines()
    full, both = bench["rows"][0], bench["rows"][-1]
    captions = both["by_task"]["caption"] if "by_task" in both else both  # the captions' calibrated setting
    if (captions["policy"]["kind"], captions["keep_ratio"]) != ("full", 1.0):
        drop = full["cider"] - both["cider"]
        lines += ["", f"On these {bench['samples'] // 2} test captions the calibrated setting's CIDEr is {both['cider']:.1f} "
                  f"against full depth's {full['cider']:.1f}: "
                  + (f"{drop:.1f} points lower, outside the {cal['max_drop_cider']:g}-point bound that held on the "
                     "validation scenes" if drop > cal["max_drop_cider"]
                     else "within the bound") + "."]
    return lines


def visual_tokens(cfg: dict) -> int:
    """Visual tokens per image of a teacher config: patches over the pixel shuffle's square."""
    return (cfg["image_size"] // cfg["patch_size"]) ** 2 // cfg["scale_factor"] ** 2


def prefilter_summary(r: dict) -> list[str]:
    """What keeping fewer visual tokens cost this teacher at full depth, against the calibration's bound, and
    how the two committed teachers (16 and 64 visual tokens) compare."""
    M = visual_tokens(r["teacher"]["config"])
    pf, pa = r["prefilter"]["caption"], r["prefilter"]["answer"]
    orc = r.get("prefilter_oracle", {})
    lines = ["", "## What pruning cost this teacher", ""]
    for ratio in pf:
        if ratio == "1.0":
            continue
        c, a = pf[ratio]["quality"], pa[ratio]["quality"]
        c_in = c >= (1 - BOUNDS["caption"]) * pf["1.0"]["quality"]
        a_in = a >= pa["1.0"]["quality"] - BOUNDS["answer"]
        line = (f"- Keep {ratio} ({max(1, round(float(ratio) * M))} of {M} visual tokens), the trained prefilter: captions "
                f"CIDEr {c:.0f} against {pf['1.0']['quality']:.0f} ({c / pf['1.0']['quality']:.0%}: "
                f"{'within' if c_in else 'outside'} the 1% bound), answers {a:.1f}% against {pa['1.0']['quality']:.1f}% "
                f"({a - pa['1.0']['quality']:+.1f} points: {'within' if a_in else 'outside'} the 1-point bound)")
        ttft = r["timing"]["ttft_ms"]["onnxruntime"]
        if ratio in ttft:
            t, t1 = ttft[ratio]["median"], ttft["1.0"]["median"]
            line += f"; first token {t:.2f} ms against {t1:.2f} (ONNX Runtime fp32 median, {1 - t / t1:.0%} less)"
        if ratio in orc.get("caption", {}):
            line += (f"; the oracle: {orc['caption'][ratio]['quality']:.0f} and {orc['answer'][ratio]['quality']:.1f}%")
        lines.append(line + ".")
    other = OUT / "results.json" if M != 16 else OUT.with_name("vlm_teacher_64") / "results.json"
    if other.is_file():
        o = json.loads(other.read_text())
        om = visual_tokens(o["teacher"]["config"])
        oc = o["prefilter"]["caption"]
        lines += ["", f"The teacher with {om} visual tokens per image ({rel(other.parent)}/report.md) keeps at keep 0.5 "
                  f"{oc['0.5']['quality'] / oc['1.0']['quality']:.0%} of its captions' CIDEr "
                  f"({oc['0.5']['quality']:.0f} against {oc['1.0']['quality']:.0f}); this one "
                  f"{pf['0.5']['quality'] / pf['1.0']['quality']:.0%}."]
    return lines + [""]


def _mb(folder: Path) -> float:
    return round(sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6, 2)


def write_report(r: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t, d = r["teacher"], r["distill"]
    tc = t["config"]
    eq = t["equal_to_transformers_generate"]
    lines = ["# The small SmolVLM teacher, adapted: per-token exits and the prompt-conditioned prefilter", "",
             f"Command: `{r.get('command', 'python benchmarks/vlm_teacher.py')}` (teacher: `python "
             f"scripts/train_smolvlm_teacher.py --out {t['folder']}`). Measured on this machine: quality in PyTorch, "
             "timings on the exported graphs.", "",
             "## The teacher", "",
             f"SmolVLMForConditionalGeneration trained here with transformers on the generated scenes: vision "
             f"{tc['vision_layers']} x {tc['vision_hidden']} ({tc['image_size']} px, {tc['patch_size']} px patches, pixel "
             f"shuffle {tc['scale_factor']}: {(tc['image_size'] // tc['patch_size']) ** 2 // tc['scale_factor'] ** 2} "
             f"visual tokens), Llama decoder {tc['text_layers']} x {tc['text_hidden']}, {t['parameters']:,} parameters, "
             f"{tc['steps']} steps of {tc['batch_size']}, trained by: `{teacher_command(t['folder'], tc)}`.", "",
             f"Test split, greedy: caption CIDEr {t['quality']['caption']:.1f} (one reference per image, "
             f"{r['settings']['samples']} images), short-answer accuracy {t['quality']['answer']:.1f}% "
             f"({r['settings']['samples']} questions). mmedge's re-expressed model at full depth wrote the same tokens as "
             f"transformers' generate() for {eq['equal']} of {eq['of']} prompts checked.", "",
             "## Distillation", "",
             f"{d['config']['steps']} steps of {d['config']['batch_size']} unlabelled training prompts (half captions, half "
             f"questions; targets: the teacher's own greedy continuations), {d['wall_s']:.0f} s. Held out "
             "(64 prompts, teacher-forced along the teacher's continuations):", "",
             "| | " + " | ".join(f"exit {i + 1}" for i in range(len(d["after"]["agreement"]))) + " |",
             "|---|" + "---|" * len(d["after"]["agreement"]),
             "| token agreement before | " + " | ".join(f"{a:.3f}" for a in d["before"]["agreement"]) + " |",
             "| token agreement after | " + " | ".join(f"{a:.3f}" for a in d["after"]["agreement"]) + " |", "",
             "Share of the teacher's attention (continuation to visual tokens) on the tokens the prefilter keeps: " +
             ", ".join(f"keep {k}: {d['before']['kept_attention'][k]:.3f} before, {v:.3f} after"
                       for k, v in d["after"]["kept_attention"].items()) + ".", "",
             "## Calibrated exits (keep 1.0)", "",
             "Threshold of the confidence policy chosen on the validation split as the cheapest within the bound "
             "(caption: CIDEr at least 99% of full depth's; answer: accuracy at most 1 point below), then the test "
             "split. FLOPs: matrix products counted by torch's FlopCounterMode per decoded token (layers, each "
             "exit's confidence on the way, the LM head at the exit taken, the skipped layers' copy-forward), at a "
             f"{r['flops_parts']['slots']}-slot cache.", "",
             "| task | policy | quality [bootstrap 90%] | decoder layers per token | counted FLOPs per token | exit histogram |",
             "|---|---|---|---|---|---|"]
    outside: list[str] = []
    for task, rows in r["test"].items():
        chosen = r["calibration"][task]["chosen"]
        for name, row in rows.items():
            label = name if name != "calibrated" else f"confidence >= {chosen['threshold']}"
            ci = row.get("interval90", [math.nan, math.nan])
            lines.append(f"| {task} | {label} | {row['quality']:.1f} [{ci[0]:.1f}-{ci[1]:.1f}] | {row['layers_per_token']:.2f} | "
                         f"{row['flops_per_token'] / 1e6:.2f} M | {row['exit_histogram']} |")
        if "calibrated" in rows:
            full, cal = rows["full depth"], rows["calibrated"]
            floor = full["quality"] - BOUNDS[task] if task == "answer" else full["quality"] * (1 - BOUNDS[task])
            outside.append(f"{task}: {'within' if cal['quality'] >= floor - 1e-9 else 'outside'} the bound on the "
                           f"test split ({cal['quality']:.1f} against full depth's {full['quality']:.1f})")
            lines.append(f"| {task} | saved | {cal['quality'] - full['quality']:+.1f} | "
                         f"{1 - cal['layers_per_token'] / full['layers_per_token']:.1%} | "
                         f"{1 - cal['flops_per_token'] / full['flops_per_token']:.1%} | |")
        elif chosen is None:
            lines.append(f"| {task} | no threshold within the bound | | | | |")
    if outside:
        lines += ["", "The thresholds were chosen on the validation split; " + "; ".join(outside) + "."]
    lines += ["", "Decoded tokens are those after the first, which the prefill gives at full depth: a short answer's "
              "word is usually that first token, so the exits decide what follows it (mostly the stop token)."]
    tm = r["timing"]
    eq = tm["equal_to_pytorch"]
    lines += ["", "Milliseconds per decoded token, median [p10-p90] (" + tm["note"] + "; "
              f"{tm['threads']} thread(s)). Both runtimes wrote the PyTorch model's tokens and exits for "
              + ", ".join(f"{b}: {v} of {eq['of']}" for b, v in eq["equal"].items()) + " prompts at the calibrated "
              "threshold; largest graph difference from PyTorch at export (ONNX) "
              f"{max(tm['export_parity'].values()):.1e}.", "",
              "| runtime | task | full depth | calibrated | saved |", "|---|---|---|---|---|"]
    for backend, tasks in tm["decoded_token_ms"].items():
        for task, rows in tasks.items():
            cells = [f"{rows[k]['median']:.2f} [{rows[k]['p10']:.2f}-{rows[k]['p90']:.2f}]" if k in rows else "-"
                     for k in ("full depth", "calibrated")]
            saved = (f"{1 - rows['calibrated']['median'] / rows['full depth']['median']:.1%}"
                     if {"full depth", "calibrated"} <= set(rows) else "-")
            lines.append(f"| {backend} | {task} | " + " | ".join(cells) + f" | {saved} |")
    qq = tm.get("quantized_quality")
    if qq:
        lines += ["", "Quantized graphs, full depth on every test prompt, against the fp32 ONNX graphs: ONNX "
                  "weight-only (int8: mmedge's ONNX int8 recipe; int4: ONNX Runtime's MatMulNBits, blocks of 32)"
                  + (", and ExecuTorch's XNNPACK dynamically quantized linears (torchao: int8 weights per channel; "
                     "int4 in groups of 32 on the linears whose input width 32 divides)"
                     if any(b.startswith("executorch") for b in qq) else "") + ":", "",
                  "| graphs | MB | caption CIDEr | same caption as fp32 | answer accuracy | same answer as fp32 |",
                  "|---|---|---|---|---|---|"]
        for backend, tasks in qq.items():
            c, a = tasks["caption"], tasks["answer"]
            lines.append(f"| {backend} | {tm['sizes_mb'][backend]:.2f} | {c['quality']:.1f} | {c['same_text_as_fp32']:.1%} | "
                         f"{a['quality']:.1f} | {a['same_text_as_fp32']:.1%} |")
        if any(b.startswith("executorch ") for b in qq) and "executorch" in tm["sizes_mb"]:
            lines += ["", f"The ExecuTorch fp32 program is {tm['sizes_mb']['executorch']:.2f} MB: one .pte holding "
                      "every method, where each ONNX file holds its own weights (a weight that two graphs read, "
                      "such as the token embeddings, is stored in both)."]
    lines += ["", "## The prefilter", "", "Quality at full depth per keep ratio (test split, PyTorch) and time to "
              "first token (vision graph, prompt assembly, prefill), median [p10-p90] ms:", "",
              "| keep ratio | caption CIDEr [90%] | answer accuracy [90%] | " +
              " | ".join(f"first token, {b}" for b in tm["ttft_ms"]) + " |",
              "|---|---|---|" + "---|" * len(tm["ttft_ms"])]
    for k in r["prefilter"]["caption"]:
        cells = [f"{d[k]['median']:.2f} [{d[k]['p10']:.2f}-{d[k]['p90']:.2f}]" for d in tm["ttft_ms"].values()]
        q = [r["prefilter"][t][k] for t in ("caption", "answer")]
        lines.append(f"| {k} | " + " | ".join(f"{x['quality']:.1f} [{x['interval90'][0]:.1f}-{x['interval90'][1]:.1f}]"
                                             for x in q) + " | " + " | ".join(cells) + " |")
    oracle = r.get("prefilter_oracle")
    if oracle:
        dk = r["distill"]["after"]["kept_attention"]
        lines += ["", "An oracle for comparison: each prompt keeps the visual tokens that the teacher's own greedy "
                  "continuation attends to most (every layer and head), which a prefilter cannot know (it reads the "
                  "answer it is to write). Quality at full depth, and the share of the teacher's attention that the "
                  "kept tokens hold (the trained prefilter's share: held-out prompts, above):", "",
                  "| keep ratio | oracle caption CIDEr [90%] | oracle answer accuracy [90%] | oracle's attention share "
                  "(caption / answer) | prefilter's attention share |", "|---|---|---|---|---|"]
        for k in oracle["caption"]:
            c, a = oracle["caption"][k], oracle["answer"][k]
            lines.append(f"| {k} | {c['quality']:.1f} [{c['interval90'][0]:.1f}-{c['interval90'][1]:.1f}] | "
                         f"{a['quality']:.1f} [{a['interval90'][0]:.1f}-{a['interval90'][1]:.1f}] | "
                         f"{c['kept_attention']:.3f} / {a['kept_attention']:.3f} | {dk.get(k, float('nan')):.3f} |")
    if "bundle" in r:
        lines += bundle_lines(r["bundle"])
    lines += prefilter_summary(r)
    (out / "report.md").write_text("\n".join(lines))

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, task in zip(axes, r["calibration"]):
        tried = r["calibration"][task]["tried"]
        full = r["calibration"][task]["full_depth"]
        for rows, style, label in ((tried, "o", "confidence thresholds (val)"), ([full], "s", "full depth (val)")):
            y = np.array([x["quality"] for x in rows])
            iv = np.array([x["interval90"] for x in rows])  # bootstrap 90% over prompts
            ax.errorbar([x["layers_per_token"] for x in rows], y, yerr=[y - iv[:, 0], iv[:, 1] - y], fmt=style,
                        capsize=3, label=label)
        ax.axhline(r["calibration"][task]["floor"], ls=":", c="gray", label="bound")
        ax.set_xlabel("decoder layers per token")
        ax.set_ylabel("CIDEr" if task == "caption" else "accuracy %")
        ax.set_title(f"{task} (bars: bootstrap 90% over prompts)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "report.png", dpi=110)
    print(f"wrote {rel(out / 'report.md')}")


if __name__ == "__main__":
    sys.exit(main())

"""SmolVLM-256M at real size through `mmedge adapt`, `mmedge export` and the VLM runtime (issue #29, "At real size").

RANDOM WEIGHTS. The model is the SmolVLM-256M architecture (a SigLIP base/16 vision tower at 512 x 512: 12 layers
x 768, 12 heads, MLP 3072, 32 x 32 = 1,024 patches; the pixel-shuffle connector with scale factor 4 -> 64 visual
tokens of 576; the SmolLM2-135M Llama decoder: 30 layers x 576, 9 heads, 3 key/value heads of 64, MLP 1536, rope
theta 100,000, a 49,280-entry vocabulary), initialised at random (seed 0): no pretrained weights can be downloaded
here, and latency, memory and size do not depend on the values. Every output says so. Its tokens mean nothing.

    python benchmarks/vlm_scale.py --work /tmp/vlm_scale     # build, adapt, export, measure: about 1 h 50 min on
                                                             # 2 cores, 1 h 40 of it the export (a second run with
                                                             # the same --work re-measures without exporting)
    python benchmarks/vlm_scale.py --report-only             # the Markdown and PNG again from the committed JSON

Steps:
1. Source: the random SmolVLM-256M (`SmolVLMForConditionalGeneration`, the input and output embeddings untied),
   a word-level tokenizer padded to 49,280 entries with SmolVLM's special tokens and chat template (the image
   token at SmolVLM's id 49190) and `SmolVLMImageProcessorPil` at 512 without splitting, saved with
   save_pretrained into the work folder.
2. Adapt (`mmedge.adapt.load_source` + `save_adapted`, what `mmedge adapt` runs around its distillation, with
   no distillation: the exits' and prefilter's values do not change latency): VARIANTS. "adapted": exits after
   decoder layers 6, 12, 18, 24 and 30 (five stages), the prompt-conditioned prefilter at keep ratios 1.0 / 0.5 /
   0.25. "unadapted": the last exit alone (the model's own head) at keep 1.0: the source model in mmedge's graph
   form, nothing added that runs.
3. Export: `mmedge export --ort-format` of each (`mmedge.adapt.vlm_bundle.export_vlm_bundle`): ONNX (also in
   ORT format) and ExecuTorch, fp32, int8 and int4 (ONNX Runtime weight-only int8 / MatMulNBits int4; ExecuTorch
   XNNPACK dynamically quantized linears), checked against PyTorch and `transformers`' `generate()` as every
   export is.
4. Measure, on this machine, batch 1, one thread, each configuration in its own process (load time, RSS after
   imports, after loading, peak), in rounds that rotate the order of the configurations: per keep ratio, one
   prompt through the runtime's own `generate` for one token (image encode = the vision graph's time; time to
   first token = vision, the runtime's top k, embeddings, prefill at full depth and the head); then the decode of
   8 tokens exiting after each stage (the graphs the runtime runs for such a token under a confidence policy:
   embeddings, the steps up to the exit, the LM head there, the copy-forward fill of the later layers' caches),
   and 8 tokens of the runtime's `generate` at full depth (at the lowest keep
   ratio) as its check. FLOPs: counted by the cost model's onnx_tool in the fp32 ONNX graphs each quantity runs.
5. Modelled phones: mmedge's cost model (mmedge.bench.costmodel) on the fp32 ONNX graphs, per device profile,
   with each profile's held-out error against published phone latencies, and the host check.
6. optimum: optimum's ONNX exporter and optimum-executorch are each asked to export the source (in their side
   venvs: scripts/setup_optimum_venv.sh, scripts/setup_optimum_executorch_venv.sh); what they answer is recorded.

Writes results.json, report.md and report.png into --out (default benchmarks/results/vlm_scale/).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from worker_process import MB, protocol, rss_mb, start_all, stop_all  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "vlm_scale"
RANDOM = ("RANDOM WEIGHTS: the SmolVLM-256M architecture initialised at random (no pretrained weights here); "
          "latency, memory and size do not depend on the values, the generated tokens mean nothing.")
# SmolVLM-256M-Instruct's architecture (its config.json): the SigLIP base/16 tower at 512 and SmolLM2-135M.
ARCH = {"vision": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                       image_size=512, patch_size=16),
        "text": dict(model_type="llama", hidden_size=576, num_hidden_layers=30, num_attention_heads=9,
                     num_key_value_heads=3, intermediate_size=1536, vocab_size=49280, max_position_embeddings=8192,
                     rope_theta=100000.0, rms_norm_eps=1e-5),
        "scale_factor": 4, "image_token_id": 49190}
VARIANTS = {"adapted": {"exit_layers": [5, 11, 17, 23, 29], "keep_ratios": [1.0, 0.5, 0.25]},
            "unadapted": {"exit_layers": [29], "keep_ratios": [1.0]}}
PRECISIONS = ("int8", "int4")
DECODE_TOKENS = 8
PROMPT = "describe the image."


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def rel(path: Path | str) -> str:
    p = Path(path).resolve()
    return p.relative_to(ROOT).as_posix() if p.is_relative_to(ROOT) else p.name


# ---------------------------------------------------------------------------------------------- source
def build_tokenizer():
    """A word-level tokenizer over the scenes' and the chat's words, padded to SmolVLM's 49,280 entries, with
    its special tokens (the image token at SmolVLM's id) and its chat template."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from transformers.models.smolvlm.processing_smolvlm import DEFAULT_CHAT_TEMPLATE

    from mmedge.data.tasks import vocabulary_words

    image, fake, glob, end = "<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>"
    specials = ["<pad>", "<unk>", "<|im_start|>", end, fake, glob]
    words = sorted(set(vocabulary_words()) | {"user", "assistant", ":", "describe", "the", "image", ".", "?"})
    names = specials + [w for w in words if w not in specials]
    vocab = {w: i for i, w in enumerate(names)}
    free = (i for i in range(ARCH["text"]["vocab_size"]) if i >= len(names) and i != ARCH["image_token_id"])
    vocab[image] = ARCH["image_token_id"]
    while len(vocab) < ARCH["text"]["vocab_size"]:
        i = next(free)
        vocab[f"w{i}"] = i
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", bos_token="<|im_start|>", eos_token=end,
        additional_special_tokens=[image, fake, glob],
        extra_special_tokens={"image_token": image, "fake_image_token": fake, "global_image_token": glob,
                              "end_of_utterance_token": end})
    tok.chat_template = DEFAULT_CHAT_TEMPLATE
    return tok


def build_source(folder: Path, seed: int = 0) -> dict:
    """The random SmolVLM-256M, its tokenizer and image processor, saved with save_pretrained."""
    import torch
    import transformers

    tok = build_tokenizer()
    end = tok.convert_tokens_to_ids("<end_of_utterance>")
    assert tok.convert_tokens_to_ids("<image>") == ARCH["image_token_id"] and len(tok) == ARCH["text"]["vocab_size"]
    config = transformers.SmolVLMConfig(
        vision_config=ARCH["vision"],
        text_config={**ARCH["text"], "pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id,
                     "eos_token_id": end},
        image_token_id=ARCH["image_token_id"], scale_factor=ARCH["scale_factor"], pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False)
    config.eos_token_id = end
    torch.manual_seed(seed)
    model = transformers.SmolVLMForConditionalGeneration(config).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    size = ARCH["vision"]["image_size"]
    transformers.SmolVLMImageProcessorPil(do_image_splitting=False, size={"longest_edge": size},
                                          max_image_size={"longest_edge": size}).save_pretrained(folder)
    n = sum(p.numel() for p in model.parameters())
    parts = {"vision": model.model.vision_model, "connector": model.model.connector,
             "decoder": model.model.text_model, "lm_head": model.lm_head}
    return {"parameters": int(n), "parameters_by_part": {k: int(sum(p.numel() for p in m.parameters()))
                                                         for k, m in parts.items()}, "seed": seed}


def adapt(source: Path, folder: Path, variant: dict) -> dict:
    """What `mmedge adapt` runs before and after distilling (no distillation: values do not change latency)."""
    import torch

    from mmedge.adapt import load_source
    from mmedge.adapt.folder import save_adapted

    t0 = time.perf_counter()
    model, pre = load_source(source, **variant)
    torch.manual_seed(1)
    save_adapted(model, pre, folder, str(source.name), metadata={"distill_steps": "0"}, source_dir=source)
    return {"parameters": int(sum(p.numel() for p in model.parameters())), "seconds": round(time.perf_counter() - t0, 1)}


def export(folder: Path, bundle: Path) -> dict:
    from mmedge.adapt.vlm_bundle import export_vlm_bundle

    t0 = time.perf_counter()
    export_vlm_bundle(folder, bundle, targets=("onnx", "executorch"), quantize=PRECISIONS, max_new_tokens=16,
                      parity_prompts=2, force=True, ort_format=True, log=log)
    manifest = json.loads((bundle / "manifest.json").read_text())
    return {"seconds": round(time.perf_counter() - t0, 1), "by_target_s": manifest["seconds"],
            "parity": {f"{artifact_backend(a)} {a['precision']}": a.get("parity") for a in manifest["artifacts"]},
            "transformers_identical_generations": manifest["model"].get("transformers_identical_generations")}


# ---------------------------------------------------------------------------------------------- measure
BACKENDS = ("onnxruntime", "ort", "executorch")  # ort: ONNX Runtime on the bundle's ORT-format copies


def artifact_backend(artifact: dict) -> str:
    return "ort" if artifact["format"] == "ort" else artifact["runtime"]


def configurations(variants: list[str]) -> list[str]:
    """Every variant on ONNX Runtime and ExecuTorch at each precision; the ORT-format copies of the adapted model
    only (the configurations stay loaded together: all eighteen would not fit this machine's memory)."""
    return [f"{v} {b} {p}" for v in variants for b in BACKENDS for p in ("fp32", *PRECISIONS)
            if b != "ort" or v == "adapted"]


def worker(name: str, work: Path) -> None:
    """One configuration in its own process: load, then answer commands on stdin (JSON lines)."""
    proto = protocol()
    variant, backend, precision = name.split()
    from mmedge.adapt.vlm_bench import graph_times
    from mmedge.adapt.vlm_manifest import load_vlm_manifest
    from mmedge.runtime.controller import Policy
    from mmedge.runtime.vlm import VLMDecoder
    from mmedge.runtime.vlm_engine import VLMEngine

    if backend == "executorch":
        from mmedge.runtime.backends.executorch_backend import set_executorch_threads

        set_executorch_threads(1)
    bundle = work / f"{variant}.mmedge"
    before = rss_mb()
    load = {}
    t0 = time.perf_counter()
    load_vlm_manifest(bundle, verify_files=True)
    load["hash_check_ms"] = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    engine = VLMEngine.load(bundle, backend="onnxruntime" if backend == "ort" else backend, precision=precision,
                            threads=1, verify=False, self_check=False, fmt="ort" if backend == "ort" else None)
    load["open_ms"] = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    engine.self_check()
    load["self_check_ms"] = (time.perf_counter() - t0) * 1e3
    load["total_ms"] = sum(load.values())
    S = engine.manifest["preprocessing"]["image_size"]
    image = np.random.default_rng(0).integers(0, 256, (S, S, 3), dtype=np.uint8)
    pixels, ids = engine.preprocess(image), engine.prompt_ids(PROMPT)
    decoder = VLMDecoder(engine.session, engine.layout)
    proto.write(json.dumps({"ready": True, "load": load, "rss_after_imports_mb": before,
                            "rss_after_load_mb": rss_mb(), "prompt_tokens": len(ids)}) + "\n")

    def one_round() -> dict:
        out = graph_times(engine, image, PROMPT, DECODE_TOKENS)
        full = decoder.generate(ids, pixels, Policy("full"), max_new_tokens=DECODE_TOKENS + 1,
                                keep_ratio=min(engine.layout.keep_ratios))  # the runtime's own loop, as the check
        out["generate_full_ms_per_token"] = (full.total_ms - full.encoder_ms) / (len(full.tokens) - 1)
        return out

    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "round":
            proto.write(json.dumps(one_round()) + "\n")
        elif cmd["cmd"] == "stop":
            proto.write(json.dumps({"peak_rss_mb": rss_mb("VmHWM"), "rss_mb": rss_mb()}) + "\n")
            return


def measure(work: Path, names: list[str], rounds: int, warmup: int) -> dict:
    """Load every configuration in its own process (one after another), then rounds in a rotated order."""
    workers, loads, failures = start_all(
        names, lambda name: [str(Path(__file__).resolve()), "--worker", name, "--work", str(work)], work, ROOT, log)
    log(f"measure: warm-up, {warmup} round(s) per configuration")
    for w in workers.values():
        for _ in range(warmup):
            w.ask({"cmd": "round"})
    raw: dict[str, list] = {n: [] for n in workers}
    order, started = list(workers), time.perf_counter()
    for r in range(rounds):
        for name in order[r % len(order):] + order[:r % len(order)]:
            raw[name].append(workers[name].ask({"cmd": "round"}))
        log(f"measure: round {r + 1}/{rounds} ({time.perf_counter() - started:.0f} s)")
    memory = stop_all(workers, loads)
    return {"raw": raw, "load": {n: v["load"] for n, v in loads.items()}, "memory": memory, "failures": failures,
            "prompt_tokens": next(iter(loads.values()))["prompt_tokens"] if loads else None,
            "seconds": round(time.perf_counter() - started, 1)}


def stats(values) -> dict:
    x = np.asarray(values, np.float64)
    return {"median": float(np.median(x)), "p10": float(np.percentile(x, 10)), "p90": float(np.percentile(x, 90)),
            "n": int(x.size)}


def summarise(measured: dict, layouts: dict) -> dict:
    """Per configuration: image encode, prefill and time to first token per keep ratio; ms per decoded token
    exiting after each stage; medians and p10-p90 over rounds. Speed-ups are per round, then summarised."""
    out = {}
    for name, rounds in measured["raw"].items():
        lay = layouts[name.split()[0]]
        ratios = [str(r) for r in lay["keep_ratios"]]
        by = {r: {k: stats([x["by_keep_ratio"][r][k] for x in rounds]) for k in ("encode_ms", "prefill_ms",
                                                                                 "first_token_ms")} for r in ratios}
        for r in ratios:
            by[r]["first_token_speedup"] = stats([x["by_keep_ratio"]["1.0"]["first_token_ms"]
                                                  / x["by_keep_ratio"][r]["first_token_ms"] for x in rounds])
        stages = range(len(lay["stage_layers"]))
        last = str(len(lay["stage_layers"]) - 1)
        decode = {str(s): {"exit_after_layer": lay["stage_layers"][s][-1] + 1,
                           "ms": stats([x["decode_ms"][str(s)] for x in rounds]),
                           "tokens_per_s": 1e3 / float(np.median([x["decode_ms"][str(s)] for x in rounds])),
                           "speedup": stats([x["decode_ms"][last] / x["decode_ms"][str(s)] for x in rounds])}
                  for s in stages}
        out[name] = {"by_keep_ratio": by, "decode": decode,
                     "generate_full_ms_per_token": stats([x["generate_full_ms_per_token"] for x in rounds])}
    for name in out:  # the adapted model at full depth against the unadapted one, same backend and precision
        v, b, pr = name.split()
        other = f"unadapted {b} {pr}"
        if v != "adapted" or other not in out:
            continue
        mine, theirs = measured["raw"][name], measured["raw"][other]
        last = str(len(layouts["adapted"]["stage_layers"]) - 1)
        out[name]["versus_unadapted"] = {
            "first_token_keep1": stats([a["by_keep_ratio"]["1.0"]["first_token_ms"]
                                        / u["by_keep_ratio"]["1.0"]["first_token_ms"] for a, u in zip(mine, theirs)]),
            "decode_full_depth": stats([a["decode_ms"][last] / u["decode_ms"]["0"] for a, u in zip(mine, theirs)])}
    return out


def modelled(bundle: Path, summary: dict, prompt_tokens: int) -> dict:
    """Modelled phone latencies (mmedge.adapt.vlm_bench.model_generation's cost model) of the fp32 ONNX graphs:
    image encode and time to first token per keep ratio, ms per decoded token per exit; and the host check
    against this run's onnxruntime fp32 medians."""
    from mmedge.adapt.vlm_bench import generation_costs, host_check, price
    from mmedge.bench.costmodel import PROFILES, anchor_statement

    parts = generation_costs(bundle, prompt_tokens)
    devices = {d: {"description": PROFILES[d].description, "anchor_check": anchor_statement(d),
                   "fp32": price(parts, PROFILES[d]), "int8": price(parts, PROFILES[d], int8=True)} for d in DEVICES}
    got = summary.get("adapted onnxruntime fp32")
    checked = None
    if got is not None:
        measured = {"by_keep_ratio": {r: {k: v[k]["median"] for k in ("encode_ms", "first_token_ms")}
                                      for r, v in got["by_keep_ratio"].items()},
                    "decode_ms": {s: v["ms"]["median"] for s, v in got["decode"].items()}}
        manifest = json.loads((bundle / "manifest.json").read_text())
        checked = host_check(parts, measured, 1, manifest["model"]["adapt"]["dim"], prompt_tokens,
                             [layers[-1] + 1 for layers in manifest["layout"]["stage_layers"]])
    return {"label": "MODELLED, not measured", "devices": devices, "host_check": checked}


def counted_flops(bundle: Path, prompt_tokens: int) -> dict:
    """FLOPs counted by the cost model (onnx_tool) in the graphs each quantity runs: "encode R", "prefill R"
    per keep ratio R, "decode S" per exit stage S (a count, not a time)."""
    from mmedge.adapt.vlm_bench import generation_costs

    parts = generation_costs(bundle, prompt_tokens)
    return {k: float(sum(c.flops for graph in v for c in graph)) for k, v in parts.items()}


DEVICES = ("pixel-8", "galaxy-s23", "iphone-15-pro", "raspberry-pi-5")


def bundle_sizes(bundle: Path) -> dict:
    """MB per artifact (its own files) and of the whole bundle."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    sizes = {}
    for a in manifest["artifacts"]:
        files = {a["file"]} if "file" in a else {e["file"] for e in a["stages"].values()}
        if a.get("external_data"):
            files.add(a["external_data"])
        sizes[f"{artifact_backend(a)} {a['precision']}"] = sum((bundle / f).stat().st_size for f in files) / MB
    sizes["bundle"] = sum(f.stat().st_size for f in bundle.rglob("*") if f.is_file()) / MB
    return sizes


OPTIMUM_PROBE = r"""
import json, sys, importlib.metadata as md
out = {"versions": {p: md.version(p) for p in ("optimum-onnx", "optimum", "transformers")}, "evidence": {}}
def short(e):
    t = " ".join(str(e).split()).replace(sys.argv[1], "SOURCE")
    return f"{type(e).__name__}: {t[:400]}{' ...' if len(t) > 400 else ''}"
from optimum.exporters.onnx import main_export  # registers the ONNX configurations
from optimum.exporters.tasks import TasksManager
for model_type in ("llama", "smolvlm", "idefics3"):
    key = f"TasksManager.get_supported_tasks_for_model_type({model_type!r}, exporter='onnx')"
    try:
        out["evidence"][key] = sorted(TasksManager.get_supported_tasks_for_model_type(
            model_type, exporter="onnx", library_name="transformers"))
    except Exception as e:
        out["evidence"][key] = short(e)
try:
    main_export(sys.argv[1], output=sys.argv[2], task="image-text-to-text", device="cpu")
    out["evidence"]["main_export(task='image-text-to-text')"] = "exported"
except Exception as e:
    out["evidence"]["main_export(task='image-text-to-text')"] = short(e)
print("OPTIMUM-JSON " + json.dumps(out))
"""


def side_venv_json(python: Path, argv: list[str], marker: str) -> dict:
    """Run a probe in a side venv; its one line starting with `marker` is its JSON answer (machine paths into
    site-packages cut to the package's own)."""
    import re
    import subprocess

    got = subprocess.run([str(python), *argv], capture_output=True, text=True, cwd="/",
                         env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=3600)
    line = next((ln for ln in got.stdout.splitlines() if ln.startswith(marker + " ")), None)
    if line is None:
        return {"error": f"the probe failed (exit {got.returncode}): {got.stderr[-300:]}"}
    return json.loads(re.sub(r"[^\s\"']*site-packages/", "", line.split(" ", 1)[1]))


def optimum_probe(source: Path, work: Path) -> dict:
    """Ask optimum's ONNX exporter (its side venv, scripts/setup_optimum_venv.sh: it pins an older transformers)
    and optimum-executorch (benchmarks/optimum_executorch_probe.py in scripts/setup_optimum_executorch_venv.sh's
    venv: it pins another) to export the source."""
    result: dict = {}
    venv = Path(os.environ.get("MMEDGE_OPTIMUM_VENV", Path.home() / ".venvs" / "mmedge-optimum"))
    result["optimum_onnx"] = side_venv_json(venv / "bin" / "python", ["-c", OPTIMUM_PROBE, str(source),
                                                                      str(work / "optimum")], "OPTIMUM-JSON") \
        if (venv / "bin" / "python").exists() else {"error": "no optimum venv (bash scripts/setup_optimum_venv.sh)"}
    venv = Path(os.environ.get("MMEDGE_OPTIMUM_ET_VENV", Path.home() / ".venvs" / "mmedge-optimum-et"))
    result["optimum_executorch"] = side_venv_json(
        venv / "bin" / "python", [str(ROOT / "benchmarks" / "optimum_executorch_probe.py"), str(source),
                                  str(work / "optimum-executorch")], "OPTIMUM-ET-JSON") \
        if (venv / "bin" / "python").exists() else \
        {"error": "no optimum-executorch venv (bash scripts/setup_optimum_executorch_venv.sh)"}
    return result


# ---------------------------------------------------------------------------------------------- report
def ms(s: dict, digits: int = 1) -> str:
    return f"{s['median']:.{digits}f} [{s['p10']:.{digits}f}-{s['p90']:.{digits}f}]"


def markdown(r: dict) -> str:
    from tabulate import tabulate

    lines = ["# SmolVLM-256M at real size: adapt, export, the VLM runtime (random weights)", "",
             f"**{RANDOM}**", ""]
    src = r["source"]
    pp = src["parameters_by_part"]
    lines += [f"Source: `SmolVLMForConditionalGeneration`, {src['parameters'] / 1e6:.1f} M parameters (vision "
              f"{pp['vision'] / 1e6:.1f} M, connector {pp['connector'] / 1e6:.1f} M, decoder {pp['decoder'] / 1e6:.1f} M, "
              f"output head {pp['lm_head'] / 1e6:.1f} M, untied from the input embeddings); one 512 x 512 tile, no "
              "image splitting (SmolVLM's processor would add up to 4 x 4 more tiles of 64 tokens each for a large "
              f"image: the prefill grows with them, the encode by one tower pass per tile); prompt "
              f"\"{PROMPT}\" = {r['prompt_tokens']} tokens with the 64 image tokens.", ""]
    m = r["measure"]
    lines += [f"Measured on {r['machine']} (2 logical cores, shared with other work while this ran: compare "
              "configurations within this run only), batch 1, one thread (onnxruntime intra_op_num_threads=1; "
              f"ExecuTorch's thread pool sized 1), {r['versions']}. {r['rounds']} rounds after {r['warmup']} warm-up "
              "round(s); each configuration in its own process; in each round every configuration in an order "
              "rotated every round. Intervals: median [p10-p90] over rounds. MB = 10^6 bytes. `ort`: ONNX Runtime on "
              "the bundle's ORT-format copies (`mmedge export --ort-format`: one self-contained .ort file per graph), "
              "measured for the adapted model only (every configuration stays loaded during the rounds).", ""]
    variants = r["variants"]
    lines += ["## What was exported", ""]
    rows = []
    for name, v in variants.items():
        a = v["adapt"]
        rows.append([name, ", ".join(str(i + 1) for i in a["exit_layers"]), ", ".join(f"{x:g}" for x in a["keep_ratios"]),
                     f"{a['parameters'] / 1e6:.2f} M", f"{v['export']['seconds'] / 60:.0f} min",
                     f"{v['export']['transformers_identical_generations']:.0%}"])
    lines += [tabulate(rows, ["variant", "exits after decoder layers", "keep ratios", "parameters", "export (all)",
                              "PyTorch = transformers' generate()"], tablefmt="github"), ""]
    lines += ["Parity at export (`mmedge export`'s own check on the scenes' validation images at this size, greedy, "
              "16 new tokens, against the PyTorch model): share of identical generations per keep ratio.", ""]
    rows = []
    for name, v in variants.items():
        for art, par in v["export"]["parity"].items():
            if par:
                rows.append([name, art] + [f"{p['identical_generations']:.0%}" for p in par["by_keep_ratio"].values()]
                            + ["yes" if par.get("passed", True) else "no"])
    lines += [tabulate(rows, ["variant", "artifact", "keep 1.0", "keep 0.5", "keep 0.25", "passed"],
                       tablefmt="github"), ""]
    s = r["summary"]
    lines += ["## Time to first token", "",
              "Image encode: the vision graph (SigLIP tower, connector, prefilter scores), one graph for every keep "
              "ratio. Time to first token: encode, the runtime's top k, embeddings, the prefill of the prompt at full "
              "depth and the LM head (the runtime's own `generate`, one token). "
              "ms, median [p10-p90]; speed-up per round against keep 1.0 of the same configuration.", ""]
    rows = []
    for name, x in s.items():
        for ratio, v in x["by_keep_ratio"].items():
            rows.append([name, ratio, ms(v["encode_ms"], 0), ms(v["prefill_ms"], 0), ms(v["first_token_ms"], 0),
                         f"{v['first_token_speedup']['median']:.2f}x"])
    lines += [tabulate(rows, ["configuration", "keep", "image encode ms", "prefill ms", "first token ms",
                              "speed-up"], tablefmt="github"), ""]
    lines += ["## Decoding", "",
              f"ms per decoded token exiting after each exit ({DECODE_TOKENS} tokens per round; the graphs the runtime "
              "runs for such a token under a confidence policy: embeddings, the stages up to the exit with their "
              "confidences, the LM head at the exit, the copy-forward "
              "of the later layers' keys and values), tokens per second at the median, speed-up per round against "
              "full depth; and the runtime's own `generate` at full depth as the check.", ""]
    rows = []
    for name, x in s.items():
        for st, v in x["decode"].items():
            rows.append([name, v["exit_after_layer"], ms(v["ms"], 2), f"{v['tokens_per_s']:.1f}",
                         f"{v['speedup']['median']:.2f}x"])
        rows.append([name, "generate(), full", ms(x["generate_full_ms_per_token"], 2),
                     f"{1e3 / x['generate_full_ms_per_token']['median']:.1f}", ""])
    lines += [tabulate(rows, ["configuration", "exit after layer", "ms per token", "tokens/s", "speed-up"],
                      tablefmt="github"), ""]
    fl = r.get("flops", {})
    if fl:
        lines += ["FLOPs the graphs hold (counted by the cost model's onnx_tool on the fp32 ONNX graphs, for this "
                  "prompt: a count, not a time), per decoded token by exit and per prefill by keep ratio:", ""]
        rows = []
        for v, x in fl.items():
            lay = r["layouts"][v]
            for key, val in x.items():
                what, arg = key.split()
                label = (f"token, exit after layer {lay['stage_layers'][int(arg)][-1] + 1}" if what == "decode" else
                         f"{what}, keep {float(arg):g}")
                rows.append([v, label, f"{val / 1e6:,.1f}"])
        lines += [tabulate(rows, ["variant", "quantity", "MFLOPs"], tablefmt="github"), ""]
    vs = [(n, x["versus_unadapted"]) for n, x in s.items() if "versus_unadapted" in x]
    if vs:
        lines += ["Adapted at full depth against the unadapted model, same backend and precision, per round "
                  "(adapted / unadapted: above 1 is the cost of what adaptation adds when nothing is skipped):", ""]
        lines += [tabulate([[n, f"{v['first_token_keep1']['median']:.2f} [{v['first_token_keep1']['p10']:.2f}-"
                                f"{v['first_token_keep1']['p90']:.2f}]",
                             f"{v['decode_full_depth']['median']:.2f} [{v['decode_full_depth']['p10']:.2f}-"
                             f"{v['decode_full_depth']['p90']:.2f}]"] for n, v in vs],
                           ["configuration", "first token, keep 1.0", "ms per token, full depth"],
                           tablefmt="github"), ""]
    lines += ["## Load, memory, size", "",
              "Load: the bundle's hash check (every file of the bundle, all of its artifacts), opening the "
              "configuration's graphs, the engine's self-check (every graph once). RSS of the configuration's "
              "process.", ""]
    rows = []
    for name in s:
        ld, mem = m["load"][name], m["memory"][name]
        v, b, pr = name.split()
        rows.append([name, f"{ld['hash_check_ms']:.0f}", f"{ld['open_ms']:.0f}", f"{ld['self_check_ms']:.0f}",
                     f"{mem['rss_after_imports_mb']:.0f}", f"{mem['rss_after_load_mb']:.0f}", f"{mem['peak_rss_mb']:.0f}",
                     f"{r['sizes'][v][f'{b} {pr}']:.0f}"])
    lines += [tabulate(rows, ["configuration", "hash check ms", "open ms", "self-check ms", "RSS after imports MB",
                              "RSS after load MB", "peak RSS MB", "files MB"], tablefmt="github"), ""]
    lines += [", ".join(f"{v}: whole bundle {r['sizes'][v]['bundle']:.0f} MB" for v in r["sizes"])
              + " (every artifact and the tokenizer; an app ships one artifact).", ""]
    if m["failures"]:
        lines += ["Failed to load: " + "; ".join(f"{k}: {v}" for k, v in m["failures"].items()), ""]
    mod = r.get("modelled")
    if mod:
        lines += ["## Modelled phones", "", f"**{mod['label']}**: mmedge's cost model (mmedge.bench.costmodel) on the "
                  "adapted bundle's fp32 ONNX graphs, priced per device profile (int8: the profile's int8 rates; the "
                  "model has no int4 rates). ms.", ""]
        rows = []
        for d, v in mod["devices"].items():
            for prec in ("fp32", "int8"):
                x = v[prec]
                rows.append([d, prec] + [f"{x['by_keep_ratio'][k]['first_token_ms']:.0f}" for k in x["by_keep_ratio"]]
                            + [f"{x['decode_ms'][st]:.1f}" for st in x["decode_ms"]])
        first = next(iter(mod["devices"].values()))["fp32"]
        lines += [tabulate(rows, ["device", "precision"] + [f"first token, keep {k}" for k in first["by_keep_ratio"]]
                           + [f"ms/token, exit {r['layouts']['adapted']['stage_layers'][int(st)][-1] + 1}"
                              for st in first["decode_ms"]], tablefmt="github"), ""]
        lines += ["Held-out error of each profile against published phone latencies:", ""]
        lines += [f"- {d}: {v['anchor_check']}" for d, v in mod["devices"].items()] + [""]
        h = mod["host_check"]
        lines += [f"Host check: the host profile (calibrated on this machine) against this run's onnxruntime fp32 "
                  f"medians: median |error| {h['median_abs_error']:.0%}, max {h['max_abs_error']:.0%}.", ""]
        lines += [tabulate([[x["quantity"], f"{x['modelled_ms']:.1f}", f"{x['measured_ms']:.1f}", f"{x['error']:+.0%}"]
                            for x in h["rows"]], ["quantity", "modelled ms", "measured ms", "error"],
                           tablefmt="github"), ""]
    o = r.get("optimum") or {}
    exported = [name for name, ok in (
        ("optimum's ONNX exporter", o.get("optimum_onnx", {}).get("evidence", {}).get(
            "main_export(task='image-text-to-text')") == "exported"),
        ("optimum-executorch", any(o.get("optimum_executorch", {}).get(k, {}).get("outcome") == "exported"
                                   for k in ("smolvlm_class", "idefics3_class_local_image")))) if ok]
    lines += ["## optimum", "", "The unadapted model at full depth against optimum's exporters: each was asked to export "
              "the source model. " + (f"Exported by {', '.join(exported)} (not measured by this script)." if exported
                                      else "Neither exported it, so the unadapted model is mmedge's own export above."),
              ""]
    oo = o.get("optimum_onnx", {})
    if "error" in oo:
        lines += [f"- optimum's ONNX exporter: not asked ({oo['error']})."]
    else:
        v = oo["versions"]
        lines += [f"- optimum's ONNX exporter (optimum-onnx {v['optimum-onnx']}, optimum {v['optimum']}, transformers "
                  f"{v['transformers']}, its side venv):"]
        lines += [f"  - `{k}`: {val if isinstance(val, str) else ', '.join(val)}" for k, val in oo["evidence"].items()]
    oe = o.get("optimum_executorch", {})
    if "error" in oe:
        lines += [f"- optimum-executorch: not asked ({oe['error']})."]
    else:
        v = oe["versions"]
        lines += [f"- optimum-executorch {v['optimum-executorch']} (transformers {v['transformers']}, executorch "
                  f"{v['executorch']}, its side venv), `image-text-to-text` with the XNNPACK recipe:",
                  f"  - the SmolVLM class: {oe['smolvlm_class']['outcome']}"
                  + (f": `{oe['smolvlm_class']['error']}`" if "error" in oe["smolvlm_class"] else ""),
                  f"  - the same weights as `Idefics3ForConditionalGeneration` (image features equal to SmolVLM's: "
                  f"{oe['idefics3_same_image_features']}), its sample image local instead of fetched from the web: "
                  f"{oe['idefics3_class_local_image']['outcome']}"
                  + (f": `{oe['idefics3_class_local_image']['error']}`" if "error" in oe["idefics3_class_local_image"]
                     else "")]
    lines += [""]
    return "\n".join(lines) + "\n"


def plot(r: dict, path: Path) -> None:
    """Time to first token per keep ratio and ms per token per exit of the adapted model (circles) and the
    unadapted one at full depth (squares), medians with p10-p90 bars; no lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = r["summary"]
    names = [n for n in s if n.startswith("adapted")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        x = s[name]
        ratios = list(x["by_keep_ratio"])
        med = [x["by_keep_ratio"][k]["first_token_ms"]["median"] / 1e3 for k in ratios]
        lo = [m - x["by_keep_ratio"][k]["first_token_ms"]["p10"] / 1e3 for m, k in zip(med, ratios)]
        hi = [x["by_keep_ratio"][k]["first_token_ms"]["p90"] / 1e3 - m for m, k in zip(med, ratios)]
        axes[0].errorbar(np.arange(len(ratios)) + i * width, med, yerr=[lo, hi], fmt="o", capsize=3,
                         label=name.removeprefix("adapted "))
        stages = list(x["decode"])
        med = [x["decode"][st]["ms"]["median"] for st in stages]
        lo = [m - x["decode"][st]["ms"]["p10"] for m, st in zip(med, stages)]
        hi = [x["decode"][st]["ms"]["p90"] - m for m, st in zip(med, stages)]
        axes[1].errorbar(np.arange(len(stages)) + i * width, med, yerr=[lo, hi], fmt="o", capsize=3)
        plain = s.get(name.replace("adapted", "unadapted", 1))
        if plain is not None:  # the unadapted model, same backend and precision, one more position on each axis
            for ax, q, at in ((axes[0], plain["by_keep_ratio"]["1.0"]["first_token_ms"], len(ratios)),
                              (axes[1], plain["decode"]["0"]["ms"], len(stages))):
                scale = 1e3 if ax is axes[0] else 1.0
                ax.errorbar(at + i * width, q["median"] / scale, yerr=[[(q["median"] - q["p10"]) / scale],
                                                                       [(q["p90"] - q["median"]) / scale]],
                            fmt="s", capsize=3, color=f"C{i}")
    first = s[names[0]]
    unadapted = any(n.startswith("unadapted") for n in s)
    axes[0].set_xticks(np.arange(len(first["by_keep_ratio"]) + unadapted) + 0.4 - width / 2,
                       [f"keep {k}" for k in first["by_keep_ratio"]] + ["unadapted\nkeep 1.0"] * unadapted)
    axes[0].set_ylabel("time to first token, s (median, bar p10-p90)")
    axes[1].set_xticks(np.arange(len(first["decode"]) + unadapted) + 0.4 - width / 2,
                       [f"exit {v['exit_after_layer']}" for v in first["decode"].values()]
                       + ["unadapted\nfull depth"] * unadapted)
    axes[1].set_ylabel("ms per decoded token (median, bar p10-p90)")
    for ax in axes:
        ax.set_ylim(bottom=0)
    axes[0].legend(fontsize=7, loc="lower center", ncol=3)
    fig.suptitle("SmolVLM-256M architecture, RANDOM WEIGHTS, adapted: one thread on this machine", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)


def write(r: dict, out: Path, data: bool = True) -> list[Path]:
    """report.md and report.png (and results.json unless data is False) into `out`."""
    from mmedge.fileio import atomic_write

    out.mkdir(parents=True, exist_ok=True)
    if data:
        atomic_write(out / "results.json", lambda p: p.write_text(json.dumps(r, indent=1) + "\n"))
    atomic_write(out / "report.md", lambda p: p.write_text(markdown(r)))
    atomic_write(out / "report.png", lambda p: plot(r, p))
    return ([out / "results.json"] if data else []) + [out / "report.md", out / "report.png"]


# ---------------------------------------------------------------------------------------------- driver
def prepare(work: Path, variants: list[str], state: dict) -> None:
    """Steps 1-3, each skipped when its output is already in `work` (state: what they reported)."""
    source = work / "source"
    if not (source / "config.json").exists():
        log("building the random SmolVLM-256M source")
        state["source"] = build_source(source)
        (work / "source.json").write_text(json.dumps(state["source"]))
    state["source"] = json.loads((work / "source.json").read_text())
    for name in variants:
        folder, bundle = work / f"{name}-model", work / f"{name}.mmedge"
        if not (folder / "config.json").exists():
            log(f"adapting ({name}): {VARIANTS[name]}")
            (work / f"{name}-adapt.json").write_text(json.dumps(adapt(source, folder, VARIANTS[name])))
        if not (bundle / "manifest.json").exists():
            log(f"exporting ({name})")
            (work / f"{name}-export.json").write_text(json.dumps(export(folder, bundle)))
        state.setdefault("variants", {})[name] = {
            "adapt": {**VARIANTS[name], **json.loads((work / f"{name}-adapt.json").read_text())},
            "export": json.loads((work / f"{name}-export.json").read_text())}


def versions() -> str:
    from mmedge.bench.machine import describe

    libs = describe()["libraries"]
    return f"onnxruntime {libs['onnxruntime']}, executorch {libs['executorch']}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/vlm_scale"))
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--prepare-only", action="store_true", help="build, adapt and export; measure nothing")
    p.add_argument("--report-only", action="store_true", help="the Markdown and PNG again from the JSON in --out")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker, args.work)
        return 0
    if args.report_only:
        r = json.loads((args.out / "results.json").read_text())
        for path in write(r, args.out, data=False):
            print(rel(path))
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    state: dict = {}
    prepare(args.work, args.variants, state)
    if args.prepare_only:
        return 0
    from mmedge.bench.machine import describe

    layouts = {v: json.loads((args.work / f"{v}.mmedge" / "manifest.json").read_text())["layout"]
               for v in args.variants}
    measured = measure(args.work, configurations(args.variants), args.rounds, args.warmup)
    summary = summarise(measured, layouts)
    r = {"label": RANDOM, "architecture": ARCH, "source": state["source"], "variants": state["variants"],
         "layouts": layouts, "machine": describe()["cpu"],
         "versions": versions(), "rounds": args.rounds, "warmup": args.warmup,
         "prompt": PROMPT, "prompt_tokens": measured["prompt_tokens"], "decode_tokens": DECODE_TOKENS,
         "measure": measured, "summary": summary,
         "sizes": {v: bundle_sizes(args.work / f"{v}.mmedge") for v in args.variants}}
    if "adapted" in args.variants:
        log("modelled phones")
        r["modelled"] = modelled(args.work / "adapted.mmedge", summary, measured["prompt_tokens"])
    log("counting FLOPs")
    r["flops"] = {v: counted_flops(args.work / f"{v}.mmedge", measured["prompt_tokens"]) for v in args.variants}
    log("asking optimum")
    r["optimum"] = optimum_probe(args.work / "source", args.work)
    for path in write(r, args.out):
        print(rel(path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

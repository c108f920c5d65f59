"""Every example command in the docs runs, page by page, in order, and exits 0.

tests/test_docs.py checks that each documented `mmedge ...` command *parses*; this module *runs*
them. The commands are every line of the ```bash (sh, shell, console) blocks of README.md and the
hand-written docs pages, plus the lines of plain ``` blocks that start with a program (the README's
first block). Pages run in reading order (README.md, then mkdocs.yml's nav) in one temporary
workspace, so what a page builds (runs/mine, runs/demo/vqa-default.mmedge, keys/, scene.png, ...) is
there for the commands and pages after it, as for a reader who follows the docs in one folder.

The workspace holds what a checkout holds that the commands read: models/ (the shipped models,
linked read-only; configs/ as scaled copies, see below), export/ (the recipes, linked), and the
datasets the commands name (`--data NAME:ROOT`), written at those relative paths by
tests/dataset_fixtures.py in the official layouts from generated scenes. Anything a command writes
lands in the workspace. Before a page runs, an output of one of its commands (--out, --json,
--new-key) that an earlier page made is moved aside to _earlier/, so that a page repeating an
earlier page's command (data.md after the README) writes its own copy instead of meeting the first
one; within a page, outputs chain (train -> eval -> export -> calibrate -> bench, --resume).

`mmedge ...` commands run in-process (mmedge.cli.main(argv), the console script's function) with
the workspace as the working directory; others (torchrun, python SCRIPT) run as processes.

Budgets are scaled down by the rewrite rules below (RULES), each printed with the command it
changed; nothing else about a command changes. Commands that cannot run here are in SKIP, with the
reason; a SKIP entry that matches no documented command fails the test (no stale skips), as does a
rewrite rule that applies to no command.

Exports dominate the cost: an export traces and lowers one graph per stage and keep ratio for
every target, whatever the model's width (the shipped VQA model's full export, `mmedge demo`'s, takes
about 7 minutes on two cores; the captioner's about 4). Three measures keep that down:
- exports (and demos) of the shipped models use stand-ins cut to two layers (rule "stand-in"): 4
  stage graphs per target instead of 12, the captioner 7 instead of 13;
- the training configs, and the built-in data recipe, are scaled copies (CONFIG_BUDGET,
  MODEL_BUDGET: the same fields, a two-layer 32-wide model, keep ratios 1.0 and 0.25), so every
  model the pages train and then export is as small;
- an export identical to one already made in the run (same model files, recipe, key) is copied from
  that one (export_shortcuts): the demo with another --out, the captioner's demo after its export.
Even so the run is long: 25 minutes here (91 commands run, 17 skipped; two cores shared with other
work), nine tenths of it in the 19 export and demo commands. With -s every command is printed with
its time as it runs, and the slowest at the end. Every page is a separate test, marked slow; a
failing page does not stop the pages after it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_docs import DOCS, FENCE, GEN, README, ROOT, mmedge_argv, nav_pages

pytestmark = pytest.mark.slow

PROGRAMS = ("mmedge", "python", "python3", "torchrun", "bash", "pip", "npm")
COMMAND_BLOCKS = ("bash", "sh", "shell", "console")

# ------------------------------------------------------------------------------------------------
# Commands that cannot run here: (page, documented command) -> why. Every entry must still match a
# documented command.
SKIP = {
    ("README.md", "bash scripts/setup.sh"): "installs torch and the package (network, minutes); the test runs in "
                                            "the environment it made",
    ("README.md", "bash scripts/test.sh"): "runs every suite, this one included (recursion); CI runs it",
    ("docs/index.md", "bash scripts/setup.sh"): "installs torch and the package (network, minutes)",
    ("docs/getting-started.md", "bash scripts/setup.sh"): "installs torch and the package (network, minutes)",
    ("docs/getting-started.md", "bash scripts/test.sh"): "runs every suite, this one included (recursion)",
    ("docs/getting-started.md", "pip install -e '.[runtime]'"): "installs into the environment (network)",
    ("docs/getting-started.md", "pip install -e '.[sign]'"): "installs into the environment (network)",
    ("docs/getting-started.md", "pip install -e '.[train,export]'"): "installs into the environment (network)",
    ("docs/getting-started.md", "pip install -e '.[adapt]'"): "installs into the environment (network)",
    ("docs/getting-started.md", "pip install -e '.[docs]'"): "installs into the environment (network)",
    ("docs/guides/runtimes.md", "npm install @mmedge/runtime onnxruntime-node"): "npm registry (network); "
        "scripts/test_js.sh tests runtimes/js on onnxruntime-node",
    ("docs/guides/runtimes.md", "npm install @mmedge/runtime onnxruntime-web"): "npm registry (network); "
        "scripts/test_web.sh tests the web demo on onnxruntime-web",
    ("docs/guides/runtimes.md", "npm install @mmedge/runtime onnxruntime-react-native"): "npm registry (network)",
    ("docs/guides/benchmarking.md", "mmedge bench --artifact runs/mine/mine.mmedge --device pixel --data "
     "jsonl:/data/mine"): "needs an attached phone (without one, --data is refused: tests/test_bench.py runs it "
                          "against an adb stand-in)",
    ("docs/guides/calibration.md", "mmedge calibrate --artifact vilt.mmedge --labels teacher --max-drop 0.01"):
        "the adapted bundle is made on docs/adapt.md, later in reading order, which runs `mmedge calibrate "
        "--artifact vilt.mmedge --labels teacher` on it",
    ("docs/guides/benchmarking.md", "python benchmarks/run_benchmarks.py"): "about 10 minutes of measurements "
        "(an export of the shipped model, fresh processes) that rewrite the committed benchmarks/results/",
    ("docs/guides/benchmarking.md", "python benchmarks/run_benchmarks.py --quick"): "about 3 minutes on a quiet "
        "machine, and it rewrites the committed benchmarks/results/ (tests/test_reports.py regenerates them)",
}

# ------------------------------------------------------------------------------------------------
# Budget rewrites. Each rule: (name, why, function(page, argv) -> new argv or None when it does not
# apply). They are applied in order and every change is printed next to the documented command.
STANDINS = {"models/vqa-default": "standin/vqa-default",          # make_standin
            "models/caption-default": "standin/caption-default"}  # make_caption_standin
DECISIVE_STEPS = 200              # see rule "steps": models exported to int8 later
DECISIVE_OUTS = ("runs/mine", "runs/vqa2", "runs/vqa")  # trained here, later exported with --quantize int8


def _set(argv: list[str], flag: str, value: str) -> list[str]:
    """argv with `flag value` set: the documented value replaced, or the flag appended."""
    argv = list(argv)
    if flag in argv:
        argv[argv.index(flag) + 1] = value
    else:
        argv += [flag, value]
    return argv


def _value(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv and argv.index(flag) + 1 < len(argv) else None


def _verb(argv: list[str]) -> str | None:
    return argv[0] if argv else None


def _is_caption(argv: list[str]) -> bool:
    return _value(argv, "--model") == "models/caption-default" or _value(argv, "--task") == "caption" or \
        "caption" in (_value(argv, "--config") or "")


def rule_steps(page, argv):
    if _verb(argv) not in ("train", "pretrain", "adapt"):
        return None
    steps = str(DECISIVE_STEPS) if _value(argv, "--out") in DECISIVE_OUTS else "2"
    for budget in ("--minutes", "--epochs"):  # another budget gives way to the step count (argparse: one of them)
        if budget in argv:
            i = argv.index(budget)
            argv = argv[:i] + argv[i + 2:]
    return _set(argv, "--steps", steps)


def rule_adapt_batch(page, argv):
    return _set(argv, "--batch-size", "4") if _verb(argv) == "adapt" else None


def rule_eval_limit(page, argv):
    return _set(argv, "--limit", "16") if _verb(argv) == "eval" else None


def rule_calibrate_samples(page, argv):
    if _verb(argv) != "calibrate":
        return None
    return _set(argv, "--samples", "20" if "caption" in (_value(argv, "--artifact") or "") else "100")


def rule_demo_samples(page, argv):
    if _verb(argv) != "demo":
        return None
    argv = _set(argv, "--samples", "4")
    return _set(argv, "--calibration-samples", "20" if _is_caption(argv) else "100")


def rule_bench_samples(page, argv):
    if _verb(argv) != "bench" or _value(argv, "--device") not in (None, "host"):
        return None
    return _set(_set(_set(argv, "--samples", "4"), "--repeats", "1"), "--warmup", "1")


def rule_probe_samples(page, argv):
    return _set(argv, "--samples", "64") if _verb(argv) == "probe" else None


def rule_standin(page, argv):
    if _verb(argv) not in ("export", "demo"):
        return None
    model = _value(argv, "--model")
    if model is None and _verb(argv) == "demo":  # the demo's default model is the shipped one
        model = "models/vqa-default"
    return _set(argv, "--model", STANDINS[model]) if model in STANDINS else None


def rule_absolute_data(page, argv):
    out = [re.sub(r"^(\w+):/data/", r"\1:data/", a) for a in argv]
    return out if out != argv else None


def rule_torchrun_port(page, head):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [head[0], "--master_port", str(port), *head[1:]]


RULES = [
    ("steps", f"--steps 2 for train, pretrain and adapt, in place of --minutes or --epochs (added when the command "
              f"has none: the configs ask for "
              f"300 to 10000); {DECISIVE_STEPS} for the models that a later command exports with --quantize int8 "
              f"({', '.join(DECISIVE_OUTS)}): after 2 steps their logits are near-tied and int8 flips answers, "
              "which the export's int8 check rightly refuses", rule_steps),
    ("adapt batch", "--batch-size 4 for adapt (default 32: the fixtures hold a few dozen records)", rule_adapt_batch),
    ("eval limit", "--limit 16 for eval (default 2000)", rule_eval_limit),
    ("calibrate samples", "--samples 100 for calibrate (the least it accepts; default 1000), 20 images for a "
                          "captioning bundle (its least)", rule_calibrate_samples),
    ("demo samples", "--samples 4 --calibration-samples 100 for demo (default 300 and 1000; the captioner: 20 "
                     "calibration images, its least)", rule_demo_samples),
    ("bench samples", "--samples 4 --repeats 1 --warmup 1 for bench --device host (default 200, 3, 20)",
     rule_bench_samples),
    ("probe samples", "--samples 64 for probe (default 1000)", rule_probe_samples),
    ("stand-in", "export and demo of a shipped model (models/vqa-default, the demo's default, and "
                 "models/caption-default) use its stand-in under standin/: the shipped model cut to its first two "
                 "layers (decoder layers for the captioner) with the same weights, exits, prefilter and tokenizer "
                 "(make_standin, make_caption_standin), because an export traces and lowers every stage graph for "
                 "every target: 7 minutes for the shipped VQA model's full export on two cores, 4 for the "
                 "captioner's", rule_standin),
    ("absolute data", "NAME:/data/X becomes NAME:data/X (the fixtures are written inside the workspace)",
     rule_absolute_data),
    ("torchrun port", "torchrun gets a free --master_port (29500, its default, may be taken on a shared machine)",
     rule_torchrun_port),
]

# Training configs: models/configs/**.json in the workspace are copies with these fields scaled
# (every other field as committed), and so is the built-in data recipe that `mmedge train --data
# NAME:ROOT` uses without --config (mmedge/train/data-recipe.json, pointed at its copy while a
# command runs). "model" keeps every architecture field but its size.
CONFIG_BUDGET = {"batch_size": 8, "eval_every": 10_000, "eval_samples": 16, "checkpoint_every": 10_000,
                 "warmup_steps": 1, "log_every": 10, "snapshot_every": 10_000, "train_keep_ratios": [1.0, 0.25]}
MODEL_BUDGET = {"dim": 32, "depth": 2, "num_heads": 2, "encoder_depth": 1, "decoder_depth": 2, "image_size": 48,
                "keep_ratios": [1.0, 0.25]}

# Recipe fields without a flag: the export's own validation sample counts (an ExportRecipe field;
# `--parity-samples` is left as documented). Applied by wrapping export_bundle, printed when used.
EXPORT_SAMPLES = {"accuracy_samples": 100, "drop_visual_samples": 100}

# Datasets named by the commands, written at their relative path: NAME -> (writer, {split: size}).
# Calibration needs at least 100 validation records whose answer is one of the model's labels (the
# training split's answers): 160 training records give every answer, 130 validation records leave
# 100 and more.
def _datasets():
    from dataset_fixtures import make_cc, make_coco, make_gqa, make_jsonl, make_nlvr2, make_vqa2

    return {"jsonl": (make_jsonl, {"train": 160, "val": 130, "test": 16}),
            "vqa2": (make_vqa2, {"train": 160, "val": 130}),
            "gqa": (make_gqa, {"train": 32, "val": 16}),
            "nlvr2": (make_nlvr2, {"train": 6, "dev": 4}),
            "coco": (make_coco, {"train": 24, "val": 24}),
            "cc": (make_cc, {"train": 16, "val": 8})}


# The Hugging Face ViLT folders the docs adapt (`--from ./vilt-b32-finetuned-vqa`, the README's ./my-vilt-vqa): tiny
# random ViLTs of the same class written with save_pretrained (tests/test_adapt.py), no download.
VILT_SOURCES = {"vilt-b32-finetuned-vqa": "vqa", "vilt-b32-finetuned-nlvr2": "nlvr2",
                "vilt-b32-finetuned-coco": "retrieval", "my-vilt-vqa": "vqa"}
# The SmolVLM folder docs/adapt.md adapts (`--from ./my-smolvlm`): a tiny random SmolVLMForConditionalGeneration
# with SmolVLM's chat template and image processor, written with save_pretrained (tests/test_adapt_vlm.py).
SMOLVLM_SOURCES = ("my-smolvlm",)


# ------------------------------------------------------------------------------------------------ pages
@dataclasses.dataclass
class Command:
    page: str
    text: str            # as documented, re-quoted by shlex.join (continuations joined, comment dropped)
    words: list[str]


def page_order() -> list[Path]:
    """README.md, then the hand-written pages in mkdocs.yml's nav order (any page not in it last)."""
    nav = nav_pages()  # external links left out: they name no file
    pages = sorted(p for p in DOCS.rglob("*.md") if GEN not in p.parents)
    rank = {DOCS / p: i for i, p in enumerate(nav)}
    return [README, *sorted(pages, key=lambda p: (rank.get(p, len(rank)), str(p)))]


def page_commands(path: Path) -> list[Command]:
    """The commands of a page: every line of its bash blocks (continuations joined, `&&` / `;` chains
    split, comments dropped), and the lines of plain ``` blocks that start with a program."""
    out = []
    page = str(path.relative_to(ROOT))
    for m in FENCE.finditer(path.read_text(encoding="utf-8")):
        lang = m.group(2)
        if lang not in COMMAND_BLOCKS and lang != "":
            continue
        for line in re.sub(r"\\\n\s*", " ", m.group(3)).splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if lang == "" and not re.match(rf"({'|'.join(PROGRAMS)})\s", line):
                continue  # a layout or output listing
            words = shlex.split(line, comments=True)
            part: list[str] = []
            for w in [*words, "&&"]:
                if w in ("&&", ";"):
                    if part:
                        assert part[0] in PROGRAMS, f"{page}: `{line}`: unknown program {part[0]!r}"
                        out.append(Command(page, shlex.join(part), part))
                    part = []
                else:
                    part.append(w)
    return out


def all_commands() -> list[Command]:
    return [c for p in page_order() for c in page_commands(p)]


def rewrite(command: Command) -> tuple[list[str], list[str]]:
    """The words to run and the names of the rules that changed them. Rules see the arguments after
    `mmedge` (also after `torchrun ... -m mmedge`); the torchrun rule sees the words before them."""
    words = list(command.words)
    argv = mmedge_argv(command.text)
    if argv is None:
        return words, []
    head, used = words[:len(words) - len(argv)], []
    for name, _, fn in RULES:
        if name == "torchrun port":
            new = fn(command.page, head) if head[:1] == ["torchrun"] else None
            if new is not None:
                head, used = new, used + [name]
            continue
        new = fn(command.page, argv)
        if new is not None and new != argv:
            argv, used = new, used + [name]
    return head + argv, used


# ------------------------------------------------------------------------------------------------ workspace
def scaled_config(data: dict) -> dict:
    data = dict(data)
    for key, value in CONFIG_BUDGET.items():
        if key in data:
            data[key] = value
    data["threads"] = 1  # one torch thread: the machine's cores are shared (every config class has the field)
    if isinstance(data.get("model"), dict):
        data["model"] = {k: MODEL_BUDGET.get(k, v) for k, v in data["model"].items()}
    return data


def make_standin(target: Path, depth: int = 2, keep_ratios=(1.0, 0.25)) -> None:
    """models/vqa-default cut to its first `depth` layers: same embeddings, prefilter, exit heads
    (the first `depth`), tokenizer and labels; the stages a bundle of it holds are the shipped
    model's first ones. Its exported keep ratios are 1.0 and 0.25 (of the shipped 1.0, 0.5, 0.25):
    the two of the shipped web bundle, and 0.25 is what the shipped demo bundle calibrates to, so that
    `mmedge bundle ... --keep-ratio 1.0 0.25` keeps the calibrated one as it does for the shipped
    model (a 0.5 left out saves a third of every export)."""
    import dataclasses as dc

    from mmedge.models.checkpoint import from_pretrained, save_pretrained
    from mmedge.models.model import AdaptiveVLModel

    model, tokenizer = from_pretrained(ROOT / "models" / "vqa-default")
    cut = AdaptiveVLModel(dc.replace(model.config, depth=depth, keep_ratios=list(keep_ratios)))
    state = {k: v for k, v in model.state_dict().items() if k in cut.state_dict()}
    missing = set(cut.state_dict()) - set(state)
    assert not missing, missing
    cut.load_state_dict(state)
    save_pretrained(cut.eval(), tokenizer, target)


def make_caption_standin(target: Path, decoder_depth: int = 2) -> None:
    """models/caption-default cut to its first `decoder_depth` decoder layers: the same encoder,
    prefilter, embeddings, head, tokenizer and the first exits (7 graphs per target instead of 13)."""
    import dataclasses as dc

    from mmedge.caption.checkpoint import load_caption_model, save_caption_model
    from mmedge.caption.model import CaptionModel

    model, tokenizer = load_caption_model(ROOT / "models" / "caption-default")
    cut = CaptionModel(dc.replace(model.config, decoder_depth=decoder_depth))
    state = {k: v for k, v in model.state_dict().items() if k in cut.state_dict()}
    missing = set(cut.state_dict()) - set(state)
    assert not missing, missing
    cut.load_state_dict(state)
    save_caption_model(cut.eval(), tokenizer, target)


def dataset_roots(commands: list[Command]) -> set[tuple[str, str]]:
    found = set()
    for c in commands:
        words, _ = rewrite(c)
        for w in words:
            m = re.match(r"^(jsonl|vqa2|gqa|nlvr2|coco|cc):(.+)$", w)
            if m:
                found.add((m.group(1), m.group(2)))
    return found


def build_workspace(root: Path, commands: list[Command]) -> None:
    models = root / "models"
    models.mkdir(parents=True)
    for entry in sorted((ROOT / "models").iterdir()):
        if entry.name != "configs":
            (models / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    for path in sorted((ROOT / "models" / "configs").rglob("*.json")):
        target = models / "configs" / path.relative_to(ROOT / "models" / "configs")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(scaled_config(json.loads(path.read_text())), indent=1))
    import mmedge.train.config as train_config

    if hasattr(train_config, "DATA_RECIPE"):  # the built-in recipe of `mmedge train --data NAME:ROOT` without --config
        recipe = root / "_budget" / Path(train_config.DATA_RECIPE).name
        recipe.parent.mkdir()
        recipe.write_text(json.dumps(scaled_config(json.loads(Path(train_config.DATA_RECIPE).read_text())), indent=1))
    (root / "export").symlink_to(ROOT / "export", target_is_directory=True)
    make_standin(root / STANDINS["models/vqa-default"])
    make_caption_standin(root / STANDINS["models/caption-default"])
    writers = _datasets()
    for name, rel in sorted(dataset_roots(commands)):
        writer, splits = writers[name]
        for split, n in splits.items():
            writer(root / rel, n, split)
    needed = {w.lstrip("./") for c in commands for w in c.words}
    for folder, task in VILT_SOURCES.items():
        if folder in needed:
            from test_adapt import make_source

            make_source(root / folder, task, layers=2)
    for folder in SMOLVLM_SOURCES:
        if folder in needed:
            from test_adapt_vlm import make_source as make_smolvlm

            make_smolvlm(root / folder, layers=2)


# ------------------------------------------------------------------------------------------------ running
def outputs(argv: list[str]) -> list[str]:
    return [v for f in ("--out", "--json", "--new-key") if (v := _value(argv, f))]


def _model_digest(model_dir) -> str:
    h = hashlib.sha256()
    for p in sorted(Path(model_dir).rglob("*")):
        if p.is_file() and "checkpoint" not in p.parts:
            h.update(str(p.relative_to(model_dir)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def _memo_key(model_dir, args: dict, sign_key) -> str:
    return json.dumps([_model_digest(model_dir), args, Path(sign_key).read_bytes().hex() if sign_key else None],
                      sort_keys=True, default=str)


@contextlib.contextmanager
def export_shortcuts(log: list[str], made: dict[str, Path], store: Path):
    """The two exporters (classifier: export_bundle; captioner: export_caption_bundle) with
    - the recipe's own validation sample counts capped (EXPORT_SAMPLES; recipe fields, no flag);
    - an export identical to one made earlier in this run (same model files, same recipe or
      arguments, same key and release sequence) copied from a pristine copy of that one: `mmedge demo
      --out runs/demo-2pt` exports exactly what `mmedge demo` did, and the captioner's demo exactly
      what `mmedge export --model models/caption-default --quantize int8` did."""
    import inspect

    import mmedge.caption.demo as caption_demo
    import mmedge.caption.export as caption_export
    import mmedge.export.exporter as exporter

    real_export, real_caption = exporter.export_bundle, caption_export.export_caption_bundle

    def memoised(key: str, out, force: bool, run):
        out = Path(out)
        first = made.get(key)
        if first is not None and (not out.exists() or force):
            if out.exists():
                shutil.rmtree(out)
            shutil.copytree(first, out, symlinks=True)
            log.append(f"the same export as an earlier command's: copied from it ({first.name})")
            return out
        result = run()
        keep = store / str(len(made))  # pristine: later commands calibrate and sign `out`
        shutil.copytree(out, keep, symlinks=True)
        made[key] = keep
        return result

    def export_bundle(model_dir, out, recipe, *args, **kwargs):
        capped = {k: v for k, v in EXPORT_SAMPLES.items() if getattr(recipe, k) > v and
                  (k != "drop_visual_samples" or recipe.drop_visual_after is not None)}  # else refused as unused
        if capped:
            recipe = dataclasses.replace(recipe, **capped)
            log.append(f"export's validation samples capped: {capped}")
        key = _memo_key(model_dir, {"recipe": recipe.to_dict(), "release": kwargs.get("release_sequence")},
                        kwargs.get("sign_key"))
        return memoised(key, out, kwargs.get("force", False),
                        lambda: real_export(model_dir, out, recipe, *args, **kwargs))

    def export_caption_bundle(model_dir, out, *args, **kwargs):
        bound = inspect.signature(real_caption).bind(model_dir, out, *args, **kwargs)
        bound.apply_defaults()
        given = {k: v for k, v in bound.arguments.items() if k not in ("model_dir", "out", "force", "log")}
        key = _memo_key(model_dir, {"caption": {k: list(v) if isinstance(v, tuple) else v for k, v in given.items()}},
                        given.get("sign_key"))
        return memoised(key, out, bound.arguments["force"],
                        lambda: real_caption(model_dir, out, *args, **kwargs))

    exporter.export_bundle = export_bundle
    caption_export.export_caption_bundle = caption_demo.export_caption_bundle = export_caption_bundle
    try:
        yield
    finally:
        exporter.export_bundle = real_export
        caption_export.export_caption_bundle = caption_demo.export_caption_bundle = real_caption


@contextlib.contextmanager
def scaled_data_recipe(root: Path):
    """mmedge.train.config.DATA_RECIPE pointed at its scaled copy in the workspace (build_workspace)."""
    import mmedge.train.config as train_config

    scaled = root / "_budget" / Path(getattr(train_config, "DATA_RECIPE", "none")).name
    if not scaled.is_file():
        yield
        return
    real = train_config.DATA_RECIPE
    train_config.DATA_RECIPE = scaled
    try:
        yield
    finally:
        train_config.DATA_RECIPE = real


def without_adb(env: dict) -> dict:
    """No phone attached: `--device pixel` gives the modelled figures, as the page says."""
    env = dict(env)
    env.pop("MMEDGE_ADB", None)
    env["PATH"] = os.pathsep.join(d for d in env.get("PATH", "").split(os.pathsep)
                                  if d and not (Path(d) / "adb").exists())
    return env


def run_in_process(argv: list[str]) -> tuple[int, str]:
    import torch

    from mmedge.cli import main

    threads = torch.get_num_threads()
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            try:
                rc = main(argv)
            except SystemExit as exc:  # argparse
                rc = exc.code if isinstance(exc.code, int) else 1
    finally:
        torch.set_num_threads(threads)
    return rc, buf.getvalue()


def run_process(words: list[str], cwd: Path, timeout: float = 600) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(
        os.pathsep), "OMP_NUM_THREADS": "1"}
    if words[0] == "torchrun":
        words = [sys.executable, "-m", "torch.distributed.run", *words[1:]]
    elif words[0] in ("python", "python3"):
        words = [sys.executable, *words[1:]]
    done = subprocess.run(words, cwd=cwd, env=without_adb(env), capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stdout + done.stderr


@dataclasses.dataclass
class Result:
    command: Command
    ran: list[str] | None      # None: skipped
    rules: list[str]
    rc: int | None
    seconds: float
    output: str
    notes: list[str]


class Workspace:
    def __init__(self, root: Path):
        self.root = root
        self.commands = all_commands()
        self.pages = [str(p.relative_to(ROOT)) for p in page_order()]
        self.results: dict[str, list[Result]] = {}
        self.exports: dict[str, Path] = {}
        self.started = time.perf_counter()
        build_workspace(root, self.commands)
        self.setup_s = time.perf_counter() - self.started

    def run_through(self, page: str) -> list[Result]:
        for p in self.pages[:self.pages.index(page) + 1]:
            if p not in self.results:
                self.results[p] = self._run_page(p)
        return self.results[page]

    def _move_aside(self, page: str, commands: list[Command]) -> None:
        for c in commands:
            if (c.page, c.text) in SKIP:
                continue
            words, _ = rewrite(c)
            for rel in outputs(words):
                path = self.root / rel
                if os.path.lexists(path):
                    dest = self.root / "_earlier" / page.replace("/", "_") / rel
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.move(str(path), str(dest))

    def _run_page(self, page: str) -> list[Result]:
        commands = [c for c in self.commands if c.page == page]
        self._move_aside(page, commands)
        results = []
        cwd, environ = os.getcwd(), dict(os.environ)
        os.chdir(self.root)
        os.environ.clear()
        os.environ.update(without_adb(environ))
        try:
            for c in commands:
                if (c.page, c.text) in SKIP:
                    results.append(Result(c, None, [], None, 0.0, "", []))
                    continue
                words, rules = rewrite(c)
                notes: list[str] = []
                t = time.perf_counter()
                mm = mmedge_argv(shlex.join(words))
                if words[0] == "mmedge" and mm is not None:
                    with export_shortcuts(notes, self.exports, self.root / "_exports"), scaled_data_recipe(self.root):
                        rc, output = run_in_process(mm)
                else:
                    rc, output = run_process(words, self.root)
                results.append(Result(c, words, rules, rc, time.perf_counter() - t, output, notes))
                print(f"[{time.perf_counter() - t:6.1f} s] rc={rc} {page}: {c.text}" +
                      (f"\n           ran: {shlex.join(words)}  ({', '.join(rules)})" if rules else "") +
                      "".join(f"\n           {n}" for n in notes), flush=True)
        finally:
            os.chdir(cwd)
            os.environ.clear()
            os.environ.update(environ)
        return results


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    ws = Workspace(tmp_path_factory.mktemp("docs_run"))
    yield ws
    ran = [r for rs in ws.results.values() for r in rs if r.ran is not None]
    skipped = [r for rs in ws.results.values() for r in rs if r.ran is None]
    print(f"\ndocs run: {len(ran)} commands ran, {len(skipped)} skipped, on {len(ws.results)} pages, in "
          f"{time.perf_counter() - ws.started:.0f} s (workspace {ws.setup_s:.0f} s); slowest:")
    for r in sorted(ran, key=lambda r: -r.seconds)[:12]:
        print(f"  {r.seconds:6.1f} s  {r.command.page}: {r.command.text}")


PAGES_WITH_COMMANDS = [str(p.relative_to(ROOT)) for p in page_order() if page_commands(p)]


@pytest.mark.skipif(os.environ.get("MMEDGE_DOCS_RUN") != "1",
                    reason="about 25 minutes on two cores (19 exports dominate), over the suite's budget: "
                           "MMEDGE_DOCS_RUN=1 python -m pytest tests/test_docs_run.py runs it")
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("page", PAGES_WITH_COMMANDS)
def test_every_command_of_the_page_runs(workspace, page):
    results = workspace.run_through(page)
    failed = [r for r in results if r.ran is not None and r.rc != 0]
    assert not failed, "\n\n".join(
        f"{r.command.page}: `{r.command.text}`\n  ran `{shlex.join(r.ran)}` ({', '.join(r.rules) or 'as documented'})"
        f"\n  exit code {r.rc}; output ends:\n" + "\n".join("    " + ln for ln in r.output.strip().splitlines()[-25:])
        for r in failed)


def test_skips_and_rules_match_documented_commands():
    commands = all_commands()
    documented = {(c.page, c.text) for c in commands}
    stale = sorted(set(SKIP) - documented)
    assert not stale, f"SKIP entries that match no documented command (remove them): {stale}"
    used = {name for c in commands if (c.page, c.text) not in SKIP for name in rewrite(c)[1]}
    unused = [name for name, _, _ in RULES if name not in used]
    assert not unused, f"rewrite rules that change no documented command (remove them): {unused}"
    outs = {_value(c.words[c.words.index("train"):], "--out") for c in commands if "train" in c.words}
    assert set(DECISIVE_OUTS) <= outs, f"DECISIVE_OUTS names no documented training: {set(DECISIVE_OUTS) - outs}"
    for folder in (*VILT_SOURCES, *SMOLVLM_SOURCES):
        assert any(folder in w for c in commands for w in c.words), f"{folder} (a source folder) is not documented"


def test_commands_are_found_on_every_page_that_has_a_bash_block():
    for path in page_order():
        text = path.read_text(encoding="utf-8")
        if any(m.group(2) in COMMAND_BLOCKS for m in FENCE.finditer(text)):
            assert page_commands(path), f"{path.relative_to(ROOT)}: a bash block but no command found"
    assert len(all_commands()) > 60

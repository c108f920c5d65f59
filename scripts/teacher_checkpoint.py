"""What the teacher-training scripts (train_vilt_teacher.py, train_smolvlm_teacher.py) share: resumable
checkpoints (the state of every part -- model, optimizer, schedule, training-only heads -- and the step, in one
safetensors file: tensors as tensors, everything else as JSON in its metadata; written to a temporary file and
renamed into place; nothing is unpickled), the saved teacher folder, and the command-line options.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from mmedge.train.trainer import optimizer_tensors, restore_optimizer

CHECKPOINT = "checkpoint.safetensors"


def save_checkpoint(path: Path, step: int, **parts) -> None:
    """parts: name -> a module (its tensors), an optimizer (its tensors and param groups, and torch's RNG
    state) or anything else with a JSON-able state_dict() (a learning-rate schedule)."""
    tensors, meta = {}, {"step": step, "parts": {}}
    for name, part in parts.items():
        if isinstance(part, torch.optim.Optimizer):
            state, groups = optimizer_tensors(part)
            meta["parts"][name] = {"kind": "optimizer", "param_groups": groups}
        elif isinstance(part, torch.nn.Module):  # clones: tied weights would be one shared tensor twice
            state = {k: v.detach().clone().contiguous() for k, v in part.state_dict().items()}
            meta["parts"][name] = {"kind": "module"}
        else:
            state = {}
            meta["parts"][name] = {"kind": "state", "state": part.state_dict()}
        tensors.update({f"{name}/{key}": value for key, value in state.items()})
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"mmedge_checkpoint": json.dumps(meta)})
    os.replace(tmp, path)


def load_checkpoint(path: Path, **parts) -> int:
    """Load every part's state from `path` (--resume) and return its step."""
    if not path.exists():
        raise SystemExit(f"--resume: there is no {path} to resume (checkpoints written before they were "
                         "safetensors, checkpoint.pt, are not read); drop --resume to start over")
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["mmedge_checkpoint"])
        tensors = {key: f.get_tensor(key) for key in f.keys()}
    if set(meta["parts"]) != set(parts):
        raise SystemExit(f"{path} holds {sorted(meta['parts'])}, this run trains {sorted(parts)}: start over without "
                         "--resume")
    for name, part in parts.items():
        own = {key.split("/", 1)[1]: value for key, value in tensors.items() if key.startswith(f"{name}/")}
        info = meta["parts"][name]
        if info["kind"] == "optimizer":
            restore_optimizer(part, own, info["param_groups"])
        elif info["kind"] == "module":
            part.load_state_dict(own)
        else:
            part.load_state_dict(info["state"])
    return int(meta["step"])


def save_teacher(out: Path, cfg, parts: list, test: dict) -> None:
    """Each of `parts` (model, tokenizer, processor) saved with save_pretrained into `out`, the training
    config as teacher_config.json and the test-split evaluation as teacher_eval.json."""
    for part in parts:
        part.save_pretrained(out)
    (out / "teacher_config.json").write_text(json.dumps(asdict(cfg), indent=1) + "\n")
    (out / "teacher_eval.json").write_text(json.dumps({"split": "test", **test}, indent=1) + "\n")


def teacher_arguments(doc: str, steps: int) -> argparse.ArgumentParser:
    """--out, --resume, --steps and --threads, which every teacher script takes."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--threads", type=int, default=2)
    return parser

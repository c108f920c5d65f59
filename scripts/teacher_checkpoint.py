"""What the teacher-training scripts (train_vilt_teacher.py, train_smolvlm_teacher.py) share: resumable
checkpoints (the state of every part -- model, optimizer, schedule, training-only heads -- and the step,
written to a temporary file and renamed into place, read back with torch's weights-only loader), the
saved teacher folder, and the command-line options.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict
from pathlib import Path

import torch


def save_checkpoint(path: Path, step: int, **parts) -> None:
    """parts: name -> anything with state_dict()."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"step": step, **{name: part.state_dict() for name, part in parts.items()}}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, **parts) -> int:
    """Load every part's state from `path` (when it exists) and return its step; 0 without a checkpoint."""
    if not path.exists():
        return 0
    state = torch.load(path, weights_only=True)
    for name, part in parts.items():
        part.load_state_dict(state[name])
    return int(state["step"])


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

"""Resumable checkpoints of the teacher-training scripts (train_vilt_teacher.py, train_smolvlm_teacher.py):
the state of every part (model, optimizer, schedule, training-only heads) and the step, written to a
temporary file and renamed into place, read back with torch's weights-only loader."""

from __future__ import annotations

import os
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

"""The teacher scripts' resumable checkpoints (scripts/teacher_checkpoint.py): one safetensors file, nothing
unpickled; a run restored from it continues exactly as the uninterrupted run (model, optimizer, schedule and
torch's RNG state)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from teacher_checkpoint import load_checkpoint, save_checkpoint  # noqa: E402


def parts(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1 + step))
    return model, opt, sched


def train(model, opt, sched, steps: int) -> None:
    for _ in range(steps):
        x = torch.randn(16, 4)  # draws from torch's RNG, which the checkpoint carries
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


def test_a_resumed_run_continues_exactly(tmp_path):
    straight = parts()
    train(*straight, 6)
    first = parts()
    train(*first, 3)
    path = tmp_path / "checkpoint.safetensors"
    model, opt, sched = first
    save_checkpoint(path, 3, model=model, opt=opt, sched=sched)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:  # a plain safetensors file: tensors by part, the rest in JSON
        assert {"model/0.weight", "opt/rng.torch"} <= set(f.keys()) and "mmedge_checkpoint" in f.metadata()
    assert not list(tmp_path.glob("*.tmp"))
    torch.manual_seed(123)  # the checkpoint's RNG state must win over whatever the new process has
    resumed = parts(seed=1)
    assert load_checkpoint(path, model=resumed[0], opt=resumed[1], sched=resumed[2]) == 3
    train(*resumed, 3)
    for a, b in zip(straight[0].parameters(), resumed[0].parameters()):
        assert torch.equal(a, b)
    assert straight[2].get_last_lr() == resumed[2].get_last_lr()
    with pytest.raises(SystemExit, match="no .* to resume"):
        load_checkpoint(tmp_path / "none.safetensors", model=resumed[0])
    with pytest.raises(SystemExit, match="start over"):
        load_checkpoint(path, model=resumed[0])

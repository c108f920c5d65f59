"""Shared fixtures: a tiny training config and one tiny model trained once per session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Nothing in the suite downloads (tiny models are built here with save_pretrained): transformers and
# huggingface_hub must not try the hub either, which on a machine without a network waits for it. Set
# before any test imports transformers; subprocesses (torchrun, the CLI) inherit it.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

TINY = {
    "steps": 8, "batch_size": 8, "eval_every": 4, "eval_samples": 32, "checkpoint_every": 4, "log_every": 2,
    "warmup_steps": 2, "threads": 1, "token_loss_weight": 0.5, "ground_loss_weight": 0.5,
    "model": {"dim": 32, "depth": 3, "num_heads": 2, "image_size": 48, "patch_size": 8, "max_text_len": 24,
              "patch_embed": "conv_stem", "exit_pool": "text", "keep_ratios": [1.0, 0.5, 0.25]},
}


@pytest.fixture(scope="session", autouse=True)
def executorch_on_one_thread():
    """ExecuTorch's thread pool is sized once per process, before its first program runs: every
    test runs it on one thread, as the benches' default (threads=1) asks."""
    from mmedge.runtime.backends.executorch_backend import set_executorch_threads

    set_executorch_threads(1, missing_ok=True)


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY))
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from mmedge.train.config import TrainConfig
    from mmedge.train.trainer import Trainer

    out = tmp_path_factory.mktemp("tiny_model")
    Trainer(TrainConfig(**TINY), out, progress=False).fit()
    return out


# Tiny models have near-tied logits, so int8 cannot agree with fp32 on answers the way a trained model
# does: for them the int8 decision limits are opened and only the raw numbers are checked.
TINY_RECIPE = dict(keep_ratios=[1.0, 0.5], parity_samples=8, accuracy_samples=16, calibration_samples=4,
                   int8_min_answer_agreement=0.0, int8_min_exit_agreement=0.0, int8_max_accuracy_drop=1.0)


@pytest.fixture(scope="session")
def tiny_bundle(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model exported to every target, fp32 and int8 (real exporters, real runtimes)."""
    from mmedge.export.exporter import export_bundle
    from mmedge.export.recipe import ExportRecipe

    out = tmp_path_factory.mktemp("bundles") / "tiny.mmedge"
    export_bundle(tiny_model_dir, out, ExportRecipe(quantize="int8", **TINY_RECIPE), log=lambda *_: None)
    return out


def torchrun(args: list[str], port: int, nproc: int = 2) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node N -m mmedge ARGS` with one thread per process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", str(port),
           "-m", "mmedge", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)

"""A captioning model directory: config.json (task "caption") + model.safetensors + tokenizer.json."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mmedge.caption.config import CaptionConfig
from mmedge.caption.data import check_caption_tokenizer
from mmedge.caption.model import CaptionModel
from mmedge.data.tokenizer import WordTokenizer
from mmedge.errors import CheckpointError, ConfigError, TextError
from mmedge.fileio import atomic_write
from mmedge.models.checkpoint import CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE


def is_caption_dir(directory: str | Path) -> bool:
    """Whether a model directory holds a captioning model (its config says task "caption")."""
    try:
        return json.loads((Path(directory) / CONFIG_FILE).read_text()).get("task") == "caption"
    except (OSError, ValueError, AttributeError):
        return False


def save_caption_model(model: CaptionModel, tokenizer: WordTokenizer, directory: str | Path,
                       metadata: dict[str, str] | None = None) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(directory / WEIGHTS_FILE, lambda p: save_file(state, str(p), metadata=metadata))
    atomic_write(directory / TOKENIZER_FILE, tokenizer.save)
    atomic_write(directory / CONFIG_FILE, model.config.save)  # last: its presence marks completion
    return directory


def load_caption_model(directory: str | Path) -> tuple[CaptionModel, WordTokenizer]:
    """Every failure is a CheckpointError that names the file."""
    directory = Path(directory)
    if not (directory / CONFIG_FILE).is_file():
        raise CheckpointError(f"{directory} has no {CONFIG_FILE}: not a model directory (train one with "
                              f"`mmedge train --task caption` or use the shipped models/caption-default)")
    try:
        cfg = CaptionConfig.load(directory / CONFIG_FILE)
    except ConfigError as exc:
        raise CheckpointError(f"{directory / CONFIG_FILE}: {exc}") from exc
    try:
        state = load_file(str(directory / WEIGHTS_FILE))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{directory / WEIGHTS_FILE} is missing, corrupt or not safetensors ({exc})") from exc
    model = CaptionModel(cfg)
    expected = model.state_dict()
    wrong = sorted(set(expected) ^ set(state)) + [k for k, v in expected.items()
                                                  if k in state and state[k].shape != v.shape]
    if wrong:
        raise CheckpointError(f"{directory / WEIGHTS_FILE} does not match {CONFIG_FILE}: {wrong[:5]}")
    model.load_state_dict(state)
    model.eval()
    tokenizer = WordTokenizer.load(directory / TOKENIZER_FILE)
    try:
        check_caption_tokenizer(tokenizer)
    except TextError as exc:
        raise CheckpointError(f"{directory / TOKENIZER_FILE}: {exc}") from exc
    if len(tokenizer.vocab) > cfg.vocab_size:
        raise CheckpointError(f"{directory / TOKENIZER_FILE} has {len(tokenizer.vocab)} entries, more than the "
                              f"model's vocab_size {cfg.vocab_size}")
    return model, tokenizer

"""save_pretrained / from_pretrained: config.json + model.safetensors + tokenizer.json."""

from __future__ import annotations

from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mmedge.data.tokenizer import WordTokenizer
from mmedge.fileio import atomic_write  # noqa: F401  (re-exported: callers import it from here)
from mmedge.errors import CheckpointError, ConfigError
from mmedge.models.config import ModelConfig
from mmedge.models.model import AdaptiveVLModel

CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE = "config.json", "model.safetensors", "tokenizer.json"


def save_pretrained(model: AdaptiveVLModel, tokenizer: WordTokenizer, directory: str | Path,
                    metadata: dict[str, str] | None = None) -> Path:
    """Write the model directory; each file is replaced atomically."""
    directory = Path(directory)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(directory / WEIGHTS_FILE, lambda p: save_file(state, str(p), metadata=metadata))
    atomic_write(directory / TOKENIZER_FILE, tokenizer.save)
    atomic_write(directory / CONFIG_FILE, model.config.save)  # last: its presence marks completion
    return directory


def load_config(directory: str | Path) -> ModelConfig:
    """The ModelConfig of an mmedge model folder (an adapted folder's is its AdaptConfig)."""
    directory = Path(directory)
    if is_adapted_dir(directory):
        from mmedge.adapt.folder import read_config
        from mmedge.adapt.model import AdaptConfig

        try:
            return AdaptConfig.from_dict(read_config(directory)["adapt"], str(directory / CONFIG_FILE))
        except (ConfigError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{directory / CONFIG_FILE}: {exc}") from exc
    if not directory.is_dir():
        raise CheckpointError(f"model directory not found: {directory} (train one with `mmedge train` "
                              f"or use the shipped models/vqa-default)")
    if not (directory / CONFIG_FILE).is_file():
        raise CheckpointError(f"{directory} has no {CONFIG_FILE}: not a model directory, or an interrupted save")
    try:
        return ModelConfig.load(directory / CONFIG_FILE)
    except ConfigError as exc:
        raise CheckpointError(f"{directory / CONFIG_FILE}: {exc}") from exc


def is_adapted_dir(directory: str | Path) -> bool:
    """Whether `directory` holds a model written by `mmedge adapt` (its config.json names a "family")."""
    import json

    try:
        saved = json.loads((Path(directory) / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(saved, dict) and "family" in saved


def from_pretrained(directory: str | Path) -> tuple[AdaptiveVLModel, WordTokenizer]:
    """Load a model directory written by save_pretrained; every failure is a CheckpointError.

    A folder written by `mmedge adapt` (config.json with "family") loads through
    mmedge.adapt.load_adapted: (AdaptedModel, its preprocessor) — the preprocessor's ``encode(images,
    texts)`` and ``tokenizer`` (BERT WordPiece) take the place of the WordTokenizer."""
    directory = Path(directory)
    if is_adapted_dir(directory):
        from mmedge.adapt import load_adapted

        return load_adapted(directory)
    cfg = load_config(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{directory} has no {WEIGHTS_FILE}")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights} is corrupt or not a safetensors file ({exc}); re-download or retrain") from exc
    model = AdaptiveVLModel(cfg)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{k}: {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        raise CheckpointError(f"{weights} does not match {CONFIG_FILE}: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}, wrong shapes {wrong[:5]}")
    model.load_state_dict(state)
    model.eval()
    tokenizer = WordTokenizer.load(directory / TOKENIZER_FILE)
    if len(tokenizer.vocab) > cfg.vocab_size or tokenizer.max_length != cfg.max_text_len:
        raise CheckpointError(f"{directory / TOKENIZER_FILE} does not fit the model "
                              f"(vocab {len(tokenizer.vocab)} > {cfg.vocab_size} or max_length "
                              f"{tokenizer.max_length} != {cfg.max_text_len})")
    return model, tokenizer



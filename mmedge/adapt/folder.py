"""The adapted model folder: what `mmedge adapt` writes and what eval / export will read.

    config.json          {"family", "format", "task", "labels", "adapt": AdaptConfig,
                          "source": {"class", "from", "config": the transformers config, "transformers"},
                          "preprocessing": {...}, "tokenizer": {...}}   (written last: marks completion)
    model.safetensors    every weight: the source's under ``backbone.hf.`` (unchanged unless the backbone
                         was trained) and the adapter's (``exit_heads.``, ``confidence.``, ``prefilter.``)
    tokenizer.json, tokenizer_config.json, processor_config.json
                         the source's processor, as ``ViltProcessor.save_pretrained`` writes it
    README.md            the model card (mmedge.adapt.card)

``family`` is what tells it from an mmedge model folder (whose config.json is a ModelConfig).
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mmedge.adapt.families import family_named
from mmedge.errors import CheckpointError, MMEdgeError
from mmedge.fileio import atomic_write

CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
FORMAT = "mmedge-adapted/1"


def is_adapted_dir(directory: str | Path) -> bool:
    """Whether `directory` holds an adapted model (its config.json has a ``family``)."""
    try:
        return "family" in json.loads((Path(directory) / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False


def is_generative_dir(directory: str | Path) -> bool:
    """Whether `directory` holds an adapted generative VLM (its config.json says task "generate")."""
    try:
        saved = json.loads((Path(directory) / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(saved, dict) and "family" in saved and saved.get("task") == "generate"


GENERATIVE_INSTEAD = ("export it (mmedge export --model DIR --out B.mmedge), then generate with the Engine: "
                      "Engine.load(B).generate(image, prompt) or .caption(image); mmedge calibrate --artifact B.mmedge "
                      "and mmedge bench --artifact B.mmedge --device host; or mmedge eval --model DIR (captions and "
                      "answers per keep ratio) (docs/adapt.md)")


def instead(directory: str | Path, encoder_instead: str) -> str:
    """What to run on an adapted folder instead of a command for mmedge's own models: `encoder_instead` for
    an adapted encoder, GENERATIVE_INSTEAD for a generative VLM."""
    return GENERATIVE_INSTEAD if is_generative_dir(directory) else encoder_instead


def save_adapted(model, preprocessor, directory: str | Path, source: str, metadata: dict[str, str] | None = None,
                 source_dir: Path | None = None) -> Path:
    """Write the folder (each file replaced atomically, config.json last)."""
    import transformers

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(directory / WEIGHTS_FILE, lambda p: save_file(state, str(p), metadata=metadata))
    preprocessor.save(directory, source_dir)
    cfg = model.config
    config = {"family": cfg.family, "format": FORMAT, "task": cfg.task, "labels": list(cfg.labels),
              "adapt": cfg.to_dict(),
              "source": {"class": cfg.source_class, "from": str(source),
                         "config": model.backbone.hf.config.to_dict(), "transformers": transformers.__version__},
              **preprocessor.to_dict()}
    atomic_write(directory / CONFIG_FILE, lambda p: p.write_text(json.dumps(config, indent=2) + "\n"))
    return directory


def read_config(directory: str | Path) -> dict:
    path = Path(directory) / CONFIG_FILE
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CheckpointError(f"{directory} has no {CONFIG_FILE}: not an adapted model folder") from exc
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path} cannot be read as JSON: {exc}") from exc
    if not isinstance(saved, dict) or "family" not in saved:
        raise CheckpointError(f"{path} has no 'family': not written by mmedge adapt")
    return saved


def load_adapted(directory: str | Path):
    """(AdaptedModel in eval mode, preprocessor) from a folder written by save_adapted."""
    directory = Path(directory)
    saved = read_config(directory)
    model, preprocessor = family_named(saved["family"]).load_adapted(directory, saved)
    weights = directory / WEIGHTS_FILE
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights} is missing, corrupt or not a safetensors file ({exc})") from exc
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = [k for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        raise CheckpointError(f"{weights} does not match {CONFIG_FILE}: missing {missing[:5]}, unexpected "
                              f"{unexpected[:5]}, wrong shapes {wrong[:5]}; a folder adapted by another mmedge "
                              f"version? Run mmedge adapt again")
    model.load_state_dict(state)
    return model.eval(), preprocessor


def pretrained_teacher(directory: str | Path):
    """(teacher model or None, what the exits are compared with) for `mmedge eval` of an adapted folder.

    Where the adaptation left the pretrained weights unchanged (the default), the model's own final exit
    is the pretrained model's answer: None. Where it trained them too (`--train-backbone`), the final
    exit no longer is: the pretrained model is loaded from the source the folder records, wrapped at
    the same image size and text length; if that source cannot be loaded here, None and a description
    that says agreement is then with the adapted model's own final exit."""
    directory = Path(directory)
    try:
        distill = json.loads((directory / "distill_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        distill = {}
    own = "the model's own final exit at keep ratio 1.0"
    if not (isinstance(distill, dict) and distill.get("train_backbone")):
        return None, own + " (the pretrained model: its weights were not trained)"
    saved = read_config(directory)
    source, adapt = saved["source"]["from"], saved["adapt"]
    if "image_size" not in adapt or "max_text_len" not in adapt:  # not an encoder (a generative VLM)
        return None, own
    try:
        teacher, _ = family_named(saved["family"]).load_source(source, image_size=adapt["image_size"],
                                                               max_text_len=adapt["max_text_len"])
    except (MMEdgeError, OSError) as exc:
        return None, (f"{own}: the backbone was trained, and the pretrained model ({source}) cannot be loaded here "
                      f"({str(exc)[:200]}), so this is not agreement with the pretrained model")
    return teacher.eval(), f"the pretrained model ({source}) at full depth, keep ratio 1.0 (the backbone was trained)"

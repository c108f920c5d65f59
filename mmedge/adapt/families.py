"""The encoder families `mmedge adapt` can wrap, and which family a `transformers` class belongs to.

A family is one module (mmedge.adapt.vilt is the reference) listed in FAMILY_MODULES. It defines:

    FAMILY                  a Family: its name and the transformers classes it supports, each with its task
    load_source(source, cfg_overrides) -> (AdaptedModel, Preprocessor)
                            the pretrained model and its processor from anything from_pretrained takes
    load_adapted(directory, saved: dict) -> (AdaptedModel, Preprocessor)
                            an adapted model folder written by mmedge.adapt.save_adapted
    the Backbone subclass   mmedge.adapt.model.Backbone: embeddings at a fixed size, layers, the model's head
    the Preprocessor        images and text as the source's processor prepares them, at the fixed size

Adding a second family is adding its module name to FAMILY_MODULES. A class no family supports
gets an UnsupportedModelError that names the supported ones.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from mmedge.errors import CheckpointError, MMEdgeError

FAMILY_MODULES = ("mmedge.adapt.vilt", "mmedge.adapt.smolvlm")


@dataclass(frozen=True)
class Family:
    name: str                      # written into the adapted folder's config.json ("family")
    classes: dict[str, str]        # transformers class name -> the adapt task it serves


class UnsupportedModelError(MMEdgeError, ValueError):
    """The source model's class is not one any family supports."""

    def __init__(self, found: str, supported: dict[str, str]) -> None:
        self.found, self.supported = found, dict(supported)
        listed = ", ".join(f"{cls} ({task})" for cls, task in supported.items())
        super().__init__(f"{found} is not supported by mmedge adapt; supported classes: {listed}")


def family_modules() -> list[ModuleType]:
    return [importlib.import_module(name) for name in FAMILY_MODULES]


def supported_classes() -> dict[str, str]:
    """Every supported transformers class -> its task."""
    return {cls: task for module in family_modules() for cls, task in module.FAMILY.classes.items()}


def family_of_class(class_name: str) -> ModuleType:
    """The family module that supports `class_name`, else UnsupportedModelError."""
    for module in family_modules():
        if class_name in module.FAMILY.classes:
            return module
    raise UnsupportedModelError(class_name, supported_classes())


def family_named(name: str) -> ModuleType:
    """The family module called `name` (an adapted folder's "family")."""
    for module in family_modules():
        if module.FAMILY.name == name:
            return module
    raise CheckpointError(f"unknown model family {name!r}; this mmedge knows "
                          f"{', '.join(m.FAMILY.name for m in family_modules())}")


def source_class(source: str | Path) -> str:
    """The class a pretrained model was saved as (its config's ``architectures``), read without
    loading any weights; a folder without a config, or a hub id that cannot be reached, is a
    CheckpointError."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(source))
    except (OSError, ValueError) as exc:
        where = "folder" if Path(source).is_dir() else "hub id (it needs a reachable hub) or folder"
        raise CheckpointError(f"cannot read a transformers config from {source} as a {where}: "
                              f"{str(exc).splitlines()[0][:300]}") from exc
    names = list(getattr(config, "architectures", None) or [])
    if not names:
        raise CheckpointError(f"{source}: its config names no architecture (save the model itself with "
                              f"save_pretrained, e.g. a ViltForQuestionAnswering, not only its config)")
    return names[0]

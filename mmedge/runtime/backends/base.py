"""What every backend session offers."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class StageSession(Protocol):
    backend: str
    stage_names: list[str]

    def run(self, stage: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one stage on numpy inputs (by input name); numpy outputs by output name."""
        ...


def require(module: str, install: str):
    """Import an optional backend package or raise MissingDependencyError with the install command."""
    import importlib

    from mmedge.errors import MissingDependencyError

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(f"{module} is not installed; run: {install}") from exc

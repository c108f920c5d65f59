"""PyTorch eager: the stage modules themselves (the reference every export is checked against)."""

from __future__ import annotations

import numpy as np


class TorchSession:
    backend = "torch"

    def __init__(self, model, specs) -> None:
        import torch

        from mmedge.export.stages import stage_module

        self._torch = torch
        self._modules = {s.name: stage_module(model, s) for s in specs}
        self._outputs = {s.name: list(s.outputs) for s in specs}
        self.stage_names = list(self._modules)

    def run(self, stage: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        inputs = [torch.from_numpy(np.ascontiguousarray(v)) for v in feeds.values()]
        with torch.no_grad():
            values = self._modules[stage](*inputs)
        return {n: v.numpy() for n, v in zip(self._outputs[stage], values)}


def open_session(root, artifact: dict, threads: int | None = None) -> TorchSession:
    """The bundle's own PyTorch checkpoint (torch/), stages as the manifest lists them."""
    import json

    import torch

    from mmedge.export.stages import StageSpec, is_adapted
    from mmedge.models.checkpoint import from_pretrained

    if threads:
        torch.set_num_threads(threads)
    model, _ = from_pretrained(root / artifact["file"])
    model.eval()
    manifest = json.loads((root / "manifest.json").read_text())
    if is_adapted(model):  # a model adapted by `mmedge adapt`: T = L + 1 + k, read off stage 0's hidden
        from mmedge.adapt.stages import stage_specs

        ratios = list(dict.fromkeys(s["keep_ratio"] for s in manifest["stages"].values()))
        return TorchSession(model, stage_specs(model, ratios))
    specs = [StageSpec(s["stage"], s["keep_ratio"], model.config.kept_tokens(s["keep_ratio"]),
                       s["inputs"][0]["shape"][1] if s["stage"] else 1 + model.config.max_text_len
                       + model.config.kept_tokens(s["keep_ratio"]))
             for s in manifest["stages"].values()]
    pruning = manifest.get("modality_pruning")
    if pruning:  # the text-only stages of modality pruning ([CLS] + text)
        specs += [StageSpec(s["stage"], 0.0, 0, pruning["seq_len"], text_only=True) for s in pruning["stages"]]
    return TorchSession(model, specs)

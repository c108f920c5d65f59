"""Stages cut at the exit layers: what every mmedge model with exits shares."""

from __future__ import annotations


class ExitStages:
    """Mixin for a model whose ``config.exits`` lists the 0-based layers followed by an exit (the last
    layer included): stage s runs the layers after exit s - 1 up to exit s."""

    @property
    def num_stages(self) -> int:
        return len(self.config.exits)

    def stage_layers(self, stage: int) -> range:
        exits = self.config.exits
        return range(0 if stage == 0 else exits[stage - 1] + 1, exits[stage] + 1)

"""Training-time augmentation for real data: small random shifts, which keep colours, shapes and the
left/right order of objects (flips and colour jitter would change the answers of such questions)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_shift(pixels: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Each image moved by up to `max_shift` px in x and y, its edge pixels repeated into the gap.

    pixels: (B, 3, S, S) -> (B, 3, S, S); the offsets come from `generator` (reproducible)."""
    b, _, h, w = pixels.shape
    padded = F.pad(pixels, (max_shift, max_shift, max_shift, max_shift), mode="replicate")  # (B, 3, S+2m, S+2m)
    offsets = torch.randint(0, 2 * max_shift + 1, (b, 2), generator=generator).tolist()
    return torch.stack([padded[i, :, y:y + h, x:x + w] for i, (y, x) in enumerate(offsets)])

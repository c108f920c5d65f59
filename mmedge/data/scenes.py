"""Procedural grounded scenes: a few coloured shapes on a noisy background, drawn with Pillow.

Everything is deterministic by (seed, split, index). Colours include near neighbours
(red/orange, blue/cyan) so that grounding colour words takes real perception, and a few
colour-shape pairs are held out of train/val/test and only appear in the compositional split
(as in ShapeWorld and CLEVR-CoGenT).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "orange": (245, 140, 25),
    "yellow": (230, 215, 45),
    "green": (45, 165, 60),
    "blue": (40, 70, 215),
    "cyan": (40, 200, 220),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
SIZES: dict[str, int] = {"small": 7, "large": 12}  # half side of the object's box, in px
NEAR_COLOR: dict[str, str] = {"red": "orange", "orange": "red", "blue": "cyan", "cyan": "blue",
                              "yellow": "orange", "green": "cyan"}
# Colour-shape pairs never drawn in train/val/test; the compositional split always has one.
HELD_OUT_PAIRS: frozenset[tuple[str, str]] = frozenset(
    {("red", "triangle"), ("cyan", "square"), ("green", "circle")}
)
SPLITS: dict[str, int] = {"train": 0, "val": 1, "test": 2, "compositional": 3, "pretrain": 4}
BACKGROUND = (118, 118, 124)


@dataclass(frozen=True)
class SceneObject:
    color: str
    shape: str
    size: str
    cx: int
    cy: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) in pixels, inclusive-exclusive."""
        r = SIZES[self.size]
        return (self.cx - r, self.cy - r, self.cx + r, self.cy + r)

    def describe(self, with_size: bool = False) -> str:
        return f"{self.size} {self.color} {self.shape}" if with_size else f"{self.color} {self.shape}"


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]
    image_size: int
    noise_seed: int


def scene_rng(seed: int, split: str, index: int, stream: int = 0) -> np.random.Generator:
    """The random generator for one sample; `stream` separates scene and question draws."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {sorted(SPLITS)}")
    return np.random.default_rng([seed, SPLITS[split], index, stream])


def _allowed_pairs(compositional: bool) -> list[tuple[str, str]]:
    pairs = [(c, s) for c in COLORS for s in SHAPES]
    return [p for p in pairs if (p in HELD_OUT_PAIRS) == compositional]


def sample_scene(rng: np.random.Generator, image_size: int = 96, min_objects: int = 1,
                 max_objects: int = 4, compositional: bool = False) -> Scene:
    """Place 1..max objects without overlap. Compositional scenes put a held-out pair first."""
    n = int(rng.integers(min_objects, max_objects + 1))
    seen_pairs = _allowed_pairs(False)
    held_pairs = _allowed_pairs(True)
    objects: list[SceneObject] = []
    margin = 2
    attempts = 0
    while len(objects) < n and attempts < 200:
        attempts += 1
        pool = held_pairs if (compositional and not objects) else seen_pairs
        color, shape = pool[int(rng.integers(len(pool)))]
        size = ("small", "large")[int(rng.integers(2))]
        r = SIZES[size]
        cx = int(rng.integers(r + 1, image_size - r - 1))
        cy = int(rng.integers(r + 1, image_size - r - 1))
        candidate = SceneObject(color, shape, size, cx, cy)
        if all(_separated(candidate, o, margin) for o in objects):
            objects.append(candidate)
    return Scene(tuple(objects), image_size, int(rng.integers(2**31)))


def _separated(a: SceneObject, b: SceneObject, margin: int) -> bool:
    ax0, ay0, ax1, ay1 = a.box
    bx0, by0, bx1, by1 = b.box
    return ax1 + margin <= bx0 or bx1 + margin <= ax0 or ay1 + margin <= by0 or by1 + margin <= ay0


def _draw_objects(draw: ImageDraw.ImageDraw, scene: Scene, fills: list) -> None:
    for obj, fill in zip(scene.objects, fills):
        x0, y0, x1, y1 = obj.box
        if obj.shape == "circle":
            draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=fill)
        elif obj.shape == "square":
            draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=fill)
        else:
            draw.polygon([(obj.cx, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)], fill=fill)


def render_scene(scene: Scene) -> np.ndarray:
    """Draw the scene as an (H, W, 3) uint8 array."""
    size = scene.image_size
    rng = np.random.default_rng(scene.noise_seed)
    noise = rng.integers(-10, 11, size=(size, size, 1))  # grey grain, same on all channels
    gradient = np.linspace(-12, 12, size)[None, :, None]
    base = np.clip(np.array(BACKGROUND)[None, None, :] + noise + gradient, 0, 255)
    image = Image.fromarray(base.astype(np.uint8), "RGB")
    fills = []
    for obj in scene.objects:
        jitter = rng.integers(-12, 13, size=3)
        fills.append(tuple(int(v) for v in np.clip(np.array(COLORS[obj.color]) + jitter, 0, 255)))
    _draw_objects(ImageDraw.Draw(image), scene, fills)
    return np.asarray(image, dtype=np.uint8)


def render_object_map(scene: Scene) -> np.ndarray:
    """(H, W) uint8: 0 for background, i + 1 where object i is drawn (same shapes as the image)."""
    canvas = Image.new("L", (scene.image_size, scene.image_size), 0)
    _draw_objects(ImageDraw.Draw(canvas), scene, list(range(1, len(scene.objects) + 1)))
    return np.asarray(canvas, dtype=np.uint8)


def object_class(obj: SceneObject) -> int:
    """1 + the index of the object's colour-shape pair (0 is background)."""
    return 1 + list(COLORS).index(obj.color) * len(SHAPES) + SHAPES.index(obj.shape)


NUM_OBJECT_CLASSES = 1 + len(COLORS) * len(SHAPES)

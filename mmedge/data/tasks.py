"""Questions, statements and captions about a scene, with their answers.

Three tasks share the scenes:
- ``vqa``: a question, answered from a fixed vocabulary (question types: color, shape, exist,
  count, spatial, compare);
- ``verify``: an NLVR-style statement, true or false (exist, count, spatial, compare);
- ``match``: a caption listing the objects left to right, matching or with one attribute
  swapped (type = the attribute a mismatch would change: color, shape, size).
Yes/no and true/false answers are balanced by drawing the wanted answer first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mmedge.data.grounding import Pointer
from mmedge.data.scenes import (COLORS, HELD_OUT_PAIRS, NEAR_COLOR, SHAPES, Scene, SceneObject, render_scene,
                                sample_scene, scene_rng)
from mmedge.errors import ConfigError, UnknownTaskError

NUMBERS = ("0", "1", "2", "3", "4")
RELATIONS = ("left", "right", "above", "below")
LABELS: dict[str, tuple[str, ...]] = {
    "vqa": (*COLORS, *SHAPES, "yes", "no", *NUMBERS),
    "verify": ("false", "true"),
    "match": ("no", "yes"),
}
QUESTION_TYPES: dict[str, tuple[str, ...]] = {
    "vqa": ("color", "shape", "exist", "count", "spatial", "compare"),
    "verify": ("exist", "count", "spatial", "compare"),
    "match": ("color", "shape", "size"),
}
TASKS = tuple(LABELS)
MIN_OFFSET = 6  # px between centres for a spatial relation to count as true
_REL_TEXT = {"left": "left of", "right": "right of", "above": "above", "below": "below"}


@dataclass
class Sample:
    """One example: the image, the text, the answer and what is needed to analyse it."""

    image: np.ndarray  # (H, W, 3) uint8
    text: str
    answer: str
    label: int
    task: str
    qtype: str
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)
    objects: tuple[SceneObject, ...] = ()
    pointers: tuple[Pointer, ...] = ()  # a real record's phrases and where they point (its refs)


def check_task(task: str) -> str:
    if task not in LABELS:
        raise UnknownTaskError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")
    return task


def make_sample(task: str, seed: int, split: str, index: int, image_size: int = 96,
                max_objects: int = 4, qtype_weights: dict[str, float] | None = None,
                relations: tuple[str, ...] | None = None) -> Sample:
    """The sample `index` of `split`, deterministic by seed.

    Training-only options (every evaluation split is made without them):
    qtype_weights re-weights which question type is tried first (default: uniform);
    relations limits the spatial relations asked (a curriculum: e.g. left and above first).
    """
    check_task(task)
    weights = check_qtype_weights(task, qtype_weights)
    builders = {"vqa": _VQA, "verify": _VERIFY, "match": _MATCH}[task]
    if relations is not None:
        check_relations(relations)
        spatial = _vqa_spatial if task == "vqa" else _verify_spatial
        builders = {**builders, "spatial": lambda sc, rng, t: spatial(sc, rng, t, tuple(relations))}
    comp = split == "compositional"
    scene = sample_scene(scene_rng(seed, split, index, 0), image_size, 1, max_objects, comp)
    target = scene.objects[0] if comp else None
    for stream in range(1, 50):  # outside the compositional split, never name a held-out pair
        rng = scene_rng(seed, split, index, stream)
        text, answer, qtype = _try(rng, QUESTION_TYPES[task], builders, scene, target, weights)
        if comp or not mentions_held_out_pair(text):
            break
    return Sample(
        image=render_scene(scene), text=text, answer=answer, label=LABELS[task].index(answer),
        task=task, qtype=qtype, boxes=[o.box for o in scene.objects], objects=scene.objects,
    )


# ---------------------------------------------------------------------------------- helpers
def mentions_held_out_pair(text: str) -> bool:
    words = text.split()
    return any((a, b.rstrip("s")) in HELD_OUT_PAIRS for a, b in zip(words, words[1:]))


def _pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def _refer(obj: SceneObject, objects: tuple[SceneObject, ...]) -> str | None:
    """The shortest unique description of `obj` by colour and shape (size if needed)."""
    same = [o for o in objects if (o.color, o.shape) == (obj.color, obj.shape)]
    if len(same) == 1:
        return obj.describe()
    if sum(o.size == obj.size for o in same) == 1:
        return obj.describe(with_size=True)
    return None


def _relation_holds(a: SceneObject, b: SceneObject, rel: str) -> bool | None:
    """True/False when clear, None when the centres are too close to call."""
    delta = {"left": b.cx - a.cx, "right": a.cx - b.cx, "above": b.cy - a.cy, "below": a.cy - b.cy}[rel]
    if abs(delta) < MIN_OFFSET:
        return None
    return delta > 0


def _larger(a: SceneObject, b: SceneObject, word: str) -> bool:
    if word == "larger":
        return a.size == "large" and b.size == "small"
    return a.size == "small" and b.size == "large"


def _count(scene: Scene, attr: str, value: str) -> int:
    return sum(getattr(o, attr) == value for o in scene.objects)


def _target(scene: Scene, rng: np.random.Generator, target: SceneObject | None) -> SceneObject:
    return target if target is not None else _pick(rng, scene.objects)


def _pair(scene: Scene, rng: np.random.Generator, target: SceneObject | None):
    """Two distinct, uniquely describable objects (the target first when given)."""
    if len(scene.objects) < 2:
        return None
    a = _target(scene, rng, target)
    b = _pick(rng, [o for o in scene.objects if o is not a])
    ra, rb = _refer(a, scene.objects), _refer(b, scene.objects)
    if ra is None or rb is None:
        return None
    return a, b, ra, rb


def _absent_pair(scene: Scene, rng: np.random.Generator) -> tuple[str, str]:
    present = {(o.color, o.shape) for o in scene.objects}
    if rng.random() < 0.5:  # a near-neighbour colour of something that is there
        o = _pick(rng, scene.objects)
        near = (NEAR_COLOR[o.color], o.shape)
        if near not in present:
            return near
    absent = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in present]
    return _pick(rng, absent)


# --------------------------------------------------------------------------- generators
def check_qtype_weights(task: str, weights: dict[str, float] | None) -> np.ndarray | None:
    if weights is None:
        return None
    unknown = sorted(set(weights) - set(QUESTION_TYPES[task]))
    if unknown or any(w < 0 for w in weights.values()) or not sum(weights.values()) > 0:
        raise ConfigError(f"qtype_weights {weights} must give non-negative weights (not all zero) to "
                          f"question types of {task}: {', '.join(QUESTION_TYPES[task])}", "question-type weights")
    w = np.array([float(weights.get(q, 1.0)) for q in QUESTION_TYPES[task]])
    return w / w.sum()


def _try(rng: np.random.Generator, qtypes: tuple[str, ...], builders: dict, scene, target,
         weights: np.ndarray | None = None):
    """Draw a question type, then try until its builder succeeds (falling back to others)."""
    order = list(rng.permutation(len(qtypes)))
    if weights is not None:  # the weighted draw goes first, the rest keep their random order
        first = int(rng.choice(len(qtypes), p=weights))
        order = [first] + [q for q in order if q != first]
    for qi in order:
        qtype = qtypes[qi]
        for _ in range(12):
            out = builders[qtype](scene, rng, target)
            if out is not None:
                return (*out, qtype)
    raise RuntimeError("no question could be generated for this scene")  # pragma: no cover


def _vqa_color(scene, rng, target):
    t = _target(scene, rng, target)
    if sum(o.shape == t.shape for o in scene.objects) == 1:
        return f"what color is the {t.shape} ?", t.color
    if sum((o.shape, o.size) == (t.shape, t.size) for o in scene.objects) == 1:
        return f"what color is the {t.size} {t.shape} ?", t.color
    return None


def _vqa_shape(scene, rng, target):
    t = _target(scene, rng, target)
    if sum(o.color == t.color for o in scene.objects) == 1:
        return f"what shape is the {t.color} object ?", t.shape
    if sum((o.color, o.size) == (t.color, t.size) for o in scene.objects) == 1:
        return f"what shape is the {t.size} {t.color} object ?", t.shape
    return None


def _vqa_exist(scene, rng, target):
    if rng.random() < 0.5:
        t = _target(scene, rng, target)
        return f"is there a {t.color} {t.shape} ?", "yes"
    color, shape = _absent_pair(scene, rng)
    return f"is there a {color} {shape} ?", "no"


def _vqa_count(scene, rng, target):
    attr = "color" if rng.random() < 0.5 else "shape"
    pool = COLORS if attr == "color" else SHAPES
    if rng.random() < 0.7:
        value = getattr(_target(scene, rng, target), attr)
    else:
        value = _pick(rng, tuple(pool))
    n = _count(scene, attr, value)
    text = f"how many {value} objects are there ?" if attr == "color" else f"how many {value}s are there ?"
    return text, str(n)


def check_relations(relations) -> None:
    bad = sorted(set(relations) - set(RELATIONS))
    if bad or not relations:
        raise ConfigError(f"relations {list(relations)} must be a non-empty subset of {list(RELATIONS)}",
                          "spatial relations")


def _vqa_spatial(scene, rng, target, relations: tuple[str, ...] = RELATIONS):
    pair = _pair(scene, rng, target)
    if pair is None:
        return None
    a, b, ra, rb = pair
    rel = _pick(rng, relations)
    holds = _relation_holds(a, b, rel)
    if holds is None:
        return None
    return f"is the {ra} {_REL_TEXT[rel]} the {rb} ?", "yes" if holds else "no"


def _vqa_compare(scene, rng, target):
    want = rng.random() < 0.5
    for _ in range(6):
        pair = _pair(scene, rng, target)
        if pair is None:
            return None
        a, b, ra, rb = pair
        word = _pick(rng, ("larger", "smaller"))
        if _larger(a, b, word) == want:
            return f"is the {ra} {word} than the {rb} ?", "yes" if want else "no"
    return None


def _verify_exist(scene, rng, target):
    text, ans = _vqa_exist(scene, rng, target)
    return text.replace("is there a", "there is a").replace(" ?", " ."), "true" if ans == "yes" else "false"


def _verify_count(scene, rng, target):
    attr = "color" if rng.random() < 0.5 else "shape"
    value = getattr(_target(scene, rng, target), attr)
    n = _count(scene, attr, value)
    if rng.random() >= 0.5:
        n = n + 1 if (n == 1 or rng.random() < 0.5) and n < 4 else n - 1
        truth = "false"
    else:
        truth = "true"
    noun = f"{value} objects" if attr == "color" else f"{value}s"
    return f"there are {n} {noun} .", truth


def _verify_spatial(scene, rng, target, relations: tuple[str, ...] = RELATIONS):
    out = _vqa_spatial(scene, rng, target, relations)
    if out is None:
        return None
    text, ans = out
    return text.replace("is the ", "the ", 1).replace(" left of", " is left of").replace(
        " right of", " is right of").replace(" above", " is above").replace(" below", " is below").replace(
        " ?", " ."), "true" if ans == "yes" else "false"


def _verify_compare(scene, rng, target):
    out = _vqa_compare(scene, rng, target)
    if out is None:
        return None
    text, ans = out
    text = text.replace("is the ", "the ", 1).replace(" larger", " is larger").replace(
        " smaller", " is smaller").replace(" ?", " .")
    return text, "true" if ans == "yes" else "false"


def _caption(objects) -> str:
    ordered = sorted(objects, key=lambda o: (o.cx, o.cy))
    return " and ".join(f"a {o.size} {o.color} {o.shape}" for o in ordered) + " ."


def _match_builder(attr: str):
    def build(scene, rng, target):
        if rng.random() < 0.5:
            return _caption(scene.objects), "yes"
        victim = _target(scene, rng, target)
        if attr == "color":
            options = [c for c in COLORS if c != victim.color]
            new = NEAR_COLOR[victim.color] if rng.random() < 0.5 else _pick(rng, options)
        elif attr == "shape":
            new = _pick(rng, [s for s in SHAPES if s != victim.shape])
        else:
            new = "small" if victim.size == "large" else "large"
        changed = SceneObject(**{**victim.__dict__, attr: new})
        objects = tuple(changed if o is victim else o for o in scene.objects)
        return _caption(objects), "no"
    return build


_VQA = {"color": _vqa_color, "shape": _vqa_shape, "exist": _vqa_exist, "count": _vqa_count,
        "spatial": _vqa_spatial, "compare": _vqa_compare}
_VERIFY = {"exist": _verify_exist, "count": _verify_count, "spatial": _verify_spatial,
           "compare": _verify_compare}
_MATCH = {a: _match_builder(a) for a in QUESTION_TYPES["match"]}


def vocabulary_words() -> list[str]:
    """Every word the generators can produce, for building the tokenizer."""
    words = set("what color is the shape object there a how many objects are than and of".split())
    words |= {"?", "."} | set(COLORS) | set(SHAPES) | {f"{s}s" for s in SHAPES} | {"small", "large"}
    words |= set(NUMBERS) | {"left", "right", "above", "below", "larger", "smaller"}
    return sorted(words)

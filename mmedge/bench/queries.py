"""The queries a host benchmark runs: the test split of the generated scenes or of a real dataset
(`--data NAME:ROOT`), checked against the bundle's labels before anything is timed.

Which data, in order: `--data` when given; else the dataset the bundle's manifest records (what
`mmedge export --data` drew its parity and accuracy samples from: ``export.recipe.data``); else
the scenes, but only when every answer the scenes give for its task is one of the bundle's labels.
Accuracy is then measured on the data the model answers about, never silently on another: a
bundle whose labels are not the queries' answers is refused with a LabelMismatchError. Answers are
compared as strings, never as label indices.

A bundle of a model adapted by `mmedge adapt` draws its queries as `mmedge eval` does
(mmedge.adapt.data.bundle_queries: the raw images, which the Engine prepares as the model's own
processor does; a list of two per query for NLVR2), and is refused the same way when most of their
answers are not among its labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mmedge.data.tasks import LABELS, Sample
from mmedge.errors import DatasetError, MMEdgeError

# A real dataset's answers outside the bundle's labels count as wrong (as `mmedge eval` counts
# them); above this share the bundle was not trained on that data and the bench refuses.
MAX_OUT_OF_VOCABULARY = 0.5


class LabelMismatchError(MMEdgeError, ValueError):
    """The bundle's labels are not the answers of the queries it would be benchmarked on (another
    dataset, or the scenes for a bundle trained on real data): accuracy would be meaningless."""


@dataclass
class Queries:
    samples: list[Sample]
    data: str                   # "scenes" or the dataset's name (vqa2, jsonl, ...): no machine paths
    split: str
    chosen_by: str              # why this data: "--data", "the bundle's manifest" or "the bundle's labels"
    out_of_vocabulary: int = 0  # queries whose answer is not among the bundle's labels (counted wrong)
    notes: list[str] = field(default_factory=list)

    def describe(self) -> dict:
        return {"data": self.data, "split": self.split, "n": len(self.samples), "chosen_by": self.chosen_by,
                "out_of_vocabulary": self.out_of_vocabulary}


def recorded_data(manifest: dict) -> str | None:
    """The real dataset (NAME:ROOT) the bundle was exported with, or None (the scenes, or not recorded)."""
    data = ((manifest.get("export") or {}).get("recipe") or {}).get("data")
    return data if isinstance(data, str) and data != "scenes" else None


def resolve_data(manifest: dict, data: str | None) -> tuple[str, str]:
    """(the data spec the queries come from, why): --data, the manifest's record, or the scenes."""
    if data is not None:
        return data, "--data"
    recorded = recorded_data(manifest)
    if recorded is not None:
        return recorded, "the bundle's manifest"
    return "scenes", "the bundle's labels"


def check_scene_labels(manifest: dict, hint: str) -> None:
    """LabelMismatchError unless every answer of the scenes (for the bundle's task) is one of the
    bundle's labels."""
    task, labels = manifest["task"], list(manifest["labels"])
    scene_labels = list(LABELS.get(task, ()))
    if not (scene_labels and set(scene_labels) <= set(labels)):
        raise LabelMismatchError(
            f"the bundle's {len(labels)} labels ({_few(labels)}) are not the scenes' {task} labels "
            f"({_few(scene_labels)}): its accuracy on the scenes would mean nothing; {hint}")


def default_split(data: str) -> str:
    """The split a benchmark draws from: the scenes' test split; a real dataset's test split when it
    has one with answers (JSON Lines: ROOT/test.jsonl), else its validation split."""
    from mmedge.data.provider import VAL_SPLIT
    from mmedge.data.sources import parse_data_spec

    spec = parse_data_spec(data)
    if spec.is_scenes:
        return "test"
    if spec.name == "jsonl" and (spec.root / "test.jsonl").is_file():
        return "test"
    return VAL_SPLIT.get(spec.name, "val")


def draw_queries(manifest: dict, n: int, data: str | None = None, split: str | None = None,
                 progress: bool = False) -> Queries:
    """`n` test queries for the bundle whose manifest is given (fewer when the split is smaller),
    from --data, the manifest's dataset or the scenes; LabelMismatchError when the bundle's labels
    are not the queries' answers, DatasetError when the data cannot be read."""
    from mmedge.data.batches import generate
    from mmedge.data.sources import parse_data_spec

    from mmedge.adapt.data import bundle_adapt_config

    task, labels = manifest["task"], list(manifest["labels"])
    image_size = manifest["preprocessing"]["image_size"]
    spec_text, chosen_by = resolve_data(manifest, data)
    try:
        spec = parse_data_spec(spec_text)
    except DatasetError as exc:
        if chosen_by == "--data":
            raise
        raise DatasetError(f"the bundle was exported with --data {spec_text} (its manifest records it), which "
                           f"cannot be read here ({exc}); pass --data NAME:ROOT with the dataset's folder on "
                           "this machine") from None
    if bundle_adapt_config(manifest) is not None:
        return _adapted_queries(manifest, spec, spec_text, n, split, chosen_by)
    if spec.is_scenes:
        check_scene_labels(manifest, "pass --data NAME:ROOT with the dataset it was trained on (e.g. "
                                     "--data jsonl:/data/mine)")
        split = split or "test"
        if split not in ("val", "test", "compositional"):
            raise DatasetError(f"--split {split!r}: the scenes have val, test and compositional")
        return Queries(generate(task, 0, split, range(n), image_size), "scenes", split, chosen_by)

    from mmedge.data.provider import real_samples

    split = split or default_split(spec_text)
    samples = real_samples(spec_text, task, labels, image_size, split, n, progress=progress)
    outside = sum(s.label < 0 for s in samples)
    if outside > MAX_OUT_OF_VOCABULARY * len(samples):
        answers = sorted({s.answer for s in samples if s.label < 0})
        raise LabelMismatchError(
            f"{outside} of {len(samples)} {spec.name} {split} answers ({_few(answers)}) are not among the "
            f"bundle's {len(labels)} labels ({_few(labels)}): the bundle was not trained on this data; "
            "bench it with the dataset it was trained on (--data NAME:ROOT)")
    notes = [f"{outside} of {len(samples)} answers are outside the bundle's labels: counted wrong"] if outside else []
    return Queries(samples, spec.name, split, chosen_by, outside, notes)


def _adapted_queries(manifest: dict, spec, spec_text: str, n: int, split: str | None, chosen_by: str) -> Queries:
    """The queries of a bundle of an adapted model (module docstring): Samples whose image is the list of
    the query's images; an answer outside the bundle's labels is counted wrong."""
    from mmedge.adapt.data import bundle_queries

    labels = list(manifest["labels"])
    split = split or default_split(spec_text)
    if spec.is_scenes and split not in ("val", "test", "compositional"):
        raise DatasetError(f"--split {split!r}: the scenes have val, test and compositional")
    pairs, ids = bundle_queries(manifest, spec_text, split, n)
    if not pairs:
        raise DatasetError(f"{spec.name} {split}: no queries")
    outside = int((ids < 0).sum())
    if outside > MAX_OUT_OF_VOCABULARY * len(pairs):
        raise LabelMismatchError(
            f"{outside} of {len(pairs)} {spec.name} {split} answers are not among the bundle's {len(labels)} labels "
            f"({_few(labels)}): the adapted model does not answer this data; bench it with data whose answers are "
            "its labels (--data NAME:ROOT)")
    samples = [Sample(images, text, labels[i] if i >= 0 else "", int(i), manifest["task"], "")
               for (images, text), i in zip(pairs, ids)]
    notes = [f"{outside} of {len(samples)} answers are outside the bundle's labels: counted wrong"] if outside else []
    return Queries(samples, spec.name, split, chosen_by, outside, notes)


def _few(items: list[str], k: int = 5) -> str:
    shown = ", ".join(map(repr, items[:k]))
    return shown + (f", ... {len(items) - k} more" if len(items) > k else "")

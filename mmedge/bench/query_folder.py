"""The test queries `mmedge bench --device` pushes to the phone app when the app's own do not fit the bundle.

The app ships the generated scenes' test queries for mmedge's own tasks (android_demo/BENCHMARK.md).
A bundle trained on another dataset (`--data`), one of a model adapted by `mmedge adapt`, or one that
reads two images per query (NLVR2) is benchmarked on queries the host draws exactly as
`mmedge bench --device host` draws them (mmedge.bench.queries.draw_queries): they are written here
as a folder the app reads (`mmedge.queries` extra), queries.json in the app's format plus one RGB
PNG per image, decoded and oriented by the host as its own Engine would take it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from mmedge.bench.queries import Queries, draw_queries
from mmedge.data.tasks import LABELS

FORMAT = "mmedge-bench-queries-1"  # android_demo/core BenchQueries.FORMAT


def app_queries_fit(manifest: dict, data: str | None) -> bool:
    """True when the app's asset queries serve the bundle: no --data, a bundle of mmedge's own whose
    labels are the scenes' labels in their order, and no dataset recorded in its manifest."""
    from mmedge.adapt.data import bundle_adapt_config
    from mmedge.bench.queries import recorded_data

    if data is not None or bundle_adapt_config(manifest) is not None or recorded_data(manifest) is not None:
        return False
    return list(manifest["labels"]) == list(LABELS.get(manifest["task"], ()))


def write_query_folder(queries: Queries, out: Path) -> Path:
    """`out` (created; it must not exist) holding queries.json and images/NNNN[-k].png for `queries`.

    A query of several images (NLVR2: left, right) lists them under "images", one image under "image".
    Written into a temporary sibling first and renamed, so no half-written folder is left behind."""
    from mmedge.data.preprocess import load_image
    from mmedge.fileio import make_parent, publish_dir

    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; choose a new folder for the queries")
    make_parent(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / "images").mkdir()
        entries = []
        for i, sample in enumerate(queries.samples):
            images = sample.image if isinstance(sample.image, (list, tuple)) else [sample.image]
            names = []
            for k, image in enumerate(images):
                name = f"images/{i:04d}.png" if len(images) == 1 else f"images/{i:04d}-{k}.png"
                load_image(image).save(tmp / name, format="PNG")
                names.append(name)
            entry = {"image": names[0]} if len(names) == 1 else {"images": names}
            entries.append({**entry, "text": sample.text, "answer": sample.answer})
        doc = {"format": FORMAT, "task": queries.samples[0].task if queries.samples else None, **queries.describe(),
               "queries": entries}
        (tmp / "queries.json").write_text(json.dumps(doc, indent=1) + "\n")
        publish_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def draw_query_folder(manifest: dict, n: int, out: Path, data: str | None = None, split: str | None = None,
                      progress: bool = False) -> tuple[Path, Queries]:
    """The host's queries for the bundle (draw_queries: --data, the manifest's dataset or the scenes,
    refused with LabelMismatchError when they are not its labels' answers), written to `out`."""
    queries = draw_queries(manifest, n, data=data, split=split, progress=progress)
    return write_query_folder(queries, out), queries

"""NLVR2 in its official layout:

    ROOT/{train,dev,test1}.json      JSON Lines: {"identifier": "dev-850-0-0", "sentence", "label": "True"|"False",
                                                  "directory": 12 (train only)}
    ROOT/images/train/{directory}/{split}-{set}-{pair}-img0.png, -img1.png
    ROOT/images/{dev,test1}/{split}-{set}-{pair}-img0.png, -img1.png

An identifier is split-set-pair-sentence: the images belong to split-set-pair; consistency groups
the records of one sentence (split-set-sentence) across its image pairs. The model sees the two
images side by side (left | right, one image padded to a square by the preprocessing).
"""

from __future__ import annotations

from pathlib import Path

from mmedge.data.sources.records import Record, inside, need, read_json_lines
from mmedge.errors import DatasetError

SPLITS = ("train", "dev", "test1")


def records(root: Path, split: str) -> list[Record]:
    if split not in SPLITS:
        raise DatasetError(f"NLVR2 has splits {', '.join(SPLITS)}; got {split!r}")
    path = root / f"{split}.json"
    out = []
    for line, obj in read_json_lines(path, root):
        where = f"{path}:{line}"
        ident = need(obj, "identifier", str, where)
        parts = ident.split("-")
        if len(parts) != 4:
            raise DatasetError(f"{where}: identifier {ident!r} is not split-set-pair-sentence")
        label = need(obj, "label", str, where)
        if label not in ("True", "False"):
            raise DatasetError(f"{where}: label must be \"True\" or \"False\", got {label!r}")
        folder = root / "images" / split
        if split == "train":
            folder = inside(folder, str(need(obj, "directory", (int, str), where)), where, "directory", single=True)
        stem = "-".join(parts[:3])
        left = inside(folder, f"{stem}-img0.png", where, "identifier", single=True)
        out.append(Record(images=(left, folder / f"{stem}-img1.png"),
                          text=need(obj, "sentence", str, where), answer=label.lower(), qtype="statement",
                          group="-".join([parts[0], parts[1], parts[3]]), where=where))
    return out

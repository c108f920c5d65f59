"""Image-caption pairs: COCO Captions and Conceptual Captions, in their own layouts.

COCO:  ROOT/annotations/captions_{train,val}2017.json
           {"images": [{"id", "file_name"}], "annotations": [{"image_id", "caption"}]}
       ROOT/{train,val}2017/{file_name}
CC:    ROOT/{train,val}.tsv   one "caption<TAB>image file" per line (the image file relative to ROOT,
       as the image-downloader tools leave them; Google's TSV itself names URLs, not files)

Used for pretraining (`mmedge pretrain --data cc:ROOT`) and for image-text retrieval
(Recall@1/5/10 both ways); `group` is the image, so a COCO image's five captions share it.
Image paths (`file_name`, the TSV's image column) stay inside ROOT (records.inside).
"""

from __future__ import annotations

import csv
from pathlib import Path

from mmedge.data.sources.records import Record, inside, need, read_json, text_lines
from mmedge.errors import DatasetError


def coco_records(root: Path, split: str) -> list[Record]:
    if split not in ("train", "val"):
        raise DatasetError(f"COCO Captions has splits train, val; got {split!r}")
    path = root / "annotations" / f"captions_{split}2017.json"
    data = read_json(path, root)
    files, folder = {}, root / f"{split}2017"
    for i, img in enumerate(need(data, "images", list, str(path))):
        where = f"{path}#images[{i}]"
        files[need(img, "id", int, where)] = inside(folder, need(img, "file_name", str, where), where, "file_name")
    out = []
    for i, a in enumerate(need(data, "annotations", list, str(path))):
        where = f"{path}#annotations[{i}]"
        image_id = need(a, "image_id", int, where)
        if image_id not in files:
            raise DatasetError(f"{where}: image_id {image_id} is not listed under \"images\"")
        out.append(Record(images=(files[image_id],), text=need(a, "caption", str, where).strip(),
                          answer="match", qtype="caption", group=str(image_id), where=where))
    return out


def cc_records(root: Path, split: str) -> list[Record]:
    path = root / f"{split}.tsv"
    if not path.exists() and not path.is_symlink():
        raise DatasetError(f"annotation file not found: {path} (caption<TAB>image file per line)")
    out = []
    for line, text in text_lines(path, root):
        try:
            row = next(csv.reader([text], delimiter="\t", quoting=csv.QUOTE_NONE), [])
        except csv.Error as exc:
            raise DatasetError(f"{path}:{line}: not a caption<TAB>image file line ({exc})") from exc
        if not row:
            continue
        where = f"{path}:{line}"
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise DatasetError(f"{where}: expected \"caption<TAB>image file\", got {len(row)} field(s)")
        image = row[1].strip()
        out.append(Record(images=(inside(root, image, where, "image"),), text=row[0].strip(), answer="match",
                          qtype="caption", group=image, where=where))
    return out

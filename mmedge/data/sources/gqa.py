"""GQA (balanced) in its official layout:

    ROOT/questions/{train,val,testdev}_balanced_questions.json
        {question_id: {"imageId", "question", "answer", "types": {"structural", "semantic", "detailed"}}}
    ROOT/images/{imageId}.jpg

The metric is accuracy, reported per structural and per semantic type.
"""

from __future__ import annotations

from pathlib import Path

from mmedge.data.sources.records import Record, inside, need, read_json
from mmedge.errors import DatasetError

SPLITS = ("train", "val", "testdev")


def records(root: Path, split: str) -> list[Record]:
    if split not in SPLITS:
        raise DatasetError(f"GQA has splits {', '.join(SPLITS)}; got {split!r}")
    path = root / "questions" / f"{split}_balanced_questions.json"
    data = read_json(path, root)
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected an object of question id -> question")
    out = []
    for qid, q in data.items():
        where = f"{path}#{qid}"
        types = need(q, "types", dict, where)
        structural, semantic = need(types, "structural", str, where + ".types"), need(types, "semantic", str, where + ".types")
        image = inside(root / "images", need(q, "imageId", str, where), where, "imageId", single=True)
        out.append(Record(images=(image.with_name(image.name + ".jpg"),),
                          text=need(q, "question", str, where), answer=need(q, "answer", str, where).strip().lower(),
                          qtype=structural, extra={"semantic": semantic}, where=where))
    return out

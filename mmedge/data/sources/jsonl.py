"""A user's own data: JSON Lines files ROOT/{train,val,test}.jsonl, image paths relative to ROOT.

    vqa:     {"image": "photos/1.jpg", "question": "what colour is the car?", "answer": "red"}
    verify:  {"image": "photos/1.jpg", "statement": "there is a red car", "label": true}
    match:   {"image": "photos/1.jpg", "caption": "a red car on a street", "label": true}

"type" (optional) names the question type accuracy is reported per.
"""

from __future__ import annotations

from pathlib import Path

from mmedge.data.sources.records import Record, inside, need, read_json_lines
from mmedge.errors import DatasetError

TEXT_FIELD = {"vqa": "question", "verify": "statement", "match": "caption"}


def records(root: Path, split: str, task: str) -> list[Record]:
    if task not in TEXT_FIELD:
        raise DatasetError(f"JSON Lines data serves tasks {', '.join(TEXT_FIELD)}; got {task!r}")
    path = root / f"{split}.jsonl"
    out = []
    for line, obj in read_json_lines(path, root):
        where = f"{path}:{line}"
        image = inside(root, need(obj, "image", str, where), where, "image")
        if task == "vqa":
            answer = need(obj, "answer", str, where).strip().lower()
        elif task == "verify":
            answer = "true" if need(obj, "label", bool, where) else "false"
        else:  # match: the labels of the matching task
            answer = "yes" if need(obj, "label", bool, where) else "no"
        qtype = obj.get("type", task)
        if not isinstance(qtype, str):
            raise DatasetError(f"{where}: field 'type' must be a string")
        out.append(Record(images=(image,), text=need(obj, TEXT_FIELD[task], str, where), answer=answer,
                          qtype=qtype, where=where))
    return out

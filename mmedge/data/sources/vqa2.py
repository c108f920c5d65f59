"""VQA v2 in its official layout:

    ROOT/v2_OpenEnded_mscoco_{train,val}2014_questions.json   {"questions": [{"question_id", "image_id", "question"}]}
    ROOT/v2_mscoco_{train,val}2014_annotations.json           {"annotations": [{"question_id", "image_id",
                                                                 "answer_type", "multiple_choice_answer",
                                                                 "answers": [{"answer": ...} x 10]}]}
    ROOT/{train,val}2014/COCO_{train,val}2014_{image_id:012d}.jpg

Splits: train, val (the official test split has no public answers). The training answer is
`multiple_choice_answer`, normalised; the answer vocabulary is the most frequent training answers.
"""

from __future__ import annotations

from pathlib import Path

from mmedge.data.sources.records import Record, need, read_json
from mmedge.errors import DatasetError
from mmedge.evaluation.official import normalize_answer

SPLITS = {"train": "train2014", "val": "val2014"}


def records(root: Path, split: str) -> list[Record]:
    if split not in SPLITS:
        raise DatasetError(f"VQA v2 has splits {', '.join(SPLITS)}; got {split!r}")
    coco = SPLITS[split]
    qfile = root / f"v2_OpenEnded_mscoco_{coco}_questions.json"
    afile = root / f"v2_mscoco_{coco}_annotations.json"
    questions = need(read_json(qfile, root), "questions", list, str(qfile))
    annotations = need(read_json(afile, root), "annotations", list, str(afile))
    by_id = {}
    for i, a in enumerate(annotations):
        where = f"{afile}#annotations[{i}]"
        by_id[need(a, "question_id", int, where)] = (a, where)
    out = []
    for i, q in enumerate(questions):
        where = f"{qfile}#questions[{i}]"
        qid, image_id = need(q, "question_id", int, where), need(q, "image_id", int, where)
        if qid not in by_id:
            raise DatasetError(f"{where}: question {qid} has no annotation in {afile.name}")
        a, a_where = by_id[qid]
        if need(a, "image_id", int, a_where) != image_id:
            raise DatasetError(f"{a_where}: image_id {a['image_id']} differs from the question's {image_id}")
        humans = [need(h, "answer", str, f"{a_where}.answers[{j}]") for j, h in enumerate(need(a, "answers", list, a_where))]
        if not humans:
            raise DatasetError(f"{a_where}: no human answers")
        out.append(Record(images=(root / coco / f"COCO_{coco}_{image_id:012d}.jpg",), text=need(q, "question", str, where),
                          answer=normalize_answer(need(a, "multiple_choice_answer", str, a_where)),
                          qtype=need(a, "answer_type", str, a_where), answers=tuple(humans), where=where))
    return out

"""A user's own data: JSON Lines files ROOT/{train,val,test}.jsonl, image paths relative to ROOT.

    vqa:     {"image": "photos/1.jpg", "question": "what colour is the car?", "answer": "red"}
    verify:  {"image": "photos/1.jpg", "statement": "there is a red car", "label": true}
    match:   {"image": "photos/1.jpg", "caption": "a red car on a street", "label": true}

"type" (optional) names the question type accuracy is reported per. "refs" (optional) points
phrases of the text at what they name, for the grounding loss (`ground_loss_weight`):

    "refs": [{"phrase": "the car", "box": [12, 40, 96, 88]}]

each phrase a run of the text's words (matched as the tokenizer splits them, case-insensitive),
each box x0, y0, x1, y1 in pixels of the image as a viewer shows it (checked against the image).
"""

from __future__ import annotations

import math
from pathlib import Path

from mmedge.data.grounding import find_phrase
from mmedge.data.sources.records import Record, Ref, inside, need, read_json_lines
from mmedge.data.tokenizer import MAX_TEXT_CHARS, words
from mmedge.errors import DatasetError

TEXT_FIELD = {"vqa": "question", "verify": "statement", "match": "caption"}
MAX_REFS = 64  # per record: more phrases than a model's text tokens can name


def _number(v) -> float | None:
    """v as a finite float, None when it is not a JSON number (a bool, an infinity, an integer too large)."""
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def _box(value, where: str, k: int) -> tuple[float, float, float, float]:
    numbers = [_number(v) for v in value] if isinstance(value, list) and len(value) == 4 else [None]
    if None in numbers:
        raise DatasetError(f"{where}: refs[{k}].box must be a list of four numbers [x0, y0, x1, y1] (pixels), "
                           f"got {str(value)[:80]}")
    x0, y0, x1, y1 = numbers
    if not (0 <= x0 < x1 and 0 <= y0 < y1):
        raise DatasetError(f"{where}: refs[{k}].box {value} must have 0 <= x0 < x1 and 0 <= y0 < y1 (pixels, "
                           f"[left, top, right, bottom])")
    return x0, y0, x1, y1


def parse_refs(obj: dict, text: str, where: str) -> tuple[Ref, ...]:
    """A record's optional "refs": each {"phrase": words of `text`, "box": [x0, y0, x1, y1]}."""
    value = obj.get("refs", [])
    if not isinstance(value, list):
        raise DatasetError(f"{where}: field 'refs' must be a list of {{\"phrase\": ..., \"box\": [x0, y0, x1, y1]}}")
    if not value:
        return ()
    if len(value) > MAX_REFS:
        raise DatasetError(f"{where}: {len(value)} refs; a record may name at most {MAX_REFS}")
    text_words, refs = words(text[:MAX_TEXT_CHARS]), []  # a longer text is refused by read_records
    for k, ref in enumerate(value):
        phrase = need(ref, "phrase", str, f"{where}: refs[{k}]")
        box = _box(need(ref, "box", list, f"{where}: refs[{k}]"), where, k)
        phrase_words = tuple(words(phrase[:MAX_TEXT_CHARS]))  # a longer phrase cannot be a run of the text
        if not phrase_words or find_phrase(text_words, phrase_words) is None:
            raise DatasetError(f"{where}: refs[{k}].phrase {phrase!r} is not a run of words of the text {text!r:.120}; "
                               f"name words the text contains")
        refs.append(Ref(phrase_words, box))
    return tuple(refs)


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
        text = need(obj, TEXT_FIELD[task], str, where)
        out.append(Record(images=(image,), text=text, answer=answer, qtype=qtype,
                          refs=parse_refs(obj, text, where), where=where))
    return out


def names_refs(root: Path) -> bool:
    """Whether any record of ROOT/train.jsonl carries a non-empty "refs" (read, not checked: training
    checks every record)."""
    for _, obj in read_json_lines(root / "train.jsonl", root):
        if isinstance(obj, dict) and obj.get("refs"):
            return True
    return False

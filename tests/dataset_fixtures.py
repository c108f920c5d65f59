"""Small datasets in the official layouts (file names, JSON keys, folders), built from generated
scenes, for the real-data tests: no real dataset can be downloaded here."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from mmedge.data.batches import generate

DISAGREE = ["two", "2", "2", "3", "2", "two", "2", "3", "2", "2"]  # normalised: 8 x "2", 2 x "3"


def _scenes(task: str, split: str, n: int):
    """Generated samples for a fixture split: the generator's train split for "train", its validation
    split otherwise, so that a fixture's training and validation records differ."""
    return generate(task, 0, "train" if split == "train" else "val", range(n))


def _save(image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def make_vqa2(root: Path, n: int = 24, split: str = "train") -> Path:
    coco = f"{split}2014"
    samples = _scenes("vqa", split, n)
    questions, annotations = [], []
    for i, s in enumerate(samples):
        image_id = 1000 + i
        _save(s.image, root / coco / f"COCO_{coco}_{image_id:012d}.jpg")
        humans = DISAGREE if i == 0 else [s.answer] * 9 + ["something else"]
        questions.append({"question_id": 10 * image_id, "image_id": image_id, "question": s.text + " ?"})
        annotations.append({"question_id": 10 * image_id, "image_id": image_id, "question_type": "what",
                            "answer_type": "number" if s.qtype == "count" else "other",
                            "multiple_choice_answer": "2" if i == 0 else s.answer,
                            "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": j + 1}
                                        for j, a in enumerate(humans)]})
    (root / f"v2_OpenEnded_mscoco_{coco}_questions.json").write_text(json.dumps(
        {"info": {}, "task_type": "Open-Ended", "data_type": "mscoco", "license": {}, "data_subtype": coco,
         "questions": questions}))
    (root / f"v2_mscoco_{coco}_annotations.json").write_text(json.dumps(
        {"info": {}, "license": {}, "data_subtype": coco, "annotations": annotations}))
    return root


def make_gqa(root: Path, n: int = 16, split: str = "val") -> Path:
    samples = _scenes("vqa", split, n)
    questions = {}
    for i, s in enumerate(samples):
        image_id = f"n{100 + i}"
        _save(s.image, root / "images" / f"{image_id}.jpg")
        questions[str(2000 + i)] = {"imageId": image_id, "question": s.text, "answer": s.answer,
                                    "types": {"structural": "query" if s.qtype in ("color", "shape") else "verify",
                                              "semantic": "attr", "detailed": s.qtype}}
    path = root / "questions" / f"{split}_balanced_questions.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(questions))
    return root


def make_nlvr2(root: Path, sets: int = 6, split: str = "dev") -> Path:
    samples = _scenes("verify", split, 4 * sets)
    lines = []
    for k in range(sets):
        for pair in range(2):  # two image pairs per sentence: consistency groups them
            left, right = samples[4 * k + 2 * pair], samples[4 * k + 2 * pair + 1]
            folder = root / "images" / split / (str(k % 3) if split == "train" else "")
            stem = f"{split}-{k}-{pair}"
            _save(left.image, folder / f"{stem}-img0.png")
            _save(right.image, folder / f"{stem}-img1.png")
            row = {"identifier": f"{stem}-0", "sentence": left.text, "label": "True" if left.answer == "true" else "False"}
            if split == "train":
                row["directory"] = k % 3
            lines.append(json.dumps(row))
    (root / f"{split}.json").write_text("\n".join(lines) + "\n")
    return root


def make_coco(root: Path, n: int = 8, split: str = "val") -> Path:
    samples = _scenes("match", split, n)
    images, annotations = [], []
    for i, s in enumerate(samples):
        name = f"{i:012d}.jpg"
        _save(s.image, root / f"{split}2017" / name)
        images.append({"id": i, "file_name": name, "height": 96, "width": 96})
        for j in range(2):
            annotations.append({"id": 10 * i + j, "image_id": i, "caption": s.text})
    path = root / "annotations" / f"captions_{split}2017.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"info": {}, "licenses": [], "images": images, "annotations": annotations}))
    return root


def make_cc(root: Path, n: int = 8, split: str = "train") -> Path:
    samples = _scenes("match", split, n)
    rows = []
    for i, s in enumerate(samples):
        _save(s.image, root / "images" / f"{i}.jpg")
        rows.append(f"{s.text}\timages/{i}.jpg")
    (root / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    return root


def make_jsonl(root: Path, n: int = 12, split: str = "train") -> Path:
    samples = _scenes("vqa", split, n)
    rows = []
    for i, s in enumerate(samples):
        _save(s.image, root / "photos" / f"{i}.png")
        rows.append(json.dumps({"image": f"photos/{i}.png", "question": s.text, "answer": s.answer, "type": s.qtype}))
    (root / f"{split}.jsonl").write_text("\n".join(rows) + "\n")
    return root

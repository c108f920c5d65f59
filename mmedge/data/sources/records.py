"""What every dataset source yields: records pointing at images on disk, in one shape."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mmedge.errors import DatasetError


@dataclass(frozen=True)
class Record:
    """One example of a real dataset.

    images: one path (VQA, GQA, captions, user data) or two (NLVR2's left and right image).
    text: the question, statement or caption. answer: the training answer (VQA: the most common
    human answer, normalised); answers: every human answer where the format has several (VQA v2's
    ten), used by the soft accuracy. qtype: the type the metric reports per (VQA answer type, GQA
    structural type, ...). group: what records a consistency metric groups (NLVR2's sentence).
    where: "file:line" or "file#id", for error messages.
    """

    images: tuple[Path, ...]
    text: str
    answer: str
    qtype: str = ""
    answers: tuple[str, ...] = ()
    group: str = ""
    extra: dict = field(default_factory=dict, compare=False, hash=False)
    where: str = ""


def need(obj: dict, key: str, kind: type | tuple[type, ...], where: str):
    """obj[key] checked for presence and type; DatasetError naming `where` otherwise."""
    if not isinstance(obj, dict):
        raise DatasetError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if key not in obj:
        raise DatasetError(f"{where}: missing field {key!r}")
    value, kinds = obj[key], kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):  # bool is an int
        names = "/".join(k.__name__ for k in kinds)
        raise DatasetError(f"{where}: field {key!r} must be {names}, got {type(value).__name__}")
    return value


def read_json(path: Path):
    """A JSON annotation file, with errors that name it."""
    import json

    if not path.is_file():
        raise DatasetError(f"annotation file not found: {path} (see the README's dataset section for the layout)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc})") from exc


def read_json_lines(path: Path):
    """(line number, object) of a JSON Lines file; a malformed line names the file and line."""
    import json

    if not path.is_file():
        raise DatasetError(f"annotation file not found: {path} (see the README's dataset section for the layout)")
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc

"""What every dataset source yields: records pointing at images on disk, in one shape, and the
reading rules every source shares.

A dataset is data to distrust: every path it names stays inside its ROOT (`inside`: no absolute
path, no '..' part, no empty name or NUL; `open_inside`: no link that resolves outside ROOT, no
FIFO, device, socket or directory, opened without blocking). Annotation files are UTF-8 (a
leading UTF-8 byte-order mark is skipped); another encoding, a record nested too deeply or a
number too long to convert is a DatasetError that names the file and line.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from mmedge.errors import DatasetError


@dataclass(frozen=True)
class Ref:
    """A phrase of a record's text and the box of what it names: pixels (x0, y0, x1, y1) of the
    image as a viewer shows it (EXIF orientation applied), origin at its top-left corner."""

    words: tuple[str, ...]
    box: tuple[float, float, float, float]


@dataclass(frozen=True)
class Record:
    """One example of a real dataset.

    images: one path (VQA, GQA, captions, user data) or two (NLVR2's left and right image).
    text: the question, statement or caption. answer: the training answer (VQA: the most common
    human answer, normalised); answers: every human answer where the format has several (VQA v2's
    ten), used by the soft accuracy. qtype: the type the metric reports per (VQA answer type, GQA
    structural type, ...). group: what records a consistency metric groups (NLVR2's sentence).
    refs: phrases of the text with the boxes of what they name (JSON Lines `refs`; grounding loss).
    where: "file:line" or "file#id", for error messages.
    """

    images: tuple[Path, ...]
    text: str
    answer: str
    qtype: str = ""
    answers: tuple[str, ...] = ()
    group: str = ""
    refs: tuple[Ref, ...] = ()
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


def inside(root: Path, value: str, where: str, name: str, single: bool = False) -> Path:
    """root / value for a path a record names relative to its dataset's root; DatasetError naming
    `where` and the field `name` for an absolute path, a '..' part, an empty path or a NUL
    (`single`: one file or folder name, no '/' at all)."""
    parts = PurePosixPath(value).parts
    if (not value or "\x00" in value or Path(value).is_absolute() or PurePosixPath(value).is_absolute()
            or ".." in parts or ".." in Path(value).parts or (single and ("/" in value or os.sep in value))):
        kind = "a file name without '/'" if single else f"a path relative to {root} without '..'"
        raise DatasetError(f"{where}: {name} {value!r} must be {kind}; fix the record (a dataset may not name "
                           f"files outside its folder)")
    return root / value


_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a device"),
          (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a link"))


def _not_regular(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return None
    return next((kind for test, kind in _KINDS if test(mode)), "not a plain file")


def open_inside(path: Path, root: Path, where: str = "") -> BinaryIO:
    """`path` opened for reading in binary, never outside `root` and never blocking: DatasetError
    (naming `where`, the record, when given) when it resolves outside root (through a link) or is
    not a regular file (a FIFO, device, socket or directory); FileNotFoundError when it is missing,
    another OSError when it cannot be read (permissions)."""
    at = f"{where}: " if where else ""
    real_root, real = os.path.realpath(root), os.path.realpath(path)
    if real != real_root and not real.startswith(real_root.rstrip(os.sep) + os.sep):
        raise DatasetError(f"{at}{path} resolves to {real}, outside {root}; keep the dataset's files inside its "
                           f"folder (copy them in rather than linking out)")
    kind = _not_regular(os.lstat(real).st_mode)  # FileNotFoundError when missing
    if kind is None:
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(real, flags)  # O_NONBLOCK: a FIFO swapped in meanwhile cannot block the open
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            raise DatasetError(f"{at}{path} became a link while it was read; keep the dataset's files inside "
                               f"its folder, as plain files") from exc
        try:
            kind = _not_regular(os.fstat(fd).st_mode)
            if kind is None:
                return os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    raise DatasetError(f"{at}{path} is not a regular file ({kind}); a dataset's images and annotation files must be "
                       f"plain files: replace it or drop the record")


def _annotation(path: Path, root: Path | None) -> BinaryIO:
    try:
        return open_inside(path, root if root is not None else path.parent)
    except FileNotFoundError as exc:
        raise DatasetError(f"annotation file not found: {path} (see docs/guides/data.md for the "
                           f"layout)") from exc
    except OSError as exc:
        raise DatasetError(f"annotation file {path} cannot be read ({exc.strerror or exc}); check its "
                           f"permissions") from exc


def _utf8(data: bytes, path: Path, line: int | None) -> str:
    """UTF-8 bytes (a leading UTF-8 byte-order mark skipped) as text, else DatasetError naming the
    file and line. `line`: the line number of `data` (a JSON Lines or TSV line), None for a whole file."""
    first = line in (None, 1)
    if first and data[:4] in (b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff"):
        raise DatasetError(f"{path}: is UTF-32 (it starts with a UTF-32 byte-order mark); save the file as UTF-8")
    if first and data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise DatasetError(f"{path}: is UTF-16 (it starts with a UTF-16 byte-order mark); save the file as UTF-8")
    if first and data[:3] == b"\xef\xbb\xbf":
        data = data[3:]
    nul = data.find(b"\x00")
    if nul >= 0:
        at = line if line is not None else data.count(b"\n", 0, nul) + 1
        raise DatasetError(f"{path}:{at}: holds a NUL byte, which UTF-8 text never does (is it UTF-16 without a "
                           f"byte-order mark?); save the file as UTF-8")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        at = line if line is not None else data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise DatasetError(f"{path}:{at}: not UTF-8 (byte 0x{data[exc.start]:02x} at column {column}: Latin-1, "
                           f"Windows-1252 or another encoding?); save the file as UTF-8") from exc


def _json(text: str, at: str):
    """json.loads with every failure a DatasetError naming `at` (the file, or file:line)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{at}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from exc
    except ValueError as exc:  # an integer of more than 4300 digits
        raise DatasetError(f"{at}: not valid JSON ({str(exc)[:80]})") from exc
    except RecursionError:
        raise DatasetError(f"{at}: a value nested too deeply for the JSON parser; annotation records are flat "
                           f"objects: fix or drop it") from None


def read_json(path: Path, root: Path | None = None):
    """A JSON annotation file (inside `root`, by default its own folder), with errors that name it."""
    with _annotation(path, root) as f:
        try:
            data = f.read()
        except OSError as exc:
            raise DatasetError(f"{path} cannot be read ({exc.strerror or exc})") from exc
    return _json(_utf8(data, path, None), str(path))


def text_lines(path: Path, root: Path | None = None) -> Iterator[tuple[int, str]]:
    """(line number, text without the line end) of a UTF-8 text file, one line at a time."""
    with _annotation(path, root) as f:
        number = 0
        while True:
            try:
                raw = f.readline()
            except OSError as exc:
                raise DatasetError(f"{path}:{number + 1}: cannot be read ({exc.strerror or exc})") from exc
            if not raw:
                return
            number += 1
            yield number, _utf8(raw, path, number).rstrip("\r\n")


def read_json_lines(path: Path, root: Path | None = None) -> Iterator[tuple[int, object]]:
    """(line number, object) of a JSON Lines file; a malformed line names the file and line."""
    for number, line in text_lines(path, root):
        if line.strip():
            yield number, _json(line, f"{path}:{number}")

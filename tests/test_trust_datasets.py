"""Datasets read as an attacker would write them (issue 31, defects 4, 5 and the dataset parts of 15):
paths that leave ROOT, links, FIFOs and directories where images belong, files in other encodings,
records nested too deep. Each is refused with a DatasetError naming the file and the record,
never read, never a hang, never an untyped error."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import dataset_fixtures as fx
from mmedge.data.sources import open_dataset, parse_data_spec, read_records
from mmedge.errors import DatasetError


def _records(name: str, root: Path, task: str, split: str):
    return read_records(parse_data_spec(f"{name}:{root}"), task, split)


def _open(name: str, root: Path, task: str, split: str, tmp_path: Path):
    return open_dataset(parse_data_spec(f"{name}:{root}"), task, split, 32, cache_dir=tmp_path / "cache",
                        workers=1, progress=False)


ESCAPES = ["../outside.png", "../../etc/passwd", "/proc/self/environ", "a/../../x.png", "", "a\x00b.png"]


# ------------------------------------------------------------------ defect 4: paths confined to ROOT
@pytest.mark.parametrize("bad", ESCAPES)
def test_coco_file_name_outside_root_is_refused(bad, tmp_path):
    root = fx.make_coco(tmp_path / "coco", n=3)
    path = root / "annotations" / "captions_val2017.json"
    data = json.loads(path.read_text())
    data["images"][1]["file_name"] = bad
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=r"captions_val2017\.json#images\[1\]: file_name .* must be a path relative"):
        _records("coco", root, "match", "val")


@pytest.mark.parametrize("bad", ESCAPES[:4])
def test_conceptual_captions_path_outside_root_is_refused(bad, tmp_path):
    root = fx.make_cc(tmp_path / "cc", n=3)
    lines = (root / "train.tsv").read_text().splitlines()
    lines[2] = f"a caption\t{bad}"
    (root / "train.tsv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"train\.tsv:3: image .* must be a path relative"):
        _records("cc", root, "pretrain", "train")


@pytest.mark.parametrize("bad", ["../../../etc/passwd", "/proc/self/environ", "x/../../y", ""])
def test_gqa_image_id_outside_root_is_refused(bad, tmp_path):
    root = fx.make_gqa(tmp_path / "gqa", n=3)
    path = root / "questions" / "val_balanced_questions.json"
    data = json.loads(path.read_text())
    data["2001"]["imageId"] = bad
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=r"val_balanced_questions\.json#2001: imageId .* must be"):
        _records("gqa", root, "vqa", "val")


@pytest.mark.parametrize("field, bad", [("identifier", "../../../etc/x-0-0-0"), ("identifier", "/etc/x-0-0-0"),
                                        ("directory", "../../../../etc"), ("directory", "/etc")])
def test_nlvr2_path_construction_outside_root_is_refused(field, bad, tmp_path):
    root = fx.make_nlvr2(tmp_path / "nlvr2", sets=2, split="train")
    lines = (root / "train.json").read_text().splitlines()
    row = json.loads(lines[1])
    row[field] = bad
    lines[1] = json.dumps(row)
    (root / "train.json").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"train\.json:2: .* must be"):
        _records("nlvr2", root, "verify", "train")


def test_a_link_that_resolves_outside_root_is_refused_and_never_read(tmp_path):
    root = fx.make_jsonl(tmp_path / "own", n=3)
    outside = tmp_path / "secret.png"
    (root / "photos" / "1.png").rename(outside)  # a readable image, but outside ROOT
    (root / "photos" / "1.png").symlink_to(outside)
    with pytest.raises(DatasetError, match=r"train\.jsonl:2: .*1\.png.* outside"):
        _open("jsonl", root, "vqa", "train", tmp_path)
    # a link that stays inside ROOT is fine
    (root / "photos" / "1.png").unlink()
    (root / "photos" / "copy.png").write_bytes(outside.read_bytes())
    (root / "photos" / "1.png").symlink_to("copy.png")
    assert len(_open("jsonl", root, "vqa", "train", tmp_path)) == 3


def test_a_linked_annotation_file_outside_root_is_refused(tmp_path):
    root = fx.make_jsonl(tmp_path / "own", n=2)
    (root / "train.jsonl").rename(tmp_path / "elsewhere.jsonl")
    (root / "train.jsonl").symlink_to(tmp_path / "elsewhere.jsonl")
    with pytest.raises(DatasetError, match=r"train\.jsonl.* outside"):
        _records("jsonl", root, "vqa", "train")


# ------------------------------------------------------------------ defect 5: non-regular files never block
def _without_blocking(call, fifo: Path):
    """call() in a thread; if it is still blocked after 20 s (opening `fifo` for reading waits for a
    writer), a writer opens and closes the FIFO to release it and the test fails instead of hanging."""
    import threading

    outcome = {}

    def run():
        try:
            outcome["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(20)
    if thread.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # the blocked reader gets end-of-file
        thread.join(5)
        pytest.fail(f"reading the dataset blocked on the FIFO {fifo}")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@pytest.mark.timeout(30)
def test_an_image_that_is_a_fifo_is_refused_without_blocking(tmp_path):
    root = fx.make_jsonl(tmp_path / "own", n=3)
    fifo = root / "photos" / "2.png"
    fifo.unlink()
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    with pytest.raises(DatasetError, match=r"train\.jsonl:3: .*2\.png is not a regular file"):
        _without_blocking(lambda: _open("jsonl", root, "vqa", "train", tmp_path), fifo)


@pytest.mark.timeout(30)
def test_an_image_that_is_a_directory_is_refused(tmp_path):
    root = fx.make_jsonl(tmp_path / "own", n=3)
    (root / "photos" / "0.png").unlink()
    (root / "photos" / "0.png").mkdir()
    with pytest.raises(DatasetError, match=r"train\.jsonl:1: .*0\.png is not a regular file"):
        _open("jsonl", root, "vqa", "train", tmp_path)


@pytest.mark.timeout(30)
def test_an_annotation_file_that_is_a_fifo_is_refused_without_blocking(tmp_path):
    root = fx.make_cc(tmp_path / "cc", n=2)
    fifo = root / "train.tsv"
    fifo.unlink()
    os.mkfifo(fifo)
    with pytest.raises(DatasetError, match=r"train\.tsv is not a regular file"):
        _without_blocking(lambda: _records("cc", root, "pretrain", "train"), fifo)


@pytest.mark.timeout(30)
def test_a_tampered_image_cache_is_rebuilt_never_trusted_or_blocking(tmp_path):
    root = fx.make_jsonl(tmp_path / "own", n=3)
    first = _open("jsonl", root, "vqa", "train", tmp_path)
    (folder,) = (tmp_path / "cache").iterdir()
    (folder / "index.json").write_text('{"row": {"x": 99}, "skipped": {}}')  # a row out of range
    assert len(_open("jsonl", root, "vqa", "train", tmp_path)) == len(first)
    (folder / "images.npy").unlink()
    os.mkfifo(folder / "images.npy")  # np.load would wait for a writer
    again = _without_blocking(lambda: _open("jsonl", root, "vqa", "train", tmp_path), folder / "images.npy")
    assert (again.image(0) == first.image(0)).all()


# ------------------------------------------------------------------ defect 15: encodings and nesting
def _nlvr2_with_line(tmp_path, raw: bytes) -> Path:
    root = fx.make_nlvr2(tmp_path / "nlvr2", sets=2)
    lines = (root / "dev.json").read_bytes().splitlines()
    lines[1] = raw
    (root / "dev.json").write_bytes(b"\n".join(lines) + b"\n")
    return root


def test_a_latin1_json_lines_file_names_the_line(tmp_path):
    row = {"identifier": "dev-0-1-0", "sentence": "un café", "label": "True"}
    root = _nlvr2_with_line(tmp_path, json.dumps(row, ensure_ascii=False).encode("latin-1"))
    with pytest.raises(DatasetError, match=r"dev\.json:2: not UTF-8 .*save the file as UTF-8"):
        _records("nlvr2", root, "verify", "dev")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le"])
def test_utf16_annotation_files_are_refused_with_what_to_do(encoding, tmp_path):
    root = fx.make_nlvr2(tmp_path / "nlvr2", sets=2)
    (root / "dev.json").write_bytes((root / "dev.json").read_text().encode(encoding))
    with pytest.raises(DatasetError, match=r"dev\.json(:1)?: .*UTF-16.*save the file as UTF-8"):
        _records("nlvr2", root, "verify", "dev")
    coco = fx.make_coco(tmp_path / "coco", n=2)
    path = coco / "annotations" / "captions_val2017.json"
    path.write_bytes(path.read_text().encode(encoding))
    with pytest.raises(DatasetError, match=r"captions_val2017\.json(:1)?: .*UTF-16.*save the file as UTF-8"):
        _records("coco", coco, "match", "val")


def test_a_latin1_tsv_names_the_line(tmp_path):
    root = fx.make_cc(tmp_path / "cc", n=3)
    lines = (root / "train.tsv").read_bytes().splitlines()
    lines[1] = "un café\timages/1.jpg".encode("latin-1")
    (root / "train.tsv").write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(DatasetError, match=r"train\.tsv:2: not UTF-8 .*save the file as UTF-8"):
        _records("cc", root, "pretrain", "train")


def test_a_latin1_json_file_names_the_line(tmp_path):
    root = fx.make_gqa(tmp_path / "gqa", n=2)
    path = root / "questions" / "val_balanced_questions.json"
    data = json.loads(path.read_text())
    data["2001"]["question"] = "café ?"
    path.write_bytes(json.dumps(data, ensure_ascii=False, indent=1).encode("latin-1"))
    line = json.dumps(data, ensure_ascii=False, indent=1).splitlines().index(
        next(s for s in json.dumps(data, ensure_ascii=False, indent=1).splitlines() if "café" in s)) + 1
    with pytest.raises(DatasetError, match=rf"val_balanced_questions\.json:{line}: not UTF-8"):
        _records("gqa", root, "vqa", "val")


def test_a_record_nested_100k_deep_names_the_line(tmp_path):
    deep = b"[" * 100_000 + b"]" * 100_000
    root = _nlvr2_with_line(tmp_path, deep)
    with pytest.raises(DatasetError, match=r"dev\.json:2: .*nested too deeply"):
        _records("nlvr2", root, "verify", "dev")
    gqa = fx.make_gqa(tmp_path / "gqa", n=2)
    (gqa / "questions" / "val_balanced_questions.json").write_bytes(b'{"1": ' + deep + b"}")
    with pytest.raises(DatasetError, match=r"val_balanced_questions\.json: .*nested too deeply"):
        _records("gqa", gqa, "vqa", "val")


def test_a_number_too_long_to_convert_names_the_line(tmp_path):
    root = _nlvr2_with_line(tmp_path, b'{"identifier": "dev-0-1-0", "sentence": "s", "label": "True", "n": '
                            + b"9" * 5000 + b"}")
    with pytest.raises(DatasetError, match=r"dev\.json:2: not valid JSON"):
        _records("nlvr2", root, "verify", "dev")


def test_a_record_text_over_the_tokenizer_cap_is_refused_at_load(tmp_path):
    from mmedge.data.tokenizer import MAX_TEXT_CHARS

    root = fx.make_jsonl(tmp_path / "own", n=2)
    rows = (root / "train.jsonl").read_text().splitlines()
    row = json.loads(rows[1])
    row["question"] = "why " * (MAX_TEXT_CHARS // 4 + 1)
    rows[1] = json.dumps(row)
    (root / "train.jsonl").write_text("\n".join(rows) + "\n")
    with pytest.raises(DatasetError, match=r"train\.jsonl:2: .*65,536"):
        _records("jsonl", root, "vqa", "train")

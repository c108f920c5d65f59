"""The negative golden vectors (tests/vectors/negative/cases.json): every case, applied to a copy of
the shipped bundle, is refused with its reason code, or loads when it is a control; and the
committed cases are what scripts/make_negative_vectors.py builds."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest

from mmedge.errors import BundleError

ROOT = Path(__file__).resolve().parents[1]
VECTORS = ROOT / "tests/vectors/negative"
DOC = json.loads((VECTORS / "cases.json").read_text())
CASES = {c["name"]: c for c in DOC["cases"]}


def copy_base(dest: Path) -> None:
    """A file-by-file copy of the base bundle (no links, no shared inodes)."""
    base = ROOT / DOC["base"]
    for path in sorted(base.rglob("*")):
        target = dest / path.relative_to(base)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)


def apply_ops(bundle: Path, ops: list[dict]) -> None:
    for op in ops:
        kind = op["op"]
        if kind == "write_outside":
            (bundle.parent / op["name"]).write_bytes(base64.b64decode(op["base64"]))
            continue
        path = bundle / op["path"]
        if kind in ("write", "write_repeat", "copy_vector", "mkdir", "mkfifo", "symlink"):
            path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "write":
            path.write_bytes(base64.b64decode(op["base64"]))
        elif kind == "write_repeat":
            block = base64.b64decode(op["base64"])
            with open(path, "wb") as f:
                for _ in range(op["count"]):
                    f.write(block)
        elif kind == "copy_vector":
            shutil.copyfile(VECTORS / "files" / op["from"], path)
        elif kind == "remove":
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        elif kind == "mkdir":
            path.mkdir()
        elif kind == "mkfifo":
            os.mkfifo(path)
        elif kind == "symlink":
            os.symlink(op["target"], path)
        else:
            raise AssertionError(f"unknown op {kind!r}")


def load_case(case: dict, tmp_path: Path):
    from mmedge.runtime.engine import Engine

    bundle = tmp_path / "outside" / "vqa-default-onnx.mmedge"
    copy_base(bundle)
    apply_ops(bundle, case["ops"])
    options = case["load"]
    kwargs = {"verify_key": DOC["public_key_pem"].encode()} if options["verify_key"] else {}
    for key in ("min_sequence", "expect_name"):  # only when set: a plain load needs no new keyword
        if options[key] is not None:
            kwargs[key] = options[key]
    return Engine.load(bundle, backend="onnxruntime", **kwargs)


def test_cases_are_well_formed():
    assert DOC["format"] == "mmedge-negative-vectors-1"
    codes = {"manifest-missing", "manifest-not-regular", "manifest-too-large", "json", "schema-version", "schema",
             "inconsistent", "path", "unlisted", "file-missing", "file-not-regular", "size-mismatch",
             "hash-mismatch", "tokenizer", "signature-missing", "signature-malformed", "signature-key",
             "signature-invalid", "rollback", "self-check", "unsupported"}
    assert len(CASES) == len(DOC["cases"])
    for case in DOC["cases"]:
        assert case["code"] is None or case["code"] in codes, case["name"]
        assert set(case["load"]) == {"verify_key", "min_sequence", "expect_name"}
        assert isinstance(case["needs_backend"], bool) and case["why"]
    assert sum(p.stat().st_size for p in VECTORS.rglob("*") if p.is_file()) < 1 << 20


@pytest.mark.parametrize("name", list(CASES))
def test_case(name, tmp_path):
    case = CASES[name]
    if case["needs_backend"]:
        pytest.importorskip("onnxruntime")
    if case["code"] is None:
        engine = load_case(case, tmp_path)
        assert engine.predict(ROOT / "tests/vectors/golden/images" / _an_image(), "what color is the circle ?").answer
        return
    with pytest.raises(BundleError) as info:
        load_case(case, tmp_path)
    assert getattr(info.value, "code", None) == case["code"], f"{name}: {info.value}"


def _an_image() -> str:
    return sorted(p.name for p in (ROOT / "tests/vectors/golden/images").glob("*.png"))[0]


def _normalised(doc: dict) -> dict:
    """The cases with what depends on the throwaway keys (public key, signatures) masked."""
    doc = json.loads(json.dumps(doc))
    doc["public_key_pem"] = "*"
    for case in doc["cases"]:
        for op in case["ops"]:
            if op.get("path") == "manifest.sig" and op["op"] == "write":
                data = base64.b64decode(op["base64"])
                try:
                    record = json.loads(data)
                except ValueError:
                    continue
                if isinstance(record, dict):
                    record.update({k: "*" for k in ("signature", "public_key_sha256") if k in record
                                   and record[k] != "!!!"})
                    op["base64"] = [record, len(data)]
    return doc


def test_vectors_are_up_to_date():
    pytest.importorskip("onnx")
    spec = importlib.util.spec_from_file_location("make_negative_vectors", ROOT / "scripts/make_negative_vectors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    doc, files = module.build(ROOT / DOC["base"], module.Keys())
    assert _normalised(doc) == _normalised(DOC), "run python scripts/make_negative_vectors.py"
    assert sorted(files) == sorted(p.name for p in (VECTORS / "files").iterdir())
    for name, data in files.items():
        assert (VECTORS / "files" / name).read_bytes() == data, name

"""Issue 31, the writing side of trust: what `export --force`, `bundle`, `calibrate` and `sign` may
replace, rewrite and sign, through the CLI.

- `--force` replaces only a folder that is provably an mmedge bundle (a manifest that passes its
  schema, nothing under it that `files` does not list); a slim bundle is never written over, into
  or around its source (defects 1, 2).
- Captioning `calibrate` checks every input (key, bound, data) before writing, signs only what it
  verified on load and keeps the same `files`; `--max-drop` and `--data` are honoured (3, 9).
- `mmedge sign` signs and verifies captioning bundles (10); its odd inputs are one-line errors (15).
- Options given as 0 are not mistaken for "not given"; options that would be ignored are refused (16).
- Export writes `release` {name, sequence}; calibrating keeps the name and raises the sequence (13).

Budget: one tiny captioner export (ONNX only) and one ONNX-only classifier export, shared.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from mmedge.cli import main
from test_cli_errors import refused, run_main

REPO = Path(__file__).resolve().parents[1]
SHIPPED_MODEL = REPO / "models" / "vqa-default"
SHIPPED_BUNDLE = SHIPPED_MODEL / "bundles" / "vqa-default-onnx.mmedge"
FAST_RECIPE = {"targets": ["onnx"], "ort_format": False, "in_graph": False, "parity_samples": 2, "keep_ratios": [1.0]}


def tree(root: Path) -> dict[str, bytes]:
    """Every file under root with its bytes (links by their target), to compare before and after."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        out[rel] = f"-> {p.readlink()}".encode() if p.is_symlink() else p.read_bytes() if p.is_file() else b"/"
    return out


def manifest_of(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("keys")
    assert main(["sign", "--new-key", str(folder)]) == 0
    return folder / "mmedge-signing.pem", folder / "mmedge-signing.pub.pem"


@pytest.fixture(scope="module")
def captioner(tmp_path_factory) -> Path:
    from mmedge.caption.train import CaptionTrainConfig, CaptionTrainer
    from test_caption import TINY_CAPTION

    out = tmp_path_factory.mktemp("captioner") / "model"
    cfg = {**TINY_CAPTION, "steps": 2, "eval_every": 2, "checkpoint_every": 2, "eval_samples": 4}
    CaptionTrainer(CaptionTrainConfig(**cfg), out, progress=False).fit()
    return out


@pytest.fixture(scope="module")
def caption_bundle(captioner, tmp_path_factory) -> Path:
    """The tiny captioner exported through the CLI (ONNX fp32 only, release sequence 41)."""
    out = tmp_path_factory.mktemp("caption_bundle") / "cap.mmedge"
    assert main(["export", "--model", str(captioner), "--out", str(out), "--target", "onnx", "--parity-samples", "2",
                 "--release-sequence", "41"]) == 0
    return out


@pytest.fixture(scope="module")
def classifier_bundle(tmp_path_factory) -> Path:
    """The shipped classifier exported through the CLI (ONNX fp32, one keep ratio, release sequence 7)."""
    folder = tmp_path_factory.mktemp("classifier_bundle")
    recipe = folder / "recipe.json"
    recipe.write_text(json.dumps(FAST_RECIPE))
    out = folder / "cls.mmedge"
    assert main(["export", "--model", str(SHIPPED_MODEL), "--recipe", str(recipe), "--out", str(out),
                 "--release-sequence", "7"]) == 0
    return out


def copy_of(bundle: Path, tmp_path: Path, name: str = "b.mmedge") -> Path:
    out = tmp_path / name
    shutil.copytree(bundle, out)
    return out


def slim(source: Path, out: Path, *extra) -> list:
    return ["bundle", "--artifact", source, "--runtime", "onnxruntime", "--format", "onnx", "--out", out, *extra]


# ------------------------------------------------------------------ defect 1: --force replaces bundles only


def test_force_refuses_a_folder_whose_manifest_only_looks_like_a_bundles(capsys, tmp_path):
    app = tmp_path / "app"
    app.mkdir()
    (app / "manifest.json").write_text('{"schema_version": 3}')
    (app / "precious.txt").write_text("an app's own file")
    before = tree(app)
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps(FAST_RECIPE))
    refused(capsys, "export", "--model", SHIPPED_MODEL, "--recipe", recipe, "--out", app, "--force",
            match="replaces only an mmedge bundle")
    refused(capsys, *slim(SHIPPED_BUNDLE, app, "--force"), match="replaces only an mmedge bundle")
    (app / "manifest.json").write_text(json.dumps({**manifest_of(SHIPPED_BUNDLE), "schema_version": 1.0}))
    before = tree(app)
    refused(capsys, *slim(SHIPPED_BUNDLE, app, "--force"), match="not the integer 1")
    assert tree(app) == before


def test_force_refuses_a_bundle_holding_files_its_manifest_does_not_list(capsys, tmp_path):
    target = copy_of(SHIPPED_BUNDLE, tmp_path)
    (target / "onnx" / "notes.txt").write_text("mine")
    (target / "saved").mkdir()
    (target / "link").symlink_to(tmp_path)
    before = tree(target)
    line = refused(capsys, *slim(SHIPPED_BUNDLE, target, "--force"), match="would delete")
    for stray in ("onnx/notes.txt", "saved", "link"):
        assert stray in line
    assert "another --out" in line
    assert tree(target) == before
    for stray in (target / "onnx" / "notes.txt", target / "link"):
        stray.unlink()
    (target / "saved").rmdir()
    code, out, err = run_main(capsys, *slim(SHIPPED_BUNDLE, target, "--force"))  # a whole bundle is replaced
    assert code == 0, err
    assert manifest_of(target)["slim"]["format"] == "onnx"


def test_force_replaces_a_generative_vlm_bundle_and_not_a_broken_one(tmp_path):
    """Every bundle kind is provably a bundle by its own schema and consistency: a VLM bundle (checked as a
    classifier's, it lacks the classifier's fields) may be replaced; one whose layout does not hold may not."""
    from mmedge.bundle.publish import check_destination, manifest_problems
    from mmedge.errors import BundleError

    target = copy_of(REPO / "tests/vectors/vlm/tiny-smolvlm-onnx.mmedge", tmp_path)
    assert manifest_problems(target)[1] == []
    check_destination(target, force=True)
    manifest = manifest_of(target)
    manifest["thresholds"]["keep_ratio"] = 0.125
    (target / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="keep_ratio 0.125"):
        check_destination(target, force=True)


# ------------------------------------------------------------------ defect 2: never over, into or around the source


def test_a_slim_bundle_is_never_written_over_into_or_around_its_source(capsys, tmp_path):
    from mmedge.bundle.manifest import load_manifest

    source = copy_of(SHIPPED_BUNDLE, tmp_path / "in", "src.mmedge")
    (tmp_path / "alias").symlink_to(source)
    before = tree(tmp_path)
    for out in (source, tmp_path / "alias", source / "onnx" / "slim.mmedge", tmp_path / "in"):
        refused(capsys, *slim(source, out, "--force"), match="would destroy what it is made from")
    refused(capsys, *slim(tmp_path / "alias", source, "--force"), match="is the source")
    assert tree(tmp_path) == before
    load_manifest(source)


# ------------------------------------------------------------------ defects 3, 9: captioning calibrate


def test_caption_calibrate_checks_the_signing_key_before_writing(capsys, tmp_path, caption_bundle, keys):
    from mmedge.bundle.signing import sign_bundle
    from mmedge.caption.manifest import load_caption_manifest

    private, public = keys
    bundle = copy_of(caption_bundle, tmp_path)
    sign_bundle(bundle, private)
    before = tree(bundle)
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    refused(capsys, "calibrate", "--artifact", bundle, "--samples", "20", "--no-progress", "--sign-key", bad,
            match="PEM private key")
    refused(capsys, "calibrate", "--artifact", bundle, "--samples", "20", "--no-progress", "--sign-key",
            tmp_path / "missing.pem", match="does not exist")
    assert tree(bundle) == before  # the old manifest and its (still valid) signature
    load_caption_manifest(bundle, verify_key=public)


def test_caption_calibrate_signs_only_what_it_verified(capsys, tmp_path, caption_bundle, keys):
    private, public = keys
    bundle = copy_of(caption_bundle, tmp_path)
    original = manifest_of(bundle)
    (bundle / "extra.bin").write_bytes(b"unlisted")
    before = tree(bundle)
    refused(capsys, "calibrate", "--artifact", bundle, "--samples", "20", "--no-progress", "--sign-key", private,
            match="extra.bin")
    assert tree(bundle) == before
    (bundle / "extra.bin").unlink()
    (bundle / "onnx" / "secret").symlink_to("/etc/hostname")
    before = tree(bundle)
    refused(capsys, "calibrate", "--artifact", bundle, "--samples", "20", "--no-progress", "--sign-key", private,
            match="onnx/secret")
    assert tree(bundle) == before
    (bundle / "onnx" / "secret").unlink()

    code, out, err = run_main(capsys, "calibrate", "--artifact", bundle, "--samples", "20", "--no-progress",
                              "--sign-key", private)
    assert code == 0, err
    assert "re-signed" in out
    calibrated = manifest_of(bundle)
    assert calibrated["files"] == original["files"]  # the verified list, nothing re-hashed off the disk
    assert calibrated["thresholds"]["calibrated"] is True
    assert calibrated["release"]["name"] == original["release"]["name"] == "cap.mmedge"
    assert calibrated["release"]["sequence"] > original["release"]["sequence"]
    code, out, err = run_main(capsys, "sign", "--artifact", bundle, "--verify", public)
    assert code == 0, err


def test_caption_calibrate_honours_max_drop_and_data(capsys, tmp_path, caption_bundle):
    import dataset_fixtures as fx

    bundle = copy_of(caption_bundle, tmp_path)
    before = tree(bundle)
    code, out, err = run_main(capsys, "calibrate", "--artifact", bundle, "--samples", "20", "--no-progress",
                              "--max-drop", "0.05", "--dry-run")
    assert code == 0, err
    assert "CIDEr drop <= 5.0 points" in out  # --max-drop 0.05 on CIDEr's own scale: 5 points
    assert tree(bundle) == before
    refused(capsys, "calibrate", "--artifact", bundle, "--max-drop", "0.05", "--max-drop-cider", "2",
            match="not both")
    refused(capsys, "calibrate", "--artifact", bundle, "--dry-run", "--sign-key", tmp_path / "k.pem",
            match="--dry-run")
    refused(capsys, "calibrate", "--artifact", bundle, "--data", f"vqa2:{tmp_path}", match="captions")
    few = fx.make_coco(tmp_path / "few", 4, "val")
    refused(capsys, "calibrate", "--artifact", bundle, "--samples", "20", "--no-progress", "--data", f"coco:{few}",
            match="only 4 validation images")
    assert tree(bundle) == before

    coco = fx.make_coco(tmp_path / "coco", 20, "val")
    code, out, err = run_main(capsys, "calibrate", "--artifact", bundle, "--samples", "20", "--no-progress",
                              "--data", f"coco:{coco}", "--max-drop-cider", "3")
    assert code == 0, err
    calibration = manifest_of(bundle)["calibration"]
    assert calibration["data"] == "coco" and calibration["images"] == 20 and calibration["max_drop"] == 3.0


def test_classifier_calibrate_refuses_a_caption_only_bound(capsys, tmp_path):
    bundle = copy_of(SHIPPED_BUNDLE, tmp_path)
    before = tree(bundle)
    refused(capsys, "calibrate", "--artifact", bundle, "--max-drop-cider", "2", "--samples", "100", "--no-progress",
            match="--max-drop-cider")
    assert tree(bundle) == before


# ------------------------------------------------------------------ defect 10: sign captioning bundles


def test_sign_and_verify_a_captioning_bundle(capsys, tmp_path, caption_bundle, keys):
    from mmedge.runtime.engine import Engine

    private, public = keys
    bundle = copy_of(caption_bundle, tmp_path)
    code, out, err = run_main(capsys, "sign", "--artifact", bundle, "--key", private)
    assert code == 0 and (bundle / "manifest.sig").is_file(), err
    code, out, err = run_main(capsys, "sign", "--artifact", bundle, "--verify", public)
    assert code == 0 and "signature valid" in out, err
    assert Engine.load(bundle, verify_key=public).kind == "caption"
    m = manifest_of(bundle)
    m["thresholds"]["keep_ratio"] = 0.5
    (bundle / "manifest.json").write_text(json.dumps(m))
    refused(capsys, "sign", "--artifact", bundle, "--verify", public, match="signature does not match")


# ------------------------------------------------------------------ defect 15: sign's odd inputs


def test_sign_new_key_into_a_file_or_over_keys_is_one_line(capsys, tmp_path, keys):
    a_file = tmp_path / "f"
    a_file.write_text("x")
    refused(capsys, "sign", "--new-key", a_file, match="not a directory")
    refused(capsys, "sign", "--new-key", keys[0].parent, match="exists")
    assert a_file.read_text() == "x"


def test_a_signature_that_is_a_folder_is_one_line(capsys, tmp_path, keys):
    private, public = keys
    bundle = copy_of(SHIPPED_BUNDLE, tmp_path)
    (bundle / "manifest.sig").mkdir()
    before = tree(bundle)
    refused(capsys, "sign", "--artifact", bundle, "--key", private, match="manifest.sig is a folder")
    refused(capsys, "sign", "--artifact", bundle, "--verify", public, match="manifest.sig")
    refused(capsys, "calibrate", "--artifact", bundle, "--samples", "100", "--no-progress", match="manifest.sig")
    assert tree(bundle) == before


# ------------------------------------------------------------------ defect 16: zero is given, ignored options refused


def test_export_refuses_options_it_would_ignore(capsys, tmp_path, captioner):
    out = tmp_path / "x.mmedge"
    for args in (["--drop-visual-after", "0"], ["--drop-visual-threshold", "0"], ["--keep-ratio", "1.0"]):
        refused(capsys, "export", "--model", captioner, "--out", out, "--target", "onnx", *args,
                match="apply to classifier models")
    refused(capsys, "export", "--model", captioner, "--out", out, "--ort-format", match="holds its graphs as .onnx only")
    refused(capsys, "export", "--model", captioner, "--out", out, "--parity-samples", "0", match="--parity-samples")
    refused(capsys, "export", "--model", SHIPPED_MODEL, "--out", out, "--parity-samples", "0", match="--parity-samples")
    refused(capsys, "export", "--model", SHIPPED_MODEL, "--out", out, "--drop-visual-threshold", "0.5",
            match="--drop-visual-after")
    for bad in ("-1", "9007199254740992", "1.5"):
        refused(capsys, "export", "--model", SHIPPED_MODEL, "--out", out, "--release-sequence", bad,
                match="--release-sequence")
    assert not out.exists() and list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ rollback protection: the writers


def test_export_writes_the_release(classifier_bundle, caption_bundle):
    from mmedge.bundle.manifest import validate_schema
    from mmedge.caption.manifest import schema_problems

    cls, cap = manifest_of(classifier_bundle), manifest_of(caption_bundle)
    assert cls["release"] == {"name": "cls.mmedge", "sequence": 7}
    assert cap["release"] == {"name": "cap.mmedge", "sequence": 41}
    assert validate_schema(cls) == [] and schema_problems(cap) == []


def test_a_default_release_is_named_after_the_bundle_at_the_current_time():
    from mmedge.bundle.publish import MAX_SEQUENCE, new_release, next_release

    t0 = time.time_ns() // 1_000_000
    release = new_release("my bundle (v2).mmedge")
    assert release["name"] == "my-bundle--v2-.mmedge"
    assert t0 <= release["sequence"] <= time.time_ns() // 1_000_000
    assert next_release({"name": "x", "release": {"name": "kept", "sequence": 10 ** 15}}) == \
        {"name": "kept", "sequence": 10 ** 15 + 1}
    assert next_release({"name": "old.mmedge"})["name"] == "old.mmedge"  # exported before releases existed
    with pytest.raises(Exception, match="largest"):
        next_release({"name": "x", "release": {"name": "x", "sequence": MAX_SEQUENCE}})


def test_classifier_calibrate_keeps_the_release_name_and_raises_its_sequence(capsys, tmp_path, classifier_bundle):
    from mmedge.bundle.manifest import load_manifest

    bundle = copy_of(classifier_bundle, tmp_path)
    original = manifest_of(bundle)
    code, out, err = run_main(capsys, "calibrate", "--artifact", bundle, "--samples", "100", "--no-progress")
    assert code == 0, err
    calibrated = load_manifest(bundle)
    assert calibrated["release"]["name"] == "cls.mmedge"
    assert calibrated["release"]["sequence"] > original["release"]["sequence"]
    assert calibrated["files"] == original["files"]

"""Loading either kind of bundle as untrusted input (issue 31): a reason code on every refusal, the JSON
edge cases, unlisted files and graphs' external data, what verify=False may skip, rollback protection,
the captioning bundle held to the classifier's checks (schema bounds, consistency, a self-check that
looks at values), and the captioning options that used to fail untyped or be ignored.

Classifier cases run on a copy of the shipped bundle (4 MB, no export); captioning cases on one tiny
captioner exported to ONNX fp32 once per module (about 12 s)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from mmedge.bundle.manifest import load_manifest, parse_manifest
from mmedge.errors import BundleError, ConfigError

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "vqa-default" / "bundles" / "vqa-default-onnx.mmedge"
GREY = np.full((48, 48, 3), 128, np.uint8)


# ------------------------------------------------------------------------------------------- helpers
@pytest.fixture
def vqa(tmp_path) -> Path:
    out = tmp_path / "vqa.mmedge"
    shutil.copytree(SHIPPED, out)
    return out


@pytest.fixture(scope="module")
def caption_source(tmp_path_factory) -> Path:
    """A captioner trained two steps, exported to ONNX fp32 only (shared weights file)."""
    from test_caption import TINY_CAPTION

    from mmedge.caption.export import export_caption_bundle
    from mmedge.caption.train import CaptionTrainConfig, CaptionTrainer

    work = tmp_path_factory.mktemp("trust_caption")
    config = {**TINY_CAPTION, "steps": 2, "eval_every": 2, "checkpoint_every": 2, "eval_samples": 4}
    CaptionTrainer(CaptionTrainConfig(**config), work / "model", progress=False).fit()
    return export_caption_bundle(work / "model", work / "cap.mmedge", ("onnx",), int8=False, parity_images=1,
                                 log=lambda *_: None)


@pytest.fixture
def cap(caption_source, tmp_path) -> Path:
    out = tmp_path / "cap.mmedge"
    shutil.copytree(caption_source, out)
    return out


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> tuple[Path, Path]:
    from mmedge.bundle import signing

    return signing.new_key_pair(tmp_path_factory.mktemp("keys"))


def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def _edit(bundle: Path, change) -> None:
    manifest = _manifest(bundle)
    change(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=1))


def _rehash(bundle: Path, rel: str) -> None:
    data = (bundle / rel).read_bytes()
    _edit(bundle, lambda m: m["files"].__setitem__(rel, {"sha256": hashlib.sha256(data).hexdigest(),
                                                         "bytes": len(data)}))


def _code(call) -> str:
    with pytest.raises(BundleError) as err:
        call()
    return err.value.code


def _load(bundle, **kwargs):
    from mmedge.runtime.engine import Engine

    return Engine.load(bundle, **kwargs)


# --------------------------------------------------------------------------------- JSON edge cases
BASE = b'{"schema_version": 1, "a": %s}'
JSON_REFUSED = {
    "byte-order mark": b"\xef\xbb\xbf" + BASE % b"1",
    "duplicate key": b'{"schema_version": 1, "a": 1, "a": 2}',
    "duplicate nested key": BASE % b'[{"x": 1, "x": 1}]',
    "1e400": BASE % b"1e400",
    "-1e400": BASE % b"-1e400",
    "2^53": BASE % b"9007199254740992",
    "-(2^53)": BASE % b"-9007199254740992",
    "5000 digits": BASE % (b"9" * 5000),
    "unpaired high surrogate": BASE % b'"\\ud800"',
    "unpaired low surrogate in a key": b'{"schema_version": 1, "\\udc00": 1}',
    "depth 33": BASE % (b"[" * 32 + b"]" * 32),  # the object is depth 1, each array adds 1
    "NaN": BASE % b"NaN",
    "-Infinity": BASE % b"-Infinity",
    "not UTF-8": BASE % b'"\xff"',
    "top level array": b"[1]",
    "trailing comma": BASE % b"[1,]",
}
JSON_ACCEPTED = {
    "2^53 - 1": BASE % b"9007199254740991",
    "a large double": BASE % b"1.5e308",
    "an integer-valued exponent": BASE % b"1e300",
    "a surrogate pair": BASE % b'"\\ud83d\\ude00"',
    "depth 32": BASE % (b"[" * 31 + b"]" * 31),
}


@pytest.mark.parametrize("case", sorted(JSON_REFUSED))
def test_json_edge_cases_are_refused_with_code_json(case):
    assert _code(lambda: parse_manifest(JSON_REFUSED[case])) == "json"


@pytest.mark.parametrize("case", sorted(JSON_ACCEPTED))
def test_json_edge_cases_that_are_json(case):
    assert parse_manifest(JSON_ACCEPTED[case])["schema_version"] == 1


def test_json_rules_hold_for_the_manifest_the_signature_and_the_tokenizer(vqa, keys):
    from mmedge.bundle import signing

    text = (vqa / "manifest.json").read_bytes()
    (vqa / "manifest.json").write_bytes(text.replace(b'"schema_version": 1', b'"schema_version": 1, "schema_version": 1', 1))
    assert _code(lambda: _load(vqa)) == "json"
    (vqa / "manifest.json").write_bytes(text)
    signing.sign_bundle(vqa, keys[0])
    signature = (vqa / "manifest.sig").read_bytes()
    (vqa / "manifest.sig").write_bytes(b"\xef\xbb\xbf" + signature)
    assert _code(lambda: _load(vqa, verify_key=keys[1])) == "signature-malformed"
    (vqa / "manifest.sig").write_bytes(signature.replace(b'"format"', b'"algorithm": "ed25519", "format"', 1))
    assert _code(lambda: _load(vqa, verify_key=keys[1])) == "signature-malformed"
    (vqa / "manifest.sig").unlink()
    tokenizer = (vqa / "tokenizer.json").read_bytes()
    (vqa / "tokenizer.json").write_bytes(tokenizer.replace(b'"[PAD]"', b'"[PAD]": 0, "[PAD]"', 1))
    _rehash(vqa, "tokenizer.json")
    assert _code(lambda: _load(vqa)) == "tokenizer"


# ------------------------------------------------------------------------------------ reason codes
def _sig_dir(b: Path) -> None:
    (b / "manifest.sig").mkdir()


CLASSIFIER_CODES = {
    "no manifest": (lambda b: (b / "manifest.json").unlink(), "manifest-missing"),
    "manifest a directory": (lambda b: ((b / "manifest.json").unlink(), (b / "manifest.json").mkdir()),
                             "manifest-not-regular"),
    "manifest a link": (lambda b: (os.replace(b / "manifest.json", b / "m.json"),
                                   (b / "manifest.json").symlink_to(b / "m.json")), "manifest-not-regular"),
    "manifest 9 MiB": (lambda b: (b / "manifest.json").write_bytes(b" " * (9 << 20)), "manifest-too-large"),
    "schema_version 1.0": (lambda b: _edit(b, lambda m: m.__setitem__("schema_version", 1.0)), "schema-version"),
    "schema_version 2": (lambda b: _edit(b, lambda m: m.__setitem__("schema_version", 2)), "schema-version"),
    "schema": (lambda b: _edit(b, lambda m: m["preprocessing"].__setitem__("image_size", 10 ** 6)), "schema"),
    "inconsistent": (lambda b: _edit(b, lambda m: m.__setitem__("labels", m["labels"][:3])), "inconsistent"),
    "path": (lambda b: _edit(b, lambda m: m["tokenizer"].__setitem__("file", "../tokenizer.json")), "path"),
    "unlisted file": (lambda b: (b / "notes.txt").write_text("x"), "unlisted"),
    "unlisted empty folder": (lambda b: (b / "empty").mkdir(), "unlisted"),
    "unlisted link": (lambda b: (b / "passwd").symlink_to("/etc/passwd"), "unlisted"),
    "unlisted file in a listed folder": (lambda b: (b / "onnx" / "fp32" / "extra.bin").write_bytes(b"x"), "unlisted"),
    "file missing": (lambda b: (b / "onnx" / "fp32" / "k9_stage3.onnx").unlink(), "file-missing"),
    "listed file a link": (lambda b: (os.replace(b / "tokenizer.json", b.parent / "t.json"),
                                      (b / "tokenizer.json").symlink_to(b.parent / "t.json")), "file-not-regular"),
    "listed file a FIFO": (lambda b: ((b / "tokenizer.json").unlink(), os.mkfifo(b / "tokenizer.json")),
                           "file-not-regular"),
    "size": (lambda b: (b / "tokenizer.json").write_bytes((b / "tokenizer.json").read_bytes() + b" "),
             "size-mismatch"),
    "hash": (lambda b: (b / "onnx" / "fp32" / "k9_stage1.onnx").write_bytes(
        (b / "onnx" / "fp32" / "k9_stage2.onnx").read_bytes()), "hash-mismatch"),
    "tokenizer": (lambda b: ((b / "tokenizer.json").write_text((b / "tokenizer.json").read_text().replace(
        '"max_length": 24', '"max_length": 23')), _rehash(b, "tokenizer.json")), "tokenizer"),
    "manifest.sig a directory": (_sig_dir, "unlisted"),
    "unknown kind": (lambda b: _edit(b, lambda m: m.__setitem__("kind", "detector")), "unsupported"),
}


@pytest.mark.parametrize("case", sorted(CLASSIFIER_CODES))
def test_every_classifier_refusal_has_its_reason_code(vqa, case):
    from mmedge.bundle import refusal_code

    change, code = CLASSIFIER_CODES[case]
    change(vqa)
    with pytest.raises(BundleError) as err:
        _load(vqa)
    assert err.value.code == code == refusal_code(err.value), str(err.value)


def test_signature_refusals_have_their_codes(vqa, keys, tmp_path):
    from mmedge.bundle import signing

    assert _code(lambda: _load(vqa, verify_key=keys[1])) == "signature-missing"
    signing.sign_bundle(vqa, keys[0])
    _load(vqa, verify_key=keys[1])
    _, other = signing.new_key_pair(tmp_path / "other")
    assert _code(lambda: _load(vqa, verify_key=other)) == "signature-key"
    _edit(vqa, lambda m: m.__setitem__("name", "renamed"))
    assert _code(lambda: _load(vqa, verify_key=keys[1])) == "signature-invalid"
    (vqa / "manifest.sig").unlink()
    (vqa / "manifest.sig").mkdir()
    assert _code(lambda: _load(vqa, verify_key=keys[1])) == "signature-malformed"
    with pytest.raises(signing.SignatureError) as err:  # was IsADirectoryError
        signing.sign_bundle(vqa, keys[0])
    assert err.value.code == "signature-malformed"


def test_an_unknown_kind_is_not_read_as_a_classifier(vqa):
    _edit(vqa, lambda m: m.__setitem__("kind", "x"))
    assert _code(lambda: load_manifest(vqa)) == "unsupported"


# ------------------------------------------------------------------ unlisted files and external data
@pytest.mark.parametrize("kind", ["classifier", "caption"])
def test_unlisted_files_links_and_folders_in_a_signed_bundle_are_refused(vqa, cap, keys, kind):
    from mmedge.bundle import signing

    bundle = vqa if kind == "classifier" else cap
    signing.sign_bundle(bundle, keys[0])
    _load(bundle, verify_key=keys[1])
    for make, undo in [(lambda: (bundle / "payload.bin").write_bytes(b"x"), lambda: (bundle / "payload.bin").unlink()),
                       (lambda: (bundle / "onnx" / "x").mkdir(), lambda: (bundle / "onnx" / "x").rmdir()),
                       (lambda: (bundle / "l").symlink_to(bundle / "tokenizer.json"), lambda: (bundle / "l").unlink())]:
        make()
        assert _code(lambda: _load(bundle, verify_key=keys[1])) == "unlisted"
        assert _code(lambda: _load(bundle)) == "unlisted"
        undo()
    _load(bundle, verify_key=keys[1])


def _redirect_external_data(bundle: Path, graph: str, location: str) -> None:
    """Point the external initializers of one ONNX graph at another file (hashes updated)."""
    import onnx

    model = onnx.load(str(bundle / graph), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save_model(model, str(bundle / graph))
    _rehash(bundle, graph)


@pytest.mark.parametrize("kind", ["classifier", "caption"])
def test_a_graph_that_reads_a_listed_file_other_than_its_external_data_is_refused(vqa, cap, kind):
    bundle = vqa if kind == "classifier" else cap
    folder = "onnx/fp32"
    shutil.copy(bundle / folder / "weights.bin", bundle / folder / "copy.bin")
    _rehash(bundle, f"{folder}/copy.bin")  # listed and hashed: only external_data may name it
    graph = f"{folder}/k36_stage1.onnx" if kind == "classifier" else f"{folder}/step1_k1.onnx"
    _redirect_external_data(bundle, graph, "copy.bin")
    with pytest.raises(BundleError, match="copy.bin") as err:
        _load(bundle)
    assert err.value.code == "unlisted"


def test_external_data_is_read_without_onnx(vqa, monkeypatch):
    """The runtime does not need the onnx package to read a graph's external-data references."""
    import sys

    from mmedge.bundle.onnx_refs import external_locations

    import onnx
    from onnx.external_data_helper import _get_all_tensors

    graph = vqa / "onnx" / "fp32" / "k9_exits.onnx"  # If branches: initializers inside subgraphs too
    want = [t for t in _get_all_tensors(onnx.load(str(graph), load_external_data=False)) if t.data_location == 1]
    monkeypatch.setitem(sys.modules, "onnx", None)
    refs = external_locations(graph)
    assert len(refs) == len(want) > 20 and set(refs) == {"weights.bin"}
    monkeypatch.undo()
    _redirect_external_data(vqa, "onnx/fp32/k9_exits.onnx", "../../../x.bin")
    assert set(external_locations(graph)) == {"../../../x.bin"}
    assert _code(lambda: _load(vqa, mode="in-graph")) == "unlisted"


# ------------------------------------------------------------------------------------- verify=False
def test_verify_false_skips_only_the_hashes(vqa, tmp_path, keys):
    from mmedge.bundle import signing

    stage1, stage2 = vqa / "onnx/fp32/k36_stage1.onnx", vqa / "onnx/fp32/k36_stage2.onnx"
    one, two = stage1.read_bytes(), stage2.read_bytes()
    assert len(one) == len(two)
    stage1.write_bytes(two)
    stage2.write_bytes(one)  # swapped: the same sizes, other hashes
    _load(vqa, verify=False)  # what verify=False is for: no hashing
    assert _code(lambda: _load(vqa)) == "hash-mismatch"
    signing.sign_bundle(vqa, keys[0])
    with pytest.raises(ConfigError, match="verify"):  # a signature covers the files only through their hashes
        _load(vqa, verify=False, verify_key=keys[1])
    stage1.write_bytes(one)
    stage2.write_bytes(two)
    (vqa / "tokenizer.json").write_bytes((vqa / "tokenizer.json").read_bytes() + b" ")
    assert _code(lambda: _load(vqa, verify=False)) == "size-mismatch"
    shutil.copy(SHIPPED / "tokenizer.json", tmp_path / "outside.json")
    (vqa / "tokenizer.json").unlink()
    (vqa / "tokenizer.json").symlink_to(tmp_path / "outside.json")
    assert _code(lambda: _load(vqa, verify=False)) == "file-not-regular"


# ------------------------------------------------------------------------------------------ rollback
def _release(bundle: Path, name: str, sequence: int, key) -> None:
    from mmedge.bundle import signing

    _edit(bundle, lambda m: m.__setitem__("release", {"name": name, "sequence": sequence}))
    signing.sign_bundle(bundle, key)


@pytest.mark.parametrize("kind", ["classifier", "caption"])
def test_rollback_a_lower_sequence_another_name_or_no_release_is_refused(vqa, cap, keys, kind):
    from mmedge.bundle import signing

    bundle = vqa if kind == "classifier" else cap
    private, public = keys
    _edit(bundle, lambda m: m.pop("release", None))  # an older bundle, from before release sections
    signing.sign_bundle(bundle, private)
    assert _code(lambda: _load(bundle, verify_key=public, min_sequence=1)) == "rollback"  # no release section
    assert _code(lambda: _load(bundle, verify_key=public, expect_name="app")) == "rollback"
    _release(bundle, "app", 1_700_000_000_000, private)
    engine = _load(bundle, verify_key=public, min_sequence=1_700_000_000_000, expect_name="app")
    assert engine.manifest["release"]["sequence"] == 1_700_000_000_000
    assert _code(lambda: _load(bundle, verify_key=public, min_sequence=1_700_000_000_001)) == "rollback"
    assert _code(lambda: _load(bundle, verify_key=public, expect_name="other")) == "rollback"
    for bad in ({"min_sequence": -1}, {"min_sequence": True}, {"min_sequence": "5"}, {"min_sequence": 2 ** 53},
                {"expect_name": 5}):
        with pytest.raises(ConfigError):
            _load(bundle, verify_key=public, **bad)
    _release(bundle, "app", -1, private)
    assert _code(lambda: _load(bundle, verify_key=public)) == "schema"
    _release(bundle, "app", 2 ** 53, private)  # beyond what every runtime reads exactly: refused as JSON
    assert _code(lambda: _load(bundle, verify_key=public)) == "json"
    _release(bundle, "bad name/", 1, private)
    assert _code(lambda: _load(bundle, verify_key=public)) == "schema"


# ------------------------------------------------------------------------------------- NaN weights
def _nan_weights(bundle: Path) -> None:
    rel = "onnx/fp32/weights.bin"
    size = (bundle / rel).stat().st_size
    (bundle / rel).write_bytes(np.full(size // 4, np.nan, np.float32).tobytes() + b"\0" * (size % 4))
    _rehash(bundle, rel)


@pytest.mark.parametrize("kind", ["classifier", "caption"])
def test_weights_full_of_nan_fail_the_self_check(vqa, cap, kind):
    bundle = vqa if kind == "classifier" else cap
    _nan_weights(bundle)
    assert _code(lambda: _load(bundle)) == "self-check"


# --------------------------------------------------------------------------- captioning bundle checks
CAPTION_CODES = {
    "num_heads changed": (lambda m: m["decoder"].__setitem__("num_heads", 1), "inconsistent"),
    "head_dim changed": (lambda m: m["decoder"].__setitem__("head_dim", 8), "inconsistent"),
    "dim vs model.config": (lambda m: m["model"]["config"].__setitem__("dim", 64), "inconsistent"),
    "graph output shape": (lambda m: m["graphs"]["step1_k1"]["outputs"][1].__setitem__("shape", [1, 45]),
                           "inconsistent"),
    "graph input name": (lambda m: m["graphs"]["step0_k1"]["inputs"][0].__setitem__("name", "tok"), "inconsistent"),
    "repeated keep ratio": (lambda m: m.__setitem__("keep_ratios", [1.0, 1.0]), "inconsistent"),
    "stage_layers gap": (lambda m: m["decoder"].__setitem__("stage_layers", [[0], [2]]), "inconsistent"),
    "bos id outside the vocabulary": (lambda m: m["tokenizer"].__setitem__("bos_id", 999), "inconsistent"),
    "executorch stage without a method": (lambda m: m["artifacts"].append(
        {**m["artifacts"][0], "target": "executorch", "format": "pte", "runtime": "executorch",
         "file": "tokenizer.json"}), "schema"),
    "no image_size": (lambda m: m["model"]["config"].pop("image_size"), "schema"),
    "image_size 100000": (lambda m: m["model"]["config"].__setitem__("image_size", 100000), "schema"),
    "vocab_size 10^12": (lambda m: m["model"]["config"].__setitem__("vocab_size", 10 ** 12), "schema"),
    "50 GB file": (lambda m: m["files"]["tokenizer.json"].__setitem__("bytes", 50 << 30), "schema"),
    "schema_version 1.0": (lambda m: m.__setitem__("schema_version", 1.0), "schema-version"),
    "tokenizer kind": (lambda m: m["tokenizer"].__setitem__("kind", "wordpiece"), "tokenizer"),
    "graph file swapped": (lambda m: m["artifacts"][0]["stages"]["step0_k1"].__setitem__(
        "file", m["artifacts"][0]["stages"]["step0_k0.5"]["file"]), "self-check"),
}


@pytest.mark.parametrize("case", sorted(CAPTION_CODES))
def test_captioning_bundle_refusals_are_typed_and_coded(cap, case):
    change, code = CAPTION_CODES[case]
    _edit(cap, change)
    with pytest.raises(BundleError) as err:
        _load(cap)
    assert err.value.code == code, str(err.value)


def test_captioning_options_are_honoured_or_refused(cap):
    from mmedge.runtime.caption_engine import CaptionEngine

    engine = _load(cap, mode="auto", fmt="onnx")
    assert isinstance(engine, CaptionEngine)
    full = engine.caption(GREY, max_len=4, policy="full")  # was AttributeError
    assert full.exits == [1] * len(full.exits)
    for call in (lambda: engine.caption(GREY, keep_ratio="abc"), lambda: engine.caption(GREY, policy=3),
                 lambda: engine.caption(GREY, keep_ratio=0.3)):
        with pytest.raises(ConfigError):
            call()
    for kwargs in ({"keep_ratio": "abc"}, {"mode": "in-graph"}, {"mode": "fast"}, {"policy": 3},
                   {"min_sequence": "1"}):
        with pytest.raises(ConfigError):
            _load(cap, **kwargs)
    assert _code(lambda: _load(cap, fmt="pte")) == "unsupported"  # nothing this runtime can run as asked


def test_captioning_bundles_sign_and_verify_with_the_library(cap, keys):
    from mmedge.bundle import load_bundle_manifest, signing

    signing.sign_bundle(cap, keys[0])
    assert load_bundle_manifest(cap, verify_key=keys[1])["kind"] == "caption"
    assert load_bundle_manifest(SHIPPED)["task"] == "vqa"
    _edit(cap, lambda m: m["thresholds"].__setitem__("confidence", 0.0))
    assert _code(lambda: load_bundle_manifest(cap, verify_key=keys[1])) == "signature-invalid"


# ------------------------------------------------------------------------- classifier: in-graph entries
@pytest.mark.parametrize("change,code", [
    (lambda e: e.__setitem__("keep_ratio", 0.3), "inconsistent"),    # was StopIteration in mode auto
    (lambda e: e.pop("keep_ratio"), "schema"),                        # was KeyError
    (lambda e: e.__setitem__("kept_tokens", 10), "inconsistent"),
])
def test_in_graph_entries_must_name_an_exported_keep_ratio(vqa, change, code):
    _edit(vqa, lambda m: change(next(iter(m["in_graph"]["by_keep_ratio"].values()))))
    assert _code(lambda: _load(vqa, mode="auto")) == code

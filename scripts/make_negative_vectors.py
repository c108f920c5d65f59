"""Write tests/vectors/negative/: small edits of the shipped classifier bundle that every runtime
must refuse, each with the reason code it must give, and a few controls that must load.

    python scripts/make_negative_vectors.py

cases.json (format "mmedge-negative-vectors-1", docs/bundle-format.md "Negative vectors"): for each
case, `ops` applied in order to a fresh file-by-file copy of the base bundle, the load options, and
the refusal `code` (null: the copy must load). Manifest edits are made on the parsed JSON and
written back as exact bytes (compact JSON; raw text spliced in where the case is about JSON syntax).
Whole files too large to inline (edited ONNX graphs) go to files/ and are named by `copy_vector`.

Deterministic except for the two throwaway Ed25519 keys (their private halves are discarded):
regenerating changes the public key and every signature, nothing else
(tests/test_negative_vectors.py checks that the committed cases are what this script builds).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BASE = "models/vqa-default/bundles/vqa-default-onnx.mmedge"
OUT = ROOT / "tests/vectors/negative"
FORMAT = "mmedge-negative-vectors-1"
STAGE = "onnx/fp32/k36_stage1.onnx"   # the stage file the graph-level cases edit (the smallest)
PROBE = "__probe__"                    # placeholder for raw JSON text spliced into export.probe
MAX_INT = 2**53 - 1
MANIFEST_LIMIT = 8 << 20


# ------------------------------------------------------------------------------------------ keys
class Keys:
    """Two throwaway Ed25519 keys: the app's (its public half is published) and another one."""

    def __init__(self) -> None:
        from cryptography.hazmat.primitives.asymmetric import ed25519

        self.key, self.other = ed25519.Ed25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()

    def public_pem(self) -> str:
        from cryptography.hazmat.primitives import serialization

        return self.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")

    def sig(self, data: bytes, other: bool = False, signed: bytes | None = None, **fields) -> bytes:
        """manifest.sig bytes as `mmedge sign` writes them, over `signed` (default `data`)."""
        from mmedge.bundle.signing import SIGNATURE_FORMAT, fingerprint

        key = self.other if other else self.key
        record = {"format": SIGNATURE_FORMAT, "algorithm": "ed25519", "signed_file": "manifest.json",
                  "public_key_sha256": fingerprint(key.public_key()),
                  "signature": base64.b64encode(key.sign(data if signed is None else signed)).decode("ascii")}
        record.update(fields)
        return (json.dumps(record, indent=1) + "\n").encode()


# ------------------------------------------------------------------------------------------ ops
def write(path: str, data: bytes) -> dict:
    return {"op": "write", "path": path, "base64": base64.b64encode(data).decode("ascii")}


def dump(manifest: dict, probe: str | None = None) -> bytes:
    """Compact JSON bytes of a manifest; `probe` (raw JSON text) replaces the placeholder value."""
    text = json.dumps(manifest, separators=(",", ":"), ensure_ascii=True)
    if probe is not None:
        assert text.count(json.dumps(PROBE)) == 1
        text = text.replace(json.dumps(PROBE), probe)
    return text.encode("utf-8")


def with_file(manifest: dict, rel: str, data: bytes) -> dict:
    """The manifest with files[rel] describing `data`."""
    m = copy.deepcopy(manifest)
    m["files"][rel] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    return m


# ------------------------------------------------------------------------------------------ graphs
def _graph(stage: bytes):
    import onnx

    model = onnx.ModelProto()
    model.ParseFromString(stage)
    return model


def nan_stage(stage: bytes) -> bytes:
    """The stage graph with every float initializer NaN: each becomes a ConstantOfShape node of
    its shape filled with NaN (so the file stays small: no weights are stored)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    model = _graph(stage)
    graph = model.graph
    floats = [t for t in graph.initializer if t.data_type == TensorProto.FLOAT]
    nodes, shapes = [], []
    for t in floats:
        shape = numpy_helper.from_array(np.array(list(t.dims), np.int64), f"{t.name}__nan_shape")
        shapes.append(shape)
        nodes.append(helper.make_node("ConstantOfShape", [shape.name], [t.name], name=f"{t.name}__nan",
                                      value=numpy_helper.from_array(np.array([np.nan], np.float32))))
    keep = [t for t in graph.initializer if t.data_type != TensorProto.FLOAT]
    del graph.initializer[:]
    graph.initializer.extend(keep + shapes)
    old = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + old)
    return model.SerializeToString()


def relocated_stage(stage: bytes, location: str) -> bytes:
    """The stage graph with its first external initializer read from `location` (offset 0, same length)."""
    model = _graph(stage)
    for t in model.graph.initializer:
        entries = {e.key: e for e in t.external_data}
        if "location" in entries:
            entries["location"].value = location
            entries["offset"].value = "0"
            return model.SerializeToString()
    raise SystemExit(f"{STAGE} has no external data")


def first_external_length(stage: bytes) -> int:
    model = _graph(stage)
    for t in model.graph.initializer:
        entries = {e.key: e.value for e in t.external_data}
        if "location" in entries:
            return int(entries["length"])
    raise SystemExit(f"{STAGE} has no external data")


# ------------------------------------------------------------------------------------------ cases
def build(base_dir: Path, keys: Keys) -> tuple[dict, dict[str, bytes]]:
    """(cases.json document, {files/ name: bytes})."""
    raw = (base_dir / "manifest.json").read_bytes()
    base = json.loads(raw)
    tok = (base_dir / "tokenizer.json").read_bytes()
    stage = (base_dir / STAGE).read_bytes()
    name = base["name"]
    cases: list[dict] = []
    files: dict[str, bytes] = {}

    def case(case_name: str, code: str | None, why: str, ops: list[dict], verify_key: bool = False,
             min_sequence: int | None = None, expect_name: str | None = None, needs_backend: bool = False) -> None:
        assert all(c["name"] != case_name for c in cases), case_name
        cases.append({"name": case_name, "why": why, "code": code,
                      "load": {"verify_key": verify_key, "min_sequence": min_sequence, "expect_name": expect_name},
                      "needs_backend": needs_backend, "ops": ops})

    def edited(fn) -> dict:
        m = copy.deepcopy(base)
        fn(m)
        return m

    def manifest(m: dict, probe: str | None = None) -> dict:
        return write("manifest.json", dump(m, probe))

    def probe(text: str) -> dict:
        m = edited(lambda m: m["export"].__setitem__("probe", PROBE))
        return manifest(m, text)

    # ---- controls
    case("control-base", None, "the shipped bundle, unchanged, loads", [])
    case("control-base-compact", None, "the shipped manifest re-serialised as compact JSON (how the edited "
         "cases write it) loads", [manifest(base)])
    case("control-signed", None, "the shipped bundle signed with the published key loads with that key",
         [write("manifest.sig", keys.sig(raw))], verify_key=True)

    # ---- the manifest file
    case("manifest-missing", "manifest-missing", "no manifest.json", [{"op": "remove", "path": "manifest.json"}])
    case("manifest-symlink", "manifest-not-regular", "manifest.json is a symbolic link (to tokenizer.json)",
         [{"op": "remove", "path": "manifest.json"},
          {"op": "symlink", "path": "manifest.json", "target": "tokenizer.json"}])
    case("manifest-directory", "manifest-not-regular", "manifest.json is a directory",
         [{"op": "remove", "path": "manifest.json"}, {"op": "mkdir", "path": "manifest.json"}])
    case("manifest-fifo", "manifest-not-regular", "manifest.json is a FIFO (a reader that blocks on it hangs)",
         [{"op": "remove", "path": "manifest.json"}, {"op": "mkfifo", "path": "manifest.json"}])
    case("manifest-too-large", "manifest-too-large", f"manifest.json is {MANIFEST_LIMIT + 1024} bytes "
         f"(over {MANIFEST_LIMIT}), spaces only: refused on its size, before parsing",
         [{"op": "write_repeat", "path": "manifest.json", "base64": base64.b64encode(b" " * 1024).decode(),
           "count": MANIFEST_LIMIT // 1024 + 1}])

    # ---- JSON. A refusal case needs only its defect: a small manifest whose export.probe holds it
    # (a runtime that skipped the JSON rule would refuse it as `schema`, not `json`). The controls
    # put the same probe into the whole shipped manifest (`export` is an object the schema leaves
    # open) and must load.
    def small_bytes(text: bytes) -> bytes:
        return b'{"schema_version":1,"name":"' + name.encode() + b'","export":{"probe":' + text + b"}}"

    def small(text: bytes) -> dict:
        return write("manifest.json", small_bytes(text))

    case("json-bom", "json", "a UTF-8 byte-order mark before the object",
         [write("manifest.json", b"\xef\xbb\xbf" + small_bytes(b"0"))])
    case("json-not-utf8", "json", "a byte 0xFF inside a string: not UTF-8", [small(b'"a\xffb"')])
    case("json-duplicate-key", "json", "an object repeats a key (export.probe twice)", [small(b'1,"probe":2')])
    case("json-duplicate-top-key", "json", "the top-level object repeats `name` with another value",
         [write("manifest.json", small_bytes(b"0")[:-1] + b',"name":"other.mmedge"}')])
    case("json-number-overflow", "json", "export.probe is 1e400, which overflows a double", [small(b"1e400")])
    case("json-negative-overflow", "json", "export.probe is -1e400", [small(b"-1e400")])
    case("json-integer-too-large", "json", f"export.probe is the integer 2^53+1 = {MAX_INT + 2}, beyond 2^53-1",
         [small(str(MAX_INT + 2).encode())])
    case("json-integer-too-small", "json", "export.probe is -(2^53+1)", [small(str(-MAX_INT - 2).encode())])
    case("control-json-integer-max", None, f"export.probe is [2^53-1, -(2^53-1)] = [{MAX_INT}, {-MAX_INT}] in the "
         "shipped manifest: allowed", [probe(f"[{MAX_INT},{-MAX_INT}]")])
    case("json-unpaired-surrogate", "json", "export.probe is the string \"\\ud800\": an unpaired surrogate escape",
         [small(b'"\\ud800"')])
    case("json-low-surrogate-first", "json", "export.probe is \"\\udc00\\ud800\": surrogates in the wrong order",
         [small(b'"\\udc00\\ud800"')])
    case("control-json-surrogate-pair", None, "export.probe is \"\\ud83d\\ude00\" (a paired surrogate) in the "
         "shipped manifest: allowed", [probe('"\\ud83d\\ude00"')])
    # the top-level object is depth 1, `export` 2: 30 nested arrays reach 32
    case("control-json-depth-32", None, "nesting depth exactly 32 (export.probe holds 30 nested arrays) in the "
         "shipped manifest: allowed", [probe("[" * 30 + "]" * 30)])
    case("json-depth-33", "json", "nesting depth 33 (export.probe holds 31 nested arrays)",
         [small(b"[" * 31 + b"]" * 31)])
    case("json-nan", "json", "export.probe is the literal NaN", [small(b"NaN")])
    case("json-infinity", "json", "export.probe is the literal Infinity", [small(b"Infinity")])
    case("json-trailing-comma", "json", "a comma before a closing brace", [small(b"1,")])
    case("json-top-level-array", "json", "the manifest is a JSON array", [write("manifest.json", b"[1]")])
    case("json-trailing-data", "json", "a second JSON value after the object",
         [write("manifest.json", small_bytes(b"0") + b"{}")])

    # ---- version and schema
    case("schema-version-float", "schema-version", "schema_version is 1.0 in the JSON text",
         [write("manifest.json", dump(base).replace(b'"schema_version":1,', b'"schema_version":1.0,', 1))])
    case("schema-version-string", "schema-version", "schema_version is the string \"1\"",
         [manifest(edited(lambda m: m.__setitem__("schema_version", "1")))])
    case("schema-version-2", "schema-version", "schema_version is 2",
         [manifest(edited(lambda m: m.__setitem__("schema_version", 2)))])
    case("schema-image-size", "schema", "preprocessing.image_size is 100000 (bound 8..4096)",
         [manifest(edited(lambda m: m["preprocessing"].__setitem__("image_size", 100000)))])
    case("schema-negative-bytes", "schema", "files[tokenizer.json].bytes is -1",
         [manifest(edited(lambda m: m["files"]["tokenizer.json"].__setitem__("bytes", -1)))])
    case("schema-uppercase-sha256", "schema", "a files sha256 in uppercase hex",
         [manifest(edited(lambda m: m["files"]["tokenizer.json"].__setitem__(
             "sha256", m["files"]["tokenizer.json"]["sha256"].upper())))])
    case("schema-missing-files", "schema", "the required `files` object is absent",
         [manifest(edited(lambda m: m.pop("files")))])
    case("schema-release-sequence", "schema", "release.sequence is -1 (bound 0..2^53-1)",
         [manifest(edited(lambda m: m.__setitem__("release", {"name": name, "sequence": -1})))])
    case("schema-release-name", "schema", "release.name has a space (allowed: A-Z a-z 0-9 . _ -)",
         [manifest(edited(lambda m: m.__setitem__("release", {"name": "vqa default", "sequence": 5})))])

    # ---- consistency
    case("inconsistent-exit-layers", "inconsistent", "exit_layers [0, 2, 1, 3] do not increase",
         [manifest(edited(lambda m: m.__setitem__("exit_layers", [0, 2, 1, 3])))])
    case("inconsistent-keep-ratio", "inconsistent", "thresholds.keep_ratio 0.5 is not an exported keep ratio",
         [manifest(edited(lambda m: m["thresholds"].__setitem__("keep_ratio", 0.5)))])
    case("inconsistent-fixed-mean", "inconsistent", "preprocessing.mean is not the [0.5, 0.5, 0.5] version 1 fixes",
         [manifest(edited(lambda m: m["preprocessing"].__setitem__("mean", [0.485, 0.456, 0.406])))])

    # ---- paths the manifest names
    outside = b"outside the bundle\n"
    case("path-files-dotdot", "path", "files lists ../outside.txt (a file beside the bundle, with its true hash)",
         [{"op": "write_outside", "name": "outside.txt", "base64": base64.b64encode(outside).decode()},
          manifest(with_file(base, "../outside.txt", outside))])
    case("path-files-absolute", "path", "files lists the absolute path /etc/hostname",
         [manifest(with_file(base, "/etc/hostname", outside))])
    case("path-files-backslash", "path", "files lists onnx\\fp32\\extra.bin (backslashes)",
         [manifest(with_file(base, "onnx\\fp32\\extra.bin", outside))])
    case("path-files-empty-part", "path", "files lists onnx//extra.bin (an empty part)",
         [manifest(with_file(base, "onnx//extra.bin", outside))])
    case("path-tokenizer-dotdot", "path", "tokenizer.file is onnx/../tokenizer.json (a '..' part)",
         [manifest(edited(lambda m: m["tokenizer"].__setitem__("file", "onnx/../tokenizer.json")))])
    case("path-stage-absolute", "path", "a stage's file is /etc/hostname",
         [manifest(edited(lambda m: m["artifacts"][0]["stages"]["k36_stage1"].__setitem__("file", "/etc/hostname")))])

    # ---- listed files
    case("file-missing", "file-missing", "a listed stage file is absent", [{"op": "remove", "path": "onnx/fp32/k9_stage3.onnx"}])
    case("file-tokenizer-link-outside", "file-not-regular", "tokenizer.json is a symbolic link to ../outside-tokenizer.json, "
         "a copy of the true file beside the bundle (following the link would pass the hash)",
         [{"op": "write_outside", "name": "outside-tokenizer.json", "base64": base64.b64encode(tok).decode()},
          {"op": "remove", "path": "tokenizer.json"},
          {"op": "symlink", "path": "tokenizer.json", "target": "../outside-tokenizer.json"}])
    case("file-link-absolute", "file-not-regular", "a listed stage file is a symbolic link to /etc/hostname",
         [{"op": "remove", "path": "onnx/fp32/k36_stage3.onnx"},
          {"op": "symlink", "path": "onnx/fp32/k36_stage3.onnx", "target": "/etc/hostname"}])
    case("file-fifo", "file-not-regular", "a listed stage file is a FIFO (a reader that blocks on it hangs)",
         [{"op": "remove", "path": "onnx/fp32/k36_stage3.onnx"}, {"op": "mkfifo", "path": "onnx/fp32/k36_stage3.onnx"}])
    case("file-directory", "file-not-regular", "a listed stage file is a directory",
         [{"op": "remove", "path": "onnx/fp32/k36_stage3.onnx"}, {"op": "mkdir", "path": "onnx/fp32/k36_stage3.onnx"}])
    assert b'\n  "' in tok
    case("hash-mismatch", "hash-mismatch", "tokenizer.json with one indenting space made a tab: same size, "
         "same meaning, another SHA-256", [write("tokenizer.json", tok.replace(b'\n  "', b'\n \t"', 1))])
    case("size-mismatch", "size-mismatch", "tokenizer.json with a newline appended (same meaning, one byte longer)",
         [write("tokenizer.json", tok + b"\n")])

    # ---- unlisted members
    case("unlisted-file", "unlisted", "a file at the bundle's root that files does not list",
         [write("extra.txt", b"not listed\n")])
    case("unlisted-file-in-folder", "unlisted", "an unlisted file beside the stage files",
         [write("onnx/fp32/extra.onnx", b"not listed\n")])
    case("unlisted-hidden-file", "unlisted", "an unlisted hidden file (.extra)", [write(".extra", b"x")])
    case("unlisted-link", "unlisted", "an unlisted symbolic link (extra-link -> tokenizer.json)",
         [{"op": "symlink", "path": "extra-link", "target": "tokenizer.json"}])
    case("unlisted-dangling-link", "unlisted", "an unlisted symbolic link to a path that does not exist",
         [{"op": "symlink", "path": "onnx/dangling", "target": "/nonexistent/mmedge"}])
    case("unlisted-empty-folder", "unlisted", "an empty folder that files does not list",
         [{"op": "mkdir", "path": "empty"}])
    case("unlisted-fifo", "unlisted", "an unlisted FIFO (must be refused without opening it)",
         [{"op": "mkfifo", "path": "extra.fifo"}])

    # ---- the tokenizer
    assert tok.count(b'"max_length": 24') == 1 and tok.count(b'"yellow": 43\n') == 1
    short = tok.replace(b'"max_length": 24', b'"max_length": 23')
    case("tokenizer-max-length", "tokenizer", "tokenizer.json truncates at 23, the manifest says 24 (files entry updated)",
         [write("tokenizer.json", short), manifest(with_file(base, "tokenizer.json", short))])
    big = tok.replace(b'"yellow": 43\n', b'"yellow": 43,\n  "zebra": 44\n')
    case("tokenizer-id-beyond-vocab", "tokenizer", "tokenizer.json maps a word to id 44, model.config.vocab_size is 44",
         [write("tokenizer.json", big), manifest(with_file(base, "tokenizer.json", big))])
    case("tokenizer-unk-id", "tokenizer", "the manifest's unk_id is 2, the file's [UNK] is 1",
         [manifest(edited(lambda m: m["tokenizer"].__setitem__("unk_id", 2)))])
    case("tokenizer-kind", "tokenizer", "the manifest says kind wordpiece, the file has a WordLevel model",
         [manifest(edited(lambda m: m["tokenizer"].update(kind="wordpiece", continuing_subword_prefix="##",
                                                          max_input_chars_per_word=100)))])
    case("tokenizer-not-json", "tokenizer", "tokenizer.json is not JSON (files entry updated)",
         [write("tokenizer.json", b"not json\n"), manifest(with_file(base, "tokenizer.json", b"not json\n"))])

    # ---- signatures (load with the published key)
    case("signature-missing", "signature-missing", "no manifest.sig, loaded with a key", [], verify_key=True)
    case("signature-not-json", "signature-malformed", "manifest.sig is not JSON",
         [write("manifest.sig", b"not a signature\n")], verify_key=True)
    case("signature-algorithm", "signature-malformed", "manifest.sig says algorithm rsa",
         [write("manifest.sig", keys.sig(raw, algorithm="rsa"))], verify_key=True)
    case("signature-format", "signature-malformed", "manifest.sig has format mmedge-signature-2",
         [write("manifest.sig", keys.sig(raw, format="mmedge-signature-2"))], verify_key=True)
    case("signature-bad-base64", "signature-malformed", "manifest.sig's signature is not base64",
         [write("manifest.sig", keys.sig(raw, signature="!!!"))], verify_key=True)
    case("signature-too-large", "signature-malformed", "manifest.sig is 4,097 bytes (a valid record padded with spaces)",
         [write("manifest.sig", keys.sig(raw).ljust(4097, b" "))], verify_key=True)
    case("signature-directory", "signature-malformed", "manifest.sig is a directory",
         [{"op": "mkdir", "path": "manifest.sig"}], verify_key=True)
    case("signature-fifo", "signature-malformed", "manifest.sig is a FIFO",
         [{"op": "mkfifo", "path": "manifest.sig"}], verify_key=True)
    case("signature-other-key", "signature-key", "signed with another key (public_key_sha256 is that key's)",
         [write("manifest.sig", keys.sig(raw, other=True))], verify_key=True)
    changed = dump(edited(lambda m: m["labels"].__setitem__(0, "blue")))
    case("signature-invalid", "signature-invalid", "the signature is of another manifest (label 0 changed): "
         "the manifest was changed after signing", [write("manifest.sig", keys.sig(raw, signed=changed))],
         verify_key=True)
    case("signature-invalid-edit", "signature-invalid", "signed, then manifest.json edited (label 0 changed)",
         [write("manifest.sig", keys.sig(raw)), write("manifest.json", changed)], verify_key=True)
    case("signed-unlisted-file", "unlisted", "a validly signed bundle with an unlisted file added",
         [write("manifest.sig", keys.sig(raw)), write("extra.txt", b"not listed\n")], verify_key=True)

    # ---- rollback (a signed manifest with a release section)
    released = dump(edited(lambda m: m.__setitem__("release", {"name": name, "sequence": 5})))
    files["release-5.manifest.json"] = released
    signed_release = [{"op": "copy_vector", "path": "manifest.json", "from": "release-5.manifest.json"},
                      write("manifest.sig", keys.sig(released))]
    case("control-release", None, f"signed, release {{{name}, 5}}, loaded with no minimum", signed_release, verify_key=True)
    case("control-release-minimum", None, "release sequence 5, app's minimum 5 and name as expected",
         signed_release, verify_key=True, min_sequence=5, expect_name=name)
    case("rollback-sequence", "rollback", "release sequence 5, app's minimum 6 (an older bundle)",
         signed_release, verify_key=True, min_sequence=6)
    case("rollback-name", "rollback", "release name is not the one the app expects",
         signed_release, verify_key=True, expect_name="other-model")
    case("rollback-no-release", "rollback", "the app asks for a minimum, the signed manifest has no release",
         [write("manifest.sig", keys.sig(raw))], verify_key=True, min_sequence=0)
    case("rollback-no-release-name", "rollback", "the app expects a name, the signed manifest has no release",
         [write("manifest.sig", keys.sig(raw))], verify_key=True, expect_name=name)

    # ---- the graphs
    nan = nan_stage(stage)
    files["nan-k36_stage1.onnx"] = nan
    case("self-check-nan-weights", "self-check", f"{STAGE} with every float weight NaN (files entry updated): "
         "the load-time test query gives NaN", [{"op": "copy_vector", "path": STAGE, "from": "nan-k36_stage1.onnx"},
                                                manifest(with_file(base, STAGE, nan))], needs_backend=True)
    listed = relocated_stage(stage, "k36_stage2.onnx")
    files["external-listed-k36_stage1.onnx"] = listed
    case("external-data-other-file", "unlisted", f"{STAGE} reads a weight from k36_stage2.onnx (listed, but not "
         "the artifact's external_data)", [{"op": "copy_vector", "path": STAGE, "from": "external-listed-k36_stage1.onnx"},
                                           manifest(with_file(base, STAGE, listed))])
    escape = relocated_stage(stage, "../../../outside.bin")
    files["external-outside-k36_stage1.onnx"] = escape
    case("external-data-outside", "unlisted", f"{STAGE} reads a weight from ../../../outside.bin, a file beside "
         "the bundle", [{"op": "write_outside", "name": "outside.bin",
                         "base64": base64.b64encode(bytes(first_external_length(stage))).decode()},
                        {"op": "copy_vector", "path": STAGE, "from": "external-outside-k36_stage1.onnx"},
                        manifest(with_file(base, STAGE, escape))])

    doc = {"format": FORMAT, "base": BASE, "generator": "scripts/make_negative_vectors.py",
           "public_key_pem": keys.public_pem(), "cases": cases}
    return doc, files


def main() -> None:
    from mmedge.fileio import atomic_write

    doc, files = build(ROOT / BASE, Keys())
    vectors = OUT / "files"
    vectors.mkdir(parents=True, exist_ok=True)
    for old in vectors.iterdir():
        if old.name not in files:
            old.unlink()
    for name, data in files.items():
        atomic_write(vectors / name, lambda p, data=data: p.write_bytes(data))
    atomic_write(OUT / "cases.json", lambda p: p.write_text(json.dumps(doc, indent=1) + "\n"))
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {len(doc['cases'])} cases to {(OUT / 'cases.json').relative_to(ROOT)} ({total:,} bytes in all)")


if __name__ == "__main__":
    main()

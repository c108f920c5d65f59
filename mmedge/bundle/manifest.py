"""manifest.json: what a bundle holds, how to feed it, and the SHA-256 of every file.

The JSON Schema is ``manifest.schema.json`` beside this module; ``docs/bundle-format.md`` is the
normative description. A bundle is untrusted input. Loading checks, in order, before any other
file is opened: the manifest is a regular file of bounded size (no link, FIFO or device), its
signature when a verification key is given, strict JSON (UTF-8 without a byte-order mark, no
duplicate key, no number a double cannot hold, no unpaired surrogate, at most 32 levels deep), the
schema version (the integer 1), the bundle kind, the schema (which bounds every count and size), the
manifest's internal consistency, the app's rollback limits (``release``), every path it names
(relative, normalised, listed), nothing unlisted inside the bundle, and every listed file: a regular
file inside the bundle, no symbolic link, of its listed size and SHA-256.

Every refusal is a BundleError whose ``code`` names the reason (CODES; docs/bundle-format.md).
The same loader reads captioning bundles (``"kind": "caption"``, mmedge.caption.manifest) with
their own schema and consistency rules: ``load_bundle_manifest`` reads either kind.
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path

from mmedge.bundle import paths
from mmedge.errors import BundleError, ConfigError
from mmedge.fileio import atomic_write, recover_publish, sha256_file

SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"
SCHEMA_FILE = Path(__file__).with_name("manifest.schema.json")
MAX_MANIFEST_BYTES = 8 << 20      # a real manifest is tens of KB
MAX_DEPTH = 32                    # JSON nesting: the top-level object is depth 1
MAX_SAFE_INTEGER = 2 ** 53 - 1    # the largest integer every runtime (JavaScript included) reads exactly
MAX_TOKENIZER_BYTES = 64 << 20
MAX_LISTED = 10                   # names quoted in one error message
STAGE0_INPUTS = ("pixel_values", "input_ids", "text_mask")
LATER_INPUTS = ("hidden_in", "attention_mask")
STAGE0_OUTPUTS = ("hidden", "logits", "confidence", "attention_mask", "kept_index")
LATER_OUTPUTS = ("hidden", "logits", "confidence")
ADAPTED_RESIZE, BERT_WORDPIECE = "pillow-bicubic", "bert-wordpiece"  # adapted encoders (bundle-format.md)
SOFTMAX, MATCH_SCORE = "softmax", "match-score"  # the manifest's `head` (absent: softmax; bundle-format.md)
MATCH_LABELS = ["no", "yes"]  # head match-score: logits [0, s], softmax(logits)[1] = sigmoid(s)
CLASSIFIER, CAPTION, VLM = "classifier", "caption", "vlm"   # bundle kinds: no `kind` key, or "kind": "caption" | "vlm"
KIND_NAMES = {CLASSIFIER: "classifier", CAPTION: "captioning", VLM: "generative VLM"}
CODES = ("manifest-missing", "manifest-not-regular", "manifest-too-large", "json", "schema-version", "schema",
         "inconsistent", "path", "unlisted", "file-missing", "file-not-regular", "size-mismatch", "hash-mismatch",
         "tokenizer", "signature-missing", "signature-malformed", "signature-key", "signature-invalid", "rollback",
         "self-check", "unsupported")


def schema() -> dict:
    return json.loads(SCHEMA_FILE.read_text())


def hash_files(root: Path) -> dict[str, dict]:
    """{relative path: {sha256, bytes}} for every file under root except the manifest and its signature."""
    from mmedge.bundle.signing import SIGNATURE_FILE

    root = Path(root)
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        mode = os.lstat(path).st_mode
        if stat.S_ISDIR(mode) or rel in (MANIFEST_FILE, SIGNATURE_FILE):
            continue
        if not stat.S_ISREG(mode):  # a loader refuses links and special files: never list one
            raise BundleError(f"{rel} in {root} is a link or special file; a bundle holds regular files only")
        out[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    return out


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _listing(names: list[str]) -> str:
    shown = ", ".join(_short(str(n), 80) for n in names[:MAX_LISTED])
    return shown + (f" (and {len(names) - MAX_LISTED} more)" if len(names) > MAX_LISTED else "")


def validate_schema(manifest: dict) -> list[str]:
    """Schema violations of a manifest (empty when valid), each in one short line."""
    return schema_violations(manifest, schema())[0]


def schema_violations(instance: dict, schema_doc: dict) -> tuple[list[str], str]:
    """(violations in one short line each, their reason code): "path" when every violation is of the
    path rule (a named path that is absolute, has a '..' part, ...), else "schema"."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema_doc)
    errors = sorted(validator.iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path])
    problems = [_short(f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {_message(e)}") for e in errors[:50]]
    return problems, "path" if errors and all(_is_path_rule(e) for e in errors) else "schema"


def _is_path_rule(error) -> bool:
    return isinstance(error.schema, dict) and str(error.schema.get("description", "")).startswith("A '/'-separated path")


def _message(error) -> str:
    if error.validator == "pattern" and _is_path_rule(error):
        return (f"{_short(repr(error.instance), 80)} is not a relative path inside the bundle "
                "('/'-separated, no leading '/', no '.' or '..' part)")
    return error.message


def write_manifest(root: Path, manifest: dict) -> bool:
    """Validate, then write root/manifest.json atomically. A signature of the previous manifest no
    longer matches, so it is removed; returns True when one was."""
    from mmedge.bundle.signing import SIGNATURE_FILE

    problems = validate_schema(manifest) or consistency_problems(manifest)
    if problems:
        raise BundleError("manifest is not valid:\n  " + "\n  ".join(problems[:20]))
    signature = Path(root) / SIGNATURE_FILE
    present = os.path.lexists(signature)
    if present and not stat.S_ISREG(os.lstat(signature).st_mode):
        raise BundleError(f"{signature} is not a regular file (a folder or link); remove it, then write the "
                          "manifest again", code="signature-malformed")
    if present:  # first: a stale signature must never sit beside the new manifest
        signature.unlink()
    atomic_write(Path(root) / MANIFEST_FILE, lambda p: p.write_text(json.dumps(manifest, indent=1) + "\n"))
    return present


def nesting_depth(value) -> int:
    """Depth of nested lists/dicts (iterative: a hostile manifest cannot exhaust the stack)."""
    return _walk_json(value)[0]


def _walk_json(value) -> tuple[int, str | None]:
    """(nesting depth, up to MAX_DEPTH + 1; an unpaired surrogate found in a string or key, or None).
    The top-level container is depth 1 and each nested object or array adds 1."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode("utf-8")  # Python's json joins surrogate pairs: any left is unpaired
                except UnicodeEncodeError:
                    return deepest, item
            continue
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            if depth > MAX_DEPTH:
                return depth, None
            if isinstance(item, dict):
                stack.extend((k, depth) for k in item)
                stack.extend((v, depth + 1) for v in item.values())
            else:
                stack.extend((v, depth + 1) for v in item)
    return deepest, None


def read_manifest_bytes(root: Path) -> bytes:
    """manifest.json's bytes: a regular file (no link, FIFO or device) of at most MAX_MANIFEST_BYTES."""
    path = Path(root) / MANIFEST_FILE
    if not os.path.lexists(path):
        raise BundleError(f"{root} has no {MANIFEST_FILE}: not an mmedge bundle, or an interrupted copy; "
                          "export it again", code="manifest-missing")
    return paths.read_bounded(path, MAX_MANIFEST_BYTES, missing="manifest-missing",
                              not_regular="manifest-not-regular", too_large="manifest-too-large")


def _no_constants(name: str):
    raise ValueError(f"{name} is not JSON")


def _strict_int(text: str) -> int:
    value = int(text)  # ValueError past Python's 4300 digits
    if abs(value) > MAX_SAFE_INTEGER:
        raise ValueError(f"the integer {_short(text, 40)} is beyond +-(2^53-1), which not every runtime reads exactly")
    return value


def _strict_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"the number {_short(text, 40)} overflows a double")
    return value


def _unique_keys(pairs: list) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set = set()
        repeated = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"the key {_short(repr(repeated), 60)} appears twice in one object")
    return out


def parse_json(data: bytes, where: str, code: str = "json"):
    """One strict JSON value from bytes, else BundleError with `code`: UTF-8 without a byte-order
    mark; no NaN or Infinity; no duplicate key in any object; no number that overflows a double
    (1e400) and no integer written without fraction or exponent beyond +-(2^53-1); no unpaired
    surrogate escape; nesting at most MAX_DEPTH deep."""
    if data.startswith(b"\xef\xbb\xbf"):
        raise BundleError(f"{where} starts with a UTF-8 byte-order mark, which JSON does not allow; write it "
                          "without one", code=code)
    try:
        value = json.loads(data.decode("utf-8"), object_pairs_hook=_unique_keys, parse_int=_strict_int,
                           parse_float=_strict_float, parse_constant=_no_constants)
    except RecursionError as exc:
        raise BundleError(f"{where} nests deeper than {MAX_DEPTH} levels; not an mmedge file", code=code) from exc
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise BundleError(f"{where} is not valid JSON in UTF-8 ({_short(str(exc), 120)}); the bundle is corrupt: "
                          "export it again", code=code) from exc
    depth, surrogate = _walk_json(value)
    if depth > MAX_DEPTH:
        raise BundleError(f"{where} nests deeper than {MAX_DEPTH} levels; not an mmedge file", code=code)
    if surrogate is not None:
        raise BundleError(f"{where} holds an unpaired surrogate escape (\\ud800-\\udfff) in "
                          f"{_short(ascii(surrogate), 60)}; not valid Unicode text", code=code)
    return value


def parse_manifest(data: bytes, where: str = MANIFEST_FILE) -> dict:
    """The JSON object of a manifest's bytes (parse_json's rules), else BundleError code "json"."""
    manifest = parse_json(data, where, "json")
    if not isinstance(manifest, dict):
        raise BundleError(f"{where} must hold a JSON object", code="json")
    return manifest


def looks_like_bundle(path: Path) -> bool:
    """A real directory (not a link) whose manifest.json parses as a JSON object with a schema_version."""
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        return False
    try:
        return "schema_version" in parse_manifest(read_manifest_bytes(path))
    except BundleError:
        return False


def bundle_kind(manifest: dict, where: str = MANIFEST_FILE) -> str:
    """CLASSIFIER (no `kind` key), CAPTION or VLM; BundleError code "unsupported" for any other kind."""
    if "kind" not in manifest:
        return CLASSIFIER
    if manifest["kind"] in (CAPTION, VLM):
        return manifest["kind"]
    raise BundleError(f"{where} is a bundle of kind {_short(repr(manifest['kind']), 40)}, which this mmedge does "
                      f"not implement (it reads classifier bundles and kinds {CAPTION!r} and {VLM!r}); upgrade mmedge",
                      code="unsupported")


def check_schema_version(manifest: dict, where: str) -> None:
    version = manifest.get("schema_version")
    if type(version) is not int or version != SCHEMA_VERSION:
        raise BundleError(f"{where} has schema_version {_short(repr(version), 40)}; this mmedge "
                          f"reads version {SCHEMA_VERSION} (an integer). Re-export the model with this mmedge, "
                          "or upgrade mmedge", code="schema-version")


def check_load_options(verify_files, verify_key, min_sequence, expect_name) -> None:
    """ConfigError for load options that cannot be honoured: verify=False with a key (a signature
    covers the files only through their hashes), or a rollback limit that is not one."""
    problems = []
    if not isinstance(verify_files, bool):
        problems.append(f"verify must be True or False, got {type(verify_files).__name__}")
    elif not verify_files and verify_key is not None:
        problems.append("verify=False cannot be combined with verify_key: the signature covers the files only "
                        "through their SHA-256, so a signed bundle is always hashed (drop verify=False)")
    if min_sequence is not None and (type(min_sequence) is not int or not 0 <= min_sequence <= MAX_SAFE_INTEGER):
        problems.append(f"min_sequence must be an integer from 0 to 2^53-1 (the highest release.sequence "
                        f"the app has accepted), got {_short(repr(min_sequence), 40)}")
    if expect_name is not None and not isinstance(expect_name, str):
        problems.append(f"expect_name must be a string (the bundle's release.name), got {type(expect_name).__name__}")
    if problems:
        raise ConfigError(problems, "arguments")


def check_release(manifest: dict, where: str, min_sequence: int | None, expect_name: str | None) -> None:
    """Rollback protection: with a minimum sequence or an expected name, the manifest's `release`
    must be there, its sequence at least the minimum and its name the expected one (code "rollback")."""
    if min_sequence is None and expect_name is None:
        return
    release = manifest.get("release")
    if release is None:
        raise BundleError(f"{where} has no release section, but the app asks for "
                          + (f"release {expect_name!r}" if expect_name is not None else "")
                          + (" and " if expect_name is not None and min_sequence is not None else "")
                          + (f"a sequence of at least {min_sequence}" if min_sequence is not None else "")
                          + "; it may be an older bundle. Install the current release", code="rollback")
    if expect_name is not None and release["name"] != expect_name:
        raise BundleError(f"{where} is release {_short(repr(release['name']), 80)}, the app expects "
                          f"{_short(repr(expect_name), 80)}: another bundle. Install the current release",
                          code="rollback")
    if min_sequence is not None and release["sequence"] < min_sequence:
        raise BundleError(f"{where} is release sequence {release['sequence']}, older than the {min_sequence} the "
                          "app has accepted (a downgrade): install the current release", code="rollback")


def load_manifest(root: str | Path, verify_files: bool = True, verify_key=None, min_sequence: int | None = None,
                  expect_name: str | None = None) -> dict:
    """Read and check a classifier bundle's manifest; BundleError (with its `code`) says what is wrong.

    With `verify_key` (an Ed25519 public key: PEM path, PEM bytes or key object) the manifest's
    signature must match the very bytes that are parsed. `verify_files=False` skips only the SHA-256
    of the listed files (their sizes are still checked; paths, links, unlisted files and the
    signature never are skipped), and cannot be combined with a key. `min_sequence` / `expect_name`:
    rollback protection (the manifest's `release` section)."""
    return load_bundle_manifest(root, verify_files, verify_key, min_sequence, expect_name, kinds=(CLASSIFIER,))


def load_bundle_manifest(root: str | Path, verify_files: bool = True, verify_key=None, min_sequence: int | None = None,
                         expect_name: str | None = None, kinds: tuple[str, ...] = (CLASSIFIER, CAPTION, VLM)) -> dict:
    """Read and check the manifest of a bundle of any kind (classifier, caption, vlm), with every
    check of load_manifest; `kinds` limits the kinds accepted."""
    check_load_options(verify_files, verify_key, min_sequence, expect_name)
    if root is None or not isinstance(root, (str, os.PathLike)):
        raise BundleError(f"a bundle path is needed, got {type(root).__name__}")
    root = Path(root)
    if not root.is_dir():
        recover_publish(root)  # an export killed mid-swap leaves the previous bundle hidden beside it
    if not root.is_dir():
        raise BundleError(f"bundle {root} does not exist or is not a directory; create one with `mmedge export`",
                          code="manifest-missing")
    data = read_manifest_bytes(root)                                          # step 1
    if verify_key is not None:                                                # step 2
        from mmedge.bundle.signing import verify_manifest_signature

        verify_manifest_signature(root, data, verify_key)
    where = str(root / MANIFEST_FILE)
    manifest = parse_manifest(data, where)                                    # step 3
    check_schema_version(manifest, where)                                     # step 4
    kind = bundle_kind(manifest, where)
    if kind not in kinds:
        raise BundleError(f"{root} is a {KIND_NAMES[kind]} bundle; load it with "
                          "Engine.load (or mmedge.bundle.load_bundle_manifest)", code="unsupported")
    if kind == CAPTION:
        from mmedge.caption.manifest import SCHEMA_FILE as CAPTION_SCHEMA
        from mmedge.caption.manifest import layout_problems

        schema_doc, consistency, named = json.loads(CAPTION_SCHEMA.read_text()), layout_problems, graph_named_paths
    elif kind == VLM:
        from mmedge.adapt.vlm_manifest import SCHEMA_FILE as VLM_SCHEMA
        from mmedge.adapt.vlm_manifest import layout_problems as vlm_problems

        schema_doc, consistency, named = json.loads(VLM_SCHEMA.read_text()), vlm_problems, graph_named_paths
    else:
        schema_doc, consistency, named = schema(), consistency_problems, named_paths
    problems, code = schema_violations(manifest, schema_doc)                  # step 5
    if problems:
        raise BundleError(f"{where} does not match the {'' if kind == CLASSIFIER else kind + ' '}manifest schema:\n  "
                          + "\n  ".join(problems[:10]), code=code)
    problems = consistency(manifest)                                          # step 6
    if problems:
        raise BundleError(f"{where} is inconsistent:\n  " + "\n  ".join(problems[:10])
                          + "\nThe manifest was edited or is corrupt: export the bundle again", code="inconsistent")
    check_release(manifest, where, min_sequence, expect_name)                # step 6, rollback
    check_paths(root, manifest, named(manifest))                              # step 7
    _remove_dead_temporaries(root)
    check_unlisted(root, manifest)
    check_files(root, manifest, hashes=verify_files)                          # step 8
    return manifest


# ---------------------------------------------------------------------------------------- consistency
def consistency_problems(m: dict) -> list[str]:
    """What a schema cannot say: the manifest's parts agree, so that a bundle that loads can predict."""
    problems: list[str] = []
    stages, labels = m["stages"], m["labels"]
    ratios = [k["keep_ratio"] for k in m["keep_ratios"]]
    if len(set(ratios)) != len(ratios):
        problems.append(f"keep_ratios repeat a ratio: {ratios}")
    n_exits = len(m["exit_layers"])
    if sorted(set(m["exit_layers"])) != m["exit_layers"]:
        problems.append(f"exit_layers {m['exit_layers']} must increase strictly")
    for group in m["keep_ratios"]:
        where = f"keep_ratios[{group['keep_ratio']}]"
        names = group["stages"]
        if len(names) != n_exits:
            problems.append(f"{where} has {len(names)} stages for {n_exits} exit layers")
        if len(group["exit_flops"]) != len(names):
            problems.append(f"{where}: {len(group['exit_flops'])} exit_flops for {len(names)} stages")
        for i, name in enumerate(names):
            entry = stages.get(name)
            if entry is None:
                problems.append(f"{where} names stage {_short(name, 60)!r}, which `stages` does not describe")
                continue
            if entry["stage"] != i or entry["keep_ratio"] != group["keep_ratio"]:
                problems.append(f"stage {name!r} is stage {entry['stage']} of keep ratio {entry['keep_ratio']}, "
                                f"listed as stage {i} of {group['keep_ratio']}")
            problems += _io_problems(name, entry, i, labels, group, m)
    listed = {n for g in m["keep_ratios"] for n in g["stages"]}
    if m["thresholds"]["keep_ratio"] not in ratios:
        problems.append(f"thresholds.keep_ratio {m['thresholds']['keep_ratio']} is not an exported keep ratio {ratios}")
    if m["tokenizer"]["pad_id"] == m["tokenizer"]["unk_id"]:
        problems.append("tokenizer pad_id and unk_id are the same id")
    problems += _fixed_rules_problems(m)
    problems += _adapted_problems(m)
    if "modality_pruning" in m:
        problems += _pruning_problems(m["modality_pruning"], m)
    if "in_graph" in m:
        problems += _in_graph_problems(m["in_graph"], m)
    for a in m["artifacts"]:
        missing = sorted(listed - set(a["stages"]))
        if missing:
            problems.append(f"artifact {a['target']}/{a['format']}/{a['precision']} lacks stages {_listing(missing)}")
        if a["format"] in ("onnx", "ort", "pte", "mlpackage") and a["runtime"] == "torch":
            problems.append(f"artifact {a['target']}/{a['format']} cannot run on the torch runtime")
    return problems[:50]


def _in_graph_problems(section: dict, m: dict) -> list[str]:
    """Each in-graph graph belongs to one exported keep ratio (at most one graph per ratio) and keeps
    that ratio's tokens."""
    kept = {k["keep_ratio"]: k["kept_tokens"] for k in m["keep_ratios"]}
    out, seen = [], set()
    for key, entry in section["by_keep_ratio"].items():
        ratio = entry["keep_ratio"]
        where = f"in_graph.by_keep_ratio[{_short(key, 40)}]"
        if ratio not in kept:
            out.append(f"{where} is for keep ratio {ratio}, which is not exported ({sorted(kept)})")
        elif entry["kept_tokens"] != kept[ratio]:
            out.append(f"{where} keeps {entry['kept_tokens']} tokens, keep ratio {ratio} keeps {kept[ratio]}")
        if ratio in seen:
            out.append(f"{where} repeats keep ratio {ratio}")
        seen.add(ratio)
    return out


def _pruning_problems(p: dict, m: dict) -> list[str]:
    """The optional modality_pruning section: text-only stages for exactly the stages after after_stage,
    on [CLS] + text (seq_len = 1 + max_length), named in every artifact, with pruned exit FLOPs for
    every exported keep ratio."""
    out = []
    n_exits, after = len(m["exit_layers"]), p["after_stage"]
    if not 0 <= after < n_exits - 1:
        return [f"modality_pruning.after_stage {after} must be a stage before the last one "
                f"(0..{n_exits - 2} for {n_exits} exit layers)"]
    want = list(range(after + 1, n_exits))
    got = [s["stage"] for s in p["stages"]]
    if got != want:
        out.append(f"modality_pruning.stages are stages {got}; after stage {after} they must be {want} in order")
    seq = 1 + m["tokenizer"]["max_length"]
    if p["seq_len"] != seq:
        out.append(f"modality_pruning.seq_len {p['seq_len']} must be 1 + the tokenizer's max_length = {seq}")
    names = [s["name"] for s in p["stages"]]
    if len(set(names)) != len(names) or set(names) & set(m["stages"]):
        out.append("modality_pruning.stages names must be unique and differ from the names in `stages`")
    dim = None
    for entry in m["stages"].values():
        dim = entry["outputs"][0]["shape"][-1] if entry["outputs"] and entry["outputs"][0]["shape"] else None
        break
    for s in p["stages"]:
        where = f"modality_pruning stage {_short(s['name'], 60)!r}"
        if [t["name"] for t in s["inputs"]] != list(LATER_INPUTS):
            out.append(f"{where} inputs must be {list(LATER_INPUTS)} in that order")
            continue
        if s["inputs"][0]["shape"][:2] != [1, seq] or s["inputs"][1]["shape"] != [1, seq]:
            out.append(f"{where} takes {[t['shape'] for t in s['inputs']]}, not [1, {seq}, D] and [1, {seq}]")
        outputs = {t["name"]: t for t in s["outputs"]}
        if not set(LATER_OUTPUTS) <= set(outputs):
            out.append(f"{where} outputs must include {list(LATER_OUTPUTS)}")
            continue
        if outputs["logits"]["shape"][-1:] != [len(m["labels"])]:
            out.append(f"{where} gives {outputs['logits']['shape']} logits for {len(m['labels'])} labels")
        if dim is not None and s["inputs"][0]["shape"][-1:] != [dim]:
            out.append(f"{where} takes width {s['inputs'][0]['shape'][-1:]}, the stages give {dim}")
    ratios = sorted(k["keep_ratio"] for k in m["keep_ratios"])
    if sorted(e["keep_ratio"] for e in p["exit_flops"]) != ratios:
        out.append(f"modality_pruning.exit_flops must give each exported keep ratio {ratios} once")
    out += [f"modality_pruning.exit_flops[{e['keep_ratio']}] has {len(e['exit_flops'])} entries for {n_exits} exits"
            for e in p["exit_flops"] if len(e["exit_flops"]) != n_exits]
    for a in m["artifacts"]:
        missing = [n for n in names if n not in a["stages"]]
        if missing:
            out.append(f"artifact {a['target']}/{a['format']}/{a['precision']} lacks the modality_pruning stages "
                       f"{_listing(missing)}")
    return out


def num_images(m: dict) -> int:
    """Images per query: preprocessing.num_images (adapted encoders), else 1."""
    return m["preprocessing"].get("num_images", 1)


def _adapted_problems(m: dict) -> list[str]:
    """Two images per query are an adapted encoder's preparation only; head match-score is a yes/no
    match (task match, labels [no, yes]) without modality pruning or in-graph graphs."""
    out = []
    if num_images(m) != 1 and m["preprocessing"]["resize"] != ADAPTED_RESIZE:
        out.append(f"preprocessing.num_images {num_images(m)} needs resize {ADAPTED_RESIZE!r} (an adapted encoder's "
                   "preparation)")
    if num_images(m) != 1 and ("modality_pruning" in m or "in_graph" in m):
        out.append("a bundle of two images per query has no modality_pruning or in_graph section")
    if m.get("head", SOFTMAX) == MATCH_SCORE and (m["task"] != "match" or m["labels"] != MATCH_LABELS):
        out.append(f"head {MATCH_SCORE!r} needs task 'match' and labels {MATCH_LABELS} (logits [0, s]), not task "
                   f"{m['task']!r} and labels {_short(repr(m['labels']), 60)}")
    return out


def _fixed_rules_problems(m: dict) -> list[str]:
    """Format version 1 fixes the preprocessing and tokenizer rules; the manifest repeats them, and a
    value this runtime does not implement is refused rather than silently ignored."""
    from mmedge.data.preprocess import MEAN, STD
    from mmedge.data.scenes import BACKGROUND
    from mmedge.data.tokenizer import _SPLIT

    pre, tok = m["preprocessing"], m["tokenizer"]
    fixed = {}
    if pre["resize"] != ADAPTED_RESIZE:  # an adapted encoder's states its own scale, mean and std
        fixed.update({"preprocessing.scale": (pre["scale"], 1 / 255), "preprocessing.mean": (pre["mean"], [MEAN] * 3),
                      "preprocessing.std": (pre["std"], [STD] * 3),
                      "preprocessing.pad_color": (pre["pad_color"], list(BACKGROUND))})
    if tok.get("kind") != BERT_WORDPIECE:  # BERT's normaliser states its own flags
        fixed.update({"tokenizer.lowercase": (tok["lowercase"], True),
                      "tokenizer.split_regex": (tok["split_regex"], _SPLIT.pattern)})
    return [f"{name} is {_short(repr(got), 60)}; format version 1 fixes it at {want!r}"
            for name, (got, want) in fixed.items() if got != want]


def _io_problems(name: str, entry: dict, index: int, labels: list, group: dict, m: dict) -> list[str]:
    """A stage's declared inputs and outputs are what the runtime feeds and reads."""
    out = []
    inputs = {t["name"]: t for t in entry["inputs"]}
    outputs = {t["name"]: t for t in entry["outputs"]}
    want_in = STAGE0_INPUTS if index == 0 else LATER_INPUTS
    want_out = STAGE0_OUTPUTS if index == 0 else LATER_OUTPUTS
    if [t["name"] for t in entry["inputs"]] != list(want_in):
        out.append(f"stage {name!r} inputs must be {list(want_in)} in that order")
    if not set(want_out) <= set(outputs):
        out.append(f"stage {name!r} outputs must include {list(want_out)}")
        return out
    logits = outputs["logits"]["shape"]
    if not logits or logits[-1] != len(labels):
        out.append(f"stage {name!r} gives {logits[-1] if logits else 0} logits for {len(labels)} labels")
    size, images = m["preprocessing"]["image_size"], num_images(m)
    pixels = [1, 3, size, size] if images == 1 else [1, images, 3, size, size]
    if index == 0 and "pixel_values" in inputs and inputs["pixel_values"]["shape"] != pixels:
        out.append(f"stage {name!r} takes pixel_values {inputs['pixel_values']['shape']}, "
                   f"preprocessing gives {pixels}")
    if index == 0 and "input_ids" in inputs and inputs["input_ids"]["shape"] != [1, m["tokenizer"]["max_length"]]:
        out.append(f"stage {name!r} takes input_ids {inputs['input_ids']['shape']}, the tokenizer gives "
                   f"[1, {m['tokenizer']['max_length']}]")
    if index == 0 and outputs["kept_index"]["shape"][-1:] != [group["kept_tokens"]]:
        out.append(f"stage {name!r} keeps {outputs['kept_index']['shape']} tokens, keep_ratios says "
                   f"{group['kept_tokens']}")
    return out


# ---------------------------------------------------------------------------------------- files
def named_paths(m: dict) -> dict[str, str]:
    """Every path the manifest names, with where it is named."""
    named = {m["tokenizer"]["file"]: "tokenizer.file"}
    for a in m["artifacts"]:
        kind = f"{a['target']}/{a['format']}/{a['precision']}"
        if "file" in a:
            named[a["file"]] = f"artifact {kind}"
        if "external_data" in a:
            named[a["external_data"]] = f"artifact {kind} external_data"
        for stage, entry in a["stages"].items():
            if "file" in entry:
                named[entry["file"]] = f"artifact {kind} stage {stage}"
    for ratio, entry in m.get("in_graph", {}).get("by_keep_ratio", {}).items():
        for prefix, what in (("", ""), ("int8_", " int8")):
            if f"{prefix}file" in entry:
                named[entry[f"{prefix}file"]] = f"in_graph {ratio}{what}"
            if f"{prefix}external_data" in entry:
                named[entry[f"{prefix}external_data"]] = f"in_graph {ratio}{what} external_data"
            if f"{prefix}ort_file" in entry:
                named[entry[f"{prefix}ort_file"]] = f"in_graph {ratio}{what} (ORT format)"
    return named


def graph_named_paths(m: dict) -> dict[str, str]:
    """Every path a captioning or generative VLM manifest names (its tokenizer, each artifact's file and
    external data, each graph's file), with where it is named."""
    named = {m["tokenizer"]["file"]: "tokenizer.file"}
    for a in m["artifacts"]:
        kind = f"artifact {a['target']}/{a['format']}/{a['precision']}"
        named.update({a[k]: f"{kind} {k}" for k in ("file", "external_data") if k in a})
        named.update({e["file"]: f"{kind} graph {n}" for n, e in a["stages"].items() if "file" in e})
    return named


def check_paths(root: Path, m: dict, named: dict[str, str] | None = None) -> None:
    """Every listed and named path is well formed (code "path"); a named path is listed, or is a
    directory every file of which is listed (code "unlisted"); the tokenizer file is bounded."""
    from mmedge.bundle.signing import SIGNATURE_FILE

    files = m["files"]
    bad = [f"{_short(rel, 80)}: {p}" for rel in files if (p := paths.member_problem(rel))]
    if bad:
        raise BundleError(f"files lists unsafe paths: {_listing(bad)}; export the bundle again", code="path")
    if {MANIFEST_FILE, SIGNATURE_FILE} & set(files):
        raise BundleError(f"files may not list {MANIFEST_FILE} or {SIGNATURE_FILE}", code="path")
    named = named_paths(m) if named is None else named
    for rel, where in named.items():
        problem = paths.member_problem(rel)
        if problem:
            raise BundleError(f"{where}: {problem}", code="path")
    for rel, where in named.items():
        if rel not in files and not any(f.startswith(rel + "/") for f in files):
            raise BundleError(f"{where} names {rel!r}, which `files` does not list with a hash; export it again",
                              code="unlisted")
    if files.get(m["tokenizer"]["file"], {}).get("bytes", 0) > MAX_TOKENIZER_BYTES:
        raise BundleError(f"the tokenizer file is over {MAX_TOKENIZER_BYTES >> 20} MB", code="tokenizer")


def _remove_dead_temporaries(root: Path) -> None:
    """What a killed mmedge rewrite of manifest.json / manifest.sig leaves beside them
    (``.manifest.json.<pid>-*.tmp`` of a process that no longer exists) is removed, as the next write
    would, so that it does not make the bundle unloadable; any other unlisted file is refused.
    Nothing is removed on a read-only bundle (it is then refused as unlisted)."""
    from mmedge.bundle.signing import SIGNATURE_FILE
    from mmedge.fileio import _pid_of, pid_alive

    for name in (MANIFEST_FILE, SIGNATURE_FILE):
        marker = f".{name}."
        try:
            for stale in root.glob(f"{marker}*.tmp"):
                pid = _pid_of(stale.name, marker)
                if pid is not None and not pid_alive(pid) and stat.S_ISREG(os.lstat(stale).st_mode):
                    stale.unlink()
        except OSError:
            return


def check_unlisted(root: Path, m: dict) -> None:
    """Nothing inside the bundle but manifest.json, manifest.sig (a regular file) and the listed files
    and their folders: an unlisted file, link, FIFO or folder (even empty) is refused, code "unlisted"."""
    from mmedge.bundle.signing import SIGNATURE_FILE

    strays = paths.unlisted_members(Path(root), m["files"], {MANIFEST_FILE: stat.S_IFREG, SIGNATURE_FILE: stat.S_IFREG},
                                    MAX_LISTED + 1)
    if strays:
        raise BundleError(f"{root} holds what the manifest does not list: {_listing(strays)}; a bundle holds only "
                          "its listed files (remove them, or export the bundle again)", code="unlisted")


def check_files(root: Path, manifest: dict, hashes: bool = True) -> None:
    """Every listed file a regular file inside the bundle (no link on its path) of its recorded size,
    and with `hashes` of its recorded SHA-256. Codes, in this priority when several files fail:
    file-missing, file-not-regular, size-mismatch, hash-mismatch."""
    root = Path(root)
    missing, odd, resized, changed = [], [], [], []
    sized = []
    for rel, entry in manifest["files"].items():
        try:
            path = paths.member_file(root, rel)
            size = paths.member_size(path)
        except BundleError as exc:
            (missing if exc.code == "file-missing" else odd).append(rel)
            continue
        if size != entry["bytes"]:
            resized.append(rel)
        else:
            sized.append((rel, path, entry))
    if hashes and not (missing or odd or resized):  # sizes first: no hashing of what is refused anyway
        for rel, path, entry in sized:
            digest = paths.sha256_member(path, entry["bytes"])
            if digest is None:
                resized.append(rel)  # changed between the two looks
            elif digest != entry["sha256"]:
                changed.append(rel)
    if missing or odd or resized or changed:
        parts = ([f"missing: {_listing(missing)}"] if missing else []) + \
                ([f"not regular files inside the bundle (links, devices): {_listing(odd)}"] if odd else []) + \
                ([f"size differs from the manifest (tampered or corrupt): {_listing(resized)}"] if resized else []) + \
                ([f"hash mismatch (tampered or corrupt): {_listing(changed)}"] if changed else [])
        code = "file-missing" if missing else "file-not-regular" if odd else "size-mismatch" if resized \
            else "hash-mismatch"
        raise BundleError(f"bundle {root} failed verification; {'; '.join(parts)}. Export it again", code=code)


def verify(root: Path, manifest: dict) -> None:
    """Every listed file a regular file inside the bundle with its recorded size and SHA-256."""
    check_files(root, manifest, hashes=True)

"""manifest.json: what a bundle holds, how to feed it, and the SHA-256 of every file.

The JSON Schema is ``manifest.schema.json`` beside this module; ``docs/bundle-format.md`` is the
normative description. A bundle is untrusted input. Loading checks, in order, before any other
file is opened: the manifest is a regular file of bounded size (no link, FIFO or device), its
signature when a verification key is given, JSON of bounded nesting, the schema version (an
integer), the schema (which bounds every count and size), the manifest's internal consistency,
and every path it names: relative, normalised, inside the bundle, no symbolic link, listed in
``files`` with the size and SHA-256 the file has.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from mmedge.bundle import paths
from mmedge.errors import BundleError
from mmedge.fileio import atomic_write, recover_publish, sha256_file

SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"
SCHEMA_FILE = Path(__file__).with_name("manifest.schema.json")
MAX_MANIFEST_BYTES = 8 << 20      # a real manifest is tens of KB
MAX_DEPTH = 32                    # JSON nesting
MAX_TOKENIZER_BYTES = 64 << 20
MAX_LISTED = 10                   # names quoted in one error message
STAGE0_INPUTS = ("pixel_values", "input_ids", "text_mask")
LATER_INPUTS = ("hidden_in", "attention_mask")
STAGE0_OUTPUTS = ("hidden", "logits", "confidence", "attention_mask", "kept_index")
LATER_OUTPUTS = ("hidden", "logits", "confidence")


def schema() -> dict:
    return json.loads(SCHEMA_FILE.read_text())


def hash_files(root: Path) -> dict[str, dict]:
    """{relative path: {sha256, bytes}} for every file under root except the manifest and its signature."""
    from mmedge.bundle.signing import SIGNATURE_FILE

    root = Path(root)
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel not in (MANIFEST_FILE, SIGNATURE_FILE):
            out[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    return out


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _listing(names: list[str]) -> str:
    shown = ", ".join(_short(str(n), 80) for n in names[:MAX_LISTED])
    return shown + (f" (and {len(names) - MAX_LISTED} more)" if len(names) > MAX_LISTED else "")


def validate_schema(manifest: dict) -> list[str]:
    """Schema violations of a manifest (empty when valid), each in one short line."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(manifest), key=lambda e: [str(p) for p in e.absolute_path])
    return [_short(f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {_message(e)}") for e in errors[:50]]


def _message(error) -> str:
    if error.validator == "pattern" and str(error.schema.get("description", "")).startswith("A '/'-separated path"):
        return (f"{_short(repr(error.instance), 80)} is not a relative path inside the bundle "
                "('/'-separated, no leading '/', no '.' or '..' part)")
    return error.message


def write_manifest(root: Path, manifest: dict) -> bool:
    """Validate, then write root/manifest.json atomically. A signature of the previous manifest no
    longer matches, so it is removed; returns True when one was."""
    from mmedge.bundle.signing import SIGNATURE_FILE

    problems = validate_schema(manifest) + consistency_problems(manifest)
    if problems:
        raise BundleError("manifest is not valid:\n  " + "\n  ".join(problems[:20]))
    atomic_write(Path(root) / MANIFEST_FILE, lambda p: p.write_text(json.dumps(manifest, indent=1) + "\n"))
    signature = Path(root) / SIGNATURE_FILE
    if signature.exists():
        signature.unlink()
        return True
    return False


def nesting_depth(value) -> int:
    """Depth of nested lists/dicts (iterative: a hostile manifest cannot exhaust the stack)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            if depth > MAX_DEPTH:
                return depth
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def read_manifest_bytes(root: Path) -> bytes:
    """manifest.json's bytes: a regular file (no link, FIFO or device) of at most MAX_MANIFEST_BYTES."""
    path = root / MANIFEST_FILE
    if not os.path.lexists(path):
        raise BundleError(f"{root} has no {MANIFEST_FILE}: not an mmedge bundle, or an interrupted copy; "
                          "export it again")
    return paths.read_bounded(path, MAX_MANIFEST_BYTES)


def _no_constants(name: str):
    raise ValueError(f"{name} is not JSON")


def parse_manifest(data: bytes, where: str = MANIFEST_FILE) -> dict:
    """JSON object of bounded nesting from manifest bytes (strict JSON: no NaN or Infinity), else BundleError."""
    try:
        manifest = json.loads(data.decode("utf-8"), parse_constant=_no_constants)
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise BundleError(f"{where} is not valid JSON in UTF-8 ({_short(str(exc), 120)}); the bundle is corrupt: "
                          "export it again") from exc
    except RecursionError as exc:
        raise BundleError(f"{where} nests deeper than {MAX_DEPTH} levels; not an mmedge manifest") from exc
    if not isinstance(manifest, dict):
        raise BundleError(f"{where} must hold a JSON object")
    if nesting_depth(manifest) > MAX_DEPTH:
        raise BundleError(f"{where} nests deeper than {MAX_DEPTH} levels; not an mmedge manifest")
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


def load_manifest(root: str | Path, verify_files: bool = True, verify_key=None) -> dict:
    """Read and check a bundle's manifest; BundleError says what is wrong and what to do.

    With `verify_key` (an Ed25519 public key: PEM path, PEM bytes or key object) the manifest's
    signature must match the very bytes that are parsed."""
    if root is None or not isinstance(root, (str, os.PathLike)):
        raise BundleError(f"a bundle path is needed, got {type(root).__name__}")
    root = Path(root)
    if not root.is_dir():
        recover_publish(root)  # an export killed mid-swap leaves the previous bundle hidden beside it
    if not root.is_dir():
        raise BundleError(f"bundle {root} does not exist or is not a directory; create one with `mmedge export`")
    data = read_manifest_bytes(root)
    if verify_key is not None:
        from mmedge.bundle.signing import verify_manifest_signature

        verify_manifest_signature(root, data, verify_key)
    manifest = parse_manifest(data, str(root / MANIFEST_FILE))
    version = manifest.get("schema_version")
    if type(version) is not int or version != SCHEMA_VERSION:
        raise BundleError(f"{root / MANIFEST_FILE} has schema_version {_short(repr(version), 40)}; this mmedge "
                          f"reads version {SCHEMA_VERSION} (an integer). Re-export the model with this mmedge, "
                          "or upgrade mmedge")
    problems = validate_schema(manifest)
    if problems:
        raise BundleError(f"{root / MANIFEST_FILE} does not match the manifest schema:\n  " + "\n  ".join(problems[:10]))
    problems = consistency_problems(manifest)
    if problems:
        raise BundleError(f"{root / MANIFEST_FILE} is inconsistent:\n  " + "\n  ".join(problems[:10])
                          + "\nThe manifest was edited or is corrupt: export the bundle again")
    check_paths(root, manifest)
    if verify_files:
        verify(root, manifest)
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
    if "modality_pruning" in m:
        problems += _pruning_problems(m["modality_pruning"], m)
    for a in m["artifacts"]:
        missing = sorted(listed - set(a["stages"]))
        if missing:
            problems.append(f"artifact {a['target']}/{a['format']}/{a['precision']} lacks stages {_listing(missing)}")
        if a["format"] in ("onnx", "ort", "pte", "mlpackage") and a["runtime"] == "torch":
            problems.append(f"artifact {a['target']}/{a['format']} cannot run on the torch runtime")
    return problems[:50]


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


def _fixed_rules_problems(m: dict) -> list[str]:
    """Format version 1 fixes the preprocessing and tokenizer rules; the manifest repeats them, and a
    value this runtime does not implement is refused rather than silently ignored."""
    from mmedge.data.preprocess import MEAN, STD
    from mmedge.data.scenes import BACKGROUND
    from mmedge.data.tokenizer import _SPLIT

    pre, tok = m["preprocessing"], m["tokenizer"]
    fixed = {"preprocessing.scale": (pre["scale"], 1 / 255), "preprocessing.mean": (pre["mean"], [MEAN] * 3),
             "preprocessing.std": (pre["std"], [STD] * 3), "preprocessing.pad_color": (pre["pad_color"], list(BACKGROUND)),
             "tokenizer.lowercase": (tok["lowercase"], True), "tokenizer.split_regex": (tok["split_regex"], _SPLIT.pattern)}
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
    size = m["preprocessing"]["image_size"]
    if index == 0 and "pixel_values" in inputs and inputs["pixel_values"]["shape"] != [1, 3, size, size]:
        out.append(f"stage {name!r} takes pixel_values {inputs['pixel_values']['shape']}, "
                   f"preprocessing gives [1, 3, {size}, {size}]")
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
        named[entry["file"]] = f"in_graph {ratio}"
        if "external_data" in entry:
            named[entry["external_data"]] = f"in_graph {ratio} external_data"
        if "ort_file" in entry:
            named[entry["ort_file"]] = f"in_graph {ratio} (ORT format)"
    return named


def check_paths(root: Path, m: dict) -> None:
    """Every listed and named path is a real file (or, for a package, directory) inside the bundle,
    without links; a named file is listed with its hash; a named directory holds listed files only."""
    from mmedge.bundle.signing import SIGNATURE_FILE

    files = m["files"]
    bad = [f"{_short(rel, 80)}: {p}" for rel in files if (p := paths.member_problem(rel))]
    if bad:
        raise BundleError(f"files lists unsafe paths: {_listing(bad)}; export the bundle again")
    if {MANIFEST_FILE, SIGNATURE_FILE} & set(files):
        raise BundleError(f"files may not list {MANIFEST_FILE} or {SIGNATURE_FILE}")
    for rel, where in named_paths(m).items():
        problem = paths.member_problem(rel)
        if problem:
            raise BundleError(f"{where}: {problem}")
        if rel in files:
            continue
        prefix = rel + "/"
        inside = [f for f in files if f.startswith(prefix)]
        if not inside:
            raise BundleError(f"{where} names {rel!r}, which `files` does not list with a hash; export it again")
        folder = paths.member_dir(root, rel)
        unlisted = []
        for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
            for name in dirnames + filenames:
                full = Path(dirpath) / name
                member = full.relative_to(root).as_posix()
                if full.is_symlink():
                    raise BundleError(f"{member} is a symbolic link; a bundle may not contain links")
                if name in filenames and member not in files:
                    unlisted.append(member)
        if unlisted:
            raise BundleError(f"{rel} holds files the manifest does not list: {_listing(unlisted)}; export it again")
    if m["files"].get(m["tokenizer"]["file"], {}).get("bytes", 0) > MAX_TOKENIZER_BYTES:
        raise BundleError(f"the tokenizer file is over {MAX_TOKENIZER_BYTES >> 20} MB")


def verify(root: Path, manifest: dict) -> None:
    """Every listed file a regular file inside the bundle with its recorded size and SHA-256."""
    root = Path(root)
    missing, changed, odd = [], [], []
    for rel, entry in manifest["files"].items():
        try:
            path = paths.member_file(root, rel)
        except BundleError as exc:
            (missing if "missing" in str(exc) else odd).append(rel)
            continue
        if paths.sha256_member(path, entry["bytes"]) != entry["sha256"]:
            changed.append(rel)
    if missing or changed or odd:
        parts = ([f"missing: {_listing(missing)}"] if missing else []) + \
                ([f"not regular files inside the bundle (links, devices): {_listing(odd)}"] if odd else []) + \
                ([f"hash mismatch (tampered or corrupt): {_listing(changed)}"] if changed else [])
        raise BundleError(f"bundle {root} failed verification; {'; '.join(parts)}. Export it again")

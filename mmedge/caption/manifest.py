"""The captioning bundle's manifest: written after the graphs pass their checks, read back with the
same defences as a classifier bundle's (bounded size and nesting, a JSON schema, consistency of the
graph layout, safe member paths, the SHA-256 of every file, and an optional Ed25519 signature)."""

from __future__ import annotations

import json
from pathlib import Path

from mmedge.bundle import paths
from mmedge.bundle.manifest import (MANIFEST_FILE, hash_files, parse_manifest, read_manifest_bytes, verify)
from mmedge.errors import BundleError
from mmedge.fileio import atomic_write

CAPTION_KIND = "caption"
SCHEMA_VERSION = 1
SCHEMA_FILE = Path(__file__).with_name("caption_manifest.schema.json")


def schema_problems(m: dict) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))
    return [f"{'/'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message[:200]}"
            for e in sorted(validator.iter_errors(m), key=lambda e: list(e.absolute_path))][:10]


def layout_problems(m: dict) -> list[str]:
    """The decoder layout, graph names and artifacts must agree with one another."""
    p = []
    layers = [i for stage in m["decoder"]["stage_layers"] for i in stage]
    if layers != list(range(len(layers))):
        p.append(f"decoder.stage_layers {m['decoder']['stage_layers']} must cover layers 0..n-1 in order")
    stages = len(m["decoder"]["stage_layers"])
    want = set()
    for r in m["keep_ratios"]:
        want |= {f"encoder_k{r:g}"} | {f"step{s}_k{r:g}" for s in range(stages)}
    want |= {f"fill{s}" for s in range(stages - 1)}
    if set(m["graphs"]) != want:
        p.append(f"graphs {sorted(m['graphs'])} != the layout's {sorted(want)}")
    for a in m["artifacts"]:
        if set(a["stages"]) != set(m["graphs"]):
            p.append(f"artifact {a['runtime']}/{a['precision']} does not hold every graph")
    if m["thresholds"]["keep_ratio"] not in m["keep_ratios"]:
        p.append(f"thresholds.keep_ratio {m['thresholds']['keep_ratio']} is not an exported keep ratio")
    t = m["tokenizer"]
    if t["max_length"] != m["decoder"]["max_len"]:
        p.append("tokenizer.max_length must equal decoder.max_len")
    return p


def named_paths(m: dict) -> list[str]:
    out = [m["tokenizer"]["file"]]
    for a in m["artifacts"]:
        out += [a[k] for k in ("file", "external_data") if k in a]
        out += [e["file"] for e in a["stages"].values() if isinstance(e, dict) and "file" in e]
    return out


def _check_paths(root: Path, m: dict) -> None:
    files = m["files"]
    for rel in list(files) + named_paths(m):
        problem = paths.member_problem(rel)
        if problem:
            raise BundleError(f"{MANIFEST_FILE} names an unsafe path: {problem}; export the bundle again")
    for rel in named_paths(m):
        if rel not in files and not any(f.startswith(rel + "/") for f in files):
            raise BundleError(f"{MANIFEST_FILE} names {rel!r}, which `files` does not list with a hash")


def write_caption_manifest(root: Path, manifest: dict) -> None:
    manifest = {"schema_version": SCHEMA_VERSION, **manifest, "files": hash_files(root)}
    problems = schema_problems(manifest) or layout_problems(manifest)
    if problems:
        raise BundleError("caption manifest is not valid:\n  " + "\n  ".join(problems))
    atomic_write(Path(root) / MANIFEST_FILE, lambda p: p.write_text(json.dumps(manifest, indent=1) + "\n"))


def is_caption_manifest(manifest: dict) -> bool:
    return manifest.get("kind") == CAPTION_KIND


def load_caption_manifest(root: str | Path, verify_files: bool = True, verify_key=None) -> dict:
    root = Path(root)
    if not root.is_dir():
        raise BundleError(f"bundle {root} does not exist or is not a directory; create one with `mmedge export`")
    data = read_manifest_bytes(root)
    if verify_key is not None:
        from mmedge.bundle.signing import verify_manifest_signature

        verify_manifest_signature(root, data, verify_key)
    m = parse_manifest(data, str(root / MANIFEST_FILE))
    if not is_caption_manifest(m):
        raise BundleError(f"{root} is not a captioning bundle (kind {m.get('kind')!r}); load it with Engine.load")
    problems = schema_problems(m)
    if problems:
        raise BundleError(f"{root / MANIFEST_FILE} does not match the caption manifest schema:\n  " + "\n  ".join(problems))
    problems = layout_problems(m)
    if problems:
        raise BundleError(f"{root / MANIFEST_FILE} is inconsistent:\n  " + "\n  ".join(problems)
                          + "\nThe manifest was edited or is corrupt: export the bundle again")
    _check_paths(root, m)
    if verify_files:
        verify(root, m)
    return m

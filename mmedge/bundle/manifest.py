"""manifest.json: what a bundle holds, how to feed it, and the SHA-256 of every file.

The JSON Schema is ``manifest.schema.json`` beside this module. Loading checks, in order: the
directory and manifest exist and parse, the schema version is known, the manifest matches the
schema, every listed file exists with its recorded size and SHA-256.
"""

from __future__ import annotations

import json
from pathlib import Path

from mmedge.errors import BundleError
from mmedge.fileio import atomic_write, sha256_file

SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"
SCHEMA_FILE = Path(__file__).with_name("manifest.schema.json")


def schema() -> dict:
    return json.loads(SCHEMA_FILE.read_text())


def hash_files(root: Path) -> dict[str, dict]:
    """{relative path: {sha256, bytes}} for every file under root except the manifest itself."""
    root = Path(root)
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel != MANIFEST_FILE:
            out[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    return out


def validate_schema(manifest: dict) -> list[str]:
    """Schema violations of a manifest (empty when valid)."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
    return [f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
            for e in sorted(validator.iter_errors(manifest), key=lambda e: list(e.absolute_path))]


def write_manifest(root: Path, manifest: dict) -> None:
    """Validate against the schema, then write root/manifest.json atomically."""
    problems = validate_schema(manifest)
    if problems:
        raise BundleError("manifest does not match its schema:\n  " + "\n  ".join(problems[:20]))
    atomic_write(Path(root) / MANIFEST_FILE, lambda p: p.write_text(json.dumps(manifest, indent=1) + "\n"))


def load_manifest(root: str | Path, verify_files: bool = True) -> dict:
    """Read and check a bundle's manifest; BundleError says what is wrong and what to do."""
    root = Path(root)
    if not root.is_dir():
        raise BundleError(f"bundle {root} does not exist or is not a directory; create one with `mmedge export`")
    path = root / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise BundleError(f"{root} has no {MANIFEST_FILE}: not an mmedge bundle, or an interrupted copy; "
                          "export it again") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path} is not valid JSON ({exc}); the bundle is corrupt: export it again") from exc
    if not isinstance(manifest, dict):
        raise BundleError(f"{path} must hold a JSON object")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError(f"{path} has schema_version {version!r}; this mmedge reads version {SCHEMA_VERSION}. "
                          "Re-export the model with this mmedge, or upgrade mmedge")
    problems = validate_schema(manifest)
    if problems:
        raise BundleError(f"{path} does not match the manifest schema:\n  " + "\n  ".join(problems[:20]))
    if verify_files:
        verify(root, manifest)
    return manifest


def verify(root: Path, manifest: dict) -> None:
    """Every listed file present with its recorded size and SHA-256, else BundleError."""
    missing, changed = [], []
    for rel, entry in manifest["files"].items():
        path = Path(root) / rel
        if not path.is_file():
            missing.append(rel)
        elif path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            changed.append(rel)
    if missing or changed:
        parts = ([f"missing: {', '.join(missing)}"] if missing else []) + \
                ([f"hash mismatch (tampered or corrupt): {', '.join(changed)}"] if changed else [])
        raise BundleError(f"bundle {root} failed verification; {'; '.join(parts)}. Export it again")

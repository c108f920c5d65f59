"""Where a bundle may be written, and what every written manifest carries about its release.

A destination is a new path, or (with force) a folder that is provably an mmedge bundle: its
manifest passes its schema and consistency checks, and every file, folder and link under it is
manifest.json, manifest.sig or listed in ``files``. Anything else (an app's folder that happens to
hold a manifest.json, a bundle with files added beside the listed ones) is never replaced, and the
error names what would have been deleted. A destination may also never be the source it is made
from, lie inside it or hold it.

The ``release`` section ({name, sequence}) lets an app refuse a downgrade: export writes it (the
bundle's name, the current Unix time in milliseconds or a given sequence), and every rewrite of a
manifest (calibration) keeps the name and raises the sequence. No torch: app developers run this.
"""

from __future__ import annotations

import os
import re
import stat
import time
from pathlib import Path

from mmedge.bundle import paths
from mmedge.bundle.manifest import MAX_SAFE_INTEGER as MAX_SEQUENCE  # what every runtime reads exactly
from mmedge.bundle.manifest import (MANIFEST_FILE, SCHEMA_VERSION, consistency_problems, parse_manifest,
                                    read_manifest_bytes, validate_schema)
from mmedge.bundle.signing import SIGNATURE_FILE
from mmedge.errors import BundleError, ConfigError
from mmedge.fileio import recover_publish

MAX_NAME_CHARS = 128
RELEASE_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")
SHOWN = 10                        # paths quoted in one error message
MAX_STRAYS = 100_000              # unlisted members counted before giving up


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    return shown + (f" (and {len(names) - SHOWN} more)" if len(names) > SHOWN else "")


# ---------------------------------------------------------------------------------------- what a bundle is
def manifest_problems(root: Path) -> tuple[dict | None, list[str]]:
    """(manifest, []) when root/manifest.json is a regular file that passes its kind's schema
    (classifier, caption or generative VLM) and consistency checks; else (None or the manifest, what is wrong)."""
    try:
        manifest = parse_manifest(read_manifest_bytes(root))
    except BundleError as exc:
        return None, [str(exc).splitlines()[0]]
    version = manifest.get("schema_version")
    if type(version) is not int or version != SCHEMA_VERSION:
        return manifest, [f"schema_version {repr(version)[:40]} is not the integer {SCHEMA_VERSION}"]
    if manifest.get("kind") == "caption":
        from mmedge.caption.manifest import layout_problems, schema_problems

        check_schema, check_consistency = schema_problems, layout_problems
    elif manifest.get("kind") == "vlm":
        from mmedge.adapt.vlm_manifest import layout_problems as vlm_layout_problems, schema_problems as vlm_schema

        check_schema, check_consistency = vlm_schema, vlm_layout_problems
    else:
        check_schema, check_consistency = validate_schema, consistency_problems
    problems = check_schema(manifest)
    if not problems:
        try:
            problems = check_consistency(manifest)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:  # a schema gap: still not a bundle
            problems = [f"inconsistent ({type(exc).__name__})"]
    return manifest, problems


def unlisted_members(root: Path, files: dict) -> list[str]:
    """Everything under `root` that a bundle listing `files` does not hold (the loader's rule,
    mmedge.bundle.paths.unlisted_members): unlisted files, links, FIFOs and folders, manifest.json and
    manifest.sig excepted when they are regular files. A folder is named once, not entered."""
    return paths.unlisted_members(Path(root), files, {MANIFEST_FILE: stat.S_IFREG, SIGNATURE_FILE: stat.S_IFREG},
                                  MAX_STRAYS)


def check_apart(source: Path, out: Path, what: str = "the source", out_inside_ok: bool = False) -> None:
    """BundleError when `out` is `source`, lies inside it, or holds it: compared as resolved paths and
    by device and inode (so links, hard-linked folders and bind mounts count). `out_inside_ok`
    allows `out` inside `source` (a model directory may hold its own bundles)."""
    source, out = Path(source), Path(out)
    src, dst = source.resolve(), out.resolve()
    same = src == dst
    out_in_source = src in dst.parents and not out_inside_ok
    source_in_out = dst in src.parents
    if not (same or out_in_source or source_in_out):
        src_id, dst_id = _file_id(src), _file_id(dst)
        same = src_id is not None and src_id == dst_id
        out_in_source = not out_inside_ok and src_id is not None and src_id in _ancestor_ids(dst)
        source_in_out = dst_id is not None and dst_id in _ancestor_ids(src)
    if same or out_in_source or source_in_out:
        how = "is" if same else "lies inside" if out_in_source else "holds"
        raise BundleError(f"--out {out} {how} {what} {source}: writing it would destroy what it is made from. "
                          "Choose an --out outside it")


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _ancestor_ids(path: Path) -> set[tuple[int, int]]:
    return {i for p in path.parents if (i := _file_id(p)) is not None}


def check_destination(out: Path, force: bool, source: Path | None = None, source_is: str = "the source",
                      out_inside_source_ok: bool = False) -> None:
    """`out` may be created, or (with force) replaced because it is provably an mmedge bundle; else
    BundleError saying why and what to do. Never replaces anything else: a folder of someone's files
    (even with a manifest.json), a bundle holding files its manifest does not list, a file, a link.
    With `source` (what `out` is made from, named `source_is`), `out` may not be it, hold it, or
    (unless allowed) lie inside it."""
    out = Path(out)
    if source is not None:
        check_apart(source, out, source_is, out_inside_source_ok)
    recover_publish(out)
    if not os.path.lexists(out):
        return
    if not force:
        raise BundleError(f"{out} already exists; pass --force to replace it (only an mmedge bundle is replaced)")
    if out.is_symlink() or not out.is_dir():
        kind = "a symbolic link" if out.is_symlink() else "a file"
        raise BundleError(f"refusing to replace {out}: it is {kind}, and --force only replaces bundles. "
                          "Choose another --out, or remove it yourself")
    manifest, problems = manifest_problems(out)
    if problems:
        raise BundleError(f"refusing to replace {out}: --force replaces only an mmedge bundle, and its "
                          f"{MANIFEST_FILE} is not a valid one ({problems[0][:200]}). Choose another --out, or "
                          "remove it yourself")
    strays = unlisted_members(out, manifest["files"])
    if strays:
        raise BundleError(f"refusing to replace {out}: it holds what its manifest does not list, which --force "
                          f"would delete: {_listing(strays)}. Choose another --out, or move them out first")


# ---------------------------------------------------------------------------------------- release
def release_name(name: str) -> str:
    """A bundle name as a release name: characters outside [A-Za-z0-9._-] become '-', at most 128."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", str(name))[:MAX_NAME_CHARS]
    return cleaned or "bundle"


def now_sequence() -> int:
    """The current Unix time in milliseconds: a sequence that grows from one export to the next."""
    return time.time_ns() // 1_000_000


def sequence_problem(value) -> str | None:
    """Why `value` cannot be a release sequence (None when it can): a whole number 0..2^53-1."""
    if isinstance(value, bool) or not isinstance(value, int):
        return f"release sequence {str(value)[:40]!r} is not a whole number"
    if not 0 <= value <= MAX_SEQUENCE:
        return f"release sequence {value} is outside 0..{MAX_SEQUENCE} (2^53-1, what every runtime reads exactly)"
    return None


def check_sequence(value) -> None:
    """ConfigError unless `value` is None or a valid release sequence (checked before any work)."""
    problem = None if value is None else sequence_problem(value)
    if problem:
        raise ConfigError(problem, "arguments")


def new_release(name: str, sequence: int | None = None) -> dict:
    """The release section of a newly exported bundle."""
    check_sequence(sequence)
    return {"name": release_name(name), "sequence": now_sequence() if sequence is None else sequence}


def next_release(manifest: dict) -> dict:
    """The release section of a rewritten manifest: the same name, a higher sequence (the old one + 1,
    or the current time in milliseconds when that is higher). A manifest without one (exported
    before releases existed) gets one named after the bundle."""
    old = manifest.get("release")
    if isinstance(old, dict) and isinstance(old.get("name"), str) and RELEASE_NAME.fullmatch(old["name"]) \
            and sequence_problem(old.get("sequence")) is None:
        name, sequence = old["name"], max(old["sequence"] + 1, now_sequence())
    else:
        name, sequence = release_name(manifest.get("name", "bundle")), now_sequence()
    if sequence > MAX_SEQUENCE:
        raise BundleError(f"release.sequence of {manifest.get('name')!r} is already {MAX_SEQUENCE}, the largest "
                          "there is; export the bundle again under another name")
    return {"name": name, "sequence": sequence}


def sign_and_publish(tmp: Path, out: Path, force: bool, source: Path, sign_key=None) -> None:
    """The last steps of every export: sign the finished bundle in `tmp` (with a loaded private key),
    check the destination again (it may have changed during the export), and move it into place."""
    from mmedge.fileio import publish_dir

    if sign_key is not None:
        from mmedge.bundle.signing import sign_bundle

        sign_bundle(tmp, sign_key)
    check_destination(out, force, source, "the model directory", out_inside_source_ok=True)
    publish_dir(tmp, out)


def check_unchanged(root: Path, loaded: dict, kind: str, hashes: bool = True) -> None:
    """BundleError unless the bundle on disk is the one loaded: the same manifest, nothing unlisted
    inside, with `hashes` every listed file's SHA-256, and a manifest.sig (if any) a regular file."""
    from mmedge.bundle.manifest import load_bundle_manifest

    signature = Path(root) / SIGNATURE_FILE
    if os.path.lexists(signature) and not stat.S_ISREG(os.lstat(signature).st_mode):
        raise BundleError(f"{signature} is not a regular file (a folder or link); remove it, then calibrate again",
                          code="signature-malformed")
    # every check of loading again: nothing unlisted (file, folder, link), the files' sizes (and SHA-256)
    if load_bundle_manifest(root, verify_files=hashes, kinds=(kind,)) != loaded:
        raise BundleError(f"{root}/manifest.json changed while calibrating; nothing was written. Calibrate again")


def write_calibrated(root: Path, loaded: dict, updates: dict, key, kind: str, problems) -> str:
    """Rewrite a captioning or generative VLM bundle's manifest with `updates` (its calibration), keeping
    the loaded, verified `files` list and raising the release sequence; `problems(manifest)` lists what
    makes it invalid. The old signature goes first; `key` signs the new manifest. Returns what became of
    the signature: "signed", "removed" or "none"."""
    import json

    from mmedge.bundle.signing import sign_bundle
    from mmedge.fileio import atomic_write

    root = Path(root)
    check_unchanged(root, loaded, kind)
    manifest = {**loaded, **updates, "release": next_release(loaded)}  # `files`: the loaded list, not a new hash
    found = problems(manifest)
    if found:
        raise BundleError(f"the calibrated {kind} manifest is not valid:\n  " + "\n  ".join(found))
    signature = root / SIGNATURE_FILE
    had_signature = signature.exists()
    if had_signature:  # first: a stale signature must never sit beside the new manifest
        signature.unlink()
    atomic_write(root / MANIFEST_FILE, lambda p: p.write_text(json.dumps(manifest, indent=1) + "\n"))
    if key is not None:
        sign_bundle(root, key)
        return "signed"
    return "removed" if had_signature else "none"

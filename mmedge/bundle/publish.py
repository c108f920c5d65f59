"""Where a bundle may be written: a new path, or (with force) an existing bundle, never anything else."""

from __future__ import annotations

import os
from pathlib import Path

from mmedge.bundle.manifest import looks_like_bundle
from mmedge.errors import BundleError
from mmedge.fileio import recover_publish


def check_destination(out: Path, force: bool) -> None:
    """`out` may be created, or (with force) replaced because it is an mmedge bundle; else BundleError.
    Never replaces anything else: a directory of someone's files, a file, a link."""
    out = Path(out)
    recover_publish(out)
    if not os.path.lexists(out):
        return
    if not force:
        raise BundleError(f"{out} already exists; pass --force to replace it")
    if not looks_like_bundle(out):
        kind = "a symbolic link" if out.is_symlink() else "a directory that is not an mmedge bundle" \
            if out.is_dir() else "a file"
        raise BundleError(f"refusing to replace {out}: it is {kind} (no readable manifest.json), and --force "
                          "only replaces bundles. Choose another --out, or remove it yourself")

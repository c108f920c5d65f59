"""Paths inside a bundle, treated as untrusted: every name is relative, normalised, inside the
bundle and free of symbolic links; files are opened only when they are regular files.

No torch, no backend: the runtime uses this before it opens anything.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path, PurePosixPath

from mmedge.errors import BundleError

MAX_PATH_CHARS = 512


def member_problem(rel: object) -> str | None:
    """Why `rel` is not an acceptable bundle member name (None when it is)."""
    if not isinstance(rel, str):
        return f"path {str(rel)[:80]!r} is a {type(rel).__name__}, not a string"
    if not rel or len(rel) > MAX_PATH_CHARS:
        return f"path of {len(rel)} characters (1 to {MAX_PATH_CHARS} allowed)"
    if "\\" in rel or "\x00" in rel:
        return f"path {rel[:80]!r} has a backslash or NUL byte; use '/'-separated relative paths"
    if rel.startswith("/"):
        return f"path {rel[:80]!r} is absolute; bundle paths are relative to the bundle"
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return f"path {rel[:80]!r} is not normalised (empty, '.' or '..' part); it must stay inside the bundle"
    return None


def _lstat_chain(root: Path, rel: str) -> os.stat_result:
    """lstat every component of root/rel; BundleError on a symbolic link or a missing part."""
    path = root
    info = None
    for part in PurePosixPath(rel).parts:
        path = path / part
        try:
            info = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise BundleError(f"{rel} is missing from the bundle; export it again", code="file-missing") from exc
        except OSError as exc:
            raise BundleError(f"cannot inspect {rel} in the bundle ({exc.strerror})", code="file-not-regular") from exc
        if stat.S_ISLNK(info.st_mode):
            raise BundleError(f"{rel} passes through a symbolic link ({path.name}); a bundle may not contain "
                              "links: copy the real files in and export it again", code="file-not-regular")
    assert info is not None
    return info


def _member(root: Path, rel: str, is_kind, kind: str) -> Path:
    problem = member_problem(rel)
    if problem:
        raise BundleError(f"bad path in the manifest: {problem}", code="path")
    if not is_kind(_lstat_chain(root, rel).st_mode):
        raise BundleError(f"{rel} is not a {kind}; a bundle holds regular files and directories only",
                          code="file-not-regular")
    return root / rel


def member_dir(root: Path, rel: str) -> Path:
    """root/rel, checked to be a real directory inside the bundle."""
    return _member(root, rel, stat.S_ISDIR, "directory")


def member_file(root: Path, rel: str) -> Path:
    """root/rel, checked to be a regular file inside the bundle (no links, devices or FIFOs)."""
    return _member(root, rel, stat.S_ISREG, "regular file")


def _open_regular(path: Path, missing: str = "file-missing", not_regular: str = "file-not-regular") -> int:
    """A read-only descriptor of a regular file, never following a link and never blocking on a FIFO;
    BundleError with code `missing` or `not_regular` otherwise."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError as exc:
        raise BundleError(f"{path.name} is missing", code=missing) from exc
    except OSError as exc:
        raise BundleError(f"cannot open {path.name} ({exc.strerror}); it must be a regular file",
                          code=not_regular) from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise BundleError(f"{path.name} is not a regular file", code=not_regular)
    return fd


def read_bounded(path: Path, limit: int, *, missing: str = "file-missing", not_regular: str = "file-not-regular",
                 too_large: str = "bundle") -> bytes:
    """The bytes of a regular file of at most `limit` bytes (links, FIFOs and devices refused); the
    keyword arguments are the reason codes of each refusal."""
    fd = _open_regular(path, missing, not_regular)
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise BundleError(f"{path.name} is over {limit} bytes; not an mmedge bundle file", code=too_large)
    return data


def member_size(path: Path) -> int:
    """The size of a regular file, from fstat of a descriptor opened without following links."""
    fd = _open_regular(path)
    try:
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def sha256_member(path: Path, expected_bytes: int) -> str | None:
    """SHA-256 of a regular file whose size is `expected_bytes`; None when the size differs."""
    fd = _open_regular(path)
    with os.fdopen(fd, "rb") as f:
        if os.fstat(f.fileno()).st_size != expected_bytes:
            return None
        digest = hashlib.sha256()
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def unlisted_members(root: Path, listed, allowed_top: dict[str, int], limit: int = 10) -> list[str]:
    """What the bundle holds besides its listed files: the first `limit` members (sorted) that are
    neither a listed path, nor a directory on the way to a listed file, nor an allowed top-level name
    of the allowed kind (`allowed_top`: name -> stat.S_IFREG etc.). Links are never followed and the
    walk never enters a directory that holds no listed file, so an unlisted link, FIFO, folder (empty
    or not) or file is reported without being opened. A listed path that is a link or a special file
    is left to the file checks."""
    listed = set(listed)
    folders = {rel[:cut] for rel in listed for cut in range(len(rel)) if rel[cut] == "/"}
    found: list[str] = []
    pending = [""]
    while pending and len(found) < limit:
        folder = pending.pop()
        try:
            with os.scandir(root / folder if folder else root) as entries:
                for entry in entries:
                    rel = f"{folder}/{entry.name}" if folder else entry.name
                    if not folder and entry.name in allowed_top:
                        if stat.S_IFMT(entry.stat(follow_symlinks=False).st_mode) == allowed_top[entry.name]:
                            continue
                    elif rel in listed:
                        continue
                    elif rel in folders and entry.is_dir(follow_symlinks=False):
                        pending.append(rel)
                        continue
                    elif rel in folders:
                        continue  # a link or file where a listed file's folder should be: the file checks say so
                    found.append(rel)
                    if len(found) >= limit:
                        break
        except OSError as exc:
            raise BundleError(f"cannot list {folder or '.'} in the bundle ({exc.strerror})",
                              code="file-not-regular") from exc
    return sorted(found)

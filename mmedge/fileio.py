"""Atomic file and directory writes that a killed process cannot leave half done (no torch: the
runtime uses them too).

Temporary names carry the writing process's id, so that the next writer can tell a leftover of a
dead process (removed, or for a directory swap, restored) from the work of a live one (left alone).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (ours counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def _pid_of(name: str, marker: str) -> int | None:
    """The process id in a temporary name `...{marker}{pid}-...`, None if it has none."""
    try:
        return int(name.split(marker, 1)[1].split("-", 1)[0])
    except (IndexError, ValueError):
        return None


def _remove_dead_temporaries(path: Path) -> None:
    """Delete `.NAME.<pid>-*.tmp` files beside `path` left by processes that no longer exist."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        pid = _pid_of(stale.name, f".{path.name}.")
        if pid is not None and not pid_alive(pid):
            stale.unlink(missing_ok=True)


def make_parent(path: Path) -> None:
    """Create the folder that will hold `path` (and the folders above it); a folder that cannot be made
    (no such file system, a file in the way, permission) is a ConfigError naming it, not an OSError."""
    from mmedge.errors import ConfigError

    parent = Path(path).parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        where = exc.filename or parent
        raise ConfigError(f"cannot create {where} to hold {path} ({exc.strerror or exc}); choose another location",
                          "destination") from None


def atomic_write(path: Path, write) -> None:
    """Call write(tmp_path) on a temporary file beside `path`, then rename it over `path`."""
    path = Path(path)
    make_parent(path)
    _remove_dead_temporaries(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _old_name(out: Path) -> Path:
    return out.with_name(f".{out.name}.old-{os.getpid()}-{time.time_ns()}")


def publish_dir(tmp: Path, out: Path, between=None) -> None:
    """Move the finished directory `tmp` to `out`, replacing an existing `out` only once `tmp` is whole.

    Two renames: `out` -> `.NAME.old-<pid>-<ns>`, then `tmp` -> `out`. A process killed between
    them leaves no `out`; `recover_publish` (run by the next export and by loading) puts the old
    one back. `between` is called between the renames (tests inject a kill there)."""
    os.chmod(tmp, 0o777 & ~_current_umask())  # mkdtemp makes 0700; give the usual directory mode
    if not out.exists():
        tmp.rename(out)
        return
    old = _old_name(out)
    out.rename(old)
    if between is not None:
        between()
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def recover_publish(out: Path) -> None:
    """Finish what a killed `publish_dir` left: with no `out`, restore the newest old copy; remove
    the other old copies of dead processes. Copies of a live publisher are left alone."""
    out = Path(out)
    marker = f".{out.name}.old-"
    olds = []
    try:
        for old in out.parent.glob(f"{marker}*"):
            pid = _pid_of(old.name, marker)
            if pid is not None and not pid_alive(pid):
                olds.append(old)
        olds.sort(key=lambda p: p.name.rsplit("-", 1)[-1].zfill(24), reverse=True)  # newest first (ns stamp)
        if olds and not os.path.lexists(out):
            olds.pop(0).rename(out)
        for old in olds:
            shutil.rmtree(old, ignore_errors=True)
    except OSError:
        return  # a read-only or vanished parent: nothing this call can repair; callers report what is missing


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def shown_path(path) -> str:
    """A path as recorded in results: relative to the working directory when inside it, so that
    committed results carry no machine paths."""
    path = Path(path)
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)

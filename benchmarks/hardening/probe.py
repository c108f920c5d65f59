"""Running audit cases in child processes, and the two measurements the later sections add:

- **read outside**: canary files with unique names (and a unique marker in their text) are placed
  outside the bundle or dataset root; a case reads outside when, while it runs, a canary is opened
  according to a Python audit hook in the child (the "open" event: builtins.open, io.open,
  os.open, pathlib, Pillow and numpy all raise it), or to inotify (Linux: any open of the file by
  the child, its native libraries or its own children), or when a canary's marker appears in the
  case's output, error message or result (what a native reader could leak without either).
- **data loss**: every file, folder and link under the watched paths is snapshotted (type, size,
  SHA-256, link target) before and after a command; a path that existed before and is gone or
  changed after, and that the command was not asked to replace, is data loss.

Cases run in batches in one child process (benchmarks/hardening/child.py) that reports each case
as it starts and ends: a case that gives no answer within its timeout is a "hang" (the child's
process group is killed and the batch goes on in a fresh child), a child that dies during a case
is a "crash".
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import secrets
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

from PIL import Image

from benchmarks.hardening.common import ROOT, SCRUB

CHILD = Path(__file__).with_name("child.py")
MEMORY_LIMIT_GB = 6.0     # each child's address space: a huge allocation is a MemoryError there, not an OOM kill
SETUP_TIMEOUT_S = 300.0   # imports and the batch's setup code


# ---------------------------------------------------------------------------------------------- canaries
class Canaries:
    """Files outside every root a case reads, each with a unique name, so that any open of one is seen."""

    def __init__(self, parent: Path) -> None:
        self.token = secrets.token_hex(6)
        self.dir = Path(parent) / f"outside-{self.token}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.marker = f"MMEDGE-CANARY-{self.token}"
        self.paths: list[Path] = []
        self.folders: list[Path] = []

    def name(self, stem: str, suffix: str = "") -> str:
        return f"canary{self.token}{stem}{suffix}"

    def _add(self, path: Path) -> Path:
        self.paths.append(path)
        return path

    def text(self, stem: str = "txt", suffix: str = ".txt") -> Path:
        path = self.dir / self.name(stem, suffix)
        path.write_text(f"{self.marker} secret {stem}\n")
        return self._add(path)

    def copy(self, source: Path, stem: str, suffix: str | None = None) -> Path:
        """A canary with another file's bytes (a tokenizer, a stage file, weights)."""
        path = self.dir / self.name(stem, source.suffix if suffix is None else suffix)
        data = Path(source).read_bytes()
        if path.suffix == ".json":  # a JSON canary carries the marker too, where a parser may echo it
            try:
                obj = json.loads(data)
                if isinstance(obj, dict):
                    obj["_canary"] = self.marker
                    data = json.dumps(obj).encode()
            except ValueError:
                pass  # not JSON (an image, a text file): the canary's bytes are written unmarked
        path.write_bytes(data)
        return self._add(path)

    def image(self, stem: str = "img", suffix: str = ".png", size: int = 32, name: str | None = None,
              folder: Path | None = None) -> Path:
        """A valid image (so that a reader that opens it would use it), the marker in a text chunk."""
        from PIL import PngImagePlugin

        folder = folder or self.dir
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / (name or self.name(stem, suffix))
        img = Image.new("RGB", (size, size), (200, 30, 30))
        if path.suffix.lower() == ".png":
            info = PngImagePlugin.PngInfo()
            info.add_text("comment", self.marker)
            img.save(path, format="PNG", pnginfo=info)
        else:
            img.save(path, format="JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG")
        return self._add(path)

    def folder(self, stem: str) -> Path:
        """A folder outside whose every file is a canary (a bundle's folder moved out, behind a link):
        its files keep their own names, so they are matched by resolved path, not by name."""
        path = self.dir / self.name(stem)
        self.folders.append(path)
        return path

    def spec(self) -> dict:
        extra = [str(f) for folder in self.folders for f in folder.rglob("*") if f.is_file()]
        dirs = sorted({str(p.parent) for p in self.paths} | {str(self.dir)}
                      | {str(d) for folder in self.folders for d in [folder, *folder.rglob("*")] if d.is_dir()})
        return {"canaries": [str(p) for p in self.paths], "canary_paths": extra, "canary_dirs": dirs,
                "markers": [self.marker]}


# ---------------------------------------------------------------------------------------------- data loss
def snapshot(paths) -> dict[str, tuple]:
    """{path: (kind, size, sha256 or link target)} of every file, folder and link under `paths`
    (links not followed; a path that is itself a link is recorded as the link)."""
    out: dict[str, tuple] = {}

    def record(p: str) -> None:
        try:
            st = os.lstat(p)
        except OSError:
            return
        if stat.S_ISLNK(st.st_mode):
            out[p] = ("link", 0, os.readlink(p))
        elif stat.S_ISDIR(st.st_mode):
            out[p] = ("dir", 0, "")
        elif stat.S_ISREG(st.st_mode):
            h = hashlib.sha256()
            try:
                with open(p, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
                out[p] = ("file", st.st_size, h.hexdigest())
            except OSError as exc:
                out[p] = ("file", st.st_size, f"unreadable: {exc.strerror}")
        else:
            out[p] = ("special", 0, oct(stat.S_IFMT(st.st_mode)))

    for top in paths:
        top = str(top)
        record(top)
        if os.path.isdir(top) and not os.path.islink(top):
            for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
                for name in dirnames + filenames:
                    record(os.path.join(dirpath, name))
    return out


def lost(before: dict, after: dict, allowed=()) -> list[str]:
    """Paths that existed before and are gone or changed after, outside the `allowed` paths."""
    allowed = [str(a) for a in allowed]

    def may_change(p: str) -> bool:
        return any(p == a or p.startswith(a.rstrip("/") + "/") for a in allowed)

    out = []
    for p, old in before.items():
        if may_change(p):
            continue
        new = after.get(p)
        if new is None:
            out.append(f"{p} (gone)")
        elif new != old and old[0] != "dir":
            out.append(f"{p} (changed)")
    return sorted(out)


# ---------------------------------------------------------------------------------------------- child batches
def _reader(stream, q: queue.Queue) -> None:
    for line in stream:
        try:
            q.put(json.loads(line))
        except ValueError:
            continue
    q.put(None)


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the child and anything it started (its own session)
    except (ProcessLookupError, PermissionError):
        pass  # the child's group has already exited; wait() below reaps it
    proc.wait()


def run_cases(cases: list[dict], work: Path, canaries: Canaries | None = None, setup: str = "",
              timeout: float = 30.0, memory_gb: float | None = MEMORY_LIMIT_GB, bar=None) -> dict[str, dict]:
    """{case id: row} for cases {"id", "code" | "argv", "ok"?, "timeout"?, "dataset_refusal"?}.
    Rows: outcome, error, message, seconds, read_outside (canaries opened or leaked), read_by."""
    work.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict] = {}
    remaining = list(cases)
    spec_extra = canaries.spec() if canaries else {"canaries": [], "canary_dirs": [], "markers": []}
    inotify = None
    batch = 0
    while remaining:
        batch += 1
        spec_path = work / f"batch-{os.getpid()}-{batch}.json"
        spec_path.write_text(json.dumps({**spec_extra, "setup": setup, "memory_limit_gb": memory_gb,
                                         "cases": remaining}))
        log = open(work / f"batch-{batch}.log", "wb")
        r, w = os.pipe()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT)] + [p for p in
                                                                        os.environ.get("PYTHONPATH", "").split(
                                                                            os.pathsep) if p]),
               "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
        proc = subprocess.Popen([sys.executable, str(CHILD), str(spec_path), str(w)], cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, pass_fds=(w,),
                                start_new_session=True, env=env)
        os.close(w)
        stream = os.fdopen(r, "r", encoding="utf-8", errors="replace")
        q: queue.Queue = queue.Queue()
        threading.Thread(target=_reader, args=(stream, q), daemon=True).start()
        by_id = {c["id"]: c for c in remaining}
        current, started, ready = None, time.monotonic(), False
        progressed = False
        while True:
            limit = (by_id[current].get("timeout", timeout) if current else SETUP_TIMEOUT_S if not ready else 3600)
            try:
                msg = q.get(timeout=max(0.05, started + limit - time.monotonic()))
            except queue.Empty:
                if current is None and not ready:
                    _kill(proc)
                    for c in remaining:
                        rows[c["id"]] = _row(c, "crash", "setup", f"the child gave no answer in "
                                             f"{SETUP_TIMEOUT_S:.0f} s before its first case", SETUP_TIMEOUT_S)
                    break
                _kill(proc)
                rows[current] = _row(by_id[current], "hang", None, f"no answer in {limit:.0f} s (killed)", limit)
                progressed = True
                break
            if msg is None:  # the child ended
                rc = proc.wait()
                if current is not None:
                    how = f"the process died of {signal.Signals(-rc).name}" if rc < 0 else f"the process exited {rc}"
                    tail = (work / f"batch-{batch}.log").read_text(errors="replace")[-300:]
                    rows[current] = _row(by_id[current], "crash", f"signal {-rc}" if rc < 0 else f"exit {rc}",
                                         f"{how} during the case: {tail}", time.monotonic() - started)
                    progressed = True
                elif len(rows) < len(cases) and not progressed:
                    tail = (work / f"batch-{batch}.log").read_text(errors="replace")[-300:]
                    for c in remaining:
                        if c["id"] not in rows:
                            rows[c["id"]] = _row(c, "crash", f"exit {rc}", f"the child exited {rc} before the "
                                                 f"case: {tail}", 0.0)
                break
            if "ready" in msg:
                ready, started = True, time.monotonic()
                inotify = msg.get("inotify") if inotify is None else inotify
            elif "start" in msg:
                current, started = msg["start"], time.monotonic()
            elif "id" in msg:
                rows[msg["id"]] = _finish(by_id[msg["id"]], msg)
                current, progressed = None, True
                if bar is not None:
                    bar.update()
        log.close()
        if proc.poll() is None:
            _kill(proc)
        remaining = [c for c in remaining if c["id"] not in rows]
    for row in rows.values():
        row["inotify_active"] = bool(inotify)
    return rows


def _row(case: dict, word: str, kind, message: str, seconds: float) -> dict:
    return {"id": case["id"], "outcome": word, "error": kind, "message": SCRUB(message)[:300],
            "seconds": round(seconds, 2), "read_outside": [], "read_by": [], "result": "", "rc": None}


def _finish(case: dict, msg: dict) -> dict:
    opened = sorted({Path(p).name for p in msg.get("hook", []) + msg.get("inotify", [])})
    by = (["audit hook"] if msg.get("hook") else []) + (["inotify"] if msg.get("inotify") else []) + \
         (["marker in output"] if msg.get("leaks") else [])
    if msg.get("leaks"):
        opened = sorted(set(opened) | {"(marker)"})
    return {"id": case["id"], "outcome": msg["outcome"], "error": msg.get("error"),
            "message": SCRUB(msg.get("message") or "")[:300].replace("\n", " "), "seconds": round(msg["seconds"], 3),
            "rc": msg.get("rc"), "result": SCRUB(msg.get("result") or "")[:160],
            "read_outside": opened, "read_by": by,
            "output_tail": SCRUB(msg.get("output_tail") or "")[-300:]}

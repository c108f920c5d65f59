"""The child process that runs audit cases (benchmarks/hardening/probe.py starts it):

    python benchmarks/hardening/child.py SPEC.json FD

SPEC: {"canaries": [absolute paths of canary files with unique names],
"canary_paths": [canaries matched by resolved path only], "canary_dirs": [folders holding them],
"markers": [strings written into canaries], "memory_limit_gb": N or null, "setup": python code run
once, "cases": [{"id", "code": python code | "argv": mmedge CLI arguments, "ok": word on success,
"dataset_refusal": bool}]}.

For each case it writes to FD one JSON line {"start": id}, runs the case, then one JSON line with
the outcome word, the error type and message, the seconds, the case's output (fd 1 and 2, native
libraries included) and what it read outside: canaries opened according to a Python audit hook
("open" events: builtins.open, io.open, os.open, pathlib, Pillow, numpy) and, on Linux, to inotify
(every open by any code, onnxruntime's C++ readers included), and canary markers found in the
output, the message or the result. A memory limit (RLIMIT_AS) turns a huge allocation into a
MemoryError here instead of a machine-wide OOM kill.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import resource
import struct
import sys
import tempfile
import time
import traceback

IN_OPEN, IN_ACCESS, IN_ISDIR, IN_NONBLOCK, IN_CLOEXEC = 0x20, 0x1, 0x40000000, 0o4000, 0o2000000


class Inotify:
    """Opens of the canaries by anyone (this process's native code included), Linux only."""

    def __init__(self, folders: list[str]) -> None:
        self.fd, self.names = -1, {}
        if not sys.platform.startswith("linux") or not folders:
            return
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
            fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
            if fd < 0:
                return
            for folder in folders:
                wd = libc.inotify_add_watch(fd, os.fsencode(folder), IN_OPEN | IN_ACCESS)
                if wd >= 0:
                    self.names[wd] = folder
            self.fd = fd
        except (OSError, AttributeError):
            self.fd = -1

    @property
    def active(self) -> bool:
        return self.fd >= 0 and bool(self.names)

    def drain(self) -> set[str]:
        """Paths of the canary files opened since the last drain (folder listings not counted)."""
        found: set[str] = set()
        if self.fd < 0:
            return found
        while True:
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return found
            except OSError:
                return found
            i = 0
            while i + 16 <= len(data):
                wd, mask, _, length = struct.unpack_from("iIII", data, i)
                name = data[i + 16: i + 16 + length].rstrip(b"\0").decode(errors="replace")
                i += 16 + length
                if name and not mask & IN_ISDIR and wd in self.names:
                    found.add(os.path.join(self.names[wd], name))


class Probe:
    def __init__(self, canaries: list[str], markers: list[str], by_path: list[str] = ()) -> None:
        self.paths = {os.path.realpath(p) for p in list(canaries) + list(by_path)}
        self.names = {os.path.basename(p) for p in canaries}
        self.markers = [m for m in markers if m]
        self.armed = False
        self.hits: set[str] = set()
        self._inside = False

    def hook(self, event: str, args) -> None:
        if not self.armed or self._inside or event != "open":
            return
        self._inside = True
        try:
            path, flags = args[0], args[2] if len(args) > 2 else None
            if isinstance(path, int):
                return
            path = os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else str(path)
            base = os.path.basename(path)
            if isinstance(flags, int) and flags & getattr(os, "O_NOFOLLOW", 0):
                resolved = os.path.join(os.path.realpath(os.path.dirname(path) or "."), base)
            else:
                resolved = os.path.realpath(path)
            if base in self.names or resolved in self.paths:
                self.hits.add(resolved if resolved in self.paths else path)
        except Exception:  # noqa: BLE001
            # An audit hook that raised would turn the case's own open() into an error and change its
            # outcome; the path could not be resolved, so it is not a canary's (canaries are plain files).
            pass
        finally:
            self._inside = False

    def leaks(self, *texts: str) -> list[str]:
        return sorted({m for m in self.markers for t in texts if t and m in t})


def classify(exc: BaseException | None, ok: str, dataset_refusal: bool) -> str:
    from mmedge.errors import BundleError, DatasetError, MMEdgeError

    if exc is None:
        return ok
    if isinstance(exc, BundleError) or (dataset_refusal and isinstance(exc, DatasetError)):
        return "refused"
    if isinstance(exc, MMEdgeError):
        return "typed error"
    return "untyped error"


def run_cli(argv: list[str], dataset_refusal: bool):
    """mmedge's own main(); the exception it reports on its one-line error is recorded by wrapping
    mmedge.cli.one_line (what main calls with it). An exception escaping main is a traceback."""
    import mmedge.cli as cli

    seen: list[BaseException] = []
    original = cli.one_line

    def recording(exc):
        seen.append(exc)
        return original(exc)

    cli.one_line = recording
    try:
        try:
            rc = cli.main(argv)
        except SystemExit as exc:  # argparse's usage error: the arguments were refused
            code = exc.code if isinstance(exc.code, int) else 2
            return ("done" if code == 0 else "refused"), ("usage" if code else None), f"exit {code}", code
    finally:
        cli.one_line = original
    if rc == 0:
        return "done", None, "", rc
    if seen:
        exc = seen[-1]
        return classify(exc, "done", dataset_refusal), type(exc).__name__, str(exc), rc
    return "typed error", f"exit {rc}", "", rc


def main() -> None:
    spec = json.loads(open(sys.argv[1], encoding="utf-8").read())
    out = os.fdopen(int(sys.argv[2]), "w", buffering=1)
    limit = spec.get("memory_limit_gb")
    if limit:
        size = int(limit * 2 ** 30)
        resource.setrlimit(resource.RLIMIT_AS, (size, size))
    env: dict = {"__name__": "__audit_case__"}
    setup_error = None
    try:
        exec(compile(spec.get("setup") or "", "<setup>", "exec"), env)
    except BaseException as exc:  # noqa: BLE001 - reported with every case
        setup_error = f"setup failed: {type(exc).__name__}: {exc}"[:500]
    probe = Probe(spec.get("canaries", []), spec.get("markers", []), spec.get("canary_paths", []))
    watch = Inotify(spec.get("canary_dirs", []))
    sys.addaudithook(probe.hook)
    out.write(json.dumps({"ready": True, "inotify": watch.active}) + "\n")
    for case in spec["cases"]:
        out.write(json.dumps({"start": case["id"]}) + "\n")
        capture = tempfile.TemporaryFile()
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        os.dup2(capture.fileno(), 1)
        os.dup2(capture.fileno(), 2)
        watch.drain()
        probe.hits = set()
        probe.armed = True
        t0 = time.perf_counter()
        word, kind, message, result, rc = "untyped error", None, "", None, None
        try:
            if setup_error:
                raise RuntimeError(setup_error)
            if "argv" in case:
                word, kind, message, rc = run_cli(case["argv"], case.get("dataset_refusal", False))
            else:
                scope = dict(env)
                exec(compile(case["code"], f"<case {case['id']}>", "exec"), scope)
                result = scope.get("result")
                word = case.get("ok", "loaded")
        except BaseException as exc:  # noqa: BLE001 - what the audit classifies (MemoryError, RecursionError too)
            if isinstance(exc, KeyboardInterrupt):
                raise
            word, kind = classify(exc, case.get("ok", "loaded"), case.get("dataset_refusal", False)), \
                type(exc).__name__
            message = str(exc)
            if word == "untyped error":
                message += " | " + " <- ".join(f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno}"
                                               for f in traceback.extract_tb(exc.__traceback__)[-3:])
        seconds = time.perf_counter() - t0
        probe.armed = False
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:  # noqa: BLE001
            pass  # the case closed or broke its own streams; the descriptors are restored below either way
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
        opened = watch.drain()
        capture.seek(0)
        output = capture.read().decode("utf-8", errors="replace")
        capture.close()
        result_text = "" if result is None else repr(result)
        leaks = probe.leaks(output, message, result_text)
        out.write(json.dumps({
            "id": case["id"], "outcome": word, "error": kind, "message": message[:2000], "seconds": seconds,
            "rc": rc, "result": result_text[:300], "output_tail": output[-600:],
            "hook": sorted(probe.hits), "inotify": sorted(opened), "leaks": leaks}) + "\n")
    out.close()


if __name__ == "__main__":
    main()

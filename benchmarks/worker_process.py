"""One measured configuration in its own process, driven over JSON lines: what hf_scale.py and vlm_scale.py
use so that each configuration's load time and peak memory are its own.

The parent starts `Worker(name, argv, log)` (argv: the script and its --worker arguments) and `ask`s
commands; the child calls `protocol()` first (anything a library prints then goes to stderr, not into the
protocol) and answers each command with one JSON line.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

MB = 1e6


def rss_mb(field: str = "VmRSS") -> float:
    """This process's resident set (VmRSS) or its peak (VmHWM), MB (10^6 bytes)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024 / MB
    return float("nan")


def protocol():
    """In the child: the protocol's stream (the original stdout); stdout itself now goes to stderr."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return proto


class Worker:
    def __init__(self, name: str, argv: list[str], log_dir: Path, cwd: Path) -> None:
        self.name = name
        safe = re.sub(r"[^\w.-]+", "_", name)
        self.stderr = open(log_dir / f"worker-{safe}.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True, bufsize=1, cwd=cwd)

    def ask(self, cmd: dict | None = None) -> dict:
        if cmd is not None:
            self.proc.stdin.write(json.dumps(cmd) + "\n")
            self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name}: the worker ended (exit {self.proc.wait()}); see {self.stderr.name}")
        return json.loads(line)

    def stop(self) -> dict:
        try:
            return self.ask({"cmd": "stop"})
        finally:
            self.proc.stdin.close()
            self.proc.wait(timeout=120)
            self.stderr.close()


def start_all(names: list[str], argv_of, log_dir: Path, cwd: Path, log) -> tuple[dict, dict, dict]:
    """Start each configuration's worker, one after another, and read its first answer (what loading cost).
    Returns (workers, their first answers, failures: name -> why it did not load)."""
    workers, loads, failures = {}, {}, {}
    for name in names:
        log(f"measure: loading {name}")
        w = Worker(name, argv_of(name), log_dir, cwd)
        try:
            loads[name] = w.ask()
            workers[name] = w
        except RuntimeError as exc:
            failures[name] = " ".join(str(exc).split())[:300]
            log(f"measure: {name} failed to load: {failures[name]}")
            w.proc.kill()
    return workers, loads, failures


def stop_all(workers: dict, loads: dict) -> dict:
    """Stop every worker; per configuration its RSS after imports, after loading, and its peak."""
    memory = {}
    for name, w in workers.items():
        end = w.stop()
        memory[name] = {"rss_after_imports_mb": loads[name]["rss_after_imports_mb"],
                        "rss_after_load_mb": loads[name]["rss_after_load_mb"], "peak_rss_mb": end["peak_rss_mb"]}
    return memory

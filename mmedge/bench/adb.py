"""Benchmark on an Android phone through the adb binary (the contract: android_demo/BENCHMARK.md).

push the bundle -> start the app's benchmark activity with intent extras -> wait for the result
file -> pull it -> the same JSON schema as the host bench, with the device model and kind
"measured-on-device". The adb binary is found on PATH or in $MMEDGE_ADB (tests use a scripted
stand-in there).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
import uuid
import warnings
from pathlib import Path

from mmedge.errors import ConfigError, MMEdgeError, MissingDependencyError

PACKAGE = "dev.mmedge.demo"
ACTIVITY = f"{PACKAGE}/.BenchmarkActivity"
# The app's own external files directory: the app reads and writes it without any permission and
# adb's shell user can push to it and pull from it. (/data/local/tmp, the usual place for pushed
# binaries, is shell_data_file to SELinux: apps may not write their results there.)
DEVICE_ROOT = f"/sdcard/Android/data/{PACKAGE}/files"
# `adb shell A B C` joins its arguments with spaces and the phone's shell parses the line again, so
# every value that reaches it is shlex-quoted, the CPU list must be a plain list of cores and the
# bundle's directory name a plain file name.
CPU_LIST = re.compile(r"^\d{1,4}(-\d{1,4})?(,\d{1,4}(-\d{1,4})?)*$")
SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")


class DeviceError(MMEdgeError, RuntimeError):
    """No device, several devices without a serial, or the on-device benchmark failed."""


def check_cpu_affinity(cpu_affinity: str | None) -> str | None:
    """None, or a CPU list such as ``4-7`` or ``0,2,4-5``; anything else is a ConfigError."""
    if cpu_affinity is None:
        return None
    if not isinstance(cpu_affinity, str) or not CPU_LIST.match(cpu_affinity) or any(
            int(a) > int(b) for a, _, b in (part.partition("-") for part in cpu_affinity.split(",")) if b):
        raise ConfigError(f"cpu affinity {cpu_affinity!r} is not a CPU list; give cores like 4-7 or 0,2,4-5",
                          "arguments")
    return cpu_affinity


def check_bundle_name(name: str) -> str:
    """A bundle directory name that is safe as a path on the phone (letters, digits, . _ -)."""
    if not SAFE_NAME.match(name):
        raise ConfigError(f"bundle directory name {name!r} has characters that are unsafe in a path on the "
                          f"phone; rename it (letters, digits, '.', '_' and '-' only, e.g. vqa-default.mmedge)",
                          "bundle name")
    return name


def _shell(*args: str) -> list[str]:
    """`adb shell` arguments, each quoted for the phone's shell (adb joins them with spaces)."""
    return ["shell", *(shlex.quote(str(a)) for a in args)]


def adb_binary() -> str:
    path = os.environ.get("MMEDGE_ADB") or shutil.which("adb")
    if not path:
        raise MissingDependencyError("adb is not installed; install Android platform-tools "
                                     "(`apt-get install adb`) or set MMEDGE_ADB to the adb binary")
    return path


def _adb(args: list[str], serial: str | None = None, timeout: float = 120) -> str:
    cmd = [adb_binary()] + (["-s", serial] if serial else []) + args
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise DeviceError(f"`{' '.join(cmd[1:])}` failed: {(done.stderr or done.stdout).strip()[:500]}")
    return done.stdout


def devices() -> list[str]:
    """Serials of attached devices in the 'device' state."""
    lines = _adb(["devices"]).splitlines()[1:]
    return [ln.split()[0] for ln in lines if ln.strip() and ln.split()[1:2] == ["device"]]


def pick_device(serial: str | None) -> str:
    found = devices()
    if serial:
        if serial not in found:
            raise DeviceError(f"device {serial} is not attached (attached: {found or 'none'})")
        return serial
    if not found:
        raise DeviceError("no Android device attached; use --device with a modelled profile instead, "
                          "e.g. --device pixel (its figures are modelled)")
    if len(found) > 1:
        raise DeviceError(f"several devices attached {found}; choose one with --serial")
    return found[0]


def intent_extras(bundle_path: str, result_path: str, backend: str, precision: str, threads: int, runs: int,
                  warmup: int, policy: str, cpu_affinity: str | None, queries_path: str | None = None) -> list[str]:
    extras = ["--es", "mmedge.bundle", bundle_path, "--es", "mmedge.result", result_path,
              "--es", "mmedge.backend", backend, "--es", "mmedge.precision", precision,
              "--ei", "mmedge.threads", str(threads), "--ei", "mmedge.runs", str(runs),
              "--ei", "mmedge.warmup", str(warmup), "--es", "mmedge.policies", policy]
    if cpu_affinity:
        extras += ["--es", "mmedge.cpu_affinity", cpu_affinity]
    if queries_path:
        extras += ["--es", "mmedge.queries", queries_path]
    return extras


def bench_device(bundle: str | Path, serial: str | None = None, backend: str = "executorch", precision: str = "fp32",
                 threads: int = 1, runs: int = 100, warmup: int = 10, policies: str = "all",
                 cooldown_s: float = 0.0, cpu_affinity: str | None = None, timeout_s: float = 600,
                 poll_s: float = 1.0, queries: str | Path | None = None) -> dict:
    """Runs the app's benchmark on the phone and returns its result. `queries`: a folder written by
    mmedge.bench.query_folder, pushed and read by the app instead of its own scene queries (removed
    from the phone afterwards)."""
    cpu_affinity = check_cpu_affinity(cpu_affinity)
    bundle = Path(bundle).resolve()
    check_bundle_name(bundle.name)
    serial = pick_device(serial)
    model = _adb(_shell("getprop", "ro.product.model"), serial).strip()
    remote_bundle = f"{DEVICE_ROOT}/bundles/{bundle.name}"
    run_id = uuid.uuid4().hex[:12]
    remote_result = f"{DEVICE_ROOT}/results/{run_id}.json"
    _adb(_shell("mkdir", "-p", f"{DEVICE_ROOT}/bundles", f"{DEVICE_ROOT}/results"), serial)
    _adb(["push", str(bundle), f"{DEVICE_ROOT}/bundles/"], serial, timeout=600)
    remote_queries = None
    if queries is not None:
        with tempfile.TemporaryDirectory() as tmp:  # pushed under the run's id: a plain, unique name
            staged = Path(tmp) / run_id
            shutil.copytree(queries, staged)
            _adb(_shell("mkdir", "-p", f"{DEVICE_ROOT}/queries"), serial)
            _adb(["push", str(staged), f"{DEVICE_ROOT}/queries/"], serial, timeout=600)
        remote_queries = f"{DEVICE_ROOT}/queries/{run_id}"
    if cooldown_s > 0:
        time.sleep(cooldown_s)
    try:
        result = _start_and_wait(serial, model, remote_result, timeout_s, poll_s,
                                 intent_extras(remote_bundle, remote_result, backend, precision, threads, runs, warmup,
                                               policies, cpu_affinity, remote_queries))
    finally:
        if remote_queries is not None:
            try:
                _adb(_shell("rm", "-r", remote_queries), serial)
            except (DeviceError, subprocess.TimeoutExpired) as exc:
                # warned, not raised: a failed clean-up must not hide the run's own result or error
                warnings.warn(f"the pushed queries are left on the phone at {remote_queries} ({exc}); remove them "
                              f"with `adb -s {serial} shell rm -r {remote_queries}`", stacklevel=2)
    result.update(kind="measured-on-device", device=model, serial=serial, cooldown_s=cooldown_s,
                  cpu_affinity=cpu_affinity)
    return result


def _start_and_wait(serial: str, model: str, remote_result: str, timeout_s: float, poll_s: float,
                    extras: list[str]) -> dict:
    """Starts the benchmark activity, polls for the `.done` file and returns the pulled result."""
    _adb(_shell("am", "start", "-W", "-n", ACTIVITY, *extras), serial)
    deadline = time.monotonic() + timeout_s
    while True:
        done = shlex.quote(f"{remote_result}.done")
        status = _adb(["shell", f"test -f {done} && echo done || echo waiting"], serial).strip()
        if status == "done":
            break
        if time.monotonic() > deadline:
            raise DeviceError(f"the benchmark on {model} did not finish within {timeout_s:.0f} s "
                              f"(no {remote_result}.done)")
        time.sleep(poll_s)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "result.json"
        _adb(["pull", remote_result, str(local)], serial)
        result = json.loads(local.read_text())
    if result.get("error"):
        raise DeviceError(f"the app reported: {result['error']}")
    return result

"""Hardening audit: how mmedge holds up against an attacker (a hostile bundle) and a careless user
(odd inputs, API misuse, threads, killed exports), measured through the public API only.

    python benchmarks/hardening_audit.py            # exports runs/demo/vqa-default.mmedge first if missing
    python benchmarks/hardening_audit.py --quick    # smaller counts: a smoke run

Writes benchmarks/results/hardening/audit.json and audit.md (repo-relative paths only) and prints
the Markdown. Sections:

1. flipped bytes: one byte flipped in each file the manifest lists (a deterministic sample of at
   most 64), in a copy of the bundle: `Engine.load` must refuse every one (BundleError); then (not
   with --quick) flips in each fp32 stage file with the hash in `files` updated, as an attacker
   would, each loaded in a child process so that a runtime crash or hang is seen;
2. tamper: every kind of manifest field (list indices and stage / file / keep-ratio / op / tool /
   config names folded) changed to a wrong type, an out-of-range value (NaN and Infinity too) or
   deleted; load + one prediction: loaded, typed error or untyped error (listed with the field and
   the exception); and the tokenizer and stage files rewritten with their hashes updated;
3. path and special-file attacks: absolute and `..` paths, symbolic links, a FIFO and /dev/zero as
   the manifest (in a child process with a timeout: a hang is counted), deep nesting, 400k missing
   files, an absurd image size: outcome, seconds and error-message length each;
4. odd inputs on each backend (onnxruntime, executorch; fp32): images x texts;
5. API misuse: the README's "Bad input" list for Engine / Policy / predict_batch;
6. concurrency: 8 threads x N predictions against the sequential results, and RSS over 3,000
   predictions;
7. kills during export: SIGKILL at a spread of delays across a small export's duration (fresh and
   --force replacing an existing bundle): leftovers, destinations, writes after the kill, recovery;
8. signing: a signed bundle loads with its key; labels permuted and the threshold lowered are
   refused with the key and accepted unsigned, with the test accuracy before and after;
9. captioning bundles (benchmarks/hardening/caption.py): sections 1-3 and 5 for a captioning bundle:
   flipped bytes, manifest tamper (every field kind, and decoder.num_heads, model.config.image_size,
   files[].bytes, schema_version 1.0, tokenizer.kind), path and special-file attacks, NaN weights
   with hashes updated, odd caption() / Engine.load arguments;
10. datasets (benchmarks/hardening/datasets.py): every --data source in its official layout with a
   hostile record or file (`..` and absolute paths, links outside, FIFOs, /dev/zero, Latin-1 and
   UTF-16 files, 100k-deep nesting, a 1 MB text) through `mmedge eval --data NAME:ROOT`;
11. signing across kinds and rollback (benchmarks/hardening/signing.py): classifier and captioning
   bundles signed with `mmedge sign`, tampered with after signing, rolled back, another key;
12. --force look-alikes and writer safety (benchmarks/hardening/writers.py): `export --force`,
   `bundle --force`, `calibrate`, `sign --new-key` on what is not theirs to replace.

    python benchmarks/hardening_audit.py --quick --sections 9-12   # only the later sections

Sections 9-12 run every case in a child process (benchmarks/hardening/probe.py): a timeout (hang), a
signal (crash), a memory limit, canary files outside the bundle or dataset root (read outside: a
Python audit hook on "open", inotify, the canary's marker in an output) and, for commands that write,
snapshots of every file before and after (data loss).

Every count's result is given in words: "refused" (BundleError), "typed error" (another
mmedge.errors.MMEdgeError), "untyped error" (anything else), "loaded" / "result", "hang", and
"crash" (a child process running the case died of a signal); sections 9-12 add "data loss" (a file
that existed before a command and that it was not asked to replace is gone or changed) and "read
outside" (a file outside the bundle or dataset root was opened).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import hashlib
import io
import json
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.hardening.common import (SCRUB, attempt, copy_bundle, describe_exc, outcome,  # noqa: E402
                                        progress, rel, tally, words, write_manifest_raw)
from benchmarks.hardening.common import leaves as _leaves, mutations as _mutations  # noqa: E402
from benchmarks.hardening.common import set_path as _set, shape as _shape, table as _table  # noqa: E402
from benchmarks.hardening import caption as caption_section  # noqa: E402
from benchmarks.hardening import datasets as datasets_section  # noqa: E402
from benchmarks.hardening import signing as signing_section  # noqa: E402
from benchmarks.hardening import writers as writers_section  # noqa: E402
from mmedge.bundle.manifest import load_manifest  # noqa: E402
from mmedge.data.batches import generate  # noqa: E402
from mmedge.export.exporter import export_bundle  # noqa: E402
from mmedge.export.recipe import ExportRecipe  # noqa: E402
from mmedge.runtime.engine import Engine  # noqa: E402

SECTIONS = ("flipped_bytes", "tamper", "path_attacks", "odd_inputs", "api_misuse", "concurrency", "export_kills",
            "signing", "caption_bundles", "datasets", "signing_kinds", "writers")
TITLES = {"flipped_bytes": "1. Flipped bytes", "tamper": "2. Manifest tamper suite",
          "path_attacks": "3. Path and special-file attacks", "odd_inputs": "4. Odd inputs",
          "api_misuse": "5. API misuse", "concurrency": "6. Concurrency and memory",
          "export_kills": "7. Kills during export", "signing": "8. Signing",
          "caption_bundles": caption_section.TITLE, "datasets": datasets_section.TITLE,
          "signing_kinds": signing_section.TITLE, "writers": writers_section.TITLE}
# sections 9-12 live in benchmarks/hardening/: each module has the section's function, its summary rows,
# defects, totals and Markdown
LATER = {"caption_bundles": caption_section, "datasets": datasets_section, "signing_kinds": signing_section,
         "writers": writers_section}
QUESTION = "is there a red circle ?"
BACKENDS = ("onnxruntime", "executorch")
SPECIAL_TIMEOUT_S = 30.0  # a child process loading a FIFO / device manifest longer than this "hangs"
RSS_LEAK_MB = 25.0        # RSS growth over the 3,000 predictions above this is listed as a possible leak
KILL_RECIPE = {"description": "hardening audit: small fast export (ONNX only, keep 1.0, in-process ORT conversion)",
               "targets": ["onnx"], "keep_ratios": [1.0], "parity_samples": 2, "in_graph": False,
               "ort_format": True}


# ---------------------------------------------------------------------------------------------- helpers


def rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass  # no /proc here (not Linux): the figure is reported as unknown
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux (peak, not current)
    return peak / 1024


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def git_commit() -> str:
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10)
        commit = done.stdout.strip() if done.returncode == 0 else ""
        if commit:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                   capture_output=True, text=True, timeout=10).stdout.strip()
            return commit + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass  # not a git checkout, or no git: the commit is reported as unknown
    return "unknown"


CHILD = r"""
import json, sys, time
import numpy as np
from mmedge.errors import BundleError, MMEdgeError
from mmedge.runtime.engine import Engine
bundle, backend, fmt, predict = sys.argv[1], sys.argv[2], sys.argv[3] or None, sys.argv[4] == "1"
t0 = time.perf_counter()
word, msg, kind = "loaded", "", None
try:
    engine = Engine.load(bundle, backend=backend, precision="fp32", fmt=fmt)
    if predict:
        answer = engine.predict(np.zeros((engine.image_size,) * 2 + (3,), np.uint8), "is there a red circle ?").answer
        if answer not in engine.labels:
            raise AssertionError(f"answer {answer!r} is not one of the bundle's labels")
except BundleError as exc:
    word, msg, kind = "refused", str(exc), type(exc).__name__
except MMEdgeError as exc:
    word, msg, kind = "typed error", str(exc), type(exc).__name__
except Exception as exc:
    word, msg, kind = "untyped error", str(exc), type(exc).__name__
print(json.dumps({"outcome": word, "seconds": time.perf_counter() - t0, "message": msg, "type": kind}))
"""


def child_load(bundle: Path, backend: str = "auto", fmt: str | None = None, predict: bool = False,
               timeout: float | None = None) -> tuple[str, float, str, str | None]:
    """Engine.load (+ one predict) in a child process, so that a hang or a crash of a runtime is seen and
    counted: (outcome, seconds, message, error type). A child killed by a signal is a "crash"."""
    timeout = timeout or (SPECIAL_TIMEOUT_S if backend != "executorch" else 4 * SPECIAL_TIMEOUT_S)
    t0 = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-c", CHILD, str(bundle), backend, fmt or "", "1" if predict else "0"],
                              cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "hang", time.perf_counter() - t0, f"no answer in {timeout:.0f} s (killed)", None
    if done.returncode < 0:
        sig = signal.Signals(-done.returncode).name
        last = [ln for ln in done.stderr.splitlines() if ln.strip() and "cpuinfo" not in ln][-2:]
        return "crash", time.perf_counter() - t0, f"the process died of {sig}: {' / '.join(last)[-300:]}", sig
    try:
        report = json.loads(done.stdout.strip().splitlines()[-1])
        return report["outcome"], report["seconds"], report["message"], report["type"]
    except (IndexError, ValueError, KeyError):
        return ("crash", time.perf_counter() - t0,
                f"the process exited {done.returncode} without a result: {done.stderr[-300:]}", f"exit {done.returncode}")


# ---------------------------------------------------------------------------------------------- 1. flipped bytes
def flipped_bytes(ctx) -> dict:
    manifest = load_manifest(ctx.bundle)
    names = sorted(manifest["files"])
    limit = ctx.flip_files
    if len(names) > limit:  # deterministic sample: evenly spaced over the sorted names
        names = [names[round(i * (len(names) - 1) / (limit - 1))] for i in range(limit)] if limit > 1 else names[:1]
    copy = copy_bundle(ctx.bundle, ctx.work / "flip.mmedge")
    rows = []
    for name in progress(names, "1 flipped bytes", ctx.quiet):
        path = copy / name
        size = path.stat().st_size
        if size == 0:
            rows.append({"file": name, "offset": None, "outcome": "skipped (empty file)"})
            continue
        offset = int(hashlib.sha256(name.encode()).hexdigest()[:12], 16) % size
        with open(path, "r+b") as f:
            f.seek(offset)
            byte = f.read(1)[0]
            f.seek(offset)
            f.write(bytes([byte ^ 0xFF]))
        _, exc, seconds = attempt(lambda: Engine.load(copy))
        with open(path, "r+b") as f:
            f.seek(offset)
            f.write(bytes([byte]))
        rows.append({"file": name, "offset": offset, "outcome": outcome(exc), "seconds": round(seconds, 3),
                     "error": describe_exc(exc, 160)})
    _, exc, _ = attempt(lambda: Engine.load(copy))  # the restored copy loads again: the flips were the cause
    counts = tally(r["outcome"] for r in rows)
    tested = sum(1 for r in rows if r["offset"] is not None)
    rehashed = rehashed_flips(ctx, manifest, copy) if not ctx.quick else {"result": "not run (--quick)", "cases": [],
                                                                         "counts": {}}
    return {"rehashed": rehashed, "files_listed": len(manifest["files"]), "files_tested": tested,
            "sample": "every listed file" if len(names) == len(manifest["files"]) else
            f"{len(names)} evenly spaced of the sorted names",
            "offset_rule": "sha256(name) % size, byte XOR 0xFF", "counts": counts,
            "restored_copy_loads": exc is None,
            "result": "refused" if counts.get("refused", 0) == tested else words(counts),
            "not_refused": [r for r in rows if r["offset"] is not None and r["outcome"] != "refused"],
            "cases": rows}


def rehashed_flips(ctx, manifest: dict, copy: Path) -> dict:
    """The same flips in stage files, but with the size and SHA-256 in `files` updated as an attacker would: the
    backend's own parser then meets the damaged file (each load + predict in a child process)."""
    targets = []
    for fmt, backend in (("onnx", "onnxruntime"), ("ort", "onnxruntime"), ("pte", "executorch")):
        artifact = next((a for a in manifest["artifacts"] if a["format"] == fmt and a["precision"] == "fp32"), None)
        if artifact is not None:
            targets.append((fmt, backend, artifact.get("file") or next(iter(artifact["stages"].values()))["file"]))
    manifest_text = (copy / "manifest.json").read_text()
    cases = [(fmt, backend, target, j) for fmt, backend, target in targets for j in range(ctx.rehashed_flips)]
    rows = []
    for fmt, backend, target, j in progress(cases, "1 flipped bytes, hash updated", ctx.quiet):
        path = copy / target
        old = path.read_bytes()
        offset = int(hashlib.sha256(f"{target}:{j}".encode()).hexdigest()[:12], 16) % len(old)
        new = bytearray(old)
        new[offset] ^= 0xFF
        path.write_bytes(bytes(new))
        m = json.loads(manifest_text)
        m["files"][target] = {"sha256": hashlib.sha256(new).hexdigest(), "bytes": len(new)}
        write_manifest_raw(copy, m)
        try:
            word, seconds, message, kind = child_load(copy, backend, fmt, predict=True)
        finally:
            path.write_bytes(old)
            write_manifest_raw(copy, manifest_text)
        rows.append({"file": target, "backend": backend, "offset": offset, "outcome": word, "error": kind,
                     "seconds": round(seconds, 2), "message": SCRUB(message or "")[:200]})
    counts = tally(r["outcome"] for r in rows)
    bad = {k: v for k, v in counts.items() if k in ("untyped error", "crash", "hang")}
    return {"cases": rows, "counts": counts, "per_file": ctx.rehashed_flips,
            "result": "loaded, refused or typed error" if not bad else words(bad)}


# ---------------------------------------------------------------------------------------------- 2. tamper

def _runtime_for(manifest, path) -> tuple[str, str, str | None]:
    if path[0] == "artifacts":
        a = manifest["artifacts"][path[1]]
        if a["runtime"] in ("onnxruntime", "executorch", "torch"):
            return a["runtime"], a["precision"], a["format"]
    return "onnxruntime", "fp32", None


def tamper(ctx) -> dict:
    original = json.loads((ctx.bundle / "manifest.json").read_text())
    kinds, seen = [], set()
    for path in _leaves(original):
        if path and _shape(path) not in seen:
            seen.add(_shape(path))
            kinds.append(path)
    total_kinds = len(kinds)
    if ctx.tamper_kinds and len(kinds) > ctx.tamper_kinds:
        n = ctx.tamper_kinds
        kinds = [kinds[round(i * (len(kinds) - 1) / (n - 1))] for i in range(n)]
    bundle = copy_bundle(ctx.bundle, ctx.work / "tamper.mmedge")
    size = original["preprocessing"]["image_size"]
    image = np.zeros((size, size, 3), np.uint8)
    rows, untyped = [], []
    by_mutation: dict[str, dict[str, int]] = {}
    for path in progress(kinds, "2 tamper", ctx.quiet):
        value = original
        for key in path:
            value = value[key]
        for kind, mutation in _mutations(value) + [("delete", "<delete>")]:
            manifest = json.loads(json.dumps(original))
            _set(manifest, path, mutation, delete=kind == "delete")
            write_manifest_raw(bundle, manifest)
            backend, precision, fmt = _runtime_for(original, path)

            def load_and_predict():
                engine = Engine.load(bundle, backend=backend, precision=precision, fmt=fmt)
                answer = engine.predict(image, QUESTION).answer
                if answer not in engine.labels:
                    raise AssertionError(f"answer {answer!r} is not one of the bundle's labels")
                return answer

            _, exc, _ = attempt(load_and_predict)
            word = "typed error" if outcome(exc) == "refused" else outcome(exc)
            field = "/".join(map(str, _shape(path)))
            rows.append({"field": field, "mutation": kind, "value": repr(mutation)[:40], "outcome": word})
            by_mutation.setdefault(kind, {})
            by_mutation[kind][word] = by_mutation[kind].get(word, 0) + 1
            if word == "untyped error":
                untyped.append({"field": "/".join(map(str, path)), "mutation": kind, "value": repr(mutation)[:60],
                                "exception": describe_exc(exc, 300)})
    counts = tally(r["outcome"] for r in rows)
    for key in ("loaded", "typed error", "untyped error"):
        counts.setdefault(key, 0)
    loaded: dict[str, list[str]] = {}
    for r in rows:
        if r["outcome"] == "loaded" and r["mutation"] not in loaded.setdefault(r["field"], []):
            loaded[r["field"]].append(r["mutation"])
    loaded = {k: v for k, v in loaded.items() if v}
    files = tamper_files(ctx)
    return {"field_kinds": len(kinds), "field_kinds_in_manifest": total_kinds, "mutations": len(rows),
            "files": files,
            "counts": counts, "by_mutation": by_mutation,
            "result": "typed error or loaded" if not untyped + files["untyped"] else "untyped error",
            "untyped": untyped, "loaded_fields": loaded}


def file_tamper_cases(manifest: dict) -> list[tuple[str, str, str | None, str, object]]:
    """(case, backend, fmt, listed file, new bytes from the old ones): a listed file rewritten by an attacker who
    also updates its size and SHA-256 in `files`, so that only parsing and the load-time checks stand in the way."""
    tok = manifest["tokenizer"]["file"]

    def tokenizer(change):
        def make(old: bytes) -> bytes:
            data = json.loads(old)
            change(data)
            return json.dumps(data).encode()
        return make

    def vocab(change):
        return tokenizer(lambda d: change(d["model"]["vocab"]))

    first_word = lambda v: next(k for k in v if not k.startswith("["))  # noqa: E731
    cases = [
        ("tokenizer: model is a list", tokenizer(lambda d: d.__setitem__("model", [1, 2]))),
        ("tokenizer: model is a string", tokenizer(lambda d: d.__setitem__("model", "WordLevel"))),
        ("tokenizer: model.type deleted", tokenizer(lambda d: d["model"].pop("type"))),
        ("tokenizer: truncation is a list", tokenizer(lambda d: d.__setitem__("truncation", []))),
        ("tokenizer: truncation.max_length Infinity",
         tokenizer(lambda d: d["truncation"].__setitem__("max_length", float("inf")))),
        ("tokenizer: truncation.max_length NaN",
         tokenizer(lambda d: d["truncation"].__setitem__("max_length", float("nan")))),
        ("tokenizer: truncation.max_length 10**9",
         tokenizer(lambda d: d["truncation"].__setitem__("max_length", 10 ** 9))),
        ("tokenizer: truncation.max_length 2**64",
         tokenizer(lambda d: d["truncation"].__setitem__("max_length", 2 ** 64))),
        ("tokenizer: vocab is a string", tokenizer(lambda d: d["model"].__setitem__("vocab", "abc"))),
        ("tokenizer: vocab is a list of pairs",
         tokenizer(lambda d: d["model"].__setitem__("vocab", list(d["model"]["vocab"].items())))),
        ("tokenizer: vocab ids are floats", vocab(lambda v: v.update({k: float(i) for k, i in v.items()}))),
        ("tokenizer: a word's id negative", vocab(lambda v: v.__setitem__(first_word(v), -5))),
        ("tokenizer: a word's id 10**12", vocab(lambda v: v.__setitem__(first_word(v), 10 ** 12))),
        ("tokenizer: a word's id 2**64", vocab(lambda v: v.__setitem__(first_word(v), 2 ** 64))),
        ("tokenizer: a word's id Infinity", vocab(lambda v: v.__setitem__(first_word(v), float("inf")))),
        ("tokenizer: two words share an id", vocab(lambda v: v.__setitem__(first_word(v), 1))),
        ("tokenizer: [PAD] and [UNK] removed", vocab(lambda v: (v.pop("[PAD]"), v.pop("[UNK]")))),
        ("tokenizer: 200,000 extra words", vocab(lambda v: v.update({f"w{i}": 0 for i in range(200_000)}))),
        ("tokenizer: not UTF-8", lambda old: b"\xff\xfe\x00garbage"),
        ("tokenizer: a JSON list", lambda old: b"[1, 2, 3]"),
        ("tokenizer: nested 100,000 levels", lambda old: b"[" * 100_000 + b"]" * 100_000),
        ("tokenizer: empty file", lambda old: b""),
    ]
    out = [(name, "onnxruntime", None, tok, make) for name, make in cases]
    garbage = lambda old: np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes()  # noqa: E731
    for fmt, backend in (("onnx", "onnxruntime"), ("ort", "onnxruntime"), ("pte", "executorch")):
        artifact = next((a for a in manifest["artifacts"] if a["format"] == fmt and a["precision"] == "fp32"), None)
        if artifact is None:
            continue
        names = list(artifact["stages"])
        target = artifact.get("file") or artifact["stages"][names[0]]["file"]
        other = None if fmt == "pte" else artifact["stages"][names[1]]["file"] if len(names) > 1 else None
        out += [(f"{fmt} file {target.rsplit('/', 1)[-1]}: random bytes", backend, fmt, target, garbage),
                (f"{fmt} file {target.rsplit('/', 1)[-1]}: empty", backend, fmt, target, lambda old: b""),
                (f"{fmt} file {target.rsplit('/', 1)[-1]}: first half", backend, fmt, target,
                 lambda old: old[: len(old) // 2])]
        if other:
            out.append((f"{fmt} file {target.rsplit('/', 1)[-1]}: another stage's bytes", backend, fmt, target,
                        lambda old, other=other: ("OTHER", other)))
    return out


# --quick samples cases that a correct runtime refuses (the full run has every case)
QUICK_FILE_CASES = ("tokenizer: truncation.max_length NaN", "tokenizer: a word's id negative", "tokenizer: not UTF-8",
                    "tokenizer: nested 100,000 levels", "tokenizer: model is a list",
                    "tokenizer: truncation.max_length Infinity", "onnx random bytes", "pte random bytes")


def tamper_files(ctx) -> dict:
    manifest_text = (ctx.bundle / "manifest.json").read_text()
    manifest = json.loads(manifest_text)
    size = manifest["preprocessing"]["image_size"]
    image = np.zeros((size, size, 3), np.uint8)
    rows, untyped = [], []
    cases = file_tamper_cases(manifest)
    if ctx.quick:
        cases = [c for c in cases if c[0] in QUICK_FILE_CASES
                 or f"{c[0].split(' ', 1)[0]} {c[0].rsplit(': ', 1)[-1]}" in QUICK_FILE_CASES]
    for name, backend, fmt, target, make in progress(cases, "2 tamper files", ctx.quiet):
        bundle = copy_bundle(ctx.bundle, ctx.work / "tamper-files.mmedge")
        data = make((bundle / target).read_bytes())
        if isinstance(data, tuple):  # another listed file's bytes
            data = (bundle / data[1]).read_bytes()
        (bundle / target).unlink()
        (bundle / target).write_bytes(data)
        m = json.loads(manifest_text)
        m["files"][target] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        write_manifest_raw(bundle, m)

        def load_and_predict():
            engine = Engine.load(bundle, backend=backend, precision="fp32", fmt=fmt)
            answer = engine.predict(image, QUESTION).answer
            if answer not in engine.labels:
                raise AssertionError(f"answer {answer!r} is not one of the bundle's labels")
            return answer

        if target == manifest["tokenizer"]["file"]:  # pure Python parsing: in this process
            _, exc, seconds = attempt(load_and_predict)
            word, kind, message = outcome(exc), type(exc).__name__ if exc else None, describe_exc(exc, 300)
            where = "in process"
        else:  # a backend's native parser: in a child process, so that a crash or a hang is seen
            word, seconds, message, kind = child_load(bundle, backend, fmt, predict=True)
            message = SCRUB(f"{kind}: {message}") if kind else ""
            where = "child process"
        rows.append({"case": name, "backend": backend, "where": where, "outcome": word, "error": kind,
                     "seconds": round(seconds, 3), "message": (message or "")[:200]})
        if word in ("untyped error", "crash", "hang"):
            untyped.append({"field": f"file {target}", "mutation": name, "value": "(hash updated)", "outcome": word,
                            "exception": (message or "")[:300]})
    shutil.rmtree(ctx.work / "tamper-files.mmedge", ignore_errors=True)
    counts = tally(r["outcome"] for r in rows)
    for key in ("loaded", "refused", "typed error", "untyped error"):
        counts.setdefault(key, 0)
    bad = tally(u["outcome"] for u in untyped)
    return {"cases": rows, "counts": counts, "untyped": untyped,
            "result": "refused, typed error or loaded" if not untyped else words(bad)}


# ---------------------------------------------------------------------------------------------- 3. path attacks
def _first_stage(manifest: dict, fmt: str = "onnx") -> dict:
    artifact = next(a for a in manifest["artifacts"] if a["format"] == fmt and a["precision"] == "fp32")
    return artifact["stages"][next(iter(artifact["stages"]))]


def _edit(bundle: Path, change) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    change(manifest)
    write_manifest_raw(bundle, manifest)


def path_attack_cases(ctx) -> list[tuple[str, str, object]]:
    """(name, 'in process' | 'child process', prepare(bundle) -> None)."""
    outside = ctx.work / "outside"
    outside.mkdir(exist_ok=True)

    def stage_path(m):
        return _first_stage(m)["file"]

    def link_tokenizer(b):
        shutil.copy(b / "tokenizer.json", outside / "tokenizer.json")
        (b / "tokenizer.json").unlink()
        (b / "tokenizer.json").symlink_to(outside / "tokenizer.json")

    def link_stage(b):
        stage = b / stage_path(json.loads((b / "manifest.json").read_text()))
        shutil.copy(stage, outside / "stage.onnx")
        stage.unlink()
        stage.symlink_to(outside / "stage.onnx")

    def link_onnx_folder(b):
        target = outside / "onnx"
        if target.exists():
            shutil.rmtree(target)
        shutil.move(b / "onnx", target)
        (b / "onnx").symlink_to(target)

    def link_manifest(b):
        shutil.copy(b / "manifest.json", outside / "manifest.json")
        (b / "manifest.json").unlink()
        (b / "manifest.json").symlink_to(outside / "manifest.json")

    def replace_manifest(kind):
        def prepare(b):
            (b / "manifest.json").unlink()
            if kind == "fifo":
                os.mkfifo(b / "manifest.json")
            elif kind == "dev_zero":
                (b / "manifest.json").symlink_to("/dev/zero")
            else:
                (b / "manifest.json").mkdir()
        return prepare

    def fifo_member(which):
        def prepare(b):
            m = json.loads((b / "manifest.json").read_text())
            rel_path = m["tokenizer"]["file"] if which == "tokenizer" else stage_path(m)
            (b / rel_path).unlink()
            os.mkfifo(b / rel_path)
        return prepare

    def nested(levels, kind="array"):
        def prepare(b):
            text = (b / "manifest.json").read_text().rstrip()
            opener, closer = ("[", "]") if kind == "array" else ('{"a":', "}")
            write_manifest_raw(b, text[:-1] + ', "deep": ' + opener * levels + closer * levels + "}")
        return prepare

    def missing_files(n):
        def prepare(b):
            m = json.loads((b / "manifest.json").read_text())
            m["files"].update({f"x/{i}": {"sha256": "0" * 64, "bytes": 1} for i in range(n)})
            write_manifest_raw(b, json.dumps(m, separators=(",", ":")))
        return prepare

    def set_stage(value):
        return lambda b: _edit(b, lambda m: _first_stage(m).__setitem__("file", value))

    return [
        ("stage file absolute (/etc/passwd)", "in process", set_stage("/etc/passwd")),
        ("stage file '../x.onnx'", "in process", set_stage("../x.onnx")),
        ("stage file 'onnx/../../x.onnx'", "in process", set_stage("onnx/../../x.onnx")),
        ("tokenizer file absolute", "in process", lambda b: _edit(b, lambda m: m["tokenizer"].__setitem__(
            "file", "/etc/hostname"))),
        ("files lists '../outside.bin'", "in process", lambda b: _edit(b, lambda m: m["files"].__setitem__(
            "../outside.bin", {"sha256": "0" * 64, "bytes": 1}))),
        ("tokenizer.json a symbolic link (same bytes)", "in process", link_tokenizer),
        ("stage file a symbolic link (same bytes)", "in process", link_stage),
        ("onnx/ folder a symbolic link", "in process", link_onnx_folder),
        ("manifest.json a symbolic link", "in process", link_manifest),
        ("manifest.json a FIFO", "child process", replace_manifest("fifo")),
        ("manifest.json a link to /dev/zero", "child process", replace_manifest("dev_zero")),
        ("manifest.json a directory", "child process", replace_manifest("directory")),
        ("tokenizer.json a FIFO", "child process", fifo_member("tokenizer")),
        ("stage file a FIFO", "child process", fifo_member("stage")),
        ("nesting 1,000 levels (arrays)", "in process", nested(1000)),
        ("nesting 100,000 levels (arrays)", "in process", nested(100_000)),
        ("nesting 100,000 levels (objects)", "in process", nested(100_000, "object")),
        ("files: 400,000 missing entries", "in process", missing_files(400_000)),
    ] + ([] if ctx.quick else [
        ("files: 60,000 missing entries (under the schema's 65,536)", "in process", missing_files(60_000)),
    ]) + [
        ("preprocessing.image_size = 10**6", "in process", lambda b: _edit(
            b, lambda m: m["preprocessing"].__setitem__("image_size", 10 ** 6))),
    ]


def path_attacks(ctx) -> dict:
    pristine = ctx.bundle
    rows = []
    for name, where, prepare in progress(path_attack_cases(ctx), "3 path attacks", ctx.quiet):
        bundle = copy_bundle(pristine, ctx.work / "attack.mmedge")
        prepare(bundle)
        manifest_mb = None
        if (bundle / "manifest.json").is_file() and not (bundle / "manifest.json").is_symlink():
            manifest_mb = round((bundle / "manifest.json").stat().st_size / 1e6, 2)
        if where == "child process":
            word, seconds, message, kind = child_load(bundle)
        else:
            _, exc, seconds = attempt(lambda: Engine.load(bundle))
            word, message, kind = outcome(exc), "" if exc is None else str(exc), type(exc).__name__ if exc else None
        message = SCRUB(message)  # the length is counted with the temporary folder written as <work>
        rows.append({"attack": name, "where": where, "outcome": word, "error": kind, "seconds": round(seconds, 3),
                     "message_chars": len(message), "message": message[:160].replace("\n", " "),
                     "manifest_mb": manifest_mb})
    shutil.rmtree(ctx.work / "attack.mmedge", ignore_errors=True)
    counts = tally(r["outcome"] for r in rows)
    return {"cases": rows, "counts": counts,
            "result": "refused" if counts.get("refused", 0) == len(rows) else words(counts)}


# ---------------------------------------------------------------------------------------------- 4. odd inputs
def _encoded(fmt: str, size: int = 128) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


def image_cases(ctx, scene: np.ndarray) -> list[tuple[str, object]]:
    """(name, factory): each factory makes a fresh input (lazily opened files need one per call)."""
    from PIL import Image

    work = ctx.work / "images"
    work.mkdir(exist_ok=True)
    s = scene.shape[0]
    gray = scene.mean(axis=2).astype(np.uint8)
    base = Image.fromarray(scene)
    cases: list[tuple[str, object]] = [
        ("numpy uint8 (H,W,3)", lambda: scene.copy()),
        ("numpy uint8 (H,W)", lambda: gray.copy()),
        ("numpy uint8 (H,W,1)", lambda: gray[:, :, None].copy()),
        ("numpy uint8 (H,W,4)", lambda: np.dstack([scene, np.full((s, s), 200, np.uint8)])),
        ("numpy uint16 (H,W,3)", lambda: scene.astype(np.uint16) * 257),
        ("numpy float32 0..1", lambda: scene.astype(np.float32) / 255),
        ("numpy float64 0..255", lambda: scene.astype(np.float64)),
        ("numpy float NaN", lambda: np.full((s, s, 3), np.nan, np.float32)),
        ("numpy float inf", lambda: np.full((s, s, 3), np.inf, np.float32)),
        ("numpy int64", lambda: scene.astype(np.int64)),
        ("numpy bool", lambda: scene > 128),
        ("numpy (H,W,2)", lambda: scene[:, :, :2].copy()),
        ("numpy (3,H,W) channels first", lambda: scene.transpose(2, 0, 1).copy()),
        ("numpy (1,H,W,3) batched", lambda: scene[None].copy()),
        ("numpy 1-D", lambda: scene.reshape(-1).copy()),
        ("numpy empty (0,0,3)", lambda: np.zeros((0, 0, 3), np.uint8)),
        ("numpy 0-d", lambda: np.array(3, np.uint8)),
    ]
    for mode in ("RGB", "RGBA", "LA", "P", "CMYK", "L", "I;16", "I", "F", "1", "YCbCr", "HSV", "LAB", "PA",
                 "RGBa", "La", "I;16B"):
        try:
            if mode == "I;16":
                img = Image.fromarray(gray.astype(np.uint16) * 257)
            elif mode == "RGBA":
                img = base.copy()
                img.putalpha(Image.fromarray(np.tile(np.linspace(0, 255, s).astype(np.uint8), (s, 1))))
            else:
                img = base.convert(mode)
            img.load()
        except (ValueError, OSError, KeyError) as exc:
            ctx.skipped_inputs.append(f"Pillow mode {mode}: cannot be made here ({type(exc).__name__})")
            continue
        cases.append((f"Pillow {mode}", lambda img=img: img.copy()))
    try:
        pal = base.convert("P")
        pal.info["transparency"] = 0
        cases.append(("Pillow P with transparency", lambda: (lambda p: (p.info.__setitem__("transparency", 0), p)[1])(
            pal.copy())))
    except (ValueError, OSError):
        pass  # this Pillow cannot make the case: it is left out
    cases.append(("Pillow F with NaN", lambda: Image.fromarray(np.full((s, s), np.nan, np.float32))))
    for fmt in ("PNG", "JPEG"):
        data = _encoded(fmt)
        path = work / f"truncated.{fmt.lower()}"
        path.write_bytes(data[: len(data) * 2 // 3])
        cases.append((f"truncated {fmt}, lazily opened", lambda path=path: Image.open(path)))
        cases.append((f"truncated {fmt}, as a path", lambda path=path: str(path)))
    good = work / "good.png"
    base.save(good)

    def closed_lazy():
        img = Image.open(good)
        img.close()
        return img

    def closed_loaded():
        img = base.copy()
        img.close()
        return img

    junk = work / "junk.png"
    junk.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    empty = work / "empty.png"
    empty.write_bytes(b"")
    cases += [
        ("PNG path (str)", lambda: str(good)),
        ("PNG path (Path)", lambda: Path(good)),
        ("closed Pillow image (lazy)", closed_lazy),
        ("closed Pillow image (loaded)", closed_loaded),
        ("tiny 4x4", lambda: np.zeros((4, 4, 3), np.uint8)),
        ("smallest 8x8", lambda: np.zeros((8, 8, 3), np.uint8)),
        ("huge aspect 8x4000", lambda: np.zeros((8, 4000, 3), np.uint8)),
        ("huge aspect 16384x8 (at the limit)", lambda: np.zeros((16384, 8, 3), np.uint8)),
        ("over the limit 8x16385", lambda: np.zeros((8, 16385, 3), np.uint8)),
        ("missing path", lambda: str(work / "no-such-file.png")),
        ("junk file", lambda: str(junk)),
        ("empty file", lambda: str(empty)),
        ("a directory path", lambda: str(work)),
        ("None", lambda: None),
        ("nested list", lambda: scene.tolist()),
        ("bytes of a PNG", lambda: good.read_bytes()),
    ]
    return cases


TEXTS: list[tuple[str, object]] = [
    ("normal", QUESTION),
    ("empty", ""),
    ("whitespace", " \t\n "),
    ("200 words", " ".join(["red"] * 200)),
    ("unicode", "¿hay un círculo rojo? 🔴 红色 ﷽ \u202e"),
    ("None", None),
    ("bytes", QUESTION.encode()),
    ("int", 7),
]
QUICK_IMAGES = ("numpy uint8 (H,W,3)", "numpy float64 0..255", "numpy float NaN", "Pillow CMYK", "Pillow I;16",
                "truncated PNG, lazily opened", "closed Pillow image (loaded)", "junk file", "tiny 4x4")
QUICK_TEXTS = ("normal", "empty", "None", "bytes")


MEMORY_CHILD = r"""
import json, resource, sys, time
import numpy as np
from mmedge.runtime.engine import Engine


def peak_kb():  # VmHWM belongs to this process image (ru_maxrss keeps the parent's peak across fork + exec)
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass  # no /proc here (not Linux): the figure is reported as unknown
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


engine = Engine.load(sys.argv[1], backend="onnxruntime")
h, w = int(sys.argv[2]), int(sys.argv[3])
image = np.zeros((h, w, 3), np.uint8)
before = peak_kb()
t0 = time.perf_counter()
try:
    engine.predict(image, "is there a red circle ?")
    word = "result"
except Exception as exc:
    word = type(exc).__name__
print(json.dumps({"outcome": word, "seconds": time.perf_counter() - t0, "peak_rise_mb": (peak_kb() - before) / 1024}))
"""
MEMORY_SHAPES = [(96, 96), (8, 4000), (16384, 8), (4000, 4000)]


def memory_per_input(ctx) -> list[dict]:
    """Peak RSS rise and time of one prediction per input size, each in a fresh child process (onnxruntime)."""
    rows = []
    for h, w in progress(MEMORY_SHAPES, "4 memory per input", ctx.quiet):
        try:
            done = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(ctx.bundle), str(h), str(w)], cwd=ROOT,
                                  capture_output=True, text=True, timeout=300)
            r = json.loads(done.stdout.strip().splitlines()[-1])
        except (subprocess.TimeoutExpired, IndexError, ValueError) as exc:
            r = {"outcome": f"probe failed ({type(exc).__name__})", "seconds": None, "peak_rise_mb": None}
        rows.append({"image": f"uint8 {h}x{w}x3", "input_mb": round(h * w * 3 / 1e6, 2), "outcome": r["outcome"],
                     "seconds": None if r["seconds"] is None else round(r["seconds"], 3),
                     "peak_rss_rise_mb": None if r["peak_rise_mb"] is None else round(r["peak_rise_mb"], 1)})
    return rows


MISLEADING = "truncated or the image was closed"


def odd_inputs(ctx) -> dict:
    from PIL import Image

    size = ctx.image_size
    scene = generate(ctx.task, 0, "test", [0], size)[0].image
    images = image_cases(ctx, scene)
    texts = TEXTS
    if ctx.quick:
        images = [c for c in images if c[0] in QUICK_IMAGES]
        texts = [t for t in TEXTS if t[0] in QUICK_TEXTS]
    out = {"images": len(images), "texts": len(texts), "skipped": list(ctx.skipped_inputs), "by_backend": {}}
    for backend in BACKENDS:
        _, exc, _ = attempt(lambda: Engine.load(ctx.bundle, backend=backend, precision="fp32"))
        if exc is not None:
            out["by_backend"][backend] = {"result": f"not run: {describe_exc(exc)}", "counts": {}}
            continue
        engine = Engine.load(ctx.bundle, backend=backend, precision="fp32")
        rows, untyped, warned = [], [], 0
        cells = [(i, t) for i in images for t in texts]
        for (iname, factory), (tname, text) in progress(cells, f"4 odd inputs {backend}", ctx.quiet):
            image = factory()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")

                def run():
                    answer = engine.predict(image, text).answer
                    if answer not in engine.labels:
                        raise AssertionError(f"answer {answer!r} is not one of the labels")
                    return answer

                _, exc, seconds = attempt(run)
            if isinstance(image, Image.Image):
                with contextlib.suppress(Exception):
                    image.close()
            warned += bool(caught)
            word = outcome(exc, "result")
            word = "typed error" if word == "refused" else word
            rows.append({"image": iname, "text": tname, "outcome": word, "seconds": round(seconds, 4),
                         "error": type(exc).__name__ if exc else None,
                         "message": describe_exc(exc, 240), "warnings": len(caught)})
            if word == "untyped error":
                untyped.append({"image": iname, "text": tname, "exception": describe_exc(exc, 300)})
        counts = tally(r["outcome"] for r in rows)
        for key in ("result", "typed error", "untyped error"):
            counts.setdefault(key, 0)
        per_image = {}
        for iname, _ in images:
            cell = [r for r in rows if r["image"] == iname]
            normal = next((r for r in cell if r["text"] == "normal"), cell[0])
            per_image[iname] = {"normal text": f"{normal['outcome']}" + (f" ({normal['error']})" if normal["error"]
                                                                           else ""),
                                "message": normal["message"], "counts": tally(r["outcome"] for r in cell),
                                "max_seconds": max(r["seconds"] for r in cell)}
        reference = images[0][0]
        per_text = {}
        for tname, _ in texts:
            r = next(r for r in rows if r["image"] == reference and r["text"] == tname)
            per_text[tname] = r["outcome"] + (f" ({r['error']})" if r["error"] else "") + \
                (f", {r['warnings']} warning(s)" if r["warnings"] else "")
        for iname, info in per_image.items():
            if info["message"] and MISLEADING in info["message"] and not any(
                    w in iname for w in ("truncated", "closed")):
                ctx.observations.append(f"{backend}: image '{iname}' is refused with ImageError, but the message says "
                                        f"the image is truncated or closed: {info['message'][:160]}")
            if info["max_seconds"] > 1.0:
                ctx.observations.append(f"{backend}: image '{iname}' takes up to {info['max_seconds']:.1f} s per "
                                        "prediction")
        out["by_backend"][backend] = {"cells": len(rows), "counts": counts, "warned_cells": warned,
                                      "result": "result or typed error" if not untyped else "untyped error",
                                      "untyped": untyped, "per_image": per_image,
                                      f"per_text (image: {reference})": per_text}
        engine = None
        gc.collect()
    bad = [b for b, v in out["by_backend"].items() if v["result"] != "result or typed error"]
    out["result"] = "result or typed error" if not bad else "; ".join(f"{b}: {out['by_backend'][b]['result']}"
                                                                       for b in bad)
    if not ctx.quick:
        out["memory_per_input"] = memory_per_input(ctx)
        for r in out["memory_per_input"]:
            if r["peak_rss_rise_mb"] and r["peak_rss_rise_mb"] > 200:
                ctx.observations.append(f"a {r['image']} image ({r['input_mb']} MB) raises peak RSS by "
                                        f"{r['peak_rss_rise_mb']:.0f} MB and takes {r['seconds']:.1f} s in one "
                                        "prediction (padded to a square before resizing)")
    return out


# ---------------------------------------------------------------------------------------------- 5. API misuse
def api_misuse(ctx) -> dict:
    from mmedge.runtime.controller import Policy

    bundle = ctx.bundle
    size = ctx.image_size
    image = np.zeros((size, size, 3), np.uint8)
    engine = Engine.load(bundle)
    nan, inf = float("nan"), float("inf")
    missing = ctx.work / "no-such.mmedge"
    bad_key = ctx.work / "no-such-key.pub.pem"
    cases = [
        # (call, expected: "typed error" | "result")
        ("Engine.load(None)", lambda: Engine.load(None), "typed error"),
        ("Engine.load(123)", lambda: Engine.load(123), "typed error"),
        ("Engine.load(missing path)", lambda: Engine.load(missing), "typed error"),
        ("Engine.load(a file, not a folder)", lambda: Engine.load(bundle / "manifest.json"), "typed error"),
        ("Engine.load(threads=0)", lambda: Engine.load(bundle, threads=0), "typed error"),
        ("Engine.load(threads=-1)", lambda: Engine.load(bundle, threads=-1), "typed error"),
        ("Engine.load(threads=1.5)", lambda: Engine.load(bundle, threads=1.5), "typed error"),
        ("Engine.load(threads=True)", lambda: Engine.load(bundle, threads=True), "typed error"),
        ("Engine.load(threads='2')", lambda: Engine.load(bundle, threads="2"), "typed error"),
        ("Engine.load(backend='cuda')", lambda: Engine.load(bundle, backend="cuda"), "typed error"),
        ("Engine.load(backend=None)", lambda: Engine.load(bundle, backend=None), "typed error"),
        ("Engine.load(backend=['onnxruntime'])", lambda: Engine.load(bundle, backend=["onnxruntime"]),
         "typed error"),
        ("Engine.load(precision='fp16')", lambda: Engine.load(bundle, precision="fp16"), "typed error"),
        ("Engine.load(precision=None)", lambda: Engine.load(bundle, precision=None), "typed error"),
        ("Engine.load(precision=['fp32'])", lambda: Engine.load(bundle, precision=["fp32"]), "typed error"),
        ("Engine.load(fmt='zip')", lambda: Engine.load(bundle, fmt="zip"), "typed error"),
        ("Engine.load(keep_ratio=0.3) not exported", lambda: Engine.load(bundle, keep_ratio=0.3), "typed error"),
        ("Engine.load(keep_ratio='0.5')", lambda: Engine.load(bundle, keep_ratio="0.5"), "typed error"),
        ("Engine.load(keep_ratio=[0.5])", lambda: Engine.load(bundle, keep_ratio=[0.5]), "typed error"),
        ("Engine.load(policy=3)", lambda: Engine.load(bundle, policy=3), "typed error"),
        ("Engine.load(policy='sometimes')", lambda: Engine.load(bundle, policy="sometimes"), "typed error"),
        ("Engine.load(policy='full')", lambda: Engine.load(bundle, policy="full"), "result"),
        ("Engine.load(verify_key=missing file)", lambda: Engine.load(bundle, verify_key=bad_key), "typed error"),
        ("Engine.load(verify_key=b'garbage')", lambda: Engine.load(bundle, verify_key=b"garbage"), "typed error"),
        ("Engine.load(verify_key=42)", lambda: Engine.load(bundle, verify_key=42), "typed error"),
        ("predict(keep_ratio=[0.25])", lambda: engine.predict(image, QUESTION, keep_ratio=[0.25]), "typed error"),
        ("predict(keep_ratio='0.5')", lambda: engine.predict(image, QUESTION, keep_ratio="0.5"), "typed error"),
        ("predict(keep_ratio=0.3) not exported", lambda: engine.predict(image, QUESTION, keep_ratio=0.3),
         "typed error"),
        ("predict(keep_ratio=nan)", lambda: engine.predict(image, QUESTION, keep_ratio=nan), "typed error"),
        ("predict(keep_ratio=True)", lambda: engine.predict(image, QUESTION, keep_ratio=True), "typed error"),
        ("predict(policy=3)", lambda: engine.predict(image, QUESTION, policy=3), "typed error"),
        ("predict(policy='sometimes')", lambda: engine.predict(image, QUESTION, policy="sometimes"), "typed error"),
        ("predict(policy={'kind': 'full'})", lambda: engine.predict(image, QUESTION, policy={"kind": "full"}),
         "typed error"),
        ("predict(policy='full')", lambda: engine.predict(image, QUESTION, policy="full"), "result"),
        ("predict(policy=Policy('latency_budget', budget_ms=5))",
         lambda: engine.predict(image, QUESTION, policy=Policy("latency_budget", budget_ms=5)), "result"),
        ("Policy('sometimes')", lambda: Policy("sometimes"), "typed error"),
        ("Policy(kind=None)", lambda: Policy(None), "typed error"),
        ("Policy(patience='2')", lambda: Policy("patience", patience="2"), "typed error"),
        ("Policy(patience=2.0)", lambda: Policy("patience", patience=2.0), "typed error"),
        ("Policy(patience=True)", lambda: Policy("patience", patience=True), "typed error"),
        ("Policy(patience=0)", lambda: Policy("patience", patience=0), "typed error"),
        ("Policy(threshold='0.9')", lambda: Policy(threshold="0.9"), "typed error"),
        ("Policy(threshold=True)", lambda: Policy(threshold=True), "typed error"),
        ("Policy(threshold=nan)", lambda: Policy(threshold=nan), "typed error"),
        ("Policy(threshold=inf)", lambda: Policy(threshold=inf), "typed error"),
        ("Policy(threshold=1.5)", lambda: Policy(threshold=1.5), "typed error"),
        ("Policy(threshold=-0.1)", lambda: Policy(threshold=-0.1), "typed error"),
        ("Policy('latency_budget', budget_ms=nan)", lambda: Policy("latency_budget", budget_ms=nan), "typed error"),
        ("Policy('latency_budget', budget_ms=inf)", lambda: Policy("latency_budget", budget_ms=inf), "typed error"),
        ("Policy('latency_budget', budget_ms=0)", lambda: Policy("latency_budget", budget_ms=0), "typed error"),
        ("Policy('latency_budget', budget_ms='5')", lambda: Policy("latency_budget", budget_ms="5"), "typed error"),
        ("predict_batch(None)", lambda: engine.predict_batch(None), "typed error"),
        ("predict_batch(5)", lambda: engine.predict_batch(5), "typed error"),
        ("predict_batch('not pairs')", lambda: engine.predict_batch("not pairs"), "typed error"),
        ("predict_batch(b'bytes')", lambda: engine.predict_batch(b"bytes"), "typed error"),
        ("predict_batch([(image,)])", lambda: engine.predict_batch([(image,)]), "typed error"),
        ("predict_batch([image])", lambda: engine.predict_batch([image]), "typed error"),
        ("predict_batch([(image, text, 1)])", lambda: engine.predict_batch([(image, QUESTION, 1)]), "typed error"),
        ("predict_batch({image: text}) (a dict)", lambda: engine.predict_batch({"a": QUESTION}), "typed error"),
        ("predict_batch([(image, None)])", lambda: engine.predict_batch([(image, None)]), "typed error"),
        ("predict_batch([(None, text)])", lambda: engine.predict_batch([(None, QUESTION)]), "typed error"),
        ("predict_batch([])", lambda: engine.predict_batch([]), "result"),
        ("predict_batch(generator of pairs)", lambda: engine.predict_batch((image, QUESTION) for _ in range(2)),
         "result"),
        ("predict_batch([(image, text)] * 2, policy='full')",
         lambda: engine.predict_batch([(image, QUESTION)] * 2, policy="full"), "result"),
    ]
    rows = []
    for name, call, expected in progress(cases, "5 API misuse", ctx.quiet):
        _, exc, _ = attempt(call)
        word = outcome(exc, "result")
        word = "typed error" if word == "refused" else word
        rows.append({"call": name, "expected": expected, "outcome": word,
                     "error": describe_exc(exc, 160)})
    counts = tally(r["outcome"] for r in rows)
    for key in ("result", "typed error", "untyped error"):
        counts.setdefault(key, 0)
    unexpected = [r for r in rows if r["outcome"] != r["expected"]]
    return {"calls": len(rows), "counts": counts, "unexpected": unexpected,
            "result": "as documented" if not unexpected else words(counts), "cases": rows}


# ---------------------------------------------------------------------------------------------- 6. concurrency
def _key(p) -> tuple:
    return (p.answer, p.exit_index, tuple(p.kept_visual_tokens), float(p.confidence))


def concurrency(ctx) -> dict:
    samples = generate(ctx.task, 0, "test", range(ctx.predicts), ctx.image_size)
    items = [(s.image, s.text) for s in samples]
    out = {"threads": ctx.threads, "predicts_per_thread": len(items), "by_backend": {}}
    for backend in BACKENDS:
        _, exc, _ = attempt(lambda: Engine.load(ctx.bundle, backend=backend, precision="fp32"))
        if exc is not None:
            out["by_backend"][backend] = {"result": f"not run: {describe_exc(exc)}"}
            continue
        engine = Engine.load(ctx.bundle, backend=backend, precision="fp32")
        sequential = [_key(engine.predict(i, t)) for i, t in progress(items, f"6 sequential {backend}", ctx.quiet)]
        results: dict[int, list] = {}
        errors: list[str] = []
        barrier = threading.Barrier(ctx.threads)
        bar = progress(range(ctx.threads * len(items)), f"6 {ctx.threads} threads {backend}", ctx.quiet)
        bar_lock = threading.Lock()

        def worker(tid: int) -> None:
            shift = tid * len(items) // ctx.threads  # each thread its own order
            order = list(range(shift, len(items))) + list(range(shift))
            got = [None] * len(items)
            try:
                barrier.wait(timeout=60)
                for n, idx in enumerate(order):
                    got[idx] = _key(engine.predict(*items[idx]))
                    if n % 10 == 9:
                        with bar_lock:
                            bar.update(10)
            except Exception as exc:  # noqa: BLE001
                errors.append(f"thread {tid}: {describe_exc(exc, 200)}")
            results[tid] = got

        t0 = time.perf_counter()
        workers = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(ctx.threads)]
        for w in workers:
            w.start()
        deadline = time.monotonic() + ctx.thread_timeout
        for w in workers:
            w.join(max(0.0, deadline - time.monotonic()))
        hung = sum(w.is_alive() for w in workers)
        bar.close()
        seconds = time.perf_counter() - t0
        mismatches = answer_mismatches = 0
        for tid in range(ctx.threads):
            for got, want in zip(results.get(tid, [None] * len(items)), sequential):
                if got is None:
                    continue
                mismatches += got != want
                answer_mismatches += got[:3] != want[:3]
        # memory: RSS before / after many predictions (after a warm-up, garbage collected)
        for i in range(min(50, len(items))):
            engine.predict(*items[i])
        gc.collect()
        before = rss_mb()
        for n in progress(range(ctx.rss_predicts), f"6 RSS {backend}", ctx.quiet):
            engine.predict(*items[n % len(items)])
        gc.collect()
        after = rss_mb()
        out["by_backend"][backend] = {
            "predictions_compared": ctx.threads * len(items), "mismatches": mismatches,
            "answer_exit_or_tokens_mismatches": answer_mismatches, "thread_errors": errors, "hung_threads": hung,
            "threaded_seconds": round(seconds, 2),
            "result": "equal to sequential" if not (mismatches or errors or hung) else
            f"{mismatches} mismatches, {len(errors)} errors, {hung} hung",
            "rss_predicts": ctx.rss_predicts, "rss_before_mb": round(before, 1), "rss_after_mb": round(after, 1),
            "rss_growth_mb": round(after - before, 1)}
        engine = None
        gc.collect()
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    bad = [b for b, v in out["by_backend"].items() if v["result"] != "equal to sequential"]
    out["result"] = "equal to sequential" if not bad else "; ".join(f"{b}: {out['by_backend'][b]['result']}"
                                                                     for b in bad)
    out["comparison"] = "answer, exit index, kept tokens and confidence (bit-exact float)"
    return out


# ---------------------------------------------------------------------------------------------- 7. export kills
def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    snap = {}
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            with contextlib.suppress(OSError):
                st = os.lstat(p)
                snap[p.relative_to(folder).as_posix()] = (st.st_size, st.st_mtime_ns)
    return snap


def _hidden(parent: Path, name: str, kind: str) -> list[Path]:
    return sorted(parent.glob(f".{name}.{kind}-*"))


def _pid_in(path: Path, kind: str) -> int | None:
    try:
        return int(path.name.split(f".{kind}-", 1)[1].split("-", 1)[0])
    except (IndexError, ValueError):
        return None


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Exporter:
    def __init__(self, ctx, parent: Path) -> None:
        self.ctx, self.parent = ctx, parent
        self.recipe = ctx.work / "kill-recipe.json"
        self.recipe.write_text(json.dumps(KILL_RECIPE))
        self.logs = ctx.work / "export-logs"
        self.logs.mkdir(exist_ok=True)
        self.n = 0

    def start(self, out: Path, force: bool) -> tuple[subprocess.Popen, Path]:
        cmd = [sys.executable, "-m", "mmedge", "export", "--model", str(self.ctx.model), "--recipe",
               str(self.recipe), "--out", str(out)] + (["--force"] if force else [])
        self.n += 1
        log = self.logs / f"export-{self.n}.log"
        with open(log, "wb") as f:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        return proc, log

    def run(self, out: Path, force: bool) -> dict:
        t0 = time.perf_counter()
        proc, log = self.start(out, force)
        try:
            rc = proc.wait(timeout=900)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = "timeout"
        seconds = time.perf_counter() - t0
        tail = SCRUB(log.read_text(errors="replace")[-600:]) if rc != 0 else ""
        return {"rc": rc, "seconds": round(seconds, 1), "log_tail": tail}

    def kill_after(self, out: Path, force: bool, delay: float) -> dict:
        t0 = time.perf_counter()
        proc, _ = self.start(out, force)
        try:
            rc = proc.wait(timeout=delay)
            killed = False
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            rc = proc.wait()
            killed = True
        at = time.perf_counter() - t0
        first = _snapshot(self.parent)
        time.sleep(2.0)
        second = _snapshot(self.parent)
        survivors = _group_alive(proc.pid)
        if survivors:  # children of the export we started: end them so the audit can go on
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        changed = sorted(k for k in set(first) | set(second) if first.get(k) != second.get(k))
        return {"pid": proc.pid, "killed": killed, "rc": rc, "killed_at_s": round(at, 2),
                "writes_2s_after": bool(changed), "changed_paths": len(changed),
                "surviving_processes": survivors}


def _loads(bundle: Path) -> tuple[bool, str | None]:
    _, exc, _ = attempt(lambda: Engine.load(bundle))
    return exc is None, describe_exc(exc, 200)


def _sha(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def export_kills(ctx) -> dict:
    parent = ctx.work / "kills"
    parent.mkdir()
    ex = Exporter(ctx, parent)
    fresh, existing = parent / "fresh.mmedge", parent / "existing.mmedge"
    out: dict = {"recipe": {k: v for k, v in KILL_RECIPE.items() if k != "description"},
                 "command": "python -m mmedge export --model MODEL --recipe RECIPE --out OUT [--force]",
                 "kills": ctx.kills}
    bar = progress(range(2 * ctx.kills + 3 + (0 if ctx.quick else 1)), "7 export kills", ctx.quiet)
    # the timing export also makes the bundle that the --force kills replace
    timing = ex.run(existing, force=False)
    bar.update()
    out["timing_export"] = timing
    ok, err = _loads(existing) if timing["rc"] == 0 else (False, None)
    if timing["rc"] != 0 or not ok:
        out["result"] = "not run: the timing export failed"
        out["error"] = err or timing["log_tail"]
        bar.close()
        return out
    duration = timing["seconds"]
    # latest delay first: the earliest kills come last and stop an export before its own clean-up of older
    # leftovers, so the final export below has leftovers to remove
    delays = [round(duration * (i + 0.5) / ctx.kills, 2) for i in reversed(range(ctx.kills))]
    out["order"] = "delays spread over the timing export's duration, latest first"

    # A: fresh exports killed at a spread of delays
    rounds = []
    for delay in delays:
        r = ex.kill_after(fresh, force=False, delay=delay)
        r["delay_s"] = delay
        r["delay_fraction"] = round(delay / duration, 3)
        partials = _hidden(parent, fresh.name, "partial")
        mine = [p for p in partials if _pid_in(p, "partial") == r["pid"]]
        r["partial_left_by_this_export"] = bool(mine)
        r["files_in_partial"] = sum(1 for p in mine for f in p.rglob("*") if f.is_file())
        r["partials_present"] = len(partials)
        if os.path.lexists(fresh):
            loadable, err = _loads(fresh)
            r["destination"] = "loadable" if loadable else "not loadable"
            r["destination_error"] = err
            shutil.rmtree(fresh, ignore_errors=True)  # the next round exports to a fresh place again
        else:
            r["destination"] = "missing (nothing published)"
        rounds.append(r)
        bar.update()
    before = len(_hidden(parent, fresh.name, "partial"))
    final = ex.run(fresh, force=True)
    bar.update()
    loadable, err = _loads(fresh) if final["rc"] == 0 else (False, final["log_tail"])
    left = _hidden(parent, fresh.name, "partial") + _hidden(parent, fresh.name, "old")
    out["fresh"] = {
        "rounds": rounds, "killed": sum(r["killed"] for r in rounds),
        "finished_before_kill": sum(not r["killed"] for r in rounds),
        "partials_left_by_kills": sum(r["partial_left_by_this_export"] for r in rounds),
        "destinations_missing": sum(r["destination"].startswith("missing") for r in rounds),
        "destinations_not_loadable": sum(r["destination"] == "not loadable" for r in rounds),
        "writes_2s_after_kill": sum(r["writes_2s_after"] for r in rounds),
        "surviving_processes": sum(r["surviving_processes"] for r in rounds),
        "leftovers_before_final_export": before,
        "final_export": {**final, "loads": loadable, "error": err, "leftovers_after": len(left)}}

    # B: --force replacing an existing bundle, killed at a spread of the replacing export's duration
    duration_b = final["seconds"] if final["rc"] == 0 else duration
    delays_b = [round(duration_b * (i + 0.5) / ctx.kills, 2) for i in reversed(range(ctx.kills))]
    rounds = []
    for delay in delays_b:
        old_sha = _sha(existing / "manifest.json")
        r = ex.kill_after(existing, force=True, delay=delay)
        r["delay_s"] = delay
        r["delay_fraction"] = round(delay / duration_b, 3)
        r["destination_before_load"] = "present" if os.path.lexists(existing) else "missing"
        r["old_hidden_before_load"] = len(_hidden(parent, existing.name, "old"))
        mine = [p for p in _hidden(parent, existing.name, "partial") if _pid_in(p, "partial") == r["pid"]]
        r["partial_left_by_this_export"] = bool(mine)
        r["files_in_partial"] = sum(1 for p in mine for f in p.rglob("*") if f.is_file())
        loadable, err = _loads(existing)  # Engine.load runs recovery first
        new_sha = _sha(existing / "manifest.json")
        r["loads_after_recovery"] = loadable
        r["error"] = err
        r["bundle_after"] = "old" if new_sha == old_sha else ("new" if new_sha else "none")
        r["old_hidden_after_load"] = len(_hidden(parent, existing.name, "old"))
        rounds.append(r)
        bar.update()
    out["replace"] = {
        "rounds": rounds, "killed": sum(r["killed"] for r in rounds),
        "finished_before_kill": sum(not r["killed"] for r in rounds),
        "not_loadable_after_recovery": sum(not r["loads_after_recovery"] for r in rounds),
        "old_bundle_kept": sum(r["bundle_after"] == "old" for r in rounds),
        "replaced_by_new": sum(r["bundle_after"] == "new" for r in rounds),
        "destination_missing_before_load": sum(r["destination_before_load"] == "missing" for r in rounds),
        "old_hidden_left_after_load": sum(r["old_hidden_after_load"] for r in rounds),
        "partials_left_by_kills": sum(r["partial_left_by_this_export"] for r in rounds),
        "writes_2s_after_kill": sum(r["writes_2s_after"] for r in rounds),
        "surviving_processes": sum(r["surviving_processes"] for r in rounds)}
    if not ctx.quick:  # the next --force export removes the killed replacements' leftovers
        before = len(_hidden(parent, existing.name, "partial")) + len(_hidden(parent, existing.name, "old"))
        final = ex.run(existing, force=True)
        bar.update()
        loadable, err = _loads(existing) if final["rc"] == 0 else (False, final["log_tail"])
        left = _hidden(parent, existing.name, "partial") + _hidden(parent, existing.name, "old")
        out["replace"]["leftovers_before_final_export"] = before
        out["replace"]["final_export"] = {**final, "loads": loadable, "error": err, "leftovers_after": len(left)}
    bar.close()
    f, r = out["fresh"], out["replace"]
    problems = (f["destinations_not_loadable"] + f["writes_2s_after_kill"] + f["surviving_processes"]
                + (not f["final_export"]["loads"]) + f["final_export"]["leftovers_after"]
                + r["not_loadable_after_recovery"] + r["old_hidden_left_after_load"] + r["writes_2s_after_kill"]
                + r["surviving_processes"]
                + (0 if "final_export" not in r else (not r["final_export"]["loads"])
                   + r["final_export"]["leftovers_after"]))
    out["result"] = "recovered" if not problems else f"{problems} problem(s)"
    return out


# ---------------------------------------------------------------------------------------------- 8. signing
def signing_check(ctx) -> dict:
    from mmedge.cli import main as cli

    bundle = copy_bundle(ctx.bundle, ctx.work / "signed.mmedge")
    keys = ctx.work / "keys"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        made = cli(["sign", "--new-key", str(keys)])
        signed = cli(["sign", "--artifact", str(bundle), "--key", str(keys / "mmedge-signing.pem")])
    public = keys / "mmedge-signing.pub.pem"
    out: dict = {"samples": ctx.accuracy_samples, "data": f"generate(task, 0, 'test', range({ctx.accuracy_samples}), "
                                                        f"image_size)", "truth": "the sample's own answer string"}
    if made or signed:
        out["result"] = "not run: mmedge sign failed"
        return out
    samples = generate(ctx.task, 0, "test", range(ctx.accuracy_samples), ctx.image_size)

    def accuracy(engine) -> float:
        # Sample.label indexes the task's label list (mmedge/data/tasks.py LABELS); the manifest's labels are
        # that list as exported, so the truth is the sample's answer string, whatever the manifest now says.
        hits = sum(engine.predict(s.image, s.text).answer == s.answer
                   for s in progress(samples, "8 accuracy", ctx.quiet))
        return round(hits / len(samples), 4)

    engine, exc, _ = attempt(lambda: Engine.load(bundle, verify_key=public))
    out["signed_loads_with_key"] = outcome(exc)
    out["accuracy_signed"] = accuracy(engine) if engine is not None else None
    if engine is not None:
        out["labels_match_task_labels"] = all(engine.labels[s.label] == s.answer for s in samples)
    manifest = json.loads((bundle / "manifest.json").read_text())
    labels = manifest["labels"]
    manifest["labels"] = labels[1:] + labels[:1]  # a derangement: every label moves
    manifest["thresholds"]["confidence"] = 0.0
    write_manifest_raw(bundle, json.dumps(manifest, indent=1))
    _, exc, _ = attempt(lambda: Engine.load(bundle, verify_key=public))
    out["tampered_with_key"] = outcome(exc)
    out["tampered_with_key_error"] = describe_exc(exc, 200)
    engine, exc, _ = attempt(lambda: Engine.load(bundle))
    out["tampered_unsigned_mode"] = outcome(exc)
    out["accuracy_tampered_unsigned"] = accuracy(engine) if engine is not None else None
    out["tamper"] = "labels rotated by one, thresholds.confidence 0.0"
    ok = (out["signed_loads_with_key"] == "loaded" and out["tampered_with_key"] == "refused"
          and out["tampered_unsigned_mode"] == "loaded")
    out["result"] = ("signed loads; tampered refused with the key, loaded without" if ok else
                     f"signed: {out['signed_loads_with_key']}, tampered with key: {out['tampered_with_key']}, "
                     f"unsigned: {out['tampered_unsigned_mode']}")
    return out


# ---------------------------------------------------------------------------------------------- report
def defects(sections: dict) -> list[str]:
    found = []
    s = sections.get("flipped_bytes", {})
    for r in s.get("not_refused", []):
        found.append(f"flipped byte in {r['file']} at {r['offset']}: {r['outcome']} ({r.get('error')})")
    for r in s.get("rehashed", {}).get("cases", []):
        if r["outcome"] in ("untyped error", "crash", "hang"):
            found.append(f"{r['file']} with one byte flipped at {r['offset']} and its hash updated, loaded with "
                         f"{r['backend']}: {r['outcome']} ({r['message'][:200]})")
    for u in sections.get("tamper", {}).get("untyped", []) + sections.get("tamper", {}).get("files", {}).get(
            "untyped", []):
        found.append(f"tamper {u['field']} ({u['mutation']} {u['value']}): {u.get('outcome', 'untyped error')} "
                     f"{u['exception']}")
    for r in sections.get("path_attacks", {}).get("cases", []):
        if r["outcome"] != "refused":
            found.append(f"path attack '{r['attack']}': {r['outcome']} ({r['message'][:120]})")
    for backend, b in sections.get("odd_inputs", {}).get("by_backend", {}).items():
        for u in b.get("untyped", []):
            found.append(f"{backend} input image '{u['image']}' x text '{u['text']}': untyped {u['exception']}")
    for r in sections.get("api_misuse", {}).get("unexpected", []):
        found.append(f"API misuse {r['call']}: {r['outcome']}, expected {r['expected']} ({r['error']})")
    for backend, b in sections.get("concurrency", {}).get("by_backend", {}).items():
        if "mismatches" not in b:
            continue
        if b["mismatches"] or b["thread_errors"] or b["hung_threads"]:
            found.append(f"{backend} threads: {b['result']}; {'; '.join(b['thread_errors'][:3])}")
        if b["rss_growth_mb"] > RSS_LEAK_MB:
            found.append(f"{backend}: RSS grew {b['rss_growth_mb']} MB over {b['rss_predicts']} predictions "
                         "(possible leak)")
    k = sections.get("export_kills", {})
    if k.get("result", "").startswith("not run"):
        found.append(f"export kills: {k['result']} ({str(k.get('error'))[:200]})")
    f, r = k.get("fresh", {}), k.get("replace", {})
    if f:
        for key, what in (("destinations_not_loadable", "destination(s) present but not loadable after a kill"),
                          ("writes_2s_after_kill", "kill(s) after which the parent folder still changed 2 s later"),
                          ("surviving_processes", "kill(s) that left a child process running")):
            if f[key]:
                found.append(f"fresh export: {f[key]} {what}")
        fe = f["final_export"]
        if not fe["loads"] or fe["leftovers_after"]:
            found.append(f"fresh export: the next --force export left {fe['leftovers_after']} leftover(s), "
                         f"loads: {fe['loads']} ({fe.get('error')})")
    if r:
        for key, what in (("not_loadable_after_recovery", "killed replacement(s) after which Engine.load failed"),
                          ("old_hidden_left_after_load", "hidden old bundle(s) left after Engine.load"),
                          ("writes_2s_after_kill", "kill(s) after which the parent folder still changed 2 s later"),
                          ("surviving_processes", "kill(s) that left a child process running")):
            if r[key]:
                found.append(f"--force replacement: {r[key]} {what}")
        fe = r.get("final_export")
        if fe and (not fe["loads"] or fe["leftovers_after"]):
            found.append(f"--force replacement: the next export left {fe['leftovers_after']} leftover(s), "
                         f"loads: {fe['loads']}")
    g = sections.get("signing", {})
    if g and not g.get("result", "").startswith("signed loads"):
        found.append(f"signing: {g.get('result')}")
    for name, module in LATER.items():
        s = sections.get(name)
        if s and s.get("result", "").startswith("audit section failed"):
            found.append(f"{TITLES[name]}: {s['result']}")
        elif s:
            found += module.defects(s)
    return found


def totals(sections: dict) -> dict:
    untyped = (len(sections.get("tamper", {}).get("untyped", []))
               + sum(u["outcome"] == "untyped error" for u in sections.get("tamper", {}).get("files", {}).get(
                   "untyped", []))
               + sum(len(b.get("untyped", [])) for b in sections.get("odd_inputs", {}).get("by_backend", {}).values())
               + sections.get("api_misuse", {}).get("counts", {}).get("untyped error", 0)
               + sum(r["outcome"] == "untyped error" for r in sections.get("path_attacks", {}).get("cases", []))
               + sections.get("flipped_bytes", {}).get("counts", {}).get("untyped error", 0))
    child_rows = (sections.get("path_attacks", {}).get("cases", [])
                  + sections.get("flipped_bytes", {}).get("rehashed", {}).get("cases", [])
                  + sections.get("tamper", {}).get("files", {}).get("cases", []))
    untyped += sum(r["outcome"] == "untyped error" for r in sections.get("flipped_bytes", {}).get(
        "rehashed", {}).get("cases", []))
    hangs = (sum(r["outcome"] == "hang" for r in child_rows)
             + sum(b.get("hung_threads", 0) for b in sections.get("concurrency", {}).get("by_backend", {}).values()))
    crashes = sum(r["outcome"] == "crash" for r in child_rows)
    out = {"untyped": untyped, "hang": hangs, "crash": crashes, "data_loss": 0, "read_outside": 0}
    for name, module in LATER.items():
        if "cases" in sections.get(name, {}):
            for key, value in module.totals(sections[name]).items():
                out[key] += value
    return out



def render(report: dict) -> str:
    s = report["sections"]
    lines = [f"# mmedge hardening audit{' (--quick)' if report['quick'] else ''}", "",
             f"`{report['command']}` on {report['date']}, mmedge {report['mmedge_commit']}, "
             f"{report['machine']['cpu_count']} CPUs ({report['machine']['platform']}, Python "
             f"{report['machine']['python']}); bundle `{report['bundle']}`, kill tests on `{report['model']}`; "
             f"{report['seconds']:.0f} s.", "",
             "Words: *refused* = `BundleError`; *typed error* = another `mmedge.errors.MMEdgeError`; "
             "*untyped error* = any other exception; *loaded* / *result* = it worked; *hang* = no answer within "
             f"{SPECIAL_TIMEOUT_S:.0f} s (executorch: {4 * SPECIAL_TIMEOUT_S:.0f} s); *crash* = the child process "
             "running the case died of a signal; *data loss* = a file, folder or link that existed before a command and "
             "that the command was not asked to replace is gone or changed after it; *read outside* = a canary file "
             "placed outside the bundle or dataset root was opened (Python audit hook, inotify) or its marker "
             "reached a result, an error or the output. Sections 9-12 run each case in a child process; for a "
             "dataset *refused* also covers `DatasetError`, and for a command an argument refused by its parser.", ""]
    rows = []
    fb = s.get("flipped_bytes")
    if fb:
        rows.append(["1", "flipped bytes", f"{fb['files_tested']} of {fb['files_listed']} listed files",
                     fb["result"], words(fb["counts"])])
        rh = fb.get("rehashed", {})
        rows.append(["1", "flipped bytes in stage files, hash updated (child process)",
                     f"{len(rh.get('cases', []))} flips", rh.get("result", "-"), words(rh.get("counts", {}))])
    t = s.get("tamper")
    if t:
        rows.append(["2", "manifest tamper (wrong type, out of range, delete)",
                     f"{t['field_kinds']} field kinds, {t['mutations']} mutations",
                     "typed error or loaded" if not t["untyped"] else "untyped error", words(t["counts"])])
        if "files" in t:
            tf = t["files"]
            rows.append(["2", "listed file rewritten, hash updated (tokenizer, stage files)",
                         f"{len(tf['cases'])} cases", tf["result"], words(tf["counts"])])
    p = s.get("path_attacks")
    if p:
        rows.append(["3", "path and special-file attacks", f"{len(p['cases'])} attacks", p["result"],
                     words(p["counts"])])
    o = s.get("odd_inputs")
    if o:
        for backend, b in o["by_backend"].items():
            rows.append(["4", f"odd inputs, {backend} fp32", f"{o['images']} images x {o['texts']} texts",
                         b["result"], words(b["counts"])])
    a = s.get("api_misuse")
    if a:
        rows.append(["5", "API misuse (README Bad input)", f"{a['calls']} calls", a["result"], words(a["counts"])])
    c = s.get("concurrency")
    if c:
        for backend, b in c["by_backend"].items():
            if "mismatches" in b:
                rows.append(["6", f"{c['threads']} threads x {c['predicts_per_thread']} predicts, {backend}",
                             f"{b['predictions_compared']} predictions", b["result"],
                             f"mismatches {b['mismatches']}; RSS {b['rss_before_mb']} -> {b['rss_after_mb']} MB "
                             f"over {b['rss_predicts']} predicts ({b['rss_growth_mb']:+} MB)"])
            else:
                rows.append(["6", f"threads, {backend}", "-", b["result"], "-"])
    k = s.get("export_kills")
    if k:
        if "fresh" in k:
            f, r = k["fresh"], k["replace"]
            rows.append(["7", "SIGKILL during a fresh export", f"{k['kills']} kills ({f['killed']} killed)",
                         k["result"],
                         f"partials left {f['partials_left_by_kills']}, destinations missing "
                         f"{f['destinations_missing']} / not loadable {f['destinations_not_loadable']}, writes after "
                         f"2 s {f['writes_2s_after_kill']}; next --force export: leftovers "
                         f"{f['leftovers_before_final_export']} -> {f['final_export']['leftovers_after']}, loads "
                         f"{f['final_export']['loads']}"])
            rows.append(["7", "SIGKILL during --force replacement", f"{k['kills']} kills ({r['killed']} killed)",
                         "old bundle loads" if not r["not_loadable_after_recovery"] else "not loadable",
                         f"loads after recovery {k['kills'] - r['not_loadable_after_recovery']}/{k['kills']} (old "
                         f"{r['old_bundle_kept']}, new {r['replaced_by_new']}), hidden old left "
                         f"{r['old_hidden_left_after_load']}, partials left {r['partials_left_by_kills']}, "
                         f"writes after 2 s {r['writes_2s_after_kill']}"
                         + (f"; next --force export: leftovers {r['leftovers_before_final_export']} -> "
                            f"{r['final_export']['leftovers_after']}, loads {r['final_export']['loads']}"
                            if "final_export" in r else "")])
        else:
            rows.append(["7", "kills during export", "-", k["result"], "-"])
    g = s.get("signing")
    if g:
        rows.append(["8", "signing (labels rotated, confidence threshold 0)", f"{g['samples']} test samples",
                     g["result"], f"accuracy {g.get('accuracy_signed')} signed -> "
                                  f"{g.get('accuracy_tampered_unsigned')} tampered, unsigned mode"])
    for name, module in LATER.items():
        if name in s:
            rows += module.summary_rows(s[name]) or [[TITLES[name].split(".")[0], TITLES[name].split(". ", 1)[1],
                                                      "-", s[name].get("result", "-"), "-"]]
    lines += ["## Summary", ""] + _table(["#", "check", "cases", "result", "counts"], rows) + [""]
    tot = report["totals"]
    lines += [f"**Untyped errors: {tot['untyped']}; hangs: {tot['hang']}; crashes (a child process killed by a "
              f"signal): {tot['crash']}; data loss: {tot.get('data_loss', 0)}; reads outside: "
              f"{tot.get('read_outside', 0)}.**", ""]
    lines += ["## Defects found", ""]
    lines += [f"- {d}" for d in report["defects"]] or ["None."]
    lines.append("")
    if report.get("observations"):
        lines += ["## Observations (not defects: typed, bounded, documented behaviour worth knowing)", ""]
        lines += [f"- {o}" for o in report["observations"]] + [""]

    if fb:
        lines += [f"## {TITLES['flipped_bytes']}", "",
                  f"{fb['sample']}; offset = {fb['offset_rule']}; the restored copy loads again: "
                  f"{fb['restored_copy_loads']}.", ""]
        lines += _table(["file", "offset", "outcome", "s"], [[r["file"], r["offset"], r["outcome"],
                                                               r.get("seconds", "-")] for r in fb["cases"]]) + [""]
        rh = fb.get("rehashed", {})
        if rh.get("cases"):
            lines += [f"The same kind of flip in each fp32 stage file ({rh['per_file']} offsets each), but with its size "
                      "and SHA-256 in `files` updated, as an attacker who controls the whole unsigned bundle would: "
                      "the backend's own parser meets the damaged file. Load + one predict in a child process; "
                      "*crash* = the child died of a signal.", ""]
            lines += _table(["file", "backend", "offset", "outcome", "s", "error"],
                            [[r["file"], r["backend"], r["offset"], r["outcome"], r["seconds"], r["message"][:110]]
                             for r in rh["cases"]]) + [""]
    if t:
        lines += [f"## {TITLES['tamper']}", "",
                  f"{t['field_kinds']} of the manifest's {t['field_kinds_in_manifest']} field kinds; each mutation "
                  "then `Engine.load` (that artifact's backend) and one `predict`.", ""]
        lines += _table(["mutation", "loaded", "typed error", "untyped error"],
                        [[m, v.get("loaded", 0), v.get("typed error", 0), v.get("untyped error", 0)]
                         for m, v in t["by_mutation"].items()]) + [""]
        if t["untyped"]:
            lines += ["Untyped errors:", ""]
            lines += _table(["field", "mutation", "value", "exception"],
                            [[u["field"], u["mutation"], u["value"], u["exception"]] for u in t["untyped"]]) + [""]
        if "files" in t:
            lines += ["A listed file rewritten by someone who also updates its size and SHA-256 in `files` (what an "
                      "unsigned bundle cannot rule out), then `Engine.load` and one `predict`:", ""]
            lines += _table(["case", "backend", "where", "outcome", "s", "error"],
                            [[r["case"], r["backend"], r["where"], r["outcome"], r["seconds"],
                              (r["message"] or "")[:110]] for r in t["files"]["cases"]]) + [""]
        if t["loaded_fields"]:
            shown = list(t["loaded_fields"].items())
            lines += [f"{len(shown)} field kinds still load and predict after some mutation (informational "
                      "fields the runtime does not read, or values a consistent edit may change, which only "
                      "signing catches): "
                      + ", ".join(f"`{f}` ({'/'.join(m)})" for f, m in shown[:80])
                      + (f" and {len(shown) - 80} more" if len(shown) > 80 else "") + ".", ""]
    if p:
        lines += [f"## {TITLES['path_attacks']}", ""]
        lines += ["Each attack on a fresh copy of the bundle, then `Engine.load`; message length counted with the "
                  "temporary folder written as `<work>`.", ""]
        lines += _table(["attack", "where", "outcome", "error", "s", "message chars", "message (start)"],
                        [[r["attack"] + (f" ({r['manifest_mb']} MB manifest)" if r["manifest_mb"] and
                                         r["manifest_mb"] > 1 else ""), r["where"], r["outcome"], r.get("error") or "-",
                          r["seconds"], r["message_chars"], r["message"][:90]] for r in p["cases"]]) + [""]
    if o:
        lines += [f"## {TITLES['odd_inputs']}", ""]
        backends = list(o["by_backend"])
        names = list(next((b["per_image"] for b in o["by_backend"].values() if "per_image" in b), {}))
        rows = []
        for name in names:
            row = [name]
            for backend in backends:
                b = o["by_backend"][backend].get("per_image", {}).get(name)
                row.append("-" if b is None else f"{b['normal text']}; all texts: {words(b['counts'])}"
                           + (f"; up to {b['max_seconds']:.1f} s" if b["max_seconds"] > 0.5 else ""))
            rows.append(row)
        lines += _table(["image"] + [f"{b}: with the normal text; over all texts" for b in backends], rows) + [""]
        texts = []
        for backend in backends:
            per_text = next((v for k, v in o["by_backend"][backend].items() if k.startswith("per_text")), {})
            texts.append(per_text)
        if texts and texts[0]:
            lines += _table(["text (on a valid image)"] + backends,
                            [[name] + [tx.get(name, "-") for tx in texts] for name in texts[0]]) + [""]
        if o.get("memory_per_input"):
            lines += ["One prediction per input size, each in a fresh child process (onnxruntime): peak RSS rise.", ""]
            lines += _table(["image", "input MB", "outcome", "s", "peak RSS rise MB"],
                            [[r["image"], r["input_mb"], r["outcome"], r["seconds"], r["peak_rss_rise_mb"]]
                             for r in o["memory_per_input"]]) + [""]
        if o["skipped"]:
            lines += ["Not made here: " + "; ".join(o["skipped"]) + ".", ""]
        for backend in backends:
            for u in o["by_backend"][backend].get("untyped", []):
                lines.append(f"- {backend}: image '{u['image']}', text '{u['text']}': {u['exception']}")
    if a:
        lines += [f"## {TITLES['api_misuse']}", ""]
        lines += _table(["call", "expected", "outcome", "error"],
                        [[r["call"], r["expected"], r["outcome"], (r["error"] or "")[:100]] for r in a["cases"]]) + [""]
    if c:
        lines += [f"## {TITLES['concurrency']}", "",
                  f"{c['threads']} threads, each running the same {c['predicts_per_thread']} test samples (each "
                  f"thread in its own order) against the sequential results; compared: {c['comparison']}. RSS "
                  f"from /proc/self/status after a warm-up; peak RSS of the audit {c['peak_rss_mb']} MB.", ""]
        lines += _table(["backend", "compared", "mismatches", "errors", "hung threads", "threaded s",
                         "RSS before MB", "RSS after MB", "predicts"],
                        [[bk, b.get("predictions_compared", "-"), b.get("mismatches", "-"),
                          len(b.get("thread_errors", [])), b.get("hung_threads", "-"), b.get("threaded_seconds", "-"),
                          b.get("rss_before_mb", "-"), b.get("rss_after_mb", "-"), b.get("rss_predicts", "-")]
                         for bk, b in c["by_backend"].items()]) + [""]
    if k and "fresh" in k:
        lines += [f"## {TITLES['export_kills']}", "",
                  f"`{k['command']}` with recipe `{json.dumps(k['recipe'])}`; timing export "
                  f"{k['timing_export']['seconds']} s; SIGKILL at delays spread over that duration, latest first "
                  "(so that the last kills stop an export before its own clean-up of older leftovers). "
                  "*Writes 2 s after*: the parent folder's listing (sizes, mtimes) changed between the kill and "
                  "2 s later; *survivors*: a process of the killed export's process group still alive.", ""]
        lines += _table(["kill", "delay s (fraction)", "killed", "partial left (files)", "destination",
                         "writes 2 s after", "survivors"],
                        [[i + 1, f"{r['delay_s']} ({r['delay_fraction']})", r["killed"],
                          f"{r['partial_left_by_this_export']} ({r['files_in_partial']})", r["destination"],
                          r["writes_2s_after"],
                          r["surviving_processes"]] for i, r in enumerate(k["fresh"]["rounds"])]) + [""]
        fe = k["fresh"]["final_export"]
        lines += [f"Next export to the same `--out` with `--force`: exit {fe['rc']} in {fe['seconds']} s, leftovers "
                  f"{k['fresh']['leftovers_before_final_export']} before -> {fe['leftovers_after']} after, loads: "
                  f"{fe['loads']}.", ""]
        lines += _table(["--force kill", "delay s (fraction)", "killed", "partial left (files)",
                         "destination before load", "hidden old before load", "loads after recovery", "bundle after",
                         "writes 2 s after", "survivors"],
                        [[i + 1, f"{r['delay_s']} ({r['delay_fraction']})", r["killed"],
                          f"{r['partial_left_by_this_export']} ({r['files_in_partial']})",
                          r["destination_before_load"], r["old_hidden_before_load"], r["loads_after_recovery"],
                          r["bundle_after"], r["writes_2s_after"], r["surviving_processes"]]
                         for i, r in enumerate(k["replace"]["rounds"])])
        lines.append("")
        fe = k["replace"].get("final_export")
        if fe:
            lines += [f"Next `--force` export: exit {fe['rc']} in {fe['seconds']} s, leftovers "
                      f"{k['replace']['leftovers_before_final_export']} before -> {fe['leftovers_after']} after, "
                      f"loads: {fe['loads']}.", ""]
    if g and "accuracy_signed" in g:
        lines += [f"## {TITLES['signing']}", "",
                  f"Tamper: {g['tamper']}. Accuracy on {g['data']}, truth = {g['truth']}.", ""]
        lines += _table(["bundle", "load", "test accuracy"],
                        [["signed, verify_key", g["signed_loads_with_key"], g["accuracy_signed"]],
                         ["tampered, verify_key", g["tampered_with_key"], "-"],
                         ["tampered, unsigned mode", g["tampered_unsigned_mode"], g["accuracy_tampered_unsigned"]]])
        lines.append("")
    for name, module in LATER.items():
        if name in s:
            lines += module.render(s[name], _table)
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- main
class Context:
    pass


def ensure_bundle(bundle: Path, model: Path) -> None:
    if (bundle / "manifest.json").exists():
        return
    print(f"{rel(bundle)} does not exist: exporting {rel(model)} there (ONNX + ExecuTorch, fp32; several minutes)",
          flush=True)
    bundle.parent.mkdir(parents=True, exist_ok=True)
    export_bundle(model, bundle, ExportRecipe(targets=["onnx", "executorch"], keep_ratios=None, in_graph=False),
                  log=lambda *a: print(*a, file=sys.stderr, flush=True))


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", default=str(ROOT / "runs/demo/vqa-default.mmedge"),
                   help="bundle to audit (default runs/demo/vqa-default.mmedge, exported if missing)")
    p.add_argument("--model", default=str(ROOT / "models/vqa-default"), help="model for the export-kill tests")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/hardening"), help="where audit.json/.md go")
    p.add_argument("--quick", action="store_true", help="smaller counts: a smoke run")
    p.add_argument("--predicts", type=int, help="predictions per thread in the concurrency check (default 250, "
                                                "--quick 20)")
    p.add_argument("--kills", type=int, help="killed exports of each kind (default 6, --quick 1)")
    p.add_argument("--sections", nargs="+", metavar="N", help="run only these sections: numbers (1-12), ranges "
                   "(9-12) or names (" + ", ".join(SECTIONS) + ")")
    p.add_argument("--only", nargs="+", choices=SECTIONS, help="the same with names only (kept for old commands)")
    p.add_argument("--caption-bundle", default=str(ROOT / "runs/demo/caption-default.mmedge"),
                   help="captioning bundle for sections 9, 11 and 12 (default runs/demo/caption-default.mmedge, "
                        "exported from --captioner if missing)")
    p.add_argument("--captioner", default=str(ROOT / "models/caption-default"),
                   help="captioning model for the exports of sections 9 and 12 ('tiny': one trained here, its "
                        "bundle ONNX only: a smoke run)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--report-only", action="store_true", help="rewrite OUT/audit.md from OUT/audit.json; run nothing")
    args = p.parse_args(argv)
    args.selected = select_sections(args.sections, p) if args.sections else (args.only or list(SECTIONS))
    return args


def select_sections(items: list[str], parser) -> list[str]:
    """Section names, in the audit's order, from numbers, ranges (9-12) and names."""
    chosen = set()
    for item in items:
        for part in item.split(","):
            part = part.strip()
            if part in SECTIONS:
                chosen.add(part)
            elif re.fullmatch(r"\d+(-\d+)?", part):
                lo, _, hi = part.partition("-")
                numbers = range(int(lo), int(hi or lo) + 1)
                if not numbers or min(numbers) < 1 or max(numbers) > len(SECTIONS):
                    parser.error(f"--sections {part}: sections are numbered 1-{len(SECTIONS)}")
                chosen |= {SECTIONS[n - 1] for n in numbers}
            elif part:
                parser.error(f"--sections {part!r}: give numbers 1-{len(SECTIONS)}, a range such as 9-12, or names")
    return [s for s in SECTIONS if s in chosen]


def report_only(out: Path) -> dict:
    """Rewrite OUT/audit.md from OUT/audit.json (nothing is audited)."""
    report = json.loads((out / "audit.json").read_text())
    (out / "audit.md").write_text(render(report) + "\n")
    return report


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.report_only:
        return report_only(Path(args.out))
    started = time.perf_counter()
    commit = git_commit()  # at the start: what was audited (a shared checkout may move on during the run)
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    ctx = Context()
    ctx.quick, ctx.quiet = args.quick, args.quiet
    ctx.bundle, ctx.model, out = Path(args.bundle).resolve(), Path(args.model).resolve(), Path(args.out).resolve()
    ctx.flip_files = 8 if ctx.quick else 64
    ctx.tamper_kinds = 8 if ctx.quick else None
    ctx.rehashed_flips = 8
    ctx.threads = 2 if ctx.quick else 8
    ctx.predicts = args.predicts or (20 if ctx.quick else 250)
    ctx.rss_predicts = 200 if ctx.quick else 3000
    ctx.thread_timeout = 600.0
    ctx.kills = args.kills or (1 if ctx.quick else 6)
    ctx.accuracy_samples = 30 if ctx.quick else 300
    ctx.skipped_inputs = []
    ctx.observations = []
    ctx.caption_bundle = Path(args.caption_bundle).resolve()
    ctx.captioner = None if args.captioner == "tiny" else Path(args.captioner).resolve()
    ctx.case_timeout = 20.0 if ctx.quick else SPECIAL_TIMEOUT_S
    ensure_bundle(ctx.bundle, ctx.model)
    manifest = load_manifest(ctx.bundle)
    ctx.task, ctx.image_size = manifest["task"], manifest["preprocessing"]["image_size"]
    ctx.work = Path(tempfile.mkdtemp(prefix="mmedge-hardening-"))
    SCRUB.add(ctx.work, "<work>")
    SCRUB.add(ROOT, "")
    for path, label in ((ctx.bundle, "<bundle>"), (ctx.model, "<model>"), (out, "<out>")):
        if rel(path).startswith("<"):
            SCRUB.add(path, label)
    for path, label in ((ctx.caption_bundle, "<caption bundle>"), (ctx.captioner, "<captioner>")):
        if path is not None and rel(path).startswith("<"):
            SCRUB.add(path, label)
    runners = {"flipped_bytes": flipped_bytes, "tamper": tamper, "path_attacks": path_attacks,
               "odd_inputs": odd_inputs, "api_misuse": api_misuse, "concurrency": concurrency,
               "export_kills": export_kills, "signing": signing_check,
               "caption_bundles": caption_section.caption_bundles, "datasets": datasets_section.datasets,
               "signing_kinds": signing_section.signing_kinds, "writers": writers_section.writers}
    sections, seconds = {}, {}
    try:
        for name in args.selected:
            t0 = time.perf_counter()
            try:
                sections[name] = runners[name](ctx)
            except Exception as exc:  # noqa: BLE001 - an audit section that cannot run is reported, not fatal
                sections[name] = {"result": f"audit section failed: {describe_exc(exc, 300)}", "counts": {}}
            seconds[name] = round(time.perf_counter() - t0, 1)
    finally:
        shutil.rmtree(ctx.work, ignore_errors=True)
    argv_shown = " ".join(["python benchmarks/hardening_audit.py"] + [
        a if not Path(a).is_absolute() else rel(Path(a)) for a in (argv if argv is not None else sys.argv[1:])])
    report = {
        "command": argv_shown, "quick": ctx.quick,
        "date": date, "mmedge_commit": commit,
        "machine": {"cpu_count": os.cpu_count(), "platform": f"{platform.system()} {platform.machine()}",
                    "python": platform.python_version()},
        "bundle": rel(ctx.bundle), "model": rel(ctx.model), "task": ctx.task, "image_size": ctx.image_size,
        "caption_bundle": rel(ctx.caption_bundle) if getattr(ctx, "caption_ready", False) else None,
        "seconds": round(time.perf_counter() - started, 1), "section_seconds": seconds,
        "sections": sections,
    }
    if git_commit() != commit:
        report["mmedge_commit_at_end"] = git_commit()
    report["defects"] = defects(sections)
    report["observations"] = ctx.observations
    report["totals"] = totals(sections)
    text = SCRUB(json.dumps(report, indent=1, ensure_ascii=False))
    report = json.loads(text)
    markdown = SCRUB(render(report))
    out.mkdir(parents=True, exist_ok=True)
    (out / "audit.json").write_text(text + "\n")
    (out / "audit.md").write_text(markdown + "\n")
    print(markdown, flush=True)
    return report


if __name__ == "__main__":
    main()
    sys.exit(0)

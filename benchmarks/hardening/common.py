"""Helpers shared by benchmarks/hardening_audit.py and its sections in benchmarks/hardening/: the
outcome words, a scrubber that keeps absolute paths out of the outputs, small counting and table
helpers, bundle copies and the manifest-tamper machinery (every kind of field, each mutation)."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

from tqdm import tqdm

from mmedge.errors import BundleError, MMEdgeError

ROOT = Path(__file__).resolve().parents[2]


class Scrubber:
    """Keeps absolute paths (the temporary work folder, this checkout, a bundle outside the repo)
    out of everything the audit writes."""

    def __init__(self) -> None:
        self.pairs: list[tuple[str, str]] = []

    def add(self, path: Path | str, label: str) -> None:
        for p in {str(path), str(Path(path).resolve())}:
            if p and p != "/":
                self.pairs.append((p, label))
        self.pairs.sort(key=lambda pair: -len(pair[0]))

    def __call__(self, text: str) -> str:
        for path, label in self.pairs:
            text = text.replace(path + "/", label + "/" if label else "").replace(path, label or ".")
        return re.sub(r"/(?:tmp|work|root|home|private|var/folders)(?:/[^\s'\",;:)\]}]*)?", "<path>", text)


SCRUB = Scrubber()


def rel(path: Path) -> str:
    """A path for the outputs: repo-relative, else only its name under a placeholder."""
    path = Path(path).resolve()
    try:
        return path.relative_to(ROOT).as_posix()
    except ValueError:
        return f"<outside the repo>/{path.name}"


def outcome(exc: BaseException | None, ok: str = "loaded") -> str:
    if exc is None:
        return ok
    if isinstance(exc, BundleError):
        return "refused"
    if isinstance(exc, MMEdgeError):
        return "typed error"
    return "untyped error"


def attempt(fn):
    """(value, exception or None, seconds)."""
    t0 = time.perf_counter()
    try:
        return fn(), None, time.perf_counter() - t0
    except Exception as exc:  # noqa: BLE001 - what the audit classifies
        return None, exc, time.perf_counter() - t0


def describe_exc(exc: BaseException | None, limit: int = 200) -> str | None:
    if exc is None:
        return None
    return SCRUB(f"{type(exc).__name__}: {exc}")[:limit].replace("\n", " ")


def tally(words) -> dict[str, int]:
    out: dict[str, int] = {}
    for w in words:
        out[w] = out.get(w, 0) + 1
    return dict(sorted(out.items()))


def words(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "-"


def progress(items, desc: str, quiet: bool):
    return tqdm(items, desc=desc, leave=False, disable=quiet, file=sys.stderr, dynamic_ncols=True)


def copy_bundle(src: Path, dst: Path) -> Path:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, symlinks=True)
    return dst


def write_manifest_raw(bundle: Path, manifest: dict | str) -> None:
    """Replace manifest.json with these bytes (unlink first: never write through a link)."""
    path = bundle / "manifest.json"
    if os.path.lexists(path):
        path.unlink()
    path.write_text(manifest if isinstance(manifest, str) else json.dumps(manifest))


# ---------------------------------------------------------------------------------------------- tamper
def leaves(value, path=()):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, path + (key,))
    elif isinstance(value, list) and value:
        for i, item in enumerate(value):
            yield from leaves(item, path + (i,))
    else:
        yield path


def shape(path) -> tuple:
    """A path with list indices and stage / file / keep-ratio names folded (as tests/test_bundle_security.py),
    so that each kind of field is tampered with once."""
    return tuple("#" if isinstance(p, int) or (i and path[i - 1] in ("stages", "files", "by_keep_ratio", "ops",
                                                                        "tools", "config"))
                 else p for i, p in enumerate(path))


def mutations(value) -> list[tuple[str, object]]:
    if isinstance(value, bool):
        return [("out of range", not value), ("wrong type", "yes")]
    if isinstance(value, (int, float)):
        # NaN and Infinity are not JSON, but Python's json module (and so a hostile manifest) writes and reads them
        return [("out of range", -1), ("out of range", value * 1000 + 1), ("out of range", float("nan")),
                ("out of range", float("inf"))] + ([("out of range", 2 ** 64)] if isinstance(value, int) else []) + [
                ("wrong type", "1"), ("wrong type", None)]
    if isinstance(value, str):
        return [("out of range", ""), ("out of range", "../../etc/passwd"), ("out of range", value[::-1] + "x"),
                ("wrong type", 7)]
    return [("wrong type", None), ("wrong type", {"unexpected": 1})]


def set_path(manifest, path, value, delete=False) -> None:
    target = manifest
    for key in path[:-1]:
        target = target[key]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = value



# ---------------------------------------------------------------------------------------------- tables
def cell(x) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return lines


# ---------------------------------------------------------------------------------------------- cases
BAD_WORDS = ("untyped error", "hang", "crash")


def clone(base: Path, dst: Path, real=()) -> Path:
    """A copy of the bundle `base` at `dst` whose files are hard links to base's (cheap), except
    manifest.json, manifest.sig and the relative paths in `real`, which are copies that a case may
    change in place. Links and special files are copied as they are. Falls back to copies."""
    real = {str(r) for r in real} | {"manifest.json", "manifest.sig"}
    if os.path.lexists(dst):
        shutil.rmtree(dst)
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
        here = Path(dirpath)
        target = dst / here.relative_to(base)
        target.mkdir(parents=True, exist_ok=True)
        for name in dirnames + filenames:
            src, out = here / name, target / name
            rel_name = src.relative_to(base).as_posix()
            if src.is_symlink():
                out.symlink_to(os.readlink(src))
            elif src.is_dir():
                continue
            elif rel_name in real:
                shutil.copy2(src, out)
            else:
                try:
                    os.link(src, out)
                except OSError:
                    shutil.copy2(src, out)
    return dst


def case_problem(row: dict) -> str | None:
    """Why a case's row is a defect: an untyped error, a hang, a crash, a read outside, lost data, or
    an outcome other than the expected one(s); None when it is not."""
    if row.get("read_outside"):
        return f"read outside ({', '.join(row['read_outside'])}; seen by {', '.join(row.get('read_by') or [])})"
    if row.get("data_loss"):
        return f"data loss ({'; '.join(row['data_loss'][:3])})"
    if row["outcome"] in BAD_WORDS:
        return row["outcome"]
    expected = row.get("expected")
    if expected and row["outcome"] not in expected.split(" or "):
        return f"{row['outcome']}, expected {expected}"
    return None


def count_rows(rows: list[dict]) -> dict:
    """The outcome words of these rows, and the extra counts every later section reports."""
    counts = tally(r["outcome"] for r in rows)
    counts["read outside"] = sum(bool(r.get("read_outside")) for r in rows)
    if any("data_loss" in r for r in rows):
        counts["data loss"] = sum(bool(r.get("data_loss")) for r in rows)
    return counts


def case_totals(rows: list[dict]) -> dict:
    """The audit's bad counts over one section's case rows (data loss is counted by the writers' section)."""
    return {"untyped": sum(r["outcome"] == "untyped error" for r in rows),
            "hang": sum(r["outcome"] == "hang" for r in rows), "crash": sum(r["outcome"] == "crash" for r in rows),
            "read_outside": sum(bool(r["read_outside"]) for r in rows), "data_loss": 0}


def n_cases(n: int) -> str:
    return f"{n} case{'s' if n != 1 else ''}"


def section_result(rows: list[dict]) -> str:
    bad = [r for r in rows if case_problem(r)]
    if not bad:
        return "as expected"
    return f"{len(bad)} of {len(rows)} not as expected"

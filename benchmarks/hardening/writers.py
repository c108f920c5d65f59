"""12. `--force` look-alikes and writer safety: what `mmedge export --force`, `mmedge bundle --force`,
`mmedge calibrate` (both kinds) and `mmedge sign --new-key` do to folders and files that are not
theirs to replace: an app's folder with a manifest.json (`{"schema_version": 3}`, 1, or a real
bundle's manifest) beside its own files, a real bundle with an unlisted file, a link to a bundle, a
plain file, `--out` equal to or inside the source of `mmedge bundle`, a bad `--sign-key` for
calibrate, a captioning bundle holding unlisted files and a link outside when calibrated, existing
keys, an `--out` whose parent cannot be created (`/proc/nope/x`). Every file, folder and link of the
case is snapshotted (type, size, SHA-256, link target) before and after the command: anything that
existed and is gone or changed, where the command was not asked to replace it, is data loss. Honest
controls (a bundle replaced with --force, a calibration with a good key) must succeed and load.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from benchmarks.hardening.common import case_problem, count_rows, n_cases, progress, section_result, words
from benchmarks.hardening.probe import Canaries, lost, run_cases, snapshot

TITLE = "12. --force look-alikes and writer safety"
FAST_RECIPE = {"description": "hardening audit: small fast export (ONNX only, keep 1.0)", "targets": ["onnx"],
               "keep_ratios": [1.0], "parity_samples": 2, "accuracy_samples": 8, "in_graph": False,
               "ort_format": False}
EXPORT_TIMEOUT_S = 900.0  # an export that a defect lets run to the end (then replaces what it should not)
SETUP = "import mmedge.cli, torch\ntorch.set_num_threads(1)\n"


def _app_folder(d: Path, manifest: str) -> Path:
    """An app's folder that happens to hold a manifest.json."""
    (d / "data").mkdir(parents=True)
    (d / "manifest.json").write_text(manifest)
    (d / "index.html").write_text("<html>my app</html>\n")
    (d / "data" / "user.db").write_bytes(os.urandom(4096))
    (d / "notes.txt").write_text("the user's notes\n")
    return d


def writers(ctx) -> dict:
    from benchmarks.hardening.caption import ensure_caption_bundle, train_tiny_captioner

    work = ctx.work / "s12"
    cases_dir = work / "cases"
    cases_dir.mkdir(parents=True, exist_ok=True)
    canaries = Canaries(work)
    secret = canaries.text("writers")
    recipe = work / "fast-recipe.json"
    recipe.write_text(json.dumps(FAST_RECIPE))
    caption_bundle = ensure_caption_bundle(ctx)
    if ctx.captioner is None:
        ctx.captioner = train_tiny_captioner(ctx.work / "tiny-captioner")
    keys = work / "keys"
    from mmedge.bundle.signing import new_key_pair

    private, public = new_key_pair(keys)
    bad_key = work / "bad-key.pem"
    bad_key.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    real_manifest = (ctx.bundle / "manifest.json").read_text()

    def export(kind: str, out: Path) -> list[str]:
        if kind == "classifier":
            return ["export", "--model", str(ctx.model), "--recipe", str(recipe), "--out", str(out), "--force"]
        return ["export", "--model", str(ctx.captioner), "--target", "onnx", "--parity-samples", "2", "--out",
                str(out), "--force"]

    def slim(source: Path, out: Path, force: bool = True) -> list[str]:
        return ["bundle", "--artifact", str(source), "--out", str(out), "--runtime", "onnxruntime", "--format",
                "onnx"] + (["--force"] if force else [])

    cases: list[dict] = []

    def case(name: str, command: str, make, expected: str, allowed=(), loads=None, quick=True, timeout=None):
        """make(d) -> argv, with d the case's own folder; `allowed`: paths (relative to d) the command
        may replace when it succeeds; `loads`: (path relative to d, verify with the key) that must
        load afterwards."""
        if ctx.quick and not quick:
            return
        d = cases_dir / f"w{len(cases)}"
        d.mkdir()
        argv = make(d)
        cases.append({"id": f"w{len(cases)}", "case": name, "command": command, "argv": argv, "dir": d,
                      "expected": expected, "allowed": [d / a for a in allowed], "loads": loads,
                      "timeout": timeout or ctx.case_timeout})

    def copy_of(src: Path, dst: Path) -> Path:
        shutil.copytree(src, dst, symlinks=True)
        return dst

    for kind in ("classifier", "caption"):
        cmd = f"mmedge export --force ({kind})"
        case(f"app folder, manifest.json {{\"schema_version\": 3}}", cmd,
             lambda d, k=kind: export(k, _app_folder(d / "app", '{"schema_version": 3}')), "refused",
             quick=True, timeout=EXPORT_TIMEOUT_S)
        case(f"app folder, manifest.json {{\"schema_version\": 1}}", cmd,
             lambda d, k=kind: export(k, _app_folder(d / "app", '{"schema_version": 1}')), "refused",
             quick=False, timeout=EXPORT_TIMEOUT_S)
        case("app folder holding a real bundle's manifest.json", cmd,
             lambda d, k=kind: export(k, _app_folder(d / "app", real_manifest)), "refused", quick=False,
             timeout=EXPORT_TIMEOUT_S)
        source = ctx.bundle if kind == "classifier" else caption_bundle
        case("a real bundle plus an unlisted file", cmd,
             lambda d, k=kind, s=source: export(k, _with(copy_of(s, d / "b.mmedge"), "notes.txt")), "refused",
             quick=kind == "caption", timeout=EXPORT_TIMEOUT_S)
        case("a link to a real bundle", cmd,
             lambda d, k=kind, s=source: export(k, _link(copy_of(s, d / "target.mmedge"), d / "link.mmedge")),
             "refused", quick=False, timeout=EXPORT_TIMEOUT_S)
        case("a plain file", cmd, lambda d, k=kind: export(k, _file(d / "out.mmedge")), "refused", quick=False,
             timeout=EXPORT_TIMEOUT_S)
        case("--out /proc/nope/x", cmd, lambda d, k=kind: export(k, Path("/proc/nope/x")), "refused or typed error",
             quick=kind == "classifier", timeout=EXPORT_TIMEOUT_S)
    case("a real bundle (honest: replaced)", "mmedge export --force (classifier)",
         lambda d: export("classifier", copy_of(ctx.bundle, d / "b.mmedge")), "done", allowed=["b.mmedge"],
         loads=("b.mmedge", False), quick=False, timeout=EXPORT_TIMEOUT_S)

    cmd = "mmedge bundle --force"
    case("app folder, manifest.json {\"schema_version\": 3}", cmd,
         lambda d: slim(ctx.bundle, _app_folder(d / "app", '{"schema_version": 3}')), "refused")
    case("app folder holding a real bundle's manifest.json", cmd,
         lambda d: slim(ctx.bundle, _app_folder(d / "app", real_manifest)), "refused", quick=False)
    case("a real bundle plus an unlisted file", cmd,
         lambda d: slim(ctx.bundle, _with(copy_of(ctx.bundle, d / "b.mmedge"), "notes.txt")), "refused")
    case("a link to a real bundle", cmd,
         lambda d: slim(ctx.bundle, _link(copy_of(ctx.bundle, d / "target.mmedge"), d / "link.mmedge")), "refused")
    case("--out equal to the source", cmd, lambda d: slim(copy_of(ctx.bundle, d / "src.mmedge"), d / "src.mmedge"),
         "refused", loads=("src.mmedge", False))
    case("--out inside the source", cmd,
         lambda d: slim(copy_of(ctx.bundle, d / "src.mmedge"), d / "src.mmedge" / "slim.mmedge"), "refused",
         loads=("src.mmedge", False))
    case("--out a link to the source", cmd,
         lambda d: slim(copy_of(ctx.bundle, d / "src.mmedge"), _link(d / "src.mmedge", d / "alias.mmedge")),
         "refused", loads=("src.mmedge", False), quick=False)
    case("--out /proc/nope/x", cmd, lambda d: slim(ctx.bundle, Path("/proc/nope/x")), "refused or typed error")
    case("a slim bundle (honest: replaced)", cmd,
         lambda d: _honest_slim(d, ctx.bundle, slim), "done", allowed=["slim.mmedge"], loads=("slim.mmedge", False))

    for kind, source, extra in (("classifier", ctx.bundle, ["--samples", "100"]),
                                ("caption", caption_bundle, ["--samples", "20", "--max-drop-cider", "1000"])):
        cmd = f"mmedge calibrate ({kind})"

        def signed_copy(d: Path, s=source) -> Path:
            b = copy_of(s, d / "b.mmedge")
            from mmedge.bundle.signing import sign_bundle

            if os.path.lexists(b / "manifest.sig"):
                (b / "manifest.sig").unlink()
            sign_bundle(b, private)
            return b

        case("--sign-key not a key (a signed bundle)", cmd,
             lambda d, e=extra, sc=signed_copy: ["calibrate", "--artifact", str(sc(d)), "--sign-key", str(bad_key),
                                                 "--no-progress"] + e,
             "refused or typed error", loads=("b.mmedge", True), timeout=EXPORT_TIMEOUT_S)
        case("--sign-key a missing file (a signed bundle)", cmd,
             lambda d, e=extra, sc=signed_copy: ["calibrate", "--artifact", str(sc(d)), "--sign-key",
                                                 str(d / "no-such-key.pem"), "--no-progress"] + e,
             "refused or typed error", loads=("b.mmedge", True), quick=False, timeout=EXPORT_TIMEOUT_S)
        case("a bundle holding an unlisted file and a link outside", cmd,
             lambda d, e=extra, s=source: ["calibrate", "--artifact", str(_link_inside(
                 _with(copy_of(s, d / "b.mmedge"), "notes.txt"), secret)), "--sign-key", str(private),
                 "--no-progress"] + e, "refused", quick=kind == "caption", timeout=EXPORT_TIMEOUT_S)
        case("--sign-key a good key (honest)", cmd,
             lambda d, e=extra, sc=signed_copy: ["calibrate", "--artifact", str(sc(d)), "--sign-key", str(private),
                                                 "--no-progress"] + e,
             "done", allowed=["b.mmedge/manifest.json", "b.mmedge/manifest.sig"], loads=("b.mmedge", True),
             quick=kind == "caption", timeout=EXPORT_TIMEOUT_S)

    cmd = "mmedge sign --new-key"
    case("a folder that already holds the keys", cmd,
         lambda d: ["sign", "--new-key", str(_keys_in(d / "keys", private, public))], "refused or typed error")
    case("--new-key /proc/nope/x", cmd, lambda d: ["sign", "--new-key", "/proc/nope/x"], "refused or typed error")
    case("--new-key a plain file", cmd, lambda d: ["sign", "--new-key", str(_file(d / "keys"))],
         "refused or typed error", quick=False)

    before = {c["id"]: snapshot([c["dir"]]) for c in cases}
    bar = progress(range(len(cases)), "12 writers", ctx.quiet)
    done = run_cases([{k: v for k, v in c.items() if k in ("id", "argv", "timeout")} for c in cases],
                     work / "runs", canaries, setup=SETUP, timeout=ctx.case_timeout, bar=bar)
    bar.close()
    rows = []
    for c in cases:
        r = done[c["id"]]
        allowed = c["allowed"] if r["outcome"] == "done" else []
        gone = lost(before[c["id"]], snapshot([c["dir"]]), allowed)
        row = {"command": c["command"], "case": c["case"], "expected": c["expected"], "outcome": r["outcome"],
               "error": r["error"], "seconds": r["seconds"], "read_outside": r["read_outside"],
               "read_by": r["read_by"], "message": r["message"][:200],
               "data_loss": [_short(p, c["dir"]) for p in gone]}
        if c["loads"]:
            rel_path, with_key = c["loads"]
            problem = _loads(c["dir"] / rel_path, public if with_key else None)
            row["loads_after"] = problem or "yes"
            if problem:
                row["data_loss"].append(f"{rel_path} no longer loads{' with the key' if with_key else ''}: "
                                        f"{problem[:120]}")
        rows.append(row)
    shutil.rmtree(cases_dir, ignore_errors=True)
    by_command = {}
    for r in rows:
        by_command.setdefault(r["command"], []).append(r)
    return {"commands": {k: {"cases": len(rs), "counts": count_rows(rs), "result": section_result(rs)}
                         for k, rs in by_command.items()},
            "recipe": {k: v for k, v in FAST_RECIPE.items() if k != "description"},
            "counts": count_rows(rows), "result": section_result(rows),
            "problems": [{**r, "problem": case_problem(r)} for r in rows if case_problem(r)], "cases": rows}


def _with(bundle: Path, name: str) -> Path:
    (bundle / name).write_text("a file the manifest does not list\n")
    return bundle


def _link(target: Path, link: Path) -> Path:
    link.symlink_to(target)
    return link


def _link_inside(bundle: Path, target: Path) -> Path:
    (bundle / "secret.txt").symlink_to(target)
    return bundle


def _file(path: Path) -> Path:
    path.write_text("a plain file, not a bundle\n")
    return path


def _keys_in(folder: Path, private: Path, public: Path) -> Path:
    folder.mkdir()
    shutil.copy(private, folder / private.name)
    shutil.copy(public, folder / public.name)
    return folder


def _honest_slim(d: Path, source: Path, slim) -> list[str]:
    from mmedge.bundle.slim import slim_bundle

    slim_bundle(source, d / "slim.mmedge", "onnxruntime", "onnx")
    return slim(source, d / "slim.mmedge")


def _loads(bundle: Path, key) -> str | None:
    from mmedge.runtime.engine import Engine

    try:
        Engine.load(bundle, **({"verify_key": key} if key else {}))
    except Exception as exc:  # noqa: BLE001 - what the check reports
        return f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return None


def _short(path: str, root: Path) -> str:
    try:
        return Path(path.split(" (")[0]).relative_to(root).as_posix() + " (" + path.split(" (", 1)[1]
    except (ValueError, IndexError):
        return Path(path).name


# ---------------------------------------------------------------------------------------------- report
def summary_rows(s: dict) -> list[list]:
    return [["12", f"writers: {k}", n_cases(v['cases']), v["result"], words(v["counts"])]
            for k, v in s.get("commands", {}).items()]


def defects(s: dict) -> list[str]:
    return [f"{p['command']} on '{p['case']}': {p['problem']} ({p['error'] or '-'}: {p['message'][:160]})"
            for p in s.get("problems", [])]


def totals(s: dict) -> dict:
    rows = s.get("cases", [])
    return {"untyped": sum(r["outcome"] == "untyped error" for r in rows),
            "hang": sum(r["outcome"] == "hang" for r in rows), "crash": sum(r["outcome"] == "crash" for r in rows),
            "read_outside": sum(bool(r["read_outside"]) for r in rows),
            "data_loss": sum(bool(r["data_loss"]) for r in rows)}


def render(s: dict, table) -> list[str]:
    if "cases" not in s:
        return []
    lines = [f"## {TITLE}", "",
             "Each command in a child process on its own folder; every file, folder and link of that folder (and "
             "the canaries outside) snapshotted before and after: *data loss* = something that existed and is gone "
             "or changed, unless the command succeeded and was asked to replace it (the honest controls). "
             f"Classifier exports use the recipe `{json.dumps(s['recipe'])}`; captioning exports `--target onnx "
             "--parity-samples 2`. *loads after*: the bundle the case must leave intact (with the key where it was "
             "signed) still loads.", ""]
    lines += table(["command", "case", "expected", "outcome", "error", "s", "data loss", "loads after", "message"],
                   [[r["command"], r["case"], r["expected"], r["outcome"], r["error"] or "-", r["seconds"],
                     "; ".join(r["data_loss"][:3]) or "-", r.get("loads_after", "-")[:60], r["message"][:90]]
                    for r in s["cases"]]) + [""]
    return lines

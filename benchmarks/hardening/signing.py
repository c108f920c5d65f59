"""11. Signing across kinds, and rollback: a classifier and a captioning bundle signed with
`mmedge sign --key`, then tampered with after signing (the manifest edited, two stage files swapped,
an unlisted file or a link added, manifest.sig a folder, missing, garbage or another bundle's, another
key) and rolled back (an older manifest + signature by the same key swapped in, loaded with
`min_sequence` = the newer release's sequence; another bundle's name with `expect_name`). Each is
loaded with the key (and with verify=False and the key): refused every time; the honest ones load
and answer. Every step (`mmedge sign`, the loads) in a child process.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from benchmarks.hardening.common import case_problem, case_totals, clone, count_rows, n_cases, progress, section_result, words
from benchmarks.hardening.probe import Canaries, run_cases

TITLE = "11. Signing across kinds and rollback"
SETUP = """
import numpy as np
from mmedge.runtime.engine import Engine
IMG = np.random.default_rng(0).integers(0, 256, (64, 64, 3)).astype(np.uint8)

def use(bundle, **load):
    engine = Engine.load(bundle, **load)
    if getattr(engine, "kind", None) == "caption":
        return engine.caption(IMG, max_len=4).text
    return engine.predict(IMG, "is there a red circle ?").answer
"""
ROLLBACK_STEP = 1000  # the newer release's sequence: the older one's + this


def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def _write(bundle: Path, manifest: dict) -> None:
    path = bundle / "manifest.json"
    path.unlink()
    path.write_text(json.dumps(manifest, indent=1))


def _stage_files(m: dict) -> list[str]:
    """Listed stage files (one artifact's), largest first."""
    for a in m["artifacts"]:
        files = [e["file"] for e in a["stages"].values() if isinstance(e, dict) and "file" in e]
        if len(files) >= 2:
            return sorted(files, key=lambda f: -m["files"].get(f, {}).get("bytes", 0))
    return []


def _swap(bundle: Path, a: str, b: str) -> None:
    pa, pb = bundle / a, bundle / b
    da, db = pa.read_bytes(), pb.read_bytes()
    pa.unlink()
    pb.unlink()
    pa.write_bytes(db)
    pb.write_bytes(da)


def _edit(kind: str, m: dict) -> str:
    """A plausible edit after signing: what an attacker would change."""
    t = m["thresholds"]
    if kind == "classifier":
        m["labels"] = m["labels"][1:] + m["labels"][:1]
        t["confidence"] = 0.0
        return "labels rotated, thresholds.confidence 0.0"
    t["policy"], t["max_probability"] = "max_probability", 0.5
    return "thresholds.policy max_probability, threshold 0.5"


def signing_kinds(ctx) -> dict:
    from benchmarks.hardening.caption import ensure_caption_bundle

    work = ctx.work / "s11"
    cases_dir = work / "cases"
    cases_dir.mkdir(parents=True, exist_ok=True)
    canaries = Canaries(work)
    secret = canaries.text("signing")
    sources = {"classifier": ctx.bundle}
    try:
        sources["caption"] = ensure_caption_bundle(ctx)
    except Exception as exc:  # noqa: BLE001 - the classifier half still runs
        sources["caption"] = None
        caption_error = f"{type(exc).__name__}: {exc}"[:200]
    keys, other = work / "keys", work / "other-keys"
    signed = {k: work / f"signed-{k}.mmedge" for k in sources}
    for k, src in sources.items():
        if src is not None:
            shutil.copytree(src, signed[k], symlinks=True)
            for sig in (signed[k] / "manifest.sig",):
                if os.path.lexists(sig):
                    sig.unlink()  # signed here, with this audit's key
    rows: list[dict] = []

    def run(cases: list[dict], desc: str) -> None:
        for i, c in enumerate(cases):
            c["id"] = f"{desc}{i}"
        bar = progress(range(len(cases)), f"11 signing ({desc})", ctx.quiet)
        done = run_cases(cases, work / f"runs-{desc}", canaries, setup=SETUP, timeout=ctx.case_timeout, bar=bar)
        bar.close()
        for c in cases:
            r = done[c["id"]]
            rows.append({"kind": c["kind"], "case": c["case"], "how": c["how"], "expected": c["expected"],
                         "outcome": r["outcome"], "error": r["error"], "seconds": r["seconds"],
                         "read_outside": r["read_outside"], "read_by": r["read_by"], "message": r["message"][:200]})
            c["outcome"] = r["outcome"]

    # 1. keys and the honest signatures, with the CLI
    steps = [{"kind": "-", "case": "a key pair", "how": "mmedge sign --new-key", "expected": "done",
              "argv": ["sign", "--new-key", str(keys)]},
             {"kind": "-", "case": "another key pair", "how": "mmedge sign --new-key", "expected": "done",
              "argv": ["sign", "--new-key", str(other)]}]
    steps += [{"kind": k, "case": "sign the bundle", "how": "mmedge sign --key", "expected": "done",
               "argv": ["sign", "--artifact", str(signed[k]), "--key", str(keys / "mmedge-signing.pem")]}
              for k in sources if sources[k] is not None]
    run(steps[:2], "keys")
    run(steps[2:], "sign")
    public, other_public = str(keys / "mmedge-signing.pub.pem"), str(other / "mmedge-signing.pub.pem")
    ok_kinds = [c["kind"] for c in steps[2:] if c["outcome"] == "done"]

    # 2. newer releases (for the rollback), re-signed with the CLI
    newer: dict[str, Path] = {}
    sequences: dict[str, int] = {}
    resign = []
    for k in ok_kinds:
        b = clone(signed[k], work / f"newer-{k}.mmedge")
        m = _manifest(b)
        old = m.get("release") if isinstance(m.get("release"), dict) else None
        if old and isinstance(old.get("sequence"), int):  # a bundle without a release is re-signed unchanged:
            seq = old["sequence"] + ROLLBACK_STEP            # an app then has nothing to refuse a rollback with
            m["release"] = {**old, "sequence": seq}
        else:
            seq = 1
        _write(b, m)
        (b / "manifest.sig").unlink()
        newer[k], sequences[k] = b, seq
        resign.append({"kind": k, "case": "sign a newer release (sequence + 1000)", "how": "mmedge sign --key",
                       "expected": "done", "argv": ["sign", "--artifact", str(b), "--key",
                                                    str(keys / "mmedge-signing.pem")]})
    run(resign, "resign")
    newer_ok = {c["kind"] for c in resign if c["outcome"] == "done"}

    # 3. the loads
    loads = []
    for k in ok_kinds:
        s = signed[k]
        m = _manifest(s)
        stages = _stage_files(m)
        name = m.get("release", {}).get("name") if isinstance(m.get("release"), dict) else None

        def case(label: str, prepare=None, expected="refused", how=("key", "verify=False + key"), base=s,
                 extra: dict | None = None, argv=None, k=k):
            b = clone(base, cases_dir / f"{k}-{len(loads)}.mmedge")
            note = prepare(b) if prepare else None
            label = f"{label} ({note})" if isinstance(note, str) else label
            if argv is not None:
                loads.append({"kind": k, "case": label, "how": "mmedge sign --verify", "expected": expected,
                              "argv": argv(b)})
                return
            for h in how:
                load = {"verify_key": public, **(extra or {})}
                want = expected
                if h == "verify=False + key":  # refusing the combination itself (an argument error) is safe too
                    load["verify"] = False
                    want = f"{expected} or typed error"
                elif h == "other key":
                    load["verify_key"] = other_public
                loads.append({"kind": k, "case": label, "how": h, "expected": want,
                              "code": f"result = use({str(b)!r}, **{load!r})", "ok": "loaded"})

        def edit(b):
            mm = _manifest(b)
            what = _edit(k, mm)
            _write(b, mm)
            return what

        def swap(same_size: bool):
            def prepare(b):
                sizes = {f: (b / f).stat().st_size for f in stages}
                pairs = [(x, y) for i, x in enumerate(stages) for y in stages[i + 1:]
                         if (sizes[x] == sizes[y]) == same_size]
                if not pairs:
                    return "no such pair: nothing swapped"
                _swap(b, *pairs[0])
                return f"{pairs[0][0].rsplit('/', 1)[-1]} <-> {pairs[0][1].rsplit('/', 1)[-1]}"
            return prepare

        def unlisted(b):
            (b / "notes.txt").write_text("added after signing\n")

        def link(b):
            (b / "extra.txt").symlink_to(secret)

        def sig_dir(b):
            (b / "manifest.sig").unlink()
            (b / "manifest.sig").mkdir()

        def sig_missing(b):
            (b / "manifest.sig").unlink()

        def sig_garbage(b):
            (b / "manifest.sig").unlink()
            (b / "manifest.sig").write_text('{"format": "mmedge-signature-1", "signature": "not base64 !!"}')

        def sig_other_bundle(b):
            other_bundle = next(signed[o] for o in ok_kinds if o != k)
            (b / "manifest.sig").unlink()
            shutil.copy(other_bundle / "manifest.sig", b / "manifest.sig")
            return "the other kind's manifest.sig"

        case("honest signed bundle", expected="loaded", how=("key", "verify=False + key"))
        case("honest signed bundle", expected="done", argv=lambda b: ["sign", "--artifact", str(b), "--verify",
                                                                       public])
        case("manifest edited after signing", edit)
        case("manifest edited after signing", edit, argv=lambda b: ["sign", "--artifact", str(b), "--verify", public])
        if len(stages) >= 2:
            case("two stage files of different sizes swapped", swap(False))
            case("two stage files of the same size swapped", swap(True), how=("key",))
            # verify=False skips only the SHA-256 (the contract): a same-size swap may then load
            case("two stage files of the same size swapped", swap(True), how=("verify=False + key",),
                 expected="refused or loaded")
        case("an unlisted file added", unlisted)
        case("a link added (to a canary)", link)
        case("manifest.sig a folder", sig_dir)
        case("manifest.sig a folder", sig_dir, argv=lambda b: ["sign", "--artifact", str(b), "--verify", public])
        case("manifest.sig missing", sig_missing, how=("key",))
        case("manifest.sig garbage", sig_garbage, how=("key",))
        if len(ok_kinds) > 1:
            case("manifest.sig of another bundle", sig_other_bundle, how=("key",))
        case("another key", None, how=("other key",))
        case("expect_name another bundle's name", None, how=("key",), extra={"expect_name": "another-bundle"})
        if name:
            case("expect_name its own name", None, how=("key",), expected="loaded", extra={"expect_name": name})
        if k in newer_ok:
            seq = sequences[k]
            case("newer release, min_sequence its sequence", None, how=("key",), base=newer[k], expected="loaded",
                 extra={"min_sequence": seq})

            def rollback(b, k=k):
                for f in ("manifest.json", "manifest.sig"):
                    (b / f).unlink()
                    shutil.copy(signed[k] / f, b / f)
                return "the older signed manifest + signature swapped in"

            case("rollback, min_sequence = the newer release's", rollback, base=newer[k],
                 extra={"min_sequence": seq})
            case("older release, no min_sequence (an app that does not ask)", rollback, base=newer[k],
                 expected="loaded", how=("key",))
    run(loads, "load")
    shutil.rmtree(cases_dir, ignore_errors=True)
    by_kind = {}
    for r in rows:
        by_kind.setdefault(r["kind"] if r["kind"] != "-" else "keys", []).append(r)
    out = {"kinds": {k: {"cases": len(rs), "counts": count_rows(rs), "result": section_result(rs)}
                     for k, rs in by_kind.items()},
           "counts": count_rows(rows), "result": section_result(rows),
           "problems": [{**r, "problem": case_problem(r)} for r in rows if case_problem(r)], "cases": rows}
    if sources.get("caption") is None:
        out["caption_not_run"] = caption_error
    return out


# ---------------------------------------------------------------------------------------------- report
def summary_rows(s: dict) -> list[list]:
    return [["11", f"signing: {k}", n_cases(v['cases']), v["result"], words(v["counts"])]
            for k, v in s.get("kinds", {}).items()]


def defects(s: dict) -> list[str]:
    out = [f"signing {p['kind']} '{p['case']}' ({p['how']}): {p['problem']} ({p['error'] or '-'}: "
           f"{p['message'][:160]})" for p in s.get("problems", [])]
    if s.get("caption_not_run"):
        out.append(f"signing: no captioning bundle ({s['caption_not_run']})")
    return out


def totals(s: dict) -> dict:
    return case_totals(s.get("cases", []))


def render(s: dict, table) -> list[str]:
    if "cases" not in s:
        return []
    lines = [f"## {TITLE}", "",
             "Keys and signatures made with `mmedge sign`; each case on its own copy of the signed bundle, loaded "
             "in a child process with `Engine.load(verify_key=...)` (+ one predict / caption), with verify=False "
             f"too where shown. Rollback: a newer release (sequence + {ROLLBACK_STEP}) signed with the same key, "
             "then the older manifest and signature swapped back in and loaded with `min_sequence` = the newer "
             "sequence. With verify=False and a key, a *typed error* (the runtime refusing the combination of "
             "arguments) is as safe as a refusal; *refused or loaded*: where the combination is accepted, "
             "verify=False skips the SHA-256 of the listed files (sizes still checked), so a swap of two files "
             "of the same size is left to the hashes it skips.", ""]
    lines += table(["kind", "case", "how", "expected", "outcome", "error", "s", "message"],
                   [[r["kind"], r["case"], r["how"], r["expected"], r["outcome"], r["error"] or "-", r["seconds"],
                     r["message"][:100]] for r in s["cases"]]) + [""]
    return lines

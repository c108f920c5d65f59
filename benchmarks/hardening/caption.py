"""9. Captioning bundles, held to the classifier bundle's checks (sections 1-3 and 5 for a
captioning bundle), every case in a child process (benchmarks/hardening/probe.py) with a timeout
and a memory limit, canaries outside the bundle:

- flipped bytes: one byte flipped in each listed file (a sample of at most 64): refused; then (not
  with --quick) flips in the weights and graph files with their hashes updated;
- manifest tamper: every kind of field changed to a wrong type, an out-of-range value or deleted
  (as section 2), then the fields the issue names: decoder.num_heads, model.config.image_size
  100000 and missing, files[].bytes huge (and a 50 GB sparse file), schema_version 1.0,
  tokenizer.kind; load + one caption;
- path and special-file attacks: absolute and `..` paths, links inside the bundle to canaries,
  unlisted files, folders and links, FIFOs, /dev/zero, graphs whose external data is a canary or an
  unlisted file;
- NaN / Infinity weights with the hashes updated (a load-time self-check refuses them);
- odd arguments: caption() policy names, keep_ratio types, max_len, beam, kv; Engine.load keep_ratio,
  mode and fmt on a captioning bundle (an option it cannot honour is refused, not ignored).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from benchmarks.hardening.common import (case_problem, case_totals, clone, count_rows, leaves, mutations, n_cases,
                                         progress, rel, section_result, set_path, shape, tally, words)
from benchmarks.hardening.probe import Canaries, run_cases

TITLE = "9. Captioning bundles"
TINY_CAPTIONER = {"steps": 4, "batch_size": 8, "eval_every": 4, "eval_samples": 8, "checkpoint_every": 4,
                  "log_every": 4, "warmup_steps": 1, "threads": 1, "train_keep_ratios": [1.0, 0.5],
                  "model": {"dim": 32, "encoder_depth": 1, "decoder_depth": 2, "num_heads": 2, "image_size": 48,
                            "patch_size": 8, "keep_ratios": [1.0, 0.5]}}
SETUP = """
import math
import numpy as np
from mmedge.runtime.engine import Engine
from mmedge.runtime.controller import Policy
IMG = np.random.default_rng(0).integers(0, 256, (64, 64, 3)).astype(np.uint8)
nan, inf = float("nan"), float("inf")
_engines = {}

def caption(bundle, load=None, call=None):
    engine = Engine.load(bundle, **(load or {}))
    text = engine.caption(IMG, **(call or {})).text
    if not isinstance(text, str):
        raise AssertionError(f"caption() gave {type(text).__name__}, not text")
    return text

def engine(bundle):
    if bundle not in _engines:
        _engines[bundle] = Engine.load(bundle)
    return _engines[bundle]
"""
ATTACK_EXPECTED = "refused"
GENERIC_EXPECTED = None  # a generic mutation may load (a field the runtime does not read) or be refused


# ---------------------------------------------------------------------------------------------- the bundle
def ensure_caption_bundle(ctx) -> Path:
    """ctx.caption_bundle: the given one, else exported here (once) from ctx.captioner (ONNX and
    ExecuTorch, fp32, as the classifier bundle), or from a tiny captioner trained for the audit when
    ctx.captioner is None (`--captioner tiny`: a smoke run, ONNX only)."""
    if getattr(ctx, "caption_ready", False):
        return ctx.caption_bundle
    bundle = Path(ctx.caption_bundle)
    if not (bundle / "manifest.json").exists():
        from mmedge.caption.export import export_caption_bundle

        targets = ("onnx", "executorch")
        if ctx.captioner is None:
            ctx.captioner = train_tiny_captioner(ctx.work / "tiny-captioner")
            targets = ("onnx",)
        print(f"exporting the captioner to {bundle.name} ({', '.join(targets)}, fp32) for section 9", flush=True)
        bundle.parent.mkdir(parents=True, exist_ok=True)
        export_caption_bundle(ctx.captioner, bundle, targets, int8=False, parity_images=2, log=lambda *a: None)
    ctx.caption_ready = True
    return bundle


def train_tiny_captioner(out: Path) -> Path:
    from mmedge.caption.train import CaptionTrainConfig, CaptionTrainer

    if not (out / "config.json").exists():
        CaptionTrainer(CaptionTrainConfig(**TINY_CAPTIONER), out, progress=False).fit()
    return out


def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def _write_manifest(bundle: Path, manifest: dict | str) -> None:
    path = bundle / "manifest.json"
    if os.path.lexists(path):
        path.unlink()
    path.write_text(manifest if isinstance(manifest, str) else json.dumps(manifest))


def _rehash(bundle: Path, manifest: dict, rel_name: str) -> None:
    data = (bundle / rel_name).read_bytes()
    manifest["files"][rel_name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def _replace(path: Path, data: bytes) -> None:
    if os.path.lexists(path):
        path.unlink()
    path.write_bytes(data)


def _onnx_artifact(m: dict) -> dict | None:
    return next((a for a in m["artifacts"] if a["runtime"] == "onnxruntime" and a["precision"] == "fp32"), None)


def _stage_file(m: dict) -> str:
    a = _onnx_artifact(m) or next(a for a in m["artifacts"] if "file" in a or a.get("stages"))
    if "file" in a:
        return a["file"]
    return next(iter(a["stages"].values()))["file"]


def _backend_of(m: dict, rel_name: str) -> str:
    for a in m["artifacts"]:
        names = [a.get("file"), a.get("external_data")] + [e.get("file") for e in a["stages"].values()
                                                          if isinstance(e, dict)]
        if rel_name in names or any(n and rel_name.startswith(n + "/") for n in names):
            return a["runtime"] if a["runtime"] in ("onnxruntime", "executorch") else "auto"
    return "auto"


def _load_code(bundle: Path, backend: str = "auto", extra: str = "") -> str:
    load = {"backend": backend} if backend != "auto" else {}
    return f"result = caption({str(bundle)!r}, load={{**{load!r}{', ' + extra if extra else ''}}})"


# ---------------------------------------------------------------------------------------------- cases
def flip_cases(ctx, base: Path, cases_dir: Path) -> list[dict]:
    m = _manifest(base)
    names = sorted(m["files"])
    limit = ctx.flip_files
    if len(names) > limit:
        names = [names[round(i * (len(names) - 1) / (limit - 1))] for i in range(limit)] if limit > 1 else names[:1]
    out = []
    for i, name in enumerate(names):
        size = (base / name).stat().st_size
        if size == 0:
            continue
        offset = int(hashlib.sha256(name.encode()).hexdigest()[:12], 16) % size
        b = clone(base, cases_dir / f"flip{i}.mmedge", real=[name])
        with open(b / name, "r+b") as f:
            f.seek(offset)
            byte = f.read(1)[0]
            f.seek(offset)
            f.write(bytes([byte ^ 0xFF]))
        out.append({"group": "flipped byte", "case": f"{name} @ {offset}", "expected": "refused",
                    "code": _load_code(b, _backend_of(m, name))})
    if not ctx.quick:  # the hash updated as an attacker would: the backend's own parser meets the damage
        targets = [n for n in names if n.endswith((".bin", ".pte", ".onnx"))][:6]
        for i, name in enumerate(targets):
            for j in range(ctx.rehashed_flips // 2 or 1):
                b = clone(base, cases_dir / f"reflip{i}-{j}.mmedge", real=[name])
                data = bytearray((b / name).read_bytes())
                offset = int(hashlib.sha256(f"{name}:{j}".encode()).hexdigest()[:12], 16) % len(data)
                data[offset] ^= 0xFF
                _replace(b / name, bytes(data))
                mm = _manifest(b)
                _rehash(b, mm, name)
                _write_manifest(b, mm)
                out.append({"group": "flipped byte, hash updated", "case": f"{name} @ {offset}",
                            "expected": None, "code": _load_code(b, _backend_of(m, name))})
    return out


def _caption_mutations(value, canary_rel: str):
    for kind, mutation in mutations(value):
        if mutation == "../../etc/passwd":
            mutation = canary_rel
        yield kind, mutation


def tamper_cases(ctx, base: Path, cases_dir: Path, canaries: Canaries) -> tuple[list[dict], int]:
    original = _manifest(base)
    kinds, seen = [], set()
    for path in leaves(original):
        if path and shape(path) not in seen:
            seen.add(shape(path))
            kinds.append(path)
    total = len(kinds)
    if ctx.tamper_kinds and len(kinds) > ctx.tamper_kinds:
        n = ctx.tamper_kinds
        kinds = [kinds[round(i * (len(kinds) - 1) / (n - 1))] for i in range(n)]
    secret = canaries.text("tamper")
    out, n = [], 0
    for path in kinds:
        value = original
        for key in path:
            value = value[key]
        b_path = cases_dir / f"t{n}.mmedge"
        canary_rel = os.path.relpath(secret, b_path)
        backend = "auto"  # a field of one artifact: loaded with that artifact's runtime
        if path[0] == "artifacts" and original["artifacts"][path[1]]["runtime"] in ("onnxruntime", "executorch"):
            backend = original["artifacts"][path[1]]["runtime"]
        for kind, mutation in list(_caption_mutations(value, canary_rel)) + [("delete", "<delete>")]:
            m = json.loads(json.dumps(original))
            set_path(m, path, mutation, delete=kind == "delete")
            b = clone(base, cases_dir / f"t{n}.mmedge")
            _write_manifest(b, json.dumps(m))
            n += 1
            out.append({"group": "tamper", "case": f"{'/'.join(map(str, shape(path)))}: {kind} {repr(mutation)[:30]}",
                        "field": "/".join(map(str, shape(path))), "mutation": kind, "expected": GENERIC_EXPECTED,
                        "code": _load_code(b, backend)})
    return out, total


def named_cases(ctx, base: Path, cases_dir: Path) -> list[dict]:
    """The fields the issue names, each expected refused (the load-time checks and self-check)."""
    original = _manifest(base)
    heads = original["decoder"]["num_heads"]
    size = original["model"]["config"]["image_size"]
    weights = (_onnx_artifact(original) or {}).get("external_data") or _stage_file(original)
    text = json.dumps(original)

    def edit(change):
        def make(b: Path) -> None:
            m = json.loads(text)
            change(m)
            _write_manifest(b, m)
        return make

    def raw(replace_from: str, replace_to: str):
        def make(b: Path) -> None:
            body = json.dumps(json.loads(text), indent=1)
            assert replace_from in body, replace_from
            _write_manifest(b, body.replace(replace_from, replace_to, 1))
        return make

    def sparse(b: Path) -> None:  # a listed file made a 50 GB sparse file with its size in `files`
        m = json.loads(text)
        target = b / weights
        target.unlink()
        with open(target, "wb") as f:
            f.truncate(50 * 10 ** 9)
        m["files"][weights]["bytes"] = 50 * 10 ** 9
        _write_manifest(b, m)

    def pop(*keys):
        def change(m):
            t = m
            for k in keys[:-1]:
                t = t[k]
            t.pop(keys[-1])
        return change

    def put(value, *keys):
        def change(m):
            t = m
            for k in keys[:-1]:
                t = t[k]
            t[keys[-1]] = value
        return change

    cases = [
        (f"decoder.num_heads {heads} -> {heads * 2}", edit(put(heads * 2, "decoder", "num_heads"))),
        (f"decoder.num_heads {heads} -> 1", edit(put(1, "decoder", "num_heads"))),
        ("decoder.num_heads 0", edit(put(0, "decoder", "num_heads"))),
        ("decoder.head_dim doubled", edit(put(original["decoder"]["head_dim"] * 2, "decoder", "head_dim"))),
        ("decoder.dim doubled", edit(put(original["decoder"]["dim"] * 2, "decoder", "dim"))),
        ("decoder.max_len 10**6 (and tokenizer.max_length)",
         edit(lambda m: (m["decoder"].__setitem__("max_len", 10 ** 6),
                         m["tokenizer"].__setitem__("max_length", 10 ** 6)))),
        ("model.config.image_size 100000", edit(put(100000, "model", "config", "image_size"))),
        (f"model.config.image_size {size} -> {size + 8}", edit(put(size + 8, "model", "config", "image_size"))),
        ("model.config.image_size missing", edit(pop("model", "config", "image_size"))),
        ("model.config missing", edit(pop("model", "config"))),
        ("model.config.vocab_size 1", edit(put(1, "model", "config", "vocab_size"))),
        (f"files[{weights}].bytes 10**15", edit(lambda m: m["files"][weights].__setitem__("bytes", 10 ** 15))),
        (f"files[{weights}].bytes 50 GB, the file a 50 GB sparse file", sparse),
        ("schema_version 1.0", raw('"schema_version": 1,', '"schema_version": 1.0,')),
        ("schema_version \"1\"", edit(put("1", "schema_version"))),
        ("schema_version 2", edit(put(2, "schema_version"))),
        ("tokenizer.kind wordpiece (the file is a word tokenizer)", edit(put("wordpiece", "tokenizer", "kind"))),
        ("tokenizer.kind bogus", edit(put("bogus", "tokenizer", "kind"))),
        ("tokenizer.eos_id 10**9", edit(put(10 ** 9, "tokenizer", "eos_id"))),
        ("keep_ratios gains 0.25 (not exported)", edit(lambda m: m["keep_ratios"].append(0.25))),
        ("thresholds.kv bogus", edit(put("bogus", "thresholds", "kv"))),
        ("thresholds.policy sometimes", edit(put("sometimes", "thresholds", "policy"))),
        ("a duplicate key (two \"kind\")", raw('"kind": "caption",', '"kind": "caption", "kind": "caption",')),
        ("manifest with a byte-order mark", lambda b: (b / "manifest.json").write_bytes(
            b"\xef\xbb\xbf" + (b / "manifest.json").read_bytes())),
    ]
    out = []
    for i, (name, make) in enumerate(cases):
        b = clone(base, cases_dir / f"named{i}.mmedge", real=[weights] if "sparse" in name else [])
        make(b)
        out.append({"group": "named field", "case": name, "expected": "refused",
                    "code": _load_code(b), "timeout": ctx.case_timeout})
    return out


def _relocate_external(graph: Path, location: str) -> bool:
    """Point every external initializer of an ONNX graph at `location`; False when onnx is missing."""
    try:
        import onnx
    except ImportError:
        return False
    model = onnx.load(str(graph), load_external_data=False)
    for t in model.graph.initializer:
        for entry in t.external_data:
            if entry.key == "location":
                entry.value = location
    data = model.SerializeToString()
    _replace(graph, data)
    return True


def attack_cases(ctx, base: Path, cases_dir: Path, canaries: Canaries) -> list[dict]:
    original = _manifest(base)
    art = _onnx_artifact(original)
    stage = _stage_file(original)
    tok = original["tokenizer"]["file"]
    weights = art.get("external_data") if art else None
    secret = canaries.text("attack")
    tok_copy = canaries.copy(base / tok, "tokenizer")
    stage_copy = canaries.copy(base / stage, "stage")
    weights_copy = canaries.copy(base / weights, "weights") if weights else None
    manifest_copy = canaries.copy(base / "manifest.json", "manifest")
    text = json.dumps(original)

    def edit(change):
        def make(b: Path) -> None:
            m = json.loads(text)
            change(m, b)
            _write_manifest(b, m)
        return make

    def set_stage(value_of):
        def change(m, b):
            a = _onnx_artifact(m)
            first = next(iter(a["stages"]))
            a["stages"][first]["file"] = value_of(b)
        return change

    def link(rel_name: str, target_of):
        def make(b: Path) -> None:
            (b / rel_name).unlink()
            (b / rel_name).symlink_to(target_of(b))
        return make

    def fifo(rel_name: str):
        def make(b: Path) -> None:
            (b / rel_name).unlink()
            os.mkfifo(b / rel_name)
        return make

    def manifest_as(kind: str):
        def make(b: Path) -> None:
            (b / "manifest.json").unlink()
            if kind == "fifo":
                os.mkfifo(b / "manifest.json")
            elif kind == "dev_zero":
                (b / "manifest.json").symlink_to("/dev/zero")
            elif kind == "directory":
                (b / "manifest.json").mkdir()
            else:
                (b / "manifest.json").symlink_to(manifest_copy)
        return make

    def add(rel_name: str, what: str):
        def make(b: Path) -> None:
            p = b / rel_name
            p.parent.mkdir(parents=True, exist_ok=True)
            if what == "file":
                p.write_text("an unlisted file\n")
            elif what == "dir":
                p.mkdir()
            else:
                p.symlink_to(secret)
        return make

    def folder_link(b: Path) -> None:
        target = canaries.folder("onnx")
        shutil.copytree(b / "onnx", target)
        shutil.rmtree(b / "onnx")
        (b / "onnx").symlink_to(target)

    def external(where: str):
        def make(b: Path) -> None:
            graph = b / stage
            if where == "canary (relative ..)":
                location = os.path.relpath(weights_copy, graph.parent)
            elif where == "canary (absolute)":
                location = str(weights_copy)
            else:  # an unlisted copy inside the bundle
                shutil.copy(b / weights, graph.parent / "unlisted-weights.bin")
                location = "unlisted-weights.bin"
            _relocate_external(graph, location)
            m = json.loads(text)
            _rehash(b, m, stage)
            _write_manifest(b, m)
        return make

    def nested(levels: int):
        def make(b: Path) -> None:
            body = json.dumps(json.loads(text))
            _write_manifest(b, body[:-1] + ', "deep": ' + "[" * levels + "]" * levels + "}")
        return make

    def missing(n: int):
        def make(b: Path) -> None:
            m = json.loads(text)
            m["files"].update({f"x/{i}": {"sha256": "0" * 64, "bytes": 1} for i in range(n)})
            _write_manifest(b, json.dumps(m, separators=(",", ":")))
        return make

    cases = [
        ("stage file absolute (a canary)", edit(set_stage(lambda b: str(secret)))),
        ("stage file '../' to a canary", edit(set_stage(lambda b: os.path.relpath(secret, b)))),
        ("stage file 'onnx/../../' to a canary",
         edit(set_stage(lambda b: "onnx/" + os.path.relpath(secret, b / "onnx")))),
        ("tokenizer file absolute (a canary)", edit(lambda m, b: m["tokenizer"].__setitem__("file", str(tok_copy)))),
        ("files lists '../' a canary", edit(lambda m, b: m["files"].__setitem__(
            os.path.relpath(secret, b), {"sha256": hashlib.sha256(secret.read_bytes()).hexdigest(),
                                         "bytes": secret.stat().st_size}))),
        ("tokenizer.json a link to a canary (same bytes + marker)", link(tok, lambda b: tok_copy)),
        ("stage file a link to a canary (same bytes)", link(stage, lambda b: stage_copy)),
        ("onnx/ folder a link outside", folder_link),
        ("manifest.json a link to a canary (same bytes)", manifest_as("link")),
        ("manifest.json a FIFO", manifest_as("fifo")),
        ("manifest.json a link to /dev/zero", manifest_as("dev_zero")),
        ("manifest.json a directory", manifest_as("directory")),
        ("tokenizer.json a FIFO", fifo(tok)),
        ("stage file a FIFO", fifo(stage)),
        ("an unlisted file", add("notes.txt", "file")),
        ("an unlisted folder", add("extra/", "dir")),
        ("an unlisted link to a canary", add("onnx/fp32/secret.txt", "link")),
        ("nesting 100,000 levels", nested(100_000)),
        ("files: 400,000 missing entries", missing(400_000)),
    ]
    if weights:
        cases += [
            ("weights file a link to a canary (same bytes)", link(weights, lambda b: weights_copy)),
            ("weights file a FIFO", fifo(weights)),
            ("external_data '../' a canary (manifest)", edit(lambda m, b: _onnx_artifact(m).__setitem__(
                "external_data", os.path.relpath(weights_copy, b)))),
            ("a graph's external data: a canary via '..' (hash updated)", external("canary (relative ..)")),
            ("a graph's external data: a canary by absolute path (hash updated)", external("canary (absolute)")),
            ("a graph's external data: an unlisted file in the bundle (hash updated)", external("unlisted")),
        ]
    out = []
    for i, (name, make) in enumerate(cases):
        b = clone(base, cases_dir / f"attack{i}.mmedge")
        try:
            make(b)
        except Exception as exc:  # noqa: BLE001 - a case that cannot be made here is listed, not fatal
            out.append({"group": "attack", "case": name, "skipped": f"{type(exc).__name__}: {exc}"[:120]})
            continue
        out.append({"group": "attack", "case": name, "expected": ATTACK_EXPECTED, "code": _load_code(b)})
    return out


def weight_cases(ctx, base: Path, cases_dir: Path) -> list[dict]:
    original = _manifest(base)
    art = _onnx_artifact(original)
    weights = art.get("external_data") if art else None
    if not weights:
        return [{"group": "weights", "case": "NaN weights", "skipped": "no ONNX external weights file"}]
    out = []
    for name, fill, expected in (("every weight NaN", b"\x00\x00\xc0\x7f", "refused"),
                                 ("every weight +Infinity", b"\x00\x00\x80\x7f", "refused"),
                                 ("every weight 0.0 (finite: a control)", b"\x00\x00\x00\x00", "loaded")):
        b = clone(base, cases_dir / f"weights-{len(out)}.mmedge")
        size = (b / weights).stat().st_size
        _replace(b / weights, (fill * (size // 4 + 1))[:size])
        m = json.loads(json.dumps(original))
        _rehash(b, m, weights)
        _write_manifest(b, m)
        out.append({"group": "weights", "case": f"{name} ({weights}, hash updated)", "expected": expected,
                    "code": _load_code(b, "onnxruntime")})
    return out


def argument_cases(ctx, base: Path, classifier: Path | None) -> list[dict]:
    b = repr(str(base))
    calls = [
        ("caption(policy='full')", f"result = engine({b}).caption(IMG, policy='full').text", "result"),
        ("caption(policy='max_probability')", f"result = engine({b}).caption(IMG, policy='max_probability').text",
         "result"),
        ("caption(policy=Policy('patience', patience=2))",
         f"result = engine({b}).caption(IMG, policy=Policy('patience', patience=2)).text", "result"),
        ("caption(policy='sometimes')", f"result = engine({b}).caption(IMG, policy='sometimes')", "typed error"),
        ("caption(policy=3)", f"result = engine({b}).caption(IMG, policy=3)", "typed error"),
        ("caption(policy={'kind': 'full'})", f"result = engine({b}).caption(IMG, policy={{'kind': 'full'}})",
         "typed error"),
        ("caption(keep_ratio='abc')", f"result = engine({b}).caption(IMG, keep_ratio='abc')", "typed error"),
        ("caption(keep_ratio='1.0')", f"result = engine({b}).caption(IMG, keep_ratio='1.0')", "typed error"),
        ("caption(keep_ratio=[1.0])", f"result = engine({b}).caption(IMG, keep_ratio=[1.0])", "typed error"),
        ("caption(keep_ratio=nan)", f"result = engine({b}).caption(IMG, keep_ratio=nan)", "typed error"),
        ("caption(keep_ratio=True)", f"result = engine({b}).caption(IMG, keep_ratio=True)", "typed error"),
        ("caption(keep_ratio=0.3) not exported", f"result = engine({b}).caption(IMG, keep_ratio=0.3)", "typed error"),
        ("caption(keep_ratio=1.0)", f"result = engine({b}).caption(IMG, keep_ratio=1.0).text", "result"),
        ("caption(max_len=0)", f"result = engine({b}).caption(IMG, max_len=0)", "typed error"),
        ("caption(max_len=-1)", f"result = engine({b}).caption(IMG, max_len=-1)", "typed error"),
        ("caption(max_len=2.5)", f"result = engine({b}).caption(IMG, max_len=2.5)", "typed error"),
        ("caption(max_len='5')", f"result = engine({b}).caption(IMG, max_len='5')", "typed error"),
        ("caption(max_len=True)", f"result = engine({b}).caption(IMG, max_len=True)", "typed error"),
        ("caption(max_len=10**9)", f"result = engine({b}).caption(IMG, max_len=10**9).text", "result or typed error"),
        ("caption(max_len=2)", f"result = engine({b}).caption(IMG, max_len=2).text", "result"),
        ("caption(beam=0)", f"result = engine({b}).caption(IMG, beam=0)", "typed error"),
        ("caption(beam=-1)", f"result = engine({b}).caption(IMG, beam=-1)", "typed error"),
        ("caption(beam='2')", f"result = engine({b}).caption(IMG, beam='2')", "typed error"),
        ("caption(beam=2.5)", f"result = engine({b}).caption(IMG, beam=2.5)", "typed error"),
        ("caption(beam=3)", f"result = engine({b}).caption(IMG, beam=3).text", "result"),
        ("caption(kv='bogus')", f"result = engine({b}).caption(IMG, kv='bogus')", "typed error"),
        ("caption(image=None)", f"result = engine({b}).caption(None)", "typed error"),
        ("caption(image='missing.png')", f"result = engine({b}).caption('no-such-image.png')", "typed error"),
        ("Engine.load(keep_ratio='abc')", f"result = caption({b}, load={{'keep_ratio': 'abc'}})", "typed error"),
        ("Engine.load(keep_ratio=[1.0])", f"result = caption({b}, load={{'keep_ratio': [1.0]}})", "typed error"),
        ("Engine.load(keep_ratio=0.3) not exported", f"result = caption({b}, load={{'keep_ratio': 0.3}})",
         "typed error"),
        ("Engine.load(policy='full')", f"result = caption({b}, load={{'policy': 'full'}})", "result"),
        ("Engine.load(policy='sometimes')", f"result = caption({b}, load={{'policy': 'sometimes'}})", "typed error"),
        ("Engine.load(policy=3)", f"result = caption({b}, load={{'policy': 3}})", "typed error"),
        ("Engine.load(mode='staged')", f"result = caption({b}, load={{'mode': 'staged'}})", "result"),
        ("Engine.load(mode='in-graph') (no in-graph graphs)", f"result = caption({b}, load={{'mode': 'in-graph'}})",
         "typed error"),
        ("Engine.load(mode='bogus')", f"result = caption({b}, load={{'mode': 'bogus'}})", "typed error"),
        ("Engine.load(fmt='ort') (no such artifact)", f"result = caption({b}, load={{'fmt': 'ort'}})",
         "typed error"),
        ("Engine.load(fmt='zip')", f"result = caption({b}, load={{'fmt': 'zip'}})", "typed error"),
        ("Engine.load(fmt='onnx')", f"result = caption({b}, load={{'fmt': 'onnx'}})", "result"),
        ("Engine.load(threads=0)", f"result = caption({b}, load={{'threads': 0}})", "typed error"),
        ("Engine.load(verify_key=b'garbage')", f"result = caption({b}, load={{'verify_key': b'garbage'}})",
         "typed error"),
        ("predict() on a captioning engine", f"result = engine({b}).predict(IMG, 'what ?')", "typed error"),
    ]
    if classifier is not None:  # the classifier's mode argument (issue 31, defect 15)
        c = repr(str(classifier))
        calls += [
            ("classifier: Engine.load(mode='auto', keep_ratio=an exported ratio without in-graph graphs)",
             f"import json\nm = json.load(open({c} + '/manifest.json'))\n"
             f"r = m['keep_ratios'][-1]['keep_ratio']\nresult = Engine.load({c}, mode='auto', keep_ratio=r).keep_ratio",
             "result or typed error"),
            ("classifier: Engine.load(mode='in-graph')", f"result = Engine.load({c}, mode='in-graph').keep_ratio",
             "result or typed error"),
            ("classifier: Engine.load(mode='bogus')", f"result = Engine.load({c}, mode='bogus')", "typed error"),
        ]
    out = []
    for name, code, expected in calls:
        # a typed error includes a refusal (BundleError) for arguments
        out.append({"group": "arguments", "case": name, "expected": expected.replace("typed error",
                                                                                      "typed error or refused"),
                    "code": code, "ok": "result"})
    return out


# ---------------------------------------------------------------------------------------------- the section
def caption_bundles(ctx) -> dict:
    bundle = ensure_caption_bundle(ctx)
    work = ctx.work / "s9"
    cases_dir = work / "cases"
    cases_dir.mkdir(parents=True, exist_ok=True)
    base = work / "base.mmedge"
    shutil.copytree(bundle, base, symlinks=True)
    canaries = Canaries(work)
    tamper, kinds_total = tamper_cases(ctx, base, cases_dir, canaries)
    cases = (flip_cases(ctx, base, cases_dir) + tamper + named_cases(ctx, base, cases_dir)
             + attack_cases(ctx, base, cases_dir, canaries) + weight_cases(ctx, base, cases_dir)
             + argument_cases(ctx, base, getattr(ctx, "bundle", None)))
    skipped = [c for c in cases if "skipped" in c]
    cases = [c for c in cases if "skipped" not in c]
    for i, c in enumerate(cases):
        c["id"] = f"c{i}"
    bar = progress(range(len(cases)), "9 caption bundles", ctx.quiet)
    rows = run_cases(cases, work / "runs", canaries, setup=SETUP, timeout=ctx.case_timeout, bar=bar)
    bar.close()
    out_rows = []
    for c in cases:
        r = rows[c["id"]]
        row = {"group": c["group"], "case": c["case"], "expected": c.get("expected"), "outcome": r["outcome"],
               "error": r["error"], "seconds": r["seconds"], "read_outside": r["read_outside"]}
        if r["read_outside"]:
            row["read_by"] = r["read_by"]
        if "mutation" in c:  # the many tamper rows stay short: a message only where something is wrong
            row["mutation"] = c["mutation"]
            row["message"] = r["message"][:200] if case_problem(row) else ""
        else:
            row["message"] = r["message"][:200] or r["result"][:80]
        out_rows.append(row)
    field_kinds = len({c["field"] for c in cases if "field" in c})
    shutil.rmtree(cases_dir, ignore_errors=True)
    groups = {}
    for r in out_rows:
        groups.setdefault(r["group"], []).append(r)
    summary = {g: {"cases": len(rs), "counts": count_rows(rs), "result": section_result(rs)}
               for g, rs in groups.items()}
    manifest = _manifest(bundle)
    return {"bundle": rel(bundle), "artifacts": sorted(f"{a['runtime']}/{a['precision']}"
                                                         for a in manifest["artifacts"]),
            "files_listed": len(manifest["files"]), "field_kinds": field_kinds,
            "field_kinds_in_manifest": kinds_total,
            "inotify": next(iter(rows.values()), {}).get("inotify_active", False),
            "groups": summary, "counts": count_rows(out_rows), "result": section_result(out_rows),
            "skipped": [f"{c['case']}: {c['skipped']}" for c in skipped],
            "problems": [{**r, "problem": case_problem(r)} for r in out_rows if case_problem(r)],
            "cases": out_rows}


# ---------------------------------------------------------------------------------------------- report
GROUP_TITLES = {"flipped byte": "flipped byte in a listed file", "flipped byte, hash updated":
                "flipped byte, hash updated (child process)", "tamper": "manifest tamper (wrong type, out of "
                "range, delete)", "named field": "named fields (num_heads, image_size, bytes, schema_version, "
                "tokenizer.kind, ...)", "attack": "path and special-file attacks", "weights":
                "NaN / Infinity weights, hashes updated", "arguments": "odd caption() / Engine.load arguments"}


def summary_rows(s: dict) -> list[list]:
    rows = []
    for g, v in s.get("groups", {}).items():
        rows.append(["9", f"captioning: {GROUP_TITLES.get(g, g)}", n_cases(v['cases']), v["result"],
                     words(v["counts"])])
    return rows


def defects(s: dict) -> list[str]:
    return [f"captioning bundle, {p['group']} '{p['case']}': {p['problem']} ({p['error'] or '-'}: "
            f"{p['message'][:160]})" for p in s.get("problems", [])]


def totals(s: dict) -> dict:
    return case_totals(s.get("cases", []))


def render(s: dict, table) -> list[str]:
    if "cases" not in s:
        return []
    lines = [f"## {TITLE}", "",
             f"Bundle `{s['bundle']}` ({', '.join(s['artifacts'])}; {s['files_listed']} listed files). Every case "
             "on its own copy of the bundle, in a child process (timeout, memory limit), `Engine.load` + one "
             "`caption()`; canaries outside the bundle (read outside: audit hook"
             + (", inotify" if s.get("inotify") else "") + ", marker in the output). "
             f"Tamper: {s['field_kinds']} of the manifest's {s['field_kinds_in_manifest']} field kinds. "
             "*expected* empty: loaded, refused or typed error are all fine.", ""]
    lines += table(["group", "cases", "counts", "result"],
                   [[g, v["cases"], words(v["counts"]), v["result"]] for g, v in s["groups"].items()]) + [""]
    tamper = [r for r in s["cases"] if r["group"] == "tamper"]
    if tamper:
        by = {}
        for r in tamper:
            by.setdefault(r["mutation"], []).append(r["outcome"])
        lines += table(["tamper mutation", "counts"], [[m, words(tally(v))] for m, v in by.items()]) + [""]
    shown = [r for r in s["cases"] if r["group"] != "tamper" or case_problem(r)]
    lines += table(["group", "case", "expected", "outcome", "error", "s", "read outside", "message / caption"],
                   [[r["group"], r["case"], r["expected"] or "-", r["outcome"], r["error"] or "-", r["seconds"],
                     ", ".join(r["read_outside"]) or "-", r["message"][:90]] for r in shown]) + [""]
    if s.get("skipped"):
        lines += ["Not made here: " + "; ".join(s["skipped"]) + ".", ""]
    return lines

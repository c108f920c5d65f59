"""A bundle is untrusted input: paths, links, special files, sizes, nesting, internal consistency,
signatures, and a tamper suite over every field of a real manifest. Also the export and
calibration writes that must never lose data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mmedge.bundle.manifest import MAX_DEPTH, load_manifest, write_manifest
from mmedge.errors import BundleError, MMEdgeError

pytestmark = pytest.mark.slow
IMAGE = np.zeros((48, 48, 3), np.uint8)
QUESTION = "is there a red circle ?"


@pytest.fixture
def copy(tiny_bundle, tmp_path) -> Path:
    out = tmp_path / "copy.mmedge"
    shutil.copytree(tiny_bundle, out)
    return out


def _edit(bundle: Path, change) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    change(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def _first_onnx_stage(manifest: dict) -> dict:
    artifact = next(a for a in manifest["artifacts"] if a["format"] == "onnx" and a["precision"] == "fp32")
    return artifact["stages"][next(iter(artifact["stages"]))]


# ------------------------------------------------------------------------------ paths and files
@pytest.mark.parametrize("bad", ["/etc/passwd", "../x.onnx", "onnx/../../x.onnx", "onnx//fp32/a.onnx", "./a.onnx",
                                 "onnx\\fp32\\a.onnx", 5, None])
def test_a_stage_path_outside_the_bundle_is_refused_before_anything_is_opened(copy, bad):
    _edit(copy, lambda m: _first_onnx_stage(m).__setitem__("file", bad))
    with pytest.raises(BundleError):
        load_manifest(copy)


def test_every_named_file_must_be_listed_with_its_hash(copy):
    _edit(copy, lambda m: (m["tokenizer"].__setitem__("file", "report.md"), m["files"].pop("report.md")))
    with pytest.raises(BundleError, match="does not list"):
        load_manifest(copy)


@pytest.mark.parametrize("field", ["int8_file", "int8_ort_file", "int8_external_data"])
def test_an_in_graph_entrys_int8_files_are_named_and_must_be_listed(copy, field):
    manifest = json.loads((copy / "manifest.json").read_text())
    key = next(iter(manifest["in_graph"]["by_keep_ratio"]))
    _edit(copy, lambda m: m["in_graph"]["by_keep_ratio"][key].__setitem__(field, "onnx/int8/missing.onnx"))
    with pytest.raises(BundleError, match=f"in_graph {key} int8.*does not list"):
        load_manifest(copy)


def test_an_empty_file_list_is_refused(copy):
    _edit(copy, lambda m: m.__setitem__("files", {}))
    with pytest.raises(BundleError, match="files"):
        load_manifest(copy)


def test_a_file_the_manifest_does_not_list_inside_a_package_directory_is_refused(copy):
    package = next(copy.glob("coreml/*.mlpackage"))
    (package / "extra.bin").write_bytes(b"smuggled")
    with pytest.raises(BundleError, match="does not list"):
        load_manifest(copy)


@pytest.mark.parametrize("link", ["tokenizer.json", "stage", "onnx_folder", "manifest.json"])
def test_symbolic_links_are_refused(copy, tmp_path, link):
    if link == "tokenizer.json":
        target = tmp_path / "outside.json"
        shutil.copy(copy / "tokenizer.json", target)  # same bytes, so only the link itself is wrong
        (copy / "tokenizer.json").unlink()
        (copy / "tokenizer.json").symlink_to(target)
    elif link == "stage":
        stage = copy / _first_onnx_stage(json.loads((copy / "manifest.json").read_text()))["file"]
        shutil.copy(stage, tmp_path / "outside.onnx")
        stage.unlink()
        stage.symlink_to(tmp_path / "outside.onnx")
    elif link == "onnx_folder":
        shutil.move(copy / "onnx", tmp_path / "onnx")
        (copy / "onnx").symlink_to(tmp_path / "onnx")
    else:
        shutil.move(copy / "manifest.json", tmp_path / "manifest.json")
        (copy / "manifest.json").symlink_to(tmp_path / "manifest.json")
    with pytest.raises(BundleError, match="link|regular file"):
        load_manifest(copy)


@pytest.mark.parametrize("special", ["dev_zero", "fifo", "directory"])
def test_a_manifest_that_is_not_a_regular_file_neither_hangs_nor_exhausts_memory(copy, special):
    manifest = copy / "manifest.json"
    manifest.unlink()
    if special == "dev_zero":
        manifest.symlink_to("/dev/zero")
    elif special == "fifo":
        os.mkfifo(manifest)  # opening it for reading would block forever without O_NONBLOCK
    else:
        manifest.mkdir()
    with pytest.raises(BundleError):
        load_manifest(copy)


def test_size_nesting_and_counts_are_bounded_with_short_messages(copy):
    text = (copy / "manifest.json").read_text()
    (copy / "manifest.json").write_text(text[:-2] + ', "deep": ' + "[" * 2000 + "]" * 2000 + "}")
    with pytest.raises(BundleError, match=f"deeper than {MAX_DEPTH}"):
        load_manifest(copy)
    (copy / "manifest.json").write_text(text[:-2] + ', "pad": "' + "x" * (9 << 20) + '"}')
    with pytest.raises(BundleError, match="over"):
        load_manifest(copy)
    (copy / "manifest.json").write_text(text)
    _edit(copy, lambda m: m["files"].update({f"x/{i}": {"sha256": "0" * 64, "bytes": 1} for i in range(70000)}))
    with pytest.raises(BundleError) as err:
        load_manifest(copy)
    assert len(str(err.value)) < 600
    (copy / "manifest.json").write_text(text)
    _edit(copy, lambda m: m["files"].update({f"y/{i}": {"sha256": "0" * 64, "bytes": 1} for i in range(2000)}))
    with pytest.raises(BundleError, match=r"missing: .*and \d+ more") as err:
        load_manifest(copy)
    assert len(str(err.value)) < 1000


def test_image_size_is_bounded_by_the_schema_and_must_match_stage_zero(copy):
    _edit(copy, lambda m: m["preprocessing"].__setitem__("image_size", 10 ** 6))
    with pytest.raises(BundleError, match="maximum"):
        load_manifest(copy)
    _edit(copy, lambda m: m["preprocessing"].__setitem__("image_size", 96))
    with pytest.raises(BundleError, match="pixel_values"):
        load_manifest(copy)


# ------------------------------------------------------------------------------ consistency
CONSISTENCY = {
    "labels short": (lambda m: m.__setitem__("labels", m["labels"][:3]), "logits for 3 labels"),
    "stages reversed": (lambda m: [k["stages"].reverse() for k in m["keep_ratios"]], "listed as stage"),
    "stages empty": (lambda m: [k.__setitem__("stages", []) for k in m["keep_ratios"]], "non-empty"),
    "bogus stage": (lambda m: m["keep_ratios"][0]["stages"].__setitem__(1, "bogus"), "does not describe"),
    "schema_version 1.0": (lambda m: m.__setitem__("schema_version", 1.0), "an integer"),
    "keep ratio twice": (lambda m: m["keep_ratios"].append(m["keep_ratios"][0]), "repeat"),
    "exit layers short": (lambda m: m.__setitem__("exit_layers", m["exit_layers"][:1]), "exit layers"),
    "calibrated ratio not exported": (lambda m: m["thresholds"].__setitem__("keep_ratio", 0.3), "not an exported"),
    "stage entry without file": (lambda m: _first_onnx_stage(m).pop("file"), "required"),
    "executorch without method": (lambda m: next(a for a in m["artifacts"] if a["runtime"] == "executorch")[
        "stages"]["k36_stage0"].pop("method"), "method"),
    "tokenizer length": (lambda m: m["tokenizer"].__setitem__("max_length", 30), "input_ids"),
}


@pytest.mark.parametrize("case", sorted(CONSISTENCY))
def test_inconsistent_manifests_are_refused_at_load(copy, case):
    change, message = CONSISTENCY[case]
    _edit(copy, change)
    with pytest.raises(BundleError, match=message):
        load_manifest(copy)


def test_stage_files_swapped_in_the_manifest_fail_the_load_self_check(copy):
    from mmedge.runtime.engine import Engine

    def swap(m):
        stages = next(a for a in m["artifacts"] if a["format"] == "onnx" and a["precision"] == "fp32")["stages"]
        stages["k36_stage0"]["file"] = stages["k36_stage1"]["file"]

    _edit(copy, swap)
    with pytest.raises(BundleError, match="test query"):
        Engine.load(copy, backend="onnxruntime")


# ------------------------------------------------------------------------------ tamper suite
def _leaves(value, path=()):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, path + (key,))
    elif isinstance(value, list) and value:
        for i, item in enumerate(value):
            yield from _leaves(item, path + (i,))
    else:
        yield path


def _shape(path) -> tuple:
    """A path with list indices and stage / file / keep-ratio names folded, so that each kind of field
    is tampered with once (the manifest repeats the same fields per stage and per artifact)."""
    return tuple("#" if isinstance(p, int) or (i and path[i - 1] in ("stages", "files", "by_keep_ratio", "ops",
                                                                        "tools", "config"))
                 else p for i, p in enumerate(path))


def _mutations(value):
    if isinstance(value, bool):
        return [not value, "yes"]
    if isinstance(value, (int, float)):
        return [-1, value * 1000 + 1, "1", None]
    if isinstance(value, str):
        return ["", "../../etc/passwd", value[::-1] + "x", 7]
    return [None, {"unexpected": 1}]


def _set(manifest, path, value, delete=False):
    target = manifest
    for key in path[:-1]:
        target = target[key]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = value


def _runtime_for(manifest, path):
    if path[0] == "artifacts":
        a = manifest["artifacts"][path[1]]
        if a["runtime"] in ("onnxruntime", "executorch", "torch"):
            return a["runtime"], a["precision"], a["format"]
    return "onnxruntime", "fp32", None


@pytest.fixture
def reused_ort_sessions(monkeypatch):
    """onnxruntime sessions made once per graph file and thread count, then handed out again: a session
    is a function of the graph file and its options, and the tamper suite edits only manifest.json, so
    its ~600 loads run the whole load path (every check, every file's hash) without re-optimising the
    same six graphs each time (two thirds of the suite's time)."""
    import onnxruntime as ort

    real, made = ort.InferenceSession, {}

    def session(path, sess_options=None, providers=None, **kwargs):
        stat = os.stat(path)
        key = (str(path), stat.st_size, stat.st_mtime_ns, sess_options.intra_op_num_threads if sess_options else None)
        if key not in made:
            made[key] = real(path, sess_options, providers=providers, **kwargs)
        return made[key]

    monkeypatch.setattr(ort, "InferenceSession", session)
    return made


def test_tamper_suite_every_field_of_the_manifest_gives_a_result_or_a_typed_error(tiny_bundle, tmp_path,
                                                                                  reused_ort_sessions):
    """Each kind of field, changed to a wrong type, an out-of-range value or deleted: loading and one
    prediction either work or raise an mmedge error, never anything else."""
    from mmedge.runtime.engine import Engine

    bundle = tmp_path / "t.mmedge"
    shutil.copytree(tiny_bundle, bundle)
    original = json.loads((tiny_bundle / "manifest.json").read_text())
    seen, outcomes, untyped = set(), {"loaded": 0, "typed": 0}, []
    for path in _leaves(original):
        if not path or _shape(path) in seen:
            continue
        seen.add(_shape(path))
        value = original
        for key in path:
            value = value[key]
        for mutation in _mutations(value) + ["<delete>"]:
            manifest = json.loads(json.dumps(original))
            _set(manifest, path, mutation, delete=mutation == "<delete>")
            (bundle / "manifest.json").write_text(json.dumps(manifest))
            backend, precision, fmt = _runtime_for(original, path)
            try:
                engine = Engine.load(bundle, backend=backend, precision=precision, fmt=fmt)
                assert engine.predict(IMAGE, QUESTION).answer in engine.labels
                outcomes["loaded"] += 1
            except MMEdgeError:
                outcomes["typed"] += 1
            except Exception as exc:  # noqa: BLE001 - what this test hunts for
                untyped.append(f"{'/'.join(map(str, path))} = {mutation!r}: {type(exc).__name__}: {exc}"[:300])
    assert len(seen) > 100 and outcomes["typed"] > 200 and outcomes["loaded"] > 200
    assert untyped == [], "\n".join(untyped[:20])
    assert 0 < len(reused_ort_sessions) <= 64  # the stand-in was used: graph files x thread counts


# ------------------------------------------------------------------------------ signatures
def test_signed_bundle_verifies_and_any_manifest_edit_is_caught(copy, tmp_path):
    from mmedge.bundle import signing
    from mmedge.runtime.engine import Engine

    private, public = signing.new_key_pair(tmp_path / "keys")
    assert oct(private.stat().st_mode & 0o777) == "0o600"
    signing.sign_bundle(copy, private)
    engine = Engine.load(copy, verify_key=public)
    assert engine.predict(IMAGE, QUESTION).answer in engine.labels
    # the attack the issue measured: labels permuted and the threshold lowered still load unsigned
    _edit(copy, lambda m: (m.__setitem__("labels", m["labels"][::-1]),
                           m["thresholds"].__setitem__("confidence", 0.0)))
    Engine.load(copy)
    with pytest.raises(signing.SignatureError, match="does not match"):
        Engine.load(copy, verify_key=public)
    _, other = signing.new_key_pair(tmp_path / "other")
    with pytest.raises(signing.SignatureError, match="another key"):
        Engine.load(copy, verify_key=other)
    (copy / "manifest.sig").unlink()
    with pytest.raises(signing.SignatureError, match="not signed"):
        Engine.load(copy, verify_key=public)
    (copy / "manifest.sig").write_text("{garbage")
    with pytest.raises(signing.SignatureError, match="malformed"):
        Engine.load(copy, verify_key=public)


def test_rewriting_the_manifest_removes_its_stale_signature(copy, tmp_path):
    from mmedge.bundle import signing

    private, public = signing.new_key_pair(tmp_path / "keys")
    signing.sign_bundle(copy, private)
    manifest = load_manifest(copy, verify_key=public)
    manifest["thresholds"]["confidence"] = 0.5
    assert write_manifest(copy, manifest) is True
    assert not (copy / "manifest.sig").exists()
    signing.sign_bundle(copy, private)
    assert load_manifest(copy, verify_key=public)["thresholds"]["confidence"] == 0.5


def test_sign_cli(copy, tmp_path, capsys):
    from mmedge.cli import main

    assert main(["sign", "--new-key", str(tmp_path / "k")]) == 0
    assert main(["sign", "--artifact", str(copy), "--key", str(tmp_path / "k" / "mmedge-signing.pem")]) == 0
    assert main(["sign", "--artifact", str(copy), "--verify", str(tmp_path / "k" / "mmedge-signing.pub.pem")]) == 0
    assert "signature valid" in capsys.readouterr().out
    _edit(copy, lambda m: m.__setitem__("name", "renamed"))
    assert main(["sign", "--artifact", str(copy), "--verify", str(tmp_path / "k" / "mmedge-signing.pub.pem")]) == 2
    assert "does not match" in capsys.readouterr().err


# ------------------------------------------------------------------------------ no data loss
FAST = dict(targets=["onnx"], keep_ratios=[1.0], parity_samples=2, in_graph=False, ort_format=False)


@pytest.mark.parametrize("kind", ["folder of notes", "file", "link to a bundle"])
def test_force_replaces_only_a_bundle(tiny_model_dir, tiny_bundle, tmp_path, kind):
    from mmedge.export.exporter import export_bundle
    from mmedge.export.recipe import ExportRecipe

    victim = tmp_path / "victim"
    if kind == "folder of notes":
        (victim / "sub").mkdir(parents=True)
        (victim / "notes.txt").write_text("important")
    elif kind == "file":
        victim.write_text("important")
    else:
        victim.symlink_to(tiny_bundle)
    with pytest.raises(BundleError, match="refusing to replace"):
        export_bundle(tiny_model_dir, victim, ExportRecipe(**FAST), force=True, log=lambda *_: None)
    if kind == "folder of notes":
        assert (victim / "notes.txt").read_text() == "important" and (victim / "sub").is_dir()
    elif kind == "file":
        assert victim.read_text() == "important"
    else:
        assert victim.is_symlink() and (tiny_bundle / "manifest.json").is_file()


KILL_BETWEEN_RENAMES = """
import os, sys
from pathlib import Path
from mmedge.fileio import publish_dir
publish_dir(Path(sys.argv[1]), Path(sys.argv[2]), between=lambda: os._exit(9))
"""


def test_a_kill_between_the_two_renames_of_a_forced_publish_is_recovered(tmp_path):
    from mmedge.fileio import recover_publish

    out, new = tmp_path / "b.mmedge", tmp_path / ".b.mmedge.partial-1-x"
    out.mkdir()
    (out / "manifest.json").write_text('{"schema_version": 1, "v": "old"}')
    new.mkdir()
    (new / "manifest.json").write_text('{"schema_version": 1, "v": "new"}')
    done = subprocess.run([sys.executable, "-c", KILL_BETWEEN_RENAMES, str(new), str(out)])
    assert done.returncode == 9
    assert not out.exists() and len(list(tmp_path.glob(".b.mmedge.old-*"))) == 1  # the state a kill leaves
    recover_publish(out)  # what the next export and every load run first
    assert json.loads((out / "manifest.json").read_text())["v"] == "old"
    assert not list(tmp_path.glob(".b.mmedge.old-*"))


def test_loading_restores_a_bundle_hidden_by_a_killed_publish(copy):
    from mmedge.runtime.engine import Engine

    hidden = copy.with_name(f".{copy.name}.old-999999999-1")  # no such process
    copy.rename(hidden)
    engine = Engine.load(copy)
    assert engine.predict(IMAGE, QUESTION).answer in engine.labels
    assert not hidden.exists()


KILL_DURING_WRITE = """
import os, sys
from pathlib import Path
from mmedge.fileio import atomic_write
atomic_write(Path(sys.argv[1]), lambda tmp: (tmp.write_text("half"), os._exit(9)))
"""


def test_a_killed_manifest_write_leaves_a_temporary_file_that_the_next_write_removes(copy):
    done = subprocess.run([sys.executable, "-c", KILL_DURING_WRITE, str(copy / "manifest.json")])
    assert done.returncode == 9
    leftovers = list(copy.glob(".manifest.json.*.tmp"))
    assert len(leftovers) == 1
    write_manifest(copy, load_manifest(copy))  # what calibrate does
    assert not list(copy.glob(".manifest.json.*.tmp"))


def test_ort_format_conversion_starts_no_child_process(tiny_bundle, tmp_path, monkeypatch):
    """A child converter would go on writing after a killed export; it runs in this process."""
    from mmedge.export import onnx_target

    source = tmp_path / "onnx"
    shutil.copytree(tiny_bundle / "onnx" / "fp32", source)

    def no_children(*args, **kwargs):
        raise AssertionError(f"a child process was started: {args[:1]}")

    monkeypatch.setattr(subprocess, "Popen", no_children)
    monkeypatch.setattr(os, "fork", no_children)
    made = onnx_target.convert_to_ort(source, tmp_path / "ort")
    assert sorted(made) == sorted(p.stem for p in source.glob("*.onnx"))
    assert all(p.stat().st_size > 0 for p in made.values())


# ------------------------------------------------------------------------------ engine arguments
def test_engine_api_misuse_is_typed(tiny_bundle):
    from mmedge.errors import ConfigError
    from mmedge.runtime.controller import Policy
    from mmedge.runtime.engine import Engine

    with pytest.raises(BundleError, match="bundle path"):
        Engine.load(None)
    for kwargs in ({"threads": -1}, {"threads": 0}, {"threads": 1.5}, {"backend": "cuda"}, {"precision": "fp16"}):
        with pytest.raises(ConfigError):
            Engine.load(tiny_bundle, **kwargs)
    engine = Engine.load(tiny_bundle, threads=1)
    full = engine.predict(IMAGE, QUESTION, policy=Policy("full"))
    by_name = engine.predict(IMAGE, QUESTION, policy="full")  # a policy name is accepted
    assert (by_name.answer, by_name.exit_index) == (full.answer, full.exit_index)
    for call in (lambda: engine.predict(IMAGE, QUESTION, keep_ratio=[0.25]),
                 lambda: engine.predict(IMAGE, QUESTION, policy=3),
                 lambda: engine.predict_batch(None),
                 lambda: engine.predict_batch([(IMAGE,)]),
                 lambda: engine.predict_batch("not pairs")):
        with pytest.raises(ConfigError):
            call()
    assert len(engine.predict_batch([(IMAGE, QUESTION)] * 2)) == 2


# ------------------------------------------------------------------ listed files rewritten (hash updated)
def _rewrite(bundle: Path, rel: str, data: bytes) -> None:
    """What an attacker can do to an unsigned bundle: change a listed file and its recorded hash."""
    import hashlib

    (bundle / rel).write_bytes(data)
    _edit(bundle, lambda m: m["files"].__setitem__(rel, {"sha256": hashlib.sha256(data).hexdigest(),
                                                         "bytes": len(data)}))


@pytest.mark.parametrize("change", ["model a list", "model a string", "max_length Infinity", "max_length 0",
                                    "vocab a list"])
def test_a_malformed_tokenizer_with_its_hash_updated_is_a_bundle_error(copy, change):
    from mmedge.runtime.engine import Engine

    data = json.loads((copy / "tokenizer.json").read_text())
    if change == "model a list":
        data["model"] = [1, 2]
    elif change == "model a string":
        data["model"] = "WordLevel"
    elif change == "vocab a list":
        data["model"]["vocab"] = [["a", 1]]
    else:
        data["truncation"]["max_length"] = float("inf") if "Infinity" in change else 0
    _rewrite(copy, "tokenizer.json", json.dumps(data).encode())
    with pytest.raises(BundleError, match="tokenizer"):
        Engine.load(copy)


def test_a_file_that_is_not_an_executorch_program_is_refused_before_the_native_loader(copy):
    """Random bytes made ExecuTorch's loader abort the whole process (SIGABRT); now a BundleError."""
    from mmedge.runtime.engine import Engine

    rel = next(a["file"] for a in json.loads((copy / "manifest.json").read_text())["artifacts"]
               if a["runtime"] == "executorch" and a["precision"] == "fp32")
    _rewrite(copy, rel, np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(BundleError, match="not an ExecuTorch program"):
        Engine.load(copy, backend="executorch")


def test_reexporting_the_same_weights_keeps_the_calibrated_thresholds(tiny_model_dir, tmp_path):
    from mmedge.export.exporter import export_bundle
    from mmedge.export.recipe import ExportRecipe

    out = tmp_path / "b.mmedge"
    export_bundle(tiny_model_dir, out, ExportRecipe(**FAST), log=lambda *_: None)
    manifest = load_manifest(out)
    manifest["thresholds"].update(source="calibrated", policy="max_probability", max_probability=0.77)
    write_manifest(out, manifest)
    export_bundle(tiny_model_dir, out, ExportRecipe(**FAST), force=True, log=lambda *_: None)
    thresholds = load_manifest(out)["thresholds"]
    assert (thresholds["source"], thresholds["policy"], thresholds["max_probability"]) == \
        ("calibrated", "max_probability", 0.77)

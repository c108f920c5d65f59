"""Smoke runs of benchmarks/hardening_audit.py in --quick mode on tiny bundles: every section runs,
finds no untyped error, hang, crash, data loss or read outside, and the outputs name no absolute
path; and the probe the later sections rest on sees what it claims to (reads outside, hangs, lost
files)."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _audit_module():
    spec = importlib.util.spec_from_file_location("hardening_audit", ROOT / "benchmarks" / "hardening_audit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check_outputs(out: Path, tmp_path: Path) -> tuple[dict, str]:
    text = (out / "audit.json").read_text()
    markdown = (out / "audit.md").read_text()
    for written in (text, markdown):  # repo-relative paths only
        assert str(tmp_path) not in written and str(ROOT) not in written and "/tmp/" not in written
    assert markdown.startswith("# mmedge hardening audit") and "## Summary" in markdown
    return json.loads(text), markdown


@pytest.mark.slow
def test_quick_hardening_audit_finds_no_untyped_error_or_hang(tiny_bundle, tiny_model_dir, tmp_path):
    audit = _audit_module()
    out = tmp_path / "hardening"
    audit.main(["--bundle", str(tiny_bundle), "--model", str(tiny_model_dir), "--out", str(out), "--quick",
                "--quiet", "--sections", "1-8"])
    report, _ = _check_outputs(out, tmp_path)

    assert list(report["sections"]) == list(audit.SECTIONS[:8])
    for name, section in report["sections"].items():
        assert not section["result"].startswith(("audit section failed", "not run")), (name, section["result"])
    assert report["totals"]["untyped"] == 0 and report["totals"]["hang"] == 0, report["defects"]
    assert report["totals"]["crash"] == 0, report["defects"]
    assert report["quick"] and report["machine"]["cpu_count"] >= 1 and report["mmedge_commit"] and report["date"]
    s = report["sections"]
    assert s["flipped_bytes"]["counts"] == {"refused": s["flipped_bytes"]["files_tested"]}
    assert s["tamper"]["counts"]["untyped error"] == 0 and s["tamper"]["mutations"] > 0
    assert all(c["outcome"] == "refused" for c in s["path_attacks"]["cases"])
    for backend in ("onnxruntime", "executorch"):
        assert s["odd_inputs"]["by_backend"][backend]["counts"]["untyped error"] == 0
        assert s["concurrency"]["by_backend"][backend]["mismatches"] == 0
    assert s["api_misuse"]["unexpected"] == []
    kills = s["export_kills"]
    assert kills["fresh"]["final_export"]["loads"] and kills["fresh"]["final_export"]["leftovers_after"] == 0
    assert kills["replace"]["not_loadable_after_recovery"] == 0
    assert s["signing"]["tampered_with_key"] == "refused" and s["signing"]["tampered_unsigned_mode"] == "loaded"


@pytest.mark.slow
def test_quick_later_sections_find_no_data_loss_read_outside_or_untyped_error(tiny_bundle, tiny_model_dir,
                                                                              tmp_path):
    """Sections 9-12 (captioning bundles, datasets, signing across kinds, --force look-alikes) on a tiny
    captioner trained and exported by the audit itself."""
    audit = _audit_module()
    out = tmp_path / "hardening"
    audit.main(["--bundle", str(tiny_bundle), "--model", str(tiny_model_dir), "--out", str(out), "--quick",
                "--quiet", "--sections", "9-12", "--captioner", "tiny", "--caption-bundle",
                str(tmp_path / "caption.mmedge")])
    report, markdown = _check_outputs(out, tmp_path)

    assert list(report["sections"]) == ["caption_bundles", "datasets", "signing_kinds", "writers"]
    for name, section in report["sections"].items():
        assert not section["result"].startswith(("audit section failed", "not run")), (name, section["result"])
        assert section["cases"], name
    totals = report["totals"]
    assert totals == {**totals, "untyped": 0, "hang": 0, "crash": 0, "data_loss": 0, "read_outside": 0}, \
        report["defects"]
    assert report["defects"] == []
    s = report["sections"]
    groups = s["caption_bundles"]["groups"]
    assert {"flipped byte", "tamper", "named field", "attack", "weights", "arguments"} <= set(groups)
    assert groups["flipped byte"]["counts"]["refused"] == groups["flipped byte"]["cases"]
    assert set(s["datasets"]["sources"]) == {"jsonl", "vqa2", "gqa", "nlvr2", "coco", "cc"}
    assert any(r["case"] == "image a FIFO" for r in s["datasets"]["cases"])
    honest = [r for r in s["signing_kinds"]["cases"] if r["case"] == "honest signed bundle" and r["how"] == "key"]
    assert {r["kind"] for r in honest} == {"classifier", "caption"} and all(r["outcome"] == "loaded" for r in honest)
    assert any(r["case"].startswith("rollback") and r["outcome"] == "refused" for r in s["signing_kinds"]["cases"])
    writers = s["writers"]["cases"]
    assert any(r["outcome"] == "done" for r in writers)  # the honest controls ran
    assert all(r.get("loads_after", "yes") == "yes" for r in writers)
    for title in ("9. Captioning bundles", "10. Datasets", "11. Signing across kinds", "12. --force look-alikes"):
        assert f"## {title}" in markdown
    assert "data loss: 0; reads outside: 0" in markdown


def test_the_probe_sees_reads_outside_hangs_crashes_and_data_loss(tmp_path):
    """What sections 9-12 count rests on benchmarks/hardening/probe.py: a canary read through a link
    (audit hook and inotify), by a native reader (inotify only), a marker leaked in an error, a FIFO
    that blocks (a hang, and the batch goes on), a child killed by a signal (a crash), an untyped error,
    and a file changed or removed (data loss) unless the command was allowed to replace it."""
    from benchmarks.hardening.probe import Canaries, lost, run_cases, snapshot

    canaries = Canaries(tmp_path)
    secret, image = canaries.text(), canaries.image()
    root = tmp_path / "root"
    root.mkdir()
    (root / "link.txt").symlink_to(secret)
    os.mkfifo(root / "fifo")
    cases = [
        {"id": "clean", "code": "result = 1 + 1"},
        {"id": "link", "code": f"result = open({str(root / 'link.txt')!r}).read()[:3]"},
        {"id": "pillow", "code": f"from PIL import Image\nresult = Image.open({str(image)!r}).size"},
        {"id": "native", "code": f"import subprocess\nsubprocess.run(['cat', {str(root / 'link.txt')!r}], "
                                 "capture_output=True)"},
        {"id": "leak", "code": f"raise ValueError(open({str(secret)!r}).read())"},
        {"id": "fifo", "code": f"open({str(root / 'fifo')!r}).read()", "timeout": 2},
        {"id": "after", "code": "result = 2"},
        {"id": "crash", "code": "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)"},
        {"id": "cli", "argv": ["sign", "--new-key", "/proc/nope/x"]},
    ]
    rows = run_cases(cases, tmp_path / "runs", canaries, timeout=60)
    assert rows["clean"]["outcome"] == "loaded" and not rows["clean"]["read_outside"]
    assert rows["link"]["read_outside"] == [secret.name] and "audit hook" in rows["link"]["read_by"]
    assert rows["pillow"]["read_outside"] == [image.name]
    if rows["native"]["inotify_active"]:
        assert rows["native"]["read_by"] == ["inotify"]
    assert rows["leak"]["outcome"] == "untyped error" and "marker in output" in rows["leak"]["read_by"]
    assert rows["fifo"]["outcome"] == "hang" and rows["after"]["outcome"] == "loaded"
    assert rows["crash"]["outcome"] == "crash"
    assert rows["cli"]["outcome"] == "refused" and rows["cli"]["error"] == "usage"

    (root / "keep.txt").write_text("a")
    (root / "gone.txt").write_text("b")
    (root / "replace").mkdir()
    (root / "replace" / "old.txt").write_text("c")
    before = snapshot([root])
    (root / "keep.txt").write_text("changed")
    (root / "gone.txt").unlink()
    (root / "replace" / "old.txt").write_text("new")
    found = lost(before, snapshot([root]), allowed=[root / "replace"])
    assert found == [f"{root / 'gone.txt'} (gone)", f"{root / 'keep.txt'} (changed)"]

"""Smoke run of benchmarks/hardening_audit.py in --quick mode on the tiny bundle: every section runs,
finds no untyped error and no hang, and the outputs name no absolute path."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def _audit_module():
    spec = importlib.util.spec_from_file_location("hardening_audit", ROOT / "benchmarks" / "hardening_audit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_hardening_audit_finds_no_untyped_error_or_hang(tiny_bundle, tiny_model_dir, tmp_path):
    audit = _audit_module()
    out = tmp_path / "hardening"
    audit.main(["--bundle", str(tiny_bundle), "--model", str(tiny_model_dir), "--out", str(out), "--quick",
                "--quiet"])
    text = (out / "audit.json").read_text()
    markdown = (out / "audit.md").read_text()
    report = json.loads(text)

    assert list(report["sections"]) == list(audit.SECTIONS)
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

    for written in (text, markdown):  # repo-relative paths only
        assert str(tmp_path) not in written and str(ROOT) not in written and "/tmp/" not in written
    assert markdown.startswith("# mmedge hardening audit") and "## Summary" in markdown

"""Calibration on the shipped model: the chosen policy keeps its accuracy bound on the test split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmedge.bundle.manifest import load_manifest
from mmedge.runtime.calibrate import choose, collect, evaluate_policy
from mmedge.runtime.controller import Policy

pytestmark = pytest.mark.slow
SHIPPED = Path(__file__).resolve().parents[1] / "models" / "vqa-default"


@pytest.fixture(scope="module")
def shipped_onnx(tmp_path_factory) -> Path:
    from mmedge.export.exporter import export_bundle
    from mmedge.export.recipe import ExportRecipe

    out = tmp_path_factory.mktemp("shipped") / "vqa.mmedge"
    recipe = ExportRecipe(targets=["onnx"], parity_samples=4, in_graph=False, ort_format=False)
    return export_bundle(SHIPPED, out, recipe, log=lambda *_: None)


def test_calibrated_bound_holds_on_the_test_split(shipped_onnx, capsys):
    from mmedge.cli import main
    from mmedge.runtime.engine import Engine

    assert main(["calibrate", "--artifact", str(shipped_onnx), "--max-drop", "0.01", "--samples", "1000",
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "chosen: keep" in printed and "wrote the thresholds" in printed
    manifest = load_manifest(shipped_onnx)  # still valid, hashes intact
    th = manifest["thresholds"]
    assert th["source"] == "calibrated" and th["calibration"]["samples"] == 1000
    chosen = th["calibration"]["chosen"]
    assert chosen["flops_ratio"] < 1.0  # it found something cheaper than full depth

    engine = Engine.load(shipped_onnx)
    labels, tables = collect(engine, "test", 1000, progress=False)
    full, _ = evaluate_policy(Policy("full"), tables[1.0], labels)
    policy = Policy(**chosen["policy"])
    correct, flops = evaluate_policy(policy, tables[chosen["keep_ratio"]], labels)
    assert full.mean() - correct.mean() <= 0.01
    assert flops.mean() < np.asarray(tables[1.0].exit_flops)[-1]


def test_choose_respects_the_bound_and_prefers_cheaper():
    from mmedge.runtime.calibrate import ExitTable

    rng = np.random.default_rng(0)
    n = 400
    labels = rng.integers(0, 3, n)
    # exit 0 is right 70% of the time with low confidence when wrong; the last exit always right
    a0 = np.where(rng.random(n) < 0.7, labels, (labels + 1) % 3)
    conf0 = np.where(a0 == labels, 0.95, 0.3)
    answers = np.stack([a0, labels, labels], 1)
    conf = np.stack([conf0, np.full(n, 0.99), np.full(n, 0.99)], 1)
    table = ExitTable(1.0, answers, conf, conf.copy(), [10, 20, 30])
    result = choose(labels, {1.0: table}, max_drop=0.0)
    chosen = result["chosen"]
    assert chosen["policy"]["kind"] in ("confidence", "max_probability")
    assert chosen["accuracy"] == 1.0 and chosen["mean_flops"] < 30
    assert all(r["drop_upper"] <= 0.0 for r in result["table"])

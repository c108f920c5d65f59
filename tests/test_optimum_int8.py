"""benchmarks/optimum_int8.py on the tiny model: optimum-onnx's arm64 quantization and O2 optimisation of the
exported stage graphs against today's int8 recipe. Needs optimum-onnx, which pins transformers<4.58 and is
kept out of the main environment (the script's docstring has the install command); skipped without it."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_benchmark():
    spec = importlib.util.spec_from_file_location("optimum_int8", ROOT / "benchmarks" / "optimum_int8.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["optimum_int8"] = module
    spec.loader.exec_module(module)
    return module


def test_skips_cleanly_without_optimum(tmp_path, capsys):
    bench = load_benchmark()
    if bench.optimum_available() is None:
        pytest.skip("optimum-onnx is installed here: the skip path cannot be exercised")
    assert bench.main(["--out", str(tmp_path / "out")]) == 0
    said = capsys.readouterr().out
    assert said.startswith("SKIPPED: optimum-onnx is not importable") and "pip install optimum-onnx" in said
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_optimum_variants_on_tiny_model(tiny_model_dir, tmp_path):
    bench = load_benchmark()
    missing = bench.optimum_available()
    if missing:
        pytest.skip(f"optimum-onnx not importable ({missing}); install: {bench.INSTALL}")
    from conftest import TINY_RECIPE

    limits = {k: v for k, v in TINY_RECIPE.items() if k.startswith("int8_")}  # tiny logits are near-tied
    out = tmp_path / "out"
    result = bench.run(tiny_model_dir, out, val_samples=48, latency_queries=3, passes=1,
                       recipe_overrides=limits, log=lambda *_: None)
    rows = result["variants"]
    assert set(rows) == set(bench.VARIANTS), result["evidence"]["failures"]

    # graph optimisation only fuses: the same numbers and answers as fp32
    assert rows["fp32_optimum_O2"]["max_abs_logits_error_all_exits"] <= 1e-4
    assert rows["fp32_optimum_O2"]["answer_agreement_all_exits"] == 1.0
    assert rows["fp32_optimum_O2"]["val_correct"] == rows["fp32"]["val_correct"]
    assert {"SkipLayerNormalization", "BiasGelu"} & set(rows["fp32_optimum_O2"]["ops"])

    # int8: really quantized, smaller than fp32; today's recipe also stores the convolution weights int8
    # (the weight-only arm64 preset leaves them fp32), so it is not larger than that one
    fp32_mb = rows["fp32"]["mb"]
    for name in ("int8_today", "int8_optimum_arm64", "int8_optimum_arm64_weights", "int8_optimum_O2_arm64_weights"):
        assert rows[name]["ops"].get("MatMulInteger", 0) > 0, name
        assert rows[name]["mb"] < 0.8 * fp32_mb, (name, rows[name]["mb"], fp32_mb)
        assert 0 < rows[name]["max_abs_logits_error_all_exits"] <= 0.1 * rows["fp32"]["max_abs_logits"], name
        assert rows[name]["answer_agreement_final"] >= 0.75, name
        assert rows[name]["ort_format"]["ok"], (name, rows[name]["ort_format"])
    assert rows["int8_today"]["mb"] <= rows["int8_optimum_arm64_weights"]["mb"]
    assert "ConvInteger" not in rows["int8_today"]["ops"]  # the convolution computes in fp32
    assert rows["int8_optimum_arm64"]["ops"].get("ConvInteger", 0) > 0  # the preset quantizes the patch stem too
    assert "Conv" in rows["int8_optimum_arm64_weights"]["ops"]            # the weight-only one leaves it fp32
    for row in rows.values():
        assert row["latency_ms"]["n"] == 3 and row["latency_ms"]["median"] > 0

    # where optimum cannot serve, recorded with its own words
    evidence = result["evidence"]
    assert "Unrecognized model" in evidence["exporter"]["main_export(task='visual-question-answering')"]
    assert "not supported yet" in evidence["exporter"]["TasksManager.get_supported_tasks_for_model_type('mmedge')"]
    assert "not available yet" in evidence["optimizer"]["ORTOptimizer(config with model_type 'mmedge-vqa')"]

    # results: JSON and Markdown, no machine paths
    text = (out / "optimum_int8.json").read_text() + (out / "optimum_int8.md").read_text()
    assert json.loads((out / "optimum_int8.json").read_text())["variants"].keys() == rows.keys()
    assert str(tmp_path) not in text and str(ROOT) not in text

"""The attention-efficiency benchmark's pipeline on tiny sizes (benchmarks/attention_efficiency.py --quick)."""

import json
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_attention_benchmark_quick(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import attention_efficiency as ae

    assert ae.main(["--quick", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")]) == 0
    result = json.loads((tmp_path / "out" / "attention_efficiency.json").read_text())
    tokens = result["tokens"]
    assert tokens == [9, 36, 144]  # 48 px images, 16 / 8 / 4 px patches
    for variant in ae.VARIANTS:
        for n in tokens:
            cell = result["cells"][f"{variant}/{n}"]
            tr, ex = cell["train"], cell["export"]
            assert tr["visual_tokens"] == n
            for stats in (tr["step_time"], tr["step_compute_time"]):
                assert stats["n"] > 0 and 0 < stats["p10_ms"] <= stats["median_ms"] <= stats["p90_ms"]
            assert tr["train_flops_per_step"] > 0 and tr["inference_flops_per_sample"] > 0
            assert tr["peak_rss_mb"] > 0
            assert tr["curve"][0]["step"] == 0 and all(0 <= p["acc"] <= 1 for p in tr["curve"])
            for backend in result["backends"]:
                stages = ex[backend]["stages"]
                assert stages["stages_sum"]["median_ms"] > 0
                assert len([k for k in stages if k not in ("preprocess", "stages_sum")]) == 2  # depth 2: 2 stages
            row = result["rows"][f"{variant}/{n}"]
            assert 0 <= row["acc_equal_steps"] <= 1 and 0 <= row["acc_equal_wall"] <= 1
    largest = tokens[-1]
    full = result["cells"][f"full/{largest}"]["train"]
    for variant in ("lowrank", "crossmodal"):
        cell = result["cells"][f"{variant}/{largest}"]["train"]
        assert cell["train_flops_per_step"] < full["train_flops_per_step"]
        assert cell["inference_flops_per_sample"] < full["inference_flops_per_sample"]
    assert set(result["goal"]) == {"lowrank", "crossmodal"}
    assert (tmp_path / "out" / "attention_efficiency.png").stat().st_size > 0
    assert "QUICK" in (tmp_path / "out" / "attention_efficiency.md").read_text()


def test_accuracy_at_time_interpolates():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import attention_efficiency as ae

    curve = [{"step": 0, "train_s": 0.0, "acc": 0.3}, {"step": 10, "train_s": 10.0, "acc": 0.5},
             {"step": 20, "train_s": 20.0, "acc": 0.7}]
    assert ae.acc_at_time(curve, 15.0) == (pytest.approx(0.6), True)
    assert ae.acc_at_time(curve, 0.0) == (0.3, True)
    assert ae.acc_at_time(curve, 30.0) == (0.7, False)  # the run stopped before the budget

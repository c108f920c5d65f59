"""The published phone anchors and the cost model's fit against them (benchmarks/phone_anchors.py)."""

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

ANCHORS = ROOT / "benchmarks" / "anchors" / "published_latencies.json"


def test_anchors_file_is_complete():
    from anchor_archs import ARCHS

    from mmedge.bench.costmodel import PROFILES

    data = json.loads(ANCHORS.read_text())
    assert data["anchors"], "no anchors"
    ids = [a["id"] for a in data["anchors"]]
    assert len(ids) == len(set(ids)), "duplicate anchor ids"
    for a in data["anchors"]:
        for key in ("source_url", "device", "threads", "precision", "latency_ms", "runtime", "input", "arch"):
            assert a.get(key) not in (None, ""), f"{a['id']}: {key} missing"
        assert a["source_url"].startswith("https://"), a["id"]
        assert a["source"] in data["sources"], a["id"]
        assert a["precision"] in ("fp32", "fp16"), a["id"]
        assert isinstance(a["threads"], int) and a["threads"] >= 1, a["id"]
        assert a["latency_ms"] > 0, a["id"]
        assert a["arch"] in ARCHS and ARCHS[a["arch"]][1] == a["input"], a["id"]
        prof = PROFILES[a["profile"]]  # every anchor runs on a profile written for its device
        assert prof.cores_used == a["threads"], f"{a['id']}: profile threads differ from the published run"


def test_prediction_of_small_anchor_is_deterministic_and_positive(tmp_path):
    from phone_anchors import export_costs, modelled_ms

    from mmedge.bench.costmodel import PROFILES

    costs = export_costs("mobilenet_v1_0.25_128", tmp_path)
    again = export_costs("mobilenet_v1_0.25_128", tmp_path)
    prof = PROFILES["pixel-3-4t"]
    a, b = modelled_ms(costs, prof, "fp32"), modelled_ms(again, prof, "fp32")
    assert a > 0 and a == b
    # fp16 runs at twice the peak and half the bytes: never slower than fp32
    assert 0 < modelled_ms(costs, prof, "fp16") <= a


def _synthetic_graph(scale: float):
    """A conv-net-like list of nodes: a few heavy matmul-like nodes and many light elementwise ones."""
    from mmedge.bench.costmodel import NodeCost

    heavy = [NodeCost("Conv", scale * f, scale * f / 40) for f in (2e8, 1e8, 5e7, 2e7)]
    light = [NodeCost("Relu", scale * 1e5, scale * 4e5) for _ in range(int(30 * scale ** 0.5))]
    return heavy + light


@pytest.mark.parametrize("efficiency,overhead_us", [(0.45, 12.0), (0.2, 2.0)])
def test_fit_recovers_known_efficiency_and_overhead(efficiency, overhead_us):
    from phone_anchors import fit_profile, modelled_ms

    from mmedge.bench.costmodel import PROFILES

    base = PROFILES["pixel-4-4t"]
    truth = replace(base, efficiency=efficiency, overhead_us=overhead_us)
    items = []
    for scale in (0.05, 0.2, 1.0, 3.0, 8.0):
        costs = _synthetic_graph(scale)
        items.append((costs, base, "fp32", modelled_ms(costs, truth, "fp32")))
    fit = fit_profile(items)
    assert fit["efficiency"] == pytest.approx(efficiency, rel=0.02)
    assert fit["overhead_us"] == pytest.approx(overhead_us, rel=0.05)
    assert fit["rms_log_error"] < 1e-3


def test_every_modelled_figure_states_its_anchor_error():
    """The profiles' anchor errors equal the committed anchors run, and the modelled report says them."""
    import json
    from pathlib import Path

    from mmedge.bench.costmodel import ANCHOR_ERRORS, anchor_statement
    from mmedge.bench.report import markdown

    summary = json.loads((Path(__file__).resolve().parents[1] / "benchmarks/results/anchors/anchors.json")
                         .read_text())["summary"]
    for name, (n, err) in ANCHOR_ERRORS.items():
        assert round(summary[name]["error_before"], 4) == err
        assert name == "all" or summary[name]["n"] == n
    assert "unvalidated" in anchor_statement("pixel-8") and "28%" in anchor_statement("pixel-8")
    assert "6 published" in anchor_statement("raspberry-pi-5")
    result = {"kind": "modelled", "device": "pixel-8", "note": "MODELLED", "anchor_check": anchor_statement("pixel-8"),
              "profile": {"description": "d", "source": "s", "efficiency": 0.3, "overhead_us": 4.0},
              "by_keep_ratio": {"1.0": {"exit_ms": [0.1, 0.2]}}}
    assert "Against real phones: no published latency anchors" in markdown(result)

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
        for key in ("source_url", "device", "precision", "latency_ms", "runtime", "input", "arch"):
            assert a.get(key) not in (None, ""), f"{a['id']}: {key} missing"
        assert a["source_url"].startswith("https://"), a["id"]
        assert a["source"] in data["sources"], a["id"]
        assert a["precision"] in ("fp32", "fp16", "int8"), a["id"]
        # a thread count the source states, or none (null) with the count modelled and why
        if a["threads"] is None:
            assert isinstance(a["threads_assumed"], int) and a["threads_assumed"] >= 1, a["id"]
            assert a["threads_basis"].startswith("not "), a["id"]
        else:
            assert isinstance(a["threads"], int) and a["threads"] >= 1, a["id"]
        assert a.get("verified", True) is True, f"{a['id']}: an unverified figure is not an anchor"
        assert a["latency_ms"] > 0, a["id"]
        assert a["arch"] in ARCHS and ARCHS[a["arch"]][1] == a["input"], a["id"]
        prof = PROFILES[a["profile"]]  # every anchor runs on a profile written for its device
        # (threads over the cores a run was pinned to, or modelled on: "cores" says how many)
        threads = a["threads"] if a["threads"] is not None else a["threads_assumed"]
        assert prof.cores_used == a.get("cores", threads), f"{a['id']}: profile cores differ from the published run"
    for s in data["sources"].values():
        assert s["url"].startswith("https://") and s["note"], s
    for n in data.get("not_used", []):  # figures checked and left out say why
        assert n["figure"] and n["why"], n


def test_prediction_of_small_anchor_is_deterministic_and_positive(tmp_path):
    from phone_anchors import export_costs, modelled_ms

    from mmedge.bench.costmodel import PROFILES

    costs = export_costs("mobilenet_v1_0.25_128", tmp_path)
    again = export_costs("mobilenet_v1_0.25_128", tmp_path)
    prof = PROFILES["pixel-3-4t"]
    a, b = modelled_ms(costs, prof, "fp32"), modelled_ms(again, prof, "fp32")
    assert a > 0 and a == b
    # fp16 runs at twice the peak and half the bytes, int8 its matmul-like nodes at 4x: never slower than fp32
    assert 0 < modelled_ms(costs, prof, "fp16") <= a
    assert 0 < modelled_ms(costs, prof, "int8") <= a


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


def _graph(scale: float, matmul: float = 0.0, conv3: bool = False):
    """Dense convolution-like nodes, optionally token matmuls and 3x3 stride-1 convolutions, and light
    elementwise ones: enough structure for each fitted term to matter."""
    from mmedge.bench.costmodel import NodeCost

    nodes = [NodeCost("Conv", scale * f, scale * f / 40, "dense") for f in (2e8, 5e7, 2e7)]
    if matmul:
        nodes += [NodeCost("MatMul", scale * matmul * f, scale * f / 60, "matmul") for f in (1e8, 4e7)]
    if conv3:
        nodes += [NodeCost("Conv", scale * 3e8, scale * 3e6, "dense", (64, 64)),
                  NodeCost("Conv", scale * 2e8, scale * 2e6, "dense", (256, 256))]
    nodes += [NodeCost("Relu", scale * 1e5, scale * 4e5) for _ in range(int(20 * scale ** 0.5) + 3)]
    return nodes


TRUTH = {"profiles": {"pixel-3": 0.25, "pixel-3-4t": 0.3, "pixel-4-4t": 0.45, "snapdragon-8-gen-2": 0.4},
         "overhead_us": 9.0, "matmul_factor": 0.35, "winograd_share": 0.6}


def _synthetic_rows(truth=TRUTH):
    """Anchors on four profiles of three SoCs whose 'published' latencies come from known parameters."""
    from phone_anchors import Anchor

    rows, costs = [], {}
    for profile, eff in truth["profiles"].items():
        runtime, precision = ("ncnn benchncnn", "fp16") if profile.startswith("snapdragon") else ("TensorFlow Lite", "fp32")
        for i, (scale, matmul, conv3) in enumerate([(0.05, 0, False), (0.3, 0, True), (1.0, 0, False),
                                                     (2.0, 1.0, False), (4.0, 0, True)]):
            arch = f"g{i}"
            costs[arch] = _graph(scale, matmul, conv3)
            row = {"id": f"{profile}-{arch}", "arch": arch, "profile": profile, "precision": precision,
                   "runtime": runtime, "latency_ms": 1.0, "used_in_fit": True, "left_out": None}
            row["latency_ms"] = Anchor(row, costs[arch]).ms(eff, truth["overhead_us"], truth["matmul_factor"],
                                                             truth["winograd_share"])
            rows.append(row)
    return rows, costs


def test_vectorised_anchor_equals_the_cost_model():
    from phone_anchors import Anchor, modelled_ms

    from mmedge.bench.costmodel import PROFILES

    costs = _graph(1.0, 1.0, True)
    for profile, precision, runtime in (("pixel-3-4t", "fp32", "TensorFlow Lite"),
                                        ("snapdragon-8-gen-2", "fp16", "ncnn benchncnn"),
                                        ("apple-a17-pro-mt", "int8", "ExecuTorch XNNPACK")):
        prof = replace(PROFILES[profile], efficiency=0.4, overhead_us=6.0, matmul_factor=0.3)
        row = {"profile": profile, "precision": precision, "runtime": runtime, "latency_ms": 1.0}
        assert Anchor(row, costs).ms(0.4, 6.0, 0.3, 0.7) == pytest.approx(
            modelled_ms(costs, prof, precision, runtime, 0.7), rel=1e-12)
    # Winograd only where the runtime uses it, and it only ever makes a graph faster
    base = PROFILES["snapdragon-8-gen-2"]
    assert modelled_ms(costs, base, "fp16", "TensorFlow Lite", 1.0) == modelled_ms(costs, base, "fp16", "", 0.0)
    assert modelled_ms(costs, base, "fp16", "ncnn", 1.0) < modelled_ms(costs, base, "fp16", "ncnn", 0.0)


def test_thread_suffixes_name_the_device():
    from phone_anchors import soc

    assert [soc(p) for p in ("pixel-3-4t", "tensor-g3-5t", "apple-a16-mt", "apple-m1", "snapdragon-8-gen-2")] == \
        ["pixel-3", "tensor-g3", "apple-a16", "apple-m1", "snapdragon-8-gen-2"]


def test_one_anchor_check_is_exact_on_exact_data():
    """On synthetic anchors made from known parameters, one anchor sets its profile's efficiency exactly, and a
    repository profile's single anchor is judged by that check."""
    from phone_anchors import Anchor, fit, one_anchor_check, soc

    rows, costs = _synthetic_rows()
    anchors = {r["id"]: Anchor(r, costs[r["arch"]]) for r in rows}
    cache = {}

    def fit_without(out):
        if out not in cache:
            cache[out] = fit([anchors[r["id"]] for r in rows if soc(r["profile"]) not in out])
        return cache[out]

    check = one_anchor_check(anchors, rows, fit_without)
    assert check["n"] == sum(5 * 4 for _ in TRUTH["profiles"])  # 5 anchors a profile, each predicting 4
    assert check["median_abs_error"] < 1e-3


def test_winograd_gain_follows_ncnn_choice():
    from phone_anchors import winograd_gain

    assert winograd_gain(64, 64, "fp16") == pytest.approx(81 / 16)     # F(6,3): both <= 128
    assert winograd_gain(256, 256, "fp16") == pytest.approx(4.0)       # F(4,3)
    assert winograd_gain(8, 8, "fp16") == 1.0                          # fp16 needs 16 channels
    assert winograd_gain(8, 8, "fp32") == pytest.approx(81 / 16)       # fp32 needs 8
    assert winograd_gain(8, 512, "fp16") == pytest.approx(9 / 4)       # F(2,3)


def test_joint_fit_recovers_per_profile_efficiency_and_shared_terms():
    from phone_anchors import Anchor, fit

    rows, costs = _synthetic_rows()
    f = fit([Anchor(r, costs[r["arch"]]) for r in rows])
    for profile, eff in TRUTH["profiles"].items():
        assert f["profiles"][profile]["efficiency"] == pytest.approx(eff, rel=0.02)
    for k in ("overhead_us", "matmul_factor", "winograd_share"):
        assert f["shared"][k] == pytest.approx(TRUTH[k], rel=0.05), k
    assert f["rms_log_error"] < 1e-3


def test_held_out_figures_never_see_the_anchor_or_device_they_predict():
    """Changing one anchor's published latency moves its in-sample fit but neither its leave-one-out
    prediction nor its device's leave-one-device-out ones (nested rule choice included)."""
    from phone_anchors import TRANSFERS, evaluate

    rows, costs = _synthetic_rows()
    evaluate(rows, costs, log=lambda *_: None)
    changed, costs2 = _synthetic_rows()
    target = next(r for r in changed if r["profile"] == "pixel-4-4t" and r["arch"] == "g2")
    target["latency_ms"] *= 3.0
    evaluate(changed, costs2, log=lambda *_: None)
    before = {r["id"]: r for r in rows}
    assert target["modelled_joint_loo_ms"] == pytest.approx(before[target["id"]]["modelled_joint_loo_ms"], rel=1e-6)
    assert target["modelled_joint_ms"] != pytest.approx(before[target["id"]]["modelled_joint_ms"], rel=1e-3)
    for r in changed:
        if r["profile"] == "pixel-4-4t":
            for key in [*(f"modelled_lodo_{t}_ms" for t in TRANSFERS), "modelled_lodo_nested_ms"]:
                assert r[key] == pytest.approx(before[r["id"]][key], rel=1e-6), (r["id"], key)
    # on exact synthetic data every anchor is predicted from the others with no error
    assert max(abs(r["error_joint_loo"]) for r in rows) < 1e-3


def test_graph_costs_tells_matmuls_depthwise_and_winograd_convolutions_apart(tmp_path):
    import torch

    from mmedge.bench.costmodel import graph_costs

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv3 = torch.nn.Conv2d(16, 32, 3, 1, 1)       # 3x3 stride 1: Winograd-eligible
            self.down = torch.nn.Conv2d(32, 32, 3, 2, 1)        # stride 2: not
            self.dw = torch.nn.Conv2d(32, 32, 3, 1, 1, groups=32)
            self.proj = torch.nn.Linear(32, 48)                  # tokens x weight: a matmul
            self.head = torch.nn.Linear(48, 10)                  # one vector: dense

        def forward(self, x):
            x = self.dw(self.down(self.conv3(x)))                # (1, 32, 4, 4)
            t = self.proj(x.flatten(2).transpose(1, 2))          # (1, 16, 48)
            return self.head(t.mean(1))

    path = tmp_path / "net.onnx"
    torch.onnx.export(Net().eval(), torch.randn(1, 16, 8, 8), str(path), opset_version=17, dynamo=False)
    costs = graph_costs(path)
    convs = [c for c in costs if c.op == "Conv"]
    assert [c.kind for c in convs] == ["dense", "dense", "depthwise"]
    assert [c.conv3x3s1 for c in convs] == [(16, 32), None, None]
    assert sorted(c.kind for c in costs if c.op in ("MatMul", "Gemm")) == ["dense", "matmul"]


def test_every_modelled_figure_states_its_anchor_error():
    """The profiles' calibration equals the committed anchors run, and every modelled report states it."""
    from mmedge.bench.costmodel import CALIBRATION, PROFILES, anchor_statement
    from mmedge.bench.report import markdown

    result = json.loads((ROOT / "benchmarks/results/anchors/anchors.json").read_text())
    recal = result["recalibration"]
    assert set(CALIBRATION) == set(recal)
    for name, cal in CALIBRATION.items():
        r = recal[name]
        for key in ("efficiency", "overhead_us", "matmul_factor", "anchors"):
            assert cal[key] == r[key], (name, key)
        assert cal["error"] == round(r["median_abs_error"], 4), name
        prof = PROFILES[name]
        assert (prof.efficiency, prof.overhead_us, prof.matmul_factor) == (cal["efficiency"], cal["overhead_us"],
                                                                           cal["matmul_factor"])
        statement = anchor_statement(name)
        assert f"{cal['error']:.0%}" in statement and ("not met" in statement) == (cal["error"] > 0.25)
    assert "no published latency on this device" in anchor_statement("pixel-7")
    assert "8 published" in anchor_statement("raspberry-pi-5") or "published CPU latencies" in anchor_statement("raspberry-pi-5")
    assert "assumed" in anchor_statement("pixel-3")  # an anchor profile keeps the assumption
    model = {"kind": "modelled", "device": "pixel-7", "note": "MODELLED", "anchor_check": anchor_statement("pixel-7"),
             "profile": {"description": "d", "source": "s", "efficiency": 0.3, "overhead_us": 4.0},
             "by_keep_ratio": {"1.0": {"exit_ms": [0.1, 0.2]}}}
    assert "Against real phones: no published latency on this device" in markdown(model)

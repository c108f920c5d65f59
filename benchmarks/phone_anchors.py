"""Check the per-operator cost model against published phone latencies, and recalibrate it.

    python benchmarks/phone_anchors.py            # two to four minutes here; writes benchmarks/results/anchors/
    python benchmarks/phone_anchors.py --report-only   # the Markdown and figure again from the committed JSON

For every anchor in benchmarks/anchors/published_latencies.json (a latency read in a paper or an
official benchmark page, with its device, threads, precision and runtime): build the architecture
(benchmarks/anchor_archs.py, random weights), export it to ONNX at the anchor's input size, let
ONNX Runtime's basic graph optimisations fold constants and batch norms (the graph a runtime
executes), and predict its latency with mmedge.bench.costmodel on the anchor device's profile.

The model fitted to the anchors (the "joint" fit, least squares on log(modelled / published)):
  per profile   efficiency: the achieved fraction of the profile's peak on convolutions and weight GEMMs
                (devices, runtimes and thread counts differ most in this)
  shared        per-op overhead (us); matmul factor: token-matrix products (transformer projections and
                attention) run at this fraction of a device's convolution efficiency; Winograd share: the
                part of the theoretical multiply saving that ncnn's Winograd 3x3 convolutions realise
                (benchncnn enables them; ncnn picks F(6,3) / F(4,3) / F(2,3) by channel counts)
It is judged by leave-one-out error (every anchor predicted by a fit that did not see it) and, for the
repository profiles that have no anchor of their own, by leave-one-device-out error (every SoC's anchors
predicted from the other SoCs' fit) and by sibling checks (anchored SoCs with the same CPU core, or the
neighbouring generation, predicted from each other: how well a sibling's efficiency carries over).
The two models fitted before (one efficiency and overhead shared by all, or both per profile) are
refitted and judged the same way, on the same anchors, for comparison.
Output: anchors.json, anchors.md, anchors.png; `run()` returns the result (benchmarks/run_benchmarks.py).

fp16 anchors (ncnn on ARMv8.2 cores computes in fp16) are modelled at twice the fp32 peak and half
the bytes (the profile's bandwidth doubled); fp32 anchors at the profile as written; int8 anchors (XNNPACK's
and TF Lite's quantised kernels) as mmedge's own int8 figures are (costmodel.predict_ms(int8=True)): the
matmul-like nodes (convolutions, GEMMs) at the profile's int8 peak (4x fp32: SDOT), the rest at fp32, bytes
of the fp32 graph.

An anchor whose source does not state its thread count runs on a profile of its own (suffix -mt, or -Nt
for the count assumed; published_latencies.json gives the basis), so that its efficiency is never mixed
with a stated count's. int8 anchors run on profiles of their own too (suffix -int8): their efficiency rests
on the int8 peak assumed (4x fp32 with SDOT; cores with I8MM, which XNNPACK uses, can reach 8x), so it is
neither mixed with an fp32 / fp16 efficiency nor carried to a repository profile, nor pooled. A device with a single anchor has no leave-one-out error: the one-anchor check
(each anchor of the multi-anchor phone profiles in turn setting its profile's efficiency, the profile's
other anchors predicted) is the held-out error it carries.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from mmedge.bench.costmodel import MATMUL_OPS, PROFILES, DeviceProfile, NodeCost, graph_costs, predict_ms  # noqa: E402

ANCHORS = ROOT / "benchmarks" / "anchors" / "published_latencies.json"
OUT = ROOT / "benchmarks" / "results" / "anchors"
GOAL = 0.25  # median absolute error on the phones (issue #18)
# the assumption every phone profile carried before these anchors (mmedge/bench/costmodel.py history)
ASSUMED = {"efficiency": 0.30, "overhead_us": 4.0}
# the repository's profiles and the anchor profile whose fitted efficiency stands in for each: the same
# SoC (its anchors may have run on more threads: the efficiency is per core, carried to the profile's one
# thread); None = no anchor on this device: its sibling SoCs' efficiency (SIBLINGS) or the rule from the
# other devices, whichever is judged better held out (`recalibration`). An anchor profile with a single
# anchor is taken only if the one-anchor check's error is below that of the transfers without it.
TRANSFER = {"raspberry-pi-5": "raspberry-pi-5", "galaxy-s23": "snapdragon-8-gen-2", "pixel-8": "tensor-g3-5t",
            "pixel-7": None, "iphone-15": "apple-a16-mt", "iphone-15-pro": "apple-a17-pro-mt"}
# (the Tensor G3's one published figure is int8 (tensor-g3-5t-int8), so pixel-8 has no anchor it can take; the
# A17 Pro's fp32 one is MobileBERT, its three int8 ones run on apple-a17-pro-mt-int8)
# a repository profile without anchors (or with a single one) -> (the one-thread anchor profiles of its sibling
# SoCs, whose fitted efficiency it takes (geometric mean), the kind of sibling, why)
SIBLINGS = {
    "pixel-8": (("snapdragon-8-gen-2",), "same core",
                "the Tensor G3's Cortex-X3 is the Snapdragon 8 Gen 2's"),
    "pixel-7": (("snapdragon-8-gen-2",), "neighbouring generation",
                "the Tensor G2's Cortex-X1 is two generations before the X3, with the same four 128-bit NEON pipes; "
                "the X1's own published figures here are multi-thread runs only (Snapdragon 888: 8 threads; Tensor "
                "G1, the Pixel 6: MediaPipe's 4), and a sibling's efficiency is taken from one-thread runs"),
    "iphone-15-pro": (("apple-m3",), "same core", "the M3's performance cores are the A17 Pro's generation"),
}
# pairs of anchored profiles that test each kind of sibling transfer: each predicted from the other (both
# ways) by the joint fit without its own SoC's anchors, taking the other's efficiency
SIBLING_CHECKS = {
    "same core": (("rk3588", "raspberry-pi-5"), ("rk3588-4t", "raspberry-pi-5-4t")),
    "neighbouring generation": (("apple-m1", "apple-m3"), ("snapdragon-888-4t", "snapdragon-8-gen-2-4t")),
}
# SoCs (`soc`) of boards and laptops: fitted and used as siblings, not counted as phones
NOT_PHONES = {"raspberry-pi-5", "rk3588", "apple-m1", "apple-m3"}
NOISY = 1.5  # an anchor whose source gives max/min over this is left out (listed, not fitted or counted)
GLOBALS = ("overhead_us", "matmul_factor", "winograd_share")
BOUNDS = {"efficiency": (1e-3, 2.0), "overhead_us": (1e-2, 1e3), "matmul_factor": (0.02, 3.0),
          "winograd_share": (0.01, 1.0)}


def load_anchors(path: Path = ANCHORS) -> list[dict]:
    return json.loads(path.read_text())["anchors"]


def is_phone(row: dict) -> bool:
    return soc(row["profile"]) not in NOT_PHONES


def soc(profile: str) -> str:
    """The device a profile is a thread count (and precision) of (pixel-3-4t -> pixel-3, apple-a16-mt ->
    apple-a16, tensor-g3-5t-int8 -> tensor-g3)."""
    return re.sub(r"-(\d+t|mt)$", "", re.sub(r"-int8$", "", profile))


def precision_profile(prof: DeviceProfile, precision: str) -> DeviceProfile:
    """The profile an anchor of `precision` runs on: fp16 doubles the NEON lanes per FMA and halves
    the bytes moved, so twice the peak and (in effect) twice the bandwidth."""
    if precision in ("fp32", "int8"):  # int8: per node, in Anchor / predict_ms(int8=True)
        return prof
    if precision == "fp16":
        return replace(prof, peak_gflops_per_core=2 * prof.peak_gflops_per_core, bandwidth_gbs=2 * prof.bandwidth_gbs)
    raise ValueError(f"precision {precision!r} not modelled here")


def winograd_gain(cin: int, cout: int, precision: str) -> float:
    """The multiply reduction of ncnn's Winograd 3x3 stride-1 convolution for these channel counts, as
    src/layer/arm/convolution_arm(_asimdhp).cpp chooses: used when either count reaches 16 (fp16) or 8
    (fp32); F(6,3) (64 multiplies per 36 outputs, 5.06x fewer than 9 per output) when both are <= 128,
    else F(4,3) (4x) when both reach the threshold, else F(2,3) (2.25x)."""
    least = 16 if precision == "fp16" else 8
    if cin < least and cout < least:
        return 1.0
    if cin <= 128 and cout <= 128:
        return 9 * 36 / 64
    if cin >= least and cout >= least:
        return 9 * 16 / 36
    return 9 * 4 / 16


def uses_winograd(runtime: str) -> bool:
    return runtime.startswith("ncnn")


def export_costs(arch: str, workdir: Path) -> list[NodeCost]:
    """Export `arch` (benchmarks/anchor_archs.py) at batch 1 and cost the graph ONNX Runtime runs."""
    import onnxruntime as ort
    import torch

    from anchor_archs import ARCHS, example_inputs

    build, _ = ARCHS[arch]
    torch.manual_seed(0)
    model = build().eval()
    raw, opt = workdir / f"{arch}.raw.onnx", workdir / f"{arch}.onnx"
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, example_inputs(arch), str(raw), opset_version=17, dynamo=False)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC  # folds constants, BN, Identity
    so.optimized_model_filepath = str(opt)
    ort.InferenceSession(str(raw), so, providers=["CPUExecutionProvider"])
    return graph_costs(opt)


def modelled_ms(costs: list[NodeCost], prof: DeviceProfile, precision: str, runtime: str = "",
                winograd_share: float = 0.0) -> float:
    """The cost model's latency for an anchor (mmedge.bench.costmodel.predict_ms), with ncnn's Winograd
    convolutions counted at `winograd_share` of their theoretical saving."""
    def divisor(c: NodeCost) -> float:
        return 1.0 if c.conv3x3s1 is None else 1.0 + (winograd_gain(*c.conv3x3s1, precision) - 1.0) * winograd_share

    winograd = bool(winograd_share) and uses_winograd(runtime)
    return predict_ms(costs, precision_profile(prof, precision), int8=precision == "int8",
                      flop_divisor=divisor if winograd else None)


# ------------------------------------------------------------------ fitting
class Anchor:
    """One anchor's graph as arrays, for fast evaluation of the same sum `predict_ms` computes."""

    def __init__(self, row: dict, costs: list[NodeCost], prof: DeviceProfile | None = None):
        self.row, self.profile, self.published = row, row["profile"], float(row["latency_ms"])
        prof = precision_profile(prof or PROFILES[row["profile"]], row["precision"])
        # int8: matmul-like nodes at the int8 peak, as predict_ms(int8=True)
        int8 = np.array([row["precision"] == "int8" and c.op in MATMUL_OPS for c in costs], dtype=bool)
        self.peak = np.where(int8, prof.peak_int8_gops_per_core, prof.peak_gflops_per_core) * 1e9 * prof.cores_used
        self.flops = np.array([c.flops for c in costs])
        self.memory_s = np.array([c.bytes for c in costs]) / (prof.bandwidth_gbs * 1e9)
        self.matmul = np.array([c.kind == "matmul" for c in costs])
        self.gain = np.array([winograd_gain(*c.conv3x3s1, row["precision"]) if c.conv3x3s1 and uses_winograd(row["runtime"])
                              else 1.0 for c in costs])

    def ms(self, efficiency: float, overhead_us: float, matmul_factor: float = 1.0, winograd_share: float = 0.0) -> float:
        flops = self.flops / (1.0 + (self.gain - 1.0) * winograd_share)
        rate = self.peak * efficiency * np.where(self.matmul, matmul_factor, 1.0)
        return float(np.sum(overhead_us * 1e-6 + np.maximum(flops / rate, self.memory_s)) * 1e3)


def fit(anchors: list[Anchor], per_profile: tuple[str, ...] = ("efficiency",),
        free: tuple[str, ...] = GLOBALS, fixed: dict | None = None) -> dict:
    """Least squares on log(modelled / published) over `anchors`: the parameters in `per_profile` get
    one value per anchor profile, those in `free` one shared value; the rest come from `fixed` (else
    the assumed efficiency / overhead, matmul factor 1, no Winograd). Started from a small grid of the
    shared values, so the max(compute, memory) kink does not trap it. Returns {"profiles": {profile:
    {param: value}}, "shared": {param: value}, "rms_log_error": ...}."""
    from scipy.optimize import least_squares

    base = {**ASSUMED, "matmul_factor": 1.0, "winograd_share": 0.0, **(fixed or {})}
    free = tuple(k for k in free if k not in per_profile)
    profiles = sorted({a.profile for a in anchors})
    names = [(p, k) for p in profiles for k in per_profile] + [(None, k) for k in free]
    index = {p: i for i, p in enumerate(profiles)}

    def unpack(x):
        values = [dict(base) for _ in profiles]
        for (p, k), v in zip(names, np.exp(x)):
            if p is None:
                for d in values:
                    d[k] = float(v)
            else:
                values[index[p]][k] = float(v)
        return values

    def residuals(x):
        values = unpack(x)
        return [np.log(a.ms(**values[index[a.profile]]) / a.published) for a in anchors]

    if not free and len(profiles) > 1:  # nothing shared: the profiles are independent fits
        parts = {p: fit([a for a in anchors if a.profile == p], per_profile, free, fixed) for p in profiles}
        merged = {"profiles": {p: part["profiles"][p] for p, part in parts.items()},
                  "shared": parts[profiles[0]]["shared"]}
        res = [np.log(a.ms(**params_for(merged, a.profile)) / a.published) for a in anchors]
        return {**merged, "rms_log_error": float(np.sqrt(np.mean(np.square(res))))}
    lo = [np.log(BOUNDS[k][0]) for _, k in names]
    hi = [np.log(BOUNDS[k][1]) for _, k in names]
    starts = {"efficiency": (0.1, 0.3, 0.8), "overhead_us": (1.0, 5.0, 30.0), "matmul_factor": (0.5,),
              "winograd_share": (0.5,)}
    # a grid over the shared values (and, for a single profile, its own); the others start at the middle
    grid_keys = set(free) | (set(per_profile) if len(profiles) == 1 else set())
    grids = [()]
    for _, k in names:
        options = starts[k] if k in grid_keys else (starts[k][len(starts[k]) // 2],)
        grids = [g + (s,) for g in grids for s in options]
    best = None
    for g in grids:
        r = least_squares(residuals, np.log(g), bounds=(lo, hi))
        if best is None or r.cost < best.cost:
            best = r
    values = unpack(best.x)
    params = ("efficiency", "overhead_us", "matmul_factor", "winograd_share")
    return {"profiles": {p: {k: values[index[p]][k] for k in per_profile} for p in profiles},
            "shared": {k: values[0][k] for k in params if k not in per_profile},
            "rms_log_error": float(np.sqrt(np.mean(best.fun ** 2)))}


def params_for(f: dict, profile: str) -> dict:
    # (a model with nothing per profile has no entry for a profile whose only anchor was left out of its fit)
    return {**f["shared"], **f["profiles"].get(profile, {})}


def fit_profile(items: list[tuple[list[NodeCost], DeviceProfile, str, float]]) -> dict:
    """The per-profile fit of the first version (one efficiency and one overhead for `items` = (costs,
    profile, precision, published ms) of one profile): {"efficiency", "overhead_us", "rms_log_error"}."""
    anchors = [Anchor({"profile": "one", "precision": precision, "latency_ms": published, "runtime": ""}, costs, prof)
               for costs, prof, precision, published in items]
    f = fit(anchors, per_profile=(), free=("efficiency", "overhead_us"))
    return {**{k: f["shared"][k] for k in ("efficiency", "overhead_us")}, "rms_log_error": f["rms_log_error"]}


# ------------------------------------------------------------------ the models compared
MODELS = {
    "shared": {"label": "one efficiency and overhead for all anchors (first version, shared)",
               "per_profile": (), "free": ("efficiency", "overhead_us"), "fixed": {}},
    "per_profile": {"label": "efficiency and overhead per profile (first version)",
                    "per_profile": ("efficiency", "overhead_us"), "free": (), "fixed": {}},
    "joint": {"label": "efficiency per profile; overhead, matmul factor and Winograd share shared (this version)",
              "per_profile": ("efficiency",), "free": GLOBALS, "fixed": {}},
}


def pooled(f: dict, profile: str) -> dict:
    """Values for a device without anchors: the fit's shared values, and the geometric mean of the
    per-profile efficiencies over the anchor profiles with the same thread count (1 or more)."""
    threads = PROFILES[profile].cores_used > 1
    effs = [v["efficiency"] for p, v in f["profiles"].items()
            if (PROFILES[p].cores_used > 1) == threads and not p.endswith("-int8")]
    effs = effs or [v["efficiency"] for v in f["profiles"].values()]
    return {**f["shared"], "efficiency": float(np.exp(np.mean(np.log(effs))))}


# how a repository profile without anchors takes its values, each judged by leave-one-device-out error
TRANSFERS = {
    "assumed": "the assumption as written (efficiency 0.30, 4 us per op, matmul factor 1): nothing fitted",
    "assumed+shared": "efficiency 0.30 assumed; overhead, matmul factor and Winograd share from the joint fit",
    "pooled": "the joint fit's shared values and the geometric mean efficiency of the other devices' "
              "profiles with the same thread count",
}


def transfer_params(name: str, f: dict | None, profile: str) -> dict:
    if name == "assumed":
        return {**ASSUMED, "matmul_factor": 1.0, "winograd_share": 0.0}
    if name == "assumed+shared":
        return {**f["shared"], "efficiency": ASSUMED["efficiency"]}
    return pooled(f, profile)


def evaluate(rows: list[dict], costs: dict[str, list[NodeCost]], log=print) -> dict:
    """Every model in MODELS fitted in-sample, leave-one-out and (joint) leave-one-device-out; writes the
    per-anchor figures into `rows` and returns the fits."""
    anchors = {r["id"]: Anchor(r, costs[r["arch"]]) for r in rows}
    used = [r for r in rows if r["used_in_fit"]]
    for r in rows:
        a = anchors[r["id"]]
        r["modelled_before_ms"] = a.ms(**ASSUMED)  # no matmul factor, no Winograd: the model as it was
        r["error_before"] = r["modelled_before_ms"] / r["latency_ms"] - 1
    fits = {}
    for name, m in MODELS.items():
        started = time.time()
        kw = {"per_profile": m["per_profile"], "free": m["free"], "fixed": m["fixed"]}
        f = fits[name] = fit([anchors[r["id"]] for r in used], **kw)
        for r in rows:
            a = anchors[r["id"]]
            r[f"modelled_{name}_ms"] = a.ms(**params_for(f, r["profile"]))
            r[f"error_{name}"] = r[f"modelled_{name}_ms"] / r["latency_ms"] - 1
            others = [anchors[o["id"]] for o in used if o["id"] != r["id"]]
            if m["per_profile"] and not any(o.profile == r["profile"] for o in others):
                continue
            g = fit(others, **kw)
            r[f"modelled_{name}_loo_ms"] = a.ms(**params_for(g, r["profile"]))
            r[f"error_{name}_loo"] = r[f"modelled_{name}_loo_ms"] / r["latency_ms"] - 1
        log(f"  {name}: fitted, leave-one-out done ({time.time() - started:.0f} s)")
    # leave one device out: every SoC's anchors from the fit on the other SoCs, per transfer rule; and
    # nested: the rule itself chosen without the held-out SoC (by the same leave-one-device-out error
    # over the remaining SoCs' phone anchors), so that the choice is not graded on the device it predicts
    started = time.time()
    kw = {k: MODELS["joint"][k] for k in ("per_profile", "free", "fixed")}
    socs = sorted({soc(r["profile"]) for r in used})
    cache: dict[frozenset, dict] = {}

    def fit_without(out: frozenset) -> dict:
        if out not in cache:
            cache[out] = fit([anchors[o["id"]] for o in used if soc(o["profile"]) not in out], **kw)
        return cache[out]

    def errors(held: str, rule: str, out: frozenset) -> list[float]:
        g = fit_without(out)
        return [anchors[r["id"]].ms(**transfer_params(rule, g, r["profile"])) / r["latency_ms"] - 1
                for r in used if soc(r["profile"]) == held]

    chosen = {}
    for held in socs:
        for t in TRANSFERS:
            for r, e in zip([r for r in used if soc(r["profile"]) == held], errors(held, t, frozenset([held]))):
                r[f"modelled_lodo_{t}_ms"], r[f"error_lodo_{t}"] = (e + 1) * r["latency_ms"], e
        inner = {t: float(np.median([abs(e) for other in socs if other != held
                                     for e, r in zip(errors(other, t, frozenset([held, other])),
                                                     [r for r in used if soc(r["profile"]) == other]) if is_phone(r)]))
                 for t in TRANSFERS}
        chosen[held] = min(inner, key=inner.get)
        for r in used:
            if soc(r["profile"]) == held:
                r["transfer_nested"] = chosen[held]
                r["modelled_lodo_nested_ms"] = r[f"modelled_lodo_{chosen[held]}_ms"]
                r["error_lodo_nested"] = r[f"error_lodo_{chosen[held]}"]
    fits["lodo_rule_chosen_without"] = chosen
    log(f"  leave-one-device-out done, nested rule choice {chosen} ({time.time() - started:.0f} s)")
    started = time.time()
    fits["sibling_checks"] = sibling_checks(anchors, used, fit_without)
    log(f"  sibling checks done ({time.time() - started:.0f} s): " + ", ".join(
        f"{k} {v['median_abs_error']:.0%}" for k, v in fits["sibling_checks"].items()))
    fits["one_anchor_check"] = one_anchor_check(anchors, used, fit_without)
    if fits["one_anchor_check"]["n"]:
        log(f"  one-anchor check: {fits['one_anchor_check']['median_abs_error']:.0%} over "
            f"{fits['one_anchor_check']['n']} predictions")
    return fits


def one_anchor_check(anchors: dict, used: list[dict], fit_without) -> dict:
    """The held-out error of a profile fitted on a single anchor: on every phone profile with two or more
    anchors, each anchor in turn sets the profile's efficiency (the shared values from the joint fit without
    the SoC, `fit_without`) and the profile's other anchors are predicted. Returns the median absolute error
    over all those predictions, and per profile."""
    errors, per = [], {}
    for profile in sorted({r["profile"] for r in used}):
        rows = [r for r in used if r["profile"] == profile]
        if len(rows) < 2 or not is_phone(rows[0]):
            continue
        shared = fit_without(frozenset([soc(profile)]))["shared"]
        errs = []
        for r in rows:
            eff = fit([anchors[r["id"]]], per_profile=("efficiency",), free=(), fixed=shared)["profiles"][profile]
            errs += [anchors[o["id"]].ms(**{**shared, **eff}) / o["latency_ms"] - 1 for o in rows if o is not r]
        per[profile] = {"anchors": len(rows), "predictions": len(errs),
                        "median_abs_error": float(np.median(np.abs(errs)))}
        errors += errs
    return {"median_abs_error": float(np.median(np.abs(errors))) if errors else None, "n": len(errors),
            "profiles": per}


def sibling_checks(anchors: dict, used: list[dict], fit_without) -> dict:
    """Each kind of SIBLING_CHECKS: every anchor of a profile of a pair predicted by the joint fit without
    its SoC's anchors (`fit_without`), with the efficiency fitted to the pair's other profile; writes
    `modelled_sibling_ms` / `error_sibling` / `sibling_from` into the rows. Returns, per kind, the median
    absolute error over every prediction and per direction."""
    out = {}
    present = {r["profile"] for r in used}
    for kind, pairs in SIBLING_CHECKS.items():
        pairs = tuple(p for p in pairs if set(p) <= present)  # (a test's synthetic anchors hold none)
        if not pairs:
            continue
        errors, directions = [], []
        for pair in pairs:
            for held, sibling in (pair, pair[::-1]):
                g = fit_without(frozenset([soc(held)]))
                params = {**g["shared"], "efficiency": g["profiles"][sibling]["efficiency"]}
                rows = [r for r in used if r["profile"] == held]
                errs = []
                for r in rows:
                    r["modelled_sibling_ms"] = anchors[r["id"]].ms(**params)
                    r["error_sibling"] = r["modelled_sibling_ms"] / r["latency_ms"] - 1
                    r["sibling_from"] = sibling
                    errs.append(r["error_sibling"])
                directions.append({"held_out": held, "from": sibling, "anchors": len(errs),
                                   "median_abs_error": float(np.median(np.abs(errs))),
                                   "median_signed_error": float(np.median(errs))})
                errors += errs
        out[kind] = {"median_abs_error": float(np.median(np.abs(errors))), "n": len(errors),
                     "pairs": [list(p) for p in pairs], "directions": directions}
    return out


def _median_abs(rows, key, select=lambda r: True):
    vals = [abs(r[key]) for r in rows if r.get(key) is not None and r["used_in_fit"] and select(r)]
    return float(np.median(vals)) if vals else None


ERROR_KEYS = ["error_before", *(f"error_{m}" for m in MODELS), *(f"error_{m}_loo" for m in MODELS),
              *(f"error_lodo_{t}" for t in TRANSFERS), "error_lodo_nested"]


def summarise(rows: list[dict]) -> dict:
    out = {"all": {k: _median_abs(rows, k) for k in ERROR_KEYS}, "phones": {k: _median_abs(rows, k, is_phone)
                                                                            for k in ERROR_KEYS}}
    out["all"]["n"] = sum(r["used_in_fit"] for r in rows)
    out["phones"]["n"] = sum(r["used_in_fit"] and is_phone(r) for r in rows)
    for name in sorted({r["profile"] for r in rows}):
        out[name] = {k: _median_abs(rows, k, lambda r, n=name: r["profile"] == n) for k in ERROR_KEYS}
        out[name]["n"] = sum(1 for r in rows if r["profile"] == name and r["used_in_fit"])
    return out


def best_transfer(summary: dict) -> str:
    """The transfer rule with the lowest leave-one-device-out median error on the phone anchors."""
    return min(TRANSFERS, key=lambda t: summary["phones"][f"error_lodo_{t}"])


def without_anchors(name: str, fits: dict, summary: dict) -> tuple[dict, dict]:
    """The values a repository profile takes when no anchor of its own is used, and their entry: its sibling
    SoCs' efficiency (SIBLINGS; judged by the sibling check of its kind, SIBLING_CHECKS) or the rule from the
    other devices (judged by the nested leave-one-device-out error on the phones), whichever is lower."""
    joint = fits["joint"]
    siblings, kind, why = SIBLINGS[name]
    check = fits["sibling_checks"][kind]
    lodo = summary["phones"]["error_lodo_nested"]
    pairs = "; ".join(" <-> ".join(p) for p in check["pairs"])
    entry = {"anchors": 0, "siblings": list(siblings), "sibling_kind": kind, "sibling_why": why,
             "sibling_check_error": check["median_abs_error"], "no_sibling_lodo_error": lodo,
             "before": summary["phones"]["error_before"]}
    if check["median_abs_error"] < lodo:
        effs = [joint["profiles"][s]["efficiency"] for s in siblings]
        values = {**joint["shared"], "efficiency": float(np.exp(np.mean(np.log(effs))))}
        entry.update({"transfer": "sibling", "median_abs_error": check["median_abs_error"],
                      "basis": f"no anchor on this device: the joint fit's efficiency of its sibling "
                               f"{' and '.join(siblings)} ({kind}: {why})",
                      "judged_by": f"sibling check ({kind}): {pairs}, each predicted from the other without "
                                   f"its own anchors ({check['n']} anchors)"})
    else:
        rule = best_transfer(summary)
        values = transfer_params(rule, joint, name)
        entry.update({"transfer": rule, "median_abs_error": lodo,
                      "basis": f"no anchor on this device: {TRANSFERS[rule]} (its sibling "
                               f"{' and '.join(siblings)}, {kind}, does worse held out: "
                               f"{check['median_abs_error']:.0%} against {lodo:.0%})",
                      "judged_by": f"leave-one-device-out over the {summary['phones']['n']} phone anchors, "
                                   "the transfer rule chosen without the held-out device"})
    return values, entry


def _threads(src: str) -> str:
    """How the anchors of `src` ran, against the repository profile's one thread."""
    cores = PROFILES[src].cores_used
    return "" if cores == 1 else f"; its anchors ran on more threads (modelled on {cores} cores), the efficiency per core is carried to one thread"


def recalibration(fits: dict, summary: dict) -> dict:
    """The values each repository profile takes and the held-out error that applies to it: the joint
    fit's efficiency of its own SoC's anchors (leave-one-out error on them; with a single anchor, the
    one-anchor check's error, taken only when it is below that of the transfers without it). A device
    without anchors takes whichever transfer has the lower held-out error (`without_anchors`)."""
    joint = fits["joint"]
    out = {}
    for name, src in TRANSFER.items():
        n = summary[src]["n"] if src is not None and src in summary else 0
        if n >= 2:
            values = params_for(joint, src)
            entry = {"basis": f"joint fit, efficiency of the {src} anchors{_threads(src)}", "anchors": n,
                     "source": src, "median_abs_error": summary[src]["error_joint_loo"], "judged_by": "leave-one-out",
                     "before": summary[src]["error_before"]}
        elif n == 1:
            one = fits["one_anchor_check"]
            alt_values, alt = without_anchors(name, fits, summary)
            if one["median_abs_error"] is not None and one["median_abs_error"] <= alt["median_abs_error"]:
                values = params_for(joint, src)
                entry = {"basis": f"joint fit, efficiency of its one anchor ({src}){_threads(src)}", "anchors": 1,
                         "source": src, "median_abs_error": one["median_abs_error"],
                         "judged_by": f"one-anchor check: each anchor of the multi-anchor phone profiles setting its "
                                      f"profile's efficiency, the others predicted ({one['n']} predictions)",
                         "without_anchor_error": alt["median_abs_error"], "before": summary[src]["error_before"]}
            else:
                values, entry = alt_values, alt
                entry.update({"own_anchors": 1, "source": src,
                              "basis": entry["basis"].replace("no anchor on this device", f"its one anchor ({src}) not "
                                       f"used: the one-anchor check ({one['median_abs_error']:.0%}) does worse held out "
                                       "than the transfer without it", 1)})
        else:
            values, entry = without_anchors(name, fits, summary)
            int8 = f"{src}-int8" if src is not None else None
            if int8 in summary:  # its SoC's published figures are int8 only: fitted, never carried
                k = summary[int8]["n"]
                entry.update({"int8_anchors": k, "source": int8,
                              "basis": entry["basis"].replace(
                                  "no anchor on this device", f"no fp32 / fp16 anchor on this device (its SoC's "
                                  f"{'one published figure is' if k == 1 else f'{k} published figures are'} int8, "
                                  f"{int8}: fitted, not carried)", 1)})
        entry.update({k: round(float(values[k]), 4) for k in ("efficiency", "overhead_us", "matmul_factor")})
        entry["goal_met"] = bool(entry["median_abs_error"] is not None and entry["median_abs_error"] <= GOAL)
        out[name] = entry
    return out


def goals(summary: dict, recal: dict) -> dict:
    """The issue's goal (median error <= 25% on the phones) in the two readings that apply."""
    phones = summary["phones"]
    unanchored = sorted(n for n in TRANSFER if not recal[n]["anchors"])
    worst = max(recal[n]["median_abs_error"] for n in unanchored) if unanchored else None
    return {
        "phones_leave_one_out": {"value": phones["error_joint_loo"], "n": phones["n"], "goal": GOAL,
                                 "met": phones["error_joint_loo"] <= GOAL,
                                 "what": "median |error| over the phone anchors, each predicted by the joint fit "
                                         "without it (the device's other anchors set its efficiency)"},
        "unanchored_profiles": {
            "value": worst, "goal": GOAL, "met": worst is None or worst <= GOAL,
            "profiles": {n: {k: recal[n].get(k) for k in ("median_abs_error", "transfer", "siblings", "sibling_kind",
                                                          "sibling_check_error", "no_sibling_lodo_error", "int8_anchors")}
                         for n in unanchored},
            "what": "the repository profiles without anchors of their own take their sibling SoCs' efficiency or "
                    "the rule from the other devices, whichever has the lower held-out error (sibling check of its "
                    "kind, or nested leave-one-device-out on the phones); value = the worst of them"},
    }


# ------------------------------------------------------------------ output
def _pct(x):
    return "-" if x is None else f"{100 * x:.0f}%"


def markdown(result: dict) -> str:
    rows, fits, summary, recal, g = (result[k] for k in ("anchors", "fits", "summary", "recalibration", "goals"))
    j = fits["joint"]["shared"]
    pl, un = g["phones_leave_one_out"], g["unanchored_profiles"]
    phone_socs = sorted({soc(r["profile"]) for r in rows if r["used_in_fit"] and is_phone(r)})
    own = {n: v for n, v in recal.items() if v["anchors"]}
    one = fits.get("one_anchor_check", {})
    lines = ["# Cost model against published phone latencies", "",
             f"`python benchmarks/phone_anchors.py` (this run: {result['seconds']:.0f} s). Published figures: "
             "`benchmarks/anchors/published_latencies.json` (each with its source URL). Modelled: "
             "`mmedge/bench/costmodel.py` on the anchor device's profile (peak and bandwidth from its public "
             "specification), over the ONNX graph of the same architecture at the same input size "
             "(`benchmarks/anchor_archs.py`, random weights). Error = modelled / published - 1. Every modelled "
             "figure here is MODELLED; every published one was measured by its source.", "",
             f"**Goal (median error <= {GOAL:.0%} on the phones).** Phones with anchors ({', '.join(phone_socs)}), "
             f"leave-one-out: **{_pct(pl['value'])}** over {pl['n']} anchors "
             f"({'met' if pl['met'] else 'not met'}). Repository profiles with anchors of their own: "
             + ", ".join(f"{n} **{_pct(v['median_abs_error'])}** ({v['anchors']} of {v['source']}, {v['judged_by'].split(':')[0]})"
                         for n, v in own.items())
             + ". Repository profiles without an anchor of their own, by the "
             "transfer with the lower held-out error (their sibling SoCs' efficiency, judged by the sibling check of "
             "its kind, or the rule from the other devices, judged leave-one-device-out): "
             + ", ".join(f"{n} **{_pct(v['median_abs_error'])}** ({'from ' + ' + '.join(v['siblings']) if v['transfer'] == 'sibling' else 'rule ' + v['transfer']}; "
                         f"sibling {' + '.join(v['siblings'])} {_pct(v['sibling_check_error'])}, other devices "
                         f"{_pct(v['no_sibling_lodo_error'])})" for n, v in un["profiles"].items())
             + f" ({'met' if un['met'] else 'not met'}).", "",
             f"Joint fit on all {summary['all']['n']} anchors: per-op overhead {j['overhead_us']:.1f} us, matmul factor "
             f"{j['matmul_factor']:.3f} (token-matrix products at that fraction of a device's convolution efficiency), "
             f"Winograd share {j['winograd_share']:.2f} (of the theoretical saving of ncnn's 3x3 convolutions); "
             "efficiency per profile below.", "",
             "## Median absolute error by profile", "",
             "*before*: the profiles as first written (efficiency 0.30, 4 us per op, no matmul factor, no "
             "Winograd). *LOO*: leave-one-out, each anchor predicted by the model refitted without it. *LODO*: "
             "leave-one-device-out, each SoC's anchors predicted from the other SoCs only, by the transfer rule "
             "(below) that the other SoCs' own leave-one-device-out error picks (nested: neither the fit nor the "
             "rule sees the device predicted).", "",
             "| profile | anchors | before | shared 2-param, LOO | per profile 2-param, LOO | joint, in-sample | "
             "**joint, LOO** | LODO (nested) | joint efficiency |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name in [*sorted(fits["joint"]["profiles"]), "phones", "all"]:
        s = summary[name]
        eff = f"{fits['joint']['profiles'][name]['efficiency']:.3f}" if name in fits["joint"]["profiles"] else "-"
        label = f"**{name}**" if name in ("phones", "all") else name
        lines.append(f"| {label} | {s['n']} | {_pct(s['error_before'])} | {_pct(s['error_shared_loo'])} | "
                     f"{_pct(s['error_per_profile_loo'])} | {_pct(s['error_joint'])} | **{_pct(s['error_joint_loo'])}** | "
                     f"{_pct(s['error_lodo_nested'])} | {eff} |")
    lines += ["", "Leave-one-device-out on the phone anchors, by how a device without anchors takes its values "
              "(each rule applied to every held-out device; *nested*: per held-out device, the rule with the lowest "
              "error on the other devices, chosen without it: "
              + ", ".join(f"{k} -> {v}" for k, v in fits["lodo_rule_chosen_without"].items()) + "):", "",
              "| transfer rule | median abs error (phones) | all anchors |", "|---|---|---|"]
    for t, text in TRANSFERS.items():
        lines.append(f"| {t}: {text} | {_pct(summary['phones'][f'error_lodo_{t}'])} | "
                     f"{_pct(summary['all'][f'error_lodo_{t}'])} |")
    lines.append(f"| **nested** (the rule chosen without the held-out device) | "
                 f"**{_pct(summary['phones']['error_lodo_nested'])}** | {_pct(summary['all']['error_lodo_nested'])} |")
    lines += ["", "## Sibling checks", "",
              "How well a sibling SoC's efficiency carries over, tested on anchored pairs: each profile of a pair "
              "predicted by the joint fit without its own SoC's anchors, taking the efficiency fitted to the other "
              "(both directions). The repository profiles without anchors carry the error of their kind.", "",
              "| kind | held out | from | anchors | median abs error | median signed error |", "|---|---|---|---|---|---|"]
    for kind, c in fits["sibling_checks"].items():
        for d in c["directions"]:
            lines.append(f"| {kind} | {d['held_out']} | {d['from']} | {d['anchors']} | {_pct(d['median_abs_error'])} | "
                         f"{100 * d['median_signed_error']:+.0f}% |")
        lines.append(f"| **{kind}, all** | | | {c['n']} | **{_pct(c['median_abs_error'])}** | |")
    if one.get("n"):
        lines += ["", "## One-anchor check", "",
                  "A profile fitted on a single anchor has no leave-one-out error. Its held-out error is estimated on "
                  "the phone profiles with two or more anchors: each of their anchors in turn sets its profile's "
                  "efficiency (the shared values from the joint fit without that SoC), and the profile's other "
                  f"anchors are predicted. Over all {one['n']} predictions: **{_pct(one['median_abs_error'])}**.", "",
                  "| profile | anchors | predictions | median abs error |", "|---|---|---|---|"]
        for name, v in one["profiles"].items():
            lines.append(f"| {name} | {v['anchors']} | {v['predictions']} | {_pct(v['median_abs_error'])} |")
    lines += ["", "## Repository profiles", "",
              "Written into `mmedge/bench/costmodel.py` (`CALIBRATION`; a test keeps it equal to this file), each "
              "with the held-out error that applies to it, which every modelled figure states.", "",
              "| profile | efficiency | overhead us | matmul factor | from | anchors | held-out error | judged by | "
              "before | goal |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, v in recal.items():
        lines.append(f"| {name} | {v['efficiency']} | {v['overhead_us']} | {v['matmul_factor']} | {v['basis']} | "
                     f"{v['anchors']} | {_pct(v['median_abs_error'])} | {v['judged_by']} | {_pct(v['before'])} | "
                     f"{'met' if v['goal_met'] else 'not met'} |")
    lines += ["", "## Per anchor", "",
              "| anchor | profile | threads | precision | runtime | published ms | before ms | err | joint LOO ms | "
              "LOO err | LODO err | sibling err |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        loo = r.get("modelled_joint_loo_ms")
        lines.append(f"| {r['id']}{'' if r['used_in_fit'] else ' (left out: ' + r['left_out'] + ')'} | {r['profile']} | "
                     f"{_threads_cell(r)} | {r['precision']} | {r['runtime']} | {r['latency_ms']:g} | "
                     f"{r['modelled_before_ms']:.2f} | {_pct(r['error_before'])} | {'-' if loo is None else f'{loo:.2f}'} | "
                     f"{_pct(r.get('error_joint_loo'))} | {_pct(r.get('error_lodo_nested'))} | "
                     + (f"{_pct(r['error_sibling'])} (from {r['sibling_from']})" if r.get("error_sibling") is not None
                        else "-") + " |")
    p7 = recal.get("pixel-7", {})
    lines += ["", "## Caveats", "",
              "- The anchors are mostly convolutional networks, timed in TensorFlow Lite (fp32, int8), ncnn (fp16), "
              "ExecuTorch's XNNPACK (fp32, int8) and MediaPipe (TF Lite's XNNPACK), not mmedge's ONNX Runtime / "
              "ExecuTorch stages. The transformers among them (ViT-B/32 in ncnn fp16; ViT-B/16 int8 in TF Lite on the "
              "Tensor G3; MobileBERT, Whisper-tiny's and Moonshine-tiny's encoders in ExecuTorch fp32 on the A16 and "
              "A17 Pro) set the matmul factor. Carrying an efficiency fitted on fp16 figures over to fp32 as a "
              "fraction of the applicable peak is an extrapolation, and so is int8 at 4x the fp32 peak on the "
              "matmul-like nodes (the cost model's own int8 assumption, used for the int8 anchors as for mmedge's "
              "modelled int8 figures).",
              "- Thread counts: the TF Lite tables, the MobileNet table and ncnn's runs state theirs; the others do "
              "not. The Apple anchors ran on ExecuTorch's default of the time (one thread per core: 2 performance + 4 "
              "efficiency) and are modelled on the 2 performance cores; the Tensor G3 anchor on 5 assumed threads; the "
              "Tensor G1 anchors on MediaPipe's default 4. The repository's iPhone profiles are one thread and take "
              "the per-core efficiency of the Apple runs: the efficiency cores' share and any shortfall in scaling "
              "sit in that efficiency, which the held-out errors do not test.",
              "- MediaPipe's figures (Tensor G1, Pixel 6) are whole-pipeline times, image preprocessing included; the "
              "model counts the network only.",
              "- ncnn's one-thread runs pin to its big-core set (powersave=2), which on the Snapdragon 8 Gen 2 "
              "holds the A715/A710 as well as the X3; the profile assumes the X3, so its fitted efficiency "
              "absorbs which core ran. The Galaxy S23 (same SoC, X3 at 3.36 GHz) takes that efficiency.",
              "- int8 anchors are fitted on profiles of their own and never set a repository profile's efficiency: "
              "that efficiency is applied to fp32 stages, and an int8 efficiency rests on the int8 peak assumed (4x "
              "fp32 with SDOT; the Cortex-X3 / A715 and Apple's recent cores also have I8MM, which XNNPACK uses, "
              "worth up to 8x). The Pixel 8's Tensor G3 has one published CPU figure, int8 (ViT-B/16 in TF Lite, "
              "thread count not shown): it is fitted, counted and checked leave-one-device-out, and the Pixel 8 "
              "keeps the transfer of a device without anchors. A repository profile with a single fp32 anchor (the "
              "iPhone 15 Pro: MobileBERT) has no leave-one-out error: it carries the one-anchor check's error, and "
              "takes its anchor only when that is below the error of the transfers without it.",
              *_a17_caveat(rows),
              f"- Pixel 7 (Tensor G2) has no published CPU latency here. Its sibling ({' + '.join(p7.get('siblings', []))}, "
              f"{p7.get('sibling_kind', '-')}) is judged by the anchored sibling pairs of its kind "
              f"({_pct(p7.get('sibling_check_error'))}) against the rule from the other devices, judged leave-one-"
              f"device-out ({_pct(p7.get('no_sibling_lodo_error'))}); it takes the lower. The kinds and pairs were fixed "
              "before the results and are not re-chosen after them. Only a measurement on the phone itself can "
              "bring it under 25%.",
              "- The per-op overhead is counted per node of these ONNX graphs (including the ReLU / Clip nodes that "
              "TF Lite and ncnn fuse into the convolution before them), so it is a term of the fit, not a measured "
              "dispatch cost; it is carried over to mmedge's stage graphs as it is.",
              "- Anchors whose source reports max/min over 1.5x are listed but neither fitted nor counted.", ""]
    return "\n".join(lines)


def _a17_caveat(rows: list[dict]) -> list[str]:
    """What the A17 Pro's int8 figures say about each other (in-sample, joint fit)."""
    by = {r["id"]: r for r in rows}
    w2l, edsr = by.get("a17pro-mt-wav2letter_10x700-int8"), by.get("a17pro-mt-edsr_r16f64_x2_224-int8")
    if not (w2l and edsr):
        return []
    return [f"- The A17 Pro's int8 figures disagree under one efficiency: Wav2Letter (batch 10 x 700 samples, "
            f"{w2l['latency_ms']:g} ms) is {w2l['latency_ms'] / w2l['modelled_joint_ms']:.0f}x the joint fit's "
            f"figure and EDSR ({edsr['latency_ms']:g} ms, 138 GFLOP) {edsr['modelled_joint_ms'] / edsr['latency_ms']:.1f}x "
            "faster than it: something beyond FLOPs and bytes (operators left outside the XNNPACK delegate, or "
            "I8MM kernels) sets them. They are kept, as published and verified, on their own int8 profile."]


def _threads_cell(r: dict) -> str:
    return str(r["threads"]) if r.get("threads") is not None else f"{r.get('threads_assumed', '?')} (not stated)"


def write_plot(path: Path, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    profiles = sorted({r["profile"] for r in rows})
    colours = dict(zip(profiles, plt.cm.tab20.colors))
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.5), sharex=True, sharey=True)
    for ax, key, title in ((axes[0], "modelled_before_ms", "before: assumed efficiency 0.30, 4 us/op"),
                           (axes[1], "modelled_joint_loo_ms", "joint fit, leave-one-out"),
                           (axes[2], "modelled_lodo_nested_ms", "leave-one-device-out (no anchor of the device used)")):
        for name in profiles:
            pts = [(r["latency_ms"], r[key]) for r in rows if r["profile"] == name and r.get(key) is not None
                   and r["used_in_fit"]]
            if pts:
                x, y = zip(*pts)
                ax.scatter(x, y, s=28, color=colours[name], label=name, edgecolor="black", linewidth=0.4)
        noisy = [(r["latency_ms"], r[key]) for r in rows if not r["used_in_fit"] and r.get(key) is not None]
        if noisy:
            ax.scatter(*zip(*noisy), s=70, facecolor="none", edgecolor="grey", label="left out (noisy source)")
        lo, hi = 0.5, 3000
        ax.plot([lo, hi], [lo, hi], color="black", linewidth=1, label="modelled = published")
        for f in (1 - GOAL, 1 + GOAL):
            ax.plot([lo, hi], [lo * f, hi * f], color="grey", linewidth=0.7, linestyle="--")
        ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi), xlabel="published latency, ms",
               title=title)
        ax.grid(True, which="major", linewidth=0.3)
    axes[0].set_ylabel("modelled latency, ms (MODELLED)")
    axes[0].legend(fontsize=7, loc="upper left")
    fig.suptitle("mmedge cost model vs published CPU latencies (dashed: +-25%; each point one anchor)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def mark_used(rows: list[dict]) -> None:
    for r in rows:
        spread = r["max_ms"] / r["min_ms"] if "max_ms" in r and "min_ms" in r else 1.0
        r["used_in_fit"], r["left_out"] = True, None
        if spread > NOISY:
            r["used_in_fit"], r["left_out"] = False, f"noisy: max/min {spread:.1f}x in the source"


def run(anchors_file: Path = ANCHORS, out: Path = OUT, log=print) -> dict:
    """The whole check; writes anchors.{json,md,png} into `out` and returns the result."""
    t0 = time.time()
    rows = [dict(a) for a in load_anchors(anchors_file)]
    mark_used(rows)
    costs: dict[str, list[NodeCost]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for arch in sorted({r["arch"] for r in rows}):
            costs[arch] = export_costs(arch, Path(tmp))
            log(f"  {arch}: {len(costs[arch])} nodes, {sum(c.flops for c in costs[arch]) / 1e9:.2f} GFLOP")
    fits = evaluate(rows, costs, log)
    summary = summarise(rows)
    recal = recalibration(fits, summary)
    archs = {a: {"nodes": len(c), "gflops": sum(x.flops for x in c) / 1e9, "mbytes": sum(x.bytes for x in c) / 1e6}
             for a, c in costs.items()}
    anchors_path = Path(anchors_file).resolve()
    rel = anchors_path.relative_to(ROOT) if anchors_path.is_relative_to(ROOT) else anchors_path.name
    result = {"schema_version": 2, "kind": "cost model vs published latencies (modelled figures are MODELLED)",
              "anchors_file": str(rel), "goal_median_abs_error": GOAL, "assumed": ASSUMED,
              "models": {k: v["label"] for k, v in MODELS.items()}, "transfers": TRANSFERS,
              "profiles": {n: asdict(PROFILES[n]) for n in sorted({r["profile"] for r in rows} | set(TRANSFER))},
              "architectures": archs, "fits": fits, "summary": summary, "recalibration": recal,
              "goals": goals(summary, recal), "anchors": rows, "seconds": time.time() - t0}
    out.mkdir(parents=True, exist_ok=True)
    (out / "anchors.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "anchors.md").write_text(markdown(result))
    write_plot(out / "anchors.png", rows)
    return result


def report_only(out: Path = OUT) -> list[Path]:
    """Rewrite OUT/anchors.{md,png} from OUT/anchors.json (nothing is exported or fitted)."""
    result = json.loads((out / "anchors.json").read_text())
    (out / "anchors.md").write_text(markdown(result))
    write_plot(out / "anchors.png", result["anchors"])
    return [out / "anchors.md", out / "anchors.png"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--anchors", type=Path, default=ANCHORS)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--report-only", action="store_true",
                    help="rewrite OUT's Markdown and figure from its JSON; export and fit nothing")
    args = ap.parse_args(argv)
    if args.report_only:
        print("wrote " + ", ".join(map(str, report_only(args.out))))
        return 0
    result = run(args.anchors, args.out)
    s, g = result["summary"], result["goals"]
    print(f"median |error| over {s['all']['n']} anchors: before {_pct(s['all']['error_before'])}, joint fit "
          f"leave-one-out {_pct(s['all']['error_joint_loo'])}; phones ({s['phones']['n']}): before "
          f"{_pct(s['phones']['error_before'])}, leave-one-out {_pct(g['phones_leave_one_out']['value'])}, "
          f"profiles without anchors (worst) {_pct(g['unanchored_profiles']['value'])}")
    for name, v in result["recalibration"].items():
        print(f"  {name}: efficiency {v['efficiency']}, overhead {v['overhead_us']} us, matmul factor "
              f"{v['matmul_factor']} ({v['basis']}); held-out error {_pct(v['median_abs_error'])}")
    shown = args.out.resolve()
    print(f"wrote {shown.relative_to(ROOT) if shown.is_relative_to(ROOT) else args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

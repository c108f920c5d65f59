"""A per-operator latency model: FLOPs and bytes of every node of an exported ONNX stage (counted by
onnx-tool) against a device profile. Every figure it gives is *modelled*, and says so.

    time(stage) = sum over nodes of  overhead + max(flops / compute_rate(node), bytes / bandwidth)

compute_rate is the profile's achieved FLOP/s: peak x cores x efficiency for convolutions and weight
GEMMs, times `matmul_factor` for token-matrix products (transformer projections and attention
products: a matrix of tokens times a matrix); for the host, interpolated by node size from
micro-benchmarks. The host profile is calibrated by micro-benchmarks in ONNX Runtime and then
predicts the measured host latency of every exported stage: that error is the model's check.
Phone profiles take peak and bandwidth from the public specifications named in each profile, and
efficiency, per-op overhead and matmul factor from published phone latencies of standard
architectures (benchmarks/phone_anchors.py, benchmarks/results/anchors/).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from mmedge.errors import ConfigError
from mmedge.runtime.backends.base import require
from mmedge.runtime.backends.quiet import quiet_session_options

MATMUL_OPS = {"MatMul", "Gemm", "Conv", "MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul"}


@dataclass
class DeviceProfile:
    name: str
    description: str
    source: str                    # the public specification the numbers come from
    cores_used: int                # cores the runtime uses (threads)
    peak_gflops_per_core: float    # fp32 FMA peak (2 x lanes x pipes x GHz)
    peak_int8_gops_per_core: float
    bandwidth_gbs: float           # DRAM bandwidth
    efficiency: float              # achieved fraction of peak on convolutions and weight GEMMs
    overhead_us: float             # per-operator dispatch overhead
    # host only: measured achieved GFLOP/s by matmul size (flops -> GFLOP/s), replaces peak x efficiency
    measured_gflops: dict[float, float] = field(default_factory=dict)
    # achieved rate of token-matrix products ("matmul" nodes) relative to `efficiency`
    matmul_factor: float = 1.0
    # where efficiency, overhead and matmul factor come from (the anchors' fit, or an assumption)
    calibration: str = "assumed"

    def compute_rate(self, flops: float, int8: bool, kind: str = "dense") -> float:
        """Achieved FLOP/s for a node of `flops` FLOPs of `kind` (NodeCost.kind)."""
        if self.measured_gflops:
            xs = np.log(sorted(self.measured_gflops))
            ys = [self.measured_gflops[k] for k in sorted(self.measured_gflops)]
            rate = float(np.interp(np.log(max(flops, 1.0)), xs, ys)) * 1e9
            return rate * (2.0 if int8 else 1.0)  # int8 on the host: assumed 2x, not calibrated
        peak = self.peak_int8_gops_per_core if int8 else self.peak_gflops_per_core
        factor = self.matmul_factor if kind == "matmul" else 1.0
        return peak * 1e9 * self.cores_used * self.efficiency * factor


# Phone-class profiles from public specifications. Peak per core = FLOPs per cycle x clock:
# Cortex-X1/X3 and Apple's P-cores issue four 128-bit NEON FMAs per cycle (32 fp32 FLOP/cycle,
# 128 int8 ops/cycle with SDOT); Cortex-A76 issues two (16 and 64). Efficiency, per-op overhead and
# matmul factor of the repository's profiles come from published CPU latencies of standard
# architectures (`python benchmarks/phone_anchors.py`, benchmarks/results/anchors/anchors.json
# "recalibration"; a test keeps CALIBRATION equal to that file): the joint fit's efficiency of the
# device's own SoC where it has fp32 / fp16 anchors (Raspberry Pi 5; Galaxy S23 = Snapdragon 8 Gen 2;
# iPhone 15 = A16; iPhone 15 Pro = A17 Pro, one fp32 anchor, judged by the one-anchor check); else whichever
# transfer has the lower held-out error: its sibling SoCs' efficiency (judged by anchored sibling pairs
# predicted from each other) or the rule from the other devices (judged leave-one-device-out; the one
# taken today by the Pixel 7, which has no published figure, and the Pixel 8, whose Tensor G3 has an int8
# one only). Each entry carries the held-out median error that applies to it, which every modelled
# figure states (anchor_statement); "note" says what the held-out error does not test.
_THREADS = ("its anchors ran on ExecuTorch's default threads (6, not stated), efficiency per performance core "
            "carried to one thread")
CALIBRATION: dict[str, dict] = {
    "raspberry-pi-5": {"efficiency": 0.7558, "overhead_us": 13.6583, "matmul_factor": 0.274, "anchors": 8,
                      "error": 0.1232, "judged_by": "leave-one-out on its own anchors"},
    "galaxy-s23": {"efficiency": 0.3988, "overhead_us": 13.6583, "matmul_factor": 0.274, "anchors": 8,
                  "error": 0.1182, "judged_by": "leave-one-out on the snapdragon-8-gen-2 anchors"},
    "pixel-8": {"efficiency": 0.4679, "overhead_us": 13.6583, "matmul_factor": 0.274, "anchors": 0,
               "error": 0.4555, "judged_by": "leave-one-device-out over the phone anchors",
               "transfer": "pooled", "siblings": ["snapdragon-8-gen-2"], "int8_anchors": 1},
    "pixel-7": {"efficiency": 0.4679, "overhead_us": 13.6583, "matmul_factor": 0.274, "anchors": 0,
               "error": 0.4555, "judged_by": "leave-one-device-out over the phone anchors",
               "transfer": "pooled", "siblings": ["snapdragon-8-gen-2"]},
    "iphone-15": {"efficiency": 0.6799, "overhead_us": 13.6583, "matmul_factor": 0.274, "anchors": 5,
                  "error": 0.3147, "judged_by": "leave-one-out on the apple-a16-mt anchors", "note": _THREADS},
    "iphone-15-pro": {"efficiency": 0.668, "overhead_us": 13.6583, "matmul_factor": 0.274,
                      "anchors": 1, "error": 0.1566,
                      "judged_by": "one-anchor check (its single fp32 anchor, MobileBERT)",
                      "note": _THREADS + "; its three int8 figures are fitted apart, not carried"},
}
ANCHOR_GOAL = 0.25  # median absolute error against real phones (issue #18)


def _phone(name: str, description: str, source: str, fp32_flop_per_cycle: float, ghz: float,
           bandwidth_gbs: float, cores: int = 1) -> DeviceProfile:
    """`cores` threads (peak per core = the mean over the cores used), int8 SDOT at 4x the fp32 rate;
    efficiency, overhead and matmul factor from CALIBRATION, else the first assumption (0.30, 4 us, 1)."""
    cal = CALIBRATION.get(name)
    return DeviceProfile(name, description, source, cores, fp32_flop_per_cycle * ghz, 4 * fp32_flop_per_cycle * ghz,
                         bandwidth_gbs, efficiency=cal["efficiency"] if cal else 0.30,
                         overhead_us=cal["overhead_us"] if cal else 4.0,
                         matmul_factor=cal["matmul_factor"] if cal else 1.0,
                         calibration=("assumed" if cal is None else
                                      "fitted to published latencies of its SoC (benchmarks/results/anchors/)"
                                      if cal["anchors"] else
                                      f"efficiency {_TRANSFERRED.get(cal.get('transfer'), 'transferred')} (no published "
                                      "fp32 latency on this device), overhead and matmul factor fitted to other "
                                      "devices' latencies (benchmarks/results/anchors/)"))


# how a profile without anchors of its own got its efficiency (benchmarks/phone_anchors.py TRANSFERS, SIBLINGS)
_TRANSFERRED = {"assumed+shared": "assumed (0.30)", "sibling": "of its sibling SoCs",
                "pooled": "the geometric mean of the other devices' one-thread profiles"}


PROFILES: dict[str, DeviceProfile] = {p.name: p for p in (
    _phone("pixel-7", "Google Pixel 7, Tensor G2, 1 thread on a Cortex-X1 at 2.85 GHz",
           "Google Tensor G2: 2x Cortex-X1 2.85 GHz, 2x A78, 4x A55; LPDDR5 51.2 GB/s", 32, 2.85, 51.2),
    _phone("pixel-8", "Google Pixel 8, Tensor G3, 1 thread on the Cortex-X3 at 2.91 GHz",
           "Google Tensor G3: 1x Cortex-X3 2.91 GHz, 4x A715, 4x A510; LPDDR5X 68.3 GB/s", 32, 2.91, 68.3),
    _phone("galaxy-s23", "Samsung Galaxy S23, Snapdragon 8 Gen 2 for Galaxy, 1 thread on the X3",
           "Snapdragon 8 Gen 2 for Galaxy: 1x Cortex-X3 3.36 GHz, 2x A715, 2x A710, 3x A510; LPDDR5X 67 GB/s",
           32, 3.36, 67.0),
    _phone("iphone-15", "Apple iPhone 15, A16 Bionic, 1 thread on a performance core",
           "Apple A16 Bionic: 2 performance cores 3.46 GHz, 4 efficiency cores; LPDDR5 51.2 GB/s", 32, 3.46, 51.2),
    _phone("iphone-15-pro", "Apple iPhone 15 Pro, A17 Pro, 1 thread on a performance core",
           "Apple A17 Pro: 2 performance cores 3.78 GHz, 4 efficiency cores 2.11 GHz; LPDDR5-6400 64-bit, 51.2 GB/s",
           32, 3.78, 51.2),
    _phone("raspberry-pi-5", "Raspberry Pi 5, BCM2712, 1 thread on a Cortex-A76 at 2.4 GHz",
           "Broadcom BCM2712: 4x Cortex-A76 2.4 GHz; LPDDR4X-4267 32-bit, 17 GB/s", 16, 2.4, 17.0),
    # Devices with published latencies (benchmarks/anchors/published_latencies.json), written from their
    # public specifications like the others; they anchor the cost model (benchmarks/phone_anchors.py).
    # Cortex-A75/A76/A710/A715 issue two 128-bit NEON FMAs per cycle (16 fp32 FLOP/cycle), Cortex-X3 four.
    _phone("pixel-3", "Google Pixel 3, Snapdragon 845, 1 thread on a Kryo 385 Gold (Cortex-A75) at 2.5 GHz",
           "Snapdragon 845 in the Pixel 3: 4x Kryo 385 Gold 2.5 GHz, 4x Kryo 385 Silver 1.6 GHz; "
           "LPDDR4X-1866 4x16-bit, 29.9 GB/s", 16, 2.5, 29.9),
    _phone("pixel-3-4t", "Google Pixel 3, Snapdragon 845, 4 threads on the Kryo 385 Gold (Cortex-A75) cores",
           "as pixel-3", 16, 2.5, 29.9, cores=4),
    _phone("pixel-4-4t", "Google Pixel 4, Snapdragon 855, 4 threads on the Cortex-A76-class cores (2.84 + 3x 2.42 GHz)",
           "Snapdragon 855: 1x Kryo 485 Gold Prime 2.84 GHz, 3x Kryo 485 Gold 2.42 GHz, 4x Silver 1.78 GHz; "
           "LPDDR4X-2133 4x16-bit, 34.1 GB/s", 16, (2.84 + 3 * 2.42) / 4, 34.1, cores=4),
    _phone("raspberry-pi-5-4t", "Raspberry Pi 5, BCM2712, 4 threads on the Cortex-A76 cores at 2.4 GHz",
           "as raspberry-pi-5", 16, 2.4, 17.0, cores=4),
    _phone("snapdragon-8-gen-2", "Snapdragon 8 Gen 2 (SM8550-AB), 1 thread on the Cortex-X3 at 3.2 GHz",
           "SM8550-AB: 1x Cortex-X3 3.2 GHz, 2x A715 2.8 GHz, 2x A710 2.8 GHz, 3x A510 2.0 GHz; "
           "LPDDR5X-4200 64-bit, 67 GB/s", 32, 3.2, 67.0),
    _phone("snapdragon-8-gen-2-4t", "Snapdragon 8 Gen 2 (SM8550-AB), 4 threads on the X3 and three A715/A710",
           "as snapdragon-8-gen-2; peak per core is the mean of 1x X3 (32 FLOP/cycle x 3.2 GHz) and 3x A715/A710 "
           "(16 x 2.8 GHz)", (32 * 3.2 + 3 * 16 * 2.8) / 4 / 3.2, 3.2, 67.0, cores=4),
    # Siblings of the repository's phones that have no published latency of their own: the same CPU core
    # (RK3588's Cortex-A76 = the Raspberry Pi 5's) or the neighbouring generation (Apple M1 / M3 P-cores
    # around the A16's; Snapdragon 888's Cortex-X1 = the Pixel 7's, two generations before the X3).
    _phone("rk3588", "Rockchip RK3588, 1 thread on a Cortex-A76 at 2.4 GHz",
           "RK3588: 4x Cortex-A76 2.4 GHz, 4x A55 1.8 GHz; LPDDR4X-4224 64-bit, 33.8 GB/s", 16, 2.4, 33.8),
    _phone("rk3588-4t", "Rockchip RK3588, 4 threads on the Cortex-A76 cores at 2.4 GHz", "as rk3588", 16, 2.4, 33.8,
           cores=4),
    _phone("apple-m1", "Apple M1, 1 thread on a Firestorm performance core at 3.2 GHz",
           "Apple M1: 4 Firestorm P-cores 3.2 GHz, 4 E-cores; LPDDR4X-4266 128-bit, 68.3 GB/s", 32, 3.2, 68.3),
    _phone("apple-m3", "Apple M3, 1 thread on a performance core at 4.05 GHz",
           "Apple M3: 4 P-cores 4.05 GHz, 4 E-cores; LPDDR5-6400 128-bit, 102.4 GB/s", 32, 4.05, 102.4),
    _phone("snapdragon-888-4t", "Snapdragon 888, 8 threads on the big cores (1x Cortex-X1 2.84 GHz, 3x A78 2.42 GHz)",
           "Snapdragon 888: 1x Cortex-X1 2.84 GHz, 3x A78 2.42 GHz, 4x A55 1.8 GHz; LPDDR5-3200 64-bit, 51.2 GB/s; "
           "peak per core is the mean of 1x X1 (32 FLOP/cycle x 2.84 GHz) and 3x A78 (16 x 2.42 GHz)",
           (32 * 2.84 + 3 * 16 * 2.42) / 4 / 2.84, 2.84, 51.2, cores=4),
    # The repository's phones' own SoCs, as their published latencies ran: on more than one thread, mostly on a
    # thread count the source does not state (benchmarks/anchors/published_latencies.json says what each assumes).
    # Apple's runs (ExecuTorch's default: one thread per core, 2 performance + 4 efficiency) are modelled on the 2
    # performance cores; the efficiency cores' share goes into the fitted efficiency.
    _phone("apple-a16-mt", "Apple A16 (iPhone 14 Pro), ExecuTorch's default threads (6, not stated), modelled on the "
           "2 performance cores at 3.46 GHz", "as iphone-15", 32, 3.46, 51.2, cores=2),
    _phone("apple-a17-pro-mt", "Apple A17 Pro (iPhone 15 Pro), ExecuTorch's default threads (6, not stated), modelled "
           "on the 2 performance cores at 3.78 GHz", "as iphone-15-pro", 32, 3.78, 51.2, cores=2),
    _phone("tensor-g3-5t", "Google Tensor G3 (Pixel 8 Pro), 5 threads (assumed) on the Cortex-X3 and four A715",
           "as pixel-8 (4x Cortex-A715 2.37 GHz); peak per core is the mean of 1x X3 (32 FLOP/cycle x 2.91 GHz) and "
           "4x A715 (16 x 2.37 GHz)", (32 * 2.91 + 4 * 16 * 2.37) / 5 / 2.91, 2.91, 68.3, cores=5),
    _phone("tensor-g1-4t", "Google Tensor G1 (Pixel 6), 4 threads (MediaPipe's default) on 2x Cortex-X1 and 2x A76",
           "Google Tensor G1: 2x Cortex-X1 2.80 GHz, 2x A76 2.25 GHz, 4x A55 1.80 GHz; LPDDR5 51.2 GB/s; peak per core "
           "is the mean of 2x X1 (32 FLOP/cycle x 2.80 GHz) and 2x A76 (16 x 2.25 GHz)",
           (2 * 32 * 2.80 + 2 * 16 * 2.25) / 4 / 2.80, 2.80, 51.2, cores=4),
)}
# int8 anchors run on copies of their device's profile (suffix -int8), fitted apart: their efficiency rests on the
# int8 peak assumed (4x fp32, SDOT; cores with I8MM, which XNNPACK uses, can reach 8x)
PROFILES.update({f"{n}-int8": replace(PROFILES[n], name=f"{n}-int8", description=PROFILES[n].description + ", int8")
                 for n in ("apple-a17-pro-mt", "tensor-g3-5t", "tensor-g1-4t")})
PROFILES["pixel"] = PROFILES["pixel-8"]  # the newest Pixel profile

def anchor_statement(profile: str) -> str:
    """One sentence on how far this profile's modelled figures are known to be from real phones."""
    cal = CALIBRATION.get(profile)
    if cal is None:
        return ("efficiency and per-op overhead assumed (0.30, 4 us): not calibrated against published latencies "
                "(an anchor profile or a custom one)")
    met = "met" if cal["error"] <= ANCHOR_GOAL else "not met"
    note = f"; {cal['note']}" if cal.get("note") else ""
    if cal["anchors"]:
        n = cal["anchors"]
        return (f"calibrated on {n} published CPU latenc{'y' if n == 1 else 'ies'} of its SoC{note}: median error "
                f"{cal['error']:.0%} held out ({cal['judged_by']}; goal {ANCHOR_GOAL:.0%}: {met}); never checked on "
                "mmedge's own stages")
    source = (f"efficiency of its sibling {' and '.join(cal['siblings'])}" if cal.get("transfer") == "sibling" else
              "values transferred from the other devices' anchors")
    head = ("its one published latency not used (a single anchor does worse held out than the transfer without "
            "it)" if cal.get("own_anchors") else "no fp32 published latency on this device (its published int8 "
            "figures are fitted, not carried over)" if cal.get("int8_anchors") else "no published latency on this device")
    return (f"{head}{note}: {source}, median error {cal['error']:.0%} held out "
            f"({cal['judged_by']}; goal {ANCHOR_GOAL:.0%}: {met}); never checked on mmedge's own stages")


def profile(name: str) -> DeviceProfile:
    if name not in PROFILES:
        raise ConfigError(f"device {name!r} unknown; choose host or one of {sorted(PROFILES)}", "arguments")
    return PROFILES[name]


@dataclass
class NodeCost:
    op: str
    flops: float
    bytes: float
    # "dense" (convolution, GEMV, anything multiplying by a weight per output), "depthwise" (grouped
    # convolution, a group per channel), "matmul" (a matrix of tokens times a matrix: transformer
    # projections and attention products), "other" (elementwise, normalisation, data movement)
    kind: str = "other"
    # (input channels, output channels) of a 3x3, stride-1, undilated, ungrouped convolution: the kind
    # that runtimes such as ncnn compute with Winograd transforms; None otherwise
    conv3x3s1: tuple[int, int] | None = None


def _kind(node, shape_of) -> tuple[str, tuple[int, int] | None]:
    op = node.op_type
    if op in ("Conv", "ConvInteger"):
        group = int(getattr(node, "group", 1) or 1)
        out = shape_of(node.output[0])
        w = shape_of(node.input[1]) if len(node.input) > 1 else []
        cin = int(w[1]) * group if len(w) > 1 else 0
        if group > 1:
            return ("depthwise" if group == cin else "dense"), None
        kernel = list(getattr(node, "kernel_shape", []) or w[2:])
        strides = list(getattr(node, "strides", []) or [1] * len(kernel))
        dilations = list(getattr(node, "dilations", []) or [1] * len(kernel))
        if kernel == [3, 3] and strides == [1, 1] and dilations == [1, 1] and out:
            return "dense", (cin, int(out[1]))
        return "dense", None
    if op in MATMUL_OPS:
        out = shape_of(node.output[0])
        rows = int(np.prod(out[:-1])) if len(out) > 1 else 1
        return ("matmul" if rows > 1 else "dense"), None
    return "other", None


def _shape_honours_start_and_end(onnx_tool) -> None:
    """onnx_tool's Shape ignores the start and end attributes (ONNX opset 15): give it ONNX's slice of the shape
    (Python's slice semantics: negative indices from the end, clamped), once per process."""
    node = onnx_tool.node.ShapeNode
    if getattr(node, "mmedge_start_end", False):
        return

    def value_infer(self, intensors, outtensors) -> None:
        shape = list(intensors[0].get_shape())
        outtensors[0].update_tensor(np.array(shape[self.attr.get("start", 0):self.attr.get("end")], dtype=np.int64))

    node.value_infer, node.mmedge_start_end = value_infer, True


def graph_costs(onnx_path: str | Path, inputs: dict | None = None) -> list[NodeCost]:
    """FLOPs (2 x MACs for matmul-like ops, MACs otherwise), bytes touched and kind of every node.
    inputs: name -> array fixing the shapes (and values) of a graph's dynamic inputs."""
    onnx_tool = require("onnx_tool", "pip install onnx-tool")
    import contextlib
    import io

    import onnx_tool.node

    _shape_honours_start_and_end(onnx_tool)

    with contextlib.redirect_stdout(io.StringIO()):
        model = onnx_tool.Model(str(onnx_path))
        model.graph.shape_infer(inputs)
        model.graph.profile()
    tensors = model.graph.tensormap

    def shape_of(name: str) -> list[int]:
        return list(tensors[name].get_shape()) if name in tensors else []

    out = []
    for node in model.graph.nodemap.values():
        macs = float(node.macs[0]) if isinstance(node.macs, (list, tuple)) else float(node.macs)
        flops = 2 * macs if node.op_type in MATMUL_OPS else macs
        kind, conv3 = _kind(node, shape_of)
        out.append(NodeCost(node.op_type, flops, float(node.memory), kind, conv3))
    return out


def predict_ms(costs: list[NodeCost], prof: DeviceProfile, int8: bool = False,
               flop_divisor=None) -> float:
    """Modelled milliseconds of a graph on `prof`. `flop_divisor(node)`, when given, divides a node's
    FLOPs (a runtime's algorithm that needs fewer multiplies, e.g. Winograd convolutions)."""
    total_s = 0.0
    for c in costs:
        is_mm = c.op in MATMUL_OPS
        flops = c.flops / flop_divisor(c) if flop_divisor is not None else c.flops
        compute = flops / prof.compute_rate(flops, int8 and is_mm, c.kind) if flops else 0.0
        memory = c.bytes / (prof.bandwidth_gbs * 1e9)
        total_s += prof.overhead_us * 1e-6 + max(compute, memory)
    return total_s * 1e3


# ------------------------------------------------------------------ host calibration
def _time_session(sess, feeds, runs: int = 200) -> float:
    for _ in range(20):
        sess.run(None, feeds)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, feeds)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _session(model, threads: int):
    ort = require("onnxruntime", "pip install onnxruntime")
    opts = quiet_session_options(ort.SessionOptions())
    opts.intra_op_num_threads = threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # time the ops as written
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def calibrate_host(threads: int = 1, seq: int = 61, dim: int = 128) -> DeviceProfile:
    """Micro-benchmarks in ONNX Runtime: per-op overhead (a chain of tiny Adds), cache-resident
    bandwidth (Adds on a (seq, 4*dim) tensor) and achieved GFLOP/s of matmuls of the model's sizes."""
    require("onnx", "pip install onnx")
    from onnx import TensorProto, helper, numpy_helper

    def chain_of_adds(shape, n):
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)
        nodes, prev = [], "x"
        for i in range(n):
            nodes.append(helper.make_node("Add", [prev, "x"], [f"a{i}"]))
            prev = f"a{i}"
        y = helper.make_tensor_value_info(prev, TensorProto.FLOAT, shape)
        return helper.make_model(helper.make_graph(nodes, "adds", [x], [y]), opset_imports=[helper.make_opsetid("", 18)])

    n = 64
    tiny = _time_session(_session(chain_of_adds([1, 1], n), threads), {"x": np.ones((1, 1), np.float32)})
    overhead = tiny / n
    big_shape = [1, seq, 4 * dim]
    big = _time_session(_session(chain_of_adds(big_shape, n), threads), {"x": np.ones(big_shape, np.float32)})
    bytes_per_add = 3 * np.prod(big_shape) * 4
    bandwidth = bytes_per_add / max(big / n - overhead, 1e-9) / 1e9
    measured = {}
    rng = np.random.default_rng(0)
    for k, m in [(dim, 16), (dim, dim), (dim, 3 * dim), (dim, 4 * dim), (4 * dim, dim)]:
        w = numpy_helper.from_array(rng.standard_normal((k, m)).astype(np.float32), "w")
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, seq, k])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, seq, m])
        model = helper.make_model(helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "mm", [x], [y],
                                                    [w]), opset_imports=[helper.make_opsetid("", 18)])
        t = _time_session(_session(model, threads), {"x": rng.standard_normal((1, seq, k)).astype(np.float32)})
        flops = 2.0 * seq * k * m
        measured[flops] = flops / max(t - overhead, 1e-9) / 1e9
    from mmedge.bench.machine import cpu_model

    return DeviceProfile("host", f"this machine ({cpu_model()}), {threads} thread(s), calibrated by micro-benchmarks",
                         "measured here: ONNX Runtime micro-benchmarks", threads, 0.0, 0.0, float(bandwidth), 1.0,
                         float(overhead * 1e6), measured)


def check_host(bundle: str | Path, threads: int = 1, precision: str = "fp32") -> dict:
    """The calibrated host profile predicts every exported ONNX stage; compared with its measured
    median latency in ONNX Runtime. Returns per-stage figures and the median absolute error."""
    from mmedge.bench.profile import _feeds
    from mmedge.bundle.manifest import load_manifest

    ort = require("onnxruntime", "pip install onnxruntime")
    bundle = Path(bundle)
    manifest = load_manifest(bundle)
    art = next(a for a in manifest["artifacts"] if a["runtime"] == "onnxruntime" and a["format"] == "onnx"
               and a["precision"] == precision)
    host = calibrate_host(threads, dim=manifest["model"]["config"]["dim"])
    rows = []
    for stage, entry in art["stages"].items():
        if stage not in manifest["stages"]:  # the text-only stages of modality pruning: not on the main path
            continue
        opts = quiet_session_options(ort.SessionOptions())
        opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(str(bundle / entry["file"]), opts, providers=["CPUExecutionProvider"])
        measured = _time_session(sess, _feeds(manifest, stage)) * 1e3
        predicted = predict_ms(graph_costs(bundle / entry["file"]), host, int8=precision == "int8")
        rows.append({"stage": stage, "measured_ms": measured, "modelled_ms": predicted,
                     "error": (predicted - measured) / measured})
    errors = np.abs([r["error"] for r in rows])
    return {"profile": asdict(host), "stages": rows, "median_abs_error": float(np.median(errors)),
            "max_abs_error": float(errors.max()), "precision": precision, "threads": threads}


def model_device(bundle: str | Path, device: str, precision: str = "fp32", host_check: dict | None = None) -> dict:
    """Modelled latency of every stage and of each standard policy's mean path on a phone profile."""
    from mmedge.bundle.manifest import load_manifest

    bundle = Path(bundle)
    manifest = load_manifest(bundle)
    prof = profile(device)
    # the fp32 graph is costed in both cases (onnx-tool cannot shape the int8 graph's integer ops);
    # int8 runs its matmul-like nodes at the profile's int8 rate, like XNNPACK's int8 kernels
    art = next(a for a in manifest["artifacts"] if a["runtime"] == "onnxruntime" and a["format"] == "onnx"
               and a["precision"] == "fp32")
    stages = {name: predict_ms(graph_costs(bundle / e["file"]), prof, int8=precision == "int8")
              for name, e in art["stages"].items()}
    per_ratio = {}
    for k in manifest["keep_ratios"]:
        cumulative = np.cumsum([stages[s] for s in k["stages"]]).tolist()
        per_ratio[str(k["keep_ratio"])] = {"exit_ms": cumulative}
    return {"schema_version": 1, "kind": "modelled", "device": device, "profile": asdict(prof),
            "precision": precision, "stages_ms": stages, "by_keep_ratio": per_ratio,
            "host_check": host_check, "anchor_check": anchor_statement(prof.name),
            "note": "MODELLED, not measured: per-operator cost model on the device profile's public specification, "
                    f"efficiency and per-op overhead: {prof.calibration}"}

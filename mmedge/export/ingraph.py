"""The in-graph variant: one ONNX graph with the exits as conditional branches.

torch.cond becomes ONNX ``If``: one per later stage, in sequence. Each runs its stage while no exit
so far has a learned confidence reaching the ``threshold`` input, and otherwise carries the stopped
exit's outputs through (a copy of the hidden state), so the graph returns the first exit that stops.
Staged export stays the default (some NPUs execute both branches of an If); this form suits
runtimes that want one call, and at real size it costs less than the stage calls it replaces
(benchmarks/results/hf_scale/). It is checked against the staged chain at several thresholds.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from mmedge.export.onnx_weights import strip_node_metadata
from mmedge.export.recipe import Tolerances
from mmedge.export.stages import StageSpec, example_inputs, stage_module
from mmedge.export.tooling import export_failure, quiet, require
from mmedge.models.model import AdaptiveVLModel

INPUTS = ("pixel_values", "input_ids", "text_mask", "threshold")
OUTPUTS = ("logits", "confidence", "exit_index", "kept_index")


def _module(model: AdaptiveVLModel, spec: StageSpec):
    """The stage modules of one keep ratio (mmedge's own or an adapted model's: the same stage contract)
    as a flat chain of conditionals: stage s + 1 runs when no exit up to s has stopped, else the stopped
    exit's outputs are carried through. One level of torch.cond per stage (nesting them would trace the
    deeper stages twice per level: exponential in the number of exits)."""
    torch = require("torch", "pip install torch==2.13.0")

    def step(stage: torch.nn.Module, index: int):
        """(run, carry) branches of one later stage, over (hidden, mask, logits, confidence, exit_index)."""

        def run(hidden, mask, logits, confidence, exit_index):
            h, lg, cf = stage(hidden, mask)
            return h, lg, cf, torch.full((1,), index, dtype=torch.int32)

        def carry(hidden, mask, logits, confidence, exit_index):
            return hidden.clone(), logits.clone(), confidence.clone(), exit_index.clone()

        return run, carry

    class InGraphExits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.first = stage_module(model, spec)
            self.later = torch.nn.ModuleList(stage_module(model, StageSpec(s, spec.keep_ratio, spec.kept_tokens,
                                                                           spec.seq_len))
                                             for s in range(1, model.num_stages))

        def forward(self, pixel_values, input_ids, text_mask, threshold):
            hidden, mask, logits, confidence, kept = self.first(pixel_values, input_ids, text_mask)
            exit_index = torch.zeros(1, dtype=torch.int32)
            for index, stage in enumerate(self.later, start=1):  # unrolled at trace time
                run, carry = step(stage, index)
                # a stopped exit's confidence is carried with it, so it keeps every later stage skipped
                hidden, logits, confidence, exit_index = torch.cond(
                    (confidence >= threshold).all(), carry, run, (hidden, mask, logits, confidence, exit_index))
            return logits, confidence, exit_index, kept

    return InGraphExits().eval()


def export(model: AdaptiveVLModel, spec: StageSpec, path: Path, opset: int) -> None:
    torch = require("torch", "pip install torch==2.13.0")
    onnx = require("onnx", "pip install onnx onnxscript")
    inputs = example_inputs(model, spec) + (torch.tensor([0.9]),)
    try:
        with quiet():
            program = torch.onnx.export(_module(model, spec), inputs, input_names=list(INPUTS),
                                        output_names=list(OUTPUTS), opset_version=opset, dynamo=True,
                                        optimize=True, verbose=False)
    except Exception as exc:  # noqa: BLE001
        raise export_failure("onnx (in-graph exits)", model, spec, exc) from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    proto = program.model_proto
    strip_node_metadata(proto.graph)
    onnx.save_model(proto, str(path), save_as_external_data=False)


def check_against_staged(path: Path, staged_chains: list[list[dict]], feeds: list[dict], limits: Tolerances,
                         thresholds=(0.0, 0.5, 0.9, 0.99, 1.01)) -> dict:
    """Run the If graph at several thresholds against the staged chain of the same precision, under that
    precision's limits (the recipe's, as for the artifact against PyTorch): the exit taken and its answer
    agree (fp32: always; int8: on the recipe's shares, since onnxruntime fuses the branches' quantized
    products differently from the stage graphs'), and the logits within `logits_abs` (int8: reported only)."""
    from mmedge.export.parity import exit_taken

    ort = require("onnxruntime", "pip install onnxruntime")
    from mmedge.runtime.backends.quiet import quiet_session_options

    session = ort.InferenceSession(str(path), quiet_session_options(ort.SessionOptions()),
                                   providers=["CPUExecutionProvider"])
    same_exit, same_answer, total, err = 0, 0, 0, 0.0
    for feed, chain in zip(feeds, staged_chains):
        for thr in thresholds:
            logits, _, exit_index, _ = session.run(None, {**feed, "threshold": np.array([thr], np.float32)})
            want = exit_taken(chain, thr)
            total += 1
            same_exit += int(exit_index[0]) == want
            same_answer += int(np.argmax(logits)) == int(np.argmax(chain[want]["logits"]))
            err = max(err, float(np.abs(logits - chain[want]["logits"]).max()))
    exits, answers = same_exit / total, same_answer / total
    limit = limits.logits_abs if math.isfinite(limits.logits_abs) else None  # JSON has no infinity
    return {"samples": len(feeds), "thresholds": list(thresholds), "exit_agreement": exits,
            "answer_agreement": answers, "logits_max_abs_err": err, "logits_limit": limit,
            "passed": exits >= limits.min_exit_agreement and answers >= limits.min_answer_agreement
            and (limit is None or err <= limit)}

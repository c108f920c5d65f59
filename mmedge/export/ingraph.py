"""The in-graph variant: one ONNX graph with the exits as conditional branches.

torch.cond becomes ONNX ``If``: after each exit, if the learned confidence reaches the
``threshold`` input the graph returns that exit's answer, otherwise it runs the next stage.
Staged export stays the default (some NPUs execute both branches of an If); this form suits
runtimes that want one call. It is checked against the staged chain at several thresholds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmedge.export.onnx_weights import strip_node_metadata
from mmedge.export.stages import FirstStage, StageSpec, example_inputs
from mmedge.export.tooling import export_failure, quiet, require
from mmedge.models.model import AdaptiveVLModel

INPUTS = ("pixel_values", "input_ids", "text_mask", "threshold")
OUTPUTS = ("logits", "confidence", "exit_index", "kept_index")


def _module(model: AdaptiveVLModel, keep_ratio: float):
    torch = require("torch", "pip install torch==2.13.0")

    class InGraphExits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.first, self.model = FirstStage(model, keep_ratio), model

        def forward(self, pixel_values, input_ids, text_mask, threshold):
            hidden, mask, logits, confidence, kept = self.first(pixel_values, input_ids, text_mask)
            return self._from(0, hidden, mask, logits, confidence, threshold) + (kept,)

        def _from(self, stage, hidden, mask, logits, confidence, threshold):
            if stage == self.model.num_stages - 1:  # unrolled at trace time: the stage index is Python
                return logits, confidence, torch.full((1,), stage, dtype=torch.int32)

            def stop(hidden, mask, logits, confidence, threshold):
                return logits.clone(), confidence.clone(), torch.full((1,), stage, dtype=torch.int32)

            def go_on(hidden, mask, logits, confidence, threshold):
                h, lg, cf = self.model.forward_stage(stage + 1, hidden, mask)
                return self._from(stage + 1, h, mask, lg, cf, threshold)

            return torch.cond((confidence >= threshold).all(), stop, go_on,
                              (hidden, mask, logits, confidence, threshold))

    return InGraphExits().eval()


def export(model: AdaptiveVLModel, spec: StageSpec, path: Path, opset: int) -> None:
    torch = require("torch", "pip install torch==2.13.0")
    onnx = require("onnx", "pip install onnx onnxscript")
    inputs = example_inputs(model, spec) + (torch.tensor([0.9]),)
    try:
        with quiet():
            program = torch.onnx.export(_module(model, spec.keep_ratio), inputs, input_names=list(INPUTS),
                                        output_names=list(OUTPUTS), opset_version=opset, dynamo=True,
                                        optimize=True, verbose=False)
    except Exception as exc:  # noqa: BLE001
        raise export_failure("onnx (in-graph exits)", model, spec, exc) from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    proto = program.model_proto
    strip_node_metadata(proto.graph)
    onnx.save_model(proto, str(path), save_as_external_data=False)


def check_against_staged(path: Path, staged_chains: list[list[dict]], feeds: list[dict],
                         thresholds=(0.0, 0.5, 0.9, 0.99, 1.01)) -> dict:
    """Run the If graph at several thresholds; its exit and logits must equal the staged chain's."""
    from mmedge.export.parity import exit_taken

    ort = require("onnxruntime", "pip install onnxruntime")
    from mmedge.runtime.backends.quiet import quiet_session_options

    session = ort.InferenceSession(str(path), quiet_session_options(ort.SessionOptions()),
                                   providers=["CPUExecutionProvider"])
    same_exit, total, err = 0, 0, 0.0
    for feed, chain in zip(feeds, staged_chains):
        for thr in thresholds:
            logits, _, exit_index, _ = session.run(None, {**feed, "threshold": np.array([thr], np.float32)})
            want = exit_taken(chain, thr)
            total += 1
            same_exit += int(exit_index[0]) == want
            err = max(err, float(np.abs(logits - chain[want]["logits"]).max()))
    return {"samples": len(feeds), "thresholds": list(thresholds), "exit_agreement": same_exit / total,
            "logits_max_abs_err": err, "passed": same_exit == total and err <= 1e-4}

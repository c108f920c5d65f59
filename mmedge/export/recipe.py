"""Export recipes: which targets, precisions and keep ratios, and how parity is judged.

A recipe is a JSON file of ExportRecipe fields (see the ones in the top-level ``export/``
folder); command-line flags override it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mmedge.errors import ConfigError
from mmedge.models.config import from_dict, read_json

TARGETS = ("onnx", "executorch", "coreml")
PRECISIONS = ("fp32", "int8")


@dataclass
class Tolerances:
    """Parity limits against the PyTorch reference (per precision)."""

    logits_abs: float            # max |logits - reference| over the parity samples
    hidden_rel: float            # max |hidden - ref| / max(1, max |ref|)
    min_answer_agreement: float  # fraction of samples with the reference's answer, every exit
    min_exit_agreement: float    # fraction with the reference's exit at the default threshold
    max_accuracy_drop: float     # val accuracy (final exit) may fall at most this much


FP32_TOLERANCES = Tolerances(logits_abs=1e-4, hidden_rel=1e-4, min_answer_agreement=1.0,
                             min_exit_agreement=1.0, max_accuracy_drop=0.0)
# int8 changes numbers by design: limits on decisions and accuracy, not on raw values
# (raw errors are still measured and reported).
INT8_TOLERANCES = Tolerances(logits_abs=float("inf"), hidden_rel=float("inf"), min_answer_agreement=0.90,
                             min_exit_agreement=0.85, max_accuracy_drop=0.02)


@dataclass
class ExportRecipe:
    targets: list[str] = field(default_factory=lambda: list(TARGETS))
    quantize: str | None = None         # None (fp32 only) or "int8" (fp32 and int8)
    keep_ratios: list[float] | None = None  # None: the model's trained keep ratios
    opset: int = 20                     # ONNX opset (20: GELU as one Gelu node, which onnxruntime runs fused)
    ort_format: bool = True             # also convert ONNX stages to ORT format (ORT Mobile)
    in_graph: bool = True               # also export one ONNX graph with the exits as If branches
    onnx_weights: str = "shared"        # "shared": one weights.bin per ONNX precision; "embedded": per file
    coreml_target: str = "iOS18"        # minimum deployment target
    coreml_precision: str = "float32"   # float32 | float16 compute precision
    parity_samples: int = 32            # validation samples run through every stage and backend
    accuracy_samples: int = 300         # validation samples for the int8-vs-fp32 accuracy change
    calibration_samples: int = 32       # int8 calibration samples (training split)
    default_threshold: float = 0.9      # learned-confidence exit threshold until calibrated
    data_seed: int = 0
    data: str = "scenes"                # parity/accuracy/calibration samples: scenes or a real dataset NAME:ROOT
    # modality pruning: text-only stages after this stage, and the per-input rule that picks them
    drop_visual_after: int | None = None          # None: no text-only stages
    drop_visual_signal: str = "visual_text_norm_ratio"  # mmedge.runtime.pruning.SIGNALS
    drop_visual_when: str = "below"               # prune when the signal is below / above the threshold
    drop_visual_threshold: float | None = None    # None: measured at export (drop_visual_min_agreement)
    drop_visual_samples: int = 300                # validation samples the default threshold is measured on
    drop_visual_min_agreement: float = 0.99       # final answers equal to full depth's, over all samples
    # int8 limits (fp32 limits are fixed: logits <= 1e-4, every answer and exit equal)
    int8_min_answer_agreement: float = INT8_TOLERANCES.min_answer_agreement
    int8_min_exit_agreement: float = INT8_TOLERANCES.min_exit_agreement
    int8_max_accuracy_drop: float = INT8_TOLERANCES.max_accuracy_drop

    def __post_init__(self) -> None:
        problems = self.validate()
        if problems:
            raise ConfigError(problems, "export recipe")

    def validate(self) -> list[str]:
        p = []
        bad = [t for t in self.targets if t not in TARGETS]
        if bad or not self.targets:
            p.append(f"targets {self.targets} must be a non-empty subset of {list(TARGETS)}")
        if self.quantize not in (None, "int8"):
            p.append(f"quantize {self.quantize!r} must be null or 'int8'")
        if self.keep_ratios is not None and (not self.keep_ratios or any(not 0 < r <= 1 for r in self.keep_ratios)):
            p.append(f"keep_ratios {self.keep_ratios} must be in (0, 1]")
        if self.onnx_weights not in ("shared", "embedded"):
            p.append(f"onnx_weights {self.onnx_weights!r} must be 'shared' (one external weights file per "
                     "precision) or 'embedded' (each .onnx file self-contained)")
        if self.opset < 18:
            p.append(f"opset {self.opset} must be at least 18")
        if self.coreml_target != "iOS18":
            p.append(f"coreml_target {self.coreml_target!r} must be 'iOS18' (multifunction .mlpackage needs iOS 18)")
        if self.coreml_precision not in ("float32", "float16"):
            p.append(f"coreml_precision {self.coreml_precision!r} must be 'float32' or 'float16'")
        for name in ("parity_samples", "accuracy_samples", "calibration_samples"):
            if getattr(self, name) < 1:
                p.append(f"{name} must be at least 1")
        for name in ("int8_min_answer_agreement", "int8_min_exit_agreement", "int8_max_accuracy_drop"):
            if not 0 <= getattr(self, name) <= 1:
                p.append(f"{name} {getattr(self, name)} must be in [0, 1]")
        if self.data != "scenes":
            from mmedge.data.sources import parse_data_spec
            from mmedge.errors import DatasetError

            try:
                parse_data_spec(self.data)
            except DatasetError as exc:
                p.append(f"data: {exc}")
        p += self._pruning_problems()
        if not 0 < self.default_threshold <= 1:
            p.append(f"default_threshold {self.default_threshold} must be in (0, 1]")
        return p

    def _pruning_problems(self) -> list[str]:
        import math

        from mmedge.runtime.pruning import DIRECTIONS, SIGNALS

        p = []
        after = self.drop_visual_after
        if after is not None and (isinstance(after, bool) or not isinstance(after, int) or after < 0):
            p.append(f"drop_visual_after {after!r} must be null or a stage index >= 0")
        if self.drop_visual_signal not in SIGNALS:
            p.append(f"drop_visual_signal {self.drop_visual_signal!r} must be one of {list(SIGNALS)}")
        if self.drop_visual_when not in DIRECTIONS:
            p.append(f"drop_visual_when {self.drop_visual_when!r} must be one of {list(DIRECTIONS)}")
        t = self.drop_visual_threshold
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t)):
            p.append(f"drop_visual_threshold {t!r} must be null or a finite number")
        if self.drop_visual_samples < 1:
            p.append("drop_visual_samples must be at least 1")
        if not 0 <= self.drop_visual_min_agreement <= 1:
            p.append(f"drop_visual_min_agreement {self.drop_visual_min_agreement} must be in [0, 1]")
        return p

    @property
    def precisions(self) -> list[str]:
        return ["fp32"] + ([self.quantize] if self.quantize else [])

    def tolerances(self, precision: str) -> Tolerances:
        if precision == "fp32":
            return FP32_TOLERANCES
        return Tolerances(INT8_TOLERANCES.logits_abs, INT8_TOLERANCES.hidden_rel, self.int8_min_answer_agreement,
                          self.int8_min_exit_agreement, self.int8_max_accuracy_drop)

    def to_dict(self) -> dict:
        from dataclasses import asdict
        return asdict(self)

    @classmethod
    def load(cls, path: str) -> "ExportRecipe":
        data = read_json(path)
        data.pop("description", None)  # free text for people
        return from_dict(cls, data, f"export recipe {path}")

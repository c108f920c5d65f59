"""Engine: load a bundle, preprocess, run stages through a backend, let the controller stop early.

    engine = Engine.load("vqa-default.mmedge")            # backend="auto", verified by SHA-256
    p = engine.predict("scene.png", "what color is the circle ?")
    p.answer, p.confidence, p.exit_index, p.kept_visual_tokens, p.timings_ms
    p.visual_dropped_after   # the stage after which modality pruning dropped the image, or None

    two = Engine.load("nlvr2.mmedge")                     # preprocessing.num_images 2 (an adapted NLVR2 model)
    two.predict([left, right], "the left image has two dogs")   # a list of exactly two images
    Engine.load("itr.mmedge").predict(image, caption).match_score   # head "match-score": sigmoid(s)

Needs numpy, Pillow and the chosen backend only (no torch with onnxruntime). Thread-safe:
concurrent calls give exactly the results of sequential ones (sessions are read-only; the only
shared state, the per-stage time statistics, is guarded by a lock).
"""

from __future__ import annotations

import importlib.util
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmedge.bundle import paths
from mmedge.bundle.manifest import (ADAPTED_RESIZE, BERT_WORDPIECE, CAPTION, MATCH_SCORE, MAX_TOKENIZER_BYTES, SOFTMAX,
                                    VLM, check_load_options, load_bundle_manifest, num_images, parse_json)
from mmedge.data.preprocess import ImageLike, preprocess_image, preprocess_stretched
from mmedge.data.tokenizer import PAD, UNK, WordTokenizer
from mmedge.errors import (BundleError, CheckpointError, ConfigError, ImageCountError, MissingDependencyError,
                           MMEdgeError)
from mmedge.runtime.backends import BACKENDS, open_session
from mmedge.runtime.controller import ExitState, Policy, policy_from_thresholds, should_prune, should_stop, softmax_max
from mmedge.runtime.pruning import PruningRule, rule_from_manifest, signal_value, stored_rule

MODES = ("auto", "staged", "in-graph")
BUNDLE_RULE = "bundle"  # predict(pruning=...): the bundle's own modality pruning rule (None: never prune)

BACKEND_ORDER = ("onnxruntime", "executorch", "coreml")
_PACKAGES = {"onnxruntime": "onnxruntime", "executorch": "executorch", "coreml": "coremltools", "torch": "torch"}


@dataclass
class Prediction:
    answer: str
    confidence: float                # learned confidence at the exit taken
    max_probability: float           # top softmax probability at the exit taken
    exit_index: int                  # 0-based exit taken
    exit_layer: int                  # the layer after which it exits
    kept_visual_tokens: list[int]    # row-major patch indices the prefilter kept (sorted); two images:
                                     # image i's patch j is i * N + j (N patches per image)
    keep_ratio: float
    timings_ms: dict[str, float] = field(default_factory=dict)  # preprocess, stage names, total
    visual_dropped_after: int | None = None  # modality pruning: the stage after which the image was dropped
    pruning_signal: float | None = None      # the rule's signal, when it was computed
    match_score: float | None = None         # head "match-score": sigmoid(s) at the exit taken ("yes" above 0.5)


@dataclass
class AllExits:
    """Every exit's outputs for one query (full depth), for calibration and analysis."""

    answers: list[int]
    confidences: list[float]
    max_probabilities: list[float]
    kept_visual_tokens: list[int]
    stage_ms: list[float]
    logits: list[np.ndarray] = field(default_factory=list)  # (labels,) float32 per exit
    pruned: "PrunedExits | None" = None  # the text-only path after the pruning stage, when the bundle has one


@dataclass
class PrunedExits:
    """Modality pruning, for one query: the rule's signal after stage `after_stage`, and the exits
    after it on the text-only path (exits after_stage + 1 .. last)."""

    after_stage: int
    signal: float
    answers: list[int]
    confidences: list[float]
    max_probabilities: list[float]


class Engine:
    def __init__(self, root: Path, manifest: dict, backend: str, artifact: dict, session, policy: Policy,
                 keep_ratio: float, tokenizer: WordTokenizer | None = None) -> None:
        self.root, self.manifest, self.backend, self.artifact = root, manifest, backend, artifact
        self.session = session
        self.policy = policy
        self.keep_ratio = keep_ratio
        self.labels: list[str] = manifest["labels"]
        self.tokenizer = tokenizer or _load_tokenizer(root, manifest)
        self.image_size: int = manifest["preprocessing"]["image_size"]
        self.num_images: int = num_images(manifest)  # 2: predict([image_a, image_b], text)
        self.head: str = manifest.get("head", SOFTMAX)  # "match-score": Prediction.match_score = sigmoid(s)
        patch = manifest["model"]["config"].get("patch_size")
        self._patches = (self.image_size // patch) ** 2 if type(patch) is int and patch > 0 else None
        self._groups = {k["keep_ratio"]: k["stages"] for k in manifest["keep_ratios"]}
        section = manifest.get("modality_pruning")
        self.pruning_section: dict | None = section
        self.pruning: PruningRule | None = rule_from_manifest(section)  # applied by default when enabled
        self._text_stages: list[str] = [st["name"] for st in section["stages"]] if section else []
        self._num_text: int = manifest["tokenizer"]["max_length"]
        self._stage_times: dict[str, deque] = {}
        self._lock = threading.Lock()
        self.in_graph: dict[float, object] = {}  # keep ratio -> session over its in-graph graph (mode auto)

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, bundle: str | Path, backend: str = "auto", precision: str = "fp32", fmt: str | None = None,
             keep_ratio: float | None = None, policy: Policy | str | None = None, threads: int | None = None,
             verify: bool = True, verify_key=None, self_check: bool = True, mode: str = "staged",
             min_sequence: int | None = None, expect_name: str | None = None) -> "Engine":
        """Open a bundle: check its manifest (bounds, consistency, paths, nothing unlisted, the size and
        SHA-256 of every file, and with `verify_key` its Ed25519 signature) before opening anything,
        then its stages; with `self_check` one query runs through every stage so that a bundle that
        loads can predict (every output of the declared shape and finite). A refusal is a BundleError
        whose `code` names the reason (docs/bundle-format.md). A captioning bundle loads as a
        CaptionEngine (mmedge.runtime.caption_engine), a generative VLM bundle as a VLMEngine
        (mmedge.runtime.vlm_engine), with the same options.

        verify: False skips only the SHA-256 of the listed files (sizes, paths, links, unlisted files
        are still checked); it cannot be combined with `verify_key`, whose signature covers the files
        only through their hashes (ConfigError).
        min_sequence / expect_name: rollback protection. The bundle's manifest must carry a `release`
        with at least this sequence and this name (code "rollback"); an app stores the highest
        sequence it has accepted and passes it next time. Meaningful against an attacker only with
        `verify_key` (the signature covers the release).

        mode: "staged" (default) runs the stage files one by one under the Python controller; "auto"
        also opens the bundle's in-graph graphs (onnxruntime, fp32 or int8; exits as `If` branches) and runs a
        query through one of them whenever the policy is one the graph expresses (confidence) and no
        modality pruning applies, else staged; "in-graph" is auto that refuses a bundle without them.
        Staged is the default because it measured faster on mmedge's own small models
        (benchmarks/results/staging/: the `If` graph costs more than the stage calls it replaces once the
        controller's own overhead is small); at ViLT-B size the in-graph graph is the faster one
        (benchmarks/results/hf_scale/), so load such bundles with "auto" for a confidence policy.

        threads: the runtime's thread count (None: its default). ExecuTorch has one thread pool per
        process, which can be sized only before its first program runs: a different count after
        that raises BackendUnavailableError (``set_executorch_threads`` sizes it up front)."""
        _check_load_arguments(backend, precision, fmt, threads)
        if mode not in MODES:
            raise ConfigError(f"mode {mode!r} unknown; choose one of {list(MODES)}", "arguments")
        ratio = None if keep_ratio is None else _ratio(keep_ratio)
        if policy is not None and not isinstance(policy, (Policy, str)):
            raise ConfigError(f"policy must be a Policy or a policy name, got {type(policy).__name__}", "arguments")
        if not isinstance(self_check, bool):
            raise ConfigError(f"self_check must be True or False, got {type(self_check).__name__}", "arguments")
        check_load_options(verify, verify_key, min_sequence, expect_name)
        manifest = load_bundle_manifest(bundle, verify_files=verify, verify_key=verify_key, min_sequence=min_sequence,
                                        expect_name=expect_name)
        root = Path(bundle)
        if manifest.get("kind") == CAPTION:  # a captioning bundle: its own engine, with caption(image)
            from mmedge.runtime.caption_engine import CaptionEngine

            if mode == "in-graph":
                raise ConfigError("captioning bundles have no in-graph form; load with mode='staged' (or 'auto', "
                                  "which is staged for them)", "arguments")
            return CaptionEngine.open_checked(root, manifest, backend, precision, fmt, ratio, policy, None, threads,
                                              self_check)
        if manifest.get("kind") == VLM:  # a generative VLM bundle: its own engine, with generate(image, prompt)
            from mmedge.runtime.vlm_engine import VLMEngine

            if mode == "in-graph":
                raise ConfigError("generative VLM bundles have no in-graph form; load with mode='staged' (or 'auto', "
                                  "which is staged for them)", "arguments")
            return VLMEngine.open_checked(root, manifest, backend, precision, fmt, ratio, policy, None, threads,
                                          self_check)
        artifacts = [a for a in manifest["artifacts"] if a["precision"] == precision
                     and (fmt is None or a["format"] == fmt)]
        if not artifacts:
            have = sorted({(a["runtime"], a["format"], a["precision"]) for a in manifest["artifacts"]})
            raise BundleError(f"{root} has no {precision} artifact{f' in format {fmt}' if fmt else ''}; it has {have}",
                              code="unsupported")
        backend = cls._choose_backend(backend, artifacts, root)
        artifact = next((a for a in artifacts if a["runtime"] == backend and (fmt or a["format"] != "ort")),
                        next(a for a in artifacts if a["runtime"] == backend))
        thresholds = manifest["thresholds"]
        ratio = thresholds["keep_ratio"] if ratio is None else ratio
        exported = [k["keep_ratio"] for k in manifest["keep_ratios"]]
        if ratio not in exported:
            raise ConfigError(f"keep ratio {ratio} was not exported; this bundle has {exported}", "arguments")
        tokenizer = _load_tokenizer(root, manifest)  # checked before any stage file is opened
        session = _open(backend, root, artifact, threads)
        engine = cls(root, manifest, backend, artifact, session,
                     _policy(policy) if policy is not None else policy_from_thresholds(thresholds), ratio, tokenizer)
        if mode != "staged":
            engine._open_in_graph(threads, required=mode == "in-graph")
        if self_check:
            engine.self_check()
        return engine

    def caption(self, image: ImageLike, max_len: int | None = None, **kwargs):
        """Captioning bundles load as a CaptionEngine (mmedge.runtime.caption_engine) with this method."""
        raise BundleError(f"{self.root} is a {self.manifest['task']} bundle, which answers questions with "
                          "predict(image, text); export a captioning model (models/caption-default) to caption")

    def generate(self, image: ImageLike, prompt: str | None = None, **kwargs):
        """Generative VLM bundles load as a VLMEngine (mmedge.runtime.vlm_engine) with this method."""
        raise BundleError(f"{self.root} is a {self.manifest['task']} bundle, which answers questions with "
                          "predict(image, text); export a model adapted with `mmedge adapt --task generate` to generate")

    def self_check(self) -> None:
        """One blank query through every stage of every keep ratio (and the text-only and in-graph
        graphs); BundleError code "self-check" unless every output has the shape the manifest
        declares and the next stage takes, and holds finite values only (weights full of NaN answer
        with confidence NaN)."""
        feeds = self.preprocess(self._grey(), "check")
        for group in self.manifest["keep_ratios"]:
            try:
                outs, _ = self._all_stages(feeds, group["stages"])
            except MMEdgeError:
                raise
            except Exception as exc:  # a backend's own error type: the files disagree with the manifest
                raise BundleError(f"{self.root}: the {self.backend} stages fail on a test query "
                                  f"({type(exc).__name__}: {str(exc)[:300]}); export the bundle again",
                                  code="self-check") from exc
            for name, out in zip(group["stages"], outs):
                check_outputs(self.root, f"stage {name}", out, self.manifest["stages"][name]["outputs"])
            if self.pruning_section:
                self._check_pruned(feeds, group["stages"])
            kept = np.asarray(outs[0]["kept_index"]).reshape(-1)
            patches = self._patches
            if patches and kept.size and (kept.min() < 0 or kept.max() >= patches):
                raise BundleError(f"{self.root}: the prefilter keeps token indices outside 0..{patches - 1}",
                                  code="self-check")
        self._check_in_graph(feeds)

    def _open_in_graph(self, threads: int | None, required: bool) -> None:
        """Sessions over the in-graph graphs this engine can use: onnxruntime, the artifact's precision (fp32:
        `file`, int8: `int8_file`) and format."""
        entries = (self.manifest.get("in_graph") or {}).get("by_keep_ratio", {})
        usable = self.backend == "onnxruntime" and self.artifact["precision"] in ("fp32", "int8")
        prefix = "" if self.artifact["precision"] == "fp32" else f"{self.artifact['precision']}_"
        key = prefix + ("ort_file" if self.artifact["format"] == "ort" else "file")
        files = {e["keep_ratio"]: e[key] for e in entries.values() if usable and key in e}
        if required and not files:
            raise ConfigError(f"{self.root} has no in-graph graph for onnxruntime {self.artifact['precision']} "
                              f"{self.artifact['format']} (export with in_graph, or load with mode='staged' or 'auto')",
                              "arguments")
        extra = {e["keep_ratio"]: e.get(f"{prefix}external_data") for e in entries.values()}
        for ratio, file in files.items():
            name = f"in_graph@{ratio:g}"
            weights = None if key.endswith("ort_file") else extra[ratio]  # an ORT-format file holds its own
            graph = {"stages": {name: {"file": file}}, "external_data": weights}
            self.in_graph[ratio] = _open("onnxruntime", self.root, graph, threads)

    def _check_in_graph(self, feeds) -> None:
        """Each in-graph graph answers a test query with the declared outputs (threshold 2: full depth)."""
        for ratio, session in self.in_graph.items():
            try:
                out = session.run(f"in_graph@{ratio:g}", {**feeds, "threshold": np.array([2.0], np.float32)})
            except Exception as exc:  # a backend's own error type
                raise BundleError(f"{self.root}: the in-graph graph for keep ratio {ratio} fails on a test query "
                                  f"({type(exc).__name__}: {str(exc)[:300]}); export the bundle again",
                                  code="self-check") from exc
            k = next(g["kept_tokens"] for g in self.manifest["keep_ratios"] if g["keep_ratio"] == ratio)
            want = [{"name": "logits", "shape": [1, len(self.labels)]}, {"name": "confidence", "shape": [1]},
                    {"name": "exit_index", "shape": [1]}, {"name": "kept_index", "shape": [1, k]}]
            check_outputs(self.root, f"the in-graph graph for keep ratio {ratio}", out, want)
            if int(np.asarray(out["exit_index"]).reshape(-1)[0]) != len(self.manifest["exit_layers"]) - 1:
                raise BundleError(f"{self.root}: the in-graph graph for keep ratio {ratio} stops before the last "
                                  "exit at threshold 2; export the bundle again", code="self-check")

    def uses_in_graph(self, policy: Policy, ratio: float, rule: PruningRule | None) -> bool:
        """Whether predict() runs this query through the in-graph graph."""
        return ratio in self.in_graph and policy.kind == "confidence" and rule is None

    def run_in_graph(self, feeds: dict[str, np.ndarray], keep_ratio: float | None = None,
                     threshold: float | None = None) -> dict[str, np.ndarray]:
        """Preprocessed inputs through the keep ratio's in-graph graph (load with mode "auto" or "in-graph"):
        its logits, confidence, exit_index and kept_index. threshold None: full depth (every exit is
        evaluated in the graph and none accepted before the last)."""
        ratio = self.keep_ratio if keep_ratio is None else _ratio(keep_ratio)
        if ratio not in self.in_graph:
            raise ConfigError(f"no in-graph graph open for keep ratio {ratio} (load the bundle with mode='in-graph'; "
                              f"open: {sorted(self.in_graph)})", "arguments")
        limit = np.array([2.0], np.float32) if threshold is None else float32_at_least(threshold)
        return self.in_graph[ratio].run(f"in_graph@{ratio:g}", {**feeds, "threshold": limit})

    def _predict_in_graph(self, image: ImageLike, text: str, policy: Policy, ratio: float) -> Prediction:
        t_start = time.perf_counter()
        feeds = self.preprocess(image, text)
        timings = {"preprocess": (time.perf_counter() - t_start) * 1e3}
        t0 = time.perf_counter()
        out = self.run_in_graph(feeds, ratio, policy.threshold)
        timings["in_graph"] = (time.perf_counter() - t0) * 1e3
        timings["total"] = (time.perf_counter() - t_start) * 1e3
        logits = np.asarray(out["logits"]).reshape(-1)
        exit_index = int(np.asarray(out["exit_index"]).reshape(-1)[0])
        kept = self._kept(out["kept_index"])
        return Prediction(self.labels[int(np.argmax(logits))], float(np.asarray(out["confidence"]).reshape(-1)[0]),
                          softmax_max(logits), exit_index, self.manifest["exit_layers"][exit_index], kept, ratio, timings,
                          match_score=self._match_score(out["logits"]))

    def _check_pruned(self, feeds, names: list[str]) -> None:
        """The text-only stages run after the pruning stage of one keep ratio and give the declared shapes."""
        after = self.pruning_section["after_stage"]
        try:
            outs, _ = self._all_stages(feeds, names[: after + 1])
            pruned, _ = self._text_path(outs[-1]["hidden"], outs[0]["attention_mask"])
        except MMEdgeError:
            raise
        except Exception as exc:  # a backend's own error type
            raise BundleError(f"{self.root}: the {self.backend} text-only stages fail on a test query "
                              f"({type(exc).__name__}: {str(exc)[:300]}); export the bundle again",
                              code="self-check") from exc
        for spec, out in zip(self.pruning_section["stages"], pruned):
            check_outputs(self.root, f"text-only stage {spec['name']}", out, spec["outputs"])

    def _text_path(self, hidden: np.ndarray, attention_mask: np.ndarray):
        """Every text-only stage on the [CLS] + text rows of a stage's hidden state and mask."""
        keep = self.pruning_section["seq_len"]
        return self._all_stages({"hidden_in": np.ascontiguousarray(hidden[:, :keep]),
                                 "attention_mask": np.ascontiguousarray(attention_mask[:, :keep])},
                                self._text_stages, chained_from_first=False)

    @staticmethod
    def _choose_backend(backend: str, artifacts: list[dict], root: Path) -> str:
        available = {a["runtime"] for a in artifacts}
        if backend != "auto":
            if backend not in available:
                raise BundleError(f"{root} has no artifact for backend {backend!r}; it has {sorted(available)}",
                                  code="unsupported")
            return backend
        import platform

        # the PyTorch reference comes last: a bundle holding only it (a slim torch bundle) still loads
        order = (("coreml",) + BACKEND_ORDER if platform.system() == "Darwin" else BACKEND_ORDER[:2]) + ("torch",)
        for name in order:
            if name in available and importlib.util.find_spec(_PACKAGES[name]) is not None:
                return name
        raise MissingDependencyError(f"no runnable backend for {root}: it has {sorted(available)}; "
                                     "install one, e.g. `pip install onnxruntime`")

    # ------------------------------------------------------------------ inputs
    def preprocess(self, image, text: str) -> dict[str, np.ndarray]:
        """Stage-0 inputs; the same numpy + Pillow code training uses. `image`: one image (a path, PIL
        image or array), or a list / tuple of preprocessing.num_images of them (two for NLVR2: pixel_values
        (1, 2, 3, S, S)); another count is an ImageCountError."""
        images = self._images(image)
        pre = self.manifest["preprocessing"]
        if pre["resize"] == ADAPTED_RESIZE:  # an adapted encoder's: stretched, bicubic, its own mean / std
            pixels = np.stack([preprocess_stretched(im, self.image_size, pre["scale"], pre["mean"], pre["std"])
                               for im in images])  # (I, 3, S, S)
        else:
            pixels = preprocess_image(images[0], self.image_size)[None]  # (1, 3, S, S)
        pixels = pixels[None] if self.num_images > 1 else pixels  # (1, I, 3, S, S) or (1, 3, S, S)
        ids, mask = self.tokenizer.encode(text)
        return {"pixel_values": pixels.astype(np.float32), "input_ids": ids[None].astype(np.int32),
                "text_mask": mask[None].astype(np.int32)}

    def _images(self, image) -> list:
        """The query's images as a list of num_images (one image alone counts as a list of one)."""
        images = list(image) if isinstance(image, (list, tuple)) else [image]
        if len(images) != self.num_images:
            raise ImageCountError(self.num_images, len(images), str(self.root))
        return images

    def _grey(self):
        """The self-check and warm-up query's image(s): uniform grey, value 128."""
        grey = np.full((self.image_size, self.image_size, 3), 128, np.uint8)
        return grey if self.num_images == 1 else [grey] * self.num_images

    def _kept(self, kept_index) -> list[int]:
        """Stage 0's kept_index (I, k) as sorted patch indices; image i's patch j is i * N + j."""
        kept = np.asarray(kept_index).astype(int)
        if kept.ndim == 2 and kept.shape[0] > 1 and self._patches:
            kept = kept + np.arange(kept.shape[0])[:, None] * self._patches
        return np.sort(kept.reshape(-1)).tolist()

    def _match_score(self, logits) -> float | None:
        """head match-score: softmax(logits)[1] = sigmoid(s) for logits [0, s]; None for a classifier."""
        if self.head != MATCH_SCORE:
            return None
        lg = np.asarray(logits, np.float64).reshape(-1)
        return float(1.0 / (1.0 + np.exp(lg[0] - lg[1])))

    # ------------------------------------------------------------------ running
    def stages_for(self, keep_ratio: float | None) -> list[str]:
        ratio = self.keep_ratio if keep_ratio is None else _ratio(keep_ratio)
        if ratio not in self._groups:
            raise ConfigError(f"keep ratio {ratio} was not exported; this bundle has {sorted(self._groups)}",
                              "arguments")
        return self._groups[ratio]

    def _run(self, stage: str, feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], float]:
        t0 = time.perf_counter()
        out = self.session.run(stage, feeds)
        ms = (time.perf_counter() - t0) * 1e3
        with self._lock:
            times = self._stage_times.get(stage)
            if times is None:
                times = self._stage_times[stage] = deque(maxlen=64)
            times.append(ms)
        return out, ms

    def stage_ms(self, stage: str) -> float | None:
        """Median of this stage's recent measured times, None before it has run."""
        with self._lock:
            times = list(self._stage_times.get(stage, ()))
        return float(np.median(times)) if times else None

    def warm_up(self, runs: int = 5, keep_ratio: float | None = None) -> None:
        """Run every stage a few times so that latency budgets have measured stage times."""
        feeds = self.preprocess(self._grey(), "warm up")
        for _ in range(runs):
            self._all_stages(feeds, self.stages_for(keep_ratio))

    def _all_stages(self, feeds, names, chained_from_first: bool = True):
        """Run `names` in order; the first takes `feeds`, each later one the previous hidden state and
        the attention mask of stage 0 (chained_from_first) or of `feeds` (a text-only chain)."""
        outs, times = [], []
        for i, name in enumerate(names):
            mask = outs[0]["attention_mask"] if chained_from_first and i else feeds.get("attention_mask")
            inp = feeds if i == 0 else {"hidden_in": outs[-1]["hidden"], "attention_mask": mask}
            out, ms = self._run(name, inp)
            outs.append(out)
            times.append(ms)
        return outs, times

    def pruning_rule(self, pruning=BUNDLE_RULE) -> PruningRule | None:
        """The modality pruning rule a predict() call applies: the bundle's (BUNDLE_RULE; None when it
        has none or calibration turned it off), none (None), or the PruningRule given."""
        if isinstance(pruning, str) and pruning == BUNDLE_RULE:
            return self.pruning
        if pruning is None:
            return None
        if not isinstance(pruning, PruningRule):
            raise ConfigError(f"pruning must be a PruningRule, None or {BUNDLE_RULE!r}, got {type(pruning).__name__}",
                              "arguments")
        if self.pruning_section is None:
            raise ConfigError(f"{self.root} has no text-only stages (export it with --drop-visual-after to "
                              "use modality pruning)", "arguments")
        return pruning

    def predict(self, image: ImageLike | list[ImageLike], text: str, policy: Policy | None = None,
                keep_ratio: float | None = None, pruning=BUNDLE_RULE) -> Prediction:
        """Answer one question, stopping at the first exit the policy accepts (`policy`: a Policy or
        a policy name such as "full"). `image`: one image, or for a two-image bundle (NLVR2) a list of
        the two, [left, right] (ImageCountError otherwise). With a modality pruning rule (`pruning`: the bundle's by default,
        None for none, or a PruningRule), after the pruning stage the visual tokens are dropped when the
        rule fires, and the remaining stages run text-only."""
        policy = self.policy if policy is None else _policy(policy)
        rule = self.pruning_rule(pruning)
        ratio = self.keep_ratio if keep_ratio is None else _ratio(keep_ratio)
        names = list(self.stages_for(ratio))
        if self.uses_in_graph(policy, ratio, rule):
            return self._predict_in_graph(image, text, policy, ratio)
        if policy.kind == "latency_budget" and any(self.stage_ms(n) is None for n in names):
            self.warm_up(3, ratio)
        needs_max_prob, needs_times = policy.kind == "max_probability", policy.kind == "latency_budget"
        needs_answers = policy.kind == "patience"  # the others read only the final exit's answer
        t_start = time.perf_counter()
        feeds = self.preprocess(image, text)
        timings = {"preprocess": (time.perf_counter() - t_start) * 1e3}
        state = ExitState([], [], [])
        first = out = None
        dropped_after = signal = None
        mask = None
        for i in range(len(names)):
            inp = feeds if i == 0 else {"hidden_in": out["hidden"], "attention_mask": mask}
            out, ms = self._run(names[i], inp)
            if first is None:
                first, mask = out, out["attention_mask"]
            timings[names[i]] = ms
            state.elapsed_ms += ms
            # only the policies that read them pay for the answers, the max probability and the stage-time lookup
            state.answers.append(int(out["logits"].argmax()) if needs_answers else -1)
            state.confidences.append(float(np.asarray(out["confidence"]).item()))
            state.max_probabilities.append(softmax_max(out["logits"].reshape(-1)) if needs_max_prob else math.nan)
            nxt = self.stage_ms(names[i + 1]) if needs_times and i + 1 < len(names) else None
            if should_stop(policy, state, len(names), nxt):
                break
            if rule is not None and i == self.pruning_section["after_stage"]:
                signal = signal_value(rule.signal, out["hidden"], first["attention_mask"], self._num_text)
                if should_prune(rule, signal):  # the rest of the way on [CLS] + text only
                    keep = self.pruning_section["seq_len"]
                    out = {**out, "hidden": np.ascontiguousarray(out["hidden"][:, :keep])}
                    mask = np.ascontiguousarray(first["attention_mask"][:, :keep])
                    names[i + 1:] = self._text_stages
                    dropped_after = i
        if not needs_answers:  # the exit taken: its answer
            state.answers[-1] = int(out["logits"].argmax())
        timings["total"] = (time.perf_counter() - t_start) * 1e3
        exit_index = len(state.answers) - 1
        if not needs_max_prob:
            state.max_probabilities[-1] = softmax_max(out["logits"])
        kept = self._kept(first["kept_index"])
        return Prediction(self.labels[state.answers[-1]], state.confidences[-1], state.max_probabilities[-1],
                          exit_index, self.manifest["exit_layers"][exit_index], kept, ratio, timings,
                          dropped_after, signal, self._match_score(out["logits"]))

    def predict_batch(self, items: list[tuple[ImageLike, str]], policy: Policy | None = None,
                      keep_ratio: float | None = None) -> list[Prediction]:
        """predict() for many (image, text) pairs, in order (stages are batch-1 for phones); a two-image
        bundle's pairs are ([image_a, image_b], text)."""
        if isinstance(items, (str, bytes)) or not hasattr(items, "__iter__"):
            raise ConfigError(f"predict_batch takes a list of (image, text) pairs, got {type(items).__name__}",
                              "arguments")
        pairs = list(items)
        for i, item in enumerate(pairs):
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise ConfigError(f"predict_batch item {i} must be an (image, text) pair", "arguments")
        return [self.predict(image, text, policy, keep_ratio) for image, text in pairs]

    def all_exits(self, feeds: dict[str, np.ndarray], keep_ratio: float | None = None) -> AllExits:
        """Full depth on preprocessed inputs, every exit's outputs (calibration)."""
        outs, times = self._all_stages(feeds, self.stages_for(keep_ratio))
        logits = [o["logits"].reshape(-1) for o in outs]
        pruned = None
        if self.pruning_section is not None:  # the text-only path too, and the signal of every signal kind's rule
            after = self.pruning_section["after_stage"]
            rule = stored_rule(self.pruning_section)
            text_outs, _ = self._text_path(outs[after]["hidden"], outs[0]["attention_mask"])
            text_logits = [o["logits"].reshape(-1) for o in text_outs]
            pruned = PrunedExits(after, signal_value(rule.signal, outs[after]["hidden"], outs[0]["attention_mask"],
                                                     self._num_text),
                                 [int(np.argmax(lg)) for lg in text_logits],
                                 [float(np.asarray(o["confidence"]).reshape(-1)[0]) for o in text_outs],
                                 [softmax_max(lg) for lg in text_logits])
        return AllExits([int(np.argmax(lg)) for lg in logits],
                        [float(np.asarray(o["confidence"]).reshape(-1)[0]) for o in outs],
                        [softmax_max(lg) for lg in logits],
                        self._kept(outs[0]["kept_index"]), times, logits, pruned)

    def exit_flops(self, keep_ratio: float | None = None, pruned: bool = False) -> list[int]:
        """Cumulative FLOPs to each exit; `pruned`: on the modality-pruned path (the same up to the pruning
        stage, text-only after it)."""
        ratio = self.keep_ratio if keep_ratio is None else _ratio(keep_ratio)
        if pruned:
            if self.pruning_section is None:
                raise ConfigError(f"{self.root} has no modality pruning stages", "arguments")
            return next(e["exit_flops"] for e in self.pruning_section["exit_flops"] if e["keep_ratio"] == ratio)
        return next(k["exit_flops"] for k in self.manifest["keep_ratios"] if k["keep_ratio"] == ratio)


def check_outputs(root: Path, where: str, out: dict, specs: list[dict]) -> None:
    """The load-time test query's outputs of one graph: each declared output present, of its declared
    shape, and (floating point) finite; BundleError code "self-check" otherwise."""
    for spec in specs:
        got = out.get(spec["name"])
        shape = None if got is None else list(np.shape(got))
        if shape != list(spec["shape"]):
            raise BundleError(f"{root}: {where} output {spec['name']} has shape {shape}, the manifest says "
                              f"{spec['shape']}; export the bundle again", code="self-check")
        values = np.asarray(got)
        if values.dtype.kind in "fc" and not np.isfinite(values).all():
            raise BundleError(f"{root}: {where} output {spec['name']} holds NaN or infinite values on a test query "
                              "(corrupt or tampered weights); export the bundle again", code="self-check")


def float32_at_least(threshold: float) -> np.ndarray:
    """(1,) float32: the smallest float32 >= threshold, so the graph's float32 comparison stops at the
    same exits as the controller's double-precision one (docs/bundle-format.md, in-graph variant)."""
    value = np.float32(threshold)
    if float(value) < threshold:
        value = np.nextafter(value, np.float32(np.inf))
    return np.array([value], dtype=np.float32)


def _ratio(keep_ratio) -> float:
    """A keep ratio argument as a float, ConfigError for anything but a real number."""
    if isinstance(keep_ratio, bool) or not isinstance(keep_ratio, (int, float, np.floating, np.integer)):
        raise ConfigError(f"keep_ratio must be a number such as 0.5, got {type(keep_ratio).__name__}", "arguments")
    return float(keep_ratio)


def _policy(policy) -> Policy:
    if isinstance(policy, Policy):
        return policy
    if isinstance(policy, str):
        return Policy(policy)
    raise ConfigError(f"policy must be a Policy or a policy name, got {type(policy).__name__}", "arguments")


def _check_load_arguments(backend, precision, fmt, threads) -> None:
    problems = []
    if not isinstance(backend, str) or backend not in ("auto",) + tuple(BACKENDS):
        problems.append(f"backend {backend!r} unknown; choose auto or one of {sorted(BACKENDS)}")
    if precision not in ("fp32", "int8", "int4"):
        problems.append(f"precision {precision!r} unknown; choose fp32, int8 or int4 (int4: generative VLM bundles)")
    if fmt is not None and fmt not in ("onnx", "ort", "pte", "mlpackage", "safetensors"):
        problems.append(f"format {fmt!r} unknown")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        problems.append(f"threads must be a whole number >= 1 (or None for the runtime's default), got {threads!r}")
    if problems:
        raise ConfigError(problems, "arguments")


def manifest_kind(bundle) -> str | None:
    """The `kind` the manifest states (None: none, or no readable manifest; a bounded read, every check
    comes after, in the loader)."""
    from mmedge.bundle.manifest import parse_manifest, read_manifest_bytes

    if not isinstance(bundle, (str, Path)) or not Path(bundle).is_dir():
        return None
    try:
        kind = parse_manifest(read_manifest_bytes(Path(bundle))).get("kind")
    except BundleError:
        return None  # the loader reports what is wrong
    return kind if isinstance(kind, str) else None


def _is_caption_bundle(bundle) -> bool:
    """Whether the manifest says kind "caption"."""
    return manifest_kind(bundle) == CAPTION



GRAPH_RUNTIMES = {"onnxruntime": "onnxruntime", "executorch": "executorch"}  # runtime -> its Python package


def runnable_artifact(root: Path, manifest: dict, backend: str, precision: str, fmt: str | None) -> dict:
    """The artifact a captioning or generative VLM bundle runs on: of `precision` (and format `fmt`),
    on onnxruntime or executorch; with backend "auto" the first whose package is installed."""
    runnable = [a for a in manifest["artifacts"] if a["precision"] == precision and a["runtime"] in GRAPH_RUNTIMES
                and (fmt is None or a["format"] == fmt)]
    if not runnable:
        have = sorted({(a["runtime"], a["precision"]) for a in manifest["artifacts"]})
        raise BundleError(f"{root} has no runnable {precision} artifact{f' in format {fmt}' if fmt else ''} "
                          f"(onnxruntime or executorch); it has {have}", code="unsupported")
    if backend == "auto":
        ok = [a for a in runnable if importlib.util.find_spec(GRAPH_RUNTIMES[a["runtime"]]) is not None]
        if not ok:
            raise MissingDependencyError("no backend for this bundle is installed; `pip install onnxruntime`")
        return ok[0]
    artifact = next((a for a in runnable if a["runtime"] == backend), None)
    if artifact is None:
        raise BundleError(f"{root} has no {precision} artifact for backend {backend!r}; it has "
                          f"{sorted(a['runtime'] for a in runnable)}", code="unsupported")
    return artifact


def _open(backend: str, root: Path, artifact: dict, threads: int | None):
    """The backend's session over verified files; a runtime's refusal of a file becomes a BundleError."""
    try:
        return open_session(backend, root, artifact, threads)
    except MMEdgeError:
        raise
    except Exception as exc:  # onnxruntime / executorch raise their own untyped errors on a bad file
        raise BundleError(f"{root}: {backend} cannot open the stage files ({type(exc).__name__}: "
                          f"{str(exc)[:300]}); export the bundle again", code="self-check") from exc


def read_bundle_tokenizer(root: Path, manifest: dict) -> WordTokenizer:
    """The bundle's tokenizer file, read as untrusted input: a regular member file (no link) of at
    most 64 MiB, strict JSON (the manifest's rules: no byte-order mark, duplicate key, overflowing
    number, unpaired surrogate, deep nesting), a WordLevel or WordPiece model; BundleError code
    "tokenizer" otherwise. Shared by both bundle kinds."""
    rel = manifest["tokenizer"]["file"]
    try:
        path = paths.member_file(root, rel)
        data = parse_json(paths.read_bounded(path, MAX_TOKENIZER_BYTES, too_large="tokenizer"), rel, "tokenizer")
        return WordTokenizer.from_json(data, path)  # the bytes checked above, not a second read
    except CheckpointError as exc:
        raise BundleError(f"the bundle's tokenizer is unreadable: {exc}", code="tokenizer") from exc
    except BundleError as exc:
        if exc.code in ("file-missing", "file-not-regular"):
            raise
        raise BundleError(f"the bundle's tokenizer is unreadable: {exc}", code="tokenizer") from exc


def _load_bert_tokenizer(root: Path, manifest: dict):
    """An adapted encoder's BERT WordPiece tokenizer (tokenizer.kind "bert-wordpiece"; docs/bundle-format.md,
    Adapted encoders), read as untrusted input like read_bundle_tokenizer; every setting it gives must be
    the manifest's (BundleError code "tokenizer" otherwise)."""
    from mmedge.adapt.text import BertWordPiece

    spec = manifest["tokenizer"]
    rel = spec["file"]
    try:
        path = paths.member_file(root, rel)
        data = parse_json(paths.read_bounded(path, MAX_TOKENIZER_BYTES, too_large="tokenizer"), rel, "tokenizer")
        tokenizer = BertWordPiece.from_tokenizer_data(data, spec["max_length"])
    except CheckpointError as exc:
        raise BundleError(f"the bundle's tokenizer is unreadable: {exc}", code="tokenizer") from exc
    except BundleError as exc:
        if exc.code in ("file-missing", "file-not-regular"):
            raise
        raise BundleError(f"the bundle's tokenizer is unreadable: {exc}", code="tokenizer") from exc
    fields = tokenizer.manifest_fields()
    differ = sorted(k for k, v in fields.items() if spec.get(k) != v)
    rows = manifest["model"]["config"].get("vocab_size")
    problems = [f"tokenizer.json gives {k} {_short_repr(fields[k])}, the manifest {_short_repr(spec.get(k))}"
                for k in differ[:5]]
    if type(rows) is int and max(tokenizer.vocab.values(), default=0) >= rows:
        problems.append(f"token ids reach {max(tokenizer.vocab.values())}, the model embeds {rows}")
    if problems:
        raise BundleError("the bundle's tokenizer does not fit its manifest: " + "; ".join(problems)
                          + "; export the bundle again", code="tokenizer")
    return tokenizer


def _short_repr(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _load_tokenizer(root: Path, manifest: dict) -> WordTokenizer:
    """The bundle's tokenizer, checked to agree with the manifest and to give ids the model's embedding has."""
    if manifest["tokenizer"].get("kind") == BERT_WORDPIECE:
        return _load_bert_tokenizer(root, manifest)
    tokenizer = read_bundle_tokenizer(root, manifest)
    spec = manifest["tokenizer"]
    rows = manifest["model"]["config"].get("vocab_size")
    ids = list(tokenizer.vocab.values())
    problems = []
    if tokenizer.kind != spec.get("kind", "word"):
        problems.append(f"tokenizer.json is a {tokenizer.kind} tokenizer, the manifest says {spec.get('kind', 'word')}")
    elif {k: v for k, v in tokenizer.manifest_fields().items() if k != "kind"} != \
            {k: spec.get(k) for k in tokenizer.manifest_fields() if k != "kind"}:
        problems.append("the WordPiece settings of tokenizer.json differ from the manifest's")
    if tokenizer.max_length != spec["max_length"]:
        problems.append(f"max_length {tokenizer.max_length} vs the manifest's {spec['max_length']}")
    if tokenizer.vocab.get(PAD) != spec["pad_id"] or tokenizer.vocab.get(UNK) != spec["unk_id"]:
        problems.append("[PAD]/[UNK] ids differ from the manifest's pad_id/unk_id")
    if not all(type(i) is int and i >= 0 for i in ids):
        problems.append("token ids must be non-negative integers")
    elif type(rows) is int and ids and max(ids) >= rows:
        problems.append(f"token id {max(ids)} is outside the model's {rows}-word embedding")
    if problems:
        raise BundleError("the bundle's tokenizer does not fit its manifest: " + "; ".join(problems)
                          + "; export the bundle again", code="tokenizer")
    return tokenizer

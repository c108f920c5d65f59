"""VLMEngine: load a generative VLM bundle (kind "vlm") and generate text about an image with a
per-token early exit and the prompt-conditioned visual-token prefilter.

    engine = Engine.load("smolvlm.mmedge")          # Engine.load returns a VLMEngine for these
    g = engine.generate("scene.png", "what color is the circle?", max_new_tokens=16)
    g.text, g.tokens, g.exits, g.first_token_ms, g.total_ms
    engine.caption("scene.png")                     # generate() under the bundle's caption prompt
    engine.generate("scene.png", "what color is the circle?", task="answer")   # the answers' calibrated setting

The image is prepared as the source's image processor prepares one unsplit tile (stretched to the square,
rescaled, normalised: docs/bundle-format.md, Generative VLM bundles), the prompt laid out by the chat
template the bundle states and tokenized with its Hugging Face tokenizer (``tokenizers``, no torch), the
visual tokens pruned by the prefilter at the keep ratio, the prompt prefilled at full depth, and each
token decoded by mmedge.runtime.generate's loop (the captioner's). Needs numpy, Pillow, tokenizers and the
chosen backend.
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmedge.bundle import paths
from mmedge.bundle.manifest import check_load_options, parse_json
from mmedge.data.preprocess import ImageLike, preprocess_stretched
from mmedge.errors import BundleError, ConfigError, MissingDependencyError, MMEdgeError
from mmedge.runtime.controller import Policy
from mmedge.runtime.generate import KV_MODES
from mmedge.runtime.vlm import VLMDecoder, VLMLayout, check_keep_ratio, kept_tokens

MAX_TOKENIZER_BYTES = 64 << 20


@dataclass
class Generation:
    text: str
    tokens: list[int]             # generated ids, a stop id included when reached
    exits: list[int]              # exit stage per generated id (the first comes from the prefill: the last stage)
    keep_ratio: float
    kept_visual_tokens: int
    first_token_ms: float         # image, prompt and prefill: the time to the first token
    stage_ms: dict[str, float]    # total per graph over the generation
    total_ms: float               # preprocessing excluded
    confidences: list[float] = field(default_factory=list)

    @property
    def mean_exit(self) -> float:
        return float(np.mean(self.exits)) if self.exits else 0.0


# ---------------------------------------------------------------------------------------------- preparation
def vlm_pixels(image: ImageLike, preprocessing: dict) -> np.ndarray:
    """The manifest's preprocessing of one image -> float32 (1, 3, S, S)."""
    p = preprocessing
    return preprocess_stretched(image, p["image_size"], p["rescale_factor"], p["mean"], p["std"], p["resample"])[None]


def open_hf_tokenizer(data: bytes, where: str):
    """A Hugging Face `tokenizers` tokenizer from tokenizer.json bytes, parsed first with the manifest's
    strict JSON rules; BundleError code "tokenizer" when it is not one."""
    if importlib.util.find_spec("tokenizers") is None:
        raise MissingDependencyError("a generative VLM bundle needs the `tokenizers` package: pip install tokenizers")
    from tokenizers import Tokenizer

    parse_json(data, where, "tokenizer")
    try:
        return Tokenizer.from_str(data.decode("utf-8"))
    except Exception as exc:  # tokenizers raises its own untyped Exception on a bad file
        raise BundleError(f"{where} is not a Hugging Face tokenizer: {str(exc)[:300]}", code="tokenizer") from exc


def encode_prompt(tokenizer, before: str, after: str, text: str) -> list[int]:
    """The prompt's ids: the chat template's text around the user's, no special tokens added."""
    return tokenizer.encode(before + text + after, add_special_tokens=False).ids


def decode_text(tokenizer, tokens: list[int]) -> str:
    return tokenizer.decode(tokens, skip_special_tokens=True).strip()


class VLMEngine:
    kind = "vlm"

    def __init__(self, root: Path, manifest: dict, backend: str, artifact: dict, session, policy: Policy,
                 keep_ratio: float, kv: str, tokenizer,
                 task_settings: dict[str, tuple[Policy, float]] | None = None) -> None:
        self.root, self.manifest, self.backend, self.artifact = root, manifest, backend, artifact
        self.session, self.policy, self.keep_ratio, self.kv = session, policy, keep_ratio, kv
        self.task_settings = task_settings or {}  # task -> (policy, keep ratio) for generate(task=...)
        self.tokenizer = tokenizer
        self.layout = VLMLayout(**manifest["layout"])
        t = manifest["tokenizer"]
        self._before, self._after, self.stop_ids = t["prompt_before"], t["prompt_after"], tuple(t["stop_ids"])
        self.max_new_tokens = t["max_new_tokens"]
        self._lock = threading.Lock()  # decoding keeps per-call state only; sessions may not be re-entrant

    @classmethod
    def load(cls, bundle: str | Path, backend: str = "auto", precision: str = "fp32", keep_ratio: float | None = None,
             policy: Policy | str | None = None, kv: str | None = None, threads: int | None = None,
             verify: bool = True, verify_key=None, fmt: str | None = None, self_check: bool = True,
             min_sequence: int | None = None, expect_name: str | None = None) -> "VLMEngine":
        """Open a generative VLM bundle with every check of Engine.load (the same options and reason codes)."""
        from mmedge.adapt.vlm_manifest import load_vlm_manifest
        from mmedge.runtime.engine import _check_load_arguments, _ratio

        _check_load_arguments(backend, precision, fmt, threads)
        ratio = None if keep_ratio is None else _ratio(keep_ratio)
        check_load_options(verify, verify_key, min_sequence, expect_name)
        manifest = load_vlm_manifest(bundle, verify_files=verify, verify_key=verify_key, min_sequence=min_sequence,
                                     expect_name=expect_name)
        return cls.open_checked(Path(bundle), manifest, backend, precision, fmt, ratio, policy, kv, threads, self_check)

    @classmethod
    def open_checked(cls, root: Path, manifest: dict, backend: str, precision: str, fmt: str | None,
                     keep_ratio: float | None, policy, kv: str | None, threads: int | None,
                     self_check: bool = True) -> "VLMEngine":
        """The engine over a manifest the loader has checked (arguments checked by the caller)."""
        from mmedge.runtime.engine import _open, runnable_artifact

        artifact = runnable_artifact(root, manifest, backend, precision, fmt)
        th = manifest["thresholds"]
        ratio = th["keep_ratio"] if keep_ratio is None else check_keep_ratio(keep_ratio)
        kv = kv or th["kv"]
        if kv not in KV_MODES:
            raise ConfigError(f"kv {kv!r} unknown; choose one of {list(KV_MODES)}", "arguments")
        # the bundle's settings per task, each overridden by a policy or keep ratio given here
        tasks = {task: (_policy(s["policy"] if policy is None else policy, s),
                        s["keep_ratio"] if keep_ratio is None else ratio) for task, s in th.get("tasks", {}).items()}
        policy = _policy(policy, th) if policy is not None else _policy(th["policy"], th)
        tokenizer = _load_tokenizer(root, manifest)  # checked before any graph is opened
        session = _open(artifact["runtime"], root, artifact, threads)
        engine = cls(root, manifest, artifact["runtime"], artifact, session, policy, ratio, kv, tokenizer, tasks)
        if self_check:
            engine.self_check()
        return engine

    # ------------------------------------------------------------------ checks
    def self_check(self) -> None:
        """A grey image under the caption prompt through every graph: two tokens at full depth at the
        smallest keep ratio, then two at keep 1 that exit at the first exit (the fill graphs); BundleError
        code "self-check" unless every run returns finite logits."""
        S = self.manifest["preprocessing"]["image_size"]
        grey = np.full((S, S, 3), 128, np.uint8)
        early = Policy("max_probability", threshold=0.0)
        runs = [(min(self.layout.keep_ratios), Policy("full")), (1.0, early)]
        for ratio, policy in runs:
            try:
                g = self._run(grey, self.manifest["tokenizer"]["caption_prompt"], 2, 1, policy, ratio, "copy")
            except MMEdgeError:
                raise
            except Exception as exc:  # a backend's own error type: the graphs disagree with the manifest
                raise BundleError(f"{self.root}: the graphs fail on a test prompt ({type(exc).__name__}: "
                                  f"{str(exc)[:300]}); export the bundle again", code="self-check") from exc
            if not all(np.isfinite(x).all() for x in g[1].logits):
                raise BundleError(f"{self.root}: the graphs give non-finite logits on a test prompt; export the "
                                  "bundle again", code="self-check")

    # ------------------------------------------------------------------ generation
    def preprocess(self, image: ImageLike) -> np.ndarray:
        return vlm_pixels(image, self.manifest["preprocessing"])

    def prompt_ids(self, prompt: str) -> list[int]:
        """The prompt's ids with the chat template and the image block, as the source's processor lays them out."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise ConfigError("prompt must be a non-empty string", "arguments")
        return encode_prompt(self.tokenizer, self._before, self._after, prompt)

    def _run(self, image, prompt: str, max_new_tokens: int, beam: int, policy: Policy, ratio: float, kv: str):
        pixels = self.preprocess(image)
        ids = self.prompt_ids(prompt)
        decoder = VLMDecoder(self.session, self.layout)
        with self._lock:
            run = decoder.generate(ids, pixels, policy, max_new_tokens, beam, kv, ratio, self.stop_ids)
        return ids, run

    def generate(self, image: ImageLike, prompt: str, max_new_tokens: int | None = None, beam: int = 1,
                 policy: Policy | str | None = None, keep_ratio: float | None = None,
                 kv: str | None = None, task: str | None = None) -> Generation:
        """The model's answer to `prompt` about `image`, with the exit each token took and the time each graph ran.

        `task` ("caption" or "answer"): use the bundle's calibrated settings for that task where it has them
        (thresholds.tasks); `policy` and `keep_ratio` given here override them."""
        from mmedge.runtime.engine import _ratio

        default_policy, default_ratio = self.settings(task)
        ratio = default_ratio if keep_ratio is None else check_keep_ratio(_ratio(keep_ratio))
        th = self.manifest["thresholds"]
        policy = default_policy if policy is None else _policy(policy, th.get("tasks", {}).get(task, th))
        limit = self.max_new_tokens if max_new_tokens is None else max_new_tokens
        _, run = self._run(image, prompt, limit, beam, policy, ratio, kv or self.kv)
        kept = kept_tokens(ratio, self.layout.num_image_tokens)
        return Generation(decode_text(self.tokenizer, run.tokens), run.tokens, run.exits, ratio, kept,
                          run.encoder_ms, run.stage_ms, run.total_ms, run.confidences)

    def settings(self, task: str | None = None) -> tuple[Policy, float]:
        """The policy and keep ratio generate() uses by default for `task` (None: any prompt): the bundle's
        settings for that task where it holds them, else its top-level ones (or those given to load())."""
        from mmedge.adapt.vlm_manifest import GENERATION_TASKS

        if task is not None and task not in GENERATION_TASKS:
            raise ConfigError(f"task {task!r} unknown; choose one of {list(GENERATION_TASKS)} or None (any prompt)",
                              "arguments")
        return self.task_settings.get(task, (self.policy, self.keep_ratio))

    def caption(self, image: ImageLike, max_len: int | None = None, **kwargs) -> Generation:
        """generate() under the bundle's caption prompt with its caption settings; max_len: the most new tokens."""
        if kwargs.pop("task", "caption") != "caption":
            raise ConfigError("caption() generates a caption: call generate(image, prompt, task=...) for another "
                              "task", "arguments")
        return self.generate(image, self.manifest["tokenizer"]["caption_prompt"], max_len, task="caption", **kwargs)

    def predict(self, *args, **kwargs):
        raise BundleError(f"{self.root} is a generative VLM bundle: call generate(image, prompt) or caption(image), "
                          "not predict(image, text)")


def _policy(policy, th: dict) -> Policy:
    """A Policy, or a policy name with the bundle's threshold for it ("full" needs none)."""
    if isinstance(policy, Policy):
        return policy
    if isinstance(policy, str):
        return Policy(policy) if policy == "full" else Policy(policy, threshold=min(1.0, th["threshold"]),
                                                              patience=th["patience"])
    raise ConfigError(f"policy must be a Policy or a policy name, got {type(policy).__name__}", "arguments")


def _load_tokenizer(root: Path, manifest: dict):
    """The bundle's tokenizer.json read as untrusted input (a regular member file of at most 64 MiB,
    strict JSON), and checked against the manifest: the prompt template holds one block of the layout's
    image tokens, and every id it gives is inside the model's vocabulary."""
    spec, L = manifest["tokenizer"], manifest["layout"]
    rel = spec["file"]
    try:
        path = paths.member_file(root, rel)
        data = paths.read_bounded(path, MAX_TOKENIZER_BYTES, too_large="tokenizer")
    except BundleError as exc:
        if exc.code in ("file-missing", "file-not-regular"):
            raise
        raise BundleError(f"the bundle's tokenizer is unreadable: {exc}", code="tokenizer") from exc
    tokenizer = open_hf_tokenizer(data, rel)
    ids = np.asarray(encode_prompt(tokenizer, spec["prompt_before"], spec["prompt_after"], "a"), np.int64)
    at = np.flatnonzero(ids == L["image_token_id"])
    problems = []
    if len(at) != L["num_image_tokens"] or (len(at) and at[-1] - at[0] != len(at) - 1):
        problems.append(f"the prompt template holds {len(at)} image tokens, not one block of {L['num_image_tokens']}")
    if len(ids) and int(ids.max()) >= manifest["model"]["vocab_size"]:
        problems.append(f"its ids go past the model's vocabulary of {manifest['model']['vocab_size']}")
    if problems:
        raise BundleError("the bundle's tokenizer does not fit its manifest: " + "; ".join(problems), code="tokenizer")
    return tokenizer


def generation_summary(g: Generation) -> str:
    per = {name: round(ms, 2) for name, ms in sorted(g.stage_ms.items())}
    return (f"{g.text!r}: {len(g.tokens)} tokens, mean exit {g.mean_exit:.2f}, keep {g.keep_ratio:g} "
            f"({g.kept_visual_tokens} visual tokens), first token {g.first_token_ms:.1f} ms, total {g.total_ms:.1f} ms; "
            f"per graph {per}")


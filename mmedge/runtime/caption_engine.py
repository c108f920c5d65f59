"""CaptionEngine: load a captioning bundle and caption images with a per-word early exit.

    engine = Engine.load("caption-default.mmedge")     # Engine.load returns a CaptionEngine for these
    c = engine.caption("scene.png", max_len=24)
    c.text, c.words, c.exits, c.timings_ms

The image is encoded once (``encoder_k{r}``: every decoder layer's cross-attention keys and values),
then each word runs the decoder stages until the controller stops it (``mmedge.caption.runtime``).
Needs numpy, Pillow and the chosen backend only (no torch with onnxruntime).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmedge.bundle.manifest import check_load_options
from mmedge.caption.data import decode_caption
from mmedge.caption.manifest import load_caption_manifest
from mmedge.caption.runtime import KV_MODES, CaptionDecoder, Layout
from mmedge.data.preprocess import ImageLike, preprocess_image
from mmedge.data.tokenizer import PAD, UNK, WordTokenizer
from mmedge.errors import BundleError, ConfigError, MMEdgeError
from mmedge.runtime.controller import Policy
from mmedge.runtime.engine import (_check_load_arguments, _open, _ratio, check_outputs, read_bundle_tokenizer,
                                   runnable_artifact)

BOS, EOS = "[BOS]", "[EOS]"


@dataclass
class Caption:
    text: str
    words: list[str]              # the generated words ([EOS] not included)
    exits: list[int]              # exit stage per generated id ([EOS] included when reached)
    tokens: list[int]
    encoder_ms: float
    stage_ms: dict[str, float]    # total per graph over the caption
    total_ms: float               # preprocessing excluded
    keep_ratio: float
    confidences: list[float] = field(default_factory=list)  # learned confidence at each generated id's exit

    @property
    def mean_exit(self) -> float:
        return float(np.mean(self.exits)) if self.exits else 0.0


def thresholds_policy(th: dict) -> Policy:
    kind = th["policy"]
    threshold = th["max_probability"] if kind == "max_probability" else th["confidence"]
    return Policy(kind, threshold=min(1.0, threshold), patience=th["patience"])


class CaptionEngine:
    kind = "caption"

    def __init__(self, root: Path, manifest: dict, backend: str, artifact: dict, session, policy: Policy,
                 keep_ratio: float, kv: str, tokenizer: WordTokenizer) -> None:
        self.root, self.manifest, self.backend, self.artifact = root, manifest, backend, artifact
        self.session, self.policy, self.keep_ratio, self.kv = session, policy, keep_ratio, kv
        self.tokenizer = tokenizer
        self.layout = Layout.from_manifest(manifest)
        self.image_size = manifest["model"]["config"]["image_size"]
        self._lock = threading.Lock()  # decoding keeps per-call state only; sessions may not be re-entrant

    @classmethod
    def load(cls, bundle: str | Path, backend: str = "auto", precision: str = "fp32", keep_ratio: float | None = None,
             policy: Policy | str | None = None, kv: str | None = None, threads: int | None = None,
             verify: bool = True, verify_key=None, fmt: str | None = None, self_check: bool = True,
             min_sequence: int | None = None, expect_name: str | None = None) -> "CaptionEngine":
        """Open a captioning bundle with every check of Engine.load (the same options and reason codes):
        its manifest, files and signature, then its graphs, then a self-check query through every graph."""
        _check_load_arguments(backend, precision, fmt, threads)
        ratio = None if keep_ratio is None else _ratio(keep_ratio)
        check_load_options(verify, verify_key, min_sequence, expect_name)
        manifest = load_caption_manifest(bundle, verify_files=verify, verify_key=verify_key,
                                         min_sequence=min_sequence, expect_name=expect_name)
        return cls.open_checked(Path(bundle), manifest, backend, precision, fmt, ratio, policy, kv, threads, self_check)

    @classmethod
    def open_checked(cls, root: Path, manifest: dict, backend: str, precision: str, fmt: str | None,
                     keep_ratio: float | None, policy, kv: str | None, threads: int | None,
                     self_check: bool = True) -> "CaptionEngine":
        """The engine over a manifest load_caption_manifest has checked (arguments checked by the caller)."""
        artifact = runnable_artifact(root, manifest, backend, precision, fmt)
        th = manifest["thresholds"]
        ratio = th["keep_ratio"] if keep_ratio is None else keep_ratio
        if ratio not in manifest["keep_ratios"]:
            raise ConfigError(f"keep ratio {ratio} was not exported; this bundle has {manifest['keep_ratios']}",
                              "arguments")
        kv = kv or th["kv"]
        if kv not in KV_MODES:
            raise ConfigError(f"kv {kv!r} unknown; choose one of {list(KV_MODES)}", "arguments")
        policy = _policy(policy, th) if policy is not None else thresholds_policy(th)
        tokenizer = _load_tokenizer(root, manifest)
        session = _open(artifact["runtime"], root, artifact, threads)
        engine = cls(root, manifest, artifact["runtime"], artifact, session, policy, ratio, kv, tokenizer)
        if self_check:
            engine.self_check()
        return engine

    def self_check(self) -> None:
        """A grey image through every encoder, then every step graph (position 0, [BOS], empty caches)
        and every fill graph: BundleError code "self-check" unless each output has the declared shape
        and finite values."""
        L = self.layout
        pixels = self.preprocess(np.full((self.image_size, self.image_size, 3), 128, np.uint8))
        graphs = self.manifest["graphs"]
        position = np.array([0], np.int64)

        def run(name: str, feeds: dict) -> dict:
            try:
                out = self.session.run(name, feeds)
            except MMEdgeError:
                raise
            except Exception as exc:  # a backend's own error type: the graphs disagree with the manifest
                raise BundleError(f"{self.root}: graph {name} fails on a test query ({type(exc).__name__}: "
                                  f"{str(exc)[:300]}); export the bundle again", code="self-check") from exc
            check_outputs(self.root, f"graph {name}", out, graphs[name]["outputs"])
            return out

        def cache(n: int) -> np.ndarray:
            return np.zeros((n, 1, L.num_heads, L.max_len, L.head_dim), np.float32)

        hidden = []
        for ratio in self.manifest["keep_ratios"]:
            tag = f"k{ratio:g}"
            enc = run(f"encoder_{tag}", {"pixel_values": pixels})
            out = None
            for s, layers in enumerate(L.stage_layers):
                first = {"token": np.array([L.bos_id], np.int64)} if s == 0 else {"hidden_in": out["hidden"]}
                out = run(f"step{s}_{tag}", {**first, "position": position, "past_k": cache(len(layers)),
                                             "past_v": cache(len(layers)), "cross_k": enc["cross_k"][layers],
                                             "cross_v": enc["cross_v"][layers]})
                if ratio == self.manifest["keep_ratios"][0]:
                    hidden.append(out["hidden"])
        for s in range(L.num_stages - 1):
            later = sum(len(x) for x in L.stage_layers[s + 1:])
            run(f"fill{s}", {"hidden_in": hidden[s], "position": position, "past_k": cache(later),
                             "past_v": cache(later)})

    def preprocess(self, image: ImageLike) -> np.ndarray:
        return preprocess_image(image, self.image_size)[None].astype(np.float32)  # (1, 3, S, S)

    def caption(self, image: ImageLike, max_len: int | None = None, beam: int = 1, policy: Policy | None = None,
                keep_ratio: float | None = None, kv: str | None = None) -> Caption:
        """The caption of one image, with the exit each word took and the time each graph ran."""
        ratio = self.keep_ratio if keep_ratio is None else _ratio(keep_ratio)
        if ratio not in self.manifest["keep_ratios"]:
            raise ConfigError(f"keep ratio {ratio} was not exported; this bundle has {self.manifest['keep_ratios']}",
                              "arguments")
        policy = self.policy if policy is None else _policy(policy, self.manifest["thresholds"])
        pixels = self.preprocess(image)
        decoder = CaptionDecoder(self.session, self.layout, f"k{ratio:g}")
        with self._lock:
            run = decoder.caption(pixels, policy, max_len, beam, kv or self.kv)
        text = decode_caption(self.tokenizer, run.tokens)
        return Caption(text, text.split(), run.exits, run.tokens, run.encoder_ms, run.stage_ms, run.total_ms, ratio,
                       run.confidences)

    def generate(self, image: ImageLike, prompt: str | None = None, max_new_tokens: int | None = None,
                 **kwargs) -> Caption:
        """The generative interface of every bundle that writes text: a captioner takes no prompt, so this is
        caption(image) (a generative VLM bundle's caption() is its generate() under a caption prompt)."""
        if prompt is not None:
            raise ConfigError("a captioning bundle takes no prompt: call generate(image) or caption(image); "
                              "prompts need a generative VLM bundle (`mmedge adapt --task generate`)", "arguments")
        return self.caption(image, max_new_tokens, **kwargs)

    def predict(self, *args, **kwargs):
        raise BundleError(f"{self.root} is a captioning bundle: call caption(image), not predict(image, text)")


def _policy(policy, th: dict) -> Policy:
    """A Policy, or a policy name with the bundle's threshold for it ("full" needs none)."""
    if isinstance(policy, Policy):
        return policy
    if isinstance(policy, str):
        return Policy(policy) if policy == "full" else Policy(policy, threshold=thresholds_policy(th).threshold,
                                                              patience=th["patience"])
    raise ConfigError(f"policy must be a Policy or a policy name, got {type(policy).__name__}", "arguments")


def _load_tokenizer(root: Path, manifest: dict) -> WordTokenizer:
    spec = manifest["tokenizer"]
    tokenizer = read_bundle_tokenizer(root, manifest)
    want = {PAD: spec["pad_id"], UNK: spec["unk_id"], BOS: spec["bos_id"], EOS: spec["eos_id"]}
    got = {k: tokenizer.vocab.get(k) for k in want}
    rows = manifest["model"]["config"].get("vocab_size")
    problems = []
    if tokenizer.kind != spec["kind"]:
        problems.append(f"tokenizer.json is a {tokenizer.kind} tokenizer, the manifest says {spec['kind']}")
    if got != want:
        problems.append(f"special ids {got} differ from the manifest's {want}")
    if tokenizer.max_length != spec["max_length"]:
        problems.append(f"max_length {tokenizer.max_length} vs the manifest's {spec['max_length']}")
    ids = list(tokenizer.vocab.values())
    if not all(type(i) is int and i >= 0 for i in ids) or (type(rows) is int and ids and max(ids) >= rows):
        problems.append("token ids must be non-negative and inside the model's embedding")
    if problems:
        raise BundleError("the bundle's tokenizer does not fit its manifest: " + "; ".join(problems), code="tokenizer")
    return tokenizer

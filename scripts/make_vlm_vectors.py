"""Golden vectors for generative VLM bundles (docs/bundle-format.md, "Generative VLM bundles"): a tiny
SmolVLM adapted by mmedge, its ONNX bundle, and what the Python VLMEngine generates on it.

    python scripts/make_vlm_vectors.py             # the bundle and every vector file
    python scripts/make_vlm_vectors.py --vectors   # only the vector files, from the committed bundle

Builds a random tiny ``transformers`` SmolVLM (a 1-layer vision tower on 32 px images in 4 px patches,
pixel shuffle 2 -> 16 visual tokens; a 3-layer Llama decoder 32 wide with grouped keys and values; a
word-level tokenizer with SmolVLM's chat template and special tokens) saved with ``save_pretrained``
in a temporary folder, gives it an exit after every decoder layer (3 stages) and the prefilter with
``mmedge.adapt.smolvlm.load_source`` (no distillation steps: random exit maps and confidence heads,
which is all parity vectors need), writes it as ``mmedge adapt`` does, exports it with
``export_vlm_bundle`` (ONNX fp32, also in ORT format) and writes tests/vectors/vlm/:

- ``tiny-smolvlm-onnx.mmedge/``: the bundle. Its ``thresholds`` are set by this script (policy
  ``confidence`` at a threshold between observed confidences, keep ratio 0.5; ``calibrated`` stays
  false) so that ``generate()`` with no options takes early exits and prunes;
- ``vectors.json`` (format ``mmedge-vlm-vectors-1``): per generated image (``generator``: xorshift32,
  as in tests/vectors/adapted/) the SHA-256 of the lanczos-stretched 8-bit image and of
  ``pixel_values`` and a few values; per prompt its ids; per query and setting (policy, keep ratio,
  beam, kv, max_new_tokens) the tokens, exits, confidences, summed log-probability and text of
  ``VLMEngine`` (greedy under full / confidence / max_probability / patience at keep 1, 0.5 and 0.3,
  kv copy and recompute, 3 beams); ``caption()`` and the bundle's defaults; ``kept_tokens`` of many
  ratios (Python's round, half to even); the smallest distance of any confidence or top probability
  the controller compared with its threshold (``margins``: the vectors do not hang on a near tie);
- ``resize-lanczos.json`` (format ``mmedge-lanczos-resize-1``): Pillow 13's
  ``Image.resize(..., LANCZOS)`` of generated RGB images of many sizes -> the passes and the SHA-256;
- ``tokenizer.json`` (format ``mmedge-vlm-tokenizer-1``): texts and id lists through the bundle's
  tokenizer and through ``bpe-tokenizer.json`` (a byte-level BPE with added and special tokens, the
  layout of SmolVLM's own tokenizer, trained here on a small corpus) -> ``tokenizers``' ids (no
  special tokens added) and decoded text (special tokens skipped, stripped).

tests/test_vlm_vectors.py recomputes every vector from the committed files and checks that they are
the same; runtimes/js/test/vlm.test.mjs replays them on the JavaScript VLMEngine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from make_adapted_vectors import GENERATOR, generated, passes  # noqa: E402
from mmedge.bench.machine import kernel_isa  # noqa: E402

OUT = ROOT / "tests/vectors/vlm"
BUNDLE_NAME = "tiny-smolvlm-onnx.mmedge"
TOLERANCE = {"confidence_abs": 1e-4, "logprob_abs": 1e-3, "pixel_abs": 0.0}
VOCAB, IMAGE, FAKE, GLOBAL, BOS, END = 64, 40, 41, 42, 1, 2
WORDS = ("user assistant : describe the image . ? what color shape is a red blue green circle square where "
         "left right small large").split()
MAX_NEW_TOKENS, MAX_SLOTS = 10, 64
IMAGES = [  # name, (width, height, channels, pattern, seed): non-square, so the stretch resamples
    ("wide", (50, 20, 3, "noise", 7001)),
    ("tall-rgba", (24, 61, 4, "noise", 7002)),
    ("large-binary", (97, 80, 3, "binary", 7003)),
    ("square", (32, 32, 3, "noise", 7004)),
]
PROMPTS = ["describe the image.", "What color is the circle?", "where is a small square ?"]
KEEP_RATIOS = [1.0, 0.5, 0.3]
RESAMPLE_SIZES = [(1, 1, 3, 3), (5, 3, 12, 9), (32, 32, 32, 32), (50, 20, 32, 32), (24, 61, 32, 32), (97, 80, 32, 32),
                  (640, 480, 32, 32), (3, 200, 17, 5), (200, 3, 5, 17), (64, 64, 384, 384), (7, 9, 64, 64),
                  (120, 40, 31, 90), (33, 33, 32, 32), (512, 512, 384, 384)]


def _sha(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


# ---------------------------------------------------------------------------------------------- the model
def make_source(root: Path) -> Path:
    """A random tiny SmolVLM saved like a downloaded one (model, tokenizer with the chat template, one-tile
    image processor); the same construction as tests/test_adapt_vlm.py make_source, 16 visual tokens."""
    import torch
    import transformers
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers.models.smolvlm.processing_smolvlm import DEFAULT_CHAT_TEMPLATE

    config = transformers.SmolVLMConfig(
        vision_config=dict(hidden_size=24, num_hidden_layers=1, num_attention_heads=2, intermediate_size=48,
                           image_size=32, patch_size=4),
        text_config=dict(model_type="llama", hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=64, vocab_size=VOCAB, max_position_embeddings=128,
                         pad_token_id=0, bos_token_id=BOS, eos_token_id=END),
        image_token_id=IMAGE, scale_factor=2, pad_token_id=0, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = transformers.SmolVLMForConditionalGeneration(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.2)
    specials = ["<pad>", "<|im_start|>", "<end_of_utterance>", "<unk>"]
    vocab = {w: i for i, w in enumerate(specials + WORDS)}
    vocab.update({"<image>": IMAGE, "<fake_token_around_image>": FAKE, "<global-img>": GLOBAL})
    vocab.update({f"w{i}": i for i in range(VOCAB) if i not in vocab.values()})
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", bos_token="<|im_start|>",
        eos_token="<end_of_utterance>", additional_special_tokens=["<image>", "<fake_token_around_image>", "<global-img>"])
    tok.chat_template = DEFAULT_CHAT_TEMPLATE
    model.save_pretrained(root)
    tok.save_pretrained(root)
    transformers.SmolVLMImageProcessorPil(do_image_splitting=False, size={"longest_edge": 32},
                                          max_image_size={"longest_edge": 32}).save_pretrained(root)
    return root


def make_bundle(work: Path) -> Path:
    """The adapted folder (exits after every layer, keep ratios 1 and 0.5, no distillation) and its bundle."""
    import torch

    from mmedge.adapt.folder import save_adapted
    from mmedge.adapt.smolvlm import load_source
    from mmedge.adapt.vlm_bundle import export_vlm_bundle

    source = make_source(work / "source")
    torch.manual_seed(0)
    model, pre = load_source(source, exit_layers=[0, 1, 2], keep_ratios=[1.0, 0.5], prefilter_dim=16, confidence_dim=16,
                             exit_adapter_rank=8)
    with torch.no_grad():  # random exit maps and confidence heads: early exits change tokens, confidences vary
        for m in model.exit_maps:
            torch.nn.init.normal_(m.up.weight, std=0.1)
        for head in model.confidence:
            for p in head.parameters():
                p.normal_(0, 0.5)
    folder = save_adapted(model, pre, work / "adapted", str(source))
    return export_vlm_bundle(folder, work / BUNDLE_NAME, targets=("onnx",), max_slots=MAX_SLOTS,
                             max_new_tokens=MAX_NEW_TOKENS, parity_prompts=2, ort_format=True,
                             log=lambda *a: None)


# ---------------------------------------------------------------------------------------------- recording
class Recorder:
    """Wraps an engine's session: every step's confidence and every head's top probability it computes."""

    def __init__(self, engine) -> None:
        self.engine, self.run = engine, engine.session.run
        self.confidences: list[float] = []
        self.max_probabilities: list[float] = []
        engine.session.run = self

    def __call__(self, name: str, feeds: dict) -> dict:
        from mmedge.runtime.controller import softmax_max

        out = self.run(name, feeds)
        if name.startswith("step") and out["hidden"].shape[1] == 1:  # a token's step, not the prefill
            self.confidences.append(float(out["confidence"][0]))
        if name == "head":
            self.max_probabilities.append(softmax_max(out["logits"][0]))
        return out

    def close(self) -> None:
        self.engine.session.run = self.run


def policy_entry(kind: str, thresholds: dict) -> dict:
    if kind == "full":
        return {"kind": "full"}
    if kind == "patience":
        return {"kind": "patience", "patience": 2}
    return {"kind": kind, "threshold": thresholds[kind]}


def settings(thresholds: dict) -> list[dict]:
    """Every setting a query is generated under."""
    out = []
    for kind in ("full", "confidence", "max_probability", "patience"):
        for ratio in KEEP_RATIOS:
            for kv in ("copy", "recompute"):
                if kind == "full" and kv == "recompute":
                    continue  # no token exits early: the same graphs as copy
                out.append({"policy": policy_entry(kind, thresholds), "keep_ratio": ratio, "beam": 1, "kv": kv,
                            "max_new_tokens": MAX_NEW_TOKENS})
    for kind, ratio, kv in (("full", 1.0, "copy"), ("confidence", 0.5, "copy"), ("confidence", 0.5, "recompute"),
                            ("max_probability", 0.3, "copy")):
        out.append({"policy": policy_entry(kind, thresholds), "keep_ratio": ratio, "beam": 3, "kv": kv,
                    "max_new_tokens": MAX_NEW_TOKENS})
    out.append({"policy": policy_entry("confidence", thresholds), "keep_ratio": 0.5, "beam": 1, "kv": "copy",
                "max_new_tokens": 3})
    return out


def to_policy(entry: dict):
    from mmedge.runtime.controller import Policy

    return Policy(entry["kind"], **{k: v for k, v in entry.items() if k != "kind"})


def generation(engine, image, prompt: str, s: dict) -> dict:
    """One generate() as its record; the summed log-probability from the same decoding."""
    policy, ratio = to_policy(s["policy"]), s["keep_ratio"]
    g = engine.generate(image, prompt, s["max_new_tokens"], beam=s["beam"], policy=policy, keep_ratio=ratio, kv=s["kv"])
    _, run = engine._run(image, prompt, s["max_new_tokens"], s["beam"], policy, ratio, s["kv"])
    assert (run.tokens, run.exits) == (g.tokens, g.exits), "two runs of the same setting differ"
    return {**s, "tokens": g.tokens, "exits": g.exits, "confidences": [float(c) for c in g.confidences],
            "logprob": float(run.logprob), "text": g.text, "kept_visual_tokens": g.kept_visual_tokens}


def pick_threshold(values: list[float]) -> float:
    """A threshold in the middle of the widest gap between the middle half of `values`: some tokens stop
    there, others go on, none within a rounding error of it."""
    v = np.sort(np.asarray(values))
    lo, hi = len(v) // 4, max(len(v) // 4 + 1, 3 * len(v) // 4)
    gaps = v[lo + 1:hi + 1] - v[lo:hi]
    i = lo + int(np.argmax(gaps))
    return round(float((v[i] + v[i + 1]) / 2), 6)


def choose_thresholds(engine, queries) -> dict:
    """Stage confidences and head top probabilities of tokens at full depth -> a threshold for each policy."""
    from mmedge.runtime.controller import Policy

    rec = Recorder(engine)
    try:
        for image, prompt in queries:
            engine.generate(image, prompt, MAX_NEW_TOKENS, policy=Policy("max_probability", threshold=1.0))
    finally:
        rec.close()
    return {"confidence": pick_threshold(rec.confidences), "max_probability": pick_threshold(rec.max_probabilities)}


def set_thresholds(bundle: Path, thresholds: dict) -> None:
    """The bundle's defaults: early exits under the confidence policy, keep 0.5 (not calibrated)."""
    path = bundle / "manifest.json"
    m = json.loads(path.read_text())
    m["thresholds"].update({"policy": "confidence", "threshold": thresholds["confidence"], "keep_ratio": 0.5,
                            "kv": "copy", "calibrated": False})
    path.write_text(json.dumps(m, indent=1) + "\n")


def image_entries(engine) -> list[dict]:
    from PIL import Image

    from mmedge.data.preprocess import load_image

    S = engine.manifest["preprocessing"]["image_size"]
    out = []
    for name, (w, h, c, pattern, seed) in IMAGES:
        image = generated(w, h, c, pattern, seed)
        img = load_image(image)
        rgb = np.asarray(img if img.size == (S, S) else img.resize((S, S), Image.Resampling.LANCZOS), np.uint8)
        pixels = engine.preprocess(image)
        out.append({"name": name, "width": w, "height": h, "channels": c, "pattern": pattern, "seed": seed,
                    "resized_rgb_sha256": _sha(rgb), "pixel_values_sha256": _sha(pixels.astype("<f4")),
                    "pixel_values_sample": [float(x) for x in pixels.reshape(-1)[::97][:24]]})
    return out


def kept_token_cases() -> list[dict]:
    from mmedge.runtime.vlm import kept_tokens

    ratios = [1.0, 0.5, 0.3, 0.25, 0.1, 0.03125, 0.40625, 0.15625, 0.0625, 0.01, 1e-9, 0.999, 0.7, 1 / 3]
    return [{"keep_ratio": r, "num_image_tokens": m, "kept": kept_tokens(r, m)} for r in ratios for m in (1, 4, 16, 64, 81)]


def queries_of() -> list[tuple[dict, str]]:
    """(image entry spec, prompt) per query: every image under one prompt, one image under every prompt."""
    return [(IMAGES[i], PROMPTS[i % len(PROMPTS)]) for i in range(len(IMAGES))] + \
        [(IMAGES[0], p) for p in PROMPTS[1:]]


def query_vectors(engine, thresholds: dict) -> tuple[list[dict], dict]:
    """Every query under every setting, with the smallest distance of a compared value from its threshold."""
    rec = Recorder(engine)
    margins = {"confidence": float("inf"), "max_probability": float("inf")}
    out = []
    try:
        for (name, spec), prompt in queries_of():
            image = generated(*spec)
            runs = []
            for s in settings(thresholds):
                rec.confidences.clear()
                rec.max_probabilities.clear()
                runs.append(generation(engine, image, prompt, s))
                kind = s["policy"]["kind"]
                seen = rec.confidences if kind == "confidence" else rec.max_probabilities if kind == "max_probability" \
                    else []
                if seen:
                    margins[kind] = min(margins[kind], float(np.min(np.abs(np.asarray(seen) - thresholds[kind]))))
            out.append({"image": name, "prompt": prompt, "prompt_ids": engine.prompt_ids(prompt), "runs": runs})
    finally:
        rec.close()
    return out, margins


def default_vectors(engine) -> list[dict]:
    """generate() and caption() with the bundle's defaults (its thresholds, keep ratio, kv, max_new_tokens)."""
    out = []
    for name, spec in IMAGES[:2]:
        image = generated(*spec)
        g = engine.generate(image, PROMPTS[1])
        c = engine.caption(image, max_len=6)
        for call, r in (("generate", g), ("caption", c)):
            out.append({"call": call, "image": name, "prompt": PROMPTS[1] if call == "generate" else None,
                        "max_new_tokens": None if call == "generate" else 6, "tokens": r.tokens, "exits": r.exits,
                        "confidences": [float(x) for x in r.confidences], "text": r.text,
                        "keep_ratio": r.keep_ratio, "kept_visual_tokens": r.kept_visual_tokens})
    return out


def vectors(bundle: Path) -> dict:
    """vectors.json from the bundle as it is."""
    import onnxruntime

    from mmedge.runtime.vlm_engine import VLMEngine

    engine = VLMEngine.load(bundle, backend="onnxruntime", fmt="onnx", threads=1)
    th = engine.manifest["thresholds"]
    thresholds = {"confidence": th["threshold"], "max_probability": bundle_max_probability(bundle)}
    queries, margins = query_vectors(engine, thresholds)
    return {"format": "mmedge-vlm-vectors-1", "bundle": bundle.relative_to(ROOT).as_posix(),
            "manifest_sha256": hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest(),
            "generator": GENERATOR, "backend": f"onnxruntime {onnxruntime.__version__} (Python VLMEngine, CPU, 1 thread)",
            "kernels": kernel_isa(),
            "tolerance": TOLERANCE, "thresholds": thresholds, "margins": margins,
            "kept_tokens": kept_token_cases(), "images": image_entries(engine), "queries": queries,
            "defaults": default_vectors(engine)}


THRESHOLDS_FILE = "thresholds.json"


def bundle_max_probability(bundle: Path) -> float:
    """The max_probability threshold chosen with the bundle (beside it: the manifest has one threshold)."""
    return json.loads((bundle.parent / THRESHOLDS_FILE).read_text())["max_probability"]


# ---------------------------------------------------------------------------------------------- lanczos, tokenizers
def resample_cases() -> list[dict]:
    """Pillow's lanczos resize of generated RGB images (the reference every runtime ports)."""
    from PIL import Image

    rng = np.random.default_rng(5)
    sizes = [(*s, "noise") for s in RESAMPLE_SIZES] + [(*s, "binary") for s in RESAMPLE_SIZES[::3]]
    for _ in range(60):  # random sizes, up- and down-scaling on either axis
        w, h = (int(v) for v in rng.integers(1, 121, 2))
        sizes.append((w, h, int(rng.integers(1, 65)), int(rng.integers(1, 65)),
                      "binary" if rng.random() < 0.25 else "noise"))
    cases = []
    for i, (w, h, ow, oh, pattern) in enumerate(sizes):
        seed = 3000 + i
        out = np.asarray(Image.fromarray(generated(w, h, 3, pattern, seed), "RGB").resize((ow, oh),
                                                                                           Image.Resampling.LANCZOS))
        cases.append({"width": w, "height": h, "channels": 3, "pattern": pattern, "seed": seed,
                      "out_width": ow, "out_height": oh, "passes": passes(w, h, ow, oh), "sha256": _sha(out)})
    return cases


TEXTS = ["describe the image.", "What color is the circle?", "  spaced   out  ", "UPPER lower MiXeD", "don't stop!",
         "naïve café Ünïcödé", "İstanbul ΌΣΟΣ straße", "日本語のテキスト", "emoji 😀 here", "tabs\tand\nnew lines",
         "<image><image> tokens", "<fake_token_around_image><global-img>", "<|im_start|>User: hi<end_of_utterance>",
         "where is a small square ?", "digits 12345 and 3.14", "a-b_c/d\\e", "",
         "\u00a0non breaking\u2003spaces\u3000", "Assistant: red circle.", "I'll see you're 3 cats' toys, it's 'S",
         "a   b\n\n c  ", "x\u00a0y\u0085z", "e\u0301 composed é", "Hello<image>world<image>", "<global-img>  spaced",
         "ǅ ΌΣ İ Straße", "1234567 digits9in8words", "Assistant:Assistant: user:", "\u001cseparators\u001f",
         "WHAT COLOR?!... (red) [blue] {green}", "tab\t\tindent"]


def train_bpe(path: Path) -> None:
    """A small byte-level BPE in SmolVLM's tokenizer layout: digits split one by one, then ByteLevel
    (no prefix space, GPT-2's regex), a ByteLevel decoder, special tokens and a non-special added token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    rng = np.random.default_rng(11)
    words = WORDS + ["naïve", "café", "日本語", "emoji😀", "Straße", "12", "2024", "don't", "User:", "Assistant:"]
    corpus = [" ".join(rng.choice(words, 16)) for _ in range(400)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=420, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    tok.add_special_tokens(["<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>"])
    tok.add_tokens(["Assistant:"])
    path.write_text(tok.to_str(pretty=True) + "\n")


def tokenizer_cases(path: Path, seed: int) -> list[dict]:
    """Texts -> ids (no special tokens added) and their decoding; random id lists -> decoded text."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    rng = np.random.default_rng(seed)
    cases = []
    for text in TEXTS:
        ids = tok.encode(text, add_special_tokens=False).ids
        cases.append({"text": text, "ids": ids, "decoded": tok.decode(ids, skip_special_tokens=True).strip()})
    for _ in range(60):
        ids = [int(i) for i in rng.integers(0, tok.get_vocab_size(), int(rng.integers(0, 12)))]
        cases.append({"ids": ids, "decoded": tok.decode(ids, skip_special_tokens=True).strip()})
    return cases


def tokenizer_vectors(bundle: Path) -> dict:
    import tokenizers

    return {"format": "mmedge-vlm-tokenizer-1", "reference": f"tokenizers {tokenizers.__version__}: "
            "encode(text, add_special_tokens=False).ids; decode(ids, skip_special_tokens=True).strip()",
            "tokenizers": {
                "word": {"file": (bundle / "tokenizer.json").relative_to(ROOT).as_posix(),
                         "cases": tokenizer_cases(bundle / "tokenizer.json", 1)},
                "bpe": {"file": (OUT / "bpe-tokenizer.json").relative_to(ROOT).as_posix(),
                        "cases": tokenizer_cases(OUT / "bpe-tokenizer.json", 2)}}}


def resize_vectors() -> dict:
    import PIL

    return {"format": "mmedge-lanczos-resize-1", "generator": GENERATOR, "filter": "lanczos",
            "reference": f"Pillow {PIL.__version__} Image.resize(size, Image.Resampling.LANCZOS)",
            "resample": resample_cases()}


def _write(path: Path, doc: dict) -> None:
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def make(out: Path, rebuild: bool) -> dict:
    import PIL

    if int(PIL.__version__.split(".")[0]) < 13:
        raise SystemExit(f"Pillow {PIL.__version__}: the vectors pin Pillow 13's resize (its pass order); "
                         "install pillow>=13")
    out.mkdir(parents=True, exist_ok=True)
    bundle = out / BUNDLE_NAME
    if rebuild:
        from mmedge.runtime.vlm_engine import VLMEngine

        with tempfile.TemporaryDirectory() as tmp:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                built = make_bundle(Path(tmp))
            engine = VLMEngine.load(built, backend="onnxruntime", fmt="onnx", threads=1)
            queries = [(generated(*spec), prompt) for (_, spec), prompt in queries_of()]
            thresholds = choose_thresholds(engine, queries)
            set_thresholds(built, thresholds)
            if bundle.exists():
                shutil.rmtree(bundle)
            shutil.copytree(built, bundle)
        _write(out / THRESHOLDS_FILE, {"note": "chosen by scripts/make_vlm_vectors.py between observed values "
                                               "(not calibrated); the manifest holds the confidence one",
                                       **thresholds})
        train_bpe(out / "bpe-tokenizer.json")
    doc = vectors(bundle)
    _write(out / "vectors.json", doc)
    _write(out / "resize-lanczos.json", resize_vectors())
    _write(out / "tokenizer.json", tokenizer_vectors(bundle))
    size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
    return {"bundle bytes": size, "queries": len(doc["queries"]),
            "generations": sum(len(q["runs"]) for q in doc["queries"]), "margins": doc["margins"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(OUT.relative_to(ROOT)))
    parser.add_argument("--vectors", action="store_true", help="only the vector files, from the committed bundle")
    args = parser.parse_args()
    print(f"wrote {args.out}: {make(ROOT / args.out, not args.vectors)}")


if __name__ == "__main__":
    main()

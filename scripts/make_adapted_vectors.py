"""Golden vectors for adapted encoders' bundles (docs/bundle-format.md, "Adapted encoders"): a tiny
ViLT adapted by mmedge, its ONNX bundle, and what the Python Engine computes on it.

    python scripts/make_adapted_vectors.py [--steps 8] [--kinds vqa,nlvr2,retrieval]

Builds a tiny ``transformers`` ViLT (2 layers x 32 wide, 32 px images in 8 px patches, a small BERT
vocabulary with accents stripped, CJK ideographs and ``##`` pieces) with ``save_pretrained`` in a
temporary folder, adapts it with ``mmedge.adapt.adapt`` (a few self-distillation steps), exports
it with ``mmedge export --target onnx`` (fp32) and writes tests/vectors/adapted/:

- ``tiny-vilt-onnx.mmedge/``: the bundle (about 0.5 MB);
- ``tokenizer.json`` (format ``mmedge-adapted-tokenizer-1``): texts through the bundle's BERT
  WordPiece tokenizer (accents, CJK, punctuation, control characters, special tokens, long words,
  truncation, the length cap) -> pieces, ``input_ids``, ``text_mask``, or the error;
- ``resize.json`` (format ``mmedge-adapted-resize-1``): ``resample`` cases, Pillow's
  ``Image.resize(..., BICUBIC)`` of generated RGB images of many sizes, 1 px included, up and down,
  to square and non-square sizes -> the passes Pillow runs and the SHA-256 of the output (the
  reference is Pillow 13, whose pass order differs from older Pillow's; the script refuses an older
  one); ``images`` cases, the Engine's whole image
  preparation (RGB / RGBA, stretched to the bundle's size, normalised) -> SHA-256 of the resized 8-bit
  image and of ``pixel_values``, or the refusal;
- ``queries.json`` (format ``mmedge-adapted-golden-1``, the layout of golden/queries.json): generated
  images and questions end to end -> ids, mask, hashes, and per keep ratio the kept tokens, every
  exit's logits and confidence and each policy's exit and answer, and ``Engine.predict``'s default;
- ``tiny-vilt-nlvr2-onnx.mmedge/`` and ``queries-nlvr2.json``: the same for a tiny
  ``ViltForImagesAndTextClassification`` (NLVR2, ``preprocessing.num_images`` 2): each query is a
  text and two images (``images``: left, right), ``pixel_values`` ``[1, 2, 3, S, S]``, the kept
  tokens of both images as one list (image i's patch j is ``i * N + j``);
- ``tiny-vilt-retrieval-onnx.mmedge/`` and ``queries-retrieval.json``: the same for a tiny
  ``ViltForImageAndTextRetrieval`` (``head`` ``"match-score"``, labels ``["no", "yes"]``, logits
  ``[0, s]``), with the match score ``sigmoid(s)`` per exit, per policy and of the default prediction.

``--kinds`` makes only some of them (each kind's bundle and vectors are independent: making the
NLVR2 and retrieval ones leaves the VQA bundle and its three files as they are).

Images are not stored: each is generated from a seed by xorshift32 (``generator`` in the files says
how), so that every runtime rebuilds the same bytes. Every value is checked against its reference
before it is written: the tokenizer against ``transformers.BertTokenizer`` loading the same files,
the resizes against Pillow, the pixels against ``ViltImageProcessor`` for square images.
"""

from __future__ import annotations

import argparse
import contextlib
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

from mmedge.bundle.manifest import MANIFEST_FILE  # noqa: E402
from mmedge.data.preprocess import BACKGROUND, load_image  # noqa: E402
from mmedge.errors import ImageError, TextError  # noqa: E402
from mmedge.fileio import atomic_write  # noqa: E402
from mmedge.runtime.controller import Policy, decide_offline, policy_from_thresholds  # noqa: E402
from mmedge.runtime.engine import Engine  # noqa: E402

OUT = ROOT / "tests/vectors/adapted"
BUNDLE_NAME = "tiny-vilt-onnx.mmedge"
KINDS = ("vqa", "nlvr2", "retrieval")
# the two-image and match-score kinds: bundle, query file, the transformers class, labels (retrieval: one score)
OTHER_KINDS = {
    "nlvr2": {"bundle": "tiny-vilt-nlvr2-onnx.mmedge", "queries": "queries-nlvr2.json",
              "class": "ViltForImagesAndTextClassification", "labels": ["False", "True"]},
    "retrieval": {"bundle": "tiny-vilt-retrieval-onnx.mmedge", "queries": "queries-retrieval.json",
                  "class": "ViltForImageAndTextRetrieval", "labels": ["score"]},
}
TOLERANCE = {"logits_abs": 1e-4, "confidence_abs": 1e-4}
POLICIES = [Policy("full"), Policy("confidence", threshold=0.5), Policy("confidence", threshold=0.7),
            Policy("confidence", threshold=0.9), Policy("max_probability", threshold=0.4),
            Policy("max_probability", threshold=0.6), Policy("patience", patience=2)]
GENERATOR = ("xorshift32: state = seed (a non-zero uint32); per byte, in row-major order with channels "
             "interleaved: state ^= state << 13; state ^= state >>> 17; state ^= state << 5 (all mod 2^32); "
             "byte = state >>> 24; pattern 'binary' then maps the byte to 255 if it is >= 128, else 0")

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ("what is the color colour of a red blue green circle square triangle left right above below there how "
         "many are small large yes no cafe naive nandu resume que si istanbul strasse straße οδοσ full width "
         "play ##ing ##s ##ed un ##aff ##able ? , . ! - ' \" ( ) : ; [ ] $ + < = > ^ ` | ~ ¿ « » … — · 「 」 "
         "中 文 红 色 的 日 本 豈 𠀀").split()
CHARS = list("abcdefghijklmnopqrstuvwxyz0123456789")
LABELS = ["red", "blue", "green", "yes", "no", "two"]
TEXTS = [
    "what is the color of the circle?", "What is the colour of the CAFÉ?", "ΟΔΟΣ Σ İstanbul",
    "a\x00b\u200bc\tq\x1cz", "[MASK] is red[SEP]x", "[mask] is red", "[CLS][CLS] red [SEP]", "", "   ",
    "\t\n\r\x0b\x0c", "left-right!!?", "x" * 100, "x" * 101, "ab" * 50, "ﬁ straße", "a$b+c<d=e>f^g`h|i~j",
    "e\u0301\u0300 cafe\u0301", "中[CLS]文", "\ufffd?\x7f", " ".join(["circle"] * 30), "红色的 circle 日本",
    "naïve Ñandú résumé", "¿qué? «sí» — no…", "under_score", "tab\tsep\nline\r\nend", "red\u0085circle",
    "red\ufeffcircle", "red\u180ecircle", "red\u00a0circle red\u3000circle red\u2028circle red\u2003circle",
    "½ Ⅷ ² x²", "Ｆｕｌｌ ｗｉｄｔｈ", "🔴 circle ?", "ok👍🏽ok", "ǅungla Ⓐ", "x\u0345y", "ﬃ ß ŉ Ǆ",
    "\u212b \u212a \u2126", "한국어", "ﾃｽﾄ テスト", "हिन्दी", "مَرْحَبًا", "ภาษาไทย", "שָׁלוֹם",
    "𠀀 豈 〇 ー", "\x1b[31mred", "zero\u200dwidth soft\u00adhyphen", "private\ue000use", "unassigned\u0378x",
    "tag\U000e0001x", "a.b,c;d:e!f?g", "\"quoted\" 'single'", "(paren) [bracket] {brace}", "~`^|\\",
    "€5 £ ¥", "§ ¶ †", "a–b—c", "‘curly’ “quotes”", "「括弧」", "©®™ °C", "playing unaffable plays",
    "PLAYED Playing", "how many squares are there above the small blue triangle on the left?",
    "Is the large green circle below the red square, or the blue triangle to its right?",
    "is" + " there" * 40, "\u0130\u0131 i\u0307", "ΣΑΣ σας", "Ünïcödé ÀÉÎÕÜ", "abc\u0300def", "1,000.5 3-4",
]
# (text, count, ...) cases too long to inline: the text repeated `count` times
REPEATS = [("a", 65_537, "TextError"), ("ab", 32_768, None), ("x, ", 21_845, None)]

# resample cases: (width, height, out_width, out_height, pattern)
RESAMPLE_SIZES = [
    (1, 1, 1, 1), (1, 1, 32, 32), (1, 1, 3, 5), (1, 5, 7, 3), (5, 1, 1, 9), (2, 2, 3, 3), (3, 3, 2, 2),
    (3, 7, 32, 32), (8, 8, 32, 32), (31, 33, 32, 32), (32, 32, 32, 32), (33, 32, 32, 32), (32, 40, 32, 32),
    (100, 60, 32, 32), (257, 13, 32, 32), (500, 499, 32, 32), (64, 64, 17, 23), (16, 16, 48, 48),
    (1000, 3, 32, 32), (4000, 2, 32, 32), (2, 1500, 9, 40), (7, 7, 1, 1), (40, 40, 1, 1), (13, 9, 13, 20),
    (13, 9, 20, 9), (640, 480, 32, 32), (384, 384, 32, 32), (33, 33, 32, 32), (63, 65, 32, 32),
    (96, 48, 48, 96), (20, 40, 15, 30), (20, 41, 15, 30), (50, 500, 40, 100), (500, 50, 100, 40),
    (10, 100, 12, 20), (30, 31, 31, 30),
]
# Engine image cases: (width, height, channels, pattern); under 8 px a side is refused
IMAGE_SIZES = [
    (32, 32, 3, "noise"), (32, 32, 4, "noise"), (8, 8, 3, "noise"), (8, 300, 3, "noise"), (300, 8, 4, "noise"),
    (31, 33, 4, "noise"), (100, 60, 3, "noise"), (640, 480, 3, "noise"), (33, 32, 3, "binary"),
    (32, 47, 3, "binary"), (9, 9, 4, "binary"), (1000, 20, 3, "noise"), (64, 64, 3, "noise"),
    (17, 255, 4, "binary"), (7, 20, 3, "noise"), (4, 4, 4, "noise"), (20, 7, 3, "noise"),
]
QUERIES = [
    ("square-rgb", (32, 32, 3, "noise", 11), "what is the color of the circle?"),
    ("wide-rgb", (100, 60, 3, "noise", 12), "How many squares are there? (Count them!)"),
    ("tall-rgba", (31, 47, 4, "noise", 13), "Is the CAFÉ naïve?"),
    ("binary-cjk", (48, 48, 3, "binary", 14), "红色的 circle 日本 [MASK]"),
    ("large-truncated", (640, 480, 3, "noise", 15), " ".join(["is there a red circle left of the square"] * 4)),
    ("small-empty", (8, 8, 3, "noise", 16), ""),
]
# NLVR2: (name, left image, right image, text)
NLVR2_QUERIES = [
    ("square-pair", (32, 32, 3, "noise", 21), (32, 32, 3, "noise", 22), "the left image has a red circle ."),
    ("wide-tall", (100, 60, 3, "noise", 23), (31, 47, 4, "noise", 24), "Are there more squares on the LEFT?"),
    ("same-image", (48, 48, 3, "binary", 25), (48, 48, 3, "binary", 25), "both images are the same"),
    ("mixed-cjk", (640, 480, 3, "noise", 26), (8, 8, 3, "noise", 27), "红色的 circle 日本 [MASK] naïve"),
    ("rgba-truncated", (40, 33, 4, "noise", 28), (33, 40, 4, "binary", 29),
     " ".join(["there is a small blue triangle above the green square"] * 3)),
    ("small-empty", (8, 9, 3, "noise", 30), (9, 8, 4, "noise", 31), ""),
]
# retrieval: (name, image, caption)
RETRIEVAL_QUERIES = [
    ("square-rgb", (32, 32, 3, "noise", 41), "a red circle left of a blue square"),
    ("wide-rgb", (100, 60, 3, "noise", 42), "How many green triangles? Two."),
    ("tall-rgba", (31, 47, 4, "noise", 43), "a CAFÉ, naïve"),
    ("binary", (48, 48, 3, "binary", 44), "yes no yes no"),
    ("large-truncated", (640, 480, 3, "noise", 45), " ".join(["a large green circle below the red square"] * 4)),
    ("small-empty", (8, 8, 3, "noise", 46), ""),
    ("cjk", (64, 40, 4, "binary", 47), "中文 [MASK] 红色的"),
]


# ---------------------------------------------------------------------------------------------- images
def generated(width: int, height: int, channels: int, pattern: str, seed: int) -> np.ndarray:
    """The generator's image: uint8 (height, width, channels) (GENERATOR)."""
    n = width * height * channels
    out = np.empty(n, np.uint8)
    x = seed & 0xFFFFFFFF
    if x == 0:
        raise ValueError("xorshift32 needs a non-zero seed")
    for i in range(n):
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        out[i] = x >> 24
    if pattern == "binary":
        out = np.where(out >= 128, 255, 0).astype(np.uint8)
    elif pattern != "noise":
        raise ValueError(pattern)
    return out.reshape(height, width, channels)


def _sha(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def passes(w: int, h: int, ow: int, oh: int) -> list[str]:
    """The passes Pillow 13 runs, in order (PR #9549: vertical first when the height shrinks by more
    than twice as many pixels as the width; Pillow 12 and older always go horizontal first)."""
    if ow != w and oh != h:
        dy, dx = h - oh, w - ow
        return ["vertical", "horizontal"] if dy > 0 and dy > 2 * dx else ["horizontal", "vertical"]
    return (["horizontal"] if ow != w else []) + (["vertical"] if oh != h else [])


def resample_cases() -> list[dict]:
    """Pillow's bicubic resize of generated RGB images (the reference every runtime ports)."""
    from PIL import Image

    rng = np.random.default_rng(3)
    sizes = [(*s, "noise") for s in RESAMPLE_SIZES] + [(*s, "binary") for s in RESAMPLE_SIZES[::3]]
    for _ in range(60):  # random sizes, up- and down-scaling on either axis
        w, h = (int(v) for v in rng.integers(1, 121, 2))
        sizes.append((w, h, int(rng.integers(1, 65)), int(rng.integers(1, 65)),
                      "binary" if rng.random() < 0.25 else "noise"))
    cases = []
    for i, (w, h, ow, oh, pattern) in enumerate(sizes):
        seed = 1000 + i
        src = Image.fromarray(generated(w, h, 3, pattern, seed), "RGB")
        out = np.asarray(src.resize((ow, oh), Image.Resampling.BICUBIC))
        assert out.shape == (oh, ow, 3)
        cases.append({"width": w, "height": h, "channels": 3, "pattern": pattern, "seed": seed,
                      "out_width": ow, "out_height": oh, "passes": passes(w, h, ow, oh), "sha256": _sha(out)})
    return cases


def stretched_rgb(image: np.ndarray, size: int) -> np.ndarray:
    """The Engine's image before normalisation: load_image's conversions, then the bicubic stretch."""
    from PIL import Image

    img = load_image(image)
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.uint8)


def image_cases(engine: Engine, processor) -> list[dict]:
    """The Engine's whole image preparation; square RGB images equal ViltImageProcessor's pixels."""
    pre = engine.manifest["preprocessing"]
    cases = []
    for i, (w, h, channels, pattern) in enumerate(IMAGE_SIZES):
        seed = 2000 + i
        spec = {"width": w, "height": h, "channels": channels, "pattern": pattern, "seed": seed}
        image = generated(w, h, channels, pattern, seed)
        try:
            pixels = engine.preprocess(image, "")["pixel_values"]
        except ImageError as exc:
            cases.append({**spec, "refused": True, "error": "ImageError", "message": str(exc)})
            continue
        rgb = stretched_rgb(image, engine.image_size)
        x = (rgb.astype(np.float64) * pre["scale"]).astype(np.float32)
        x = (x - np.asarray(pre["mean"], np.float32)) / np.asarray(pre["std"], np.float32)
        assert np.array_equal(pixels[0], x.transpose(2, 0, 1)), "pixel_values from the resized image"
        if channels == 3 and w == h:
            ref = processor.image_processor([image], return_tensors="np")["pixel_values"][0]
            assert np.array_equal(pixels[0], ref), f"{w}x{h}: the Engine differs from ViltImageProcessor"
        cases.append({**spec, "refused": False, "resized_rgb_sha256": _sha(rgb),
                      "pixel_values_sha256": _sha(pixels.astype("<f4"))})
    return cases


# ---------------------------------------------------------------------------------------------- text
def tokenizer_cases(engine: Engine, reference) -> tuple[list[dict], list[str]]:
    """Each text through the bundle's tokenizer, checked against transformers' BertTokenizer;
    texts where the two differ are left out and returned."""
    tok = engine.tokenizer
    length = tok.max_length
    cases, differ = [], []
    items = [(text, None) for text in TEXTS] + [((part, count), error) for part, count, error in REPEATS]
    for item, expected_error in items:
        text = item[0] * item[1] if isinstance(item, tuple) else item
        case = {"repeat": {"text": item[0], "count": item[1]}} if isinstance(item, tuple) else {"text": text}
        try:
            ids, mask = tok.encode(text)
        except TextError:
            assert expected_error == "TextError", f"{case}: unexpected TextError"
            cases.append({**case, "error": "TextError"})
            continue
        pieces = tok.tokenize(text)
        ref = reference(text, padding="max_length", max_length=length, truncation=True)
        if ref["input_ids"] != ids.tolist() or ref["attention_mask"] != mask.tolist() or \
                (not isinstance(item, tuple) and reference.tokenize(text) != pieces):
            differ.append(text if not isinstance(item, tuple) else f"{item[0]!r} x {item[1]}")
            continue
        if isinstance(item, tuple):
            case["token_count"] = len(pieces)
        else:
            case["tokens"] = pieces
        cases.append({**case, "input_ids": ids.astype(int).tolist(), "text_mask": mask.astype(int).tolist(),
                      "truncated": len(pieces) > length - 2})
    return cases, differ


# ---------------------------------------------------------------------------------------------- model
def make_source(root: Path, max_length: int, kind: str = "vqa") -> Path:
    """A tiny ViltForQuestionAnswering (or, by `kind`, ViltForImagesAndTextClassification for NLVR2,
    ViltForImageAndTextRetrieval for retrieval) and its ViltProcessor, saved like a downloaded model."""
    import torch
    import transformers

    vocab = list(dict.fromkeys(SPECIALS + WORDS + CHARS + [f"##{c}" for c in CHARS]))
    tokenizer = transformers.BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True,
                                           model_max_length=max_length)
    images = transformers.ViltImageProcessor(size={"shortest_edge": 32}, size_divisor=8)
    processor = transformers.ViltProcessor(image_processor=images, tokenizer=tokenizer)
    labels = LABELS if kind == "vqa" else OTHER_KINDS[kind]["labels"]
    extra = {"num_images": 2, "modality_type_vocab_size": 3} if kind == "nlvr2" else {}  # token types 1 and 2
    config = transformers.ViltConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, image_size=32, patch_size=8, vocab_size=len(vocab),
                                     max_position_embeddings=max_length, num_labels=len(labels),
                                     initializer_range=0.2, id2label=dict(enumerate(labels)),
                                     label2id={a: i for i, a in enumerate(labels)}, **extra)
    torch.manual_seed(0)
    cls = "ViltForQuestionAnswering" if kind == "vqa" else OTHER_KINDS[kind]["class"]
    getattr(transformers, cls)(config).eval().save_pretrained(root)
    processor.save_pretrained(root)
    return root


def nlvr2_data(root: Path, sets: int = 4) -> Path:
    """A small NLVR2 dataset in its official layout (train.json, dev.json, images/) from mmedge's
    generated two-image scenes: what the NLVR2 model distils on and its export's parity check reads
    (the generated scenes have no two-image task)."""
    from PIL import Image

    from mmedge.data.batches import generate

    for split in ("train", "dev"):
        samples = generate("verify", 0, "train" if split == "train" else "val", range(4 * sets))
        lines = []
        for k in range(sets):
            for pair in range(2):  # two image pairs per sentence
                left, right = samples[4 * k + 2 * pair], samples[4 * k + 2 * pair + 1]
                folder = root / "images" / split / (str(k % 3) if split == "train" else "")
                folder.mkdir(parents=True, exist_ok=True)
                stem = f"{split}-{k}-{pair}"
                Image.fromarray(left.image).save(folder / f"{stem}-img0.png")
                Image.fromarray(right.image).save(folder / f"{stem}-img1.png")
                row = {"identifier": f"{stem}-0", "sentence": left.text,
                       "label": "True" if left.answer == "true" else "False"}
                if split == "train":
                    row["directory"] = k % 3
                lines.append(json.dumps(row))
        (root / f"{split}.json").write_text("\n".join(lines) + "\n")
    return root


def make_bundle(work: Path, steps: int, kind: str = "vqa") -> Path:
    """`mmedge adapt` (a few distillation steps) then `mmedge export --target onnx` (fp32). NLVR2
    distils on, and checks its export on, a small generated NLVR2 dataset (nlvr2_data)."""
    from mmedge.adapt import adapt
    from mmedge.adapt.distill import DistillConfig
    from mmedge.export.exporter import export_bundle
    from mmedge.export.recipe import ExportRecipe

    data = {"data": "nlvr2:nlvr2"} if kind == "nlvr2" else {}
    cfg = DistillConfig(steps=steps, eval_every=steps, checkpoint_every=steps, batch_size=8, eval_samples=16,
                        log_every=steps, threads=1, warmup_steps=2, lr=3e-3, train_keep_ratios=[1.0, 0.5], **data)
    name = BUNDLE_NAME if kind == "vqa" else OTHER_KINDS[kind]["bundle"]
    with contextlib.chdir(work):  # relative paths: the bundle's metadata names "source" and "adapted", no temp dir
        make_source(Path("source"), max_length=24, kind=kind)
        if kind == "nlvr2":
            nlvr2_data(Path("nlvr2"))
        recipe = ExportRecipe(targets=["onnx"], parity_samples=4, accuracy_samples=8, calibration_samples=4,
                              ort_format=False, in_graph=False, **data)
        adapt("source", Path("adapted"), cfg, task=kind, progress=False, log=lambda *_: None,
              exit_layers=[0, 1], keep_ratios=[1.0, 0.5])
        return work / export_bundle(Path("adapted"), Path(name), recipe, log=lambda *_: None)


# ---------------------------------------------------------------------------------------------- queries
def query_vectors(engine: Engine, bundle: Path) -> list[dict]:
    manifest = engine.manifest
    default = policy_from_thresholds(manifest["thresholds"])
    thresholds = sorted({p.threshold for p in POLICIES + [default] if p.threshold is not None})
    queries = []
    for name, (w, h, channels, pattern, seed), text in QUERIES:
        image = generated(w, h, channels, pattern, seed)
        feeds = engine.preprocess(image, text)
        query = {"name": name, "width": w, "height": h, "channels": channels, "pattern": pattern, "seed": seed,
                 "text": text, "input_ids": feeds["input_ids"].reshape(-1).tolist(),
                 "text_mask": feeds["text_mask"].reshape(-1).tolist(),
                 "resized_rgb_sha256": _sha(stretched_rgb(image, engine.image_size)),
                 "pixel_values_sha256": _sha(feeds["pixel_values"].astype("<f4")), "by_keep_ratio": {}}
        for group in manifest["keep_ratios"]:
            ratio = group["keep_ratio"]
            exits = engine.all_exits(feeds, ratio)
            for c, p in zip(exits.confidences, exits.max_probabilities):
                close = [t for t in thresholds if abs(c - t) < 1e-4 or abs(p - t) < 1e-4]
                if close:
                    print(f"warning: {name} at {ratio}: a confidence or probability within 1e-4 of {close}")
            rows = []
            for policy in POLICIES + [default]:
                i = decide_offline(policy, exits.answers, exits.confidences, exits.max_probabilities)
                rows.append({"policy": policy.to_dict(), "exit_index": i, "answer": engine.labels[exits.answers[i]]})
            query["by_keep_ratio"][str(ratio)] = {
                "kept_index": exits.kept_visual_tokens,
                "logits": [np.asarray(lg, np.float32).astype(float).tolist() for lg in exits.logits],
                "confidence": [float(c) for c in exits.confidences],
                "max_probability": [float(p) for p in exits.max_probabilities],
                "answers": [engine.labels[a] for a in exits.answers], "policies": rows}
        predicted = engine.predict(image, text)
        row = query["by_keep_ratio"][str(engine.keep_ratio)]["policies"][-1]
        if (predicted.exit_index, predicted.answer) != (row["exit_index"], row["answer"]):
            raise SystemExit(f"{name}: Engine.predict disagrees with the offline controller")
        query["default"] = {"keep_ratio": engine.keep_ratio, "policy": default.to_dict(),
                            "exit_index": predicted.exit_index, "answer": predicted.answer}
        queries.append(query)
    return queries


def _image_spec(spec: tuple) -> dict:
    w, h, channels, pattern, seed = spec
    return {"width": w, "height": h, "channels": channels, "pattern": pattern, "seed": seed}


def _exits_entry(engine: Engine, exits, thresholds: list[float], where: str, match: bool) -> dict:
    """One keep ratio's vectors: kept tokens, every exit's outputs, each policy's exit and answer
    (and, for a match-score bundle, every exit's and each policy's match score)."""
    default = policy_from_thresholds(engine.manifest["thresholds"])
    for c, p in zip(exits.confidences, exits.max_probabilities):
        close = [t for t in thresholds if abs(c - t) < 1e-4 or abs(p - t) < 1e-4]
        if close:
            print(f"warning: {where}: a confidence or probability within 1e-4 of {close}")
    scores = [engine._match_score(lg) for lg in exits.logits] if match else None
    if match and any(abs(m - 0.5) < 1e-4 for m in scores):
        print(f"warning: {where}: a match score within 1e-4 of 0.5")
    rows = []
    for policy in POLICIES + [default]:
        i = decide_offline(policy, exits.answers, exits.confidences, exits.max_probabilities)
        row = {"policy": policy.to_dict(), "exit_index": i, "answer": engine.labels[exits.answers[i]]}
        if match:
            row["match_score"] = scores[i]
        rows.append(row)
    entry = {"kept_index": exits.kept_visual_tokens,
             "logits": [np.asarray(lg, np.float32).astype(float).tolist() for lg in exits.logits],
             "confidence": [float(c) for c in exits.confidences],
             "max_probability": [float(p) for p in exits.max_probabilities],
             "answers": [engine.labels[a] for a in exits.answers]}
    if match:
        entry["match_score"] = scores
    return {**entry, "policies": rows}


def other_query_vectors(engine: Engine, kind: str) -> list[dict]:
    """The NLVR2 queries (a text, two images) or the retrieval queries (a text, one image, the match
    score), end to end through the Python Engine, in the layout of query_vectors."""
    manifest = engine.manifest
    default = policy_from_thresholds(manifest["thresholds"])
    thresholds = sorted({p.threshold for p in POLICIES + [default] if p.threshold is not None})
    match = kind == "retrieval"
    items = ([(name, [left, right], text) for name, left, right, text in NLVR2_QUERIES] if kind == "nlvr2"
             else [(name, [spec], text) for name, spec, text in RETRIEVAL_QUERIES])
    queries = []
    for name, specs, text in items:
        arrays = [generated(*spec) for spec in specs]
        image = arrays if kind == "nlvr2" else arrays[0]
        feeds = engine.preprocess(image, text)
        rgb = [_sha(stretched_rgb(a, engine.image_size)) for a in arrays]
        where = {"images": [_image_spec(sp) for sp in specs], "resized_rgb_sha256": rgb} if kind == "nlvr2" \
            else {**_image_spec(specs[0]), "resized_rgb_sha256": rgb[0]}
        query = {"name": name, **where, "text": text, "input_ids": feeds["input_ids"].reshape(-1).tolist(),
                 "text_mask": feeds["text_mask"].reshape(-1).tolist(),
                 "pixel_values_shape": list(feeds["pixel_values"].shape),
                 "pixel_values_sha256": _sha(feeds["pixel_values"].astype("<f4")), "by_keep_ratio": {}}
        for group in manifest["keep_ratios"]:
            ratio = group["keep_ratio"]
            exits = engine.all_exits(feeds, ratio)
            query["by_keep_ratio"][str(ratio)] = _exits_entry(engine, exits, thresholds, f"{name} at {ratio}", match)
        predicted = engine.predict(image, text)
        row = query["by_keep_ratio"][str(engine.keep_ratio)]["policies"][-1]
        if (predicted.exit_index, predicted.answer) != (row["exit_index"], row["answer"]):
            raise SystemExit(f"{kind} {name}: Engine.predict disagrees with the offline controller")
        query["default"] = {"keep_ratio": engine.keep_ratio, "policy": default.to_dict(),
                            "exit_index": predicted.exit_index, "answer": predicted.answer}
        if match:
            if abs(predicted.match_score - row["match_score"]) > 1e-6:
                raise SystemExit(f"{kind} {name}: Prediction.match_score disagrees with the exit's logits")
            query["default"]["match_score"] = predicted.match_score
        queries.append(query)
    return queries


def make_other(out: Path, steps: int, kind: str) -> dict:
    """The NLVR2 or retrieval bundle and its queries file."""
    names = OTHER_KINDS[kind]
    with tempfile.TemporaryDirectory() as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            built = make_bundle(Path(tmp), steps, kind)
        bundle = out / names["bundle"]
        if bundle.exists():
            shutil.rmtree(bundle)
        shutil.copytree(built, bundle)
    rel = bundle.relative_to(ROOT).as_posix()
    manifest_sha = hashlib.sha256((bundle / MANIFEST_FILE).read_bytes()).hexdigest()
    engine = Engine.load(bundle, backend="onnxruntime", fmt="onnx")
    m = engine.manifest
    doc = {"format": "mmedge-adapted-golden-1", "bundle": rel, "manifest_sha256": manifest_sha, "generator": GENERATOR,
           "task": m["task"], "num_images": engine.num_images, "head": engine.head, "labels": engine.labels,
           "backend": "onnxruntime (Python Engine, CPU)", "tolerance": TOLERANCE,
           "queries": other_query_vectors(engine, kind)}
    _write(out / names["queries"], doc)
    return {f"{kind} queries": len(doc["queries"])}


def _write(path: Path, doc: dict) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n",
                                                   encoding="utf-8"))


def make(out: Path, steps: int, kinds=KINDS) -> dict:
    import PIL

    if int(PIL.__version__.split(".")[0]) < 13:
        raise SystemExit(f"Pillow {PIL.__version__}: the vectors pin Pillow 13's resize (its pass order); "
                         "install pillow>=13")

    out.mkdir(parents=True, exist_ok=True)
    counts = make_vqa(out, steps) if "vqa" in kinds else {"tokenizer_left_out": []}
    for kind in OTHER_KINDS:
        if kind in kinds:
            counts.update(make_other(out, steps, kind))
    return counts


def make_vqa(out: Path, steps: int) -> dict:
    """The VQA bundle and its tokenizer, resize and queries files."""
    import transformers

    with tempfile.TemporaryDirectory() as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            built = make_bundle(Path(tmp), steps)
        bundle = out / BUNDLE_NAME
        if bundle.exists():
            shutil.rmtree(bundle)
        shutil.copytree(built, bundle)
        source = Path(tmp) / "source"
        processor = transformers.ViltProcessor.from_pretrained(source)
        reference = transformers.BertTokenizer.from_pretrained(source)
    rel = bundle.relative_to(ROOT).as_posix()
    manifest_sha = hashlib.sha256((bundle / MANIFEST_FILE).read_bytes()).hexdigest()
    engine = Engine.load(bundle, backend="onnxruntime", fmt="onnx")
    head = {"bundle": rel, "manifest_sha256": manifest_sha, "generator": GENERATOR}

    cases, differ = tokenizer_cases(engine, reference)
    spec = engine.manifest["tokenizer"]
    _write(out / "tokenizer.json", {"format": "mmedge-adapted-tokenizer-1", **head,
                                    "tokenizer": f"{rel}/{spec['file']}", "max_length": spec["max_length"],
                                    "reference": f"transformers {transformers.__version__} BertTokenizer",
                                    "cases": cases})
    resize = {"format": "mmedge-adapted-resize-1", **head, "filter": "bicubic",
              "reference": f"Pillow {__import__('PIL').__version__} Image.resize(size, Image.Resampling.BICUBIC)",
              "image_size": engine.image_size, "background": list(BACKGROUND),
              "resample": resample_cases(), "images": image_cases(engine, processor)}
    _write(out / "resize.json", resize)
    queries = {"format": "mmedge-adapted-golden-1", **head, "backend": "onnxruntime (Python Engine, CPU)",
               "tolerance": TOLERANCE, "queries": query_vectors(engine, bundle)}
    _write(out / "queries.json", queries)
    return {"tokenizer": len(cases), "tokenizer_left_out": differ, "resample": len(resize["resample"]),
            "images": len(resize["images"]), "queries": len(queries["queries"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(OUT.relative_to(ROOT)))
    parser.add_argument("--steps", type=int, default=8, help="self-distillation steps of the tiny model")
    parser.add_argument("--kinds", default=",".join(KINDS),
                        help=f"which bundles and vectors to make, comma-separated (default: all of {', '.join(KINDS)})")
    args = parser.parse_args()
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown or not kinds:
        parser.error(f"--kinds takes {', '.join(KINDS)}; got {args.kinds!r}")
    counts = make(ROOT / args.out, args.steps, kinds)
    for text in counts.pop("tokenizer_left_out"):
        print(f"left out (the Python Engine and transformers differ): {text!r}")
    print(f"wrote {args.out}: " + ", ".join(f"{v} {k} cases" for k, v in counts.items()))


if __name__ == "__main__":
    main()

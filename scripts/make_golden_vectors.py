"""Golden vectors: what every runtime must reproduce on the shipped bundle (docs/bundle-format.md).

    python scripts/make_golden_vectors.py [--bundle models/vqa-default/bundles/vqa-default-onnx.mmedge]

Writes tests/vectors/golden/: queries.json (per query: image file, text, token ids and mask,
SHA-256 of the resized 8-bit RGB image and of the float32 pixel_values, and per keep ratio the
kept tokens, every exit's logits and confidence at full depth, and the exit and answer of each
listed policy, staged and in-graph), tokenizer.json (texts, Unicode included, with their ids and
masks or the error they raise) and the query images as PNG. Values come from the Python Engine on
onnxruntime; the in-graph files are run too and must agree with the staged chain.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from mmedge.bundle.manifest import MANIFEST_FILE
from mmedge.data.batches import generate
from mmedge.data.preprocess import resized_rgb
from mmedge.errors import TextError
from mmedge.fileio import atomic_write
from mmedge.runtime.controller import Policy, decide_offline, policy_from_thresholds
from mmedge.runtime.engine import Engine

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BUNDLE = "models/vqa-default/bundles/vqa-default-onnx.mmedge"
TOLERANCE = {"logits_abs": 1e-4, "confidence_abs": 1e-4}
POLICIES = [Policy("full"), Policy("confidence", threshold=0.5), Policy("confidence", threshold=0.9),
            Policy("confidence", threshold=0.99), Policy("max_probability", threshold=0.9),
            Policy("patience", patience=2), Policy("patience", patience=3)]
TEXTS = [
    "what color is the circle ?", "Is there a RED circle??", "is the red circle left of the blue square ?",
    "café", "cafe\u0301", "naïve question", "½ red Ⅷ", "what\u00a0color\u2003is it", "red\u0085circle",
    "red\ufeffcircle", "red\u180ecircle", "ΣΑΣ circle", "İstanbul circle", "under_score", "tab\tsep\nline",
    "🔴 circle ?", "红色 circle", "2 cyan objects .", "Ｆｕｌｌ width", "--- !!! ???", "a" * 300,
    " ".join(["is there a red circle ?"] * 6), "", "   \t\n", "\u3000\u2028",
]


def _sha(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _images(image_size: int, task: str) -> list[tuple[str, Image.Image, str]]:
    """(name, image, text): scenes as they are, and the preprocessing's corner cases."""
    samples = generate(task, 0, "test", range(40), image_size)
    by_type: dict[str, object] = {}
    for s in samples:
        by_type.setdefault(s.qtype, s)
    out = [(f"scene-{qtype}", Image.fromarray(s.image), s.text) for qtype, s in sorted(by_type.items())]
    base = samples[0]
    img = Image.fromarray(base.image)
    out.append(("upscaled-300", img.resize((300, 300), Image.Resampling.BICUBIC), base.text))
    out.append(("downscaled-64", img.resize((64, 64), Image.Resampling.BICUBIC), base.text))
    tall = Image.new("RGB", (image_size, image_size + 45), (30, 60, 90))
    tall.paste(img, (0, 20))
    out.append(("portrait-odd-pad", tall, base.text))
    rng = np.random.default_rng(7)
    wide = Image.fromarray(rng.integers(0, 256, (257, 413, 3), dtype=np.uint8))
    wide.paste(img.resize((200, 200)), (100, 30))
    out.append(("noise-413x257", wide, samples[1].text))
    rgba = img.convert("RGBA")
    alpha = np.tile(np.linspace(0, 255, image_size, dtype=np.uint8), (image_size, 1))
    rgba.putalpha(Image.fromarray(alpha))
    out.append(("rgba-alpha-ramp", rgba, base.text))
    out.append(("shouting-unknown-words", img, "IS THERE A RED CIRCLE OR A PURPLE HEXAGON??"))
    return out


def _tokenizer_cases(engine: Engine) -> list[dict]:
    cases = []
    for text in TEXTS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ids, mask = engine.tokenizer.encode(text)
            except TextError:
                cases.append({"text": text, "error": "TextError"})
                continue
        cases.append({"text": text, "tokens": engine.tokenizer.tokenize(text),
                      "input_ids": ids.astype(int).tolist(), "text_mask": mask.astype(int).tolist()})
    return cases


def _in_graph(bundle: Path, manifest: dict, ratio: float, feeds: dict, threshold: float) -> tuple[int, int]:
    import onnxruntime as ort

    entry = manifest["in_graph"]["by_keep_ratio"][str(ratio)]
    session = ort.InferenceSession(str(bundle / entry["file"]), providers=["CPUExecutionProvider"])
    logits, _, exit_index, _ = session.run(None, {**feeds, "threshold": np.array([threshold], np.float32)})
    return int(exit_index[0]), int(np.argmax(logits))


def make(bundle: Path, out: Path) -> dict:
    engine = Engine.load(bundle, backend="onnxruntime", fmt="onnx")
    manifest = engine.manifest
    default = policy_from_thresholds(manifest["thresholds"])
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    queries = []
    for name, image, text in _images(engine.image_size, manifest["task"]):
        path = images_dir / f"{name}.png"
        atomic_write(path, lambda tmp, im=image: im.save(tmp, format="PNG"))
        decoded = Image.open(path)  # what an app decodes from the file
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            feeds = engine.preprocess(decoded, text)
        query = {"name": name, "image": f"images/{name}.png", "mode": decoded.mode,
                 "width": decoded.width, "height": decoded.height, "text": text,
                 "input_ids": feeds["input_ids"].reshape(-1).tolist(),
                 "text_mask": feeds["text_mask"].reshape(-1).tolist(),
                 "resized_rgb_sha256": _sha(resized_rgb(decoded, engine.image_size)),
                 "pixel_values_sha256": _sha(feeds["pixel_values"].astype("<f4")),
                 "by_keep_ratio": {}}
        for group in manifest["keep_ratios"]:
            ratio = group["keep_ratio"]
            exits = engine.all_exits(feeds, ratio)
            expected = []
            for policy in POLICIES + [default]:
                i = decide_offline(policy, exits.answers, exits.confidences, exits.max_probabilities)
                expected.append({"policy": policy.to_dict(), "exit_index": i,
                                 "answer": engine.labels[exits.answers[i]]})
            entry = {"kept_index": exits.kept_visual_tokens,
                     "logits": [np.asarray(lg, np.float32).astype(float).tolist() for lg in exits.logits],
                     "confidence": [float(c) for c in exits.confidences],
                     "answers": [engine.labels[a] for a in exits.answers], "policies": expected}
            if "in_graph" in manifest and str(ratio) in manifest["in_graph"]["by_keep_ratio"]:
                entry["in_graph"] = []
                for threshold in (0.5, 0.9, 0.99):
                    got = _in_graph(bundle, manifest, ratio, feeds, threshold)
                    want = decide_offline(Policy("confidence", threshold=threshold), exits.answers,
                                          exits.confidences, exits.max_probabilities)
                    if got != (want, exits.answers[want]):
                        raise SystemExit(f"{name}: in-graph exit/answer {got} differs from the staged chain's "
                                         f"{(want, exits.answers[want])} at threshold {threshold}")
                    entry["in_graph"].append({"threshold": threshold, "exit_index": want,
                                              "answer": engine.labels[exits.answers[want]]})
            query["by_keep_ratio"][str(ratio)] = entry
        predicted = engine.predict(decoded, text)  # the Engine's own default path agrees
        default_row = query["by_keep_ratio"][str(engine.keep_ratio)]["policies"][-1]
        if (predicted.exit_index, predicted.answer) != (default_row["exit_index"], default_row["answer"]):
            raise SystemExit(f"{name}: Engine.predict disagrees with the offline controller")
        query["default"] = {"keep_ratio": engine.keep_ratio, "policy": default.to_dict(),
                            "exit_index": predicted.exit_index, "answer": predicted.answer}
        queries.append(query)
    manifest_sha = hashlib.sha256((bundle / MANIFEST_FILE).read_bytes()).hexdigest()
    doc = {"format": "mmedge-golden-1", "bundle": bundle.resolve().relative_to(ROOT).as_posix(),
           "manifest_sha256": manifest_sha, "backend": "onnxruntime (Python Engine, CPU)",
           "tolerance": TOLERANCE, "queries": queries}
    atomic_write(out / "queries.json", lambda tmp: tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False)))
    tokens = {"format": "mmedge-golden-tokenizer-1", "tokenizer": doc["bundle"] + "/tokenizer.json",
              "max_length": engine.tokenizer.max_length, "cases": _tokenizer_cases(engine)}
    atomic_write(out / "tokenizer.json",
                 lambda tmp: tmp.write_text(json.dumps(tokens, indent=1, ensure_ascii=False)))
    return doc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default=DEFAULT_BUNDLE)
    parser.add_argument("--out", default="tests/vectors/golden")
    args = parser.parse_args()
    doc = make(ROOT / args.bundle, ROOT / args.out)
    print(f"wrote {args.out}: {len(doc['queries'])} queries from {doc['bundle']}")
    from make_android_vectors import make as make_android  # scripts/ is on sys.path when run as a script

    android = make_android(ROOT / args.out)
    print(f"wrote {args.out}/android.json: {len(android['images'])} images, {len(android['answers'])} answers")


if __name__ == "__main__":
    main()

"""Golden vectors for captioning bundles: `python scripts/make_caption_vectors.py` writes
tests/vectors/caption/ (docs/bundle-format.md, "Golden vectors", caption/).

The bundle is the shipped captioner (models/caption-default) exported to ONNX fp32 only
(`export_caption_bundle(..., targets=("onnx",), int8=False, release_sequence=1)`). It is committed
under tests/vectors/caption/caption-default.mmedge/ without its shared weights file
(onnx/fp32/weights.bin, 7 MB), which `weights.json` rebuilds, byte for byte, from the committed
models/caption-default/model.safetensors: each stretch of the file is a model tensor (as stored, or
transposed) or a few inline bytes (constants the exporter folded); everything between is zero. The
manifest's SHA-256 of weights.bin checks the result, so a rebuilt bundle is exactly the exported one.
An existing committed bundle is reused (its weights rebuilt and checked) unless `--export` is given.

Images: scenes of the generated test split (stored as small PNGs under images/, the caption
beside each) and two images generated from a seed by xorshift32 (`generator`, as in
tests/vectors/adapted/): a wide RGB and a tall RGBA one, which exercise padding and compositing and
give the decoder unfamiliar input (low confidences, captions that run to max_len).

For each image and keep ratio: the SHA-256 of the encoder's cross_k / cross_v (float32 bytes, as
the reference computed them) with a strided sample of their values, and the caption of every
policy x kv mode x search (greedy, beam 3), plus two shorter max_len runs: per generated id its
word, exit and learned confidence, the hypothesis' log-probability score and the text.

After writing new vectors, record the graph calls again for the runtimes that replay them (the
Android core's JVM tests): `python scripts/make_caption_replay.py` (replay.json is tied to
vectors.json by its SHA-256; tests/test_caption_vectors.py checks it).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from mmedge.bench.machine import kernel_isa

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models/caption-default"
OUT = ROOT / "tests/vectors/caption"
BUNDLE_NAME = "caption-default.mmedge"
WEIGHTS_FILE = "onnx/fp32/weights.bin"
SAFETENSORS = "models/caption-default/model.safetensors"
FORMAT = "mmedge-caption-vectors-1"
RECIPE_FORMAT = "mmedge-caption-weights-1"
SAMPLE_STRIDE = 257
TOLERANCE = {"confidence_abs": 1e-5, "logprob_abs": 1e-4, "cross_abs": 1e-5}

GENERATOR = ("xorshift32: state = seed (a non-zero uint32); per byte, in row-major order with channels "
             "interleaved: state ^= state << 13; state ^= state >>> 17; state ^= state << 5 (all mod 2^32); "
             "byte = state >>> 24")

# (name, scene index in the test split of seed 0, render size) or (name, (width, height, channels, seed))
SCENES = [("scene-0", 0, 96), ("scene-1", 1, 96), ("scene-2", 2, 96), ("scene-3-150px", 3, 150)]
GENERATED = [("noise-wide-rgb", (120, 72, 3, 21)), ("noise-tall-rgba", (50, 90, 4, 22))]

POLICIES = [
    {"kind": "full", "threshold": 0.9, "patience": 2, "budget_ms": 0.0},
    {"kind": "confidence", "threshold": 0.999, "patience": 2, "budget_ms": 0.0},
    {"kind": "max_probability", "threshold": 0.999, "patience": 2, "budget_ms": 0.0},
    {"kind": "patience", "threshold": 0.9, "patience": 2, "budget_ms": 0.0},
    # no stage times reach the caption decoder's controller: this is the confidence rule at 0.995
    {"kind": "latency_budget", "threshold": 0.995, "patience": 2, "budget_ms": 1.0},
]
KV = ("copy", "recompute")
BEAMS = (1, 3)
SHORT = [{"policy": 1, "kv": "copy", "beam": 1, "max_len": 5}, {"policy": 0, "kv": "recompute", "beam": 3, "max_len": 5}]


# ---------------------------------------------------------------------------------------------- images
def generated(width: int, height: int, channels: int, seed: int) -> np.ndarray:
    """The generator's image: uint8 (height, width, channels) (GENERATOR: the adapted vectors' xorshift32
    noise, scripts/make_adapted_vectors.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from make_adapted_vectors import generated as xorshift_image

    return xorshift_image(width, height, channels, "noise", seed)


def image_of(entry: dict, vectors: Path = OUT):
    """A vector's image as the engine takes it (a Pillow image or a uint8 array)."""
    if "file" in entry:
        from PIL import Image

        with Image.open(vectors / entry["file"]) as im:
            im.load()
            return im.copy()
    return generated(entry["width"], entry["height"], entry["channels"], entry["seed"])


def _sha(data) -> str:
    return hashlib.sha256(np.ascontiguousarray(data).tobytes() if isinstance(data, np.ndarray) else data).hexdigest()


# ---------------------------------------------------------------------------------------------- weights
def _external(bundle: Path) -> dict[tuple[int, int], str]:
    import onnx

    segments = {}
    for f in sorted((bundle / "onnx" / "fp32").glob("*.onnx")):
        for init in onnx.load(str(f), load_external_data=False).graph.initializer:
            if init.data_location == onnx.TensorProto.EXTERNAL:
                d = {e.key: e.value for e in init.external_data}
                segments[(int(d["offset"]), int(d["length"]))] = init.name
    return segments


def weights_recipe(bundle: Path, safetensors: Path) -> dict:
    """How to rebuild the bundle's weights.bin from the model's safetensors (see the module doc)."""
    from safetensors.numpy import load_file

    tensors = load_file(str(safetensors))
    raw = (bundle / WEIGHTS_FILE).read_bytes()
    by_size: dict[int, list[str]] = {}
    for name, t in tensors.items():
        by_size.setdefault(t.nbytes, []).append(name)
    segments, end = [], 0
    for (offset, length), init in sorted(_external(bundle).items()):
        if offset < end:
            raise SystemExit(f"overlapping external data at {offset}")
        chunk = raw[offset: offset + length]
        entry = None
        for name in by_size.get(length, []):
            t = tensors[name]
            if t.dtype != np.float32:
                continue
            if t.tobytes() == chunk:
                entry = {"offset": offset, "length": length, "tensor": name, "transpose": False}
            elif t.ndim == 2 and np.ascontiguousarray(t.T).tobytes() == chunk:
                entry = {"offset": offset, "length": length, "tensor": name, "transpose": True}
            if entry:
                break
        if entry is None:
            if length > 4096:
                raise SystemExit(f"weights.bin segment {init} ({length} bytes) is no model tensor")
            entry = {"offset": offset, "length": length, "base64": base64.b64encode(chunk).decode()}
        segments.append(entry)
        end = offset + length
    recipe = {"format": RECIPE_FORMAT, "file": WEIGHTS_FILE, "bytes": len(raw), "sha256": _sha(raw),
              "safetensors": SAFETENSORS, "safetensors_sha256": _sha(safetensors.read_bytes()),
              "rule": "a zero-filled buffer of `bytes`; each segment at `offset`: the safetensors tensor's "
                      "float32 little-endian bytes (row-major; transposed first when `transpose`: a 2-D "
                      "(r, c) tensor written as its (c, r) transpose) or the `base64` bytes",
              "segments": segments}
    if rebuild_weights(recipe, safetensors) != raw:
        raise SystemExit("weights.bin cannot be rebuilt from the safetensors; not committing a partial bundle")
    return recipe


def rebuild_weights(recipe: dict, safetensors: Path) -> bytes:
    from safetensors.numpy import load_file

    tensors = load_file(str(safetensors))
    out = bytearray(recipe["bytes"])
    for s in recipe["segments"]:
        if "base64" in s:
            chunk = base64.b64decode(s["base64"])
        else:
            t = tensors[s["tensor"]].astype("<f4")
            chunk = np.ascontiguousarray(t.T if s["transpose"] else t).tobytes()
        if len(chunk) != s["length"]:
            raise ValueError(f"segment at {s['offset']}: {len(chunk)} bytes, the recipe says {s['length']}")
        out[s["offset"]: s["offset"] + s["length"]] = chunk
    return bytes(out)


def assemble_bundle(dest: Path, vectors: Path = OUT) -> Path:
    """The committed bundle with its weights rebuilt, at dest/caption-default.mmedge (checked by hash)."""
    recipe = json.loads((vectors / "weights.json").read_text())
    bundle = dest / BUNDLE_NAME
    shutil.copytree(vectors / BUNDLE_NAME, bundle)
    data = rebuild_weights(recipe, ROOT / recipe["safetensors"])
    if _sha(data) != recipe["sha256"]:
        raise ValueError("the rebuilt weights.bin differs from the exported one: models/caption-default changed? "
                         "run python scripts/make_caption_vectors.py --export")
    (bundle / recipe["file"]).write_bytes(data)
    return bundle


def export_bundle(dest: Path) -> Path:
    from mmedge.caption.export import export_caption_bundle

    return export_caption_bundle(MODEL, dest / BUNDLE_NAME, targets=("onnx",), int8=False, parity_images=8,
                                 release_sequence=1, force=True, log=lambda m: print(m, file=sys.stderr))


# ---------------------------------------------------------------------------------------------- vectors
class Recorder:
    """A session that records every step graph's confidence and top probability (decision margins)."""

    def __init__(self, session) -> None:
        self.session, self.confidences, self.max_probabilities = session, [], []

    def run(self, name, feeds):
        from mmedge.runtime.controller import softmax_max

        out = self.session.run(name, feeds)
        if name.startswith("step"):
            self.confidences.append(float(out["confidence"][0]))
            self.max_probabilities.append(softmax_max(out["logits"][0]))
        return out


def _policy(p: dict):
    from mmedge.runtime.controller import Policy

    return Policy(p["kind"], threshold=p["threshold"], patience=p["patience"], budget_ms=p["budget_ms"])


def caption_vectors(engine, images: list[dict], vectors: Path) -> tuple[list[dict], dict]:
    from mmedge.caption.runtime import CaptionDecoder
    from mmedge.data.preprocess import resized_rgb

    words = {i: w for w, i in engine.tokenizer.vocab.items()}
    margins = {"confidence": 1.0, "max_probability": 1.0}
    for entry in images:
        image = image_of(entry, vectors)
        pixels = engine.preprocess(image)
        entry["resized_rgb_sha256"] = _sha(resized_rgb(image, engine.image_size))
        entry["pixel_values_sha256"] = _sha(pixels.astype("<f4"))
        entry["by_keep_ratio"] = {}
        for ratio in engine.manifest["keep_ratios"]:
            tag = f"k{ratio:g}"
            enc = engine.session.run(f"encoder_{tag}", {"pixel_values": pixels})
            encoder = {}
            for name in ("cross_k", "cross_v"):
                a = enc[name].astype("<f4")
                flat = a.reshape(-1)
                encoder[name] = {"shape": list(a.shape), "sha256": _sha(a),
                                 "sample": [float(x) for x in flat[::SAMPLE_STRIDE]],
                                 "abs_sum": float(np.abs(flat.astype(np.float64)).sum())}
            runs = []
            plan = [{"policy": i, "kv": kv, "beam": beam, "max_len": None}
                    for i in range(len(POLICIES)) for kv in KV for beam in BEAMS] + SHORT
            for item in plan:
                policy = POLICIES[item["policy"]]
                recorder = Recorder(engine.session)
                decoder = CaptionDecoder(recorder, engine.layout, tag)
                run = decoder.caption(pixels, _policy(policy), item["max_len"], item["beam"], item["kv"])
                from mmedge.caption.data import decode_caption

                text = decode_caption(engine.tokenizer, run.tokens)
                kind = policy["kind"]
                signal = {"confidence": recorder.confidences, "latency_budget": recorder.confidences,
                          "max_probability": recorder.max_probabilities}.get(kind)
                if signal:
                    key = "max_probability" if kind == "max_probability" else "confidence"
                    margins[key] = min(margins[key], min(abs(x - policy["threshold"]) for x in signal))
                runs.append({"policy": policy, "kv": item["kv"], "beam": item["beam"],
                             "max_len": item["max_len"] if item["max_len"] is not None else engine.layout.max_len,
                             "tokens": run.tokens, "words": [words[t] for t in run.tokens], "exits": run.exits,
                             "confidences": run.confidences, "logprob": run.logprob, "text": text})
            entry["by_keep_ratio"][f"{ratio:g}"] = {"encoder": encoder, "runs": runs}
    return images, margins


def make(out: Path, export: bool) -> dict:
    from PIL import Image

    from mmedge.caption.data import scene_captions
    from mmedge.runtime.caption_engine import CaptionEngine

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mmedge-caption-vectors-") as tmp:
        tmp = Path(tmp)
        committed = out / BUNDLE_NAME
        if export or not committed.exists():
            bundle = export_bundle(tmp / "export")
            recipe = weights_recipe(bundle, ROOT / SAFETENSORS)
            shutil.rmtree(committed, ignore_errors=True)
            shutil.copytree(bundle, committed, ignore=lambda d, names: [n for n in names if n == "weights.bin"])
            (out / "weights.json").write_text(json.dumps(recipe, indent=1) + "\n")
        bundle = assemble_bundle(tmp / "assembled", out)
        engine = CaptionEngine.load(bundle, backend="onnxruntime")
        (out / "images").mkdir(exist_ok=True)
        images = []
        for name, index, size in SCENES:
            (scene,), (caption,) = scene_captions(0, "test", [index], size)
            Image.fromarray(np.asarray(scene, np.uint8)).save(out / "images" / f"{name}.png", optimize=True)
            with Image.open(out / "images" / f"{name}.png") as im:
                mode, (w, h) = im.mode, im.size
            images.append({"name": name, "file": f"images/{name}.png", "mode": mode, "width": w, "height": h,
                           "reference": caption})
        for name, (w, h, c, seed) in GENERATED:
            images.append({"name": name, "width": w, "height": h, "channels": c, "seed": seed})
        images, margins = caption_vectors(engine, images, out)
        doc = {"format": FORMAT,
               "bundle": str(committed.relative_to(ROOT)),
               "weights": str((out / "weights.json").relative_to(ROOT)),
               "manifest_sha256": _sha((committed / "manifest.json").read_bytes()),
               "backend": f"onnxruntime {__import__('onnxruntime').__version__} (Python, CPU)",
               "kernels": kernel_isa(),
               "tolerance": TOLERANCE, "generator": GENERATOR, "sample_stride": SAMPLE_STRIDE,
               "closest_decision": {k: float(f"{v:.3g}") for k, v in margins.items()},
               "images": images}
        (out / "vectors.json").write_text(json.dumps(doc, indent=1) + "\n")
    return doc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--export", action="store_true", help="export the bundle again even when one is committed")
    args = ap.parse_args()
    doc = make(args.out, args.export)
    runs = sum(len(r["runs"]) for im in doc["images"] for r in im["by_keep_ratio"].values())
    words = sum(len(x["tokens"]) for im in doc["images"] for r in im["by_keep_ratio"].values() for x in r["runs"])
    print(f"wrote {args.out}: {len(doc['images'])} images, {runs} captions, {words} generated ids; closest "
          f"decision to a threshold {doc['closest_decision']}")


if __name__ == "__main__":
    main()

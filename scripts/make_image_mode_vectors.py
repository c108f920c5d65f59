"""Write tests/vectors/golden/image-modes.json and the tiny images in tests/vectors/golden/images/modes/:
one 12x9 picture in each pixel format an app may decode (grey, grey+alpha, palette with and without
transparency, 16-bit, 1-bit, EXIF orientations 1..8, CMYK), with what docs/bundle-format.md
("Image") makes of it: the SHA-256 of the 8-bit RGB after orientation, conversion and compositing,
and of the image padded and resized to the shipped bundle's image_size, or "refused".

    python scripts/make_image_mode_vectors.py

The PNGs are written by a minimal encoder here (so their bytes do not depend on Pillow's); the
expected values come from mmedge.data.preprocess, the Python runtime's decoder.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import sys
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BUNDLE = "models/vqa-default/bundles/vqa-default-onnx.mmedge"
OUT = ROOT / "tests/vectors/golden"
MODES = "images/modes"
W, H = 12, 9


# ------------------------------------------------------------------------------------------ PNG
def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png(pixels: np.ndarray, colour_type: int, depth: int, plte: bytes = b"", trns: bytes = b"",
        exif: bytes = b"") -> bytes:
    """PNG bytes: pixels (H, W[, C]) of uint8 / >u2 samples (or palette indices), filter 0 per row."""
    h, w = pixels.shape[:2]
    if depth == 1:
        rows = [np.packbits(pixels[y].astype(np.uint8)).tobytes() for y in range(h)]
    else:
        rows = [np.ascontiguousarray(pixels[y]).astype(">u2" if depth == 16 else np.uint8).tobytes()
                for y in range(h)]
    out = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, colour_type, 0, 0, 0))
    if exif:
        out += _chunk(b"eXIf", exif)
    if plte:
        out += _chunk(b"PLTE", plte)
    if trns:
        out += _chunk(b"tRNS", trns)
    return out + _chunk(b"IDAT", zlib.compress(b"".join(b"\x00" + r for r in rows), 9)) + _chunk(b"IEND", b"")


def exif_orientation(value: int) -> bytes:
    """A big-endian TIFF header with one IFD entry: Orientation (274), SHORT, `value`."""
    return (b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", 1)
            + struct.pack(">HHIHH", 0x0112, 3, 1, value, 0) + struct.pack(">I", 0))


# ------------------------------------------------------------------------------------------ pictures
def picture() -> np.ndarray:
    """(H, W, 3) uint8, asymmetric so that every orientation gives another image."""
    y, x = np.mgrid[0:H, 0:W]
    rgb = np.stack([x * 21, y * 28, (x * 7 + y * 19) % 256], axis=-1)
    rgb[0, 0] = (255, 0, 0)  # a marker in one corner
    return rgb.astype(np.uint8)


def alpha() -> np.ndarray:
    """(H, W) uint8: 0, 255 and values between."""
    y, x = np.mgrid[0:H, 0:W]
    a = (x * 23 + y * 5) % 256
    a[:, 0] = 0
    a[:, -1] = 255
    return a.astype(np.uint8)


def images() -> list[tuple[str, str, bytes]]:
    """(file name, what it is, bytes)."""
    rgb, a = picture(), alpha()
    grey = (rgb.astype(np.uint16) @ np.array([3, 5, 2], np.uint16) // 10).astype(np.uint8)
    wide = lambda v: v.astype(np.uint16) * 257 + (np.arange(v.size, dtype=np.uint16).reshape(v.shape) % 251)
    out = [
        ("rgb.png", "8-bit RGB (colour type 2): as it is", png(rgb, 2, 8)),
        ("rgba.png", "8-bit RGBA (6): composited over pad_color", png(np.dstack([rgb, a]), 6, 8)),
        ("grey.png", "8-bit grey (0): grey replicated to R, G, B", png(grey, 0, 8)),
        ("grey-alpha.png", "8-bit grey+alpha (4): RGBA, composited", png(np.dstack([grey, a]), 4, 8)),
        ("bilevel.png", "1-bit grey (0, depth 1): 0 and 255", png(grey > 100, 0, 1)),
    ]
    palette = np.array([[0, 0, 0], [255, 0, 0], [0, 200, 80], [30, 60, 250], [250, 250, 250], [128, 64, 32]],
                       np.uint8)
    y, x = np.mgrid[0:H, 0:W]
    index = ((x + 2 * y) % len(palette)).astype(np.uint8)
    index[0, 0] = 1
    out.append(("palette.png", "8-bit palette (3) without tRNS: RGB", png(index, 3, 8, plte=palette.tobytes())))
    out.append(("palette-trns.png", "8-bit palette with tRNS alphas 0, 255, 128, 10 for entries 0..3 (entries "
                "after them opaque): RGBA, composited",
                png(index, 3, 8, plte=palette.tobytes(), trns=bytes([0, 255, 128, 10]))))
    out.append(("rgb16.png", "16-bit RGB: the high byte of each sample", png(wide(rgb), 2, 16)))
    out.append(("rgba16.png", "16-bit RGBA: high bytes, then composited", png(wide(np.dstack([rgb, a])), 6, 16)))
    out.append(("grey16.png", "16-bit grey: the high byte", png(wide(grey), 0, 16)))
    out.append(("grey-alpha16.png", "16-bit grey+alpha: high bytes, then composited",
                png(wide(np.dstack([grey, a])), 4, 16)))
    for value in range(1, 9):
        out.append((f"exif-orientation-{value}.png", f"8-bit RGB with an eXIf chunk, Orientation {value}: shown "
                    "as a viewer shows it" + (" (as stored)" if value == 1 else ""),
                    png(rgb, 2, 8, exif=exif_orientation(value))))
    out.append(("exif-orientation-6-rgba.png", "8-bit RGBA, Orientation 6: rotated, then composited",
                png(np.dstack([rgb, a]), 6, 8, exif=exif_orientation(6))))
    out.append(("cmyk.jpg", "a CMYK JPEG: refused (its colours depend on a colour profile)", cmyk_jpeg(rgb)))
    return out


def cmyk_jpeg(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------ vectors
def _sha(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def expected(path: Path, image_size: int) -> dict:
    from mmedge.data.preprocess import load_image, resized_rgb
    from mmedge.errors import ImageError

    try:
        rgb = np.asarray(load_image(path), np.uint8)
    except ImageError as exc:
        return {"refused": True, "error": "ImageError", "message": str(exc)[:200]}
    return {"refused": False, "width": rgb.shape[1], "height": rgb.shape[0], "rgb_sha256": _sha(rgb),
            "resized_rgb_sha256": _sha(resized_rgb(path, image_size))}


def make() -> dict:
    from mmedge.fileio import atomic_write

    manifest = json.loads((ROOT / BUNDLE / "manifest.json").read_text())
    size = manifest["preprocessing"]["image_size"]
    folder = OUT / MODES
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for name, what, data in images():
        atomic_write(folder / name, lambda p, data=data: p.write_bytes(data))
        entries.append({"file": f"{MODES}/{name}", "what": what, "stored_width": W, "stored_height": H,
                        **expected(folder / name, size)})
    doc = {"format": "mmedge-image-modes-1", "bundle": BUNDLE, "image_size": size,
           "pad_color": manifest["preprocessing"]["pad_color"], "generator": "scripts/make_image_mode_vectors.py",
           "images": entries}
    atomic_write(OUT / "image-modes.json", lambda p: p.write_text(json.dumps(doc, indent=1) + "\n"))
    return doc


if __name__ == "__main__":
    doc = make()
    print(f"wrote tests/vectors/golden/image-modes.json: {len(doc['images'])} images "
          f"({sum(e['refused'] for e in doc['images'])} refused)")

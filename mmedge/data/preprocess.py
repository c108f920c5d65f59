"""Image preprocessing with numpy and Pillow only: one implementation for training and runtime.

Conversions (docs/bundle-format.md, "Image"), in order, for an image file or a Pillow image:
- the EXIF orientation (tag 274, values 2..8) is applied first: the image as a viewer shows it;
- grey becomes RGB; grey+alpha, and a palette with transparency (tRNS), become RGBA; 16-bit
  channels keep their high byte (v >> 8); CMYK is refused (its colours depend on a profile);
- transparency is composited over the scene background grey;
- arrays and Pillow's in-memory modes: uint16 arrays keep their high byte; 32-bit integer ("I")
  images over 255 are read as 16-bit; float arrays are read as 0..1 (values
  outside [-FLOAT_TOLERANCE, 1 + FLOAT_TOLERANCE] are refused: a 0..255 float image would otherwise
  turn white), Pillow float ("F") images as 0..255 (or 0..1 when no value exceeds 1), clipped;
- a Pillow image that cannot be decoded (a truncated file opened lazily) or was closed is refused
  with an ImageError, like an unreadable file;
- a non-square image is padded to a square with the background grey (centred), then resized
  with bilinear filtering to the model's image size;
- images under 8 px or over 16384 px on a side are refused with an ImageError.
Output: float32 (3, S, S), each channel scaled as (x / 255 - 0.5) / 0.5.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mmedge.data.scenes import BACKGROUND
from mmedge.errors import ImageError

MIN_SIDE, MAX_SIDE = 8, 16384
MEAN, STD = 0.5, 0.5
# Float arrays may overshoot [0, 1] by rounding; 1e-3 is under half an 8-bit level (1/510), so clipping
# within it changes no pixel value. Anything further out is a different convention (e.g. 0..255).
FLOAT_TOLERANCE = 1e-3
ORIENTATION = 0x0112  # EXIF tag 274: 1 as stored, 2..8 mirrored and/or rotated
REFUSED_MODES = {"CMYK": "CMYK"}  # Pillow mode -> the name in the error

ImageLike = Image.Image | np.ndarray | str | Path


def _from_array(arr: np.ndarray) -> Image.Image:
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ImageError(f"image array has shape {arr.shape}; expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)")
    if arr.dtype == np.uint8:
        pass
    elif arr.dtype == np.uint16:
        arr = (arr >> 8).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ImageError("image array contains NaN or infinite values")
        low, high = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
        if low < -FLOAT_TOLERANCE or high > 1.0 + FLOAT_TOLERANCE:
            raise ImageError(f"float image values span {low:g}..{high:g}; float images must be in 0..1; "
                             f"divide by 255 or pass uint8")
        arr = (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    else:
        raise ImageError(f"image array dtype {arr.dtype} is not supported; use uint8, uint16 or float in 0..1")
    mode = {2: "L", 3: "RGB", 4: "RGBA"}[arr.ndim if arr.ndim == 2 else arr.shape[2]]
    return Image.fromarray(np.ascontiguousarray(arr), mode)


def _oriented(img: Image.Image) -> Image.Image:
    """The image as a viewer shows it: its EXIF orientation (2..8) applied, the tag then dropped."""
    orientation = img.getexif().get(ORIENTATION)
    if orientation in (2, 3, 4, 5, 6, 7, 8):
        return ImageOps.exif_transpose(img)
    return img


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in REFUSED_MODES:
        raise ImageError(f"{REFUSED_MODES[img.mode]} images are not accepted: their colours depend on a colour "
                         "profile; convert it to RGB first (e.g. with the profile, in an image editor)")
    img = _oriented(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):  # 16-bit grey: the high byte
        img = Image.fromarray((np.asarray(img, dtype=np.uint32) >> 8).astype(np.uint8), "L")
    elif img.mode == "I":  # 32-bit integers: 8-bit values as they are, else read as 16-bit
        arr = np.asarray(img, dtype=np.int64)
        arr = arr if arr.size == 0 or arr.max() <= 255 else np.clip(arr, 0, 65535) >> 8
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L")
    elif img.mode == "F":  # Pillow's float images hold 0..255 (clipped); arrays of 0..1 are also accepted
        arr = np.asarray(img, dtype=np.float32)
        if np.isfinite(arr).all():  # NaN / inf are refused by _from_array
            arr = np.clip(arr / 255.0 if arr.max() > 1.0 else arr, 0.0, 1.0)
        img = _from_array(arr)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return img.convert("RGB")


def load_image(image: ImageLike) -> Image.Image:
    """Open and convert any supported input to an RGB Pillow image, or raise ImageError."""
    if isinstance(image, (str, Path)):
        try:
            with Image.open(image) as opened:
                opened.load()
                img = opened.copy()
        except FileNotFoundError as exc:
            raise ImageError(f"image file not found: {image}") from exc
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError, EOFError,
                ValueError) as exc:
            raise ImageError(f"cannot read image {image}: {exc}") from exc
    elif isinstance(image, np.ndarray):
        img = _from_array(image)
    elif isinstance(image, Image.Image):
        img = image  # a lazily opened image is decoded by _to_rgb below, after the size checks
    else:
        raise ImageError(f"unsupported image type {type(image).__name__}; pass a PIL image, a numpy array or a path")
    w, h = img.size
    if min(w, h) < MIN_SIDE:
        raise ImageError(f"image is {w}x{h}; at least {MIN_SIDE} px per side is needed")
    if max(w, h) > MAX_SIDE:
        raise ImageError(f"image is {w}x{h}; downscale it below {MAX_SIDE} px per side first")
    try:
        return _to_rgb(img)
    except ImageError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, KeyError, struct.error) as exc:  # struct: corrupt EXIF
        raise ImageError(_broken(exc)) from exc


def _broken(exc: Exception) -> str:
    return (f"cannot decode or convert this image ({exc}): it may be truncated, closed, or in a mode Pillow "
            f"cannot convert to RGB; pass a complete image file (or its path), an RGB/RGBA image, and keep a "
            f"Pillow image open until the prediction returns")


def resized_rgb(image: ImageLike, image_size: int) -> np.ndarray:
    """An input image padded to a centred square and resized: uint8 (S, S, 3), before normalisation
    (docs/bundle-format.md pins each step bit for bit)."""
    return square_resized(load_image(image), image_size)


def square_resized(img: Image.Image, image_size: int) -> np.ndarray:
    """An RGB image (load_image's) padded to a centred square and resized: uint8 (S, S, 3)."""
    w, h = img.size
    if w != h:
        side = max(w, h)
        canvas = Image.new("RGB", (side, side), BACKGROUND)
        canvas.paste(img, ((side - w) // 2, (side - h) // 2))
        img = canvas
    if img.size != (image_size, image_size):
        img = img.resize((image_size, image_size), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def preprocess_image(image: ImageLike, image_size: int) -> np.ndarray:
    """An input image as the model's float32 (3, S, S) array."""
    arr = resized_rgb(image, image_size).astype(np.float32) / 255.0  # (S, S, 3)
    return ((arr - MEAN) / STD).transpose(2, 0, 1).copy()  # (3, S, S)


RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS,
            "bilinear": Image.Resampling.BILINEAR}


def preprocess_stretched(image: ImageLike, image_size: int, scale: float, mean, std,
                         resample: str = "bicubic") -> np.ndarray:
    """An adapted model's preparation (docs/bundle-format.md, Adapted encoders and Generative VLM
    bundles; the Hugging Face processor at a fixed square size): the image (load_image's conversions)
    stretched to S x S with Pillow's `resample` filter (bicubic: ViLT; lanczos: SmolVLM; not resized
    when already S x S; no padding), x scale in float64 then float32, then (x - mean) / std per
    channel in float32 -> float32 (3, S, S)."""
    img = load_image(image)
    if img.size != (image_size, image_size):
        img = img.resize((image_size, image_size), RESAMPLE[resample])
    arr = (np.asarray(img).astype(np.float64) * scale).astype(np.float32)  # (S, S, 3)
    arr = (arr - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))  # (3, S, S)


def preprocess_batch(images: list[ImageLike], image_size: int) -> np.ndarray:
    return np.stack([preprocess_image(im, image_size) for im in images])  # (B, 3, S, S)

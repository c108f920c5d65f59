import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmedge.data.preprocess import load_image, preprocess_image, resized_rgb
from mmedge.data.scenes import BACKGROUND
from mmedge.data.tasks import make_sample
from mmedge.errors import ImageError


def test_scene_images_are_only_normalised():
    img = make_sample("vqa", 0, "test", 0).image
    out = preprocess_image(img, 96)
    assert out.shape == (3, 96, 96) and out.dtype == np.float32
    assert np.allclose(out, (img.transpose(2, 0, 1) / 255.0 - 0.5) / 0.5, atol=1e-6)


@pytest.mark.parametrize("mode", ["RGBA", "L", "LA", "P", "I;16", "I", "F", "1", "YCbCr"])
def test_every_pillow_mode_is_converted(mode):
    base = Image.fromarray(make_sample("vqa", 0, "test", 1).image)
    img = base.convert("L").convert(mode) if mode in ("I;16", "I", "F") else base.convert(mode)
    out = preprocess_image(img, 96)
    assert out.shape == (3, 96, 96) and np.isfinite(out).all()
    assert -1.0 <= out.min() and out.max() <= 1.0


def test_sixteen_bit_keeps_its_range():
    arr = np.full((20, 20), 65535, dtype=np.uint16)
    assert np.allclose(preprocess_image(arr, 16), 1.0)
    assert np.allclose(preprocess_image(Image.fromarray(arr), 16), 1.0)


def test_transparent_pixels_become_background():
    rgba = np.zeros((16, 16, 4), dtype=np.uint8)  # fully transparent black
    out = preprocess_image(rgba, 16)
    expected = (np.array(BACKGROUND) / 255.0 - 0.5) / 0.5
    assert np.allclose(out[:, 0, 0], expected, atol=1e-6)


def test_non_square_is_padded_then_resized():
    img = np.zeros((20, 40, 3), dtype=np.uint8)  # black, wide
    out = preprocess_image(img, 16)
    assert out.shape == (3, 16, 16)
    bg = (np.array(BACKGROUND) / 255.0 - 0.5) / 0.5
    assert np.allclose(out[:, 0, 8], bg, atol=0.02)   # top padding
    assert np.allclose(out[:, 8, 8], -1.0, atol=0.02)  # the black image in the middle


@pytest.mark.parametrize("shape", [(1, 1, 3), (4, 100, 3)])
def test_tiny_images_are_refused(shape):
    with pytest.raises(ImageError, match="at least"):
        preprocess_image(np.zeros(shape, dtype=np.uint8), 96)


def test_huge_images_are_refused_before_any_work():
    huge = Image.new("L", (20000, 10))
    with pytest.raises(ImageError, match="downscale"):
        preprocess_image(huge, 96)


def test_bad_arrays_and_files(tmp_path):
    with pytest.raises(ImageError, match="shape"):
        preprocess_image(np.zeros((8, 8, 2), dtype=np.uint8), 16)
    with pytest.raises(ImageError, match="dtype"):
        preprocess_image(np.zeros((8, 8, 3), dtype=np.int32), 16)
    with pytest.raises(ImageError, match="NaN"):
        preprocess_image(np.full((8, 8, 3), np.nan, dtype=np.float32), 16)
    with pytest.raises(ImageError, match="not found"):
        preprocess_image(tmp_path / "missing.png", 16)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ImageError, match="cannot read"):
        preprocess_image(junk, 16)
    with pytest.raises(ImageError, match="unsupported image type"):
        preprocess_image(42, 16)


def test_reads_files(tmp_path):
    img = make_sample("vqa", 0, "test", 2).image
    Image.fromarray(img).save(tmp_path / "scene.png")
    assert np.allclose(preprocess_image(tmp_path / "scene.png", 96), preprocess_image(img, 96))


def test_pillow_float_images_keep_their_brightness():
    gray = Image.fromarray(make_sample("vqa", 0, "test", 1).image).convert("L")
    assert np.allclose(preprocess_image(gray.convert("F"), 96), preprocess_image(gray, 96))


# ---------------------------------------------------------------------------------- pixel formats
ROOT = Path(__file__).resolve().parents[1]
MODES = json.loads((ROOT / "tests/vectors/golden/image-modes.json").read_text())


def _generator():
    spec = importlib.util.spec_from_file_location("make_image_mode_vectors", ROOT / "scripts/make_image_mode_vectors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _composite(rgb: np.ndarray, a: np.ndarray) -> np.ndarray:
    """docs/bundle-format.md, Image step 1, in integers (Pillow's alpha_composite over pad_color)."""
    src, pad = rgb.astype(np.int64), np.array(BACKGROUND, np.int64)
    a = a.astype(np.int64)[..., None]
    coef1 = np.where(a == 0, 0, (a * 255 * 255 * 128) // np.maximum(a * 255 + 255 * (255 - a), 1))
    coef2 = 255 * 128 - coef1
    t = src * coef1 + pad * coef2 + (128 << 7)
    out = ((((t >> 8) + t) >> 8) >> 7)
    return np.where(a == 0, pad, out).astype(np.uint8)


def test_image_mode_vectors_are_reproduced(tmp_path):
    """Every image of tests/vectors/golden/image-modes.json decodes to its hashes (or is refused), and
    the generator still writes those very files."""
    generator = _generator()
    files = {name: data for name, _, data in generator.images()}
    for entry in MODES["images"]:
        path = ROOT / "tests/vectors/golden" / entry["file"]
        assert path.read_bytes() == files[path.name], f"{path.name}: run python scripts/make_image_mode_vectors.py"
        if entry["refused"]:
            with pytest.raises(ImageError):
                load_image(path)
            continue
        rgb = np.asarray(load_image(path))
        assert (rgb.shape[1], rgb.shape[0]) == (entry["width"], entry["height"])
        assert hashlib.sha256(rgb.tobytes()).hexdigest() == entry["rgb_sha256"], path.name
        resized = resized_rgb(path, MODES["image_size"])
        assert hashlib.sha256(resized.tobytes()).hexdigest() == entry["resized_rgb_sha256"], path.name


def _decoded(name: str) -> np.ndarray:
    return np.asarray(load_image(ROOT / "tests/vectors/golden/images/modes" / name)).astype(np.uint8)


def test_grey_palette_and_sixteen_bit_follow_the_spec():
    g = _generator()
    rgb, a = g.picture(), g.alpha()
    grey = (rgb.astype(np.uint16) @ np.array([3, 5, 2], np.uint16) // 10).astype(np.uint8)
    assert (_decoded("rgb.png") == rgb).all()
    assert (_decoded("grey.png") == np.dstack([grey] * 3)).all()
    assert (_decoded("bilevel.png") == np.dstack([np.where(grey > 100, 255, 0)] * 3)).all()
    assert (_decoded("rgba.png") == _composite(rgb, a)).all()
    assert (_decoded("grey-alpha.png") == _composite(np.dstack([grey] * 3), a)).all()
    wide = lambda v: v.astype(np.uint16) * 257 + (np.arange(v.size, dtype=np.uint16).reshape(v.shape) % 251)
    assert (_decoded("rgb16.png") == (wide(rgb) >> 8)).all()  # the high byte, not a rounded v / 257
    assert (_decoded("rgb16.png") != rgb).any()
    assert (_decoded("grey16.png") == np.dstack([wide(grey) >> 8] * 3)).all()
    high = wide(np.dstack([rgb, a])) >> 8
    assert (_decoded("rgba16.png") == _composite(high[..., :3], high[..., 3])).all()
    high = wide(np.dstack([grey, a])) >> 8
    assert (_decoded("grey-alpha16.png") == _composite(np.dstack([high[..., 0]] * 3), high[..., 1])).all()


def test_palette_transparency_is_composited():
    palette = Image.open(ROOT / "tests/vectors/golden/images/modes/palette-trns.png")
    index = np.asarray(palette)
    colours = np.array(palette.getpalette()[:18], np.uint8).reshape(6, 3)
    alphas = np.array([0, 255, 128, 10, 255, 255], np.uint8)
    assert (_decoded("palette-trns.png") == _composite(colours[index], alphas[index])).all()
    assert (_decoded("palette.png") == colours[index]).all()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_first(orientation):
    rgb = _generator().picture()
    shown = {1: rgb, 2: rgb[:, ::-1], 3: rgb[::-1, ::-1], 4: rgb[::-1], 5: rgb.transpose(1, 0, 2),
             6: np.rot90(rgb, -1), 7: rgb[::-1, ::-1].transpose(1, 0, 2), 8: np.rot90(rgb, 1)}[orientation]
    assert (_decoded(f"exif-orientation-{orientation}.png") == shown).all()


def test_exif_orientation_of_a_pillow_image_and_of_a_jpeg(tmp_path):
    rgb = _generator().picture()
    img = Image.fromarray(rgb)
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(tmp_path / "rotated.jpg", exif=exif.tobytes(), quality=100)
    opened = Image.open(tmp_path / "rotated.jpg")
    assert np.asarray(load_image(opened)).shape == (12, 9, 3)  # 12x9 stored, shown 9 wide and 12 high
    assert np.asarray(load_image(tmp_path / "rotated.jpg")).shape == (12, 9, 3)
    assert np.asarray(load_image(rgb)).shape == (9, 12, 3)  # arrays have no EXIF


def test_cmyk_is_refused(tmp_path):
    with pytest.raises(ImageError, match="CMYK.*convert it to RGB"):
        load_image(ROOT / "tests/vectors/golden/images/modes/cmyk.jpg")
    with pytest.raises(ImageError, match="CMYK"):
        preprocess_image(Image.new("CMYK", (16, 16)), 16)


def test_corrupt_exif_is_a_typed_error_or_ignored(tmp_path):
    g = _generator()
    (tmp_path / "bad.png").write_bytes(g.png(g.picture(), 2, 8, exif=b"MM\x00\x2a\x00\x00\xff\xff junk"))
    try:
        out = load_image(tmp_path / "bad.png")
    except ImageError:
        return
    assert out.size == (12, 9)

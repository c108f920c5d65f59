import numpy as np
import pytest
from PIL import Image

from mmedge.data.preprocess import preprocess_image
from mmedge.data.scenes import BACKGROUND
from mmedge.data.tasks import make_sample
from mmedge.errors import ImageError


def test_scene_images_are_only_normalised():
    img = make_sample("vqa", 0, "test", 0).image
    out = preprocess_image(img, 96)
    assert out.shape == (3, 96, 96) and out.dtype == np.float32
    assert np.allclose(out, (img.transpose(2, 0, 1) / 255.0 - 0.5) / 0.5, atol=1e-6)


@pytest.mark.parametrize("mode", ["RGBA", "L", "LA", "P", "CMYK", "I;16", "I", "F", "1", "YCbCr"])
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

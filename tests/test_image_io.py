import numpy as np
import pytest
from PIL import Image

from relate_anything.errors import ImageError
from relate_anything.image_io import load_image


def test_reads_a_photo(dog_jpg):
    pixels = load_image(dog_jpg)
    assert pixels.shape == (427, 640, 3) and pixels.dtype == np.uint8


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "nope.jpg")


def test_corrupt_jpeg(tmp_path, dog_jpg):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(dog_jpg.read_bytes()[:5000])
    with pytest.raises(ImageError, match="broken.jpg: cannot read image"):
        load_image(broken)


def test_not_an_image(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("hello")
    with pytest.raises(ImageError, match="not an image in a format we read"):
        load_image(text)


def test_grayscale_png(tmp_path):
    gray = (np.arange(60 * 40) % 256).astype(np.uint8).reshape(40, 60)
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    pixels = load_image(tmp_path / "g.png")
    assert pixels.shape == (40, 60, 3)
    assert np.array_equal(pixels[..., 0], gray) and np.array_equal(pixels[..., 2], gray)


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    deep = np.linspace(0, 65535, 50 * 20).astype(np.uint16).reshape(20, 50)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    pixels = load_image(tmp_path / "deep.png")
    assert pixels.shape == (20, 50, 3)
    assert pixels[0, 0, 0] == 0 and pixels[-1, -1, 0] == 255
    assert np.abs(pixels[..., 0].astype(int) - np.round(deep / 257.0)).max() <= 1  # not clipped at 255


def test_rgba_png_is_composited_on_white(tmp_path):
    rgba = np.zeros((10, 10, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[:5, :, 3] = 255  # top half opaque red-ish, bottom half transparent
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    pixels = load_image(tmp_path / "a.png")
    assert tuple(pixels[0, 0]) == (200, 0, 0)
    assert tuple(pixels[9, 9]) == (255, 255, 255)


def test_exif_rotation_is_applied(tmp_path, dog_jpg):
    photo = Image.open(dog_jpg)
    exif = photo.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    photo.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    pixels = load_image(tmp_path / "rotated.jpg")
    assert pixels.shape == (640, 427, 3)  # displayed upright: width and height swap
    upright = np.asarray(Image.open(tmp_path / "rotated.jpg").convert("RGB").transpose(Image.Transpose.ROTATE_270))
    assert np.array_equal(pixels, upright)


def test_huge_image_is_refused_before_decoding(tmp_path):
    Image.new("1", (20000, 20000)).save(tmp_path / "huge.png")
    with pytest.raises(ImageError, match="huge.png: image too large"):
        load_image(tmp_path / "huge.png")


def test_pixel_limit_is_configurable(dog_jpg):
    with pytest.raises(ImageError, match="640x427 is 0 megapixels"):
        load_image(dog_jpg, max_pixels=1000)


@pytest.mark.parametrize(
    "array, shape",
    [
        (np.zeros((5, 6), dtype=np.uint8), (5, 6, 3)),
        (np.zeros((5, 6, 4), dtype=np.uint8), (5, 6, 3)),
        (np.ones((5, 6, 3), dtype=np.float32), (5, 6, 3)),
    ],
)
def test_arrays(array, shape):
    assert load_image(array).shape == shape


def test_bad_array_shape():
    with pytest.raises(ImageError, match="expected an image array"):
        load_image(np.zeros((5, 6, 2), dtype=np.uint8))

"""Reading photographs into the one layout every stage expects: RGB uint8 [H, W, 3].

Real-world files are messy: EXIF-rotated phone photos, grayscale and 16-bit PNGs, RGBA and
palette images, CMYK JPEGs, truncated downloads, and images too large to segment. Each either
becomes a correct RGB array or raises `ImageError` with a message naming the file.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from relate_anything.errors import ImageError, ImageTooLargeError, NotAnImageError

#: Largest image accepted by default (width x height). SAM resizes to 1024 on the long side anyway;
#: the limit guards memory, since masks are returned at the original size. 8K UHD is ~33 MP.
MAX_PIXELS = 50_000_000


def load_image(source: str | Path | Image.Image | np.ndarray, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image as RGB uint8 [H, W, 3], honouring EXIF orientation.

    Args:
        source: a file path, a PIL image, or an array [H, W], [H, W, 3] or [H, W, 4] (uint8, or
            uint16 for 16-bit data, which is scaled down to 8 bits).
        max_pixels: images with more pixels than this are refused before they are decoded.

    Raises:
        ImageError: missing or unreadable file, unsupported layout, or too many pixels.
    """
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source, name="array", max_pixels=max_pixels)
    if isinstance(source, Image.Image):
        return _pil_to_rgb(source, name="image", max_pixels=max_pixels)
    path = Path(source)
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    return _decode(path, name=str(path), max_pixels=max_pixels)


def load_image_bytes(data: bytes, *, name: str, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode an encoded image (the bytes of a JPEG, PNG, ... file, e.g. a download) as RGB uint8
    [H, W, 3], with the same checks as `load_image`; `name` (a URL, say) names it in errors."""
    return _decode(io.BytesIO(data), name=name, max_pixels=max_pixels)


def _decode(file: Path | BinaryIO, *, name: str, max_pixels: int) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            # Our own max_pixels check replaces PIL's decompression-bomb warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(file) as image:
                _check_size(image.width, image.height, name=name, max_pixels=max_pixels)
                image.load()
                return _pil_to_rgb(image, name=name, max_pixels=max_pixels)
    except ImageError:
        raise
    except Image.DecompressionBombError as error:
        raise ImageTooLargeError(f"{name}: image too large to decode safely ({error}); resize it first") from error
    except UnidentifiedImageError as error:
        raise NotAnImageError(f"{name}: not an image in a format we read (JPEG, PNG, WebP, ...)") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"{name}: cannot read image ({error})") from error


def _check_size(width: int, height: int, *, name: str, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"{name}: image too large: {width}x{height} is {width * height / 1e6:.0f} megapixels, over the "
            f"limit of {max_pixels / 1e6:.0f}; resize it first (or raise max_pixels)"
        )
    if width == 0 or height == 0:
        raise ImageError(f"{name}: image is empty ({width}x{height})")


def _pil_to_rgb(image: Image.Image, *, name: str, max_pixels: int) -> np.ndarray:
    _check_size(image.width, image.height, name=name, max_pixels=max_pixels)
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # 16-bit (or 32-bit) single-channel data: PIL's convert("RGB") would clip it at 255.
        return _array_to_rgb(np.asarray(image), name=name, max_pixels=max_pixels)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels go on white, as a viewer shows them, not on whatever colour they hide.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def _array_to_rgb(array: np.ndarray, *, name: str, max_pixels: int) -> np.ndarray:
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ImageError(f"{name}: expected an image array [H, W], [H, W, 3] or [H, W, 4], got shape {array.shape}")
    _check_size(array.shape[1], array.shape[0], name=name, max_pixels=max_pixels)
    if array.dtype != np.uint8:
        array = _to_uint8(array, name=name)
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    elif array.shape[2] == 4:
        alpha = array[:, :, 3:].astype(np.float32) / 255.0
        array = np.round(array[:, :, :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    return np.ascontiguousarray(array)


def _to_uint8(array: np.ndarray, *, name: str) -> np.ndarray:
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.integer):
        top = 65535 if array.max(initial=0) > 255 else 255
        return np.round(np.clip(array, 0, top) * (255.0 / top)).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        # Floats in [0, 1] are the common convention; anything larger is taken as 0-255.
        scale = 255.0 if array.max(initial=0.0) <= 1.0 else 1.0
        return np.round(np.clip(array * scale, 0, 255)).astype(np.uint8)
    raise ImageError(f"{name}: unsupported pixel type {array.dtype}")


def check_rgb(image, *, name: str = "image") -> None:
    """Raise `ImageError` unless `image` (numpy array or torch tensor) is RGB uint8 [H, W, 3]."""
    shape, dtype = tuple(getattr(image, "shape", ())), str(getattr(image, "dtype", type(image).__name__))
    if len(shape) != 3 or shape[2] != 3 or dtype.removeprefix("torch.") != "uint8":
        raise ImageError(f"{name}: expected an RGB uint8 image [H, W, 3], got {shape or type(image).__name__} {dtype}")

"""SAM's image and coordinate transforms, reproducing segment-anything's exactly.

segment-anything resizes the longest side to 1024 with PIL (via torchvision's ``resize`` on a PIL
image: bilinear with PIL's antialiasing, uint8 result), normalises with fixed RGB mean/std in 0-255
units and zero-pads bottom/right to a square. transformers' `SamImageProcessor` is not used:
matching the original to the last bit is what the parity tests demand, and this is 30 lines.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from relate_anything.image_io import check_rgb
from relate_anything.sam.checkpoint import PIXEL_MEAN, PIXEL_STD

__all__ = [
    "apply_coords",
    "normalize_and_pad",
    "postprocess_logits",
    "preprocess",
    "preprocess_shape",
    "resize_longest_side",
]


def preprocess_shape(height: int, width: int, long_side: int = 1024) -> tuple[int, int]:
    """(height, width) after scaling the longest side to `long_side`, rounded half up.

    Same arithmetic as ``ResizeLongestSide.get_preprocess_shape``.
    """
    scale = long_side * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def preprocess(
    image: np.ndarray,
    *,
    image_size: int = 1024,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Turn an RGB photo into SAM's input tensor.

    Args:
        image: [H, W, 3] uint8 RGB.
        image_size: the model's square input side (1024 for every published SAM).

    Returns:
        [1, 3, image_size, image_size] tensor in `dtype` on `device`: the PIL-bilinear resized
        image, normalised as (x - mean) / std (float32 arithmetic, as the original), zero-padded at
        the bottom and right.
    """
    return normalize_and_pad(resize_longest_side(image, image_size), image_size=image_size, device=device, dtype=dtype)


def resize_longest_side(image: np.ndarray, image_size: int = 1024) -> np.ndarray:
    """The CPU half of `preprocess`: [H, W, 3] uint8 RGB resized (PIL bilinear) so that its
    longest side is `image_size`; uint8, as segment-anything's ``ResizeLongestSide``."""
    check_rgb(image)
    new_h, new_w = preprocess_shape(image.shape[0], image.shape[1], image_size)
    return np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BILINEAR))


def normalize_and_pad(
    resized: np.ndarray,
    *,
    image_size: int = 1024,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The device half of `preprocess`: a `resize_longest_side` result normalised on `device`
    and zero-padded to [1, 3, image_size, image_size] in `dtype`."""
    new_h, new_w = resized.shape[:2]
    pixels = torch.from_numpy(resized.copy()).to(device).permute(2, 0, 1)[None].float()
    mean = torch.tensor(PIXEL_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(PIXEL_STD, device=device).view(1, 3, 1, 1)
    pixels = (pixels - mean) / std
    pixels = F.pad(pixels, (0, image_size - new_w, 0, image_size - new_h))
    return pixels.to(dtype)


def apply_coords(coords: torch.Tensor, original_size: tuple[int, int], image_size: int = 1024) -> torch.Tensor:
    """Map xy pixel coordinates of the original image to the resized model-input frame.

    Args:
        coords: [..., 2] (x, y) in original image pixels (any float/int dtype).
        original_size: (H, W) of the original image.

    Returns:
        float32 tensor of the same shape. Computed in float64 then rounded to float32, as
        ``ResizeLongestSide.apply_coords`` (numpy float64) followed by ``SamPredictor.predict``.
    """
    old_h, old_w = original_size
    new_h, new_w = preprocess_shape(old_h, old_w, image_size)
    scale = torch.tensor([new_w / old_w, new_h / old_h], dtype=torch.float64, device=coords.device)
    return (coords.to(torch.float64) * scale).to(torch.float32)


def postprocess_logits(
    low_res_logits: torch.Tensor, original_size: tuple[int, int], image_size: int = 1024
) -> torch.Tensor:
    """Upsample decoder logits to the original image, as ``Sam.postprocess_masks``.

    Bilinear (align_corners=False) to image_size², crop the unpadded region, bilinear to (H, W).

    Args:
        low_res_logits: [N, C, h, w] float logits (h = w = 256 for SAM).
        original_size: (H, W) of the original image.

    Returns:
        [N, C, H, W] logits in the input dtype.
    """
    input_h, input_w = preprocess_shape(original_size[0], original_size[1], image_size)
    # Only the un-padded part of the image_size² upsampling is kept, so only that part is
    # computed: upsampling the first rows/columns (one more than needed, so no kept output
    # reads a clamped border) by the same factor gives the same values bit for bit.
    low_h, low_w = low_res_logits.shape[-2:]
    factor_h, factor_w = image_size // low_h, image_size // low_w
    rows = min(low_h, -(-input_h // factor_h) + 1)
    cols = min(low_w, -(-input_w // factor_w) + 1)
    logits = F.interpolate(
        low_res_logits[..., :rows, :cols], (rows * factor_h, cols * factor_w), mode="bilinear", align_corners=False
    )
    logits = logits[..., :input_h, :input_w]
    return F.interpolate(logits, original_size, mode="bilinear", align_corners=False)

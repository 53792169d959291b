"""Image preprocessing for the naming models, in torch on the model's device.

transformers' CLIP/SigLIP/OWLv2 image processors need torchvision for their default backend and
fall back to slower PIL/numpy ones without it; neither takes masks. So this module does the work
itself, reading the normalisation (mean, std, input size) from the model folder:

- `region_crops` (labeler): one square crop per segment around its bbox, the pixels outside the
  mask filled with the model's mean colour (so they normalise to exactly 0), resized with
  antialiased bicubic interpolation (torch's PIL-compatible kernel, as CLIP's processor uses
  PIL bicubic). Crops are squared by padding instead of CLIP's resize-shortest-side + centre crop,
  so no part of a region is cut off.
- `owlv2_pixels` (detector): OWLv2's own recipe (transformers' `Owlv2ImageProcessor`): scale to
  [0, 1], zero-pad bottom/right to a square, Gaussian anti-alias blur with sigma = (factor - 1) / 2,
  bilinear resize, normalise. Predicted boxes are then relative to the padded square, which
  `owlv2_boxes_to_image` maps back to original pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from relate_anything.boxes import cxcywh_to_xyxy, masks_to_xyxy
from relate_anything.image_io import check_rgb
from relate_anything.naming.hub import read_json

__all__ = ["Normalization", "owlv2_boxes_to_image", "owlv2_pixels", "region_crops"]

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class Normalization:
    """Model input: a square of `size` pixels, normalised as (x / 255 - mean) / std per RGB channel."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_folder(cls, folder: Path | None, *, size: int, model_type: str) -> Normalization:
        """Mean/std from `folder`/preprocessor_config.json, else the model family's published values.

        `size` is the vision tower's `image_size` (what the position embeddings were trained for).
        """
        config = read_json(folder / "preprocessor_config.json") if folder is not None else {}
        siglip = model_type.startswith("siglip")
        mean = config.get("image_mean") or (SIGLIP_MEAN if siglip else OPENAI_CLIP_MEAN)
        std = config.get("image_std") or (SIGLIP_STD if siglip else OPENAI_CLIP_STD)
        return cls(size=int(size), mean=tuple(float(v) for v in mean), std=tuple(float(v) for v in std))

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """[..., 3, h, w] float in 0-255 units -> normalised model input."""
        mean = torch.tensor(self.mean, device=pixels.device, dtype=pixels.dtype).view(3, 1, 1)
        std = torch.tensor(self.std, device=pixels.device, dtype=pixels.dtype).view(3, 1, 1)
        return (pixels / 255.0 - mean) / std


def region_crops(
    image: np.ndarray | torch.Tensor,
    masks: torch.Tensor,
    normalization: Normalization,
    *,
    margin: float = 0.1,
    boxes: torch.Tensor | None = None,
) -> torch.Tensor:
    """One model input per mask: the masked region, squared, resized and normalised.

    Args:
        image: [H, W, 3] uint8 RGB (numpy or torch).
        masks: [N, H, W] bool; the crops are built on this tensor's device.
        normalization: the model's input size, mean and std.
        margin: the square window's side is the bbox's longer side times (1 + 2 * margin),
            centred on the bbox; parts outside the image are filled like the background.
        boxes: [N, 4] pixel-edge xyxy boxes of the masks (computed from the masks if None).

    Returns:
        [N, 3, size, size] float32, normalised; pixels outside the mask are exactly 0 (the mean).

    Segments are cropped one by one (each crop is a few small kernels, so this is cheap next to
    the vision tower) so memory stays bounded by one crop, never N full-size images.
    """
    device = masks.device
    pixels = torch.as_tensor(np.asarray(image) if not isinstance(image, torch.Tensor) else image)
    check_rgb(pixels)
    if masks.ndim != 3 or masks.shape[1:] != pixels.shape[:2] or masks.dtype != torch.bool:
        expected = f"[N, {pixels.shape[0]}, {pixels.shape[1]}] bool"
        raise ValueError(f"masks must be {expected}, got {tuple(masks.shape)} {masks.dtype}")
    pixels = pixels.to(device).permute(2, 0, 1).float()  # [3, H, W], 0-255
    height, width = pixels.shape[1:]
    size = normalization.size
    fill = torch.tensor(normalization.mean, device=device).view(3, 1, 1) * 255.0
    boxes = masks_to_xyxy(masks, empty="image") if boxes is None else boxes
    crops = fill.expand(len(masks), 3, size, size).clone()
    for index, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        side = max(x1 - x0, y1 - y0, 1) * (1 + 2 * margin)
        wx0, wy0 = (x0 + x1 - side) / 2, (y0 + y1 - side) / 2  # square window, image coordinates
        vx0, vy0 = max(0, math.floor(wx0)), max(0, math.floor(wy0))  # the part inside the image
        vx1, vy1 = min(width, math.ceil(wx0 + side)), min(height, math.ceil(wy0 + side))
        scale = size / side
        ox0, oy0 = _clamp(round((vx0 - wx0) * scale), size - 1), _clamp(round((vy0 - wy0) * scale), size - 1)
        ox1, oy1 = _clamp(round((vx1 - wx0) * scale), size, ox0 + 1), _clamp(round((vy1 - wy0) * scale), size, oy0 + 1)
        window = torch.where(masks[index, vy0:vy1, vx0:vx1], pixels[:, vy0:vy1, vx0:vx1], fill)
        resized = F.interpolate(
            window[None], size=(oy1 - oy0, ox1 - ox0), mode="bicubic", antialias=True, align_corners=False
        )
        crops[index, :, oy0:oy1, ox0:ox1] = resized[0].clamp(0, 255)
    return normalization.normalize(crops)


def _clamp(value: int, high: int, low: int = 0) -> int:
    return min(max(value, low), high)


def owlv2_pixels(
    image: np.ndarray | torch.Tensor, normalization: Normalization, *, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """OWLv2's model input for one photo: [1, 3, size, size] float32 (see the module docstring).

    Matches transformers' `Owlv2ImageProcessor` (torchvision backend: Gaussian blur with reflect
    padding and a kernel of 2 * ceil(3 sigma) + 1 taps, then bilinear resize without antialias).
    """
    pixels = torch.as_tensor(np.asarray(image) if not isinstance(image, torch.Tensor) else image)
    check_rgb(pixels)
    pixels = pixels.to(device).permute(2, 0, 1)[None].float() / 255.0
    height, width = pixels.shape[2:]
    side = max(height, width)
    pixels = F.pad(pixels, (0, side - width, 0, side - height))  # zeros, bottom/right, as the processor
    size = normalization.size
    sigma = max(0.0, (side / size - 1) / 2)
    if sigma > 0:
        pixels = _gaussian_blur(pixels, sigma)
    pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    return normalization.normalize(pixels * 255.0)


def _gaussian_blur(pixels: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [B, C, H, W] with reflect padding (torchvision's `gaussian_blur`)."""
    radius = math.ceil(3 * sigma)
    taps = torch.arange(-radius, radius + 1, device=pixels.device, dtype=pixels.dtype)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = pixels.shape[1]
    pixels = F.pad(pixels, (radius, radius, radius, radius), mode="reflect")
    pixels = F.conv2d(pixels, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(pixels, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def owlv2_boxes_to_image(boxes: torch.Tensor, image_size: Sequence[int]) -> torch.Tensor:
    """OWLv2 boxes [..., 4] (cx, cy, w, h relative to the padded square) -> xyxy original pixels.

    The photo was zero-padded at the bottom/right to a max(H, W) square before resizing, so
    relative coordinates scale by max(H, W) on both axes with no offset; boxes are then clipped
    to the (H, W) image.
    """
    height, width = int(image_size[0]), int(image_size[1])
    side = float(max(height, width))
    xyxy = cxcywh_to_xyxy(boxes.float()) * side
    limits = torch.tensor([width, height, width, height], dtype=xyxy.dtype, device=xyxy.device)
    return torch.minimum(xyxy.clamp(min=0), limits)

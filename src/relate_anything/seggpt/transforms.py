"""SegGPT's input and output transforms, equal to transformers' `SegGptImageProcessor` (PIL backend).

SegGPT sees one square "picture" per example: the example image stacked on the target image
(height 2 x 448), and beside it the example's mask painted as a colour image stacked on itself.
Preprocessing is therefore per image: resize to the model's input size (448 x 448 for the
published model) with PIL, bicubic for photos and nearest for masks, scale to [0, 1] and normalise
with ImageNet's mean and std. The published original (baaivision/Painter, ``seggpt_engine.py``)
and transformers' PIL backend do exactly this; transformers' torchvision backend resizes with
torchvision instead and differs by rounding. We reproduce the PIL arithmetic (float64 rescale,
float32 normalisation) so tensors equal the processor's bit for bit, without needing torchvision.

A binary mask is painted as transformers paints a one-label segmentation map (``num_labels=1``):
background black, foreground white, the palette's only colour.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from relate_anything.image_io import check_rgb

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "mask_probabilities", "preprocess_image", "preprocess_mask"]

#: ImageNet's mean and std (0-1 units, RGB), from transformers, as the original uses.
IMAGENET_MEAN = tuple(IMAGENET_DEFAULT_MEAN)
IMAGENET_STD = tuple(IMAGENET_DEFAULT_STD)


def _normalise(resized: np.ndarray) -> np.ndarray:
    """[h, w, 3] uint8 -> [3, h, w] float32, as transformers' rescale + normalize."""
    scaled = (resized.astype(np.float64) * (1 / 255)).astype(np.float32)  # rescale(): float64 then down
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)
    std = np.asarray(IMAGENET_STD, dtype=np.float32)
    return ((scaled - mean) / std).transpose(2, 0, 1)


def preprocess_image(image: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """An RGB photo as SegGPT's input half.

    Args:
        image: [H, W, 3] uint8 RGB.
        size: (height, width) of one half of the model input (448, 448 for the published model).

    Returns:
        [3, height, width] float32 CPU tensor: PIL-bicubic resized, (x / 255 - mean) / std.
    """
    check_rgb(image)
    resized = np.asarray(Image.fromarray(image).resize(size[::-1], Image.Resampling.BICUBIC))
    return torch.from_numpy(_normalise(resized))


def preprocess_mask(mask: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """A binary mask painted white on black, as SegGPT's prompt mask.

    Args:
        mask: [H, W] bool, True = the thing to segment.
        size: (height, width) of one half of the model input.

    Returns:
        [3, height, width] float32 CPU tensor: the painted mask nearest-resized and normalised
        like a photo (so foreground is (1 - mean) / std, background -mean / std).
    """
    if mask.ndim != 2:
        raise ValueError(f"expected an [H, W] mask, got shape {mask.shape}")
    # Nearest resizing of the grey mask equals nearest resizing of its RGB painting.
    grey = Image.fromarray(np.where(mask.astype(bool), 255, 0).astype(np.uint8))
    resized = np.asarray(grey.resize(size[::-1], Image.Resampling.NEAREST))
    return torch.from_numpy(_normalise(np.repeat(resized[:, :, None], 3, axis=2)))


def mask_probabilities(pred_masks: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
    """SegGPT's painted prediction as a foreground probability per pixel of the target image.

    The model paints the target's mask in the lower half of its output. It is un-normalised,
    clipped to [0, 255] per channel (``post_process_semantic_segmentation``), averaged over the
    channels and divided by 255: 0 = black (background), 1 = white (foreground). The map is then
    resized to the original image with nearest interpolation, as transformers and the original do.
    ``probability > 0.5`` is exactly transformers' ``num_labels=1`` decision (the nearer of black
    and white in RGB).

    Args:
        pred_masks: [3, 2 * h, w] one output of `SegGptForImageSegmentation` (any float dtype).
        original_size: (H, W) of the target image.

    Returns:
        [H, W] float32 in [0, 1] on `pred_masks`' device.
    """
    painted = pred_masks[:, pred_masks.shape[1] // 2 :, :].float()
    mean = torch.tensor(IMAGENET_MEAN, device=painted.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=painted.device).view(3, 1, 1)
    painted = torch.clip((painted * std + mean) * 255, 0, 255)
    probability = painted.mean(dim=0) / 255
    return F.interpolate(probability[None, None], size=original_size, mode="nearest")[0, 0]

"""SAM 2's image, mask and logit transforms and its mask-token hook (image model and video
tracker alike).

SAM 2 squashes every frame to a square S x S input (S = 1024 for the published models; no
letterboxing, unlike SAM 1), normalised with ImageNet's mean and std in 0-1 units. Masks come out
as S/4 x S/4 logits and are upsampled straight to the frame (one bilinear step), as transformers'
`Sam2ImageProcessor.post_process_masks` and the original ``_get_orig_video_res_output``.

transformers' processors are not used: they need torchvision, and these few lines run on the
model's device.

The feature of a SAM 2 mask (`capture_pointer_tokens`) is the mask decoder's output token that
SAM 2 itself turns into the object pointer of its memory: ``Sam2MaskDecoder.forward`` returns it
as ``sam_tokens_out`` (the two-way transformer's output at mask token k, query 2 + k: SAM 2's
queries are [object-score token, IoU token, mask tokens 0..3, prompt tokens]), and
``_single_frame_forward`` picks the best-IoU one of tokens 1..3 with multimask output, token 0
otherwise (also when the dynamic-multimask fallback returned one of the other masks).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MASK_PROMPT_LOGIT",
    "as_frame_tensor",
    "capture_pointer_tokens",
    "mask_prompt_logits",
    "preprocess_square",
    "square_mask_inputs",
    "upscale_logits",
]

#: ImageNet's mean and std (0-1 units, RGB), from transformers, as SAM 2 normalises.
IMAGENET_MEAN = tuple(IMAGENET_DEFAULT_MEAN)
IMAGENET_STD = tuple(IMAGENET_DEFAULT_STD)

#: Logit magnitude of a binary mask turned into a mask prompt: SAM 2's own scale for masks used
#: as outputs (``_use_mask_as_output``: 20 * mask - 10, i.e. sigmoid 1 - 4.5e-5 inside the mask).
MASK_PROMPT_LOGIT = 10.0


def as_frame_tensor(image: np.ndarray | torch.Tensor, device: str | torch.device) -> torch.Tensor:
    """An [H, W, 3] uint8 RGB frame (numpy or torch, any device) as a uint8 tensor on `device`.

    Raises:
        ValueError: not [H, W, 3] uint8.
    """
    if isinstance(image, np.ndarray):
        image = np.ascontiguousarray(image)
        # A read-only array (np.asarray of a PIL image) is copied: torch.from_numpy would warn.
        tensor = torch.from_numpy(image if image.flags.writeable else image.copy())
    else:
        tensor = image
    if tensor.ndim != 3 or tensor.shape[2] != 3 or tensor.dtype != torch.uint8:
        raise ValueError(f"expected an [H, W, 3] uint8 RGB frame, got {tuple(tensor.shape)} {tensor.dtype}")
    return tensor.to(device)


def preprocess_square(
    image: np.ndarray | torch.Tensor,
    *,
    image_size: int,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """An RGB frame as SAM 2's input.

    Args:
        image: [H, W, 3] uint8 RGB (numpy, or a torch tensor on any device).
        image_size: the model's square input side S (``config.image_size``).

    Returns:
        [1, 3, S, S] in `dtype` on `device`: resized to S x S (bilinear, antialiased) and rounded
        to whole grey levels, as transformers' `Sam2ImageProcessor` / `Sam2VideoVideoProcessor`
        resize uint8 images (torchvision), then scaled to 0-1 and normalised with ImageNet's mean
        and std. Equal to those processors up to one grey level where torchvision's integer
        kernel rounds differently.
    """
    frame = as_frame_tensor(image, device)
    pixels = frame.permute(2, 0, 1)[None].float()
    if tuple(pixels.shape[-2:]) != (image_size, image_size):
        pixels = F.interpolate(pixels, (image_size, image_size), mode="bilinear", align_corners=False, antialias=True)
        pixels = pixels.round_().clamp_(0, 255)
    mean = torch.tensor(IMAGENET_MEAN, device=pixels.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=pixels.device).view(1, 3, 1, 1)
    return ((pixels / 255.0 - mean) / std).to(dtype)


def square_mask_inputs(masks: torch.Tensor, image_size: int) -> torch.Tensor:
    """[N, H, W] bool masks -> [N, 1, S, S] float32 0/1 masks in SAM 2's input frame.

    Bilinear antialiased resize and >= 0.5, as `Sam2VideoProcessor.add_inputs_to_inference_session`
    prepares mask prompts for the video model.
    """
    masks = masks[:, None].float()
    if tuple(masks.shape[-2:]) == (image_size, image_size):
        return masks
    resized = F.interpolate(masks, (image_size, image_size), mode="bilinear", align_corners=False, antialias=True)
    return (resized >= 0.5).float()


def mask_prompt_logits(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[N, 1, h, w] 0/1 masks in the model's input frame -> [N, 1, *size] mask-prompt logits.

    The mask becomes ±`MASK_PROMPT_LOGIT` logits at its own resolution, then is downsampled
    (bilinear, antialiased) to the prompt encoder's mask size, as SAM 2 does with masks it uses
    as outputs. A soft edge survives the downsampling; inside and outside stay near ±10.
    """
    logits = masks.float() * (2 * MASK_PROMPT_LOGIT) - MASK_PROMPT_LOGIT
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size, mode="bilinear", align_corners=False, antialias=True)


def upscale_logits(low_res_logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[N, h, w] low-resolution mask logits -> [N, H, W] logits at the frame's `size` (H, W).

    One bilinear step (align_corners False), computed in float32 whatever the model's dtype.
    """
    if low_res_logits.shape[0] == 0:
        return low_res_logits.new_zeros(0, *size, dtype=torch.float32)
    return F.interpolate(low_res_logits[:, None].float(), size, mode="bilinear", align_corners=False)[:, 0]


@contextmanager
def capture_pointer_tokens(model: torch.nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collect, for each SAM 2 mask-decoder call in the block, the token of each returned prompt.

    `model` is a `Sam2Model` or `Sam2VideoModel`. Yields a list that receives one [B * P, D]
    tensor per decoder call (B images, P prompts each, D = the decoder width): the object-pointer
    token (see the module docstring), selected exactly as ``_single_frame_forward`` selects it:
    ``argmax`` of the predicted IoU over the returned masks when there are several, else the
    only one. The hook is removed on exit, also on errors.
    """
    captured: list[torch.Tensor] = []

    def hook(module: torch.nn.Module, args: tuple, output: tuple[torch.Tensor, ...]) -> None:
        _, iou_scores, tokens, _ = output  # [B, P, C], [B, P, C, D]
        if tokens.shape[2] > 1:
            best = iou_scores.argmax(dim=-1)
            token = tokens.gather(2, best[..., None, None].expand(-1, -1, 1, tokens.shape[-1]))[:, :, 0]
        else:
            token = tokens[:, :, 0]
        captured.append(token.flatten(0, 1))

    handle = model.mask_decoder.register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()

"""Segmenters whose mask tokens can stand in for SAM ViT-H's: "students" for distillation.

A relation head distilled from SAM ViT-H + RAM reads, for each mask, the mask decoder's output
token of that mask. Every student here answers the same two calls:

    >>> student = load_student("facebook/sam2.1-hiera-tiny", device="cuda")
    >>> student.set_image(rgb_uint8)                                   # [H, W, 3]
    >>> result = student.segment_prompts(boxes=boxes, masks=masks)     # SegmentationResult
    >>> result.features.shape                                          # [N, student.feature_dim]

The students run on the same backends as `relate_anything.sam.Segmenter`
(`relate_anything.sam.backends`, whose docstring says which token is a mask's feature for SAM,
SAM-HQ and SAM 2), so a head distilled on a student's tokens reads the tokens the pipeline gives
with the same weights (`relate-anything run --sam STUDENT --ram head.safetensors`). What students
add is mask prompts (distillation prompts with the teacher's masks) and single-mask defaults.
For SAM 2 the token of the best mask is the one SAM 2 makes its object pointer from, so the video
tracker's `TrackedMasks.features` are the same token and a head trained on this student reads
them too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image
from transformers import Sam2Model, SamHQModel, SamModel

from relate_anything import weights
from relate_anything.boxes import masks_to_xyxy_inclusive
from relate_anything.sam.backends import (
    ImageEmbedding,
    PreparedImage,
    Prompts,
    Sam2Backend,
    SamBackend,
    SamHQBackend,
    SegmenterBackend,
)
from relate_anything.sam.loading import load_segmentation_model
from relate_anything.sam.ops import stability_score
from relate_anything.sam.segmenter import SegmentationResult, image_fingerprint

__all__ = [
    "PromptStudent",
    "Sam2Student",
    "SamStudent",
    "Student",
    "load_student",
]

# Prompts decoded together: with mask prompts each is its own image-batch entry, so this bounds
# the [chunk, C, 64, 64] copies of the image embedding.
_PROMPT_CHUNK = 32
# Masks upsampled to the photo at once (bounds the transient full-resolution float logits).
_UPSCALE_CHUNK = 16

Prompt = np.ndarray | torch.Tensor | Sequence


@runtime_checkable
class Student(Protocol):
    """What distillation needs from a segmenter: masks and their decoder tokens for prompts."""

    @property
    def feature_dim(self) -> int:
        """Width D of `SegmentationResult.features`."""

    def set_image(self, image: np.ndarray | Image.Image) -> None:
        """Embed an [H, W, 3] uint8 RGB photo (or a PIL image) for the next prompts."""

    def segment_prompts(
        self,
        *,
        boxes: Prompt | None = None,
        masks: Prompt | None = None,
        points: Prompt | None = None,
        point_labels: Prompt | None = None,
        multimask_output: bool = False,
    ) -> SegmentationResult:
        """One mask and token per prompt (see `PromptStudent.segment_prompts`)."""


class PromptStudent:
    """A `SegmenterBackend` holding one photo, for prompts with masks: what `Student` asks.

    Args:
        backend: the model's backend (`relate_anything.sam.backends`).
        mask_threshold: logit above which a pixel is in a mask.
        stability_score_offset: logit offset of the stability score (SAM's 1.0).
    """

    def __init__(
        self, backend: SegmenterBackend, *, mask_threshold: float = 0.0, stability_score_offset: float = 1.0
    ) -> None:
        self.backend = backend
        self.model = backend.model
        self.image_size: int = backend.image_size
        self.mask_threshold = mask_threshold
        self.stability_score_offset = stability_score_offset
        self._image: ImageEmbedding | None = None

    @property
    def device(self) -> torch.device:
        return self.backend.device

    @property
    def dtype(self) -> torch.dtype:
        return self.backend.dtype

    @property
    def feature_dim(self) -> int:
        """Width D of the features: the mask decoder's width (256 for every published model)."""
        return self.backend.feature_dim

    @property
    def original_size(self) -> tuple[int, int]:
        """(H, W) of the photo last given to `set_image`."""
        if self._image is None:
            raise RuntimeError("call set_image(image) before segmenting")
        return self._image.original_size

    def set_image(self, image: np.ndarray | Image.Image) -> None:
        """Embed `image` ([H, W, 3] uint8 RGB, or a PIL image); the same photo again is not re-encoded."""
        if isinstance(image, Image.Image):
            image = np.asarray(image.convert("RGB"))
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an [H, W, 3] uint8 RGB image, got {image.shape} {image.dtype}")
        fingerprint = image_fingerprint(image)
        if self._image is not None and fingerprint == self._image.fingerprint:
            return
        size = (int(image.shape[0]), int(image.shape[1]))
        self._image = self.backend.encode([PreparedImage(self.backend.prepare(image), size, fingerprint)])[0]

    def segment_prompts(
        self,
        *,
        boxes: Prompt | None = None,
        masks: Prompt | None = None,
        points: Prompt | None = None,
        point_labels: Prompt | None = None,
        multimask_output: bool = False,
    ) -> SegmentationResult:
        """One mask per prompt, with the decoder's token for it as its feature.

        Args:
            boxes: [B, 4] xyxy in photo pixels, one prompt each.
            masks: [M, H, W] bool at the photo's size, one prompt each (given to the prompt encoder
                as ±10 logits at its mask resolution). With boxes, M == B and mask i joins box i.
            points: [P, 2] (x, y) in photo pixels, all part of every prompt (alone: one prompt).
            point_labels: [P] 1 = foreground, 0 = background; default all foreground.
            multimask_output: decode 3 candidate masks per prompt and return the one with the
                highest predicted IoU (with its token); otherwise the single-mask output.

        Returns:
            `SegmentationResult` with one mask per prompt, in prompt order: masks at the photo's
            size, predicted IoU, stability scores, boxes and features [N, feature_dim]; no
            point_coords and no score filter.
        """
        if boxes is None and masks is None and points is None:
            raise ValueError("give boxes, masks and/or points")
        prompts = Prompts.parse(
            points=points, point_labels=point_labels, boxes=boxes, masks=masks, original_size=self.original_size
        )
        parts = [self._segment(chunk, multimask_output) for chunk in prompts.chunks(_PROMPT_CHUNK)]
        return SegmentationResult.concatenate(parts)

    def _segment(self, prompts: Prompts, multimask_output: bool) -> SegmentationResult:
        with torch.inference_mode():
            output = self.backend.decode(self._image, prompts, multimask_output=multimask_output)
        rows = torch.arange(prompts.count, device=output.iou_predictions.device)
        best = output.iou_predictions.argmax(dim=1)  # always 0 with a single mask
        masks, scores = [], []
        for chunk in output.low_res_logits[rows, best].split(_UPSCALE_CHUNK):
            logits = self.backend.upscale(chunk, self.original_size)
            masks.append(logits > self.mask_threshold)
            scores.append(stability_score(logits, self.mask_threshold, self.stability_score_offset))
        mask_tensor = torch.cat(masks)
        return SegmentationResult(
            masks=mask_tensor,
            iou_predictions=output.iou_predictions[rows, best].float(),
            stability_scores=torch.cat(scores).float(),
            boxes=masks_to_xyxy_inclusive(mask_tensor),
            features=output.mask_tokens[rows, best].float(),
        )


class SamStudent(PromptStudent):
    """SAM (`SamModel`) or SAM-HQ (`SamHQModel`) as a student (`SamBackend`, `SamHQBackend`).

    For SAM, masks, IoU and tokens equal `Segmenter.segment_prompts` (decoder="transformers") for
    the same box and point prompts.

    Args:
        model: a `SamModel` or `SamHQModel` in eval mode (see `load_student`).
        hq_token_only: SAM-HQ only: return the HQ token's mask alone instead of SAM's plus HQ's.
        mask_threshold, stability_score_offset: see `PromptStudent`.
    """

    def __init__(
        self,
        model: SamModel | SamHQModel,
        *,
        hq_token_only: bool = False,
        mask_threshold: float = 0.0,
        stability_score_offset: float = 1.0,
    ) -> None:
        is_hq = isinstance(model, SamHQModel)
        if hq_token_only and not is_hq:
            raise ValueError("hq_token_only applies to SAM-HQ models only")
        backend = (
            SamHQBackend(model, hq_token_only=hq_token_only) if is_hq else SamBackend(model, decoder="transformers")
        )
        super().__init__(backend, mask_threshold=mask_threshold, stability_score_offset=stability_score_offset)
        self.is_hq = is_hq
        self.hq_token_only = hq_token_only


class Sam2Student(PromptStudent):
    """SAM 2's image model (`Sam2Model`) as a student (`Sam2Backend`).

    Args:
        model: a `Sam2Model` in eval mode (see `load_student`, which also takes SAM 2 video folders).
        mask_threshold, stability_score_offset: see `PromptStudent`.
    """

    def __init__(self, model: Sam2Model, *, mask_threshold: float = 0.0, stability_score_offset: float = 1.0) -> None:
        super().__init__(
            Sam2Backend(model), mask_threshold=mask_threshold, stability_score_offset=stability_score_offset
        )


def load_student(
    name_or_path: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> PromptStudent:
    """The student for a SAM, SAM-HQ or SAM 2 checkpoint, chosen by its config's ``model_type``.

    Args:
        name_or_path: a ``save_pretrained`` folder or hub id of a ``sam``, ``sam_hq``, ``sam2``
            or ``sam2_video`` model (of a SAM 2 video model only the image parts are loaded), or
            an original segment-anything checkpoint file. Resolved by `relate_anything.weights.resolve`
            (config and safetensors only; original ``.pth`` files are read weights-only).
        device: where the model lives.
        dtype: parameter dtype.

    Returns:
        `SamStudent` for SAM and SAM-HQ, `Sam2Student` for SAM 2 (models loaded by
        `relate_anything.sam.loading.load_segmentation_model`).

    Raises:
        WeightsNotFoundError: neither on disk nor in the cache, and not downloadable.
        CheckpointError: not one of these models, or weights that do not fit their config.
    """
    path = weights.resolve(weights.STUDENT_WEIGHTS.reference(name_or_path), weights.STUDENT_WEIGHTS)
    model = load_segmentation_model(path, device=device, dtype=dtype)
    return Sam2Student(model) if isinstance(model, Sam2Model) else SamStudent(model)

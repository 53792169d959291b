"""Segmenters whose mask tokens can stand in for SAM ViT-H's: "students" for distillation.

A relation head distilled from SAM ViT-H + RAM reads, for each mask, the mask decoder's output
token of that mask. Every student here answers the same two calls:

    >>> student = load_student("facebook/sam2.1-hiera-tiny", device="cuda")
    >>> student.set_image(rgb_uint8)                                   # [H, W, 3]
    >>> result = student.segment_prompts(boxes=boxes, masks=masks)     # SegmentationResult
    >>> result.features.shape                                          # [N, student.feature_dim]

The feature of a returned mask, per model:

- SAM (`SamModel`): the two-way transformer's output at the mask's token, query 1 + k (queries
  are [IoU token, mask tokens 0..3, prompt tokens]), as `relate_anything.sam.Segmenter` and RAM.
- SAM-HQ (`SamHQModel`): the same SAM mask token, query 1 + k (queries are [IoU token, mask
  tokens 0..3, HQ token, prompt tokens]). The returned mask is that token's mask plus the HQ
  token's mask (SAM-HQ's default, ``hq_token_only=False``); with multimask output SAM-HQ sorts its
  masks by predicted IoU, and the token follows its mask.
- SAM 2 (`Sam2Model`): the token SAM 2 makes its object pointer from (query 2 + k; see
  `relate_anything.sam.sam2_ops`): the best-IoU token with multimask output, token 0 without
  (also when SAM 2's dynamic-multimask fallback returned another token's mask). The video
  tracker's `TrackedMasks.features` are the same token, so a head trained on this student reads
  them too.

Tokens are captured with forward hooks; transformers is not patched. The SAM 1 `Segmenter`
cannot serve SAM-HQ unchanged: it embeds without SAM-HQ's intermediate ViT features (silently
dropping the HQ branch's input), and its token slice assumes 4 mask tokens (SAM-HQ has 5 and
reorders its multimask outputs), so SAM and SAM-HQ share `SamStudent` here instead.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import Sam2Config, Sam2Model, SamHQModel, SamModel

from relate_anything import weights
from relate_anything.boxes import masks_to_xyxy_inclusive
from relate_anything.errors import CheckpointError
from relate_anything.sam.checkpoint import load_sam, match_original_layer_norm_eps
from relate_anything.sam.ops import stability_score
from relate_anything.sam.sam2_ops import (
    capture_pointer_tokens,
    mask_prompt_logits,
    preprocess_square,
    square_mask_inputs,
    upscale_logits,
)
from relate_anything.sam.segmenter import SegmentationResult, image_fingerprint
from relate_anything.sam.transforms import apply_coords, postprocess_logits, preprocess, preprocess_shape
from relate_anything.state_dicts import load_pretrained_folder

__all__ = [
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


@dataclass(frozen=True)
class _Prompts:
    """N validated prompts on the CPU: any of points [N, P, 2] + labels [N, P], boxes [N, 4],
    masks [N, H, W] bool (pixels of the photo)."""

    count: int
    points: torch.Tensor | None
    labels: torch.Tensor | None
    boxes: torch.Tensor | None
    masks: torch.Tensor | None

    def chunk(self, start: int, stop: int) -> _Prompts:
        def part(value: torch.Tensor | None) -> torch.Tensor | None:
            return None if value is None else value[start:stop]

        return _Prompts(stop - start, part(self.points), part(self.labels), part(self.boxes), part(self.masks))


class PromptStudent(ABC):
    """Shared prompt handling of the students: validation, chunking, upscaling, result building.

    Subclasses embed photos (`_embed`), decode prompts (`_decode`) and upscale logits (`_upscale`).

    Args:
        model: the transformers model, in eval mode.
        mask_threshold: logit above which a pixel is in a mask.
        stability_score_offset: logit offset of the stability score (SAM's 1.0).
    """

    def __init__(self, model: torch.nn.Module, *, mask_threshold: float = 0.0, stability_score_offset: float = 1.0):
        self.model = model.eval()
        self.mask_threshold = mask_threshold
        self.stability_score_offset = stability_score_offset
        self._fingerprint: str | None = None
        self._original_size: tuple[int, int] | None = None

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def feature_dim(self) -> int:
        """Width D of the features: the mask decoder's width (256 for every published model)."""
        return self.model.config.mask_decoder_config.hidden_size

    @property
    def original_size(self) -> tuple[int, int]:
        """(H, W) of the photo last given to `set_image`."""
        if self._original_size is None:
            raise RuntimeError("call set_image(image) before segmenting")
        return self._original_size

    def set_image(self, image: np.ndarray | Image.Image) -> None:
        """Embed `image` ([H, W, 3] uint8 RGB, or a PIL image); the same photo again is not re-encoded."""
        if isinstance(image, Image.Image):
            image = np.asarray(image.convert("RGB"))
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an [H, W, 3] uint8 RGB image, got {image.shape} {image.dtype}")
        fingerprint = image_fingerprint(image)
        if fingerprint == self._fingerprint:
            return
        with torch.inference_mode():
            self._embed(image)
        self._fingerprint = fingerprint
        self._original_size = (int(image.shape[0]), int(image.shape[1]))

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
        prompts = self._prompts(boxes, masks, points, point_labels)
        parts = [
            self._segment(prompts.chunk(start, min(start + _PROMPT_CHUNK, prompts.count)), multimask_output)
            for start in range(0, prompts.count, _PROMPT_CHUNK)
        ]
        return SegmentationResult.concatenate(parts)

    def _segment(self, prompts: _Prompts, multimask_output: bool) -> SegmentationResult:
        with torch.inference_mode():
            low_res, iou, tokens = self._decode(prompts, multimask_output)
        masks, scores = [], []
        for chunk in low_res.split(_UPSCALE_CHUNK):
            logits = self._upscale(chunk)
            masks.append(logits > self.mask_threshold)
            scores.append(stability_score(logits, self.mask_threshold, self.stability_score_offset))
        mask_tensor = torch.cat(masks)
        return SegmentationResult(
            masks=mask_tensor,
            iou_predictions=iou.float(),
            stability_scores=torch.cat(scores).float(),
            boxes=masks_to_xyxy_inclusive(mask_tensor),
            features=tokens.float(),
        )

    def _prompts(
        self, boxes: Prompt | None, masks: Prompt | None, points: Prompt | None, point_labels: Prompt | None
    ) -> _Prompts:
        height, width = self.original_size
        if boxes is None and masks is None and points is None:
            raise ValueError("give boxes, masks and/or points")
        box_tensor = mask_tensor = None
        if boxes is not None:
            box_tensor = _as_tensor(boxes, torch.float64)
            if box_tensor.ndim != 2 or box_tensor.shape[1] != 4 or len(box_tensor) == 0:
                raise ValueError(f"boxes must be [B, 4] xyxy, got {tuple(box_tensor.shape)}")
        if masks is not None:
            mask_tensor = (
                masks.detach().cpu() if isinstance(masks, torch.Tensor) else torch.as_tensor(np.asarray(masks))
            )
            if mask_tensor.ndim != 3 or tuple(mask_tensor.shape[1:]) != (height, width) or len(mask_tensor) == 0:
                raise ValueError(
                    f"masks must be [M, {height}, {width}] (the photo's size), got {tuple(mask_tensor.shape)}"
                )
            if mask_tensor.dtype != torch.bool:
                raise ValueError(f"masks must be bool, got {mask_tensor.dtype}")
            if box_tensor is not None and len(box_tensor) != len(mask_tensor):
                raise ValueError(f"{len(box_tensor)} boxes and {len(mask_tensor)} masks: give one box per mask")
        count = len(box_tensor) if box_tensor is not None else len(mask_tensor) if mask_tensor is not None else 1
        point_tensor = label_tensor = None
        if points is not None:
            coords = _as_tensor(points, torch.float64)
            if coords.ndim != 2 or coords.shape[1] != 2 or len(coords) == 0:
                raise ValueError(f"points must be [P, 2] xy, got {tuple(coords.shape)}")
            labels = (
                torch.ones(len(coords), dtype=torch.int)
                if point_labels is None
                else _as_tensor(point_labels, torch.int)
            )
            if labels.shape != (len(coords),):
                raise ValueError(f"point_labels must be [{len(coords)}], got {tuple(labels.shape)}")
            point_tensor, label_tensor = coords.expand(count, -1, -1), labels.expand(count, -1)
        return _Prompts(count, point_tensor, label_tensor, box_tensor, mask_tensor)

    @abstractmethod
    def _embed(self, image: np.ndarray) -> None:
        """Encode the [H, W, 3] uint8 photo and keep what `_decode` needs."""

    @abstractmethod
    def _decode(self, prompts: _Prompts, multimask_output: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Low-res logits [N, h, w] of the returned masks, their predicted IoU [N], tokens [N, D]."""

    @abstractmethod
    def _upscale(self, low_res_logits: torch.Tensor) -> torch.Tensor:
        """[n, h, w] low-res logits -> [n, H, W] float logits at the photo's size."""


class SamStudent(PromptStudent):
    """SAM (`SamModel`) or SAM-HQ (`SamHQModel`) as a student; see the module docstring.

    Preprocessing is segment-anything's (`relate_anything.sam.transforms`): the longest side
    resized to the model's input size, zero-padded square. For SAM, masks, IoU and tokens equal
    `Segmenter.segment_prompts` (decoder="transformers") for the same box and point prompts.

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
        super().__init__(model, mask_threshold=mask_threshold, stability_score_offset=stability_score_offset)
        self.is_hq = isinstance(model, SamHQModel)
        if hq_token_only and not self.is_hq:
            raise ValueError("hq_token_only applies to SAM-HQ models only")
        self.hq_token_only = hq_token_only
        self.image_size: int = model.config.vision_config.image_size
        self._embedding: torch.Tensor | None = None  # [1, C, h, w]
        self._intermediate: torch.Tensor | None = None  # SAM-HQ: [1, h, w, C_vit] of the first global block

    def _embed(self, image: np.ndarray) -> None:
        pixels = preprocess(image, image_size=self.image_size, device=self.device, dtype=self.dtype)
        if self.is_hq:
            embedding, intermediate = self.model.get_image_embeddings(pixels)
            self._intermediate = intermediate[0]  # the only one SAM-HQ's decoder reads
        else:
            embedding = self.model.get_image_embeddings(pixels)
        self._embedding = embedding

    def _decode(self, prompts: _Prompts, multimask_output: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = prompts.count
        # Box/point prompts: one image, n prompts (as Segmenter). Mask prompts are dense, one per
        # image-batch entry: n copies of the image, one prompt each.
        images, per_image = (1, n) if prompts.masks is None else (n, 1)
        inputs: dict[str, torch.Tensor | list[torch.Tensor]] = {
            "image_embeddings": self._embedding.expand(images, -1, -1, -1)
        }
        if prompts.points is not None:
            coords = apply_coords(prompts.points.to(self.device), self.original_size, self.image_size)
            inputs["input_points"] = coords.reshape(images, per_image, -1, 2)
            inputs["input_labels"] = prompts.labels.to(self.device, torch.int).reshape(images, per_image, -1)
        if prompts.boxes is not None:
            corners = apply_coords(prompts.boxes.to(self.device).reshape(-1, 2, 2), self.original_size, self.image_size)
            inputs["input_boxes"] = corners.reshape(images, per_image, 4)
        if prompts.masks is not None:
            inputs["input_masks"] = self._mask_inputs(prompts.masks).to(self.dtype)
        if self.is_hq:
            inputs["intermediate_embeddings"] = [self._intermediate.expand(images, -1, -1, -1)]
            inputs["hq_token_only"] = self.hq_token_only
        with (
            _capture_output(self.model.mask_decoder.transformer) as queries,
            _capture_output(self.model.mask_decoder.iou_prediction_head) as all_iou,
        ):
            output = self.model(multimask_output=multimask_output, **inputs)
        logits = output.pred_masks.flatten(0, 1)  # [n, C, h, w]
        iou = output.iou_scores.flatten(0, 1)  # [n, C]
        rows = torch.arange(n, device=iou.device)
        best = iou.argmax(dim=1)  # always 0 with a single mask
        if not multimask_output:
            token = torch.zeros_like(best)
        elif self.is_hq:
            # SAM-HQ returns masks of tokens 1..3 sorted by their predicted IoU: recompute the order.
            order = torch.sort(all_iou[0].flatten(0, 1)[:, 1:4], dim=1, descending=True).indices
            token = 1 + order[rows, best]
        else:
            token = 1 + best
        tokens = queries[0][0].flatten(0, 1)[rows, 1 + token]  # query 0 is the IoU token
        return logits[rows, best], iou[rows, best], tokens

    def _mask_inputs(self, masks: torch.Tensor) -> torch.Tensor:
        """[n, H, W] bool -> [n, 1, 256, 256] prompt logits in the padded model-input frame."""
        input_h, input_w = preprocess_shape(*self.original_size, self.image_size)
        resized = F.interpolate(
            masks.to(self.device)[:, None].float(), (input_h, input_w), mode="bilinear", antialias=True
        )
        square = F.pad((resized >= 0.5).float(), (0, self.image_size - input_w, 0, self.image_size - input_h))
        height, width = self.model.prompt_encoder.image_embedding_size
        return mask_prompt_logits(square, (4 * height, 4 * width))  # the mask embedding downsamples 4x

    def _upscale(self, low_res_logits: torch.Tensor) -> torch.Tensor:
        return postprocess_logits(low_res_logits[:, None].float(), self.original_size, self.image_size)[:, 0]


class Sam2Student(PromptStudent):
    """SAM 2's image model (`Sam2Model`) as a student; see the module docstring.

    Preprocessing is SAM 2's (`relate_anything.sam.sam2_ops`): the photo squashed to the model's
    square input; prompt coordinates scaled per axis, as transformers' `Sam2Processor`.

    Args:
        model: a `Sam2Model` in eval mode (see `load_student`, which also takes SAM 2 video folders).
        mask_threshold, stability_score_offset: see `PromptStudent`.
    """

    def __init__(self, model: Sam2Model, *, mask_threshold: float = 0.0, stability_score_offset: float = 1.0) -> None:
        super().__init__(model, mask_threshold=mask_threshold, stability_score_offset=stability_score_offset)
        self.image_size: int = model.config.prompt_encoder_config.image_size
        self._embeddings: list[torch.Tensor] | None = None  # 3 levels, [1, C_l, h_l, w_l]

    def _embed(self, image: np.ndarray) -> None:
        pixels = preprocess_square(image, image_size=self.image_size, device=self.device, dtype=self.dtype)
        self._embeddings = self.model.get_image_embeddings(pixels)

    def _decode(self, prompts: _Prompts, multimask_output: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = prompts.count
        images, per_image = (1, n) if prompts.masks is None else (n, 1)
        inputs: dict[str, torch.Tensor | list[torch.Tensor]] = {
            "image_embeddings": [level.expand(images, -1, -1, -1) for level in self._embeddings]
        }
        if prompts.points is not None:
            inputs["input_points"] = self._scale(prompts.points).reshape(images, per_image, -1, 2)
            inputs["input_labels"] = prompts.labels.to(self.device, torch.int).reshape(images, per_image, -1)
        if prompts.boxes is not None:
            inputs["input_boxes"] = self._scale(prompts.boxes.reshape(-1, 2, 2)).reshape(images, per_image, 4)
        if prompts.masks is not None:
            square = square_mask_inputs(prompts.masks.to(self.device), self.image_size)
            inputs["input_masks"] = mask_prompt_logits(square, self.model.prompt_encoder.mask_input_size).to(self.dtype)
        with capture_pointer_tokens(self.model) as tokens:
            output = self.model(multimask_output=multimask_output, **inputs)
        logits = output.pred_masks.flatten(0, 1)  # [n, C, h, w]
        iou = output.iou_scores.flatten(0, 1)  # [n, C]
        rows = torch.arange(n, device=iou.device)
        best = iou.argmax(dim=1)  # the same choice as the captured token's
        return logits[rows, best], iou[rows, best], tokens[0]

    def _scale(self, coords: torch.Tensor) -> torch.Tensor:
        """[..., 2] xy photo pixels -> the square input frame, in float32 as `Sam2Processor`."""
        height, width = self.original_size
        scale = torch.tensor([self.image_size / width, self.image_size / height], dtype=torch.float32)
        return (coords.float() * scale).to(self.device)

    def _upscale(self, low_res_logits: torch.Tensor) -> torch.Tensor:
        return upscale_logits(low_res_logits, self.original_size)


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
        `SamStudent` for SAM and SAM-HQ (two-way transformer LayerNorms at segment-anything's
        eps, as `load_sam`), `Sam2Student` for SAM 2.

    Raises:
        WeightsNotFoundError: neither on disk nor in the cache, and not downloadable.
        CheckpointError: not one of these models, or weights that do not fit their config.
    """
    path = weights.resolve(weights.STUDENT_WEIGHTS.reference(name_or_path), weights.STUDENT_WEIGHTS)
    if path.is_file():
        return SamStudent(load_sam(path, device=device, dtype=dtype))
    model_type = _model_type(path)
    if model_type == "sam":
        return SamStudent(load_sam(path, device=device, dtype=dtype))
    if model_type == "sam_hq":
        model = load_pretrained_folder(path, {"sam_hq": SamHQModel}, name="SAM-HQ")
        match_original_layer_norm_eps(model)  # SAM-HQ's decoder is segment-anything's
        return SamStudent(model.to(device=device, dtype=dtype).eval())
    if model_type in ("sam2", "sam2_video"):
        config = None
        if model_type == "sam2_video":  # the image model is a subset of the video model
            video = json.loads((path / "config.json").read_text())
            parts = ("vision_config", "prompt_encoder_config", "mask_decoder_config")
            config = Sam2Config(**{part: video[part] for part in parts})
        model = load_pretrained_folder(path, {model_type: Sam2Model}, name="SAM 2", config=config)
        return Sam2Student(model.to(device=device, dtype=dtype).eval())
    raise CheckpointError(
        f"{path}: config.json describes a {model_type!r} model; a student is one of sam, sam_hq, sam2, sam2_video"
    )


def _model_type(folder: Path) -> str | None:
    try:
        return json.loads((folder / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError) as error:
        raise CheckpointError(
            f"{folder}: not a transformers model folder (cannot read config.json: {error})"
        ) from error


@contextmanager
def _capture_output(module: torch.nn.Module) -> Iterator[list]:
    """Collect the outputs of `module`'s forward calls in the block (hook removed on exit)."""
    outputs: list = []
    handle = module.register_forward_hook(lambda mod, args, output: outputs.append(output))
    try:
        yield outputs
    finally:
        handle.remove()


def _as_tensor(values: Prompt, dtype: torch.dtype) -> torch.Tensor:
    """A CPU tensor of `dtype` from a tensor (any device), array or nested sequence."""
    if isinstance(values, torch.Tensor):
        return values.detach().to("cpu", dtype)
    return torch.as_tensor(np.asarray(values), dtype=dtype)

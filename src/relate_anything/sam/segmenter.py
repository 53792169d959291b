"""Segment Anything as RAM uses it: segment everything (or from prompts) and keep a 256-d
feature per mask.

`Segmenter` is a stateful predictor, like segment-anything's ``SamPredictor``: `set_image` embeds
the photo once, then any number of prompt decodes reuse the embedding. Masks, scores and features
stay torch tensors on the model's device until the caller moves them.

The feature of a mask is the mask decoder's output token for that mask (the two-way
transformer's output at the mask token's position), which RAM feeds to its relation head. It is
captured with a forward hook on ``model.mask_decoder.transformer``; transformers is not patched.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import SamModel

from relate_anything.boxes import masks_to_xyxy_inclusive
from relate_anything.masks import mask_areas
from relate_anything.sam.checkpoint import load_sam
from relate_anything.sam.fast_decoder import FastMaskDecoder
from relate_anything.sam.ops import boxes_from_logits, build_point_grid, nms, remove_duplicate_masks, stability_score
from relate_anything.sam.transforms import (
    apply_coords,
    normalize_and_pad,
    postprocess_logits,
    preprocess_shape,
    resize_longest_side,
)
from relate_anything.settings import SegmentSettings

__all__ = ["DecoderOutput", "ImageEmbedding", "PreparedImage", "SegmentationResult", "Segmenter", "capture_mask_tokens"]

# Masks upsampled to full resolution at once on a GPU; bounds the transient [chunk, 1024, 1024]
# float buffer (256 MiB in float32) independently of points_per_batch.
_UPSAMPLE_CHUNK = 64
# On a CPU, chunks are sized to ~16 MiB of logits instead: every fresh allocation above glibc's
# mmap threshold (at most 32 MiB) is paid again in page faults, which made the full-resolution
# stability pass twice as slow in chunks of 64 masks as in chunks of 2 to 4.
_CPU_UPSAMPLE_BYTES = 16 << 20

Index = int | slice | Sequence[int] | np.ndarray | torch.Tensor

# Mask-decoder implementations a `Segmenter` can use (see its `decoder` argument).
DECODERS = ("fast", "transformers")


@dataclass(frozen=True)
class SegmentationResult:
    """Masks of one image and everything known about each, indexed together.

    Attributes:
        masks: [N, H, W] bool at the original image size, on the model's device.
        iou_predictions: [N] float32, SAM's predicted mask IoU.
        stability_scores: [N] float32, IoU of the masks thresholded at mask_threshold ± offset
            (computed on full-resolution logits, as segment-anything).
        boxes: [N, 4] float32 xyxy in pixels; x1, y1 are the last mask column/row (inclusive,
            segment-anything's ``batched_mask_to_box`` convention); an empty mask has [0, 0, 0, 0].
        features: [N, D] float32 (D = 256 for SAM), the decoder's output token for each mask.
        point_coords: [N, 2] float32 (x, y) of the grid point that produced each mask in original
            pixels, NaN where a mask came from a user prompt; None when no mask has one.

    ``result[index]`` with an int, slice, index list/array or boolean mask selects from every
    field at once and returns a `SegmentationResult` (an int gives one of length 1).
    """

    masks: torch.Tensor
    iou_predictions: torch.Tensor
    stability_scores: torch.Tensor
    boxes: torch.Tensor
    features: torch.Tensor
    point_coords: torch.Tensor | None = None

    def __post_init__(self) -> None:
        n = self.masks.shape[0]
        if self.masks.ndim != 3 or self.masks.dtype != torch.bool:
            raise ValueError(f"masks must be [N, H, W] bool, got {tuple(self.masks.shape)} {self.masks.dtype}")
        expected = {"iou_predictions": (n,), "stability_scores": (n,), "boxes": (n, 4)}
        if self.point_coords is not None:
            expected["point_coords"] = (n, 2)
        for name, shape in expected.items():
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(f"{name} must have shape {shape}, got {tuple(getattr(self, name).shape)}")
        if self.features.ndim != 2 or self.features.shape[0] != n:
            raise ValueError(f"features must be [{n}, D], got {tuple(self.features.shape)}")

    def __len__(self) -> int:
        return self.masks.shape[0]

    def __getitem__(self, index: Index) -> SegmentationResult:
        if isinstance(index, int):
            index = slice(index, index + 1) if index != -1 else slice(-1, None)
        elif not isinstance(index, slice):
            index = torch.as_tensor(index, device=self.masks.device)
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return SegmentationResult(**{name: None if v is None else v[index] for name, v in values.items()})

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the masks."""
        return self.masks.shape[1], self.masks.shape[2]

    def to(self, device: str | torch.device) -> SegmentationResult:
        """A copy with every tensor on `device`."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return SegmentationResult(**{name: None if v is None else v.to(device) for name, v in values.items()})

    @classmethod
    def empty(
        cls, image_size: tuple[int, int], *, feature_dim: int = 256, device: str | torch.device = "cpu"
    ) -> SegmentationResult:
        """A result with no masks for an image of (H, W) `image_size`."""
        return cls(
            masks=torch.zeros(0, *image_size, dtype=torch.bool, device=device),
            iou_predictions=torch.zeros(0, device=device),
            stability_scores=torch.zeros(0, device=device),
            boxes=torch.zeros(0, 4, device=device),
            features=torch.zeros(0, feature_dim, device=device),
        )

    @classmethod
    def concatenate(cls, results: Sequence[SegmentationResult]) -> SegmentationResult:
        """Join results of the same image in order; missing point_coords become NaN rows."""
        if not results:
            raise ValueError("concatenate needs at least one SegmentationResult")
        points = None
        if any(r.point_coords is not None for r in results):
            points = torch.cat([_points_or_nan(r) for r in results])
        return cls(
            masks=torch.cat([r.masks for r in results]),
            iou_predictions=torch.cat([r.iou_predictions for r in results]),
            stability_scores=torch.cat([r.stability_scores for r in results]),
            boxes=torch.cat([r.boxes for r in results]),
            features=torch.cat([r.features for r in results]),
            point_coords=points,
        )


def _points_or_nan(result: SegmentationResult) -> torch.Tensor:
    if result.point_coords is not None:
        return result.point_coords
    return torch.full((len(result), 2), float("nan"), device=result.masks.device)


@dataclass(frozen=True)
class ImageEmbedding:
    """SAM's embedding of one photo: what the decoder needs to segment it, whatever the prompts.

    Attributes:
        embedding: [1, 256, 64, 64] image embedding on the model's device.
        original_size: (H, W) of the photo, for mapping prompts and masks.
        fingerprint: a digest of the photo's pixels: equal photos, equal fingerprints.
    """

    embedding: torch.Tensor
    original_size: tuple[int, int]
    fingerprint: str


@dataclass(frozen=True)
class PreparedImage:
    """A photo made ready for the image encoder on the CPU (`Segmenter.prepare`).

    Attributes:
        resized: [h, w, 3] uint8, the photo resized so that its longest side is the model's
            input side (PIL bilinear, as segment-anything).
        original_size: (H, W) of the photo.
        fingerprint: `image_fingerprint` of the photo.
    """

    resized: np.ndarray
    original_size: tuple[int, int]
    fingerprint: str


def image_fingerprint(image: np.ndarray) -> str:
    """A digest of an [H, W, 3] uint8 photo's shape and pixels (cache key for its embedding)."""
    digest = hashlib.blake2b(str(image.shape).encode(), digest_size=16)
    digest.update(np.ascontiguousarray(image).data)
    return digest.hexdigest()


@dataclass(frozen=True)
class DecoderOutput:
    """Raw mask-decoder output for a batch of B prompts and C masks per prompt.

    Attributes:
        low_res_logits: [B, C, 256, 256] mask logits in the padded model-input frame / 4.
        iou_predictions: [B, C] predicted mask IoU.
        mask_tokens: [B, C, D] the decoder's output token of each returned mask.
    """

    low_res_logits: torch.Tensor
    iou_predictions: torch.Tensor
    mask_tokens: torch.Tensor


@contextmanager
def capture_mask_tokens(model: SamModel) -> Iterator[list[torch.Tensor]]:
    """Collect the mask decoder's output mask tokens while the block runs.

    Yields a list that receives, for each decoder call, a [batch, prompts, num_mask_tokens, D]
    tensor: the two-way transformer's output queries at the mask-token positions. transformers
    orders the queries [iou_token, mask_token_0 .. mask_token_3, prompt tokens...], so mask token
    k is query 1 + k. The hook is removed on exit, also on errors.
    """
    captured: list[torch.Tensor] = []
    num_mask_tokens = model.mask_decoder.num_mask_tokens

    def hook(module: torch.nn.Module, args: tuple, output: tuple[torch.Tensor, torch.Tensor]) -> None:
        queries = output[0]
        captured.append(queries[..., 1 : 1 + num_mask_tokens, :])

    handle = model.mask_decoder.transformer.register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


@dataclass
class _Candidates:
    """Masks of segment_everything before NMS, kept at low resolution to bound memory."""

    low_res_logits: torch.Tensor  # [N, 256, 256]
    iou_predictions: torch.Tensor  # [N]
    stability_scores: torch.Tensor  # [N]
    boxes: torch.Tensor  # [N, 4], from the full-resolution mask
    features: torch.Tensor  # [N, D]
    point_coords: torch.Tensor  # [N, 2]

    def __getitem__(self, index: torch.Tensor) -> _Candidates:
        return _Candidates(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @classmethod
    def cat(cls, parts: Sequence[_Candidates]) -> _Candidates:
        return cls(**{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(cls)})


class Segmenter:
    """SAM with the image embedding cached, for automatic and prompted segmentation.

    Args:
        model: a transformers `SamModel` (see `load_sam`), in eval mode.
        settings: the "segment everything" settings used when a call gives none (default:
            segment-anything's `SamAutomaticMaskGenerator` defaults plus RAM's removal of
            near-duplicate masks).
        points_per_batch: grid points decoded together (memory vs speed; no effect on results).
        embedding_cache_size: embeddings of this many recent photos are kept, so that setting a
            photo again (a second click in the UI) does not encode it again.
        decoder: "fast" decodes prompts with `FastMaskDecoder` (same weights and outputs, without
            a copy of the image embedding per prompt, and segment_everything never upscales
            masks that the predicted-IoU filter drops); "transformers" calls SamModel's forward.
        decoder_chunk_size: prompts the fast decoder processes together (memory vs speed;
            default by device, see `FastMaskDecoder`).

    Example:
        >>> segmenter = Segmenter.from_pretrained("facebook/sam-vit-huge", device="cuda")
        >>> segmenter.set_image(np.asarray(Image.open("dog.jpg").convert("RGB")))
        >>> result = segmenter.segment_everything(settings=SegmentSettings(points_per_side=16))
        >>> result.masks.shape, result.features.shape   # [N, H, W], [N, 256]
    """

    def __init__(
        self,
        model: SamModel,
        *,
        settings: SegmentSettings | None = None,
        points_per_batch: int = 256,
        embedding_cache_size: int = 1,
        decoder: str = "fast",
        decoder_chunk_size: int | None = None,
    ) -> None:
        if points_per_batch < 1:
            raise ValueError("points_per_batch must be positive")
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
        self.model = model.eval()
        self.settings = settings or SegmentSettings()
        self.decoder = decoder
        self._fast_decoder = FastMaskDecoder(model, chunk_size=decoder_chunk_size) if decoder == "fast" else None
        self.points_per_batch = points_per_batch
        self.image_size: int = model.config.vision_config.image_size
        self.embedding_cache_size = embedding_cache_size
        self._image: ImageEmbedding | None = None
        self._embeddings: OrderedDict[str, ImageEmbedding] = OrderedDict()
        self._everything: tuple[tuple[str, SegmentSettings], SegmentationResult] | None = None

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        **options: Any,
    ) -> Segmenter:
        """`load_sam(name_or_path)` wrapped in a `Segmenter`; `options` are constructor kwargs."""
        return cls(load_sam(name_or_path, device=device, dtype=dtype), **options)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def feature_dim(self) -> int:
        """Width of the mask-token features (256 for SAM)."""
        return self.model.config.mask_decoder_config.hidden_size

    @property
    def name(self) -> str:
        """Where the weights came from (hub id or folder), else the model class."""
        return getattr(self.model.config, "_name_or_path", "") or type(self.model).__name__

    # ------------------------------------------------------------------------------------------
    # Image

    def set_image(self, image: np.ndarray | Image.Image) -> None:
        """Embed `image` ([H, W, 3] uint8 RGB array, or a PIL image), or take its cached embedding."""
        if isinstance(image, Image.Image):
            image = np.asarray(image.convert("RGB"))
        fingerprint = image_fingerprint(image)
        cached = self._embeddings.get(fingerprint)
        if cached is not None:
            self._embeddings.move_to_end(fingerprint)
            self.set_embedding(cached)
            return
        self.set_embedding(self.embed_images([image])[0])

    def has_embedding(self, image: np.ndarray) -> bool:
        """Whether `image` ([H, W, 3] uint8) is held or cached, so `set_image` would not encode it."""
        fingerprint = image_fingerprint(image)
        held = self._image is not None and self._image.fingerprint == fingerprint
        return held or fingerprint in self._embeddings

    def prepare(self, image: np.ndarray) -> PreparedImage:
        """The CPU work of embedding a photo ([H, W, 3] uint8 RGB): the resize and the fingerprint.

        Touches no model state, so a loader thread can prepare the next photos while the model
        encodes others (see `RelateAnything.stream`).
        """
        resized = resize_longest_side(image, self.image_size)
        return PreparedImage(resized, (int(image.shape[0]), int(image.shape[1])), image_fingerprint(image))

    def embed_images(self, images: Sequence[np.ndarray | PreparedImage]) -> list[ImageEmbedding]:
        """Encode several photos in one batch through the image encoder (the costly part of SAM).

        Photos ([H, W, 3] uint8 RGB, or `prepare`'s results) may differ in size: each is resized
        and padded to the model's square input.
        """
        if not images:
            return []
        prepared = [image if isinstance(image, PreparedImage) else self.prepare(image) for image in images]
        pixels = torch.cat(
            [
                normalize_and_pad(image.resized, image_size=self.image_size, device=self.device, dtype=self.dtype)
                for image in prepared
            ]
        )
        with torch.inference_mode():
            embeddings = self.model.get_image_embeddings(pixels)
        return [
            ImageEmbedding(embedding[None], image.original_size, image.fingerprint)
            for embedding, image in zip(embeddings, prepared)
        ]

    def set_embedding(self, image: ImageEmbedding) -> None:
        """Make `image` the photo that prompts and `segment_everything` apply to."""
        if self._image is not None and self._image.fingerprint == image.fingerprint:
            return
        self._image = image
        self._everything = None
        if self.embedding_cache_size > 0:
            self._embeddings[image.fingerprint] = image
            self._embeddings.move_to_end(image.fingerprint)
            while len(self._embeddings) > self.embedding_cache_size:
                self._embeddings.popitem(last=False)

    def reset_image(self) -> None:
        """Forget the current photo and every cached embedding."""
        self._image = None
        self._everything = None
        self._embeddings.clear()

    @property
    def _embedding(self) -> torch.Tensor | None:
        return None if self._image is None else self._image.embedding

    @property
    def original_size(self) -> tuple[int, int]:
        """(H, W) of the image last given to `set_image`."""
        return self._require_image().original_size

    def _require_image(self) -> ImageEmbedding:
        if self._image is None:
            raise RuntimeError("call set_image(image) before segmenting")
        return self._image

    # ------------------------------------------------------------------------------------------
    # Batched tensor API

    def decode(
        self,
        point_coords: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        *,
        multimask_output: bool = True,
    ) -> DecoderOutput:
        """Decode B prompts against the cached embedding (``SamPredictor.predict_torch``).

        Args:
            point_coords: [B, N, 2] (x, y) in original image pixels.
            point_labels: [B, N] int, 1 = foreground, 0 = background.
            boxes: [B, 4] xyxy in original image pixels; with points, box b joins points b.
            multimask_output: 3 masks per prompt (mask tokens 1..3) instead of 1 (token 0).

        Returns:
            `DecoderOutput` with C = 3 or 1, on the model's device.
        """
        if self._embedding is None:
            raise RuntimeError("call set_image(image) before segmenting")
        if point_coords is None and boxes is None:
            raise ValueError("give point_coords and/or boxes")
        inputs = self._prompt_inputs(point_coords, point_labels, boxes)
        if self._fast_decoder is not None:
            logits, iou, tokens = self._fast_decoder(
                self._embedding, self._sparse_embeddings(inputs), multimask_output=multimask_output
            )
            return DecoderOutput(logits, iou, tokens)
        with capture_mask_tokens(self.model) as tokens, torch.inference_mode():
            output = self.model(image_embeddings=self._embedding, multimask_output=multimask_output, **inputs)
        mask_tokens = tokens[0][0]  # [B, num_mask_tokens, D]
        mask_tokens = mask_tokens[:, 1:] if multimask_output else mask_tokens[:, :1]
        return DecoderOutput(output.pred_masks[0], output.iou_scores[0], mask_tokens)

    def _sparse_embeddings(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """[B, S, D] prompt-encoder embeddings of `_prompt_inputs` (one image)."""
        with torch.inference_mode():
            sparse, _ = self.model.prompt_encoder(
                input_points=inputs.get("input_points"),
                input_labels=inputs.get("input_labels"),
                input_boxes=inputs.get("input_boxes"),
                input_masks=None,
            )
        return sparse[0]

    def _prompt_inputs(
        self, point_coords: torch.Tensor | None, point_labels: torch.Tensor | None, boxes: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        """SamModel keyword inputs (batch of one image) in the resized model-input frame."""
        inputs: dict[str, torch.Tensor] = {}
        if point_coords is not None:
            if point_labels is None:
                raise ValueError("point_labels must be given with point_coords")
            coords = apply_coords(point_coords.to(self.device), self.original_size, self.image_size)
            inputs["input_points"] = coords[None]
            inputs["input_labels"] = point_labels.to(self.device, torch.int)[None]
        if boxes is not None:
            corners = apply_coords(boxes.to(self.device).reshape(-1, 2, 2), self.original_size, self.image_size)
            inputs["input_boxes"] = corners.reshape(-1, 4)[None]
        return inputs

    def upscale_logits(self, low_res_logits: torch.Tensor) -> torch.Tensor:
        """[N, 256, 256] decoder logits -> [N, H, W] logits at the original image size.

        ``Sam.postprocess_masks`` semantics, in chunks of masks to bound memory.
        """
        chunks = list(self._upscaled_chunks(low_res_logits))
        return torch.cat(chunks) if chunks else low_res_logits.new_zeros(0, *self.original_size)

    def upscale_masks(self, low_res_logits: torch.Tensor, mask_threshold: float = 0.0) -> torch.Tensor:
        """[N, 256, 256] decoder logits -> [N, H, W] bool masks (logits > mask_threshold).

        Thresholded chunk by chunk, so the full-resolution float logits of only one chunk exist.
        """
        chunks = [logits > mask_threshold for logits in self._upscaled_chunks(low_res_logits)]
        return (
            torch.cat(chunks) if chunks else torch.zeros(0, *self.original_size, dtype=torch.bool, device=self.device)
        )

    def _upscaled_chunks(self, low_res_logits: torch.Tensor) -> Iterator[torch.Tensor]:
        """[n, H, W] full-resolution logits of successive chunks of the [N, 256, 256] logits."""
        for chunk in low_res_logits.split(self._upsample_chunk()):
            yield postprocess_logits(chunk[:, None], self.original_size, self.image_size)[:, 0]

    def _upsample_chunk(self) -> int:
        """Masks upsampled to full resolution together (see _UPSAMPLE_CHUNK, _CPU_UPSAMPLE_BYTES)."""
        if self.device.type != "cpu":
            return _UPSAMPLE_CHUNK
        height, width = self.original_size
        input_h, input_w = preprocess_shape(height, width, self.image_size)
        largest = max(height * width, input_h * input_w)  # the output of either upsampling step
        return max(1, _CPU_UPSAMPLE_BYTES // (4 * largest))

    # ------------------------------------------------------------------------------------------
    # Automatic segmentation

    def segment_everything(self, *, settings: SegmentSettings | None = None) -> SegmentationResult:
        """Masks from a points_per_side² grid of single-point prompts, filtered as SAM's AMG + RAM.

        `settings` (default: the segmenter's) are used for this call only.

        Steps: decode the grid in batches (3 masks per point); keep predicted IoU >
        pred_iou_thresh and stability >= stability_score_thresh (both on full-resolution logits,
        like ``SamAutomaticMaskGenerator`` with one crop); box NMS at box_nms_thresh ranked by
        predicted IoU; drop near-duplicate masks (mask IoU >= duplicate_iou_thresh, larger kept);
        drop masks smaller than min_mask_area pixels, and empty ones always.

        Returns:
            `SegmentationResult` ordered by decreasing mask area, with point_coords. Asked again for
            the same photo and settings, the same result is returned without decoding again.
        """
        settings = settings or self.settings
        key = (self._require_image().fingerprint, settings)
        if self._everything is not None and self._everything[0] == key:
            return self._everything[1]
        result = self._segment_everything(settings)
        self._everything = (key, result)
        return result

    def _segment_everything(self, settings: SegmentSettings) -> SegmentationResult:
        height, width = self.original_size
        grid = build_point_grid(settings.points_per_side) * torch.tensor([width, height], dtype=torch.float64)
        candidates = _Candidates.cat(
            [self._grid_batch(points, settings) for points in grid.split(self.points_per_batch)]
        )
        candidates = candidates[nms(candidates.boxes, candidates.iou_predictions, settings.box_nms_thresh)]
        # Candidates keep 256x256 logits only; full-resolution masks are rebuilt for NMS survivors,
        # so memory does not grow with the image size times the number of rejected masks.
        masks = self.upscale_masks(candidates.low_res_logits, settings.mask_threshold)
        # Masks are ordered by decreasing area either way; a mask IoU is at most 1, so a
        # threshold above 1 removes nothing and the pairwise intersections are not computed.
        if settings.duplicate_iou_thresh <= 1.0:
            keep = remove_duplicate_masks(masks, settings.duplicate_iou_thresh)
        else:
            keep = torch.sort(mask_areas(masks), descending=True, stable=True).indices
        masks, candidates = masks[keep], candidates[keep]
        # At least one pixel, whatever min_mask_area says: an empty mask (a grid point whose
        # logits are all at or below the threshold) is no segment, and would have a box of zeros.
        large = mask_areas(masks) >= max(1, settings.min_mask_area)
        if not bool(large.all()):
            masks, candidates = masks[large], candidates[large]
        return SegmentationResult(
            masks=masks,
            iou_predictions=candidates.iou_predictions.float(),
            stability_scores=candidates.stability_scores.float(),
            boxes=candidates.boxes,
            features=candidates.features.float(),
            point_coords=candidates.point_coords.float(),
        )

    def _grid_batch(self, points: torch.Tensor, settings: SegmentSettings) -> _Candidates:
        """Decode [P, 2] grid points (original pixels) and apply the per-mask filters."""
        logits, iou, tokens, point_coords = self._decode_grid(points.to(self.device), settings.pred_iou_thresh)
        scores, boxes = self._stability_and_boxes(logits, settings)
        candidates = _Candidates(logits, iou, scores, boxes, tokens, point_coords)
        if settings.stability_score_thresh > 0.0:
            candidates = candidates[scores >= settings.stability_score_thresh]
        return candidates

    def _decode_grid(
        self, points: torch.Tensor, pred_iou_thresh: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Masks of single-point prompts, 3 per point in point-major order (as the original),
        less those whose predicted IoU is <= pred_iou_thresh when that is > 0 (as SAM).

        Returns low-res logits [K, 256, 256], predicted IoU [K], mask tokens [K, D] and the
        prompting point of each mask [K, 2].
        """
        labels = torch.ones(points.shape[0], 1, dtype=torch.int, device=self.device)
        filtered = pred_iou_thresh > 0.0
        if self._fast_decoder is not None and filtered:
            # Filtering first spares decoding the rejected masks at all.
            inputs = self._prompt_inputs(points[:, None, :], labels, None)
            logits, iou, tokens, index = self._fast_decoder.decode_above(
                self._embedding, self._sparse_embeddings(inputs), pred_iou_thresh
            )
            return logits, iou, tokens, points[index // 3]
        output = self.decode(points[:, None, :], labels, multimask_output=True)
        logits = output.low_res_logits.flatten(0, 1)
        iou = output.iou_predictions.flatten(0, 1)
        tokens = output.mask_tokens.flatten(0, 1)
        point_coords = points.repeat_interleave(output.iou_predictions.shape[1], dim=0)
        if filtered:  # filtering first spares upsampling rejected masks
            keep = iou > pred_iou_thresh
            logits, iou, tokens, point_coords = logits[keep], iou[keep], tokens[keep], point_coords[keep]
        return logits, iou, tokens, point_coords

    def _stability_and_boxes(
        self, low_res_logits: torch.Tensor, settings: SegmentSettings
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Stability scores [N] and boxes [N, 4] of full-resolution masks, chunk by chunk.

        The full-resolution logits are transient: only the low-resolution ones are kept.
        """
        scores, boxes = [], []
        for logits in self._upscaled_chunks(low_res_logits):
            scores.append(stability_score(logits, settings.mask_threshold, settings.stability_score_offset))
            boxes.append(boxes_from_logits(logits, settings.mask_threshold))
        if not scores:
            return low_res_logits.new_zeros(0), low_res_logits.new_zeros(0, 4)
        return torch.cat(scores), torch.cat(boxes)

    # ------------------------------------------------------------------------------------------
    # Prompted segmentation

    def segment_prompts(
        self,
        *,
        points: np.ndarray | torch.Tensor | Sequence[Sequence[float]] | None = None,
        point_labels: np.ndarray | torch.Tensor | Sequence[int] | None = None,
        boxes: np.ndarray | torch.Tensor | Sequence[Sequence[float]] | None = None,
        multimask_output: bool = True,
        settings: SegmentSettings | None = None,
    ) -> SegmentationResult:
        """One mask per prompt: the points together, or each box (with the points, if given).

        Args:
            points: [P, 2] (x, y) in original image pixels, all part of ONE prompt.
            point_labels: [P] 1 = foreground, 0 = background; default all foreground.
            boxes: [B, 4] xyxy in original image pixels, one prompt each.
            multimask_output: decode 3 candidate masks per prompt and return the one with the
                highest predicted IoU (with its token); otherwise the single-mask output (token 0).
            settings: their mask_threshold and stability_score_offset apply (default: the
                segmenter's).

        Returns:
            `SegmentationResult` of 1 mask (points only) or B masks (boxes), in prompt order,
            point_coords None. No score filters are applied.
        """
        point_coords, labels, box_tensor = self._prompt_tensors(points, point_labels, boxes)
        output = self.decode(point_coords, labels, box_tensor, multimask_output=multimask_output)
        best = output.iou_predictions.argmax(dim=1)  # always 0 with a single mask
        rows = torch.arange(best.shape[0], device=best.device)
        logits = self.upscale_logits(output.low_res_logits[rows, best])
        settings = settings or self.settings
        masks = logits > settings.mask_threshold
        return SegmentationResult(
            masks=masks,
            iou_predictions=output.iou_predictions[rows, best].float(),
            stability_scores=stability_score(logits, settings.mask_threshold, settings.stability_score_offset),
            boxes=masks_to_xyxy_inclusive(masks),
            features=output.mask_tokens[rows, best].float(),
        )

    def _prompt_tensors(
        self,
        points: np.ndarray | torch.Tensor | Sequence[Sequence[float]] | None,
        point_labels: np.ndarray | torch.Tensor | Sequence[int] | None,
        boxes: np.ndarray | torch.Tensor | Sequence[Sequence[float]] | None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """Validate user prompts and batch them for `decode` ([B, P, 2], [B, P], [B, 4])."""
        if points is None and boxes is None:
            raise ValueError("give points and/or boxes")
        box_tensor = None
        if boxes is not None:
            box_tensor = _as_tensor(boxes, torch.float64)
            if box_tensor.ndim != 2 or box_tensor.shape[1] != 4 or len(box_tensor) == 0:
                raise ValueError(f"boxes must be [B, 4] xyxy, got {tuple(box_tensor.shape)}")
        if points is None:
            return None, None, box_tensor
        coords = _as_tensor(points, torch.float64)
        if coords.ndim != 2 or coords.shape[1] != 2 or len(coords) == 0:
            raise ValueError(f"points must be [P, 2] xy, got {tuple(coords.shape)}")
        if point_labels is None:
            labels = torch.ones(len(coords), dtype=torch.int)
        else:
            labels = _as_tensor(point_labels, torch.int)
        if labels.shape != (len(coords),):
            raise ValueError(f"point_labels must be [{len(coords)}], got {tuple(labels.shape)}")
        prompts = 1 if box_tensor is None else len(box_tensor)
        return coords.expand(prompts, -1, -1), labels.expand(prompts, -1), box_tensor


def _as_tensor(values: np.ndarray | torch.Tensor | Sequence, dtype: torch.dtype) -> torch.Tensor:
    """A CPU tensor of `dtype` from a tensor (any device), array or nested sequence."""
    if isinstance(values, torch.Tensor):
        return values.detach().to("cpu", dtype)
    return torch.as_tensor(np.asarray(values), dtype=dtype)

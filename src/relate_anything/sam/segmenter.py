"""Segment Anything as RAM uses it: segment everything (or from prompts) and keep a feature per mask.

`Segmenter` is a stateful predictor, like segment-anything's ``SamPredictor``: `set_image` embeds
the photo once, then any number of prompt decodes reuse the embedding. Masks, scores and features
stay torch tensors on the model's device until the caller moves them.

The feature of a mask is the mask decoder's output token for that mask (for SAM, the two-way
transformer's output at the mask token's position), which RAM feeds to its relation head.

One `Segmenter` serves SAM (`SamModel`), SAM-HQ (`SamHQModel`) and SAM 2's image model
(`Sam2Model`): what differs between them (preprocessing, the encoder's outputs, decoding a batch of
prompts, which token is a mask's, upscaling) is a `relate_anything.sam.backends.SegmenterBackend`;
the cache, the "segment everything" filters and the prompt handling here are shared, so every
model segments everything the way segment-anything's automatic mask generator does.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from relate_anything.boxes import masks_to_xyxy_inclusive
from relate_anything.masks import mask_areas
from relate_anything.sam.backends import (
    DECODERS,
    DecoderOutput,
    ImageEmbedding,
    PreparedImage,
    Prompts,
    SegmenterBackend,
    backend_for,
    capture_mask_tokens,
)
from relate_anything.sam.ops import boxes_from_logits, build_point_grid, nms, remove_duplicate_masks, stability_score
from relate_anything.settings import SegmentSettings

__all__ = ["DecoderOutput", "ImageEmbedding", "PreparedImage", "SegmentationResult", "Segmenter", "capture_mask_tokens"]

Index = int | slice | Sequence[int] | np.ndarray | torch.Tensor


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


def image_fingerprint(image: np.ndarray) -> str:
    """A digest of an [H, W, 3] uint8 photo's shape and pixels (cache key for its embedding)."""
    digest = hashlib.blake2b(str(image.shape).encode(), digest_size=16)
    digest.update(np.ascontiguousarray(image).data)
    return digest.hexdigest()


@dataclass
class _Candidates:
    """Masks of segment_everything before NMS, kept at low resolution to bound memory."""

    low_res_logits: torch.Tensor  # [N, h, w]
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
    """SAM, SAM-HQ or SAM 2 with the image embedding cached, for automatic and prompted segmentation.

    Args:
        model: a transformers `SamModel` (see `load_sam`), `SamHQModel` or `Sam2Model` (see
            `relate_anything.sam.loading.load_segmentation_model`), in eval mode; its backend
            (`relate_anything.sam.backends.backend_for`) does the model-specific work.
        settings: the "segment everything" settings used when a call gives none (default:
            segment-anything's `SamAutomaticMaskGenerator` defaults plus RAM's removal of
            near-duplicate masks).
        points_per_batch: grid points decoded together (memory vs speed; no effect on results).
        embedding_cache_size: embeddings of this many recent photos are kept, so that setting a
            photo again (a second click in the UI) does not encode it again.
        decoder: SAM's mask decoder: "fast" decodes prompts with `FastMaskDecoder` (same weights
            and outputs, without a copy of the image embedding per prompt, and segment_everything
            never upscales masks that the predicted-IoU filter drops); "transformers" calls
            SamModel's forward. SAM-HQ and SAM 2 always decode with transformers' forward.
        decoder_chunk_size: prompts the fast decoder processes together (memory vs speed;
            default by device, see `FastMaskDecoder`).
        name: where the weights came from, for messages (default: the model config's
            ``_name_or_path``, else the model class).

    Example:
        >>> segmenter = Segmenter.from_pretrained("facebook/sam-vit-huge", device="cuda")
        >>> segmenter.set_image(np.asarray(Image.open("dog.jpg").convert("RGB")))
        >>> result = segmenter.segment_everything(settings=SegmentSettings(points_per_side=16))
        >>> result.masks.shape, result.features.shape   # [N, H, W], [N, 256]
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        settings: SegmentSettings | None = None,
        points_per_batch: int = 256,
        embedding_cache_size: int = 1,
        decoder: str = "fast",
        decoder_chunk_size: int | None = None,
        name: str | None = None,
    ) -> None:
        if points_per_batch < 1:
            raise ValueError("points_per_batch must be positive")
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
        self.backend: SegmenterBackend = backend_for(model, decoder=decoder, decoder_chunk_size=decoder_chunk_size)
        self.model = self.backend.model
        self.settings = settings or SegmentSettings()
        self.decoder = self.backend.decoder
        self.points_per_batch = points_per_batch
        self.image_size: int = self.backend.image_size
        self.embedding_cache_size = embedding_cache_size
        self._name = name
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
        """The SAM, SAM-HQ or SAM 2 weights at `name_or_path` (a folder, an original SAM file or a
        hub id, see `relate_anything.weights.resolve`) in a `Segmenter`; `options` are
        constructor kwargs."""
        from relate_anything import weights
        from relate_anything.sam.loading import load_segmentation_model

        reference = weights.SAM_WEIGHTS.reference(name_or_path)
        path = weights.resolve(reference, weights.SAM_WEIGHTS)
        options.setdefault("name", reference)
        return cls(load_segmentation_model(path, device=device, dtype=dtype), **options)

    @property
    def device(self) -> torch.device:
        return self.backend.device

    @property
    def dtype(self) -> torch.dtype:
        return self.backend.dtype

    @property
    def feature_dim(self) -> int:
        """Width of the mask-token features (the mask decoder's width: 256 for the published models)."""
        return self.backend.feature_dim

    @property
    def name(self) -> str:
        """Where the weights came from (hub id or folder), else the model class."""
        return self._name or getattr(self.model.config, "_name_or_path", "") or type(self.model).__name__

    # ------------------------------------------------------------------------------------------
    # Image

    def set_image(self, image: np.ndarray | Image.Image) -> None:
        """Embed `image` ([H, W, 3] uint8 RGB array, or a PIL image), or take its cached embedding."""
        if isinstance(image, Image.Image):
            image = np.asarray(image.convert("RGB"))
        fingerprint = image_fingerprint(image)
        if self._image is not None and self._image.fingerprint == fingerprint:
            return
        cached = self._embeddings.get(fingerprint)
        if cached is not None:
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
        resized = self.backend.prepare(image)
        return PreparedImage(resized, (int(image.shape[0]), int(image.shape[1])), image_fingerprint(image))

    def embed_images(self, images: Sequence[np.ndarray | PreparedImage]) -> list[ImageEmbedding]:
        """Encode several photos in one batch through the image encoder (the costly part of SAM).

        Photos ([H, W, 3] uint8 RGB, or `prepare`'s results) may differ in size: each is resized
        to the model's square input.
        """
        prepared = [image if isinstance(image, PreparedImage) else self.prepare(image) for image in images]
        return self.backend.encode(prepared)

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
            multimask_output: 3 masks per prompt (mask tokens 1..3) instead of 1 (token 0);
                SAM-HQ returns the best of the 3 only, as its own decoder does.

        Returns:
            `DecoderOutput` with C = 3 or 1, on the model's device.
        """
        image = self._require_image()
        if point_coords is None and boxes is None:
            raise ValueError("give point_coords and/or boxes")
        prompts = Prompts(point_coords, point_labels, boxes)
        return self.backend.decode(image, prompts, multimask_output=multimask_output)

    def upscale_logits(self, low_res_logits: torch.Tensor) -> torch.Tensor:
        """[N, h, w] decoder logits -> [N, H, W] logits at the original image size.

        The backend's upscaling (SAM: ``Sam.postprocess_masks`` semantics), in chunks of masks to
        bound memory.
        """
        chunks = list(self._upscaled_chunks(low_res_logits))
        return torch.cat(chunks) if chunks else low_res_logits.new_zeros(0, *self.original_size)

    def upscale_masks(self, low_res_logits: torch.Tensor, mask_threshold: float = 0.0) -> torch.Tensor:
        """[N, h, w] decoder logits -> [N, H, W] bool masks (logits > mask_threshold).

        Thresholded chunk by chunk, so the full-resolution float logits of only one chunk exist.
        """
        chunks = [logits > mask_threshold for logits in self._upscaled_chunks(low_res_logits)]
        return (
            torch.cat(chunks) if chunks else torch.zeros(0, *self.original_size, dtype=torch.bool, device=self.device)
        )

    def _upscaled_chunks(self, low_res_logits: torch.Tensor) -> Iterator[torch.Tensor]:
        """[n, H, W] full-resolution logits of successive chunks of the [N, h, w] logits."""
        size = self.original_size
        for chunk in low_res_logits.split(self.backend.upscale_chunk(size)):
            yield self.backend.upscale(chunk, size)

    # ------------------------------------------------------------------------------------------
    # Automatic segmentation

    def segment_everything(self, *, settings: SegmentSettings | None = None) -> SegmentationResult:
        """Masks from a points_per_side² grid of single-point prompts, filtered as SAM's AMG + RAM.

        `settings` (default: the segmenter's) are used for this call only.

        Steps: decode the grid in batches (the model's multimask output: 3 masks per point for
        SAM and SAM 2, the best of them for SAM-HQ, as its own generator); keep predicted IoU >
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
        # Candidates keep low-resolution logits only; full-resolution masks are rebuilt for NMS survivors,
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
        """Masks of single-point prompts in point-major order (as the original: 3 a point for SAM
        and SAM 2, SAM-HQ's one), less those whose predicted IoU is <= pred_iou_thresh when that
        is > 0 (as SAM).

        Returns low-res logits [K, h, w], predicted IoU [K], mask tokens [K, D] and the
        prompting point of each mask [K, 2].
        """
        logits, iou, tokens, index = self.backend.decode_grid(self._require_image(), points, pred_iou_thresh)
        return logits, iou, tokens, points[index]

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
        if points is None and boxes is None:
            raise ValueError("give points and/or boxes")
        prompts = Prompts.parse(points=points, point_labels=point_labels, boxes=boxes, original_size=self.original_size)
        output = self.backend.decode(self._require_image(), prompts, multimask_output=multimask_output)
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

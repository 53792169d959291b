"""The model-specific half of a `Segmenter`: SAM, SAM-HQ and SAM 2's image model behind one interface.

What a segmenter does with a photo is the same for every model: embed it once, decode prompts
against the embedding, upscale the decoder's low-resolution logits to the photo, and (for "segment
everything") filter a grid of single-point prompts' masks. A `SegmenterBackend` does the parts
that differ between models, and nothing else:

- `prepare`: the CPU half of turning a photo into the encoder's input (a loader thread runs it);
- `encode`: photos -> `ImageEmbedding`s, several photos in one encoder batch;
- `decode`: a batch of prompts -> low-resolution logits, predicted IoU and the decoder's token
  of each returned mask (`DecoderOutput`);
- `upscale`: low-resolution logits -> logits at the photo's size.

`relate_anything.sam.Segmenter` (caching, filters, NMS) and the distillation students
(`relate_anything.sam.students`) both run on these backends, so a mask, its IoU and its token
come out of the same code whichever of them asks.

The feature of a returned mask, per model:

- SAM (`SamModel`, `SamBackend`): the two-way transformer's output at the mask's token, query
  1 + k (queries are [IoU token, mask tokens 0..3, prompt tokens]), as RAM reads it. Multimask
  output returns tokens 1..3, a single mask token 0.
- SAM-HQ (`SamHQModel`, `SamHQBackend`): the same SAM mask token, query 1 + k (queries are [IoU
  token, mask tokens 0..3, HQ token, prompt tokens]). The returned mask is that token's mask plus
  the HQ token's mask (SAM-HQ's default, ``hq_token_only=False``). With multimask output SAM-HQ's
  own decoder (SysCV/sam-hq ``MaskDecoderHQ``) returns ONE mask, the best of tokens 1..3 by
  predicted IoU, and its automatic mask generator keeps one mask per grid point; transformers
  returns all three sorted by IoU, of which the backend keeps the first, and the token follows it.
- SAM 2 (`Sam2Model`, `Sam2Backend`): mask token k, query 2 + k (queries are [object-score
  token, IoU token, mask tokens 0..3, prompt tokens]): the decoder's ``sam_tokens_out``. Multimask
  output returns tokens 1..3, so the best-IoU one is the token SAM 2 makes its object pointer
  from; a single mask has token 0 also when SAM 2's dynamic-multimask fallback returned another
  token's mask (see `relate_anything.sam.sam2_ops`). The video tracker's features are the same.

Tokens are captured with forward hooks; transformers is not patched.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from transformers import Sam2Model, SamHQModel, SamModel

from relate_anything.image_io import check_rgb
from relate_anything.sam.fast_decoder import FastMaskDecoder
from relate_anything.sam.sam2_ops import mask_prompt_logits, preprocess_square, square_mask_inputs, upscale_logits
from relate_anything.sam.transforms import (
    apply_coords,
    normalize_and_pad,
    postprocess_logits,
    preprocess_shape,
    resize_longest_side,
)

__all__ = [
    "DECODERS",
    "DecoderOutput",
    "ImageEmbedding",
    "PreparedImage",
    "Prompts",
    "Sam2Backend",
    "SamBackend",
    "SamHQBackend",
    "SegmenterBackend",
    "backend_for",
    "capture_mask_tokens",
]

# Mask-decoder implementations of SAM (see `SamBackend`'s `decoder` argument).
DECODERS = ("fast", "transformers")

# Masks upsampled to full resolution at once on a GPU; bounds the transient [chunk, 1024, 1024]
# float buffer (256 MiB in float32) independently of points_per_batch.
_UPSAMPLE_CHUNK = 64
# On a CPU, chunks are sized to ~16 MiB of logits instead: every fresh allocation above glibc's
# mmap threshold (at most 32 MiB) is paid again in page faults, which made the full-resolution
# stability pass twice as slow in chunks of 64 masks as in chunks of 2 to 4.
_CPU_UPSAMPLE_BYTES = 16 << 20
# Prompts SAM-HQ and SAM 2 decode together through transformers' forward, which copies the image
# side per prompt (SAM 2's high-resolution features too): bounds those copies. With mask prompts
# each prompt is its own image-batch entry.
_PROMPT_CHUNK = 32


@dataclass(frozen=True)
class PreparedImage:
    """A photo made ready for the image encoder on the CPU (`SegmenterBackend.prepare`).

    Attributes:
        resized: [h, w, 3] uint8, the photo as the backend's encoder takes it: SAM and SAM-HQ
            resize the longest side to the model's input side (PIL bilinear, as
            segment-anything); SAM 2 keeps the photo (it is squashed to its square input on the
            model's device).
        original_size: (H, W) of the photo.
        fingerprint: `image_fingerprint` of the photo.
    """

    resized: np.ndarray
    original_size: tuple[int, int]
    fingerprint: str


@dataclass(frozen=True)
class ImageEmbedding:
    """A model's embedding of one photo: what the decoder needs to segment it, whatever the prompts.

    Attributes:
        embedding: [1, C, h, w] image embedding on the model's device (SAM: [1, 256, 64, 64];
            SAM 2: its lowest-resolution feature level).
        original_size: (H, W) of the photo, for mapping prompts and masks.
        fingerprint: a digest of the photo's pixels: equal photos, equal fingerprints.
        extras: the other encoder outputs the decoder reads, each with batch size 1: none for
            SAM; SAM-HQ: the first global ViT block's features [1, h, w, C_vit]; SAM 2: its two
            high-resolution feature levels, finest first.
    """

    embedding: torch.Tensor
    original_size: tuple[int, int]
    fingerprint: str
    extras: tuple[torch.Tensor, ...] = ()


@dataclass(frozen=True)
class DecoderOutput:
    """Raw mask-decoder output for a batch of B prompts and C masks per prompt.

    Attributes:
        low_res_logits: [B, C, h, w] mask logits (SAM: 256 x 256 in the padded model-input frame;
            SAM 2: S/4 x S/4 of its square input).
        iou_predictions: [B, C] predicted mask IoU.
        mask_tokens: [B, C, D] the decoder's output token of each returned mask.
    """

    low_res_logits: torch.Tensor
    iou_predictions: torch.Tensor
    mask_tokens: torch.Tensor


@dataclass(frozen=True)
class Prompts:
    """N prompts of one photo, in its pixels; each given field has N rows.

    Attributes:
        points: [N, P, 2] (x, y), any float dtype and device; with `labels` [N, P] int (1 =
            foreground, 0 = background).
        boxes: [N, 4] xyxy.
        masks: [N, H, W] bool at the photo's size.
    """

    points: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    boxes: torch.Tensor | None = None
    masks: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.points is None and self.boxes is None and self.masks is None:
            raise ValueError("give points, boxes and/or masks")
        if (self.points is None) != (self.labels is None):
            raise ValueError("point_labels must be given with point_coords")
        counts = {len(value) for value in (self.points, self.boxes, self.masks) if value is not None}
        if len(counts) != 1:
            raise ValueError(f"prompt fields disagree on the number of prompts: {sorted(counts)}")

    @property
    def count(self) -> int:
        """N, the number of prompts."""
        return len(next(v for v in (self.points, self.boxes, self.masks) if v is not None))

    def chunk(self, start: int, stop: int) -> Prompts:
        """Prompts start..stop-1."""

        def part(value: torch.Tensor | None) -> torch.Tensor | None:
            return None if value is None else value[start:stop]

        return Prompts(part(self.points), part(self.labels), part(self.boxes), part(self.masks))

    def chunks(self, size: int) -> Iterator[Prompts]:
        """Successive chunks of at most `size` prompts."""
        for start in range(0, self.count, size):
            yield self.chunk(start, min(start + size, self.count))

    @classmethod
    def parse(
        cls,
        *,
        points: np.ndarray | torch.Tensor | Sequence | None,
        point_labels: np.ndarray | torch.Tensor | Sequence | None,
        boxes: np.ndarray | torch.Tensor | Sequence | None,
        masks: np.ndarray | torch.Tensor | Sequence | None = None,
        original_size: tuple[int, int],
    ) -> Prompts:
        """Validate user prompts and batch them on the CPU.

        Args:
            points: [P, 2] (x, y) in photo pixels, all part of every prompt (alone: one prompt).
            point_labels: [P] 1 = foreground, 0 = background; default all foreground.
            boxes: [B, 4] xyxy in photo pixels, one prompt each.
            masks: [M, H, W] bool at the photo's (H, W) `original_size`, one prompt each; with
                boxes, M == B and mask i joins box i.

        Raises:
            ValueError: a malformed prompt (the message names it), or none at all.
        """
        height, width = original_size
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
        return cls(point_tensor, label_tensor, box_tensor, mask_tensor)


def _as_tensor(values: np.ndarray | torch.Tensor | Sequence, dtype: torch.dtype) -> torch.Tensor:
    """A CPU tensor of `dtype` from a tensor (any device), array or nested sequence."""
    if isinstance(values, torch.Tensor):
        return values.detach().to("cpu", dtype)
    return torch.as_tensor(np.asarray(values), dtype=dtype)


@contextmanager
def capture_mask_tokens(model: SamModel) -> Iterator[list[torch.Tensor]]:
    """Collect SAM's mask-decoder output mask tokens while the block runs.

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


@contextmanager
def _capture_output(module: torch.nn.Module) -> Iterator[list]:
    """Collect the outputs of `module`'s forward calls in the block (hook removed on exit)."""
    outputs: list = []
    handle = module.register_forward_hook(lambda mod, args, output: outputs.append(output))
    try:
        yield outputs
    finally:
        handle.remove()


class SegmenterBackend(ABC):
    """One model's encoder, decoder and mask upscaling for a `Segmenter` (see the module docstring).

    Args:
        model: the transformers model, in eval mode.
    """

    #: Side of the model's square input, in pixels.
    image_size: int
    #: Which mask-decoder implementation decodes prompts ("fast" or "transformers").
    decoder: str = "transformers"

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model.eval()

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def feature_dim(self) -> int:
        """Width D of the mask tokens: the mask decoder's width (256 for every published model)."""
        return self.model.config.mask_decoder_config.hidden_size

    @abstractmethod
    def prepare(self, image: np.ndarray) -> np.ndarray:
        """`PreparedImage.resized` of an [H, W, 3] uint8 RGB photo (CPU work only)."""

    def encode(self, images: Sequence[PreparedImage]) -> list[ImageEmbedding]:
        """Embed photos in one encoder batch (they may differ in size)."""
        if not images:
            return []
        pixels = torch.cat([self._pixels(image.resized) for image in images])
        with torch.inference_mode():
            embeddings, extras = self._encode_pixels(pixels)
        return [
            ImageEmbedding(embedding[None], image.original_size, image.fingerprint, tuple(e[i : i + 1] for e in extras))
            for i, (embedding, image) in enumerate(zip(embeddings, images))
        ]

    @abstractmethod
    def _pixels(self, resized: np.ndarray) -> torch.Tensor:
        """[1, 3, S, S] encoder input of one `prepare`d photo, on the model's device and dtype."""

    @abstractmethod
    def _encode_pixels(self, pixels: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Image embeddings [B, C, h, w] and the extra decoder inputs (each [B, ...]) of a batch."""

    @abstractmethod
    def decode(self, image: ImageEmbedding, prompts: Prompts, *, multimask_output: bool) -> DecoderOutput:
        """Decode `prompts` against `image` (`DecoderOutput` with B = prompts.count).

        `multimask_output`: SAM's 3 candidate masks per prompt (SAM-HQ: the best of them, see the
        module docstring) instead of the single-mask output.
        """

    def decode_grid(
        self, image: ImageEmbedding, points: torch.Tensor, pred_iou_thresh: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The multimask output of single-point prompts, point-major, less the masks whose
        predicted IoU is <= `pred_iou_thresh` when that is > 0 (as SAM's automatic mask generator).

        Args:
            points: [P, 2] (x, y) in photo pixels, on the model's device.

        Returns:
            Low-res logits [K, h, w], predicted IoU [K], tokens [K, D] and the index of each
            mask's point in `points` [K].
        """
        labels = torch.ones(points.shape[0], 1, dtype=torch.int, device=points.device)
        output = self.decode(image, Prompts(points[:, None, :], labels), multimask_output=True)
        logits = output.low_res_logits.flatten(0, 1)
        iou = output.iou_predictions.flatten(0, 1)
        tokens = output.mask_tokens.flatten(0, 1)
        index = torch.arange(points.shape[0], device=points.device).repeat_interleave(output.iou_predictions.shape[1])
        if pred_iou_thresh > 0.0:  # filtering first spares upsampling rejected masks
            keep = iou > pred_iou_thresh
            logits, iou, tokens, index = logits[keep], iou[keep], tokens[keep], index[keep]
        return logits, iou, tokens, index

    @abstractmethod
    def upscale(self, low_res_logits: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
        """[n, h, w] decoder logits -> [n, H, W] logits at the photo's (H, W) `original_size`."""

    def upscale_chunk(self, original_size: tuple[int, int]) -> int:
        """Masks to upsample to full resolution together (see _UPSAMPLE_CHUNK, _CPU_UPSAMPLE_BYTES)."""
        if self.device.type != "cpu":
            return _UPSAMPLE_CHUNK
        return max(1, _CPU_UPSAMPLE_BYTES // (4 * self._largest_upscaled_area(original_size)))

    def _largest_upscaled_area(self, original_size: tuple[int, int]) -> int:
        """Pixels of the largest tensor one upsampled mask passes through."""
        return original_size[0] * original_size[1]


class SamBackend(SegmenterBackend):
    """Segment Anything (transformers' `SamModel`): segment-anything's transforms, RAM's token.

    Preprocessing is segment-anything's (`relate_anything.sam.transforms`): the longest side
    resized to the model's input size, normalised, zero-padded square; masks are upsampled as
    ``Sam.postprocess_masks``.

    Args:
        model: a `SamModel` in eval mode (see `load_sam`).
        decoder: "fast" decodes point and box prompts with `FastMaskDecoder` (same weights and
            outputs, without a copy of the image embedding per prompt, and the grid of "segment
            everything" never decodes masks that the predicted-IoU filter drops); "transformers"
            calls SamModel's forward (also used for mask prompts).
        decoder_chunk_size: prompts the fast decoder processes together (memory vs speed;
            default by device, see `FastMaskDecoder`).
    """

    def __init__(self, model: SamModel, *, decoder: str = "fast", decoder_chunk_size: int | None = None) -> None:
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
        super().__init__(model)
        self.decoder = decoder
        self.fast_decoder = FastMaskDecoder(model, chunk_size=decoder_chunk_size) if decoder == "fast" else None
        self.image_size: int = model.config.vision_config.image_size

    def prepare(self, image: np.ndarray) -> np.ndarray:
        return resize_longest_side(image, self.image_size)

    def _pixels(self, resized: np.ndarray) -> torch.Tensor:
        return normalize_and_pad(resized, image_size=self.image_size, device=self.device, dtype=self.dtype)

    def _encode_pixels(self, pixels: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        return self.model.get_image_embeddings(pixels), ()

    def decode(self, image: ImageEmbedding, prompts: Prompts, *, multimask_output: bool) -> DecoderOutput:
        if self.fast_decoder is not None and prompts.masks is None:
            inputs = self.prompt_inputs(prompts.points, prompts.labels, prompts.boxes, image.original_size)
            logits, iou, tokens = self.fast_decoder(
                image.embedding, self.sparse_embeddings(inputs), multimask_output=multimask_output
            )
            return DecoderOutput(logits, iou, tokens)
        inputs = self._model_inputs(image, prompts)
        with capture_mask_tokens(self.model) as tokens, torch.inference_mode():
            output = self.model(multimask_output=multimask_output, **inputs)
        mask_tokens = tokens[0].flatten(0, 1)  # [B, num_mask_tokens, D]
        mask_tokens = mask_tokens[:, 1:] if multimask_output else mask_tokens[:, :1]
        return DecoderOutput(output.pred_masks.flatten(0, 1), output.iou_scores.flatten(0, 1), mask_tokens)

    def decode_grid(
        self, image: ImageEmbedding, points: torch.Tensor, pred_iou_thresh: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.fast_decoder is None or pred_iou_thresh <= 0.0:
            return super().decode_grid(image, points, pred_iou_thresh)
        # Filtering first spares decoding the rejected masks at all.
        labels = torch.ones(points.shape[0], 1, dtype=torch.int, device=points.device)
        inputs = self.prompt_inputs(points[:, None, :], labels, None, image.original_size)
        logits, iou, tokens, index = self.fast_decoder.decode_above(
            image.embedding, self.sparse_embeddings(inputs), pred_iou_thresh
        )
        return logits, iou, tokens, index // 3

    def _model_inputs(self, image: ImageEmbedding, prompts: Prompts) -> dict[str, torch.Tensor]:
        """SamModel keyword inputs: B prompts of one image, or with mask prompts (which are dense)
        B copies of the image with one prompt each."""
        images = 1 if prompts.masks is None else prompts.count
        inputs = self.prompt_inputs(prompts.points, prompts.labels, prompts.boxes, image.original_size, images=images)
        inputs["image_embeddings"] = image.embedding.expand(images, -1, -1, -1)
        if prompts.masks is not None:
            inputs["input_masks"] = self._mask_inputs(prompts.masks, image.original_size).to(self.dtype)
        return inputs

    def prompt_inputs(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        original_size: tuple[int, int],
        *,
        images: int = 1,
    ) -> dict[str, torch.Tensor]:
        """SamModel keyword inputs in the resized model-input frame.

        Args:
            point_coords: [B, N, 2] (x, y) in photo pixels; point_labels: [B, N].
            boxes: [B, 4] xyxy in photo pixels.
            original_size: (H, W) of the photo.
            images: 1 (B prompts of one image) or B (one prompt per image-batch entry).
        """
        inputs: dict[str, torch.Tensor] = {}
        if point_coords is not None:
            if point_labels is None:
                raise ValueError("point_labels must be given with point_coords")
            coords = apply_coords(point_coords.to(self.device), original_size, self.image_size)
            inputs["input_points"] = coords.reshape(images, -1, *coords.shape[1:])
            labels = point_labels.to(self.device, torch.int)
            inputs["input_labels"] = labels.reshape(images, -1, *labels.shape[1:])
        if boxes is not None:
            corners = apply_coords(boxes.to(self.device).reshape(-1, 2, 2), original_size, self.image_size)
            inputs["input_boxes"] = corners.reshape(images, -1, 4)
        return inputs

    def sparse_embeddings(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """[B, S, D] prompt-encoder embeddings of `prompt_inputs` (one image)."""
        with torch.inference_mode():
            sparse, _ = self.model.prompt_encoder(
                input_points=inputs.get("input_points"),
                input_labels=inputs.get("input_labels"),
                input_boxes=inputs.get("input_boxes"),
                input_masks=None,
            )
        return sparse[0]

    def _mask_inputs(self, masks: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
        """[n, H, W] bool -> [n, 1, 256, 256] prompt logits in the padded model-input frame."""
        input_h, input_w = preprocess_shape(*original_size, self.image_size)
        resized = F.interpolate(
            masks.to(self.device)[:, None].float(), (input_h, input_w), mode="bilinear", antialias=True
        )
        square = F.pad((resized >= 0.5).float(), (0, self.image_size - input_w, 0, self.image_size - input_h))
        height, width = self.model.prompt_encoder.image_embedding_size
        return mask_prompt_logits(square, (4 * height, 4 * width))  # the mask embedding downsamples 4x

    def upscale(self, low_res_logits: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
        return postprocess_logits(low_res_logits[:, None], original_size, self.image_size)[:, 0]

    def _largest_upscaled_area(self, original_size: tuple[int, int]) -> int:
        height, width = original_size
        input_h, input_w = preprocess_shape(height, width, self.image_size)
        return max(height * width, input_h * input_w)  # the output of either upsampling step


class SamHQBackend(SamBackend):
    """SAM-HQ (transformers' `SamHQModel`): SAM's transforms and token, plus the HQ mask.

    The image encoder's first global block's features go to the decoder with the embedding
    (without them the HQ branch would silently lose its input). Prompts are decoded by
    transformers' forward, `_PROMPT_CHUNK` at a time.

    Args:
        model: a `SamHQModel` in eval mode (see `relate_anything.sam.loading`).
        hq_token_only: return the HQ token's mask alone instead of SAM's plus HQ's (the token
            stays SAM's, the one RAM-style heads read).
    """

    def __init__(self, model: SamHQModel, *, hq_token_only: bool = False) -> None:
        super().__init__(model, decoder="transformers")
        self.hq_token_only = hq_token_only

    def _encode_pixels(self, pixels: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        embeddings, intermediate = self.model.get_image_embeddings(pixels)
        return embeddings, (intermediate[0],)  # the only one SAM-HQ's decoder reads

    def decode(self, image: ImageEmbedding, prompts: Prompts, *, multimask_output: bool) -> DecoderOutput:
        parts = [self._decode(image, chunk, multimask_output) for chunk in prompts.chunks(_PROMPT_CHUNK)]
        return DecoderOutput(*(torch.cat(values) for values in zip(*parts)))

    def _decode(self, image: ImageEmbedding, prompts: Prompts, multimask_output: bool) -> tuple[torch.Tensor, ...]:
        inputs = self._model_inputs(image, prompts)
        images = inputs["image_embeddings"].shape[0]
        inputs["intermediate_embeddings"] = [image.extras[0].expand(images, -1, -1, -1)]
        with (
            _capture_output(self.model.mask_decoder.transformer) as queries,
            _capture_output(self.model.mask_decoder.iou_prediction_head) as all_iou,
            torch.inference_mode(),
        ):
            output = self.model(multimask_output=multimask_output, hq_token_only=self.hq_token_only, **inputs)
        # With multimask output transformers returns tokens 1..3's masks sorted by IoU; SAM-HQ's
        # own decoder returns the first of them only.
        logits = output.pred_masks.flatten(0, 1)[:, :1]  # [n, 1, h, w]
        iou = output.iou_scores.flatten(0, 1)[:, :1]  # [n, 1]
        rows = torch.arange(prompts.count, device=iou.device)
        if multimask_output:  # recompute transformers' order to find the token of the best mask
            order = torch.sort(all_iou[0].flatten(0, 1)[:, 1:4], dim=1, descending=True).indices
            token = 1 + order[:, 0]
        else:
            token = torch.zeros_like(rows)
        tokens = queries[0][0].flatten(0, 1)[rows, 1 + token]  # query 0 is the IoU token
        return logits, iou, tokens[:, None]

    def upscale(self, low_res_logits: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
        return super().upscale(low_res_logits.float(), original_size)


class Sam2Backend(SegmenterBackend):
    """SAM 2's image model (transformers' `Sam2Model`).

    Preprocessing is SAM 2's (`relate_anything.sam.sam2_ops`): the photo squashed to the model's
    square input on the model's device; prompt coordinates scaled per axis, as transformers'
    `Sam2Processor`; masks upsampled to the photo in one bilinear step, as SAM 2's predictor.
    Prompts are decoded by transformers' forward, `_PROMPT_CHUNK` at a time.

    Args:
        model: a `Sam2Model` in eval mode (see `relate_anything.sam.loading`, which also takes
            SAM 2 video folders).
    """

    def __init__(self, model: Sam2Model) -> None:
        super().__init__(model)
        self.image_size: int = model.config.prompt_encoder_config.image_size

    def prepare(self, image: np.ndarray) -> np.ndarray:
        check_rgb(image)
        return image

    def _pixels(self, resized: np.ndarray) -> torch.Tensor:
        return preprocess_square(resized, image_size=self.image_size, device=self.device, dtype=self.dtype)

    def _encode_pixels(self, pixels: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        levels = self.model.get_image_embeddings(pixels)  # finest first; the decoder's embedding last
        return levels[-1], tuple(levels[:-1])

    def decode(self, image: ImageEmbedding, prompts: Prompts, *, multimask_output: bool) -> DecoderOutput:
        parts = [self._decode(image, chunk, multimask_output) for chunk in prompts.chunks(_PROMPT_CHUNK)]
        return DecoderOutput(*(torch.cat(values) for values in zip(*parts)))

    def _decode(self, image: ImageEmbedding, prompts: Prompts, multimask_output: bool) -> tuple[torch.Tensor, ...]:
        n = prompts.count
        # Point and box prompts: one image, n prompts. Mask prompts are dense, one per image-batch
        # entry: n copies of the image, one prompt each.
        images, per_image = (1, n) if prompts.masks is None else (n, 1)
        levels = (*image.extras, image.embedding)
        inputs: dict[str, torch.Tensor | list[torch.Tensor]] = {
            "image_embeddings": [level.expand(images, -1, -1, -1) for level in levels]
        }
        if prompts.points is not None:
            points = self._scale(prompts.points, image.original_size)
            inputs["input_points"] = points.reshape(images, per_image, -1, 2)
            inputs["input_labels"] = prompts.labels.to(self.device, torch.int).reshape(images, per_image, -1)
        if prompts.boxes is not None:
            corners = self._scale(prompts.boxes.reshape(-1, 2, 2), image.original_size)
            inputs["input_boxes"] = corners.reshape(images, per_image, 4)
        if prompts.masks is not None:
            square = square_mask_inputs(prompts.masks.to(self.device), self.image_size)
            inputs["input_masks"] = mask_prompt_logits(square, self.model.prompt_encoder.mask_input_size).to(self.dtype)
        with _capture_output(self.model.mask_decoder) as outputs, torch.inference_mode():
            output = self.model(multimask_output=multimask_output, **inputs)
        tokens = outputs[0][2]  # sam_tokens_out: [images, per_image, C, D], the returned masks' tokens
        return output.pred_masks.flatten(0, 1), output.iou_scores.flatten(0, 1), tokens.flatten(0, 1)

    def _scale(self, coords: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
        """[..., 2] xy photo pixels -> the square input frame, in float32 as `Sam2Processor`."""
        height, width = original_size
        scale = torch.tensor([self.image_size / width, self.image_size / height], dtype=torch.float32)
        return (coords.float() * scale.to(coords.device)).to(self.device)

    def upscale(self, low_res_logits: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
        return upscale_logits(low_res_logits, original_size)


def backend_for(
    model: torch.nn.Module, *, decoder: str = "fast", decoder_chunk_size: int | None = None
) -> SegmenterBackend:
    """The backend of a transformers `SamModel`, `SamHQModel` or `Sam2Model`.

    `decoder` and `decoder_chunk_size` choose SAM's mask decoder (see `SamBackend`); SAM-HQ and
    SAM 2 always decode with transformers' forward.

    Raises:
        TypeError: another kind of model.
    """
    if isinstance(model, SamHQModel):
        return SamHQBackend(model)
    if isinstance(model, Sam2Model):
        return Sam2Backend(model)
    if isinstance(model, SamModel):
        return SamBackend(model, decoder=decoder, decoder_chunk_size=decoder_chunk_size)
    raise TypeError(f"a segmenter needs a SamModel, SamHQModel or Sam2Model, got {type(model).__name__}")

"""Segment by example with SegGPT: "find more of this" given example images and their masks.

`ExampleSegmenter` wraps transformers' `SegGptForImageSegmentation`. Given one or more examples
(an image and a boolean mask of the thing to find), it paints the target image's mask the way the
examples are painted (in-context segmentation). Several examples are combined by SegGPT's feature
ensemble: each example is one batch entry and the encoder averages the target's features across
them, as transformers' ``feature_ensemble=True`` and the original ``feat_ensemble``.

`example_segments` turns that mask into `SegmentationResult` segments (one per connected
component), with SAM features when a `Segmenter` is given, so they join the scene graph and the
relation head can relate them.

    >>> finder = ExampleSegmenter.from_pretrained(device="cuda")    # BAAI/seggpt-vit-large
    >>> example = load_example("dog1.jpg", "dog1_mask.png")
    >>> mask = finder.segment(load_image("park.jpg"), [example])     # [H, W] bool tensor
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy import ndimage
from transformers import SegGptForImageSegmentation

from relate_anything import weights
from relate_anything.boxes import masks_to_xyxy_inclusive
from relate_anything.errors import ImageError, UsageError
from relate_anything.image_io import check_rgb, load_image
from relate_anything.sam.segmenter import SegmentationResult
from relate_anything.seggpt.transforms import mask_probabilities, preprocess_image, preprocess_mask
from relate_anything.state_dicts import load_pretrained_folder

__all__ = [
    "Example",
    "ExampleError",
    "ExampleSegmenter",
    "check_examples",
    "connected_components",
    "example_segments",
    "load_example",
    "read_mask",
]

#: An example: RGB uint8 image [h, w, 3] and a boolean mask [h, w] of the thing to find.
Example = tuple[np.ndarray, np.ndarray]

#: Probability margin of `example_segments`' stability score (see there).
STABILITY_MARGIN = 0.1


class ExampleError(UsageError):
    """An example mask that does not fit its image, or that marks nothing."""


class ExampleSegmenter:
    """SegGPT in-context segmentation: find in a target image what the examples' masks mark.

    Args:
        model: a transformers `SegGptForImageSegmentation` (see `from_pretrained`), in eval mode.
        embedding_type: SegGPT's prompt type token, "instance" (the original demo's and
            transformers' default) or "semantic".

    Example:
        >>> finder = ExampleSegmenter.from_pretrained("BAAI/seggpt-vit-large", device="cuda")
        >>> mask = finder.segment(photo, [(example_image, example_mask)])   # [H, W] bool
    """

    def __init__(self, model: SegGptForImageSegmentation, *, embedding_type: str = "instance") -> None:
        if embedding_type not in ("instance", "semantic"):
            raise ValueError(f"embedding_type must be 'instance' or 'semantic', got {embedding_type!r}")
        self.model = model.eval()
        self.embedding_type = embedding_type
        # config.image_size is the stacked (example over target) input: [2 * h, w].
        height, width = model.config.image_size
        self.input_size: tuple[int, int] = (height // 2, width)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path | None = None,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        embedding_type: str = "instance",
    ) -> ExampleSegmenter:
        """Load SegGPT from a local folder or a hub id.

        Args:
            name_or_path: a ``save_pretrained`` folder or a hub id; default $RELATE_ANYTHING_SEGGPT
                or ``BAAI/seggpt-vit-large``. Resolved by `relate_anything.weights.resolve` (the
                Hugging Face cache first, then a download).
            device: where the model lives.
            dtype: parameter dtype (float16/bfloat16 halve memory on GPUs).

        Raises:
            WeightsNotFoundError: neither on disk nor in the cache, and not downloadable.
            CheckpointError: the folder is not a SegGPT model, or its weights do not fit its config.
        """
        path = weights.resolve(weights.SEGGPT_WEIGHTS.reference(name_or_path), weights.SEGGPT_WEIGHTS)
        model = load_pretrained_folder(path, {"seggpt": SegGptForImageSegmentation}, name="SegGPT")
        return cls(model.to(device=device, dtype=dtype).eval(), embedding_type=embedding_type)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def pixel_inputs(self, image: np.ndarray, examples: Sequence[Example]) -> dict[str, torch.Tensor]:
        """The model's keyword inputs for one target image and E examples.

        Returns:
            ``pixel_values`` (the target, repeated), ``prompt_pixel_values`` (the example images)
            and ``prompt_masks`` (the painted example masks), each [E, 3, h, w] in the model's
            dtype on its device; equal to `SegGptImageProcessor` (``num_labels=1``) output.
        """
        examples = check_examples(examples)
        target = preprocess_image(image, self.input_size)
        prompt_images = torch.stack([preprocess_image(example, self.input_size) for example, _ in examples])
        prompt_masks = torch.stack([preprocess_mask(mask, self.input_size) for _, mask in examples])
        inputs = {
            "pixel_values": target[None].expand(len(examples), -1, -1, -1),
            "prompt_pixel_values": prompt_images,
            "prompt_masks": prompt_masks,
        }
        return {name: value.to(self.device, self.dtype) for name, value in inputs.items()}

    @torch.inference_mode()
    def predict(self, image: np.ndarray, examples: Sequence[Example]) -> torch.Tensor:
        """Foreground probability of every pixel of `image` given the examples.

        Args:
            image: the target, [H, W, 3] uint8 RGB.
            examples: one or more (image [h, w, 3] uint8 RGB, mask [h, w] bool) pairs; each example
                may have its own size. Several are combined by feature ensemble.

        Returns:
            [H, W] float32 in [0, 1] on the model's device (see `transforms.mask_probabilities`).

        Raises:
            ExampleError: no examples, a mask not of its image's size, or an empty mask.
        """
        inputs = self.pixel_inputs(image, examples)
        output = self.model(
            **inputs,
            feature_ensemble=len(examples) > 1,
            embedding_type=self.embedding_type,
        )
        # With the ensemble every entry saw all examples; the original keeps the first ("y[0]").
        return mask_probabilities(output.pred_masks[0], (image.shape[0], image.shape[1]))

    def segment(self, image: np.ndarray, examples: Sequence[Example], *, threshold: float = 0.5) -> torch.Tensor:
        """The mask of what the examples mark, in `image`.

        Args:
            image: the target, [H, W, 3] uint8 RGB.
            examples: (image, mask) pairs as in `predict`.
            threshold: probability above which a pixel is foreground; 0.5 reproduces transformers'
                ``post_process_semantic_segmentation(..., num_labels=1)``.

        Returns:
            [H, W] bool tensor on the model's device.
        """
        return self.predict(image, examples) > threshold


def check_examples(examples: Sequence[Example]) -> list[Example]:
    """Validate (image, mask) pairs; masks become bool arrays.

    Raises:
        ExampleError: no examples, a mask whose size differs from its image's, or an empty mask.
        ImageError: an image that is not [h, w, 3] uint8.
    """
    if len(examples) == 0:
        raise ExampleError("segmenting by example needs at least one example (an image and its mask)")
    checked = []
    for index, (image, mask) in enumerate(examples, start=1):
        image, mask = np.asarray(image), np.asarray(mask)
        check_rgb(image, name=f"example {index}")
        name = f"example {index}"
        _check_mask(mask, image.shape[:2], mask_name=f"{name}'s mask", image_name=f"{name}'s image")
        checked.append((image, mask.astype(bool, copy=False)))
    return checked


def _check_mask(mask: np.ndarray, image_size: tuple[int, int], *, mask_name: str, image_name: str) -> None:
    if mask.shape != tuple(image_size):
        mask_size = "x".join(map(str, mask.shape[1::-1])) if mask.ndim >= 2 else str(mask.shape)
        raise ExampleError(
            f"{mask_name} is {mask_size} but {image_name} is {image_size[1]}x{image_size[0]} "
            "(width x height); the mask must have the example image's size"
        )
    if not mask.any():
        raise ExampleError(f"{mask_name} is empty: no pixel marks the thing to find")


def load_example(image_path: str | Path, mask_path: str | Path) -> Example:
    """Read an example image and its mask.

    The mask is a picture of the example image's size whose foreground is:
    - for images with transparency (RGBA, LA, palette with a transparent colour) that are not
      fully opaque: the non-transparent pixels (alpha > 0), so a cut-out works as a mask;
    - for palette images: pixels whose palette index is not 0 (VOC/DAVIS-style label maps);
    - otherwise: pixels with any non-zero channel (white-on-black, or a coloured painting).

    Returns:
        (image [h, w, 3] uint8 RGB, mask [h, w] bool), EXIF orientation applied to both.

    Raises:
        ImageError: the image or the mask is missing or unreadable.
        ExampleError: the mask's size differs from the image's (both sizes named), or it is empty.
    """
    image = load_image(image_path)
    mask = read_mask(mask_path)
    _check_mask(mask, image.shape[:2], mask_name=f"example mask {mask_path}", image_name=f"example image {image_path}")
    return image, mask


def read_mask(path: str | Path) -> np.ndarray:
    """A mask picture as bool [H, W] (foreground rules of `load_example`).

    Raises:
        ImageError: missing or unreadable file.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    try:
        with Image.open(path) as picture:
            picture.load()
            return _mask_from_picture(ImageOps.exif_transpose(picture))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"{path}: cannot read mask ({error})") from error


def _mask_from_picture(picture: Image.Image) -> np.ndarray:
    if picture.mode == "P" and "transparency" not in picture.info:
        return np.asarray(picture) != 0
    if picture.mode in ("RGBA", "LA", "PA", "P"):
        rgba = np.asarray(picture.convert("RGBA"))
        alpha = rgba[:, :, 3]
        if (alpha < 255).any():
            return alpha > 0
        values = rgba[:, :, :3]
    elif picture.mode in ("1", "L", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        values = np.asarray(picture)
    else:  # RGB, CMYK, YCbCr, ...
        values = np.asarray(picture.convert("RGB"))
    return values != 0 if values.ndim == 2 else (values != 0).any(axis=2)


def example_segments(
    example_segmenter: ExampleSegmenter,
    image: np.ndarray,
    examples: Sequence[Example],
    *,
    threshold: float = 0.5,
    min_area: int = 100,
) -> SegmentationResult:
    """Segments of everything in `image` that the examples mark, one per connected region.

    SegGPT's mask is split into 8-connected components; components smaller than `min_area`
    pixels are dropped (SegGPT paints at 448 x 448, so specks are upsampled noise). SegGPT gives
    masks only: `RelateAnything` prompts SAM with each segment's box to get the mask token the
    relation head needs.

    Args:
        example_segmenter: the SegGPT stage.
        image: the target, [H, W, 3] uint8 RGB.
        examples: (image, mask) pairs, see `ExampleSegmenter.predict`.
        threshold: SegGPT foreground probability threshold.
        min_area: smallest component kept, in pixels.

    Returns:
        `SegmentationResult` ordered by decreasing area, on SegGPT's device, with
        masks: SegGPT's components; iou_predictions: SegGPT's mean foreground probability inside
        the component (its confidence, in [threshold, 1]); stability_scores: the fraction of the
        component's pixels with probability > threshold + 0.1 (SAM's stability score, the area
        ratio of the mask at a stricter and a looser cut, in probability units; the looser cut
        is the component itself); boxes: xyxy, x1/y1 inclusive (SAM's convention); features:
        [N, 0] (none); point_coords: None.
    """
    height, width = image.shape[:2]
    probability = example_segmenter.predict(image, examples)
    masks = connected_components(probability > threshold, min_area=min_area)
    if len(masks) == 0:
        return SegmentationResult.empty((height, width), feature_dim=0, device=probability.device)
    areas = masks.flatten(1).sum(1)
    inside = masks.float()
    confidence = (inside * probability).flatten(1).sum(1) / areas
    stable = (masks & (probability > threshold + STABILITY_MARGIN)).flatten(1).sum(1) / areas
    return SegmentationResult(
        masks=masks,
        iou_predictions=confidence.float(),
        stability_scores=stable.float(),
        boxes=masks_to_xyxy_inclusive(masks),
        features=torch.zeros(len(masks), 0, device=masks.device),
    )


def connected_components(mask: torch.Tensor | np.ndarray, *, min_area: int = 0) -> torch.Tensor:
    """Split a boolean mask into its 8-connected regions.

    Args:
        mask: [H, W] bool (tensor on any device, or array).
        min_area: regions with fewer pixels are dropped.

    Returns:
        [N, H, W] bool on the mask's device (CPU for arrays), largest region first; ties keep
        scipy's label order (top-to-bottom, left-to-right by first pixel).
    """
    device = mask.device if isinstance(mask, torch.Tensor) else torch.device("cpu")
    array = mask.cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    labels, count = ndimage.label(array.astype(bool), structure=np.ones((3, 3), dtype=bool))
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    keep = [label for label in np.argsort(-areas, kind="stable") + 1 if areas[label - 1] >= max(min_area, 1)]
    labels_t = torch.from_numpy(labels).to(device)
    if not keep:
        return torch.zeros(0, *array.shape, dtype=torch.bool, device=device)
    ids = torch.tensor(keep, device=device).view(-1, 1, 1)
    return labels_t[None] == ids

"""Masks: the one home of mask arithmetic, dense and run-length encoded.

- Dense boolean masks [N, H, W] as torch tensors, on any device: `mask_areas`,
  `mask_intersections`, `mask_ious` (one exact matrix product of the flattened masks).
- COCO run-length encodings (what `SceneGraph` stores): `encode_masks`, `encode_label_map` (every
  region of a label map such as a panoptic PNG in one pass), `decode_mask`,
  `coco_rles`, `rle_areas`, `rle_intersections`, `rle_ious` (pycocotools works on the runs,
  without decoding pixels).

This module imports no torch at load time: the dense functions take tensors, so torch is
already there when they run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from pycocotools import mask as coco_mask

if TYPE_CHECKING:
    import torch

__all__ = [
    "LabelMapRegions",
    "coco_rles",
    "decode_mask",
    "encode_label_map",
    "encode_masks",
    "ious_from_intersections",
    "mask_areas",
    "mask_intersections",
    "mask_ious",
    "paired_mask_ious",
    "rle_areas",
    "rle_intersections",
    "rle_ious",
]

Rle = dict[str, Any]  # pycocotools' form: {"size": [h, w], "counts": bytes}

# Masks are run-length encoded ~16 MiB at a time: on CPUs, large fresh buffers cost more in page
# faults than the copy into COCO's column order.
_ENCODE_CHUNK_BYTES = 16 << 20
# Pixels per chunk when multiplying flattened masks; bounds the float copy to 64 MiB and keeps
# every partial count below 2**24, where float32 still counts pixels exactly.
_INTERSECTION_CHUNK_ELEMENTS = 1 << 24


# -- dense masks (torch) ----------------------------------------------------------------------


def mask_areas(masks: torch.Tensor) -> torch.Tensor:
    """[...] int32 pixel counts of boolean masks [..., H, W].

    Summing as uint8 into int16 per row, then the rows into int32, is about three times as fast
    as torch's default int64 sum of booleans on CPUs; a row count fits int16 for rows narrower
    than 2**15 (wider ones are summed into int32 directly), and int32 any image under 2**31 pixels.
    """
    import torch

    as_bytes = masks.view(torch.uint8)
    if as_bytes.shape[-1] < 2**15:
        return as_bytes.sum(-1, dtype=torch.int16).sum(-1, dtype=torch.int32)
    return as_bytes.flatten(-2).sum(-1, dtype=torch.int32)


def mask_intersections(masks_a: torch.Tensor, masks_b: torch.Tensor | None = None) -> torch.Tensor:
    """[Na, Nb] int64 pixel counts of the intersections of boolean masks [Na, H, W] and
    [Nb, H, W] (`masks_b` None: `masks_a` with itself; the diagonal then holds the areas).

    One matrix product of the flattened masks on their device, done in pixel chunks so the float
    copy stays bounded and every partial sum is exact in float32 (below 2**24).
    """
    import torch

    if masks_b is not None and masks_a.shape[1:] != masks_b.shape[1:]:
        raise ValueError(f"masks must have one size, got {tuple(masks_a.shape[1:])} and {tuple(masks_b.shape[1:])}")
    flat_a = masks_a.flatten(1)
    flat_b = flat_a if masks_b is None else masks_b.to(masks_a.device).flatten(1)
    rows = flat_a.shape[0] + (0 if masks_b is None else flat_b.shape[0])
    pixels = flat_a.shape[1]
    chunk = max(1, min(pixels, _INTERSECTION_CHUNK_ELEMENTS // max(rows, 1), (1 << 24) - 1))
    total = torch.zeros(flat_a.shape[0], flat_b.shape[0], dtype=torch.int64, device=masks_a.device)
    for start in range(0, pixels, chunk):
        part_a = flat_a[:, start : start + chunk].float()
        part_b = part_a if masks_b is None else flat_b[:, start : start + chunk].float()
        total += (part_a @ part_b.T).round().long()
    return total


def mask_ious(masks_a: torch.Tensor, masks_b: torch.Tensor | None = None, *, empty: float = 0.0) -> torch.Tensor:
    """[Na, Nb] float64 IoU |A∩B| / |A∪B| of boolean masks [Na, H, W] and [Nb, H, W] (`masks_b`
    None: `masks_a` with itself), on the masks' device.

    Args:
        empty: the IoU of two empty masks (0: they match nothing; 1: equal masks are duplicates).
    """
    if masks_b is not None:
        masks_b = masks_b.to(masks_a.device)  # once, for the intersections and the areas
    intersections = mask_intersections(masks_a, masks_b)
    if masks_b is None:
        areas_a = areas_b = intersections.diagonal()
    else:
        areas_a, areas_b = mask_areas(masks_a), mask_areas(masks_b)
    return ious_from_intersections(intersections, areas_a, areas_b, empty=empty)


def paired_mask_ious(masks_a: torch.Tensor, masks_b: torch.Tensor, *, empty: float = 0.0) -> torch.Tensor:
    """[N] float64 IoU of each mask of [N, H, W] with the mask of [N, H, W] in the same row (the
    diagonal of `mask_ious`, without the other N^2 - N pairs)."""
    masks_b = masks_b.to(masks_a.device)
    intersections = mask_areas(masks_a & masks_b).double()
    union = mask_areas(masks_a).double() + mask_areas(masks_b).double() - intersections
    return (intersections / union.clamp(min=1)).where(union > 0, intersections.new_full((), float(empty)))


def ious_from_intersections(intersections, areas_a, areas_b, *, empty: float = 0.0):
    """IoU [Na, Nb] float64 from pixel intersections [Na, Nb] and areas [Na], [Nb] (numpy arrays
    or torch tensors, returned in kind); a zero union gives `empty`."""
    if isinstance(intersections, np.ndarray):
        inter = intersections.astype(np.float64)
        union = np.asarray(areas_a, np.float64)[:, None] + np.asarray(areas_b, np.float64)[None, :] - inter
        return np.divide(inter, union, out=np.full(inter.shape, float(empty)), where=union > 0)
    inter = intersections.double()
    union = areas_a.double()[:, None] + areas_b.double()[None, :] - inter
    return (inter / union.clamp(min=1)).where(union > 0, inter.new_full((), float(empty)))


# -- run-length encodings (pycocotools) ---------------------------------------------------------


def encode_masks(masks: np.ndarray | torch.Tensor) -> list[dict[str, Any]]:
    """Run-length encode boolean masks [N, H, W] as COCO RLE dicts with str counts.

    `masks` may be a numpy array or a torch tensor on any device. On a CPU, the masks are put in
    COCO's column-major order and pycocotools encodes them. On a GPU, the run boundaries are
    found there and only they are copied to the host (`_device_run_lengths`), not the masks.
    """
    if masks.ndim != 3:
        raise ValueError(f"masks must be [N, H, W], got shape {tuple(masks.shape)}")
    if not len(masks):
        return []
    step = max(1, _ENCODE_CHUNK_BYTES // max(1, masks.shape[1] * masks.shape[2]))
    encoded = []
    for start in range(0, len(masks), step):
        chunk = masks[start : start + step]
        if hasattr(chunk, "detach") and chunk.device.type != "cpu":
            height, width = chunk.shape[1:]
            runs = [{"size": [height, width], "counts": counts} for counts in _device_run_lengths(chunk)]
            encoded += coco_mask.frPyObjects(runs, height, width)
        else:
            encoded += coco_mask.encode(_column_major_uint8(chunk))
    return [{"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")} for rle in encoded]


def _device_run_lengths(masks: torch.Tensor) -> list[list[int]]:
    """COCO's uncompressed run lengths of [N, H, W] masks, computed where the masks are.

    Runs alternate 0s and 1s down the columns, starting with 0s (a leading 0 when the first
    pixel is set). Only the positions where a column-major mask changes value travel to the
    host: a few per column for real segments instead of every pixel.
    """
    import torch

    count, height, width = masks.shape
    pixels = height * width
    flat = masks.detach().bool().transpose(1, 2).reshape(count, pixels)
    changes = flat[:, 1:] != flat[:, :-1]  # [N, P - 1], True before each new run
    per_mask = changes.sum(dim=1).cpu().numpy()
    positions = (changes.flatten().nonzero()[:, 0] % max(pixels - 1, 1) + 1).to(torch.int32).cpu().numpy()
    starts_set = flat[:, 0].cpu().numpy()
    bounds = np.concatenate([[0], np.cumsum(per_mask)])
    result = []
    for index in range(count):
        edges = np.concatenate([[0], positions[bounds[index] : bounds[index + 1]], [pixels]])
        runs = np.diff(edges).tolist()
        result.append([0, *runs] if starts_set[index] else runs)
    return result


def _column_major_uint8(masks: np.ndarray | torch.Tensor) -> np.ndarray:
    """[N, H, W] masks as the Fortran-ordered [H, W, N] uint8 array pycocotools encodes."""
    if hasattr(masks, "detach"):
        columns = masks.detach().bool().transpose(1, 2).contiguous().cpu().numpy()  # [N, W, H]
        return columns.view(np.uint8).transpose(2, 1, 0)  # [H, W, N], Fortran order without a copy
    return np.asfortranarray(np.asarray(masks).transpose(1, 2, 0).astype(np.uint8))


@dataclass(frozen=True)
class LabelMapRegions:
    """The regions of a label map, one per non-zero value, from `encode_label_map`.

    Attributes:
        ids: [N] int64, the label values, ascending.
        masks: N COCO RLE dicts `{"size": [h, w], "counts": str}`.
        areas: [N] int64 pixel counts.
        boxes: [N, 4] int64 (x0, y0, x1, y1) pixel edges.
    """

    ids: np.ndarray
    masks: list[dict[str, Any]]
    areas: np.ndarray
    boxes: np.ndarray


def encode_label_map(labels: np.ndarray) -> LabelMapRegions:
    """Run-length encode every region of a label map [H, W] (0 = void) in one pass.

    A panoptic PNG holds one id per pixel; splitting it into N boolean masks and encoding those
    (`encode_masks`) costs N full-image passes (27 ms for 20 regions at 640x480). Here the
    column-major runs of the whole map are found once and grouped by value, so the cost is one
    pass plus the runs (1.9 ms), which is what reading thousands of video frames needs.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be [H, W], got shape {labels.shape}")
    height, width = labels.shape
    pixels = height * width
    flat = np.ascontiguousarray(labels.T).reshape(-1)  # COCO counts run down the columns
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate([[0], change]).astype(np.int64)
    ends = np.concatenate([change, [pixels]]).astype(np.int64)
    order = np.argsort(flat[starts], kind="stable")  # runs grouped by value, in image order
    values, starts, ends = flat[starts][order], starts[order], ends[order]
    ids, first, count = np.unique(values, return_index=True, return_counts=True)
    previous_end = np.empty_like(ends)
    previous_end[1:] = ends[:-1]
    previous_end[first] = 0
    # COCO counts alternate zeros and ones, starting with zeros: gap, run, gap, run, ..., tail.
    interleaved = np.empty(2 * len(starts), dtype=np.uint32)
    interleaved[0::2] = starts - previous_end
    interleaved[1::2] = ends - starts
    # Boxes: a run inside one column spans its rows; one that wraps spans every row.
    same_column = starts // height == (ends - 1) // height
    row_min = np.where(same_column, starts % height, 0)
    row_max = np.where(same_column, (ends - 1) % height, height - 1)
    keep = ids != 0
    ids, first, count = ids[keep], first[keep], count[keep]
    last = first + count - 1
    uncompressed = []
    for start, n in zip(first.tolist(), count.tolist()):
        tail = pixels - int(ends[start + n - 1])
        counts = np.empty(2 * n + (tail > 0), dtype=np.uint32)  # no trailing 0, as pycocotools writes
        counts[: 2 * n] = interleaved[2 * start : 2 * (start + n)]
        counts[2 * n :] = tail
        uncompressed.append({"size": [height, width], "counts": counts})
    encoded = coco_mask.frPyObjects(uncompressed, height, width) if uncompressed else []
    lengths = ends - starts
    areas = np.add.reduceat(lengths, first) if len(first) else np.zeros(0, dtype=np.int64)
    boxes = np.stack(
        [
            starts[first] // height,
            np.minimum.reduceat(row_min, first) if len(first) else first,
            (ends[last] - 1) // height + 1,
            (np.maximum.reduceat(row_max, first) + 1) if len(first) else first,
        ],
        axis=1,
    ).astype(np.int64)
    return LabelMapRegions(
        ids=ids.astype(np.int64),
        masks=[{"size": [height, width], "counts": r["counts"].decode("ascii")} for r in encoded],
        areas=areas.astype(np.int64),
        boxes=boxes.reshape(-1, 4),
    )


def coco_rles(rles: Sequence[dict[str, Any]]) -> list[Rle]:
    """RLE dicts (str or bytes counts, as scene graphs store them) in the form pycocotools' C
    code takes."""
    out = []
    for rle in rles:
        counts = rle["counts"]
        out.append({"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts})
    return out


def decode_mask(rle: dict[str, Any]) -> np.ndarray:
    """Decode one COCO RLE dict (str or bytes counts) into a boolean mask [H, W]."""
    return coco_mask.decode(coco_rles([rle])[0]).astype(bool)


def rle_areas(rles: Sequence[dict[str, Any]]) -> np.ndarray:
    """Pixel counts, int64 [N], of RLEs (str or bytes counts).

    pycocotools' `area` builds a uint8 array from the number of masks (numpy 2 refuses more
    than 255), so it is called on at most 255 at a time.
    """
    rles = coco_rles(rles)
    chunks = [
        np.asarray(coco_mask.area(rles[i : i + 255]), dtype=np.int64).reshape(-1) for i in range(0, len(rles), 255)
    ]
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)


def rle_ious(a: Sequence[dict[str, Any]], b: Sequence[dict[str, Any]]) -> np.ndarray:
    """IoU |A∩B| / (|A|+|B|-|A∩B|) of every pair of RLEs of one image, float64 [len(a), len(b)].

    Two empty masks have IoU 0.
    """
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)), dtype=np.float64)
    ious = coco_mask.iou(coco_rles(a), coco_rles(b), [0] * len(b))
    return np.asarray(ious, dtype=np.float64).reshape(len(a), len(b))


def rle_intersections(a: Sequence[dict[str, Any]], b: Sequence[dict[str, Any]]) -> np.ndarray:
    """Pixel counts |A∩B| of every pair of RLEs of one image, int64 [len(a), len(b)].

    pycocotools' "crowd" IoU is |A∩B| / |A|; multiplying back by |A| and rounding is exact for
    any image below 2**52 pixels.
    """
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)), dtype=np.int64)
    a, b = coco_rles(a), coco_rles(b)
    ratio = np.asarray(coco_mask.iou(a, b, [1] * len(b)), dtype=np.float64).reshape(len(a), len(b))
    return np.rint(ratio * rle_areas(a)[:, None]).astype(np.int64)

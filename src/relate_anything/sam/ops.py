"""Tensor operations of SAM's automatic mask generation, in plain torch (no torchvision).

All functions run on whatever device their inputs live on; on GPUs, greedy suppression takes a
few whole-matrix rounds (one host sync each) instead of a kernel per candidate.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "box_iou",
    "boxes_from_logits",
    "build_point_grid",
    "greedy_suppression",
    "mask_areas",
    "mask_intersections",
    "masks_to_boxes",
    "nms",
    "remove_duplicate_masks",
    "stability_score",
]

# Pixels per chunk when multiplying flattened masks; bounds the float copy to 64 MiB and keeps
# every partial count below 2**24, where float32 still counts pixels exactly.
_INTERSECTION_CHUNK_ELEMENTS = 1 << 24


def build_point_grid(points_per_side: int) -> torch.Tensor:
    """[n*n, 2] float64 (x, y) grid of cell centres in [0, 1]², row-major (y outer, x inner).

    Same points and order as segment-anything's ``build_point_grid``: offset 1/(2n) from each edge.
    numpy's linspace is used because torch's differs from it in the last bit.
    """
    offset = 1 / (2 * points_per_side)
    side = torch.from_numpy(np.linspace(offset, 1 - offset, points_per_side))
    ys, xs = torch.meshgrid(side, side, indexing="ij")
    return torch.stack([xs, ys], dim=-1).reshape(-1, 2)


def stability_score(logits: torch.Tensor, mask_threshold: float, offset: float) -> torch.Tensor:
    """IoU of the masks thresholded at ``mask_threshold ± offset`` (SAM's stability score).

    Args:
        logits: [..., H, W] mask logits.

    Returns:
        [...] float32; the high-threshold mask is a subset of the low one, so IoU = |high| / |low|.
        An empty low mask gives NaN (0/0), as in the original.
    """
    return _count_above(logits, mask_threshold + offset).float() / _count_above(logits, mask_threshold - offset).float()


def _count_above(logits: torch.Tensor, threshold: float) -> torch.Tensor:
    """[...] int32 number of pixels of [..., H, W] logits above `threshold`."""
    return mask_areas(logits > threshold)


def mask_areas(masks: torch.Tensor) -> torch.Tensor:
    """[...] int32 pixel counts of boolean masks [..., H, W].

    Summing as uint8 into int16 per row, then the rows into int32, is about three times as fast
    as torch's default int64 sum of booleans on CPUs; a row count fits int16 for rows narrower
    than 2**15 (wider ones are summed into int32 directly), and int32 any image under 2**31 pixels.
    """
    as_bytes = masks.view(torch.uint8)
    if as_bytes.shape[-1] < 2**15:
        return as_bytes.sum(-1, dtype=torch.int16).sum(-1, dtype=torch.int32)
    return as_bytes.flatten(-2).sum(-1, dtype=torch.int32)


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight xyxy boxes of boolean masks, as segment-anything's ``batched_mask_to_box``.

    Args:
        masks: [N, H, W] bool.

    Returns:
        [N, 4] float32 (x0, y0, x1, y1) where x1, y1 are the indices of the last mask column/row
        (inclusive, SAM's convention); an empty mask gives [0, 0, 0, 0].
    """
    if masks.shape[0] == 0:
        return torch.zeros(0, 4, device=masks.device)
    return _occupancy_to_boxes(masks.any(dim=2), masks.any(dim=1))


def boxes_from_logits(logits: torch.Tensor, mask_threshold: float) -> torch.Tensor:
    """`masks_to_boxes(logits > mask_threshold)` without forming the masks.

    A row (column) holds a mask pixel exactly when its largest logit is above the threshold, and
    a float max-reduction is several times faster than thresholding then reducing booleans.

    Args:
        logits: [N, H, W] float mask logits (no NaN).

    Returns:
        [N, 4] float32 boxes, as `masks_to_boxes`.
    """
    if logits.shape[0] == 0:
        return torch.zeros(0, 4, device=logits.device)
    return _occupancy_to_boxes(logits.amax(dim=2) > mask_threshold, logits.amax(dim=1) > mask_threshold)


def _occupancy_to_boxes(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Boxes from [N, H] rows and [N, W] columns that hold mask pixels (SAM's convention)."""
    h, w = rows.shape[1], cols.shape[1]
    y_index = torch.arange(h, device=rows.device)
    x_index = torch.arange(w, device=rows.device)
    y0 = torch.where(rows, y_index, h).amin(dim=1)
    y1 = torch.where(rows, y_index, -1).amax(dim=1)
    x0 = torch.where(cols, x_index, w).amin(dim=1)
    x1 = torch.where(cols, x_index, -1).amax(dim=1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1)
    empty = ~rows.any(dim=1)
    return torch.where(empty[:, None], 0, boxes).float()


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """[N, M] IoU of xyxy boxes [N, 4] and [M, 4], area = (x1 - x0) * (y1 - y0) as torchvision.

    Pairs with zero union give 0.
    """
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    top_left = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[:, None] + area2[None, :] - inter
    return torch.where(union > 0, inter / union, torch.zeros_like(inter))


def greedy_suppression(suppresses: torch.Tensor, *, max_rounds: int = 64) -> torch.Tensor:
    """Greedy non-maximum suppression over a precomputed relation, candidates in rank order.

    Args:
        suppresses: [N, N] bool; ``suppresses[i, j]`` says candidate i, if kept, removes j.
            Row/column order is the rank order (best first); only j > i is consulted.
        max_rounds: on GPUs, rounds of the parallel iteration before finishing one candidate
            at a time (see `_suppression_rounds`).

    Returns:
        [N] bool, which candidates are kept: exactly the greedy loop's answer.

    On a CPU the candidates are visited one at a time (N row operations, N^2 work in all); on
    a GPU, where N small kernels cost more than their work, a few whole-matrix rounds decide
    all of them at once.
    """
    later = torch.ones_like(suppresses, dtype=torch.bool).triu(diagonal=1)
    suppresses = suppresses & later
    if suppresses.device.type == "cpu":
        return _sequential_suppression(suppresses, start=torch.ones(len(suppresses), dtype=torch.bool))
    return _suppression_rounds(suppresses, max_rounds)


def _sequential_suppression(suppresses: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """The greedy loop over an upper-triangular relation; `start` marks candidates still open."""
    removed = ~start
    for i in range(len(suppresses)):
        removed |= suppresses[i] & ~removed[i]
    return ~removed


def _suppression_rounds(suppresses: torch.Tensor, max_rounds: int) -> torch.Tensor:
    """Greedy suppression of an upper-triangular relation in whole-matrix rounds.

    The greedy answer is the one assignment with kept[j] = not any(kept[i] and suppresses[i, j]
    for i < j) (by induction over the rank). Iterating that rule for all candidates at once,
    from "all kept", fixes every candidate whose chain of possible suppressors is shorter than
    the round count, and a round that changes nothing has reached the answer. Real chains are
    short (4 rounds for 3,072 random boxes at IoU 0.7; each round is one [N, N] reduction and
    one host sync); past `max_rounds`, the one-at-a-time loop finishes exactly.
    """
    kept = torch.ones(len(suppresses), dtype=torch.bool, device=suppresses.device)
    for _ in range(max_rounds):
        updated = ~(suppresses & kept[:, None]).any(dim=0)
        if torch.equal(updated, kept):
            return kept
        kept = updated
    return _sequential_suppression(suppresses, start=torch.ones_like(kept))


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indices of boxes kept by greedy NMS, by decreasing score (torchvision's ``nms`` semantics).

    Args:
        boxes: [N, 4] xyxy float.
        scores: [N] float; ties keep the lower index first (stable sort).
        iou_threshold: a box is discarded when its IoU with a kept, higher-scoring box is
            strictly greater than this.

    Returns:
        [K] int64 indices into `boxes`, best first.
    """
    order = torch.sort(scores, descending=True, stable=True).indices
    ranked = boxes[order]
    keep = greedy_suppression(box_iou(ranked, ranked) > iou_threshold)
    return order[keep]


def mask_intersections(masks: torch.Tensor) -> torch.Tensor:
    """[N, N] int64 pixel counts of pairwise intersections of boolean masks [N, H, W].

    One matrix product of the flattened masks, done in pixel chunks so the float copy stays
    bounded and every partial sum is exact in float32 (below 2**24).
    """
    flat = masks.flatten(1)
    n, pixels = flat.shape
    chunk = max(1, min(pixels, _INTERSECTION_CHUNK_ELEMENTS // max(n, 1), (1 << 24) - 1))
    total = torch.zeros(n, n, dtype=torch.int64, device=masks.device)
    for start in range(0, pixels, chunk):
        part = flat[:, start : start + chunk].float()
        total += (part @ part.T).round().long()
    return total


def remove_duplicate_masks(masks: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indices of masks kept after dropping near-duplicates, larger masks first (as RAM does).

    Masks are visited by decreasing area (ties: lower index first); a mask whose mask IoU with an
    already kept mask is >= `iou_threshold` is dropped.

    Args:
        masks: [N, H, W] bool.

    Returns:
        [K] int64 indices into `masks`, in decreasing-area order.
    """
    intersections = mask_intersections(masks)
    areas = intersections.diagonal()
    order = torch.sort(areas, descending=True, stable=True).indices
    inter = intersections[order][:, order].double()
    ranked_areas = areas[order].double()
    union = ranked_areas[:, None] + ranked_areas[None, :] - inter
    iou = torch.where(union > 0, inter / union, torch.ones_like(inter))  # two empty masks are identical
    return order[greedy_suppression(iou >= iou_threshold)]

"""Tensor operations of SAM's automatic mask generation, in plain torch (no torchvision).

All functions run on whatever device their inputs live on; on GPUs, greedy suppression takes a
few whole-matrix rounds (one host sync each) instead of a kernel per candidate.
"""

from __future__ import annotations

import numpy as np
import torch

from relate_anything.boxes import box_iou, occupancy_to_xyxy_inclusive
from relate_anything.masks import ious_from_intersections, mask_areas, mask_intersections

__all__ = [
    "boxes_from_logits",
    "build_point_grid",
    "greedy_suppression",
    "nms",
    "remove_duplicate_masks",
    "stability_score",
]


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


def boxes_from_logits(logits: torch.Tensor, mask_threshold: float) -> torch.Tensor:
    """`masks_to_xyxy_inclusive(logits > mask_threshold)` without forming the masks.

    A row (column) holds a mask pixel exactly when its largest logit is above the threshold, and
    a float max-reduction is several times faster than thresholding then reducing booleans.

    Args:
        logits: [N, H, W] float mask logits (no NaN).

    Returns:
        [N, 4] float32 boxes, as `boxes.masks_to_xyxy_inclusive`.
    """
    if logits.shape[0] == 0:
        return torch.zeros(0, 4, device=logits.device)
    return occupancy_to_xyxy_inclusive(logits.amax(dim=2) > mask_threshold, logits.amax(dim=1) > mask_threshold)


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
    areas = intersections.diagonal()  # a mask's intersection with itself
    order = torch.sort(areas, descending=True, stable=True).indices
    iou = ious_from_intersections(intersections, areas, areas, empty=1.0)[order][:, order]  # empty masks: identical
    return order[greedy_suppression(iou >= iou_threshold)]

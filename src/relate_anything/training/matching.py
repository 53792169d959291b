"""Matching SAM masks to ground-truth masks, and moving ground-truth relations onto SAM's masks.

RAM trains its relation head on SAM's masks, not on the dataset's: for each training image the
(already de-duplicated) SAM masks are matched to the ground-truth segments by mask IoU, and each
ground-truth relation (subject segment, object segment, predicate) is rewritten onto the matched
SAM mask indices. Relations whose subject or object has no matched SAM mask are dropped.

The rule (format.md, "RAM's training-data preparation"; the authors' ram_collect.py):

- SAM -> GT: each SAM mask's best ground-truth mask, if their IoU is > 0.6;
- GT -> SAM: each ground-truth mask's best SAM mask, if their IoU is > 0.5;
- a pair (SAM mask m, GT mask g) is kept when it is found in both directions (a mutual match),
  so the result is one-to-one.

IoU is symmetric, so a kept pair always has IoU > max(0.6, 0.5) = 0.6; the two thresholds only
decide which candidates may be "best" in each direction. Ties go to the lower index.

The authors' loop keeps, per direction, every running-maximum candidate rather than only the best
one and then intersects the two lists; for ground truth that does not overlap (a panoptic
segmentation, as PSG's) and thresholds >= 0.5 that selects exactly the mutual best matches above,
because a mask can have IoU > 0.5 with at most one of several disjoint masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from relate_anything.masks import mask_ious

__all__ = ["MaskMatch", "match_masks", "rewrite_relations"]


@dataclass(frozen=True)
class MaskMatch:
    """A one-to-one matching of N SAM masks and M ground-truth masks.

    Attributes:
        sam_to_gt: [N] int64 numpy array, the matched ground-truth index of each SAM mask, -1 if none.
        gt_to_sam: [M] int64 numpy array, the matched SAM index of each ground-truth mask, -1 if none.
        iou: [N, M] float32 numpy array, the IoU matrix the matching was made from.
    """

    sam_to_gt: np.ndarray
    gt_to_sam: np.ndarray
    iou: np.ndarray

    @property
    def num_matched(self) -> int:
        return int((self.gt_to_sam >= 0).sum())


def match_masks(
    sam_masks: torch.Tensor,
    gt_masks: torch.Tensor,
    *,
    sam_to_gt_iou: float = 0.6,
    gt_to_sam_iou: float = 0.5,
) -> MaskMatch:
    """RAM's mutual best matching of SAM masks [N, H, W] and ground-truth masks [M, H, W] (bool).

    See the module docstring for the exact rule. Runs on the masks' device; one IoU product.
    """
    n, m = sam_masks.shape[0], gt_masks.shape[0]
    sam_to_gt = np.full(n, -1, dtype=np.int64)
    gt_to_sam = np.full(m, -1, dtype=np.int64)
    if n == 0 or m == 0:
        return MaskMatch(sam_to_gt, gt_to_sam, np.zeros((n, m), dtype=np.float32))
    iou = mask_ious(sam_masks, gt_masks).float().cpu().numpy()
    best_gt = iou.argmax(axis=1)  # argmax: the first index among ties
    best_sam = iou.argmax(axis=0)
    sam_ok = iou[np.arange(n), best_gt] > sam_to_gt_iou
    gt_ok = iou[best_sam, np.arange(m)] > gt_to_sam_iou
    for sam_index in np.flatnonzero(sam_ok):
        gt_index = best_gt[sam_index]
        if gt_ok[gt_index] and best_sam[gt_index] == sam_index:
            sam_to_gt[sam_index] = gt_index
            gt_to_sam[gt_index] = sam_index
    return MaskMatch(sam_to_gt, gt_to_sam, iou)


def rewrite_relations(relations: np.ndarray, gt_to_sam: np.ndarray) -> np.ndarray:
    """Ground-truth relations moved onto SAM mask indices.

    Args:
        relations: [R, 3] int (subject GT index, object GT index, predicate id).
        gt_to_sam: [M] int, SAM index of each GT mask or -1 (`MaskMatch.gt_to_sam`).

    Returns:
        [R', 3] int64 (subject SAM index, object SAM index, predicate id): the relations whose
        subject and object are both matched, without duplicates or self-pairs, sorted. The fraction
        kept is `len(result) / len(relations)` (duplicates in the input count as dropped).
    """
    relations = np.asarray(relations, dtype=np.int64).reshape(-1, 3)
    if len(relations) == 0:
        return np.zeros((0, 3), dtype=np.int64)
    subjects = gt_to_sam[relations[:, 0]]
    objects = gt_to_sam[relations[:, 1]]
    keep = (subjects >= 0) & (objects >= 0) & (subjects != objects)
    rewritten = np.stack([subjects[keep], objects[keep], relations[keep, 2]], axis=1)
    return np.unique(rewritten, axis=0) if len(rewritten) else np.zeros((0, 3), dtype=np.int64)

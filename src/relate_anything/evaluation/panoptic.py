"""Panoptic quality (PQ, SQ, RQ) of predicted segmentations, as COCO's panopticapi computes it.

COCO's PQ compares two non-overlapping label maps. Scene graphs hold overlapping masks (SAM's
certainly overlap), so each side is first painted into a label map, in memory as RLE:
- predictions: labeled segments painted from the lowest `score` to the highest, so where masks
  overlap the higher-scored segment owns the pixels (equal scores: the segment listed first
  wins); a segment left with no visible pixel does not exist. Unlabeled segments are ignored
  (neither painted nor counted).
- ground truth: painted the same way (PSG's ground truth comes from a panoptic PNG and never
  overlaps, so this changes nothing there); unlabeled ground-truth segments are void.
Then, per image and per category (`Segment.category`: the PSG name of its category id, else its label): a predicted and a ground-truth segment of
the same category match when IoU > 0.5, where, as in panopticapi, the predicted segment's
pixels on void (pixels of no ground-truth segment) are left out of the union; matches are unique
because the label maps do not overlap. Unmatched ground-truth segments are false negatives;
unmatched predicted segments are false positives unless more than half of their pixels lie on
void. There are no crowd regions (scene graphs carry no iscrowd flag).
Over the dataset, per category: PQ = Σ IoU(TP) / (|TP| + ½|FP| + ½|FN|), SQ = Σ IoU(TP) / |TP|,
RQ = |TP| / (|TP| + ½|FP| + ½|FN|); PQ, SQ, RQ are the means over categories that occur (in the
ground truth or the predictions). Things / stuff: PSG's categories 0-79 / 80-132; a predicted
label outside PSG's 133 categories counts in the overall means only.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import numpy as np

from relate_anything import psg
from relate_anything.evaluation.masks import hidden_parts, overlap_free, visible_intersections
from relate_anything.evaluation.pairing import Predictions, pair_predictions
from relate_anything.masks import coco_rles, rle_areas
from relate_anything.scene_graph import SceneGraph


class PanopticAccumulator:
    """Per-category sums of IoU(TP), |TP|, |FP|, |FN| over the images seen so far."""

    def __init__(self) -> None:
        self.stats: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(4))  # iou_sum, tp, fp, fn

    def add(
        self, prediction: SceneGraph | None, ground_truth: SceneGraph, *, intersections: np.ndarray | None = None
    ) -> None:
        """Score one image; `prediction` None means no predicted segments.

        `intersections`: [Np, Ng] pixel counts |P∩G| of all prediction x ground-truth segments
        (unpainted), when the caller has them already.
        """
        pred_keep = (
            [] if prediction is None else [i for i, s in enumerate(prediction.segments) if s.category is not None]
        )
        gt_keep = [i for i, s in enumerate(ground_truth.segments) if s.category is not None]
        pred_segments = [prediction.segments[i] for i in pred_keep] if prediction is not None else []
        gt_segments = [ground_truth.segments[i] for i in gt_keep]
        pred_rles = coco_rles([s.mask for s in pred_segments])
        gt_rles = coco_rles([s.mask for s in gt_segments])
        pred_hidden = _hidden_or_none(pred_rles, np.array([s.score for s in pred_segments]))
        # ground truth: listed order decides overlaps (all priorities equal)
        gt_hidden = _hidden_or_none(gt_rles, np.zeros(len(gt_rles)))
        pred_area = _visible_areas(pred_rles, pred_hidden)
        gt_area = _visible_areas(gt_rles, gt_hidden)
        raw = None if intersections is None else intersections[np.ix_(pred_keep, gt_keep)]
        inter = visible_intersections(pred_rles, pred_hidden, gt_rles, gt_hidden, raw=raw)  # [Np, Ng]
        on_void = pred_area - inter.sum(1)  # visible ground-truth segments are disjoint

        pred_labels = np.array([s.category for s in pred_segments], dtype=object)
        gt_labels = np.array([s.category for s in gt_segments], dtype=object)
        same = (
            pred_labels[:, None] == gt_labels[None, :]
            if len(pred_labels) and len(gt_labels)
            else np.zeros(inter.shape, dtype=bool)
        )
        union = pred_area[:, None] + gt_area[None, :] - inter - on_void[:, None]
        iou = np.divide(inter, union, out=np.zeros(inter.shape), where=union > 0)
        match = same & (iou > 0.5)

        pred_exists = pred_area > 0
        gt_exists = gt_area > 0
        for p, g in zip(*np.nonzero(match)):
            stats = self.stats[gt_labels[g]]
            stats[0] += iou[p, g]
            stats[1] += 1
        for g in np.flatnonzero(gt_exists & ~match.any(0)):
            self.stats[gt_labels[g]][3] += 1
        mostly_void = on_void > 0.5 * pred_area
        for p in np.flatnonzero(pred_exists & ~match.any(1) & ~mostly_void):
            self.stats[pred_labels[p]][2] += 1

    def result(self) -> dict[str, float | int]:
        """`{"PQ", "SQ", "RQ", "PQ_things", "SQ_things", "RQ_things", "PQ_stuff", ..., "categories"}`."""
        things, stuff = set(psg.thing_classes()), set(psg.stuff_classes())
        out: dict[str, float | int] = {}
        for suffix, keep in (("", lambda name: True), ("_things", things.__contains__), ("_stuff", stuff.__contains__)):
            rows = [stats for name, stats in self.stats.items() if keep(name) and stats[1:].sum() > 0]
            pq, sq, rq = _means(rows)
            out |= {f"PQ{suffix}": pq, f"SQ{suffix}": sq, f"RQ{suffix}": rq}
        out["categories"] = sum(1 for stats in self.stats.values() if stats[1:].sum() > 0)
        return out


def panoptic_quality(predictions: Predictions, ground_truth: Iterable[SceneGraph]) -> dict[str, float | int]:
    """PQ, SQ, RQ (fractions in [0, 1]) overall, for things and for stuff; rules in the module docstring.

    Predictions are paired with ground-truth images as `pair_predictions` describes; an image
    without a prediction has all its ground-truth segments as false negatives.

    Example:
        >>> panoptic_quality(predicted_graphs, PsgDataset("psg.json", split="test"))["PQ"]
    """
    accumulator = PanopticAccumulator()
    for prediction, gt in pair_predictions(predictions, ground_truth).pairs:
        accumulator.add(prediction, gt)
    return accumulator.result()


def _hidden_or_none(rles, priority):
    if overlap_free(rles):
        return None
    hidden = hidden_parts(rles, priority)
    return hidden if rle_areas(hidden).any() else None


def _visible_areas(rles, hidden) -> np.ndarray:
    full = rle_areas(rles)
    return full if hidden is None else full - rle_areas(hidden)


def _means(rows: list[np.ndarray]) -> tuple[float, float, float]:
    if not rows:
        return 0.0, 0.0, 0.0
    iou_sum, tp, fp, fn = np.array(rows).T
    denominator = tp + 0.5 * fp + 0.5 * fn
    pq = iou_sum / denominator
    sq = np.divide(iou_sum, tp, out=np.zeros_like(iou_sum), where=tp > 0)
    rq = tp / denominator
    return float(pq.mean()), float(sq.mean()), float(rq.mean())

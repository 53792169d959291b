"""Triplet recall R@K and mean recall mR@K (SGDet and PredCls), as OpenPSG scores them.

Per image:
- rows: the prediction's relations in list order (the ranking; scores are not re-sorted). Each
  row is one (subject, predicate, object) triplet: this is the graph constraint, since our
  relations carry one predicate each. Several rows may share a (subject, object) pair.
- a row hits a ground-truth triplet when the predicate names are equal, the subject labels and
  the object labels are equal (unlabeled predicted segments never hit), and the subject masks
  and the object masks each have IoU >= `iou_threshold` (0.5).
- a ground-truth triplet is hit at K when any of the first K rows hits it; R@K of the image is
  the number of ground-truth triplets hit at K over the number of ground-truth triplets (a
  triplet listed twice in the ground truth counts twice, and one row can hit both copies).
Aggregation: R@K is the mean over images; images without ground-truth relations are skipped;
images without predicted rows (or without a prediction) count as recall 0 unless
`skip_empty_predictions` (the reference evaluator's choice). mR@K: per predicate, the mean over
images whose ground truth contains it of the recall of that predicate's ground-truth triplets;
then the mean over all predicates of the vocabulary (56 for PSG; a predicate absent from the
ground truth counts 0).

One-mask-per-object variant: before matching triplets, each predicted segment is assigned to at
most one ground-truth segment and vice versa, by Hungarian matching
(`scipy.optimize.linear_sum_assignment`) maximising the summed mask IoU over pairs with
IoU >= `iou_threshold`; labels take no part in the assignment, and unlabeled predicted
segments take no part at all. All labeled predicted segments compete, whether or not a row
uses them. Equal IoUs go to the segment listed first. A row then hits a ground-truth triplet
only when its subject and object are *assigned* to the triplet's subject and object (and
labels and predicate match), so two duplicate masks of one object cannot both score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from relate_anything.evaluation.pairing import EvaluationError, image_name
from relate_anything.scene_graph import SceneGraph

NO_HIT = np.iinfo(np.int64).max  # rank of the first hit for a triplet that no row hits


@dataclass(frozen=True)
class ImageHits:
    """The ground-truth triplets of one image and when they were first hit.

    Attributes:
        predicates: [T] int, predicate index of each ground-truth triplet in the vocabulary.
        first_hit: [T] int64, 0-based rank of the first row that hits the triplet (NO_HIT if none).
        empty: whether the image had no prediction or no predicted rows.
    """

    predicates: np.ndarray
    first_hit: np.ndarray
    empty: bool


@dataclass(frozen=True)
class RecallResult:
    """R@K, mR@K and the per-predicate table of one protocol variant.

    Attributes:
        recall: {K: R@K}, fractions in [0, 1].
        mean_recall: {K: mR@K}.
        per_predicate: {predicate: {K: recall}} for every predicate of the vocabulary (0 when
            absent from the ground truth).
        predicate_images: {predicate: number of scored images whose ground truth contains it}.
        images: images that entered the mean (ground-truth relations, and not skipped).
        empty: of those, images scored with no predicted rows (0 when they were skipped).
        skipped_empty: images skipped because `skip_empty_predictions` was set.
    """

    recall: dict[int, float]
    mean_recall: dict[int, float]
    per_predicate: dict[str, dict[int, float]]
    predicate_images: dict[str, int]
    images: int
    empty: int
    skipped_empty: int

    def summary(self) -> dict[str, float]:
        """`{"R@20": ..., "R@50": ..., "mR@20": ...}`."""
        return {f"R@{k}": v for k, v in self.recall.items()} | {f"mR@{k}": v for k, v in self.mean_recall.items()}

    def per_predicate_table(self) -> dict[str, dict[str, float | int]]:
        """`{"on": {"R@20": ..., "images": n}, ...}` in vocabulary order."""
        return {
            name: {f"R@{k}": v for k, v in by_k.items()} | {"images": self.predicate_images[name]}
            for name, by_k in self.per_predicate.items()
        }


class ImageMatcher:
    """Segment overlaps of one (prediction, ground truth) pair, shared by the protocol variants.

    Args:
        prediction: the predicted graph, or None when the image has no prediction.
        ground_truth: the ground-truth graph (labels = category names).
        iou: [Np, Ng] mask IoU of prediction segments x ground-truth segments (both in list order).
        predicate_index: predicate name -> index in the vocabulary.
        max_rows: rows past this rank are ignored (the largest K).
    """

    def __init__(
        self,
        prediction: SceneGraph | None,
        ground_truth: SceneGraph,
        iou: np.ndarray,
        *,
        predicate_index: dict[str, int],
        max_rows: int,
        iou_threshold: float = 0.5,
    ) -> None:
        self.iou_threshold = iou_threshold
        self.iou = iou
        gt_position = {s.id: i for i, s in enumerate(ground_truth.segments)}
        triplets = []
        for relation in ground_truth.relations:
            if relation.predicate not in predicate_index:
                raise EvaluationError(
                    f"image {image_name(ground_truth)}: ground-truth predicate {relation.predicate!r} is not in the vocabulary"
                )
            triplets.append(
                (gt_position[relation.subject], gt_position[relation.object], predicate_index[relation.predicate])
            )
        self.gt_triplets = np.array(triplets, dtype=np.int64).reshape(-1, 3)

        rows = [] if prediction is None else prediction.relations[:max_rows]
        self.empty = not rows
        if prediction is not None:
            pred_position = {s.id: i for i, s in enumerate(prediction.segments)}
            self.rows = np.array(
                [
                    (pred_position[r.subject], pred_position[r.object], predicate_index.get(r.predicate, -1))
                    for r in rows
                ],
                dtype=np.int64,
            ).reshape(-1, 3)
            self.same_label = _same_label(prediction, ground_truth)
            self.labeled = np.array([s.category is not None for s in prediction.segments], dtype=bool)
        else:
            self.rows = np.zeros((0, 3), dtype=np.int64)
            self.same_label = np.zeros((0, len(ground_truth.segments)), dtype=bool)
            self.labeled = np.zeros(0, dtype=bool)

    def hits(self, *, one_mask_per_object: bool = False) -> ImageHits:
        """When each ground-truth triplet is first hit, under plain or one-mask-per-object matching."""
        if one_mask_per_object:
            segment_match = assign_one_mask_per_object(self.iou, self.labeled, self.iou_threshold)
        else:
            segment_match = self.iou >= self.iou_threshold
        segment_match &= self.same_label
        gt_s, gt_o, gt_p = self.gt_triplets.T
        row_s, row_o, row_p = self.rows.T
        hit = (
            segment_match[row_s[:, None], gt_s[None, :]]
            & segment_match[row_o[:, None], gt_o[None, :]]
            & (row_p[:, None] == gt_p[None, :])
        )  # [R, T]
        if not len(hit):
            return ImageHits(
                predicates=gt_p.copy(), first_hit=np.full(len(gt_p), NO_HIT, dtype=np.int64), empty=self.empty
            )
        first_hit = np.where(hit.any(0), hit.argmax(0), NO_HIT).astype(np.int64)
        return ImageHits(predicates=gt_p.copy(), first_hit=first_hit, empty=self.empty)


def assign_one_mask_per_object(iou: np.ndarray, eligible: np.ndarray, iou_threshold: float = 0.5) -> np.ndarray:
    """At most one ground-truth segment per predicted segment and vice versa, bool [Np, Ng].

    Hungarian matching maximising the summed IoU over pairs with IoU >= `iou_threshold`;
    predicted segments where `eligible` [Np] is False take no part. Equal IoUs go to the
    predicted segment listed first (a 1e-12-per-position nudge; IoUs closer than ~1e-8 count
    as equal).
    """
    allowed = (iou >= iou_threshold) & eligible[:, None]
    assigned = np.zeros_like(allowed)
    rows = np.flatnonzero(allowed.any(1))
    cols = np.flatnonzero(allowed.any(0))
    if not len(rows):
        return assigned
    sub_allowed = allowed[np.ix_(rows, cols)]
    weights = np.where(sub_allowed, iou[np.ix_(rows, cols)] - 1e-12 * np.arange(len(rows))[:, None], 0.0)
    picked_rows, picked_cols = linear_sum_assignment(weights, maximize=True)
    keep = sub_allowed[picked_rows, picked_cols]
    assigned[rows[picked_rows[keep]], cols[picked_cols[keep]]] = True
    return assigned


def aggregate_recall(
    images: Sequence[ImageHits], *, ks: Sequence[int], predicates: Sequence[str], skip_empty_predictions: bool = False
) -> RecallResult:
    """R@K, mR@K and per-predicate recalls from per-image hits (rules in the module docstring)."""
    ks = tuple(int(k) for k in ks)
    scored = [im for im in images if len(im.predicates) and not (skip_empty_predictions and im.empty)]
    skipped = sum(1 for im in images if len(im.predicates) and skip_empty_predictions and im.empty)
    n_pred = len(predicates)
    recall_sum = np.zeros(len(ks))
    predicate_sum = np.zeros((len(ks), n_pred))
    predicate_images = np.zeros(n_pred, dtype=np.int64)
    k_array = np.array(ks, dtype=np.int64)[:, None]
    for im in scored:
        hit = im.first_hit[None, :] < k_array  # [len(ks), T]
        recall_sum += hit.mean(1)
        # per predicate present in this image: hits / count of its triplets
        counts = np.bincount(im.predicates, minlength=n_pred)
        present = counts > 0
        hits_per_predicate = np.stack([np.bincount(im.predicates, weights=h, minlength=n_pred) for h in hit])
        predicate_sum[:, present] += hits_per_predicate[:, present] / counts[present]
        predicate_images += present
    n = len(scored)
    recall = recall_sum / n if n else np.zeros(len(ks))
    per_predicate = np.divide(
        predicate_sum, predicate_images, out=np.zeros_like(predicate_sum), where=predicate_images > 0
    )
    return RecallResult(
        recall={k: float(recall[i]) for i, k in enumerate(ks)},
        mean_recall={k: float(per_predicate[i].mean()) if n_pred else 0.0 for i, k in enumerate(ks)},
        per_predicate={
            name: {k: float(per_predicate[i, j]) for i, k in enumerate(ks)} for j, name in enumerate(predicates)
        },
        predicate_images={name: int(predicate_images[j]) for j, name in enumerate(predicates)},
        images=n,
        empty=sum(1 for im in scored if im.empty),
        skipped_empty=skipped,
    )


def _same_label(prediction: SceneGraph, ground_truth: SceneGraph) -> np.ndarray:
    """[Np, Ng] bool: both segments have a category (`Segment.category`) and it is the same."""
    codes: dict[str, int] = {}
    pred = np.array(
        [codes.setdefault(s.category, len(codes)) if s.category is not None else -1 for s in prediction.segments],
        dtype=np.int64,
    )
    gt = np.array(
        [codes.setdefault(s.category, len(codes)) if s.category is not None else -2 for s in ground_truth.segments],
        dtype=np.int64,
    )
    return pred[:, None] == gt[None, :]

"""`evaluate`: score predicted scene graphs against PSG ground truth, SGDet / PredCls / PQ.

Both sides are `SceneGraph`s. Ground truth: segments labeled with PSG category names, relations
are the ground-truth triplets. Predictions: segments with masks at the image's size and labels
(category names), relations are the ranked rows, best first. The rules of each metric are in
`recall` (R@K, mR@K, one-mask-per-object), `panoptic` (PQ) and `pairing` (which prediction is
which image); `evaluate` returns all of them in one JSON-ready dict.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any, Literal

import numpy as np

from relate_anything import psg
from relate_anything.evaluation.pairing import (
    EvaluationError,
    Pairing,
    Predictions,
    ground_truth_list,
    image_name,
    pair_predictions,
)
from relate_anything.evaluation.panoptic import PanopticAccumulator
from relate_anything.evaluation.recall import ImageHits, ImageMatcher, RecallResult, aggregate_recall
from relate_anything.masks import ious_from_intersections, rle_areas, rle_intersections, rle_ious
from relate_anything.scene_graph import SceneGraph

DEFAULT_KS = (20, 50, 100)


def evaluate(
    predictions: Predictions,
    ground_truth: Iterable[SceneGraph],
    *,
    mode: Literal["sgdet", "predcls"] = "sgdet",
    predcls: Predictions | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    skip_empty_predictions: bool = False,
    iou_threshold: float = 0.5,
    predicates: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Score predictions against ground truth; every recall and PQ value is a fraction in [0, 1].

    Args:
        predictions: one graph per image, as a sequence or a mapping {image key: graph}; see
            `pairing` for how they find their ground-truth image. Relations are the ranked rows.
        ground_truth: ground-truth graphs (e.g. a `PsgDataset`), iterated once; a mapping's
            keys are ignored.
        mode: "sgdet": `predictions` carry their own segments; scored by SGDet R@K / mR@K, the
            one-mask-per-object variant and PQ. "predcls": `predictions` use the ground-truth
            segments (see `predcls_graph`); scored by R@K / mR@K only.
        predcls: with mode "sgdet", optional PredCls predictions scored alongside.
        ks: the K of R@K and mR@K.
        skip_empty_predictions: leave images without predicted rows (or without a prediction)
            out of the means, as OpenPSG's evaluator does; by default they count as recall 0.
        iou_threshold: mask IoU a predicted segment needs with a ground-truth one (>=).
        predicates: the predicate vocabulary of mR@K (default: PSG's 56).

    Returns:
        `{"sgdet": {"R@20", ..., "mR@100"}, "sgdet_one_mask_per_object": {...}, "predcls": {...},
        "pq": {"PQ", "SQ", "RQ", "PQ_things", "PQ_stuff", ...}, "per_predicate": {name: {"R@20", ...,
        "images"}}, "images": n, "counts": {...}, "warnings": [...], "protocol": {...}}`; "sgdet",
        "sgdet_one_mask_per_object" and "pq" only in mode "sgdet", "predcls" when PredCls
        predictions were scored. "per_predicate" is the table of the first mode present (SGDet,
        else PredCls); with both, "per_predicate_predcls" holds PredCls'. "images" is the number
        of images in that mode's means.

    Raises:
        EvaluationError: a prediction whose image size differs from its ground truth, two
            predictions for one image, PredCls predictions whose segments are not the
            ground truth's, or a ground-truth predicate outside the vocabulary.
    """
    if mode not in ("sgdet", "predcls"):
        raise ValueError(f"mode must be 'sgdet' or 'predcls', got {mode!r}")
    if mode == "predcls" and predcls is not None:
        raise ValueError("mode='predcls' scores `predictions` as PredCls; do not pass `predcls` too")
    ks = tuple(sorted({int(k) for k in ks}))
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    vocabulary = tuple(predicates) if predicates is not None else psg.predicates()
    gts = ground_truth_list(ground_truth)
    options = {"ks": ks, "vocabulary": vocabulary, "iou_threshold": iou_threshold, "skip_empty": skip_empty_predictions}

    result: dict[str, Any] = {}
    counts: dict[str, Any] = {"ground_truth_images": len(gts), "with_relations": sum(1 for g in gts if g.relations)}
    warnings: list[str] = []
    tables: list[tuple[str, RecallResult]] = []
    runs = [(mode, predictions)] + ([("predcls", predcls)] if predcls is not None else [])
    for run_mode, run_predictions in runs:
        pairing = pair_predictions(run_predictions, gts)
        if run_mode == "predcls":
            pairing.pairs = [(None if p is None else predcls_graph(p, gt), gt) for p, gt in pairing.pairs]
        plain, one_mask, panoptic = _score(pairing, panoptic=run_mode == "sgdet", **options)
        if run_mode == "sgdet":
            result["sgdet"] = plain.summary()
            result["sgdet_one_mask_per_object"] = one_mask.summary()
            result["pq"] = panoptic.result()
        else:
            result["predcls"] = plain.summary()
        tables.append((run_mode, plain))
        counts[run_mode] = _counts(pairing, plain)
        warnings += _warnings(run_mode, pairing, plain)

    first = tables[0][1]
    result["per_predicate"] = first.per_predicate_table()
    if len(tables) > 1:
        result["per_predicate_predcls"] = tables[1][1].per_predicate_table()
    result["images"] = first.images
    result["counts"] = counts
    result["warnings"] = warnings
    result["protocol"] = _protocol(ks, iou_threshold, skip_empty_predictions, len(vocabulary))
    return result


def triplet_recall(
    predictions: Predictions,
    ground_truth: Iterable[SceneGraph],
    *,
    ks: Sequence[int] = DEFAULT_KS,
    one_mask_per_object: bool = False,
    skip_empty_predictions: bool = False,
    iou_threshold: float = 0.5,
    predicates: Sequence[str] | None = None,
) -> RecallResult:
    """R@K, mR@K and the per-predicate table of one variant (SGDet, or PredCls on `predcls_graph`s).

    Same arguments as `evaluate`; `one_mask_per_object` selects the variant of `recall`'s docstring.
    """
    ks = tuple(sorted({int(k) for k in ks}))
    vocabulary = tuple(predicates) if predicates is not None else psg.predicates()
    predicate_index = {name: i for i, name in enumerate(vocabulary)}
    hits = []
    for prediction, gt in pair_predictions(predictions, ground_truth).pairs:
        if gt.relations:
            matcher = ImageMatcher(
                prediction,
                gt,
                _segment_iou(prediction, gt),
                predicate_index=predicate_index,
                max_rows=ks[-1],
                iou_threshold=iou_threshold,
            )
            hits.append(matcher.hits(one_mask_per_object=one_mask_per_object))
    return aggregate_recall(hits, ks=ks, predicates=vocabulary, skip_empty_predictions=skip_empty_predictions)


def predcls_graph(prediction: SceneGraph, ground_truth: SceneGraph) -> SceneGraph:
    """The ground-truth graph with the prediction's relations: what PredCls scores.

    PredCls predicts predicates only, on the ground-truth segments: every segment of
    `prediction` must be a ground-truth segment (same id, identical mask, and the same label
    when it has one). Raises `EvaluationError` naming the image otherwise.
    """
    truth = {s.id: s for s in ground_truth.segments}
    for segment in prediction.segments:
        gt_segment = truth.get(segment.id)
        problem = None
        if gt_segment is None:
            problem = "is not a ground-truth segment id"
        elif segment.category is not None and segment.category != gt_segment.category:
            problem = f"is labeled {segment.category!r}, the ground truth {gt_segment.category!r}"
        elif not _same_mask(segment.mask, gt_segment.mask):
            problem = "has a different mask than the ground-truth segment"
        if problem:
            raise EvaluationError(
                f"image {image_name(ground_truth)}: PredCls prediction segment {segment.id} {problem}; "
                "PredCls predictions must use the ground-truth segments (ids, masks, labels)"
            )
    return replace(ground_truth, relations=list(prediction.relations), predicates=prediction.predicates)


def _score(pairing: Pairing, *, ks, vocabulary, iou_threshold, skip_empty, panoptic: bool):
    predicate_index = {name: i for i, name in enumerate(vocabulary)}
    plain: list[ImageHits] = []
    one_mask: list[ImageHits] = []
    accumulator = PanopticAccumulator()
    for prediction, gt in pairing.pairs:
        # raw intersections serve both PQ and recall IoUs; recall needs none without rows
        needed = prediction is not None and (panoptic or (gt.relations and prediction.relations))
        inter = _intersections(prediction, gt) if needed else None
        if panoptic:
            accumulator.add(prediction, gt, intersections=inter)
        if not gt.relations:
            continue
        iou = _iou_from_intersections(inter, prediction, gt)
        matcher = ImageMatcher(
            prediction, gt, iou, predicate_index=predicate_index, max_rows=ks[-1], iou_threshold=iou_threshold
        )
        plain.append(matcher.hits())
        if panoptic:  # the one-mask variant only differs from plain matching when segments are predicted
            one_mask.append(matcher.hits(one_mask_per_object=True))
    options = {"ks": ks, "predicates": vocabulary, "skip_empty_predictions": skip_empty}
    return aggregate_recall(plain, **options), aggregate_recall(one_mask, **options), accumulator


def _segment_iou(prediction: SceneGraph | None, gt: SceneGraph) -> np.ndarray:
    if prediction is None or not prediction.relations:
        return np.zeros((0 if prediction is None else len(prediction.segments), len(gt.segments)))
    return rle_ious([s.mask for s in prediction.segments], [s.mask for s in gt.segments])


def _intersections(prediction: SceneGraph, gt: SceneGraph) -> np.ndarray:
    return rle_intersections([s.mask for s in prediction.segments], [s.mask for s in gt.segments])


def _iou_from_intersections(inter: np.ndarray | None, prediction: SceneGraph | None, gt: SceneGraph) -> np.ndarray:
    """Mask IoU [Np, Ng] from pixel intersections (zeros when there is nothing to match)."""
    if inter is None or prediction is None or not prediction.relations:
        return np.zeros((0 if prediction is None else len(prediction.segments), len(gt.segments)))
    # areas from the masks themselves, not the stored `area` fields
    pred_area = rle_areas([s.mask for s in prediction.segments])
    gt_area = rle_areas([s.mask for s in gt.segments])
    return ious_from_intersections(inter, pred_area, gt_area)


def _same_mask(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a["counts"] == b["counts"] and list(a["size"]) == list(b["size"]):
        return True
    return bool(rle_ious([a], [b])[0, 0] == 1.0)


def _counts(pairing: Pairing, recall: RecallResult) -> dict[str, int]:
    return {
        "scored_images": recall.images,
        "empty_predictions_scored_as_zero": recall.empty,
        "empty_predictions_skipped": recall.skipped_empty,
        "missing_predictions": len(pairing.missing),
        "unmatched_predictions": len(pairing.unmatched),
    }


def _warnings(mode: str, pairing: Pairing, recall: RecallResult) -> list[str]:
    out = []
    if pairing.missing:
        how = "skipped" if recall.skipped_empty else "scored as empty"
        out.append(
            f"{mode}: {len(pairing.missing)} ground-truth images have no prediction ({how}), e.g. {pairing.missing[0]}"
        )
    if pairing.unmatched:
        out.append(
            f"{mode}: {len(pairing.unmatched)} predictions match no ground-truth image and were ignored, e.g. {pairing.unmatched[0]}"
        )
    unlabeled = sum(
        1 for p, _ in pairing.pairs if p is not None and p.segments and all(s.category is None for s in p.segments)
    )
    if unlabeled and mode == "sgdet":
        out.append(f"sgdet: {unlabeled} predictions have no labeled segment, so none of their rows can hit")
    return out


def _protocol(ks, iou_threshold, skip_empty_predictions, n_predicates) -> dict[str, Any]:
    return {
        "ks": list(ks),
        "iou_threshold": iou_threshold,
        "iou_comparison": ">=",
        "graph_constraint": True,
        "ranking": "relation list order (not re-sorted by score); rows past the largest K are ignored",
        "skip_empty_predictions": skip_empty_predictions,
        "images_without_gt_relations": "skipped in R@K and mR@K, scored in PQ",
        "missing_predictions": "skipped" if skip_empty_predictions else "scored as empty (recall 0)",
        "mean_recall": f"mean over all {n_predicates} predicates; a predicate absent from the ground truth counts 0",
        "one_mask_per_object": "Hungarian assignment of labeled predicted segments to ground-truth segments "
        "on mask IoU >= threshold (labels not used), triplets hit only through the assignment",
        "pq": "COCO panopticapi rules; overlapping predicted masks painted lowest score first (highest wins), "
        "unlabeled predicted segments ignored, no crowd regions",
        "image_matching": "image_id (or mapping key), else file, else file basename, else file stem",
    }

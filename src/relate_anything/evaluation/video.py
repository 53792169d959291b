"""Scoring `VideoSceneGraph`s against PVSG ground truth, as OpenPVSG's evaluator does.

Per ground-truth relation (subject s, object o, predicate p, frame ranges):
- its frames: the frames of its inclusive ranges (past the last frame: dropped) where both s
  and o have a ground-truth mask. A relation annotated while an object is off-screen counts
  only the frames where both are visible; one with no such frame can never be hit but still
  counts in the total.
- candidates: the predicted relations in list order (the ranking; scores are not re-sorted),
  the first max(K) only. A candidate qualifies when its predicate is p and its subject's and
  object's classes are s's and o's (class-agnostic variant: the predicate alone).
- a candidate's vIoU: a frame is hit when it is one of the relation's frames, inside the
  candidate's intervals, and both predicted tracks have a mask there with IoU >= 0.5 with the
  ground-truth masks. vIoU = hit frames / the relation's frames. (OpenPVSG's temporal IoU of the
  hit frames and the ground-truth frames reduces to this because hits lie inside them.)
  Predicted frames outside the ground-truth ranges are therefore not penalised.
- the scan goes through the qualifying candidates in rank order: a candidate with vIoU >= 0.1 is
  a weak hit at every K above its rank; the first with vIoU >= 0.5 is a hit at every K above its
  rank, and ends the scan. Weak hits do not end it, so one relation can be weakly hit several
  times (weak recall can exceed 1). One prediction may hit several ground-truth relations.
Aggregation over all videos: R@K = hits / ground-truth relations (pooled, not per video); mR@K
= the mean of each predicate's hits / relations over the predicates that occur. "Soft" recall
adds the hit's vIoU instead of 1 (OpenPVSG's soft dictionary). docs/video_metrics.md lists
where this follows OpenPVSG's code rather than the paper.

Names: a predicted predicate or class counts under the ground truth's name it maps to: an
explicit `predicate_map` / `category_map` entry first, else itself when the ground-truth
vocabulary has it, else (with `map_psg_names`) its PVSG name from `relate_anything.pvsg`'s
PSG -> PVSG tables; names with no counterpart cannot match and are counted.

Cost: mask IoUs are computed once per (predicted track, ground-truth track) pair that some
qualifying candidate needs, one pycocotools call per frame on the RLEs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from relate_anything import pvsg
from relate_anything.evaluation.pairing import EvaluationError
from relate_anything.masks import rle_ious
from relate_anything.video_scene_graph import VideoSceneGraph

__all__ = [
    "Match",
    "RelationResult",
    "VideoEvalSettings",
    "VideoScore",
    "evaluate_video",
    "score_video",
]


@dataclass(frozen=True)
class VideoEvalSettings:
    """How predictions are scored (defaults: OpenPVSG's protocol).

    Attributes:
        ks: the K of R@K and mR@K.
        iou_threshold: per-frame mask IoU both tracks need (>=).
        viou_threshold: vIoU of a hit (>=).
        weak_viou_threshold: vIoU of a weak hit (>=).
        predicate_map: predicted predicate -> ground-truth predicate, consulted before the
            names themselves (e.g. {"beside": "next to"}).
        category_map: predicted class -> ground-truth class, likewise.
        map_psg_names: a predicted name the ground truth lacks is looked up in
            `pvsg.PSG_TO_PVSG_PREDICATES` / `pvsg.PSG_TO_PVSG_CATEGORIES` (drinking -> drinking
            from, person -> adult, ...).
    """

    ks: tuple[int, ...] = (20, 50, 100)
    iou_threshold: float = 0.5
    viou_threshold: float = 0.5
    weak_viou_threshold: float = 0.1
    predicate_map: Mapping[str, str] = field(default_factory=dict)
    category_map: Mapping[str, str] = field(default_factory=dict)
    map_psg_names: bool = True

    def __post_init__(self) -> None:
        ks = tuple(sorted({int(k) for k in self.ks}))
        if not ks or ks[0] < 1:
            raise ValueError(f"ks must be positive integers, got {self.ks}")
        object.__setattr__(self, "ks", ks)
        if not 0 < self.iou_threshold <= 1 or not 0 < self.weak_viou_threshold <= self.viou_threshold <= 1:
            raise ValueError("thresholds must satisfy 0 < iou_threshold <= 1 and 0 < weak <= viou_threshold <= 1")


@dataclass(frozen=True)
class Match:
    """How the scan over one ground-truth relation's candidates ended.

    Attributes:
        rank: 0-based rank of the first candidate with vIoU >= viou_threshold (None: no hit).
        viou: that candidate's vIoU (0.0 without a hit).
        weak: (rank, vIoU) of every candidate with vIoU >= weak_viou_threshold that the scan
            passed, the hit included.
    """

    rank: int | None
    viou: float
    weak: tuple[tuple[int, float], ...]


NO_MATCH = Match(rank=None, viou=0.0, weak=())


@dataclass(frozen=True)
class RelationResult:
    """One ground-truth relation and how it was matched.

    Attributes:
        subject, object: ground-truth track ids; predicate: its name.
        frames: its frames where both objects are visible (the vIoU denominator).
        labelled: the class-aware match (subject class, object class and predicate).
        agnostic: the class-agnostic match (predicate only).
    """

    subject: int
    predicate: str
    object: int
    frames: int
    labelled: Match
    agnostic: Match


@dataclass(frozen=True)
class VideoScore:
    """The results of one video, and what of its prediction could not be scored.

    Attributes:
        relations: one result per ground-truth relation, in ground-truth order.
        predicted_relations: the prediction's relations (all, not just the first max(K)).
        unmapped_predicates: {predicted predicate: relations} with no ground-truth counterpart.
        mapped_predicates: {predicted predicate: ground-truth predicate} for names mapped.
        unlabelled_tracks: predicted tracks without a class.
        unmapped_categories: {predicted class: tracks} with no ground-truth counterpart.
    """

    relations: list[RelationResult]
    predicted_relations: int = 0
    unmapped_predicates: dict[str, int] = field(default_factory=dict)
    mapped_predicates: dict[str, str] = field(default_factory=dict)
    unlabelled_tracks: int = 0
    unmapped_categories: dict[str, int] = field(default_factory=dict)


def score_video(
    prediction: VideoSceneGraph | None,
    ground_truth: VideoSceneGraph,
    *,
    settings: VideoEvalSettings | None = None,
    categories: Sequence[str] | None = None,
) -> VideoScore:
    """Match one video's predicted relations to its ground-truth relations.

    Args:
        prediction: the predicted graph (None: no prediction; every relation is missed).
        ground_truth: the ground-truth graph: tracks labelled with class names, relations with
            the frame intervals where they hold.
        settings: the protocol (default `VideoEvalSettings()`).
        categories: the ground truth's class vocabulary, for name mapping (default PVSG's 126).

    Raises:
        EvaluationError: the prediction's frame size or frame count differs from the ground truth's.
    """
    settings = settings or VideoEvalSettings()
    vocabulary = set(categories) if categories is not None else set(pvsg.categories())
    gt_tracks = {track.id: track for track in ground_truth.tracks}
    gt_present = {track.id: _presence(track, ground_truth.num_frames) for track in ground_truth.tracks}
    gt_frames = [
        _interval_mask(r.intervals, ground_truth.num_frames) & gt_present[r.subject] & gt_present[r.object]
        for r in ground_truth.relations
    ]
    if prediction is None:
        results = [
            RelationResult(r.subject, r.predicate, r.object, int(f.sum()), NO_MATCH, NO_MATCH)
            for r, f in zip(ground_truth.relations, gt_frames)
        ]
        return VideoScore(relations=results)
    _check_same_clip(prediction, ground_truth)
    names = _Names(settings, vocabulary, set(ground_truth.predicates))
    rows = prediction.relations[: settings.ks[-1]]
    row_predicates = [names.predicate(r.predicate) for r in rows]
    pred_tracks = {track.id: track for track in prediction.tracks}
    pred_class = {track.id: names.category(track.category) for track in prediction.tracks}

    # Which (row, ground-truth relation) pairs qualify, class-aware and class-agnostic.
    same_predicate = np.array(
        [[p is not None and p == g.predicate for g in ground_truth.relations] for p in row_predicates], dtype=bool
    ).reshape(len(rows), len(ground_truth.relations))
    same_classes = np.array(
        [
            [
                None not in (pred_class[r.subject], pred_class[r.object])
                and pred_class[r.subject] == gt_tracks[g.subject].category
                and pred_class[r.object] == gt_tracks[g.object].category
                for g in ground_truth.relations
            ]
            for r in rows
        ],
        dtype=bool,
    ).reshape(same_predicate.shape)
    labelled, agnostic = same_predicate & same_classes, same_predicate

    # Per-frame mask agreement of every (predicted, ground-truth) track pair a candidate needs.
    needed = set()
    for j, i in zip(*np.nonzero(agnostic)):
        needed.add((rows[j].subject, ground_truth.relations[i].subject))
        needed.add((rows[j].object, ground_truth.relations[i].object))
    agree = _track_agreement(needed, pred_tracks, gt_tracks, ground_truth.num_frames, settings.iou_threshold)
    spans = [_interval_mask(r.intervals, ground_truth.num_frames) for r in rows]

    results = []
    for i, (relation, frames) in enumerate(zip(ground_truth.relations, gt_frames)):
        n_frames = int(frames.sum())
        vious = np.zeros(len(rows))
        candidates = np.flatnonzero(agnostic[:, i])
        if n_frames:
            for j in candidates:
                row = rows[j]
                hit = frames & spans[j] & agree[(row.subject, relation.subject)] & agree[(row.object, relation.object)]
                vious[j] = hit.sum() / n_frames
        results.append(
            RelationResult(
                subject=relation.subject,
                predicate=relation.predicate,
                object=relation.object,
                frames=n_frames,
                labelled=_scan(np.flatnonzero(labelled[:, i]), vious, settings),
                agnostic=_scan(candidates, vious, settings),
            )
        )
    return VideoScore(
        relations=results,
        predicted_relations=len(prediction.relations),
        unmapped_predicates=dict(
            Counter(r.predicate for r in prediction.relations if names.predicate(r.predicate) is None)
        ),
        mapped_predicates=names.mapped_predicates,
        unlabelled_tracks=sum(1 for t in prediction.tracks if t.category is None),
        unmapped_categories=dict(
            Counter(t.category for t in prediction.tracks if t.category is not None and pred_class[t.id] is None)
        ),
    )


def _scan(candidates: np.ndarray, vious: np.ndarray, settings: VideoEvalSettings) -> Match:
    """Go through qualifying candidates in rank order until the first hit (see the module docstring)."""
    weak = []
    for j in candidates.tolist():
        viou = float(vious[j])
        if viou >= settings.weak_viou_threshold:
            weak.append((j, viou))
        if viou >= settings.viou_threshold:
            return Match(rank=j, viou=viou, weak=tuple(weak))
    return Match(rank=None, viou=0.0, weak=tuple(weak))


class _Names:
    """Predicted names -> ground-truth names (see the module docstring), remembering what was mapped."""

    def __init__(self, settings: VideoEvalSettings, categories: set[str], predicates: set[str]) -> None:
        self.settings, self.categories, self.predicates = settings, categories, predicates
        self.mapped_predicates: dict[str, str] = {}

    def predicate(self, name: str) -> str | None:
        target = self._lookup(name, self.settings.predicate_map, self.predicates, pvsg.PSG_TO_PVSG_PREDICATES)
        if target is not None and target != name:
            self.mapped_predicates[name] = target
        return target

    def category(self, name: str | None) -> str | None:
        if name is None:
            return None
        return self._lookup(name, self.settings.category_map, self.categories, pvsg.PSG_TO_PVSG_CATEGORIES)

    def _lookup(self, name: str, explicit: Mapping[str, str], vocabulary: set[str], psg_names: Mapping[str, str]):
        if name in explicit:
            return explicit[name] if explicit[name] in vocabulary else None
        if name in vocabulary:
            return name
        target = psg_names.get(name) if self.settings.map_psg_names else None
        return target if target in vocabulary else None


def _check_same_clip(prediction: VideoSceneGraph, ground_truth: VideoSceneGraph) -> None:
    name = Path(ground_truth.video.file or "?").stem
    if (prediction.width, prediction.height) != (ground_truth.width, ground_truth.height):
        raise EvaluationError(
            f"video {name}: the prediction is {prediction.width}x{prediction.height}, "
            f"the ground truth {ground_truth.width}x{ground_truth.height} (width x height)"
        )
    if prediction.num_frames != ground_truth.num_frames:
        raise EvaluationError(
            f"video {name}: the prediction has {prediction.num_frames} sampled frames, the ground truth "
            f"{ground_truth.num_frames}; sample the clip at the ground truth's rate (PVSG: 5 fps)"
        )


def _presence(track, num_frames: int) -> np.ndarray:
    present = np.zeros(num_frames, dtype=bool)
    present[[item.frame for item in track.frames if item.area > 0]] = True
    return present


def _interval_mask(intervals: Iterable[tuple[int, int]], num_frames: int) -> np.ndarray:
    """[T] bool: the frames of inclusive intervals, clipped to the clip."""
    mask = np.zeros(num_frames, dtype=bool)
    for start, end in intervals:
        mask[max(0, start) : min(num_frames, end + 1)] = True
    return mask


def _track_agreement(
    pairs: set[tuple[int, int]],
    pred_tracks: Mapping[int, Any],
    gt_tracks: Mapping[int, Any],
    num_frames: int,
    threshold: float,
) -> dict[tuple[int, int], np.ndarray]:
    """{(predicted id, ground-truth id): [T] bool, frames where both have a mask with IoU >= threshold}.

    One `rle_ious` call per frame, over the predicted and ground-truth tracks of the needed
    pairs that have a mask on that frame.
    """
    result = {pair: np.zeros(num_frames, dtype=bool) for pair in pairs}
    if not pairs:
        return result
    pred_ids = sorted({p for p, _ in pairs})
    gt_ids = sorted({g for _, g in pairs})
    pred_frames = [{item.frame: item.mask for item in pred_tracks[p].frames} for p in pred_ids]
    gt_frames = [{item.frame: item.mask for item in gt_tracks[g].frames} for g in gt_ids]
    wanted = np.zeros((len(pred_ids), len(gt_ids)), dtype=bool)
    pred_pos, gt_pos = {p: i for i, p in enumerate(pred_ids)}, {g: i for i, g in enumerate(gt_ids)}
    for p, g in pairs:
        wanted[pred_pos[p], gt_pos[g]] = True
    for t in range(num_frames):
        rows = [i for i, frames in enumerate(pred_frames) if t in frames]
        cols = [i for i, frames in enumerate(gt_frames) if t in frames]
        if not rows or not cols:
            continue
        sub = wanted[np.ix_(rows, cols)]
        if not sub.any():
            continue
        iou = rle_ious([pred_frames[i][t] for i in rows], [gt_frames[i][t] for i in cols])
        for a, b in zip(*np.nonzero(sub & (iou >= threshold))):
            result[(pred_ids[rows[a]], gt_ids[cols[b]])][t] = True
    return result


# -- many videos --------------------------------------------------------------------------------


def evaluate_video(
    predictions: Mapping[str, VideoSceneGraph],
    ground_truth: Mapping[str, VideoSceneGraph] | Iterable[tuple[str, VideoSceneGraph]],
    *,
    settings: VideoEvalSettings | None = None,
    categories: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Score predictions against ground-truth videos; every recall is a fraction.

    Args:
        predictions: {key: graph}; a prediction belongs to the ground-truth video whose id is
            its key, else the stem of its `video.file` (e.g. "0010_8610561401.mp4").
        ground_truth: {video id: graph} or (video id, graph) pairs, e.g. from
            `PvsgDataset` (iterated once, so videos can be read as they are scored).
        settings: the protocol (default `VideoEvalSettings()`: OpenPVSG's).
        categories: the ground truth's class vocabulary, for name mapping (default PVSG's).

    Returns:
        `{"recall": {"R@20", ..., "mR@100"}, "weak_recall": {...}, "soft_recall": {...},
        "soft_weak_recall": {...}, "class_agnostic": {...}, "per_predicate": {name:
        {"relations", "R@20", ..., "weak R@20", ..., "agnostic R@20", ...}}, "videos": n,
        "relations": n, "counts": {...}, "warnings": [...], "protocol": {...}}`.

    Raises:
        EvaluationError: two predictions for one video, or a prediction whose frame size or
            count differs from its ground truth.
    """
    settings = settings or VideoEvalSettings()
    pairs = ground_truth.items() if isinstance(ground_truth, Mapping) else ground_truth
    claimed: dict[str, str] = {}
    by_stem: dict[str, list[str]] = {}
    for key, graph in predictions.items():
        stem = Path(graph.video.file).stem if graph.video.file else None
        if stem is not None and stem != key:
            by_stem.setdefault(stem, []).append(key)
    scores: list[VideoScore] = []
    missing: list[str] = []
    for video_id, gt in pairs:
        keys = ([video_id] if video_id in predictions else []) + by_stem.get(video_id, [])
        if len(keys) > 1:
            raise EvaluationError(f"video {video_id}: two predictions ({keys[0]!r} and {keys[1]!r})")
        prediction = predictions[keys[0]] if keys else None
        if keys:
            claimed[keys[0]] = video_id
        else:
            missing.append(video_id)
        scores.append(score_video(prediction, gt, settings=settings, categories=categories))
    unmatched = sorted(set(predictions) - set(claimed))
    return _report(scores, settings, missing=missing, unmatched=unmatched, predictions=len(predictions))


def _report(scores: list[VideoScore], settings: VideoEvalSettings, **pairing: Any) -> dict[str, Any]:
    relations = [r for score in scores for r in score.relations]
    names = sorted({r.predicate for r in relations})
    ks = settings.ks
    tables = {
        "recall": lambda m, k: float(m.rank is not None and m.rank < k),
        "weak_recall": lambda m, k: float(sum(1 for rank, _ in m.weak if rank < k)),
        "soft_recall": lambda m, k: m.viou if m.rank is not None and m.rank < k else 0.0,
        "soft_weak_recall": lambda m, k: sum(v for rank, v in m.weak if rank < k),
    }
    report: dict[str, Any] = {}
    per_predicate: dict[str, dict[str, Any]] = {
        name: {"relations": sum(1 for r in relations if r.predicate == name)} for name in names
    }
    for table, value in tables.items():
        report[table] = _recalls(relations, names, ks, lambda r, k, value=value: value(r.labelled, k))
    report["class_agnostic"] = _recalls(relations, names, ks, lambda r, k: tables["recall"](r.agnostic, k))
    for name in names:
        chosen = [r for r in relations if r.predicate == name]
        for k in ks:
            per_predicate[name][f"R@{k}"] = _mean(tables["recall"](r.labelled, k) for r in chosen)
        for k in ks:
            per_predicate[name][f"weak R@{k}"] = _mean(tables["weak_recall"](r.labelled, k) for r in chosen)
        for k in ks:
            per_predicate[name][f"agnostic R@{k}"] = _mean(tables["recall"](r.agnostic, k) for r in chosen)
    report["per_predicate"] = per_predicate
    report["videos"] = len(scores)
    report["relations"] = len(relations)
    counts, warnings = _counts(scores, relations, **pairing)
    report["counts"] = counts
    report["warnings"] = warnings
    report["protocol"] = _protocol(settings)
    return report


def _recalls(relations, names, ks, value) -> dict[str, float]:
    """R@K pooled over relations and mR@K averaged over the predicates that occur."""
    out = {f"R@{k}": _mean(value(r, k) for r in relations) for k in ks}
    for k in ks:
        per = [_mean(value(r, k) for r in relations if r.predicate == name) for name in names]
        out[f"mR@{k}"] = _mean(per)
    return out


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return float(sum(values) / len(values)) if values else 0.0


def _counts(scores, relations, *, missing, unmatched, predictions) -> tuple[dict[str, Any], list[str]]:
    unmapped_predicates: Counter[str] = Counter()
    unmapped_categories: Counter[str] = Counter()
    mapped: dict[str, str] = {}
    for score in scores:
        unmapped_predicates.update(score.unmapped_predicates)
        unmapped_categories.update(score.unmapped_categories)
        mapped |= score.mapped_predicates
    predicted = sum(score.predicted_relations for score in scores)
    unlabelled = sum(score.unlabelled_tracks for score in scores)
    unscorable = sum(1 for r in relations if r.frames == 0)
    counts = {
        "predictions": predictions,
        "missing_predictions": missing,
        "unmatched_predictions": unmatched,
        "predicted_relations": predicted,
        "unmapped_predicate_relations": sum(unmapped_predicates.values()),
        "unmapped_predicates": dict(unmapped_predicates.most_common()),
        "mapped_predicates": mapped,
        "unlabelled_tracks": unlabelled,
        "unmapped_categories": dict(unmapped_categories.most_common()),
        "relations_never_both_visible": unscorable,
    }
    warnings = []
    if missing:
        warnings.append(f"{len(missing)} ground-truth videos have no prediction (scored as empty), e.g. {missing[0]}")
    if unmatched:
        warnings.append(
            f"{len(unmatched)} predictions match no ground-truth video and were ignored, e.g. {unmatched[0]}"
        )
    if unmapped_predicates:
        shown = ", ".join(f"{name} ({n})" for name, n in unmapped_predicates.most_common(5))
        warnings.append(
            f"{sum(unmapped_predicates.values())} of {predicted} predicted relations have a predicate with no "
            f"ground-truth counterpart and cannot match: {shown}"
        )
    if unlabelled:
        warnings.append(f"{unlabelled} predicted tracks have no class: only the class-agnostic recall can count them")
    if unmapped_categories:
        shown = ", ".join(f"{name} ({n})" for name, n in unmapped_categories.most_common(5))
        warnings.append(f"predicted tracks with a class the ground truth does not have: {shown}")
    if unscorable:
        warnings.append(
            f"{unscorable} ground-truth relations have no frame where both objects are visible: no prediction can hit them"
        )
    return counts, warnings


def _protocol(settings: VideoEvalSettings) -> dict[str, Any]:
    return {
        "ks": list(settings.ks),
        "iou_threshold": settings.iou_threshold,
        "viou_threshold": settings.viou_threshold,
        "weak_viou_threshold": settings.weak_viou_threshold,
        "comparisons": ">=",
        "ranking": "relation list order (not re-sorted by score); relations past the largest K are ignored",
        "viou": "frames of the ground-truth ranges where both ground-truth objects are visible and both predicted "
        "masks have IoU >= iou_threshold inside the predicted intervals, over the former (OpenPVSG's code)",
        "scan": "qualifying candidates in rank order; the first hit ends the scan, weak hits do not",
        "recall": "pooled over all ground-truth relations of all videos",
        "mean_recall": "mean over the predicates present in the ground truth",
        "soft_recall": "each hit counts its vIoU instead of 1",
        "names": "explicit map, else the name itself, else PSG -> PVSG (relate_anything.pvsg)"
        if settings.map_psg_names
        else "explicit map, else the name itself",
        "predicate_map": dict(settings.predicate_map),
        "category_map": dict(settings.category_map),
        "video_matching": "prediction key, else the stem of its video.file",
    }

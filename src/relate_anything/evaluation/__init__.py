"""Scoring scene graphs against PSG ground truth (SGDet / PredCls R@K and mR@K, and PQ), and
video scene graphs against PVSG ground truth (R@K / mR@K on mask tubes).

>>> from relate_anything.evaluation import evaluate, evaluate_video
>>> report = evaluate(predicted_graphs, ground_truth_graphs)
>>> report["sgdet"]["R@20"], report["pq"]["PQ"]
>>> evaluate_video({"0001_4164158586": predicted_video}, pvsg_pairs)["recall"]["R@20"]
"""

from relate_anything.evaluation.metrics import evaluate, predcls_graph, triplet_recall
from relate_anything.evaluation.pairing import EvaluationError, pair_predictions
from relate_anything.evaluation.panoptic import panoptic_quality
from relate_anything.evaluation.recall import RecallResult
from relate_anything.evaluation.video import VideoEvalSettings, evaluate_video, score_video

__all__ = [
    "EvaluationError",
    "RecallResult",
    "VideoEvalSettings",
    "evaluate",
    "evaluate_video",
    "pair_predictions",
    "panoptic_quality",
    "predcls_graph",
    "score_video",
    "triplet_recall",
]

"""Scoring scene graphs against PSG ground truth: SGDet / PredCls R@K and mR@K, and PQ.

>>> from relate_anything.evaluation import evaluate
>>> report = evaluate(predicted_graphs, ground_truth_graphs)
>>> report["sgdet"]["R@20"], report["pq"]["PQ"]
"""

from relate_anything.evaluation.metrics import evaluate, predcls_graph, triplet_recall
from relate_anything.evaluation.pairing import EvaluationError, pair_predictions
from relate_anything.evaluation.panoptic import panoptic_quality
from relate_anything.evaluation.recall import RecallResult

__all__ = [
    "EvaluationError",
    "RecallResult",
    "evaluate",
    "pair_predictions",
    "panoptic_quality",
    "predcls_graph",
    "triplet_recall",
]

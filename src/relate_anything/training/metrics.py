"""Recall of cached relations from relation logits, index-based (both sides are SAM mask indices).

This is the training-time check (what RAM's script reports): a predicted triplet hits when its
(subject mask, object mask, predicate) equals a cached relation. PSG's SGDet metric (classes and
mask IoU) lives in `relate_anything.evaluation`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from relate_anything.ram import relate

__all__ = ["RECALL_KS", "frequency_baseline_logits", "mean_recall", "triplet_recall"]

RECALL_KS = (20, 50, 100)


def triplet_recall(logits: Tensor, relations: Tensor, ks: Sequence[int] = RECALL_KS) -> dict[int, float] | None:
    """Recall@K of one image's relations among its top-K triplets.

    Args:
        logits: [P, N, N] relation logits of one image (padding sliced off).
        relations: [R, 3] int (subject, object, predicate); duplicates count once.
        ks: the K values.

    Returns:
        {K: hits / distinct relations}, or None when the image has no relation (skipped, as PSG's
        evaluation skips images without ground truth).
    """
    if len(relations) == 0:
        return None
    num_predicates, n, _ = logits.shape
    relations = relations.to(logits.device).long()
    truth = torch.unique((relations[:, 2] * n + relations[:, 0]) * n + relations[:, 1])
    ranked = relate(logits.float(), top_k=max(ks))
    keys = (ranked.predicates * n + ranked.subjects) * n + ranked.objects
    hit = torch.isin(keys, truth)
    return {k: float(hit[:k].sum()) / len(truth) for k in ks}


def mean_recall(per_image: list[dict[int, float] | None], ks: Sequence[int] = RECALL_KS) -> dict[str, float]:
    """{"R@K": mean over images that have relations} (0.0 when none has)."""
    scored = [r for r in per_image if r is not None]
    return {f"R@{k}": (sum(r[k] for r in scored) / len(scored) if scored else 0.0) for k in ks}


def frequency_baseline_logits(predicate_counts: Tensor, n: int, *, generator: torch.Generator | None = None) -> Tensor:
    """[P, N, N] scores of the predicate-frequency baseline for an image of N masks.

    Every pair gets the training set's predicates in order of frequency; pairs, which this
    baseline cannot tell apart, are ordered at random. So the top-K triplets are the most frequent
    predicate on K random pairs (then the second most frequent, ...).
    """
    num_predicates = len(predicate_counts)
    order = torch.argsort(predicate_counts, descending=True, stable=True)
    rank = torch.empty(num_predicates, dtype=torch.float32)
    rank[order] = torch.arange(num_predicates, dtype=torch.float32)
    pair_noise = torch.rand(n, n, generator=generator)  # in [0, 1): breaks ties between pairs only
    return -rank[:, None, None] + pair_noise[None]

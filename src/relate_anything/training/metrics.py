"""Recall of cached relations from relation logits, index-based (both sides are SAM mask indices),
and a student's agreement with a teacher on the same masks.

This is the training-time check (what RAM's script reports): a predicted triplet hits when its
(subject mask, object mask, predicate) equals a cached relation. PSG's SGDet metric (classes and
mask IoU) lives in `relate_anything.evaluation`.

Teacher agreement (distillation): the teacher's top-`top` triplets (20 by default) play the part of
the ground truth, so "teacher R@K" is the fraction of them among the student's top K; and the KL
divergence from the teacher's soft targets to the student's, tempered as in the loss (see
`teacher_agreement`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from relate_anything.ram import relate
from relate_anything.training.losses import LossName

__all__ = [
    "RECALL_KS",
    "TEACHER_TOP",
    "TeacherAgreement",
    "frequency_baseline_logits",
    "mean_predicate_recall",
    "mean_recall",
    "mean_teacher_agreement",
    "predicate_recall",
    "teacher_agreement",
    "teacher_triplets",
    "triplet_recall",
]

RECALL_KS = (20, 50, 100)
TEACHER_TOP = 20


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


def predicate_recall(
    logits: Tensor, relations: Tensor, ks: Sequence[int] = RECALL_KS
) -> dict[int, dict[int, float]] | None:
    """Recall@K of one image's relations among its top-K triplets, per predicate.

    Args:
        logits: [P, N, N] relation logits of one image; relations: [R, 3] (subject, object,
            predicate), duplicates count once; ks: the K values.

    Returns:
        {predicate: {K: hits of that predicate's relations / their number}} for the predicates
        that occur, or None when the image has no relation.
    """
    if len(relations) == 0:
        return None
    _, n, _ = logits.shape
    relations = relations.to(logits.device).long()
    truth = torch.unique((relations[:, 2] * n + relations[:, 0]) * n + relations[:, 1])
    ranked = relate(logits.float(), top_k=max(ks))
    keys = (ranked.predicates * n + ranked.subjects) * n + ranked.objects
    predicates = truth // (n * n)
    recall: dict[int, dict[int, float]] = {}
    for predicate in predicates.unique().tolist():
        mine = truth[predicates == predicate]
        recall[predicate] = {k: float(torch.isin(keys[:k], mine).sum()) / len(mine) for k in ks}
    return recall


def mean_predicate_recall(
    per_image: list[dict[int, dict[int, float]] | None], ks: Sequence[int] = RECALL_KS
) -> dict[str, float]:
    """{"mR@K": ...}: for each predicate, the mean of its recall over the images whose relations
    contain it; then the mean over the predicates that occur (0.0 when none does).

    Unlike PSG's mR@K (over all 56 predicates, an absent one counting 0), the mean is over the
    predicates present in the evaluated cache: a training-time check, not the benchmark figure.
    """
    by_predicate: dict[int, list[dict[int, float]]] = {}
    for image in per_image:
        for predicate, recall in (image or {}).items():
            by_predicate.setdefault(predicate, []).append(recall)
    means = [{k: sum(r[k] for r in rs) / len(rs) for k in ks} for rs in by_predicate.values()]
    return {f"mR@{k}": (sum(m[k] for m in means) / len(means) if means else 0.0) for k in ks}


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


# ----------------------------------------------------------------------------------------------
# Agreement with a teacher


@dataclass(frozen=True)
class TeacherAgreement:
    """One image's agreement of a student with a teacher on the same masks.

    Attributes:
        recall: {K: fraction of the teacher's top triplets among the student's top K}.
        kl: mean over valid entries (subject != object) of KL(teacher || student), see
            `teacher_agreement`; in nats, >= 0.
    """

    recall: dict[int, float]
    kl: float


def teacher_triplets(teacher_logits: Tensor, top: int = TEACHER_TOP) -> Tensor:
    """[min(top, valid), 3] int64 (subject, object, predicate): the teacher's best triplets of one
    image ([P, N, N] logits), in the layout of cached relations."""
    ranked = relate(teacher_logits.float(), top_k=top)
    return torch.stack([ranked.subjects, ranked.objects, ranked.predicates], dim=1)


def teacher_agreement(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    ks: Sequence[int] = RECALL_KS,
    top: int = TEACHER_TOP,
    temperature: float = 1.0,
    kind: LossName = "multi_label_ce",
) -> TeacherAgreement | None:
    """How well a student's relation logits agree with a teacher's on one image's masks.

    Recall: the teacher's top-`top` triplets are the truth, and `triplet_recall` of the student's
    logits against them gives teacher R@K.

    KL: per valid entry (i != j), the Bernoulli KL divergence from the teacher's soft target to the
    student's, both mapped as in the loss: p = soft_targets(z, T, kind), q = soft_targets(s, T, kind)
    (sigmoid(c x / T), c = 2 for multi_label_ce, 1 for bce), KL = p log(p / q) + (1 - p)
    log((1 - p) / (1 - q)); the mean over the image's valid entries. 0 exactly when s = z. (Not
    scaled by T^2: that factor is for the gradients.)

    Args:
        student_logits, teacher_logits: [P, N, N] float, padding sliced off.
        ks: the K of teacher R@K; top: how many teacher triplets are the truth.
        temperature, kind: as the distillation loss.

    Returns:
        `TeacherAgreement`, or None when the image has fewer than 2 masks (nothing to relate).
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student {list(student_logits.shape)} and teacher {list(teacher_logits.shape)} logits differ")
    _, n, _ = teacher_logits.shape
    if n < 2:
        return None
    recall = triplet_recall(student_logits, teacher_triplets(teacher_logits, top), ks)
    scale = (2.0 if kind == "multi_label_ce" else 1.0) / temperature
    u, v = teacher_logits.float() * scale, student_logits.float() * scale
    p = torch.sigmoid(u)
    # log p - log q = logsigmoid(u) - logsigmoid(v); likewise for 1 - p with -u, -v: stable everywhere.
    kl = p * (F.logsigmoid(u) - F.logsigmoid(v)) + (1 - p) * (F.logsigmoid(-u) - F.logsigmoid(-v))
    valid = ~torch.eye(n, dtype=torch.bool, device=kl.device)
    return TeacherAgreement(recall=recall or {}, kl=float(kl[:, valid].mean()))


def mean_teacher_agreement(per_image: list[TeacherAgreement | None], ks: Sequence[int] = RECALL_KS) -> dict[str, float]:
    """{"teacher_R@K": ..., "teacher_KL": ...}: means over the images that have an agreement
    (0.0 when none has)."""
    scored = [a for a in per_image if a is not None]
    out = {f"teacher_R@{k}": (sum(a.recall[k] for a in scored) / len(scored) if scored else 0.0) for k in ks}
    out["teacher_KL"] = sum(a.kl for a in scored) / len(scored) if scored else 0.0
    return out

"""The relation head's training losses: hard labels, soft targets, and distillation from a teacher.

Notation, per image: s the student's logits, y the targets (hard labels in {0, 1}, possibly
softened by the EMA teacher), z a teacher's logits, T a temperature, all [P, N, N]; only valid
entries count (both masks real, subject != object). l_kind(s, t) is the loss of one image:

- "multi_label_ce": Su Jianlin's multi-label categorical cross-entropy (RAM's loss), soft form
  log(1 + sum (1 - t) e^s) + log(1 + sum t e^-s); the batch loss is the mean over images.
- "bce": the sum of binary cross-entropies -t log sigmoid(s) - (1 - t) log(1 - sigmoid(s)) over
  the image's entries; the batch loss is the sum over images / the batch's number of valid entries.

Distillation from a teacher's logits (Hinton, Vinyals and Dean, 2015): the student's logits divided
by T are trained against the teacher's tempered soft targets q = soft_targets(z, T), and the term is
scaled by T^2, because its gradients shrink as 1/T^2 (so the hard and soft terms keep their
balance whatever T):

    L_image = (1 - a) l_kind(s, y) + a T^2 l_kind(s / T, q)
    a = teacher_weight for an image with hard labels (at least one cached relation), 1 for one
        without (then only the teacher teaches).

For BCE, which is linear in its target, at T = 1 this is exactly l(s, (1 - a) y + a q): the
target mix (1 - a) hard + a soft. At T != 1 it is the tempered generalisation above.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "LossName",
    "multilabel_categorical_crossentropy",
    "relation_loss",
    "soft_targets",
    "teacher_distillation_loss",
]

LossName = Literal["multi_label_ce", "bce"]


def multilabel_categorical_crossentropy(
    logits: Tensor, targets: Tensor, valid: Tensor, *, reduction: Literal["mean", "none"] = "mean"
) -> Tensor:
    """Su Jianlin's multi-label categorical cross-entropy (ZLPR), per image, soft-label form.

        loss = log(1 + sum_valid (1 - t) e^{s}) + log(1 + sum_valid t e^{-s})

    over every valid (predicate, subject, object) entry of an image, mean over images. With hard
    targets t in {0, 1} this is exactly RAM's loss, log(1 + sum_neg e^s) + log(1 + sum_pos e^-s):
    positives are pushed above 0 and negatives below, relative to each other as in a softmax, so
    that the few positives among ~56 N^2 entries are not swamped. With soft targets it is the
    natural generalisation (a BCE term per entry, summed inside the logs); for a lone entry its
    minimum is at s = logit(t) / 2, which `soft_targets` accounts for.

    Args:
        logits: [B, P, N, N]; targets: same shape, in [0, 1]; valid: broadcastable bool mask.
        reduction: "mean" over images, or "none": [B], one loss per image.

    Returns:
        scalar float32 (or [B] with reduction "none").
    """
    s = logits.float().flatten(1)
    t = targets.float().flatten(1)
    keep = valid.expand_as(logits).flatten(1)
    neg = (s + torch.log1p(-t)).masked_fill(~keep, float("-inf"))  # log((1 - t) e^s)
    pos = (-s + torch.log(t)).masked_fill(~keep, float("-inf"))  # log(t e^-s)
    zero = s.new_zeros(s.shape[0], 1)  # the "1 +" inside each log; keeps every row finite
    per_image = torch.logsumexp(torch.cat([neg, zero], 1), 1) + torch.logsumexp(torch.cat([pos, zero], 1), 1)
    return per_image if reduction == "none" else per_image.mean()


def _per_image(logits: Tensor, targets: Tensor, valid: Tensor, kind: LossName) -> tuple[Tensor, Tensor]:
    """([B] l_kind of each image, the normaliser that turns their sum into the batch loss)."""
    if kind == "multi_label_ce":
        per_image = multilabel_categorical_crossentropy(logits, targets, valid, reduction="none")
        return per_image, per_image.new_tensor(float(len(per_image)))
    per_entry = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none")
    mask = valid.expand_as(per_entry)
    per_image = per_entry.masked_fill(~mask, 0.0).flatten(1).sum(1)
    return per_image, mask.sum().clamp(min=1).to(per_image.dtype)


def relation_loss(logits: Tensor, targets: Tensor, valid: Tensor, kind: LossName) -> Tensor:
    """The training loss over valid entries only (padding and self-pairs excluded).

    "bce": mean binary cross-entropy over every valid entry of the batch; "multi_label_ce": see
    `multilabel_categorical_crossentropy`.
    """
    per_image, normaliser = _per_image(logits, targets, valid, kind)
    return per_image.sum() / normaliser


def soft_targets(teacher_logits: Tensor, temperature: float, kind: LossName) -> Tensor:
    """A teacher's soft labels at temperature T, float32 in (0, 1).

    BCE: sigmoid(z / T), the usual tempered distillation target (the BCE optimum is s / T = z / T).
    Multi-label CE: sigmoid(2 z / T). With t = sigmoid(2 x) the two terms of an entry are equal,
    (1 - t) e^x = t e^-x, so at s / T = z / T the gradients of the loss's two logs cancel entry by
    entry: a student equal to the teacher is the minimum of the (convex) distillation term over
    all entries at once, as with BCE.
    """
    scale = 2.0 if kind == "multi_label_ce" else 1.0
    return torch.sigmoid(teacher_logits.float() * (scale / temperature))


def teacher_distillation_loss(
    logits: Tensor,
    targets: Tensor,
    teacher_logits: Tensor,
    labelled: Tensor,
    valid: Tensor,
    *,
    kind: LossName,
    weight: float,
    temperature: float,
) -> Tensor:
    """Hard labels mixed with a teacher's tempered soft targets (see the module docstring):

        loss = sum_b [(1 - a_b) l(s_b, y_b) + a_b T^2 l(s_b / T, soft_targets(z_b, T))] / norm

    with a_b = `weight` where image b has hard labels and 1 where it has none, and norm = B for
    multi-label CE, the number of valid entries of the batch for BCE. With `weight` 0 and every
    image labelled it equals `relation_loss(logits, targets, valid, kind)`.

    Args:
        logits: [B, P, N, N] the student's logits s.
        targets: [B, P, N, N] the hard (or EMA-softened) targets y in [0, 1].
        teacher_logits: [B, P, N, N] the teacher's logits z.
        labelled: [B] bool, True for images with hard labels.
        valid: [B, 1, N, N] bool, the entries that count.
        kind: "multi_label_ce" or "bce".
        weight: the teacher's weight a in [0, 1] on labelled images.
        temperature: T > 0.

    Returns:
        scalar float32.
    """
    hard, norm = _per_image(logits, targets, valid, kind)
    soft, _ = _per_image(logits.float() / temperature, soft_targets(teacher_logits, temperature, kind), valid, kind)
    a = torch.where(labelled.to(hard.device), hard.new_tensor(weight), hard.new_tensor(1.0))
    return ((1.0 - a) * hard + a * temperature**2 * soft).sum() / norm

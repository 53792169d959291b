"""From relation logits to a ranked list of (subject, predicate, object, score) triplets."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class RankedTriplets:
    """Relation triplets of one image, best first. All fields are 1-D tensors of length K.

    Attributes:
        subjects: [K] int64, index of the subject mask.
        predicates: [K] int64, predicate index (PSG's 56 predicates, in dataset order).
        objects: [K] int64, index of the object mask.
        scores: [K] float, sigmoid probability, descending.
    """

    subjects: Tensor
    predicates: Tensor
    objects: Tensor
    scores: Tensor

    def __post_init__(self) -> None:
        lengths = {len(t) for t in (self.subjects, self.predicates, self.objects, self.scores)}
        if len(lengths) != 1:
            raise ValueError(f"RankedTriplets fields must have one length, got {sorted(lengths)}")

    def __len__(self) -> int:
        return len(self.scores)

    def tolist(self) -> list[tuple[int, int, int, float]]:
        """[(subject, predicate, object, score), ...] as Python numbers."""
        return list(zip(self.subjects.tolist(), self.predicates.tolist(), self.objects.tolist(), self.scores.tolist()))


def relate(scores: Tensor, top_k: int | None = 100, subject: int | None = None) -> RankedTriplets:
    """Rank an image's triplets as RAM's authors do, without self-pairs.

    Flattening is relation-major: flat index = r * N^2 + i * N + j for (subject i, predicate r,
    object j). Ranking uses the logits, which orders like the sigmoid probabilities but does not
    tie where float32 sigmoid saturates at 1.0.

    Args:
        scores: [num_predicates, N, N] logits from `RelationHead` for one image (slice off padding
            first: `scores[b, :, :n, :n]`).
        top_k: how many triplets to return; clipped to the number of valid ones. None: all.
        subject: when given, only triplets whose subject is this mask ("relate me with anything").

    Returns:
        `RankedTriplets` with K = min(top_k, number of valid triplets) entries, on scores' device.
    """
    if scores.dim() != 3 or scores.shape[1] != scores.shape[2]:
        raise ValueError(f"scores must be [num_predicates, N, N], got {list(scores.shape)}")
    if top_k is not None and top_k < 0:
        raise ValueError(f"top_k must be >= 0 or None, got {top_k}")
    num_predicates, n, _ = scores.shape
    if subject is not None and not 0 <= subject < n:
        raise ValueError(f"subject {subject} is not a mask index (N = {n})")
    valid = _valid_pairs(n, subject, scores.device)
    num_valid = num_predicates * int(valid.sum())
    k = num_valid if top_k is None else min(top_k, num_valid)
    # Invalid pairs get -inf, so top-k over at most the valid count never picks them.
    ranked = scores.masked_fill(~valid, float("-inf")).flatten()
    logits, flat = torch.topk(ranked, k)
    return RankedTriplets(
        subjects=(flat % (n * n)) // n,
        predicates=flat // (n * n),
        objects=flat % n,
        scores=logits.sigmoid(),
    )


def _valid_pairs(n: int, subject: int | None, device: torch.device) -> Tensor:
    """[N, N] bool: True for (subject, object) pairs to rank."""
    valid = ~torch.eye(n, dtype=torch.bool, device=device)
    if subject is not None:
        valid[torch.arange(n, device=device) != subject] = False
    return valid

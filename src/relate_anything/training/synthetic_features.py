"""A synthetic feature cache whose relations are a known function of the mask features.

Used to prove that training learns (tests) and to time training at PSG scale (benchmarks)
without SAM or images. Each image has N masks with features f ~ N(0, I). For each of a few
"active" predicates r there are two fixed unit directions a_r, b_r (the rule, shared by every
cache made with the same `rule_seed`), and

    (i, r, j) is a relation  <=>  i != j  and  <a_r, f_i> > tau  and  <b_r, f_j> > tau

with tau chosen so that each side holds with probability `side_rate`. A relation head can
represent this exactly (the score is a product of a subject term and an object term), while a
predicate-frequency prior cannot tell pairs apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np
import torch

from relate_anything.training.cache import ImageRecord, ShardWriter

__all__ = ["SyntheticRule", "make_synthetic_feature_cache", "synthetic_rule"]


@dataclass(frozen=True)
class SyntheticRule:
    """predicates [A] (ids of the active predicates), subject_directions / object_directions
    [A, D] unit vectors, threshold tau."""

    predicates: np.ndarray
    subject_directions: np.ndarray
    object_directions: np.ndarray
    threshold: float

    def relations(self, features: np.ndarray) -> np.ndarray:
        """[R, 3] int64 (subject, object, predicate) of features [N, D], sorted."""
        subj = features @ self.subject_directions.T > self.threshold  # [N, A]
        obj = features @ self.object_directions.T > self.threshold
        holds = subj[:, None, :] & obj[None, :, :]  # [N, N, A]
        holds[np.arange(len(features)), np.arange(len(features))] = False
        i, j, a = np.nonzero(holds)
        return np.stack([i, j, self.predicates[a]], axis=1).astype(np.int64)


def synthetic_rule(
    *,
    feature_dim: int = 256,
    num_predicates: int = 56,
    active_predicates: int = 4,
    side_rate: float = 0.25,
    seed: int = 0,
) -> SyntheticRule:
    """The rule for `rule_seed` = seed (see the module docstring)."""
    rng = np.random.default_rng(seed)
    predicates = np.sort(rng.choice(num_predicates, size=active_predicates, replace=False))

    def directions() -> np.ndarray:
        d = rng.standard_normal((active_predicates, feature_dim))
        return d / np.linalg.norm(d, axis=1, keepdims=True)

    return SyntheticRule(predicates, directions(), directions(), NormalDist().inv_cdf(1.0 - side_rate))


def make_synthetic_feature_cache(
    out_dir: str | Path,
    *,
    images: int,
    seed: int = 0,
    rule_seed: int = 0,
    masks: tuple[int, int] = (4, 8),
    feature_dim: int = 256,
    num_predicates: int = 56,
    active_predicates: int = 4,
    side_rate: float = 0.25,
    shard_size: int = 256,
    feature_dtype: torch.dtype = torch.float16,
) -> SyntheticRule:
    """Write a `FeatureCache` folder of `images` synthetic images and return its rule.

    Args:
        out_dir: the cache folder.
        images: how many images.
        seed: draws the features (use different seeds for training and held-out caches).
        rule_seed: draws the rule (use the same for caches that must agree).
        masks: (min, max) masks per image, inclusive.
        feature_dim, num_predicates, active_predicates, side_rate: see the module docstring.
        shard_size, feature_dtype: as `ShardWriter`.
    """
    rule = synthetic_rule(
        feature_dim=feature_dim,
        num_predicates=num_predicates,
        active_predicates=active_predicates,
        side_rate=side_rate,
        seed=rule_seed,
    )
    rng = np.random.default_rng([seed, 1])
    with ShardWriter(out_dir, shard_size=shard_size, feature_dtype=feature_dtype) as writer:
        for k in range(images):
            n = int(rng.integers(masks[0], masks[1] + 1))
            features = rng.standard_normal((n, feature_dim)).astype(np.float32)
            # What the head sees is the stored (possibly float16) feature: label from that.
            features = features.astype(np.float16).astype(np.float32) if feature_dtype == torch.float16 else features
            writer.add(
                ImageRecord(image_id=f"synthetic-{seed}-{k}", features=features, relations=rule.relations(features))
            )
    return rule

"""Synthetic feature caches whose relations (or teacher logits) are a known function of the
mask features.

Used to prove that training learns (tests), to time training at PSG scale (benchmarks) and to
measure what self-distillation does (bench/self_distillation.py), without SAM or images.

Relations. Each image has N masks with features f ~ N(0, I). For each of a few "active"
predicates r there are two fixed unit directions a_r, b_r (the rule, shared by every cache made
with the same `rule_seed`), and

    (i, r, j) is a relation  <=>  i != j  and  <a_r, f_i> > tau  and  <b_r, f_j> > tau

with tau chosen so that each side holds with probability `side_rate`. A relation head can
represent this exactly (the score is a product of a subject term and an object term), while a
predicate-frequency prior cannot tell pairs apart.

Ambiguous predicate pairs (like PSG's "on" / "standing on"). A pair (g, s) of predicates shares
one such rule (a, b): the pair relates (i, j) by the test above, and a third direction c decides
which of the two it is: s ("standing on", the specific one) when <c, f_i> > tau_s, else g ("on");
tau_s makes s hold for a fraction `specific_rate` of the pairs. With `label_noise` q, the cached
label of each such relation is then flipped to the other predicate of its pair with probability q
(both ways), as annotators who pick one of two fitting words would; held-out caches made with
q = 0 have the clean labels.

Teacher logits (distillation). `SyntheticTeacher`: objects have latent features x; the teacher's
segmenter gives tokens A x, the student's B x (fixed random maps of different widths), and a fixed
random relation head on the teacher's tokens gives the teacher's logits. A student head trained on
(B x, teacher logits) can learn them, since B is invertible on x; shuffled targets cannot be learnt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist

import numpy as np
import torch

from relate_anything.ram import RelationHead, RelationHeadConfig
from relate_anything.training.cache import ImageRecord, ShardWriter

__all__ = [
    "SyntheticRule",
    "SyntheticTeacher",
    "make_synthetic_distillation_cache",
    "make_synthetic_feature_cache",
    "synthetic_rule",
    "synthetic_teacher",
]


@dataclass(frozen=True)
class SyntheticRule:
    """predicates [A] (ids of the active predicates), subject_directions / object_directions
    [A, D] unit vectors, threshold tau; and the ambiguous pairs: pair_predicates [K, 2] int
    (general, specific), pair_subject_directions / pair_object_directions / split_directions
    [K, D] unit vectors, split_threshold tau_s."""

    predicates: np.ndarray
    subject_directions: np.ndarray
    object_directions: np.ndarray
    threshold: float
    pair_predicates: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))
    pair_subject_directions: np.ndarray | None = None
    pair_object_directions: np.ndarray | None = None
    split_directions: np.ndarray | None = None
    split_threshold: float = 0.0

    def relations(self, features: np.ndarray) -> np.ndarray:
        """[R, 3] int64 (subject, object, predicate) of features [N, D]: the clean labels."""
        return self._relations(features, None, 0.0)

    def noisy_relations(self, features: np.ndarray, rng: np.random.Generator, label_noise: float) -> np.ndarray:
        """`relations`, with each ambiguous pair's predicate flipped to the other one of the pair
        with probability `label_noise` (draws from `rng`)."""
        return self._relations(features, rng, label_noise)

    def _relations(self, features: np.ndarray, rng: np.random.Generator | None, label_noise: float) -> np.ndarray:
        n = len(features)
        rows = [_pairs(features, self.subject_directions, self.object_directions, self.threshold, self.predicates)]
        if len(self.pair_predicates):
            holds = _holds(features, self.pair_subject_directions, self.pair_object_directions, self.threshold)
            i, j, k = np.nonzero(holds)
            specific = (features @ self.split_directions.T > self.split_threshold)[i, k]  # decided by the subject
            if rng is not None and label_noise > 0:
                specific ^= rng.random(len(specific)) < label_noise
            predicates = self.pair_predicates[k, specific.astype(np.int64)]
            rows.append(np.stack([i, j, predicates], axis=1))
        relations = np.concatenate(rows).astype(np.int64).reshape(-1, 3)
        order = np.lexsort((relations[:, 2], relations[:, 1], relations[:, 0])) if n else np.arange(0)
        return relations[order]


def _holds(features: np.ndarray, subject: np.ndarray, object_: np.ndarray, threshold: float) -> np.ndarray:
    """[N, N, A] bool: subject side and object side above the threshold, self-pairs excluded."""
    subj = features @ subject.T > threshold  # [N, A]
    obj = features @ object_.T > threshold
    holds = subj[:, None, :] & obj[None, :, :]
    holds[np.arange(len(features)), np.arange(len(features))] = False
    return holds


def _pairs(
    features: np.ndarray, subject: np.ndarray, object_: np.ndarray, threshold: float, predicates: np.ndarray
) -> np.ndarray:
    """[R, 3] (subject, object, predicate) where `_holds`."""
    i, j, a = np.nonzero(_holds(features, subject, object_, threshold))
    return np.stack([i, j, predicates[a]], axis=1)


def synthetic_rule(
    *,
    feature_dim: int = 256,
    num_predicates: int = 56,
    active_predicates: int = 4,
    side_rate: float = 0.25,
    seed: int = 0,
    ambiguous_pairs: Sequence[tuple[int, int]] = (),
    specific_rate: float = 0.3,
) -> SyntheticRule:
    """The rule for `rule_seed` = seed (see the module docstring).

    Args:
        ambiguous_pairs: (general, specific) predicate ids, e.g. PSG's ((3, 14),): "on" and
            "standing on"; each predicate in at most one pair. The `active_predicates`
            unambiguous predicates are drawn from the others.
        specific_rate: the fraction of a pair's relations that are the specific predicate.
    """
    pair_predicates = np.asarray(ambiguous_pairs, dtype=np.int64).reshape(-1, 2)
    used = pair_predicates.reshape(-1)
    if len(set(used.tolist())) != len(used) or (len(used) and (used.min() < 0 or used.max() >= num_predicates)):
        raise ValueError(f"ambiguous_pairs must be distinct predicate ids in 0..{num_predicates - 1}")
    if not 0.0 < specific_rate < 1.0:
        raise ValueError("specific_rate must be in (0, 1)")
    rng = np.random.default_rng(seed)
    free = np.setdiff1d(np.arange(num_predicates), used)
    predicates = np.sort(rng.choice(free, size=active_predicates, replace=False))

    def directions(count: int) -> np.ndarray:
        d = rng.standard_normal((count, feature_dim))
        return d / np.linalg.norm(d, axis=1, keepdims=True)

    subject, object_ = directions(active_predicates), directions(active_predicates)
    if not len(pair_predicates):  # the same draws as before ambiguous pairs existed
        return SyntheticRule(predicates, subject, object_, NormalDist().inv_cdf(1.0 - side_rate))
    k = len(pair_predicates)
    return SyntheticRule(
        predicates,
        subject,
        object_,
        NormalDist().inv_cdf(1.0 - side_rate),
        pair_predicates=pair_predicates,
        pair_subject_directions=directions(k),
        pair_object_directions=directions(k),
        split_directions=directions(k),
        # <c, f> ~ N(0, 1) for a unit c; random directions are nearly orthogonal in high
        # dimension, so this holds (about) independently of the subject side's test.
        split_threshold=NormalDist().inv_cdf(1.0 - specific_rate),
    )


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
    ambiguous_pairs: Sequence[tuple[int, int]] = (),
    specific_rate: float = 0.3,
    label_noise: float = 0.0,
    shard_size: int = 256,
    feature_dtype: torch.dtype = torch.float16,
) -> SyntheticRule:
    """Write a `FeatureCache` folder of `images` synthetic images and return its rule.

    Args:
        out_dir: the cache folder.
        images: how many images.
        seed: draws the features and the label noise (use different seeds for training and
            held-out caches).
        rule_seed: draws the rule (use the same for caches that must agree).
        masks: (min, max) masks per image, inclusive.
        feature_dim, num_predicates, active_predicates, side_rate, ambiguous_pairs, specific_rate:
            see the module docstring and `synthetic_rule`.
        label_noise: probability q that an ambiguous pair's label is flipped (0: clean labels).
        shard_size, feature_dtype: as `ShardWriter`.
    """
    if not 0.0 <= label_noise <= 1.0:
        raise ValueError("label_noise must be in [0, 1]")
    rule = synthetic_rule(
        feature_dim=feature_dim,
        num_predicates=num_predicates,
        active_predicates=active_predicates,
        side_rate=side_rate,
        seed=rule_seed,
        ambiguous_pairs=ambiguous_pairs,
        specific_rate=specific_rate,
    )
    rng = np.random.default_rng([seed, 1])
    noise_rng = np.random.default_rng([seed, 2])  # apart, so the features do not depend on the noise
    with ShardWriter(out_dir, shard_size=shard_size, feature_dtype=feature_dtype) as writer:
        for k in range(images):
            n = int(rng.integers(masks[0], masks[1] + 1))
            features = rng.standard_normal((n, feature_dim)).astype(np.float32)
            # What the head sees is the stored (possibly float16) feature: label from that.
            features = features.astype(np.float16).astype(np.float32) if feature_dtype == torch.float16 else features
            relations = rule.noisy_relations(features, noise_rng, label_noise)
            writer.add(ImageRecord(image_id=f"synthetic-{seed}-{k}", features=features, relations=relations))
    return rule


# ----------------------------------------------------------------------------------------------
# A known teacher, for distillation


@dataclass(frozen=True)
class SyntheticTeacher:
    """A teacher segmenter and relation head, and a student segmenter, with a known answer.

    Attributes:
        teacher_map: [teacher_dim, object_dim]: the teacher segmenter's token of an object x is A x.
        student_map: [student_dim, object_dim]: the student segmenter's token is B x.
        head: the teacher's relation head (random, fixed, eval mode) on teacher tokens.
        scale: multiplies the head's logits (so their standard deviation is about `logit_std`).
    """

    teacher_map: np.ndarray
    student_map: np.ndarray
    head: RelationHead
    scale: float

    def student_tokens(self, objects: np.ndarray) -> np.ndarray:
        """[N, student_dim] float32 tokens of objects [N, object_dim]."""
        return (objects @ self.student_map.T).astype(np.float32)

    def teacher_tokens(self, objects: np.ndarray) -> np.ndarray:
        """[N, teacher_dim] float32 tokens of objects [N, object_dim]."""
        return (objects @ self.teacher_map.T).astype(np.float32)

    @torch.no_grad()
    def logits(self, objects: np.ndarray) -> np.ndarray:
        """[P, N, N] float32: the teacher's relation logits for objects [N, object_dim]."""
        tokens = torch.from_numpy(self.teacher_tokens(objects))
        return (self.head.score(tokens) * self.scale).numpy()


def synthetic_teacher(
    *,
    object_dim: int = 16,
    teacher_dim: int = 48,
    student_dim: int = 32,
    num_predicates: int = 8,
    hidden_size: int = 64,
    logit_std: float = 2.0,
    seed: int = 0,
) -> SyntheticTeacher:
    """A `SyntheticTeacher` drawn from `seed` (the global torch RNG is left as it was).

    Args:
        object_dim: width of the latent object features x (<= student_dim, so B is invertible).
        teacher_dim, student_dim: token widths of the teacher's and the student's segmenters.
        num_predicates: P of the teacher's logits.
        hidden_size: width of the teacher head (2 heads, 1 layer, 32-d projections).
        logit_std: the teacher logits' standard deviation over random objects.
    """
    if object_dim > student_dim:
        raise ValueError("object_dim must be <= student_dim, or the student cannot see every object feature")
    rng = np.random.default_rng([seed, 7])
    teacher_map = rng.standard_normal((teacher_dim, object_dim)) / np.sqrt(object_dim)
    student_map = rng.standard_normal((student_dim, object_dim)) / np.sqrt(object_dim)
    config = RelationHeadConfig(
        feature_dim=teacher_dim,
        hidden_size=hidden_size,
        num_layers=1,
        num_heads=2,
        intermediate_size=2 * hidden_size,
        num_predicates=num_predicates,
        projection_dim=32,
        vocab_size=2,
        max_position_embeddings=2,
        type_vocab_size=1,
        dropout=0.0,
        segmenter="synthetic-teacher",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = RelationHead(config).eval()
    unscaled = SyntheticTeacher(teacher_map, student_map, head, 1.0)
    probe = [unscaled.logits(rng.standard_normal((8, object_dim))) for _ in range(16)]
    spread = float(np.std(np.concatenate([p.reshape(-1) for p in probe])))
    return SyntheticTeacher(teacher_map, student_map, head, logit_std / max(spread, 1e-12))


def make_synthetic_distillation_cache(
    out_dir: str | Path,
    teacher: SyntheticTeacher,
    *,
    images: int,
    seed: int = 0,
    masks: tuple[int, int] = (4, 8),
    segmenter: str = "synthetic-student",
    shard_size: int = 256,
) -> None:
    """Write a distillation `FeatureCache`: per image, the student's tokens of N random objects
    as features, the teacher's [P, N, N] logits on the same objects, no relations (unlabelled
    photos), recording `segmenter`."""
    rng = np.random.default_rng([seed, 3])
    object_dim = teacher.teacher_map.shape[1]
    with ShardWriter(out_dir, shard_size=shard_size, segmenter=segmenter) as writer:
        for k in range(images):
            n = int(rng.integers(masks[0], masks[1] + 1))
            objects = rng.standard_normal((n, object_dim))
            writer.add(
                ImageRecord(
                    image_id=f"distill-{seed}-{k}",
                    features=teacher.student_tokens(objects),
                    relations=np.zeros((0, 3), dtype=np.int64),
                    teacher_logits=teacher.logits(objects),
                )
            )

"""Distillation from a cached teacher (issue 15): teacher logits in the feature cache, the tempered
soft-target loss, teacher agreement, heads that record their segmenter, and proof that a student
with other tokens learns the teacher's relations."""

from __future__ import annotations

import json
import math
import os
from dataclasses import FrozenInstanceError, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from ram_factory import TRAINABLE_HEAD
from relate_anything import atomic
from relate_anything.errors import CheckpointError, RelateAnythingError
from relate_anything.ram import RelationHead, RelationHeadConfig
from relate_anything.ram.checkpoint import CONFIG_METADATA_KEY
from relate_anything.training import FeatureCache, ImageRecord, ShardWriter, TrainConfig, train
from relate_anything.training.cache import FORMAT_V1, CacheError
from relate_anything.training.losses import relation_loss, soft_targets, teacher_distillation_loss
from relate_anything.training.metrics import (
    mean_predicate_recall,
    predicate_recall,
    teacher_agreement,
    teacher_triplets,
)
from relate_anything.training.synthetic_features import (
    make_synthetic_distillation_cache,
    make_synthetic_feature_cache,
    synthetic_teacher,
)
from relate_anything.training.trainer import _save_checkpoint, evaluate_agreement

STUDENT_HEAD = replace(TRAINABLE_HEAD, num_predicates=8)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def distill_config(**overrides) -> TrainConfig:
    values = dict(
        epochs=3,
        lr=3e-3,
        lr_milestones=(2,),
        batch_size=8,
        head=STUDENT_HEAD,
        ema_decay=0.99,
        max_grad_norm=None,
        teacher_weight=1.0,
        log=False,
    )
    return TrainConfig(**(values | overrides))


# ---------------------------------------------------------------------------------------------
# The loss, by hand


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _mlce_by_hand(s: list[float], t: list[float]) -> float:
    return math.log(1 + sum((1 - ti) * math.exp(si) for si, ti in zip(s, t))) + math.log(
        1 + sum(ti * math.exp(-si) for si, ti in zip(s, t))
    )


def _bce_by_hand(s: list[float], t: list[float]) -> float:
    return sum(-ti * math.log(_sigmoid(si)) - (1 - ti) * math.log(1 - _sigmoid(si)) for si, ti in zip(s, t))


def _valid_entries(x: torch.Tensor, b: int, n: int) -> list[float]:
    """Image b's entries [r, i, j] with i, j < n and i != j, as Python floats."""
    return [float(x[b, r, i, j]) for r in range(x.shape[1]) for i in range(n) for j in range(n) if i != j]


@pytest.mark.parametrize("kind", ["multi_label_ce", "bce"])
def test_teacher_loss_is_the_tempered_soft_target_formula_computed_by_hand(kind):
    # Two images, 2 predicates, 3 mask slots; image 1 has 2 real masks (the third is padding)
    # and no hard labels, so only the teacher teaches it.
    s = torch.tensor(
        [
            [
                [[0.0, 1.5, -2.0], [0.5, 0.0, 3.0], [-1.0, 2.0, 0.0]],
                [[0.0, -0.5, 1.0], [2.5, 0.0, -3.0], [0.2, 1.1, 0.0]],
            ],
            [[[0.0, 0.7, 9.0], [-1.2, 0.0, 9.0], [9.0, 9.0, 9.0]], [[0.0, 2.2, 9.0], [0.3, 0.0, 9.0], [9.0, 9.0, 9.0]]],
        ]
    )
    z = torch.tensor(
        [
            [
                [[0.0, 3.0, -1.0], [-2.0, 0.0, 1.0], [0.5, -0.5, 0.0]],
                [[0.0, 1.0, 2.0], [-3.0, 0.0, 0.0], [1.5, 0.4, 0.0]],
            ],
            [
                [[0.0, -1.0, 5.0], [2.0, 0.0, 5.0], [5.0, 5.0, 5.0]],
                [[0.0, 0.5, 5.0], [-0.7, 0.0, 5.0], [5.0, 5.0, 5.0]],
            ],
        ]
    )
    y = torch.zeros_like(s)
    y[0, 0, 0, 1] = y[0, 1, 2, 0] = 1.0
    y[0, 1, 1, 2] = 0.6  # a softened label, as the EMA teacher makes them
    labelled = torch.tensor([True, False])
    real = torch.tensor([[True, True, True], [True, True, False]])
    valid = (real[:, :, None] & real[:, None, :] & ~torch.eye(3, dtype=torch.bool))[:, None]
    a, temperature = 0.3, 2.0
    c = 2.0 if kind == "multi_label_ce" else 1.0  # soft_targets' documented scale

    loss_of = _mlce_by_hand if kind == "multi_label_ce" else _bce_by_hand
    total, entries = 0.0, 0
    for b, n, weight in ((0, 3, a), (1, 2, 1.0)):
        sb, zb, yb = _valid_entries(s, b, n), _valid_entries(z, b, n), _valid_entries(y, b, n)
        hard = loss_of(sb, yb)
        soft = loss_of([x / temperature for x in sb], [_sigmoid(c * x / temperature) for x in zb])
        total += (1 - weight) * hard + weight * temperature**2 * soft
        entries += len(sb)
    expected = total / (2 if kind == "multi_label_ce" else entries)

    got = teacher_distillation_loss(s, y, z, labelled, valid, kind=kind, weight=a, temperature=temperature)
    assert got.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("kind", ["multi_label_ce", "bce"])
def test_teacher_loss_special_cases(kind):
    gen = torch.Generator().manual_seed(0)
    s, z = torch.randn(3, 4, 5, 5, generator=gen) * 2, torch.randn(3, 4, 5, 5, generator=gen) * 2
    y = (torch.rand(3, 4, 5, 5, generator=gen) > 0.9).float()
    valid = ~torch.eye(5, dtype=torch.bool).expand(3, 1, 5, 5)
    labelled = torch.ones(3, dtype=torch.bool)
    # Weight 0 with every image labelled: the hard-label loss.
    torch.testing.assert_close(
        teacher_distillation_loss(s, y, z, labelled, valid, kind=kind, weight=0.0, temperature=3.0),
        relation_loss(s, y, valid, kind),
    )
    # Unlabelled images ignore the hard labels and the weight.
    unlabelled = torch.zeros(3, dtype=torch.bool)
    torch.testing.assert_close(
        teacher_distillation_loss(s, y, z, unlabelled, valid, kind=kind, weight=0.2, temperature=1.0),
        teacher_distillation_loss(s, torch.zeros_like(y), z, labelled, valid, kind=kind, weight=1.0, temperature=1.0),
    )
    if kind == "bce":  # linear in the target: at T = 1, exactly the target mix (1 - a) hard + a soft
        mixed = 0.7 * y + 0.3 * soft_targets(z, 1.0, kind)
        torch.testing.assert_close(
            teacher_distillation_loss(s, y, z, labelled, valid, kind=kind, weight=0.3, temperature=1.0),
            relation_loss(s, mixed, valid, kind),
        )


@pytest.mark.parametrize("kind", ["multi_label_ce", "bce"])
def test_t_squared_keeps_the_soft_gradient_size_across_temperatures(kind):
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(1, 3, 4, 4, generator=gen)
    valid = ~torch.eye(4, dtype=torch.bool).expand(1, 1, 4, 4)
    unlabelled = torch.zeros(1, dtype=torch.bool)

    def gradient(temperature: float) -> torch.Tensor:
        s = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(2)).requires_grad_()
        loss = teacher_distillation_loss(
            s, torch.zeros_like(s), z, unlabelled, valid, kind=kind, weight=1.0, temperature=temperature
        )
        loss.backward()
        return s.grad

    g10, g20, g40 = gradient(10.0), gradient(20.0), gradient(40.0)
    # Hinton et al.: at high T the T^2-scaled gradient tends to a T-independent limit.
    assert (g20 - g40).norm() < 0.02 * g40.norm()
    assert (g10 - g40).norm() < 0.08 * g40.norm()
    assert g40.norm() > 1e-3


@pytest.mark.parametrize("kind", ["multi_label_ce", "bce"])
def test_the_distillation_term_is_minimal_at_the_teachers_logits(kind):
    """Pure distillation (no hard labels) has its minimum where the student equals the teacher, for
    both losses and any T: multi-label CE couples all entries in its logs, and still does."""
    z = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(3)) * 3
    valid = ~torch.eye(4, dtype=torch.bool).expand(2, 1, 4, 4)
    unlabelled = torch.zeros(2, dtype=torch.bool)

    def loss(s: torch.Tensor) -> torch.Tensor:
        return teacher_distillation_loss(
            s, torch.zeros_like(s), z, unlabelled, valid, kind=kind, weight=1.0, temperature=2.0
        )

    s = z.clone().requires_grad_()
    at_teacher = loss(s)
    at_teacher.backward()
    assert s.grad[valid.expand_as(z)].abs().max() < 1e-6  # a stationary point of a convex loss
    gen = torch.Generator().manual_seed(4)
    for _ in range(5):
        assert loss(z + 0.3 * torch.randn(z.shape, generator=gen)) > at_teacher + 1e-4


# ---------------------------------------------------------------------------------------------
# Teacher agreement


def test_teacher_agreement_by_hand():
    z = torch.full((2, 3, 3), -4.0)
    z[1, 0, 2], z[0, 2, 1] = 3.0, 2.0  # the teacher's two best triplets: (0, p1, 2), (2, p0, 1)
    top = teacher_triplets(z, top=2)
    assert top.tolist() == [[0, 2, 1], [2, 1, 0]]
    same = teacher_agreement(z, z, ks=(1, 2), top=2)
    assert same.recall == {1: 0.5, 2: 1.0} and same.kl == pytest.approx(0.0, abs=1e-7)

    s = z.clone()
    s[0, 2, 1] = -5.0  # the student misses the teacher's second triplet, and one entry differs
    agreement = teacher_agreement(s, z, ks=(1, 2), top=2, temperature=2.0, kind="bce")
    assert agreement.recall == {1: 0.5, 2: 0.5}
    p, q = _sigmoid(2.0 / 2.0), _sigmoid(-5.0 / 2.0)
    kl_entry = p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))
    assert agreement.kl == pytest.approx(kl_entry / (2 * 3 * 2), rel=1e-5)  # mean over 12 valid entries
    assert teacher_agreement(torch.zeros(2, 1, 1), torch.zeros(2, 1, 1)) is None


def test_predicate_recall_and_its_mean():
    logits = torch.full((3, 3, 3), -5.0)
    logits[1, 0, 2] = 5.0  # (0, p1, 2) first, then everything else
    relations = torch.tensor([[0, 2, 1], [2, 1, 0], [1, 0, 0]])
    per_predicate = predicate_recall(logits, relations, ks=(1,))
    assert per_predicate == {0: {1: 0.0}, 1: {1: 1.0}}
    other = predicate_recall(logits, torch.tensor([[0, 2, 1]]), ks=(1,))
    # Predicate 1: images 1.0 and 1.0; predicate 0: 0.0 (one image) -> mR = 0.5.
    assert mean_predicate_recall([per_predicate, other, None], ks=(1,)) == {"mR@1": 0.5}


# ---------------------------------------------------------------------------------------------
# The cache


def _image(image_id: str, n: int, seed: int, *, teacher: bool, predicates: int = 4) -> ImageRecord:
    rng = np.random.default_rng(seed)
    return ImageRecord(
        image_id=image_id,
        features=rng.standard_normal((n, 8)).astype(np.float32),
        relations=np.array([[0, n - 1, 2]]) if seed % 2 else np.zeros((0, 3)),
        teacher_logits=(rng.standard_normal((predicates, n, n)) * 5).astype(np.float32) if teacher else None,
    )


def test_cache_round_trips_teacher_logits_as_float16(tmp_path):
    records = [_image(f"img{k}", 2 + k, k, teacher=k != 2) for k in range(5)]
    records[0].teacher_logits[0, 0, 1] = 1e6  # beyond float16: clipped, not infinite
    with ShardWriter(tmp_path, shard_size=3, segmenter="facebook/sam-vit-base") as writer:
        for record in records:
            writer.add(record)
    cache = FeatureCache(tmp_path)
    assert cache.segmenter == "facebook/sam-vit-base"
    for k, (record, image) in enumerate(zip(records, cache)):
        assert cache.has_teacher_logits(k) == (record.teacher_logits is not None)
        if record.teacher_logits is None:
            assert image.teacher_logits is None
            continue
        expected = torch.from_numpy(record.teacher_logits.clip(-65504, 65504).astype(np.float16).astype(np.float32))
        assert image.teacher_logits.dtype == torch.float32
        torch.testing.assert_close(image.teacher_logits, expected, rtol=0, atol=0)
        torch.testing.assert_close(image.features, torch.from_numpy(record.features).half().float())
    assert cache[0].teacher_logits[0, 0, 1].item() == 65504.0
    # drop_empty still means "no relations" (images 1 and 3 have one).
    assert FeatureCache(tmp_path, drop_empty=True).image_ids() == ["img1", "img3"]


def test_cache_refuses_bad_teacher_logits_and_mixed_segmenters(tmp_path):
    with pytest.raises(ValueError, match=r"teacher_logits must be \[P, 3, 3\]"):
        ImageRecord(
            image_id="x", features=np.zeros((3, 8)), relations=np.zeros((0, 3)), teacher_logits=np.zeros((4, 3))
        )
    with pytest.raises(ValueError, match="NaN"):
        ImageRecord(
            image_id="x",
            features=np.zeros((2, 8)),
            relations=np.zeros((0, 3)),
            teacher_logits=np.full((1, 2, 2), np.nan),
        )
    with ShardWriter(tmp_path, segmenter="facebook/sam-vit-base") as writer:
        writer.add(_image("a", 3, 0, teacher=True))
    with pytest.raises(CacheError, match="holds features of facebook/sam-vit-base, not sam2"):
        ShardWriter(tmp_path, segmenter="sam2")
    with ShardWriter(tmp_path, rank=1) as writer:  # an old-style writer that records nothing
        writer.add(_image("b", 3, 1, teacher=True))
    assert FeatureCache(tmp_path).segmenter == "facebook/sam-vit-base"


def test_version_1_caches_still_read(tmp_path):
    """A shard as the v1 writer made it: no teacher logits, no segmenter, no teacher_predicates."""
    features = torch.randn(5, 8).half()
    tensors = {"features": features, "relations": torch.tensor([[0, 1, 3]]), "matched_gt": torch.full((5,), -1)}
    save_file(tensors, str(tmp_path / "shard-r0-000000.safetensors"), metadata={"format": FORMAT_V1})
    (tmp_path / "shard-r0-000000.masks.json").write_text(json.dumps({"masks": [None, None]}))
    images = [
        {"image_id": i, "file": None, "height": 0, "width": 0, "num_masks": n, "num_relations": r, "gt_relations": r}
        for i, n, r in (("a", 2, 1), ("b", 3, 0))
    ]
    (tmp_path / "shard-r0-000000.json").write_text(json.dumps({"format": FORMAT_V1, "images": images}))
    cache = FeatureCache(tmp_path)
    assert cache.segmenter is None and not cache.has_teacher_logits(0)
    first, second = cache
    assert first.relations.tolist() == [[0, 1, 3]] and first.teacher_logits is None
    torch.testing.assert_close(second.features, features[2:].float())
    # A later writer adds v2 shards beside the v1 ones.
    with ShardWriter(tmp_path) as writer:
        writer.add(_image("c", 2, 2, teacher=True))
    assert FeatureCache(tmp_path).image_ids() == ["a", "b", "c"]


# ---------------------------------------------------------------------------------------------
# Heads that know their segmenter


def test_head_records_its_segmenter_and_old_heads_still_load(tmp_path):
    config = replace(STUDENT_HEAD, feature_dim=32, segmenter="facebook/sam-vit-base")
    head = RelationHead(config).eval()
    head.save(tmp_path / "student.safetensors")
    loaded = RelationHead.from_checkpoint(tmp_path / "student.safetensors")
    assert loaded.config == config and loaded.config.segmenter == "facebook/sam-vit-base"

    # A head saved before `segmenter` existed: its metadata config has no such key.
    old = {k: v for k, v in config.to_dict().items() if k != "segmenter"}
    tensors = {k: v.contiguous() for k, v in head.state_dict().items()}
    metadata = {"format": "pt", CONFIG_METADATA_KEY: json.dumps(old)}
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata=metadata)
    assert RelationHead.from_checkpoint(tmp_path / "old.safetensors").config == replace(config, segmenter=None)


def test_check_tokens_names_both_sides():
    student = replace(STUDENT_HEAD, feature_dim=32, segmenter="facebook/sam-vit-base")
    assert student.check_tokens(feature_dim=32, segmenter="/models/SAM-ViT-Base/") is None
    warning = student.check_tokens(feature_dim=32, segmenter="sam2-tiny")
    assert "facebook/sam-vit-base" in warning and "sam2-tiny" in warning
    with pytest.raises(CheckpointError) as info:
        student.check_tokens(feature_dim=256, segmenter="facebook/sam-vit-huge", head="student.safetensors")
    message = str(info.value)
    for fragment in ("student.safetensors", "32-d", "facebook/sam-vit-base", "256-d", "facebook/sam-vit-huge"):
        assert fragment in message
    with pytest.raises(CheckpointError, match="RAM's published head: SAM ViT-H"):
        RelationHeadConfig().check_tokens(feature_dim=32, segmenter="facebook/sam-vit-base")


# ---------------------------------------------------------------------------------------------
# Training against a teacher


@pytest.fixture(scope="module")
def teacher():
    return synthetic_teacher(object_dim=16, teacher_dim=48, student_dim=32, num_predicates=8, seed=0)


@pytest.fixture(scope="module")
def distill_caches(tmp_path_factory, teacher):
    root = tmp_path_factory.mktemp("distill")
    make_synthetic_distillation_cache(root / "train", teacher, images=200, seed=1)
    make_synthetic_distillation_cache(root / "val", teacher, images=60, seed=2)
    return root / "train", root / "val"


def _shuffled_copy(source: Path, out: Path, how: str) -> Path:
    """The cache with each image's teacher logits replaced by another image's ("images", among
    images with as many masks) or by its own over randomly permuted masks ("masks")."""
    cache = FeatureCache(source)
    images = list(cache)
    rng = np.random.default_rng(0)
    logits = [im.teacher_logits.numpy() for im in images]
    if how == "images":
        by_size: dict[int, list[int]] = {}
        for k, im in enumerate(images):
            by_size.setdefault(im.num_masks, []).append(k)
        shuffled = list(logits)
        for group in by_size.values():
            for a, b in zip(group, group[1:] + group[:1]):
                shuffled[a] = logits[b]
    else:
        shuffled = []
        for t in logits:
            perm = rng.permutation(t.shape[1])
            shuffled.append(t[:, perm][:, :, perm])
    with ShardWriter(out, segmenter=cache.segmenter) as writer:
        for im, t in zip(images, shuffled):
            writer.add(
                ImageRecord(
                    image_id=im.image_id, features=im.features.numpy(), relations=im.relations.numpy(), teacher_logits=t
                )
            )
    return out


def test_student_with_other_tokens_learns_the_teachers_relations(distill_caches, tmp_path):
    train_dir, val_dir = distill_caches
    val = FeatureCache(val_dir)
    result = train(train_dir, val_dir, config=distill_config())
    learned = evaluate_agreement(result.head, val)
    untrained = evaluate_agreement(train(train_dir, None, config=distill_config(epochs=0)).head, val)
    controls = [
        evaluate_agreement(
            train(_shuffled_copy(train_dir, tmp_path / how, how), None, config=distill_config()).head, val
        )
        for how in ("images", "masks")
    ]
    assert learned == {k: v for k, v in result.history[-1].items() if k.startswith("teacher_")}
    best_control = max(c["teacher_R@20"] for c in [untrained, *controls])
    assert learned["teacher_R@20"] >= 0.75, (learned, untrained, controls)
    assert learned["teacher_R@20"] > best_control + 0.4, (learned, untrained, controls)
    assert learned["teacher_KL"] < 0.25 * min(c["teacher_KL"] for c in [untrained, *controls])
    # The saved head reads the cache's 32-d tokens and says whose they are.
    assert result.head.config.feature_dim == 32 and result.head.config.segmenter == "synthetic-student"


def test_teacher_mode_resumes_after_a_kill(distill_caches, tmp_path):
    train_dir, _ = distill_caches
    config = distill_config(epochs=2, lr_milestones=(1,), teacher_temperature=2.0, distill_weight=0.0)
    straight = train(train_dir, None, config=replace(config, checkpoint_dir=tmp_path / "a"))

    class Killed(Exception):
        pass

    def kill(entry):
        raise Killed  # after epoch 1's checkpoint is written, as a SIGKILL before epoch 2 would

    with pytest.raises(Killed):
        train(train_dir, None, config=replace(config, checkpoint_dir=tmp_path / "b"), on_epoch=kill)
    resumed = train(train_dir, None, config=replace(config, checkpoint_dir=tmp_path / "b", resume=True))
    for (name, a), b in zip(straight.head.state_dict().items(), resumed.head.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    for (name, a), b in zip(straight.ema_head.state_dict().items(), resumed.ema_head.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    saved = RelationHead.from_checkpoint(tmp_path / "b" / "head.safetensors")
    assert saved.config.segmenter == "synthetic-student" and saved.config.feature_dim == 32


def test_teacher_labels_mix_with_hard_labels_and_the_ema_teacher(tmp_path, teacher):
    """--psg: some images also have hard labels; the EMA teacher softens those; a bce run."""
    rng = np.random.default_rng(0)
    with ShardWriter(tmp_path / "mixed", segmenter="synthetic-student") as writer:
        for k in range(24):
            objects = rng.standard_normal((5, 16))
            writer.add(
                ImageRecord(
                    image_id=f"m{k}",
                    features=teacher.student_tokens(objects),
                    relations=np.array([[0, 1, 3]]) if k % 2 else np.zeros((0, 3)),
                    teacher_logits=teacher.logits(objects),
                )
            )
    config = distill_config(epochs=1, teacher_weight=0.5, distill_weight=0.3, loss="bce", teacher_temperature=2.0)
    result = train(tmp_path / "mixed", tmp_path / "mixed", config=config)
    entry = result.history[-1]
    assert np.isfinite(entry["loss"]) and {"R@20", "mR@20", "teacher_R@20", "teacher_KL"} <= entry.keys()


def test_teacher_mode_errors(distill_caches, tmp_path):
    train_dir, _ = distill_caches
    make_synthetic_feature_cache(tmp_path / "psg", images=4, feature_dim=32, num_predicates=8, active_predicates=2)
    with pytest.raises(RelateAnythingError, match="4 of the 4 images .* have none"):
        train(tmp_path / "psg", None, config=distill_config())
    with pytest.raises(RelateAnythingError, match="teacher logits; train on them with teacher_weight > 0"):
        train(train_dir, None, config=distill_config(teacher_weight=0.0))
    with pytest.raises(RelateAnythingError, match=r"score \[8\] predicates, but the head scores 56"):
        train(train_dir, None, config=distill_config(head=replace(STUDENT_HEAD, num_predicates=56)))
    for bad in ({"teacher_weight": 1.5}, {"teacher_temperature": 0.0}, {"teacher_top": 0}):
        with pytest.raises(RelateAnythingError):
            distill_config(**bad)
    with pytest.raises(FrozenInstanceError):
        distill_config().teacher_weight = 0.5  # type: ignore[misc]
    # init_from a head for other tokens: named with both widths.
    RelationHead(replace(STUDENT_HEAD, feature_dim=48, segmenter="synthetic-teacher")).save(tmp_path / "t.safetensors")
    with pytest.raises(RelateAnythingError, match="expects 48-d features .*synthetic-teacher.* 32-d features"):
        train(train_dir, None, config=distill_config(init_from=tmp_path / "t.safetensors"))


def test_checkpoint_files_are_fsynced(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else fd)
        real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    head = RelationHead(replace(STUDENT_HEAD, feature_dim=8))
    optimizer = torch.optim.AdamW(head.parameters())
    _save_checkpoint(tmp_path, head, optimizer, None, 1, 1, [{"epoch": 1}], distill_config())
    assert len(synced) == 3  # train_state.pt, head.safetensors, history.json (no EMA here)
    if synced and isinstance(synced[0], str):
        assert sorted(Path(p).name for p in synced) == [
            "head.safetensors.tmp",
            "history.json.tmp",
            "train_state.pt.tmp",
        ]
    assert not list(tmp_path.glob("*.tmp"))


# ---------------------------------------------------------------------------------------------
# Synthetic ambiguous predicates


def test_ambiguous_pairs_split_and_label_noise(tmp_path):
    on, standing_on = 3, 14
    common = dict(images=400, feature_dim=32, active_predicates=2, ambiguous_pairs=[(on, standing_on)], rule_seed=3)
    clean_rule = make_synthetic_feature_cache(tmp_path / "clean", seed=5, **common)
    make_synthetic_feature_cache(tmp_path / "noisy", seed=5, label_noise=0.25, **common)
    clean, noisy = FeatureCache(tmp_path / "clean"), FeatureCache(tmp_path / "noisy")
    assert {on, standing_on}.isdisjoint(clean_rule.predicates.tolist())
    counts = clean.predicate_counts(56)
    assert 0.2 < counts[standing_on] / (counts[on] + counts[standing_on]) < 0.4  # specific_rate 0.3
    same, flipped, total = 0, 0, 0
    for a, b in zip(clean, noisy):
        torch.testing.assert_close(a.features, b.features)  # the noise never changes the features
        pa = {(s, o): p for s, o, p in a.relations.tolist() if p in (on, standing_on)}
        pb = {(s, o): p for s, o, p in b.relations.tolist() if p in (on, standing_on)}
        assert pa.keys() == pb.keys()
        flipped += sum(pa[k] != pb[k] for k in pa)
        total += len(pa)
        same += sum(1 for r in a.relations.tolist() if r[2] not in (on, standing_on)) == sum(
            1 for r in b.relations.tolist() if r[2] not in (on, standing_on)
        )
    assert total > 300 and 0.2 < flipped / total < 0.3
    assert same == len(clean)  # unambiguous predicates are never flipped

"""Training the RAM relation head on a feature cache, as RAM does, on one device or many (DDP).

    result = train("feats/train", "feats/test", config=TrainConfig(checkpoint_dir=Path("runs/ram")))
    result.head.save("ram.safetensors")

Recipe (RAM's ram_train_eval.py and format.md): AdamW (lr 1e-4, weight decay 0.05 on every
parameter), 12 epochs, learning rate x0.1 at epochs 6 and 10, batch size 4, gradient-norm clipping
at 0.01, loss = multi-label categorical cross-entropy ("multi_label_ce") or BCE. Differences, all
deliberate:

- RAM starts the BERT layers from bert-base-uncased; we start from transformers' random init (or
  `init_from`, any head checkpoint), because no BERT weights are downloaded here.
- RAM's multi-label CE groups the logits with a reshape that mixes images and predicates (its
  permutes are overwritten) and reweights each row by loss / max(loss). We compute the loss as
  intended: per image, over every valid (predicate, subject, object) entry, no reweighting.
- Padded masks and self-pairs are left out of the loss (RAM trains with batch size 1 and keeps
  self-pairs as negatives).
- Self-distillation (optional, `distill_weight` > 0): the teacher is an exponential moving average
  of the student; its tempered predictions are mixed into the targets (see `soft_targets`).

Distillation from a cached teacher (`teacher_weight` > 0; issue 15): the cache holds, per image, a
teacher's relation logits over the same masks (e.g. SAM ViT-H + RAM's published head, while the
features are another segmenter's tokens). The student learns from them with the tempered
soft-target loss of `losses.teacher_distillation_loss`: per image
(1 - a) l(s, y) + a T^2 l(s / T, soft_targets(z, T)), a = `teacher_weight` on images with hard
labels, 1 on images without (unlabelled photos). Both kinds of distillation combine: the EMA
teacher softens the hard labels y (as above), the cached teacher supplies the soft term; on an
image without hard labels only the cached teacher teaches. The EMA weights are kept either way
(head_ema.safetensors).
"""

from __future__ import annotations

import copy
import json
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from rich.console import Console
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from relate_anything.atomic import write_atomically
from relate_anything.errors import RelateAnythingError, UsageError
from relate_anything.ram import RelationHead, RelationHeadConfig
from relate_anything.ram import checkpoint as ram_checkpoint
from relate_anything.state_dicts import read_torch_file
from relate_anything.training.cache import CachedImage, FeatureCache
from relate_anything.training.losses import (
    LossName,
    multilabel_categorical_crossentropy,
    relation_loss,
    soft_targets,
    teacher_distillation_loss,
)
from relate_anything.training.metrics import (
    RECALL_KS,
    TEACHER_TOP,
    mean_predicate_recall,
    mean_recall,
    mean_teacher_agreement,
    predicate_recall,
    teacher_agreement,
    triplet_recall,
)

__all__ = [
    "Batch",
    "TrainConfig",
    "TrainResult",
    "collate",
    "evaluate",
    "evaluate_agreement",
    "multilabel_categorical_crossentropy",
    "relation_loss",
    "soft_targets",
    "teacher_distillation_loss",
    "train",
]

STATE_FILE = "train_state.pt"
HEAD_FILE = "head.safetensors"
EMA_HEAD_FILE = "head_ema.safetensors"
HISTORY_FILE = "history.json"


@dataclass(frozen=True)
class TrainConfig:
    """How to train. Defaults are RAM's recipe for the full-size head.

    Args:
        epochs: passes over the training cache.
        lr: AdamW learning rate before the first milestone.
        weight_decay: AdamW's decoupled weight decay (on every trained parameter, as RAM).
        lr_milestones: epochs (0-based, counted before the epoch runs) at which lr is multiplied by
            `lr_gamma`: (6, 10) gives 1e-4 for epochs 0-5, 1e-5 for 6-9, 1e-6 for 10-11.
        lr_gamma: the step factor.
        batch_size: images per step per process.
        loss: "multi_label_ce" (RAM's) or "bce".
        max_grad_norm: clip the gradient's global L2 norm to this (RAM: 0.01); None: no clipping.
        ema_decay: decay of the exponential moving average of the weights (the teacher, also saved
            as head_ema.safetensors); 0 disables it.
        distill_weight: self-distillation: beta in target = (1 - beta) * hard + beta * soft(EMA
            teacher); 0 disables it. Default 0 from bench/self_distillation.py (docs/benchmarks.md):
            on ambiguous, noisily labelled predicate pairs it never raised mR@20 beyond noise and
            beta >= 0.5 or T = 2 lowered it; 0.25 at T 1 raised R@20 ~1.7 points.
        distill_temperature: T of the EMA teacher's soft targets.
        teacher_weight: distillation from the cache's teacher logits: a in
            (1 - a) l(s, y) + a T^2 l(s / T, soft(teacher, T)) on images with hard labels (images
            without any train on the teacher alone, a = 1); > 0 needs teacher logits for every
            training image. 0: hard labels only (RAM's recipe), teacher logits are ignored.
        teacher_temperature: T of the cached teacher's soft targets (and of `teacher_KL`).
        amp: bf16 autocast on CUDA (ignored on CPU).
        seed: weights init, data order and dropout.
        checkpoint_dir: where head.safetensors, head_ema.safetensors, train_state.pt and
            history.json are written after every epoch; None: nothing is written.
        resume: continue from checkpoint_dir/train_state.pt when it exists.
        head: shape of the head to train (ignored with `init_from` a safetensors with config). Its
            `feature_dim` is replaced by the training cache's feature width, and its `segmenter` by
            the segmenter the cache records (kept when the cache records none).
        init_from: start from these head weights (.pth or .safetensors) instead of random ones.
        device: "cpu", "cuda", "cuda:1"; under torchrun, "cuda" means cuda:LOCAL_RANK.
        num_workers: DataLoader workers.
        eval_batch_size: images per forward pass when evaluating.
        recall_ks: the K of the R@K (and teacher R@K) reported after every epoch.
        teacher_top: how many of the teacher's best triplets teacher R@K looks for.
        log: print one line per epoch.
    """

    epochs: int = 12
    lr: float = 1e-4
    weight_decay: float = 0.05
    lr_milestones: tuple[int, ...] = (6, 10)
    lr_gamma: float = 0.1
    batch_size: int = 4
    loss: LossName = "multi_label_ce"
    max_grad_norm: float | None = 0.01
    ema_decay: float = 0.999
    distill_weight: float = 0.0
    distill_temperature: float = 1.0
    teacher_weight: float = 0.0
    teacher_temperature: float = 1.0
    amp: bool = True
    seed: int = 0
    checkpoint_dir: Path | None = None
    resume: bool = False
    head: RelationHeadConfig = field(default_factory=RelationHeadConfig)
    init_from: Path | None = None
    device: str = "cpu"
    num_workers: int = 0
    eval_batch_size: int = 16
    recall_ks: tuple[int, ...] = RECALL_KS
    teacher_top: int = TEACHER_TOP
    log: bool = True

    def __post_init__(self) -> None:
        if self.loss not in ("multi_label_ce", "bce"):
            raise UsageError(f"loss must be 'multi_label_ce' or 'bce', got {self.loss!r}")
        if self.epochs < 0 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise UsageError("epochs must be >= 0 and batch sizes >= 1")
        if not 0.0 <= self.ema_decay < 1.0:
            raise UsageError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0.0 <= self.distill_weight <= 1.0:
            raise UsageError(f"distill_weight must be in [0, 1], got {self.distill_weight}")
        if self.distill_weight > 0 and self.ema_decay == 0:
            raise UsageError("self-distillation needs the EMA teacher: set ema_decay > 0")
        if self.distill_temperature <= 0:
            raise UsageError("distill_temperature must be positive")
        if not 0.0 <= self.teacher_weight <= 1.0:
            raise UsageError(f"teacher_weight must be in [0, 1], got {self.teacher_weight}")
        if self.teacher_temperature <= 0:
            raise UsageError(f"teacher_temperature must be positive, got {self.teacher_temperature}")
        if self.teacher_top < 1 or not self.recall_ks or min(self.recall_ks) < 1:
            raise UsageError("teacher_top and every K of recall_ks must be >= 1")
        if self.resume and self.checkpoint_dir is None:
            raise UsageError("resume needs a checkpoint_dir")

    def to_json(self) -> str:
        values = asdict(self)
        values["head"] = self.head.to_dict()
        return json.dumps(values, default=str)


@dataclass
class TrainResult:
    """What `train` returns: the trained head (eval mode), the EMA head (None without EMA), and one
    dict per epoch: epoch, lr, loss, seconds, images_per_s, and on the held-out cache R@K and mR@K
    (images with relations) and teacher_R@K and teacher_KL (images with teacher logits)."""

    head: RelationHead
    ema_head: RelationHead | None
    history: list[dict[str, float]]


# ----------------------------------------------------------------------------------------------
# Batches


@dataclass
class Batch:
    """Padded images.

    Attributes:
        features: [B, N, D] float32, N = the batch's largest mask count, zero rows for padding.
        padding_mask: [B, N] bool, True for real masks.
        relations: [M, 4] int64 (image in batch, subject, object, predicate) of all images.
        labelled: [B] bool, True for images with at least one relation (hard labels).
        teacher_logits: [B, P, N, N] float32 teacher logits (zero where padded), or None when the
            images have none.
    """

    features: Tensor
    padding_mask: Tensor
    relations: Tensor
    labelled: Tensor
    teacher_logits: Tensor | None = None

    def to(self, device: torch.device | str) -> Batch:
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return Batch(
            features=move(self.features),
            padding_mask=move(self.padding_mask),
            relations=move(self.relations),
            labelled=move(self.labelled),
            teacher_logits=move(self.teacher_logits),
        )

    def targets(self, num_predicates: int) -> Tensor:
        """[B, P, N, N] float32 hard targets, 1 where (subject, predicate, object) is a relation."""
        b, n = self.padding_mask.shape
        target = torch.zeros(b, num_predicates, n, n, device=self.features.device)
        r = self.relations
        target[r[:, 0], r[:, 3], r[:, 1], r[:, 2]] = 1.0
        return target

    def valid_pairs(self) -> Tensor:
        """[B, 1, N, N] bool: both masks real and subject != object."""
        real = self.padding_mask
        n = real.shape[1]
        eye = torch.eye(n, dtype=torch.bool, device=real.device)
        return (real[:, :, None] & real[:, None, :] & ~eye)[:, None]


def collate(images: Sequence[CachedImage]) -> Batch:
    """Pad `CachedImage`s into a `Batch` (teacher logits when every image has them)."""
    n = max((im.num_masks for im in images), default=0)
    dim = images[0].features.shape[1]
    features = torch.zeros(len(images), n, dim)
    padding_mask = torch.zeros(len(images), n, dtype=torch.bool)
    with_teacher = [im.teacher_logits is not None for im in images]
    teacher = None
    if all(with_teacher) and images:
        teacher = torch.zeros(len(images), images[0].teacher_logits.shape[0], n, n)
    elif any(with_teacher):
        raise ValueError("collate: some images have teacher logits and some do not")
    relations = []
    for b, im in enumerate(images):
        features[b, : im.num_masks] = im.features
        padding_mask[b, : im.num_masks] = True
        if teacher is not None:
            teacher[b, :, : im.num_masks, : im.num_masks] = im.teacher_logits
        rel = im.relations.long()
        relations.append(torch.cat([torch.full((len(rel), 1), b, dtype=torch.long), rel], dim=1))
    return Batch(
        features=features,
        padding_mask=padding_mask,
        relations=torch.cat(relations) if relations else torch.zeros(0, 4, dtype=torch.long),
        labelled=torch.tensor([len(im.relations) > 0 for im in images], dtype=torch.bool),
        teacher_logits=teacher,
    )


class _CacheDataset(Dataset):
    def __init__(self, cache: FeatureCache) -> None:
        self.cache = cache

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, index: int) -> CachedImage:
        return self.cache[index]


# ----------------------------------------------------------------------------------------------
# EMA teacher


class _Ema:
    """Exponential moving average of a head's weights, with the usual warm-up
    decay_t = min(decay, (1 + t) / (10 + t)) so an early teacher is not the random init."""

    def __init__(self, head: RelationHead, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(head).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, head: RelationHead, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        ema = list(self.model.state_dict().values())
        live = list(head.state_dict().values())
        floats = [(e, p) for e, p in zip(ema, live) if e.is_floating_point()]
        torch._foreach_lerp_([e for e, _ in floats], [p for _, p in floats], 1.0 - decay)
        for e, p in zip(ema, live):
            if not e.is_floating_point():
                e.copy_(p)


# ----------------------------------------------------------------------------------------------
# Evaluation


@torch.no_grad()
def _scored_images(
    head: nn.Module, cache: FeatureCache, *, batch_size: int, device: torch.device | str | None, amp: bool
) -> Iterator[tuple[CachedImage, Tensor]]:
    """(image, its [P, N, N] float32 logits) for every image of `cache`, in batches, in eval mode."""
    device = torch.device(device) if device is not None else next(head.parameters()).device
    was_training = head.training
    head.eval()
    try:
        for start in range(0, len(cache), batch_size):
            images = [cache[i] for i in range(start, min(start + batch_size, len(cache)))]
            # Teacher logits are not needed for the forward pass: leave them out of the batch.
            batch = collate([image._replace(teacher_logits=None) for image in images]).to(device)
            with _autocast(device, amp):
                logits = head(batch.features, batch.padding_mask).float()
            for b, image in enumerate(images):
                yield image, logits[b, :, : image.num_masks, : image.num_masks]
    finally:
        head.train(was_training)


@torch.no_grad()
def evaluate(
    head: nn.Module,
    cache: FeatureCache,
    *,
    ks: Sequence[int] = RECALL_KS,
    batch_size: int = 16,
    device: torch.device | str | None = None,
    amp: bool = False,
) -> dict[str, float]:
    """{"R@K": ..., "mR@K": ...}: index-based triplet recall of the cached relations (see
    `training.metrics`) among the head's top-K triplets, averaged over images that have relations;
    mR@K per predicate first (`mean_predicate_recall`: over the predicates present)."""
    recalls, by_predicate = [], []
    for image, logits in _scored_images(head, cache, batch_size=batch_size, device=device, amp=amp):
        n = image.num_masks
        recalls.append(triplet_recall(logits, image.relations, ks) if n else None)
        by_predicate.append(predicate_recall(logits, image.relations, ks) if n else None)
    return mean_recall(recalls, ks) | mean_predicate_recall(by_predicate, ks)


@torch.no_grad()
def evaluate_agreement(
    head: nn.Module,
    cache: FeatureCache,
    *,
    ks: Sequence[int] = RECALL_KS,
    top: int = TEACHER_TOP,
    temperature: float = 1.0,
    kind: LossName = "multi_label_ce",
    batch_size: int = 16,
    device: torch.device | str | None = None,
    amp: bool = False,
) -> dict[str, float]:
    """The head's agreement with the cached teacher logits: {"teacher_R@K": ..., "teacher_KL": ...}.

    teacher R@K: the fraction of the teacher's top-`top` triplets among the head's top K, on the
    same masks; teacher_KL: the mean KL divergence from the teacher's soft targets to the head's,
    tempered as in the loss (`training.metrics.teacher_agreement`). Means over the images that have
    teacher logits and at least 2 masks.

    Raises:
        RelateAnythingError: no image of the cache has teacher logits.
    """
    if not any(cache.has_teacher_logits(i) for i in range(len(cache))):
        raise RelateAnythingError(f"the feature cache {cache.directory} holds no teacher logits to compare with")
    per_image = [
        None
        if image.teacher_logits is None
        else teacher_agreement(logits, image.teacher_logits, ks=ks, top=top, temperature=temperature, kind=kind)
        for image, logits in _scored_images(head, cache, batch_size=batch_size, device=device, amp=amp)
    ]
    return mean_teacher_agreement(per_image, ks)


def _autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


# ----------------------------------------------------------------------------------------------
# Training


def train(
    cache_train: FeatureCache | str | Path,
    cache_val: FeatureCache | str | Path | None,
    *,
    config: TrainConfig,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train a relation head on `cache_train`, reporting R@K on `cache_val` after every epoch.

    Launched by torchrun (WORLD_SIZE > 1), every process runs this function: the process group is
    initialised (NCCL on CUDA, Gloo on CPU) if it is not already, each rank trains on its part of
    every epoch (DistributedSampler) with DistributedDataParallel, and rank 0 evaluates and writes
    checkpoints.

    Args:
        cache_train, cache_val: `FeatureCache`s or their folders. With hard labels only
            (`teacher_weight` 0) images without relations are left out of both; with a teacher,
            every image is used. cache_val None: no evaluation.
        config: see `TrainConfig`.
        on_epoch: called with each epoch's history entry (on rank 0).

    Returns:
        `TrainResult` (heads in eval mode, on the training device).

    Raises:
        RelateAnythingError: empty cache, teacher logits missing (with `teacher_weight` > 0), CUDA
            asked for but missing, damaged checkpoint.
    """
    with_teacher = config.teacher_weight > 0
    train_cache = _as_cache(cache_train, drop_empty=not with_teacher)
    val_cache = None if cache_val is None else _as_cache(cache_val, drop_empty=not with_teacher)
    if with_teacher:
        _check_teacher_logits(train_cache)
    elif len(train_cache) == 0:
        unfiltered = FeatureCache(train_cache.directory)
        hint = (
            ": its images carry teacher logits; train on them with teacher_weight > 0 (`relate-anything distill`)"
            if any(unfiltered.has_teacher_logits(i) for i in range(len(unfiltered)))
            else ""
        )
        raise RelateAnythingError(f"the training cache {train_cache.directory} holds no image with relations{hint}")
    started_group, rank, world = _init_distributed(config)
    try:
        return _train(train_cache, val_cache, config, rank, world, on_epoch)
    finally:
        if started_group:
            dist.destroy_process_group()


def _train(
    train_cache: FeatureCache,
    val_cache: FeatureCache | None,
    config: TrainConfig,
    rank: int,
    world: int,
    on_epoch: Callable[[dict[str, float]], None] | None,
) -> TrainResult:
    device = _device(config, world)
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    np.random.seed(config.seed)
    head = _build_head(config, train_cache).to(device).train()
    # Never used by the head (it feeds embeddings, not word ids, and reads no pooled output):
    # frozen, so DDP needs no unused-parameter search and the stored values stay as loaded.
    head.model.embeddings.word_embeddings.requires_grad_(False)
    if head.model.pooler is not None:
        head.model.pooler.requires_grad_(False)
    trained = [p for p in head.parameters() if p.requires_grad]
    optimizer = _adamw(trained, config)
    ema = _Ema(head, config.ema_decay) if config.ema_decay > 0 else None

    start_epoch, step, history = 0, 0, []
    state_path = None if config.checkpoint_dir is None else Path(config.checkpoint_dir) / STATE_FILE
    if config.resume and state_path is not None and state_path.is_file():
        start_epoch, step, history = _load_state(state_path, head, optimizer, ema, device)

    model: nn.Module = head
    if world > 1:
        model = nn.parallel.DistributedDataParallel(head, device_ids=[device.index] if device.type == "cuda" else None)
    sampler = DistributedSampler(
        _CacheDataset(train_cache), num_replicas=world, rank=rank, shuffle=True, seed=config.seed
    )
    loader = DataLoader(
        _CacheDataset(train_cache),
        batch_size=config.batch_size,
        sampler=sampler,
        collate_fn=collate,
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=config.num_workers > 0,
    )
    console = Console(stderr=True, soft_wrap=True)
    num_predicates = head.config.num_predicates
    if config.teacher_weight > 0:
        teacher_predicates = {train_cache.info(i)["teacher_predicates"] for i in range(len(train_cache))}
        if teacher_predicates != {num_predicates}:
            raise RelateAnythingError(
                f"the teacher logits of {train_cache.directory} score {sorted(teacher_predicates)} predicates, "
                f"but the head scores {num_predicates}"
            )

    for epoch in range(start_epoch, config.epochs):
        lr = config.lr * config.lr_gamma ** sum(m <= epoch for m in config.lr_milestones)
        for group in optimizer.param_groups:
            group["lr"] = lr
        sampler.set_epoch(epoch)
        model.train()
        started, loss_sum, images = time.perf_counter(), torch.zeros((), device=device), 0
        for batch in loader:
            batch = batch.to(device)
            targets = batch.targets(num_predicates)
            valid = batch.valid_pairs()
            with _autocast(device, config.amp):
                logits = model(batch.features, batch.padding_mask)
                if config.distill_weight > 0 and ema is not None:
                    with torch.no_grad():
                        teacher = ema.model(batch.features, batch.padding_mask)
                    soft = soft_targets(teacher, config.distill_temperature, config.loss)
                    targets = (1 - config.distill_weight) * targets + config.distill_weight * soft
            if config.teacher_weight > 0:
                loss = teacher_distillation_loss(
                    logits,
                    targets,
                    batch.teacher_logits,
                    batch.labelled,
                    valid,
                    kind=config.loss,
                    weight=config.teacher_weight,
                    temperature=config.teacher_temperature,
                )
            else:
                loss = relation_loss(logits, targets, valid, config.loss)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(trained, config.max_grad_norm)
            optimizer.step()
            step += 1
            if ema is not None:
                ema.update(head, step)
            loss_sum += loss.detach() * len(batch.features)
            images += len(batch.features)
        totals = torch.stack([loss_sum, torch.tensor(float(images), device=device)])
        if world > 1:
            dist.all_reduce(totals)
        seconds = time.perf_counter() - started
        entry: dict[str, float] = {
            "epoch": epoch + 1,
            "lr": lr,
            "loss": float(totals[0] / totals[1].clamp(min=1)),
            "seconds": seconds,
            "images_per_s": float(totals[1]) / seconds if seconds > 0 else 0.0,
        }
        if rank == 0:
            if val_cache is not None:
                entry |= _evaluate_all(head, val_cache, config, device)
            history.append(entry)
            if config.log:
                console.print(_format(entry, config.epochs), highlight=False)
            if config.checkpoint_dir is not None:
                _save_checkpoint(Path(config.checkpoint_dir), head, optimizer, ema, epoch + 1, step, history, config)
            if on_epoch is not None:
                on_epoch(entry)
        else:
            history.append(entry)
        if world > 1:
            dist.barrier()

    head.eval()
    return TrainResult(head=head, ema_head=None if ema is None else ema.model.eval(), history=history)


def _evaluate_all(head: RelationHead, cache: FeatureCache, config: TrainConfig, device: torch.device) -> dict:
    """R@K and mR@K when some image has relations; teacher agreement when some has teacher logits."""
    scores: dict[str, float] = {}
    common = dict(ks=config.recall_ks, batch_size=config.eval_batch_size, device=device, amp=config.amp)
    if any(cache.info(i)["num_relations"] for i in range(len(cache))):
        scores |= evaluate(head, cache, **common)
    if any(cache.has_teacher_logits(i) for i in range(len(cache))):
        scores |= evaluate_agreement(
            head, cache, top=config.teacher_top, temperature=config.teacher_temperature, kind=config.loss, **common
        )
    return scores


_NOT_SCORES = ("epoch", "lr", "loss", "seconds", "images_per_s")


def _adamw(params: list[nn.Parameter], config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with the fused kernel: on CUDA, and on CPUs since torch 2.4 (there ~4x faster a step
    than the per-tensor loop for a small head); the per-tensor loop where it is not available."""
    try:
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=True)
    except RuntimeError:  # torch < 2.4 on a CPU: "fused=True requires ... supported devices"
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def _format(entry: dict[str, float], epochs: int) -> str:
    recalls = "  ".join(f"{k} {v:.3f}" for k, v in entry.items() if k not in _NOT_SCORES)
    return (
        f"epoch {int(entry['epoch'])}/{epochs}  lr {entry['lr']:.1e}  loss {entry['loss']:.4f}  {recalls}  "
        f"({entry['seconds']:.1f} s, {entry['images_per_s']:.0f} images/s)"
    )


def _as_cache(cache: FeatureCache | str | Path, *, drop_empty: bool) -> FeatureCache:
    if isinstance(cache, FeatureCache):
        if cache.drop_empty == drop_empty:
            return cache
        return FeatureCache(cache.directory, drop_empty=drop_empty)
    return FeatureCache(cache, drop_empty=drop_empty)


def _check_teacher_logits(cache: FeatureCache) -> None:
    if len(cache) == 0:
        raise RelateAnythingError(f"the training cache {cache.directory} holds no image")
    missing = [i for i in range(len(cache)) if not cache.has_teacher_logits(i)]
    if missing:
        raise RelateAnythingError(
            f"teacher_weight > 0 trains on a teacher's relation logits, but {len(missing)} of the {len(cache)} "
            f"images of {cache.directory} have none (e.g. {cache.info(missing[0])['image_id']!r}): collect them "
            "with the teacher (`relate-anything distill`), or set teacher_weight 0 to train on relations only"
        )


def _init_distributed(config: TrainConfig) -> tuple[bool, int, int]:
    """(whether this call started the process group, rank, world size)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if dist.is_available() and dist.is_initialized():
        return False, dist.get_rank(), dist.get_world_size()
    if world <= 1:
        return False, 0, 1
    backend = "nccl" if config.device.startswith("cuda") else "gloo"
    dist.init_process_group(backend)
    return True, dist.get_rank(), dist.get_world_size()


def _device(config: TrainConfig, world: int) -> torch.device:
    device = torch.device(config.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RelateAnythingError(f"device {config.device}: CUDA is not available on this machine; use cpu")
        if device.index is None:
            device = torch.device(
                "cuda", int(os.environ.get("LOCAL_RANK", "0")) if world > 1 else torch.cuda.current_device()
            )
        torch.cuda.set_device(device)
    return device


def _build_head(config: TrainConfig, cache: FeatureCache) -> RelationHead:
    """A fresh head for the cache's feature width, or `init_from`'s weights; either way recording
    the cache's segmenter (when it records one), so the saved head says which tokens it reads."""
    feature_dim = cache[0].features.shape[1]
    segmenter = cache.segmenter
    if config.init_from is None:
        head_config = replace(config.head, feature_dim=feature_dim, segmenter=segmenter or config.head.segmenter)
        return RelationHead(head_config)
    state_dict, stored = ram_checkpoint.read(config.init_from)
    head_config = stored or ram_checkpoint.infer_config(state_dict, config.init_from)
    if head_config.feature_dim != feature_dim:
        raise RelateAnythingError(
            f"init_from {config.init_from} expects {head_config.feature_dim}-d features "
            f"({head_config.segmenter or 'its segmenter is not recorded'}), but the cache {cache.directory} holds "
            f"{feature_dim}-d features ({segmenter or 'its segmenter is not recorded'})"
        )
    head = RelationHead(replace(head_config, segmenter=segmenter or head_config.segmenter))
    ram_checkpoint.load_into(head, state_dict, config.init_from)
    return head


# ----------------------------------------------------------------------------------------------
# Checkpoints


def _save_checkpoint(
    directory: Path,
    head: RelationHead,
    optimizer: torch.optim.Optimizer,
    ema: _Ema | None,
    epoch: int,
    step: int,
    history: list[dict[str, float]],
    config: TrainConfig,
) -> None:
    """Everything resume needs in ONE file written atomically (so it never pairs weights of one
    epoch with an optimizer of another), plus the heads as safetensors with config for use."""
    directory.mkdir(parents=True, exist_ok=True)
    state = {
        "epoch": epoch,
        "step": step,
        "model": {k: v.detach().cpu() for k, v in head.state_dict().items()},
        "ema": None if ema is None else {k: v.detach().cpu() for k, v in ema.model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "history": json.dumps(history),
        "config": config.to_json(),
    }
    # Each file is written to a temporary name, fsync'ed and moved into place (relate_anything.atomic),
    # so a kill at any moment leaves the previous epoch's file or this one, never a torn file.
    write_atomically(directory / STATE_FILE, lambda tmp: torch.save(state, tmp))
    write_atomically(directory / HEAD_FILE, head.save)
    if ema is not None:
        write_atomically(directory / EMA_HEAD_FILE, ema.model.save)
    write_atomically(directory / HISTORY_FILE, lambda tmp: tmp.write_text(json.dumps(history, indent=1)))


def _load_state(
    path: Path, head: RelationHead, optimizer: torch.optim.Optimizer, ema: _Ema | None, device: torch.device
) -> tuple[int, int, list[dict[str, float]]]:
    try:
        # Tensors and plain containers only: a file that would run code is refused, with a
        # message of ours (never PyTorch's advice to turn weights_only off).
        state = read_torch_file(path, what="training state (train_state.pt)")
        ram_checkpoint.load_into(head, state["model"], path)
        optimizer.load_state_dict(state["optimizer"])
        if ema is not None:
            if state["ema"] is None:
                raise KeyError("ema (the checkpoint was trained without EMA)")
            ema.model.load_state_dict(state["ema"])
        torch.set_rng_state(state["rng_cpu"])
        if device.type == "cuda" and state["rng_cuda"]:
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        return int(state["epoch"]), int(state["step"]), json.loads(state["history"])
    except RelateAnythingError:
        raise
    except Exception as error:
        raise RelateAnythingError(f"cannot resume from {path}: {type(error).__name__}: {error}") from error

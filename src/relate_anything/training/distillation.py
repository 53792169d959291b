"""Distillation: the published SAM ViT-H + RAM pair teaches a relation head for another segmenter.

    report = distill(list_inputs("photos/"), teacher, load_student("facebook/sam-vit-base"), "runs/vit-b",
                     student_name="facebook/sam-vit-base")

1. Collect (resumable, like `collect`): per image, the teacher segments everything; its relation
   head scores the teacher's masks ([56, N, N] logits); the student segmenter is prompted with the
   SAME masks (each mask with its box) and its decoder token of each mask is kept. So teacher and
   student heads see the same objects, and the student's feature is what the student segmenter
   gives for that object. With a PSG dataset, images it annotates also get hard labels (RAM's
   matching of the teacher's masks to the ground truth).
2. Train: the trainer (`train`: EMA, DDP, bf16, resume) on the student tokens against the
   teacher's soft targets at temperature T (`teacher_weight`), mixed with the hard labels where
   there are some (`alpha`).
3. Report: on held-out images, the student head's agreement with the teacher (R@K of the
   teacher's top-20 triplets among the student's top K, on the same masks; the tempered KL), the
   images/s of both pipelines measured in one run on one device, and PSG R@K / mR@K when hard
   labels exist.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from relate_anything.atomic import write_text_atomically
from relate_anything.boxes import masks_to_xyxy
from relate_anything.errors import UsageError
from relate_anything.masks import encode_masks
from relate_anything.training.cache import FeatureCache, ImageRecord, ShardWriter, committed_image_ids
from relate_anything.training.collection import hard_labels
from relate_anything.training.distill_settings import DistillSettings

if TYPE_CHECKING:
    from relate_anything.batch.inputs import InputItem
    from relate_anything.pipeline import RelateAnything
    from relate_anything.scene_graph import SceneGraph
    from relate_anything.training.trainer import TrainConfig

__all__ = ["DistillCollectStats", "DistillSettings", "collect_distillation", "distill", "held_out"]

TRAIN_CACHE = "cache-train"
HELD_OUT_CACHE = "cache-held-out"
HEAD_FILE = "head.safetensors"
REPORT_FILE = "report.json"


@dataclass
class DistillCollectStats:
    """What one collection did: images cached now / before, without masks, labelled, masks."""

    images: int = 0
    already_done: int = 0
    without_masks: int = 0
    labelled: int = 0
    masks: int = 0


def held_out(file: str, fraction: float) -> bool:
    """Whether image `file` is held out: a stable function of its name."""
    digest = hashlib.blake2b(file.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < fraction


def collect_distillation(
    items: Sequence[InputItem],
    teacher: RelateAnything,
    student: Any,
    out_dir: str | Path,
    *,
    student_name: str,
    ground_truth: Mapping[str, SceneGraph] | None = None,
    shard_size: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> DistillCollectStats:
    """Cache, per image, the student's tokens for the teacher's masks and the teacher's logits.

    Args:
        items: the images (`batch.inputs.list_inputs`); an image already in a committed shard
            is skipped (resumable).
        teacher: the teacher pipeline (its segmenter segments everything, its head scores).
        student: a `relate_anything.sam.students.Student` (SAM, SAM-HQ or SAM 2 adapter).
        out_dir: the feature cache to write (`FeatureCache(out_dir)` reads it); its shards record
            `student_name` as their segmenter.
        ground_truth: {image file: ground-truth SceneGraph} for images with hard labels (PSG).
        shard_size: images per committed shard.
        progress: called with (done, to do).
    """
    from relate_anything.batch.inputs import load_input

    done = committed_image_ids(out_dir)
    todo = [item for item in items if item.file not in done]
    stats = DistillCollectStats(already_done=len(items) - len(todo))
    if progress is not None:
        progress(0, len(todo))
    with ShardWriter(out_dir, shard_size=shard_size, segmenter=student_name) as writer:
        for count, item in enumerate(todo, start=1):
            record = _collect_one(item, load_input(item.location), teacher, student, ground_truth, stats)
            if record is not None:
                writer.add(record)
            if progress is not None:
                progress(count, len(todo))
    return stats


@torch.inference_mode()
def _collect_one(item, pixels, teacher, student, ground_truth, stats: DistillCollectStats) -> ImageRecord | None:
    teacher.segmenter.set_image(pixels)
    segments = teacher.segmenter.segment_everything()
    if not len(segments):
        stats.without_masks += 1
        return None
    head = teacher.relation_head
    parameter = next(head.parameters())
    logits = head.score(segments.features.to(parameter.device, parameter.dtype)).float().cpu().numpy()
    student.set_image(pixels)
    masks = segments.masks
    tokens = student.segment_prompts(boxes=masks_to_xyxy(masks).float(), masks=masks).features
    relations = np.zeros((0, 3), dtype=np.int64)
    matched = None
    truth = None if ground_truth is None else ground_truth.get(item.file)
    if truth is not None:
        relations, match = hard_labels(truth, masks)
        matched = match.sam_to_gt
        stats.labelled += 1
    stats.images += 1
    stats.masks += len(segments)
    return ImageRecord(
        image_id=item.file,
        features=tokens.float().cpu().numpy(),
        relations=relations,
        masks=encode_masks(masks),
        matched_gt=matched,
        file=item.file,
        height=int(pixels.shape[0]),
        width=int(pixels.shape[1]),
        teacher_logits=logits,
    )


@dataclass
class DistillReport:
    """What `distill` writes to DIR/report.json."""

    student: str
    teacher: dict[str, str]
    images: dict[str, int]
    settings: dict[str, Any]
    agreement: dict[str, float]
    speed: dict[str, float | None]
    psg: dict[str, float] | None = None
    history: list[dict[str, float]] = field(default_factory=list)


def distill(
    items: Sequence[InputItem],
    teacher: RelateAnything,
    student: Any,
    out_dir: str | Path,
    *,
    student_name: str,
    teacher_names: Mapping[str, str],
    config: TrainConfig,
    settings: DistillSettings | None = None,
    ground_truth: Mapping[str, SceneGraph] | None = None,
    student_pipeline: Callable[[Any], RelateAnything] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> DistillReport:
    """Collect, train and report (see the module docstring); collection resumes (images already cached are skipped); training starts afresh.

    Args:
        config: the trainer's settings; its teacher weight, temperature and checkpoint folder
            are set here (teacher weight `settings.alpha`, or 1 when nothing is labelled).
        student_pipeline: builds the student's own pipeline (its segmenter segmenting everything,
            with a given head) for the speed comparison; None leaves the student's images/s out.
        progress: called with (stage, done, total).
    """
    from dataclasses import replace

    from relate_anything.training.trainer import evaluate, evaluate_agreement, train

    settings = settings or DistillSettings()
    out = Path(out_dir)
    if not items:
        raise UsageError("no images to distill on")
    train_items = [item for item in items if not held_out(item.file, settings.held_out)]
    test_items = [item for item in items if held_out(item.file, settings.held_out)]
    if not train_items or not test_items:
        raise UsageError(
            f"{len(items)} images give {len(train_items)} to train on and {len(test_items)} held out: "
            "give more images (or change the held-out fraction)"
        )
    stats = {}
    for name, part in (("train", train_items), ("held-out", test_items)):
        stats[name] = collect_distillation(
            part,
            teacher,
            student,
            out / (TRAIN_CACHE if name == "train" else HELD_OUT_CACHE),
            student_name=student_name,
            ground_truth=ground_truth,
            progress=None
            if progress is None
            else (lambda done, total, name=name: progress(f"collect {name}", done, total)),
        )
    # Hard labels as the trainer counts them (an image with a relation), from the caches: a rerun
    # whose collection was already done collects nothing, but its cached labels still count.
    caches = {
        name: FeatureCache(out / folder) for name, folder in (("train", TRAIN_CACHE), ("held-out", HELD_OUT_CACHE))
    }
    labelled_images = {
        name: sum(cache.info(k)["num_relations"] > 0 for k in range(len(cache))) for name, cache in caches.items()
    }
    labelled = labelled_images["train"] > 0
    config = replace(
        config,
        teacher_weight=settings.alpha if labelled else 1.0,
        teacher_temperature=settings.temperature,
        checkpoint_dir=out / "run",
        head=replace(config.head, segmenter=student_name),
    )
    result = train(out / TRAIN_CACHE, out / HELD_OUT_CACHE, config=config)
    head = result.ema_head or result.head
    head.save(out / HEAD_FILE)
    held = caches["held-out"]
    agreement = evaluate_agreement(
        head, held, temperature=settings.temperature, kind=config.loss, device=config.device, amp=config.amp
    )
    psg = evaluate(head, held, device=config.device, amp=config.amp) if labelled_images["held-out"] else None
    speed = _speeds(
        test_items[: settings.speed_images], teacher, None if student_pipeline is None else student_pipeline(head)
    )
    counts = {
        "train": stats["train"].images + stats["train"].already_done,
        "held_out": stats["held-out"].images + stats["held-out"].already_done,
        "without_masks": sum(s.without_masks for s in stats.values()),
        "labelled": sum(labelled_images.values()),
    }
    report = DistillReport(
        student=student_name,
        teacher=dict(teacher_names),
        images=counts,
        settings=asdict(settings) | {"teacher_weight": config.teacher_weight, "epochs": config.epochs},
        agreement={key: round(float(value), 6) for key, value in agreement.items()},
        speed=speed,
        psg=None if psg is None else {key: round(float(value), 6) for key, value in psg.items()},
        history=result.history,
    )
    write_text_atomically(out / REPORT_FILE, json.dumps(asdict(report), indent=1))
    return report


@torch.inference_mode()
def _speeds(
    items: Sequence[InputItem], teacher: RelateAnything, student: RelateAnything | None
) -> dict[str, float | None]:
    """Images/s of the teacher's and the student's whole pipelines on the same images, one after
    the other on the same device (the first image of each warms up and is not timed)."""
    from relate_anything.batch.inputs import load_input

    photos = [load_input(item.location) for item in items]
    speeds: dict[str, float | None] = {
        "teacher_images_per_s": None,
        "student_images_per_s": None,
        "images": len(photos),
    }
    for name, pipeline in (("teacher", teacher), ("student", student)):
        if pipeline is None or len(photos) < 2:
            continue
        pipeline.segmenter.reset_image()
        pipeline(photos[0])
        started = time.perf_counter()
        for photo in photos[1:]:
            pipeline(photo)
        speeds[f"{name}_images_per_s"] = round((len(photos) - 1) / (time.perf_counter() - started), 4)
    if speeds["teacher_images_per_s"] and speeds["student_images_per_s"]:
        speeds["speed_up"] = round(speeds["student_images_per_s"] / speeds["teacher_images_per_s"], 3)
    return speeds

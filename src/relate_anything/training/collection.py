"""Feature collection: run SAM on every training image, match its masks to the ground truth, and
store features and rewritten relations in a sharded, resumable `FeatureCache` folder.

    stats = collect(PsgDataset("data/psg", split="train"), segmenter, "feats/train")

Resumable: the images already in committed shards are skipped, and a crash loses at most the
images not yet committed (fewer than `shard_size`), which the next run processes. Several GPUs
split the image list by rank (`torchrun --nproc-per-node 8 ...`, or rank/world_size arguments);
each rank writes its own shards, and readers see all of them as one cache.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from relate_anything.errors import RelateAnythingError
from relate_anything.image_io import load_image
from relate_anything.scene_graph import SceneGraph, encode_masks
from relate_anything.training.cache import ImageRecord, ShardWriter, committed_image_ids
from relate_anything.training.matching import MaskMatch, match_masks, rewrite_relations

__all__ = ["CollectStats", "collect", "distributed_rank"]


class GroundTruthDataset(Protocol):
    """What `collect` needs of a dataset (e.g. `relate_anything.datasets.PsgDataset`): ground-truth
    `SceneGraph`s (segment masks, relations between segment ids) and the image file of each."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> SceneGraph: ...

    def image_path(self, index: int) -> str | Path: ...


@dataclass
class CollectStats:
    """What one `collect` call did (this rank only).

    Attributes:
        images: images segmented and committed in this run.
        already_done: images skipped because a committed shard holds them.
        without_relations: images skipped because their ground truth has no relations.
        masks: SAM masks stored.
        gt_masks / matched_gt_masks: ground-truth masks seen / matched to a SAM mask.
        gt_relations / kept_relations: ground-truth relations seen / kept after rewriting.
    """

    images: int = 0
    already_done: int = 0
    without_relations: int = 0
    masks: int = 0
    gt_masks: int = 0
    matched_gt_masks: int = 0
    gt_relations: int = 0
    kept_relations: int = 0

    @property
    def kept_fraction(self) -> float:
        """Fraction of ground-truth relations that survive matching (1.0 when there were none)."""
        return self.kept_relations / self.gt_relations if self.gt_relations else 1.0

    @property
    def matched_fraction(self) -> float:
        return self.matched_gt_masks / self.gt_masks if self.gt_masks else 1.0


def distributed_rank(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world_size): the arguments, else torchrun's RANK (or LOCAL_RANK) and WORLD_SIZE, else (0, 1)."""
    if world_size is None:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if rank is None:
        rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))
    if world_size < 1 or not 0 <= rank < world_size:
        raise RelateAnythingError(f"rank {rank} is not in 0..{world_size - 1} (world size {world_size})")
    return rank, world_size


def collect(
    dataset: GroundTruthDataset,
    segmenter: Any,
    out_dir: str | Path,
    *,
    shard_size: int = 256,
    rank: int | None = None,
    world_size: int | None = None,
    feature_dtype: torch.dtype = torch.float16,
    sam_to_gt_iou: float = 0.6,
    gt_to_sam_iou: float = 0.5,
    keep_images_without_relations: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> CollectStats:
    """Segment, match and cache every image of `dataset` that this rank owns and no shard holds.

    Args:
        dataset: ground-truth scene graphs and their image files (see `GroundTruthDataset`).
        segmenter: a `relate_anything.sam.Segmenter` (its thresholds decide the masks).
        out_dir: the cache folder (`FeatureCache(out_dir)` reads it).
        shard_size: images per committed shard.
        rank, world_size: image i belongs to rank i % world_size; default from torchrun's env.
        feature_dtype: torch.float16 (default) or torch.float32 on disk.
        sam_to_gt_iou, gt_to_sam_iou: RAM's matching thresholds (see `training.matching`).
        keep_images_without_relations: also cache images whose ground truth has no relation
            (PSG leaves them out of training and evaluation).
        progress: called with (images finished, images to do) at the start and after each image.

    Returns:
        `CollectStats` of this call.
    """
    rank, world_size = distributed_rank(rank, world_size)
    done = committed_image_ids(out_dir)
    ids = _image_ids(dataset)
    mine = [i for i in range(rank, len(dataset), world_size)]
    todo = [i for i in mine if ids[i] not in done]
    stats = CollectStats(already_done=len(mine) - len(todo))
    writer = ShardWriter(out_dir, shard_size=shard_size, rank=rank, feature_dtype=feature_dtype)
    if progress is not None:
        progress(0, len(todo))
    with writer:
        for done, index in enumerate(todo, start=1):
            record = _collect_one(
                dataset,
                index,
                ids[index],
                segmenter,
                stats,
                sam_to_gt_iou,
                gt_to_sam_iou,
                keep_images_without_relations,
            )
            if record is not None:
                writer.add(record)
            if progress is not None:
                progress(done, len(todo))
    return stats


def _collect_one(
    dataset: GroundTruthDataset,
    index: int,
    image_id: str,
    segmenter: Any,
    stats: CollectStats,
    sam_to_gt_iou: float,
    gt_to_sam_iou: float,
    keep_empty: bool,
) -> ImageRecord | None:
    graph = dataset[index]
    if not graph.relations and not keep_empty:
        stats.without_relations += 1
        return None
    pixels = load_image(dataset.image_path(index))
    if pixels.shape[:2] != (graph.height, graph.width):
        raise RelateAnythingError(
            f"image {image_id}: the file is {pixels.shape[1]}x{pixels.shape[0]} but its annotation is "
            f"{graph.width}x{graph.height}"
        )
    segmenter.set_image(pixels)
    result = segmenter.segment_everything()
    relations, match = hard_labels(graph, result.masks, sam_to_gt_iou=sam_to_gt_iou, gt_to_sam_iou=gt_to_sam_iou)
    stats.images += 1
    stats.masks += len(result)
    stats.gt_masks += len(graph.segments)
    stats.matched_gt_masks += match.num_matched
    stats.gt_relations += len(graph.relations)
    stats.kept_relations += len(relations)
    return ImageRecord(
        image_id=image_id,
        features=result.features.float().cpu().numpy(),
        relations=relations,
        masks=encode_masks(result.masks.cpu().numpy()),
        matched_gt=match.sam_to_gt,
        file=graph.file,
        height=graph.height,
        width=graph.width,
        gt_relations=len(graph.relations),
    )


def _image_ids(dataset: GroundTruthDataset) -> Sequence[str]:
    """Every image's id, without decoding masks when the dataset can list them."""
    ids = getattr(dataset, "image_ids", None)
    if callable(ids):
        ids = ids()
    if ids is None:
        ids = [dataset[i].image_id for i in range(len(dataset))]
    ids = [str(i) if image_id is None else str(image_id) for i, image_id in enumerate(ids)]
    if len(set(ids)) != len(ids):
        raise RelateAnythingError("the dataset's image ids are not unique; the cache needs them to resume")
    return ids


def hard_labels(graph: SceneGraph, masks: torch.Tensor, **thresholds: float) -> tuple[np.ndarray, MaskMatch]:
    """The ground truth's relations [R, 3] (subject row, object row, predicate) rewritten onto
    `masks` [N, H, W] by RAM's matching (`match_masks`, with its IoU `thresholds`), and the match."""
    gt_masks = torch.from_numpy(graph.masks()).to(masks.device)
    match = match_masks(masks, gt_masks, **thresholds)
    row = {segment.id: k for k, segment in enumerate(graph.segments)}
    gt_relations = np.array([[row[r.subject], row[r.object], r.predicate_id] for r in graph.relations], dtype=np.int64)
    return rewrite_relations(gt_relations, match.gt_to_sam), match

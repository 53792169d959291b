"""The on-disk feature cache the relation head trains on: SAM features and relations per image.

A cache is a folder of shards. Shard `NAME` is three files:

    NAME.safetensors   features [sum N, D] (float16 or float32), relations [sum R, 3] int64
                       (subject mask, object mask, predicate), matched_gt [sum N] int64 (the
                       ground-truth segment index each mask was matched to, -1 if none)
    NAME.masks.json    {"masks": [[rle, ...] per image]}: each image's SAM masks, COCO RLE
    NAME.json          the index, and the commit marker: {"format", "images": [{"image_id",
                       "file", "height", "width", "num_masks", "num_relations", "gt_relations"}]}

Rows of image k are the k-th slices in image order (`num_masks`, `num_relations` give the
lengths). Every file is written to a temporary name and moved into place with `os.replace`, the
index last: a shard exists for readers only once its index does, so a crash at any point leaves
either a complete shard or nothing visible (stray data files of an uncommitted shard are
ignored and later overwritten).

Shard names are `shard-r{rank}-{seq:06d}`, so several writers (one per GPU) never collide.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from relate_anything.atomic import write_atomically, write_text_atomically
from relate_anything.errors import UsageError
from relate_anything.scene_graph import decode_mask

__all__ = ["CacheError", "CachedImage", "FeatureCache", "ImageRecord", "ShardWriter", "committed_image_ids"]

FORMAT = "relate-anything/feature-cache/v1"
_SHARD_NAME = re.compile(r"^shard-r(\d+)-(\d{6})$")


class CacheError(UsageError):
    """A feature cache that is missing, empty or damaged."""


@dataclass
class ImageRecord:
    """Everything the cache keeps about one image.

    Attributes:
        image_id: the dataset's image id (unique within a cache).
        features: [N, D] float, one row per SAM mask.
        relations: [R, 3] int (subject mask, object mask, predicate id), indices into the N masks.
        masks: N COCO RLE dicts (scene_graph.encode_masks), or None when there are no masks to keep
            (synthetic feature caches).
        matched_gt: [N] int, the ground-truth segment index matched to each mask, -1 if none.
        file: the image's relative path in its dataset, if any.
        height, width: the image's size (0 if unknown).
        gt_relations: number of ground-truth relations before rewriting (to report the fraction kept).
    """

    image_id: str
    features: np.ndarray
    relations: np.ndarray
    masks: list[dict[str, Any]] | None = None
    matched_gt: np.ndarray | None = None
    file: str | None = None
    height: int = 0
    width: int = 0
    gt_relations: int | None = None

    def __post_init__(self) -> None:
        n = len(self.features)
        self.relations = np.asarray(self.relations, dtype=np.int64).reshape(-1, 3)
        if self.features.ndim != 2:
            raise ValueError(f"features must be [N, D], got {self.features.shape}")
        if len(self.relations) and (self.relations[:, :2].min() < 0 or self.relations[:, :2].max() >= n):
            raise ValueError(f"image {self.image_id}: relations refer to masks outside 0..{n - 1}")
        if self.masks is not None and len(self.masks) != n:
            raise ValueError(f"image {self.image_id}: {len(self.masks)} masks but {n} features")
        if self.matched_gt is None:
            self.matched_gt = np.full(n, -1, dtype=np.int64)
        if self.gt_relations is None:
            self.gt_relations = len(self.relations)


class ShardWriter:
    """Buffers `ImageRecord`s and commits them as shards of `shard_size` images.

    Args:
        directory: the cache folder (created if missing).
        shard_size: images per shard; a crash loses at most the uncommitted images.
        rank: the writer's rank, part of the shard names.
        feature_dtype: torch.float16 (half the disk) or torch.float32.
    """

    def __init__(
        self, directory: str | Path, *, shard_size: int = 256, rank: int = 0, feature_dtype: torch.dtype = torch.float16
    ) -> None:
        if shard_size < 1:
            raise ValueError("shard_size must be positive")
        if feature_dtype not in (torch.float16, torch.float32):
            raise ValueError("feature_dtype must be torch.float16 or torch.float32")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.shard_size = shard_size
        self.rank = rank
        self.feature_dtype = feature_dtype
        self._buffer: list[ImageRecord] = []
        used = [
            int(m.group(2))
            for p in self.directory.glob("*.json")
            if (m := _SHARD_NAME.match(p.name[:-5])) and int(m.group(1)) == rank
        ]
        self._next_seq = max(used, default=-1) + 1
        for stale in self.directory.glob(f"shard-r{rank}-*.tmp"):  # a crashed writer's temporaries
            stale.unlink(missing_ok=True)

    def add(self, record: ImageRecord) -> None:
        """Buffer one image; commits a shard when `shard_size` images are buffered."""
        self._buffer.append(record)
        if len(self._buffer) >= self.shard_size:
            self.flush()

    def flush(self) -> Path | None:
        """Commit the buffered images as one shard; returns its index path (None if empty)."""
        if not self._buffer:
            return None
        records, self._buffer = self._buffer, []
        name = f"shard-r{self.rank}-{self._next_seq:06d}"
        self._next_seq += 1
        tensors = {
            "features": torch.from_numpy(np.concatenate([r.features for r in records])).to(self.feature_dtype),
            "relations": torch.from_numpy(np.concatenate([r.relations for r in records])).long(),
            "matched_gt": torch.from_numpy(np.concatenate([np.asarray(r.matched_gt) for r in records])).long(),
        }
        write_atomically(
            self.directory / f"{name}.safetensors",
            lambda tmp: save_file(tensors, str(tmp), metadata={"format": FORMAT}),
        )
        masks = {"masks": [r.masks for r in records]}
        write_text_atomically(self.directory / f"{name}.masks.json", json.dumps(masks))
        index = {
            "format": FORMAT,
            "images": [
                {
                    "image_id": r.image_id,
                    "file": r.file,
                    "height": r.height,
                    "width": r.width,
                    "num_masks": len(r.features),
                    "num_relations": len(r.relations),
                    "gt_relations": int(r.gt_relations),
                }
                for r in records
            ],
        }
        index_path = self.directory / f"{name}.json"
        write_text_atomically(index_path, json.dumps(index))  # the commit
        return index_path

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        # Commit what is buffered only on success: after an error the caller's run is suspect,
        # and the uncommitted images are simply processed again next time.
        if exc_info[0] is None:
            self.flush()


def _index_paths(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("shard-r*-*.json") if _SHARD_NAME.match(p.name[:-5]))


def committed_image_ids(directory: str | Path) -> set[str]:
    """Image ids in the committed shards of a cache folder (empty if the folder does not exist)."""
    directory = Path(directory)
    if not directory.is_dir():
        return set()
    return {item["image_id"] for path in _index_paths(directory) for item in _read_index(path)["images"]}


def _read_index(path: Path) -> dict[str, Any]:
    try:
        index = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CacheError(f"damaged feature-cache index {path}: {error}") from error
    if index.get("format") != FORMAT:
        raise CacheError(f"{path} is not a relate-anything feature-cache index (format {index.get('format')!r})")
    return index


class CachedImage(NamedTuple):
    """One image of a `FeatureCache`: features [N, D] float32, relations [R, 3] int64
    (subject, object, predicate), N."""

    image_id: str
    features: torch.Tensor
    relations: torch.Tensor
    num_masks: int


@dataclass
class _Shard:
    stem: Path
    images: list[dict[str, Any]]
    mask_offsets: np.ndarray = field(init=False)
    relation_offsets: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.mask_offsets = np.concatenate([[0], np.cumsum([i["num_masks"] for i in self.images])])
        self.relation_offsets = np.concatenate([[0], np.cumsum([i["num_relations"] for i in self.images])])


class FeatureCache(Sequence[CachedImage]):
    """Random-access reader of a feature cache folder (one or several writers' shards).

    `cache[i]` is a `CachedImage`; iteration yields them in shard order. A shard's tensors are
    read on first use and kept (PSG's ~46k images take ~1-2 GB in float16).

    Args:
        directory: the cache folder.
        drop_empty: leave out images without relations (they carry no training signal, and PSG's
            evaluation skips them).

    Example:
        >>> cache = FeatureCache("feats/train")
        >>> image_id, features, relations, n = cache[0]
    """

    def __init__(self, directory: str | Path, *, drop_empty: bool = False) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise CacheError(f"feature cache not found: {self.directory}")
        self._shards = [_Shard(p.with_suffix(""), _read_index(p)["images"]) for p in _index_paths(self.directory)]
        self._items = [
            (s, k)
            for s, shard in enumerate(self._shards)
            for k, image in enumerate(shard.images)
            if not (drop_empty and image["num_relations"] == 0)
        ]
        self._tensors: dict[int, dict[str, torch.Tensor]] = {}
        self._masks: dict[int, list] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> CachedImage:  # type: ignore[override]
        s, k = self._items[index]
        shard, tensors = self._shards[s], self._load(s)
        m0, m1 = shard.mask_offsets[k], shard.mask_offsets[k + 1]
        r0, r1 = shard.relation_offsets[k], shard.relation_offsets[k + 1]
        return CachedImage(
            image_id=shard.images[k]["image_id"],
            features=tensors["features"][m0:m1].float(),
            relations=tensors["relations"][r0:r1],
            num_masks=int(m1 - m0),
        )

    def __iter__(self) -> Iterator[CachedImage]:
        return (self[i] for i in range(len(self)))

    def info(self, index: int) -> dict[str, Any]:
        """The index entry of image `index`: image_id, file, height, width, counts."""
        s, k = self._items[index]
        return dict(self._shards[s].images[k])

    def num_masks(self, index: int) -> int:
        """N of image `index`, without reading tensors."""
        return int(self.info(index)["num_masks"])

    def matched_gt(self, index: int) -> torch.Tensor:
        """[N] int64: the ground-truth segment index of each mask of image `index`, -1 if none."""
        s, k = self._items[index]
        offsets = self._shards[s].mask_offsets
        return self._load(s)["matched_gt"][offsets[k] : offsets[k + 1]]

    def masks(self, index: int) -> np.ndarray | None:
        """[N, H, W] bool SAM masks of image `index`, or None if the cache keeps no masks."""
        s, k = self._items[index]
        if s not in self._masks:
            path = self._shards[s].stem.with_name(self._shards[s].stem.name + ".masks.json")
            try:
                self._masks[s] = json.loads(path.read_text())["masks"]
            except (OSError, json.JSONDecodeError, KeyError) as error:
                raise CacheError(f"damaged feature-cache masks {path}: {error}") from error
        rles = self._masks[s][k]
        if rles is None:
            return None
        info = self.info(index)
        if not rles:
            return np.zeros((0, info["height"], info["width"]), dtype=bool)
        return np.stack([decode_mask(rle) for rle in rles])

    def _load(self, s: int) -> dict[str, torch.Tensor]:
        if s not in self._tensors:
            path = self._shards[s].stem.with_name(self._shards[s].stem.name + ".safetensors")
            try:
                self._tensors[s] = load_file(str(path))
            except Exception as error:  # safetensors raises its own error types and OSError
                raise CacheError(f"damaged feature-cache shard {path}: {error}") from error
        return self._tensors[s]

    def image_ids(self) -> list[str]:
        return [self._shards[s].images[k]["image_id"] for s, k in self._items]

    def predicate_counts(self, num_predicates: int) -> torch.Tensor:
        """[num_predicates] int64: how often each predicate occurs among the cached relations."""
        counts = torch.zeros(num_predicates, dtype=torch.int64)
        for s, _ in enumerate(self._shards):
            counts += torch.bincount(self._load(s)["relations"][:, 2], minlength=num_predicates)[:num_predicates]
        return counts

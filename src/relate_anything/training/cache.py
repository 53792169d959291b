"""The on-disk feature cache the relation head trains on: SAM features and relations per image,
and optionally a teacher's relation logits (distillation).

A cache is a folder of shards. Shard `NAME` is three files:

    NAME.safetensors   features [sum N, D] (float16 or float32), relations [sum R, 3] int64
                       (subject mask, object mask, predicate), matched_gt [sum N] int64 (the
                       ground-truth segment index each mask was matched to, -1 if none), and,
                       only when some image of the shard has them, teacher_logits
                       [sum P_k N_k^2] float16: each such image's [P, N, N] teacher logits, flat
                       in C order ([r, i, j] scores "mask i <predicate r> mask j", as the head's)
    NAME.masks.json    {"masks": [[rle, ...] per image]}: each image's SAM masks, COCO RLE
    NAME.json          the index, and the commit marker: {"format", "segmenter", "images":
                       [{"image_id", "file", "height", "width", "num_masks", "num_relations",
                       "gt_relations", "teacher_predicates"}]}

Rows of image k are the k-th slices in image order (`num_masks`, `num_relations` give the
lengths; image k's teacher block has `teacher_predicates` * `num_masks`^2 entries, 0 when it has
none).

Versions (the index's and the safetensors metadata's "format"):
- v1: no teacher logits, no "segmenter", no "teacher_predicates". Still read: its images have no
  teacher logits and its segmenter is unknown.
- v2 (written now): adds the optional teacher logits, "teacher_predicates" per image and
  "segmenter" per shard (the segmenter whose mask tokens the features are, e.g.
  "facebook/sam-vit-base" or a folder name; null if not recorded).

Teacher logits take 2 P N^2 bytes an image (PSG's 56 predicates: 0.28 MB at N = 50 masks,
1.1 MB at N = 100), so they are not kept in memory: each access reads its image's slice from the
memory-mapped shard. Every file is written to a temporary name and moved into place with `os.replace`, the
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
from safetensors import safe_open
from safetensors.torch import save_file

from relate_anything.atomic import write_atomically, write_text_atomically
from relate_anything.errors import UsageError
from relate_anything.scene_graph import decode_mask

__all__ = ["CacheError", "CachedImage", "FeatureCache", "ImageRecord", "ShardWriter", "committed_image_ids"]

FORMAT = "relate-anything/feature-cache/v2"
FORMAT_V1 = "relate-anything/feature-cache/v1"
READABLE_FORMATS = (FORMAT_V1, FORMAT)
# float16's largest finite value: teacher logits beyond it are clipped (a sigmoid there is 0 or 1).
_FLOAT16_MAX = float(np.finfo(np.float16).max)
_KEPT_TENSORS = ("features", "relations", "matched_gt")
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
        teacher_logits: [P, N, N] float, a teacher's relation logits over these N masks (P = 56
            for RAM), or None. Stored as float16 (clipped to +-65504).
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
    teacher_logits: np.ndarray | None = None

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
        if self.teacher_logits is not None:
            self.teacher_logits = np.asarray(self.teacher_logits)
            shape = self.teacher_logits.shape
            if self.teacher_logits.ndim != 3 or shape[0] < 1 or shape[1:] != (n, n):
                raise ValueError(f"image {self.image_id}: teacher_logits must be [P, {n}, {n}], got {list(shape)}")
            if not np.isfinite(self.teacher_logits).all():
                raise ValueError(f"image {self.image_id}: teacher_logits hold NaN or infinite values")


class ShardWriter:
    """Buffers `ImageRecord`s and commits them as shards of `shard_size` images.

    Args:
        directory: the cache folder (created if missing).
        shard_size: images per shard; a crash loses at most the uncommitted images.
        rank: the writer's rank, part of the shard names.
        feature_dtype: torch.float16 (half the disk) or torch.float32.
        segmenter: the segmenter whose mask tokens the features are (hub id or folder name),
            recorded in every shard; the trainer copies it into the heads it saves.

    Raises:
        CacheError: `segmenter` differs from the one recorded by the folder's committed shards
            (features of two segmenters must not be mixed in one cache).
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        shard_size: int = 256,
        rank: int = 0,
        feature_dtype: torch.dtype = torch.float16,
        segmenter: str | None = None,
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
        self.segmenter = segmenter
        if segmenter is not None:
            recorded = _recorded_segmenters(self.directory) - {segmenter}
            if recorded:
                raise CacheError(
                    f"{self.directory} holds features of {', '.join(sorted(recorded))}, not {segmenter}: "
                    "write to another folder"
                )
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
        teacher = [r.teacher_logits for r in records if r.teacher_logits is not None]
        if teacher:
            flat = np.concatenate([np.clip(t, -_FLOAT16_MAX, _FLOAT16_MAX).reshape(-1) for t in teacher])
            tensors["teacher_logits"] = torch.from_numpy(flat.astype(np.float16))
        write_atomically(
            self.directory / f"{name}.safetensors",
            lambda tmp: save_file(tensors, str(tmp), metadata={"format": FORMAT}),
        )
        masks = {"masks": [r.masks for r in records]}
        write_text_atomically(self.directory / f"{name}.masks.json", json.dumps(masks))
        index = {
            "format": FORMAT,
            "segmenter": self.segmenter,
            "images": [
                {
                    "image_id": r.image_id,
                    "file": r.file,
                    "height": r.height,
                    "width": r.width,
                    "num_masks": len(r.features),
                    "num_relations": len(r.relations),
                    "gt_relations": int(r.gt_relations),
                    "teacher_predicates": 0 if r.teacher_logits is None else len(r.teacher_logits),
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
    """A shard's index, upgraded to v2's fields (a v1 shard: no segmenter, no teacher logits)."""
    try:
        index = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CacheError(f"damaged feature-cache index {path}: {error}") from error
    if index.get("format") not in READABLE_FORMATS:
        raise CacheError(
            f"{path} is not a relate-anything feature-cache index this version reads (format "
            f"{index.get('format')!r}; readable: {', '.join(READABLE_FORMATS)})"
        )
    index.setdefault("segmenter", None)
    for image in index["images"]:
        image.setdefault("teacher_predicates", 0)
    return index


def _recorded_segmenters(directory: Path) -> set[str]:
    return {s for path in _index_paths(directory) if (s := _read_index(path)["segmenter"]) is not None}


class CachedImage(NamedTuple):
    """One image of a `FeatureCache`: features [N, D] float32, relations [R, 3] int64
    (subject, object, predicate), N, and the teacher's relation logits [P, N, N] float32 (from the
    stored float16) or None."""

    image_id: str
    features: torch.Tensor
    relations: torch.Tensor
    num_masks: int
    teacher_logits: torch.Tensor | None = None


@dataclass
class _Shard:
    stem: Path
    images: list[dict[str, Any]]
    segmenter: str | None = None
    mask_offsets: np.ndarray = field(init=False)
    relation_offsets: np.ndarray = field(init=False)
    teacher_offsets: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.mask_offsets = np.concatenate([[0], np.cumsum([i["num_masks"] for i in self.images])])
        self.relation_offsets = np.concatenate([[0], np.cumsum([i["num_relations"] for i in self.images])])
        sizes = [i["teacher_predicates"] * i["num_masks"] ** 2 for i in self.images]
        self.teacher_offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    @property
    def path(self) -> Path:
        return self.stem.with_name(self.stem.name + ".safetensors")


class FeatureCache(Sequence[CachedImage]):
    """Random-access reader of a feature cache folder (one or several writers' shards).

    `cache[i]` is a `CachedImage`; iteration yields them in shard order. A shard's features and
    relations are read on first use and kept (PSG's ~46k images take ~1-2 GB in float16); teacher
    logits are read per access and not kept (see the module docstring).

    Args:
        directory: the cache folder.
        drop_empty: leave out images without relations (PSG's training and evaluation skip them;
            a distillation cache's images may have none and still carry teacher logits).

    Example:
        >>> cache = FeatureCache("feats/train")
        >>> image = cache[0]
        >>> image.features.shape, image.relations.shape, image.teacher_logits is None
    """

    def __init__(self, directory: str | Path, *, drop_empty: bool = False) -> None:
        self.directory = Path(directory)
        self.drop_empty = drop_empty
        if not self.directory.is_dir():
            raise CacheError(f"feature cache not found: {self.directory}")
        self._shards = []
        for path in _index_paths(self.directory):
            index = _read_index(path)
            self._shards.append(_Shard(path.with_suffix(""), index["images"], index["segmenter"]))
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
            teacher_logits=self._teacher_logits(s, k),
        )

    def _teacher_logits(self, s: int, k: int) -> torch.Tensor | None:
        shard = self._shards[s]
        predicates, n = shard.images[k]["teacher_predicates"], shard.images[k]["num_masks"]
        if predicates == 0:
            return None
        t0, t1 = int(shard.teacher_offsets[k]), int(shard.teacher_offsets[k + 1])
        try:
            # A slice of the memory-mapped file: only this image's block is read.
            with safe_open(shard.path, framework="pt", device="cpu") as f:
                flat = f.get_slice("teacher_logits")[t0:t1]
        except Exception as error:  # safetensors raises its own error types and OSError
            raise CacheError(f"damaged feature-cache shard {shard.path}: {error}") from error
        return flat.float().reshape(predicates, n, n)

    def __iter__(self) -> Iterator[CachedImage]:
        return (self[i] for i in range(len(self)))

    def info(self, index: int) -> dict[str, Any]:
        """The index entry of image `index`: image_id, file, height, width, counts."""
        s, k = self._items[index]
        return dict(self._shards[s].images[k])

    def num_masks(self, index: int) -> int:
        """N of image `index`, without reading tensors."""
        return int(self.info(index)["num_masks"])

    def has_teacher_logits(self, index: int) -> bool:
        """Whether image `index` has teacher logits, without reading tensors."""
        return self.info(index)["teacher_predicates"] > 0

    @property
    def segmenter(self) -> str | None:
        """The segmenter recorded by the shards (see `ShardWriter`), None if none records one.

        Raises:
            CacheError: shards record different segmenters.
        """
        names = {shard.segmenter for shard in self._shards} - {None}
        if len(names) > 1:
            raise CacheError(f"{self.directory} mixes features of several segmenters: {', '.join(sorted(names))}")
        return next(iter(names), None)

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
        """Shard s's features, relations and matched_gt (not its teacher logits), read once."""
        if s not in self._tensors:
            path = self._shards[s].path
            try:
                with safe_open(path, framework="pt", device="cpu") as f:
                    self._tensors[s] = {key: f.get_tensor(key) for key in _KEPT_TENSORS}
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

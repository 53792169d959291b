"""`SceneGraph`: the one data type every stage of relate-anything produces or consumes.

A scene graph is a set of segments (masks with scores, optional names and features) and a
ranked list of relations between them (subject, predicate, object, score). Masks are stored as
COCO run-length encodings (pycocotools) so a graph of a 4K photo with 100 masks stays small and
its JSON form is the public exchange format:

    {"schema": "relate-anything/scene-graph/v1",
     "image": {"width", "height", "file", "id"?},
     "predicates": [...56 names...],
     "segments": [{"id", "mask": {"size": [h, w], "counts"}, "bbox": [x0, y0, x1, y1], "area",
                   "score", "label"?, "label_score"?, "category_id"?, "feature"?}],
     "relations": [{"subject", "predicate", "predicate_id", "object", "score"}]}

Boxes are pixel edges: a mask covering columns 3..7 has x0 = 3, x1 = 8.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pycocotools import mask as coco_mask

from relate_anything import psg
from relate_anything.errors import RelateAnythingError

if TYPE_CHECKING:
    import networkx
    import torch

SCHEMA = "relate-anything/scene-graph/v1"

# Masks are run-length encoded ~16 MiB at a time: on CPUs, large fresh buffers cost more in page
# faults than the copy into COCO's column order.
_ENCODE_CHUNK_BYTES = 16 << 20


class SceneGraphFormatError(RelateAnythingError):
    """A scene-graph JSON that does not follow the schema."""


def encode_masks(masks: np.ndarray | torch.Tensor) -> list[dict[str, Any]]:
    """Run-length encode boolean masks [N, H, W] as COCO RLE dicts with str counts.

    `masks` may be a numpy array or a torch tensor on any device. On a CPU, the masks are put in
    COCO's column-major order and pycocotools encodes them. On a GPU, the run boundaries are
    found there and only they are copied to the host (`_device_run_lengths`), not the masks.
    """
    if masks.ndim != 3:
        raise ValueError(f"masks must be [N, H, W], got shape {tuple(masks.shape)}")
    if not len(masks):
        return []
    step = max(1, _ENCODE_CHUNK_BYTES // max(1, masks.shape[1] * masks.shape[2]))
    encoded = []
    for start in range(0, len(masks), step):
        chunk = masks[start : start + step]
        if hasattr(chunk, "detach") and chunk.device.type != "cpu":
            height, width = chunk.shape[1:]
            runs = [{"size": [height, width], "counts": counts} for counts in _device_run_lengths(chunk)]
            encoded += coco_mask.frPyObjects(runs, height, width)
        else:
            encoded += coco_mask.encode(_column_major_uint8(chunk))
    return [{"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")} for rle in encoded]


@dataclass(frozen=True)
class LabelMapRegions:
    """The regions of a label map, one per non-zero value, from `encode_label_map`.

    Attributes:
        ids: [N] int64, the label values, ascending.
        masks: N COCO RLE dicts `{"size": [h, w], "counts": str}`.
        areas: [N] int64 pixel counts.
        boxes: [N, 4] int64 (x0, y0, x1, y1) pixel edges.
    """

    ids: np.ndarray
    masks: list[dict[str, Any]]
    areas: np.ndarray
    boxes: np.ndarray


def encode_label_map(labels: np.ndarray) -> LabelMapRegions:
    """Run-length encode every region of a label map [H, W] (0 = void) in one pass.

    A panoptic PNG holds one id per pixel; splitting it into N boolean masks and encoding those
    (`encode_masks`) costs N full-image passes (27 ms for 20 regions at 640x480). Here the
    column-major runs of the whole map are found once and grouped by value, so the cost is one
    pass plus the runs (1.9 ms), which is what reading thousands of video frames needs.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be [H, W], got shape {labels.shape}")
    height, width = labels.shape
    pixels = height * width
    flat = np.ascontiguousarray(labels.T).reshape(-1)  # COCO counts run down the columns
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate([[0], change]).astype(np.int64)
    ends = np.concatenate([change, [pixels]]).astype(np.int64)
    order = np.argsort(flat[starts], kind="stable")  # runs grouped by value, in image order
    values, starts, ends = flat[starts][order], starts[order], ends[order]
    ids, first, count = np.unique(values, return_index=True, return_counts=True)
    previous_end = np.empty_like(ends)
    previous_end[1:] = ends[:-1]
    previous_end[first] = 0
    # COCO counts alternate zeros and ones, starting with zeros: gap, run, gap, run, ..., tail.
    interleaved = np.empty(2 * len(starts), dtype=np.uint32)
    interleaved[0::2] = starts - previous_end
    interleaved[1::2] = ends - starts
    # Boxes: a run inside one column spans its rows; one that wraps spans every row.
    same_column = starts // height == (ends - 1) // height
    row_min = np.where(same_column, starts % height, 0)
    row_max = np.where(same_column, (ends - 1) % height, height - 1)
    keep = ids != 0
    ids, first, count = ids[keep], first[keep], count[keep]
    last = first + count - 1
    uncompressed = []
    for start, n in zip(first.tolist(), count.tolist()):
        tail = pixels - int(ends[start + n - 1])
        counts = np.empty(2 * n + (tail > 0), dtype=np.uint32)  # no trailing 0, as pycocotools writes
        counts[: 2 * n] = interleaved[2 * start : 2 * (start + n)]
        counts[2 * n :] = tail
        uncompressed.append({"size": [height, width], "counts": counts})
    encoded = coco_mask.frPyObjects(uncompressed, height, width) if uncompressed else []
    lengths = ends - starts
    areas = np.add.reduceat(lengths, first) if len(first) else np.zeros(0, dtype=np.int64)
    boxes = np.stack(
        [
            starts[first] // height,
            np.minimum.reduceat(row_min, first) if len(first) else first,
            (ends[last] - 1) // height + 1,
            (np.maximum.reduceat(row_max, first) + 1) if len(first) else first,
        ],
        axis=1,
    ).astype(np.int64)
    return LabelMapRegions(
        ids=ids.astype(np.int64),
        masks=[{"size": [height, width], "counts": r["counts"].decode("ascii")} for r in encoded],
        areas=areas.astype(np.int64),
        boxes=boxes.reshape(-1, 4),
    )


def _device_run_lengths(masks: torch.Tensor) -> list[list[int]]:
    """COCO's uncompressed run lengths of [N, H, W] masks, computed where the masks are.

    Runs alternate 0s and 1s down the columns, starting with 0s (a leading 0 when the first
    pixel is set). Only the positions where a column-major mask changes value travel to the
    host: a few per column for real segments instead of every pixel.
    """
    import torch  # only ever called with tensors

    count, height, width = masks.shape
    pixels = height * width
    flat = masks.detach().bool().transpose(1, 2).reshape(count, pixels)
    changes = flat[:, 1:] != flat[:, :-1]  # [N, P - 1], True before each new run
    per_mask = changes.sum(dim=1).cpu().numpy()
    positions = (changes.flatten().nonzero()[:, 0] % max(pixels - 1, 1) + 1).to(torch.int32).cpu().numpy()
    starts_set = flat[:, 0].cpu().numpy()
    bounds = np.concatenate([[0], np.cumsum(per_mask)])
    result = []
    for index in range(count):
        edges = np.concatenate([[0], positions[bounds[index] : bounds[index + 1]], [pixels]])
        runs = np.diff(edges).tolist()
        result.append([0, *runs] if starts_set[index] else runs)
    return result


def _column_major_uint8(masks: np.ndarray | torch.Tensor) -> np.ndarray:
    """[N, H, W] masks as the Fortran-ordered [H, W, N] uint8 array pycocotools encodes."""
    if hasattr(masks, "detach"):
        columns = masks.detach().bool().transpose(1, 2).contiguous().cpu().numpy()  # [N, W, H]
        return columns.view(np.uint8).transpose(2, 1, 0)  # [H, W, N], Fortran order without a copy
    return np.asfortranarray(np.asarray(masks).transpose(1, 2, 0).astype(np.uint8))


def decode_mask(rle: dict[str, Any]) -> np.ndarray:
    """Decode one COCO RLE dict (str or bytes counts) into a boolean mask [H, W]."""
    counts = rle["counts"]
    coco_rle = {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return coco_mask.decode(coco_rle).astype(bool)


@dataclass(frozen=True)
class Segment:
    """One region of the image.

    Attributes:
        id: identifier unique within the graph; relations refer to it.
        mask: COCO RLE `{"size": [h, w], "counts": str}` of the region at the image's size.
        bbox: (x0, y0, x1, y1) pixel edges of the mask, in image pixels.
        area: number of mask pixels.
        score: the segmenter's confidence (SAM's predicted IoU) in [0, 1] for real weights.
        label: a name for the region (a category or phrase), if a labeler gave one.
        label_score: the labeler's score for `label`.
        category_id: PSG's category id (0-132) when the label comes from PSG's vocabulary; the
            label may then be a readable form ("tree" for "tree-merged"). Metrics compare
            `category`: the PSG name of `category_id` if set, else the label.
        feature: the segment's feature vector (SAM's mask token, 256-d float32), if kept.
    """

    id: int
    mask: dict[str, Any]
    bbox: tuple[float, float, float, float]
    area: int
    score: float
    label: str | None = None
    label_score: float | None = None
    category_id: int | None = None
    feature: np.ndarray | None = field(default=None, compare=False)

    @property
    def category(self) -> str | None:
        """The class metrics compare: PSG's category name when `category_id` is set, else `label`."""
        return psg.categories()[self.category_id] if self.category_id is not None else self.label

    def decode(self) -> np.ndarray:
        """The mask as a boolean array [H, W]."""
        return decode_mask(self.mask)

    def to_dict(self, *, features: bool = True) -> dict[str, Any]:
        item: dict[str, Any] = {
            "id": self.id,
            "mask": self.mask,
            "bbox": [float(v) for v in self.bbox],
            "area": self.area,
            "score": self.score,
        }
        if self.label is not None:
            item["label"] = self.label
            item["label_score"] = self.label_score
        if self.category_id is not None:
            item["category_id"] = self.category_id
        if features and self.feature is not None:
            item["feature"] = [float(v) for v in self.feature]
        return item

    @classmethod
    def from_dict(cls, item: dict[str, Any]) -> Segment:
        feature = item.get("feature")
        return cls(
            id=int(item["id"]),
            mask={"size": [int(s) for s in item["mask"]["size"]], "counts": item["mask"]["counts"]},
            bbox=tuple(float(v) for v in item["bbox"]),
            area=int(item["area"]),
            score=float(item["score"]),
            label=item.get("label"),
            label_score=None if item.get("label_score") is None else float(item["label_score"]),
            category_id=None if item.get("category_id") is None else int(item["category_id"]),
            feature=None if feature is None else np.asarray(feature, dtype=np.float32),
        )


@dataclass(frozen=True)
class Relation:
    """A directed, scored triplet: segment `subject` <predicate> segment `object`."""

    subject: int
    predicate: str
    predicate_id: int
    object: int
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "predicate": self.predicate,
            "predicate_id": self.predicate_id,
            "object": self.object,
            "score": self.score,
        }

    @classmethod
    def from_dict(cls, item: dict[str, Any]) -> Relation:
        return cls(
            subject=int(item["subject"]),
            predicate=str(item["predicate"]),
            predicate_id=int(item["predicate_id"]),
            object=int(item["object"]),
            score=float(item["score"]),
        )


@dataclass
class SceneGraph:
    """Segments of one image and the ranked relations between them.

    Validated on construction: segment ids are unique, every mask has the image's size, and every
    relation refers to existing segments and to a predicate in `predicates`.

    Example:
        >>> graph = SceneGraph.load("photo.json")
        >>> for rel in graph.relations[:5]:
        ...     print(graph.describe(rel))
        >>> masks = graph.masks()  # [N, H, W] bool
    """

    width: int
    height: int
    segments: list[Segment] = field(default_factory=list)
    relations: list[Relation] = field(default_factory=list)
    file: str | None = None
    predicates: tuple[str, ...] = field(default_factory=psg.predicates)
    image_id: str | None = None  # a dataset's id for the image (PSG's image_id), if any

    def __post_init__(self) -> None:
        self.predicates = tuple(self.predicates)
        ids = [segment.id for segment in self.segments]
        if len(set(ids)) != len(ids):
            raise SceneGraphFormatError("segment ids must be unique")
        for segment in self.segments:
            if list(segment.mask["size"]) != [self.height, self.width]:
                raise SceneGraphFormatError(
                    f"segment {segment.id}: mask size {segment.mask['size']} is not the image's "
                    f"[height, width] = [{self.height}, {self.width}]"
                )
        known = set(ids)
        for relation in self.relations:
            if relation.subject not in known or relation.object not in known:
                raise SceneGraphFormatError(
                    f"relation {relation.subject} -> {relation.object} refers to a segment id that does not exist"
                )
            if not 0 <= relation.predicate_id < len(self.predicates):
                raise SceneGraphFormatError(f"predicate id {relation.predicate_id} out of range")
            if self.predicates[relation.predicate_id] != relation.predicate:
                raise SceneGraphFormatError(
                    f"predicate id {relation.predicate_id} is {self.predicates[relation.predicate_id]!r}, "
                    f"not {relation.predicate!r}"
                )

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_masks(
        cls,
        masks: torch.Tensor | np.ndarray,
        scores: torch.Tensor | np.ndarray,
        *,
        features: torch.Tensor | np.ndarray | None = None,
        labels: list[str | None] | None = None,
        label_scores: list[float | None] | None = None,
        category_ids: list[int | None] | None = None,
        file: str | None = None,
    ) -> SceneGraph:
        """Build a graph without relations from boolean masks [N, H, W] and scores [N].

        Masks may live on any torch device: they are moved to the CPU and run-length encoded here,
        at the very end of the pipeline. Segment ids are 0..N-1 in the given order.
        """
        if not hasattr(masks, "detach"):
            masks = np.asarray(masks).astype(bool, copy=False)
        scores_np = _to_numpy(scores).astype(np.float64).reshape(-1)
        if masks.ndim != 3 or len(masks) != len(scores_np):
            raise ValueError(f"expected masks [N, H, W] and scores [N], got {tuple(masks.shape)} and {scores_np.shape}")
        features_np = None if features is None else _to_numpy(features).astype(np.float32)
        rles = encode_masks(masks)
        coco = [_coco_rle(r) for r in rles]
        areas = rle_areas(coco)
        boxes_xywh = coco_mask.toBbox(coco) if coco else []
        segments = []
        for index, rle in enumerate(rles):
            x, y, w, h = (float(v) for v in boxes_xywh[index])
            segments.append(
                Segment(
                    id=index,
                    mask=rle,
                    bbox=(x, y, x + w, y + h),
                    area=int(areas[index]),
                    score=float(scores_np[index]),
                    label=None if labels is None else labels[index],
                    label_score=None if label_scores is None else label_scores[index],
                    category_id=None if category_ids is None else category_ids[index],
                    feature=None if features_np is None else features_np[index],
                )
            )
        height, width = masks.shape[1:]
        return cls(width=int(width), height=int(height), segments=segments, file=file)

    def with_relations(self, relations: list[Relation]) -> SceneGraph:
        """A copy of this graph with `relations` (validated against its segments)."""
        return replace(self, relations=list(relations))

    def without_features(self) -> SceneGraph:
        """A copy whose segments carry no feature vectors (smaller JSON)."""
        return replace(self, segments=[replace(s, feature=None) for s in self.segments])

    # -- access -------------------------------------------------------------------------------

    def segment(self, segment_id: int) -> Segment:
        """The segment with id `segment_id` (KeyError if there is none)."""
        for segment in self.segments:
            if segment.id == segment_id:
                return segment
        raise KeyError(segment_id)

    def masks(self) -> np.ndarray:
        """All masks decoded, boolean [N, H, W] in segment order."""
        if not self.segments:
            return np.zeros((0, self.height, self.width), dtype=bool)
        decoded = coco_mask.decode([_coco_rle(s.mask) for s in self.segments])
        return decoded.transpose(2, 0, 1).astype(bool)

    def features(self) -> np.ndarray | None:
        """Segment features stacked [N, D], or None when segments carry none."""
        if not self.segments or any(s.feature is None for s in self.segments):
            return None
        return np.stack([s.feature for s in self.segments])

    def name(self, segment_id: int) -> str:
        """A readable name for a segment: its label, or `#id` when it has none."""
        label = self.segment(segment_id).label
        return f"{label} #{segment_id}" if label else f"#{segment_id}"

    def describe(self, relation: Relation) -> str:
        """`"dog #3 holding stick #7 (0.82)"` for a relation of this graph."""
        return f"{self.name(relation.subject)} {relation.predicate} {self.name(relation.object)} ({relation.score:.2f})"

    # -- export -------------------------------------------------------------------------------

    def to_dict(self, *, features: bool = True) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "image": {"width": self.width, "height": self.height, "file": self.file}
            | ({} if self.image_id is None else {"id": self.image_id}),
            "predicates": list(self.predicates),
            "segments": [s.to_dict(features=features) for s in self.segments],
            "relations": [r.to_dict() for r in self.relations],
        }

    def to_json(self, *, features: bool = True, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(features=features), indent=indent)

    def save(self, path: str | Path, *, features: bool = True) -> None:
        """Write the graph as JSON to `path`."""
        Path(path).write_text(self.to_json(features=features))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SceneGraph:
        schema = data.get("schema") if isinstance(data, dict) else None
        if schema != SCHEMA:
            raise SceneGraphFormatError(f"not a relate-anything scene graph: schema is {schema!r}, expected {SCHEMA!r}")
        try:
            image = data["image"]
            return cls(
                width=int(image["width"]),
                height=int(image["height"]),
                file=image.get("file"),
                image_id=None if image.get("id") is None else str(image["id"]),
                predicates=tuple(data.get("predicates") or psg.predicates()),
                segments=[Segment.from_dict(item) for item in data["segments"]],
                relations=[Relation.from_dict(item) for item in data["relations"]],
            )
        except (KeyError, TypeError, ValueError) as error:
            raise SceneGraphFormatError(f"malformed scene graph: {type(error).__name__}: {error}") from error

    @classmethod
    def from_json(cls, text: str) -> SceneGraph:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise SceneGraphFormatError(f"scene graph is not valid JSON: {error}") from error
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | Path) -> SceneGraph:
        """Read a graph written by `save` (or any tool following the schema)."""
        return cls.from_json(Path(path).read_text())

    def to_networkx(self) -> networkx.MultiDiGraph:
        """A `networkx.MultiDiGraph`: one node per segment, one edge per relation (key = predicate).

        Node attributes: label, label_score, score, bbox, area. Edge attributes: predicate,
        predicate_id, score, rank (0 = highest-scored relation).
        """
        import networkx

        graph = networkx.MultiDiGraph(width=self.width, height=self.height, file=self.file)
        for segment in self.segments:
            graph.add_node(
                segment.id,
                label=segment.label,
                label_score=segment.label_score,
                score=segment.score,
                bbox=segment.bbox,
                area=segment.area,
            )
        for rank, relation in enumerate(self.relations):
            graph.add_edge(
                relation.subject,
                relation.object,
                key=relation.predicate,
                predicate=relation.predicate,
                predicate_id=relation.predicate_id,
                score=relation.score,
                rank=rank,
            )
        return graph


def rle_areas(rles: Sequence[dict[str, Any]]) -> np.ndarray:
    """Pixel counts, int64 [N], of RLEs in pycocotools' form (bytes counts). pycocotools' `area`
    builds a uint8 array from the number of masks (numpy 2 refuses more than 255), so it is
    called on at most 255 at a time."""
    rles = list(rles)
    chunks = [
        np.asarray(coco_mask.area(rles[i : i + 255]), dtype=np.int64).reshape(-1) for i in range(0, len(rles), 255)
    ]
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)


def _coco_rle(rle: dict[str, Any]) -> dict[str, Any]:
    counts = rle["counts"]
    return {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def _to_numpy(array: Any) -> np.ndarray:
    if hasattr(array, "detach"):
        array = array.detach()
        if array.is_floating_point():  # numpy has no bfloat16
            array = array.float()
        return array.cpu().numpy()
    return np.asarray(array)

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
from relate_anything.atomic import write_text_atomically
from relate_anything.boxes import xywh_to_xyxy
from relate_anything.errors import UsageError
from relate_anything.masks import coco_rles, decode_mask, encode_masks, rle_areas

__all__ = ["SCHEMA", "Relation", "SceneGraph", "SceneGraphFormatError", "Segment", "decode_mask", "encode_masks"]

if TYPE_CHECKING:
    import networkx
    import torch

SCHEMA = "relate-anything/scene-graph/v1"


class SceneGraphFormatError(UsageError):
    """A scene-graph JSON that does not follow the schema."""


def parse_json(text: str, kind: str) -> Any:
    """`text` parsed as JSON, or `SceneGraphFormatError` naming `kind` ("scene graph", ...)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise SceneGraphFormatError(f"{kind} is not valid JSON: {error}") from error


def check_schema(data: Any, schema: str, kind: str) -> None:
    """Raise `SceneGraphFormatError` unless `data` is a dict of schema `schema`."""
    found = data.get("schema") if isinstance(data, dict) else None
    if found != schema:
        raise SceneGraphFormatError(f"not a relate-anything {kind}: schema is {found!r}, expected {schema!r}")


def check_relations(relations: Sequence[Any], known: set[int], predicates: Sequence[str], *, what: str) -> None:
    """Raise `SceneGraphFormatError` unless every relation joins two `known` ids (of a `what`:
    segment, track) and names a predicate of `predicates` by index and name."""
    for relation in relations:
        if relation.subject not in known or relation.object not in known:
            raise SceneGraphFormatError(
                f"relation {relation.subject} -> {relation.object} refers to a {what} id that does not exist"
            )
        if not 0 <= relation.predicate_id < len(predicates):
            raise SceneGraphFormatError(f"predicate id {relation.predicate_id} out of range")
        if predicates[relation.predicate_id] != relation.predicate:
            raise SceneGraphFormatError(
                f"predicate id {relation.predicate_id} is {predicates[relation.predicate_id]!r}, not {relation.predicate!r}"
            )


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
        check_relations(self.relations, set(ids), self.predicates, what="segment")

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
        coco = coco_rles(rles)
        areas = rle_areas(coco)
        boxes = xywh_to_xyxy(coco_mask.toBbox(coco)) if coco else np.zeros((0, 4))
        segments = []
        for index, rle in enumerate(rles):
            segments.append(
                Segment(
                    id=index,
                    mask=rle,
                    bbox=tuple(float(v) for v in boxes[index]),
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
        decoded = coco_mask.decode(coco_rles([s.mask for s in self.segments]))
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
        """Write the graph as JSON to `path` (complete or not at all)."""
        write_text_atomically(Path(path), self.to_json(features=features))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SceneGraph:
        check_schema(data, SCHEMA, "scene graph")
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
        return cls.from_dict(parse_json(text, "scene graph"))

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


def _to_numpy(array: Any) -> np.ndarray:
    if hasattr(array, "detach"):
        array = array.detach()
        if array.is_floating_point():  # numpy has no bfloat16
            array = array.float()
        return array.cpu().numpy()
    return np.asarray(array)

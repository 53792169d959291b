"""`VideoSceneGraph`: a clip's tracks and the relations between them over time.

Built from the image type (`SceneGraph`): a track is one thing or stuff region followed through
the clip under one id, with one COCO RLE mask per sampled frame where it is visible; a relation
is a (subject track, predicate, object track) triplet with the frame intervals where it holds.
`graph.frame(t)` gives the `SceneGraph` of sampled frame t (the tracks visible there, ids kept,
and the relations whose intervals contain t). The JSON form is the public exchange format:

    {"schema": "relate-anything/video-scene-graph/v1",
     "video": {"file", "width", "height", "fps", "sampled_fps", "frame_index": [source frame of
               each sampled frame]},
     "predicates": [...],
     "tracks": [{"id", "label"?, "label_score"?, "category_id"?, "score", "first_frame",
                 "last_frame", "frames": [{"frame", "mask": {"size", "counts"}, "bbox", "area",
                 "score"}]}],
     "relations": [{"subject", "predicate", "predicate_id", "object", "score",
                    "intervals": [[start, end], ...]}]}

Frames are sampled-frame indices (0-based); intervals are inclusive at both ends, as PVSG's
evaluator reads them. Boxes are pixel edges, as in `SceneGraph`.
"""

from __future__ import annotations

import json
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from relate_anything import psg
from relate_anything.atomic import write_text_atomically
from relate_anything.scene_graph import (
    Relation,
    SceneGraph,
    SceneGraphFormatError,
    Segment,
    check_relations,
    check_schema,
    decode_mask,
    parse_json,
)

if TYPE_CHECKING:
    import networkx
    import numpy as np

SCHEMA = "relate-anything/video-scene-graph/v1"

__all__ = ["SCHEMA", "Track", "TrackFrame", "VideoInfo", "VideoRelation", "VideoSceneGraph"]


@dataclass(frozen=True)
class VideoInfo:
    """The clip a graph describes.

    Attributes:
        width, height: frame size in pixels (frames upright, rotation metadata applied).
        frame_index: the source-video frame number of each sampled frame, in order; its length
            is the number of sampled frames.
        fps: the source video's frame rate (None for a folder of frames).
        sampled_fps: the rate frames were sampled at (None when every frame was taken).
        file: the clip's name or path, as given.
    """

    width: int
    height: int
    frame_index: tuple[int, ...]
    fps: float | None = None
    sampled_fps: float | None = None
    file: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "frame_index", tuple(int(i) for i in self.frame_index))
        if self.width < 1 or self.height < 1:
            raise SceneGraphFormatError(f"video size must be positive, got {self.width}x{self.height}")
        if any(b <= a for a, b in zip(self.frame_index, self.frame_index[1:])):
            raise SceneGraphFormatError("frame_index must be strictly increasing source frame numbers")

    @property
    def num_frames(self) -> int:
        """Sampled frames in the clip."""
        return len(self.frame_index)

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "width": self.width,
            "height": self.height,
            "fps": self.fps,
            "sampled_fps": self.sampled_fps,
            "frame_index": list(self.frame_index),
        }

    @classmethod
    def from_dict(cls, item: dict[str, Any]) -> VideoInfo:
        return cls(
            width=int(item["width"]),
            height=int(item["height"]),
            frame_index=tuple(item["frame_index"]),
            fps=None if item.get("fps") is None else float(item["fps"]),
            sampled_fps=None if item.get("sampled_fps") is None else float(item["sampled_fps"]),
            file=item.get("file"),
        )


@dataclass(frozen=True)
class TrackFrame:
    """A track's region on one sampled frame.

    Attributes:
        frame: the sampled-frame index.
        mask: COCO RLE `{"size": [h, w], "counts": str}` at the video's size.
        bbox: (x0, y0, x1, y1) pixel edges.
        area: mask pixels.
        score: the segmenter's or tracker's confidence on this frame.
    """

    frame: int
    mask: dict[str, Any]
    bbox: tuple[float, float, float, float]
    area: int
    score: float

    def decode(self) -> np.ndarray:
        """The mask as bool [H, W]."""
        return decode_mask(self.mask)

    def to_dict(self) -> dict[str, Any]:
        return {
            "frame": self.frame,
            "mask": self.mask,
            "bbox": [float(v) for v in self.bbox],
            "area": self.area,
            "score": self.score,
        }

    @classmethod
    def from_dict(cls, item: dict[str, Any]) -> TrackFrame:
        return cls(
            frame=int(item["frame"]),
            mask={"size": [int(s) for s in item["mask"]["size"]], "counts": item["mask"]["counts"]},
            bbox=tuple(float(v) for v in item["bbox"]),
            area=int(item["area"]),
            score=float(item["score"]),
        )

    @classmethod
    def from_segment(cls, frame: int, segment: Segment) -> TrackFrame:
        """The region of an image `Segment` on sampled frame `frame`."""
        return cls(frame=frame, mask=segment.mask, bbox=segment.bbox, area=segment.area, score=segment.score)


@dataclass(frozen=True)
class Track:
    """One thing or stuff region through the clip, under one id.

    Attributes:
        id: unique within the graph; relations refer to it.
        frames: the track's regions on the sampled frames where it is visible, by frame.
        score: the track's confidence (e.g. the mean of its frames' scores).
        label, label_score, category_id: its name, as `Segment`'s (one for the whole track).
    """

    id: int
    frames: tuple[TrackFrame, ...]
    score: float
    label: str | None = None
    label_score: float | None = None
    category_id: int | None = None

    def __post_init__(self) -> None:
        frames = tuple(sorted(self.frames, key=lambda f: f.frame))
        if any(a.frame == b.frame for a, b in zip(frames, frames[1:])):
            raise SceneGraphFormatError(f"track {self.id}: two regions on the same frame")
        object.__setattr__(self, "frames", frames)

    @property
    def first_frame(self) -> int | None:
        return self.frames[0].frame if self.frames else None

    @property
    def last_frame(self) -> int | None:
        return self.frames[-1].frame if self.frames else None

    @property
    def category(self) -> str | None:
        """The class metrics compare: PSG's category name when `category_id` is set, else `label`."""
        return psg.categories()[self.category_id] if self.category_id is not None else self.label

    def at(self, frame: int) -> TrackFrame | None:
        """The track's region on sampled frame `frame`, or None where it is not visible."""
        k = bisect_left(self.frames, frame, key=lambda item: item.frame)  # frames are sorted (__post_init__)
        return self.frames[k] if k < len(self.frames) and self.frames[k].frame == frame else None

    def to_dict(self) -> dict[str, Any]:
        item: dict[str, Any] = {"id": self.id}
        if self.label is not None:
            item["label"] = self.label
            item["label_score"] = self.label_score
        if self.category_id is not None:
            item["category_id"] = self.category_id
        item |= {
            "score": self.score,
            "first_frame": self.first_frame,
            "last_frame": self.last_frame,
            "frames": [f.to_dict() for f in self.frames],
        }
        return item

    @classmethod
    def from_dict(cls, item: dict[str, Any]) -> Track:
        return cls(
            id=int(item["id"]),
            frames=tuple(TrackFrame.from_dict(f) for f in item["frames"]),
            score=float(item["score"]),
            label=item.get("label"),
            label_score=None if item.get("label_score") is None else float(item["label_score"]),
            category_id=None if item.get("category_id") is None else int(item["category_id"]),
        )


@dataclass(frozen=True)
class VideoRelation:
    """A directed triplet between two tracks and the sampled-frame intervals where it holds.

    Attributes:
        subject, object: track ids.
        predicate, predicate_id: the predicate's name and index in the graph's `predicates`.
        score: the relation's score over the clip (e.g. its mean score inside its intervals).
        intervals: ((start, end), ...) inclusive sampled-frame ranges, sorted, disjoint.
    """

    subject: int
    predicate: str
    predicate_id: int
    object: int
    score: float
    intervals: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        intervals = tuple((int(a), int(b)) for a, b in self.intervals)
        for start, end in intervals:
            if end < start:
                raise SceneGraphFormatError(f"interval [{start}, {end}] ends before it starts")
        if any(next_start <= end for (_, end), (next_start, _) in zip(intervals, intervals[1:])):
            raise SceneGraphFormatError(f"intervals {list(intervals)} must be sorted and disjoint")
        object.__setattr__(self, "intervals", intervals)

    def holds_at(self, frame: int) -> bool:
        return any(start <= frame <= end for start, end in self.intervals)

    @property
    def frames(self) -> list[int]:
        """Every sampled frame inside the intervals."""
        return [t for start, end in self.intervals for t in range(start, end + 1)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "predicate": self.predicate,
            "predicate_id": self.predicate_id,
            "object": self.object,
            "score": self.score,
            "intervals": [list(interval) for interval in self.intervals],
        }

    @classmethod
    def from_dict(cls, item: dict[str, Any]) -> VideoRelation:
        return cls(
            subject=int(item["subject"]),
            predicate=str(item["predicate"]),
            predicate_id=int(item["predicate_id"]),
            object=int(item["object"]),
            score=float(item["score"]),
            intervals=tuple(tuple(interval) for interval in item["intervals"]),
        )


@dataclass
class VideoSceneGraph:
    """Tracks of one clip and the ranked relations between them over time.

    Validated on construction: track ids are unique, every mask has the video's size and every
    frame exists, and every relation refers to existing tracks, a known predicate, and frames of
    the clip.

    Example:
        >>> graph = VideoSceneGraph.load("clip.json")
        >>> for relation in graph.relations[:5]:
        ...     print(graph.describe(relation))      # "dog #3 chasing ball #7 (0.71) frames 4-19"
        >>> graph.frame(10)                           # the SceneGraph of sampled frame 10
    """

    video: VideoInfo
    tracks: list[Track] = field(default_factory=list)
    relations: list[VideoRelation] = field(default_factory=list)
    predicates: tuple[str, ...] = field(default_factory=psg.predicates)

    def __post_init__(self) -> None:
        self.predicates = tuple(self.predicates)
        ids = [track.id for track in self.tracks]
        if len(set(ids)) != len(ids):
            raise SceneGraphFormatError("track ids must be unique")
        size = [self.video.height, self.video.width]
        frames = self.video.num_frames
        for track in self.tracks:
            for item in track.frames:
                if list(item.mask["size"]) != size:
                    raise SceneGraphFormatError(
                        f"track {track.id}, frame {item.frame}: mask size {item.mask['size']} is not the video's "
                        f"[height, width] = {size}"
                    )
                if not 0 <= item.frame < frames:
                    raise SceneGraphFormatError(
                        f"track {track.id}: frame {item.frame} is outside the {frames} sampled frames"
                    )
        check_relations(self.relations, set(ids), self.predicates, what="track")
        for relation in self.relations:
            if relation.intervals and not (0 <= relation.intervals[0][0] and relation.intervals[-1][1] < frames):
                raise SceneGraphFormatError(
                    f"relation {relation.subject} {relation.predicate} {relation.object}: intervals "
                    f"{[list(i) for i in relation.intervals]} leave the {frames} sampled frames"
                )

    # -- access -------------------------------------------------------------------------------

    @property
    def width(self) -> int:
        return self.video.width

    @property
    def height(self) -> int:
        return self.video.height

    @property
    def num_frames(self) -> int:
        return self.video.num_frames

    def track(self, track_id: int) -> Track:
        """The track with id `track_id` (KeyError if there is none)."""
        for track in self.tracks:
            if track.id == track_id:
                return track
        raise KeyError(track_id)

    def frame(self, t: int) -> SceneGraph:
        """The `SceneGraph` of sampled frame `t`: one segment per track visible there (segment
        id = track id, with the track's name), and the relations that hold at `t` between
        visible tracks, in rank order with their clip scores."""
        if not 0 <= t < self.num_frames:
            raise IndexError(f"frame {t} is outside the {self.num_frames} sampled frames")
        segments = []
        for track in self.tracks:
            item = track.at(t)
            if item is not None:
                segments.append(
                    Segment(
                        id=track.id,
                        mask=item.mask,
                        bbox=item.bbox,
                        area=item.area,
                        score=item.score,
                        label=track.label,
                        label_score=track.label_score,
                        category_id=track.category_id,
                    )
                )
        visible = {segment.id for segment in segments}
        relations = [
            Relation(
                subject=r.subject, predicate=r.predicate, predicate_id=r.predicate_id, object=r.object, score=r.score
            )
            for r in self.relations
            if r.holds_at(t) and r.subject in visible and r.object in visible
        ]
        return SceneGraph(
            width=self.width,
            height=self.height,
            segments=segments,
            relations=relations,
            file=self.video.file,
            predicates=self.predicates,
        )

    def frames(self) -> Iterable[SceneGraph]:
        """`frame(t)` for every sampled frame, in order."""
        return (self.frame(t) for t in range(self.num_frames))

    def name(self, track_id: int) -> str:
        """A readable name for a track: its label and id, or `#id`."""
        label = self.track(track_id).label
        return f"{label} #{track_id}" if label else f"#{track_id}"

    def describe(self, relation: VideoRelation) -> str:
        """`"dog #3 chasing ball #7 (0.71) frames 4-19, 25-30"`."""
        spans = ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in relation.intervals)
        return f"{self.name(relation.subject)} {relation.predicate} {self.name(relation.object)} ({relation.score:.2f}) frames {spans}"

    def with_relations(self, relations: Sequence[VideoRelation]) -> VideoSceneGraph:
        """A copy with `relations` (validated)."""
        return replace(self, relations=list(relations))

    # -- export -------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "video": self.video.to_dict(),
            "predicates": list(self.predicates),
            "tracks": [track.to_dict() for track in self.tracks],
            "relations": [relation.to_dict() for relation in self.relations],
        }

    def to_json(self, *, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def save(self, path: str | Path) -> None:
        """Write the graph as JSON to `path` (complete or not at all)."""
        write_text_atomically(Path(path), self.to_json())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VideoSceneGraph:
        check_schema(data, SCHEMA, "video scene graph")
        try:
            return cls(
                video=VideoInfo.from_dict(data["video"]),
                predicates=tuple(data.get("predicates") or psg.predicates()),
                tracks=[Track.from_dict(item) for item in data["tracks"]],
                relations=[VideoRelation.from_dict(item) for item in data["relations"]],
            )
        except (KeyError, TypeError, ValueError) as error:
            raise SceneGraphFormatError(f"malformed video scene graph: {type(error).__name__}: {error}") from error

    @classmethod
    def from_json(cls, text: str) -> VideoSceneGraph:
        return cls.from_dict(parse_json(text, "video scene graph"))

    @classmethod
    def load(cls, path: str | Path) -> VideoSceneGraph:
        """Read a graph written by `save` (or any tool following the schema)."""
        return cls.from_json(Path(path).read_text())

    def to_networkx(self) -> networkx.MultiDiGraph:
        """A `networkx.MultiDiGraph`: one node per track, one edge per relation (key = predicate).

        Node attributes: label, label_score, category_id, score, first_frame, last_frame,
        frames (visible frame count). Edge attributes: predicate, predicate_id, score, rank,
        intervals.
        """
        import networkx

        graph = networkx.MultiDiGraph(
            width=self.width, height=self.height, file=self.video.file, frames=self.num_frames
        )
        for track in self.tracks:
            graph.add_node(
                track.id,
                label=track.label,
                label_score=track.label_score,
                category_id=track.category_id,
                score=track.score,
                first_frame=track.first_frame,
                last_frame=track.last_frame,
                frames=len(track.frames),
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
                intervals=[list(i) for i in relation.intervals],
            )
        return graph

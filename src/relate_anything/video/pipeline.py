"""Relate anything in a clip: tracks with one id each, and relations with the intervals where they hold.

    run = pipeline.video_run("clip.mp4")            # or RelateAnything.video(...) for the graph only
    for frame_graph in run:                          # the SceneGraph of each sampled frame, as it is ready
        ...
    graph = run.result()                             # the VideoSceneGraph of the clip

Frames are decoded in a background thread (`prefetch.iterated_ahead`), SAM's image encoder runs
on `encoder_batch` frames at a time, a `Tracker` follows the segments, the RAM head scores the
visible tracks' SAM features on every frame, and an `IntervalAccumulator` turns the score series
into intervals. Nothing holds more than a batch of frames or dense masks: a frame's masks are
run-length encoded as soon as it is tracked.

Naming and finding work on tracks: each track's region embedding (the labeler's image tower on
its masked crop) is averaged over its first frame and the keyframes where it is visible, and the
track is named once from the average; `find` makes the track whose average matches the phrase
best the subject.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from relate_anything import psg
from relate_anything.errors import PromptError, UsageError
from relate_anything.image_io import check_rgb
from relate_anything.prefetch import iterated_ahead
from relate_anything.scene_graph import Relation, SceneGraph
from relate_anything.video.intervals import IntervalAccumulator, to_video_relations
from relate_anything.video.io import Frame, SamplingSettings, VideoDecodeError, VideoReader, open_video
from relate_anything.video.settings import VideoRequest
from relate_anything.video.tracking import (
    IouTracker,
    Sam2Tracker,
    SeggptTracker,
    TrackedFrame,
    Tracker,
)
from relate_anything.video_scene_graph import Track, TrackFrame, VideoInfo, VideoSceneGraph

if TYPE_CHECKING:
    from relate_anything.pipeline import RelateAnything

__all__ = ["VideoRequest", "VideoRun", "video_run"]


@dataclass
class _TrackRecord:
    frames: list[TrackFrame] = field(default_factory=list)
    embedding: torch.Tensor | None = None  # sum of the labeler's unit region embeddings
    embedded: int = 0


class VideoRun:
    """One clip through the pipeline: iterate for the per-frame `SceneGraph`s as they are ready,
    then `result()` for the clip's `VideoSceneGraph` (it finishes the clip if needed).

    A clip whose decoding stops early (a truncated file) gives the graph of the frames decoded
    before the damage; `stopped` then holds the `VideoDecodeError` that says where it stopped.
    """

    def __init__(
        self,
        pipeline: RelateAnything,
        source: str | Path | Iterable[np.ndarray],
        request: VideoRequest,
        *,
        progress: Callable[[int, int | None], None] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.request = request
        self.progress = progress
        self.settings = request.settings or pipeline.settings
        self.stopped: VideoDecodeError | None = None
        self._check_stages()
        self._frames, self._info = _frames_of(source, request.sampling)
        self.tracker = self._tracker()
        self._records: dict[int, _TrackRecord] = {}
        self._accumulator = IntervalAccumulator(settings=request.intervals)
        self._subject: int | None = None
        self._frame_index: list[int] = []
        self._size: tuple[int, int] | None = None
        self._graph: VideoSceneGraph | None = None
        self._iterator: Iterator[SceneGraph] | None = None

    # -- public -----------------------------------------------------------------------------------

    @property
    def info(self) -> VideoInfo | None:
        """The clip's metadata before any frame is read (None for a plain iterable of frames)."""
        return self._info

    def __iter__(self) -> Iterator[SceneGraph]:
        if self._iterator is not None:
            raise RuntimeError("a VideoRun is iterated once")
        self._iterator = self._run()
        return self._iterator

    def result(self) -> VideoSceneGraph:
        """The clip's `VideoSceneGraph` (runs the rest of the clip first)."""
        if self._graph is None:
            for _ in self if self._iterator is None else self._iterator:
                pass
            self._graph = self._finish()
        return self._graph

    # -- the loop ---------------------------------------------------------------------------------

    def _run(self) -> Iterator[SceneGraph]:
        request = self.request
        segmenter = self.pipeline.segmenter
        frames = iterated_ahead(self._frames, ahead=2 * request.encoder_batch)
        expected = getattr(self._frames, "expected_frames", None)
        done = 0
        for batch in self._batches(frames, request.encoder_batch):
            with torch.inference_mode():
                embeddings = segmenter.embed_images([frame.pixels for frame in batch])
            for frame, embedding in zip(batch, embeddings):
                with torch.inference_mode():
                    segmenter.set_embedding(embedding)
                    graph = self._frame(frame)
                done += 1
                if self.progress is not None:
                    self.progress(done, expected)
                yield graph
        if not self._frame_index:
            raise UsageError("the clip has no frame to relate") if self.stopped is None else self.stopped

    def _batches(self, frames: Iterator[Frame], size: int) -> Iterator[list[Frame]]:
        """Lists of `size` frames; decoding that stops on damage ends the clip after the frames
        read before it (`stopped` keeps the error)."""
        batch: list[Frame] = []
        try:
            for frame in frames:
                batch.append(frame)
                if len(batch) == size:
                    yield batch
                    batch = []
        except VideoDecodeError as error:
            self.stopped = error
        if batch:
            yield batch

    def _frame(self, frame: Frame) -> SceneGraph:
        request = self.request
        pixels = frame.pixels
        if self._size is None:
            self._size = pixels.shape[:2]
        elif pixels.shape[:2] != self._size:
            raise UsageError(
                f"frame {frame.index} is {pixels.shape[1]}x{pixels.shape[0]}, the clip's first was "
                f"{self._size[1]}x{self._size[0]}"
            )
        t = len(self._frame_index)
        self._frame_index.append(frame.source_index)
        keyframe = t % request.tracking.keyframe_every == 0
        seed = self._seed(pixels) if t == request.frame and (request.point or request.box) else None
        tracked = self.tracker.update(t, pixels, keyframe=keyframe, seed=seed)
        if tracked.seed_id is not None:
            self._subject = tracked.seed_id
        graph = self._frame_graph(tracked, pixels, keyframe=keyframe)
        if len(tracked.track_ids) >= 2:
            logits = self.pipeline.relation_logits(tracked.segments.features)  # the tracks' SAM features
            self._accumulator.add(t, tracked.track_ids, logits.sigmoid())
            graph = graph.with_relations(self._frame_relations(logits, tracked))
        return graph

    def _seed(self, pixels: np.ndarray):
        from relate_anything.pipeline import check_prompt

        request = self.request
        check_prompt(request.point, request.box, width=pixels.shape[1], height=pixels.shape[0])
        seed = self.pipeline.segmenter.segment_prompts(
            points=None if request.point is None else torch.tensor([request.point], dtype=torch.float32),
            point_labels=None if request.point is None else torch.tensor([1]),
            boxes=None if request.box is None else torch.tensor([request.box], dtype=torch.float32),
            multimask_output=request.multimask,
            settings=self.settings,
        )[:1]
        if not seed.masks.any():
            raise PromptError(
                f"the {'point' if request.point else 'box'} on frame {request.frame} selects an empty mask"
            )
        return seed

    def _frame_graph(self, tracked: TrackedFrame, pixels: np.ndarray, *, keyframe: bool) -> SceneGraph:
        """The frame's graph (segment ids = track ids), its masks encoded once into the tracks."""
        segments = tracked.segments
        graph = SceneGraph.from_masks(segments.masks, segments.iou_predictions, features=None, file=self._file())
        graph = replace(
            graph, segments=[replace(s, id=track_id) for s, track_id in zip(graph.segments, tracked.track_ids)]
        )
        labeler = self.pipeline.labeler
        new = [k for k, track_id in enumerate(tracked.track_ids) if track_id not in self._records]
        for segment in graph.segments:
            self._records.setdefault(segment.id, _TrackRecord()).frames.append(
                TrackFrame.from_segment(tracked.index, segment)
            )
        if labeler is not None and len(segments):
            rows = list(range(len(segments))) if keyframe else new
            if rows:
                embeddings = labeler.embed_masks(pixels, segments.masks[rows])
                for row, embedding in zip(rows, embeddings):
                    record = self._records[tracked.track_ids[row]]
                    record.embedding = embedding if record.embedding is None else record.embedding + embedding
                    record.embedded += 1
        return graph

    def _frame_relations(self, logits: torch.Tensor, tracked: TrackedFrame) -> list[Relation]:
        """The frame's top-k triplets (from the subject track, when there is one)."""
        ids = tracked.track_ids
        subject = ids.index(self._subject) if self._subject in ids else None
        return self.pipeline.ranked_relations(logits, self.request.top_k, subject, ids=ids)

    # -- the clip ---------------------------------------------------------------------------------

    def _finish(self) -> VideoSceneGraph:
        request = self.request
        kept = {
            track_id: record
            for track_id, record in self._records.items()
            if len(record.frames) >= request.tracking.min_track
        }
        if self._subject is not None:
            kept.setdefault(self._subject, self._records[self._subject])  # the asked-for subject stays
        names = self._names(kept)
        subject = self._subject if request.find is None else self._found(kept)
        tracks = [
            Track(
                id=track_id,
                frames=tuple(record.frames),
                score=round(float(np.mean([f.score for f in record.frames])), 6),
                **names.get(track_id, {}),
            )
            for track_id, record in sorted(kept.items())
        ]
        predicates = psg.predicates()
        triplets = [
            triplet
            for triplet in self._accumulator.result(top_k=None, num_frames=len(self._frame_index))
            if triplet.subject in kept and triplet.object in kept and (subject is None or triplet.subject == subject)
        ]
        relations = to_video_relations(triplets[: request.top_k], predicates)
        height, width = self._size
        info = self._info or VideoInfo(width=width, height=height, frame_index=())
        info = replace(info, width=width, height=height, frame_index=tuple(self._frame_index))
        return VideoSceneGraph(video=info, tracks=tracks, relations=relations, predicates=predicates)

    def _names(self, kept: dict[int, _TrackRecord]) -> dict[int, dict]:
        """Each track's name from its average region embedding (a vote over its frames)."""
        labeler = self.pipeline.labeler
        embedded = [track_id for track_id, record in kept.items() if record.embedding is not None]
        if labeler is None or not embedded:
            return {}
        means = torch.stack([kept[i].embedding / kept[i].embedded for i in embedded])
        found = labeler.names(means, self.request.vocabulary or self.pipeline.vocabulary)
        return {
            track_id: {"label": label, "label_score": score, "category_id": category}
            for track_id, label, score, category in zip(embedded, *found)
            if label is not None
        }

    def _found(self, kept: dict[int, _TrackRecord]) -> int | None:
        from relate_anything.naming import phrase_scores

        embedded = [track_id for track_id, record in kept.items() if record.embedding is not None]
        if not embedded:
            return None
        means = torch.stack([kept[i].embedding / kept[i].embedded for i in embedded])
        return embedded[int(phrase_scores(self.pipeline.labeler, means, self.request.find).argmax())]

    # -- set-up -----------------------------------------------------------------------------------

    def _check_stages(self) -> None:
        request, pipeline = self.request, self.pipeline
        if request.find is not None and pipeline.labeler is None:
            raise UsageError("finding a track by text needs a labeler (--labeler or --vocab)")
        if request.vocabulary is not None and pipeline.labeler is None:
            raise UsageError("naming tracks needs a labeler (--labeler or --vocab)")
        if request.tracker == "seggpt" and pipeline.example_segmenter is None:
            raise UsageError("the seggpt tracker needs SegGPT (--seggpt)")
        if request.tracker == "sam2" and pipeline.video_tracker is None:
            raise UsageError("the sam2 tracker needs SAM 2 (--sam2)")

    def _tracker(self) -> Tracker:
        options = {"settings": self.request.tracking, "segment_settings": self.settings}
        segmenter = self.pipeline.segmenter
        if self.request.tracker == "seggpt":
            return SeggptTracker(segmenter, self.pipeline.example_segmenter, **options)
        if self.request.tracker == "sam2":
            return Sam2Tracker(segmenter, self.pipeline.video_tracker, **options)
        return IouTracker(segmenter, **options)

    def _file(self) -> str | None:
        return None if self._info is None else self._info.file


def video_run(
    pipeline: RelateAnything,
    source: str | Path | Iterable[np.ndarray],
    request: VideoRequest | None = None,
    *,
    progress: Callable[[int, int | None], None] | None = None,
) -> VideoRun:
    """`VideoRun` of `source` (a video file, a folder or glob of frames, or RGB frames)."""
    return VideoRun(pipeline, source, request or VideoRequest(), progress=progress)


def _frames_of(source, sampling: SamplingSettings) -> tuple[Iterable[Frame], VideoInfo | None]:
    """The frames of a path (opened and checked now, before any model work), of an open
    `VideoReader`, or of an iterable of RGB arrays (every one taken, in order)."""
    if isinstance(source, (str, Path)):
        source = open_video(source, settings=sampling)
    if isinstance(source, VideoReader):
        return source, source.video_info(frame_index=())
    return _array_frames(source), None


def _array_frames(arrays: Iterable[np.ndarray]) -> Iterator[Frame]:
    for index, pixels in enumerate(arrays):
        pixels = np.asarray(pixels)
        check_rgb(pixels, name=f"frame {index}")
        yield Frame(index=index, source_index=index, time=None, pixels=pixels)

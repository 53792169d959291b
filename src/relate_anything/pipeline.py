"""The whole job: an image in, a `SceneGraph` out; and the one place that builds it.

`RelateAnything` joins the two stages RAM joins: Segment Anything segments the image (every
mask with its 256-d mask-token feature), and the RAM relation head scores every ordered pair of
masks for PSG's 56 predicates. Two modes, as in RAM's demo:

- relate anything: segment everything, keep the top-k triplets over all pairs;
- relate me with anything: a point or box picks the subject; the top-k relations from it to every
  other mask are kept.

Optional stages join in when given: a `Labeler` names every segment (open vocabulary), a
`Detector` finds things by a phrase and returns boxes, and an `ExampleSegmenter` (SegGPT)
returns masks of things like an example. The pipeline prompts SAM with those boxes and masks, so
every segment has SAM's mask-token feature, the input the relation head was trained on.
Prompted segments come first; automatic masks that duplicate one of them are dropped.

Settings are passed per call (`settings=`, `vocabulary=`, `top_k=`), never by changing the
live models, so one pipeline can serve requests with different settings.

`PipelineSpec` (defined in `pipeline_spec`, which loads no model library) is the one builder:
every front end describes the pipeline it wants with one and calls `build(device)`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from relate_anything import psg
from relate_anything.boxes import xyxy_inclusive_to_xyxy
from relate_anything.errors import PromptError, UsageError
from relate_anything.image_io import load_image
from relate_anything.masks import mask_ious
from relate_anything.pipeline_spec import LoadedModel, PipelineSpec, check_top_k
from relate_anything.prefetch import prefetched
from relate_anything.ram import RelationHead, relate
from relate_anything.sam import SegmentationResult, Segmenter, SegmentSettings
from relate_anything.sam.segmenter import PreparedImage
from relate_anything.scene_graph import Relation, SceneGraph

if TYPE_CHECKING:
    from relate_anything.naming import Detector, Labeler, Vocabulary
    from relate_anything.seggpt import Example, ExampleSegmenter
    from relate_anything.video.pipeline import VideoRequest, VideoRun
    from relate_anything.video.sam2 import Sam2VideoTracker
    from relate_anything.video_scene_graph import VideoSceneGraph

__all__ = ["LoadedModel", "PipelineSpec", "RelateAnything", "check_prompt"]


class RelateAnything:
    """Segment everything, relate everything.

    Args:
        segmenter: the SAM stage (SAM, SAM-HQ or SAM 2's image model).
        relation_head: the RAM head that scores [56, N, N] predicate logits from mask features;
            its input width must be the segmenter's feature width.
        settings: the "segment everything" settings of calls that give none.
        top_k: triplets kept per image when a call does not say, best first.
        labeler: names segments from the vocabulary; also finds segments by a phrase when there
            is no detector.
        vocabulary: the names the labeler chooses from when a call gives none (None: PSG's 133).
        detector: a text-conditioned detector (OWLv2) for `find`, whose boxes prompt SAM.
        example_segmenter: SegGPT, for segments like the `examples` of a call (and the video
            tracker "seggpt").
        video_tracker: SAM 2's video predictor (`video.sam2.Sam2VideoTracker`), for the video
            tracker "sam2".

    Example:
        >>> pipeline = RelateAnything.from_pretrained(device="cuda")
        >>> graph = pipeline("photo.jpg", settings=SegmentSettings(points_per_side=16), top_k=10)
        >>> print([graph.describe(r) for r in graph.relations[:3]])
    """

    def __init__(
        self,
        segmenter: Segmenter,
        relation_head: RelationHead,
        *,
        settings: SegmentSettings | None = None,
        top_k: int = 20,
        labeler: Labeler | None = None,
        vocabulary: Vocabulary | None = None,
        detector: Detector | None = None,
        example_segmenter: ExampleSegmenter | None = None,
        video_tracker: Sam2VideoTracker | None = None,
    ) -> None:
        #: Problems worth telling the user that do not stop the pipeline (a head trained on another
        #: segmenter of the same token width).
        self.warnings: list[str] = []
        warning = relation_head.config.check_tokens(feature_dim=segmenter.feature_dim, segmenter=segmenter.name)
        if warning is not None:
            self.warnings.append(warning)
        self.segmenter = segmenter
        self.relation_head = relation_head.eval()
        self.settings = settings or segmenter.settings
        self.top_k = check_top_k(top_k)
        self.labeler = labeler
        self.vocabulary = vocabulary
        self.detector = detector
        self.example_segmenter = example_segmenter
        self.video_tracker = video_tracker

    @classmethod
    def from_pretrained(
        cls,
        sam: str | Path | None = None,
        ram: str | Path | None = None,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str = torch.float32,
        **spec: Any,
    ) -> RelateAnything:
        """Load SAM and the RAM head (and any optional stage) from paths, hub ids or `hf://` references.

        `sam` defaults to $RELATE_ANYTHING_SAM or `facebook/sam-vit-huge`; `ram` to
        $RELATE_ANYTHING_RAM or the authors' published `ram_epoch12.pth` (see `weights`).
        `spec` are further `PipelineSpec` fields: settings, top_k, labeler, vocabulary, detector, ...
        """
        dtype = str(dtype).removeprefix("torch.")
        return PipelineSpec(sam=_str(sam), ram=_str(ram), dtype=dtype, **spec).build(str(device))

    # ------------------------------------------------------------------------------------------
    # Calls

    @torch.inference_mode()
    def __call__(
        self,
        image: str | Path | np.ndarray,
        *,
        point: Sequence[float] | None = None,
        box: Sequence[float] | None = None,
        multimask: bool = False,
        find: str | None = None,
        examples: Sequence[Example] | None = None,
        settings: SegmentSettings | None = None,
        vocabulary: Vocabulary | None = None,
        top_k: int | None = None,
        file: str | None = None,
    ) -> SceneGraph:
        """Build the scene graph of one image.

        Args:
            image: a path, or an RGB uint8 array [H, W, 3].
            point: (x, y) in image pixels: the mask at this point is the subject of every relation.
            box: (x0, y0, x1, y1) pixel edges: the mask in this box is the subject.
            multimask: for a point or box, take the best of SAM's three candidate masks (by
                predicted IoU) instead of its single-mask output. The default, the single-mask
                output and its token (the decoder's first mask token), is what RAM's demo feeds
                the relation head.
            find: a phrase ("the dog"): the best-matching thing is the subject — the detector's
                best box if there is a detector (its detections join as segments named by the
                phrase), else the segment the labeler matches best.
            examples: (image, mask) pairs: SegGPT's segments of the same kind of thing join.
            settings: "segment everything" settings for this call (default: the pipeline's).
            vocabulary: the labeler's names for this call (default: the pipeline's).
            top_k: triplets to keep (default: the pipeline's `top_k`); 0 keeps none.
            file: name recorded as the graph's `image.file` (default: the path's name).

        Returns:
            A `SceneGraph` whose segments carry SAM's scores and features, and whose relations are
            the top-k (subject, predicate, object) triplets by sigmoid score, self-pairs excluded.
            With a point, box or found phrase, segment 0 is the subject.
        """
        if isinstance(image, (str, Path)):
            file = file or Path(image).name
        pixels = load_image(image)
        check_prompt(point, box, width=pixels.shape[1], height=pixels.shape[0])
        if find is not None and self.detector is None and self.labeler is None:
            raise UsageError("finding by text needs a labeler or a detector")
        if examples and self.example_segmenter is None:
            raise UsageError("segmenting by example needs an example segmenter (SegGPT)")
        self.segmenter.set_image(pixels)
        request = _Request(
            settings or self.settings,
            vocabulary or self.vocabulary,
            self._top_k(top_k),
            point,
            box,
            multimask,
            find,
            examples,
        )
        return self._graph(pixels, request, file=file)

    @torch.inference_mode()
    def batch(
        self,
        images: Sequence[str | Path | np.ndarray],
        *,
        files: Sequence[str | None] | None = None,
        settings: SegmentSettings | None = None,
        vocabulary: Vocabulary | None = None,
        top_k: int | None = None,
    ) -> list[SceneGraph]:
        """Relate anything in several photos, their image encodings computed as one batch.

        The image encoder dominates SAM's cost, and batching it is what keeps a GPU busy; the
        rest runs photo by photo. Each graph equals what `pipeline(image, ...)` gives for that photo.

        Args:
            images: paths or RGB uint8 arrays [H, W, 3], of any sizes.
            files: names recorded as each graph's `image.file` (default: the paths' names).
            settings, vocabulary, top_k: as for a single call.
        """
        if files is not None and len(files) != len(images):
            raise ValueError(f"{len(files)} file names for {len(images)} images")
        names = list(files) if files is not None else [None] * len(images)
        names = [name or _file_name(image) for name, image in zip(names, images)]
        request = self._plain_request(settings, vocabulary, top_k)
        return list(self._graphs([load_image(image) for image in images], names, request=request))

    def stream(
        self,
        images: Iterable[str | Path | np.ndarray],
        *,
        batch_size: int = 8,
        settings: SegmentSettings | None = None,
        vocabulary: Vocabulary | None = None,
        top_k: int | None = None,
    ) -> Iterator[SceneGraph]:
        """Relate anything in many photos, `batch_size` at a time, yielding graphs in order.

        While one batch is on the model, a background thread reads, decodes and resizes the next
        one (`Segmenter.prepare`), so that CPU work overlaps with GPU work. Each graph equals
        `pipeline(image)`'s; arrays are named None, paths by their file name.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be positive")
        request = self._plain_request(settings, vocabulary, top_k)
        for _, loaded in prefetched(_batched(images, batch_size), self._load_batch, threads=1, ahead=1):
            if isinstance(loaded, Exception):
                raise loaded
            pixels, names, prepared = loaded
            yield from self._graphs(pixels, names, prepared, request=request)

    @torch.inference_mode()
    def relate_regions(
        self, image: str | Path | np.ndarray, regions: SceneGraph, *, top_k: int | None = None
    ) -> SceneGraph:
        """Relations between given regions (PSG's PredCls setting: masks and names are given).

        Each region's feature is SAM's mask token for a box prompt of the region's bounding box,
        the prompt closest to a mask that SAM's prompt encoder takes without a mask input.

        Args:
            image: the photo the regions belong to (path or RGB uint8 [H, W, 3]).
            regions: a graph whose segments are the regions (e.g. ground truth); its relations
                are ignored.
            top_k: triplets to keep (default: the pipeline's `top_k`).

        Returns:
            `regions` with the top-k relations between its segments (ids are the regions' ids).
        """
        pixels = load_image(image)
        if pixels.shape[:2] != (regions.height, regions.width):
            raise UsageError(
                f"image is {pixels.shape[1]}x{pixels.shape[0]} but the regions are {regions.width}x{regions.height}"
            )
        if not regions.segments:
            return regions.with_relations([])
        self.segmenter.set_image(pixels)
        boxes = torch.tensor([segment.bbox for segment in regions.segments], dtype=torch.float32)
        features = self.segmenter.segment_prompts(boxes=boxes).features
        ids = [segment.id for segment in regions.segments]
        relations = [
            replace(relation, subject=ids[relation.subject], object=ids[relation.object])
            for relation in self._relations(features, self._top_k(top_k), None)
        ]
        return regions.with_relations(relations)

    def video_run(
        self,
        source: str | Path | Iterable[np.ndarray],
        request: VideoRequest | None = None,
        *,
        progress: Callable[[int, int | None], None] | None = None,
    ) -> VideoRun:
        """A clip through the pipeline, frame by frame: iterate the returned `VideoRun` for the
        per-frame `SceneGraph`s as they are ready (segment ids are track ids), then call its
        `result()` for the clip's `VideoSceneGraph`.

        Args:
            source: a video file (MP4, MOV, WebM, AVI, ...), a folder or glob of frames, or an
                iterable of RGB uint8 frames [H, W, 3].
            request: tracker, sampling, tracking, interval, prompt and naming choices
                (`video.pipeline.VideoRequest`).
            progress: called with (frames done, frames expected or None) after each frame.
        """
        from relate_anything.video.pipeline import video_run

        return video_run(self, source, request, progress=progress)

    def video(self, source: str | Path | Iterable[np.ndarray], request: VideoRequest | None = None) -> VideoSceneGraph:
        """The `VideoSceneGraph` of a clip: tracks with one id each through the clip, relations
        with the sampled-frame intervals where they hold (see `video_run`)."""
        return self.video_run(source, request).result()

    # ------------------------------------------------------------------------------------------
    # Internals

    def _top_k(self, top_k: int | None) -> int:
        return self.top_k if top_k is None else check_top_k(top_k)

    def _plain_request(self, settings, vocabulary, top_k) -> _Request:
        return _Request(settings or self.settings, vocabulary or self.vocabulary, self._top_k(top_k))

    def _graphs(
        self,
        pixels: list[np.ndarray],
        names: list[str | None],
        prepared: list[PreparedImage] | None = None,
        *,
        request: _Request,
    ) -> Iterator[SceneGraph]:
        """Graphs of decoded photos, their image encodings computed as one batch."""
        with torch.inference_mode():
            embeddings = self.segmenter.embed_images(prepared or pixels)
        for photo, embedding, name in zip(pixels, embeddings, names):
            with torch.inference_mode():
                self.segmenter.set_embedding(embedding)
                graph = self._graph(photo, request, file=name)
            yield graph

    def _load_batch(self, images: list) -> tuple[list[np.ndarray], list[str | None], list[PreparedImage]]:
        """Decoded photos, file names and encoder-ready photos of a batch (loader thread)."""
        pixels = [load_image(image) for image in images]
        return pixels, [_file_name(image) for image in images], [self.segmenter.prepare(p) for p in pixels]

    def _graph(self, pixels: np.ndarray, request: _Request, *, file: str | None) -> SceneGraph:
        """The scene graph of the photo the segmenter holds (`pixels` are that photo)."""
        # Prompted segments first, each with its name if the prompt gives one.
        prompted: list[SegmentationResult] = []
        names: list[str | None] = []
        scores: list[float | None] = []
        if request.point is not None or request.box is not None:
            prompted.append(self._prompted(request))
            names.append(None)
            scores.append(None)
        if request.find is not None and self.detector is not None:
            detections = self.detector.detect(pixels, [request.find])
            found = self._boxes_prompted([d.box for d in detections], request.settings)
            kept = _non_empty(found.masks).tolist()
            prompted.append(found[torch.tensor(kept, dtype=torch.bool, device=found.masks.device)])
            names += [d.phrase for d, keep in zip(detections, kept) if keep]
            scores += [d.score for d, keep in zip(detections, kept) if keep]
        if request.examples:
            found = self._example_segments(pixels, request)
            prompted.append(found)
            names += [None] * len(found)
            scores += [None] * len(found)
        segments = self.segmenter.segment_everything(settings=request.settings)
        if prompted:
            first = SegmentationResult.concatenate(prompted)
            segments = SegmentationResult.concatenate(
                [first, self._without_duplicates(segments, first, request.settings)]
            )
        names += [None] * (len(segments) - len(names))
        scores += [None] * (len(segments) - len(scores))
        # The masks stay on the device until the graph is built; crops are embedded once, for
        # naming and for finding alike.
        regions = None if self.labeler is None else self.labeler.embed_masks(pixels, segments.masks)
        labels = {} if regions is None else self.labeler.names(regions, request.vocabulary)._asdict()
        graph = SceneGraph.from_masks(
            segments.masks, segments.iou_predictions, features=segments.features, file=file, **labels
        )
        graph = _with_names(graph, names, scores)
        subject = self._subject(graph, request, regions)
        features = segments.features
        if subject is not None and subject != 0:
            order = [subject] + [i for i in range(len(segments)) if i != subject]
            features = features[torch.tensor(order, device=features.device)]  # the masks are in the graph already
            graph = replace(graph, segments=[replace(graph.segments[i], id=k) for k, i in enumerate(order)])
        subject = None if subject is None else 0
        return graph.with_relations(self._relations(features, request.top_k, subject))

    def _prompted(self, request: _Request) -> SegmentationResult:
        """The one mask SAM gives for a point and/or box prompt.

        Raises:
            PromptError: the mask is empty (no pixel's logit above the mask threshold), so there
                is no subject to relate.
        """
        point, box = request.point, request.box
        result = self.segmenter.segment_prompts(
            points=None if point is None else torch.tensor([point], dtype=torch.float32),
            point_labels=None if point is None else torch.tensor([1]),
            boxes=None if box is None else torch.tensor([box], dtype=torch.float32),
            multimask_output=request.multimask,
            settings=request.settings,
        )[:1]
        if not bool(_non_empty(result.masks).all()):
            prompt = " and ".join(
                f"{name} {tuple(round(v, 1) for v in value)}"
                for name, value in (("point", point), ("box", box))
                if value
            )
            raise PromptError(
                f"SAM's mask for the {prompt} is empty (no pixel above mask_threshold "
                f"{request.settings.mask_threshold:g}), so there is no subject to relate: prompt another spot"
                + ("" if request.multimask else ", try multimask")
                + (", or lower mask_threshold" if request.settings.mask_threshold > 0 else "")
            )
        return result

    def _boxes_prompted(self, boxes: Sequence[Sequence[float]], settings: SegmentSettings) -> SegmentationResult:
        """SAM's mask and token for each pixel-edge box (one decoder pass for all of them)."""
        if not len(boxes):
            return SegmentationResult.empty(
                self.segmenter.original_size, feature_dim=self.segmenter.feature_dim, device=self.segmenter.device
            )
        return self.segmenter.segment_prompts(boxes=torch.as_tensor(boxes, dtype=torch.float32), settings=settings)

    def _example_segments(self, pixels: np.ndarray, request: _Request) -> SegmentationResult:
        """SegGPT's segments of things like the examples, with SAM's token for each segment's box."""
        from relate_anything.seggpt import example_segments

        found = example_segments(self.example_segmenter, pixels, request.examples)  # no empty mask among them
        if not len(found):
            return self._boxes_prompted([], request.settings)
        boxes = xyxy_inclusive_to_xyxy(found.boxes)
        features = self._boxes_prompted(boxes.tolist(), request.settings).features.to(found.masks.device)
        return replace(found, features=features)

    def _without_duplicates(
        self, segments: SegmentationResult, kept: SegmentationResult, settings: SegmentSettings
    ) -> SegmentationResult:
        """`segments` less those whose mask IoU with a `kept` mask reaches the duplicate threshold."""
        if not len(segments) or not len(kept):
            return segments
        iou = mask_ious(segments.masks, kept.masks)
        return segments[(iou < settings.duplicate_iou_thresh).all(1)]

    def _subject(self, graph: SceneGraph, request: _Request, regions: torch.Tensor | None) -> int | None:
        """Index of the segment that is the subject of every relation, or None for all pairs."""
        if request.point is not None or request.box is not None:
            return 0
        if request.find is None or not graph.segments:
            return None
        if self.detector is not None:
            detected = [i for i, s in enumerate(graph.segments) if s.label == request.find]
            if detected:
                return detected[0]
        if self.labeler is None:
            raise UsageError(f"the detector found no {request.find!r} and there is no labeler to search the segments")
        from relate_anything.naming import find_segments

        best_id, _ = find_segments(self.labeler, None, graph, request.find, region_embeddings=regions)[0]
        return next(i for i, s in enumerate(graph.segments) if s.id == best_id)

    def _relations(self, features: torch.Tensor, top_k: int, subject: int | None) -> list[Relation]:
        if top_k == 0:
            return []
        return self.ranked_relations(self.relation_logits(features), top_k, subject)

    def relation_logits(self, features: torch.Tensor) -> torch.Tensor:
        """[P, N, N] float32 relation logits of segments with SAM features [N, D] (the head's
        device and precision)."""
        parameter = next(self.relation_head.parameters())
        return self.relation_head.score(features.to(parameter.device, parameter.dtype)).float()

    def ranked_relations(
        self, logits: torch.Tensor, top_k: int, subject: int | None, ids: Sequence[int] | None = None
    ) -> list[Relation]:
        """The top-k triplets of `logits` [P, N, N] (from row `subject` only, when given), best
        first; `ids` name the N rows (default 0..N-1)."""
        names = psg.predicates()
        ids = range(logits.shape[-1]) if ids is None else ids
        return [
            Relation(subject=ids[s], predicate=names[p], predicate_id=p, object=ids[o], score=round(c, 6))
            for s, p, o, c in relate(logits, top_k=top_k, subject=subject).tolist()
        ]


@dataclass(frozen=True)
class _Request:
    """What one call asks: its settings, names and prompts."""

    settings: SegmentSettings
    vocabulary: Vocabulary | None
    top_k: int
    point: Sequence[float] | None = None
    box: Sequence[float] | None = None
    multimask: bool = False
    find: str | None = None
    examples: Sequence[Example] | None = None


def check_prompt(point: Sequence[float] | None, box: Sequence[float] | None, *, width: int, height: int) -> None:
    """Raise `PromptError` unless the point (x, y) and box (x0, y0, x1, y1 pixel edges) lie in
    a `width` x `height` image."""
    if point is not None:
        if len(point) != 2 or not all(np.isfinite(v) for v in point):
            raise PromptError(f"point must be two finite numbers x,y, got {tuple(point)}")
        if not (0 <= point[0] < width and 0 <= point[1] < height):
            raise PromptError(f"point {tuple(point)} is outside the {width}x{height} image")
    if box is not None:
        if len(box) != 4 or not all(np.isfinite(v) for v in box):
            raise PromptError(f"box must be four finite numbers x0,y0,x1,y1, got {tuple(box)}")
        x0, y0, x1, y1 = box
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise PromptError(f"box {tuple(box)} must satisfy 0 <= x0 < x1 <= {width} and 0 <= y0 < y1 <= {height}")


def _str(reference: str | Path | None) -> str | None:
    return None if reference is None else str(reference)


def _file_name(image: str | Path | np.ndarray) -> str | None:
    return Path(image).name if isinstance(image, (str, Path)) else None


def _batched(images: Iterable, size: int) -> Iterator[list]:
    batch = []
    for image in images:
        batch.append(image)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _non_empty(masks: torch.Tensor) -> torch.Tensor:
    """[N] bool: which of the masks [N, H, W] have at least one pixel (an empty mask is no segment)."""
    return masks.flatten(1).any(1)


def _with_names(graph: SceneGraph, names: list[str | None], scores: list[float | None]) -> SceneGraph:
    """Give segments the names their prompts carry (a found phrase), over the labeler's."""
    if not any(name is not None for name in names):
        return graph
    segments = [
        segment if name is None else replace(segment, label=name, label_score=score, category_id=None)
        for segment, name, score in zip(graph.segments, names, scores)
    ]
    return replace(graph, segments=segments)

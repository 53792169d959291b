"""The whole job: an image in, a `SceneGraph` out.

`RelateAnything` joins the two stages RAM joins: Segment Anything segments the image (every
mask with its 256-d mask-token feature), and the RAM relation head scores every ordered pair of
masks for PSG's 56 predicates. Two modes, as in RAM's demo:

- relate anything: segment everything, keep the top-k triplets over all pairs;
- relate me with anything: a point or box picks the subject; the top-k relations from it to every
  other mask are kept.

Optional stages join in when given: a `Labeler` names every segment (open vocabulary), a
`Detector` finds things by a phrase whose boxes prompt SAM (the best one is then the subject), and
an `ExampleSegmenter` (SegGPT) adds the segments that look like an example. Prompted segments
come first; automatic masks that duplicate one of them are dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from relate_anything import psg, weights
from relate_anything.errors import RelateAnythingError
from relate_anything.image_io import load_image
from relate_anything.naming import Detector, Labeler, Vocabulary, find_segments, segments_from_detections
from relate_anything.ram import RelationHead, relate
from relate_anything.sam import SegmentationResult, Segmenter, load_sam
from relate_anything.sam.ops import mask_intersections
from relate_anything.sam.segmenter import PreparedImage
from relate_anything.scene_graph import Relation, SceneGraph
from relate_anything.seggpt import Example, ExampleSegmenter, example_segments


class RelateAnything:
    """Segment everything, relate everything.

    Args:
        segmenter: the SAM stage (its thresholds decide which masks become segments).
        relation_head: the RAM head that scores [56, N, N] predicate logits from mask features.
        top_k: how many triplets to keep per image, best first.
        labeler: names segments from `vocabulary` (default: PSG's 133 classes); also used to find
            segments by a phrase when there is no detector.
        vocabulary: the names the labeler chooses from.
        detector: a text-conditioned detector (OWLv2) for `find`, whose boxes prompt SAM.
        example_segmenter: SegGPT, for segments like the `examples` of a call.

    Example:
        >>> pipeline = RelateAnything.from_pretrained(device="cuda")
        >>> graph = pipeline("photo.jpg")
        >>> print([graph.describe(r) for r in graph.relations[:3]])
    """

    def __init__(
        self,
        segmenter: Segmenter,
        relation_head: RelationHead,
        *,
        top_k: int = 20,
        labeler: Labeler | None = None,
        vocabulary: Vocabulary | None = None,
        detector: Detector | None = None,
        example_segmenter: ExampleSegmenter | None = None,
    ) -> None:
        self.segmenter = segmenter
        self.relation_head = relation_head.eval()
        self.top_k = top_k
        self.labeler = labeler
        self.vocabulary = vocabulary
        self.detector = detector
        self.example_segmenter = example_segmenter

    @classmethod
    def from_pretrained(
        cls,
        sam: str | Path | None = None,
        ram: str | Path | None = None,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        top_k: int = 20,
        **segmenter_options,
    ) -> RelateAnything:
        """Load SAM and the RAM head from paths, hub ids or `hf://` references.

        `sam` defaults to $RELATE_ANYTHING_SAM or `facebook/sam-vit-huge`; `ram` to
        $RELATE_ANYTHING_RAM or the authors' published `ram_epoch12.pth` (see `weights`).
        `segmenter_options` are `Segmenter` keyword arguments (points_per_side, thresholds, ...).
        """
        sam_path = weights.resolve(
            sam or weights.default_reference(weights.SAM_WEIGHTS, weights.DEFAULT_SAM), weights.SAM_WEIGHTS
        )
        ram_path = weights.resolve(
            ram or weights.default_reference(weights.RAM_WEIGHTS, weights.DEFAULT_RAM), weights.RAM_WEIGHTS
        )
        segmenter = Segmenter(load_sam(sam_path, device=device, dtype=dtype), **segmenter_options)
        relation_head = RelationHead.from_checkpoint(ram_path).to(device)
        return cls(segmenter, relation_head, top_k=top_k)

    @torch.inference_mode()
    def __call__(
        self,
        image: str | Path | np.ndarray,
        *,
        point: Sequence[float] | None = None,
        box: Sequence[float] | None = None,
        find: str | None = None,
        examples: Sequence[Example] | None = None,
        top_k: int | None = None,
        file: str | None = None,
    ) -> SceneGraph:
        """Build the scene graph of one image.

        Args:
            image: a path, or an RGB uint8 array [H, W, 3].
            point: (x, y) in image pixels: the mask at this point is the subject of every relation.
            box: (x0, y0, x1, y1) in image pixels: the mask in this box is the subject.
            find: a phrase ("the dog"): the best-matching thing is the subject — the detector's
                best box if there is a detector (its detections join as segments named by the
                phrase), else the segment the labeler matches best.
            examples: (image, mask) pairs: SegGPT's segments of the same kind of thing join.
            top_k: triplets to keep (default: the pipeline's `top_k`).
            file: name recorded as the graph's `image.file` (default: the path's name).

        Returns:
            A `SceneGraph` whose segments carry SAM's scores and features, and whose relations are
            the top-k (subject, predicate, object) triplets by sigmoid score, self-pairs excluded.
            With a point, box or found phrase, segment 0 is the subject.
        """
        if isinstance(image, (str, Path)):
            file = file or Path(image).name
        pixels = load_image(image)
        self._check_request(pixels, point=point, box=box, find=find, examples=examples)
        self.segmenter.set_image(pixels)
        return self._graph(pixels, point=point, box=box, find=find, examples=examples, top_k=top_k, file=file)

    @torch.inference_mode()
    def batch(
        self,
        images: Sequence[str | Path | np.ndarray],
        *,
        files: Sequence[str | None] | None = None,
        top_k: int | None = None,
    ) -> list[SceneGraph]:
        """Relate anything in several photos, their image encodings computed as one batch.

        The image encoder dominates SAM's cost, and batching it is what keeps a GPU busy; the
        rest runs photo by photo. Each graph equals what `pipeline(image)` gives for that photo.

        Args:
            images: paths or RGB uint8 arrays [H, W, 3], of any sizes.
            files: names recorded as each graph's `image.file` (default: the paths' names).
            top_k: triplets to keep per photo (default: the pipeline's `top_k`).
        """
        if files is not None and len(files) != len(images):
            raise ValueError(f"{len(files)} file names for {len(images)} images")
        names = list(files) if files is not None else [None] * len(images)
        names = [name or _file_name(image) for name, image in zip(names, images)]
        return list(self._graphs([load_image(image) for image in images], names, top_k=top_k))

    def _graphs(
        self,
        pixels: list[np.ndarray],
        names: list[str | None],
        prepared: list[PreparedImage] | None = None,
        *,
        top_k: int | None,
    ) -> Iterator[SceneGraph]:
        """Graphs of decoded photos, their image encodings computed as one batch."""
        with torch.inference_mode():
            embeddings = self.segmenter.embed_images(prepared or pixels)
        for photo, embedding, name in zip(pixels, embeddings, names):
            with torch.inference_mode():
                self.segmenter.set_embedding(embedding)
                graph = self._graph(photo, top_k=top_k, file=name)
            yield graph

    def stream(
        self,
        images: Iterable[str | Path | np.ndarray],
        *,
        batch_size: int = 8,
        top_k: int | None = None,
    ) -> Iterator[SceneGraph]:
        """Relate anything in many photos, `batch_size` at a time, yielding graphs in order.

        While one batch is on the model, a background thread reads, decodes and resizes the next
        one (`Segmenter.prepare`), so that CPU work overlaps with GPU work. Each graph equals `pipeline(image)`'s; arrays are
        named None, paths by their file name.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be positive")
        batches = _batched(images, batch_size)
        with ThreadPoolExecutor(max_workers=1) as loader:
            pending = loader.submit(self._load_batch, next(batches, None))
            while True:
                loaded = pending.result()
                if loaded is None:
                    return
                pending = loader.submit(self._load_batch, next(batches, None))
                yield from self._graphs(*loaded, top_k=top_k)

    def _load_batch(self, images: list | None) -> tuple[list[np.ndarray], list[str | None], list[PreparedImage]] | None:
        """Decoded photos, file names and encoder-ready photos of a batch (loader thread)."""
        if images is None:
            return None
        pixels = [load_image(image) for image in images]
        return pixels, [_file_name(image) for image in images], [self.segmenter.prepare(p) for p in pixels]

    def _check_request(self, pixels: np.ndarray, *, point, box, find, examples) -> None:
        _check_prompt(point, box, width=pixels.shape[1], height=pixels.shape[0])
        if find is not None and self.detector is None and self.labeler is None:
            raise RelateAnythingError("finding by text needs a labeler or a detector")
        if examples and self.example_segmenter is None:
            raise RelateAnythingError("segmenting by example needs an example segmenter (SegGPT)")

    def _graph(
        self,
        pixels: np.ndarray,
        *,
        point: Sequence[float] | None = None,
        box: Sequence[float] | None = None,
        find: str | None = None,
        examples: Sequence[Example] | None = None,
        top_k: int | None = None,
        file: str | None = None,
    ) -> SceneGraph:
        """The scene graph of the photo the segmenter holds (`pixels` are that photo)."""
        # Prompted segments first, each with its name if the prompt gives one.
        prompted: list[SegmentationResult] = []
        names: list[str | None] = []
        scores: list[float | None] = []
        if point is not None or box is not None:
            prompted.append(self._prompted(point, box))
            names.append(None)
            scores.append(None)
        if find is not None and self.detector is not None:
            detected = segments_from_detections(self.segmenter, self.detector.detect(pixels, [find]))
            prompted.append(detected.result)
            names += detected.labels
            scores += detected.label_scores
        if examples:
            found = example_segments(self.example_segmenter, pixels, examples, self.segmenter)
            prompted.append(found)
            names += [None] * len(found)
            scores += [None] * len(found)
        segments = self.segmenter.segment_everything()
        if prompted:
            first = SegmentationResult.concatenate(prompted)
            segments = SegmentationResult.concatenate([first, self._without_duplicates(segments, first)])
        names += [None] * (len(segments) - len(names))
        scores += [None] * (len(segments) - len(scores))
        # Masks are named while still on the device; the graph encodes them once, at the end.
        labels = (
            {} if self.labeler is None else self.labeler.name_masks(pixels, segments.masks, self.vocabulary)._asdict()
        )
        graph = SceneGraph.from_masks(
            segments.masks, segments.iou_predictions, features=segments.features, file=file, **labels
        )
        graph = _with_names(graph, names, scores)
        subject = self._subject(pixels, graph, point=point, box=box, find=find)
        if subject is not None and subject != 0:
            order = [subject] + [i for i in range(len(segments)) if i != subject]
            segments = segments[torch.tensor(order, device=segments.masks.device)]
            graph = replace(graph, segments=[replace(graph.segments[i], id=k) for k, i in enumerate(order)])
        subject = None if subject is None else 0
        return graph.with_relations(self._relations(segments.features, top_k or self.top_k, subject))

    def _prompted(self, point: Sequence[float] | None, box: Sequence[float] | None) -> SegmentationResult:
        """The one mask SAM gives for a point and/or box prompt."""
        return self.segmenter.segment_prompts(
            points=None if point is None else torch.tensor([point], dtype=torch.float32),
            point_labels=None if point is None else torch.tensor([1]),
            boxes=None if box is None else torch.tensor([box], dtype=torch.float32),
        )[:1]

    def _without_duplicates(self, segments: SegmentationResult, kept: SegmentationResult) -> SegmentationResult:
        """`segments` less those whose mask IoU with a `kept` mask reaches the duplicate threshold."""
        if not len(segments) or not len(kept):
            return segments
        device = segments.masks.device
        masks = torch.cat([kept.masks.to(device), segments.masks])
        intersection = mask_intersections(masks)[len(kept) :, : len(kept)]
        areas = masks.flatten(1).sum(1)
        union = areas[len(kept) :, None] + areas[None, : len(kept)] - intersection
        iou = intersection / union.clamp(min=1)
        return segments[(iou < self.segmenter.duplicate_iou_thresh).all(1)]

    def _subject(
        self,
        pixels: np.ndarray,
        graph: SceneGraph,
        *,
        point: Sequence[float] | None,
        box: Sequence[float] | None,
        find: str | None,
    ) -> int | None:
        """Index of the segment that is the subject of every relation, or None for all pairs."""
        if point is not None or box is not None:
            return 0
        if find is None or not graph.segments:
            return None
        if self.detector is not None:
            detected = [i for i, s in enumerate(graph.segments) if s.label == find]
            if detected:
                return detected[0]
        if self.labeler is None:
            raise RelateAnythingError(f"the detector found no {find!r} and there is no labeler to search the segments")
        best_id, _ = find_segments(self.labeler, pixels, graph, find)[0]
        return next(i for i, s in enumerate(graph.segments) if s.id == best_id)

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
            raise RelateAnythingError(
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
            for relation in self._relations(features, top_k or self.top_k, None)
        ]
        return regions.with_relations(relations)

    def _relations(self, features: torch.Tensor, top_k: int, subject: int | None) -> list[Relation]:
        head_device = next(self.relation_head.parameters()).device
        head_dtype = next(self.relation_head.parameters()).dtype
        scores = self.relation_head(features.to(head_device, head_dtype)[None])[0]
        triplets = relate(scores.float(), top_k=top_k, subject=subject)
        names = psg.predicates()
        return [
            Relation(subject=s, predicate=names[p], predicate_id=p, object=o, score=round(c, 6))
            for s, p, o, c in zip(
                triplets.subjects.tolist(),
                triplets.predicates.tolist(),
                triplets.objects.tolist(),
                triplets.scores.tolist(),
            )
        ]


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


def _with_names(graph: SceneGraph, names: list[str | None], scores: list[float | None]) -> SceneGraph:
    """Give segments the names their prompts carry (a found phrase), over the labeler's."""
    if not any(name is not None for name in names):
        return graph
    segments = [
        segment if name is None else replace(segment, label=name, label_score=score, category_id=None)
        for segment, name, score in zip(graph.segments, names, scores)
    ]
    return replace(graph, segments=segments)


def _check_prompt(point: Sequence[float] | None, box: Sequence[float] | None, *, width: int, height: int) -> None:
    if point is not None and not (0 <= point[0] < width and 0 <= point[1] < height):
        raise RelateAnythingError(f"point {tuple(point)} is outside the {width}x{height} image")
    if box is not None:
        x0, y0, x1, y1 = box
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise RelateAnythingError(
                f"box {tuple(box)} must satisfy 0 <= x0 < x1 <= {width} and 0 <= y0 < y1 <= {height}"
            )

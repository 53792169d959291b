"""The whole job: an image in, a `SceneGraph` out.

`RelateAnything` joins the two stages RAM joins: Segment Anything segments the image (every
mask with its 256-d mask-token feature), and the RAM relation head scores every ordered pair of
masks for PSG's 56 predicates. Two modes, as in RAM's demo:

- relate anything: segment everything, keep the top-k triplets over all pairs;
- relate me with anything: a point or box picks the subject; the top-k relations from it to every
  other mask are kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from relate_anything import psg, weights
from relate_anything.errors import RelateAnythingError
from relate_anything.image_io import load_image
from relate_anything.ram import RelationHead, relate
from relate_anything.sam import SegmentationResult, Segmenter, load_sam
from relate_anything.sam.ops import mask_intersections
from relate_anything.scene_graph import Relation, SceneGraph


class RelateAnything:
    """Segment everything, relate everything.

    Args:
        segmenter: the SAM stage (its thresholds decide which masks become segments).
        relation_head: the RAM head that scores [56, N, N] predicate logits from mask features.
        top_k: how many triplets to keep per image, best first.

    Example:
        >>> pipeline = RelateAnything.from_pretrained(device="cuda")
        >>> graph = pipeline("photo.jpg")
        >>> print([graph.describe(r) for r in graph.relations[:3]])
    """

    def __init__(self, segmenter: Segmenter, relation_head: RelationHead, *, top_k: int = 20) -> None:
        self.segmenter = segmenter
        self.relation_head = relation_head.eval()
        self.top_k = top_k

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
        sam_path = weights.resolve(sam or weights.default_reference(weights.SAM_WEIGHTS, weights.DEFAULT_SAM), weights.SAM_WEIGHTS)
        ram_path = weights.resolve(ram or weights.default_reference(weights.RAM_WEIGHTS, weights.DEFAULT_RAM), weights.RAM_WEIGHTS)
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
        top_k: int | None = None,
        file: str | None = None,
    ) -> SceneGraph:
        """Build the scene graph of one image.

        Args:
            image: a path, or an RGB uint8 array [H, W, 3].
            point: (x, y) in image pixels: the mask at this point is the subject of every relation.
            box: (x0, y0, x1, y1) in image pixels: the mask in this box is the subject.
            top_k: triplets to keep (default: the pipeline's `top_k`).
            file: name recorded as the graph's `image.file` (default: the path's name).

        Returns:
            A `SceneGraph` whose segments carry SAM's scores and features, and whose relations are
            the top-k (subject, predicate, object) triplets by sigmoid score, self-pairs excluded.
            With a point or box, segment 0 is the prompted mask.
        """
        if isinstance(image, (str, Path)):
            file = file or Path(image).name
        pixels = load_image(image)
        _check_prompt(point, box, width=pixels.shape[1], height=pixels.shape[0])
        self.segmenter.set_image(pixels)
        segments = self.segmenter.segment_everything()
        subject = None
        if point is not None or box is not None:
            segments = self._with_prompted_subject(segments, point=point, box=box)
            subject = 0
        graph = SceneGraph.from_masks(
            segments.masks, segments.iou_predictions, features=segments.features, file=file
        )
        return graph.with_relations(self._relations(segments.features, top_k or self.top_k, subject))

    @torch.inference_mode()
    def relate_regions(self, image: str | Path | np.ndarray, regions: SceneGraph, *, top_k: int | None = None) -> SceneGraph:
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

    def _with_prompted_subject(
        self, segments: SegmentationResult, *, point: Sequence[float] | None, box: Sequence[float] | None
    ) -> SegmentationResult:
        """Put the prompted mask first and drop the automatic masks that duplicate it."""
        device = segments.masks.device
        prompted = self.segmenter.segment_prompts(
            points=None if point is None else torch.tensor([point], dtype=torch.float32),
            point_labels=None if point is None else torch.tensor([1]),
            boxes=None if box is None else torch.tensor([box], dtype=torch.float32),
        )[:1]
        if len(segments):
            masks = torch.cat([prompted.masks.to(device), segments.masks])
            intersection = mask_intersections(masks)[0, 1:]
            areas = masks.flatten(1).sum(1)
            iou = intersection / (areas[0] + areas[1:] - intersection).clamp(min=1)
            segments = segments[iou < self.segmenter.duplicate_iou_thresh]
        return SegmentationResult.concatenate([prompted, segments])

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


def _check_prompt(point: Sequence[float] | None, box: Sequence[float] | None, *, width: int, height: int) -> None:
    if point is not None and not (0 <= point[0] < width and 0 <= point[1] < height):
        raise RelateAnythingError(f"point {tuple(point)} is outside the {width}x{height} image")
    if box is not None:
        x0, y0, x1, y1 = box
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise RelateAnythingError(
                f"box {tuple(box)} must satisfy 0 <= x0 < x1 <= {width} and 0 <= y0 < y1 <= {height}"
            )

"""Tracking segments through a clip: every thing and stuff region keeps one id for the whole clip.

A tracker takes the sampled frames in order (the SAM `Segmenter` holding each frame's
embedding) and returns, per frame, the visible tracks' masks with SAM's mask-token feature of
each (the input the RAM head was trained on). The trackers share one loop and differ in how a
track's mask moves from one frame to the next (`propagate`):

- `IouTracker` (no extra model): SAM prompted with each live track's previous box, a little
  enlarged: the previous masks condition the next frame, as Pix2Seq-D conditions on the
  previous frames' masks;
- `SeggptTracker`: each track's mask on its last frame is SegGPT's in-context example;
- `Sam2Tracker`: SAM 2's video predictor propagates the masks (see `video.sam2`).

The shared loop, on every frame: propagate the live tracks; a propagated mask counts only if it
overlaps the track's previous mask (`continuity_iou`) and is not empty; on keyframes (every
`keyframe_every` frames) SAM segments everything again and its masks are assigned to the tracks
by the Hungarian algorithm (scipy) on mask IoU plus feature cosine, re-anchoring the matched
tracks; keyframe masks no track covers start new tracks (things that enter); two tracks whose
masks coincide keep the older; a track unseen for more than `max_gap` frames ends (short
occlusions are bridged, a long absence is a new track).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from relate_anything.boxes import masks_to_xyxy
from relate_anything.masks import mask_areas, mask_ious, paired_mask_ious
from relate_anything.sam import SegmentationResult, Segmenter
from relate_anything.settings import SegmentSettings
from relate_anything.video.settings import TRACKERS, TrackerSettings

if TYPE_CHECKING:
    from relate_anything.seggpt import ExampleSegmenter
    from relate_anything.video.sam2 import Sam2VideoTracker

__all__ = ["TRACKERS", "IouTracker", "Sam2Tracker", "SeggptTracker", "TrackedFrame", "Tracker", "TrackerSettings"]


@dataclass(frozen=True)
class TrackedFrame:
    """The visible tracks on one sampled frame.

    Attributes:
        index: the sampled-frame index.
        track_ids: the id of each visible track, in the order of `segments`.
        segments: their masks [K, H, W] bool (on the segmenter's device), scores (SAM's predicted
            IoU, or the tracker's confidence), boxes, and SAM mask-token features [K, D].
        seed_id: the track the call's `seed` mask became (None without a seed).
    """

    index: int
    track_ids: tuple[int, ...]
    segments: SegmentationResult
    seed_id: int | None = None


@dataclass
class _Track:
    id: int
    mask: torch.Tensor  # [H, W] bool, the last mask seen
    feature: torch.Tensor  # [D] float, unit norm, a running mean of the features seen
    last_seen: int


@dataclass
class _Assignment:
    """Masks of this frame given to track ids (rows of `segments`)."""

    ids: list[int] = field(default_factory=list)
    rows: list[SegmentationResult] = field(default_factory=list)

    def add(self, track_id: int, row: SegmentationResult) -> None:
        self.ids.append(track_id)
        self.rows.append(row)


class Tracker(ABC):
    """The shared tracking loop; subclasses say how a track's mask reaches the next frame.

    Args:
        segmenter: SAM; the caller sets each frame's embedding on it (`set_image` or
            `set_embedding`) before `update`.
        settings: `TrackerSettings`.
        segment_settings: "segment everything" settings of the keyframes (default: the
            segmenter's).
    """

    name = "base"

    def __init__(
        self,
        segmenter: Segmenter,
        *,
        settings: TrackerSettings | None = None,
        segment_settings: SegmentSettings | None = None,
    ) -> None:
        self.segmenter = segmenter
        self.settings = settings or TrackerSettings()
        self.segment_settings = segment_settings or segmenter.settings
        self._tracks: dict[int, _Track] = {}
        self._next_id = 0
        self._last_index: int | None = None

    def reset(self) -> None:
        """Forget every track: the next frame starts a new clip."""
        self._tracks.clear()
        self._next_id = 0
        self._last_index = None

    def update(
        self, index: int, pixels: np.ndarray, *, keyframe: bool, seed: SegmentationResult | None = None
    ) -> TrackedFrame:
        """Track into sampled frame `index` (RGB uint8 [H, W, 3], already set on the segmenter).

        Args:
            keyframe: segment everything on this frame (new tracks, re-anchoring).
            seed: one mask (with its feature) that must be a track on this frame, e.g. the thing
                a user clicked: it joins the track it overlaps (`match_iou`), else starts one.
        """
        if self._last_index is not None and index <= self._last_index:
            raise ValueError(f"frames must come in order: {index} after {self._last_index}")
        self._last_index = index
        settings = self.settings
        live = [track for track in self._tracks.values() if index - track.last_seen <= settings.max_gap + 1]
        for track_id in [t.id for t in self._tracks.values() if t not in live]:
            self._end(track_id)
        propagated = self._propagate(index, pixels, live) if live else None
        valid = self._continuing(live, propagated)
        assigned = _Assignment()
        if keyframe:
            automatic = self.segmenter.segment_everything(settings=self.segment_settings)
            automatic = automatic[mask_areas(automatic.masks) >= max(settings.min_area, 1)]
            taken = self._match(live, propagated, valid, automatic, assigned)
            for k, track in enumerate(live):
                if valid[k] and track.id not in assigned.ids:
                    assigned.add(track.id, propagated[k])
            self._start_new(automatic, taken, assigned)
        else:
            for k, track in enumerate(live):
                if valid[k]:
                    assigned.add(track.id, propagated[k])
        seed_id = None if seed is None else self._seed(seed, assigned)
        self._resolve_conflicts(assigned, keep=seed_id)
        return self._commit(index, pixels, assigned, seed_id)

    # -- steps -------------------------------------------------------------------------------------

    @abstractmethod
    def _propagate(self, index: int, pixels: np.ndarray, live: list[_Track]) -> SegmentationResult:
        """The masks of the `live` tracks on this frame, one row each, in order, with SAM features."""

    def _continuing(self, live: list[_Track], propagated: SegmentationResult | None) -> list[bool]:
        """Whether each propagated mask still is its track's (not empty, overlapping the last mask)."""
        if propagated is None:
            return []
        areas = mask_areas(propagated.masks)
        previous = torch.stack([track.mask for track in live]).to(propagated.masks.device)
        overlap = paired_mask_ious(propagated.masks, previous)
        keep = (areas >= max(self.settings.min_area, 1)) & (overlap >= self.settings.continuity_iou)
        return keep.tolist()

    def _match(
        self,
        live: list[_Track],
        propagated: SegmentationResult | None,
        valid: list[bool],
        automatic: SegmentationResult,
        assigned: _Assignment,
    ) -> set[int]:
        """Give keyframe masks to live tracks (Hungarian on IoU + feature cosine); returns the
        rows of `automatic` taken."""
        if not live or not len(automatic):
            return set()
        device = automatic.masks.device
        reference = torch.stack(
            [propagated.masks[k].to(device) if valid[k] else track.mask.to(device) for k, track in enumerate(live)]
        )
        iou = mask_ious(reference, automatic.masks).float()
        features = torch.nn.functional.normalize(automatic.features.float(), dim=-1)
        track_features = torch.stack([track.feature for track in live]).to(device)
        cosine = (track_features @ features.T).clamp(min=0)
        weight = self.settings.feature_weight
        score = ((1 - weight) * iou + weight * cosine).cpu().numpy()
        allowed = (iou >= self.settings.match_iou).cpu().numpy()
        rows, columns = linear_sum_assignment(np.where(allowed, -score, 1.0))
        taken = set()
        for row, column in zip(rows.tolist(), columns.tolist()):
            if allowed[row, column]:
                assigned.add(live[row].id, automatic[column])
                taken.add(column)
        return taken

    def _start_new(self, automatic: SegmentationResult, taken: set[int], assigned: _Assignment) -> None:
        """Keyframe masks no track covers become new tracks (largest first, as SAM orders them)."""
        free = [j for j in range(len(automatic)) if j not in taken]
        if not free:
            return
        covered = torch.zeros(len(free), dtype=torch.bool, device=automatic.masks.device)
        if assigned.rows:
            current = SegmentationResult.concatenate(assigned.rows).masks.to(automatic.masks.device)
            covered = (mask_ious(automatic.masks[free], current) >= self.settings.match_iou).any(1)
        for j, is_covered in zip(free, covered.tolist()):
            if not is_covered:
                assigned.add(self._new_id(), automatic[j])

    def _seed(self, seed: SegmentationResult, assigned: _Assignment) -> int:
        """The track `seed` joins (its mask replaces the track's on this frame), or a new one."""
        seed = seed[:1]
        if assigned.rows:
            current = SegmentationResult.concatenate(assigned.rows).masks.to(seed.masks.device)
            iou = mask_ious(seed.masks, current)[0]
            best = int(iou.argmax())
            if float(iou[best]) >= self.settings.match_iou:
                assigned.rows[best] = seed.to(assigned.rows[best].masks.device)
                return assigned.ids[best]
        track_id = self._new_id()
        assigned.add(track_id, seed)
        return track_id

    def _resolve_conflicts(self, assigned: _Assignment, *, keep: int | None) -> None:
        """Of two tracks whose masks coincide on this frame, the older one keeps it (the `keep`
        track always): one region, one id."""
        if len(assigned.rows) < 2:
            return
        masks = SegmentationResult.concatenate([row.to(assigned.rows[0].masks.device) for row in assigned.rows]).masks
        iou = mask_ious(masks).cpu().numpy()
        order = sorted(range(len(assigned.ids)), key=lambda k: (assigned.ids[k] != keep, assigned.ids[k]))
        dropped: set[int] = set()
        for position, k in enumerate(order):
            if k in dropped:
                continue
            for other in order[position + 1 :]:
                if other not in dropped and iou[k, other] >= self.segment_settings.duplicate_iou_thresh:
                    dropped.add(other)
        for k in sorted(dropped, reverse=True):
            del assigned.ids[k]
            del assigned.rows[k]

    def _commit(self, index: int, pixels: np.ndarray, assigned: _Assignment, seed_id: int | None) -> TrackedFrame:
        device = self.segmenter.device
        if assigned.rows:
            segments = SegmentationResult.concatenate([row.to(device) for row in assigned.rows])
            segments = replace(segments, point_coords=None)
        else:
            segments = SegmentationResult.empty(
                self.segmenter.original_size, feature_dim=self.segmenter.feature_dim, device=device
            )
        features = torch.nn.functional.normalize(segments.features.float(), dim=-1)
        for k, track_id in enumerate(assigned.ids):
            track = self._tracks.get(track_id)
            if track is None:
                self._tracks[track_id] = _Track(track_id, segments.masks[k], features[k], index)
            else:
                track.mask, track.last_seen = segments.masks[k], index
                track.feature = torch.nn.functional.normalize(track.feature + features[k], dim=-1)
        self._observe(index, pixels, assigned.ids, segments)
        return TrackedFrame(index=index, track_ids=tuple(assigned.ids), segments=segments, seed_id=seed_id)

    def _observe(self, index: int, pixels: np.ndarray, ids: list[int], segments: SegmentationResult) -> None:
        """What a subclass keeps of a committed frame (its masks as the next frame's prompts)."""

    def _end(self, track_id: int) -> None:
        del self._tracks[track_id]

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def _features_of(self, masks: torch.Tensor) -> SegmentationResult:
        """`masks` [K, H, W] with SAM's mask token of a box prompt of each mask's pixel edges
        (the token `RelateAnything.relate_regions` takes for a given region)."""
        boxes = masks_to_xyxy(masks.to(self.segmenter.device)).float()
        prompted = self.segmenter.segment_prompts(boxes=boxes, settings=self.segment_settings)
        return replace(prompted, masks=masks.to(prompted.masks.device), boxes=prompted.boxes)


class IouTracker(Tracker):
    """Propagates each track with SAM prompted by its previous box (enlarged by `box_margin`):
    no model besides SAM, one decoder pass for all tracks of a frame."""

    name = "iou"

    def _propagate(self, index: int, pixels: np.ndarray, live: list[_Track]) -> SegmentationResult:
        height, width = pixels.shape[:2]
        masks = torch.stack([track.mask for track in live]).to(self.segmenter.device)
        boxes = masks_to_xyxy(masks).float()
        size = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
        grow = torch.tensor([-1.0, -1.0, 1.0, 1.0], device=boxes.device) * self.settings.box_margin * size
        limits = torch.tensor([width, height, width, height], dtype=boxes.dtype, device=boxes.device)
        boxes = torch.minimum((boxes + grow).clamp(min=0), limits)
        return self.segmenter.segment_prompts(boxes=boxes, multimask_output=False, settings=self.segment_settings)


class SeggptTracker(Tracker):
    """Propagates each track with SegGPT, the track's mask on its last frame as the in-context
    example: of SegGPT's regions, the one overlapping the previous mask most is the track's.

    Args:
        example_segmenter: SegGPT (`relate_anything.seggpt.ExampleSegmenter`).
        threshold: SegGPT's foreground probability threshold.
    """

    name = "seggpt"

    def __init__(
        self, segmenter: Segmenter, example_segmenter: ExampleSegmenter, *, threshold: float = 0.5, **options
    ) -> None:
        super().__init__(segmenter, **options)
        self.example_segmenter = example_segmenter
        self.threshold = threshold
        self._examples: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def reset(self) -> None:
        super().reset()
        self._examples.clear()

    def _propagate(self, index: int, pixels: np.ndarray, live: list[_Track]) -> SegmentationResult:
        from relate_anything.seggpt import connected_components

        masks = []
        for track in live:
            example_pixels, example_mask = self._examples[track.id]
            probability = self.example_segmenter.predict(pixels, [(example_pixels, example_mask)])
            regions = connected_components(probability > self.threshold)
            previous = track.mask.to(regions.device)[None]
            if len(regions):
                masks.append(regions[int(mask_ious(regions, previous)[:, 0].argmax())])
            else:
                masks.append(torch.zeros_like(previous[0]))
        return self._features_of(torch.stack(masks))

    def _observe(self, index: int, pixels: np.ndarray, ids: list[int], segments: SegmentationResult) -> None:
        # One example per track: its last frame and mask (bounded memory: one frame each).
        for k, track_id in enumerate(ids):
            self._examples[track_id] = (pixels, segments.masks[k].cpu().numpy())

    def _end(self, track_id: int) -> None:
        super()._end(track_id)
        self._examples.pop(track_id, None)


class Sam2Tracker(Tracker):
    """Propagates the tracks with SAM 2's video predictor (`video.sam2.Sam2VideoTracker`): the
    tracks' masks seed it as mask prompts under the track ids, it carries them from frame to
    frame, and its masks get SAM's features (the relation head reads SAM's tokens).

    A track started on a keyframe joins SAM 2 on the next frame, its keyframe mask as the prompt
    (SAM 2 takes a frame's prompts before that frame is run, and a keyframe's new tracks are
    known only after it): SAM 2 gives that mask back on that frame, and propagates from there.
    """

    name = "sam2"

    def __init__(self, segmenter: Segmenter, video_tracker: Sam2VideoTracker, **options) -> None:
        super().__init__(segmenter, **options)
        self.video_tracker = video_tracker
        self._pending: dict[int, torch.Tensor] = {}
        self._started = False

    def reset(self) -> None:
        super().reset()
        self._pending.clear()
        self._started = False

    def update(self, index: int, pixels: np.ndarray, **options) -> TrackedFrame:
        if not self._started:
            self.video_tracker.start(*pixels.shape[:2])
            self._started = True
        return super().update(index, pixels, **options)

    def _propagate(self, index: int, pixels: np.ndarray, live: list[_Track]) -> SegmentationResult:
        new, self._pending = self._pending, {}
        result = self.video_tracker.step(pixels, new_objects=new or None)
        rows = {track_id: k for k, track_id in enumerate(result.ids)}
        masks = [
            result.masks[rows[track.id]].to(self.segmenter.device) if track.id in rows else torch.zeros_like(track.mask)
            for track in live
        ]
        return self._features_of(torch.stack(masks))

    def _observe(self, index: int, pixels: np.ndarray, ids: list[int], segments: SegmentationResult) -> None:
        known = set(self.video_tracker.object_ids)
        for k, track_id in enumerate(ids):
            if track_id not in known:
                self._pending[track_id] = segments.masks[k]

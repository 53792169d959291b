"""What a clip is asked for: `VideoRequest` and `TrackerSettings`, plain frozen dataclasses.

They live apart from the tracking and pipeline code so that the `video` command checks its
flags before torch and transformers load (`video.tracking` and `video.pipeline` re-export them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from relate_anything.errors import UsageError
from relate_anything.settings import SegmentSettings
from relate_anything.video.intervals import IntervalSettings
from relate_anything.video.io import SamplingSettings

if TYPE_CHECKING:
    from relate_anything.naming import Vocabulary

__all__ = ["TRACKERS", "TrackerSettings", "VideoRequest"]

#: The `--tracker` names.
TRACKERS = ("iou", "sam2", "seggpt")


@dataclass(frozen=True)
class TrackerSettings:
    """How tracks are followed, started and ended (frames are sampled frames).

    Attributes:
        keyframe_every: segment everything again every N frames (1: every frame), to pick up
            things that enter and re-anchor the tracks.
        match_iou: smallest mask IoU between a keyframe mask and a track's mask for them to be
            matched, and for a keyframe mask to count as covered by a track (not a new track).
        feature_weight: weight of the SAM feature cosine in the matching score (the rest is
            mask IoU).
        continuity_iou: a propagated mask counts only if it overlaps the track's previous mask
            by this IoU; below it the track is hidden on this frame (it left, or is occluded).
        box_margin: the previous box is enlarged by this fraction of its size on each side
            before it prompts SAM (`IouTracker`), so a moving thing stays inside it.
        min_area: masks with fewer pixels are not a track's on that frame.
        max_gap: a track unseen for more than this many frames ends.
        min_track: tracks seen on fewer frames are dropped from the result.
    """

    keyframe_every: int = 5
    match_iou: float = 0.3
    feature_weight: float = 0.25
    continuity_iou: float = 0.2
    box_margin: float = 0.1
    min_area: int = 16
    max_gap: int = 5
    min_track: int = 3

    def __post_init__(self) -> None:
        for name in ("keyframe_every", "min_track"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_gap", "min_area"):
            if getattr(self, name) < 0:
                raise UsageError(f"{name} must be at least 0, got {getattr(self, name)}")
        for name in ("match_iou", "feature_weight", "continuity_iou"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UsageError(f"{name} must be between 0 and 1, got {getattr(self, name)}")
        if self.box_margin < 0:
            raise UsageError(f"box_margin must be at least 0, got {self.box_margin}")


@dataclass(frozen=True)
class VideoRequest:
    """What a clip is asked for (all per call; the pipeline is not changed).

    Attributes:
        tracker: "iou", "sam2" (needs the pipeline's SAM 2 tracker) or "seggpt" (needs SegGPT).
        sampling: which frames are read (`video.io.SamplingSettings`: fps, max_frames, start, end).
        tracking: `TrackerSettings` (keyframes, gaps, shortest track).
        intervals: `IntervalSettings` (smoothing, hysteresis, shortest interval, merged gaps).
        settings: "segment everything" settings (default: the pipeline's).
        top_k: relations kept for the clip, best first; also per frame graph.
        point, box: relate me with anything: the thing at this point / in this box (pixels) on
            sampled frame `frame` is the subject through the whole clip.
        frame: the sampled frame of `point` / `box`.
        multimask: the best of SAM's 3 masks for the point or box (see `RelateAnything`).
        find: a phrase: the best-matching track is the subject (needs a labeler).
        vocabulary: names for the tracks (needs a labeler; default: the pipeline's).
        encoder_batch: frames whose SAM image encodings are computed together.
    """

    tracker: str = "iou"
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    tracking: TrackerSettings = field(default_factory=TrackerSettings)
    intervals: IntervalSettings = field(default_factory=IntervalSettings)
    settings: SegmentSettings | None = None
    top_k: int = 20
    point: tuple[float, float] | None = None
    box: tuple[float, float, float, float] | None = None
    frame: int = 0
    multimask: bool = False
    find: str | None = None
    vocabulary: Vocabulary | None = None
    encoder_batch: int = 4

    def __post_init__(self) -> None:
        if self.tracker not in TRACKERS:
            raise UsageError(f"tracker must be one of {', '.join(TRACKERS)}, got {self.tracker!r}")
        if self.top_k < 0:
            raise UsageError(f"top_k must be >= 0, got {self.top_k}")
        if self.frame < 0:
            raise UsageError(f"frame must be a sampled-frame index >= 0, got {self.frame}")
        if self.encoder_batch < 1:
            raise UsageError(f"encoder_batch must be at least 1, got {self.encoder_batch}")
        if self.point is not None and self.box is not None:
            raise UsageError("give a point or a box, not both")

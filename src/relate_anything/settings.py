"""The settings of "segment everything", in one frozen dataclass passed per call.

Every front end reads its defaults from here (the command-line flags are generated from the
fields, see `relate_anything.cli_options`), so a default lives in one place, and a request's
settings never touch a live model: `segmenter.segment_everything(settings=...)`,
`pipeline(image, settings=...)`.
"""

from dataclasses import dataclass, field, fields, replace
from typing import Any

from relate_anything.errors import UsageError

__all__ = ["SegmentSettings", "SettingsError"]


class SettingsError(UsageError):
    """A setting outside its valid range."""


def _setting(default: Any, help: str, *, minimum: float | None = None, maximum: float | None = None) -> Any:
    """A field with the help text and valid range the command line and the API show."""
    return field(default=default, metadata={"help": help, "min": minimum, "max": maximum})


@dataclass(frozen=True)
class SegmentSettings:
    """How "segment everything" turns SAM's grid of point prompts into masks.

    The defaults are segment-anything's `SamAutomaticMaskGenerator` defaults, plus RAM's removal
    of near-duplicate masks. Instances are hashable: equal settings share a cached result.

    Attributes:
        points_per_side: an N x N grid of single-point prompts.
        pred_iou_thresh: keep masks whose predicted IoU is above this (0: no filter, as SAM).
        stability_score_thresh: keep masks whose stability score is at least this (0: no filter).
        stability_score_offset: logit offset of the stability score.
        box_nms_thresh: a mask whose box overlaps a better mask's box by more than this IoU is
            dropped (1: no suppression).
        duplicate_iou_thresh: of two masks with at least this mask IoU, the smaller is dropped
            (above 1: keep near-duplicates).
        min_mask_area: masks with fewer pixels are dropped (empty masks always are).
        mask_threshold: logit above which a pixel is in a mask (also for prompted masks).
    """

    points_per_side: int = _setting(
        32, "Segment everything with an N x N grid of point prompts.", minimum=1, maximum=128
    )
    pred_iou_thresh: float = _setting(
        0.88, "Keep masks whose predicted IoU is above this (0: keep all).", minimum=0.0, maximum=1.0
    )
    stability_score_thresh: float = _setting(
        0.95, "Keep masks whose stability score is at least this (0: keep all).", minimum=0.0, maximum=1.0
    )
    stability_score_offset: float = _setting(
        1.0, "Logit offset of the stability score (SAM's).", minimum=0.0, maximum=None
    )
    box_nms_thresh: float = _setting(
        0.7,
        "Drop a mask whose box overlaps a better one's by more than this IoU (1: keep all).",
        minimum=0.0,
        maximum=1.0,
    )
    duplicate_iou_thresh: float = _setting(
        0.8,
        "Of two masks with at least this mask IoU, drop the smaller (above 1: keep both).",
        minimum=0.0,
        maximum=None,
    )
    min_mask_area: int = _setting(
        0, "Drop masks with fewer pixels than this (empty masks always).", minimum=0, maximum=None
    )
    mask_threshold: float = _setting(0.0, "Mask logit above which a pixel is in the mask.", minimum=None, maximum=None)

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            expected = int if item.type in (int, "int") else float
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or (expected is int and value != int(value))
            ):
                raise SettingsError(
                    f"{item.name} must be {'an integer' if expected is int else 'a number'}, got {value!r}"
                )
            if value != value:  # NaN
                raise SettingsError(f"{item.name} must be a number, got NaN")
            object.__setattr__(self, item.name, expected(value))
            low, high = item.metadata["min"], item.metadata["max"]
            if (low is not None and value < low) or (high is not None and value > high):
                bounds = f"at least {low}" if high is None else f"between {low} and {high}"
                raise SettingsError(f"{item.name} must be {bounds}, got {value}")

    def replace(self, **changes: Any) -> "SegmentSettings":
        """A copy with `changes` (None values are ignored: "not given")."""
        return replace(self, **{name: value for name, value in changes.items() if value is not None})

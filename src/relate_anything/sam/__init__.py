"""The Segment Anything stage: load SAM (or SAM-HQ, or SAM 2's image model), segment, keep features.

>>> from relate_anything.sam import Segmenter
>>> segmenter = Segmenter.from_pretrained("sam_vit_h_4b8939.pth", device="cuda")
>>> segmenter.set_image(rgb_uint8)               # [H, W, 3]
>>> result = segmenter.segment_everything()       # SegmentationResult
>>> result.masks.shape, result.features.shape     # [N, H, W] bool, [N, 256]
"""

from relate_anything.sam.checkpoint import load_sam
from relate_anything.sam.loading import load_segmentation_model
from relate_anything.sam.segmenter import DecoderOutput, SegmentationResult, Segmenter, capture_mask_tokens
from relate_anything.settings import SegmentSettings, SettingsError

__all__ = [
    "DecoderOutput",
    "SegmentSettings",
    "SegmentationResult",
    "Segmenter",
    "SettingsError",
    "capture_mask_tokens",
    "load_sam",
    "load_segmentation_model",
]

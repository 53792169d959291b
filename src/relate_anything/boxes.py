"""Boxes: the one home of box formats and conversions; each format is named in the function.

- `xyxy` pixel edges (the public format: `Segment.bbox`, prompts): a mask covering columns
  3..7 has x0 = 3, x1 = 8.
- `xyxy_inclusive` (segment-anything's `batched_mask_to_box`, kept for SAM's box NMS parity):
  x1, y1 are the last mask column / row, so the same mask has x1 = 7.
- `xywh` (COCO's `toBbox`): x0, y0, width, height.
- `cxcywh` (OWLv2's output): centre and size.

Tensor functions run on their inputs' device; torch is imported when they run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = [
    "box_iou",
    "cxcywh_to_xyxy",
    "masks_to_xyxy",
    "masks_to_xyxy_inclusive",
    "occupancy_to_xyxy_inclusive",
    "xyxy_inclusive_to_xyxy",
    "xywh_to_xyxy",
]


def masks_to_xyxy_inclusive(masks: torch.Tensor) -> torch.Tensor:
    """Tight boxes of boolean masks [N, H, W] in SAM's convention, as segment-anything's
    ``batched_mask_to_box``: [N, 4] float32 (x0, y0, x1, y1) with x1, y1 the last mask column /
    row; an empty mask gives [0, 0, 0, 0]."""
    import torch

    if masks.shape[0] == 0:
        return torch.zeros(0, 4, device=masks.device)
    return occupancy_to_xyxy_inclusive(masks.any(dim=2), masks.any(dim=1))


def occupancy_to_xyxy_inclusive(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """`masks_to_xyxy_inclusive` from [N, H] rows and [N, W] columns that hold mask pixels."""
    import torch

    h, w = rows.shape[1], cols.shape[1]
    y_index = torch.arange(h, device=rows.device)
    x_index = torch.arange(w, device=rows.device)
    y0 = torch.where(rows, y_index, h).amin(dim=1)
    y1 = torch.where(rows, y_index, -1).amax(dim=1)
    x0 = torch.where(cols, x_index, w).amin(dim=1)
    x1 = torch.where(cols, x_index, -1).amax(dim=1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1)
    empty = ~rows.any(dim=1)
    return torch.where(empty[:, None], 0, boxes).float()


def masks_to_xyxy(masks: torch.Tensor, *, empty: str = "zeros") -> torch.Tensor:
    """[N, 4] int64 pixel-edge boxes of boolean masks [N, H, W].

    Args:
        empty: the box of an empty mask: "zeros" ([0, 0, 0, 0]) or "image" (the whole image, so
            that a crop of it is all background rather than an error).
    """
    import torch

    if empty not in ("zeros", "image"):
        raise ValueError(f"empty must be 'zeros' or 'image', got {empty!r}")
    n, height, width = masks.shape
    rows, cols = masks.any(dim=2), masks.any(dim=1)  # [N, H], [N, W]
    boxes = torch.empty(n, 4, dtype=torch.int64, device=masks.device)
    for axis, (hits, extent) in enumerate(((cols, width), (rows, height))):
        index = torch.arange(extent, device=masks.device)
        first = torch.where(hits, index, extent).amin(dim=1)
        last = torch.where(hits, index, -1).amax(dim=1) + 1
        none = last <= 0
        boxes[:, axis] = torch.where(none, 0, first)
        boxes[:, axis + 2] = torch.where(none, extent if empty == "image" else 0, last)
    return boxes


def xyxy_inclusive_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """SAM-convention boxes [N, 4] (last column/row inclusive) as pixel edges."""
    import torch

    return boxes + torch.tensor([0, 0, 1, 1], dtype=boxes.dtype, device=boxes.device)


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """COCO boxes [N, 4] (x0, y0, width, height) as [N, 4] float64 pixel edges."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """Boxes [..., 4] (centre x, centre y, width, height) as (x0, y0, x1, y1), in the same units."""
    import torch

    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """[N, M] IoU of xyxy boxes [N, 4] and [M, 4], area = (x1 - x0) * (y1 - y0) as torchvision.

    Pairs with zero union give 0.
    """
    import torch

    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    top_left = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[:, None] + area2[None, :] - inter
    return torch.where(union > 0, inter / union, torch.zeros_like(inter))

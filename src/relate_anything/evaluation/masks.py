"""Mask overlaps that only scoring needs (panoptic painting, visible parts), on COCO RLEs.

Plain IoUs and intersections of RLEs are `relate_anything.masks.rle_ious` /
`rle_intersections`: pycocotools works on the runs (cost ~ number of runs, with a bounding-box
pre-check), so nothing is decoded to pixels. Measured on 640x480 ellipse masks, 30 predicted x
20 ground-truth segments, 2 CPU cores: RLE IoU 0.75 ms per image; decoding to pixels plus a
float32 matmul of [Np, HW] x [HW, Ng] 26 ms per image.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pycocotools import mask as coco_mask

from relate_anything.masks import Rle, rle_areas, rle_intersections


def hidden_parts(rles: Sequence[Rle], priority: np.ndarray) -> list[Rle]:
    """Paint overlapping masks into one label map; return, per mask, the part painted over.

    Masks are painted from the lowest `priority` to the highest, so where masks overlap the
    highest-priority one owns the pixel (equal priorities: the mask listed first wins). The
    visible part of mask i is `rles[i]` minus `hidden[i]`, and `hidden[i]` lies inside
    `rles[i]`, so visible areas and intersections follow by subtraction without leaving RLE.

    Args:
        rles: COCO RLEs of one image.
        priority: [N] numbers, e.g. segment scores.
    """
    order = np.lexsort((np.arange(len(rles)), -np.asarray(priority, dtype=np.float64)))  # best first
    hidden: list[Rle | None] = [None] * len(rles)
    painted: Rle | None = None  # union of all masks that beat the current one
    for index in order:
        rle = rles[index]
        if painted is None:
            hidden[index] = _empty_like(rle)
            painted = rle
        else:
            hidden[index] = coco_mask.merge([rle, painted], intersect=True)
            painted = coco_mask.merge([painted, rle], intersect=False)
    return hidden  # type: ignore[return-value]


def overlap_free(rles: Sequence[Rle]) -> bool:
    """Whether no two masks share a pixel (their areas add up to the area of their union)."""
    if len(rles) < 2:
        return True
    return int(rle_areas(rles).sum()) == int(coco_mask.area(coco_mask.merge(list(rles), intersect=False)))


def visible_intersections(
    a: Sequence[Rle],
    a_hidden: Sequence[Rle] | None,
    b: Sequence[Rle],
    b_hidden: Sequence[Rle] | None,
    *,
    raw: np.ndarray | None = None,
) -> np.ndarray:
    """|(A - A_hidden) ∩ (B - B_hidden)| for every pair, int64 [len(a), len(b)].

    Inclusion-exclusion with hidden parts inside their masks:
    |(A-Ha)∩(B-Hb)| = |A∩B| - |Ha∩B| - |A∩Hb| + |Ha∩Hb|. A `None` hidden list means nothing of
    that side is painted over (the terms vanish). `raw`: |A∩B| when already computed.
    """
    result = rle_intersections(a, b) if raw is None else raw.copy()
    if a_hidden is not None:
        result -= rle_intersections(a_hidden, b)
    if b_hidden is not None:
        result -= rle_intersections(a, b_hidden)
        if a_hidden is not None:
            result += rle_intersections(a_hidden, b_hidden)
    return result


def _empty_like(rle: Rle) -> Rle:
    height, width = (int(v) for v in rle["size"])
    return coco_mask.frPyObjects({"size": [height, width], "counts": [height * width]}, height, width)

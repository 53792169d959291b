"""`encode_label_map`: every region of a label map as COCO RLE in one pass, equal to `encode_masks`."""

import numpy as np
import pytest

from relate_anything.masks import encode_label_map
from relate_anything.scene_graph import SceneGraph


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int64])
def test_equals_encode_masks_on_random_label_maps(dtype):
    rng = np.random.default_rng(0)
    for trial in range(150):
        height, width = (int(v) for v in rng.integers(1, 25, 2))
        labels = rng.integers(0, 4, (height, width)).astype(dtype)
        if trial % 5 == 0:
            labels[:] = trial % 3  # one value everywhere, void included
        if trial % 7 == 0:
            labels[:, : width // 2] = 3  # runs that wrap from one column to the next
        regions = encode_label_map(labels)
        ids = np.unique(labels)
        ids = ids[ids != 0]
        assert regions.ids.tolist() == ids.tolist()
        if not len(ids):
            assert regions.masks == [] and regions.boxes.shape == (0, 4) and regions.areas.shape == (0,)
            continue
        reference = SceneGraph.from_masks(labels[None] == ids[:, None, None], np.ones(len(ids)))
        for index, segment in enumerate(reference.segments):
            assert regions.masks[index] == segment.mask
            assert int(regions.areas[index]) == segment.area
            assert tuple(float(v) for v in regions.boxes[index]) == segment.bbox


def test_rejects_non_2d():
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        encode_label_map(np.zeros((2, 3, 4)))

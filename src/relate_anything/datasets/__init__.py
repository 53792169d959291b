"""Datasets in PSG format (images) and PVSG format (video): read them as `SceneGraph`s or
`VideoSceneGraph`s, check them, write them, make synthetic ones.

>>> from relate_anything.datasets import PsgDataset, make_synthetic_psg
>>> dataset = PsgDataset(make_synthetic_psg("synthetic_psg", images=20), split="train")
>>> graph = dataset[0]  # a ground-truth SceneGraph
>>> from relate_anything.datasets import PvsgDataset, make_synthetic_pvsg
>>> video = PvsgDataset(make_synthetic_pvsg("synthetic_pvsg", videos=4))[0]  # a ground-truth VideoSceneGraph
"""

from relate_anything.datasets.psg import (
    Problem,
    PsgDataset,
    PsgFormatError,
    check_psg,
    check_records,
    psg_paths,
    read_psg_json,
    write_psg,
)
from relate_anything.datasets.pvsg import PvsgDataset, PvsgFormatError, VideoProblem, check_pvsg, write_pvsg
from relate_anything.datasets.synthetic import make_synthetic_psg
from relate_anything.datasets.synthetic_video import make_synthetic_pvsg

__all__ = [
    "Problem",
    "PsgDataset",
    "PsgFormatError",
    "PvsgDataset",
    "PvsgFormatError",
    "VideoProblem",
    "check_psg",
    "check_pvsg",
    "check_records",
    "make_synthetic_psg",
    "make_synthetic_pvsg",
    "psg_paths",
    "read_psg_json",
    "write_psg",
    "write_pvsg",
]

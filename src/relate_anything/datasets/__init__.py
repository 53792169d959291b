"""Datasets in PSG format: read them as `SceneGraph`s, check them, write them, make synthetic ones.

>>> from relate_anything.datasets import PsgDataset, make_synthetic_psg
>>> dataset = PsgDataset(make_synthetic_psg("synthetic_psg", images=20), split="train")
>>> graph = dataset[0]  # a ground-truth SceneGraph
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
from relate_anything.datasets.synthetic import make_synthetic_psg

__all__ = [
    "Problem",
    "PsgDataset",
    "PsgFormatError",
    "check_psg",
    "check_records",
    "make_synthetic_psg",
    "psg_paths",
    "read_psg_json",
    "write_psg",
]

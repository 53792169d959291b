"""relate-anything: panoptic scene graphs from any image.

>>> from relate_anything import RelateAnything
>>> graph = RelateAnything.from_pretrained(device="cuda")("photo.jpg")
>>> graph.save("photo.json")
"""

from relate_anything.errors import CheckpointError, ImageError, RelateAnythingError, WeightsNotFoundError
from relate_anything.scene_graph import Relation, SceneGraph, Segment
from relate_anything.settings import SegmentSettings
from relate_anything.video_scene_graph import VideoSceneGraph

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ImageError",
    "RelateAnything",
    "RelateAnythingError",
    "Relation",
    "SceneGraph",
    "Segment",
    "SegmentSettings",
    "VideoSceneGraph",
    "WeightsNotFoundError",
]


def __getattr__(name: str):
    # The pipeline pulls in torch and transformers; load it only when asked for.
    if name == "RelateAnything":
        from relate_anything.pipeline import RelateAnything

        return RelateAnything
    raise AttributeError(f"module 'relate_anything' has no attribute {name!r}")

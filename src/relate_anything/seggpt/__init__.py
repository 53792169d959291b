"""Segment by example with SegGPT: find in a photo what example images' masks mark.

>>> from relate_anything.seggpt import ExampleSegmenter, example_segments, load_example
>>> finder = ExampleSegmenter.from_pretrained(device="cuda")       # BAAI/seggpt-vit-large
>>> examples = [load_example("cat1.jpg", "cat1_mask.png")]
>>> mask = finder.segment(rgb_uint8, examples)                     # [H, W] bool
>>> segments = example_segments(finder, rgb_uint8, examples)      # masks; the pipeline prompts SAM for features
"""

from relate_anything.seggpt.example import (
    Example,
    ExampleError,
    ExampleSegmenter,
    check_examples,
    connected_components,
    example_segments,
    load_example,
    read_mask,
)

__all__ = [
    "Example",
    "ExampleError",
    "ExampleSegmenter",
    "check_examples",
    "connected_components",
    "example_segments",
    "load_example",
    "read_mask",
]

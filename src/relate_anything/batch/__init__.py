"""Large jobs: a folder, glob or manifest of images into sharded scene graphs, resumable and
exactly-once, on one device, one worker process per GPU, or a Ray cluster.

    >>> from relate_anything.batch import list_inputs, read_scene_graphs, run_batch
    >>> from relate_anything.pipeline import PipelineSpec
    >>> summary = run_batch(list_inputs("photos/"), "graphs/", PipelineSpec(), devices=["cuda:0", "cuda:1"])
    >>> graphs = list(read_scene_graphs("graphs/"))

The command line: `relate-anything batch INPUT --out DIR` (see `batch.cli`).
"""

from relate_anything.batch.inputs import InputError, InputItem, list_inputs, load_input
from relate_anything.batch.job import BatchSummary, run_batch
from relate_anything.batch.relate import Outcome, relate_items
from relate_anything.batch.shards import (
    ErrorLog,
    ShardWriter,
    finished_files,
    read_errors,
    read_scene_graphs,
    shard_paths,
)

__all__ = [
    "BatchSummary",
    "ErrorLog",
    "InputError",
    "InputItem",
    "Outcome",
    "ShardWriter",
    "finished_files",
    "list_inputs",
    "load_input",
    "read_errors",
    "read_scene_graphs",
    "relate_items",
    "run_batch",
    "shard_paths",
]

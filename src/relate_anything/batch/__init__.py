"""Large jobs: a folder, glob or manifest of images into sharded scene graphs, resumable and
exactly-once, on one device, one worker process per GPU, or a Ray cluster.

    >>> from relate_anything.batch import list_inputs, read_scene_graphs, run_batch
    >>> from relate_anything.pipeline_spec import PipelineSpec
    >>> summary = run_batch(list_inputs("photos/"), "graphs/", PipelineSpec(), devices=["cuda:0", "cuda:1"])
    >>> graphs = list(read_scene_graphs("graphs/"))

The command line: `relate-anything batch INPUT --out DIR` (see `batch.cli`).
"""

import importlib
from typing import Any

# Exports load on first use (PEP 562): the command line imports batch.cli, and
# `relate-anything --help` or a usage error must not wait for torch (the job imports the pipeline).
_EXPORTS = {
    "InputError": "inputs",
    "InputItem": "inputs",
    "list_inputs": "inputs",
    "load_input": "inputs",
    "BatchSummary": "job",
    "run_batch": "job",
    "Outcome": "relate",
    "relate_items": "relate",
    "ErrorLog": "shards",
    "ShardWriter": "shards",
    "finished_files": "shards",
    "read_errors": "shards",
    "read_scene_graphs": "shards",
    "shard_paths": "shards",
}

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


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)

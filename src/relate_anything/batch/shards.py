"""The output folder of a batch job: committed shards of scene graphs and the log of failures.

    OUT/scene_graphs-000000.jsonl   one SceneGraph JSON a line, `image.file` set (--format jsonl)
    OUT/scene_graphs-000001.parquet columns file, scene_graph (the same JSON)  (--format parquet)
    OUT/errors.jsonl                {"file", "error", "reason"} a line: images that failed
    OUT/.index/                     the files of each JSONL shard, so a restart need not parse them

A shard is written to a temporary name and moved into place (`relate_anything.atomic`): it
exists, complete, or not at all; readers never look at `*.tmp` files. What a job has finished is
exactly the files in committed shards plus those in errors.jsonl, so a job killed at any moment
and restarted redoes only what no committed shard holds.

errors.jsonl is an append log: one line is appended (and fsync'd) a failure, by the job's single
writer process. A kill mid-line leaves a torn last line without its newline: readers skip it, and
the next `ErrorLog` cuts it off before appending, so the image is simply tried again.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from relate_anything.atomic import TEMPORARY_SUFFIX, write_atomically, write_text_atomically
from relate_anything.errors import RelateAnythingError, UsageError
from relate_anything.scene_graph import SceneGraph

__all__ = [
    "ERRORS_FILE",
    "FORMATS",
    "ErrorLog",
    "ShardWriter",
    "finished_files",
    "read_errors",
    "read_scene_graphs",
    "shard_paths",
]

FORMATS = ("jsonl", "parquet")
ERRORS_FILE = "errors.jsonl"
_PREFIX = "scene_graphs-"
_SHARD_NAME = re.compile(rf"^{_PREFIX}(\d{{6,}})\.(jsonl|parquet)$")
_INDEX_FOLDER = ".index"


class OutputError(UsageError):
    """A batch output folder that cannot be read (a damaged shard)."""


class ShardWriter:
    """Buffers scene graphs and commits them as shards of at most `shard_size` graphs.

    Args:
        directory: the job's output folder (created if missing).
        output_format: "jsonl" or "parquet" (needs pyarrow).
        shard_size: graphs per shard; a kill loses at most the uncommitted ones (done again on restart).
        max_seconds: also commit when the oldest buffered graph has waited this long, so a slow job
            killed late loses little work (None: only by count).

    One writer per folder at a time (`job.lock_output` sees to it); shard numbers continue after
    the highest committed one.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        output_format: str = "jsonl",
        shard_size: int = 256,
        max_seconds: float | None = 300.0,
    ) -> None:
        if output_format not in FORMATS:
            raise ValueError(f"output_format must be one of {FORMATS}, got {output_format!r}")
        if shard_size < 1:
            raise ValueError("shard_size must be positive")
        if output_format == "parquet":
            _import_pyarrow()
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.output_format = output_format
        self.shard_size = shard_size
        self.max_seconds = max_seconds
        self._files: list[str] = []
        self._graphs: list[str] = []
        self._oldest = 0.0
        committed = shard_paths(self.directory)
        self._next_number = max((_shard_number(p) for p in committed), default=-1) + 1
        for stale in self.directory.glob(f"{_PREFIX}*{TEMPORARY_SUFFIX}"):  # a killed writer's leftovers
            stale.unlink(missing_ok=True)
        for path in committed:  # killed between committing a shard and writing its index
            if path.suffix == ".jsonl" and not _index_path(path).is_file():
                _write_index(path, _parse_jsonl_files(path))

    def add(self, file: str, scene_graph_json: str) -> Path | None:
        """Buffer the graph of `file` (its JSON, one line); returns the shard path if this committed one."""
        if not self._files:
            self._oldest = time.monotonic()
        self._files.append(file)
        self._graphs.append(scene_graph_json)
        full = len(self._files) >= self.shard_size
        if full or (self.max_seconds is not None and time.monotonic() - self._oldest >= self.max_seconds):
            return self.flush()
        return None

    def flush(self) -> Path | None:
        """Commit the buffered graphs as one shard; returns its path (None if nothing was buffered)."""
        if not self._files:
            return None
        files, graphs = self._files, self._graphs
        self._files, self._graphs = [], []
        path = self.directory / f"{_PREFIX}{self._next_number:06d}.{self.output_format}"
        self._next_number += 1
        if self.output_format == "jsonl":
            write_text_atomically(path, "".join(f"{graph}\n" for graph in graphs))  # the commit
            _write_index(path, files)
        else:
            pyarrow, parquet = _import_pyarrow()
            table = pyarrow.table(
                {
                    "file": pyarrow.array(files, pyarrow.string()),
                    "scene_graph": pyarrow.array(graphs, pyarrow.large_string()),
                }
            )
            write_atomically(path, lambda tmp: parquet.write_table(table, tmp))  # the commit
        return path

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        # Buffered graphs are whole results even when the job stops on an error: keep them.
        self.flush()


class ErrorLog:
    """OUT/errors.jsonl: append one line a failed image, and read back which failed."""

    def __init__(self, directory: str | Path) -> None:
        self.path = Path(directory) / ERRORS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._cut_torn_line()

    def add(self, file: str, error: str, reason: str) -> None:
        """Record that `file` failed with exception class `error` and message `reason`."""
        line = json.dumps({"file": file, "error": error, "reason": reason}) + "\n"
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def clear(self) -> None:
        """Forget every recorded failure (their images will be tried again)."""
        write_text_atomically(self.path, "")

    def _cut_torn_line(self) -> None:
        if not self.path.is_file():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(self.path, "r+b") as handle:
                handle.truncate(data.rfind(b"\n") + 1)


def read_errors(directory: str | Path) -> list[dict[str, Any]]:
    """The failures recorded in OUT/errors.jsonl ({"file", "error", "reason"} each), oldest first."""
    path = Path(directory) / ERRORS_FILE
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        if not line.endswith("\n"):
            continue  # a torn last line: the image was not recorded
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("file"), str):
            records.append(record)
    return records


def shard_paths(directory: str | Path) -> list[Path]:
    """The committed shards of an output folder, in the order they were written."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted((p for p in directory.iterdir() if _SHARD_NAME.match(p.name)), key=_shard_number)


def finished_files(directory: str | Path) -> set[str]:
    """Files whose scene graph is in a committed shard of `directory`."""
    return {file for path in shard_paths(directory) for file in _shard_files(path)}


def read_scene_graphs(directory: str | Path) -> Iterator[SceneGraph]:
    """Every committed scene graph of an output folder, shard by shard."""
    for path in shard_paths(directory):
        if path.suffix == ".jsonl":
            with open(path, encoding="utf-8") as handle:
                for line in handle:
                    yield SceneGraph.from_json(line)
        else:
            _, parquet = _import_pyarrow()
            for text in parquet.read_table(path, columns=["scene_graph"]).column("scene_graph").to_pylist():
                yield SceneGraph.from_json(text)


def _shard_number(path: Path) -> int:
    return int(_SHARD_NAME.match(path.name).group(1))


def _shard_files(path: Path) -> list[str]:
    if path.suffix == ".parquet":
        _, parquet = _import_pyarrow()
        try:
            return parquet.read_table(path, columns=["file"]).column("file").to_pylist()
        except Exception as error:  # pyarrow raises its own error types
            raise OutputError(f"damaged shard {path}: {error}") from error
    index = _index_path(path)
    if index.is_file():
        try:
            return json.loads(index.read_text(encoding="utf-8"))["files"]
        except (json.JSONDecodeError, KeyError, TypeError):
            pass  # the index is only a shortcut: the shard itself says
    return _parse_jsonl_files(path)


def _parse_jsonl_files(path: Path) -> list[str]:
    try:
        with open(path, encoding="utf-8") as handle:
            return [json.loads(line)["image"]["file"] for line in handle]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise OutputError(f"damaged shard {path}: {error}") from error


def _index_path(shard: Path) -> Path:
    return shard.parent / _INDEX_FOLDER / f"{shard.name}.files.json"


def _write_index(shard: Path, files: Iterable[str]) -> None:
    _index_path(shard).parent.mkdir(exist_ok=True)
    write_text_atomically(_index_path(shard), json.dumps({"files": list(files)}))


def _import_pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet as parquet
    except ImportError:
        raise RelateAnythingError("--format parquet needs pyarrow: pip install 'relate-anything[parquet]'") from None
    return pyarrow, parquet

"""Relating a stream of inputs, one `Outcome` per image: what a local job, each worker process
and each Ray actor run.

Images are decoded ahead in background threads (`prefetch.prefetched`) and related
`batch_size` at a time with `RelateAnything.batch`; a group that fails as a whole is related
again one image at a time, so that one bad image does not take its neighbours with it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple

import numpy as np

from relate_anything.batch.inputs import InputItem, load_input
from relate_anything.errors import RelateAnythingError
from relate_anything.prefetch import prefetched

__all__ = ["Outcome", "relate_items"]


class Outcome(NamedTuple):
    """What became of one image: its scene graph as one JSON line, or the error that stopped it."""

    file: str
    scene_graph: str | None
    error: str | None = None  # the exception's class name
    reason: str | None = None

    @classmethod
    def failure(cls, file: str, error: BaseException) -> Outcome:
        reason = str(error) if isinstance(error, RelateAnythingError) else f"{type(error).__name__}: {error}"
        return cls(file, None, type(error).__name__, reason)


def relate_items(
    pipeline, items: Iterable[InputItem], *, batch_size: int = 4, features: bool = False, decode_threads: int = 2
) -> Iterator[Outcome]:
    """The `Outcome` of every item, in order: decoded ahead in threads, related `batch_size` at a time."""
    group: list[tuple[InputItem, np.ndarray]] = []
    loaded = prefetched(items, lambda item: load_input(item.location), threads=decode_threads, ahead=2 * batch_size)
    for item, pixels in loaded:
        if isinstance(pixels, Exception):
            yield Outcome.failure(item.file, pixels)
            continue
        group.append((item, pixels))
        if len(group) == batch_size:
            yield from _relate_group(pipeline, group, features)
            group = []
    if group:
        yield from _relate_group(pipeline, group, features)


def _relate_group(pipeline, group: list[tuple[InputItem, np.ndarray]], features: bool) -> list[Outcome]:
    if len(group) > 1:
        files = [item.file for item, _ in group]
        try:
            graphs = pipeline.batch([pixels for _, pixels in group], files=files)
            return [Outcome(file, graph.to_json(features=features)) for file, graph in zip(files, graphs)]
        except Exception:
            pass  # one image spoils the group: find it by going one at a time
    return [_relate_one(pipeline, member, features) for member in group]


def _relate_one(pipeline, member: tuple[InputItem, np.ndarray], features: bool) -> Outcome:
    item, pixels = member
    try:
        return Outcome(item.file, pipeline(pixels, file=item.file).to_json(features=features))
    except Exception as error:
        return Outcome.failure(item.file, error)

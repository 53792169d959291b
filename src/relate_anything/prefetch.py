"""Loading ahead: decode the next inputs in background threads while the model works.

    for item, pixels in prefetched(paths, load_image, threads=2, ahead=8):
        ...  # pixels is the loaded value, or the exception that stopped loading this item

JPEG decoding, resizing and downloads release the GIL, so a few threads keep a GPU fed; results
come back in input order, and at most `ahead` items are loaded but not yet consumed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from typing import TypeVar

__all__ = ["prefetched"]

T = TypeVar("T")
R = TypeVar("R")


def prefetched(
    items: Iterable[T], load: Callable[[T], R], *, threads: int = 1, ahead: int = 2
) -> Iterator[tuple[T, R | Exception]]:
    """(item, load(item)) in input order, loaded ahead in `threads` background threads.

    An exception raised by `load` is returned in place of the value (the caller decides whether
    one bad item stops the rest); at most `ahead` items are in flight. Closing the iterator early
    waits only for the loads already started.
    """

    def guarded(item: T) -> R | Exception:
        try:
            return load(item)
        except Exception as error:  # handed to the caller with its item
            return error

    items = iter(items)
    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="prefetch") as pool:
        pending = deque((item, pool.submit(guarded, item)) for item in islice(items, max(1, ahead)))
        while pending:
            item, future = pending.popleft()
            for following in islice(items, 1):
                pending.append((following, pool.submit(guarded, following)))
            yield item, future.result()

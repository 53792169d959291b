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

__all__ = ["iterated_ahead", "prefetched"]

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


_DONE = object()


def iterated_ahead(items: Iterable[T], *, ahead: int = 2) -> Iterator[T]:
    """The items of `items` in order, produced by a background thread at most `ahead` items
    ahead: for an iterator whose `next` is the slow part (a video decoder). An exception the
    iteration raises is raised here, after the items before it. Closing this iterator early
    stops the thread at its next item."""
    import queue
    import threading

    buffer: queue.Queue = queue.Queue(maxsize=max(1, ahead))
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        buffer.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as error:  # handed to the consumer, after the items before it
            buffer.put(error)
            return
        buffer.put(_DONE)

    thread = threading.Thread(target=produce, name="iterate-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                buffer.get_nowait()
            except queue.Empty:
                thread.join(0.05)

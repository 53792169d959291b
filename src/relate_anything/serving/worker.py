"""One thread owns the pipeline; requests reach it through a bounded queue.

A `RelateAnything` pipeline is stateful (the segmenter holds the current photo's embedding), so
concurrent requests must not call it at the same time; each job's settings and vocabulary go
with the call, never into the live pipeline. The `InferenceWorker` is the only caller: web handlers `submit` a `Job` and wait on
its future. Jobs that arrive together and ask for plain "relate anything" with the same settings
run as one `pipeline.batch(...)` call, so on a GPU the image encoder (most of SAM's cost) sees one
batch instead of several single images; prompted jobs (a point or a box) run one by one.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from relate_anything.errors import RelateAnythingError

if TYPE_CHECKING:
    from relate_anything.naming import Vocabulary
    from relate_anything.pipeline import RelateAnything
    from relate_anything.scene_graph import SceneGraph
    from relate_anything.settings import SegmentSettings
    from relate_anything.video.pipeline import VideoRequest
    from relate_anything.video_scene_graph import VideoSceneGraph

__all__ = ["InferenceWorker", "Job", "QueueFullError", "VideoJob", "WorkerClosedError"]

logger = logging.getLogger(__name__)


class QueueFullError(RelateAnythingError):
    """The worker's queue holds `queue_size` waiting jobs already; try again later."""


class WorkerClosedError(RelateAnythingError):
    """The worker is shutting down and takes no more jobs."""


@dataclass(eq=False)
class Job:
    """One scene graph to build.

    Args:
        pixels: the photo, RGB uint8 [H, W, 3].
        settings: the "segment everything" settings for this photo.
        top_k: relations to keep, best first.
        file: recorded as the graph's `image.file`.
        point: (x, y) in pixels: relate the thing there with everything else.
        box: (x0, y0, x1, y1) in pixels: relate the thing in the box with everything else.
        multimask: for a point or box, the best of SAM's 3 candidate masks (see `RelateAnything`).
        vocabulary: names for the labeler (None: the pipeline's own vocabulary).
    """

    pixels: np.ndarray
    settings: SegmentSettings
    top_k: int
    file: str | None = None
    point: tuple[float, float] | None = None
    box: tuple[float, float, float, float] | None = None
    multimask: bool = False
    vocabulary: Vocabulary | None = None
    future: Future = field(default_factory=Future, repr=False)

    def run(self, pipeline: RelateAnything) -> SceneGraph:
        """The job alone through `pipeline`."""
        return pipeline(
            self.pixels,
            point=self.point,
            box=self.box,
            multimask=self.multimask,
            settings=self.settings,
            vocabulary=self.vocabulary,
            top_k=self.top_k,
            file=self.file,
        )

    @property
    def batch_key(self) -> tuple | None:
        """Jobs with equal keys can share one `pipeline.batch` call; None for prompted jobs."""
        if self.point is not None or self.box is not None:
            return None
        return (self.top_k, self.settings, self.vocabulary)


@dataclass(eq=False)
class VideoJob:
    """One clip to relate (`RelateAnything.video`), run by the worker like any job.

    Args:
        source: the clip (a file the job may read until it is done).
        request: the clip's `video.pipeline.VideoRequest`.
        file: recorded as the graph's `video.file`.
    """

    source: Path
    request: VideoRequest
    file: str | None = None
    future: Future = field(default_factory=Future, repr=False)
    batch_key = None  # clips run one at a time

    def run(self, pipeline: RelateAnything) -> VideoSceneGraph:
        graph = pipeline.video(self.source, self.request)
        graph.video = replace(graph.video, file=self.file)
        return graph


_STOP = object()  # put on the queue by close(): the worker thread ends when it takes it


class InferenceWorker:
    """The pipeline's only caller: a thread that takes jobs from a bounded queue.

    Args:
        pipeline: the pipeline to run; nothing else may call it while the worker runs.
        queue_size: jobs that may wait (besides those running); `submit` refuses more.
        max_batch: most photos in one `pipeline.batch` call.
        batch_window: seconds to wait, after taking a job, for others to batch with it. Jobs that
            arrive while a batch runs are batched anyway; the window only helps an idle worker.

    Example:
        >>> worker = InferenceWorker(pipeline, queue_size=16, max_batch=8).start()
        >>> graph = worker.submit(Job(pixels, pipeline.settings, top_k=20)).result()
        >>> worker.close()
    """

    def __init__(
        self, pipeline: RelateAnything, *, queue_size: int = 32, max_batch: int = 8, batch_window: float = 0.005
    ) -> None:
        if queue_size < 1 or max_batch < 1:
            raise ValueError("queue_size and max_batch must be positive")
        self.pipeline = pipeline
        self.queue_size = queue_size
        self.max_batch = max_batch
        self.batch_window = batch_window
        # Unbounded underneath so that close() can always queue its stop marker; submit() bounds it.
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._closed = False
        self._running = 0
        self._thread = threading.Thread(target=self._run, name="relate-anything-inference", daemon=True)

    # ------------------------------------------------------------------------------------------
    # Web side

    def start(self) -> InferenceWorker:
        self._thread.start()
        return self

    def submit(self, job: Job) -> Future:
        """Queue `job`; its future gets the `SceneGraph` or the exception the pipeline raised.

        Raises:
            QueueFullError: `queue_size` jobs are waiting already.
            WorkerClosedError: `close` was called.
        """
        with self._lock:
            if self._closed:
                raise WorkerClosedError("the server is shutting down")
            if self._queue.qsize() >= self.queue_size:
                raise QueueFullError(f"the server is busy: {self.queue_size} requests are waiting already")
            self._queue.put(job)
        return job.future

    @property
    def waiting(self) -> int:
        """Jobs queued and not yet taken by the worker."""
        return self._queue.qsize()

    @property
    def running(self) -> int:
        """Jobs the worker has taken and not finished."""
        return self._running

    def close(self, timeout: float | None = None) -> None:
        """Stop taking jobs, fail the waiting ones, and wait up to `timeout` s for the running ones."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        if self._thread.is_alive():
            self._thread.join(timeout)

    # ------------------------------------------------------------------------------------------
    # Worker thread

    def _run(self) -> None:
        while True:
            jobs, stop = self._take()
            self._running = len(jobs)
            try:
                self._process(jobs)
            except BaseException as error:  # never let the thread die with jobs unanswered
                logger.exception("inference worker failed")
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(error)
            finally:
                self._running = 0
            if stop:
                break
        self._fail_waiting()

    def _take(self) -> tuple[list[Job], bool]:
        """The next job and those that arrive within `batch_window`, up to `max_batch`; and
        whether the stop marker was taken."""
        first = self._queue.get()
        if first is _STOP:
            return [], True
        jobs = [first]
        deadline = time.monotonic() + self.batch_window
        while len(jobs) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is _STOP:
                return jobs, True
            jobs.append(job)
        return jobs, False

    def _fail_waiting(self) -> None:
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is not _STOP and job.future.set_running_or_notify_cancel():
                job.future.set_exception(WorkerClosedError("the server is shutting down"))

    def _process(self, jobs: Sequence[Job]) -> None:
        """Run `jobs`: batchable ones grouped by key, in order of their first arrival."""
        # A job whose caller gave up (a timeout cancels its future) is skipped.
        jobs = [job for job in jobs if job.future.set_running_or_notify_cancel()]
        groups: dict[object, list[Job]] = {}
        for index, job in enumerate(jobs):
            key = job.batch_key
            groups.setdefault(index if key is None else key, []).append(job)
        for group in groups.values():
            if group[0].batch_key is None:
                self._run_one(group[0])
            else:
                self._run_batch(group)

    def _run_batch(self, jobs: Sequence[Job]) -> None:
        first = jobs[0]
        try:
            graphs = self.pipeline.batch(
                [job.pixels for job in jobs],
                files=[job.file for job in jobs],
                settings=first.settings,
                vocabulary=first.vocabulary,
                top_k=first.top_k,
            )
        except Exception:
            # One bad photo must not fail the others: run them alone, each getting its own outcome.
            logger.warning("batch of %d failed; running its jobs one by one", len(jobs), exc_info=True)
            for job in jobs:
                self._run_one(job)
            return
        for job, graph in zip(jobs, graphs):
            job.future.set_result(graph)

    def _run_one(self, job: Job | VideoJob) -> None:
        try:
            result = job.run(self.pipeline)
        except Exception as error:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)

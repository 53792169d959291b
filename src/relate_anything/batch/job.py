"""The batch job: every image of an input through the pipeline into committed shards, exactly once.

    summary = run_batch(list_inputs("photos/"), "graphs/", PipelineSpec(sam=..., ram=...), devices=["cuda:0", "cuda:1"])

One process writes the output (`shards.ShardWriter`, `shards.ErrorLog`); the images are related
in that process (one device), in one worker process per device (several GPUs, or `--workers N`
on the CPU: inputs are dealt round-robin, results come back over a queue), or on a Ray cluster
(`ray_job`). Before starting, the job reads what the committed shards and errors.jsonl already
hold and skips those images; the rest are decoded ahead in background threads (JPEG decoding
overlaps the model) and related in groups of `batch_size` with `RelateAnything.batch`.

An image that fails (unreadable, or an error in the pipeline) is recorded in errors.jsonl with
the reason, and the job goes on.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from relate_anything.atomic import write_text_atomically
from relate_anything.batch.inputs import InputItem, load_input
from relate_anything.batch.shards import ErrorLog, ShardWriter, finished_files, read_errors
from relate_anything.console import progress_bar, quiet_transformers
from relate_anything.errors import RelateAnythingError

__all__ = ["BatchSummary", "Outcome", "PipelineSpec", "relate_items", "run_batch"]

JOB_FILE = "job.json"
_LOCK_FILE = ".lock"


@dataclass(frozen=True)
class PipelineSpec:
    """How to build the pipeline: what a worker process or Ray actor needs to load its own copy.

    Attributes:
        sam, ram: weights references as `RelateAnything.from_pretrained` takes them (None: default).
        top_k: relations kept per image.
        dtype: "float32", "bfloat16" or "float16" for SAM.
        segmenter_options: `Segmenter` keyword arguments (points_per_side, thresholds, ...).
    """

    sam: str | None = None
    ram: str | None = None
    top_k: int = 20
    dtype: str = "float32"
    segmenter_options: dict[str, Any] = field(default_factory=dict)

    def build(self, device: str):
        """The `RelateAnything` pipeline on `device`. On a CPU the process then keeps the memory
        it frees for reuse (`cpu_allocator.reuse_freed_memory`): a batch job's processes are its own."""
        import torch

        from relate_anything.cpu_allocator import reuse_freed_memory
        from relate_anything.pipeline import RelateAnything

        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise RelateAnythingError(f"dtype must be float32, bfloat16 or float16, got {self.dtype!r}")
        reuse_freed_memory(device)
        return RelateAnything.from_pretrained(
            self.sam,
            self.ram,
            device=device,
            dtype=getattr(torch, self.dtype),
            top_k=self.top_k,
            **self.segmenter_options,
        )


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


@dataclass
class BatchSummary:
    """What a `run_batch` call found and did.

    Attributes:
        inputs: images in the input.
        already_done, already_failed: images skipped because a committed shard / errors.jsonl held them.
        done, failed: images related / failed in this call.
        seconds: wall time of this call's processing, loading the models included.
    """

    inputs: int
    already_done: int
    already_failed: int
    done: int = 0
    failed: int = 0
    seconds: float = 0.0

    @property
    def failed_total(self) -> int:
        """Failures in the whole job's output (this call's and earlier ones')."""
        return self.already_failed + self.failed

    @property
    def images_per_second(self) -> float:
        return (self.done + self.failed) / self.seconds if self.seconds > 0 else 0.0


def run_batch(
    inputs: Sequence[InputItem],
    out_dir: str | Path,
    spec: PipelineSpec,
    *,
    devices: Sequence[str] = ("cpu",),
    ray_address: str | None = None,
    batch_size: int = 4,
    shard_size: int = 256,
    features: bool = False,
    output_format: str = "jsonl",
    retry_errors: bool = False,
    decode_threads: int = 2,
    progress: bool = True,
    pipeline=None,
) -> BatchSummary:
    """Relate every image of `inputs` that `out_dir` does not hold yet, and commit the results.

    Args:
        inputs: the images (`inputs.list_inputs`).
        out_dir: the output folder (see `shards`); a second call with the same settings resumes.
        spec: the pipeline to build (in this process, each worker, or each Ray actor).
        devices: one device: relate in this process; several: one worker process per entry.
        ray_address: run on this Ray cluster instead ("auto", "ray://host:port", or "local" to
            start a Ray instance here); `devices` then only gives the number of CPU actors when
            the cluster has no GPU.
        batch_size: images whose SAM image encodings are computed together.
        shard_size: scene graphs per committed shard.
        features: keep each segment's 256-d SAM feature in the graphs.
        output_format: "jsonl" or "parquet".
        retry_errors: try the images in errors.jsonl again (their records are dropped first).
        decode_threads: threads decoding images ahead of the model, per process.
        progress: a progress bar on stderr.
        pipeline: an already-built `RelateAnything` that `spec` describes, used in this process
            instead of building one (only with a single device and no Ray).

    Returns:
        A `BatchSummary`. Raises `RelateAnythingError` for job-level problems (output folder of
        another job or in use, weights missing, a worker dying); failed images are not raised.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with lock_output(out_dir):
        check_job_settings(out_dir, asdict(spec) | {"features": features, "format": output_format})
        errors = ErrorLog(out_dir)
        if retry_errors:
            errors.clear()
        done = finished_files(out_dir)
        failed = {record["file"] for record in read_errors(out_dir)} - done
        todo = [item for item in inputs if item.file not in done and item.file not in failed]
        listed = {item.file for item in inputs}
        summary = BatchSummary(inputs=len(inputs), already_done=len(done & listed), already_failed=len(failed & listed))
        if not todo:
            return summary
        writer = ShardWriter(out_dir, output_format=output_format, shard_size=shard_size)  # before any model loads
        started = time.perf_counter()
        options = {"batch_size": batch_size, "features": features, "decode_threads": decode_threads}
        if ray_address is not None:
            from relate_anything.batch.ray_job import relate_on_ray

            outcomes = relate_on_ray(todo, spec, address=ray_address, cpu_actors=len(devices), **options)
        elif len(devices) == 1:
            if pipeline is None:
                pipeline = spec.build(devices[0])
            outcomes = relate_items(pipeline, todo, **options)
        else:
            outcomes = _relate_in_workers(todo, spec, devices, **options)
        with (
            writer,
            progress_bar(enabled=progress, rate_unit="images") as bar,
            contextlib.closing(iter(outcomes)) as stream,
        ):
            task = bar.add_task("relating", total=len(todo))
            for outcome in stream:
                if outcome.scene_graph is not None:
                    writer.add(outcome.file, outcome.scene_graph)
                    summary.done += 1
                else:
                    errors.add(outcome.file, outcome.error or "Error", outcome.reason or "")
                    summary.failed += 1
                bar.advance(task)
        summary.seconds = time.perf_counter() - started
    return summary


def relate_items(
    pipeline, items: Iterable[InputItem], *, batch_size: int = 4, features: bool = False, decode_threads: int = 2
) -> Iterator[Outcome]:
    """The `Outcome` of every item, in order: decoded ahead in threads, related `batch_size` at a time.

    A group that fails as a whole is related again one image at a time, so that one bad image
    does not take its neighbours with it.
    """
    group: list[tuple[InputItem, np.ndarray]] = []
    for item, pixels in _decoded(items, threads=decode_threads, ahead=2 * batch_size):
        if isinstance(pixels, BaseException):
            yield Outcome.failure(item.file, pixels)
            continue
        group.append((item, pixels))
        if len(group) == batch_size:
            yield from _relate_group(pipeline, group, features)
            group = []
    if group:
        yield from _relate_group(pipeline, group, features)


def _decoded(
    items: Iterable[InputItem], *, threads: int, ahead: int
) -> Iterator[tuple[InputItem, np.ndarray | Exception]]:
    """(item, pixels or the exception that stopped decoding), in order, at most `ahead` in flight."""
    items = iter(items)
    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="decode") as pool:
        pending = deque((item, pool.submit(_decode, item)) for item in islice(items, max(1, ahead)))
        while pending:
            item, future = pending.popleft()
            following = next(items, None)
            if following is not None:
                pending.append((following, pool.submit(_decode, following)))
            yield item, future.result()


def _decode(item: InputItem) -> np.ndarray | Exception:
    try:
        return load_input(item.location)
    except Exception as error:  # anything that stops one image is that image's failure
        return error


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


# -- the output folder: one job, one writer ------------------------------------------------------


@contextlib.contextmanager
def lock_output(out_dir: Path) -> Iterator[None]:
    """Hold OUT/.lock while the job writes, so that a second job on the same folder is refused
    (the lock goes with the process, even on SIGKILL)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    with open(out_dir / _LOCK_FILE, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise RelateAnythingError(f"{out_dir}: another batch job is writing to this folder") from None
        yield


def check_job_settings(out_dir: Path, settings: dict[str, Any]) -> None:
    """Record the settings that shape the output in OUT/job.json, or check that they are the
    recorded ones: graphs made with other weights or thresholds must not mix in one output."""
    path = out_dir / JOB_FILE
    settings = json.loads(json.dumps(settings))  # tuples as lists, as they read back
    if not path.is_file():
        write_text_atomically(path, json.dumps({"settings": settings}, indent=1))
        return
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))["settings"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise RelateAnythingError(
            f"{path} is damaged ({error}); remove it only if every shard was made with these settings"
        ) from error
    changed = sorted(key for key in settings.keys() | recorded.keys() if settings.get(key) != recorded.get(key))
    if changed:
        difference = "; ".join(f"{key}: {recorded.get(key)!r} before, {settings.get(key)!r} now" for key in changed)
        raise RelateAnythingError(
            f"{out_dir} holds a job with other settings ({difference}): use the same settings or another --out"
        )


# -- one worker process per device ---------------------------------------------------------------


class _WorkerDone(NamedTuple):
    device: str


class _WorkerFailed(NamedTuple):
    message: str
    exit_code: int


def _relate_in_workers(
    items: Sequence[InputItem],
    spec: PipelineSpec,
    devices: Sequence[str],
    *,
    batch_size: int,
    features: bool,
    decode_threads: int,
) -> Iterator[Outcome]:
    """Outcomes from one worker process per device; worker k relates items k, k + n, k + 2n, ..."""
    context = multiprocessing.get_context("spawn")  # CUDA cannot be used in forked children
    results = context.Queue(maxsize=4 * batch_size * len(devices))
    threads = max(1, (os.cpu_count() or 1) // len(devices))
    workers = [
        context.Process(
            target=_worker,
            args=(spec, device, list(items[k :: len(devices)]), results, os.getpid()),
            kwargs={
                "batch_size": batch_size,
                "features": features,
                "decode_threads": decode_threads,
                "cpu_threads": threads,
            },
            daemon=True,
            name=f"relate-anything-{device}",
        )
        for k, device in enumerate(devices)
    ]
    for worker in workers:
        worker.start()
    try:
        running = len(workers)
        while running:
            try:
                message = results.get(timeout=1.0)
            except queue.Empty:
                for worker in workers:
                    if worker.exitcode not in (None, 0):
                        raise RelateAnythingError(
                            f"the worker on {worker.name.removeprefix('relate-anything-')} died (exit code {worker.exitcode}); "
                            "finished images are saved: run the same command again to go on"
                        ) from None
                continue
            if isinstance(message, _WorkerDone):
                running -= 1
            elif isinstance(message, _WorkerFailed):
                error = RelateAnythingError(message.message)
                error.exit_code = message.exit_code
                raise error
            else:
                yield message
        for worker in workers:
            worker.join()
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
                worker.join(timeout=10)


def _worker(
    spec: PipelineSpec,
    device: str,
    items: list[InputItem],
    results,
    parent_pid: int,
    *,
    batch_size: int,
    features: bool,
    decode_threads: int,
    cpu_threads: int,
) -> None:
    """A worker process: build the pipeline on `device`, put every item's `Outcome` on `results`."""
    _exit_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the workers
    try:
        import torch

        if device.startswith("cuda"):
            torch.cuda.set_device(device)
        else:
            torch.set_num_threads(cpu_threads)  # workers share the cores instead of oversubscribing them
        quiet_transformers()
        pipeline = spec.build(device)
        for outcome in relate_items(
            pipeline, items, batch_size=batch_size, features=features, decode_threads=decode_threads
        ):
            results.put(outcome)
    except RelateAnythingError as error:
        results.put(_WorkerFailed(str(error), error.exit_code))
        return
    except Exception as error:  # tell the parent what went wrong rather than die without a word
        results.put(_WorkerFailed(f"the worker on {device} failed: {type(error).__name__}: {error}", 1))
        return
    results.put(_WorkerDone(device))


def _exit_with_parent(parent_pid: int) -> None:
    """End this worker when the job's process is gone (killed with SIGKILL, say): its results
    could no longer be written, and the restarted job does the work again."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()
